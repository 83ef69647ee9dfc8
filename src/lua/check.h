/*
 * lua/check.h — the loss checker behind `prefrun check`, and the loss-shape
 * curve and summary behind `prefrun grad --curve`.
 *
 * A candidate loss passes, in order (a failed step stops the later ones):
 *   1. schema    it loads: the file returns {name, params, loss, ...}
 *   2. shapes    on shape-only (meta) tensors at B = 1, 7 and 64 it returns
 *                (B) (0-D when batch_level); cheap, no data
 *   3. numerics  on probe batches (random; extreme |logits| up to 100; ties)
 *                the values and the gradients w.r.t. the policy log-probs are
 *                finite
 *   4. signal    that gradient is not zero everywhere; a warning when at
 *                logits = 0 raising the chosen log-prob raises the loss
 * and then the shape summary is computed from the loss on a grid of logits.
 * Diagnostics are short and specific, for a person or an LLM to act on:
 *     {severity: "error"|"warning"|"info", code, message, line (or null)}
 *
 * The curve moves one pair's margin: policy chosen = -L + x/2, policy
 * rejected = -L - x/2, both references -L (L keeps every log-prob below 0),
 * lengths 1, so logits = x. It is reported in rho = beta * logits units,
 * beta being the loss's `beta` param (1 when it has none). Per-pair losses
 * are evaluated on the whole grid as one batch (exact for losses without
 * batch statistics); batch-level losses one point (B = 1) at a time.
 */
#ifndef PREFRUN_CHECK_H
#define PREFRUN_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lua/loss.h"

#define CHECK_MAX_DIAGS 32
#define CHECK_MAX_POINTS 8
#define CHECK_MAX_SETS 32

typedef enum CheckSeverity { CHECK_ERROR, CHECK_WARNING, CHECK_INFO } CheckSeverity;

typedef struct CheckDiag {
    CheckSeverity severity;
    char code[32]; /* stable, for programs: "shape", "nonfinite_grad", ... */
    char message[480];
    int line; /* in the checked file; 0 when unknown */
} CheckDiag;

typedef enum ShapeKind { SHAPE_MIN, SHAPE_MAX } ShapeKind;

typedef struct ShapePoint {
    double rho, value;
    ShapeKind kind;
} ShapePoint;

typedef struct ShapeSummary {
    bool valid;
    char why[600];     /* when not valid */
    double beta;       /* rho = beta * logits */
    double range;      /* the grid spans rho in [-range, range] */
    double f0, slope0; /* f(0) and df/drho at 0 */
    int n_stationary;  /* sign changes of df/drho; the first CHECK_MAX_POINTS kept */
    ShapePoint stationary[CHECK_MAX_POINTS];
    int n_flat; /* intervals where df/drho is 0 to float precision */
    double flat[CHECK_MAX_POINTS][2];
    const char *convexity; /* "convex", "concave", "linear" or "mixed" */
    int n_inflections;
    double inflections[CHECK_MAX_POINTS];
    double slope_left, slope_right; /* df/drho at -range and +range */
    bool coupled;                   /* the loss couples the pairs of a batch (see LossCurve) */
} ShapeSummary;

typedef struct LossCurve {
    int n;
    double beta;
    double *rho;   /* (n) */
    double *value; /* (n) the loss of one pair at rho */
    double *slope; /* (n) d loss / d rho */
    bool coupled;  /* pairs of a batch affect each other's loss: each point was
                    * evaluated as a batch of one pair */
} LossCurve;

typedef struct CheckOptions {
    const char *lib_dir; /* NULL: loss_default_lib_dir() */
    LossLimits limits;   /* zero fields: the sandbox defaults */
    int n_set;           /* --set key=value overrides */
    char set_keys[CHECK_MAX_SETS][64];
    double set_values[CHECK_MAX_SETS];
    uint64_t seed; /* of the random probes */
} CheckOptions;

typedef struct CheckReport {
    bool ok; /* no diagnostic of severity error */
    char path[1024];
    char name[64];
    int n_params;
    char param_names[64][32];
    double param_values[64];
    int n_diags;
    CheckDiag diags[CHECK_MAX_DIAGS];
    ShapeSummary shape;
    double seconds;
} CheckReport;

/* Runs every check on the file at path; the verdict and findings go to rep. */
void check_run(const char *path, const CheckOptions *opt, CheckReport *rep);
/* The report as JSON text (malloc'ed): {"ok", "diagnostics", "shape", ...}. */
char *check_report_json(const CheckReport *rep);
/* The report for a person: verdict, diagnostics, shape summary. */
void check_print_text(FILE *f, const CheckReport *rep);
void check_print_shape(FILE *f, const ShapeSummary *s);
/* Adds one "KEY=VALUE" (a number) to opt->set_*; 0, or -1 with err set. */
int check_parse_set(CheckOptions *opt, const char *assignment, char *err, size_t errlen);

/* The loss of one pair over rho in [-range, range] at n points (n odd puts a
 * point at 0). Returns 0, or -1 with err set. */
int check_curve(LossScript *ls, double range, int n, LossCurve *curve, char *err, size_t errlen);
void check_curve_free(LossCurve *curve);
/* The shape summary of a curve made by check_curve; stationary points are
 * refined by bisection on further evaluations of ls. */
void check_shape_summary(LossScript *ls, const LossCurve *curve, ShapeSummary *s);

#endif
