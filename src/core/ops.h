/*
 * core/ops.h — the differentiable operations of the core, and backward.
 *
 * Every op takes its output context first, returns a new node in that
 * context, and returns NULL with the context's error set when its arguments
 * do not fit (message: "op: argument: what was expected, what was given",
 * with shapes). A NULL source propagates as NULL. The output requires grad
 * when any source does and the context is not in no_grad mode.
 *
 * Broadcasting (binary elementwise ops and where): numpy rules, shapes
 * aligned on the right, a dimension of 1 stretches; a 0-D scalar broadcasts
 * with anything.
 *
 * Dims: a negative dim counts from the end (-1 is the last); for sum and mean
 * the special value AG_ALL reduces every dimension.
 *
 * Integer index arguments (gather, embedding, cross-entropy) are copied into
 * the context, so the caller's array may be freed after the call.
 */
#ifndef PREFRUN_OPS_H
#define PREFRUN_OPS_H

#include "core/tensor.h"

#define AG_ALL INT32_MIN

/* elementwise binary, broadcasting */
Tensor *ag_add(TensorCtx *ctx, Tensor *a, Tensor *b);
Tensor *ag_sub(TensorCtx *ctx, Tensor *a, Tensor *b);
Tensor *ag_mul(TensorCtx *ctx, Tensor *a, Tensor *b);
Tensor *ag_div(TensorCtx *ctx, Tensor *a, Tensor *b);
Tensor *ag_minimum(TensorCtx *ctx, Tensor *a, Tensor *b); /* ties: grad to a */
Tensor *ag_maximum(TensorCtx *ctx, Tensor *a, Tensor *b); /* ties: grad to a */
/* cond != 0 picks a, else b; no gradient flows to cond */
Tensor *ag_where(TensorCtx *ctx, Tensor *cond, Tensor *a, Tensor *b);

/* elementwise unary */
Tensor *ag_neg(TensorCtx *ctx, Tensor *a);
Tensor *ag_pow(TensorCtx *ctx, Tensor *a, float exponent);
Tensor *ag_exp(TensorCtx *ctx, Tensor *a); /* overflow gives +inf, detectable */
Tensor *ag_log(TensorCtx *ctx, Tensor *a);
Tensor *ag_log1p(TensorCtx *ctx, Tensor *a);
Tensor *ag_expm1(TensorCtx *ctx, Tensor *a);
Tensor *ag_sqrt(TensorCtx *ctx, Tensor *a);
Tensor *ag_abs(TensorCtx *ctx, Tensor *a);  /* d|x|/dx at 0 is 0 */
Tensor *ag_sign(TensorCtx *ctx, Tensor *a); /* gradient 0 */
Tensor *ag_sigmoid(TensorCtx *ctx, Tensor *a);
Tensor *ag_logsigmoid(TensorCtx *ctx, Tensor *a); /* stable for |x| large */
Tensor *ag_softplus(TensorCtx *ctx, Tensor *a);   /* log(1 + e^x), stable */
Tensor *ag_tanh(TensorCtx *ctx, Tensor *a);
Tensor *ag_relu(TensorCtx *ctx, Tensor *a);
Tensor *ag_gelu(TensorCtx *ctx, Tensor *a); /* tanh approximation (GPT-2) */
Tensor *ag_clamp(TensorCtx *ctx, Tensor *a, float lo, float hi);

/* reductions over one dim (or AG_ALL for sum/mean) */
Tensor *ag_sum(TensorCtx *ctx, Tensor *a, int dim, bool keepdim);
Tensor *ag_mean(TensorCtx *ctx, Tensor *a, int dim, bool keepdim);
Tensor *ag_logsumexp(TensorCtx *ctx, Tensor *a, int dim, bool keepdim);
Tensor *ag_softmax(TensorCtx *ctx, Tensor *a, int dim);
Tensor *ag_log_softmax(TensorCtx *ctx, Tensor *a, int dim);

/* shape */
Tensor *ag_reshape(TensorCtx *ctx, Tensor *a, int ndim, const int *shape); /* one -1 allowed */
Tensor *ag_transpose(TensorCtx *ctx, Tensor *a, int dim0, int dim1);
Tensor *ag_slice(TensorCtx *ctx, Tensor *a, int dim, int start, int length);
Tensor *ag_concat(TensorCtx *ctx, Tensor *a, Tensor *b, int dim);
/* ascending along dim, stable (ties keep their order), NaN last; the gradient
 * follows the permutation back to each element's place */
Tensor *ag_sort(TensorCtx *ctx, Tensor *a, int dim);
/* a leaf sharing a's data: gradient stops here */
Tensor *ag_detach(TensorCtx *ctx, Tensor *a);

/* linear algebra, through cblas_sgemm */
Tensor *ag_matmul(TensorCtx *ctx, Tensor *a, Tensor *b);
Tensor *ag_linear(TensorCtx *ctx, Tensor *x, Tensor *w, Tensor *bias); /* bias may be NULL */
/* gelu(linear(x, w, bias)) as one op: the GELU runs on each block of rows
 * right after its product, while it is in cache (the MLP's first layer) */
Tensor *ag_linear_gelu(TensorCtx *ctx, Tensor *x, Tensor *w, Tensor *bias);
/* res + linear(x, w, bias) as one op, res shaped like the output: the add of
 * a residual connection, done on each block of rows after its product */
Tensor *ag_linear_add(TensorCtx *ctx, Tensor *x, Tensor *w, Tensor *bias, Tensor *res);

/* indexing */
/* x (..., V), idx (...) with n = numel(x) / V entries in [0, V) -> (...) */
Tensor *ag_gather(TensorCtx *ctx, Tensor *x, const int32_t *idx, int64_t n);
/* w (V, C), ids of shape (ndim, shape) with entries in [0, V) -> (shape..., C) */
Tensor *ag_embedding(TensorCtx *ctx, Tensor *w, const int32_t *ids, int ndim, const int *shape);

/* fused layers */
Tensor *ag_layernorm(TensorCtx *ctx, Tensor *x, Tensor *w, Tensor *b, float eps);
/* logits (N, V), targets (N) in [0, V) or -1 (ignored: loss 0) -> (N) */
Tensor *ag_cross_entropy(TensorCtx *ctx, Tensor *logits, const int32_t *targets, int64_t n);
/* The LM head and its cross-entropy in one (ops_head.c):
 * cross_entropy(linear(h, w, NULL), targets) without the (S, V) logits. h (S, C),
 * w (V, C), targets (S) in [0, V) or -1 (ignored: loss 0) -> nll (S). Rows go
 * through in chunks whose logits take 16 MiB at most (at least 16 rows);
 * backward recomputes each chunk's logits. The _rows form takes the rows per
 * chunk (0: that default). */
Tensor *ag_linear_cross_entropy(TensorCtx *ctx, Tensor *h, Tensor *w, const int32_t *targets,
                                int64_t n);
Tensor *ag_linear_cross_entropy_rows(TensorCtx *ctx, Tensor *h, Tensor *w, const int32_t *targets,
                                     int64_t n, int chunk_rows);
/* qkv (B, T, 3C) as [q | k | v], n_head heads, causal -> (B, T, C) */
Tensor *ag_attention(TensorCtx *ctx, Tensor *qkv, int n_head);
/* Grouped-query causal attention (the Llama family): qkv (B, T, (NH + 2 NKV) HD)
 * holds at each position NH = n_head query heads, then NKV = n_kv_head key
 * heads, then NKV value heads, each HD = head_dim wide (HD need not be
 * C / NH); query head h reads kv head h / (NH / NKV); scores scaled by
 * 1 / sqrt(HD) -> (B, T, NH HD). NKV = NH, HD = C / NH is ag_attention, to
 * the bit. One linear makes qkv: q_proj, k_proj and v_proj's weights (and
 * biases) stacked in that order. */
Tensor *ag_gqa_attention(TensorCtx *ctx, Tensor *qkv, int n_head, int n_kv_head, int head_dim);

/* The Llama family's blocks (ops_llama.c), as Hugging Face computes them in
 * float32: LlamaRMSNorm, rotary embeddings (rope_type default, linear,
 * llama3) and LlamaMLP's SwiGLU. */

/* x (..., C), w (C) -> x / sqrt(mean(x^2) + eps) * w over the last dim */
Tensor *ag_rmsnorm(TensorCtx *ctx, Tensor *x, Tensor *w, float eps);

/* config.json's rope fields; the whole head is rotated (partial_rotary_factor 1) */
typedef enum RopeScaling {
    ROPE_SCALING_NONE = 0, /* no rope_scaling, or rope_type "default" */
    ROPE_SCALING_LINEAR,   /* inv_freq / factor (positions / factor) */
    ROPE_SCALING_LLAMA3,   /* the piecewise scaling of Llama 3.1 */
} RopeScaling;

typedef struct RopeConfig {
    int head_dim;                             /* HD, even */
    double theta;                             /* rope_theta: 10000, 500000, ... */
    RopeScaling scaling;                      /* rope_scaling's rope_type */
    double factor;                            /* LINEAR, LLAMA3: > 0 */
    double low_freq_factor, high_freq_factor; /* LLAMA3: 0 < low < high */
    int original_max_position_embeddings;     /* LLAMA3: > 0 */
} RopeConfig;

/* inv_freq (HD / 2), a leaf: HF's _compute_default_rope_parameters, then
 * _compute_linear_scaling_rope_parameters or _compute_llama3_parameters, in
 * their float32 steps (to the last bit of torch's float pow) */
Tensor *ag_rope_inv_freq(TensorCtx *ctx, const RopeConfig *cfg);
/* the cos and sin of every position 0..n_pos-1, a leaf (2, n_pos, HD / 2):
 * [0][p][i] = cos(a), [1][p][i] = sin(a), a = p inv_freq[i] rounded to float
 * as HF's is. Made once, in a context that outlives the steps (the model's),
 * and read by every ag_rope call. */
Tensor *ag_rope_table(TensorCtx *ctx, const RopeConfig *cfg, int n_pos);
/* x (B, T, NH, HD), heads 0..n_rot-1 at each position pos0 + t rotated as
 * HF's apply_rotary_pos_emb, x cos + rotate_half(x) sin with rotate_half(x)
 * = [-x2, x1] on the halves of HD; heads from n_rot on are copied. So one
 * call rotates q and k of a fused qkv seen as (B, T, NH + 2 NKV, HD), with
 * n_rot = NH + NKV. table from ag_rope_table, pos0 + T <= n_pos; it takes no
 * gradient. */
Tensor *ag_rope(TensorCtx *ctx, Tensor *x, Tensor *table, int pos0, int n_rot);
/* gu (..., 2F) as [gate | up] -> silu(gate) up (..., F): LlamaMLP's
 * act_fn(gate_proj(x)) * up_proj(x) with gate_proj and up_proj one linear,
 * their weights stacked (2F, C), so x is read once for both */
Tensor *ag_swiglu(TensorCtx *ctx, Tensor *gu);

/* A LoRA adapter on a frozen linear (ops_lora.c), PEFT's forward: y (..., Y)
 * is the linear's output x W^T (+ b), x (..., K) its input, A (r, K), B (O, r);
 * returns y with columns [col0, col0 + O) increased by scale (drop(x) A^T) B^T.
 * Gradients reach y (passed through), x, A and B, those that want one.
 * drop (may be NULL) is PEFT's lora_dropout on x, applied only in a context
 * that records (not no_grad): entry i of x (in row-major order) is kept,
 * scaled by 1 / (1 - p), when a hash of (seed, i) clears p; no mask is
 * stored, backward recomputes it. When y is an op's output in ctx the update
 * is written into y's data (in place: y must have no other consumer; its
 * value is now the result's); a leaf y is copied. */
typedef struct LoraDropout {
    float p;       /* in [0, 1) */
    uint64_t seed; /* the same seed, the same mask */
} LoraDropout;
Tensor *ag_lora(TensorCtx *ctx, Tensor *y, Tensor *x, Tensor *A, Tensor *B, float scale, int col0,
                const LoraDropout *drop);
/* What dropout multiplies entry i of x by: 0 or 1 / (1 - p) (1 without
 * dropout), the mask ag_lora applies */
float ag_lora_dropout_factor(const LoraDropout *d, int64_t i);

/* backward: root must be in ctx. seed NULL means d root = 1, and then root
 * must have one element; otherwise seed has root->size entries. Gradients
 * accumulate (+=) into every tensor that requires grad, leaves included.
 * Returns 0, or nonzero with the context's error set. */
int ag_backward(TensorCtx *ctx, Tensor *root, const float *seed);

/* the op's name, for messages ("add", "log_softmax", ...) */
const char *ag_op_name(OpKind op);
/* nonzero when every op in the table has a backward (a start-up self check) */
bool ag_table_complete(void);

#endif
