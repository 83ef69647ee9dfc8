/*
 * task/fitness.c — the task fitness (fitness.h): per seed, train from the
 * reference, evaluate, score reward - lambda KL; the mean over seeds.
 *
 * Each seed's run lives in WORK_DIR/task-seed-N and is removed once its
 * metrics are read and its policy evaluated, as the FitnessFn contract asks.
 *
 * With opt->cfg.model set (discover's --model, or `model:` under train:),
 * every run trains that Hugging Face model folder instead of the task's
 * byte model, on the task's pair texts through its tokenizer, with the
 * task's training budget (the rate TRL's, as for any run of a model, unless
 * train: sets it); the reference is the folder's model and the
 * evaluation samples with its tokenizer (eval.h), loaded once per call.
 */
#include "task/fitness.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/errmsg.h"
#include "task/eval.h"
#include "util/fsutil.h"
#include "lua/loss.h"
#include "task/task_data.h"
#include "util/timeutil.h"
#include "model/hf_config.h"
#include "model/hf_model.h"
#include "task/sample.h"
#include "tokenizer/tokenizer.h"
#include "train/train.h"
#include "train/model_load.h"

#define PATH_LEN 1024

/* With a model: its folder's, and the task's lengths within its positions
 * (config_finalize then takes its shape). */
static int use_model(Config *cfg, const char *model, char *err, size_t errlen)
{
    char path[CONFIG_PATH_LEN + 32];
    HfConfig hc;
    snprintf(path, sizeof path, "%s/%s", model, HF_CONFIG_FILE);
    if (hf_config_load(path, &hc, err, errlen) != 0)
        return -1;
    snprintf(cfg->model, sizeof cfg->model, "%s", model); /* same size */
    if (cfg->max_length > hc.context)
        cfg->max_length = hc.context;
    if (cfg->max_prompt_length >= cfg->max_length)
        cfg->max_prompt_length = cfg->max_length / 2;
    return 0;
}

/* The task's training settings at the fitness's rate (fitness.h); from the
 * caller's only the model, threads, sandbox limits, nan_policy and the LoRA
 * settings. */
static int task_config(const FitnessOptions *opt, const TaskAssets *a, Config *cfg, char *err,
                       size_t errlen)
{
    const Config *in = &opt->cfg;
    config_defaults(cfg);
    task_train_defaults(cfg);
    task_train_config(cfg, a);
    if (in->model[0] && use_model(cfg, in->model, err, errlen) != 0)
        return -1;
    cfg->threads = in->threads;
    cfg->nan_policy = in->nan_policy;
    /* LoRA (train: use_peft): the candidate trains adapters on the reference */
    cfg->use_peft = in->use_peft;
    cfg->lora_r = in->lora_r;
    cfg->lora_alpha = in->lora_alpha;
    cfg->lora_dropout = in->lora_dropout;
    cfg->use_rslora = in->use_rslora;
    memcpy(cfg->target_modules, in->target_modules, sizeof cfg->target_modules);
    cfg->sandbox_lua_bytes = in->sandbox_lua_bytes;
    cfg->sandbox_tensor_bytes = in->sandbox_tensor_bytes;
    cfg->sandbox_instructions = in->sandbox_instructions;
    cfg->sandbox_seconds = in->sandbox_seconds;
    cfg->sandbox_max_depth = in->sandbox_max_depth;
    if (!in->model[0])
        cfg->learning_rate = FITNESS_LEARNING_RATE;
    if (opt->steps > 0)
        cfg->max_steps = opt->steps;
    cfg->logging_steps =
        cfg->max_steps / FITNESS_CURVE_POINTS > 0 ? cfg->max_steps / FITNESS_CURVE_POINTS : 1;
    cfg->save_total_limit = 1;
    return config_finalize(cfg, err, errlen);
}

/* beta = FITNESS_BETA when the script declares a beta (else its own form). */
static int set_beta(const char *loss_path, Config *cfg, char *err, size_t errlen)
{
    LossScript *ls = loss_load(loss_path, NULL, NULL, err, errlen);
    if (!ls)
        return -1;
    bool has = false;
    for (int i = 0; i < loss_param_count(ls); i++)
        has = has || strcmp(loss_param_name(ls, i), "beta") == 0;
    loss_free(ls);
    return has ? config_set_loss_param(cfg, "beta", FITNESS_BETA, err, errlen) : 0;
}

/* ---- the run's metrics ---------------------------------------------------- */

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* eval_* margin and loss of the last evaluation line, and (when curve) the
 * training lines thinned to FITNESS_CURVE_POINTS, the last one kept. */
static void read_metrics(const char *run_dir, FitnessResult *out, double *margin, double *loss,
                         bool curve)
{
    char path[PATH_LEN + 32], err[256], *text;
    size_t len;
    FitnessPoint pts[1024]; /* a run logs steps / logging_steps lines */
    int n = 0;
    *margin = *loss = NAN;
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    static const FsReadCap cap = {.bytes = (size_t)256 << 20, .kind = "a run's metrics"};
    if (fsutil_read_capped(path, &cap, &text, &len, err, sizeof err) != 0)
        return;
    for (char *line = text, *nl; *line; line = nl ? nl + 1 : line + strlen(line)) {
        nl = strchr(line, '\n');
        json_t *j = json_loadb(line, nl ? (size_t)(nl - line) : strlen(line), 0, NULL);
        if (json_object_get(j, "eval_rewards/margins")) {
            *margin = num(j, "eval_rewards/margins");
            *loss = num(j, "eval_loss");
        } else if (json_object_get(j, "loss") && n < 1024) {
            pts[n++] = (FitnessPoint){(int64_t)num(j, "step"), num(j, "loss"),
                                      num(j, "rewards/accuracies")};
        }
        json_decref(j);
    }
    free(text);
    int k = n < FITNESS_CURVE_POINTS ? n : FITNESS_CURVE_POINTS;
    for (int i = 0; curve && i < k; i++)
        out->curve[i] = pts[k == 1 ? n - 1 : (int)((int64_t)i * (n - 1) / (k - 1))];
    if (curve)
        out->n_curve = k;
}

/* ---- one seed --------------------------------------------------------------- */

/* The reference and how to sample: the task's byte model, or a Hugging
 * Face folder's model, tokenizer and stop ids. */
typedef struct Ref {
    Gpt *m;
    Tokenizer *tok;
    SampleOptions stops; /* stop_ids, n_stop */
} Ref;

typedef struct SeedRun {
    const char *loss_path;
    const Config *cfg;
    const TaskAssets *task;
    const Ref *ref;
    uint64_t seed;
    char dir[PATH_LEN];
} SeedRun;

static int seed_eval(const SeedRun *s, EvalResult *er, char *err, size_t errlen)
{
    Gpt *pol;
    if (run_model_load(s->dir, &pol, NULL, 0, err, errlen) != 0)
        return -1;
    EvalOptions eo;
    eval_defaults(&eo);
    eo.seed = s->seed;
    eo.tokenizer = s->ref->tok;
    eo.n_stop = s->ref->stops.n_stop;
    memcpy(eo.stop_ids, s->ref->stops.stop_ids, sizeof eo.stop_ids);
    int rc = eval_models(pol, s->ref->m, s->task->seed, "", &eo, er, err, errlen);
    gpt_free(pol);
    return rc;
}

static int seed_run(const SeedRun *s, FitnessResult *out, int i, char *err, size_t errlen)
{
    TrainOptions to = {.cfg = *s->cfg,
                       .n_losses = 1,
                       .loss_paths = {s->loss_path},
                       .loss_weights = {1.0},
                       .run_dir = s->dir,
                       .quiet = true,
                       .init_model = s->cfg->model[0] ? NULL : s->task->reference};
    to.cfg.seed = s->seed;
    TrainResult tr;
    char terr[1024];
    if (fsutil_remove_tree(s->dir, err, errlen) != 0)
        return -1;
    if (train_run(&to, &tr, terr, sizeof terr) != TRAIN_OK)
        return err_fail(err, errlen, "training (seed %llu, %d steps) failed: %s",
                        (unsigned long long)s->seed, s->cfg->max_steps, terr);
    double margin, loss;
    read_metrics(s->dir, out, &margin, &loss, i == 0);
    EvalResult er;
    int rc = seed_eval(s, &er, err, errlen);
    if (rc == 0) {
        out->seeds[i] = s->seed;
        out->per_seed[i] = er.reward - FITNESS_LAMBDA * er.kl;
        out->eval_margin += margin;
        out->eval_loss += loss;
    }
    char rerr[256];
    fsutil_remove_tree(s->dir, rerr, sizeof rerr);
    return rc;
}

static int check_options(const FitnessOptions *opt, char *err, size_t errlen)
{
    if (opt->n_seeds < 1 || opt->n_seeds > FITNESS_MAX_SEEDS || opt->steps < 0 || !opt->work_dir)
        return err_fail(err, errlen,
                        "fitness: 1 to %d seeds, steps >= 0 and a work_dir are required",
                        FITNESS_MAX_SEEDS);
    return 0;
}

/* The task at its default options: what fitness_prepare builds is what
 * every seed run then finds in the cache. */
static int prepare_task(bool quiet, TaskAssets *a, char *err, size_t errlen)
{
    TaskPrepareOptions tp;
    task_prepare_defaults(&tp);
    tp.quiet = quiet;
    return task_prepare(&tp, a, err, errlen);
}

int fitness_prepare(bool quiet, char *err, size_t errlen)
{
    TaskAssets a;
    if (!quiet)
        fprintf(stderr, "fitness: preparing the built-in task (its reference and pairs); "
                        "the first time this takes a few minutes, then it is cached\n");
    return prepare_task(quiet, &a, err, errlen);
}

/* The task (quietly: a discovery worker has no terminal) and the
 * reference: the task's, or the model folder's with its tokenizer. */
static int load_task(const char *model, TaskAssets *a, Ref *ref, char *err, size_t errlen)
{
    if (prepare_task(true, a, err, errlen) != 0)
        return -1;
    if (!model[0])
        return run_model_load(a->reference, &ref->m, NULL, 0, err, errlen);
    if (hf_model_load(model, false, &ref->m, NULL, err, errlen) != 0 ||
        !(ref->tok = tokenizer_load(model, err, errlen)))
        return -1;
    return sample_stop_ids_load(model, &ref->stops, err, errlen);
}

static int run_seeds(const char *loss_path, const FitnessOptions *opt, FitnessResult *out,
                     char *err, size_t errlen)
{
    TaskAssets a;
    Ref ref = {0};
    Config cfg = {.max_steps = 0};
    int rc = load_task(opt->cfg.model, &a, &ref, err, errlen);
    if (rc == 0)
        rc = task_config(opt, &a, &cfg, err, errlen);
    if (rc == 0)
        rc = set_beta(loss_path, &cfg, err, errlen);
    if (rc == 0)
        rc = fsutil_mkdirs(opt->work_dir, err, errlen);
    for (int i = 0; rc == 0 && i < opt->n_seeds; i++) {
        SeedRun s = {loss_path, &cfg, &a, &ref, opt->seeds[i], ""};
        snprintf(s.dir, sizeof s.dir, "%s/task-seed-%llu", opt->work_dir,
                 (unsigned long long)opt->seeds[i]);
        rc = seed_run(&s, out, i, err, errlen);
        if (rc == 0)
            out->n_seeds = i + 1;
    }
    out->steps = cfg.max_steps;
    gpt_free(ref.m);
    tokenizer_free(ref.tok);
    return rc;
}

int fitness_evaluate(const char *loss_path, const FitnessOptions *opt, FitnessResult *out,
                     char *err, size_t errlen)
{
    double t0 = timeutil_now();
    memset(out, 0, sizeof *out);
    snprintf(out->metric, sizeof out->metric, "%s", FITNESS_METRIC);
    if (check_options(opt, err, errlen) != 0)
        return -1;
    int rc = run_seeds(loss_path, opt, out, err, errlen);
    for (int i = 0; rc == 0 && i < out->n_seeds; i++)
        out->fitness += out->per_seed[i] / out->n_seeds;
    if (rc == 0) {
        out->eval_margin /= out->n_seeds;
        out->eval_loss /= out->n_seeds;
        out->se = fitness_standard_error(out->per_seed, out->n_seeds);
    }
    out->seconds = timeutil_now() - t0;
    return rc;
}
