/*
 * core/ops_internal.h — what the op files (ops.c, ops_nn.c, ops_llama.c,
 * ops_head.c) and autograd.c share.
 *
 * An op is a pair: a constructor `ag_<op>` that checks its arguments, makes
 * the output node with op_node and computes the forward values, and a
 * `<op>_backward(out)` that reads out->grad and accumulates (+=) into the
 * grads of the sources that want one. The table in ops.c maps OpKind to name
 * and backward function; autograd.c walks the tape and calls them. Also here:
 * op_node_uninit (for outputs a kernel writes in full), op_node_view (reshape,
 * detach) and fast_expf, the
 * vectorisable exp that ops.c (GELU) and ops_nn.c (softmax, cross-entropy)
 * share; gelu_f and gelu_grad (here so that test_ops.c can check ops.c's
 * vector clones of them against the scalar path), whose exponential and
 * far-tail tests ops_llama.c's SiLU reuses; ELEM_CLONES; LANE_SUM, the
 * row sum in fixed double lanes of the norms and cross-entropy; and
 * norm_backward_wb, the weight gradient LayerNorm and RMSNorm share.
 */
#ifndef PREFRUN_OPS_INTERNAL_H
#define PREFRUN_OPS_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/ops.h"

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
/* op_node for a view: no data of its own, it reads `data` (another
 * tensor's) */
Tensor *op_node_view(TensorCtx *ctx, OpKind op, int ndim, const int *shape, Tensor *src,
                     float *data);
/* Records src as out's fourth source (out->src[3]), for an op with four
 * operands, with op_node's checks; false with the error set. In a no_grad
 * context nothing is recorded, as for the other sources. */
bool op_add_source(Tensor *out, Tensor *src);
/* does backward need to produce d/d(src)? */
bool op_wants_grad(const Tensor *src);
/* src's grad buffer, allocated zeroed in src's context on first use (NULL on OOM) */
float *op_grad(Tensor *src);
/* op_grad for a backward that covers every element of src's grad. When no
 * contribution has reached an intermediate yet, its grad is allocated
 * uninitialised and *first is set: the caller stores (0 + d, the same bits as
 * adding d to a zeroed buffer) instead of adding, which saves a zero-fill and
 * a read of every gradient in a training step. Leaves (whose grads
 * accumulate across calls) and grads that already hold something come back
 * as op_grad gives them, with *first false. */
float *op_grad_first(Tensor *src, bool *first);
/* a dim argument normalised to [0, t->ndim), or -1 with the error set */
int op_dim(TensorCtx *ctx, const char *op, const Tensor *t, int dim);
/* save memory for backward only when it will run */
bool op_saves(const Tensor *out);
/* Save state in out->aux for backward? Not when it cannot run: no_grad, no
 * source wants a gradient, or a shape-only context (which has no backward). */
static inline bool op_saves_aux(const Tensor *out) { return op_saves(out) && !out->ctx->meta; }
/* A data pointer an op may read, or an error when a shape-only tensor reaches
 * a context that computes values ("op: arg is shape-only and has no data"). */
bool op_has_data(TensorCtx *ctx, const char *op, const char *arg, const Tensor *t);

#define PAR_MIN_WORK 32768 /* elements below which a loop stays on one thread */

/* LANE_SUM(acc, C, c, EXPR): acc = the sum of EXPR over c = 0..C-1, in
 * double, as SUM_LANES running sums (lane l takes c = l, l + SUM_LANES, ...)
 * then added in lane order. No sum crosses vector lanes, so a row kernel
 * summing this way can be cloned for wider ISAs (ELEM_CLONES) and gives the
 * same bits on each (layernorm, rmsnorm and cross-entropy rows). */
#define SUM_LANES 16
#define LANE_SUM(acc, C, c, EXPR)                                                                  \
    do {                                                                                           \
        double acc##_l[SUM_LANES] = {0};                                                           \
        int c##0_ = 0;                                                                             \
        for (; c##0_ + SUM_LANES <= (C); c##0_ += SUM_LANES) {                                     \
            _Pragma("omp simd") for (int l_ = 0; l_ < SUM_LANES; l_++)                             \
            {                                                                                      \
                const int c = c##0_ + l_;                                                          \
                acc##_l[l_] += (EXPR);                                                             \
            }                                                                                      \
        }                                                                                          \
        for (int c = c##0_; c < (C); c++)                                                          \
            acc##_l[c - c##0_] += (EXPR);                                                          \
        acc = 0;                                                                                   \
        for (int l_ = 0; l_ < SUM_LANES; l_++)                                                     \
            acc += acc##_l[l_];                                                                    \
    } while (0)

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

/* x clamped to [lo, hi] (lo a negative float's bits, hi a positive one's) by
 * two integer minimums: a branch here would be threaded by gcc into
 * separate paths that it then cannot vectorise. A NaN lands on one end. */
static inline float exp_clamp(float x, uint32_t lo, int32_t hi)
{
    uint32_t ux = f2u(x), uc = ux < lo ? ux : lo;
    int32_t ic = (int32_t)uc < hi ? (int32_t)uc : hi;
    return u2f((uint32_t)ic);
}

/* exp(c) = p 2^n for c in range (Cephes' expf reduction and polynomial):
 * returns p, and t, whose bits minus 0x4B400000 are n */
static inline float exp_poly(float c, float *t_out)
{
    float t = c * 1.44269504088896341f + 12582912.0f; /* round(c / ln 2) + 1.5 * 2^23 */
    float n = t - 12582912.0f;
    float r = c - n * 0.693359375f - n * -2.12194440e-4f; /* ln 2 in two parts */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    *t_out = t;
    return p * r * r + r + 1.0f;
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
    float t, p = exp_poly(exp_clamp(x, lo, hi), &t);
    /* p 2^n as p 2^(n/2) 2^(n - n/2): n runs to 128, past the largest exponent */
    int32_t ni = (int32_t)(f2u(t) - 0x4B400000u), n1 = ni / 2;
    float y = p * u2f((uint32_t)(n1 + 127) << 23) * u2f((uint32_t)(ni - n1 + 127) << 23);
    /* special cases by masks, for the same reason as the clamp */
    uint32_t keep = (over | under | is_nan) - 1u; /* all ones for an ordinary x */
    uint32_t repl = (-(over & ~is_nan & 1u) & 0x7f800000u) | (-is_nan & ux);
    return u2f((f2u(y) & keep) | repl);
}

/* GELU, tanh form (GPT-2): 0.5 x (1 + tanh u), u = sqrt(2/pi) (x + 0.044715 x^3).
 * Since 1 + tanh u = 2 sigmoid(2u), it is computed as x s, s = sigmoid(v) =
 * 1 / (1 + e), v = 2u, e = exp(-v): no cancellation where 1 + tanh u
 * would cancel (x << 0), and s (1 - s) = e s s for backward, so one
 * exponential serves both and nothing cancels there either. GELU is the
 * heaviest elementwise work of a training step, so its exponential is
 * gelu_exp: fast_expf's polynomial with the argument clamped to [-87.34, 88]
 * by integer minimums and no special-case masks. Past |v| = 87.34 the
 * result is then fixed by selects: gelu is 0 (and its gradient 0) for v below,
 * and the gradient is 1 above, so gelu(-inf) = 0 and the gradient at +-inf is
 * 0 or 1, not inf * 0; NaN passes through. */
#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_C 0.044715f
#define GELU_FAR 0x42AEAC50u /* 87.3365: |v| past which e under- or overflows */
static inline float gelu_u(float x) { return GELU_K * (x + GELU_C * x * x * x); }
/* mask ? a : b bit by bit (mask all ones or all zeros). The selects below are
 * made of these and integer tests, because gcc (under -ftrapping-math, the
 * default) will not if-convert a float comparison or a multiply in one arm,
 * and a branch left in the loop stops vectorisation. */
static inline float select_bits(uint32_t mask, float a, float b)
{
    return u2f((f2u(a) & mask) | (f2u(b) & ~mask));
}
/* exp(x) for GELU: x clamped to [-87.3365, 88] (a NaN lands on one end), then
 * fast_expf's reduction and polynomial; 2^n is one exponent field, n <= 127 */
static inline float gelu_exp(float x)
{
    const uint32_t lo = 0xC2AEAC50u; /* -87.3365 */
    const int32_t hi = 0x42B00000;   /* 88 */
    float t, p = exp_poly(exp_clamp(x, lo, hi), &t);
    return p * u2f((f2u(t) - 0x4B400000u + 127u) << 23);
}
/* all ones where v is beyond -GELU_FAR (or -inf), where v is beyond +GELU_FAR
 * (or +inf); neither for NaN */
static inline uint32_t gelu_far_neg(float v)
{
    return -(uint32_t)(f2u(v) > (GELU_FAR | 0x80000000u) && f2u(v) <= 0xFF800000u);
}
static inline uint32_t gelu_far_pos(float v)
{
    return -(uint32_t)(f2u(v) > GELU_FAR && f2u(v) <= 0x7F800000u);
}

static inline float gelu_f(float x)
{
    float v = 2.0f * gelu_u(x), s = 1.0f / (1.0f + gelu_exp(-v));
    return select_bits(gelu_far_neg(v), 0.0f, x * s);
}
static inline float gelu_grad(float x)
{
    float v = 2.0f * gelu_u(x), e = gelu_exp(-v), s = 1.0f / (1.0f + e);
    float s1s = e * s * s; /* s (1 - s) */
    float du = GELU_K * (1.0f + 3.0f * GELU_C * x * x);
    float g = select_bits(gelu_far_pos(v), 1.0f, s + 2.0f * x * s1s * du);
    return select_bits(gelu_far_neg(v), 0.0f, g);
}

/* ELEM_CLONES on a function: gcc also builds it for AVX-512F and AVX2 and
 * picks one by the CPU at load time (the build itself targets baseline
 * x86-64, SSE2). Only for loops whose lanes are independent (no reduction
 * across the vector): none of these ISAs brings FMA, -std=c11 turns
 * contraction off, so every clone computes the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define ELEM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ELEM_CLONES
#endif

/* GELU over [lo, hi): o[i] = gelu_f(a[i]), cloned for wider ISAs
 * (ELEM_CLONES) with the same bits on each. And over all n, split over the
 * threads: d[i] += g[i] gelu_grad(a[i]), or = 0 + that when first (see
 * op_grad_first). In ops.c; ops_nn.c's fused linear uses them too. */
void gelu_span(int64_t lo, int64_t hi, float *o, const float *a);
void gelu_grad_into(float *d, const float *a, const float *g, int64_t n, bool first);
/* d += g over n entries, or d = 0 + g when first, split over the threads */
void grad_add(float *d, const float *g, int64_t n, bool first);

/* dw += sum over rows of g xhat and db += sum of g (either may be NULL), for
 * x and g (R, C), xhat = (x - mean[r]) rstd[r]; mean NULL means 0 (RMSNorm).
 * Rows in order, a task per column block: the bits do not depend on the
 * thread count. In ops_nn.c, shared by layernorm and rmsnorm. */
void norm_backward_wb(float *dw, float *db, const float *x, const float *g, const float *mean,
                      const float *rstd, int64_t R, int C);

/* In ops_nn.c, shared with ops_head.c: OpenBLAS to one thread for an op
 * (returns what ops_blas_leave restores); row-major C = alpha op(A) op(B) +
 * beta C on one thread, the sizes cblas rejects handled; a row's max (NaN
 * skipped) and log(sum exp(x - max)), summed in lanes (LANE_SUM). */
int ops_blas_enter(void);
void ops_blas_leave(int saved);
void ops_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc);
void ops_row_stats(const float *x, int V, float *max_out, float *logsum_out);

/* backward functions defined in ops_nn.c */
void matmul_backward(Tensor *out);
void linear_backward(Tensor *out);
void gather_backward(Tensor *out);
void embedding_backward(Tensor *out);
void layernorm_backward(Tensor *out);
void cross_entropy_backward(Tensor *out);
void attention_backward(Tensor *out);
/* backward functions defined in ops_llama.c */
void rmsnorm_backward(Tensor *out);
void rope_backward(Tensor *out);
void swiglu_backward(Tensor *out);
/* defined in ops_head.c */
void linear_cross_entropy_backward(Tensor *out);
/* defined in ops_lora.c */
void lora_backward(Tensor *out);

#endif
