#!/usr/bin/env python3
"""fake_llm.py — a small OpenAI-compatible chat-completions server for
tests/test_discover.c (Python 3 standard library only).

It binds 127.0.0.1 on an ephemeral port, writes the port to --port-file,
and answers each POST .../chat/completions with the next canned reply from
--replies, a JSON list of objects:
    {"content": "text"}            a 200 completion with that message content
    {"status": 500}                an error status (OpenAI's error body)
    {"refusal": "text"}            a 200 completion whose message is a refusal
When the list is used up it answers a completion without code. Every
request body is appended, one JSON line each, to --record, so a test can
read the prompts the loop sent. It exits by itself after --lifetime seconds.
"""
import argparse
import http.server
import json
import os
import threading


def completion(content, refusal=None):
    message = {"role": "assistant", "content": content}
    if refusal is not None:
        message["refusal"] = refusal
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "fake",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
    }


class Handler(http.server.BaseHTTPRequestHandler):
    replies = []
    record = None
    lock = threading.Lock()

    def log_message(self, fmt, *args):  # quiet: the test's output is TAP
        pass

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        with Handler.lock:
            with open(Handler.record, "ab") as f:
                f.write(body.replace(b"\n", b" ") + b"\n")
            reply = Handler.replies.pop(0) if Handler.replies else None
        if not self.path.endswith("/chat/completions"):
            self.send_json(404, {"error": {"message": "no such path " + self.path}})
        elif reply is None:
            self.send_json(200, completion("I have no more ideas."))
        elif reply.get("status", 200) != 200:
            self.send_json(reply["status"], {"error": {"message": "canned server error"}})
        elif "refusal" in reply:
            self.send_json(200, completion(None, reply["refusal"]))
        else:
            self.send_json(200, completion(reply["content"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--replies", required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--lifetime", type=float, default=120)
    a = ap.parse_args()
    with open(a.replies) as f:
        Handler.replies = json.load(f)
    Handler.record = a.record
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, a.port_file)  # the test never reads a half-written port
    timer = threading.Timer(a.lifetime, server.shutdown)
    timer.daemon = True
    timer.start()
    server.serve_forever()


if __name__ == "__main__":
    main()
