/*
 * test_ops_llama.c — the Llama family's ops against plain double references
 * written from the formulas: RMSNorm, rotary embeddings (frequencies with
 * default, linear and llama3 scaling; the table; the rotation), SwiGLU, and
 * grouped-query causal attention.
 *
 * Each op is gradchecked at every input (tests/gradcheck.h: forward against
 * the reference, gradients against central differences of it) at ordinary
 * inputs and where the op has a hard regime at extreme ones. Then: float-
 * level accuracy of forward values, closed forms (RoPE at position 0, RMSNorm
 * of a zero row), equivalences (grouped-query attention with NKV = NH is
 * ag_attention to the bit, and equals attention on repeated kv heads as HF's
 * repeat_kv does), causality, error messages, the first-write gradient rule,
 * accumulation, the no_grad and shape-only modes, and bit-identical results
 * for 1 and 2 OpenMP threads.
 *
 * Letters: B batch, T time, NH query heads, NKV kv heads, G = NH / NKV,
 * HD head dim, H2 = HD / 2, R rows, C channels, F the MLP's width.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "core/ops.h"

#define CHECK_ERR(ctx, expr, want)                                                                 \
    do {                                                                                           \
        tensor_ctx_clear_error(ctx);                                                               \
        CHECK((expr) == NULL);                                                                     \
        CHECKF(strcmp(tensor_ctx_error(ctx), want) == 0, "error \"%s\", expected \"%s\"",          \
               tensor_ctx_error(ctx), want);                                                       \
    } while (0)

#define ULP 0x1p-24 /* float's unit roundoff: half the gap above 1 */

/* ---- references (double, from the formulas) ----------------------------- */

typedef struct NormArg {
    int R, C;
    float eps;
} NormArg;

/* LlamaRMSNorm: x / sqrt(mean(x^2) + eps) * w */
static void ref_rmsnorm(const double *const *in, double *out, const void *arg)
{
    const NormArg *a = arg;
    for (int r = 0; r < a->R; r++) {
        const double *x = in[0] + (int64_t)r * a->C;
        double ms = 0;
        for (int c = 0; c < a->C; c++)
            ms += x[c] * x[c] / a->C;
        for (int c = 0; c < a->C; c++)
            out[(int64_t)r * a->C + c] = x[c] / sqrt(ms + a->eps) * in[1][c];
    }
}

static Tensor *op_rmsnorm(TensorCtx *ctx, Tensor **in, const void *arg)
{
    return ag_rmsnorm(ctx, in[0], in[1], ((const NormArg *)arg)->eps);
}

/* HF's inverse frequencies, from the formulas in double:
 * _compute_default_rope_parameters: inv[i] = 1 / theta^(2i / HD), i < HD / 2;
 * _compute_linear_scaling_rope_parameters: inv[i] / factor;
 * _compute_llama3_parameters: with wavelen = 2 pi / inv[i], lo = old /
 *   low_freq_factor, hi = old / high_freq_factor (old =
 *   original_max_position_embeddings): inv[i] where wavelen < hi, inv[i] /
 *   factor where wavelen > lo, and between them (1 - s) inv[i] / factor +
 *   s inv[i], s = (old / wavelen - low_freq_factor) / (high_freq_factor -
 *   low_freq_factor). */
static double ref_inv_freq(const RopeConfig *c, int i)
{
    double inv = 1.0 / pow(c->theta, 2.0 * i / c->head_dim);
    if (c->scaling == ROPE_SCALING_LINEAR)
        return inv / c->factor;
    if (c->scaling != ROPE_SCALING_LLAMA3)
        return inv;
    double old = c->original_max_position_embeddings, wavelen = 2 * M_PI / inv;
    if (wavelen < old / c->high_freq_factor)
        return inv;
    if (wavelen > old / c->low_freq_factor)
        return inv / c->factor;
    double s = (old / wavelen - c->low_freq_factor) / (c->high_freq_factor - c->low_freq_factor);
    return (1 - s) * inv / c->factor + s * inv;
}

typedef struct RopeArg {
    int B, T, NH, HD, pos0, n_rot, n_pos;
    RopeConfig cfg;
} RopeArg;

/* apply_rotary_pos_emb: x cos + rotate_half(x) sin, rotate_half(x) = [-x2, x1]
 * on the halves of HD, angle (pos0 + t) inv_freq[i] for both halves' entry i;
 * heads from n_rot on unchanged */
static void ref_rope(const double *const *in, double *out, const void *arg)
{
    const RopeArg *a = arg;
    int H2 = a->HD / 2;
    for (int b = 0; b < a->B; b++)
        for (int t = 0; t < a->T; t++)
            for (int h = 0; h < a->NH; h++) {
                int64_t o = (((int64_t)b * a->T + t) * a->NH + h) * a->HD;
                const double *x = in[0] + o;
                for (int i = 0; i < H2; i++) {
                    double ang = (a->pos0 + t) * ref_inv_freq(&a->cfg, i);
                    double c = h < a->n_rot ? cos(ang) : 1, s = h < a->n_rot ? sin(ang) : 0;
                    out[o + i] = x[i] * c + (-x[i + H2]) * s;
                    out[o + i + H2] = x[i + H2] * c + x[i] * s;
                }
            }
}

static Tensor *op_rope(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const RopeArg *a = arg;
    Tensor *table = ag_rope_table(ctx, &a->cfg, a->n_pos);
    return ag_rope(ctx, in[0], table, a->pos0, a->n_rot);
}

typedef struct SwigluArg {
    int R, F;
} SwigluArg;

static double ref_silu(double g) { return g / (1 + exp(-g)); }

/* LlamaMLP's act_fn(gate) * up with act_fn = silu, on rows [gate | up] */
static void ref_swiglu(const double *const *in, double *out, const void *arg)
{
    const SwigluArg *a = arg;
    for (int r = 0; r < a->R; r++)
        for (int j = 0; j < a->F; j++) {
            const double *row = in[0] + (int64_t)r * 2 * a->F;
            out[(int64_t)r * a->F + j] = ref_silu(row[j]) * row[a->F + j];
        }
}

static Tensor *op_swiglu(TensorCtx *ctx, Tensor **in, const void *arg)
{
    (void)arg;
    return ag_swiglu(ctx, in[0]);
}

typedef struct GqaArg {
    int B, T, NH, NKV, HD;
} GqaArg;

/* per query head h, kv head g = h / (NH / NKV): softmax over keys u <= t of
 * q_t . k_u / sqrt(HD), times v; qkv rows [NH q | NKV k | NKV v] heads */
static void ref_gqa(const double *const *in, double *out, const void *arg)
{
    const GqaArg *a = arg;
    int W = (a->NH + 2 * a->NKV) * a->HD, G = a->NH / a->NKV;
    double *w = malloc((size_t)a->T * sizeof *w);
    for (int b = 0; b < a->B; b++)
        for (int h = 0; h < a->NH; h++)
            for (int t = 0; t < a->T; t++) {
                const double *q = in[0] + ((int64_t)b * a->T + t) * W + h * a->HD;
                int64_t kcol = (int64_t)(a->NH + h / G) * a->HD, vcol = kcol + a->NKV * a->HD;
                double mx = -INFINITY, s = 0;
                for (int u = 0; u <= t; u++) {
                    const double *k = in[0] + ((int64_t)b * a->T + u) * W + kcol;
                    w[u] = 0;
                    for (int i = 0; i < a->HD; i++)
                        w[u] += q[i] * k[i] / sqrt((double)a->HD);
                    mx = w[u] > mx ? w[u] : mx;
                }
                for (int u = 0; u <= t; u++)
                    s += (w[u] = exp(w[u] - mx));
                double *o = out + ((int64_t)b * a->T + t) * a->NH * a->HD + h * a->HD;
                for (int i = 0; i < a->HD; i++) {
                    o[i] = 0;
                    for (int u = 0; u <= t; u++)
                        o[i] += w[u] / s * in[0][((int64_t)b * a->T + u) * W + vcol + i];
                }
            }
    free(w);
}

static Tensor *op_gqa(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const GqaArg *a = arg;
    return ag_gqa_attention(ctx, in[0], a->NH, a->NKV, a->HD);
}

/* ---- rmsnorm ------------------------------------------------------------ */

static void gradcheck_rmsnorm(int R, int C, float eps, double lo, double hi, double rtol,
                              double atol)
{
    NormArg arg = {R, C, eps};
    int sx[2] = {R, C}, sw[1] = {C};
    GcSpec s = {.name = "rmsnorm",
                .op = op_rmsnorm,
                .ref = ref_rmsnorm,
                .arg = &arg,
                .n_in = 2,
                .rtol = rtol,
                .atol = atol};
    s.in[0] = gc_input(2, sx, lo, hi, 201);
    s.in[1] = gc_input(1, sw, 0.5, 1.5, 202);
    gradcheck_free(&s);
}

static void test_rmsnorm_gradcheck(void) { gradcheck_rmsnorm(6, 9, 1e-6f, -2, 2, 0, 0); }

/* C = 1 (the row is its own RMS: y = w sign(x) to eps) and one row */
static void test_rmsnorm_one_channel_gradcheck(void)
{
    gradcheck_rmsnorm(5, 1, 1e-5f, -2, 2, 0, 0);
    gradcheck_rmsnorm(1, 7, 1e-5f, -2, 2, 0, 0);
}

/* Inputs of size 1e3: y stays O(1) but d/dx shrinks to O(1e-3), so the
 * default atol (1e-4) would accept anything; float keeps the computation to
 * ~1e-6 relative, so rtol 1e-5 with a negligible atol. */
static void test_rmsnorm_large_scale_gradcheck(void)
{
    gradcheck_rmsnorm(6, 9, 1e-6f, -1e3, 1e3, 1e-5, 1e-9);
}

/* |x| up to 1e20: x^2 overflows float (HF's float32 sum of squares is inf
 * there and its row comes out 0); the sum here runs in double. d/dx is
 * O(1e-20), so atol is below that. */
static void test_rmsnorm_huge_values_gradcheck(void)
{
    gradcheck_rmsnorm(4, 9, 1e-6f, -1e20, 1e20, 1e-5, 1e-30);
}

/* eps where it dominates the mean of squares (x ~ 1e-3, eps 1e-2) and where
 * it is zero */
static void test_rmsnorm_eps_gradcheck(void)
{
    gradcheck_rmsnorm(6, 9, 1e-2f, -1e-3, 1e-3, 1e-5, 1e-9);
    gradcheck_rmsnorm(6, 9, 0.0f, -2, 2, 0, 0);
}

/* A zero row (closed form): y = 0, and since xhat = 0 there, dx = g w /
 * sqrt(eps) and dw = 0. */
static void test_rmsnorm_zero_row(void)
{
    enum { C = 8 };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = gc_tensor(ctx, 2, (int[]){1, C}, 0, 0, 1, true);
    Tensor *w = gc_tensor(ctx, 1, (int[]){C}, 0.5, 1.5, 2, true);
    Tensor *g = gc_tensor(ctx, 2, (int[]){1, C}, -1, 1, 3, false);
    Tensor *y = ag_rmsnorm(ctx, x, w, 1e-4f);
    CHECK(y && ag_backward(ctx, y, g->data) == 0);
    for (int c = 0; y && c < C; c++) {
        CHECK(y->data[c] == 0.0f && w->grad[c] == 0.0f);
        double want = g->data[c] * w->data[c] / sqrt((double)1e-4f);
        CHECK_NEAR(x->grad[c], want, 2 * ULP * fabs(want));
    }
    tensor_ctx_free(ctx);
}

/* Float-level accuracy, which gradcheck's 1e-3 cannot see: rstd rounds once
 * and y = w (x rstd) twice, so y is within 3 u (u = 2^-24) relative of w x /
 * rms (the double sum's own error is ~1e-16). */
static void test_rmsnorm_accuracy(void)
{
    enum { R = 64, C = 200 };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = gc_tensor(ctx, 2, (int[]){R, C}, -3, 3, 211, false);
    Tensor *w = gc_tensor(ctx, 1, (int[]){C}, -2, 2, 212, false);
    Tensor *y = ag_rmsnorm(ctx, x, w, 1e-5f);
    CHECK(y != NULL);
    int bad = !y;
    for (int r = 0; r < R && !bad; r++) {
        const float *xr = x->data + r * C;
        double ms = 0;
        for (int c = 0; c < C; c++)
            ms += (double)xr[c] * xr[c];
        double rstd = 1 / sqrt(ms / C + (double)1e-5f);
        for (int c = 0; c < C && !bad; c++) {
            double want = w->data[c] * (xr[c] * rstd);
            bad = !(fabs(y->data[r * C + c] - want) <= (3 * ULP + 1e-15) * fabs(want));
            CHECKF(!bad, "[%d, %d] = %.9g, want %.9g", r, c, y->data[r * C + c], want);
        }
    }
    tensor_ctx_free(ctx);
}

/* ops_llama.c's RMSNorm row, written out one lane at a time in this
 * baseline (SSE2) build: 16 running double sums of squares, entry c in lane
 * c % 16, added in lane order, then rstd and w (x rstd) in float. The kernel
 * is cloned for AVX2 and AVX-512 and must give these bits on any CPU. C =
 * 200 leaves a tail of 8. The first rows hold 1e20 and -1e19, whose squares
 * overflow float: the sum must run in double. */
static void test_rmsnorm_clones_match_lane_sums(void)
{
    enum { R = 32, C = 200 };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = gc_tensor(ctx, 2, (int[]){R, C}, -2, 2, 221, false);
    Tensor *w = gc_tensor(ctx, 1, (int[]){C}, -2, 2, 222, false);
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < C; c++)
            x->data[r * C + c] = c == r ? 1e20f : c == r + 16 + 8 * r ? -1e19f : 1.0f;
    Tensor *y = ag_rmsnorm(ctx, x, w, 1e-5f);
    CHECK(y != NULL);
    int bad = !y;
    for (int r = 0; r < R && !bad; r++) {
        const float *xr = x->data + r * C;
        double lane[16] = {0}, ss = 0;
        for (int c = 0; c < C; c++)
            lane[c % 16] += (double)xr[c] * xr[c];
        for (int l = 0; l < 16; l++)
            ss += lane[l];
        float rstd = (float)(1.0 / sqrt(ss / C + 1e-5f));
        for (int c = 0; c < C && !bad; c++) {
            float want = w->data[c] * (xr[c] * rstd);
            bad = memcmp(&want, &y->data[r * C + c], sizeof want) != 0;
            CHECKF(!bad, "row %d col %d: %a, lane sums give %a", r, c, y->data[r * C + c], want);
        }
    }
    tensor_ctx_free(ctx);
}

/* ---- rope: frequencies and table ---------------------------------------- */

static const RopeConfig LLAMA2 = {.head_dim = 128, .theta = 10000};
/* Llama 3.1 8B's config.json */
static const RopeConfig LLAMA31 = {.head_dim = 128,
                                   .theta = 500000,
                                   .scaling = ROPE_SCALING_LLAMA3,
                                   .factor = 8,
                                   .low_freq_factor = 1,
                                   .high_freq_factor = 4,
                                   .original_max_position_embeddings = 8192};

/* |got - want| for one inv_freq entry within tol, else a message */
static bool inv_close(const char *what, int i, double got, double want, double tol)
{
    if (fabs(got - want) <= tol)
        return true;
    CHECKF(0, "%s: inv_freq[%d] = %.9g, formula %.9g (tol %.3g)", what, i, got, want, tol);
    return false;
}

/* The default frequencies against 1 / theta^(2i / HD). ops_llama.c follows
 * HF's float32 steps: the exponent 2i / HD rounded to float (exact when HD
 * is a power of two), which moves theta^e by ln(theta) times its error, then
 * pow and the reciprocal rounded (an ulp between them); linear scaling
 * rounds once more. */
static void check_inv_freq(const char *what, const RopeConfig *cfg)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *inv = ag_rope_inv_freq(ctx, cfg);
    CHECKF(inv && inv->ndim == 1 && inv->shape[0] == cfg->head_dim / 2, "%s: %s", what,
           tensor_ctx_error(ctx));
    for (int i = 0; inv && i < cfg->head_dim / 2; i++) {
        double want = ref_inv_freq(cfg, i);
        double e_err =
            fabs((double)((float)(2 * i) / (float)cfg->head_dim) - 2.0 * i / cfg->head_dim);
        double tol = (3 * ULP + log(cfg->theta) * e_err) * want;
        if (!inv_close(what, i, inv->data[i], want, tol))
            break;
    }
    if (inv && cfg->scaling == ROPE_SCALING_NONE)
        CHECK(inv->data[0] == 1.0f); /* theta^0 */
    tensor_ctx_free(ctx);
}

static void test_rope_inv_freq_default(void)
{
    check_inv_freq("llama 2", &LLAMA2);
    check_inv_freq("theta 500000, HD 64", &(RopeConfig){.head_dim = 64, .theta = 500000});
    check_inv_freq("HD 96 (exponents not exact in float)",
                   &(RopeConfig){.head_dim = 96, .theta = 10000});
    check_inv_freq("HD 2", &(RopeConfig){.head_dim = 2, .theta = 10000});
}

static void test_rope_inv_freq_linear(void)
{
    check_inv_freq("linear 4", &(RopeConfig){.head_dim = 128,
                                             .theta = 10000,
                                             .scaling = ROPE_SCALING_LINEAR,
                                             .factor = 4});
    check_inv_freq("linear 2.5", &(RopeConfig){.head_dim = 64,
                                               .theta = 10000,
                                               .scaling = ROPE_SCALING_LINEAR,
                                               .factor = 2.5});
}

/* llama3 scaling against the piecewise formula, with each regime present.
 * Outside the medium band the value is the default's or that over factor:
 * a few roundings. In the band, s = (old / wavelen - low) / (high - low)
 * carries ~6 float roundings of old / wavelen (< high) and scales the
 * difference inv (1 - 1 / factor): that times 8 ulp of high / (high - low),
 * plus the few roundings of the result. */
static void check_llama3(const char *what, const RopeConfig *cfg)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *inv = ag_rope_inv_freq(ctx, cfg);
    CHECKF(inv != NULL, "%s: %s", what, tensor_ctx_error(ctx));
    int seen[3] = {0, 0, 0}; /* high, medium, low frequencies */
    double old = cfg->original_max_position_embeddings;
    for (int i = 0; inv && i < cfg->head_dim / 2; i++) {
        double base = 1.0 / pow(cfg->theta, 2.0 * i / cfg->head_dim), wl = 2 * M_PI / base;
        int band = wl < old / cfg->high_freq_factor ? 0 : wl > old / cfg->low_freq_factor ? 2 : 1;
        seen[band]++;
        double want = ref_inv_freq(cfg, i), tol = 4 * ULP * want;
        if (band == 1)
            tol += 8 * ULP * cfg->high_freq_factor /
                   (cfg->high_freq_factor - cfg->low_freq_factor) * base * (1 - 1 / cfg->factor);
        if (!inv_close(what, i, inv->data[i], want, tol))
            break;
    }
    CHECKF(seen[0] && seen[1] && seen[2], "%s: bands %d %d %d", what, seen[0], seen[1], seen[2]);
    tensor_ctx_free(ctx);
}

static void test_rope_inv_freq_llama3(void)
{
    check_llama3("llama 3.1", &LLAMA31);
    RopeConfig l32 = LLAMA31; /* Llama 3.2 1B: factor 32, head dim 64 */
    l32.factor = 32;
    l32.head_dim = 64;
    check_llama3("llama 3.2", &l32);
}

/* The table against cos and sin, in double, of HF's float32 angle (pos
 * times inv_freq, rounded to float): within half an ulp of values <= 1.
 * And positions past 4096: the float angle there is off the double one by
 * up to ~2.4e-4, which a table taking the angle in double would show. */
static void test_rope_table_values(void)
{
    enum { P = 5000 };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *table = ag_rope_table(ctx, &LLAMA31, P), *inv = ag_rope_inv_freq(ctx, &LLAMA31);
    CHECK(table && inv && table->ndim == 3 && table->shape[0] == 2 && table->shape[1] == P &&
          table->shape[2] == 64);
    int bad = !table || !inv;
    for (int p = 0; p < P && !bad; p += 7)
        for (int i = 0; i < 64 && !bad; i++) {
            float a = (float)p * inv->data[i];
            double c = table->data[(int64_t)p * 64 + i], s = table->data[((int64_t)P + p) * 64 + i];
            bad = !(fabs(c - cos(a)) <= ULP) || !(fabs(s - sin(a)) <= ULP);
            CHECKF(!bad, "p %d i %d: cos %.9g sin %.9g, want %.9g %.9g", p, i, c, s, cos(a),
                   sin(a));
        }
    tensor_ctx_free(ctx);
}

static void test_rope_config_errors(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    CHECK_ERR(
        ctx, ag_rope_inv_freq(ctx, &(RopeConfig){.head_dim = 7, .theta = 10000}),
        "rope: head_dim must be even and > 0 (head_dim 7, theta 10000, scaling none, factor 0)");
    CHECK_ERR(ctx, ag_rope_inv_freq(ctx, &(RopeConfig){.head_dim = 8, .theta = 1e39}),
              "rope: theta must be finite and > 0 (head_dim 8, theta 1e+39, scaling none, "
              "factor 0)"); /* past float, where HF's steps run */
    CHECK_ERR(ctx, ag_rope_table(ctx, &(RopeConfig){.head_dim = 8, .theta = -1}, 4),
              "rope: theta must be finite and > 0 (head_dim 8, theta -1, scaling none, factor 0)");
    CHECK_ERR(
        ctx,
        ag_rope_inv_freq(
            ctx, &(RopeConfig){.head_dim = 8, .theta = 10000, .scaling = ROPE_SCALING_LINEAR}),
        "rope: factor must be finite and > 0 (head_dim 8, theta 10000, scaling linear, factor 0)");
    RopeConfig eq = LLAMA31;
    eq.high_freq_factor = eq.low_freq_factor; /* HF's smooth factor would divide by 0 */
    CHECK_ERR(ctx, ag_rope_inv_freq(ctx, &eq),
              "rope: llama3 needs 0 < low_freq_factor < high_freq_factor, finite (head_dim 128, "
              "theta 500000, scaling llama3, factor 8)");
    RopeConfig no_old = LLAMA31;
    no_old.original_max_position_embeddings = 0;
    CHECK_ERR(ctx, ag_rope_inv_freq(ctx, &no_old),
              "rope: llama3 needs original_max_position_embeddings > 0 (head_dim 128, theta "
              "500000, scaling llama3, factor 8)");
    CHECK_ERR(ctx, ag_rope_inv_freq(ctx, &(RopeConfig){.head_dim = 8, .theta = 1, .scaling = 7}),
              "rope: unknown scaling (head_dim 8, theta 1, scaling unknown, factor 0)");
    CHECK_ERR(ctx, ag_rope_table(ctx, &LLAMA2, -1),
              "rope: a table of -1 positions, expected 0 to 16777216");
    CHECK_ERR(ctx, ag_rope_inv_freq(ctx, NULL),
              "rope: no config given (head_dim 0, theta 0, scaling none, factor 0)");
    tensor_ctx_free(ctx);
}

/* ---- rope: the rotation ------------------------------------------------- */

static void gradcheck_rope(RopeArg arg, uint64_t seed)
{
    int sx[4] = {arg.B, arg.T, arg.NH, arg.HD};
    GcSpec s = {.name = "rope", .op = op_rope, .ref = ref_rope, .arg = &arg, .n_in = 1};
    s.in[0] = gc_input(4, sx, -2, 2, seed);
    gradcheck_free(&s);
}

/* two of three heads rotated, from position 3 of a 16-position table */
static void test_rope_gradcheck(void)
{
    RopeArg a = {.B = 2, .T = 5, .NH = 3, .HD = 8, .pos0 = 3, .n_rot = 2, .n_pos = 16};
    a.cfg = (RopeConfig){.head_dim = 8, .theta = 10000};
    gradcheck_rope(a, 231);
}

/* the scaled frequencies through the rotation; positions up to 40, where
 * the low frequencies of HD = 16 have turned a little */
static void test_rope_scaled_gradcheck(void)
{
    RopeArg a = {.B = 1, .T = 4, .NH = 2, .HD = 16, .pos0 = 36, .n_rot = 2, .n_pos = 40};
    a.cfg =
        (RopeConfig){.head_dim = 16, .theta = 10000, .scaling = ROPE_SCALING_LINEAR, .factor = 4};
    gradcheck_rope(a, 232);
    a.cfg = (RopeConfig){.head_dim = 16,
                         .theta = 10000,
                         .scaling = ROPE_SCALING_LLAMA3,
                         .factor = 8,
                         .low_freq_factor = 1,
                         .high_freq_factor = 4,
                         .original_max_position_embeddings = 64};
    gradcheck_rope(a, 233);
}

/* T = 1 at the table's last position (a KV-cache step), HD = 2, and no
 * head rotated (a copy) */
static void test_rope_edges_gradcheck(void)
{
    RopeArg a = {.B = 3, .T = 1, .NH = 2, .HD = 4, .pos0 = 9, .n_rot = 2, .n_pos = 10};
    a.cfg = (RopeConfig){.head_dim = 4, .theta = 10000};
    gradcheck_rope(a, 234);
    RopeArg b = {.B = 1, .T = 3, .NH = 1, .HD = 2, .pos0 = 0, .n_rot = 1, .n_pos = 3};
    b.cfg = (RopeConfig){.head_dim = 2, .theta = 10000};
    gradcheck_rope(b, 235);
    RopeArg c = {.B = 1, .T = 3, .NH = 2, .HD = 4, .pos0 = 0, .n_rot = 0, .n_pos = 3};
    c.cfg = (RopeConfig){.head_dim = 4, .theta = 10000};
    gradcheck_rope(c, 236);
}

/* Float-level accuracy: with the table's cos and sin, each output is x1 c -
 * x2 s in float, three roundings of terms up to m = max(|x1 c|, |x2 s|) and
 * a result up to 2m: within 4 u m (u = 2^-24) of the exact. At position 0
 * (cos 1, sin 0) the rotation is the identity, to the bit. */
static void test_rope_accuracy(void)
{
    enum { T = 50, NH = 4, HD = 128, H2 = HD / 2 };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *table = ag_rope_table(ctx, &LLAMA31, 100);
    Tensor *x = gc_tensor(ctx, 4, (int[]){1, T, NH, HD}, -3, 3, 241, false);
    Tensor *y = ag_rope(ctx, x, table, 40, NH);
    Tensor *y0 = ag_rope(ctx, x, table, 0, NH);
    CHECK(y && y0);
    int bad = !y || !y0;
    CHECK(!bad && memcmp(y0->data, x->data, (size_t)NH * HD * sizeof(float)) == 0);
    for (int t = 0; t < T && !bad; t++)
        for (int h = 0; h < NH && !bad; h++)
            for (int i = 0; i < H2 && !bad; i++) {
                int64_t o = ((int64_t)t * NH + h) * HD;
                double c = table->data[(int64_t)(40 + t) * H2 + i];
                double s = table->data[(int64_t)(100 + 40 + t) * H2 + i];
                double x1 = x->data[o + i], x2 = x->data[o + i + H2];
                double w1 = x1 * c - x2 * s, w2 = x2 * c + x1 * s;
                double t1 = 4 * ULP * fmax(fabs(x1 * c), fabs(x2 * s));
                double t2 = 4 * ULP * fmax(fabs(x2 * c), fabs(x1 * s));
                bad = !(fabs(y->data[o + i] - w1) <= t1) || !(fabs(y->data[o + i + H2] - w2) <= t2);
                CHECKF(!bad, "t %d h %d i %d", t, h, i);
            }
    tensor_ctx_free(ctx);
}

/* One call on a fused qkv seen as (B, T, NH + 2 NKV, HD) with n_rot = NH +
 * NKV gives q and k what separate calls give them, and v unchanged, to the
 * bit, forward and backward. */
static void test_rope_fused_qkv(void)
{
    enum { B = 2, T = 6, NH = 4, NKV = 2, HD = 8, NT = NH + 2 * NKV };
    TensorCtx *ctx = tensor_ctx_new(0);
    RopeConfig cfg = {.head_dim = HD, .theta = 10000};
    Tensor *table = ag_rope_table(ctx, &cfg, T);
    Tensor *qkv = gc_tensor(ctx, 4, (int[]){B, T, NT, HD}, -2, 2, 251, true);
    Tensor *fused = ag_rope(ctx, qkv, table, 0, NH + NKV);
    Tensor *g = gc_tensor(ctx, 4, (int[]){B, T, NT, HD}, -1, 1, 252, false);
    CHECK(fused && ag_backward(ctx, fused, g->data) == 0);
    /* the same heads one by one: a (B, T, 1, HD) slice per head */
    for (int h = 0; fused && h < NT; h++) {
        Tensor *xh = ag_slice(ctx, ag_detach(ctx, qkv), 2, h, 1);
        Tensor *gh = ag_slice(ctx, g, 2, h, 1);
        Tensor *xl = tensor_copy(ctx, xh);
        tensor_requires_grad(xl);
        Tensor *yh = ag_rope(ctx, xl, table, 0, h < NH + NKV ? 1 : 0);
        CHECK(yh && ag_backward(ctx, yh, gh->data) == 0);
        for (int64_t r = 0; yh && r < (int64_t)B * T; r++) {
            size_t n = HD * sizeof(float);
            CHECKF(memcmp(fused->data + (r * NT + h) * HD, yh->data + r * HD, n) == 0 &&
                       memcmp(qkv->grad + (r * NT + h) * HD, xl->grad + r * HD, n) == 0,
                   "head %d row %lld", h, (long long)r);
        }
        if (h >= NH + NKV)
            CHECK(yh && memcmp(yh->data, xh->data, (size_t)yh->size * sizeof(float)) == 0);
    }
    tensor_ctx_free(ctx);
}

static void test_rope_errors(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    RopeConfig cfg = {.head_dim = 8, .theta = 10000};
    Tensor *table = ag_rope_table(ctx, &cfg, 6);
    Tensor *x = tensor_new(ctx, 4, (int[]){2, 4, 3, 8});
    CHECK_ERR(ctx, ag_rope(ctx, tensor_new(ctx, 3, (int[]){2, 4, 24}), table, 0, 3),
              "rope: x must be (B, T, NH, HD) with HD even, got (2, 4, 24)");
    CHECK_ERR(ctx, ag_rope(ctx, tensor_new(ctx, 4, (int[]){2, 4, 3, 6}), table, 0, 3),
              "rope: table (2, 6, 4) does not fit x (2, 4, 3, 6): expected (2, P, 3)");
    CHECK_ERR(ctx, ag_rope(ctx, x, table, 0, 4),
              "rope: 4 heads to rotate of x (2, 4, 3, 8), expected 0 to 3");
    CHECK_ERR(ctx, ag_rope(ctx, x, table, 3, 3),
              "rope: positions 3 to 6 of x (2, 4, 3, 8) are not all in table (2, 6, 4)");
    CHECK_ERR(ctx, ag_rope(ctx, x, table, -1, 3),
              "rope: positions -1 to 2 of x (2, 4, 3, 8) are not all in table (2, 6, 4)");
    Tensor *learned = tensor_copy(ctx, table);
    tensor_requires_grad(learned);
    CHECK_ERR(ctx, ag_rope(ctx, x, learned, 0, 3),
              "rope: the table takes no gradient (make it with ag_rope_table)");
    CHECK(ag_rope(ctx, x, table, 2, 3) != NULL); /* positions 2..5: the table's end */
    tensor_ctx_free(ctx);
}

/* ---- swiglu ------------------------------------------------------------- */

static void gradcheck_swiglu(double range, uint64_t seed, double rtol, double atol)
{
    SwigluArg arg = {6, 10};
    int sg[3] = {2, 3, 20};
    GcSpec s = {.name = "swiglu",
                .op = op_swiglu,
                .ref = ref_swiglu,
                .arg = &arg,
                .n_in = 1,
                .rtol = rtol,
                .atol = atol};
    s.in[0] = gc_input(3, sg, -range, range, seed);
    gradcheck_free(&s);
}

static void test_swiglu_gradcheck(void) { gradcheck_swiglu(4, 261, 0, 0); }

/* gates up to |100|: past +-87.34 the exponential is clamped and the far
 * branches (silu 0 below, gradient 1 above) take over; values reach 1e4 */
static void test_swiglu_extreme_gradcheck(void) { gradcheck_swiglu(100, 262, 1e-5, 1e-6); }

/* F = 1, one row */
static void test_swiglu_small_gradcheck(void)
{
    SwigluArg arg = {1, 1};
    GcSpec s = {.name = "swiglu", .op = op_swiglu, .ref = ref_swiglu, .arg = &arg, .n_in = 1};
    s.in[0] = gc_input(1, (int[]){2}, -2, 2, 263);
    gradcheck_free(&s);
}

/* Forward within 5 ulp of g / (1 + e^-g) u in double: the exponential is
 * within 1 ulp, and 1 + e, the reciprocal and two products round once each.
 * (x < -87.34 gives exactly 0, below the 1e-36 absolute floor.) */
static void test_swiglu_accuracy(void)
{
    enum { R = 16, F = 512 };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *gu = gc_tensor(ctx, 2, (int[]){R, 2 * F}, -30, 30, 271, false);
    Tensor *y = ag_swiglu(ctx, gu);
    CHECK(y != NULL);
    for (int r = 0; y && r < R; r++)
        for (int j = 0; j < F; j++) {
            double g = gu->data[r * 2 * F + j], u = gu->data[r * 2 * F + F + j];
            double want = ref_silu(g) * u, got = y->data[r * F + j];
            if (!(fabs(got - want) <= 5 * ULP * fabs(want) + 1e-36)) {
                CHECKF(0, "[%d, %d]: %.9g, want %.9g (gate %.9g)", r, j, got, want, g);
                r = R;
                break;
            }
        }
    tensor_ctx_free(ctx);
}

/* Infinite and NaN gates: silu(-inf) = 0 (its limit; torch's x / (1 +
 * exp(-x)) gives NaN there), silu(+inf) = +inf, NaN stays NaN; the gate's
 * gradient is 0 at -inf and up at +inf (silu' -> 1). */
static void test_swiglu_infinities(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    float v[6] = {-INFINITY, INFINITY, NAN, 2.0f, 3.0f, 4.0f};
    Tensor *gu = tensor_from_data(ctx, 1, (int[]){6}, v);
    tensor_requires_grad(gu);
    Tensor *y = ag_swiglu(ctx, gu);
    float seed[3] = {1, 1, 1};
    CHECK(y && ag_backward(ctx, y, seed) == 0);
    if (y) {
        CHECK(y->data[0] == 0.0f && y->data[1] == INFINITY && isnan(y->data[2]));
        CHECK(gu->grad[0] == 0.0f && gu->grad[1] == 3.0f && isnan(gu->grad[2]));
        CHECK(gu->grad[3] == 0.0f && gu->grad[4] == INFINITY && isnan(gu->grad[5]));
    }
    tensor_ctx_free(ctx);
}

/* ---- grouped-query attention -------------------------------------------- */

static void gradcheck_gqa(GqaArg arg, double range, uint64_t seed)
{
    int sq[3] = {arg.B, arg.T, (arg.NH + 2 * arg.NKV) * arg.HD};
    GcSpec s = {.name = "gqa_attention", .op = op_gqa, .ref = ref_gqa, .arg = &arg, .n_in = 1};
    s.in[0] = gc_input(3, sq, -range, range, seed);
    gradcheck_free(&s);
}

/* G = NH / NKV of 1, 2 and 4; head dims 3, 5 and 6 are none of them a
 * model width over its heads */
static void test_gqa_gradcheck(void)
{
    gradcheck_gqa((GqaArg){.B = 2, .T = 5, .NH = 4, .NKV = 4, .HD = 3}, 1, 281);
    gradcheck_gqa((GqaArg){.B = 2, .T = 5, .NH = 4, .NKV = 2, .HD = 5}, 1, 282);
    gradcheck_gqa((GqaArg){.B = 1, .T = 6, .NH = 4, .NKV = 1, .HD = 6}, 1, 283);
}

/* T = 1; T = 37, past two causal blocks of query rows; sharp scores */
static void test_gqa_edges_gradcheck(void)
{
    gradcheck_gqa((GqaArg){.B = 3, .T = 1, .NH = 2, .NKV = 1, .HD = 4}, 1, 284);
    gradcheck_gqa((GqaArg){.B = 1, .T = 37, .NH = 2, .NKV = 1, .HD = 2}, 1, 285);
    gradcheck_gqa((GqaArg){.B = 1, .T = 6, .NH = 6, .NKV = 3, .HD = 4}, 5, 286);
}

/* NKV = NH and HD = C / NH is ag_attention: the same bits forward and in
 * the gradient (one kernel serves both; GPT-2's path must not move). */
static void test_gqa_is_attention_when_ungrouped(void)
{
    enum { B = 2, T = 40, C = 48, NH = 6 };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *a = gc_tensor(ctx, 3, (int[]){B, T, 3 * C}, -2, 2, 291, true);
    Tensor *b = tensor_copy(ctx, a);
    tensor_requires_grad(b);
    Tensor *ya = ag_attention(ctx, a, NH), *yb = ag_gqa_attention(ctx, b, NH, NH, C / NH);
    Tensor *g = gc_tensor(ctx, 3, (int[]){B, T, C}, -1, 1, 292, false);
    CHECK(ya && yb && ag_backward(ctx, ya, g->data) == 0 && ag_backward(ctx, yb, g->data) == 0);
    size_t n = (size_t)B * T * C * sizeof(float);
    CHECK(ya && yb && memcmp(ya->data, yb->data, n) == 0);
    CHECK(ya && yb && memcmp(a->grad, b->grad, 3 * n) == 0);
    tensor_ctx_free(ctx);
}

/* HF's repeat_kv: GQA equals multi-head attention on qkv whose kv heads are
 * repeated G times (query head h with copy h of kv head h / G). Forward to
 * the bit (each query head runs the same kernel on the same numbers); the
 * gradient of a shared kv head is the sum of its copies' gradients, added
 * in another order, so to float rounding. */
static void test_gqa_is_attention_on_repeated_kv(void)
{
    enum { B = 2, T = 20, NH = 4, NKV = 2, HD = 8, G = NH / NKV };
    enum { W = (NH + 2 * NKV) * HD, C = NH * HD };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *qkv = gc_tensor(ctx, 3, (int[]){B, T, W}, -2, 2, 301, true);
    Tensor *rep = tensor_new(ctx, 3, (int[]){B, T, 3 * C});
    tensor_requires_grad(rep);
    for (int64_t r = 0; r < (int64_t)B * T; r++)
        for (int h = 0; h < NH; h++)
            for (int part = 0; part < 3; part++) {
                int64_t src = part == 0 ? h * HD : (NH + (part - 1) * NKV + h / G) * HD;
                memcpy(rep->data + r * 3 * C + part * C + h * HD, qkv->data + r * W + src,
                       HD * sizeof(float));
            }
    Tensor *yg = ag_gqa_attention(ctx, qkv, NH, NKV, HD), *ym = ag_attention(ctx, rep, NH);
    Tensor *g = gc_tensor(ctx, 3, (int[]){B, T, C}, -1, 1, 302, false);
    CHECK(yg && ym && ag_backward(ctx, yg, g->data) == 0 && ag_backward(ctx, ym, g->data) == 0);
    CHECK(yg && ym && memcmp(yg->data, ym->data, (size_t)B * T * C * sizeof(float)) == 0);
    int bad = !yg || !ym;
    for (int64_t r = 0; r < (int64_t)B * T && !bad; r++)
        for (int j = 0; j < W && !bad; j++) {
            const float *gr = rep->grad + r * 3 * C;
            int head = j / HD, i = j % HD, part = head < NH ? 0 : head < NH + NKV ? 1 : 2;
            double want = 0;
            if (part == 0)
                want = gr[head * HD + i];
            for (int h = 0; part > 0 && h < NH; h++) /* the copies of kv head `head` */
                if (h / G == head - NH - (part - 1) * NKV)
                    want += gr[part * C + h * HD + i];
            bad = !(fabs(qkv->grad[r * W + j] - want) <= 1e-6 + 1e-5 * fabs(want));
            CHECKF(!bad, "row %lld col %d: %.9g, repeated kv gives %.9g", (long long)r, j,
                   qkv->grad[r * W + j], want);
        }
    tensor_ctx_free(ctx);
}

/* Changing the last position's k and v leaves every earlier output
 * bit-identical, and a gradient seeded on the earlier outputs leaves the
 * last position's q, k and v at zero. */
static void test_gqa_is_causal(void)
{
    enum { B = 2, T = 9, NH = 4, NKV = 2, HD = 3, W = (NH + 2 * NKV) * HD, C = NH * HD };
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *qkv = gc_tensor(ctx, 3, (int[]){B, T, W}, -2, 2, 311, true);
    Tensor *qkv2 = tensor_copy(ctx, qkv);
    for (int b = 0; b < B; b++)
        for (int c = NH * HD; c < W; c++)
            qkv2->data[((int64_t)b * T + T - 1) * W + c] += 1.5f;
    Tensor *y1 = ag_gqa_attention(ctx, qkv, NH, NKV, HD);
    Tensor *y2 = ag_gqa_attention(ctx, qkv2, NH, NKV, HD);
    CHECK(y1 && y2);
    float *seed = calloc((size_t)B * T * C, sizeof *seed);
    for (int b = 0; y1 && y2 && b < B; b++) {
        int64_t row0 = (int64_t)b * T * C, early = (int64_t)(T - 1) * C;
        CHECK(memcmp(y1->data + row0, y2->data + row0, (size_t)early * sizeof(float)) == 0);
        CHECK(memcmp(y1->data + row0 + early, y2->data + row0 + early, C * sizeof(float)) != 0);
        for (int64_t i = 0; i < early; i++)
            seed[row0 + i] = 1.0f;
    }
    CHECK(y1 && ag_backward(ctx, y1, seed) == 0);
    for (int b = 0; y1 && b < B; b++)
        for (int c = 0; c < W; c++)
            CHECK(qkv->grad[((int64_t)b * T + T - 1) * W + c] == 0.0f);
    free(seed);
    tensor_ctx_free(ctx);
}

static void test_gqa_errors(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *qkv = tensor_new(ctx, 3, (int[]){2, 4, 40});
    CHECK_ERR(ctx, ag_gqa_attention(ctx, qkv, 4, 3, 5),
              "attention: 3 kv heads do not divide 4 query heads");
    CHECK_ERR(ctx, ag_gqa_attention(ctx, qkv, 4, 0, 5),
              "attention: 4 heads, 0 kv heads of size 5: expected all > 0");
    CHECK_ERR(ctx, ag_gqa_attention(ctx, qkv, 4, 2, 0),
              "attention: 4 heads, 2 kv heads of size 0: expected all > 0");
    CHECK_ERR(ctx, ag_gqa_attention(ctx, qkv, 4, 2, 4),
              "attention: qkv must be (B, T, (NH + 2 NKV) HD) = (B, T, 32) for 4 heads, 2 kv "
              "heads of size 4, got (2, 4, 40)");
    CHECK_ERR(ctx, ag_gqa_attention(ctx, tensor_new(ctx, 2, (int[]){4, 40}), 4, 2, 5),
              "attention: qkv must be (B, T, (NH + 2 NKV) HD) = (B, T, 40) for 4 heads, 2 kv "
              "heads of size 5, got (4, 40)");
    CHECK(ag_gqa_attention(ctx, qkv, 4, 2, 5) != NULL);
    tensor_ctx_free(ctx);
}

static void test_rmsnorm_swiglu_errors(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = tensor_new(ctx, 2, (int[]){4, 3}), *w = tensor_new(ctx, 1, (int[]){4});
    CHECK_ERR(ctx, ag_rmsnorm(ctx, x, w, 1e-5f),
              "rmsnorm: weight (4) does not fit x (4, 3): expected (3)");
    CHECK_ERR(ctx, ag_rmsnorm(ctx, x, tensor_new(ctx, 1, (int[]){3}), -1.0f),
              "rmsnorm: eps must be finite and >= 0, got -1");
    CHECK_ERR(ctx, ag_rmsnorm(ctx, tensor_scalar(ctx, 1), w, 1e-5f),
              "rmsnorm: x must be (..., C), got ()");
    CHECK_ERR(ctx, ag_swiglu(ctx, x), "swiglu: input must be (..., 2F) as [gate | up], got (4, 3)");
    /* a NULL source propagates without overwriting the first error */
    tensor_ctx_clear_error(ctx);
    tensor_ctx_fail(ctx, TENSOR_ERR_ARG, "first");
    CHECK(ag_rmsnorm(ctx, NULL, w, 0) == NULL && ag_swiglu(ctx, NULL) == NULL);
    CHECK(ag_rope(ctx, NULL, x, 0, 0) == NULL && ag_gqa_attention(ctx, NULL, 1, 1, 1) == NULL);
    CHECK(strcmp(tensor_ctx_error(ctx), "first") == 0);
    tensor_ctx_free(ctx);
}

/* ---- composition: the first-write gradient rule ------------------------- */

/* An intermediate h = linear(x, w) (R, 2F) read by swiglu, rmsnorm and rope
 * (as (1, R, NH, HD): positions 0..R-1), built in the order `order` names, so that each of
 * them is, in one order, the first backward to reach h (an uninitialised
 * buffer, see op_grad_first) and in another adds to it:
 *   out = concat(swiglu(h), rmsnorm(h) + rope(h), -1)   (R, 3F) */
typedef struct ChainArg {
    int R, K, F, NH, HD;
    int order; /* 0: swiglu, rmsnorm, rope; 1: rope, rmsnorm, swiglu; 2: rope, swiglu, rmsnorm */
} ChainArg;

static void ref_chain(const double *const *in, double *out, const void *arg)
{
    const ChainArg *a = arg;
    int N = 2 * a->F;
    double *h = malloc((size_t)a->R * N * sizeof *h),
           *sw = malloc((size_t)a->R * a->F * sizeof *sw);
    double *rn = malloc((size_t)a->R * N * sizeof *rn), *rp = malloc((size_t)a->R * N * sizeof *rp);
    for (int r = 0; r < a->R; r++)
        for (int n = 0; n < N; n++) {
            h[r * N + n] = 0;
            for (int k = 0; k < a->K; k++)
                h[r * N + n] += in[0][r * a->K + k] * in[1][n * a->K + k];
        }
    const double *hp = h;
    ref_swiglu(&hp, sw, &(SwigluArg){a->R, a->F});
    ref_rmsnorm((const double *const[]){h, in[2]}, rn, &(NormArg){a->R, N, 1e-5f});
    RopeArg ra = {.B = 1, .T = a->R, .NH = a->NH, .HD = a->HD, .n_rot = a->NH, .n_pos = a->R};
    ra.cfg = (RopeConfig){.head_dim = a->HD, .theta = 10000};
    ref_rope(&hp, rp, &ra);
    for (int r = 0; r < a->R; r++) {
        for (int j = 0; j < a->F; j++)
            out[r * 3 * a->F + j] = sw[r * a->F + j];
        for (int n = 0; n < N; n++)
            out[r * 3 * a->F + a->F + n] = rn[r * N + n] + rp[r * N + n];
    }
    free(h);
    free(sw);
    free(rn);
    free(rp);
}

static Tensor *op_chain(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const ChainArg *a = arg;
    int N = 2 * a->F;
    RopeConfig cfg = {.head_dim = a->HD, .theta = 10000};
    Tensor *table = ag_rope_table(ctx, &cfg, a->R);
    Tensor *h = ag_linear(ctx, in[0], in[1], NULL); // (R, 2F)
    Tensor *sw = NULL, *rn = NULL, *rp = NULL;
    for (int step = 0; step < 3; step++) {
        static const int which[3][3] = {{0, 1, 2}, {2, 1, 0}, {2, 0, 1}};
        int op = which[a->order][step];
        if (op == 0)
            sw = ag_swiglu(ctx, h);
        else if (op == 1)
            rn = ag_rmsnorm(ctx, h, in[2], 1e-5f);
        else
            rp = ag_reshape(ctx,
                            ag_rope(ctx, ag_reshape(ctx, h, 4, (int[]){1, a->R, a->NH, a->HD}),
                                    table, 0, a->NH),
                            2, (int[]){a->R, N});
    }
    return ag_concat(ctx, sw, ag_add(ctx, rn, rp), -1);
}

static void test_first_write_then_accumulate_gradcheck(void)
{
    for (int order = 0; order < 3; order++) {
        ChainArg arg = {.R = 5, .K = 4, .F = 4, .NH = 2, .HD = 4, .order = order};
        GcSpec s = {.name = "chain", .op = op_chain, .ref = ref_chain, .arg = &arg, .n_in = 3};
        s.in[0] = gc_input(2, (int[]){5, 4}, -1, 1, 321);
        s.in[1] = gc_input(2, (int[]){8, 4}, -1, 1, 322);
        s.in[2] = gc_input(1, (int[]){8}, 0.5, 1.5, 323);
        gradcheck_free(&s);
    }
}

/* The first backward to reach an intermediate gets an uninitialised buffer
 * (op_grad_first) and must write every element of it. An arena reset
 * leaves the old bytes in place: here they are NaN, so an element an op
 * skips shows. Each op reads h = x * 1, an intermediate, and x's gradient
 * must equal, to the bit, that of a context that never held a NaN. */
typedef struct FirstCase {
    const char *name;
    int ndim, shape[4];
    Tensor *(*make)(TensorCtx *ctx, Tensor *h);
} FirstCase;

static Tensor *first_rmsnorm(TensorCtx *ctx, Tensor *h)
{
    return ag_rmsnorm(ctx, h, gc_tensor(ctx, 1, (int[]){9}, 0.5, 1.5, 341, true), 1e-5f);
}
static Tensor *first_rope(TensorCtx *ctx, Tensor *h)
{
    Tensor *table = ag_rope_table(ctx, &(RopeConfig){.head_dim = 8, .theta = 10000}, 5);
    return ag_rope(ctx, h, table, 0, 2); /* the third head is copied */
}
static Tensor *first_swiglu(TensorCtx *ctx, Tensor *h) { return ag_swiglu(ctx, h); }
static Tensor *first_gqa(TensorCtx *ctx, Tensor *h) { return ag_gqa_attention(ctx, h, 4, 2, 4); }
static Tensor *first_mha(TensorCtx *ctx, Tensor *h) { return ag_attention(ctx, h, 4); }

/* x's gradient with the arena's bytes set to `old` first (malloc may hand
 * back a chunk a previous case filled, so the clean run sets zeros too);
 * within one chunk (1 MiB), which a reset keeps as it is */
static float *first_write_grad(const FirstCase *fc, float old, size_t *n)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    size_t junk_n = 200000;
    float *junk = tensor_ctx_alloc_uninit(ctx, junk_n * sizeof *junk);
    for (size_t i = 0; junk && i < junk_n; i++)
        junk[i] = old;
    tensor_ctx_reset(ctx);
    Tensor *x = gc_tensor(ctx, fc->ndim, fc->shape, -2, 2, 342, true);
    Tensor *y = fc->make(ctx, ag_mul(ctx, x, tensor_scalar(ctx, 1.0f)));
    Tensor *seed = y ? gc_tensor(ctx, y->ndim, y->shape, -1, 1, 343, false) : NULL;
    CHECKF(y && seed && ag_backward(ctx, y, seed->data) == 0, "%s: %s", fc->name,
           tensor_ctx_error(ctx));
    float *g = malloc((size_t)x->size * sizeof *g);
    memcpy(g, x->grad, (size_t)x->size * sizeof *g);
    *n = (size_t)x->size;
    tensor_ctx_free(ctx);
    return g;
}

static void test_first_write_covers_the_gradient(void)
{
    static const FirstCase cases[] = {
        {"rmsnorm", 2, {6, 9}, first_rmsnorm},    {"rope", 4, {2, 5, 3, 8}, first_rope},
        {"swiglu", 2, {6, 20}, first_swiglu},     {"gqa_attention", 3, {2, 20, 32}, first_gqa},
        {"attention", 3, {2, 20, 48}, first_mha},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t n0 = 0, n1 = 0;
        float *clean = first_write_grad(&cases[k], 0.0f, &n0);
        float *dirty = first_write_grad(&cases[k], NAN, &n1);
        CHECKF(n0 == n1 && memcmp(clean, dirty, n0 * sizeof *clean) == 0,
               "%s: the first write left old bytes in the gradient", cases[k].name);
        free(clean);
        free(dirty);
    }
}

/* ---- modes -------------------------------------------------------------- */

/* One of each op on small leaves that want gradients (the first N_LEAVES
 * tensors of the tape, the table after them); returns how many. The ops
 * that save state come first. */
#define N_LEAVES 4
static int make_each_op(TensorCtx *ctx, Tensor **outs)
{
    Tensor *x = gc_tensor(ctx, 2, (int[]){4, 6}, -1, 1, 1, true);
    Tensor *w = gc_tensor(ctx, 1, (int[]){6}, 0.5, 1.5, 2, true);
    Tensor *qkv = gc_tensor(ctx, 3, (int[]){1, 4, 16}, -1, 1, 3, true); /* NH 2, NKV 1, HD 4 */
    Tensor *q = gc_tensor(ctx, 4, (int[]){1, 4, 2, 4}, -1, 1, 4, true);
    Tensor *table = ag_rope_table(ctx, &(RopeConfig){.head_dim = 4, .theta = 10000}, 8);
    outs[0] = ag_rmsnorm(ctx, x, w, 1e-5f);
    outs[1] = ag_gqa_attention(ctx, qkv, 2, 1, 4);
    outs[2] = ag_rope(ctx, q, table, 2, 2);
    outs[3] = ag_swiglu(ctx, x);
    return 4;
}

static void test_no_grad_saves_nothing(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *outs[4] = {0};
    int n = make_each_op(ctx, outs);
    for (int i = 0; i < 2; i++)
        CHECKF(outs[i] && outs[i]->aux != NULL, "op %d saved nothing with grad on", i);
    ctx->no_grad = true;
    n = make_each_op(ctx, outs);
    for (int i = 0; i < n; i++) {
        CHECKF(outs[i] != NULL, "op %d failed: %s", i, tensor_ctx_error(ctx));
        if (outs[i])
            CHECK(outs[i]->aux == NULL && outs[i]->src[0] == NULL &&
                  !(outs[i]->flags & TENSOR_REQUIRES_GRAD));
    }
    tensor_ctx_free(ctx);
}

/* Backward accumulates (+=) into the leaves: a second pass gives 2g */
static void test_backward_accumulates(void)
{
    for (int op = 0; op < 4; op++) {
        TensorCtx *ctx = tensor_ctx_new(0);
        Tensor *outs[4] = {0};
        make_each_op(ctx, outs);
        gc_check_accumulates(ctx, outs[op], N_LEAVES);
        tensor_ctx_free(ctx);
    }
}

/* A shape-only context computes shapes and saves nothing; a shape-only
 * tensor handed to a context that computes values is an error. */
static void test_meta_shapes_only(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    ctx->meta = true;
    Tensor *x = tensor_new(ctx, 3, (int[]){2, 16, 64}), *w = tensor_new(ctx, 1, (int[]){64});
    Tensor *qkv = tensor_new(ctx, 3, (int[]){2, 16, 8 * 12}); /* NH 8, NKV 2, HD 8 */
    tensor_requires_grad(x);
    tensor_requires_grad(qkv);
    Tensor *inv = ag_rope_inv_freq(ctx, &LLAMA31), *table = ag_rope_table(ctx, &LLAMA2, 32);
    Tensor *rn = ag_rmsnorm(ctx, x, w, 1e-5f), *sw = ag_swiglu(ctx, x);
    Tensor *att = ag_gqa_attention(ctx, qkv, 8, 2, 8);
    Tensor *q4 = tensor_new(ctx, 4, (int[]){2, 16, 4, 128});
    tensor_requires_grad(q4);
    Tensor *rp = ag_rope(ctx, q4, table, 16, 3);
    CHECK(inv && inv->data == NULL && inv->shape[0] == 64);
    CHECK(table && table->data == NULL && table->shape[1] == 32 && table->shape[2] == 64);
    CHECK(rn && rn->data == NULL && rn->aux == NULL && rn->shape[2] == 64);
    CHECK(sw && sw->data == NULL && sw->ndim == 3 && sw->shape[2] == 32);
    CHECK(att && att->data == NULL && att->aux == NULL && att->shape[2] == 64);
    CHECK(rp && rp->data == NULL && rp->ndim == 4 && rp->shape[3] == 128);
    TensorCtx *real = tensor_ctx_new(0);
    CHECK_ERR(real, ag_rmsnorm(real, x, w, 1e-5f), "rmsnorm: x is shape-only and has no data");
    CHECK_ERR(real, ag_swiglu(real, x), "swiglu: input is shape-only and has no data");
    CHECK_ERR(real, ag_gqa_attention(real, qkv, 8, 2, 8),
              "attention: qkv is shape-only and has no data");
    tensor_ctx_free(real);
    tensor_ctx_free(ctx);
}

/* ---- threads ------------------------------------------------------------ */

/* Each case is past the 32768-element threshold where loops go parallel
 * (attention: more kv-head groups than threads, T past a causal block). */
static Tensor *case_rmsnorm(TensorCtx *ctx)
{
    Tensor *x = gc_tensor(ctx, 2, (int[]){512, 80}, -2, 2, 331, true);
    return ag_rmsnorm(ctx, x, gc_tensor(ctx, 1, (int[]){80}, 0.5, 1.5, 332, true), 1e-5f);
}

static Tensor *case_rope(TensorCtx *ctx)
{
    Tensor *table = ag_rope_table(ctx, &LLAMA31, 200);
    return ag_rope(ctx, gc_tensor(ctx, 4, (int[]){2, 64, 6, 128}, -2, 2, 333, true), table, 100, 4);
}

static Tensor *case_swiglu(TensorCtx *ctx)
{
    return ag_swiglu(ctx, gc_tensor(ctx, 2, (int[]){512, 160}, -6, 6, 334, true));
}

static Tensor *case_gqa(TensorCtx *ctx)
{
    return ag_gqa_attention(ctx, gc_tensor(ctx, 3, (int[]){2, 100, 12 * 16}, -2, 2, 335, true), 8,
                            2, 16);
}

static void test_threads(void)
{
    gc_check_threads("rmsnorm", case_rmsnorm);
    gc_check_threads("rope", case_rope);
    gc_check_threads("swiglu", case_swiglu);
    gc_check_threads("gqa_attention", case_gqa);
}

int main(void)
{
    RUN(test_rmsnorm_gradcheck);
    RUN(test_rmsnorm_one_channel_gradcheck);
    RUN(test_rmsnorm_large_scale_gradcheck);
    RUN(test_rmsnorm_huge_values_gradcheck);
    RUN(test_rmsnorm_eps_gradcheck);
    RUN(test_rmsnorm_zero_row);
    RUN(test_rmsnorm_accuracy);
    RUN(test_rmsnorm_clones_match_lane_sums);
    RUN(test_rope_inv_freq_default);
    RUN(test_rope_inv_freq_linear);
    RUN(test_rope_inv_freq_llama3);
    RUN(test_rope_table_values);
    RUN(test_rope_config_errors);
    RUN(test_rope_gradcheck);
    RUN(test_rope_scaled_gradcheck);
    RUN(test_rope_edges_gradcheck);
    RUN(test_rope_accuracy);
    RUN(test_rope_fused_qkv);
    RUN(test_rope_errors);
    RUN(test_swiglu_gradcheck);
    RUN(test_swiglu_extreme_gradcheck);
    RUN(test_swiglu_small_gradcheck);
    RUN(test_swiglu_accuracy);
    RUN(test_swiglu_infinities);
    RUN(test_gqa_gradcheck);
    RUN(test_gqa_edges_gradcheck);
    RUN(test_gqa_is_attention_when_ungrouped);
    RUN(test_gqa_is_attention_on_repeated_kv);
    RUN(test_gqa_is_causal);
    RUN(test_gqa_errors);
    RUN(test_rmsnorm_swiglu_errors);
    RUN(test_first_write_then_accumulate_gradcheck);
    RUN(test_first_write_covers_the_gradient);
    RUN(test_no_grad_saves_nothing);
    RUN(test_backward_accumulates);
    RUN(test_meta_shapes_only);
    RUN(test_threads);
    return tl_done();
}
