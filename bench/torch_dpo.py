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

With --llama NKV,HD,F,TIED,QKV_BIAS,O_BIAS,THETA the model is the Llama
family's instead (LlamaForCausalLM, Mistral, Qwen2; src/model/model.c's
llama_block, written from the maths of Hugging Face's modeling_llama.py as
tests/hf_llama_reference.py spells it out): token embeddings only,
pre-RMSNorm blocks, q/k/v projections (biases where QKV_BIAS, o_proj's where
O_BIAS) with rotary embeddings (rotate_half on the halves of HD, rope_theta
THETA), NKV key/value heads shared by H / NKV query heads, SwiGLU MLP of
width F (down(silu(gate(x)) * up(x))), a final RMSNorm, and the head tied
to the embedding (TIED 1) or its own. Rope scaling changes the frequencies,
not the work, and is left out.

    python3 bench/torch_dpo.py [--config tiny|small|gpt2-124m|all] [--threads 1,2]
                               [--steps 10] [--prefrun build/prefrun]
    python3 bench/torch_dpo.py --shape V,T,C,L,H,B [--llama NKV,HD,F,TIED,QKV_BIAS,O_BIAS,THETA]
                               [--name NAME] ...

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


class LlamaBlock(torch.nn.Module):
    def __init__(self, C, H, KV, HD, FF, qkv_bias, o_bias, eps):
        super().__init__()
        self.H, self.KV, self.HD, self.eps = H, KV, HD, eps
        self.ln_1 = torch.nn.Parameter(torch.ones(C))
        self.q = torch.nn.Linear(C, H * HD, bias=qkv_bias)
        self.k = torch.nn.Linear(C, KV * HD, bias=qkv_bias)
        self.v = torch.nn.Linear(C, KV * HD, bias=qkv_bias)
        self.o = torch.nn.Linear(H * HD, C, bias=o_bias)
        self.ln_2 = torch.nn.Parameter(torch.ones(C))
        self.gate = torch.nn.Linear(C, FF, bias=False)
        self.up = torch.nn.Linear(C, FF, bias=False)
        self.down = torch.nn.Linear(FF, C, bias=False)

    def forward(self, x, mask, cos, sin):
        N, T, C = x.shape
        H, KV, HD = self.H, self.KV, self.HD
        h = rms_norm(x, self.ln_1, self.eps)
        q = self.q(h).view(N, T, H, HD).transpose(1, 2)  # (N, H, T, HD)
        k = self.k(h).view(N, T, KV, HD).transpose(1, 2)
        v = self.v(h).view(N, T, KV, HD).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        g = H // KV  # repeat_kv: query head h reads kv head h // g
        k = k[:, :, None].expand(N, KV, g, T, HD).reshape(N, H, T, HD)
        v = v[:, :, None].expand(N, KV, g, T, HD).reshape(N, H, T, HD)
        att = (q @ k.transpose(-2, -1)) * HD ** -0.5
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(N, T, H * HD)
        x = x + self.o(y)
        h = rms_norm(x, self.ln_2, self.eps)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Llama(torch.nn.Module):
    def __init__(self, V, T, C, L, H, KV, HD, FF, tied, qkv_bias, o_bias, theta, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.wte = torch.nn.Embedding(V, C)
        self.blocks = torch.nn.ModuleList(
            LlamaBlock(C, H, KV, HD, FF, qkv_bias, o_bias, eps) for _ in range(L))
        self.ln_f = torch.nn.Parameter(torch.ones(C))
        self.head = None if tied else torch.nn.Parameter(torch.empty(V, C))
        self.register_buffer("mask", torch.triu(torch.ones(T, T, dtype=torch.bool), 1))
        inv_freq = 1.0 / theta ** (torch.arange(0, HD, 2, dtype=torch.float32) / HD)
        angle = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None, :]
        angle = torch.cat((angle, angle), dim=-1)  # (T, HD)
        self.register_buffer("cos", angle.cos())
        self.register_buffer("sin", angle.sin())
        for p in self.parameters():
            if p.dim() >= 2:
                torch.nn.init.normal_(p, std=0.02)

    def seq_logps(self, ids, targets, resp):
        N, T = ids.shape
        x = self.wte(ids)
        cos, sin = self.cos[:T], self.sin[:T]
        for b in self.blocks:
            x = b(x, self.mask, cos, sin)
        head = self.wte.weight if self.head is None else self.head
        logits = rms_norm(x, self.ln_f, self.eps) @ head.t()
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


def bench(shape, threads, steps, llama=None):
    V, T, C, L, H, B = shape
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    make = (lambda: GPT(V, T, C, L, H)) if llama is None else (
        lambda: Llama(V, T, C, L, H, *llama))
    policy = make()
    ref = make()
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


def parse_llama(text, shape):
    f = text.split(",")
    if len(f) != 7:
        sys.exit(f"torch_dpo.py: --llama wants NKV,HD,F,TIED,QKV_BIAS,O_BIAS,THETA, got {text}")
    kv, hd, ff, tied, qb, ob = (int(x) for x in f[:6])
    theta = float(f[6])
    H = shape[4]
    if min(kv, hd, ff) < 1 or H % kv or hd % 2 or theta <= 0:
        sys.exit(f"torch_dpo.py: --llama {text}: NKV must divide H = {H}, HD be even, "
                 "F and THETA positive")
    return kv, hd, ff, bool(tied), bool(qb), bool(ob), theta


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="all", choices=list(CONFIGS) + ["all"])
    ap.add_argument("--shape", help="V,T,C,L,H,B instead of a named config")
    ap.add_argument("--llama", help="NKV,HD,F,TIED,QKV_BIAS,O_BIAS,THETA: --shape is a Llama")
    ap.add_argument("--name", default="custom", help="the name --shape's lines carry")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prefrun", help="prefrun binary to compare with")
    a = ap.parse_args()
    if a.shape:
        runs = [(a.name, parse_shape(a.shape))]
    else:
        runs = [(n, CONFIGS[n]) for n in (ALL if a.config == "all" else [a.config])]
    if a.llama and not a.shape:
        sys.exit("torch_dpo.py: --llama goes with --shape")
    llama = parse_llama(a.llama, runs[0][1]) if a.llama else None
    threads = [int(t) for t in a.threads.split(",")]
    print(f"PyTorch {torch.__version__}, best of {a.steps} steps", flush=True)
    for name, shape in runs:
        results = []
        for n in threads:
            tok, dt = bench(shape, n, a.steps, llama)
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
