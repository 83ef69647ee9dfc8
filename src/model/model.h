/*
 * src/model/ — the policy and its reference: the GPT (model), AdamW
 * (optim), safetensors checkpoints and their run layout (checkpoint) and
 * model files (model_file).
 * May include: util/, core/. Beside lua/, not above it: a model knows no loss.
 */
/*
 * model/model.h — a GPT-2-style decoder on the core ops: the policy and its frozen
 * reference, and the per-sequence log-probs that DPO-family losses consume.
 *
 *     GptConfig cfg = {.vocab = 256, .context = 64, .width = 128, .layers = 4, .heads = 4};
 *     Gpt *policy = gpt_new(&cfg, true, err, sizeof err);   // trainable
 *     gpt_init(policy, seed);                               // GPT-2 init
 *     Gpt *ref = gpt_clone_frozen(policy, err, sizeof err); // no grads, ever
 *     GptPairLogps lp;
 *     gpt_pair_logps(policy, step_ctx, &batch, &lp);        // (B) chosen, rejected
 *
 * Architecture, GPT-2 (Radford et al. 2019, as in llm.c): token + position
 * embeddings; L pre-LayerNorm blocks x += attn(ln1(x)), x += mlp(ln2(x)) with
 * fused causal multi-head attention on the (B, T, 3C) output of one linear and
 * a GELU MLP of width F (4C); a final LayerNorm; the LM head is the token
 * embedding (tied weights).
 * The Llama family (Touvron et al. 2023, as Hugging Face's modeling_llama.py
 * computes it; Mistral and Qwen2 are the same maths): token embeddings only;
 * pre-RMSNorm blocks with q, k, v from one linear, rotary embeddings on q and
 * k, grouped-query attention (NKV key/value heads shared by NH / NKV query
 * heads), an output projection, and a SwiGLU MLP (gate and up from one
 * linear); a final RMSNorm; the head tied or its own (lm_head).
 *
 * Parameters live in ONE float block (and gradients in one more), and the
 * named fields below are leaf tensors pointing into it, so the optimizer, the
 * gradient norm and checkpoints see one flat vector while the forward pass
 * sees named weights. The block and the leaves belong to the model's own
 * persistent TensorCtx; a step's activations belong to the caller's context.
 *
 * A frozen model (trainable = false) has no gradient block and its leaves do
 * not require grad, so ops on it record nothing that backward would visit;
 * run it in a no_grad context and nothing is saved for backward either. In
 * a no_grad context the forward also streams: each block's activations live
 * in one of two scratch arenas, reset as soon as the next block has read
 * them, so only the final LayerNorm and the log-probs land in the caller's
 * context (for the reference: two blocks' memory instead of L).
 *
 * Letters: B pairs, N = 2B sequences, T positions, C width, L layers,
 * NH heads, V vocabulary, maxT context.
 */
#ifndef PREFRUN_MODEL_H
#define PREFRUN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/ops.h"
#include "core/tensor.h"

/* The decoder's family; the fields after heads are zero for GPT-2 as
 * llm.c builds it, and each zero means that default. */
typedef enum GptArch {
    GPT_ARCH_GPT2 = 0, /* LayerNorm, learned positions, GELU MLP, biases, tied head */
    GPT_ARCH_LLAMA,    /* RMSNorm, RoPE, SwiGLU MLP, grouped-query attention */
} GptArch;

typedef struct GptConfig {
    int vocab;   /* V */
    int context; /* maxT: longest sequence */
    int width;   /* C */
    int layers;  /* L */
    int heads;   /* NH; divides C unless head_dim is given */
    GptArch arch;
    int inner;        /* F, the MLP's hidden width; 0: 4C */
    float norm_eps;   /* LayerNorm / RMSNorm epsilon; 0: 1e-5 */
    int kv_heads;     /* NKV (Llama), divides NH; 0: NH */
    int head_dim;     /* HD (Llama); 0: C / NH */
    bool qkv_bias;    /* Llama: biases on q, k, v (Qwen2); GPT-2 always has them */
    bool o_bias;      /* Llama: a bias on the output projection */
    bool untied_head; /* an LM head of its own (lm_head), not the token embedding */
    RopeConfig rope;  /* Llama: theta and scaling; rope.head_dim is set from HD */
} GptConfig;

/* The defaults resolved: F, the epsilon, NKV and HD of a config. */
int gpt_inner(const GptConfig *cfg);
float gpt_norm_eps(const GptConfig *cfg);
int gpt_kv_heads(const GptConfig *cfg);
int gpt_head_dim(const GptConfig *cfg);
/* Field by field (a struct compare would read its padding). */
bool gpt_config_equal(const GptConfig *a, const GptConfig *b);

/* One block's weights. GPT-2: all twelve. Llama: ln1w is input_layernorm,
 * qkvw q_proj, k_proj and v_proj stacked ((NH + 2 NKV) HD, C), attprojw
 * o_proj (C, NH HD), ln2w post_attention_layernorm, fcw gate_proj and
 * up_proj stacked (2F, C), fcprojw down_proj (C, F); qkvb and attprojb
 * only where the config asks, the rest NULL. */
typedef struct GptLayer {
    Tensor *ln1w, *ln1b; // (C)
    Tensor *qkvw;        // (3C, C)
    Tensor *qkvb;        // (3C)
    Tensor *attprojw;    // (C, C)
    Tensor *attprojb;    // (C)
    Tensor *ln2w, *ln2b; // (C)
    Tensor *fcw;         // (F, C); Llama (2F, C)
    Tensor *fcb;         // (F)
    Tensor *fcprojw;     // (C, F)
    Tensor *fcprojb;     // (C)
} GptLayer;

#define GPT_LAYER_TENSORS 12

typedef struct Gpt {
    GptConfig cfg;
    bool trainable;
    TensorCtx *ctx;      /* owns the blocks and the leaf headers; never reset */
    Tensor *all;         // (n_params) every parameter, in the order of `tensors`
    Tensor *wte;         // (V, C) token embedding
    Tensor *head;        // (V, C) the LM head: wte, or lm_head when untied
    Tensor *wpe;         // (maxT, C) GPT-2; NULL for Llama
    GptLayer *h;         // (L)
    Tensor *lnfw, *lnfb; // (C) final norm; lnfb NULL for Llama
    Tensor *rope;        // (2, maxT, HD / 2) Llama's cos/sin table, not a parameter
    Tensor **tensors;    /* the named leaves in block order: wte, wpe, h.0.*, ..., ln_f.* */
    int n_tensors;
    unsigned char *init_kind; /* (n_tensors) how gpt_init fills each tensor */
    TensorCtx *scratch[2];    /* no_grad forward: blocks alternate between these */
    /* LoRA adapters the forward adds (model/lora.h), owned by the caller;
     * NULL or disabled: the base model, to the bit. The KV-cache decoder
     * (decode.c) ignores them: merge (gpt_lora_merge) into a copy to sample. */
    const struct GptLora *lora;
} Gpt;

/* A batch of B preference pairs as one (N = 2B, T) token block: rows 0..B-1
 * are the chosen sequences, rows B..2B-1 the rejected ones. targets[n, t] is
 * the token the model should predict at position t (ids[n, t + 1]) when that
 * token belongs to the response, else -1: prompt and padding are masked. */
typedef struct GptPairBatch {
    int B, T;
    const int32_t *ids;     // (2B, T)
    const int32_t *targets; // (2B, T)
} GptPairBatch;

typedef struct GptPairLogps {
    Tensor *chosen;          // (B) sum of response-token log-probs
    Tensor *rejected;        // (B)
    Tensor *chosen_tokens;   // (B, T) log-prob of targets[b, t]; 0 where masked
    Tensor *rejected_tokens; // (B, T)
} GptPairLogps;

/* Checks sizes (positive, heads divide width); 0 or -1 with err set. */
int gpt_config_check(const GptConfig *cfg, char *err, size_t errlen);
int64_t gpt_config_num_params(const GptConfig *cfg);

/* A model with zeroed parameters; trainable models get a zeroed gradient block. */
Gpt *gpt_new(const GptConfig *cfg, bool trainable, char *err, size_t errlen);
void gpt_free(Gpt *m);
/* GPT-2 init: weights ~ N(0, 0.02), residual projections scaled by
 * 1/sqrt(2L), biases 0, LayerNorm weights 1; the same seed, the same weights. */
void gpt_init(Gpt *m, uint64_t seed);
/* A frozen copy of m's current weights: the reference model. */
Gpt *gpt_clone_frozen(const Gpt *m, char *err, size_t errlen);
void gpt_zero_grad(Gpt *m);
/* true for the tensors AdamW decays: every weight except biases and LayerNorm */
bool gpt_tensor_decays(const Gpt *m, int i);

/* Hidden states after the final LayerNorm for ids (N, T): (N, T, C). */
Tensor *gpt_forward(const Gpt *m, TensorCtx *ctx, const int32_t *ids, int N, int T);
/* Per-token log-probs of targets (N, T) (-1: masked, gives 0): (N, T). One
 * fused log-softmax + gather (cross-entropy) over the tied LM head, run on
 * the unmasked positions only (a prompt's positions need no logits). */
Tensor *gpt_token_logps(const Gpt *m, TensorCtx *ctx, const int32_t *ids, const int32_t *targets,
                        int N, int T);
/* One forward on the concatenated (2B, T) batch, split into chosen and
 * rejected. Returns 0, or -1 with ctx's error set. */
int gpt_pair_logps(const Gpt *m, TensorCtx *ctx, const GptPairBatch *batch, GptPairLogps *out);

#endif
