/*
 * model/lora.h — LoRA adapters (Hu et al. 2021) on a frozen Gpt, as PEFT
 * makes, trains, merges and saves them: the settings (PEFT's names and
 * meaning), the adapters' own parameter block, the forward hook model.c's
 * blocks call, merging into the base weights, and PEFT's adapter folder.
 *
 *     Gpt *base = ...;                                   // trainable = false
 *     LoraConfig lc = {.r = 16, .alpha = 32, .dropout = 0.05f,
 *                      .target_modules = "all-linear"};
 *     GptLora *lora = gpt_lora_new(base, &lc, seed, err, sizeof err);
 *     gpt_lora_attach(base, lora, err, sizeof err);      // base->lora = lora
 *     lora->enabled = false;  // the reference: the base model, to the bit
 *     lora->enabled = true;   // the policy: base + adapters
 *     lora->dropout_seed = seed + step;                  // a fresh mask per step
 *     gpt_pair_logps(base, ctx, &batch, &lp); ag_backward(...);  // grads in lora->all
 *     gpt_lora_save(lora, "out/adapter", err, sizeof err);       // PEFT's folder
 *
 * The maths is PEFT's: a targeted linear y = x W^T (+ b) becomes
 * y + scale (dropout(x) A^T) B^T, A (r, in), B (out, r), scale = alpha / r,
 * or alpha / sqrt(r) with use_rslora. Init is PEFT's default
 * (init_lora_weights = True): A from kaiming_uniform(a = sqrt(5)), which is
 * uniform(-1/sqrt(in), 1/sqrt(in)), B zero, so step 0 equals the base
 * model. Dropout (lora_dropout) acts on x before A, only when the forward
 * records (not in a no_grad context), from dropout_seed (core/ops.h's
 * ag_lora).
 *
 * Target modules, by PEFT's names (a module is matched by name suffix, as
 * PEFT does):
 *   Llama family: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj
 *                 (default, PEFT's for llama/mistral/qwen2: q_proj v_proj)
 *   GPT-2:        c_attn, c_proj (attn.c_proj and mlp.c_proj both), c_fc;
 *                 attn.c_proj or mlp.c_proj alone (default: c_attn)
 *   all-linear:   every linear but the LM head.
 * prefrun stacks q/k/v in qkvw and gate/up in fcw: q_proj's adapter adds
 * into columns [0, NH HD) of the fused product, k_proj's from NH HD,
 * v_proj's from (NH + NKV) HD; gate_proj's from 0, up_proj's from F.
 *
 * Ownership: a GptLora owns its context, which holds the parameter block
 * `all` (n_params floats, with a gradient block: the optimizer and
 * checkpoints see one flat vector, as they do a Gpt's) and the named leaves
 * A and B of every (layer, module) pointing into it. The base Gpt owns
 * nothing of it: attach stores a pointer (model.h's `lora`), and the
 * adapters must outlive the attachment. The base stays frozen (no gradient
 * block): gradients reach the adapters only.
 *
 * The PEFT folder: adapter_config.json (peft_type LORA, r, lora_alpha,
 * lora_dropout, use_rslora, target_modules, bias "none", task_type
 * CAUSAL_LM, base_model_name_or_path, fan_in_fan_out — true for GPT-2,
 * whose HF linears are Conv1D — inference_mode) and
 * adapter_model.safetensors with PEFT's keys:
 *   base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight  (r, in)
 *   base_model.model.model.layers.{i}.mlp.gate_proj.lora_B.weight     (out, r)
 *   base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight      (r, in)
 *   base_model.model.transformer.h.{i}.mlp.c_proj.lora_B.weight       (out, r)
 * (PEFT's lora_A and lora_B are nn.Linear for Conv1D targets too, so GPT-2's
 * shapes are the same (r, in) and (out, r).) Written F32, atomically; read
 * F32, F16 or BF16, every name and shape checked against the config and the
 * base model before anything is allocated.
 *
 * Letters: L layers, C width, F MLP width, NH heads, NKV kv heads, HD head
 * width, r the rank.
 */
#ifndef PREFRUN_LORA_H
#define PREFRUN_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/ops.h"
#include "model/model.h"

/* The linears an adapter can target, by architecture. */
typedef enum LoraModule {
    /* the Llama family */
    LORA_Q_PROJ,
    LORA_K_PROJ,
    LORA_V_PROJ,
    LORA_O_PROJ,
    LORA_GATE_PROJ,
    LORA_UP_PROJ,
    LORA_DOWN_PROJ,
    /* GPT-2 */
    LORA_C_ATTN,
    LORA_ATTN_C_PROJ,
    LORA_C_FC,
    LORA_MLP_C_PROJ,
    LORA_N_MODULES
} LoraModule;

#define LORA_MAX_R 65536

/* PEFT's LoraConfig fields, by their names. */
typedef struct LoraConfig {
    int r;           /* r (lora_r): the rank, >= 1 */
    float alpha;     /* lora_alpha: scale = alpha / r (alpha / sqrt(r) with use_rslora) */
    bool use_rslora; /* rank-stabilised scale */
    float dropout;   /* lora_dropout, in [0, 1); read at every forward (0 for an eval with grads) */
    /* target_modules: PEFT names separated by commas or spaces, or
     * "all-linear"; NULL or "": PEFT's default for the architecture */
    const char *target_modules;
} LoraConfig;

/* One (layer, module)'s adapter; A NULL where the module is not targeted. */
typedef struct LoraAdapter {
    Tensor *A;   // (r, in)
    Tensor *B;   // (out, r)
    int in, out; /* the targeted linear's sizes (its part, for a fused one) */
    int col0;    /* the first column of the fused output it adds into */
} LoraAdapter;

typedef struct GptLora {
    LoraConfig cfg;        /* as given (target_modules: NULL; `modules` holds them) */
    uint32_t modules;      /* bit (1u << LoraModule) per targeted module */
    float scale;           /* alpha / r or alpha / sqrt(r) */
    bool enabled;          /* false: the forward is the base model's, to the bit */
    uint64_t dropout_seed; /* the masks of the next forward; the trainer sets it per step */
    GptConfig base;        /* the base model's shape, checked by attach and load */
    char base_model[512];  /* base_model_name_or_path ("" unless set) */
    TensorCtx *ctx;        /* owns the blocks and leaf headers; never reset */
    Tensor *all;           // (n_params) every adapter parameter, in the order of `tensors`
    Tensor **tensors;      /* A, B of each targeted (layer, module), layer-major, module order */
    int n_tensors;
    LoraAdapter *ad; // (L * LORA_N_MODULES) by layer * LORA_N_MODULES + module
} GptLora;

/* PEFT's name of a module ("q_proj", "attn.c_proj", ...) */
const char *lora_module_name(LoraModule m);
/* target_modules (see LoraConfig) as bits for arch; an unknown or foreign
 * name is an error naming it and listing the valid ones */
int lora_targets_parse(GptArch arch, const char *spec, uint32_t *modules, char *err, size_t errlen);
/* alpha / r, or alpha / sqrt(r) */
float lora_config_scale(const LoraConfig *c);
/* The adapter parameter count: sum over layers and targeted modules of
 * r (in + out) */
int64_t lora_num_params(const GptConfig *g, uint32_t modules, int r);

/* Adapters for base (frozen: trainable = false) with PEFT's init from seed. */
GptLora *gpt_lora_new(const Gpt *base, const LoraConfig *cfg, uint64_t seed, char *err,
                      size_t errlen);
void gpt_lora_free(GptLora *l);
/* m->lora = l after checking that l was made for m's shape and m is frozen
 * (l NULL: detach) */
int gpt_lora_attach(Gpt *m, const GptLora *l, char *err, size_t errlen);
void gpt_lora_zero_grad(GptLora *l);
int64_t gpt_lora_num_params(const GptLora *l);
/* true for the tensors AdamW decays: all of them (PEFT and TRL decay the adapters) */
bool gpt_lora_decays(const GptLora *l, int i);

/* The hook of model.c's blocks: y (the output of module mod of layer, whose
 * input is x) with m's adapter added, or y itself when m has none there or
 * it is disabled. */
Tensor *gpt_lora_apply(TensorCtx *ctx, const Gpt *m, int layer, LoraModule mod, Tensor *x,
                       Tensor *y);
/* true when gpt_lora_apply would add something for (layer, mod) */
bool gpt_lora_active(const Gpt *m, int layer, LoraModule mod);

/* W += scale B A in m's weights, for every adapter of l (m: l's shape; the
 * base itself, or a copy of it). decode.c has no LoRA hooks: merge into a
 * copy to sample, or to export full weights (hf_model_save). */
int gpt_lora_merge(Gpt *m, const GptLora *l, char *err, size_t errlen);

/* PEFT's key of tensor i ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") */
void gpt_lora_peft_key(const GptLora *l, int i, char *buf, size_t len);
/* Writes DIR/adapter_config.json and DIR/adapter_model.safetensors (DIR
 * created if missing), each atomically. */
int gpt_lora_save(const GptLora *l, const char *dir, char *err, size_t errlen);
/* Adapters read from a PEFT folder, for base (frozen); errors name the file
 * and the field or tensor. */
GptLora *gpt_lora_load(const Gpt *base, const char *dir, char *err, size_t errlen);

#endif
