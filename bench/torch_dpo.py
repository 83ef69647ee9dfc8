#!/usr/bin/python3
"""bench/torch_dpo.py — the step `prefrun bench` times, in PyTorch, on the
same machine, so that prefrun's speed can be given as a ratio measured in one
sitting rather than against figures taken elsewhere.

The model and step follow src/model/model.c and `prefrun bench`: a GPT-2-style
decoder (token and position embeddings, pre-LayerNorm blocks, causal
multi-head attention, tanh-GELU MLP, tied LM head), a frozen reference copy
run under no_grad, per-sequence log-probs summed over the response tokens
(the last 3/4 of each row), TRL's sigmoid DPO loss, gradient clipping at 1,
and AdamW. Tokens per step: 2BT (chosen and rejected rows).

    python3 bench/torch_dpo.py [--config tiny|small|gpt2-124m|all] [--threads 1,2]
                               [--steps 10] [--prefrun build/prefrun]
    python3 bench/torch_dpo.py --shape V,T,C,L,H,B [--name NAME] ...

`prefrun bench` runs it itself after each config (--shape, its own thread
count and steps) and prints the ratio; each result line is

    torch NAME threads N  BEST ms  TOKENS tokens/s  peak RSS MIB MiB

(peak RSS: this process's ru_maxrss, after the config). With --prefrun it
instead runs `prefrun bench --no-torch` on the same configs with the largest
thread count given and prints prefrun's tokens/s over PyTorch's best.
"all" is tiny and small, as in prefrun bench. Needs Debian's python3-torch
(1.13); it is not part of the test suite.
"""
import argparse
import math
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

CONFIGS = {  # name: (V, T, C, L, H, B), as in src/cli/bench.c
    "tiny": (256, 64, 128, 4, 4, 16),
    "small": (256, 128, 256, 6, 8, 8),
    "gpt2-124m": (50257, 256, 768, 12, 12, 4),  # GPT-2 small, per-device batch 4
}
ALL = ["tiny", "small"]  # --config all: the gpt2-124m run takes minutes


class Block(torch.nn.Module):
    def __init__(self, C, H):
        super().__init__()
        self.H = H
        self.ln_1 = torch.nn.LayerNorm(C)
        self.c_attn = torch.nn.Linear(C, 3 * C)
        self.attn_proj = torch.nn.Linear(C, C)
        self.ln_2 = torch.nn.LayerNorm(C)
        self.c_fc = torch.nn.Linear(C, 4 * C)
        self.mlp_proj = torch.nn.Linear(4 * C, C)

    def forward(self, x, mask):
        N, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        heads = lambda t: t.view(N, T, self.H, C // self.H).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // self.H))
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).contiguous().view(N, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(torch.nn.Module):
    def __init__(self, V, T, C, L, H):
        super().__init__()
        self.wte = torch.nn.Embedding(V, C)
        self.wpe = torch.nn.Embedding(T, C)
        self.blocks = torch.nn.ModuleList(Block(C, H) for _ in range(L))
        self.ln_f = torch.nn.LayerNorm(C)
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1))
        for p in self.parameters():
            if p.dim() >= 2:
                torch.nn.init.normal_(p, std=0.02)

    def seq_logps(self, ids, targets, resp):
        N, T = ids.shape
        x = self.wte(ids) + self.wpe(torch.arange(T))
        for b in self.blocks:
            x = b(x, self.mask)
        logits = self.ln_f(x) @ self.wte.weight.t()
        lp = torch.gather(logits.log_softmax(-1), 2, targets.unsqueeze(2)).squeeze(2)
        return (lp * resp).sum(1)


def batch(V, T, B, gen):
    rows = 2 * B
    ids = torch.randint(0, V, (rows, T + 1), generator=gen)
    resp = torch.zeros(rows, T)
    resp[:, T // 4 - 1 : T - 1] = 1.0  # the response: the last 3/4 of each row
    return ids[:, :T], ids[:, 1:], resp


def step(policy, ref, opt, ids, targets, resp, B, beta=0.1):
    pol = policy.seq_logps(ids, targets, resp)
    with torch.no_grad():
        r = ref.seq_logps(ids, targets, resp)
    logits = beta * ((pol[:B] - pol[B:]) - (r[:B] - r[B:]))
    loss = -F.logsigmoid(logits).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    opt.step()


def bench(shape, threads, steps):
    V, T, C, L, H, B = shape
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    policy = GPT(V, T, C, L, H)
    ref = GPT(V, T, C, L, H)
    ref.load_state_dict(policy.state_dict())
    ref.requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    ids, targets, resp = batch(V, T, B, torch.Generator().manual_seed(7))
    best = float("inf")
    for i in range(steps + 2):  # two warm-up steps, as prefrun bench
        t0 = time.perf_counter()
        step(policy, ref, opt, ids, targets, resp, B)
        if i >= 2:
            best = min(best, time.perf_counter() - t0)
    return 2 * B * T / best, best


def prefrun_tokens(prefrun, name, threads, steps):
    out = subprocess.run(
        [prefrun, "bench", "--config", name, "--threads", str(threads), "--steps", str(steps),
         "--no-torch"],
        check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        f = line.split()
        if f and f[0] == name:
            return float(f[9]), line
    sys.exit(f"torch_dpo.py: no '{name}' row in prefrun bench's output:\n{out}")


def parse_shape(text):
    shape = tuple(int(x) for x in text.split(","))
    if len(shape) != 6 or min(shape) < 1:
        sys.exit(f"torch_dpo.py: --shape wants V,T,C,L,H,B (six positive integers), got {text}")
    return shape


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="all", choices=list(CONFIGS) + ["all"])
    ap.add_argument("--shape", help="V,T,C,L,H,B instead of a named config")
    ap.add_argument("--name", default="custom", help="the name --shape's lines carry")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prefrun", help="prefrun binary to compare with")
    a = ap.parse_args()
    if a.shape:
        runs = [(a.name, parse_shape(a.shape))]
    else:
        runs = [(n, CONFIGS[n]) for n in (ALL if a.config == "all" else [a.config])]
    threads = [int(t) for t in a.threads.split(",")]
    print(f"PyTorch {torch.__version__}, best of {a.steps} steps", flush=True)
    for name, shape in runs:
        results = []
        for n in threads:
            tok, dt = bench(shape, n, a.steps)
            results.append(tok)
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
            print(f"torch {name} threads {n}  {dt * 1e3:.1f} ms  {tok:.0f} tokens/s  "
                  f"peak RSS {rss:.1f} MiB", flush=True)
        if a.prefrun and not a.shape:
            tok, line = prefrun_tokens(a.prefrun, name, max(threads), a.steps)
            print(f"prefrun {name} threads {max(threads)}  {tok:.0f} tokens/s: "
                  f"{tok / max(results):.2f}x PyTorch's best")


if __name__ == "__main__":
    main()
