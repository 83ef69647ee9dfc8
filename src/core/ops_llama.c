/*
 * core/ops_llama.c — the Llama family's own blocks, each constructor beside
 * its backward: RMSNorm, rotary position embeddings (RoPE: the frequencies,
 * the cos/sin table and the rotation) and the SwiGLU activation. Grouped-
 * query attention is ops_nn.c's attention op (ag_gqa_attention).
 *
 * Letters: R rows (numel / last dim), C channels, B batch, T time, NH heads
 * of a tensor, HD head dim, H2 = HD / 2, P positions of a RoPE table, F the
 * MLP's hidden width.
 *
 * The reference is Hugging Face transformers in float32: LlamaRMSNorm,
 * LlamaRotaryEmbedding, apply_rotary_pos_emb and rotate_half, LlamaMLP
 * (modeling_llama.py); _compute_default_rope_parameters,
 * _compute_linear_scaling_rope_parameters and _compute_llama3_parameters
 * (modeling_rope_utils.py). Where the rounding here departs from theirs, the
 * code says so beside it.
 *
 * Determinism, as in ops_nn.c: threads split rows only, a row's sums run in
 * double lanes (LANE_SUM), and the RMSNorm weight's gradient is summed over
 * rows in order by column blocks (norm_backward_wb), so the bits do not
 * depend on the thread count; row kernels are cloned for wider ISAs
 * (ELEM_CLONES) with the same bits on each.
 *
 * Saved state: RMSNorm keeps rstd per row (R). RoPE and SwiGLU keep nothing:
 * backward reads the table and the input, which are immutable.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops_internal.h"

#define SHAPE_LEN 64
#define ROPE_MAX_POS (1 << 24) /* HF's positions are floats: exact up to 2^24 */

/* ---- rmsnorm ------------------------------------------------------------ */

static bool rmsnorm_check(TensorCtx *ctx, const Tensor *x, const Tensor *w, float eps)
{
    char sx[SHAPE_LEN], sw[SHAPE_LEN];
    tensor_shape_str(x, sx, sizeof sx);
    if (x->ndim < 1) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "rmsnorm: x must be (..., C), got %s", sx);
        return false;
    }
    int C = x->shape[x->ndim - 1];
    if (w->ndim != 1 || w->shape[0] != C) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                        "rmsnorm: weight %s does not fit x %s: expected (%d)",
                        tensor_shape_str(w, sw, sizeof sw), sx, C);
        return false;
    }
    if (!(eps >= 0) || isinf(eps)) {
        tensor_ctx_fail(ctx, TENSOR_ERR_ARG, "rmsnorm: eps must be finite and >= 0, got %g",
                        (double)eps);
        return false;
    }
    return op_has_data(ctx, "rmsnorm", "x", x) && op_has_data(ctx, "rmsnorm", "weight", w);
}

/* One row, HF's order: hidden * rsqrt(mean(hidden^2) + eps), then weight *
 * that. The mean of squares is summed in double where HF sums in float: the
 * same to a rounding, and no overflow (HF's float x^2 is inf past |x| ~
 * 1.8e19, and its row comes out 0). Returns rstd. */
ELEM_CLONES static float rmsnorm_row(float *y, const float *x, const float *w, int C, float eps)
{
    double ss;
    LANE_SUM(ss, C, c, (double)x[c] * x[c]);
    float rstd = (float)(1.0 / sqrt(ss / C + eps));
#pragma omp simd
    for (int c = 0; c < C; c++)
        y[c] = w[c] * (x[c] * rstd);
    return rstd;
}

Tensor *ag_rmsnorm(TensorCtx *ctx, Tensor *x, Tensor *w, float eps)
{
    if (!x || !w)
        return NULL;
    if (!rmsnorm_check(ctx, x, w, eps))
        return NULL;
    Tensor *out = op_node_uninit(ctx, OP_RMSNORM, x->ndim, x->shape, x, w, NULL);
    if (!out)
        return NULL;
    out->fparam[0] = eps;
    int C = x->shape[x->ndim - 1];
    int64_t R = tensor_numel(x->ndim - 1, x->shape);
    float *rstd = NULL; // (R)
    if (op_saves_aux(out) && !(rstd = out->aux = tensor_ctx_alloc(ctx, (size_t)R * sizeof(float))))
        return NULL;
    if (ctx->meta || C == 0)
        return out;
#pragma omp parallel for schedule(static) if (R * C > PAR_MIN_WORK)
    for (int64_t r = 0; r < R; r++) {
        float rs = rmsnorm_row(out->data + r * C, x->data + r * C, w->data, C, eps);
        if (rstd)
            rstd[r] = rs;
    }
    return out;
}

/* One row of dx += rstd (g w - xhat mean(g w xhat)), xhat = x rstd; when
 * first, dx is uninitialised and 0 + that is stored */
ELEM_CLONES static void rmsnorm_backward_row(float *dr, const float *xr, const float *w,
                                             const float *gr, float rstd, int C, bool first)
{
    double s;
    LANE_SUM(s, C, c, (double)(gr[c] * w[c]) * (xr[c] * rstd));
    float m = (float)(s / C);
    if (first)
        memset(dr, 0, (size_t)C * sizeof *dr);
#pragma omp simd
    for (int c = 0; c < C; c++)
        dr[c] += rstd * (gr[c] * w[c] - (xr[c] * rstd) * m);
}

void rmsnorm_backward(Tensor *out)
{
    Tensor *x = out->src[0], *w = out->src[1];
    int C = x->shape[x->ndim - 1];
    int64_t R = tensor_numel(x->ndim - 1, x->shape);
    const float *rstd = out->aux; // (R)
    bool first;
    float *dx = op_wants_grad(x) ? op_grad_first(x, &first) : NULL; // (R, C)
    float *dw = op_wants_grad(w) ? op_grad(w) : NULL;               // (C)
    if ((op_wants_grad(x) && !dx) || (op_wants_grad(w) && !dw) || C == 0)
        return;
    if (dx) {
#pragma omp parallel for schedule(static) if (R * C > PAR_MIN_WORK)
        for (int64_t r = 0; r < R; r++)
            rmsnorm_backward_row(dx + r * C, x->data + r * C, w->data, out->grad + r * C, rstd[r],
                                 C, first);
    }
    if (dw)
        norm_backward_wb(dw, NULL, x->data, out->grad, NULL, rstd, R, C);
}

/* ---- rotary position embeddings: frequencies and table ------------------ */

static bool rope_config_ok(TensorCtx *ctx, const RopeConfig *cfg)
{
    const char *bad = NULL;
    if (!cfg)
        bad = "no config given";
    else if (cfg->head_dim <= 0 || cfg->head_dim % 2 != 0)
        bad = "head_dim must be even and > 0";
    else if (!(cfg->theta > 0) || isinf((float)cfg->theta)) /* a float in HF's steps */
        bad = "theta must be finite and > 0";
    else if (cfg->scaling != ROPE_SCALING_NONE && cfg->scaling != ROPE_SCALING_LINEAR &&
             cfg->scaling != ROPE_SCALING_LLAMA3)
        bad = "unknown scaling";
    else if (cfg->scaling != ROPE_SCALING_NONE && (!(cfg->factor > 0) || isinf((float)cfg->factor)))
        bad = "factor must be finite and > 0";
    else if (cfg->scaling == ROPE_SCALING_LLAMA3 &&
             (!(cfg->low_freq_factor > 0) || !(cfg->high_freq_factor > cfg->low_freq_factor) ||
              isinf(cfg->high_freq_factor)))
        bad = "llama3 needs 0 < low_freq_factor < high_freq_factor, finite";
    else if (cfg->scaling == ROPE_SCALING_LLAMA3 && cfg->original_max_position_embeddings <= 0)
        bad = "llama3 needs original_max_position_embeddings > 0";
    if (!bad)
        return true;
    static const char *const names[] = {"none", "linear", "llama3"};
    unsigned k = cfg ? (unsigned)cfg->scaling : 0;
    tensor_ctx_fail(ctx, TENSOR_ERR_ARG, "rope: %s (head_dim %d, theta %g, scaling %s, factor %g)",
                    bad, cfg ? cfg->head_dim : 0, cfg ? cfg->theta : 0.0,
                    k < 3 ? names[k] : "unknown", cfg ? cfg->factor : 0.0);
    return false;
}

/* One frequency through _compute_llama3_parameters in HF's float32 steps: a
 * python number meets a float tensor as a float, and `number / tensor` is
 * torch's reciprocal(tensor) * number.
 *   wavelen = 2 pi / inv
 *   inv_l = wavelen > old / low ? inv / factor : inv
 *   smooth = (old / wavelen - low) / (high - low)
 *   smoothed = (1 - smooth) * inv_l / factor + smooth * inv_l
 *   medium = !(wavelen < old / high) && !(wavelen > old / low): smoothed, else inv_l */
static float rope_llama3(float inv, const RopeConfig *cfg)
{
    double old = cfg->original_max_position_embeddings;
    float factor = (float)cfg->factor, low = (float)cfg->low_freq_factor;
    float low_wl = (float)(old / cfg->low_freq_factor);
    float high_wl = (float)(old / cfg->high_freq_factor);
    float wl = (1.0f / inv) * (float)(2 * M_PI);
    float inv_l = wl > low_wl ? inv / factor : inv;
    float span = (float)(cfg->high_freq_factor - cfg->low_freq_factor);
    float smooth = ((1.0f / wl) * (float)old - low) / span;
    float smoothed = (1.0f - smooth) * inv_l / factor + smooth * inv_l;
    bool medium = !(wl < high_wl) && !(wl > low_wl);
    return medium ? smoothed : inv_l;
}

/* inv (H2) for a checked cfg, in HF's float32 steps:
 * _compute_default_rope_parameters, 1.0 / (base ** (arange(0, HD, 2).float()
 * / HD)), then _compute_linear_scaling_rope_parameters' inv_freq /= factor or
 * rope_llama3. pow runs in double and is rounded once, where torch's float
 * pow is within its ulp of that: inv_freq may differ from HF's in the last
 * bit. */
static void rope_inv_freq_into(float *inv, const RopeConfig *cfg)
{
    float base = (float)cfg->theta, hd = (float)cfg->head_dim;
    for (int i = 0; i < cfg->head_dim / 2; i++) {
        float e = (float)(2 * i) / hd;
        float f = 1.0f / (float)pow((double)base, (double)e);
        if (cfg->scaling == ROPE_SCALING_LINEAR)
            f /= (float)cfg->factor;
        else if (cfg->scaling == ROPE_SCALING_LLAMA3)
            f = rope_llama3(f, cfg);
        inv[i] = f;
    }
}

Tensor *ag_rope_inv_freq(TensorCtx *ctx, const RopeConfig *cfg)
{
    if (!rope_config_ok(ctx, cfg))
        return NULL;
    int shape[1] = {cfg->head_dim / 2};
    Tensor *t = tensor_new(ctx, 1, shape);
    if (t && t->data)
        rope_inv_freq_into(t->data, cfg);
    return t;
}

/* The angle is HF's: inv_freq @ position_ids in float32 (one product,
 * rounded to float; at p ~ 4000 that rounding moves it by ~1e-4, far more
 * than any error of cos). cos and sin of that float run in double and are
 * rounded once, where torch's float cos is within its ulp of that. */
Tensor *ag_rope_table(TensorCtx *ctx, const RopeConfig *cfg, int n_pos)
{
    if (!rope_config_ok(ctx, cfg))
        return NULL;
    if (n_pos < 0 || n_pos > ROPE_MAX_POS)
        return tensor_ctx_fail(ctx, TENSOR_ERR_ARG,
                               "rope: a table of %d positions, expected 0 to %d", n_pos,
                               ROPE_MAX_POS);
    int H2 = cfg->head_dim / 2, shape[3] = {2, n_pos, H2};
    Tensor *t = tensor_new(ctx, 3, shape);
    if (!t || !t->data || t->size == 0)
        return t;
    float *inv = malloc((size_t)H2 * sizeof *inv);
    if (!inv)
        return tensor_ctx_fail(ctx, TENSOR_ERR_NOMEM, "rope: out of memory for a table");
    rope_inv_freq_into(inv, cfg);
    float *cs = t->data, *sn = t->data + (int64_t)n_pos * H2; // (P, H2) each
#pragma omp parallel for schedule(static) if ((int64_t)n_pos * H2 > PAR_MIN_WORK / 16)
    for (int p = 0; p < n_pos; p++)
        for (int i = 0; i < H2; i++) {
            float a = (float)p * inv[i];
            cs[(int64_t)p * H2 + i] = (float)cos((double)a);
            sn[(int64_t)p * H2 + i] = (float)sin((double)a);
        }
    free(inv);
    return t;
}

/* ---- rotary position embeddings: the rotation --------------------------- */

/* the first problem with rope's arguments, written into msg: its status, or
 * TENSOR_OK when there is none */
static TensorStatus rope_problem(char *msg, size_t len, const Tensor *x, const Tensor *table,
                                 int pos0, int n_rot)
{
    char sx[SHAPE_LEN], st[SHAPE_LEN];
    tensor_shape_str(x, sx, sizeof sx);
    tensor_shape_str(table, st, sizeof st);
    if (x->ndim != 4 || x->shape[3] % 2 != 0) {
        snprintf(msg, len, "x must be (B, T, NH, HD) with HD even, got %s", sx);
        return TENSOR_ERR_SHAPE;
    }
    if (table->ndim != 3 || table->shape[0] != 2 || 2 * table->shape[2] != x->shape[3]) {
        snprintf(msg, len, "table %s does not fit x %s: expected (2, P, %d)", st, sx,
                 x->shape[3] / 2);
        return TENSOR_ERR_SHAPE;
    }
    if (n_rot < 0 || n_rot > x->shape[2])
        snprintf(msg, len, "%d heads to rotate of x %s, expected 0 to %d", n_rot, sx, x->shape[2]);
    else if (pos0 < 0 || (int64_t)pos0 + x->shape[1] > table->shape[1])
        snprintf(msg, len, "positions %d to %lld of x %s are not all in table %s", pos0,
                 (long long)pos0 + x->shape[1] - 1, sx, st);
    else if (op_wants_grad(table))
        snprintf(msg, len, "the table takes no gradient (make it with ag_rope_table)");
    else
        return TENSOR_OK;
    return TENSOR_ERR_ARG;
}

static bool rope_check(TensorCtx *ctx, const Tensor *x, const Tensor *table, int pos0, int n_rot)
{
    char msg[TENSOR_ERR_LEN];
    TensorStatus st = rope_problem(msg, sizeof msg, x, table, pos0, n_rot);
    if (st != TENSOR_OK) {
        tensor_ctx_fail(ctx, st, "rope: %s", msg);
        return false;
    }
    return op_has_data(ctx, "rope", "x", x) && op_has_data(ctx, "rope", "table", table);
}

typedef struct RopeDims {
    int64_t R; /* rows (b, t): B T */
    int T, NH, HD, pos0, n_rot;
    const float *cos, *sin; // (P, H2) each
} RopeDims;

static RopeDims rope_dims(const Tensor *x, const Tensor *table, int pos0, int n_rot)
{
    RopeDims d = {.R = (int64_t)x->shape[0] * x->shape[1],
                  .T = x->shape[1],
                  .NH = x->shape[2],
                  .HD = x->shape[3],
                  .pos0 = pos0,
                  .n_rot = n_rot};
    d.cos = table->data;
    d.sin = table->data ? table->data + (int64_t)table->shape[1] * table->shape[2] : NULL;
    return d;
}

/* One head at one position: y1 = x1 c - x2 s and y2 = x2 c + x1 s on its
 * halves x1 = x[0, H2), x2 = x[H2, HD), s = sign sin. With sign 1 that is
 * HF's q cos + rotate_half(q) sin (x1 c + (-x2) s rounds as x1 c - x2 s);
 * with -1 its inverse, for backward, which adds (y +=) where forward stores. */
ELEM_CLONES static void rope_head(float *y, const float *x, const float *c, const float *s, int H2,
                                  float sign, bool add)
{
    float *y1 = y, *y2 = y + H2;
    const float *x1 = x, *x2 = x + H2;
    if (add) {
#pragma omp simd
        for (int i = 0; i < H2; i++) {
            float sn = sign * s[i];
            y1[i] += x1[i] * c[i] - x2[i] * sn;
            y2[i] += x2[i] * c[i] + x1[i] * sn;
        }
        return;
    }
#pragma omp simd
    for (int i = 0; i < H2; i++) {
        float sn = sign * s[i];
        y1[i] = x1[i] * c[i] - x2[i] * sn;
        y2[i] = x2[i] * c[i] + x1[i] * sn;
    }
}

/* One position's row of NH heads: the first n_rot rotated, the rest passed
 * through (stored, or added when add) */
static void rope_row(float *y, const float *x, const float *c, const float *s, RopeDims d,
                     float sign, bool add)
{
    for (int h = 0; h < d.n_rot; h++)
        rope_head(y + (int64_t)h * d.HD, x + (int64_t)h * d.HD, c, s, d.HD / 2, sign, add);
    int64_t done = (int64_t)d.n_rot * d.HD, W = (int64_t)d.NH * d.HD;
    if (!add) {
        memcpy(y + done, x + done, (size_t)(W - done) * sizeof *y);
        return;
    }
#pragma omp simd
    for (int64_t j = done; j < W; j++)
        y[j] += x[j];
}

/* y (R, NH HD) from x at positions pos0 + t, rows split over the threads;
 * first: y is uninitialised and zeroed before the add */
static void rope_rows(float *y, const float *x, RopeDims d, float sign, bool add, bool first)
{
    int64_t W = (int64_t)d.NH * d.HD, H2 = d.HD / 2;
#pragma omp parallel for schedule(static) if (d.R * W > PAR_MIN_WORK)
    for (int64_t r = 0; r < d.R; r++) {
        int64_t p = d.pos0 + r % d.T;
        if (first)
            memset(y + r * W, 0, (size_t)W * sizeof *y);
        rope_row(y + r * W, x + r * W, d.cos + p * H2, d.sin + p * H2, d, sign, add);
    }
}

Tensor *ag_rope(TensorCtx *ctx, Tensor *x, Tensor *table, int pos0, int n_rot)
{
    if (!x || !table)
        return NULL;
    if (!rope_check(ctx, x, table, pos0, n_rot))
        return NULL;
    Tensor *out = op_node_uninit(ctx, OP_ROPE, 4, x->shape, x, table, NULL);
    if (!out)
        return NULL;
    out->iparam[0] = pos0;
    out->iparam[1] = n_rot;
    if (!ctx->meta)
        rope_rows(out->data, x->data, rope_dims(x, table, pos0, n_rot), 1.0f, false, false);
    return out;
}

/* dx += the inverse rotation of dy: the rotation is orthogonal */
void rope_backward(Tensor *out)
{
    Tensor *x = out->src[0], *table = out->src[1];
    bool first;
    float *dx = op_grad_first(x, &first); // (B, T, NH, HD)
    if (!dx)
        return;
    RopeDims d = rope_dims(x, table, out->iparam[0], out->iparam[1]);
    rope_rows(dx, out->grad, d, -1.0f, true, first);
}

/* ---- swiglu --------------------------------------------------------------- */

/* silu(g) = g s, s = sigmoid(g) = 1 / (1 + e), e = exp(-g), on
 * ops_internal.h's GELU exponential (clamped, vectorisable) and its far
 * tests: below g = -87.34, where e is past float, silu and its gradient are
 * 0; above +87.34 the gradient is 1 (g e s s would be inf * 0 at g = +inf);
 * NaN passes through. silu' = s (1 + g (1 - s)), with s (1 - s) = e s s,
 * which does not cancel where s ~ 1. HF's silu (torch's x / (1 + exp(-x)))
 * is the same to a rounding. */
static inline float silu_f(float g)
{
    float s = 1.0f / (1.0f + gelu_exp(-g));
    return select_bits(gelu_far_neg(g), 0.0f, g * s);
}

/* both far masks before either select: tested in turn, gcc branches on them
 * and the loop is vectorised only where AVX-512 has mask registers */
static inline float silu_grad(float g)
{
    float e = gelu_exp(-g), s = 1.0f / (1.0f + e);
    uint32_t neg = gelu_far_neg(g), pos = gelu_far_pos(g);
    return select_bits(neg, 0.0f, select_bits(pos, 1.0f, s + g * (e * s * s)));
}

/* o (F) = silu(gate) up for one row gu (2F) = [gate | up]: HF's
 * act_fn(gate_proj(x)) * up_proj(x) */
ELEM_CLONES static void swiglu_row(float *o, const float *gu, int F)
{
#pragma omp simd
    for (int j = 0; j < F; j++)
        o[j] = silu_f(gu[j]) * gu[F + j];
}

Tensor *ag_swiglu(TensorCtx *ctx, Tensor *gu)
{
    if (!gu)
        return NULL;
    char sg[SHAPE_LEN];
    if (gu->ndim < 1 || gu->shape[gu->ndim - 1] % 2 != 0)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                               "swiglu: input must be (..., 2F) as [gate | up], got %s",
                               tensor_shape_str(gu, sg, sizeof sg));
    if (!op_has_data(ctx, "swiglu", "input", gu))
        return NULL;
    int shape[TENSOR_MAX_DIMS], nd = gu->ndim;
    memcpy(shape, gu->shape, sizeof shape);
    shape[nd - 1] /= 2;
    int F = shape[nd - 1];
    Tensor *out = op_node_uninit(ctx, OP_SWIGLU, nd, shape, gu, NULL, NULL);
    if (!out || ctx->meta || F == 0)
        return out;
    int64_t R = tensor_numel(nd - 1, shape);
#pragma omp parallel for schedule(static) if (R * F > PAR_MIN_WORK)
    for (int64_t r = 0; r < R; r++)
        swiglu_row(out->data + r * F, gu->data + r * 2 * F, F);
    return out;
}

/* d gate += g up silu'(gate), d up += g silu(gate), for one row; when
 * first, d is uninitialised and 0 + that is stored */
ELEM_CLONES static void swiglu_backward_row(float *d, const float *gu, const float *g, int F,
                                            bool first)
{
    if (first)
        memset(d, 0, 2 * (size_t)F * sizeof *d);
#pragma omp simd
    for (int j = 0; j < F; j++) {
        float gate = gu[j];
        d[j] += g[j] * gu[F + j] * silu_grad(gate);
        d[F + j] += g[j] * silu_f(gate);
    }
}

void swiglu_backward(Tensor *out)
{
    Tensor *gu = out->src[0];
    int F = out->shape[out->ndim - 1];
    int64_t R = tensor_numel(out->ndim - 1, out->shape);
    bool first;
    float *dgu = op_grad_first(gu, &first); // (R, 2F)
    if (!dgu || F == 0)
        return;
#pragma omp parallel for schedule(static) if (R * F > PAR_MIN_WORK)
    for (int64_t r = 0; r < R; r++)
        swiglu_backward_row(dgu + r * 2 * F, gu->data + r * 2 * F, out->grad + r * F, F, first);
}
