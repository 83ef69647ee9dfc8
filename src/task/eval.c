/*
 * task/eval.c — reward, KL, win rate and held-out preference accuracy of a
 * policy against its reference (definitions in eval.h).
 *
 * The order of work: held-out prompts from the task seed; the policy's and
 * the reference's samples with the same per-sample seeds; rewards; the
 * policy's samples scored under both models (the KL terms); the held-out
 * pairs through gpt_pair_logps of both models. Every log-prob comes from the
 * model's own forward in a no_grad context, in fixed batches, so identical
 * weights give identical numbers.
 */
#include "task/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/checkpoint.h"
#include "model/hf_model.h"
#include "train/config.h"
#include "train/data.h"
#include "util/errmsg.h"
#include "util/fsutil.h"
#include "task/sample.h"
#include "task/task.h"
#include "task/task_data.h"
#include "util/timeutil.h"
#include "train/model_load.h"
#include "train/run_hf.h"

#define PAIR_BATCH 16
#define Z95 1.959963984540054 /* the normal's 97.5% quantile */

void eval_defaults(EvalOptions *o)
{
    *o = (EvalOptions){.n_prompts = 64, .samples = 4, .seed = 1, .max_pairs = 256};
}

/* mean and 95% half-width of x (n) */
static void mean_ci(const double *x, int64_t n, double *mean, double *ci)
{
    double s = 0, ss = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    double m = n ? s / (double)n : NAN;
    for (int64_t i = 0; i < n; i++)
        ss += (x[i] - m) * (x[i] - m);
    *mean = m;
    *ci = n > 1 ? Z95 * sqrt(ss / (double)(n - 1) / (double)n) : NAN;
}

/* ---- samples -------------------------------------------------------------- */

typedef struct Side {
    SampleResult *res; // (n)
    double *reward;    // (n)
} Side;

static int side_sample(const Gpt *m, const char *const *prompts, int n, const EvalOptions *o,
                       Side *s, char *err, size_t errlen)
{
    s->res = calloc((size_t)n, sizeof *s->res);
    s->reward = malloc((size_t)n * sizeof *s->reward);
    if (!s->res || !s->reward)
        return err_fail(err, errlen, "eval: out of memory");
    SampleOptions so = {.temperature = 1.0, .seed = o->seed, .tokenizer = o->tokenizer};
    so.n_stop = o->n_stop;
    memcpy(so.stop_ids, o->stop_ids, sizeof so.stop_ids);
    if (sample_generate(m, prompts, n, &so, s->res, err, errlen) != 0)
        return -1;
    for (int i = 0; i < n; i++)
        s->reward[i] = task_reward(s->res[i].text, (size_t)s->res[i].len);
    return 0;
}

static void side_free(Side *s, int n)
{
    sample_results_free(s->res, n);
    free(s->res);
    free(s->reward);
}

/* reward, KL, win rate, lengths from the two sides' samples */
static int sample_metrics(const Gpt *pol, const Gpt *ref, const char *const *prompts, int n,
                          const Side *p, const Side *q, EvalResult *r, char *err, size_t errlen)
{
    double *lp = malloc((size_t)n * sizeof *lp), *lq = malloc((size_t)n * sizeof *lq);
    int rc = lp && lq ? 0 : err_fail(err, errlen, "eval: out of memory");
    if (rc == 0)
        rc = sample_score(pol, prompts, p->res, n, lp, err, errlen);
    if (rc == 0)
        rc = sample_score(ref, prompts, p->res, n, lq, err, errlen);
    if (rc == 0) {
        double win = 0, len = 0, ended = 0;
        for (int i = 0; i < n; i++) {
            lp[i] -= lq[i];                      /* the KL term of sample i */
            lq[i] = p->reward[i] - q->reward[i]; /* its reward gain */
            win += p->reward[i] > q->reward[i] ? 1.0 : p->reward[i] == q->reward[i] ? 0.5 : 0.0;
            len += p->res[i].len;
            ended += p->res[i].ended;
        }
        mean_ci(p->reward, n, &r->reward, &r->reward_ci);
        mean_ci(q->reward, n, &r->ref_reward, &r->ref_reward_ci);
        mean_ci(lp, n, &r->kl, &r->kl_ci);
        mean_ci(lq, n, &r->gain, &r->gain_ci);
        r->win_rate = win / n;
        r->mean_length = len / n;
        r->ended = ended / n;
        r->samples = n;
    }
    free(lp);
    free(lq);
    return rc;
}

/* ---- held-out pairs --------------------------------------------------------- */

/* b trimmed to its longest sequence, as (2B, T) rows for gpt_pair_logps */
static GptPairBatch trim(const DataBatch *b, int32_t *ids, int32_t *tg)
{
    int T = 1, rows = 2 * b->B;
    for (int n = 0; n < rows; n++)
        T = b->seq_len[n] - 1 > T ? b->seq_len[n] - 1 : T;
    for (int n = 0; n < rows; n++) {
        memcpy(ids + (size_t)n * T, b->ids + (size_t)n * b->T, (size_t)T * sizeof *ids);
        memcpy(tg + (size_t)n * T, b->targets + (size_t)n * b->T, (size_t)T * sizeof *tg);
    }
    return (GptPairBatch){b->B, T, ids, tg};
}

/* chosen - rejected log-prob of each pair of pb under m, into d (B) */
static int pair_diffs(const Gpt *m, TensorCtx *ctx, const GptPairBatch *pb, double *d, char *err,
                      size_t errlen)
{
    GptPairLogps lp;
    tensor_ctx_reset(ctx);
    if (gpt_pair_logps(m, ctx, pb, &lp) != 0)
        return err_fail(err, errlen, "eval: %s", tensor_ctx_error(ctx));
    for (int i = 0; i < pb->B; i++)
        d[i] = (double)lp.chosen->data[i] - lp.rejected->data[i];
    return 0;
}

static int score_pairs(const Gpt *pol, const Gpt *ref, const Dataset *ds, int64_t n,
                       int64_t *correct, char *err, size_t errlen)
{
    int T = pol->cfg.context;
    DataBatch *b = data_batch_new(PAIR_BATCH, T);
    int32_t *ids = malloc(2 * PAIR_BATCH * (size_t)T * sizeof *ids);
    int32_t *tg = malloc(2 * PAIR_BATCH * (size_t)T * sizeof *tg);
    TensorCtx *ctx = tensor_ctx_new(0);
    int rc = b && ids && tg && ctx ? 0 : err_fail(err, errlen, "eval: out of memory");
    if (ctx)
        ctx->no_grad = true;
    *correct = 0;
    for (int64_t s = 0; rc == 0 && s < n; s += PAIR_BATCH) {
        int k = (int)(n - s < PAIR_BATCH ? n - s : PAIR_BATCH);
        double dp[PAIR_BATCH], dq[PAIR_BATCH];
        rc = data_batch_fill_range(ds, s, k, b, err, errlen);
        GptPairBatch pb = trim(b, ids, tg);
        if (rc == 0)
            rc = pair_diffs(pol, ctx, &pb, dp, err, errlen);
        if (rc == 0)
            rc = pair_diffs(ref, ctx, &pb, dq, err, errlen);
        for (int i = 0; rc == 0 && i < k; i++)
            *correct += dp[i] - dq[i] > 0; /* the implicit reward margin, beta aside */
    }
    data_batch_free(b);
    free(ids);
    free(tg);
    tensor_ctx_free(ctx);
    return rc;
}

/* The pairs of path, tokenized as the models were trained to see them
 * (o->tokenizer, else bytes). */
static int pair_accuracy(const Gpt *pol, const Gpt *ref, const char *path, const EvalOptions *o,
                         EvalResult *r, char *err, size_t errlen)
{
    int L =
        o->max_length > 0 && o->max_length <= pol->cfg.context ? o->max_length : pol->cfg.context;
    int P = o->max_prompt_length > 0 && o->max_prompt_length < L ? o->max_prompt_length
            : TASK_PROMPT_MAX + 1 < L                            ? TASK_PROMPT_MAX + 1
                                                                 : L / 2;
    int max_pairs = o->max_pairs;
    DataOptions dopt = {.max_length = L,
                        .max_prompt_length = P > 0 ? P : 1,
                        .tokenizer = o->tokenizer,
                        .vocab = o->tokenizer ? pol->cfg.vocab : 0};
    Dataset *ds = data_load_jsonl(path, &dopt, err, errlen);
    if (!ds)
        return -1;
    int64_t n = max_pairs > 0 && ds->n > max_pairs ? max_pairs : ds->n, correct = 0;
    int rc = score_pairs(pol, ref, ds, n, &correct, err, errlen);
    data_free(ds);
    r->pairs = n;
    r->accuracy = n ? (double)correct / (double)n : NAN;
    return rc;
}

/* ---- entry points ------------------------------------------------------------- */

static int check_models(const Gpt *pol, const Gpt *ref, const EvalOptions *o, char *err,
                        size_t errlen)
{
    if (!gpt_config_equal(&pol->cfg, &ref->cfg))
        return err_fail(err, errlen,
                        "eval: the policy (width %d, %d layers) and the reference "
                        "(width %d, %d layers) differ in shape",
                        pol->cfg.width, pol->cfg.layers, ref->cfg.width, ref->cfg.layers);
    if (o->n_prompts < 1 || o->samples < 1 || o->max_pairs < 0)
        return err_fail(err, errlen, "eval: prompts and samples must be >= 1");
    return 0;
}

int eval_models(const Gpt *policy, const Gpt *ref, uint64_t task_seed, const char *pairs_file,
                const EvalOptions *o, EvalResult *r, char *err, size_t errlen)
{
    double t0 = timeutil_now();
    *r = (EvalResult){.accuracy = NAN};
    if (check_models(policy, ref, o, err, errlen) != 0)
        return -1;
    TaskPrompts tp;
    if (task_prompts_make(&tp, task_seed, TASK_SPLIT_EVAL, o->n_prompts, err, errlen) != 0)
        return -1;
    int n = o->n_prompts * o->samples;
    const char **prompts = malloc((size_t)n * sizeof *prompts);
    Side p = {0}, q = {0};
    int rc = prompts ? 0 : err_fail(err, errlen, "eval: out of memory");
    for (int i = 0; rc == 0 && i < n; i++)
        prompts[i] = tp.text[i / o->samples];
    if (rc == 0)
        rc = side_sample(policy, prompts, n, o, &p, err, errlen);
    if (rc == 0)
        rc = side_sample(ref, prompts, n, o, &q, err, errlen);
    if (rc == 0)
        rc = sample_metrics(policy, ref, prompts, n, &p, &q, r, err, errlen);
    if (rc == 0 && pairs_file && *pairs_file)
        rc = pair_accuracy(policy, ref, pairs_file, o, r, err, errlen);
    side_free(&p, n);
    side_free(&q, n);
    free(prompts);
    task_prompts_free(&tp);
    r->seconds = timeutil_now() - t0;
    return rc;
}

int eval_load_model(const char *path, Gpt **out, char *resolved, size_t rlen, char *err,
                    size_t errlen)
{
    if (!hf_model_is_folder(path))
        return run_model_load(path, out, resolved, rlen, err, errlen);
    if (resolved)
        snprintf(resolved, rlen, "%s", path);
    return hf_model_load(path, false, out, NULL, err, errlen);
}

/* The config.yaml beside a model file into c: 1, or 0 when there is none. */
static int run_config(const char *model_file, Config *c, char *err, size_t errlen)
{
    char yaml[1024];
    const char *slash = strrchr(model_file, '/');
    snprintf(yaml, sizeof yaml, "%.*s/%s", slash ? (int)(slash - model_file) : 1,
             slash ? model_file : ".", CKPT_CONFIG_FILE);
    if (!fsutil_exists(yaml))
        return 0;
    config_defaults(c);
    return config_load_yaml(c, yaml, err, errlen) == 0 ? 1 : -1;
}

/* The default built-in task for a model of shape g (built if missing). */
static int default_task(const GptConfig *g, const EvalOptions *o, TaskAssets *a, char *err,
                        size_t errlen)
{
    TaskPrepareOptions tp;
    task_prepare_defaults(&tp);
    if (g)
        tp.pretrain.model = *g;
    tp.cache_dir = o->cache_dir;
    tp.quiet = o->quiet;
    return task_prepare(&tp, a, err, errlen);
}

/* The task a model was trained on (its run config c, has = 1) ->
 * train_file -> task.json; a model without a run config gets the default
 * task of its shape. 1: a run that did not train on the built-in task. */
static int find_task(int has, const Config *c, const GptConfig *g, const EvalOptions *o,
                     TaskAssets *a, char *err, size_t errlen)
{
    if (has)
        return c->train_file[0] ? task_assets_find(c->train_file, a, err, errlen) : 1;
    return default_task(g, o, a, err, errlen);
}

static uint64_t default_seed(void)
{
    PretrainOptions pd;
    pretrain_defaults(&pd);
    return pd.seed;
}

/* eval_models with a Hugging Face model's tokenizer and the stop ids of
 * the generation_config.json in hf_dir. */
static int eval_tokens(const Gpt *pol, const Gpt *ref, uint64_t seed, const char *pairs,
                       const Tokenizer *tok, const char *hf_dir, const EvalOptions *o,
                       EvalResult *r, char *err, size_t errlen)
{
    EvalOptions eo = *o;
    SampleOptions so = {0};
    if (sample_stop_ids_load(hf_dir, &so, err, errlen) != 0)
        return -1;
    eo.tokenizer = tok;
    eo.n_stop = so.n_stop;
    memcpy(eo.stop_ids, so.stop_ids, sizeof eo.stop_ids);
    return eval_models(pol, ref, seed, pairs, &eo, r, err, errlen);
}

/* A run of the Hugging Face model c->model: that model is the reference
 * (or o->reference), the run's hf/ the tokenizer. */
static int eval_hf_run(const Gpt *pol, const char *file, const Config *c, const EvalOptions *o,
                       EvalResult *r, char *err, size_t errlen)
{
    char hf[1024];
    int has = run_hf_dir(file, hf, sizeof hf, err, errlen);
    if (has <= 0)
        return has < 0 ? -1
                       : err_fail(err, errlen,
                                  "eval: %s trained %s but its run has no copy of the model's "
                                  "tokenizer (%s/)",
                                  file, c->model, RUN_HF_DIR);
    TaskAssets a = {0};
    int task = c->train_file[0] ? task_assets_find(c->train_file, &a, err, errlen) : 1;
    if (task < 0)
        return -1;
    uint64_t seed = task == 0 ? a.seed : default_seed();
    const char *pairs = o->pairs_file     ? o->pairs_file
                        : task == 0       ? a.eval_file
                        : c->eval_file[0] ? c->eval_file
                                          : NULL;
    Tokenizer *tok = tokenizer_load(hf, err, errlen);
    Gpt *ref = NULL;
    char ref_file[1024];
    const char *ref_path = o->reference ? o->reference : c->model;
    int rc = tok ? eval_load_model(ref_path, &ref, ref_file, sizeof ref_file, err, errlen) : -1;
    EvalOptions eo = *o; /* the pairs cut as the run cut its own */
    eo.max_length = eo.max_length ? eo.max_length : c->max_length;
    eo.max_prompt_length = eo.max_prompt_length ? eo.max_prompt_length : c->max_prompt_length;
    if (rc == 0)
        rc = eval_tokens(pol, ref, seed, pairs, tok, hf, &eo, r, err, errlen);
    if (rc == 0)
        snprintf(r->reference, sizeof r->reference, "%s", ref_file);
    gpt_free(ref);
    tokenizer_free(tok);
    return rc;
}

static int eval_loaded(Gpt *pol, const char *file, const EvalOptions *o, EvalResult *r, char *err,
                       size_t errlen)
{
    Config c;
    int has = run_config(file, &c, err, errlen);
    if (has < 0)
        return -1;
    if (has && c.model[0]) {
        int rc = eval_hf_run(pol, file, &c, o, r, err, errlen);
        snprintf(r->model, sizeof r->model, "%s", file);
        return rc;
    }
    TaskAssets a = {.seed = default_seed()};
    if (!o->reference || !o->pairs_file) {
        int rc = find_task(has, &c, &pol->cfg, o, &a, err, errlen);
        if (rc < 0)
            return -1;
        if (rc == 1 && !o->reference)
            return err_fail(err, errlen,
                            "eval: %s was not trained on the built-in task: give "
                            "--ref REFERENCE (and --pairs FILE)",
                            file);
    }
    const char *ref_path = o->reference ? o->reference : a.reference;
    const char *pairs = o->pairs_file ? o->pairs_file : a.eval_file;
    Gpt *ref;
    char ref_file[1024];
    if (eval_load_model(ref_path, &ref, ref_file, sizeof ref_file, err, errlen) != 0)
        return -1;
    int rc = eval_models(pol, ref, a.seed, pairs, o, r, err, errlen);
    gpt_free(ref);
    snprintf(r->model, sizeof r->model, "%s", file);
    snprintf(r->reference, sizeof r->reference, "%s", ref_file);
    return rc;
}

int eval_path(const char *path, const EvalOptions *o, EvalResult *r, char *err, size_t errlen)
{
    Gpt *pol;
    char file[1024];
    *r = (EvalResult){.accuracy = NAN};
    if (run_model_load(path, &pol, file, sizeof file, err, errlen) != 0)
        return -1;
    int rc = eval_loaded(pol, file, o, r, err, errlen);
    gpt_free(pol);
    return rc;
}

/* The seed and pairs for a bare folder: the default task's, unless the
 * pairs are given (then the task need not be built for its seed alone). */
static int dir_task(const EvalOptions *o, uint64_t *seed, char *pairs, size_t len, char *err,
                    size_t errlen)
{
    *seed = default_seed();
    if (o->pairs_file) {
        snprintf(pairs, len, "%s", o->pairs_file);
        return 0;
    }
    TaskAssets a;
    if (default_task(NULL, o, &a, err, errlen) != 0)
        return -1;
    *seed = a.seed;
    snprintf(pairs, len, "%s", a.eval_file);
    return 0;
}

int eval_model_dir(const char *dir, const EvalOptions *o, EvalResult *r, char *err, size_t errlen)
{
    *r = (EvalResult){.accuracy = NAN};
    Gpt *pol = NULL, *ref = NULL;
    uint64_t seed;
    char pairs[TASK_PATH_LEN];
    Tokenizer *tok = NULL;
    char ref_file[1024];
    snprintf(ref_file, sizeof ref_file, "%s", dir);
    int rc = hf_model_load(dir, false, &pol, NULL, err, errlen);
    if (rc == 0 && !(tok = tokenizer_load(dir, err, errlen)))
        rc = -1;
    if (rc == 0 && o->reference)
        rc = eval_load_model(o->reference, &ref, ref_file, sizeof ref_file, err, errlen);
    if (rc == 0)
        rc = dir_task(o, &seed, pairs, sizeof pairs, err, errlen);
    if (rc == 0) /* against itself: one copy, the same numbers as two */
        rc = eval_tokens(pol, ref ? ref : pol, seed, pairs, tok, dir, o, r, err, errlen);
    snprintf(r->model, sizeof r->model, "%s", dir);
    snprintf(r->reference, sizeof r->reference, "%s", ref_file);
    gpt_free(pol);
    gpt_free(ref);
    tokenizer_free(tok);
    return rc;
}

static json_t *num(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static double num_of(const json_t *j, const char *key)
{
    json_t *v = json_object_get(j, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

int eval_result_from_json(const json_t *j, EvalResult *r)
{
    *r = (EvalResult){0};
    if (!json_is_object(j) || !json_is_number(json_object_get(j, "reward")))
        return -1;
    const char *s = json_string_value(json_object_get(j, "model"));
    snprintf(r->model, sizeof r->model, "%s", s ? s : "");
    s = json_string_value(json_object_get(j, "reference"));
    snprintf(r->reference, sizeof r->reference, "%s", s ? s : "");
    r->samples = (int64_t)num_of(j, "samples");
    r->reward = num_of(j, "reward");
    r->reward_ci = num_of(j, "reward_ci95");
    r->ref_reward = num_of(j, "ref_reward");
    r->ref_reward_ci = num_of(j, "ref_reward_ci95");
    r->gain = num_of(j, "reward_gain");
    r->gain_ci = num_of(j, "reward_gain_ci95");
    r->kl = num_of(j, "kl");
    r->kl_ci = num_of(j, "kl_ci95");
    r->win_rate = num_of(j, "win_rate");
    r->accuracy = num_of(j, "accuracy");
    r->pairs = (int64_t)num_of(j, "pairs");
    r->mean_length = num_of(j, "mean_length");
    r->ended = num_of(j, "ended");
    r->seconds = num_of(j, "seconds");
    return 0;
}

json_t *eval_result_json(const EvalResult *r)
{
    json_t *j = json_object();
    json_object_set_new(j, "model", json_string(r->model));
    json_object_set_new(j, "reference", json_string(r->reference));
    json_object_set_new(j, "samples", json_integer(r->samples));
    json_object_set_new(j, "reward", num(r->reward));
    json_object_set_new(j, "reward_ci95", num(r->reward_ci));
    json_object_set_new(j, "ref_reward", num(r->ref_reward));
    json_object_set_new(j, "ref_reward_ci95", num(r->ref_reward_ci));
    json_object_set_new(j, "reward_gain", num(r->gain));
    json_object_set_new(j, "reward_gain_ci95", num(r->gain_ci));
    json_object_set_new(j, "kl", num(r->kl));
    json_object_set_new(j, "kl_ci95", num(r->kl_ci));
    json_object_set_new(j, "win_rate", num(r->win_rate));
    json_object_set_new(j, "accuracy", num(r->accuracy));
    json_object_set_new(j, "pairs", json_integer(r->pairs));
    json_object_set_new(j, "mean_length", num(r->mean_length));
    json_object_set_new(j, "ended", num(r->ended));
    json_object_set_new(j, "seconds", num(r->seconds));
    return j;
}
