/*
 * src/core/ — the autodiff core: the tensor and its arena (tensor), every
 * differentiable op with forward and backward side by side (ops, ops_nn,
 * ops_llama for the Llama family's blocks, ops_head for the LM head fused
 * with its cross-entropy, ops_internal), the reverse walk (autograd) and the
 * seeded RNG (rng).
 * May include: util/. No Lua and no files: errors are values.
 */
/*
 * core/tensor.h — prefrun's tensor, its arena, and the error value of the core.
 *
 * A quick tour (see ops.h for the operations):
 *
 *     TensorCtx *ctx = tensor_ctx_new(0);            // arena, no byte cap
 *     int shape[1] = {4};
 *     Tensor *x = tensor_new(ctx, 1, shape);          // zero-filled (4)
 *     tensor_requires_grad(x);                        // x is a leaf we want d/dx of
 *     Tensor *y = ag_mean(ctx, ag_mul(ctx, x, x), -1, false);   // scalar
 *     if (!y || ag_backward(ctx, y, NULL) != 0)       // errors are values
 *         fprintf(stderr, "%s\n", tensor_ctx_error(ctx));
 *     // x->grad now holds dy/dx
 *     tensor_ctx_free(ctx);
 *
 * Ownership. Every tensor lives in exactly one TensorCtx, an arena that is
 * reset or freed as a whole (ggml's "context"): there are no refcounts and no
 * per-tensor free. Long-lived tensors (model parameters, optimizer moments)
 * live in a context that is never reset; the activations and loss graph of one
 * training step live in a context that is reset after the step. Each reset
 * bumps ctx->generation, which lets a handle kept past its step (a Lua
 * userdata) detect that its tensor is gone instead of dangling.
 *
 * The node is the tensor. An op's output records the op, its sources and its
 * scalar arguments; the context's tape lists nodes in creation order, which is
 * a topological order, so backward is a reverse walk of the tape (iterative:
 * a long chain cannot overflow the C stack). A graph may reach into another
 * context only through leaves (parameters); non-leaf nodes of one graph share
 * one context.
 *
 * Errors are values. Every function that can fail returns NULL (or nonzero),
 * and records the first error in its context: a code plus a message naming
 * the op, the argument and the shapes. An op given a NULL source returns NULL
 * without touching the recorded error, so a chain of ops can be checked once
 * at the end. Nothing in the core calls exit() or abort() on user input.
 *
 * Modes. ctx->no_grad: ops record no sources and save nothing for backward
 * (the frozen reference model). ctx->meta: tensors carry shapes but no data
 * and ops only compute shapes (the loss checker's cheap first pass).
 *
 * Storage is float32, contiguous, row-major, 0- to 4-D. Shapes below are
 * written (d0, d1, ...) in comments.
 *
 * Size limit. A shape is valid when its dims are >= 0 and the product of its
 * nonzero dims is at most TENSOR_MAX_NUMEL (2^40, 4 TiB of float32: more than
 * any machine holds, far below int64's 2^63). Every tensor, meta ones
 * included, is checked at creation, so code that multiplies a tensor's dims
 * (any subset of them, times sizeof(double)) cannot overflow int64 or size_t.
 * Zero dims count as 1 in the limit so that the partial products of an empty
 * tensor's dims (rows_of in ops.c) are bounded too.
 */
#ifndef PREFRUN_TENSOR_H
#define PREFRUN_TENSOR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TENSOR_MAX_DIMS 4
#define TENSOR_MAX_NUMEL ((int64_t)1 << 40) /* see "Size limit" above */
#define TENSOR_NAME_LEN 64
#define TENSOR_ERR_LEN 320

/* Every op of the core, in one list; ops.c holds the parallel table of names
 * and backward functions, guarded by a static assert on OP_COUNT. */
typedef enum OpKind {
    OP_NONE = 0, /* a leaf: input, parameter, constant, detached copy */
    /* elementwise binary, numpy broadcasting */
    OP_ADD,
    OP_SUB,
    OP_MUL,
    OP_DIV,
    OP_MINIMUM,
    OP_MAXIMUM,
    OP_WHERE, /* src[0] condition (no gradient), src[1] if true, src[2] if false */
    /* elementwise unary */
    OP_NEG,
    OP_POW, /* fparam[0] = exponent */
    OP_EXP,
    OP_LOG,
    OP_LOG1P,
    OP_EXPM1,
    OP_SQRT,
    OP_ABS,
    OP_SIGN,
    OP_SIGMOID,
    OP_LOGSIGMOID,
    OP_SOFTPLUS,
    OP_TANH,
    OP_RELU,
    OP_GELU,  /* tanh approximation */
    OP_CLAMP, /* fparam[0] = lo, fparam[1] = hi */
    /* reductions and normalisations; iparam[0] = dim (-1: all, for sum/mean) */
    OP_SUM,  /* iparam[1] = keepdim */
    OP_MEAN, /* iparam[1] = keepdim */
    OP_LOGSUMEXP,
    OP_SOFTMAX,
    OP_LOG_SOFTMAX,
    /* shape */
    OP_RESHAPE,   /* a view: shares data with src[0] */
    OP_TRANSPOSE, /* iparam[0], iparam[1] = the swapped dims; materialised */
    OP_SLICE,     /* iparam[0] = dim, iparam[1] = start, iparam[2] = length */
    OP_CONCAT,    /* along iparam[0], of src[0] and src[1] */
    OP_SORT,      /* ascending along iparam[0]; the permutation (int32) in aux */
    /* linear algebra */
    OP_MATMUL, /* (M,K)@(K,N), (B,M,K)@(B,K,N), (B,M,K)@(K,N) */
    OP_LINEAR, /* act(x (..., K) @ W(N, K)^T + b(N)) [+ r], act in iparam[0]: LinearAct */
    /* indexing; integer indices live in aux */
    OP_GATHER,    /* x (..., V), idx (...) -> (...) */
    OP_EMBEDDING, /* W (V, C), ids (...) -> (..., C) */
    /* fused network layers */
    OP_LAYERNORM,     /* x (..., C), w (C), b (C); fparam[0] = eps */
    OP_CROSS_ENTROPY, /* logits (N, V), targets (N) -> per-row loss (N) */
    /* qkv (B, T, (NH + 2 NKV) HS) -> (B, T, NH HS), causal; iparam[0..2] = NH, NKV, HS
     * (GPT-2's (B, T, 3C): NKV = NH, HS = C / NH) */
    OP_ATTENTION,
    /* the Llama family's blocks (ops_llama.c) */
    OP_RMSNORM, /* x (..., C), w (C); fparam[0] = eps */
    OP_ROPE,    /* x (B, T, NH, HS), table (2, P, HS / 2); iparam[0] = first position,
                 * iparam[1] = heads rotated */
    OP_SWIGLU,  /* [gate | up] (..., 2F) -> silu(gate) up (..., F) */
    /* the LM head and cross-entropy in one (ops_head.c): h (S, C), W (V, C),
     * targets (S) -> nll (S); iparam[0] = rows per chunk */
    OP_LINEAR_CROSS_ENTROPY,
    /* a LoRA adapter's update added to a frozen product (ops_lora.c): y, x, A (r, K),
     * B (O, r); fparam[0] = scale, iparam[0] = the first column; aux the saved x A^T */
    OP_LORA,
    OP_COUNT
} OpKind;

/* the activation an OP_LINEAR node applies to its product */
typedef enum LinearAct { LINEAR_NONE = 0, LINEAR_GELU } LinearAct;

typedef enum TensorStatus {
    TENSOR_OK = 0,
    TENSOR_ERR_SHAPE,    /* shapes do not fit the op */
    TENSOR_ERR_ARG,      /* a bad scalar or index argument */
    TENSOR_ERR_NOMEM,    /* malloc failed, or the context's byte cap was hit */
    TENSOR_ERR_STALE,    /* a tensor used after its context was reset */
    TENSOR_ERR_META,     /* data asked of a shape-only tensor */
    TENSOR_ERR_BACKWARD, /* backward from a non-scalar without a seed, etc. */
} TensorStatus;

enum {
    TENSOR_REQUIRES_GRAD = 1u << 0, /* backward computes d/d(this) */
    TENSOR_PARAM = 1u << 1,         /* a trainable leaf (for bookkeeping) */
};

typedef struct TensorCtx TensorCtx;

typedef struct Tensor {
    int ndim;
    int shape[TENSOR_MAX_DIMS];
    int64_t size; /* product of shape; 1 for a 0-D scalar */
    float *data;  /* (size) NULL in a meta context */
    float *grad;  /* (size) NULL until needed; d root / d this */
    OpKind op;
    struct Tensor *src[4]; /* sources; src[3] only for ops with a fourth (op_add_source) */
    float fparam[4];
    int iparam[4];
    void *aux; /* op-private: saved statistics or integer indices */
    uint32_t flags;
    TensorCtx *ctx;
    int tape_index; /* position in ctx's tape */
    char name[TENSOR_NAME_LEN];
} Tensor;

struct TensorCtx {
    /* arena: a list of chunks, bump-allocated; reset keeps one chunk */
    struct ArenaChunk *chunks;
    size_t used;      /* bytes handed out since the last reset */
    size_t peak;      /* max of used over the context's life */
    size_t cap_bytes; /* 0: no cap; else an allocation past it fails cleanly */
    /* tape: every node created since the last reset, in creation order */
    Tensor **tape;
    int n_tape, tape_cap;
    uint32_t generation; /* bumped by every reset */
    bool no_grad;
    bool meta;
    TensorStatus status; /* the first error since the last clear */
    char err[TENSOR_ERR_LEN];
};

/* context life cycle */
TensorCtx *tensor_ctx_new(size_t cap_bytes);
void tensor_ctx_free(TensorCtx *ctx);
void tensor_ctx_reset(TensorCtx *ctx);
void *tensor_ctx_alloc(TensorCtx *ctx, size_t bytes); /* 64-byte aligned, zeroed */
/* the same, not zeroed: only for memory the caller writes in full before any read */
void *tensor_ctx_alloc_uninit(TensorCtx *ctx, size_t bytes);

/* errors */
bool tensor_ctx_ok(const TensorCtx *ctx);
const char *tensor_ctx_error(const TensorCtx *ctx);
void tensor_ctx_clear_error(TensorCtx *ctx);
/* records the error if none is recorded yet; always returns NULL */
void *tensor_ctx_fail(TensorCtx *ctx, TensorStatus status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* creation; all data zero-filled (and NULL in a meta context) */
Tensor *tensor_new(TensorCtx *ctx, int ndim, const int *shape);
Tensor *tensor_from_data(TensorCtx *ctx, int ndim, const int *shape, const float *data);
Tensor *tensor_scalar(TensorCtx *ctx, float value);
Tensor *tensor_full(TensorCtx *ctx, int ndim, const int *shape, float value);
Tensor *tensor_copy(TensorCtx *ctx, const Tensor *t); /* a detached leaf copy */
Tensor *tensor_new_node(TensorCtx *ctx, OpKind op, int ndim, const int *shape);
/* How a new node gets its data: zero-filled, uninitialised (an op's output
 * that its kernel writes in full), or none (a view: the caller points data
 * at another tensor's). A meta context allocates no data in any mode. */
typedef enum TensorFill { TENSOR_FILL_ZERO, TENSOR_FILL_UNINIT, TENSOR_FILL_NONE } TensorFill;
Tensor *tensor_new_node_fill(TensorCtx *ctx, OpKind op, int ndim, const int *shape,
                             TensorFill fill);

/* gradients */
int tensor_requires_grad(Tensor *t); /* marks a leaf and allocates a zero grad */
void tensor_zero_grad(Tensor *t);
int tensor_ensure_grad(Tensor *t); /* allocates a zero grad in t's context */

/* shapes */
bool tensor_same_shape(const Tensor *a, const Tensor *b);
/* writes "(2, 3)" style text; returns buf */
const char *tensor_shape_str(const Tensor *t, char *buf, size_t len);
/* writes "(2, 3)" style text for a bare shape; returns buf */
const char *tensor_dims_str(int ndim, const int *shape, char *buf, size_t len);
/* numpy broadcasting of two valid shapes: 0, or -1 when they do not
 * broadcast, or -2 when they do but the result is over TENSOR_MAX_NUMEL
 * (sout then holds that shape, for the message) */
int tensor_broadcast_shape(int na, const int *sa, int nb, const int *sb, int *nout, int *sout);
/* the element count of a shape, or -1 when the shape is not valid (a
 * negative dim, or over TENSOR_MAX_NUMEL: see "Size limit"); never overflows */
int64_t tensor_numel(int ndim, const int *shape);
void tensor_set_name(Tensor *t, const char *name);

#endif
