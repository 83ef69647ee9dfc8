/*
 * task/fitness_interim.c — the interim fitness (task/fitness_interim.h): short
 * training runs scored by held-out preference accuracy.
 *
 * Each seed's run lives in WORK_DIR/seed-N and is removed once its metrics
 * are read, so a long discovery run leaves no training directories behind.
 */
#include "task/fitness_interim.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"
#include "util/timeutil.h"
#include "train/train.h"

#define PATH_LEN 1024
#define MAX_LOG_LINES 4096 /* training lines kept for the curve: steps / logging_steps */

/* ---- reading a run's metrics.jsonl ---------------------------------------- */

typedef struct RunMetrics {
    bool have_eval;
    double accuracy, margin, loss; /* the last eval_* line */
    int n_log;
    FitnessPoint log[MAX_LOG_LINES]; /* the training lines, in order */
} RunMetrics;

static double get_num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static void take_line(json_t *j, RunMetrics *m)
{
    if (json_object_get(j, "eval_rewards/accuracies")) {
        m->have_eval = true;
        m->accuracy = get_num(j, "eval_rewards/accuracies");
        m->margin = get_num(j, "eval_rewards/margins");
        m->loss = get_num(j, "eval_loss");
    } else if (json_object_get(j, "loss") && m->n_log < MAX_LOG_LINES) {
        json_t *s = json_object_get(j, "step");
        m->log[m->n_log++] = (FitnessPoint){json_is_integer(s) ? json_integer_value(s) : 0,
                                            get_num(j, "loss"), get_num(j, "rewards/accuracies")};
    }
}

static int read_metrics(const char *path, RunMetrics *m, char *err, size_t errlen)
{
    char *text;
    size_t len;
    static const FsReadCap cap = {.bytes = (size_t)256 << 20, .kind = "a run's metrics"};
    if (fsutil_read_capped(path, &cap, &text, &len, err, errlen) != 0)
        return -1;
    m->have_eval = false;
    m->n_log = 0;
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        json_t *j = json_loadb(line, n, 0, NULL);
        if (j)
            take_line(j, m);
        json_decref(j);
        line += n + (nl ? 1 : 0);
    }
    free(text);
    if (!m->have_eval) {
        snprintf(err, errlen,
                 "%s has no evaluation: the interim fitness needs held-out pairs "
                 "(eval_fraction > 0 or eval_file)",
                 path);
        return -1;
    }
    return 0;
}

/* at most FITNESS_CURVE_POINTS evenly spread points, the last always kept */
static void thin_curve(const RunMetrics *m, FitnessResult *out)
{
    int n = m->n_log, k = n < FITNESS_CURVE_POINTS ? n : FITNESS_CURVE_POINTS;
    out->n_curve = k;
    for (int i = 0; i < k; i++) {
        int at = k == 1 ? n - 1 : (int)((int64_t)i * (n - 1) / (k - 1));
        out->curve[i] = m->log[at];
    }
}

/* ---- one seed -------------------------------------------------------------- */

static int run_seed(const char *loss_path, const FitnessOptions *opt, int i, RunMetrics *m,
                    char *err, size_t errlen)
{
    char dir[PATH_LEN], metrics[PATH_LEN + 16];
    snprintf(dir, sizeof dir, "%s/seed-%llu", opt->work_dir, (unsigned long long)opt->seeds[i]);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", dir);
    if (fsutil_remove_tree(dir, err, errlen) != 0 || fsutil_mkdirs(dir, err, errlen) != 0)
        return -1;
    TrainOptions to = {.cfg = opt->cfg,
                       .n_losses = 1,
                       .loss_paths = {loss_path},
                       .loss_weights = {1.0},
                       .run_dir = dir,
                       .quiet = true};
    to.cfg.seed = opt->seeds[i];
    to.cfg.max_steps = opt->steps;
    to.cfg.logging_steps =
        opt->steps / FITNESS_CURVE_POINTS > 0 ? opt->steps / FITNESS_CURVE_POINTS : 1;
    to.cfg.eval_steps = 0; /* evaluate once, at the end */
    to.cfg.save_steps = 0;
    to.cfg.save_total_limit = 1;
    TrainResult tr;
    char terr[1024];
    TrainStatus st = train_run(&to, &tr, terr, sizeof terr);
    int rc = st == TRAIN_OK ? read_metrics(metrics, m, err, errlen) : -1;
    if (st != TRAIN_OK)
        snprintf(err, errlen, "training (seed %llu, %d steps) failed: %s",
                 (unsigned long long)opt->seeds[i], opt->steps, terr);
    char rerr[256];
    fsutil_remove_tree(dir, rerr, sizeof rerr);
    return rc;
}

int fitness_interim(const char *loss_path, const FitnessOptions *opt, FitnessResult *out, char *err,
                    size_t errlen)
{
    double t0 = timeutil_now();
    memset(out, 0, sizeof *out);
    snprintf(out->metric, sizeof out->metric, "eval_rewards/accuracies");
    FitnessOptions o = *opt;
    if (o.steps == 0)
        o.steps = INTERIM_STEPS;
    opt = &o;
    if (opt->n_seeds < 1 || opt->n_seeds > FITNESS_MAX_SEEDS || opt->steps < 1) {
        snprintf(err, errlen, "fitness: 1 to %d seeds and at least 1 step (got %d seeds, %d steps)",
                 FITNESS_MAX_SEEDS, opt->n_seeds, opt->steps);
        return -1;
    }
    RunMetrics *m = malloc(sizeof *m);
    if (!m) {
        snprintf(err, errlen, "fitness: out of memory");
        return -1;
    }
    int rc = 0;
    for (int i = 0; rc == 0 && i < opt->n_seeds; i++) {
        rc = run_seed(loss_path, opt, i, m, err, errlen);
        if (rc != 0)
            break;
        out->seeds[i] = opt->seeds[i];
        out->per_seed[i] = m->accuracy;
        out->fitness += m->accuracy / opt->n_seeds;
        out->eval_margin += m->margin / opt->n_seeds;
        out->eval_loss += m->loss / opt->n_seeds;
        if (i == 0)
            thin_curve(m, out);
        out->n_seeds = i + 1;
    }
    free(m);
    out->se = fitness_standard_error(out->per_seed, out->n_seeds);
    out->steps = opt->steps;
    out->seconds = timeutil_now() - t0;
    return rc;
}
