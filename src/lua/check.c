/*
 * lua/check.c — the checker (schema, shapes, numerics, signal), the loss-shape
 * curve and its summary, and the report as JSON (check.h).
 *
 * Every evaluation here makes its own TensorCtx and frees it, so a probe
 * cannot see another's tensors; a limit hit trips the script's sandbox, and
 * every later evaluation fails at once with the same message, so the checker
 * stops at the first one.
 *
 * Letters: B pairs in a probe, T token positions, n points of a curve.
 */
#include "lua/check.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ops.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "util/text.h"
#include "util/timeutil.h"

#define ERR_LEN 512
#define PROBE_T 6
#define CURVE_RANGE 10.0 /* rho in [-10, 10]: DiscoPOP's features sit within |rho| < 1 */
#define CURVE_POINTS 2001
#define CURVE_POINTS_BATCH_LEVEL 401 /* one call per point: keep check fast */
#define BISECT_STEPS 30

/* ---- diagnostics ------------------------------------------------------------ */

static void diag(CheckReport *rep, CheckSeverity sev, const char *code, int line, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));

static void diag(CheckReport *rep, CheckSeverity sev, const char *code, int line, const char *fmt,
                 ...)
{
    if (sev == CHECK_ERROR)
        rep->ok = false;
    if (rep->n_diags == CHECK_MAX_DIAGS)
        return;
    CheckDiag *d = &rep->diags[rep->n_diags++];
    d->severity = sev;
    d->line = line;
    snprintf(d->code, sizeof d->code, "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->message, sizeof d->message, fmt, ap);
    va_end(ap);
    for (char *c = d->message; *c; c++) /* script text: no terminal escapes, one line */
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = ' ';
}

/* The line of an error message "FILE:LINE: ..." when FILE is the checked
 * file (Lua may shorten a long name to "...tail"); 0 otherwise. */
static int line_of(const char *msg, const char *path)
{
    const char *colon = strchr(msg, ':');
    if (!colon || colon[1] < '0' || colon[1] > '9')
        return 0;
    size_t n = (size_t)(colon - msg), plen = strlen(path);
    bool same = (n == plen && strncmp(msg, path, n) == 0) ||
                (n > 3 && strncmp(msg, "...", 3) == 0 && plen >= n - 3 &&
                 strncmp(msg + 3, path + plen - (n - 3), n - 3) == 0);
    return same ? atoi(colon + 1) : 0;
}

static bool is_limit(const char *msg) { return strstr(msg, "(limit hit:") != NULL; }

/* ---- probes: host arrays of one batch ---------------------------------------- */

enum { F_PC, F_PR, F_RC, F_RR, F_LC, F_LR, N_SEQ };
enum { K_PC, K_PR, K_RC, K_RR, K_MC, K_MR, N_TOK };

typedef struct Probe {
    const char *name;
    int B, T;
    float *seq[N_SEQ]; /* (B) each */
    float *tok[N_TOK]; /* (B, T) each: token log-probs, then masks */
    int64_t step;
    double progress;
} Probe;

static int probe_alloc(Probe *p, const char *name, int B, int T)
{
    memset(p, 0, sizeof *p);
    p->name = name;
    p->B = B;
    p->T = T;
    for (int f = 0; f < N_SEQ; f++)
        if (!(p->seq[f] = calloc((size_t)B, sizeof(float))))
            return -1;
    for (int k = 0; k < N_TOK && T > 0; k++)
        if (!(p->tok[k] = calloc((size_t)B * (size_t)T, sizeof(float))))
            return -1;
    return 0;
}

static void probe_free(Probe *p)
{
    for (int f = 0; f < N_SEQ; f++)
        free(p->seq[f]);
    for (int k = 0; k < N_TOK; k++)
        free(p->tok[k]);
}

/* token fields: random per-token log-probs, masks covering a prefix */
static void probe_tokens(Probe *p, Rng *r)
{
    for (int i = 0; i < p->B; i++) {
        int len = 1 + (int)rng_below(r, (uint32_t)p->T);
        for (int t = 0; t < p->T; t++) {
            int k = i * p->T + t;
            for (int f = K_PC; f <= K_RR; f++)
                p->tok[f][k] = -(float)(0.05 + 5.0 * rng_uniform(r));
            p->tok[K_MC][k] = t < len ? 1.0f : 0.0f;
            p->tok[K_MR][k] = t < p->T - len / 2 ? 1.0f : 0.0f;
        }
    }
}

/* pairs with log-ratios of a few nats, as in training */
static int probe_random(Probe *p, int B, uint64_t seed)
{
    if (probe_alloc(p, "random", B, PROBE_T))
        return -1;
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < B; i++) {
        float lc = (float)(4 + rng_below(&r, 60)), lr = (float)(4 + rng_below(&r, 60));
        p->seq[F_LC][i] = lc;
        p->seq[F_LR][i] = lr;
        p->seq[F_RC][i] = -lc * (float)(0.2 + 2.0 * rng_uniform(&r));
        p->seq[F_RR][i] = -lr * (float)(0.2 + 2.0 * rng_uniform(&r));
        p->seq[F_PC][i] = p->seq[F_RC][i] + 4.0f * rng_normal(&r);
        p->seq[F_PR][i] = p->seq[F_RR][i] + 4.0f * rng_normal(&r);
    }
    probe_tokens(p, &r);
    p->progress = 0.5;
    return 0;
}

static const float extreme_logits[] = {-100, -50, -20, -5, -1, 0, 1, 5, 20, 50, 100};
#define N_EXTREME (int)(sizeof extreme_logits / sizeof extreme_logits[0])

/* logits = (pc - pr) - (rc - rr) from -100 to 100, at the end of training */
static int probe_extreme(Probe *p, uint64_t seed)
{
    if (probe_alloc(p, "extreme", N_EXTREME, PROBE_T))
        return -1;
    Rng r;
    rng_seed(&r, seed + 1);
    for (int i = 0; i < N_EXTREME; i++) {
        float z = extreme_logits[i];
        p->seq[F_RC][i] = p->seq[F_RR][i] = -80.0f;
        p->seq[F_PC][i] = -80.0f + z / 2;
        p->seq[F_PR][i] = -80.0f - z / 2;
        p->seq[F_LC][i] = p->seq[F_LR][i] = i % 2 ? 1.0f : 100.0f;
    }
    probe_tokens(p, &r);
    p->step = 100000;
    p->progress = 1.0;
    return 0;
}

/* every logit 0 (policy equal to the reference), at the start of training */
static int probe_ties(Probe *p, int B, uint64_t seed)
{
    if (probe_alloc(p, "ties", B, PROBE_T))
        return -1;
    Rng r;
    rng_seed(&r, seed + 2);
    for (int i = 0; i < B; i++) {
        float c = -(float)(10 + 90 * rng_uniform(&r)), d = -(float)(10 + 90 * rng_uniform(&r));
        p->seq[F_PC][i] = p->seq[F_RC][i] = c;
        p->seq[F_PR][i] = p->seq[F_RR][i] = d;
        p->seq[F_LC][i] = p->seq[F_LR][i] = 20.0f;
    }
    probe_tokens(p, &r);
    return 0;
}

/* ---- one evaluation ----------------------------------------------------------- */

typedef struct Outcome {
    double *loss;     /* (B), or (1) for a batch-level loss */
    double *grad[2];  /* (B) d mean / d policy chosen, rejected */
    double *tgrad[2]; /* (B) the same w.r.t. the token log-probs, summed over T */
    bool tok_nonzero; /* some d mean / d policy token log-prob is not 0 */
    bool tok_finite;  /* all of them finite */
} Outcome;

static Tensor *field(TensorCtx *ctx, int ndim, const int *shape, const float *data, bool grad)
{
    Tensor *t = tensor_from_data(ctx, ndim, shape, data);
    if (t && grad && tensor_requires_grad(t) != 0)
        return NULL;
    return t;
}

static int batch_of(TensorCtx *ctx, const Probe *p, LossBatch *b)
{
    int sh1[1] = {p->B}, sh2[2] = {p->B, p->T};
    memset(b, 0, sizeof *b);
    b->B = p->B;
    b->T = p->T;
    b->step = p->step;
    b->progress = p->progress;
    b->policy_chosen_logps = field(ctx, 1, sh1, p->seq[F_PC], true);
    b->policy_rejected_logps = field(ctx, 1, sh1, p->seq[F_PR], true);
    b->reference_chosen_logps = field(ctx, 1, sh1, p->seq[F_RC], false);
    b->reference_rejected_logps = field(ctx, 1, sh1, p->seq[F_RR], false);
    b->chosen_lengths = field(ctx, 1, sh1, p->seq[F_LC], false);
    b->rejected_lengths = field(ctx, 1, sh1, p->seq[F_LR], false);
    if (p->T > 0) {
        b->policy_chosen_token_logps = field(ctx, 2, sh2, p->tok[K_PC], true);
        b->policy_rejected_token_logps = field(ctx, 2, sh2, p->tok[K_PR], true);
        b->reference_chosen_token_logps = field(ctx, 2, sh2, p->tok[K_RC], false);
        b->reference_rejected_token_logps = field(ctx, 2, sh2, p->tok[K_RR], false);
        b->chosen_mask = field(ctx, 2, sh2, p->tok[K_MC], false);
        b->rejected_mask = field(ctx, 2, sh2, p->tok[K_MR], false);
    }
    return tensor_ctx_ok(ctx) ? 0 : -1;
}

static void tok_grads(const Tensor *t, Outcome *o, double *sums)
{
    for (int64_t i = 0; t && t->grad && i < t->size; i++) {
        o->tok_nonzero = o->tok_nonzero || t->grad[i] != 0;
        o->tok_finite = o->tok_finite && isfinite(t->grad[i]);
        sums[i / t->shape[1]] += t->grad[i];
    }
}

/* Evaluates the loss on p, and (unless meta) the gradient of its mean into
 * o (whose arrays hold p->B entries); seed_ones: backward from the (B)
 * result with ones instead of from the mean (the curve wants every pair's
 * own slope). Returns 0, or -1 with err set. */
static int evaluate(LossScript *ls, const Probe *p, bool meta, bool seed_ones, Outcome *o,
                    char *err, size_t errlen)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ctx->meta = meta;
    LossBatch b;
    int rc = -1;
    if (batch_of(ctx, p, &b) != 0) {
        snprintf(err, errlen, "making the probe batch: %s", tensor_ctx_error(ctx));
        goto done;
    }
    Tensor *l = loss_eval(ls, ctx, &b, err, errlen);
    if (!l || meta) {
        rc = l ? 0 : -1;
        goto done;
    }
    for (int64_t i = 0; i < l->size; i++)
        o->loss[i] = l->data[i];
    float *seed = NULL;
    Tensor *root = l;
    if (seed_ones && l->size > 1) {
        seed = malloc((size_t)l->size * sizeof *seed);
        for (int64_t i = 0; seed && i < l->size; i++)
            seed[i] = 1.0f;
    } else if (l->size > 1) {
        root = ag_mean(ctx, l, AG_ALL, false);
    }
    if (!root || (l->size > 1 && seed_ones && !seed) || ag_backward(ctx, root, seed) != 0) {
        snprintf(err, errlen, "backward: %s", tensor_ctx_error(ctx));
        free(seed);
        goto done;
    }
    free(seed);
    const Tensor *pol[2] = {b.policy_chosen_logps, b.policy_rejected_logps};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < p->B; i++)
            o->grad[k][i] = pol[k]->grad ? pol[k]->grad[i] : 0.0;
    o->tok_nonzero = false;
    o->tok_finite = true;
    tok_grads(b.policy_chosen_token_logps, o, o->tgrad[0]);
    tok_grads(b.policy_rejected_token_logps, o, o->tgrad[1]);
    rc = 0;
done:
    tensor_ctx_free(ctx);
    return rc;
}

static int outcome_alloc(Outcome *o, int B)
{
    memset(o, 0, sizeof *o);
    o->loss = calloc((size_t)B, sizeof(double));
    o->grad[0] = calloc((size_t)B, sizeof(double));
    o->grad[1] = calloc((size_t)B, sizeof(double));
    o->tgrad[0] = calloc((size_t)B, sizeof(double));
    o->tgrad[1] = calloc((size_t)B, sizeof(double));
    return o->loss && o->grad[0] && o->grad[1] && o->tgrad[0] && o->tgrad[1] ? 0 : -1;
}

static void outcome_free(Outcome *o)
{
    free(o->loss);
    free(o->grad[0]);
    free(o->grad[1]);
    free(o->tgrad[0]);
    free(o->tgrad[1]);
}

/* ---- the steps of the check ----------------------------------------------------- */

static void runtime_diag(CheckReport *rep, const char *code, const char *path, const char *pass,
                         const char *err)
{
    diag(rep, CHECK_ERROR, is_limit(err) ? "limit" : code, line_of(err, path), "%s: %s", pass, err);
}

/* the kind of a loss_load failure, from its message: schema errors name the
 * file without a line, syntax errors come from the Lua parser */
static const char *load_code(const char *err, const char *path)
{
    size_t n = strlen(path);
    if (is_limit(err))
        return "limit";
    if (strstr(err, "cannot read"))
        return "io";
    if (strncmp(err, path, n) == 0 && strncmp(err + n, ": ", 2) == 0)
        return "schema";
    if (strstr(err, " near ") || strstr(err, "unfinished") || strstr(err, "malformed") ||
        strstr(err, "binary chunk"))
        return "syntax";
    return "runtime";
}

/* 2. shapes at B = 1, 7, 64 on shape-only tensors; a loss that reads values
 * (x:item()) cannot run without data, so it is shape-checked with data */
static bool check_shapes(LossScript *ls, CheckReport *rep, uint64_t seed)
{
    static const int sizes[] = {1, 7, 64};
    char err[ERR_LEN];
    bool meta = true;
    for (int k = 0; k < 3; k++) {
        Probe p;
        Outcome o;
        int rc = -1;
        if (probe_random(&p, sizes[k], seed) == 0 && outcome_alloc(&o, sizes[k]) == 0) {
            rc = evaluate(ls, &p, meta, false, &o, err, sizeof err);
            if (rc != 0 && meta && strstr(err, "shape-only (meta) tensor has no values")) {
                diag(rep, CHECK_INFO, "reads_values", line_of(err, ls ? loss_path(ls) : ""),
                     "the loss reads tensor values (item/tolist), so its shapes were checked "
                     "with data instead of shape-only tensors");
                meta = false;
                rc = evaluate(ls, &p, meta, false, &o, err, sizeof err);
            }
            outcome_free(&o);
        } else {
            snprintf(err, sizeof err, "out of memory");
        }
        probe_free(&p);
        if (rc != 0) {
            char pass[48];
            snprintf(pass, sizeof pass, "shape check at B = %d", sizes[k]);
            runtime_diag(rep, "shape", loss_path(ls), pass, err);
            return false;
        }
    }
    return true;
}

static double logit_of(const Probe *p, int i)
{
    return ((double)p->seq[F_PC][i] - p->seq[F_PR][i]) -
           ((double)p->seq[F_RC][i] - p->seq[F_RR][i]);
}

/* "nan", "inf" or "-inf" without the C library's sign of NaN */
static const char *nonfinite(double v) { return isnan(v) ? "nan" : v > 0 ? "inf" : "-inf"; }

/* 3. values and gradients finite on p; returns false after a diagnostic */
static bool check_finite(LossScript *ls, CheckReport *rep, const Probe *p, const Outcome *o)
{
    int n = loss_is_batch_level(ls) ? 1 : p->B;
    for (int i = 0; i < n; i++)
        if (!isfinite(o->loss[i])) {
            if (n == 1)
                diag(rep, CHECK_ERROR, "nonfinite_value", 0, "the loss is %s on the %s probe",
                     nonfinite(o->loss[i]), p->name);
            else
                diag(rep, CHECK_ERROR, "nonfinite_value", 0,
                     "the loss is %s for pair %d of the %s probe (logits = %g); use stable forms "
                     "such as logsigmoid, softplus, exp(a - b) instead of exp(a) / exp(b)",
                     nonfinite(o->loss[i]), i + 1, p->name, logit_of(p, i));
            return false;
        }
    static const char *const names[2] = {"policy_chosen_logps", "policy_rejected_logps"};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < p->B; i++)
            if (!isfinite(o->grad[k][i])) {
                diag(rep, CHECK_ERROR, "nonfinite_grad", 0,
                     "d loss / d %s is %s for pair %d of the %s probe (logits = %g)", names[k],
                     nonfinite(o->grad[k][i]), i + 1, p->name, logit_of(p, i));
                return false;
            }
    if (!o->tok_finite) {
        diag(rep, CHECK_ERROR, "nonfinite_grad", 0,
             "a gradient w.r.t. the policy token log-probs is not finite on the %s probe", p->name);
        return false;
    }
    return true;
}

static bool grads_zero(const Outcome *o, int B)
{
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < B; i++)
            if (o->grad[k][i] != 0)
                return false;
    return !o->tok_nonzero;
}

/* 3 and 4: numerics on every probe, the signal on the random one, the sign
 * at logits = 0 on the ties */
static bool check_numerics(LossScript *ls, CheckReport *rep, uint64_t seed)
{
    Probe probes[3];
    int ok = probe_random(&probes[0], 64, seed) == 0;
    ok = probe_extreme(&probes[1], seed) == 0 && ok;
    ok = probe_ties(&probes[2], 7, seed) == 0 && ok;
    bool good = ok;
    if (!ok)
        diag(rep, CHECK_ERROR, "internal", 0, "out of memory making the probes");
    for (int k = 0; k < 3 && good; k++) {
        Outcome o;
        char err[ERR_LEN];
        if (outcome_alloc(&o, probes[k].B) != 0) {
            good = false;
        } else if (evaluate(ls, &probes[k], false, false, &o, err, sizeof err) != 0) {
            char pass[48];
            snprintf(pass, sizeof pass, "on the %s probe", probes[k].name);
            runtime_diag(rep, "runtime", loss_path(ls), pass, err);
            good = false;
        } else if (!check_finite(ls, rep, &probes[k], &o)) {
            good = false;
        } else if (k == 0 && grads_zero(&o, probes[k].B)) {
            diag(rep, CHECK_ERROR, "no_signal", loss_line(ls),
                 "the gradient w.r.t. the policy log-probs is 0 for every pair of the random "
                 "probe: this loss cannot move the policy (is everything detached, or constant?)");
            good = false;
        } else if (k == 2) {
            double g = 0;
            for (int i = 0; i < probes[k].B; i++)
                g += o.grad[0][i];
            if (g > 0)
                diag(rep, CHECK_WARNING, "margin_increases_loss", loss_line(ls),
                     "at logits = 0, raising the chosen log-prob raises the loss (d mean loss / "
                     "d policy_chosen_logps = %+.3g summed over %d pairs): the loss pushes "
                     "against the preference near 0; DiscoPOP does this by design, other losses "
                     "should not",
                     g, probes[k].B);
        }
        outcome_free(&o);
    }
    for (int k = 0; k < 3; k++)
        probe_free(&probes[k]);
    return good;
}

/* ---- the curve and its summary ------------------------------------------------ */

static double beta_of(const LossScript *ls)
{
    for (int i = 0; i < loss_param_count(ls); i++)
        if (strcmp(loss_param_name(ls, i), "beta") == 0 && loss_param_value(ls, i) > 0)
            return loss_param_value(ls, i);
    return 1.0;
}

/* loss f and slope df/drho at n points rho, base log-prob -L0; the token
 * fields are one token each, equal to the sequence fields, so token-level
 * losses see the same margin */
static int eval_rho(LossScript *ls, bool coupled, double beta, double L0, const double *rho, int n,
                    double *f, double *df, char *err, size_t errlen)
{
    int per_call = coupled || loss_is_batch_level(ls) ? 1 : n;
    for (int start = 0; start < n; start += per_call) {
        Probe p;
        Outcome o;
        int B = per_call, rc = -1;
        if (probe_alloc(&p, "curve", B, 1) == 0 && outcome_alloc(&o, B) == 0) {
            for (int i = 0; i < B; i++) {
                double x = rho[start + i] / beta;
                p.seq[F_PC][i] = (float)(-L0 + x / 2);
                p.seq[F_PR][i] = (float)(-L0 - x / 2);
                p.seq[F_RC][i] = p.seq[F_RR][i] = (float)-L0;
                p.seq[F_LC][i] = p.seq[F_LR][i] = 1.0f;
                for (int f = F_PC; f <= F_RR; f++)
                    p.tok[K_PC + (f - F_PC)][i] = p.seq[f][i];
                p.tok[K_MC][i] = p.tok[K_MR][i] = 1.0f;
            }
            rc = evaluate(ls, &p, false, true, &o, err, errlen);
            for (int i = 0; rc == 0 && i < B; i++) {
                f[start + i] = o.loss[i];
                /* d/dx of pc = -L0 + x/2, pr = -L0 - x/2; then d/drho = d/dx / beta */
                df[start + i] =
                    (o.grad[0][i] + o.tgrad[0][i] - o.grad[1][i] - o.tgrad[1][i]) / 2 / beta;
            }
            outcome_free(&o);
        } else {
            snprintf(err, errlen, "out of memory");
        }
        probe_free(&p);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static double base_logp(double range, double beta) { return range / beta / 2 + 1; }

/* Does one pair's loss depend on the other pairs of its batch (batch
 * statistics, sorting: kto_pair, aqfl, aot)? Then a curve evaluated as one
 * batch of all its points would show the batch, not the loss, so each point
 * is evaluated as a batch of its own. Probe: the first pair's loss with two
 * different companions. */
static int batch_coupled(LossScript *ls, double beta, double L0, bool *coupled, char *err,
                         size_t errlen)
{
    double a[3] = {0.5, -1.0, 2.0}, b[3] = {0.5, 3.0, -4.0}, fa[3], fb[3], d[3];
    *coupled = false;
    if (loss_is_batch_level(ls))
        return 0; /* evaluated one point per call anyway */
    if (eval_rho(ls, false, beta, L0, a, 3, fa, d, err, errlen) != 0 ||
        eval_rho(ls, false, beta, L0, b, 3, fb, d, err, errlen) != 0)
        return -1;
    *coupled = fa[0] != fb[0];
    return 0;
}

int check_curve(LossScript *ls, double range, int n, LossCurve *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (n < 3 || !(range > 0)) {
        snprintf(err, errlen, "a curve needs n >= 3 points and a range > 0");
        return -1;
    }
    c->n = n;
    c->beta = beta_of(ls);
    c->rho = calloc((size_t)n, sizeof(double));
    c->value = calloc((size_t)n, sizeof(double));
    c->slope = calloc((size_t)n, sizeof(double));
    if (!c->rho || !c->value || !c->slope) {
        check_curve_free(c);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++)
        c->rho[i] = -range + 2 * range * i / (n - 1);
    if (n % 2)
        c->rho[n / 2] = 0; /* exactly, whatever the rounding above */
    double L0 = base_logp(range, c->beta);
    if (batch_coupled(ls, c->beta, L0, &c->coupled, err, errlen) != 0 ||
        eval_rho(ls, c->coupled, c->beta, L0, c->rho, n, c->value, c->slope, err, errlen) != 0) {
        check_curve_free(c);
        return -1;
    }
    return 0;
}

void check_curve_free(LossCurve *c)
{
    free(c->rho);
    free(c->value);
    free(c->slope);
    memset(c, 0, sizeof *c);
}

/* Bisection on the sign of df/drho in each bracket [lo[k], hi[k]], all
 * brackets in one batch per step. Leaves the root estimates in lo. */
static int bisect(LossScript *ls, bool coupled, double beta, double L0, double *lo, double *hi,
                  int m, char *err, size_t errlen)
{
    double mid[CHECK_MAX_POINTS], f[CHECK_MAX_POINTS], df[CHECK_MAX_POINTS], dlo[CHECK_MAX_POINTS],
        flo[CHECK_MAX_POINTS];
    if (eval_rho(ls, coupled, beta, L0, lo, m, flo, dlo, err, errlen) != 0)
        return -1;
    for (int step = 0; step < BISECT_STEPS; step++) {
        for (int k = 0; k < m; k++)
            mid[k] = (lo[k] + hi[k]) / 2;
        if (eval_rho(ls, coupled, beta, L0, mid, m, f, df, err, errlen) != 0)
            return -1;
        for (int k = 0; k < m; k++) {
            if ((df[k] > 0) == (dlo[k] > 0) && df[k] != 0) {
                lo[k] = mid[k];
                dlo[k] = df[k];
            } else {
                hi[k] = mid[k];
            }
        }
    }
    for (int k = 0; k < m; k++)
        lo[k] = (lo[k] + hi[k]) / 2;
    return 0;
}

static void stationary_points(LossScript *ls, const LossCurve *c, double tz, ShapeSummary *s)
{
    double lo[CHECK_MAX_POINTS], hi[CHECK_MAX_POINTS];
    int last = -1, m = 0;
    for (int i = 0; i < c->n; i++) {
        if (fabs(c->slope[i]) <= tz)
            continue;
        if (last >= 0 && (c->slope[i] > 0) != (c->slope[last] > 0)) {
            if (m < CHECK_MAX_POINTS) {
                lo[m] = c->rho[last];
                hi[m] = c->rho[i];
                s->stationary[m].kind = c->slope[i] > 0 ? SHAPE_MIN : SHAPE_MAX;
                m++;
            }
            s->n_stationary++;
        }
        last = i;
    }
    char err[ERR_LEN];
    double L0 = base_logp(s->range, c->beta), f[CHECK_MAX_POINTS], df[CHECK_MAX_POINTS];
    if (m && (bisect(ls, c->coupled, c->beta, L0, lo, hi, m, err, sizeof err) != 0 ||
              eval_rho(ls, c->coupled, c->beta, L0, lo, m, f, df, err, sizeof err) != 0)) {
        s->valid = false;
        snprintf(s->why, sizeof s->why, "refining the stationary points: %s", err);
        return;
    }
    for (int k = 0; k < m; k++) {
        s->stationary[k].rho = lo[k];
        s->stationary[k].value = f[k];
    }
}

static void flat_intervals(const LossCurve *c, double tz, ShapeSummary *s)
{
    for (int i = 0; i < c->n;) {
        int j = i;
        while (j < c->n && fabs(c->slope[j]) <= tz)
            j++;
        if (j - i >= 2 && s->n_flat < CHECK_MAX_POINTS) {
            s->flat[s->n_flat][0] = c->rho[i];
            s->flat[s->n_flat][1] = c->rho[j - 1];
            s->n_flat++;
        }
        i = j > i ? j : i + 1;
    }
}

/* Curvature from central differences of the slope. Float32 rounding puts
 * noise of about 1e-6 max|f'| into f', so 1e-6 max|f'| / h into f''; a
 * curvature below 1e-3 max|f'| (per rho unit) counts as 0. */
static void convexity(const LossCurve *c, double maxd, ShapeSummary *s)
{
    double t2 = 1e-3 * maxd, last_rho = 0;
    int last_sign = 0;
    bool pos = false, neg = false;
    for (int i = 1; i + 1 < c->n; i++) {
        double d2 = (c->slope[i + 1] - c->slope[i - 1]) / (c->rho[i + 1] - c->rho[i - 1]);
        int sign = d2 > t2 ? 1 : d2 < -t2 ? -1 : 0;
        if (!sign)
            continue;
        pos = pos || sign > 0;
        neg = neg || sign < 0;
        if (last_sign && sign != last_sign) {
            if (s->n_inflections < CHECK_MAX_POINTS)
                s->inflections[s->n_inflections] = (last_rho + c->rho[i]) / 2;
            s->n_inflections++;
        }
        last_sign = sign;
        last_rho = c->rho[i];
    }
    s->convexity = pos && neg ? "mixed" : pos ? "convex" : neg ? "concave" : "linear";
}

void check_shape_summary(LossScript *ls, const LossCurve *c, ShapeSummary *s)
{
    memset(s, 0, sizeof *s);
    s->beta = c->beta;
    s->range = c->rho[c->n - 1];
    double maxd = 0;
    for (int i = 0; i < c->n; i++) {
        if (!isfinite(c->value[i]) || !isfinite(c->slope[i])) {
            snprintf(s->why, sizeof s->why, "the loss or its slope is not finite at rho = %g",
                     c->rho[i]);
            return;
        }
        maxd = fmax(maxd, fabs(c->slope[i]));
    }
    s->valid = true;
    int zero = 0;
    for (int i = 1; i < c->n; i++)
        if (fabs(c->rho[i]) < fabs(c->rho[zero]))
            zero = i;
    s->f0 = c->value[zero];
    s->slope0 = c->slope[zero];
    s->slope_left = c->slope[0];
    s->slope_right = c->slope[c->n - 1];
    s->coupled = c->coupled;
    double tz = 1e-6 * fmax(maxd, 1e-30); /* float32 noise of f' */
    flat_intervals(c, tz, s);
    convexity(c, maxd, s);
    stationary_points(ls, c, tz, s);
}

static void check_shape(LossScript *ls, CheckReport *rep)
{
    LossCurve c;
    char err[ERR_LEN];
    int n = loss_is_batch_level(ls) ? CURVE_POINTS_BATCH_LEVEL : CURVE_POINTS;
    if (check_curve(ls, CURVE_RANGE, n, &c, err, sizeof err) != 0) {
        rep->shape.valid = false;
        snprintf(rep->shape.why, sizeof rep->shape.why, "%s", err);
    } else {
        check_shape_summary(ls, &c, &rep->shape);
        check_curve_free(&c);
    }
    /* a limit hit is an error wherever it happens; anything else only means
     * the curve's one-token pairs do not suit this loss */
    if (!rep->shape.valid && is_limit(rep->shape.why))
        runtime_diag(rep, "limit", loss_path(ls), "on the loss curve", rep->shape.why);
    else if (!rep->shape.valid)
        diag(rep, CHECK_INFO, "no_shape_summary", 0, "no shape summary: %s", rep->shape.why);
}

/* ---- the whole check ------------------------------------------------------------ */

void check_run(const char *path, const CheckOptions *opt, CheckReport *rep)
{
    double t0 = timeutil_now();
    memset(rep, 0, sizeof *rep);
    rep->ok = true;
    snprintf(rep->path, sizeof rep->path, "%s", path);
    snprintf(rep->shape.why, sizeof rep->shape.why, "the loss did not pass the checks");
    char err[ERR_LEN];
    LossScript *ls = loss_load(path, opt->lib_dir, &opt->limits, err, sizeof err);
    if (!ls) {
        diag(rep, CHECK_ERROR, load_code(err, path), line_of(err, path), "%s", err);
        goto done;
    }
    snprintf(rep->name, sizeof rep->name, "%s", loss_name(ls));
    for (int i = 0; i < opt->n_set; i++)
        if (loss_set_param(ls, opt->set_keys[i], opt->set_values[i], err, sizeof err) != 0)
            diag(rep, CHECK_ERROR, "unknown_param", 0, "%s", err);
    rep->n_params = loss_param_count(ls);
    for (int i = 0; i < rep->n_params; i++) {
        snprintf(rep->param_names[i], sizeof rep->param_names[i], "%s", loss_param_name(ls, i));
        rep->param_values[i] = loss_param_value(ls, i);
    }
    if (loss_unknown_fields(ls)[0])
        diag(rep, CHECK_WARNING, "unknown_field", 0,
             "the returned table has fields the contract does not know (ignored): %s; known: "
             "name, params, loss, batch_level, state, description",
             loss_unknown_fields(ls));
    uint64_t seed = opt->seed ? opt->seed : 20240601;
    if (rep->ok && check_shapes(ls, rep, seed) && check_numerics(ls, rep, seed))
        check_shape(ls, rep);
    loss_free(ls);
done:
    rep->seconds = timeutil_now() - t0;
}

/* ---- JSON --------------------------------------------------------------------- */

static const char *severity_name(CheckSeverity s)
{
    return s == CHECK_ERROR ? "error" : s == CHECK_WARNING ? "warning" : "info";
}

/* a finite number, or null (JSON has no NaN) */
static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* Text from the script, its file name or its messages may be any bytes,
 * and jansson refuses invalid UTF-8 (returning NULL, which would lose the
 * whole report): every string goes in cleaned. NULL only out of memory. */
static json_t *text(const char *s)
{
    char *c = text_utf8_clean(s, strlen(s));
    json_t *j = c ? json_string(c) : NULL;
    free(c);
    return j;
}

static json_t *shape_json(const ShapeSummary *s)
{
    if (!s->valid)
        return json_pack("{s:b, s:o}", "valid", 0, "why", text(s->why));
    json_t *st = json_array(), *flat = json_array(), *infl = json_array();
    for (int k = 0; k < s->n_stationary && k < CHECK_MAX_POINTS; k++)
        json_array_append_new(st, json_pack("{s:o, s:o, s:s}", "rho", num(s->stationary[k].rho),
                                            "value", num(s->stationary[k].value), "kind",
                                            s->stationary[k].kind == SHAPE_MIN ? "min" : "max"));
    for (int k = 0; k < s->n_flat; k++)
        json_array_append_new(flat, json_pack("[o, o]", num(s->flat[k][0]), num(s->flat[k][1])));
    for (int k = 0; k < s->n_inflections && k < CHECK_MAX_POINTS; k++)
        json_array_append_new(infl, num(s->inflections[k]));
    return json_pack(
        "{s:b, s:s, s:o, s:[o, o], s:o, s:o, s:o, s:i, s:o, s:s, s:o, s:i, s:o, s:o, s:b}", "valid",
        1, "units", "rho = beta * logits", "beta", num(s->beta), "range", num(-s->range),
        num(s->range), "f0", num(s->f0), "slope0", num(s->slope0), "stationary", st, "n_stationary",
        s->n_stationary, "flat", flat, "convexity", s->convexity, "inflections", infl,
        "n_inflections", s->n_inflections, "slope_left", num(s->slope_left), "slope_right",
        num(s->slope_right), "batch_coupled", s->coupled);
}

char *check_report_json(const CheckReport *rep)
{
    json_t *diags = json_array(), *params = json_object();
    for (int i = 0; i < rep->n_diags; i++) {
        const CheckDiag *d = &rep->diags[i];
        json_array_append_new(diags, json_pack("{s:s, s:o, s:o, s:o}", "severity",
                                               severity_name(d->severity), "code", text(d->code),
                                               "message", text(d->message), "line",
                                               d->line > 0 ? json_integer(d->line) : json_null()));
    }
    for (int i = 0; i < rep->n_params; i++) {
        char *key = text_utf8_clean(rep->param_names[i], strlen(rep->param_names[i]));
        if (!key || json_object_set_new(params, key, num(rep->param_values[i])) != 0)
            json_object_set_new(params, "?", json_null()); /* keeps the count honest */
        free(key);
    }
    json_t *root =
        json_pack("{s:b, s:o, s:o*, s:o, s:o, s:o, s:o}", "ok", rep->ok, "file", text(rep->path),
                  "name", rep->name[0] ? text(rep->name) : NULL, "params", params, "diagnostics",
                  diags, "shape", shape_json(&rep->shape), "seconds", num(rep->seconds));
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(8)) : NULL;
    json_decref(root);
    return text;
}

/* ---- text ------------------------------------------------------------------------ */

void check_print_shape(FILE *f, const ShapeSummary *s)
{
    if (!s->valid) {
        char why[1024];
        fprintf(f, "shape: not available (%s)\n", text_for_terminal(s->why, why, sizeof why));
        return;
    }
    fprintf(f, "shape (rho = beta * logits, beta = %g, rho in [%g, %g]):\n", s->beta, -s->range,
            s->range);
    fprintf(f, "  f(0) = %.6f, f'(0) = %+.5f\n", s->f0, s->slope0);
    if (!s->n_stationary)
        fprintf(f, "  stationary points: none (monotone)\n");
    for (int k = 0; k < s->n_stationary && k < CHECK_MAX_POINTS; k++)
        fprintf(f, "  local %s at rho = %+.4f (f = %.6f)\n",
                s->stationary[k].kind == SHAPE_MIN ? "minimum" : "maximum", s->stationary[k].rho,
                s->stationary[k].value);
    if (s->n_stationary > CHECK_MAX_POINTS)
        fprintf(f, "  ... %d stationary points in all\n", s->n_stationary);
    for (int k = 0; k < s->n_flat; k++)
        fprintf(f, "  flat (f' = 0) for rho in [%g, %g]\n", s->flat[k][0], s->flat[k][1]);
    fprintf(f, "  convexity: %s", s->convexity);
    for (int k = 0; k < s->n_inflections && k < CHECK_MAX_POINTS; k++)
        fprintf(f, "%s%+.3f", k ? ", " : " (inflections near rho = ", s->inflections[k]);
    fprintf(f, "%s\n", s->n_inflections ? ")" : "");
    fprintf(f, "  slopes at the ends: f'(%g) = %+.5g, f'(%g) = %+.5g\n", -s->range, s->slope_left,
            s->range, s->slope_right);
    if (s->coupled)
        fprintf(f, "  batch-coupled: a pair's loss depends on the rest of its batch; the curve is "
                   "of one pair alone\n");
}

/* Names, paths and messages come from the script and its file: on a
 * terminal they could forge a "valid" line or retitle the window, so each is
 * escaped (util/text.h) on its way out. */
void check_print_text(FILE *f, const CheckReport *rep)
{
    char a[2048], b[2048];
    fprintf(f, "%s: %s (", text_for_terminal(rep->path, a, sizeof a),
            rep->ok ? "valid" : "INVALID");
    if (rep->name[0])
        fprintf(f, "loss '%s', ", text_for_terminal(rep->name, a, sizeof a));
    for (int i = 0; i < rep->n_params; i++)
        fprintf(f, "%s=%g, ", text_for_terminal(rep->param_names[i], a, sizeof a),
                rep->param_values[i]);
    fprintf(f, "checked in %.0f ms)\n", rep->seconds * 1e3);
    for (int i = 0; i < rep->n_diags; i++) {
        const CheckDiag *d = &rep->diags[i];
        fprintf(f, "  %s [%s]", severity_name(d->severity),
                text_for_terminal(d->code, a, sizeof a));
        if (d->line > 0)
            fprintf(f, " line %d", d->line);
        fprintf(f, ": %s\n", text_for_terminal(d->message, b, sizeof b));
    }
    if (rep->ok)
        check_print_shape(f, &rep->shape);
}

int check_parse_set(CheckOptions *opt, const char *assignment, char *err, size_t errlen)
{
    const char *eq = strchr(assignment, '=');
    char *end;
    if (!eq || eq == assignment) {
        snprintf(err, errlen, "--set %s: expected KEY=VALUE", assignment);
        return -1;
    }
    double v = strtod(eq + 1, &end);
    if (end == eq + 1 || *end || !isfinite(v)) {
        snprintf(err, errlen, "--set %s: the value must be a finite number", assignment);
        return -1;
    }
    if (opt->n_set == CHECK_MAX_SETS) {
        snprintf(err, errlen, "more than %d --set options", CHECK_MAX_SETS);
        return -1;
    }
    snprintf(opt->set_keys[opt->n_set], sizeof opt->set_keys[0], "%.*s", (int)(eq - assignment),
             assignment);
    opt->set_values[opt->n_set++] = v;
    return 0;
}
