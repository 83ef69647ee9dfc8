/*
 * cli/grad.c — `prefrun grad`: loss values and gradients on given cases
 * (--cases), the loss curve with its shape summary (--curve), and the cost of
 * one loss call plus backward (--bench).
 *
 * Cases are JSON, one batch each:
 *   {"cases": [{"params": {...}, "policy_chosen_logps": [...],
 *               "policy_rejected_logps": [...], "reference_chosen_logps": [...],
 *               "reference_rejected_logps": [...], "chosen_lengths": [...],
 *               "rejected_lengths": [...]}, ...]}
 * and the answer is
 *   {"results": [{"loss": mean over the batch, "losses": [per pair],
 *                 "grad_policy_chosen_logps": [...],
 *                 "grad_policy_rejected_logps": [...]}, ...]}
 * with gradients of the mean loss. Params layer: the file's defaults, then
 * --set, then the case's own "params" (which last for that case only).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lua/check.h"
#include "cli/cli.h"
#include "cli/options.h"
#include "util/jsonfile.h"
#include "util/fsutil.h"
#include "lua/loss.h"
#include "core/ops.h"
#include "util/timeutil.h"

#define ERR_LEN 512

static void usage(FILE *f)
{
    fprintf(f,
            "usage: prefrun grad LOSS.lua --cases CASES.json [--set KEY=VALUE]...\n"
            "       prefrun grad LOSS.lua --curve [--out PREFIX] [--range R] [--points N]\n"
            "       prefrun grad LOSS.lua --bench [--batch B]\n\n"
            "--cases: the loss and its gradient on each case of CASES.json:\n"
            "  {\"cases\": [{\"params\": {\"beta\": 0.1}, \"policy_chosen_logps\": [...],\n"
            "    \"policy_rejected_logps\": [...], \"reference_chosen_logps\": [...],\n"
            "    \"reference_rejected_logps\": [...], \"chosen_lengths\": [...],\n"
            "    \"rejected_lengths\": [...]}]}          (params and lengths optional)\n"
            "  prints {\"results\": [{\"loss\", \"losses\", \"grad_policy_chosen_logps\",\n"
            "    \"grad_policy_rejected_logps\"}]}; gradients are of the mean loss.\n"
            "--curve: the loss of one pair and its slope over rho = beta * logits in\n"
            "  [-R, R] (default 10, 2001 points), written to PREFIX.csv and PREFIX.svg\n"
            "  (default PREFIX: <loss name>-curve), and the shape summary printed.\n"
            "--bench: microseconds per loss call, and per call plus backward, at\n"
            "  B pairs (default 64).\n\n"
            "options:\n"
            "  --set KEY=VALUE    override a loss param (repeatable)\n"
            "  --losses DIR       where use(\"name\") finds library losses\n"
            "  -h, --help         this text\n\n"
            "examples:\n"
            "  echo '{\"cases\": [{\"policy_chosen_logps\": [-10, -12],\n"
            "    \"policy_rejected_logps\": [-11, -11], \"reference_chosen_logps\": [-10, -10],\n"
            "    \"reference_rejected_logps\": [-10, -10]}]}' > cases.json\n"
            "  prefrun grad losses/dpo.lua --cases cases.json --set beta=0.1\n"
            "  prefrun grad losses/discopop.lua --curve --out /tmp/discopop\n");
}

typedef enum GradMode { MODE_CASES, MODE_CURVE, MODE_BENCH } GradMode;

typedef struct GradArgs {
    const char *path, *cases, *out;
    GradMode mode;
    double range;
    int points, batch;
    CheckOptions opt;
} GradArgs;

static int parse(int argc, char **argv, GradArgs *a)
{
    bool curve = false, bench = false;
    const CliOpt opts[] = {
        CLI_STRING("cases", 0, &a->cases),
        CLI_FLAG("curve", 0, &curve),
        CLI_FLAG("bench", 0, &bench),
        CLI_STRING("out", 0, &a->out),
        CLI_DOUBLE("range", 0, &a->range, 1e-6, 1e6),
        CLI_INT("points", 0, &a->points, 3, 1000000),
        CLI_INT("batch", 0, &a->batch, 1, 1 << 20),
        CLI_CALL("set", 0, cli_check_set, &a->opt),
        CLI_STRING("losses", 0, &a->opt.lib_dir),
    };
    const CliCommand cmd = {CLI_COMMAND("grad", usage, opts), .operand = "LOSS.lua",
                            .operands = &a->path, .min_operands = 1, .max_operands = 1};
    int rc = cli_parse(&cmd, argc, argv);
    if (rc != CLI_CONTINUE)
        return rc;
    if ((a->cases != NULL) + curve + bench != 1)
        return cli_usage_error("grad", "expected one of --cases, --curve, --bench "
                                       "(see prefrun grad --help)");
    a->mode = a->cases ? MODE_CASES : curve ? MODE_CURVE : MODE_BENCH;
    return CLI_CONTINUE;
}

/* ---- --cases ------------------------------------------------------------------ */

static const char *const seq_fields[] = {"policy_chosen_logps",    "policy_rejected_logps",
                                         "reference_chosen_logps", "reference_rejected_logps",
                                         "chosen_lengths",         "rejected_lengths"};

/* case field f as a (B) tensor; NULL without error when optional and absent */
static int case_field(json_t *cs, int f, TensorCtx *ctx, int *B, Tensor **out, char *err,
                      size_t errlen)
{
    json_t *arr = json_object_get(cs, seq_fields[f]);
    *out = NULL;
    if (!arr && f >= 4)
        return 0;
    if (!json_is_array(arr) || json_array_size(arr) == 0 || json_array_size(arr) > 1000000) {
        snprintf(err, errlen, "\"%s\" must be a non-empty array of numbers", seq_fields[f]);
        return -1;
    }
    int n = (int)json_array_size(arr);
    if (*B && n != *B) {
        snprintf(err, errlen, "\"%s\" has %d entries, the batch has %d", seq_fields[f], n, *B);
        return -1;
    }
    *B = n;
    *out = tensor_new(ctx, 1, B);
    for (int i = 0; *out && i < n; i++) {
        json_t *v = json_array_get(arr, (size_t)i);
        if (!json_is_number(v)) {
            snprintf(err, errlen, "\"%s\"[%d] is not a number", seq_fields[f], i);
            return -1;
        }
        (*out)->data[i] = (float)json_number_value(v);
    }
    if (!*out) {
        snprintf(err, errlen, "%s", tensor_ctx_error(ctx));
        return -1;
    }
    return 0;
}

static int case_params(LossScript *ls, json_t *cs, char *err, size_t errlen)
{
    json_t *params = json_object_get(cs, "params"), *v;
    const char *key;
    if (params && !json_is_object(params)) {
        snprintf(err, errlen, "\"params\" must be an object of numbers");
        return -1;
    }
    json_object_foreach(params, key, v)
    {
        if (!json_is_number(v)) {
            snprintf(err, errlen, "params.%s must be a number", key);
            return -1;
        }
        if (loss_set_param(ls, key, json_number_value(v), err, errlen) != 0)
            return -1;
    }
    return 0;
}

static json_t *floats_json(const float *v, int n)
{
    json_t *arr = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(arr, isfinite(v[i]) ? json_real(v[i]) : json_null());
    return arr;
}

/* The loss batch of f, in LossBatch's field order (policy chosen and
 * rejected, reference chosen and rejected, lengths), with d/d(policy) asked */
static LossBatch grad_batch(Tensor *f[6], int B)
{
    tensor_requires_grad(f[0]);
    tensor_requires_grad(f[1]);
    return (LossBatch){.B = B,
                       .policy_chosen_logps = f[0],
                       .policy_rejected_logps = f[1],
                       .reference_chosen_logps = f[2],
                       .reference_rejected_logps = f[3],
                       .chosen_lengths = f[4],
                       .rejected_lengths = f[5]};
}

/* one case: the batch, the loss, backward of the mean, the result object */
static json_t *run_case(LossScript *ls, json_t *cs, char *err, size_t errlen)
{
    if (!json_is_object(cs)) {
        snprintf(err, errlen, "a case must be an object");
        return NULL;
    }
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *f[6];
    int B = 0;
    json_t *res = NULL;
    LossBatch b = {0};
    for (int k = 0; k < 6; k++)
        if (case_field(cs, k, ctx, &B, &f[k], err, errlen) != 0)
            goto done;
    if (case_params(ls, cs, err, errlen) != 0)
        goto done;
    b = grad_batch(f, B);
    Tensor *l = loss_eval(ls, ctx, &b, err, errlen);
    if (!l)
        goto done;
    Tensor *m = loss_is_batch_level(ls) ? l : ag_mean(ctx, l, AG_ALL, false);
    if (!m || ag_backward(ctx, m, NULL) != 0) {
        snprintf(err, errlen, "backward: %s", tensor_ctx_error(ctx));
        goto done;
    }
    float zero[1] = {0};
    res = json_pack("{s:o, s:o, s:o, s:o}", "loss",
                    isfinite(m->data[0]) ? json_real(m->data[0]) : json_null(), "losses",
                    loss_is_batch_level(ls) ? json_null() : floats_json(l->data, B),
                    "grad_policy_chosen_logps", floats_json(f[0]->grad ? f[0]->grad : zero, B),
                    "grad_policy_rejected_logps", floats_json(f[1]->grad ? f[1]->grad : zero, B));
done:
    tensor_ctx_free(ctx);
    return res;
}

static int run_cases(LossScript *ls, const GradArgs *a)
{
    static const FsReadCap cap = {.bytes = (size_t)64 << 20, .kind = "a cases file"};
    char msg[ERR_LEN + 64];
    json_t *root = jsonfile_load(a->cases, &cap, msg, sizeof msg);
    json_t *cases = root ? json_object_get(root, "cases") : NULL;
    if (!json_is_array(cases)) {
        if (root)
            snprintf(msg, sizeof msg, "%s: expected {\"cases\": [...]}", a->cases);
        json_decref(root);
        return cli_error("grad", EXIT_INPUT, msg);
    }
    double base[64]; /* the params after --set: each case starts from them */
    for (int i = 0; i < loss_param_count(ls) && i < 64; i++)
        base[i] = loss_param_value(ls, i);
    json_t *results = json_array();
    char err[ERR_LEN];
    int rc = EXIT_OK;
    for (size_t k = 0; k < json_array_size(cases) && rc == EXIT_OK; k++) {
        for (int i = 0; i < loss_param_count(ls) && i < 64; i++)
            loss_set_param(ls, loss_param_name(ls, i), base[i], err, sizeof err);
        json_t *r = run_case(ls, json_array_get(cases, k), err, sizeof err);
        if (!r) {
            snprintf(msg, sizeof msg, "case %zu: %s", k + 1, err);
            cli_error("grad", 0, msg);
            rc = EXIT_FAILED;
        }
        json_array_append_new(results, r);
    }
    if (rc == EXIT_OK) {
        json_t *out = json_pack("{s:O}", "results", results);
        char *text = json_dumps(out, JSON_REAL_PRECISION(9));
        printf("%s\n", text ? text : "");
        free(text);
        json_decref(out);
    }
    json_decref(results);
    json_decref(root);
    return rc;
}

/* ---- --curve -------------------------------------------------------------------- */

/* one panel of the plot: y(rho) as a polyline in the box (x0, y0, w, h) */
static void svg_panel(FsAtomic *f, const LossCurve *c, const double *y, double x0, double y0,
                      double w, double h, const char *label)
{
    double lo = y[0], hi = y[0];
    for (int i = 1; i < c->n; i++) {
        lo = fmin(lo, y[i]);
        hi = fmax(hi, y[i]);
    }
    if (hi - lo < 1e-12) {
        lo -= 0.5;
        hi += 0.5;
    }
    double r = c->rho[c->n - 1];
#define SX(v) (x0 + ((v) + r) / (2 * r) * w)
#define SY(v) (y0 + h - ((v)-lo) / (hi - lo) * h)
    fsutil_atomic_printf(f,
                         "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' "
                         "stroke='#888'/>\n",
                         x0, y0, w, h);
    if (lo < 0 && hi > 0)
        fsutil_atomic_printf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ccc'/>\n",
                             x0, SY(0.0), x0 + w, SY(0.0));
    fsutil_atomic_printf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ccc'/>\n",
                         SX(0.0), y0, SX(0.0), y0 + h);
    fsutil_atomic_printf(f, "<text x='%.1f' y='%.1f' font-size='12'>%s (%.4g to %.4g)</text>\n",
                         x0 + 4, y0 + 14, label, lo, hi);
    fsutil_atomic_printf(f, "<polyline fill='none' stroke='#1f77b4' stroke-width='1.5' points='");
    for (int i = 0; i < c->n; i++)
        fsutil_atomic_printf(f, "%.1f,%.1f ", SX(c->rho[i]), SY(y[i]));
    fsutil_atomic_printf(f, "'/>\n");
    for (int t = (int)ceil(-r); t <= (int)floor(r); t += r > 10 ? 5 : 1)
        fsutil_atomic_printf(f,
                             "<text x='%.1f' y='%.1f' font-size='10' text-anchor='middle'>%d"
                             "</text>\n",
                             SX((double)t), y0 + h + 12, t);
#undef SX
#undef SY
}

static int write_svg(const char *path, const LossCurve *c, const char *name, char *err,
                     size_t errlen)
{
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    if (!f)
        return -1;
    fsutil_atomic_printf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='640' height='520' "
                            "font-family='sans-serif'>\n<rect width='640' height='520' "
                            "fill='white'/>\n");
    fsutil_atomic_printf(f,
                         "<text x='320' y='20' text-anchor='middle' font-size='14'>%s: loss "
                         "and slope vs rho = beta * logits (beta = %g)</text>\n",
                         name, c->beta);
    svg_panel(f, c, c->value, 50, 35, 570, 200, "loss f(rho)");
    svg_panel(f, c, c->slope, 50, 280, 570, 200, "slope df/drho");
    fsutil_atomic_printf(f, "<text x='335' y='510' text-anchor='middle' font-size='12'>rho"
                            "</text>\n</svg>\n");
    return fsutil_atomic_commit(f, err, errlen);
}

static int write_csv(const char *path, const LossCurve *c, char *err, size_t errlen)
{
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    if (!f)
        return -1;
    fsutil_atomic_printf(f, "rho,logits,loss,dloss_drho\n");
    for (int i = 0; i < c->n; i++)
        fsutil_atomic_printf(f, "%.9g,%.9g,%.9g,%.9g\n", c->rho[i], c->rho[i] / c->beta,
                             c->value[i], c->slope[i]);
    return fsutil_atomic_commit(f, err, errlen);
}

static int run_curve(LossScript *ls, const GradArgs *a)
{
    LossCurve c;
    ShapeSummary s;
    char err[ERR_LEN], prefix[1024], path[1100];
    if (check_curve(ls, a->range, a->points, &c, err, sizeof err) != 0) {
        cli_error("grad", 0, err);
        return EXIT_FAILED;
    }
    check_shape_summary(ls, &c, &s);
    if (a->out)
        snprintf(prefix, sizeof prefix, "%s", a->out);
    else
        snprintf(prefix, sizeof prefix, "%s-curve", loss_name(ls));
    int rc = EXIT_OK;
    snprintf(path, sizeof path, "%s.csv", prefix);
    if (write_csv(path, &c, err, sizeof err) != 0)
        rc = EXIT_FAILED;
    snprintf(path, sizeof path, "%s.svg", prefix);
    if (rc == EXIT_OK && write_svg(path, &c, loss_name(ls), err, sizeof err) != 0)
        rc = EXIT_FAILED;
    if (rc != EXIT_OK)
        cli_error("grad", 0, err);
    else
        printf("wrote %s.csv and %s.svg\n", prefix, prefix);
    check_print_shape(stdout, &s);
    check_curve_free(&c);
    return rc;
}

/* ---- --bench -------------------------------------------------------------------- */

/* microseconds per iteration of loss_eval (+ backward of the mean) at B pairs */
static int bench_one(LossScript *ls, int B, bool backward, double *us, char *err, size_t errlen)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    float *v = malloc((size_t)B * sizeof *v);
    int shape[1] = {B}, iters = 0, rc = 0;
    double t0 = timeutil_now(), t = t0;
    for (; rc == 0 && (t - t0 < 0.5 || iters < 20); iters++) {
        tensor_ctx_reset(ctx);
        Tensor *f[6];
        for (int k = 0; k < 6; k++) {
            for (int i = 0; i < B; i++)
                v[i] = k >= 4 ? 20.0f : -30.0f - (float)((i * 7 + k * 3) % 11);
            f[k] = tensor_from_data(ctx, 1, shape, v);
        }
        LossBatch b = grad_batch(f, B);
        Tensor *l = loss_eval(ls, ctx, &b, err, errlen);
        if (!l)
            rc = -1;
        else if (backward &&
                 ag_backward(ctx, loss_is_batch_level(ls) ? l : ag_mean(ctx, l, AG_ALL, false),
                             NULL) != 0) {
            snprintf(err, errlen, "backward: %s", tensor_ctx_error(ctx));
            rc = -1;
        }
        t = timeutil_now();
    }
    *us = (t - t0) / iters * 1e6;
    free(v);
    tensor_ctx_free(ctx);
    return rc;
}

static int run_bench(LossScript *ls, const GradArgs *a)
{
    char err[ERR_LEN];
    double fwd, both;
    if (bench_one(ls, a->batch, false, &fwd, err, sizeof err) != 0 ||
        bench_one(ls, a->batch, true, &both, err, sizeof err) != 0) {
        cli_error("grad", 0, err);
        return EXIT_FAILED;
    }
    printf("%s at B = %d: %.1f us per loss call, %.1f us per call + backward (includes making "
           "the batch's 6 tensors)\n",
           loss_name(ls), a->batch, fwd, both);
    return EXIT_OK;
}

int cmd_grad(int argc, char **argv)
{
    GradArgs a = {.range = 10, .points = 2001, .batch = 64};
    int rc = parse(argc, argv, &a);
    if (rc != CLI_CONTINUE)
        return rc;
    char err[ERR_LEN];
    LossScript *ls = loss_load(a.path, a.opt.lib_dir, &a.opt.limits, err, sizeof err);
    if (!ls) {
        cli_error("grad", 0, err);
        return EXIT_FAILED;
    }
    for (int i = 0; i < a.opt.n_set; i++)
        if (loss_set_param(ls, a.opt.set_keys[i], a.opt.set_values[i], err, sizeof err) != 0) {
            cli_error("grad", 0, err);
            loss_free(ls);
            return EXIT_USAGE;
        }
    rc = a.mode == MODE_CASES   ? run_cases(ls, &a)
         : a.mode == MODE_CURVE ? run_curve(ls, &a)
                                : run_bench(ls, &a);
    loss_free(ls);
    return rc;
}
