/*
 * test_ops_nn.c — the network ops of src/core/ops_nn.c against plain double
 * references: matmul, linear, gather, embedding, layernorm, cross-entropy and
 * causal attention.
 *
 * Each op is gradchecked (tests/gradcheck.h: forward against the reference,
 * gradients against central differences of it) at ordinary random inputs and,
 * where the op has a numerically hard regime, at extreme ones. Then: products
 * against exact sums at awkward sizes and at sizes ops_nn.c splits into
 * tasks, cross-entropy at float precision, causality, error messages,
 * accumulation into gradients, the no_grad and shape-only modes, and
 * bit-identical results for 1 and 2 OpenMP threads.
 *
 * Letters: B batch, T time, C channels, NH heads, HS = C / NH, M K N matmul
 * dims, R rows, V vocabulary.
 */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "core/ops.h"

/* ---- input helpers ------------------------------------------------------ */

static Tensor *rand_tensor(TensorCtx *ctx, int ndim, const int *shape, double lo, double hi,
                           uint64_t seed)
{
    Tensor *t = tensor_new(ctx, ndim, shape);
    Rng r;
    rng_seed(&r, seed);
    for (int64_t i = 0; i < t->size; i++)
        t->data[i] = (float)(lo + (hi - lo) * rng_uniform(&r));
    return t;
}

/* A leaf that wants a gradient. */
static Tensor *leaf(TensorCtx *ctx, int ndim, const int *shape, double lo, double hi, uint64_t seed)
{
    Tensor *t = rand_tensor(ctx, ndim, shape, lo, hi, seed);
    tensor_requires_grad(t);
    return t;
}

static void rand_ids(int32_t *ids, int64_t n, int V, uint64_t seed)
{
    Rng r;
    rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++)
        ids[i] = (int32_t)rng_below(&r, (uint32_t)V);
}

/* ---- references (double, written plainly) ------------------------------- */

typedef struct MatmulArg {
    int batch, M, K, N;
    bool shared_b; /* (B, M, K) @ (K, N) */
} MatmulArg;

static void ref_matmul(const double *const *in, double *out, const void *arg)
{
    const MatmulArg *a = arg;
    for (int b = 0; b < a->batch; b++) {
        const double *A = in[0] + (int64_t)b * a->M * a->K;
        const double *Bm = in[1] + (a->shared_b ? 0 : (int64_t)b * a->K * a->N);
        double *Cm = out + (int64_t)b * a->M * a->N;
        for (int i = 0; i < a->M; i++)
            for (int j = 0; j < a->N; j++) {
                double s = 0;
                for (int k = 0; k < a->K; k++)
                    s += A[i * a->K + k] * Bm[k * a->N + j];
                Cm[i * a->N + j] = s;
            }
    }
}

static Tensor *op_matmul(TensorCtx *ctx, Tensor **in, const void *arg)
{
    (void)arg;
    return ag_matmul(ctx, in[0], in[1]);
}

typedef struct LinearArg {
    int R, K, N;
    bool bias, gelu, residual; /* the residual is the last input */
} LinearArg;

/* GPT-2's tanh-form GELU */
static double ref_gelu(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

static void ref_linear(const double *const *in, double *out, const void *arg)
{
    const LinearArg *a = arg;
    for (int r = 0; r < a->R; r++)
        for (int n = 0; n < a->N; n++) {
            double s = a->bias ? in[2][n] : 0;
            for (int k = 0; k < a->K; k++)
                s += in[0][r * a->K + k] * in[1][n * a->K + k];
            out[r * a->N + n] = a->gelu ? ref_gelu(s) : s;
            if (a->residual)
                out[r * a->N + n] += in[a->bias ? 3 : 2][r * a->N + n];
        }
}

static Tensor *op_linear(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const LinearArg *a = arg;
    Tensor *b = a->bias ? in[2] : NULL;
    if (a->residual)
        return ag_linear_add(ctx, in[0], in[1], b, in[a->bias ? 3 : 2]);
    return a->gelu ? ag_linear_gelu(ctx, in[0], in[1], b) : ag_linear(ctx, in[0], in[1], b);
}

typedef struct IndexArg {
    int64_t n; /* indices */
    int V, C;
    const int32_t *idx;
    int ndim; /* of the ids, for embedding */
    int shape[TENSOR_MAX_DIMS];
} IndexArg;

static void ref_gather(const double *const *in, double *out, const void *arg)
{
    const IndexArg *a = arg;
    for (int64_t i = 0; i < a->n; i++)
        out[i] = in[0][i * a->V + a->idx[i]];
}

static Tensor *op_gather(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const IndexArg *a = arg;
    return ag_gather(ctx, in[0], a->idx, a->n);
}

static void ref_embedding(const double *const *in, double *out, const void *arg)
{
    const IndexArg *a = arg;
    for (int64_t i = 0; i < a->n; i++)
        for (int c = 0; c < a->C; c++)
            out[i * a->C + c] = in[0][(int64_t)a->idx[i] * a->C + c];
}

static Tensor *op_embedding(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const IndexArg *a = arg;
    return ag_embedding(ctx, in[0], a->idx, a->ndim, a->shape);
}

/* per-row loss, with -1 targets ignored (loss 0) */
static void ref_cross_entropy(const double *const *in, double *out, const void *arg)
{
    const IndexArg *a = arg;
    for (int64_t r = 0; r < a->n; r++) {
        const double *x = in[0] + r * a->V;
        double mx = x[0], s = 0;
        for (int j = 1; j < a->V; j++)
            mx = x[j] > mx ? x[j] : mx;
        for (int j = 0; j < a->V; j++)
            s += exp(x[j] - mx);
        out[r] = a->idx[r] < 0 ? 0 : mx + log(s) - x[a->idx[r]];
    }
}

static Tensor *op_cross_entropy(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const IndexArg *a = arg;
    return ag_cross_entropy(ctx, in[0], a->idx, a->n);
}

typedef struct LayernormArg {
    int R, C;
    float eps;
} LayernormArg;

static void ref_layernorm(const double *const *in, double *out, const void *arg)
{
    const LayernormArg *a = arg;
    for (int r = 0; r < a->R; r++) {
        const double *x = in[0] + r * a->C;
        double mean = 0, var = 0;
        for (int c = 0; c < a->C; c++)
            mean += x[c] / a->C;
        for (int c = 0; c < a->C; c++)
            var += (x[c] - mean) * (x[c] - mean) / a->C;
        for (int c = 0; c < a->C; c++)
            out[r * a->C + c] = (x[c] - mean) / sqrt(var + a->eps) * in[1][c] + in[2][c];
    }
}

static Tensor *op_layernorm(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const LayernormArg *a = arg;
    return ag_layernorm(ctx, in[0], in[1], in[2], a->eps);
}

typedef struct AttnArg {
    int B, T, C, NH;
} AttnArg;

/* softmax(q k^T / sqrt(HS)) v per head, key positions <= query position */
static void ref_attention(const double *const *in, double *out, const void *arg)
{
    const AttnArg *a = arg;
    int HS = a->C / a->NH, C3 = 3 * a->C;
    double *w = malloc((size_t)a->T * sizeof *w);
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->NH; h++)
            for (int t = 0; t < a->T; t++) {
                const double *q = in[0] + ((int64_t)b * a->T + t) * C3 + h * HS;
                double mx = -INFINITY, s = 0;
                for (int u = 0; u <= t; u++) {
                    const double *k = in[0] + ((int64_t)b * a->T + u) * C3 + a->C + h * HS;
                    w[u] = 0;
                    for (int i = 0; i < HS; i++)
                        w[u] += q[i] * k[i] / sqrt((double)HS);
                    mx = w[u] > mx ? w[u] : mx;
                }
                for (int u = 0; u <= t; u++)
                    s += (w[u] = exp(w[u] - mx));
                double *o = out + ((int64_t)b * a->T + t) * a->C + h * HS;
                for (int i = 0; i < HS; i++) {
                    o[i] = 0;
                    for (int u = 0; u <= t; u++)
                        o[i] +=
                            w[u] / s * in[0][((int64_t)b * a->T + u) * C3 + 2 * a->C + h * HS + i];
                }
            }
    free(w);
}

static Tensor *op_attention(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const AttnArg *a = arg;
    return ag_attention(ctx, in[0], a->NH);
}

/* ---- gradchecks --------------------------------------------------------- */

static void gradcheck_matmul(int batch, int M, int K, int N, bool shared_b, int a_ndim)
{
    MatmulArg arg = {batch, M, K, N, shared_b};
    int sa[3] = {batch, M, K}, sb[3] = {batch, K, N};
    const int *pa = a_ndim == 3 ? sa : sa + 1;
    const int *pb = shared_b || a_ndim == 2 ? sb + 1 : sb;
    GcSpec s = {.name = "matmul", .op = op_matmul, .ref = ref_matmul, .arg = &arg, .n_in = 2};
    s.in[0] = gc_input(a_ndim, pa, -1, 1, 11);
    s.in[1] = gc_input(pb == sb ? 3 : 2, pb, -1, 1, 12);
    gradcheck_free(&s);
}

static void test_matmul_2d_gradcheck(void) { gradcheck_matmul(1, 5, 7, 3, true, 2); }
static void test_matmul_batched_gradcheck(void) { gradcheck_matmul(2, 3, 5, 4, false, 3); }
static void test_matmul_shared_rhs_gradcheck(void) { gradcheck_matmul(3, 4, 6, 5, true, 3); }

static void gradcheck_linear(bool bias, bool gelu, bool residual)
{
    LinearArg arg = {6, 5, 4, bias, gelu, residual};
    int sx[3] = {2, 3, 5}, sw[2] = {4, 5}, sb[1] = {4}, sr[3] = {2, 3, 4};
    const char *name = residual ? "linear_add" : gelu ? "linear_gelu" : "linear";
    GcSpec s = {.name = name, .op = op_linear, .ref = ref_linear, .arg = &arg};
    s.n_in = 2 + bias + residual;
    /* wider inputs for GELU, so pre-activations reach both tails (|s| ~ 5) */
    double range = gelu ? 1.5 : 1;
    s.in[0] = gc_input(3, sx, -range, range, 21);
    s.in[1] = gc_input(2, sw, -range, range, 22);
    if (bias)
        s.in[2] = gc_input(1, sb, -1, 1, 23);
    if (residual)
        s.in[s.n_in - 1] = gc_input(3, sr, -1, 1, 26);
    gradcheck_free(&s);
}

static void test_linear_bias_gradcheck(void) { gradcheck_linear(true, false, false); }
static void test_linear_no_bias_gradcheck(void) { gradcheck_linear(false, false, false); }
static void test_linear_gelu_gradcheck(void)
{
    gradcheck_linear(true, true, false);
    gradcheck_linear(false, true, false);
}
static void test_linear_add_gradcheck(void)
{
    gradcheck_linear(true, false, true);
    gradcheck_linear(false, false, true);
}

/* A fused linear op and the ops it stands for, built on the same leaves x
 * (R, K), w (N, K), b (N) and r (R, N) */
typedef Tensor *(*LinearBuild)(TensorCtx *ctx, Tensor *x, Tensor *w, Tensor *b, Tensor *r);

static Tensor *fused_gelu(TensorCtx *c, Tensor *x, Tensor *w, Tensor *b, Tensor *r)
{
    (void)r;
    return ag_linear_gelu(c, x, w, b);
}
static Tensor *plain_gelu(TensorCtx *c, Tensor *x, Tensor *w, Tensor *b, Tensor *r)
{
    (void)r;
    return ag_gelu(c, ag_linear(c, x, w, b));
}
static Tensor *fused_add(TensorCtx *c, Tensor *x, Tensor *w, Tensor *b, Tensor *r)
{
    return ag_linear_add(c, x, w, b, r);
}
static Tensor *plain_add(TensorCtx *c, Tensor *x, Tensor *w, Tensor *b, Tensor *r)
{
    return ag_add(c, r, ag_linear(c, x, w, b));
}

enum { FR = 300, FK = 40, FN = 200 }; /* large enough to be split into row tasks */

/* the leaves, the same values in any context; with_grad false: plain data */
static void fused_leaves(TensorCtx *ctx, Tensor *t[4], bool with_grad)
{
    const int sh[4][2] = {{FR, FK}, {FN, FK}, {FN, 0}, {FR, FN}};
    const double range[4] = {2, 1, 1, 3};
    for (int k = 0; k < 4; k++) {
        int nd = sh[k][1] ? 2 : 1;
        t[k] = with_grad ? leaf(ctx, nd, sh[k], -range[k], range[k], 141 + k)
                         : rand_tensor(ctx, nd, sh[k], -range[k], range[k], 141 + k);
    }
}

/* The fused op against the ops it stands for: the same bits forward (also
 * in a no_grad context, where nothing is saved and GELU runs in place) and
 * in every leaf's gradient, the residual's included. */
static void check_fused_linear(const char *name, LinearBuild fused, LinearBuild plain)
{
    TensorCtx *ctx[2] = {tensor_ctx_new(0), tensor_ctx_new(0)}, *frozen = tensor_ctx_new(0);
    frozen->no_grad = true;
    Tensor *t[2][4], *tf[4], *y[2];
    for (int i = 0; i < 2; i++)
        fused_leaves(ctx[i], t[i], true);
    fused_leaves(frozen, tf, false);
    y[0] = fused(ctx[0], t[0][0], t[0][1], t[0][2], t[0][3]);
    y[1] = plain(ctx[1], t[1][0], t[1][1], t[1][2], t[1][3]);
    Tensor *yf = fused(frozen, tf[0], tf[1], tf[2], tf[3]);
    Tensor *g = rand_tensor(ctx[0], 2, (int[]){FR, FN}, -1, 1, 149);
    CHECK(y[0] && y[1] && yf && ag_backward(ctx[0], y[0], g->data) == 0 &&
          ag_backward(ctx[1], y[1], g->data) == 0);
    size_t n = (size_t)FR * FN * sizeof(float);
    CHECKF(y[0] && y[1] && memcmp(y[0]->data, y[1]->data, n) == 0, "%s: forward differs", name);
    CHECKF(yf && y[1] && memcmp(yf->data, y[1]->data, n) == 0, "%s: no_grad forward differs", name);
    for (int k = 0; k < 4; k++) {
        size_t bytes = (size_t)t[0][k]->size * sizeof(float);
        CHECKF(memcmp(t[0][k]->grad, t[1][k]->grad, bytes) == 0, "%s: gradient %d differs", name,
               k);
    }
    for (int i = 0; i < 2; i++)
        tensor_ctx_free(ctx[i]);
    tensor_ctx_free(frozen);
}

static void test_linear_gelu_is_gelu_of_linear(void)
{
    check_fused_linear("linear_gelu", fused_gelu, plain_gelu);
}

static void test_linear_add_is_add_of_linear(void)
{
    check_fused_linear("linear_add", fused_add, plain_add);
}

/* An intermediate whose gradient is first stored (uninitialised buffer, see
 * op_grad_first) and then added to by its other consumers, in each order:
 * h = linear(x, w) feeds layernorm, gelu and a reshape, and f sums them. */
typedef struct FirstArg {
    int R, K, N;
} FirstArg;

static void ref_first_then_add(const double *const *in, double *out, const void *arg)
{
    const FirstArg *a = arg;
    int R = a->R, K = a->K, N = a->N;
    for (int r = 0; r < R; r++) {
        double h[8], mean = 0, var = 0;
        for (int n = 0; n < N; n++) {
            h[n] = 0;
            for (int k = 0; k < K; k++)
                h[n] += in[0][r * K + k] * in[1][n * K + k];
            mean += h[n] / N;
        }
        for (int n = 0; n < N; n++)
            var += (h[n] - mean) * (h[n] - mean) / N;
        for (int n = 0; n < N; n++)
            out[r * N + n] = (h[n] - mean) / sqrt(var + 1e-5) + ref_gelu(h[n]) + h[n];
    }
}

static Tensor *op_first_then_add(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const FirstArg *a = arg;
    int sw[1] = {a->N}, s2[2] = {a->R, a->N};
    Tensor *one = tensor_new(ctx, 1, sw), *zero = tensor_new(ctx, 1, sw);
    for (int n = 0; one && zero && n < a->N; n++)
        one->data[n] = 1.0f, zero->data[n] = 0.0f;
    Tensor *h = ag_linear(ctx, in[0], in[1], NULL);
    Tensor *ln = ag_layernorm(ctx, h, one, zero, 1e-5f);
    Tensor *ge = ag_gelu(ctx, h);
    Tensor *re = ag_reshape(ctx, h, 2, s2);
    return ag_add(ctx, ag_add(ctx, ln, ge), re);
}

static void test_first_write_then_accumulate_gradcheck(void)
{
    FirstArg arg = {5, 4, 6};
    int sx[2] = {5, 4}, sw[2] = {6, 4};
    GcSpec s = {.name = "first_then_add",
                .op = op_first_then_add,
                .ref = ref_first_then_add,
                .arg = &arg,
                .n_in = 2};
    s.in[0] = gc_input(2, sx, -1, 1, 24);
    s.in[1] = gc_input(2, sw, -1, 1, 25);
    gradcheck_free(&s);
}

static void gradcheck_gather(double range, uint64_t seed)
{
    int32_t idx[6];
    rand_ids(idx, 6, 7, seed);
    IndexArg arg = {.n = 6, .V = 7, .idx = idx};
    int sx[3] = {2, 3, 7};
    GcSpec s = {.name = "gather", .op = op_gather, .ref = ref_gather, .arg = &arg, .n_in = 1};
    s.in[0] = gc_input(3, sx, -range, range, seed);
    gradcheck_free(&s);
}

static void test_gather_gradcheck(void) { gradcheck_gather(2, 31); }
/* gather passes values through: logits of size 100 must come back exact */
static void test_gather_extreme_gradcheck(void) { gradcheck_gather(100, 32); }

static void test_embedding_gradcheck(void)
{
    int32_t ids[8] = {3, 1, 3, 0, 4, 3, 1, 1}; /* repeats: the scatter-add must sum them */
    IndexArg arg = {.n = 8, .V = 5, .C = 6, .idx = ids, .ndim = 2, .shape = {2, 4}};
    int sw[2] = {5, 6};
    GcSpec s = {
        .name = "embedding", .op = op_embedding, .ref = ref_embedding, .arg = &arg, .n_in = 1};
    s.in[0] = gc_input(2, sw, -1, 1, 41);
    gradcheck_free(&s);
}

static void gradcheck_layernorm(double lo, double hi, double rtol, double atol)
{
    LayernormArg arg = {6, 9, 1e-5f};
    int sx[3] = {2, 3, 9}, sc[1] = {9};
    GcSpec s = {.name = "layernorm",
                .op = op_layernorm,
                .ref = ref_layernorm,
                .arg = &arg,
                .n_in = 3,
                .rtol = rtol,
                .atol = atol};
    s.in[0] = gc_input(3, sx, lo, hi, 51);
    s.in[1] = gc_input(1, sc, 0.5, 1.5, 52);
    s.in[2] = gc_input(1, sc, -1, 1, 53);
    gradcheck_free(&s);
}

static void test_layernorm_gradcheck(void) { gradcheck_layernorm(-2, 2, 0, 0); }

/* Inputs of size 1e3: the output stays O(1) but d/dx shrinks to O(rstd) =
 * O(1e-3), so the default atol (1e-4) would accept anything; float keeps the
 * computation to ~1e-6 relative, so rtol 1e-5 with a negligible atol. */
static void test_layernorm_large_scale_gradcheck(void)
{
    gradcheck_layernorm(-1e3, 1e3, 1e-5, 1e-9);
}

/* Rows around 1e3 with spread 1: float32 holds x only to ulp(1e3) = 6e-5, so
 * the float mean is off by up to 3e-5 against the unit spread, ~5e-5 in the
 * normalised values; 1e-4 (absolute and relative) allows that, a wrong
 * formula is off by O(1). */
static void test_layernorm_offset_gradcheck(void) { gradcheck_layernorm(999, 1001, 1e-4, 1e-4); }

static void gradcheck_cross_entropy(double range, double rtol, double atol, uint64_t seed)
{
    int32_t targets[5];
    rand_ids(targets, 5, 7, seed);
    targets[2] = -1; /* ignored: loss 0 and no gradient */
    IndexArg arg = {.n = 5, .V = 7, .idx = targets};
    int sl[2] = {5, 7};
    GcSpec s = {.name = "cross_entropy",
                .op = op_cross_entropy,
                .ref = ref_cross_entropy,
                .arg = &arg,
                .n_in = 1,
                .rtol = rtol,
                .atol = atol};
    s.in[0] = gc_input(2, sl, -range, range, seed);
    gradcheck_free(&s);
}

static void test_cross_entropy_gradcheck(void) { gradcheck_cross_entropy(3, 0, 0, 61); }

/* Logits up to |100|: exp overflows without the max trick. Each gradient
 * entry is a probability computed from x - max, a difference up to 200 that
 * float rounds by up to 7.6e-6 (half an ulp of 200): relative 7.6e-6 in the
 * probability, inside rtol 2e-5; the loss (up to 200) carries the same
 * rounding. The defaults (1e-3, 1e-4) would hide an error 100 times that. */
static void test_cross_entropy_extreme_gradcheck(void)
{
    gradcheck_cross_entropy(100, 2e-5, 1e-7, 62);
}

/* Uniform logits: loss = log V exactly (closed form). */
static void test_cross_entropy_uniform_is_log_v(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    int sl[2] = {3, 10};
    Tensor *x = tensor_full(ctx, 2, sl, 4.25f);
    int32_t t[3] = {0, 9, -1};
    Tensor *loss = ag_cross_entropy(ctx, x, t, 3);
    CHECK(loss != NULL);
    if (loss) {
        CHECK_NEAR(loss->data[0], log(10.0), 1e-6);
        CHECK_NEAR(loss->data[1], log(10.0), 1e-6);
        CHECK(loss->data[2] == 0.0f);
    }
    tensor_ctx_free(ctx);
}

static void gradcheck_attention(int B, int T, int C, int NH, double range, uint64_t seed)
{
    AttnArg arg = {B, T, C, NH};
    int sq[3] = {B, T, 3 * C};
    GcSpec s = {
        .name = "attention", .op = op_attention, .ref = ref_attention, .arg = &arg, .n_in = 1};
    s.in[0] = gc_input(3, sq, -range, range, seed);
    gradcheck_free(&s);
}

static void test_attention_gradcheck(void) { gradcheck_attention(2, 5, 8, 2, 1, 71); }
/* HS = 5, an odd head size, and T = 1 (a single position attends to itself) */
static void test_attention_odd_sizes_gradcheck(void)
{
    gradcheck_attention(1, 7, 15, 3, 1.5, 72);
    gradcheck_attention(3, 1, 4, 1, 1, 73);
}
/* T = 67 crosses ops_nn.c's causal block of 64 query rows: the second block
 * must see every key up to its own rows, and no later one. */
static void test_attention_long_gradcheck(void) { gradcheck_attention(1, 67, 4, 2, 1, 75); }
/* Large scores (|q.k| / sqrt(HS) up to ~50) make the softmax nearly one-hot. */
static void test_attention_sharp_gradcheck(void) { gradcheck_attention(1, 6, 8, 2, 5, 74); }

/* ---- products against a naive loop -------------------------------------- */

/* The exact sum of n products and the float32 error bound for it: n u
 * sum |terms|, u = 2^-24 (Higham, Accuracy and Stability of Numerical
 * Algorithms, 2nd ed., 3.1), with one more rounding allowed for the
 * accumulation onto an existing value (beta = 1, a bias). */
typedef struct Dot {
    double sum, bound;
} Dot;

static Dot dot(const float *a, int64_t sa, const float *b, int64_t sb, int n)
{
    Dot d = {0, 0};
    for (int i = 0; i < n; i++) {
        double t = (double)a[i * sa] * b[i * sb];
        d.sum += t;
        d.bound += fabs(t);
    }
    d.bound *= (n + 1) * 0x1p-24;
    return d;
}

static void check_matmul_naive(int batch, int M, int K, int N, bool shared_b, int a_ndim)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    int sa[3] = {batch, M, K}, sb[3] = {batch, K, N};
    Tensor *a = rand_tensor(ctx, a_ndim, a_ndim == 3 ? sa : sa + 1, -1, 1, 81);
    Tensor *b = rand_tensor(ctx, shared_b ? 2 : 3, shared_b ? sb + 1 : sb, -1, 1, 82);
    Tensor *c = ag_matmul(ctx, a, b);
    CHECKF(c != NULL, "matmul failed: %s", tensor_ctx_error(ctx));
    int bad = !c;
    for (int bi = 0; bi < batch && !bad; bi++)
        for (int i = 0; i < M && !bad; i++)
            for (int j = 0; j < N && !bad; j++) {
                const float *A = a->data + ((int64_t)bi * M + i) * K;
                const float *Bm = b->data + (shared_b ? 0 : (int64_t)bi * K * N) + j;
                Dot d = dot(A, 1, Bm, N, K);
                float got = c->data[((int64_t)bi * M + i) * N + j];
                bad = !(fabs(got - d.sum) <= d.bound);
                CHECKF(!bad, "(%d,%d,%d,%d) [%d,%d,%d] = %.9g, exact %.9g", batch, M, K, N, bi, i,
                       j, got, d.sum);
            }
    tensor_ctx_free(ctx);
}

static void test_matmul_vs_naive(void)
{
    check_matmul_naive(1, 37, 19, 53, true, 2); /* non-square, odd sizes */
    check_matmul_naive(1, 1, 1, 1, true, 2);
    check_matmul_naive(1, 64, 64, 64, true, 2);
    check_matmul_naive(1, 129, 7, 3, true, 2);
    check_matmul_naive(3, 17, 33, 9, false, 3); /* batched */
    check_matmul_naive(4, 13, 70, 31, true, 3); /* (B, M, K) @ (K, N) */
    check_matmul_naive(2, 5, 3, 2, false, 3);
}

static void test_linear_vs_naive(void)
{
    enum { R = 67, K = 33, N = 29 };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = rand_tensor(ctx, 2, (int[]){R, K}, -1, 1, 91);
    Tensor *w = rand_tensor(ctx, 2, (int[]){N, K}, -1, 1, 92);
    Tensor *b = rand_tensor(ctx, 1, (int[]){N}, -1, 1, 93);
    Tensor *y = ag_linear(ctx, x, w, b), *y0 = ag_linear(ctx, x, w, NULL);
    int bad = !y || !y0;
    CHECK(!bad);
    for (int r = 0; r < R && !bad; r++)
        for (int n = 0; n < N && !bad; n++) {
            Dot d = dot(x->data + r * K, 1, w->data + n * K, 1, K);
            bad = !(fabs(y0->data[r * N + n] - d.sum) <= d.bound) ||
                  !(fabs(y->data[r * N + n] - (d.sum + b->data[n])) <= d.bound + 0x1p-24);
            CHECKF(!bad, "[%d,%d] = %.9g (no bias %.9g), exact %.9g + %.9g", r, n,
                   y->data[r * N + n], y0->data[r * N + n], d.sum, b->data[n]);
        }
    tensor_ctx_free(ctx);
}

static double ulp_of(double v)
{
    int e;
    frexp(v, &e);
    return ldexp(1.0, e - 24);
}

/* Float-level accuracy of the loss, which gradcheck's 1e-3 cannot see. loss =
 * (max - x[t]) + log(sum exp(x - max)) rounds each of its three float terms
 * (half an ulp of the largest, thrice) and inherits the exponential's error
 * (ops_nn.c's own exp, within 1 ulp: 1.2e-7 relative, so 1.2e-7 absolute on
 * the log); twice that is the tolerance. */
static void test_cross_entropy_accuracy(void)
{
    enum { N = 256, V = 50 };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = rand_tensor(ctx, 2, (int[]){N, V}, -10, 10, 151);
    static int32_t targets[N];
    rand_ids(targets, N, V, 152);
    Tensor *loss = ag_cross_entropy(ctx, x, targets, N);
    CHECK(loss != NULL);
    for (int r = 0; loss && r < N; r++) {
        const float *xr = x->data + r * V;
        double mx = xr[0], sum = 0;
        for (int j = 1; j < V; j++)
            mx = xr[j] > mx ? xr[j] : mx;
        for (int j = 0; j < V; j++)
            sum += exp(xr[j] - mx);
        double want = mx - xr[targets[r]] + log(sum);
        double big = fmax(fabs(want), fmax(mx - xr[targets[r]], log(sum)));
        double tol = 3 * ulp_of(big) + 2.4e-7;
        if (!(fabs(loss->data[r] - want) <= tol)) {
            CHECKF(0, "row %d: loss %.9g, want %.9g (tol %.3g)", r, loss->data[r], want, tol);
            break;
        }
    }
    tensor_ctx_free(ctx);
}

/* Products big enough that ops_nn.c splits them into row tasks (more than a
 * million multiply-adds), forward and backward against exact sums: the
 * transposed operand of dW = g^T x is offset per task differently from the
 * plain one, and only a split product shows it. R is past 2 * WGRAD_ROWS,
 * so dW and db are summed in parts (weight_grads), with a short last part. */
static void test_linear_large_vs_naive(void)
{
    enum { R = 1100, K = 40, N = 200 };
    TensorCtx *ctx = tensor_ctx_new(0);
    int sx[2] = {R, K}, sw[2] = {N, K}, sb[1] = {N};
    Tensor *x = leaf(ctx, 2, sx, -1, 1, 131), *w = leaf(ctx, 2, sw, -1, 1, 132);
    Tensor *b = leaf(ctx, 1, sb, -1, 1, 133), *y = ag_linear(ctx, x, w, b);
    Tensor *g = rand_tensor(ctx, 2, (int[]){R, N}, -1, 1, 134);
    CHECK(y && ag_backward(ctx, y, g->data) == 0);
    int bad = !y;
    for (int r = 0; r < R && !bad; r++)
        for (int n = 0; n < N && !bad; n++) {
            Dot d = dot(x->data + r * K, 1, w->data + n * K, 1, K);
            bad = !(fabs(y->data[r * N + n] - (d.sum + b->data[n])) <= d.bound + 0x1p-24);
        }
    CHECKF(!bad, "forward differs from exact sums");
    for (int r = 0; r < R && !bad; r++)
        for (int k = 0; k < K && !bad; k++) { /* dx = g W */
            Dot d = dot(g->data + r * N, 1, w->data + k, K, N);
            bad = !(fabs(x->grad[r * K + k] - d.sum) <= d.bound);
        }
    CHECKF(!bad, "dx differs from exact sums");
    for (int n = 0; n < N && !bad; n++)
        for (int k = 0; k < K && !bad; k++) { /* dW = g^T x */
            Dot d = dot(g->data + n, N, x->data + k, K, R);
            bad = !(fabs(w->grad[n * K + k] - d.sum) <= d.bound);
        }
    CHECKF(!bad, "dW differs from exact sums");
    for (int n = 0; n < N && !bad; n++) { /* db = column sums of g */
        float one = 1.0f;
        Dot d = dot(g->data + n, N, &one, 0, R);
        bad = !(fabs(b->grad[n] - d.sum) <= d.bound);
    }
    CHECKF(!bad, "db differs from exact sums");
    tensor_ctx_free(ctx);
}

/* ops_nn.c's LayerNorm row sums, written out one lane at a time in this
 * baseline (SSE2) build: 16 running double sums, entry c in lane c % 16,
 * added in lane order. The op's kernels are cloned for AVX2 and AVX-512 and
 * must give these bits on any CPU. C = 200 leaves a tail of 8. Sums of
 * ordinary floats in double are mostly exact whatever the order, so the
 * first rows hold +-1e20 pairs whose cancellation depends on the grouping:
 * another lane count, or one vector-wide reduction, changes their mean. */
static double lane_sum16(const double *v, int C)
{
    double lane[16] = {0}, s = 0;
    for (int c = 0; c < C; c++)
        lane[c % 16] += v[c];
    for (int l = 0; l < 16; l++)
        s += lane[l];
    return s;
}

static void test_layernorm_clones_match_lane_sums(void)
{
    enum { R = 64, C = 200 };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = rand_tensor(ctx, 2, (int[]){R, C}, 95, 105, 171); /* a large offset */
    Tensor *w = rand_tensor(ctx, 1, (int[]){C}, -2, 2, 172);
    Tensor *b = rand_tensor(ctx, 1, (int[]){C}, 0, 0, 173); /* zero: no tiny term swamped */
    for (int r = 0; r < 4; r++) /* 1e20 at c, -1e20 at c + 16 + 9r: one lane when r = 0 */
        for (int c = 0; c < C; c++)
            x->data[r * C + c] = c == r ? 1e20f : c == r + 16 + 8 * r ? -1e20f : 1.0f;
    Tensor *y = ag_layernorm(ctx, x, w, b, 1e-5f);
    CHECK(y != NULL);
    int bad = !y;
    for (int r = 0; r < R && !bad; r++) {
        const float *xr = x->data + r * C;
        double v[C];
        for (int c = 0; c < C; c++)
            v[c] = xr[c];
        float mean = (float)(lane_sum16(v, C) / C);
        for (int c = 0; c < C; c++)
            v[c] = ((double)xr[c] - mean) * ((double)xr[c] - mean);
        float rstd = (float)(1.0 / sqrt(lane_sum16(v, C) / C + 1e-5f));
        for (int c = 0; c < C && !bad; c++) {
            float want = (xr[c] - mean) * rstd * w->data[c] + b->data[c];
            bad = memcmp(&want, &y->data[r * C + c], sizeof want) != 0;
            CHECKF(!bad, "row %d col %d: %a, lane sums give %a", r, c, y->data[r * C + c], want);
        }
    }
    tensor_ctx_free(ctx);
}

/* (B, M, K) @ (K, N) collapsed to one split product, and its backward. */
static void test_matmul_large_vs_naive(void)
{
    enum { B = 3, M = 100, K = 50, N = 90 };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *a = leaf(ctx, 3, (int[]){B, M, K}, -1, 1, 141);
    Tensor *bm = leaf(ctx, 2, (int[]){K, N}, -1, 1, 142), *c = ag_matmul(ctx, a, bm);
    Tensor *g = rand_tensor(ctx, 3, (int[]){B, M, N}, -1, 1, 143);
    CHECK(c && ag_backward(ctx, c, g->data) == 0);
    int bad = !c, R = B * M;
    for (int r = 0; r < R && !bad; r++)
        for (int n = 0; n < N && !bad; n++) {
            Dot d = dot(a->data + r * K, 1, bm->data + n, N, K);
            bad = !(fabs(c->data[r * N + n] - d.sum) <= d.bound);
        }
    CHECKF(!bad, "forward differs from exact sums");
    for (int r = 0; r < R && !bad; r++)
        for (int k = 0; k < K && !bad; k++) { /* dA = g B^T */
            Dot d = dot(g->data + r * N, 1, bm->data + k * N, 1, N);
            bad = !(fabs(a->grad[r * K + k] - d.sum) <= d.bound);
        }
    CHECKF(!bad, "dA differs from exact sums");
    for (int k = 0; k < K && !bad; k++)
        for (int n = 0; n < N && !bad; n++) { /* dB = A^T g over all B * M rows */
            Dot d = dot(a->data + k, K, g->data + n, N, R);
            bad = !(fabs(bm->grad[k * N + n] - d.sum) <= d.bound);
        }
    CHECKF(!bad, "dB differs from exact sums");
    tensor_ctx_free(ctx);
}

/* ---- causality ---------------------------------------------------------- */

/* Changing the last position's k and v leaves every earlier output
 * bit-identical, and a gradient seeded on the earlier outputs only leaves the
 * last position's q, k and v at zero. */
static void test_attention_is_causal(void)
{
    int B = 2, T = 9, C = 12, NH = 3;
    TensorCtx *ctx = tensor_ctx_new(0);
    int sq[3] = {B, T, 3 * C};
    Tensor *qkv = rand_tensor(ctx, 3, sq, -2, 2, 101);
    tensor_requires_grad(qkv);
    Tensor *y1 = ag_attention(ctx, qkv, NH);
    Tensor *qkv2 = tensor_copy(ctx, qkv);
    for (int b = 0; b < B; b++)
        for (int c = C; c < 3 * C; c++) /* k and v of position T - 1 */
            qkv2->data[((int64_t)b * T + T - 1) * 3 * C + c] += 1.5f;
    Tensor *y2 = ag_attention(ctx, qkv2, NH);
    CHECK(y1 && y2);
    if (!y1 || !y2)
        goto done;
    for (int b = 0; b < B; b++) {
        int64_t early = (int64_t)(T - 1) * C, row0 = (int64_t)b * T * C;
        CHECK(memcmp(y1->data + row0, y2->data + row0, (size_t)early * sizeof(float)) == 0);
        bool last_changed = false;
        for (int c = 0; c < C; c++)
            last_changed |= y1->data[row0 + early + c] != y2->data[row0 + early + c];
        CHECK(last_changed); /* the check can fail: the change does reach position T - 1 */
    }
    float *seed = calloc((size_t)y1->size, sizeof *seed);
    for (int b = 0; b < B; b++)
        for (int64_t i = 0; i < (int64_t)(T - 1) * C; i++)
            seed[(int64_t)b * T * C + i] = 1.0f;
    CHECK(ag_backward(ctx, y1, seed) == 0);
    for (int b = 0; b < B; b++)
        for (int c = 0; c < 3 * C; c++)
            CHECK(qkv->grad[((int64_t)b * T + T - 1) * 3 * C + c] == 0.0f);
    free(seed);
done:
    tensor_ctx_free(ctx);
}

/* ---- errors ------------------------------------------------------------- */

#define CHECK_ERR(ctx, expr, want)                                                                 \
    do {                                                                                           \
        tensor_ctx_clear_error(ctx);                                                               \
        CHECK((expr) == NULL);                                                                     \
        CHECKF(strcmp(tensor_ctx_error(ctx), want) == 0, "error \"%s\", expected \"%s\"",          \
               tensor_ctx_error(ctx), want);                                                       \
    } while (0)

static Tensor *zeros(TensorCtx *ctx, int ndim, int d0, int d1, int d2)
{
    int s[3] = {d0, d1, d2};
    return tensor_new(ctx, ndim, s);
}

static void test_shape_errors(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *a43 = zeros(ctx, 2, 4, 3, 0), *b52 = zeros(ctx, 2, 5, 2, 0);
    CHECK_ERR(ctx, ag_matmul(ctx, a43, b52), "matmul: inner dims differ: (4, 3) @ (5, 2)");
    CHECK_ERR(ctx, ag_matmul(ctx, zeros(ctx, 3, 2, 4, 3), zeros(ctx, 3, 3, 3, 2)),
              "matmul: batch dims differ: (2, 4, 3) @ (3, 3, 2)");
    CHECK_ERR(ctx, ag_matmul(ctx, zeros(ctx, 1, 3, 0, 0), zeros(ctx, 2, 3, 2, 0)),
              "matmul: expected (M, K) @ (K, N), (B, M, K) @ (B, K, N) or (B, M, K) @ (K, N), "
              "got (3) @ (3, 2)");
    CHECK_ERR(ctx, ag_linear(ctx, a43, b52, NULL),
              "linear: x (4, 3) does not fit weight (5, 2): expected x (..., 2)");
    CHECK_ERR(ctx, ag_linear_add(ctx, b52, b52, NULL, a43),
              "linear_add: residual (4, 3) does not fit output (5, 5)");
    CHECK_ERR(ctx, ag_linear(ctx, b52, b52, zeros(ctx, 1, 4, 0, 0)),
              "linear: bias (4) does not fit weight (5, 2): expected (5)");
    CHECK_ERR(ctx, ag_layernorm(ctx, a43, zeros(ctx, 1, 3, 0, 0), zeros(ctx, 1, 4, 0, 0), 1e-5f),
              "layernorm: bias (4) does not fit x (4, 3): expected (3)");
    CHECK_ERR(ctx, ag_layernorm(ctx, a43, zeros(ctx, 1, 3, 0, 0), zeros(ctx, 1, 3, 0, 0), -1.0f),
              "layernorm: eps must be finite and >= 0, got -1");
    CHECK_ERR(ctx, ag_attention(ctx, zeros(ctx, 3, 2, 4, 12), 3),
              "attention: 3 heads do not divide C = 4 of qkv (2, 4, 12)");
    CHECK_ERR(ctx, ag_attention(ctx, zeros(ctx, 3, 2, 4, 10), 1),
              "attention: qkv must be (B, T, 3C), got (2, 4, 10)");
    int32_t idx[4] = {0, 1, 2, 0};
    CHECK_ERR(ctx, ag_gather(ctx, a43, idx, 3),
              "gather: 3 indices for x (4, 3), expected 4 (one per row)");
    CHECK_ERR(ctx, ag_cross_entropy(ctx, zeros(ctx, 3, 1, 4, 3), idx, 4),
              "cross_entropy: logits must be (N, V), got (1, 4, 3)");
    /* a NULL source propagates without overwriting the first error */
    tensor_ctx_clear_error(ctx);
    tensor_ctx_fail(ctx, TENSOR_ERR_ARG, "first");
    CHECK(ag_matmul(ctx, NULL, b52) == NULL && ag_linear(ctx, a43, NULL, NULL) == NULL);
    CHECK(ag_layernorm(ctx, NULL, a43, a43, 0) == NULL && ag_attention(ctx, NULL, 1) == NULL);
    CHECK(strcmp(tensor_ctx_error(ctx), "first") == 0);
    tensor_ctx_free(ctx);
}

static void test_index_errors(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = zeros(ctx, 2, 4, 3, 0), *w = zeros(ctx, 2, 5, 2, 0);
    int32_t bad_hi[4] = {0, 2, 3, 1}, bad_lo[4] = {0, 1, -1, 2}, ce[4] = {-1, 2, -2, 0};
    CHECK_ERR(ctx, ag_gather(ctx, x, bad_hi, 4),
              "gather: index 3 at position 2 out of range [0, 3)");
    CHECK_ERR(ctx, ag_gather(ctx, x, bad_lo, 4),
              "gather: index -1 at position 2 out of range [0, 3)");
    int ids_shape[2] = {2, 2};
    int32_t ids[4] = {4, 0, 5, 1};
    CHECK_ERR(ctx, ag_embedding(ctx, w, ids, 2, ids_shape),
              "embedding: id 5 at position 2 out of range [0, 5)");
    CHECK_ERR(ctx, ag_cross_entropy(ctx, x, ce, 4),
              "cross_entropy: target -2 at position 2 out of range [0, 3) (or -1 to ignore)");
    int32_t ce_hi[4] = {0, 3, 0, 0};
    CHECK_ERR(ctx, ag_cross_entropy(ctx, x, ce_hi, 4),
              "cross_entropy: target 3 at position 1 out of range [0, 3) (or -1 to ignore)");
    CHECK_ERR(ctx, ag_cross_entropy(ctx, x, NULL, 4),
              "cross_entropy: targets are NULL, 4 expected");
    int n_before = ctx->n_tape;
    CHECK_ERR(ctx, ag_gather(ctx, x, bad_hi, 4),
              "gather: index 3 at position 2 out of range [0, 3)");
    CHECK(ctx->n_tape == n_before); /* a rejected call makes no node */
    tensor_ctx_free(ctx);
}

/* ---- modes -------------------------------------------------------------- */

/* One of each op on small inputs that want gradients; returns how many.
 * The leaves are the first N_LEAVES tensors of the tape. */
#define N_LEAVES 6
static int make_each_op(TensorCtx *ctx, Tensor **outs)
{
    static const int32_t ids[4] = {1, 0, 2, 1};
    int s2[2] = {4, 3}, s3[3] = {1, 4, 6}, sc[1] = {3}, sw[2] = {2, 3}, sm[2] = {3, 5};
    int sb[1] = {2};
    Tensor *leaves[N_LEAVES] = {
        leaf(ctx, 2, s2, -1, 1, 1), leaf(ctx, 2, sw, -1, 1, 2), leaf(ctx, 1, sc, -1, 1, 3),
        leaf(ctx, 3, s3, -1, 1, 4), leaf(ctx, 2, sm, -1, 1, 5), leaf(ctx, 1, sb, -1, 1, 6),
    };
    Tensor *x = leaves[0], *w = leaves[1], *v = leaves[2], *q = leaves[3], *m = leaves[4];
    int ids_shape[1] = {4};
    outs[0] = ag_gather(ctx, x, ids, 4); /* the ops that save state come first */
    outs[1] = ag_embedding(ctx, x, ids, 1, ids_shape);
    outs[2] = ag_layernorm(ctx, x, v, v, 1e-5f);
    outs[3] = ag_cross_entropy(ctx, x, ids, 4);
    outs[4] = ag_attention(ctx, q, 2);
    outs[5] = ag_linear(ctx, x, w, leaves[5]);
    outs[6] = ag_matmul(ctx, x, m);
    return 7;
}

static void test_no_grad_saves_nothing(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *outs[8] = {0};
    int n = make_each_op(ctx, outs); /* with grad: the saving ops keep state */
    for (int i = 0; i < 5; i++)
        CHECKF(outs[i] && outs[i]->aux != NULL, "op %d saved nothing with grad on", i);
    tensor_ctx_clear_error(ctx);
    ctx->no_grad = true;
    size_t used = ctx->used;
    n = make_each_op(ctx, outs);
    for (int i = 0; i < n; i++) {
        CHECKF(outs[i] != NULL, "op %d failed: %s", i, tensor_ctx_error(ctx));
        if (!outs[i])
            continue;
        CHECKF(outs[i]->aux == NULL, "op %d saved state under no_grad", i);
        CHECK(outs[i]->src[0] == NULL && !(outs[i]->flags & TENSOR_REQUIRES_GRAD));
    }
    CHECK(ctx->used > used); /* outputs were made; only aux must be absent */
    tensor_ctx_free(ctx);
}

/* Backward accumulates (+=) into the leaves: a second backward through the
 * same graph (autograd.c clears the non-leaf grads first) adds the same g
 * again, so each leaf holds 2g. An op that assigns (=) leaves g. */
static void test_backward_accumulates(void)
{
    for (int op = 0; op < 7; op++) {
        TensorCtx *ctx = tensor_ctx_new(0);
        Tensor *outs[8] = {0};
        make_each_op(ctx, outs);
        gc_check_accumulates(ctx, outs[op], N_LEAVES);
        tensor_ctx_free(ctx);
    }
}

/* A shape-only context computes shapes and saves nothing; a shape-only
 * tensor handed to a context that computes values is an error, not a crash. */
static void test_meta_shapes_only(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    ctx->meta = true;
    int sq[3] = {2, 16, 48}, sw[2] = {50, 16}, sx[3] = {2, 16, 16}, sc[1] = {16};
    Tensor *qkv = tensor_new(ctx, 3, sq), *w = tensor_new(ctx, 2, sw);
    Tensor *x = tensor_new(ctx, 3, sx), *g = tensor_new(ctx, 1, sc);
    tensor_requires_grad(qkv);
    tensor_requires_grad(w);
    tensor_requires_grad(x);
    static const int32_t t[50] = {0};
    Tensor *att = ag_attention(ctx, qkv, 4), *lin = ag_linear(ctx, x, w, NULL);
    Tensor *ln = ag_layernorm(ctx, x, g, g, 1e-5f), *ce = ag_cross_entropy(ctx, w, t, 50);
    CHECK(att && att->data == NULL && att->aux == NULL && att->shape[2] == 16);
    CHECK(lin && lin->data == NULL && lin->ndim == 3 && lin->shape[2] == 50);
    CHECK(ln && ln->aux == NULL && ce && ce->aux == NULL && ce->ndim == 1);
    TensorCtx *real = tensor_ctx_new(0);
    CHECK_ERR(real, ag_linear(real, x, w, NULL), "linear: x is shape-only and has no data");
    tensor_ctx_free(real);
    tensor_ctx_free(ctx);
}

/* ops_nn.c runs OpenBLAS single-threaded inside its ops (one thread pool);
 * the caller's OpenBLAS setting is back in place after each. */
static void test_blas_threads_restored(void)
{
    int before = openblas_get_num_threads();
    openblas_set_num_threads(2);
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = leaf(ctx, 2, (int[]){300, 64}, -1, 1, 161);
    Tensor *y = ag_linear(ctx, x, leaf(ctx, 2, (int[]){64, 64}, -1, 1, 162), NULL);
    CHECK(y && openblas_get_num_threads() == 2);
    CHECK(ag_backward(ctx, y, x->data) == 0 && openblas_get_num_threads() == 2);
    Tensor *a = ag_attention(ctx, leaf(ctx, 3, (int[]){2, 8, 12}, -1, 1, 163), 2);
    CHECK(a && openblas_get_num_threads() == 2);
    tensor_ctx_free(ctx);
    openblas_set_num_threads(before);
}

/* ---- threads ------------------------------------------------------------ */

/* Each case makes one op at a size where its loops do go parallel (above
 * ops_nn.c's 32768-element threshold, and past one causal block of 64 rows). */
typedef Tensor *(*ThreadCase)(TensorCtx *ctx);

static Tensor *case_attention(TensorCtx *ctx)
{
    int s[3] = {2, 100, 3 * 48};
    return ag_attention(ctx, leaf(ctx, 3, s, -2, 2, 111), 6);
}

static Tensor *case_layernorm(TensorCtx *ctx)
{
    int sx[2] = {512, 80}, sc[1] = {80};
    Tensor *x = leaf(ctx, 2, sx, -2, 2, 112), *w = leaf(ctx, 1, sc, 0.5, 1.5, 113);
    return ag_layernorm(ctx, x, w, leaf(ctx, 1, sc, -1, 1, 114), 1e-5f);
}

static Tensor *case_embedding(TensorCtx *ctx)
{
    static int32_t ids[600]; /* 600 positions over 40 rows: every row repeats */
    rand_ids(ids, 600, 40, 7);
    int sw[2] = {40, 80}, shape[2] = {3, 200};
    return ag_embedding(ctx, leaf(ctx, 2, sw, -1, 1, 115), ids, 2, shape);
}

static Tensor *case_cross_entropy(TensorCtx *ctx)
{
    static int32_t targets[512];
    rand_ids(targets, 512, 80, 8);
    int sl[2] = {512, 80};
    return ag_cross_entropy(ctx, leaf(ctx, 2, sl, -3, 3, 116), targets, 512);
}

static Tensor *case_linear(TensorCtx *ctx)
{
    int sx[2] = {512, 80}, sw[2] = {40, 80}, sb[1] = {40};
    Tensor *x = leaf(ctx, 2, sx, -1, 1, 117), *w = leaf(ctx, 2, sw, -1, 1, 118);
    return ag_linear(ctx, x, w, leaf(ctx, 1, sb, -1, 1, 119));
}

/* past 2 * WGRAD_ROWS rows: dW and db summed in parts */
static Tensor *case_linear_parts(TensorCtx *ctx)
{
    int sx[2] = {1100, 48}, sw[2] = {40, 48}, sb[1] = {40};
    Tensor *x = leaf(ctx, 2, sx, -1, 1, 125), *w = leaf(ctx, 2, sw, -1, 1, 126);
    return ag_linear(ctx, x, w, leaf(ctx, 1, sb, -1, 1, 127));
}

static Tensor *case_linear_gelu(TensorCtx *ctx)
{
    int sx[2] = {512, 80}, sw[2] = {40, 80}, sb[1] = {40};
    Tensor *x = leaf(ctx, 2, sx, -2, 2, 122), *w = leaf(ctx, 2, sw, -1, 1, 123);
    return ag_linear_gelu(ctx, x, w, leaf(ctx, 1, sb, -1, 1, 124));
}

static Tensor *case_matmul_batched(TensorCtx *ctx)
{
    int sa[3] = {4, 64, 48}, sb[3] = {4, 48, 40};
    return ag_matmul(ctx, leaf(ctx, 3, sa, -1, 1, 120), leaf(ctx, 3, sb, -1, 1, 121));
}

/* The output and every leaf's gradient after forward and backward (seeded
 * randomly) under n threads, one after the other in a malloc'ed buffer. */
static float *run_threads(ThreadCase make, int n_threads, size_t *len)
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
        n += ctx->tape[i]->op == OP_NONE ? (size_t)ctx->tape[i]->size : 0;
    buf = malloc(n * sizeof *buf);
    memcpy(buf, out->data, (size_t)out->size * sizeof *buf);
    *len = (size_t)out->size;
    for (int i = 0; i < ctx->n_tape; i++) {
        Tensor *t = ctx->tape[i];
        if (t->op == OP_NONE) {
            memcpy(buf + *len, t->grad, (size_t)t->size * sizeof *buf);
            *len += (size_t)t->size;
        }
    }
done:
    tensor_ctx_free(ctx);
    return buf;
}

static void check_threads(const char *name, ThreadCase make)
{
    int before = omp_get_max_threads();
    size_t n1 = 0, n2 = 0;
    float *one = run_threads(make, 1, &n1), *two = run_threads(make, 2, &n2);
    omp_set_num_threads(before);
    CHECKF(one && two && n1 == n2 && memcmp(one, two, n1 * sizeof *one) == 0,
           "%s: results differ between 1 and 2 threads", name);
    free(one);
    free(two);
}

static void test_threads_attention(void) { check_threads("attention", case_attention); }
static void test_threads_layernorm(void) { check_threads("layernorm", case_layernorm); }
static void test_threads_embedding(void) { check_threads("embedding", case_embedding); }
static void test_threads_other_ops(void)
{
    check_threads("cross_entropy", case_cross_entropy);
    check_threads("linear", case_linear);
    check_threads("linear_gelu", case_linear_gelu);
    check_threads("linear, weight gradients in parts", case_linear_parts);
    check_threads("matmul", case_matmul_batched);
}

/* BLAS sizes are int: a product over more rows than that is a shape error
 * (on shape-only tensors, which allocate nothing, it would otherwise reach
 * the kernel sizes as a truncated int) */
static void test_rows_over_int_max_are_errors(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    ctx->meta = true;
    Tensor *x = tensor_new(ctx, 3, (int[]){65536, 65536, 8}); /* 2^32 rows of 8 */
    Tensor *w = tensor_new(ctx, 2, (int[]){4, 8});
    Tensor *m = tensor_new(ctx, 2, (int[]){8, 4});
    CHECK(x && w && m);
    CHECK(ag_linear(ctx, x, w, NULL) == NULL);
    CHECKF(strstr(tensor_ctx_error(ctx), "linear: (65536, 65536, 8) has more than"), "%s",
           tensor_ctx_error(ctx));
    tensor_ctx_clear_error(ctx);
    CHECK(ag_matmul(ctx, x, m) == NULL);
    CHECKF(strstr(tensor_ctx_error(ctx), "matmul: (65536, 65536, 8) has more than"), "%s",
           tensor_ctx_error(ctx));
    tensor_ctx_clear_error(ctx);
    Tensor *ok = tensor_new(ctx, 3, (int[]){1024, 1024, 8}); /* 2^20 rows: fine */
    CHECK(ag_linear(ctx, ok, w, NULL) != NULL);
    tensor_ctx_free(ctx);
}

int main(void)
{
    RUN(test_matmul_2d_gradcheck);
    RUN(test_matmul_batched_gradcheck);
    RUN(test_matmul_shared_rhs_gradcheck);
    RUN(test_matmul_vs_naive);
    RUN(test_rows_over_int_max_are_errors);
    RUN(test_linear_bias_gradcheck);
    RUN(test_linear_no_bias_gradcheck);
    RUN(test_linear_gelu_gradcheck);
    RUN(test_linear_gelu_is_gelu_of_linear);
    RUN(test_linear_add_gradcheck);
    RUN(test_linear_add_is_add_of_linear);
    RUN(test_first_write_then_accumulate_gradcheck);
    RUN(test_linear_vs_naive);
    RUN(test_gather_gradcheck);
    RUN(test_gather_extreme_gradcheck);
    RUN(test_embedding_gradcheck);
    RUN(test_layernorm_gradcheck);
    RUN(test_layernorm_large_scale_gradcheck);
    RUN(test_layernorm_offset_gradcheck);
    RUN(test_cross_entropy_gradcheck);
    RUN(test_cross_entropy_extreme_gradcheck);
    RUN(test_cross_entropy_uniform_is_log_v);
    RUN(test_cross_entropy_accuracy);
    RUN(test_linear_large_vs_naive);
    RUN(test_layernorm_clones_match_lane_sums);
    RUN(test_matmul_large_vs_naive);
    RUN(test_attention_gradcheck);
    RUN(test_attention_odd_sizes_gradcheck);
    RUN(test_attention_long_gradcheck);
    RUN(test_attention_sharp_gradcheck);
    RUN(test_attention_is_causal);
    RUN(test_shape_errors);
    RUN(test_index_errors);
    RUN(test_no_grad_saves_nothing);
    RUN(test_backward_accumulates);
    RUN(test_meta_shapes_only);
    RUN(test_blas_threads_restored);
    RUN(test_threads_attention);
    RUN(test_threads_layernorm);
    RUN(test_threads_embedding);
    RUN(test_threads_other_ops);
    return tl_done();
}
