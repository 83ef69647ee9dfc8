/*
 * ops_internal.h — what the op files (ops.c, ops_nn.c) and autograd.c share.
 *
 * An op is a pair: a constructor `ag_<op>` that checks its arguments, makes
 * the output node with op_node and computes the forward values, and a
 * `<op>_backward(out)` that reads out->grad and accumulates (+=) into the
 * grads of the sources that want one. The table in ops.c maps OpKind to name
 * and backward function; autograd.c walks the tape and calls them. Also here:
 * op_node_uninit (for outputs a kernel writes in full) and fast_expf, the
 * vectorisable exp that ops.c (GELU) and ops_nn.c (softmax, cross-entropy)
 * share.
 */
#ifndef PREFRUN_OPS_INTERNAL_H
#define PREFRUN_OPS_INTERNAL_H

#include <stdint.h>
#include <string.h>

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
/* op_node for an op whose forward writes every element of its output: the
 * data is not zero-filled (the kernel's own write is the first touch). Only
 * for outputs; gradients and anything accumulated into stay zeroed. */
Tensor *op_node_uninit(TensorCtx *ctx, OpKind op, int ndim, const int *shape, Tensor *s0,
                       Tensor *s1, Tensor *s2);
/* does backward need to produce d/d(src)? */
bool op_wants_grad(const Tensor *src);
/* src's grad buffer, allocated zeroed in src's context on first use (NULL on OOM) */
float *op_grad(Tensor *src);
/* a dim argument normalised to [0, t->ndim), or -1 with the error set */
int op_dim(TensorCtx *ctx, const char *op, const Tensor *t, int dim);
/* save memory for backward only when it will run */
bool op_saves(const Tensor *out);

static inline uint32_t f2u(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* exp(x) within 1 ulp (Cephes' expf polynomial), in a form gcc vectorises
 * under `omp simd` without -ffast-math: softmax rows, cross-entropy and GELU
 * spend most of their time here, and libm's expf is a call per element. Below
 * -87.34 it returns 0 (libm: a subnormal); above log(FLT_MAX), +inf; NaN
 * stays NaN. Checked against exp() in double at every float. */
static inline float fast_expf(float x)
{
    const uint32_t lo = 0xC2AEAC50u; /* -87.3365: exp is 2^-126, the least normal */
    const int32_t hi = 0x42B17218;   /* 88.7228: log(FLT_MAX) */
    uint32_t ux = f2u(x);
    uint32_t is_nan = (ux & 0x7fffffffu) > 0x7f800000u;
    uint32_t under = ux > lo;         /* x < lo, -inf, negative NaN */
    uint32_t over = (int32_t)ux > hi; /* x > hi, +inf, positive NaN */
    /* clamp by two integer minimums: a branch here would be threaded by gcc
     * into separate paths that it then cannot vectorise */
    uint32_t uc = ux < lo ? ux : lo;
    int32_t ic = (int32_t)uc < hi ? (int32_t)uc : hi;
    float c = u2f((uint32_t)ic);
    float t = c * 1.44269504088896341f + 12582912.0f; /* round(c / ln 2) + 1.5 * 2^23 */
    float n = t - 12582912.0f;
    float r = c - n * 0.693359375f - n * -2.12194440e-4f; /* ln 2 in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    /* p 2^n as p 2^(n/2) 2^(n - n/2): n runs to 128, past the largest exponent */
    int32_t ni = (int32_t)(f2u(t) - 0x4B400000u), n1 = ni / 2;
    float y = p * u2f((uint32_t)(n1 + 127) << 23) * u2f((uint32_t)(ni - n1 + 127) << 23);
    /* special cases by masks, for the same reason as the clamp */
    uint32_t keep = (over | under | is_nan) - 1u; /* all ones for an ordinary x */
    uint32_t repl = (-(over & ~is_nan & 1u) & 0x7f800000u) | (-is_nan & ux);
    return u2f((f2u(y) & keep) | repl);
}

/* backward functions defined in ops_nn.c */
void matmul_backward(Tensor *out);
void linear_backward(Tensor *out);
void gather_backward(Tensor *out);
void embedding_backward(Tensor *out);
void layernorm_backward(Tensor *out);
void cross_entropy_backward(Tensor *out);
void attention_backward(Tensor *out);

#endif
