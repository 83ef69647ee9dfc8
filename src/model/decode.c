/*
 * model/decode.c — incremental decoding of a Gpt with a KV cache (see
 * decode.h): model.c's forward one position at a time, for GPT-2 and the
 * Llama family. It keeps no graph; its buffers are allocated once.
 *
 * GPT-2's arithmetic is the one task/sample.c's cache always had (the
 * task's cached pairs were sampled with it): LayerNorm with two passes in
 * double, GELU's tanh form, attention scaled by 1/sqrt(HD) with expf.
 * Llama's RMSNorm sums its squares in core/ops_llama.c's order (16 double
 * lanes, then added in lane order), so it is ag_rmsnorm's bits; its RoPE is
 * ag_rope's rotation on the model's own table; SiLU is HF's g / (1 + e^-g),
 * where the op uses a polynomial exp (the same to float rounding).
 *
 * Layout: one row per sequence of the step; a qkv row is [q (NH HD) | k
 * (NKV HD) | v (NKV HD)], as model.c's fused projection makes it (GPT-2:
 * NKV = NH, HD = C / NH, so 3C). Keys and values of sequence s, layer l sit
 * at (l S + s) max_len KVW, a position per KVW = NKV HD floats.
 *
 * Letters as in decode.h; Q = (NH + 2 NKV) HD, KVW = NKV HD, A = NH HD,
 * maxT here is the decoder's max_len.
 */
#include "model/decode.h"

#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"

#define GELU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_C 0.044715f
#define SUM_LANES 16 /* ops_internal.h's LANE_SUM: the RMSNorm rounds as ag_rmsnorm's */

struct GptDecoder {
    const Gpt *m;
    int S, maxT, C, L, NH, NKV, HD, F, V;
    float eps;
    bool llama;
    int *pos;            // (S) tokens held per sequence
    unsigned char *seen; // (S) all 0 between steps: marks a step's sequences
    float *kc, *vc;      // (L, S, maxT, KVW) keys and values of every position fed
    float *x;            // (S, C) residual stream of the step's rows
    float *h;            // (S, C) norm output, then projection output
    float *qkv;          // (S, Q)
    float *att;          // (S, A)
    float *fc;           // (S, F) GPT-2; (S, 2F) Llama's gate | up
    float *act;          // (S, F) Llama's silu(gate) up; NULL for GPT-2
    float *p;            // (maxT) one head's attention probabilities
};

static size_t qkv_width(const GptDecoder *d) { return (size_t)(d->NH + 2 * d->NKV) * d->HD; }
static size_t kv_width(const GptDecoder *d) { return (size_t)d->NKV * d->HD; }

void gpt_decoder_free(GptDecoder *d)
{
    if (!d)
        return;
    free(d->pos);
    free(d->seen);
    free(d->kc);
    free(d->vc);
    free(d->x);
    free(d->h);
    free(d->qkv);
    free(d->att);
    free(d->fc);
    free(d->act);
    free(d->p);
    free(d);
}

/* The arguments and the model's parts a decoder relies on; NULL or why not. */
static const char *new_problem(const Gpt *m, int n_seq, int max_len)
{
    if (n_seq <= 0)
        return "need at least one sequence";
    if (max_len <= 0 || max_len > m->cfg.context)
        return "max_len must be from 1 to the model's context";
    if (m->cfg.arch != GPT_ARCH_GPT2 && m->cfg.arch != GPT_ARCH_LLAMA)
        return "unknown architecture";
    if (m->cfg.arch == GPT_ARCH_LLAMA && (!m->rope || m->rope->shape[1] < max_len))
        return "the model has no RoPE table of max_len positions";
    return NULL;
}

static int alloc_buffers(GptDecoder *d)
{
    size_t S = (size_t)d->S, C = (size_t)d->C, F = (size_t)d->F;
    size_t kv = (size_t)d->L * S * (size_t)d->maxT * kv_width(d);
    d->pos = calloc(S, sizeof *d->pos);
    d->seen = calloc(S, 1);
    d->kc = malloc(kv * sizeof(float));
    d->vc = malloc(kv * sizeof(float));
    d->x = malloc(S * C * sizeof(float));
    d->h = malloc(S * C * sizeof(float));
    d->qkv = malloc(S * qkv_width(d) * sizeof(float));
    d->att = malloc(S * (size_t)d->NH * d->HD * sizeof(float));
    d->fc = malloc(S * F * (d->llama ? 2 : 1) * sizeof(float));
    d->act = d->llama ? malloc(S * F * sizeof(float)) : NULL;
    d->p = malloc((size_t)d->maxT * sizeof(float));
    return d->pos && d->seen && d->kc && d->vc && d->x && d->h && d->qkv && d->att && d->fc &&
                   (d->act || !d->llama) && d->p
               ? 0
               : -1;
}

GptDecoder *gpt_decoder_new(const Gpt *m, int n_seq, int max_len, char *err, size_t errlen)
{
    const char *why = new_problem(m, n_seq, max_len);
    if (why) {
        err_fail(err, errlen, "decode: a decoder for %d sequences of %d tokens (context %d): %s",
                 n_seq, max_len, m->cfg.context, why);
        return NULL;
    }
    const GptConfig *g = &m->cfg;
    GptDecoder *d = calloc(1, sizeof *d);
    /* the cache's floats, in double first: a product past size_t is refused */
    double kv = (double)g->layers * n_seq * max_len * gpt_kv_heads(g) * gpt_head_dim(g);
    if (d)
        *d = (GptDecoder){.m = m,
                          .S = n_seq,
                          .maxT = max_len,
                          .C = g->width,
                          .L = g->layers,
                          .NH = g->heads,
                          .NKV = gpt_kv_heads(g),
                          .HD = gpt_head_dim(g),
                          .F = gpt_inner(g),
                          .V = g->vocab,
                          .eps = gpt_norm_eps(g),
                          .llama = g->arch == GPT_ARCH_LLAMA};
    if (!d || kv * sizeof(float) > (double)(SIZE_MAX / 4) || alloc_buffers(d) != 0) {
        gpt_decoder_free(d);
        err_fail(err, errlen,
                 "decode: out of memory for a cache of %d sequences of %d tokens (%.3g floats)",
                 n_seq, max_len, 2 * kv);
        return NULL;
    }
    return d;
}

void gpt_decoder_reset(GptDecoder *d) { memset(d->pos, 0, (size_t)d->S * sizeof *d->pos); }

int gpt_decoder_len(const GptDecoder *d, int s) { return d->pos[s]; }

size_t gpt_decoder_cache_floats(const GptDecoder *d)
{
    return 2 * (size_t)d->L * (size_t)d->S * (size_t)d->maxT * kv_width(d);
}

/* ---- row kernels -------------------------------------------------------- */

/* y (n, C) = LayerNorm(x) w + b, row by row: mean, then variance, in double */
static void ln_rows(float *y, const float *x, const Tensor *w, const Tensor *b, int n, int C,
                    float eps)
{
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * C;
        float *yr = y + (size_t)r * C;
        double s = 0, v = 0;
        for (int i = 0; i < C; i++)
            s += xr[i];
        float mean = (float)(s / C);
        for (int i = 0; i < C; i++)
            v += ((double)xr[i] - mean) * ((double)xr[i] - mean);
        float rstd = (float)(1.0 / sqrt(v / C + eps));
        for (int i = 0; i < C; i++)
            yr[i] = (xr[i] - mean) * rstd * w->data[i] + b->data[i];
    }
}

/* sum of x[i]^2 in double, lane l taking i = l, l + SUM_LANES, ..., the
 * lanes then added in order: ag_rmsnorm's summation */
static double sum_squares(const float *x, int C)
{
    double lane[SUM_LANES] = {0}, s = 0;
    int i0 = 0;
    for (; i0 + SUM_LANES <= C; i0 += SUM_LANES)
        for (int l = 0; l < SUM_LANES; l++)
            lane[l] += (double)x[i0 + l] * x[i0 + l];
    for (int i = i0; i < C; i++)
        lane[i - i0] += (double)x[i] * x[i];
    for (int l = 0; l < SUM_LANES; l++)
        s += lane[l];
    return s;
}

/* y (n, C) = w * (x * rsqrt(mean(x^2) + eps)), row by row, HF's order */
static void rms_rows(float *y, const float *x, const Tensor *w, int n, int C, float eps)
{
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * C;
        float *yr = y + (size_t)r * C;
        float rstd = (float)(1.0 / sqrt(sum_squares(xr, C) / C + eps));
        for (int i = 0; i < C; i++)
            yr[i] = w->data[i] * (xr[i] * rstd);
    }
}

/* out (n, N) = in (n, K) @ W (N, K)^T [+ bias (N)]: the bias is sgemm's C
 * operand, as sample.c's cache always added it */
static void linear_rows(float *out, const float *in, const Tensor *w, const Tensor *bias, int n)
{
    int N = w->shape[0], K = w->shape[1];
    float beta = 0.0f;
    if (bias) {
        for (int r = 0; r < n; r++)
            memcpy(out + (size_t)r * N, bias->data, (size_t)N * sizeof(float));
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, N, K, 1.0f, in, K, w->data, K, beta,
                out, N);
}

static void gelu_rows(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float u = GELU_K * (x[i] + GELU_C * x[i] * x[i] * x[i]);
        x[i] = 0.5f * x[i] * (1.0f + tanhf(u));
    }
}

/* o (n, F) = silu(gate) up for gu (n, 2F) = [gate | up] */
static void swiglu_rows(float *o, const float *gu, int n, int F)
{
    for (int r = 0; r < n; r++) {
        const float *g = gu + (size_t)r * 2 * F, *u = g + F;
        float *orow = o + (size_t)r * F;
        for (int j = 0; j < F; j++)
            orow[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
    }
}

static void add_rows(float *x, const float *y, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] += y[i];
}

/* ---- attention ---------------------------------------------------------- */

/* Rotates q's NH and k's NKV heads of each qkv row at its sequence's
 * position: x1 c - x2 s, x2 c + x1 s on the halves of HD (ag_rope's
 * rotation, the model's table). */
static void rope_rows(GptDecoder *d, const int *seq, int n)
{
    const Tensor *t = d->m->rope; // (2, P, H2)
    int H2 = d->HD / 2, heads = d->NH + d->NKV;
    const float *cos_t = t->data, *sin_t = t->data + (size_t)t->shape[1] * H2;
    for (int r = 0; r < n; r++) {
        size_t p = (size_t)d->pos[seq[r]] * H2;
        const float *c = cos_t + p, *s = sin_t + p;
        for (int h = 0; h < heads; h++) {
            float *x1 = d->qkv + (size_t)r * qkv_width(d) + (size_t)h * d->HD, *x2 = x1 + H2;
            for (int i = 0; i < H2; i++) {
                float a = x1[i], b = x2[i];
                x1[i] = a * c[i] - b * s[i];
                x2[i] = b * c[i] + a * s[i];
            }
        }
    }
}

/* One head of one row: out (HD) = softmax(q K^T / sqrt(HD)) V over the
 * sequence's positions 0..T-1 (the current one already cached); K and V
 * rows are ld floats apart. */
static void attend(GptDecoder *d, const float *q, const float *K, const float *Vv, int T, size_t ld,
                   float *out)
{
    int HD = d->HD;
    float scale = 1.0f / sqrtf((float)HD), mx = -INFINITY, sum = 0;
    for (int j = 0; j < T; j++) {
        float s = 0;
        for (int i = 0; i < HD; i++)
            s += q[i] * K[(size_t)j * ld + i];
        d->p[j] = s * scale;
        mx = d->p[j] > mx ? d->p[j] : mx;
    }
    for (int j = 0; j < T; j++)
        sum += d->p[j] = expf(d->p[j] - mx);
    for (int i = 0; i < HD; i++)
        out[i] = 0;
    for (int j = 0; j < T; j++) {
        float pj = d->p[j] / sum;
        for (int i = 0; i < HD; i++)
            out[i] += pj * Vv[(size_t)j * ld + i];
    }
}

/* Stores the step's keys and values, then attends every row and query
 * head, head h reading kv head h / (NH / NKV). */
static void attention_rows(GptDecoder *d, int l, const int *seq, int n)
{
    size_t KVW = kv_width(d), Q = qkv_width(d), A = (size_t)d->NH * d->HD;
    int group = d->NH / d->NKV;
    for (int r = 0; r < n; r++) {
        size_t base = (((size_t)l * d->S + seq[r]) * d->maxT) * KVW;
        const float *row = d->qkv + r * Q;
        int p = d->pos[seq[r]];
        memcpy(d->kc + base + p * KVW, row + A, KVW * sizeof(float));
        memcpy(d->vc + base + p * KVW, row + A + KVW, KVW * sizeof(float));
        for (int h = 0; h < d->NH; h++) {
            size_t kv = base + (size_t)(h / group) * d->HD;
            attend(d, row + (size_t)h * d->HD, d->kc + kv, d->vc + kv, p + 1, KVW,
                   d->att + r * A + (size_t)h * d->HD);
        }
    }
}

/* ---- blocks and the step ------------------------------------------------ */

/* x += attn(ln1(x)); x += mlp(ln2(x)) for the step's n rows */
static void gpt2_layer(GptDecoder *d, int l, const int *seq, int n)
{
    const GptLayer *w = &d->m->h[l];
    size_t nC = (size_t)n * d->C;
    ln_rows(d->h, d->x, w->ln1w, w->ln1b, n, d->C, d->eps);
    linear_rows(d->qkv, d->h, w->qkvw, w->qkvb, n);
    attention_rows(d, l, seq, n);
    linear_rows(d->h, d->att, w->attprojw, w->attprojb, n);
    add_rows(d->x, d->h, nC);
    ln_rows(d->h, d->x, w->ln2w, w->ln2b, n, d->C, d->eps);
    linear_rows(d->fc, d->h, w->fcw, w->fcb, n);
    gelu_rows(d->fc, (size_t)n * d->F);
    linear_rows(d->h, d->fc, w->fcprojw, w->fcprojb, n);
    add_rows(d->x, d->h, nC);
}

/* x += o_proj(attn(rope(qkv(rms1(x))))); x += down(swiglu(gate_up(rms2(x)))) */
static void llama_layer(GptDecoder *d, int l, const int *seq, int n)
{
    const GptLayer *w = &d->m->h[l];
    size_t nC = (size_t)n * d->C;
    rms_rows(d->h, d->x, w->ln1w, n, d->C, d->eps);
    linear_rows(d->qkv, d->h, w->qkvw, w->qkvb, n);
    rope_rows(d, seq, n);
    attention_rows(d, l, seq, n);
    linear_rows(d->h, d->att, w->attprojw, w->attprojb, n);
    add_rows(d->x, d->h, nC);
    rms_rows(d->h, d->x, w->ln2w, n, d->C, d->eps);
    linear_rows(d->fc, d->h, w->fcw, NULL, n);
    swiglu_rows(d->act, d->fc, n, d->F);
    linear_rows(d->h, d->act, w->fcprojw, NULL, n);
    add_rows(d->x, d->h, nC);
}

/* The step's rows are distinct sequences in range with room, tokens in
 * range; d->seen is left all 0. */
static int step_check(GptDecoder *d, const int *seq, const int32_t *tok, int n, char *err,
                      size_t errlen)
{
    if (n < 1 || n > d->S)
        return err_fail(err, errlen, "decode: %d rows in a step of a %d-sequence decoder", n, d->S);
    int rc = 0, r = 0;
    for (; rc == 0 && r < n; r++) {
        if (seq[r] < 0 || seq[r] >= d->S)
            rc = err_fail(err, errlen, "decode: sequence %d out of range [0, %d)", seq[r], d->S);
        else if (d->seen[seq[r]])
            rc = err_fail(err, errlen, "decode: sequence %d twice in one step", seq[r]);
        else if (d->pos[seq[r]] >= d->maxT)
            rc = err_fail(err, errlen, "decode: sequence %d is full (%d positions)", seq[r],
                          d->maxT);
        else if (tok[r] < 0 || tok[r] >= d->V)
            rc = err_fail(err, errlen, "decode: token %d out of range [0, %d)", (int)tok[r], d->V);
        if (rc == 0)
            d->seen[seq[r]] = 1;
    }
    for (int i = 0; i < r; i++)
        if (seq[i] >= 0 && seq[i] < d->S)
            d->seen[seq[i]] = 0;
    return rc;
}

/* x (n, C): the tokens' embeddings, GPT-2's plus its learned positions */
static void embed_rows(GptDecoder *d, const int *seq, const int32_t *tok, int n)
{
    size_t C = (size_t)d->C;
    for (int r = 0; r < n; r++) {
        const float *te = d->m->wte->data + (size_t)tok[r] * C;
        float *xr = d->x + r * C;
        if (d->llama) {
            memcpy(xr, te, C * sizeof(float));
            continue;
        }
        const float *pe = d->m->wpe->data + (size_t)d->pos[seq[r]] * C;
        for (size_t i = 0; i < C; i++)
            xr[i] = te[i] + pe[i];
    }
}

int gpt_decoder_step(GptDecoder *d, const int *seq, const int32_t *tok, int n, float *logits,
                     char *err, size_t errlen)
{
    if (step_check(d, seq, tok, n, err, errlen) != 0)
        return -1;
    const Gpt *m = d->m;
    embed_rows(d, seq, tok, n);
    for (int l = 0; l < d->L; l++)
        (d->llama ? llama_layer : gpt2_layer)(d, l, seq, n);
    if (d->llama)
        rms_rows(d->h, d->x, m->lnfw, n, d->C, d->eps);
    else
        ln_rows(d->h, d->x, m->lnfw, m->lnfb, n, d->C, d->eps);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, d->V, d->C, 1.0f, d->h, d->C,
                m->head->data, d->C, 0.0f, logits, d->V);
    for (int r = 0; r < n; r++)
        d->pos[seq[r]]++;
    return 0;
}
