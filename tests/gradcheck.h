/*
 * gradcheck.h — checks an op's forward values and gradients against a
 * double-precision reference implementation differentiated by central finite
 * differences.
 *
 * For an op f with inputs x_1..x_n (float32, under test) and its reference
 * g (double, written independently and plainly), gradcheck:
 *   1. compares f(x) with g(x) elementwise;
 *   2. draws a fixed random projection w over the output and takes
 *      L(x) = sum(w * f(x)); backward with seed w gives dL/dx analytically;
 *   3. computes dL/dx_i by central differences of sum(w * g(x)) in double with
 *      step h = 1e-6 * max(1, |x_i|), where the truncation error is far below
 *      float32 rounding, so the reference gradient is exact for our purpose.
 * Tolerances: |got - want| <= atol + rtol * |want|. Float32 ops accumulate
 * rounding of about 1e-7 relative per operation, so the defaults (rtol 1e-3,
 * atol 1e-4) leave room for reductions over a few hundred terms, and tests of
 * long reductions or extreme inputs pass their own.
 *
 * Also here, for op tests: inputs and leaves filled from a seeded stream
 * (gc_input, gc_tensor); gc_check_accumulates, two backward passes that
 * must leave twice the gradient; and gc_check_threads, which runs an op's
 * forward and backward under 1 and 2 OpenMP threads and wants the same bits.
 */
#ifndef PREFRUN_GRADCHECK_H
#define PREFRUN_GRADCHECK_H

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "core/rng.h"
#include "testlib.h"

#define GC_MAX_IN 4

typedef struct GcInput {
    int ndim;
    int shape[TENSOR_MAX_DIMS];
    double *values; /* numel(shape) entries */
    bool differentiable;
} GcInput;

/* the op under test, on float32 tensors */
typedef Tensor *(*GcOp)(TensorCtx *ctx, Tensor **in, const void *arg);
/* the reference: writes out_size doubles to out */
typedef void (*GcRef)(const double *const *in, double *out, const void *arg);

typedef struct GcSpec {
    const char *name;
    GcOp op;
    GcRef ref;
    const void *arg;
    int n_in;
    GcInput in[GC_MAX_IN];
    double rtol, atol; /* 0 means the defaults above */
} GcSpec;

static inline double gc_eval(const GcSpec *s, double *const *in, double *out, const double *w,
                             int64_t n_out)
{
    s->ref((const double *const *)in, out, s->arg);
    double L = 0;
    for (int64_t i = 0; i < n_out; i++)
        L += w[i] * out[i];
    return L;
}

/* Runs the check, reporting mismatches through CHECKF; returns 0 when all agree. */
static inline int gradcheck(const GcSpec *s)
{
    double rtol = s->rtol > 0 ? s->rtol : 1e-3, atol = s->atol > 0 ? s->atol : 1e-4;
    int bad = 0;
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *in[GC_MAX_IN] = {0};
    double *din[GC_MAX_IN] = {0};
    for (int k = 0; k < s->n_in; k++) {
        const GcInput *g = &s->in[k];
        int64_t n = tensor_numel(g->ndim, g->shape);
        in[k] = tensor_new(ctx, g->ndim, g->shape);
        din[k] = malloc((size_t)(n ? n : 1) * sizeof(double));
        for (int64_t i = 0; i < n; i++) {
            in[k]->data[i] = (float)g->values[i];
            din[k][i] = (double)(float)g->values[i]; /* the reference sees the same inputs */
        }
        if (g->differentiable)
            tensor_requires_grad(in[k]);
    }
    Tensor *out = s->op(ctx, in, s->arg);
    CHECKF(out != NULL, "%s: op failed: %s", s->name, tensor_ctx_error(ctx));
    if (!out) {
        bad = 1;
        goto done;
    }
    int64_t n_out = out->size;
    double *ref_out = malloc((size_t)(n_out ? n_out : 1) * sizeof(double));
    double *w = malloc((size_t)(n_out ? n_out : 1) * sizeof(double));
    float *seed = malloc((size_t)(n_out ? n_out : 1) * sizeof(float));
    Rng r;
    rng_seed(&r, 1234);
    for (int64_t i = 0; i < n_out; i++) {
        seed[i] = (float)(rng_uniform(&r) * 2 - 1);
        w[i] = seed[i];
    }
    gc_eval(s, din, ref_out, w, n_out);
    for (int64_t i = 0; i < n_out; i++) {
        double got = out->data[i], want = ref_out[i];
        bool same_inf = isinf(want) && got == want;
        if (!same_inf && !(fabs(got - want) <= atol + rtol * fabs(want))) {
            CHECKF(0, "%s: forward[%lld] = %.9g, reference %.9g", s->name, (long long)i, got, want);
            bad = 1;
            break;
        }
    }
    int rc = ag_backward(ctx, out, seed);
    CHECKF(rc == 0, "%s: backward failed: %s", s->name, tensor_ctx_error(ctx));
    double *tmp = malloc((size_t)(n_out ? n_out : 1) * sizeof(double));
    for (int k = 0; rc == 0 && k < s->n_in && !bad; k++) {
        if (!s->in[k].differentiable)
            continue;
        for (int64_t i = 0; i < in[k]->size; i++) {
            double x = din[k][i], h = 1e-6 * (fabs(x) > 1 ? fabs(x) : 1);
            din[k][i] = x + h;
            double lp = gc_eval(s, din, tmp, w, n_out);
            din[k][i] = x - h;
            double lm = gc_eval(s, din, tmp, w, n_out);
            din[k][i] = x;
            double want = (lp - lm) / (2 * h);
            double got = in[k]->grad ? in[k]->grad[i] : 0.0;
            if (!(fabs(got - want) <= atol + rtol * fabs(want))) {
                CHECKF(0, "%s: d/d input %d [%lld] = %.9g, finite differences %.9g (x = %.9g)",
                       s->name, k + 1, (long long)i, got, want, x);
                bad = 1;
                break;
            }
        }
    }
    free(tmp);
    free(ref_out);
    free(w);
    free(seed);
done:
    for (int k = 0; k < s->n_in; k++)
        free(din[k]);
    tensor_ctx_free(ctx);
    return bad;
}

/* fills v[0..n) uniformly in [lo, hi) from a seeded stream */
static inline void gc_fill(double *v, int64_t n, double lo, double hi, uint64_t seed)
{
    Rng r;
    rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++)
        v[i] = lo + (hi - lo) * rng_uniform(&r);
}

/* a differentiable input of the given shape, uniform in [lo, hi) */
static inline GcInput gc_input(int ndim, const int *shape, double lo, double hi, uint64_t seed)
{
    GcInput g = {.ndim = ndim, .differentiable = true};
    memcpy(g.shape, shape, (size_t)ndim * sizeof *shape);
    int64_t n = tensor_numel(ndim, shape);
    g.values = malloc((size_t)(n ? n : 1) * sizeof(double));
    gc_fill(g.values, n, lo, hi, seed);
    return g;
}

/* gradcheck, then frees the inputs' values */
static inline int gradcheck_free(GcSpec *s)
{
    int bad = gradcheck(s);
    for (int k = 0; k < s->n_in; k++)
        free(s->in[k].values);
    return bad;
}

/* a float tensor uniform in [lo, hi); with_grad: a leaf that wants a gradient */
static inline Tensor *gc_tensor(TensorCtx *ctx, int ndim, const int *shape, double lo, double hi,
                                uint64_t seed, bool with_grad)
{
    Tensor *t = tensor_new(ctx, ndim, shape);
    Rng r;
    rng_seed(&r, seed);
    for (int64_t i = 0; t && t->data && i < t->size; i++)
        t->data[i] = (float)(lo + (hi - lo) * rng_uniform(&r));
    if (t && with_grad)
        tensor_requires_grad(t);
    return t;
}

/* Backward accumulates (+=) into the leaves: a second backward from out
 * through the same graph (autograd.c clears the non-leaf grads first) adds
 * the same g again, so each of the first n_leaves tensors of ctx's tape
 * holds 2g; an op that assigns (=) leaves g. */
static inline void gc_check_accumulates(TensorCtx *ctx, Tensor *out, int n_leaves)
{
    float *seed = malloc((size_t)out->size * sizeof *seed);
    float **first = calloc((size_t)n_leaves, sizeof *first);
    for (int64_t i = 0; i < out->size; i++)
        seed[i] = (float)(i % 7) - 2.5f;
    CHECK(ag_backward(ctx, out, seed) == 0);
    for (int k = 0; k < n_leaves; k++) {
        Tensor *t = ctx->tape[k];
        first[k] = malloc((size_t)t->size * sizeof(float));
        memcpy(first[k], t->grad, (size_t)t->size * sizeof(float));
    }
    CHECK(ag_backward(ctx, out, seed) == 0);
    for (int k = 0; k < n_leaves; k++) {
        Tensor *t = ctx->tape[k];
        for (int64_t i = 0; i < t->size; i++)
            if (!(fabsf(t->grad[i] - 2 * first[k][i]) <= 1e-6f * fabsf(first[k][i]))) {
                CHECKF(0, "op %s leaf %d [%lld]: %.9g after two passes, %.9g after one",
                       ag_op_name(out->op), k, (long long)i, t->grad[i], first[k][i]);
                break;
            }
        free(first[k]);
    }
    free(first);
    free(seed);
}

/* ---- thread-count determinism --------------------------------------------- */

/* builds one op's output from leaves it makes in ctx */
typedef Tensor *(*GcThreadCase)(TensorCtx *ctx);

/* The output and every leaf's gradient after forward and backward (seeded
 * randomly) under n threads, one after the other in a malloc'ed buffer. */
static inline float *gc_run_threads(GcThreadCase make, int n_threads, size_t *len)
{
    omp_set_num_threads(n_threads);
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *out = make(ctx);
    float *buf = NULL;
    CHECKF(out != NULL, "op failed: %s", tensor_ctx_error(ctx));
    if (!out)
        goto done;
    float *seed = malloc((size_t)out->size * sizeof *seed);
    Rng r;
    rng_seed(&r, 5);
    for (int64_t i = 0; i < out->size; i++)
        seed[i] = (float)rng_uniform(&r) - 0.5f;
    CHECK(ag_backward(ctx, out, seed) == 0);
    free(seed);
    size_t n = (size_t)out->size;
    for (int i = 0; i < ctx->n_tape; i++)
        n += ctx->tape[i]->op == OP_NONE && ctx->tape[i]->grad ? (size_t)ctx->tape[i]->size : 0;
    buf = malloc(n * sizeof *buf);
    memcpy(buf, out->data, (size_t)out->size * sizeof *buf);
    *len = (size_t)out->size;
    for (int i = 0; i < ctx->n_tape; i++) {
        Tensor *t = ctx->tape[i];
        if (t->op == OP_NONE && t->grad) {
            memcpy(buf + *len, t->grad, (size_t)t->size * sizeof *buf);
            *len += (size_t)t->size;
        }
    }
done:
    tensor_ctx_free(ctx);
    return buf;
}

/* the same bits under 1 and 2 OpenMP threads, output and gradients */
static inline void gc_check_threads(const char *name, GcThreadCase make)
{
    int before = omp_get_max_threads();
    size_t n1 = 0, n2 = 0;
    float *one = gc_run_threads(make, 1, &n1), *two = gc_run_threads(make, 2, &n2);
    omp_set_num_threads(before);
    CHECKF(one && two && n1 == n2 && memcmp(one, two, n1 * sizeof *one) == 0,
           "%s: results differ between 1 and 2 threads", name);
    free(one);
    free(two);
}

#endif
