/*
 * task/task_data.c — reference, pairs and held-out sets of the built-in task,
 * cached; and the training settings that go with them (task_data.h).
 *
 * Invariant: every byte written here is a function of the options. The
 * reference comes from pretrain.c's deterministic build; completions come
 * from sample.c with per-sequence seeds; Bradley-Terry draws come from
 * their own stream; task.c forms and writes the pairs in a fixed order.
 */
#include "task/task_data.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "train/data.h"
#include "util/jsonfile.h"
#include "util/errmsg.h"
#include "util/fsutil.h"
#include "core/rng.h"
#include "task/sample.h"
#include "train/model_load.h"

/* seed streams: each random choice of the pairs has its own */
#define STREAM_TRAIN_SAMPLES 0x747261696e73ULL /* "trains" */
#define STREAM_EVAL_SAMPLES 0x6576616c73ULL    /* "evals" */
#define STREAM_BT 0x62746e6f697365ULL          /* "btnoise" */

/* out = a/b, or -1 when it does not fit */
static int join(char *out, size_t len, const char *a, const char *b)
{
    int n = snprintf(out, len, "%s/%s", a, b);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static void copy(char *out, size_t len, const char *s)
{
    size_t n = strlen(s) < len ? strlen(s) : len - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

void task_prepare_defaults(TaskPrepareOptions *o)
{
    *o = (TaskPrepareOptions){.n_train = 512, .n_eval = 64, .k = 4};
    pretrain_defaults(&o->pretrain);
}

/* ---- training settings ---------------------------------------------------- */

/* Why these values: the policy starts from a pretrained reference, so the
 * rate is a fine-tuning one. 200 steps of 16 pairs is ~1.3 epochs of the
 * ~2500 training pairs. The rate is from bench/defaults_sweep.py (seeds
 * 1-3, the README's table): at 2e-4 DPO learns (held-out accuracy 0.79,
 * reward gain +0.43 +- 0.10) but DiscoPOP does not leave its start on 2 of
 * 3 seeds (accuracy 0.56, gain -0.01 +- 0.12: its slope at rho = 0 has the
 * wrong sign, README); at 4e-4 both do (DPO 0.83, +0.55 +- 0.13; DiscoPOP
 * 0.77, +0.18 +- 0.09, every seed's gain interval above 0) in the same
 * time; at 1e-3 the policy drifts into misspelt text (KL 66 nats).
 * Train + eval fit the 60 s budget on 2 cores. max_length is the
 * context: [EOT] prompt completion [EOT] always fits (sample.c caps
 * completions so), so no pair is ever cut. */
void task_train_defaults(Config *cfg)
{
    cfg->vocab = DATA_VOCAB;
    cfg->context = PRETRAIN_CONTEXT;
    cfg->width = PRETRAIN_WIDTH;
    cfg->layers = PRETRAIN_LAYERS;
    cfg->heads = PRETRAIN_HEADS;
    cfg->max_length = PRETRAIN_CONTEXT;
    cfg->max_prompt_length = TASK_PROMPT_MAX + 1; /* the prompt with its leading EOT */
    cfg->per_device_train_batch_size = 16;
    cfg->per_device_eval_batch_size = 32;
    cfg->learning_rate = 4e-4;
    cfg->warmup_steps = 10;
    cfg->max_steps = 200;
    cfg->logging_steps = 10;
    cfg->eval_steps = 0;
    cfg->save_steps = 0;
}

GptConfig task_model_of(const Config *cfg)
{
    return (GptConfig){.vocab = cfg->vocab,
                       .context = cfg->context,
                       .width = cfg->width,
                       .layers = cfg->layers,
                       .heads = cfg->heads};
}

void task_train_config(Config *cfg, const TaskAssets *a)
{
    copy(cfg->train_file, sizeof cfg->train_file, a->train_file); /* same size: never cut */
    copy(cfg->eval_file, sizeof cfg->eval_file, a->eval_file);
    cfg->vocab = a->model.vocab;
    cfg->context = a->model.context;
    cfg->width = a->model.width;
    cfg->layers = a->model.layers;
    cfg->heads = a->model.heads;
}

int task_train_setup(Config *cfg, bool quiet, TaskAssets *out, char *err, size_t errlen)
{
    TaskPrepareOptions o;
    task_prepare_defaults(&o);
    o.pretrain.model = task_model_of(cfg);
    o.quiet = quiet;
    if (task_prepare(&o, out, err, errlen) != 0)
        return -1;
    task_train_config(cfg, out);
    return config_finalize(cfg, err, errlen);
}

/* ---- pairs ------------------------------------------------------------------ */

/* K completions of each prompt from ref, scored, paired, written to path. */
static int make_pairs(const Gpt *ref, const TaskPrompts *p, int k, double bt, uint64_t seed,
                      uint64_t bt_seed, const char *path, TaskPairStats *st, char *err,
                      size_t errlen)
{
    int n = p->n * k;
    const char **prompts = malloc((size_t)n * sizeof *prompts);
    const char **texts = malloc((size_t)n * sizeof *texts);
    SampleResult *res = calloc((size_t)n, sizeof *res);
    double *rewards = malloc((size_t)n * sizeof *rewards);
    TaskPair *pairs = malloc((size_t)task_pairs_max(p->n, k) * sizeof *pairs);
    int rc = prompts && texts && res && rewards && pairs
                 ? 0
                 : err_fail(err, errlen, "task: out of memory");
    for (int i = 0; rc == 0 && i < n; i++)
        prompts[i] = p->text[i / k];
    SampleOptions so = {.temperature = 1.0, .seed = seed};
    if (rc == 0)
        rc = sample_generate(ref, prompts, n, &so, res, err, errlen);
    for (int i = 0; rc == 0 && i < n; i++) {
        rewards[i] = task_reward(res[i].text, (size_t)res[i].len);
        texts[i] = res[i].text;
    }
    if (rc == 0) {
        Rng r;
        rng_seed(&r, bt_seed);
        TaskPairStats formed;
        int64_t np = task_pairs_form(rewards, p->n, k, bt, &r, pairs, &formed);
        /* no pair: an error before anything is written, so that no empty
         * file is left in the cache for a later run to trust */
        if (np == 0)
            rc = err_fail(err, errlen,
                          "task: %s: no preference pair: every prompt's %d completions had the "
                          "same reward (a reference too weak to tell them apart: pretrain it "
                          "longer or larger)",
                          path, k);
        else
            rc = task_pairs_write(path, (const char *const *)p->text, p->n, texts, k, pairs, np, st,
                                  err, errlen);
        st->ties = formed.ties; /* the writer counts what it wrote; ties were never pairs */
        st->flipped = formed.flipped;
    }
    if (rc == 0 && st->pairs == 0) {
        unlink(path); /* every pair was unwritable: the file is empty */
        rc = err_fail(err, errlen, "task: %s: no preference pair could be written (%lld invalid)",
                      path, (long long)st->invalid);
    }
    sample_results_free(res, n);
    free(res);
    free(prompts);
    free(texts);
    free(rewards);
    free(pairs);
    return rc;
}

static int pairs_for_split(const Gpt *ref, const TaskPrepareOptions *o, TaskSplit split,
                           const char *path, TaskPairStats *st, char *err, size_t errlen)
{
    uint64_t seed = o->pretrain.seed;
    int n = split == TASK_SPLIT_TRAIN ? o->n_train : o->n_eval;
    uint64_t stream = split == TASK_SPLIT_TRAIN ? STREAM_TRAIN_SAMPLES : STREAM_EVAL_SAMPLES;
    TaskPrompts p;
    if (task_prompts_make(&p, seed, split, n, err, errlen) != 0)
        return -1;
    int rc = make_pairs(ref, &p, o->k, o->bt_temp, seed ^ stream, seed ^ stream ^ STREAM_BT, path,
                        st, err, errlen);
    task_prompts_free(&p);
    return rc;
}

/* ---- manifest --------------------------------------------------------------- */

static int write_manifest(const TaskAssets *a, const TaskPrepareOptions *o, char *err,
                          size_t errlen)
{
    const GptConfig *g = &a->model;
    json_t *j = json_pack(
        "{s:s, s:i, s:I, s:{s:i, s:i, s:i, s:i, s:i}, s:i, s:i, s:i, s:f, s:I, s:I, s:I, s:I}",
        "task", TASK_NAME, "version", TASK_VERSION, "seed", (json_int_t)a->seed, "model", "vocab",
        g->vocab, "context", g->context, "width", g->width, "layers", g->layers, "heads", g->heads,
        "n_train", o->n_train, "n_eval", o->n_eval, "k", o->k, "bt_temp", o->bt_temp, "train_pairs",
        (json_int_t)a->train.pairs, "train_ties", (json_int_t)a->train.ties, "eval_pairs",
        (json_int_t)a->eval.pairs, "flipped", (json_int_t)a->train.flipped);
    char *s = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (!s)
        return err_fail(err, errlen, "task: out of memory");
    char path[TASK_PATH_LEN + 16];
    snprintf(path, sizeof path, "%s/%s", a->dir, TASK_MANIFEST);
    size_t n = strlen(s);
    s[n] = '\n'; /* json_dumps's NUL becomes the final newline */
    int rc = fsutil_write_atomic(path, s, n + 1, err, errlen);
    free(s);
    return rc;
}

static int json_int(json_t *j, const char *key, int *out)
{
    json_t *v = json_object_get(j, key);
    if (!json_is_integer(v))
        return -1;
    *out = (int)json_integer_value(v);
    return 0;
}

/* Fills out from DIR/task.json; the reference is DIR/../reference.safetensors. */
static int read_manifest(const char *dir, TaskAssets *out, char *err, size_t errlen)
{
    char path[TASK_PATH_LEN + 16];
    snprintf(path, sizeof path, "%s/%s", dir, TASK_MANIFEST);
    json_t *j = jsonfile_load(
        path, (&(const FsReadCap){.bytes = (size_t)1 << 20, .kind = "a task manifest"}), err,
        errlen);
    if (!j)
        return -1;
    json_t *m = json_object_get(j, "model");
    GptConfig *g = &out->model;
    int rc = json_int(m, "vocab", &g->vocab) | json_int(m, "context", &g->context) |
             json_int(m, "width", &g->width) | json_int(m, "layers", &g->layers) |
             json_int(m, "heads", &g->heads) | json_int(j, "n_eval", &out->n_eval);
    json_t *seed = json_object_get(j, "seed");
    out->seed = (uint64_t)json_integer_value(seed);
    rc |= json_is_integer(seed) ? 0 : -1;
    json_decref(j);
    if (rc != 0)
        return err_fail(err, errlen, "%s: not a task manifest (model, seed, n_eval)", path);
    char parent[TASK_PATH_LEN];
    copy(out->dir, sizeof out->dir, dir);
    copy(parent, sizeof parent, dir);
    char *slash = strrchr(parent, '/');
    if (slash)
        *slash = '\0';
    if (join(out->reference, sizeof out->reference, slash ? parent : ".", PRETRAIN_FILE) ||
        join(out->train_file, sizeof out->train_file, dir, TASK_TRAIN_FILE) ||
        join(out->eval_file, sizeof out->eval_file, dir, TASK_EVAL_FILE))
        return err_fail(err, errlen, "%s: path too long", dir);
    return 0;
}

int task_assets_find(const char *train_file, TaskAssets *out, char *err, size_t errlen)
{
    char dir[TASK_PATH_LEN], path[TASK_PATH_LEN + 16];
    *out = (TaskAssets){0};
    copy(dir, sizeof dir, train_file);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        copy(dir, sizeof dir, ".");
    if (join(path, sizeof path, dir, TASK_MANIFEST) != 0)
        return 1;
    if (!fsutil_exists(path))
        return 1;
    if (read_manifest(dir, out, err, errlen) != 0)
        return -1;
    if (!fsutil_exists(out->reference))
        return err_fail(err, errlen, "%s: the task's reference %s is missing", train_file,
                        out->reference);
    out->cached = true;
    return 0;
}

/* ---- prepare ------------------------------------------------------------------ */

static uint32_t fnv1a32(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* REFDIR/pairs-n<train>-e<eval>-k<K>-<hash>, the hash over every pair option. */
static int pairs_dir(const TaskPrepareOptions *o, const char *refdir, char *out, size_t len)
{
    char text[256];
    snprintf(text, sizeof text, "n=%d e=%d k=%d bt=%.17g sampler=1 numerics=%d", o->n_train,
             o->n_eval, o->k, o->bt_temp, o->pretrain.numerics);
    int n = snprintf(out, len, "%s/pairs-n%d-e%d-k%d-%08x", refdir, o->n_train, o->n_eval, o->k,
                     fnv1a32(text));
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int check_prepare(const TaskPrepareOptions *o, char *err, size_t errlen)
{
    if (o->n_train < 1 || o->n_eval < 1 || o->k < 2 || o->bt_temp < 0)
        return err_fail(err, errlen,
                        "task: n_train, n_eval >= 1, k >= 2 and bt_temp >= 0 required");
    return 0;
}

static int build_pairs(const TaskPrepareOptions *o, TaskAssets *a, char *err, size_t errlen)
{
    FILE *f = o->quiet ? NULL : o->progress ? o->progress : stderr;
    Gpt *ref;
    if (run_model_load(a->reference, &ref, NULL, 0, err, errlen) != 0)
        return -1;
    if (f)
        fprintf(f, "task: sampling %d x %d reference completions for pairs...\n",
                o->n_train + o->n_eval, o->k);
    int rc = pairs_for_split(ref, o, TASK_SPLIT_TRAIN, a->train_file, &a->train, err, errlen);
    if (rc == 0)
        rc = pairs_for_split(ref, o, TASK_SPLIT_EVAL, a->eval_file, &a->eval, err, errlen);
    gpt_free(ref);
    if (rc == 0)
        rc = write_manifest(a, o, err, errlen);
    if (rc == 0 && f)
        fprintf(f, "task: %lld training pairs (%lld ties skipped), %lld held-out pairs in %s\n",
                (long long)a->train.pairs, (long long)a->train.ties, (long long)a->eval.pairs,
                a->dir);
    return rc;
}

/* The reference (built if needed) and the absolute pairs directory. */
static int prepare_reference(const TaskPrepareOptions *o, TaskAssets *a, char *err, size_t errlen)
{
    char ref[TASK_PATH_LEN], real[PATH_MAX];
    PretrainOptions po = o->pretrain;
    po.quiet = o->quiet;
    po.progress = o->progress;
    if (pretrain_reference(&po, o->cache_dir, false, ref, sizeof ref, NULL, err, errlen) != 0)
        return -1;
    if (!realpath(ref, real))
        return err_fail(err, errlen, "%s: %s", ref, strerror(errno));
    if (strlen(real) >= sizeof a->reference)
        return err_fail(err, errlen, "%s: path too long", real);
    copy(a->reference, sizeof a->reference, real);
    char *slash = strrchr(real, '/');
    *slash = '\0'; /* realpath of a file always has one */
    a->model = o->pretrain.model;
    a->seed = o->pretrain.seed;
    a->n_eval = o->n_eval;
    if (pairs_dir(o, real, a->dir, sizeof a->dir) ||
        join(a->train_file, sizeof a->train_file, a->dir, TASK_TRAIN_FILE) ||
        join(a->eval_file, sizeof a->eval_file, a->dir, TASK_EVAL_FILE))
        return err_fail(err, errlen, "%s: path too long", real);
    return fsutil_mkdirs(a->dir, err, errlen);
}

int task_prepare(const TaskPrepareOptions *o, TaskAssets *out, char *err, size_t errlen)
{
    *out = (TaskAssets){0};
    if (check_prepare(o, err, errlen) != 0 || prepare_reference(o, out, err, errlen) != 0)
        return -1;
    int fd = fsutil_lock_dir(out->dir, err, errlen);
    if (fd < 0)
        return -1;
    char manifest[TASK_PATH_LEN + 16];
    snprintf(manifest, sizeof manifest, "%s/%s", out->dir, TASK_MANIFEST);
    int rc = 0;
    bool have =
        fsutil_exists(manifest) && fsutil_exists(out->train_file) && fsutil_exists(out->eval_file);
    if (have && !o->force)
        out->cached = true;
    else
        rc = build_pairs(o, out, err, errlen);
    close(fd);
    return rc;
}
