/*
 * discover/probe.c — behaviour fingerprints of loss files (discover/probe.h).
 *
 * Every evaluation makes its own TensorCtx and frees it; the script's
 * sandbox is freed before returning, so probing leaves nothing behind.
 *
 * Letters: B pairs of a probe batch, T token positions.
 */
#include "discover/probe.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"

#define PB 16     /* pairs per probe batch */
#define PT 4      /* token positions */
#define COUPLED 4 /* pairs kept when the companions change */
#define BASE_LOGP -20.0f

enum { S_PC, S_PR, S_RC, S_RR, S_LC, S_LR, N_S };
enum { K_PC, K_PR, K_RC, K_RR, K_MC, K_MR, N_K };

typedef struct ProbeBatch {
    float seq[N_S][PB];      /* (B) each */
    float tok[N_K][PB * PT]; /* (B, T) each */
    int64_t step;
    double progress;
} ProbeBatch;

static const float grid_logits[PB] = {-60, -20,  -8,   -4, -2, -1, -0.5f, -0.1f,
                                      0,   0.1f, 0.5f, 1,  2,  4,  8,     20};

/* pair i with logits x: the chosen and rejected log-ratios differ by x and
 * share an offset d, so losses that read them separately see them too */
static void set_pair(ProbeBatch *p, int i, float x, float d, float lc, float lr)
{
    p->seq[S_RC][i] = BASE_LOGP - 0.25f * (float)(i % 3);
    p->seq[S_RR][i] = BASE_LOGP - 0.5f * (float)(i % 2);
    p->seq[S_PC][i] = p->seq[S_RC][i] + x / 2 + d;
    p->seq[S_PR][i] = p->seq[S_RR][i] - x / 2 + d;
    p->seq[S_LC][i] = lc;
    p->seq[S_LR][i] = lr;
    for (int t = 0; t < PT; t++) {
        int k = i * PT + t;
        float share = 1.0f / PT;
        p->tok[K_PC][k] = p->seq[S_PC][i] * share;
        p->tok[K_PR][k] = p->seq[S_PR][i] * share;
        p->tok[K_RC][k] = p->seq[S_RC][i] * share;
        p->tok[K_RR][k] = p->seq[S_RR][i] * share;
        p->tok[K_MC][k] = t < 1 + i % PT ? 1.0f : 0.0f;
        p->tok[K_MR][k] = t < 1 + (i + 2) % PT ? 1.0f : 0.0f;
    }
}

static void grid_batch(ProbeBatch *p)
{
    memset(p, 0, sizeof *p);
    for (int i = 0; i < PB; i++)
        set_pair(p, i, grid_logits[i], 0.3f * (float)((i % 5) - 2), (float)(3 + i % 5),
                 (float)(4 + (3 * i) % 7));
}

static void random_batch(ProbeBatch *p)
{
    Rng r;
    rng_seed(&r, 0x5eed5eedULL); /* fixed: the probe must not change between runs */
    memset(p, 0, sizeof *p);
    p->step = 60;
    p->progress = 0.6;
    for (int i = 0; i < PB; i++)
        set_pair(p, i, 12.0f * (float)(rng_uniform(&r) - 0.5),
                 2.0f * (float)(rng_uniform(&r) - 0.5), (float)(1 + rng_below(&r, 9)),
                 (float)(1 + rng_below(&r, 9)));
}

/* the grid batch with every pair after the first COUPLED replaced */
static void companion_batch(ProbeBatch *p)
{
    grid_batch(p);
    for (int i = COUPLED; i < PB; i++)
        set_pair(p, i, grid_logits[i] + 7.0f, 1.0f, 2.0f, 9.0f);
}

/* ---- one evaluation --------------------------------------------------------- */

static Tensor *field(TensorCtx *ctx, int ndim, const int *shape, const float *data, bool grad)
{
    Tensor *t = tensor_from_data(ctx, ndim, shape, data);
    if (t && grad && tensor_requires_grad(t) != 0)
        return NULL;
    return t;
}

static void make_batch(TensorCtx *ctx, const ProbeBatch *p, LossBatch *b)
{
    int s1[1] = {PB}, s2[2] = {PB, PT};
    *b = (LossBatch){.B = PB, .T = PT, .step = p->step, .progress = p->progress};
    b->policy_chosen_logps = field(ctx, 1, s1, p->seq[S_PC], true);
    b->policy_rejected_logps = field(ctx, 1, s1, p->seq[S_PR], true);
    b->reference_chosen_logps = field(ctx, 1, s1, p->seq[S_RC], false);
    b->reference_rejected_logps = field(ctx, 1, s1, p->seq[S_RR], false);
    b->chosen_lengths = field(ctx, 1, s1, p->seq[S_LC], false);
    b->rejected_lengths = field(ctx, 1, s1, p->seq[S_LR], false);
    b->policy_chosen_token_logps = field(ctx, 2, s2, p->tok[K_PC], true);
    b->policy_rejected_token_logps = field(ctx, 2, s2, p->tok[K_PR], true);
    b->reference_chosen_token_logps = field(ctx, 2, s2, p->tok[K_RC], false);
    b->reference_rejected_token_logps = field(ctx, 2, s2, p->tok[K_RR], false);
    b->chosen_mask = field(ctx, 2, s2, p->tok[K_MC], false);
    b->rejected_mask = field(ctx, 2, s2, p->tok[K_MR], false);
}

/* Appends the loss values (and, with grads, the gradient of their mean
 * w.r.t. the policy log-probs) to out; 0 or -1 with err set. */
static int evaluate(LossScript *ls, const ProbeBatch *p, bool grads, Behaviour *out, char *err,
                    size_t errlen)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    if (!ctx) {
        snprintf(err, errlen, "probe: out of memory");
        return -1;
    }
    LossBatch b;
    make_batch(ctx, p, &b);
    Tensor *l = tensor_ctx_ok(ctx) ? loss_eval(ls, ctx, &b, err, errlen) : NULL;
    Tensor *root = l && l->size > 1 ? ag_mean(ctx, l, AG_ALL, false) : l;
    int rc = -1;
    if (!l)
        goto done;
    if (!root || (grads && ag_backward(ctx, root, NULL) != 0)) {
        snprintf(err, errlen, "probe: backward: %s", tensor_ctx_error(ctx));
        goto done;
    }
    for (int64_t i = 0; i < l->size && out->n < PROBE_VALUES; i++)
        out->values[out->n++] = l->data[i];
    const Tensor *pol[2] = {b.policy_chosen_logps, b.policy_rejected_logps};
    for (int k = 0; grads && k < 2; k++)
        for (int i = 0; i < PB && out->n < PROBE_VALUES; i++)
            out->values[out->n++] = pol[k]->grad ? pol[k]->grad[i] : 0.0;
    rc = 0;
done:
    tensor_ctx_free(ctx);
    return rc;
}

static bool agree(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) && isnan(b);
    if (isinf(a) || isinf(b))
        return a == b;
    double m = fabs(a) > fabs(b) ? fabs(a) : fabs(b);
    return fabs(a - b) <= PROBE_RTOL * (1.0 + m);
}

/* pairs 0..COUPLED-1 of the grid batch, beside other companions */
static int coupled(LossScript *ls, const Behaviour *grid, bool *out, char *err, size_t errlen)
{
    if (loss_is_batch_level(ls)) {
        *out = true;
        return 0;
    }
    ProbeBatch p;
    companion_batch(&p);
    Behaviour other = {0};
    if (evaluate(ls, &p, false, &other, err, errlen) != 0)
        return -1;
    *out = false;
    for (int i = 0; i < COUPLED; i++)
        *out = *out || !agree(grid->values[i], other.values[i]);
    return 0;
}

int probe_behaviour(const char *path, const LossLimits *limits, Behaviour *out, char *err,
                    size_t errlen)
{
    memset(out, 0, sizeof *out);
    LossScript *ls = loss_load(path, NULL, limits, err, errlen);
    if (!ls)
        return -1;
    ProbeBatch *p = malloc(sizeof *p);
    int rc = -1;
    if (!p) {
        snprintf(err, errlen, "probe: out of memory");
        goto done;
    }
    grid_batch(p);
    if (evaluate(ls, p, true, out, err, errlen) != 0 ||
        coupled(ls, out, &out->coupled, err, errlen) != 0)
        goto done;
    random_batch(p);
    if (evaluate(ls, p, true, out, err, errlen) != 0)
        goto done;
    out->hash = probe_hash(out->values, out->n);
    rc = 0;
done:
    free(p);
    loss_free(ls);
    return rc;
}

bool probe_same(const Behaviour *a, const Behaviour *b)
{
    if (a->n != b->n)
        return false;
    for (int i = 0; i < a->n; i++)
        if (!agree(a->values[i], b->values[i]))
            return false;
    return true;
}

/* FNV-1a over (mantissa, exponent) of each value rounded to PROBE_DIGITS */
uint64_t probe_hash(const double *values, int n)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) {
        double v = values[i];
        int64_t m = 0, e = 0;
        if (isnan(v)) {
            m = INT64_MAX;
        } else if (isinf(v)) {
            m = v > 0 ? INT64_MAX - 1 : INT64_MIN + 1;
        } else if (fabs(v) >= 1e-12) {
            e = (int64_t)floor(log10(fabs(v))) - (PROBE_DIGITS - 1);
            m = llround(v / pow(10.0, (double)e));
        }
        unsigned char bytes[16];
        memcpy(bytes, &m, 8);
        memcpy(bytes + 8, &e, 8);
        for (int k = 0; k < 16; k++)
            h = (h ^ bytes[k]) * 1099511628211ULL;
    }
    return h;
}
