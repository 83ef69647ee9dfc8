/*
 * core/autograd.c — node construction shared by all ops, and the reverse walk.
 *
 * Backward seeds the root's grad, then visits the tape from the root back to
 * the start. Creation order is a topological order, so when a node is visited
 * every consumer of it has already added its contribution to node->grad. The
 * walk is a loop, never recursion, so graph depth cannot overflow the C stack.
 */
#include <string.h>

#include "core/ops_internal.h"

bool op_wants_grad(const Tensor *src) { return src && (src->flags & TENSOR_REQUIRES_GRAD); }

bool op_saves(const Tensor *out) { return (out->flags & TENSOR_REQUIRES_GRAD) != 0; }

bool op_has_data(TensorCtx *ctx, const char *op, const char *arg, const Tensor *t)
{
    if (ctx->meta || t->data || t->size == 0)
        return true;
    tensor_ctx_fail(ctx, TENSOR_ERR_META, "%s: %s is shape-only and has no data", op, arg);
    return false;
}

float *op_grad(Tensor *src)
{
    if (tensor_ensure_grad(src) != 0) {
        tensor_ctx_fail(src->ctx, TENSOR_ERR_NOMEM, "backward: out of memory for a gradient");
        return NULL;
    }
    return src->grad;
}

float *op_grad_first(Tensor *src, bool *first)
{
    *first = false;
    if (src->grad || src->op == OP_NONE || src->ctx->meta)
        return op_grad(src);
    src->grad = tensor_ctx_alloc_uninit(src->ctx, (size_t)src->size * sizeof(float));
    if (!src->grad) {
        tensor_ctx_fail(src->ctx, TENSOR_ERR_NOMEM, "backward: out of memory for a gradient");
        return NULL;
    }
    *first = true;
    return src->grad;
}

/* Can src (argument i + 1 of op) be recorded in ctx? Not when it is an
 * intermediate of another context that wants a gradient: backward would walk
 * a tape it does not own. false with the error set. */
static bool source_ok(TensorCtx *ctx, OpKind op, int i, const Tensor *src)
{
    if (!src || src->ctx == ctx || src->op == OP_NONE || ctx->no_grad || !op_wants_grad(src))
        return true;
    tensor_ctx_fail(ctx, TENSOR_ERR_ARG,
                    "%s: argument %d is an intermediate of another context; graphs may cross "
                    "contexts only through leaves",
                    ag_op_name(op), i + 1);
    return false;
}

static Tensor *node_fill(TensorCtx *ctx, OpKind op, int ndim, const int *shape, Tensor *s0,
                         Tensor *s1, Tensor *s2, TensorFill fill)
{
    Tensor *srcs[3] = {s0, s1, s2};
    for (int i = 0; i < 3; i++)
        if (!source_ok(ctx, op, i, srcs[i]))
            return NULL;
    Tensor *out = tensor_new_node_fill(ctx, op, ndim, shape, fill);
    if (!out)
        return NULL;
    if (ctx->no_grad)
        return out; /* frozen: no sources, nothing saved, nothing to walk */
    bool wants = false;
    for (int i = 0; i < 3; i++) {
        out->src[i] = srcs[i];
        wants = wants || op_wants_grad(srcs[i]);
    }
    if (wants)
        out->flags |= TENSOR_REQUIRES_GRAD;
    return out;
}

bool op_add_source(Tensor *out, Tensor *src)
{
    TensorCtx *ctx = out->ctx;
    if (!source_ok(ctx, out->op, 3, src))
        return false;
    if (ctx->no_grad)
        return true; /* frozen: no sources */
    out->src[3] = src;
    if (op_wants_grad(src))
        out->flags |= TENSOR_REQUIRES_GRAD;
    return true;
}

Tensor *op_node(TensorCtx *ctx, OpKind op, int ndim, const int *shape, Tensor *s0, Tensor *s1,
                Tensor *s2)
{
    return node_fill(ctx, op, ndim, shape, s0, s1, s2, TENSOR_FILL_ZERO);
}

Tensor *op_node_uninit(TensorCtx *ctx, OpKind op, int ndim, const int *shape, Tensor *s0,
                       Tensor *s1, Tensor *s2)
{
    return node_fill(ctx, op, ndim, shape, s0, s1, s2, TENSOR_FILL_UNINIT);
}

Tensor *op_node_view(TensorCtx *ctx, OpKind op, int ndim, const int *shape, Tensor *src,
                     float *data)
{
    Tensor *out = node_fill(ctx, op, ndim, shape, src, NULL, NULL, TENSOR_FILL_NONE);
    if (out && !ctx->meta)
        out->data = data;
    return out;
}

int op_dim(TensorCtx *ctx, const char *op, const Tensor *t, int dim)
{
    int d = dim < 0 ? dim + t->ndim : dim;
    if (d < 0 || d >= t->ndim) {
        char buf[64];
        tensor_ctx_fail(ctx, TENSOR_ERR_ARG, "%s: dim %d out of range for shape %s", op, dim,
                        tensor_shape_str(t, buf, sizeof buf));
        return -1;
    }
    return d;
}

const char *ag_op_name(OpKind op)
{
    return (op >= 0 && op < OP_COUNT && ag_op_table[op].name) ? ag_op_table[op].name : "?";
}

bool ag_table_complete(void)
{
    for (int i = 1; i < OP_COUNT; i++)
        if (!ag_op_table[i].name || !ag_op_table[i].backward)
            return false;
    return true;
}

int ag_backward(TensorCtx *ctx, Tensor *root, const float *seed)
{
    if (!root)
        return -1;
    if (ctx->meta) {
        tensor_ctx_fail(ctx, TENSOR_ERR_META, "backward: a shape-only context has no gradients");
        return -1;
    }
    if (root->ctx != ctx || root->tape_index >= ctx->n_tape ||
        ctx->tape[root->tape_index] != root) {
        tensor_ctx_fail(ctx, TENSOR_ERR_BACKWARD,
                        "backward: the root is not a node of this context");
        return -1;
    }
    if (!seed && root->size != 1) {
        char buf[64];
        tensor_ctx_fail(ctx, TENSOR_ERR_BACKWARD,
                        "backward: root has shape %s; give a seed gradient or reduce to a scalar",
                        tensor_shape_str(root, buf, sizeof buf));
        return -1;
    }
    if (!(root->flags & TENSOR_REQUIRES_GRAD))
        return 0; /* nothing upstream wants a gradient */
    /* A node's grad holds d root / d node for this call only: clear what an
     * earlier backward left in non-leaf nodes, which would otherwise reach the
     * leaves a second time. Leaves keep accumulating across calls. */
    for (int i = 0; i <= root->tape_index; i++)
        if (ctx->tape[i]->op != OP_NONE)
            tensor_zero_grad(ctx->tape[i]);
    float *g = op_grad(root);
    if (!g)
        return -1;
    for (int64_t i = 0; i < root->size; i++)
        g[i] += seed ? seed[i] : 1.0f;
    for (int i = root->tape_index; i >= 0; i--) {
        Tensor *t = ctx->tape[i];
        if (t->op == OP_NONE || !t->grad || !(t->flags & TENSOR_REQUIRES_GRAD))
            continue;
        ag_op_table[t->op].backward(t);
        if (!tensor_ctx_ok(ctx))
            return -1;
    }
    return 0;
}
