/*
 * ops_internal.h — what the op files (ops.c, ops_nn.c) and autograd.c share.
 *
 * An op is a pair: a constructor `ag_<op>` that checks its arguments, makes
 * the output node with op_node and computes the forward values, and a
 * `<op>_backward(out)` that reads out->grad and accumulates (+=) into the
 * grads of the sources that want one. The table in ops.c maps OpKind to name
 * and backward function; autograd.c walks the tape and calls them.
 */
#ifndef PREFRUN_OPS_INTERNAL_H
#define PREFRUN_OPS_INTERNAL_H

#include "ops.h"

typedef void (*BackwardFn)(Tensor *out);

typedef struct OpInfo {
    const char *name;
    BackwardFn backward; /* NULL only for OP_NONE */
} OpInfo;

extern const OpInfo ag_op_table[OP_COUNT];

/* Make the output node of op with sources s0..s2 (NULL where unused). The
 * output requires grad when a source does, unless ctx->no_grad, in which case
 * no sources are recorded at all. Data is allocated unless ctx->meta. */
Tensor *op_node(TensorCtx *ctx, OpKind op, int ndim, const int *shape, Tensor *s0, Tensor *s1,
                Tensor *s2);
/* does backward need to produce d/d(src)? */
bool op_wants_grad(const Tensor *src);
/* src's grad buffer, allocated zeroed in src's context on first use (NULL on OOM) */
float *op_grad(Tensor *src);
/* a dim argument normalised to [0, t->ndim), or -1 with the error set */
int op_dim(TensorCtx *ctx, const char *op, const Tensor *t, int dim);
/* save memory for backward only when it will run */
bool op_saves(const Tensor *out);

/* backward functions defined in ops_nn.c */
void matmul_backward(Tensor *out);
void linear_backward(Tensor *out);
void gather_backward(Tensor *out);
void embedding_backward(Tensor *out);
void layernorm_backward(Tensor *out);
void cross_entropy_backward(Tensor *out);
void attention_backward(Tensor *out);

#endif
