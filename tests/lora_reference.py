#!/usr/bin/python3
"""lora_reference.py — an independent reference for prefrun's LoRA adapters.

Writes, for a tiny GPT-2 and a tiny Llama with grouped-query attention, a
base model folder in Hugging Face's layout (the writers and random weights of
tests/hf_reference.py and tests/hf_llama_reference.py) and beside it an
adapter folder as PEFT saves one (adapter_config.json and
adapter_model.safetensors with PEFT's key names:
base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight,
base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight, ...), with
random nonzero lora_B, so the adapters change the model. Then, in float64 on
the stored values, the forward of those references with PEFT's LoRA forward
hooked into each targeted linear:

    y = base(x) + scaling * lora_B(lora_A(x)),  lora_A.weight (r, in), lora_B.weight (out, r)

(PEFT's Linear; for GPT-2's Conv1D layers PEFT's lora_A and lora_B are
nn.Linear too, so the shapes are the same), scaling = lora_alpha / r, or
lora_alpha / sqrt(r) with use_rslora. Eval mode: no dropout.

For each model, reference.json holds the response log-probs of the
sequences of hf_reference.py with the adapters and without, and the DPO
loss as TRL computes it for a PEFT model (the reference log-probs are the
base model's: the adapters switched off) with its gradient for every
lora_A and lora_B tensor, under PEFT's names.

    /usr/bin/python3 tests/lora_reference.py OUT_DIR

writes OUT_DIR/{gpt2,gpt2_adapter,llama,llama_adapter}/ and
OUT_DIR/reference.json. The GPT-2 adapter is float32 with lora_alpha / r;
the Llama adapter bfloat16 with use_rslora. Needs Debian's python3-torch
only (no peft, transformers or safetensors package).
"""
import json
import math
import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_llama_reference as hl  # noqa: E402
import hf_reference as hg  # noqa: E402

ADAPTERS = {}  # module name -> (lora_A, lora_B, scaling), read by the hooks below

_conv1d, _linear = hg.conv1d, hl.linear
_CONV1D_NAMES = {}  # id(weight) -> GPT-2 module name, to find its adapter


def conv1d_with_lora(x, weight, bias):
    y = _conv1d(x, weight, bias)
    ad = ADAPTERS.get(_CONV1D_NAMES.get(id(weight)))
    if ad is None:
        return y
    A, B, s = ad
    return y + s * ((x @ A.T) @ B.T)


def linear_with_lora(w, name, x):
    y = _linear(w, name, x)
    ad = ADAPTERS.get(name)
    if ad is None:
        return y
    A, B, s = ad
    return y + s * ((x @ A.T) @ B.T)


hg.conv1d, hl.linear = conv1d_with_lora, linear_with_lora  # the forwards look them up by name


def peft_config(r, alpha, rslora, dropout, targets, fan_in_fan_out, base):
    """adapter_config.json as PEFT 0.13 writes it"""
    return {"alpha_pattern": {}, "auto_mapping": None, "base_model_name_or_path": base,
            "bias": "none", "fan_in_fan_out": fan_in_fan_out, "inference_mode": True,
            "init_lora_weights": True, "layer_replication": None, "layers_pattern": None,
            "layers_to_transform": None, "loftq_config": {}, "lora_alpha": alpha,
            "lora_dropout": dropout, "megatron_config": None, "megatron_core": "megatron.core",
            "modules_to_save": None, "peft_type": "LORA", "r": r, "rank_pattern": {},
            "revision": None, "target_modules": targets, "task_type": "CAUSAL_LM",
            "use_dora": False, "use_rslora": rslora}


def random_adapters(gen, modules, r):
    """{module: (A, B)}: A as PEFT inits it (kaiming_uniform, a = sqrt(5):
    uniform(+-1/sqrt(in))), B random (PEFT's is zero until trained)"""
    out = {}
    for name, (n_in, n_out) in modules.items():
        bound = 1.0 / math.sqrt(n_in)
        A = (torch.rand(r, n_in, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        B = torch.randn(n_out, r, generator=gen, dtype=torch.float64) * 0.2
        out[name] = (A, B)
    return out


def write_adapter(folder, prefix, adapters, dtype, config):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    items = []
    for name, (A, B) in adapters.items():
        items.append((prefix + name + ".lora_A.weight", A, dtype))
        items.append((prefix + name + ".lora_B.weight", B, dtype))
    random.Random(3).shuffle(items)
    hg.write_safetensors(os.path.join(folder, "adapter_model.safetensors"), items)


def as_stored(adapters, dtype):
    cast = hg.DTYPES[dtype]
    return {k: (A.to(cast).to(torch.float64), B.to(cast).to(torch.float64))
            for k, (A, B) in adapters.items()}


def run(logits_of, adapters, scaling, prefix):
    """log-probs with and without the adapters, and the DPO loss and its
    gradient for every adapter tensor"""
    ADAPTERS.clear()
    base = [hg.token_logps(logits_of(ids), ids, pl) for ids, pl in hg.SEQUENCES]
    leaves = {k: (A.clone().requires_grad_(True), B.clone().requires_grad_(True))
              for k, (A, B) in adapters.items()}
    ADAPTERS.update({k: (A, B, scaling) for k, (A, B) in leaves.items()})
    tuned = [hg.token_logps(logits_of(ids), ids, pl) for ids, pl in hg.SEQUENCES]
    losses = []
    for c, r in hg.PAIRS:
        margin = (tuned[c].sum() - base[c].sum()) - (tuned[r].sum() - base[r].sum())
        losses.append(-torch.nn.functional.logsigmoid(hg.BETA * margin))
    loss = torch.stack(losses).mean()
    loss.backward()
    ADAPTERS.clear()
    grads = {}
    for k, (A, B) in leaves.items():
        grads[prefix + k + ".lora_A.weight"] = A.grad.flatten().tolist()
        grads[prefix + k + ".lora_B.weight"] = B.grad.flatten().tolist()
    seqs = [{"ids": ids, "prompt_len": pl, "token_logps": t.tolist(), "logp": t.sum().item(),
             "base_logp": b.sum().item()}
            for (ids, pl), t, b in zip(hg.SEQUENCES, tuned, base)]
    return {"scaling": scaling, "sequences": seqs,
            "dpo": {"beta": hg.BETA, "pairs": hg.PAIRS, "loss": loss.item(), "grads": grads}}


def gpt2(out, ref):
    gen = torch.Generator().manual_seed(20240701)
    w = hg.random_weights(gen)
    hg.write_folder(out, "gpt2", w, "F32", "transformer.", random.Random(5))
    ws = hg.stored(w, "F32")
    C, F, r, alpha = hg.C, 4 * hg.C, 4, 8
    modules = {}
    for i in range(hg.L):
        h = f"h.{i}."
        modules.update({h + "attn.c_attn": (C, 3 * C), h + "attn.c_proj": (C, C),
                        h + "mlp.c_fc": (C, F), h + "mlp.c_proj": (F, C)})
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            _CONV1D_NAMES[id(ws[h + m + ".weight"])] = h + m
    ad = random_adapters(gen, modules, r)
    prefix = "base_model.model.transformer."
    # what PEFT writes for target_modules="all-linear" on GPT-2
    cfg = peft_config(r, alpha, False, 0.05, ["c_proj", "c_attn", "c_fc"], True, "gpt2-tiny")
    write_adapter(os.path.join(out, "gpt2_adapter"), prefix, ad, "F32", cfg)
    ref["models"]["gpt2"] = run(lambda ids: hg.logits_of(ws, ids), as_stored(ad, "F32"),
                                alpha / r, prefix)


def llama(out, ref):
    gen = torch.Generator().manual_seed(20240702)
    s = hl.SPECS["llama"]  # 4 query heads, 2 kv heads, llama3 rope, untied head
    w = hl.random_weights(s, gen)
    hl.write_folder(out, "llama", s, w, "F32", random.Random(6))
    ws = hg.stored(w, "F32")
    C, F, q, kv, r, alpha = hl.C, s["F"], s["NH"] * s["HD"], s["NKV"] * s["HD"], 3, 5
    modules = {}
    for i in range(hl.L):
        p = f"model.layers.{i}."
        modules.update({p + "self_attn.q_proj": (C, q), p + "self_attn.k_proj": (C, kv),
                        p + "self_attn.v_proj": (C, kv), p + "self_attn.o_proj": (q, C),
                        p + "mlp.gate_proj": (C, F), p + "mlp.up_proj": (C, F),
                        p + "mlp.down_proj": (F, C)})
    ad = random_adapters(gen, modules, r)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    cfg = peft_config(r, alpha, True, 0.0, targets, False, "llama-tiny")
    # PEFT's keys: "base_model.model." + the module path in LlamaForCausalLM
    write_adapter(os.path.join(out, "llama_adapter"), "base_model.model.", ad, "BF16", cfg)
    ref["models"]["llama"] = run(lambda ids: hl.logits_of(ws, s, ids), as_stored(ad, "BF16"),
                                 alpha / math.sqrt(r), "base_model.model.")


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: lora_reference.py OUT_DIR")
    out = sys.argv[1]
    ref = {"torch": torch.__version__, "models": {}}
    gpt2(out, ref)
    llama(out, ref)
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f)


if __name__ == "__main__":
    main()
