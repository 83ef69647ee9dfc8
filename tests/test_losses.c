/*
 * test_losses.c — every file in losses/ against its closed form.
 *
 * For each library loss there is a reference function below, written in C
 * from the paper's (or TRL's) formula in its literal form and evaluated in
 * long double, so that it shares neither code nor numerical rewritings with
 * the Lua file: where the Lua file uses a float-stable form (DiscoPOP's
 * exp(logsigmoid(rho/tau) - rho) for w * exp(-rho)), the reference computes
 * the product itself, which long double holds without overflow for |rho| up
 * to 1000 (e^1000 ~ 1e434 < LDBL_MAX ~ 1e4932; checked at compile time).
 * What the references do share
 * is sigmoid and log sigmoid evaluated by the sign of x (the same functions,
 * computed without overflow), and DBAQL's 1 - sigmoid(v) taken as
 * sigmoid(-v) (said where it is done).
 *
 * What is checked, per loss (one TAP case each):
 *   <name>: defaults    the file's name and declared params (with the default
 *                       values its header documents); values per pair and
 *                       d mean / d policy_{chosen,rejected}_logps on two
 *                       ordinary batches (wide and narrow logit spread);
 *   <name>: overrides   each param set through loss_set_param to another
 *                       value: the result follows the formula at that value
 *                       and moves by far more than the tolerance (so a file
 *                       that ignores a param fails); an undeclared key fails;
 *   <name>: extremes    logits of +-1000 (log-ratios up to 2000) at the defaults
 *                       and, where meaningful, at beta = 1 (|rho| >= 1000):
 *                       values and gradients finite and equal to the
 *                       reference; plus degenerate batches (B = 1, B = 4
 *                       equal pairs) where batch statistics vanish.
 * and across the library: every .lua file in losses/ has a case here (a new
 * loss without tests fails), every header names its source, use() composes
 * library files, bco_pair's older running-mean form keeps its state,
 * DiscoPOP has the published shape (f(0), f'(0), its stationary points), and
 * AOT pairs quantiles, not pairs (a worked example).
 *
 * Losses that sort across the batch (AOT, .sort_keys): value k belongs to the
 * k-th quantile, which the reference finds with its own sort, and the
 * gradient follows the permutation back to the pairs. A tie between two
 * pairs' sorted keys is a kink, where a central difference is no gradient, so
 * every batch such a loss sees is checked to have distinct keys (the B = 4
 * equal pairs are exempt: see sort_keys_tie), and its extreme batch is
 * batch_extreme_distinct (batch_extreme repeats a log-ratio).
 *
 * Inputs are built so float32 holds them exactly: log-probs on a 1/64 grid
 * (|x| < 2^12), the chosen policy log-prob offset by 1/128, so every logit
 * z = (pc - pr) - (rc - rr) and every pc - pr is an odd multiple of 1/128:
 * never 0 and never on a kink of hinge/relu/where (those sit at z = 0,
 * z = 1/beta, pc = pr, all multiples of 1/64 for the betas used here), where a
 * finite difference would straddle the kink. Differences of log-probs are
 * then exact in float32 too.
 *
 * Gradients of the reference are central finite differences in long double
 * with step h = 1e-6 * max(1, |x|), summed pair by pair (see run_ref):
 * truncation h^2 f'''/6 and rounding 1e-19 |f| / h are both below 1e-9 of the
 * gradients here, so the reference gradient is exact at the tolerances below.
 *
 * Tolerances, |got - want| <= rtol |want| + atol, and why:
 *   values     rtol 2e-5: a loss is ~10-20 float32 ops, each rounding by at
 *              most 6e-8 relative, and beta itself is rounded to float (up to
 *              6e-8 relative, which exp(-rho) at rho = 50 turns into 3e-6);
 *              formula errors are >= 1e-3 relative.
 *              atol 2e-6 * (1 + beta * M), M the largest log-ratio or logit
 *              in the batch (raw log-prob for SimPO): the absolute rounding
 *              (6e-8 M) of the quantities that are divided (by a length, the
 *              batch size, tau) before being subtracted, times beta and the
 *              loss's slope (<= ~2), with a margin of ~10; it also covers
 *              values that cancel to ~0 (1 - sigmoid, apo_down).
 *   gradients  rtol 1e-4: backward doubles the op count and multiplies
 *              rounded forward values; atol as for values, divided by B as
 *              the gradient of the mean is.
 * The worst case seen is 8% of its tolerance (CELL at e^50), most are < 1%.
 */
#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua/loss.h"
#include "core/ops.h"
#include "prefrun_config.h"
#include "core/rng.h"
#include "testlib.h"

typedef long double real;
/* the literal formulas need e^1000 (see the top): x87 or quad long double */
_Static_assert(LDBL_MAX_10_EXP > 440, "the references need a long double wider than double");

#define MAXB 16       /* largest batch the tests build */
#define MAXP 6        /* most params a library loss declares */
#define VAL_RTOL 2e-5 /* see the file comment for every tolerance */
#define VAL_ATOL 2e-6
#define GRAD_RTOL 1e-4
#define GRAD_ATOL 2e-6

/* ------------------------------------------------------------------------ */
/* batches                                                                   */

/* B pairs; every field (B), all values exactly representable in float32 */
typedef struct RefBatch {
    int B;
    real pc[MAXB], pr[MAXB]; /* policy chosen / rejected log-probs */
    real rc[MAXB], rr[MAXB]; /* reference chosen / rejected log-probs */
    real lc[MAXB], lr[MAXB]; /* response token counts */
} RefBatch;

static real grid64(Rng *r, double lo, double hi)
{
    return (real)floor((lo + (hi - lo) * rng_uniform(r)) * 64.0) / 64;
}

/* B pairs with reference log-probs in [-400, -20], chosen / rejected
 * log-ratios in [-spread, spread], lengths in [len_lo, len_hi]. */
static RefBatch batch_random(uint64_t seed, int B, double spread, int len_lo, int len_hi)
{
    Rng r;
    rng_seed(&r, seed);
    RefBatch rb = {.B = B};
    for (int i = 0; i < B; i++) {
        rb.rc[i] = grid64(&r, -400, -20);
        rb.rr[i] = grid64(&r, -400, -20);
        rb.pc[i] = rb.rc[i] + grid64(&r, -spread, spread) + 1.0L / 128; /* off-grid: see top */
        rb.pr[i] = rb.rr[i] + grid64(&r, -spread, spread);
        rb.lc[i] = len_lo + (int)((len_hi - len_lo + 1) * rng_uniform(&r));
        rb.lr[i] = len_lo + (int)((len_hi - len_lo + 1) * rng_uniform(&r));
    }
    return rb;
}

/* wide: logits ~ +-60, the regime of a run in progress */
static RefBatch batch_wide(void) { return batch_random(11, 8, 30, 1, 400); }

/* narrow: logits ~ +-3, the start of a run (and where batch-variance losses
 * like DBAQL leave their saturated regime); one empty response (length 0),
 * which length-normalised losses clamp to 1 */
static RefBatch batch_narrow(void)
{
    RefBatch rb = batch_random(23, 5, 1.5, 1, 60);
    rb.lr[2] = 0;
    return rb;
}

/* extremes: logits of +-1000 from log-ratios of up to +-2000, single-token
 * and long responses. Log-ratios (chosen, rejected) per pair; o = 1/128 keeps
 * z off the grid. */
static RefBatch batch_extreme(void)
{
    const real o = 1.0L / 128;
    const real dcdr[8][2] = {
        {1000 + o, 0},   {o, 1000},    {-1000 + o, -2000}, {500 + o, -500},
        {-500 + o, 500}, {100 + o, 0}, {-1000 + o, 0},     {3 + o, 3},
    };
    const real len[8][2] = {{1, 1}, {1, 1}, {1000, 1}, {3, 5}, {1, 1}, {7, 2}, {1, 1}, {1, 1}};
    RefBatch rb = batch_random(37, 8, 1, 1, 1);
    for (int i = 0; i < 8; i++) {
        rb.pc[i] = rb.rc[i] + dcdr[i][0];
        rb.pr[i] = rb.rr[i] + dcdr[i][1];
        rb.lc[i] = len[i][0];
        rb.lr[i] = len[i][1];
    }
    return rb;
}

/* one pair (B = 1): the sample variance of a single value is undefined */
static RefBatch batch_single(void) { return batch_random(41, 1, 30, 1, 50); }

/* four copies of one pair: every batch variance is exactly 0 (B a power of
 * two, so the float32 mean of equal values is exact) */
static RefBatch batch_equal(void)
{
    RefBatch rb = batch_random(43, 4, 30, 1, 50);
    for (int i = 1; i < 4; i++) {
        rb.pc[i] = rb.pc[0], rb.pr[i] = rb.pr[0], rb.rc[i] = rb.rc[0], rb.rr[i] = rb.rr[0];
        rb.lc[i] = rb.lc[0], rb.lr[i] = rb.lr[0];
    }
    return rb;
}

/* batch_extreme with pair i's log-ratios moved apart by i/16 (chosen up,
 * rejected down), for the losses that sort them (AOT): batch_extreme repeats
 * -1000 + o among the chosen and 0 among the rejected log-ratios, ties where
 * such a loss has a kink. |logits| still reach 1000, log-ratios 2000. */
static RefBatch batch_extreme_distinct(void)
{
    RefBatch rb = batch_extreme();
    for (int i = 0; i < rb.B; i++) {
        rb.pc[i] += (real)i / 16;
        rb.pr[i] -= (real)i / 16;
    }
    return rb;
}

/* ------------------------------------------------------------------------ */
/* reference functions (long double, literal formulas)                        */

/* a copy of a script's params (names copied: the script may be freed first) */
typedef struct Params {
    int n;
    char name[MAXP][32];
    double value[MAXP];
} Params;

static bool missing_param;

static real P(const Params *p, const char *name)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->name[i], name) == 0)
            return p->value[i];
    missing_param = true;
    return NAN;
}

static real sig(real x) { return x >= 0 ? 1 / (1 + expl(-x)) : expl(x) / (1 + expl(x)); }
static real logsig(real x) { return x >= 0 ? -log1pl(expl(-x)) : x - log1pl(expl(x)); }
static real relu_(real x) { return x > 0 ? x : 0; }
static real meanl(const real *x, int n)
{
    real s = 0;
    for (int i = 0; i < n; i++)
        s += x[i];
    return s / n;
}
/* sample variance (Bessel), taken as 0 for one value (see aqfl.lua) */
static real sample_var(const real *x, int n)
{
    real m = meanl(x, n), s = 0;
    for (int i = 0; i < n; i++)
        s += (x[i] - m) * (x[i] - m);
    return n > 1 ? s / (n - 1) : 0;
}
static real len1(real l) { return l > 1 ? l : 1; } /* TRL clamps lengths to >= 1 */

/* z = (pc - pr) - (rc - rr), the DPO logits */
static real logit(const RefBatch *b, int i)
{
    return (b->pc[i] - b->pr[i]) - (b->rc[i] - b->rr[i]);
}
static real dch(const RefBatch *b, int i) { return b->pc[i] - b->rc[i]; }
static real drj(const RefBatch *b, int i) { return b->pr[i] - b->rr[i]; }

/* frozen: values the loss computes from the batch but detaches (bco_pair's
 * running mean); the finite differences hold them fixed, as backward does */
typedef void (*RefFn)(const RefBatch *b, const Params *p, const real *frozen, real *out);
typedef void (*FreezeFn)(const RefBatch *b, const Params *p, real *frozen);

/* DPO eq. 7 + cDPO: -(1-e) log s(bz) - e log s(-bz) */
static void ref_dpo(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), e = P(p, "label_smoothing");
    for (int i = 0; i < b->B; i++)
        out[i] = -(1 - e) * logsig(beta * logit(b, i)) - e * logsig(-beta * logit(b, i));
}

/* TRL sigmoid: -log s(bz) */
static void ref_sigmoid(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    for (int i = 0; i < b->B; i++)
        out[i] = -logsig(P(p, "beta") * logit(b, i));
}

/* SLiC hinge: max(0, 1 - bz) */
static void ref_hinge(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    for (int i = 0; i < b->B; i++)
        out[i] = relu_(1 - P(p, "beta") * logit(b, i));
}

/* IPO eq. 17: (d - 1/(2b))^2, d per-token (current TRL) or per-sequence */
static void ref_ipo(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta");
    bool norm = P(p, "length_normalize") != 0;
    for (int i = 0; i < b->B; i++) {
        real d = norm ? dch(b, i) / len1(b->lc[i]) - drj(b, i) / len1(b->lr[i]) : logit(b, i);
        out[i] = powl(d - 1 / (2 * beta), 2);
    }
}

/* robust DPO: (-(1-e) log s(bz) + e log s(-bz)) / (1 - 2e) */
static void ref_robust(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), e = P(p, "label_smoothing");
    for (int i = 0; i < b->B; i++) {
        real x = beta * logit(b, i);
        out[i] = (-(1 - e) * logsig(x) + e * logsig(-x)) / (1 - 2 * e);
    }
}

/* EXO eq. 16, K = 2: KL([s(bz), s(-bz)] || [1-e, e]) */
static void ref_exo_pair(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), e = P(p, "label_smoothing");
    for (int i = 0; i < b->B; i++) {
        real x = beta * logit(b, i);
        real qw = sig(x), ql = sig(-x);
        out[i] = qw * (logsig(x) - logl(1 - e)) + ql * (logsig(-x) - logl(e));
    }
}

/* NCA pair: -log s(rc) - log s(-rc)/2 - log s(-rr)/2 */
static void ref_nca_pair(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta");
    for (int i = 0; i < b->B; i++) {
        real c = beta * dch(b, i), r = beta * drj(b, i);
        out[i] = -logsig(c) - 0.5L * logsig(-c) - 0.5L * logsig(-r);
    }
}

/* SPPO hard: (dc - 1/(2b))^2 + (dr + 1/(2b))^2 */
static void ref_sppo_hard(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real t = 1 / (2 * P(p, "beta"));
    for (int i = 0; i < b->B; i++)
        out[i] = powl(dch(b, i) - t, 2) + powl(drj(b, i) + t, 2);
}

/* APO-zero eq. 7: 1 - s(b dc) + s(b dr) */
static void ref_apo_zero(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta");
    for (int i = 0; i < b->B; i++)
        out[i] = (1 - sig(beta * dch(b, i))) + sig(beta * drj(b, i));
}

/* APO-down eq. 8: s(b dc) + 1 - s(b (dc - dr)) */
static void ref_apo_down(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta");
    for (int i = 0; i < b->B; i++)
        out[i] = sig(beta * dch(b, i)) + (1 - sig(beta * (dch(b, i) - drj(b, i))));
}

/* BCO pair: -log s(rc - delta) - log s(-(rr - delta)); delta = 0 (current
 * TRL) or the running mean of the batch-mean reward (older TRL), frozen[0] */
static void ref_bco_pair(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    real beta = P(p, "beta");
    real delta = P(p, "running_mean") != 0 ? fz[0] : 0;
    for (int i = 0; i < b->B; i++)
        out[i] = -logsig(beta * dch(b, i) - delta) - logsig(-(beta * drj(b, i) - delta));
}

/* the mean reward over the 2B rewards [b dc ; b dr] of one batch */
static real bco_batch_reward(const RefBatch *b, real beta)
{
    real s = 0;
    for (int i = 0; i < b->B; i++)
        s += beta * dch(b, i) + beta * drj(b, i);
    return s / (2 * b->B);
}

/* a freshly loaded script's first step: delta_1 = m_1 */
static void freeze_bco_pair(const RefBatch *b, const Params *p, real *fz)
{
    fz[0] = bco_batch_reward(b, P(p, "beta"));
}

/* DiscoPOP eq. 5 (LRML), literal: (1 - w)(-log s(rho)) + w e^-rho, w = s(rho/tau) */
static void ref_discopop(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), tau = P(p, "tau");
    for (int i = 0; i < b->B; i++) {
        real rho = beta * logit(b, i), w = sig(rho / tau);
        out[i] = (1 - w) * -logsig(rho) + w * expl(-rho);
    }
}

/* length-normalised DPO (TRL sigmoid_norm, Tulu 3 eq. 6) */
static void ref_sigmoid_norm(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    for (int i = 0; i < b->B; i++) {
        real d = dch(b, i) / len1(b->lc[i]) - drj(b, i) / len1(b->lr[i]);
        out[i] = -logsig(P(p, "beta") * d);
    }
}

/* TRL sft: token-mean NLL of the batch's chosen responses, for every pair */
static void ref_sft(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)p, (void)fz;
    real lp = 0, n = 0;
    for (int i = 0; i < b->B; i++)
        lp += b->pc[i], n += b->lc[i];
    for (int i = 0; i < b->B; i++)
        out[i] = -lp / (n > 1 ? n : 1);
}

/* SimPO eq. 6: -log s(b pc/|yc| - b pr/|yr| - gamma), no reference model */
static void ref_simpo(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), gamma = P(p, "gamma");
    for (int i = 0; i < b->B; i++)
        out[i] =
            -logsig(beta * b->pc[i] / len1(b->lc[i]) - beta * b->pr[i] / len1(b->lr[i]) - gamma);
}

/* TRL kto_pair (HALOs eq. 7): the 2B values [l_c ; l_r] averaged per pair */
static void ref_kto_pair(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), dc[MAXB] = {0}, dr[MAXB] = {0};
    for (int i = 0; i < b->B; i++)
        dc[i] = dch(b, i), dr[i] = drj(b, i);
    real kl_c = relu_(meanl(dc, b->B)), kl_r = relu_(meanl(dr, b->B));
    for (int i = 0; i < b->B; i++) {
        real lc = 1 - sig(beta * (dc[i] - kl_r));
        real lr = 1 - sig(beta * (kl_c - dr[i]));
        out[i] = (lc + lr) / 2;
    }
}

/* CELL: alpha e^-rho + (1 - alpha)(-log s(rho)) */
static void ref_cell(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), a = P(p, "alpha");
    for (int i = 0; i < b->B; i++) {
        real rho = beta * logit(b, i);
        out[i] = a * expl(-rho) + (1 - a) * -logsig(rho);
    }
}

/* PADLL: base (1 - penalty [z < 0]) (-log s(bz)) */
static void ref_padll(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), base = P(p, "base_decay"), pen = P(p, "mismatch_penalty");
    for (int i = 0; i < b->B; i++) {
        real z = logit(b, i);
        out[i] = base * (1 - (z < 0 ? pen : 0)) * -logsig(beta * z);
    }
}

/* PFL: pc > pr ? -log s(rho) / k : relu(1 - rho) k */
static void ref_pfl(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), k = P(p, "focus_scale");
    for (int i = 0; i < b->B; i++) {
        real rho = beta * logit(b, i);
        out[i] = b->pc[i] > b->pr[i] ? -logsig(rho) / k : relu_(1 - rho) * k;
    }
}

/* AQL: q = s(-(x - m)), m = pct + w (s(mean x) - pct), x = rho / tau;
 * q (-log s(rho)) + (1 - q) relu(1 - rho) */
static void ref_aql(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), tau = P(p, "tau"), pct = P(p, "percentile");
    real mw = P(p, "moving_weight"), x[MAXB] = {0};
    for (int i = 0; i < b->B; i++)
        x[i] = beta * logit(b, i) / tau;
    real m = pct + mw * (sig(meanl(x, b->B)) - pct);
    for (int i = 0; i < b->B; i++) {
        real rho = beta * logit(b, i), q = sig(-(x[i] - m));
        out[i] = q * -logsig(rho) + (1 - q) * relu_(1 - rho);
    }
}

/* AQFL: sd = sample std of x = rho/tau; q0 = sd mean(s(-x));
 * q = q0 + u (s(mean x) - q0); w = s(k |x - q|);
 * w (-log s(rho)) + (1 - w) relu(1 - rho) */
static void ref_aqfl(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), tau = P(p, "tau"), u = P(p, "update_rate");
    real k = P(p, "distance_scale"), x[MAXB] = {0}, sx[MAXB] = {0};
    for (int i = 0; i < b->B; i++)
        x[i] = beta * logit(b, i) / tau, sx[i] = sig(-x[i]);
    real q0 = sqrtl(sample_var(x, b->B)) * meanl(sx, b->B);
    real q = q0 + u * (sig(meanl(x, b->B)) - q0);
    for (int i = 0; i < b->B; i++) {
        real rho = beta * logit(b, i), w = sig(k * fabsl(x[i] - q));
        out[i] = w * -logsig(rho) + (1 - w) * relu_(1 - rho);
    }
}

/* DBAQL: c = r s(v), v = sample var of rho/tau;
 * c (-log s(rho/T)) + (1 - c) e^(-rho T). 1 - c is written (1 - r) + r s(-v),
 * the same number without the cancellation of 1 - s(v) near 1 (v ~ 1e2..1e8
 * here), which would cost even long double its precision. */
static void ref_dbaql(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    real beta = P(p, "beta"), tau = P(p, "tau"), T = P(p, "temperature"), r = P(p, "blend_rate");
    real x[MAXB] = {0};
    for (int i = 0; i < b->B; i++)
        x[i] = beta * logit(b, i) / tau;
    real v = sample_var(x, b->B);
    real c = r * sig(v), one_minus_c = (1 - r) + r * sig(-v);
    for (int i = 0; i < b->B; i++) {
        real rho = beta * logit(b, i);
        out[i] = c * -logsig(rho / T) + one_minus_c * expl(-rho * T);
    }
}

/* AOT's two sorted sides (its own insertion sort, ascending): a and c are
 * sorted separately and delta[k] = a_(k) - c_(k), k-th smallest against k-th
 * smallest. Ties do not matter to the values; the tests keep the sorted keys
 * distinct where the gradient is checked (see check_sort_keys). */
static void sort_ascending(real *x, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && x[j - 1] > x[j]; j--) {
            real t = x[j];
            x[j] = x[j - 1];
            x[j - 1] = t;
        }
}

/* the keys an AOT loss sorts, (B) each: aot sorts the policy margins against
 * the reference margins; aot_unpaired the chosen against the rejected
 * log-ratios */
typedef void (*SortKeysFn)(const RefBatch *b, real *a, real *c);

static void keys_aot(const RefBatch *b, real *a, real *c)
{
    for (int i = 0; i < b->B; i++)
        a[i] = b->pc[i] - b->pr[i], c[i] = b->rc[i] - b->rr[i];
}

static void keys_aot_unpaired(const RefBatch *b, real *a, real *c)
{
    for (int i = 0; i < b->B; i++)
        a[i] = dch(b, i), c[i] = drj(b, i);
}

static void sorted_delta(const RefBatch *b, SortKeysFn keys, real *delta)
{
    real a[MAXB], c[MAXB];
    keys(b, a, c);
    sort_ascending(a, b->B);
    sort_ascending(c, b->B);
    for (int k = 0; k < b->B; k++)
        delta[k] = a[k] - c[k];
}

/* AOT (TRL aot / aot_unpaired): -(1-e) log s(b delta_k) - e log s(-b delta_k),
 * one value per quantile k */
static void ref_aot_keys(const RefBatch *b, const Params *p, SortKeysFn keys, real *out)
{
    real beta = P(p, "beta"), e = P(p, "label_smoothing"), delta[MAXB];
    sorted_delta(b, keys, delta);
    for (int k = 0; k < b->B; k++)
        out[k] = -(1 - e) * logsig(beta * delta[k]) - e * logsig(-beta * delta[k]);
}

static void ref_aot(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    ref_aot_keys(b, p, keys_aot, out);
}

static void ref_aot_unpaired(const RefBatch *b, const Params *p, const real *fz, real *out)
{
    (void)fz;
    ref_aot_keys(b, p, keys_aot_unpaired, out);
}

/* ------------------------------------------------------------------------ */
/* the case table                                                            */

typedef struct ParamSpec {
    const char *name;
    double def; /* the default the file must declare */
    double alt; /* a second value for the override check */
} ParamSpec;

typedef struct LossCase {
    const char *file; /* losses/<file>.lua; also the loss's name */
    RefFn ref;
    FreezeFn freeze; /* NULL when nothing is detached */
    ParamSpec params[MAXP];
    /* why the |rho| = |beta * logits| = 1000 check (beta set to 1) does not
     * apply; NULL where it does */
    const char *no_rho1000;
    /* the loss divides raw log-probs (not log-ratios) before differencing
     * them, so their float32 rounding sets the absolute error (SimPO) */
    bool raw_logps;
    /* the loss sorts these keys across the batch (AOT): its logits are the
     * sorted differences, and a tie between two pairs' keys is a kink where
     * finite differences are no gradient, so batches are checked for ties
     * and the extreme batch is batch_extreme_distinct */
    SortKeysFn sort_keys;
} LossCase;

#define BETA(def, alt)                                                                             \
    {                                                                                              \
        "beta", def, alt                                                                           \
    }
static const LossCase cases[] = {
    {.file = "dpo", .ref = ref_dpo, .params = {BETA(0.1, 0.25), {"label_smoothing", 0, 0.2}}},
    {.file = "sigmoid", .ref = ref_sigmoid, .params = {BETA(0.1, 0.25)}},
    {.file = "hinge", .ref = ref_hinge, .params = {BETA(0.1, 0.25)}},
    {.file = "ipo", .ref = ref_ipo, .params = {BETA(0.1, 0.25), {"length_normalize", 1, 0}}},
    {.file = "robust",
     .ref = ref_robust,
     .params = {BETA(0.1, 0.25), {"label_smoothing", 0.1, 0.3}}},
    {.file = "exo_pair",
     .ref = ref_exo_pair,
     .params = {BETA(0.1, 0.25), {"label_smoothing", 1e-3, 0.05}}},
    {.file = "nca_pair", .ref = ref_nca_pair, .params = {BETA(0.1, 0.25)}},
    {.file = "sppo_hard", .ref = ref_sppo_hard, .params = {BETA(0.1, 0.25)}},
    {.file = "apo_zero", .ref = ref_apo_zero, .params = {BETA(0.1, 0.25)}},
    {.file = "apo_down", .ref = ref_apo_down, .params = {BETA(0.1, 0.25)}},
    {.file = "bco_pair",
     .ref = ref_bco_pair,
     .freeze = freeze_bco_pair,
     .params = {BETA(0.1, 0.25), {"running_mean", 0, 1}}},
    {.file = "discopop", .ref = ref_discopop, .params = {BETA(0.05, 0.1), {"tau", 0.05, 0.2}}},
    {.file = "lrml", .ref = ref_discopop, .params = {BETA(0.05, 0.1), {"tau", 0.05, 0.2}}},
    {.file = "sigmoid_norm", .ref = ref_sigmoid_norm, .params = {BETA(5.0, 2.0)}},
    {.file = "sft", .ref = ref_sft, .no_rho1000 = "no beta; the extreme log-probs are the test"},
    {.file = "simpo",
     .ref = ref_simpo,
     .params = {BETA(2.0, 2.5), {"gamma", 1.0, 0.3}},
     .raw_logps = true},
    {.file = "kto_pair", .ref = ref_kto_pair, .params = {BETA(0.05, 0.2)}},
    {.file = "cell",
     .ref = ref_cell,
     .params = {BETA(0.05, 0.1), {"alpha", 0.5, 0.8}},
     .no_rho1000 = "at rho = -1000 the true value 0.5 e^1000 ~ 1e434 is beyond float32: "
                   "+inf is the right answer there, not a finite one"},
    {.file = "padll",
     .ref = ref_padll,
     .params = {BETA(0.05, 0.1), {"base_decay", 0.9, 0.6}, {"mismatch_penalty", 0.5, 0.2}}},
    {.file = "pfl", .ref = ref_pfl, .params = {BETA(0.05, 0.1), {"focus_scale", 2.0, 3.0}}},
    {.file = "aql",
     .ref = ref_aql,
     .params = {BETA(0.05, 0.1),
                {"tau", 0.05, 0.2},
                {"percentile", 0.5, 0.9},
                {"moving_weight", 0.01, 0.5}}},
    {.file = "aqfl",
     .ref = ref_aqfl,
     .params = {BETA(0.05, 0.1),
                {"tau", 0.05, 0.2},
                {"update_rate", 0.05, 0.5},
                {"distance_scale", 0.1, 0.5}}},
    /* DBAQL at rho = -1000: (1 - c) e^900 with 1 - c = s(-v) ~ e^-(4e8) for
     * the extreme batch's variance: the true value is finite (~0) */
    {.file = "dbaql",
     .ref = ref_dbaql,
     .params = {BETA(0.05, 0.1),
                {"tau", 0.05, 0.2},
                {"temperature", 0.9, 0.5},
                {"blend_rate", 1.0, 0.7}}},
    {.file = "aot",
     .ref = ref_aot,
     .params = {BETA(0.1, 0.25), {"label_smoothing", 0, 0.2}},
     .sort_keys = keys_aot},
    {.file = "aot_unpaired",
     .ref = ref_aot_unpaired,
     .params = {BETA(0.1, 0.25), {"label_smoothing", 0, 0.2}},
     .sort_keys = keys_aot_unpaired},
};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

static int case_nparams(const LossCase *c)
{
    int n = 0;
    while (n < MAXP && c->params[n].name)
        n++;
    return n;
}

/* 1 + beta * M: the size of the absolute float32 rounding in the loss's
 * argument, with M the largest quantity the loss rounds before subtracting
 * (log-ratios and logits; raw log-probs for SimPO). Log-prob differences
 * themselves are exact for these batches. */
static double tol_scale(const LossCase *c, const Params *p, const RefBatch *rb)
{
    double beta = 0, m = 0;
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->name[i], "beta") == 0)
            beta = p->value[i];
    real delta[MAXB];
    if (c->sort_keys)
        sorted_delta(rb, c->sort_keys, delta);
    for (int i = 0; i < rb->B; i++) {
        m = fmax(m, fmax(fabsl(dch(rb, i)), fabsl(drj(rb, i))));
        m = fmax(m, fabsl(logit(rb, i)));
        if (c->raw_logps)
            m = fmax(m, fmax(fabsl(rb->pc[i]), fabsl(rb->pr[i])));
        if (c->sort_keys) /* AOT's logits, up to |pc - pr| + |rc - rr| */
            m = fmax(m, fabsl(delta[i]));
    }
    return 1 + beta * m;
}

/* ------------------------------------------------------------------------ */
/* running a script and the reference                                       */

static char losses_dir[4096];

static const char *root_dir(void)
{
    const char *r = getenv("PREFRUN_ROOT");
    return r && *r ? r : PREFRUN_SOURCE_ROOT;
}

static LossScript *load_case(const char *file, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.lua", losses_dir, file);
    LossLimits lim = {0};
    return loss_load(path, losses_dir, &lim, err, errlen);
}

typedef struct Result {
    bool ok;
    char err[512];
    int B;
    double loss[MAXB];           /* per pair */
    double mean;                 /* what the host minimises */
    double gpc[MAXB], gpr[MAXB]; /* d mean / d policy_{chosen,rejected}_logps */
    double tol;                  /* the tolerance the mean was compared with */
} Result;

static Tensor *vec(TensorCtx *ctx, const real *x, int B)
{
    float f[MAXB];
    for (int i = 0; i < B; i++) {
        f[i] = (float)x[i];
        if ((real)f[i] != x[i]) /* the batches promise exact float32 inputs */
            return NULL;
    }
    return tensor_from_data(ctx, 1, &B, f);
}

static Result run_script(LossScript *ls, const RefBatch *rb)
{
    Result r = {.B = rb->B};
    TensorCtx *ctx = tensor_ctx_new(0);
    LossBatch b = {
        .B = rb->B,
        .policy_chosen_logps = vec(ctx, rb->pc, rb->B),
        .policy_rejected_logps = vec(ctx, rb->pr, rb->B),
        .reference_chosen_logps = vec(ctx, rb->rc, rb->B),
        .reference_rejected_logps = vec(ctx, rb->rr, rb->B),
        .chosen_lengths = vec(ctx, rb->lc, rb->B),
        .rejected_lengths = vec(ctx, rb->lr, rb->B),
    };
    if (!b.policy_chosen_logps || !b.policy_rejected_logps || !b.reference_chosen_logps ||
        !b.reference_rejected_logps || !b.chosen_lengths || !b.rejected_lengths) {
        snprintf(r.err, sizeof r.err, "batch not exact in float32 (test bug)");
        goto done;
    }
    tensor_requires_grad(b.policy_chosen_logps);
    tensor_requires_grad(b.policy_rejected_logps);
    Tensor *out = loss_eval(ls, ctx, &b, r.err, sizeof r.err);
    if (!out)
        goto done;
    bool scalar = loss_is_batch_level(ls);
    if (scalar ? out->size != 1 : (out->ndim != 1 || out->shape[0] != rb->B)) {
        char s[64];
        snprintf(r.err, sizeof r.err, "result shape %s for B = %d",
                 tensor_shape_str(out, s, sizeof s), rb->B);
        goto done;
    }
    Tensor *m = ag_mean(ctx, out, AG_ALL, false);
    if (!m || ag_backward(ctx, m, NULL) != 0) {
        snprintf(r.err, sizeof r.err, "mean/backward: %s", tensor_ctx_error(ctx));
        goto done;
    }
    for (int i = 0; i < rb->B; i++) {
        r.loss[i] = scalar ? out->data[0] : out->data[i];
        r.gpc[i] = b.policy_chosen_logps->grad ? b.policy_chosen_logps->grad[i] : 0;
        r.gpr[i] = b.policy_rejected_logps->grad ? b.policy_rejected_logps->grad[i] : 0;
    }
    r.mean = m->data[0];
    r.ok = true;
done:
    tensor_ctx_free(ctx);
    return r;
}

/* the reference's values, mean and finite-difference gradient of the mean.
 * The difference is taken pair by pair, sum_j (out_j(x+h) - out_j(x-h)), not
 * as a difference of means: one pair's loss may be ~1e21 (CELL at rho = -50)
 * and would swamp another pair's change in a difference of sums. */
static Result run_ref(const LossCase *c, const RefBatch *rb, const Params *p, const real *frozen)
{
    Result r = {.ok = true, .B = rb->B};
    real fz[4] = {0}, out[MAXB], up[MAXB], down[MAXB];
    if (frozen)
        memcpy(fz, frozen, sizeof fz);
    else if (c->freeze)
        c->freeze(rb, p, fz);
    c->ref(rb, p, fz, out);
    r.mean = (double)meanl(out, rb->B);
    for (int i = 0; i < rb->B; i++)
        r.loss[i] = (double)out[i];
    RefBatch t = *rb;
    for (int i = 0; i < rb->B; i++) {
        for (int side = 0; side < 2; side++) {
            real *x = side ? &t.pr[i] : &t.pc[i], x0 = *x;
            real h = 1e-6L * (fabsl(x0) > 1 ? fabsl(x0) : 1);
            *x = x0 + h;
            c->ref(&t, p, fz, up);
            *x = x0 - h;
            c->ref(&t, p, fz, down);
            *x = x0;
            real d = 0;
            for (int j = 0; j < rb->B; j++)
                d += up[j] - down[j];
            (side ? r.gpr : r.gpc)[i] = (double)(d / (2 * h * rb->B));
        }
    }
    return r;
}

static bool near(double got, double want, double rtol, double atol)
{
    if (isinf(want))
        return got == want;
    return fabs(got - want) <= rtol * fabs(want) + atol;
}

/* compares a script's result with the reference's; `what` names the batch */
static void compare(const LossCase *c, const char *what, const Params *p, const RefBatch *rb,
                    Result *got, const Result *want)
{
    CHECKF(got->ok, "%s %s: loss_eval failed: %s", c->file, what, got->err);
    if (!got->ok)
        return;
    double scale = tol_scale(c, p, rb);
    double vatol = VAL_ATOL * scale, gatol = GRAD_ATOL * scale / rb->B;
    got->tol = VAL_RTOL * fabs(want->mean) + vatol;
    for (int i = 0; i < rb->B; i++) {
        /* every batch here has a finite true loss (CELL's overflow is not run) */
        CHECKF(isfinite(got->loss[i]) && isfinite(want->loss[i]),
               "%s %s: loss[%d] = %g, closed form %g: not finite", c->file, what, i, got->loss[i],
               want->loss[i]);
        CHECKF(near(got->loss[i], want->loss[i], VAL_RTOL, vatol),
               "%s %s: loss[%d] = %.9g, closed form %.9g", c->file, what, i, got->loss[i],
               want->loss[i]);
        CHECKF(isfinite(got->gpc[i]) && isfinite(got->gpr[i]),
               "%s %s: gradient [%d] not finite (%g, %g)", c->file, what, i, got->gpc[i],
               got->gpr[i]);
        CHECKF(near(got->gpc[i], want->gpc[i], GRAD_RTOL, gatol),
               "%s %s: d mean/d policy_chosen_logps[%d] = %.9g, finite differences %.9g", c->file,
               what, i, got->gpc[i], want->gpc[i]);
        CHECKF(near(got->gpr[i], want->gpr[i], GRAD_RTOL, gatol),
               "%s %s: d mean/d policy_rejected_logps[%d] = %.9g, finite differences %.9g", c->file,
               what, i, got->gpr[i], want->gpr[i]);
    }
    CHECKF(near(got->mean, want->mean, VAL_RTOL, vatol), "%s %s: mean = %.9g, closed form %.9g",
           c->file, what, got->mean, want->mean);
}

/* the script's current params, for the reference */
static Params script_params(const LossScript *ls)
{
    Params p = {0};
    int n = loss_param_count(ls);
    for (int i = 0; i < n && i < MAXP; i++) {
        snprintf(p.name[i], sizeof p.name[i], "%s", loss_param_name(ls, i));
        p.value[i] = loss_param_value(ls, i);
        p.n++;
    }
    return p;
}

static bool same_pair(const RefBatch *rb, int i, int j)
{
    return rb->pc[i] == rb->pc[j] && rb->pr[i] == rb->pr[j] && rb->rc[i] == rb->rc[j] &&
           rb->rr[i] == rb->rr[j];
}

/* For a loss that sorts (c->sort_keys): true when two different pairs have
 * keys closer than 1/128, the grid every key here lies on. At a tie the loss
 * has a kink and the central difference (step <= 1e-6 * 4096 < 1/256) averages
 * two one-sided slopes, which no gradient equals. A batch of identical pairs
 * is exempt: every quantile then has the same delta, so a perturbed key moves
 * its own quantile only, on either side, and the difference is a gradient. */
static bool sort_keys_tie(const LossCase *c, const RefBatch *rb)
{
    if (!c->sort_keys)
        return false;
    bool identical = true;
    for (int i = 1; i < rb->B; i++)
        identical = identical && same_pair(rb, 0, i);
    if (identical)
        return false;
    real a[MAXB], k[MAXB];
    c->sort_keys(rb, a, k);
    for (int i = 0; i < rb->B; i++)
        for (int j = i + 1; j < rb->B; j++)
            if (fabsl(a[i] - a[j]) < 1.0L / 128 || fabsl(k[i] - k[j]) < 1.0L / 128)
                return true;
    return false;
}

/* loads the case's file, applies one override (name NULL: none), runs the
 * batch, and compares with the reference at the same params */
static Result check_batch(const LossCase *c, const char *what, const RefBatch *rb,
                          const char *set_name, double set_value)
{
    Result fail = {0};
    char err[512] = "";
    CHECKF(!sort_keys_tie(c, rb),
           "%s %s: two pairs tie on a key the loss sorts; finite differences are no gradient "
           "there (a test bug: make the batch's keys distinct)",
           c->file, what);
    LossScript *ls = load_case(c->file, err, sizeof err);
    CHECKF(ls != NULL, "%s: loss_load failed: %s", c->file, err);
    if (!ls)
        return fail;
    if (set_name) {
        int rc = loss_set_param(ls, set_name, set_value, err, sizeof err);
        CHECKF(rc == 0, "%s: loss_set_param(%s = %g) failed: %s", c->file, set_name, set_value,
               err);
    }
    Params p = script_params(ls);
    Result got = run_script(ls, rb);
    missing_param = false;
    Result want = run_ref(c, rb, &p, NULL);
    CHECKF(!missing_param, "%s: the reference asks for a param the file does not declare", c->file);
    compare(c, what, &p, rb, &got, &want);
    loss_free(ls);
    return got;
}

/* ------------------------------------------------------------------------ */
/* per-loss cases                                                            */

static const LossCase *cur; /* the case tl_run is running */

static void loss_defaults(void)
{
    char err[512] = "";
    LossScript *ls = load_case(cur->file, err, sizeof err);
    CHECKF(ls != NULL, "%s: loss_load failed: %s", cur->file, err);
    if (!ls)
        return;
    CHECKF(strcmp(loss_name(ls), cur->file) == 0, "%s: name = \"%s\", expected the file's stem",
           cur->file, loss_name(ls));
    int n = case_nparams(cur);
    CHECKF(loss_param_count(ls) == n, "%s: declares %d params, the test knows %d", cur->file,
           loss_param_count(ls), n);
    for (int k = 0; k < n; k++) {
        bool found = false;
        for (int i = 0; i < loss_param_count(ls); i++) {
            if (strcmp(loss_param_name(ls, i), cur->params[k].name) != 0)
                continue;
            found = true;
            CHECKF(loss_param_value(ls, i) == cur->params[k].def,
                   "%s: default %s = %g, documented %g", cur->file, cur->params[k].name,
                   loss_param_value(ls, i), cur->params[k].def);
        }
        CHECKF(found, "%s: param %s not declared", cur->file, cur->params[k].name);
    }
    loss_free(ls);
    RefBatch wide = batch_wide(), narrow = batch_narrow();
    check_batch(cur, "wide batch", &wide, NULL, 0);
    check_batch(cur, "narrow batch", &narrow, NULL, 0);
}

static void loss_overrides(void)
{
    RefBatch wide = batch_wide(), narrow = batch_narrow();
    Result w0 = check_batch(cur, "wide batch", &wide, NULL, 0);
    Result n0 = check_batch(cur, "narrow batch", &narrow, NULL, 0);
    for (int k = 0; k < case_nparams(cur); k++) {
        const ParamSpec *ps = &cur->params[k];
        char what[96];
        snprintf(what, sizeof what, "wide batch, %s = %g", ps->name, ps->alt);
        Result w1 = check_batch(cur, what, &wide, ps->name, ps->alt);
        snprintf(what, sizeof what, "narrow batch, %s = %g", ps->name, ps->alt);
        Result n1 = check_batch(cur, what, &narrow, ps->name, ps->alt);
        /* the override must move the result by far more than the tolerance,
         * or the comparison above could not tell a file that ignores it */
        double moved = fabs(w1.mean - w0.mean) + fabs(n1.mean - n0.mean);
        double tol = w0.tol + w1.tol + n0.tol + n1.tol;
        CHECKF(moved > 10 * tol, "%s: setting %s = %g moves the mean loss by only %g", cur->file,
               ps->name, ps->alt, moved);
    }
    /* an unknown key is an error, never silently ignored */
    char err[512] = "";
    LossScript *ls = load_case(cur->file, err, sizeof err);
    if (ls) {
        CHECKF(loss_set_param(ls, "no_such_param", 1, err, sizeof err) != 0,
               "%s: loss_set_param accepted an undeclared key", cur->file);
        loss_free(ls);
    }
}

static void loss_extremes(void)
{
    RefBatch ext = cur->sort_keys ? batch_extreme_distinct() : batch_extreme();
    RefBatch one = batch_single(), eq = batch_equal();
    check_batch(cur, "extreme batch (|logits| = 1000)", &ext, NULL, 0);
    if (!cur->no_rho1000)
        check_batch(cur, "extreme batch at beta = 1 (|rho| = 1000)", &ext, "beta", 1);
    check_batch(cur, "B = 1", &one, NULL, 0);
    check_batch(cur, "B = 4 equal pairs", &eq, NULL, 0);
}

/* ------------------------------------------------------------------------ */
/* library-wide cases                                                        */

static bool has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && strcmp(s + n - m, suf) == 0;
}

/* every file in losses/ has a case (so a new loss without tests fails), and
 * every case has its file */
static void every_loss_file_is_tested(void)
{
    DIR *d = opendir(losses_dir);
    CHECKF(d != NULL, "cannot list %s: %s", losses_dir, strerror(errno));
    if (!d)
        return;
    int seen[N_CASES] = {0}, files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!has_suffix(e->d_name, ".lua"))
            continue;
        files++;
        char stem[256];
        snprintf(stem, sizeof stem, "%.*s", (int)(strlen(e->d_name) - 4), e->d_name);
        int k = 0;
        while (k < N_CASES && strcmp(cases[k].file, stem) != 0)
            k++;
        CHECKF(k < N_CASES, "losses/%s has no test case in tests/test_losses.c", e->d_name);
        if (k < N_CASES)
            seen[k] = 1;
    }
    closedir(d);
    for (int k = 0; k < N_CASES; k++)
        CHECKF(seen[k], "tests/test_losses.c has a case for %s but losses/%s.lua is missing",
               cases[k].file, cases[k].file);
    CHECKF(files >= N_CASES, "losses/ holds %d files, %d expected", files, N_CASES);
}

/* each file opens with "-- losses/<name>.lua — ..." and its header comment
 * names its source */
static void every_loss_header_cites_a_source(void)
{
    for (int k = 0; k < N_CASES; k++) {
        char path[4200], line[512], first[64];
        snprintf(path, sizeof path, "%s/%s.lua", losses_dir, cases[k].file);
        FILE *f = fopen(path, "r");
        CHECKF(f != NULL, "cannot open %s", path);
        if (!f)
            continue;
        snprintf(first, sizeof first, "-- losses/%s.lua ", cases[k].file);
        bool first_ok = false, source = false;
        for (int n = 0; fgets(line, sizeof line, f) && strncmp(line, "--", 2) == 0; n++) {
            if (n == 0)
                first_ok = strncmp(line, first, strlen(first)) == 0;
            if (strstr(line, "Source"))
                source = true;
        }
        fclose(f);
        CHECKF(first_ok, "%s: first line should be \"%s— ...\"", path, first);
        CHECKF(source, "%s: header comment names no Source", path);
    }
}

static const LossCase *find_case(const char *file)
{
    for (int k = 0; k < N_CASES; k++)
        if (strcmp(cases[k].file, file) == 0)
            return &cases[k];
    return NULL;
}

static char tmp_dir[512];

static void write_file(const char *name, const char *text)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* RPO = DPO + alpha * SFT, built from library files with use(): the value and
 * gradient are the sum of the two closed forms */
static void use_composes_library_losses(void)
{
    write_file("rpo.lua",
               "-- RPO as a composition of library losses\n"
               "return {\n"
               "  name = \"rpo\",\n"
               "  params = { beta = 0.1, alpha = 0.5 },\n"
               "  loss = function(b, p, s)\n"
               "    local dpo = use(\"dpo\").loss(b, { beta = p.beta, label_smoothing = 0 }, s)\n"
               "    return dpo + p.alpha * use(\"sft\").loss(b, {}, s)\n"
               "  end,\n"
               "}\n");
    char path[600], err[512] = "";
    snprintf(path, sizeof path, "%s/rpo.lua", tmp_dir);
    LossLimits lim = {0};
    LossScript *ls = loss_load(path, losses_dir, &lim, err, sizeof err);
    CHECKF(ls != NULL, "rpo.lua: loss_load failed: %s", err);
    if (!ls)
        return;
    RefBatch rb = batch_wide();
    Result got = run_script(ls, &rb);
    const LossCase *dpo = find_case("dpo"), *sft = find_case("sft");
    Params pd = {2, {"beta", "label_smoothing"}, {0.1, 0}}, ps = {0};
    Result a = run_ref(dpo, &rb, &pd, NULL), b = run_ref(sft, &rb, &ps, NULL), want = a;
    for (int i = 0; i < rb.B; i++) {
        want.loss[i] = a.loss[i] + 0.5 * b.loss[i];
        want.gpc[i] = a.gpc[i] + 0.5 * b.gpc[i];
        want.gpr[i] = a.gpr[i] + 0.5 * b.gpr[i];
    }
    want.mean = a.mean + 0.5 * b.mean;
    LossCase rpo = {.file = "rpo", .ref = ref_dpo};
    compare(&rpo, "use(dpo) + 0.5 use(sft)", &pd, &rb, &got, &want);
    loss_free(ls);

    /* a name that is not a library file is an error, not a fallback */
    write_file("bad_use.lua",
               "return { name = \"bad_use\", params = {},\n"
               "  loss = function(b, p, s) return use(\"no_such_loss\").loss(b, p, s) end }\n");
    snprintf(path, sizeof path, "%s/bad_use.lua", tmp_dir);
    ls = loss_load(path, losses_dir, &lim, err, sizeof err);
    if (ls) {
        Result r = run_script(ls, &rb);
        CHECKF(!r.ok, "use(\"no_such_loss\") did not fail");
        loss_free(ls);
    }
}

/* bco_pair, running_mean = 1 (older TRL): delta_n is the mean of the batch
 * rewards m_1..m_n of the steps so far, kept in the script's state across
 * loss_eval calls; the gradient treats delta as a constant */
static void bco_pair_running_mean_keeps_state(void)
{
    const LossCase *c = find_case("bco_pair");
    char err[512] = "";
    LossScript *ls = load_case("bco_pair", err, sizeof err);
    CHECKF(ls != NULL, "bco_pair: loss_load failed: %s", err);
    if (!ls)
        return;
    CHECK(loss_set_param(ls, "running_mean", 1, err, sizeof err) == 0);
    Params p = script_params(ls);
    RefBatch steps[3] = {batch_wide(), batch_narrow(), batch_random(53, 6, 10, 1, 100)};
    real sum = 0;
    for (int n = 0; n < 3; n++) {
        sum += bco_batch_reward(&steps[n], P(&p, "beta"));
        real delta = sum / (n + 1);
        Result got = run_script(ls, &steps[n]);
        Result want = run_ref(c, &steps[n], &p, (real[4]){delta});
        char what[48];
        snprintf(what, sizeof what, "running mean, step %d", n + 1);
        compare(c, what, &p, &steps[n], &got, &want);
    }
    loss_free(ls);
    /* a fresh script starts again at delta_1 = m_1: state is per script */
    ls = load_case("bco_pair", err, sizeof err);
    if (ls) {
        CHECK(loss_set_param(ls, "running_mean", 1, err, sizeof err) == 0);
        Result got = run_script(ls, &steps[2]);
        Result want = run_ref(c, &steps[2], &p, NULL);
        compare(c, "running mean, fresh script", &p, &steps[2], &got, &want);
        loss_free(ls);
    }
}

/* DiscoPOP's published shape at tau = 0.05, in rho = beta * logits units
 * (the numbers; Lu et al. 2024, fig. of the LRML loss): f(0) =
 * 0.846574 (= log(2)/2 + 1/2), f'(0) = +0.78426, a local minimum near
 * rho = -0.119 and a local maximum near rho = +0.072, so f' < 0 below the
 * minimum, > 0 between the two, < 0 above the maximum. An independent check
 * on the reference and the file at once. */
static void discopop_has_published_shape(void)
{
    char err[512] = "";
    LossScript *ls = load_case("discopop", err, sizeof err);
    CHECKF(ls != NULL, "discopop: loss_load failed: %s", err);
    if (!ls)
        return;
    double beta = 0.05; /* the file's default; f'(rho) = d loss / d pc / beta */
    /* logits z, exact in float32: rho = 0, -0.15, -0.0875, +0.05, +0.1 */
    const real z[5] = {0, -3, -1.75, 1, 2};
    const int want_sign[5] = {+1, -1, +1, +1, -1};
    for (int k = 0; k < 5; k++) {
        RefBatch rb = {.B = 1,
                       .pc = {-50 + z[k]},
                       .pr = {-50},
                       .rc = {-60},
                       .rr = {-60},
                       .lc = {10},
                       .lr = {10}};
        Result r = run_script(ls, &rb);
        CHECKF(r.ok, "discopop: loss_eval failed: %s", r.err);
        if (!r.ok)
            continue;
        double slope = r.gpc[0] / beta;
        if (k == 0) {
            /* 1e-6: the published values have 6 digits */
            CHECK_NEAR(r.loss[0], 0.846574, 1e-6);
            CHECK_NEAR(slope, 0.78426, 1e-5);
        }
        CHECKF(slope * want_sign[k] > 0, "discopop: f'(rho = %g) = %g, expected sign %+d",
               beta * (double)z[k], slope, want_sign[k]);
    }
    loss_free(ls);
}

/* AOT by hand, beta = 1, eps = 0, B = 3: the k-th smallest key on one side
 * meets the k-th smallest on the other, whatever pairs they came from, and
 * each gradient goes back to the pair that held that quantile. Values are
 * -log s(delta_k) and d mean / d key = -s(-delta_k) / 3 at the key's
 * quantile; 1e-6: float32 rounding of values below 1. */
static void aot_matches_quantiles_not_pairs(void)
{
    const struct {
        const char *file;
        RefBatch rb;
        real delta[3];        /* per quantile */
        int pc_q[3], pr_q[3]; /* the quantile each pair's pc / pr feeds (d delta / d pr = -1) */
    } ex[2] = {
        /* margins pc - pr = (2, -1, 0.5) sort to (-1, 0.5, 2) from pairs (1, 2, 0);
         * reference margins (0, 1, -1) to (-1, 0, 1) from pairs (2, 0, 1):
         * delta = (0, 0.5, 1), where pair by pair (DPO) it would be (2, -2, 1.5).
         * pr enters through the margin, so each pair's pc and pr share a quantile */
        {"aot",
         {.B = 3,
          .pc = {-8, -11, -9.5},
          .pr = {-10, -10, -10},
          .rc = {-20, -19, -21},
          .rr = {-20, -20, -20},
          .lc = {1, 1, 1},
          .lr = {1, 1, 1}},
         {0, 0.5, 1},
         {2, 0, 1},
         {2, 0, 1}},
        /* chosen log-ratios (3, -1, 1) sort to (-1, 1, 3) from pairs (1, 2, 0);
         * rejected (-2, 2, 0.5) to (-2, 0.5, 2) from pairs (0, 2, 1):
         * delta = (1, 0.5, 1), where pair by pair it would be (5, -3, 0.5) */
        {"aot_unpaired",
         {.B = 3,
          .pc = {-7, -11, -9},
          .pr = {-12, -8, -9.5},
          .rc = {-10, -10, -10},
          .rr = {-10, -10, -10},
          .lc = {1, 1, 1},
          .lr = {1, 1, 1}},
         {1, 0.5, 1},
         {2, 0, 1},
         {0, 2, 1}},
    };
    for (int e = 0; e < 2; e++) {
        char err[512] = "";
        LossScript *ls = load_case(ex[e].file, err, sizeof err);
        CHECKF(ls != NULL, "%s: loss_load failed: %s", ex[e].file, err);
        if (!ls)
            continue;
        CHECK(loss_set_param(ls, "beta", 1, err, sizeof err) == 0);
        Result r = run_script(ls, &ex[e].rb);
        CHECKF(r.ok, "%s: loss_eval failed: %s", ex[e].file, r.err);
        for (int k = 0; r.ok && k < 3; k++) {
            CHECK_NEAR(r.loss[k], -logsig(ex[e].delta[k]), 1e-6);
            real d_pc = -sig(-ex[e].delta[ex[e].pc_q[k]]) / 3;
            real d_pr = sig(-ex[e].delta[ex[e].pr_q[k]]) / 3;
            CHECK_NEAR(r.gpc[k], d_pc, 1e-6);
            CHECK_NEAR(r.gpr[k], d_pr, 1e-6);
        }
        loss_free(ls);
    }
}

/* ------------------------------------------------------------------------ */

int main(void)
{
    snprintf(losses_dir, sizeof losses_dir, "%s/losses", root_dir());
    const char *tmp = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/prefrun_test_losses.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmp_dir)) {
        printf("# mkdtemp failed\n");
        return 1;
    }
    RUN(every_loss_file_is_tested);
    RUN(every_loss_header_cites_a_source);
    char name[96];
    for (int k = 0; k < N_CASES; k++) {
        cur = &cases[k];
        snprintf(name, sizeof name, "%s: defaults", cur->file);
        tl_run(name, loss_defaults);
        snprintf(name, sizeof name, "%s: overrides", cur->file);
        tl_run(name, loss_overrides);
        snprintf(name, sizeof name, "%s: extremes", cur->file);
        tl_run(name, loss_extremes);
    }
    RUN(use_composes_library_losses);
    RUN(bco_pair_running_mean_keeps_state);
    RUN(discopop_has_published_shape);
    RUN(aot_matches_quantiles_not_pairs);
    char path[600];
    snprintf(path, sizeof path, "%s/rpo.lua", tmp_dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/bad_use.lua", tmp_dir);
    unlink(path);
    rmdir(tmp_dir);
    return tl_done();
}
