#!/usr/bin/python3
"""hf_reference.py — an independent reference for prefrun's GPT-2 import.

Writes tiny random GPT-2 checkpoints in Hugging Face's exact folder layout
(config.json + safetensors, written here by hand: the format is an 8-byte
little-endian header length, a JSON header, then the raw data) and, for each,
the logits and per-sequence log-probs of a few token sequences computed by a
GPT-2 forward written out from Hugging Face's published modeling code
(transformers' modeling_gpt2.py: GPT2Model, GPT2Attention, GPT2MLP, Conv1D,
NewGELUActivation "gelu_new"). For the float32 model it also gives the
gradient of a DPO loss, -logsigmoid(beta * ((pc - rc) - (pr - rr))), whose
reference model is the model itself (rc, rr: the same log-probs, detached).

The forward runs in float64 on the weights exactly as stored (a bfloat16
model's weights are the bfloat16 values), so the only error left in a
comparison is prefrun's float32 arithmetic.

    /usr/bin/python3 tests/hf_reference.py OUT_DIR

writes OUT_DIR/{f32,bf16,f16,inner}/ and OUT_DIR/reference.json (inner: an
MLP of 3 n_embd and layer_norm_epsilon 1e-6). Needs Debian's
python3-torch only (no transformers, no safetensors package).
"""
import json
import math
import os
import random
import struct
import sys

import torch

V, P, C, L, NH = 67, 16, 32, 2, 4  # vocabulary, positions, width, layers, heads
BETA = 0.1

# (ids, prompt length): pairs (0, 1) and (2, 3) share their prompts
SEQUENCES = [
    ([5, 17, 3, 44, 9, 12, 60, 1, 33], 3),
    ([5, 17, 3, 2, 2, 50, 7, 31, 8, 19, 66, 4], 3),
    ([63, 0, 28, 41, 11, 6, 22], 4),
    ([63, 0, 28, 41, 39, 14, 10, 57, 45, 3, 26, 18, 30, 2, 9, 1], 4),
]
PAIRS = [(0, 1), (2, 3)]

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def random_weights(gen, F=4 * C):
    """HF names without the "transformer." prefix; Conv1D weights are [in, out];
    F the MLP's width (n_inner)."""
    def normal(*shape, std):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    w = {"wte.weight": normal(V, C, std=0.3), "wpe.weight": normal(P, C, std=0.3)}
    for i in range(L):
        h = f"h.{i}."
        for ln in ("ln_1", "ln_2"):
            w[h + ln + ".weight"] = 1.0 + normal(C, std=0.2)
            w[h + ln + ".bias"] = normal(C, std=0.1)
        w[h + "attn.c_attn.weight"] = normal(C, 3 * C, std=0.15)
        w[h + "attn.c_attn.bias"] = normal(3 * C, std=0.1)
        w[h + "attn.c_proj.weight"] = normal(C, C, std=0.15)
        w[h + "attn.c_proj.bias"] = normal(C, std=0.1)
        w[h + "mlp.c_fc.weight"] = normal(C, F, std=0.15)
        w[h + "mlp.c_fc.bias"] = normal(F, std=0.1)
        w[h + "mlp.c_proj.weight"] = normal(F, C, std=0.1)
        w[h + "mlp.c_proj.bias"] = normal(C, std=0.1)
    w["ln_f.weight"] = 1.0 + normal(C, std=0.2)
    w["ln_f.bias"] = normal(C, std=0.1)
    return w


# ---- safetensors, by hand ----

DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def tensor_bytes(t, dtype):
    if dtype == "BOOL":
        return t.to(torch.uint8).contiguous().numpy().tobytes()
    t = t.to(DTYPES[dtype]).contiguous()
    if dtype == "BF16":  # numpy has no bfloat16: its bits as int16
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write_safetensors(path, tensors):
    """tensors: list of (name, tensor, dtype), in the file's data order."""
    header, blobs, off = {}, [], 0
    for name, t, dtype in tensors:
        raw = tensor_bytes(t, dtype)
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return off


def stored(w, dtype):
    """The weights as a file of that dtype holds them, in float64."""
    return {k: v.to(DTYPES[dtype]).to(torch.float64) for k, v in w.items()}


DROP = object()  # a config value that removes the key


def config(**extra):
    c = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": V,
        "n_positions": P, "n_embd": C, "n_layer": L, "n_head": NH, "n_inner": None,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-05,
        "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1, "initializer_range": 0.02,
        "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "bos_token_id": 0, "eos_token_id": 0,
    }
    c.update(extra)
    return {k: v for k, v in c.items() if v is not DROP}


def write_folder(out, name, w, dtype, prefix, rng, shards=1, buffers=False, lm_head=False, **cfg):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config(**cfg), f, indent=2)
    items = [(prefix + k, v, dtype) for k, v in w.items()]
    if buffers:  # the causal-mask buffers older HF versions saved
        for i in range(L):
            items.append((f"{prefix}h.{i}.attn.bias", torch.tril(torch.ones(1, 1, P, P)), "BOOL"))
            items.append((f"{prefix}h.{i}.attn.masked_bias", torch.tensor(-1e4), "F32"))
    if lm_head:  # tied: the same values as wte
        items.append(("lm_head.weight", w["wte.weight"], dtype))
    rng.shuffle(items)  # tensors may come in any order
    if shards == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), items)
        return
    weight_map, total = {}, 0
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = items[s::shards]
        total += write_safetensors(os.path.join(folder, file), part)
        weight_map.update({n: file for n, _, _ in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


# ---- GPT-2, as modeling_gpt2.py computes it (eval mode: no dropout) ----

def gelu_new(x):
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))
    return 0.5 * x * (1.0 + torch.tanh(inner))


def conv1d(x, weight, bias):
    """Conv1D: y = x W + b with W stored [in, out]."""
    size_out = x.size()[:-1] + (weight.size(-1),)
    return torch.addmm(bias, x.view(-1, x.size(-1)), weight).view(size_out)


def split_heads(t):
    B, T, _ = t.shape
    return t.view(B, T, NH, C // NH).permute(0, 2, 1, 3)  # (B, NH, T, hd)


def attention(w, h, x):
    q, k, v = conv1d(x, w[h + "attn.c_attn.weight"], w[h + "attn.c_attn.bias"]).split(C, dim=2)
    q, k, v = split_heads(q), split_heads(k), split_heads(v)
    att = torch.matmul(q, k.transpose(-1, -2))
    att = att / torch.full([], v.size(-1) ** 0.5, dtype=att.dtype)  # scale_attn_weights
    T = x.size(1)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool)).view(1, 1, T, T)
    att = torch.where(causal, att, torch.tensor(torch.finfo(att.dtype).min, dtype=att.dtype))
    att = torch.softmax(att, dim=-1)
    o = torch.matmul(att, v).permute(0, 2, 1, 3).reshape(x.shape)  # merge heads
    return conv1d(o, w[h + "attn.c_proj.weight"], w[h + "attn.c_proj.bias"])


def mlp(w, h, x):
    x = gelu_new(conv1d(x, w[h + "mlp.c_fc.weight"], w[h + "mlp.c_fc.bias"]))
    return conv1d(x, w[h + "mlp.c_proj.weight"], w[h + "mlp.c_proj.bias"])


def layer_norm(w, name, x, eps):
    return torch.nn.functional.layer_norm(x, (C,), w[name + ".weight"], w[name + ".bias"], eps)


def logits_of(w, ids, eps=1e-5):
    """(T, V) logits of one sequence: GPT2LMHeadModel with its head tied to wte."""
    ids = torch.tensor([ids])
    x = w["wte.weight"][ids] + w["wpe.weight"][torch.arange(ids.size(1))]
    for i in range(L):
        h = f"h.{i}."
        x = x + attention(w, h, layer_norm(w, h + "ln_1", x, eps))
        x = x + mlp(w, h, layer_norm(w, h + "ln_2", x, eps))
    x = layer_norm(w, "ln_f", x, eps)
    return (x @ w["wte.weight"].T)[0]


def token_logps(logits, ids, prompt_len):
    """log p(ids[t + 1] | ids[:t + 1]) for the response tokens t + 1 >= prompt_len."""
    lp = torch.log_softmax(logits, dim=-1)
    return torch.stack([lp[t, ids[t + 1]] for t in range(prompt_len - 1, len(ids) - 1)])


def reference(w, eps=1e-5):
    seqs = []
    for ids, pl in SEQUENCES:
        lg = logits_of(w, ids, eps)
        tl = token_logps(lg, ids, pl)
        seqs.append({"ids": ids, "prompt_len": pl, "logits": lg.flatten().tolist(),
                     "token_logps": tl.tolist(), "logp": tl.sum().item()})
    return seqs


def dpo_gradient(w, prefix, eps=1e-5):
    p = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    logp = [token_logps(logits_of(p, ids, eps), ids, pl).sum() for ids, pl in SEQUENCES]
    losses = []
    for c, r in PAIRS:
        pc, pr = logp[c], logp[r]
        rc, rr = pc.detach(), pr.detach()  # the reference is the model itself
        losses.append(-torch.nn.functional.logsigmoid(BETA * ((pc - rc) - (pr - rr))))
    loss = torch.stack(losses).mean()
    loss.backward()
    return {"beta": BETA, "pairs": PAIRS, "loss": loss.item(),
            "grads": {prefix + k: v.grad.flatten().tolist() for k, v in p.items()}}


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: hf_reference.py OUT_DIR")
    out = sys.argv[1]
    gen = torch.Generator().manual_seed(20240611)
    rng = random.Random(7)
    w = random_weights(gen)
    ref = {"torch": torch.__version__, "models": {}}
    # float32, "transformer." names, one file
    write_folder(out, "f32", w, "F32", "transformer.", rng)
    ws = stored(w, "F32")
    ref["models"]["f32"] = {"sequences": reference(ws), "dpo": dpo_gradient(ws, "transformer.")}
    # bfloat16, bare names (as GPT2Model saves), sharded in two, with the
    # mask buffers and a tied lm_head.weight
    write_folder(out, "bf16", w, "BF16", "", rng, shards=2, buffers=True, lm_head=True,
                 tie_word_embeddings=True)
    ref["models"]["bf16"] = {"sequences": reference(stored(w, "BF16"))}
    # float16 (its subnormals among the small weights), the old n_ctx spelling
    write_folder(out, "f16", w, "F16", "transformer.", rng, n_ctx=P, n_positions=DROP)
    ref["models"]["f16"] = {"sequences": reference(stored(w, "F16"))}
    # float32 with an MLP of 3 n_embd (n_inner 96, not 4 * 32) and
    # layer_norm_epsilon 1e-6: the two fields GptConfig maps
    wi = random_weights(torch.Generator().manual_seed(20240612), F=3 * C)
    write_folder(out, "inner", wi, "F32", "transformer.", rng, n_inner=3 * C,
                 layer_norm_epsilon=1e-6)
    wis = stored(wi, "F32")
    ref["models"]["inner"] = {"sequences": reference(wis, 1e-6),
                              "dpo": dpo_gradient(wis, "transformer.", 1e-6)}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()
