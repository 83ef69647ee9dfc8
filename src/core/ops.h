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
/* qkv (B, T, 3C) as [q | k | v], n_head heads, causal -> (B, T, C) */
Tensor *ag_attention(TensorCtx *ctx, Tensor *qkv, int n_head);

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
