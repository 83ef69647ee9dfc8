#!/usr/bin/python3
"""hf_llama_reference.py — an independent reference for prefrun's Llama-family import.

Writes tiny random LlamaForCausalLM, Qwen2ForCausalLM and MistralForCausalLM
folders in Hugging Face's exact layout (config.json + safetensors written by
hand, as tests/hf_reference.py does) and, for each, the logits and response
log-probs of a few sequences computed by a forward written out from the
semantics of Hugging Face's published modeling_llama.py, modeling_qwen2.py,
modeling_mistral.py and modeling_rope_utils.py (eval mode):

  - RMSNorm: x * rsqrt(mean(x^2) + eps) * w (HF runs it in float32, here
    float64);
  - rotary embeddings: inv_freq = 1 / theta^(2i / HD), divided by factor for
    "linear", re-weighted piecewise by wavelength for "llama3"; the angle
    p * inv_freq; q, k -> x cos + rotate_half(x) sin with rotate_half(x) =
    [-x2, x1] on the halves of HD. inv_freq and the angle are float32 here
    as in HF, where they are a float32 buffer and a float32 product; cos and
    sin of that angle and everything after are float64;
  - attention: q, k, v projections (biases: Qwen2 on q, k, v; Llama's
    attention_bias on all four), NKV key/value heads repeated to NH
    (repeat_kv), scores scaled by HD^-1/2, causal, softmax, o_proj; a
    Mistral sliding window no shorter than the sequence masks nothing;
  - MLP: down(silu(gate(x)) * up(x)); the head: lm_head, or the embedding
    when tie_word_embeddings.

For the float32 folders it also gives the gradient of the DPO loss of
tests/hf_reference.py (its reference model: the model itself, detached) for
every tensor, under HF's names. The weights enter the forward exactly as
stored (a bfloat16 folder's are the bfloat16 values), so what remains in a
comparison is prefrun's float32 arithmetic.

    /usr/bin/python3 tests/hf_llama_reference.py OUT_DIR

writes OUT_DIR/{llama,qwen2,mistral,llama_bf16,llama_bias}/ and
OUT_DIR/reference.json. Needs Debian's python3-torch only.
"""
import json
import math
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_reference import BETA, PAIRS, SEQUENCES, stored, token_logps, write_safetensors  # noqa: E402

V, P, C, L = 67, 16, 32, 2  # vocabulary, positions, width, layers

# The variants' shapes and switches; "config" is what config.json adds to
# the sizes. NH query heads, NKV key/value heads, HD head width, F MLP width.
SPECS = {
    # (a) GQA, llama3 rope scaling with wavelengths on all three of its
    # branches (2 pi / inv_freq = 6.3, 63, 628, 6283 against 200 / 4 and
    # 200 / 1), an untied head
    "llama": dict(arch="LlamaForCausalLM", type="llama", NH=4, NKV=2, HD=8, F=48, eps=1e-5,
                  theta=10000.0, tied=False, qkv_bias=False, o_bias=False,
                  rope={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 200},
                  config={"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1}),
    # (b) q, k, v biases and no o_proj bias, one kv head, tied (no lm_head)
    "qwen2": dict(arch="Qwen2ForCausalLM", type="qwen2", NH=4, NKV=1, HD=8, F=64, eps=1e-6,
                  theta=1000000.0, tied=True, qkv_bias=True, o_bias=False, rope=None,
                  config={"use_sliding_window": False, "sliding_window": 32768,
                          "max_window_layers": 2}),
    # (c) head_dim 16 with hidden 32 and 4 heads, linear scaling in the old
    # "type" spelling, a window as long as the context; tied, with an
    # lm_head.weight equal to the embedding in the file
    "mistral": dict(arch="MistralForCausalLM", type="mistral", NH=4, NKV=2, HD=16, F=40,
                    eps=1e-5, theta=10000.0, tied=True, qkv_bias=False, o_bias=False,
                    rope={"type": "linear", "factor": 2.0}, lm_head_in_file=True,
                    config={"head_dim": 16, "sliding_window": P}),
    # (e) attention_bias: biases on q, k, v and o; heads = kv heads, no rope
    # scaling, tied; written in F16 over two shards with inv_freq buffers
    "llama_bias": dict(arch="LlamaForCausalLM", type="llama", NH=4, NKV=4, HD=8, F=48, eps=1e-5,
                       theta=500000.0, tied=True, qkv_bias=True, o_bias=True, rope=None,
                       config={"attention_bias": True}),
}


def random_weights(s, gen):
    """HF's names and shapes (nn.Linear weights [out, in])."""
    def normal(*shape, std):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    q, kv = s["NH"] * s["HD"], s["NKV"] * s["HD"]
    w = {"model.embed_tokens.weight": normal(V, C, std=0.3)}
    for i in range(L):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = 1.0 + normal(C, std=0.2)
        for name, rows in (("q", q), ("k", kv), ("v", kv)):
            w[p + f"self_attn.{name}_proj.weight"] = normal(rows, C, std=0.15)
            if s["qkv_bias"]:
                w[p + f"self_attn.{name}_proj.bias"] = normal(rows, std=0.1)
        w[p + "self_attn.o_proj.weight"] = normal(C, q, std=0.15)
        if s["o_bias"]:
            w[p + "self_attn.o_proj.bias"] = normal(C, std=0.1)
        w[p + "post_attention_layernorm.weight"] = 1.0 + normal(C, std=0.2)
        w[p + "mlp.gate_proj.weight"] = normal(s["F"], C, std=0.15)
        w[p + "mlp.up_proj.weight"] = normal(s["F"], C, std=0.15)
        w[p + "mlp.down_proj.weight"] = normal(C, s["F"], std=0.1)
    w["model.norm.weight"] = 1.0 + normal(C, std=0.2)
    if not s["tied"]:
        w["lm_head.weight"] = normal(V, C, std=0.3)
    return w


def config(s, dtype):
    c = {"architectures": [s["arch"]], "model_type": s["type"], "vocab_size": V,
         "hidden_size": C, "intermediate_size": s["F"], "num_hidden_layers": L,
         "num_attention_heads": s["NH"], "num_key_value_heads": s["NKV"],
         "max_position_embeddings": P, "rms_norm_eps": s["eps"], "rope_theta": s["theta"],
         "rope_scaling": s["rope"], "hidden_act": "silu", "tie_word_embeddings": s["tied"],
         "attention_dropout": 0.0, "initializer_range": 0.02, "bos_token_id": 1,
         "eos_token_id": 2, "use_cache": True, "torch_dtype": dtype}
    c.update(s["config"])
    return c


# ---- the forward ----

def inv_freq_of(s):
    """The rotary frequencies in float32, as HF's buffer holds them."""
    hd = s["HD"]
    exponent = torch.arange(0, hd, 2, dtype=torch.int64).to(torch.float32) / hd
    inv = 1.0 / (s["theta"] ** exponent)
    r = s["rope"]
    kind = (r or {}).get("rope_type", (r or {}).get("type", "default"))
    if kind == "linear":
        return inv / r["factor"]
    if kind != "llama3":
        return inv
    factor, lo, hi = r["factor"], r["low_freq_factor"], r["high_freq_factor"]
    old = r["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv
    # long wavelengths (beyond old / lo) are slowed by factor, short ones
    # (below old / hi) kept, and those between interpolated
    slowed = torch.where(wavelen > old / lo, inv / factor, inv)
    t = (old / wavelen - lo) / (hi - lo)
    blend = (1 - t) * slowed / factor + t * slowed
    between = ~(wavelen < old / hi) & ~(wavelen > old / lo)
    return torch.where(between, blend, slowed)


def rope_tables(s, T):
    angle = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq_of(s)[None, :]  # float32
    angle = torch.cat((angle, angle), dim=-1).to(torch.float64)  # (T, HD)
    return angle.cos(), angle.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def linear(w, name, x):
    y = x @ w[name + ".weight"].T
    return y + w[name + ".bias"] if name + ".bias" in w else y


def attention(w, p, s, x, cos, sin):
    T, NH, NKV, HD = x.shape[0], s["NH"], s["NKV"], s["HD"]
    q = linear(w, p + "self_attn.q_proj", x).view(T, NH, HD).transpose(0, 1)  # (NH, T, HD)
    k = linear(w, p + "self_attn.k_proj", x).view(T, NKV, HD).transpose(0, 1)
    v = linear(w, p + "self_attn.v_proj", x).view(T, NKV, HD).transpose(0, 1)
    q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    g = NH // NKV  # repeat_kv: query head h reads kv head h // g
    k = k[:, None].expand(NKV, g, T, HD).reshape(NH, T, HD)
    v = v[:, None].expand(NKV, g, T, HD).reshape(NH, T, HD)
    scores = (q @ k.transpose(1, 2)) * HD ** -0.5
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    scores = scores.masked_fill(~causal, float("-inf"))
    o = torch.softmax(scores, dim=-1) @ v  # (NH, T, HD)
    return linear(w, p + "self_attn.o_proj", o.transpose(0, 1).reshape(T, NH * HD))


def mlp(w, p, x):
    gate = linear(w, p + "mlp.gate_proj", x)
    return linear(w, p + "mlp.down_proj", torch.nn.functional.silu(gate) * linear(w, p + "mlp.up_proj", x))


def logits_of(w, s, ids):
    """(T, V) logits of one sequence."""
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    cos, sin = rope_tables(s, len(ids))
    for i in range(L):
        p = f"model.layers.{i}."
        x = x + attention(w, p, s, rms_norm(x, w[p + "input_layernorm.weight"], s["eps"]), cos, sin)
        x = x + mlp(w, p, rms_norm(x, w[p + "post_attention_layernorm.weight"], s["eps"]))
    x = rms_norm(x, w["model.norm.weight"], s["eps"])
    head = w["model.embed_tokens.weight"] if s["tied"] else w["lm_head.weight"]
    return x @ head.T


def reference(w, s):
    seqs = []
    for ids, pl in SEQUENCES:
        lg = logits_of(w, s, ids)
        tl = token_logps(lg, ids, pl)
        seqs.append({"ids": ids, "prompt_len": pl, "logits": lg.flatten().tolist(),
                     "token_logps": tl.tolist(), "logp": tl.sum().item()})
    return seqs


def dpo_gradient(w, s):
    p = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    logp = [token_logps(logits_of(p, s, ids), ids, pl).sum() for ids, pl in SEQUENCES]
    losses = []
    for c, r in PAIRS:
        pc, pr = logp[c], logp[r]
        losses.append(-torch.nn.functional.logsigmoid(
            BETA * ((pc - pc.detach()) - (pr - pr.detach()))))
    loss = torch.stack(losses).mean()
    loss.backward()
    return {"beta": BETA, "pairs": PAIRS, "loss": loss.item(),
            "grads": {k: v.grad.flatten().tolist() for k, v in p.items()}}


# ---- folders ----

def write_folder(out, name, s, w, dtype, rng, shards=1, inv_freq=False):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    torch_dtype = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[dtype]
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config(s, torch_dtype), f, indent=2)
    items = [(k, v, dtype) for k, v in w.items()]
    if s.get("lm_head_in_file"):  # tied, and saved anyway: the embedding's values
        items.append(("lm_head.weight", w["model.embed_tokens.weight"], dtype))
    if inv_freq:  # the buffers older versions saved, one per layer
        for i in range(L):
            items.append((f"model.layers.{i}.self_attn.rotary_emb.inv_freq", inv_freq_of(s), "F32"))
    rng.shuffle(items)  # tensors may come in any order
    if shards == 1:
        write_safetensors(os.path.join(folder, "model.safetensors"), items)
        return
    weight_map, total = {}, 0
    for k in range(shards):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = items[k::shards]
        total += write_safetensors(os.path.join(folder, file), part)
        weight_map.update({n: file for n, _, _ in part})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: hf_llama_reference.py OUT_DIR")
    out = sys.argv[1]
    gen = torch.Generator().manual_seed(20240613)
    rng = random.Random(11)
    ref = {"torch": torch.__version__, "models": {}}
    for name in ("llama", "qwen2", "mistral"):
        s = SPECS[name]
        w = random_weights(s, gen)
        write_folder(out, name, s, w, "F32", rng)
        ws = stored(w, "F32")
        ref["models"][name] = {"sequences": reference(ws, s), "dpo": dpo_gradient(ws, s)}
        if name == "llama":  # (d): the same weights in bfloat16
            write_folder(out, "llama_bf16", s, w, "BF16", rng)
            ref["models"]["llama_bf16"] = {"sequences": reference(stored(w, "BF16"), s)}
    s = SPECS["llama_bias"]
    w = random_weights(s, gen)
    write_folder(out, "llama_bias", s, w, "F16", rng, shards=2, inv_freq=True)
    ref["models"]["llama_bias"] = {"sequences": reference(stored(w, "F16"), s)}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()
