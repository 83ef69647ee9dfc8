/*
 * test_eval.c — the built-in task end to end on a tiny model: task
 * generation is deterministic (same seed, same bytes, for any thread
 * count), the reference evaluated against itself gives KL exactly 0, a
 * policy trained with DPO for a short run beats the reference, and the
 * frontier of 1 loss x 2 betas writes its table and plot. Then Hugging Face
 * models: a tiny random GPT-2 folder with the real GPT-2 tokenizer files
 * (tests/fetch_tokenizers.sh; those cases skip without them) evaluated as
 * it is, a run of it evaluated against it, and a frontier that trains it.
 *
 * The model is 1 layer of width 32 with a 64-position context, pretrained
 * for a few hundred steps: a weak reference, but one whose samples already
 * carry sentiment words, so rewards move when a loss pushes them. Every
 * cache lives in a temporary directory, never the user's.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/hf_gpt2.h"
#include "task/eval.h"
#include "task/frontier.h"
#include "util/fsutil.h"
#include "testfs.h"
#include "prefrun_config.h"
#include "task/pretrain.h"
#include "task/task_data.h"
#include "testlib.h"
#include "train/train.h"
#include "train/model_load.h"

static char tmp_root[256];

/* Pretraining steps of the fixture's reference: about the fewest after
 * which its samples hold lexicon words often enough that most pairs are
 * not ties (held-out loss ~0.5 nats per byte; at 800 steps three pairs in
 * four tie at reward 0, at 300 it still babbles) and DPO's gain clears the
 * reward's confidence interval. */
enum { FIXTURE_STEPS = 1200 };

static void tiny_task(TaskPrepareOptions *o, const char *cache, int steps)
{
    task_prepare_defaults(o);
    o->cache_dir = cache;
    o->pretrain.model =
        (GptConfig){.vocab = 257, .context = 64, .width = 32, .layers = 1, .heads = 2};
    o->pretrain.docs = 4000;
    o->pretrain.steps = steps;
    o->pretrain.batch = 16;
    o->pretrain.lr = 5e-3;
    o->pretrain.warmup_steps = 10;
    o->pretrain.threads = 2;
    o->n_train = 256;
    o->n_eval = 16;
    o->k = 4;
    o->quiet = true;
    o->pretrain.quiet = true;
}

static void cache_path(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", tmp_root, name);
}

/* The fixture: the tiny task, built once. */
static TaskAssets fixture;
static bool fixture_ok;

static void build_fixture(void)
{
    char cache[320], err[1024];
    TaskPrepareOptions o;
    cache_path(cache, sizeof cache, "main");
    tiny_task(&o, cache, FIXTURE_STEPS);
    fixture_ok = task_prepare(&o, &fixture, err, sizeof err) == 0;
    if (!fixture_ok)
        printf("# fixture: %s\n", err);
}

/* Pretraining gives the same weights bit for bit with 1 thread and with 2. */
static void pretraining_is_deterministic(void)
{
    TaskPrepareOptions o;
    tiny_task(&o, NULL, 30);
    Gpt *a = NULL, *b = NULL;
    char err[1024];
    o.pretrain.threads = 1;
    CHECK(pretrain_run(&o.pretrain, &a, NULL, err, sizeof err) == 0);
    o.pretrain.threads = 2;
    CHECK(pretrain_run(&o.pretrain, &b, NULL, err, sizeof err) == 0);
    CHECK(a && b && memcmp(a->all->data, b->all->data, (size_t)a->all->size * sizeof(float)) == 0);
    o.pretrain.seed = 43;
    gpt_free(b);
    CHECK(pretrain_run(&o.pretrain, &b, NULL, err, sizeof err) == 0);
    CHECK(a && b && memcmp(a->all->data, b->all->data, (size_t)a->all->size * sizeof(float)) != 0);
    gpt_free(a);
    gpt_free(b);
}

/* The fixture's reference copied into a fresh cache: the pairs made there
 * are the fixture's byte for byte (and nothing is pretrained again); with
 * Bradley-Terry noise they differ and some are flipped. */
static void pair_generation_is_deterministic(void)
{
    char cache[320], dir[1400], path[1500], err[1024];
    CHECK(fixture_ok);
    if (!fixture_ok)
        return;
    TaskPrepareOptions o;
    tiny_task(&o, NULL, FIXTURE_STEPS);
    cache_path(cache, sizeof cache, "det");
    o.cache_dir = cache;
    CHECK(pretrain_cache_dir(&o.pretrain, cache, dir, sizeof dir, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/%s", dir, PRETRAIN_FILE);
    CHECK(fsutil_mkdirs(dir, err, sizeof err) == 0);
    const FsReadCap cap = {.bytes = (size_t)1 << 30, .kind = "a model file"};
    CHECK(fsutil_copy_atomic(fixture.reference, &cap, path, err, sizeof err) == 0);
    TaskAssets x, again, noisy;
    int rc = task_prepare(&o, &x, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    CHECK(!x.cached && x.train.pairs == fixture.train.pairs);
    CHECK(same_file(x.train_file, fixture.train_file));
    CHECK(same_file(x.eval_file, fixture.eval_file));
    CHECK(task_prepare(&o, &again, err, sizeof err) == 0 && again.cached);
    o.bt_temp = 1.0;
    CHECK(task_prepare(&o, &noisy, err, sizeof err) == 0);
    CHECK(noisy.train.flipped > 0 && !same_file(noisy.train_file, x.train_file));
    /* a run's config leads back to its task: train_file -> task.json */
    TaskAssets found;
    CHECK(task_assets_find(x.train_file, &found, err, sizeof err) == 0);
    CHECK(strcmp(found.reference, x.reference) == 0 && found.seed == 42);
    CHECK(memcmp(&found.model, &x.model, sizeof x.model) == 0);
    CHECK(task_assets_find("/nonexistent/train.jsonl", &found, err, sizeof err) == 1);
}

/* The pairs are TRL JSONL data.h loads, with chosen reward > rejected. */
static void pairs_are_ordinary_data(void)
{
    char err[1024];
    CHECK(fixture_ok);
    if (!fixture_ok)
        return;
    char *text;
    size_t len;
    CHECK(tfs_read(fixture.train_file, &text, &len, err, sizeof err) == 0);
    int lines = 0, ordered = 0;
    for (char *line = text, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        json_t *j = json_loadb(line, nl ? (size_t)(nl - line) : strlen(line), 0, NULL);
        const char *ch = json_string_value(json_object_get(j, "chosen"));
        const char *rj = json_string_value(json_object_get(j, "rejected"));
        lines++;
        ordered += ch && rj && task_reward(ch, strlen(ch)) > task_reward(rj, strlen(rj));
        json_decref(j);
    }
    free(text);
    CHECK(lines == fixture.train.pairs);
    CHECKF(ordered == lines, "%d of %d pairs ordered by reward (no noise asked)", ordered, lines);
}

static int load(const char *path, Gpt **m)
{
    char err[1024];
    int rc = run_model_load(path, m, NULL, 0, err, sizeof err);
    if (rc != 0)
        printf("# %s\n", err);
    return rc;
}

/* Reference against itself: KL exactly 0 (the same log-probs bit for bit),
 * win rate exactly 1/2, every margin 0 so accuracy 0, rewards finite. */
static void reference_against_itself(void)
{
    Gpt *a = NULL, *b = NULL;
    CHECK(fixture_ok && load(fixture.reference, &a) == 0 && load(fixture.reference, &b) == 0);
    if (!a || !b)
        goto done;
    EvalOptions o;
    eval_defaults(&o);
    o.n_prompts = 12;
    o.samples = 3;
    EvalResult r;
    char err[1024];
    int rc = eval_models(a, b, fixture.seed, fixture.eval_file, &o, &r, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    CHECKF(r.kl == 0.0, "kl = %.17g", r.kl);
    CHECK(r.win_rate == 0.5);
    CHECK(r.reward == r.ref_reward);
    CHECK(isfinite(r.reward) && isfinite(r.reward_ci) && fabs(r.reward) <= 1);
    CHECK(r.samples == 36 && r.pairs == fixture.eval.pairs && r.accuracy == 0.0);
    /* the same through the file path, with the JSON round trip */
    o.reference = fixture.reference;
    o.pairs_file = fixture.eval_file;
    EvalResult p, back;
    rc = eval_path(fixture.reference, &o, &p, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    CHECK(p.kl == 0.0 && p.reward == r.reward);
    json_t *j = eval_result_json(&p);
    CHECK(eval_result_from_json(j, &back) == 0);
    CHECK(back.kl == p.kl && back.reward == p.reward && back.win_rate == p.win_rate);
    json_decref(j);
done:
    gpt_free(a);
    gpt_free(b);
}

static void task_config_for(Config *c, const TaskAssets *t, int steps)
{
    char err[256];
    config_defaults(c);
    task_train_defaults(c);
    task_train_config(c, t);
    c->max_length = c->context;
    c->max_steps = steps;
    c->learning_rate = 1e-3;
    c->warmup_steps = 2;
    c->threads = 2;
    c->seed = 3;
    if (config_set_loss_param(c, "beta", 0.5, err, sizeof err) != 0 ||
        config_finalize(c, err, sizeof err) != 0)
        printf("# config: %s\n", err);
}

enum { DPO_SEEDS = 4 };

/* How a learning test trains: the loss, for `steps` steps of test_eval's
 * quick recipe (1e-3, beta 0.5). The main job's own recipe is asserted on
 * the real task by tests/main_job.py. */
typedef struct Recipe {
    const char *loss;
    int steps;
} Recipe;

/* One run from the reference with training seed `seed`, evaluated on the
 * same held-out prompts and sampling seed as every other seed's (common
 * random numbers). */
static int recipe_run(const Recipe *rc_, uint64_t seed, EvalResult *r)
{
    char dir[320], name[64], err[1024];
    const char *base = strrchr(rc_->loss, '/') ? strrchr(rc_->loss, '/') + 1 : rc_->loss;
    snprintf(name, sizeof name, "%s-%d-%llu", base, rc_->steps, (unsigned long long)seed);
    cache_path(dir, sizeof dir, name);
    TrainOptions to = {.n_losses = 1,
                       .loss_paths = {rc_->loss},
                       .loss_weights = {1.0},
                       .run_dir = dir,
                       .quiet = true,
                       .init_model = fixture.reference};
    task_config_for(&to.cfg, &fixture, rc_->steps);
    to.cfg.seed = seed;
    TrainResult tr;
    TrainStatus st = train_run(&to, &tr, err, sizeof err);
    CHECKF(st == TRAIN_OK, "seed %llu: %s", (unsigned long long)seed, err);
    EvalOptions o;
    eval_defaults(&o);
    o.n_prompts = 16;
    o.samples = 4;
    int rc = st == TRAIN_OK ? eval_path(dir, &o, r, err, sizeof err) : -1;
    CHECKF(rc == 0, "seed %llu: %s", (unsigned long long)seed, err);
    if (rc == 0)
        printf("# %s seed %llu: reward %+.3f (reference %+.3f), gain %+.3f +- %.3f, KL %.2f, "
               "win %.2f, accuracy %.2f\n",
               name, (unsigned long long)seed, r->reward, r->ref_reward, r->gain, r->gain_ci, r->kl,
               r->win_rate, r->accuracy);
    return rc;
}

/* Runs over DPO_SEEDS training seeds: the mean reward gain over the
 * reference exceeds its 95% interval, for both the evaluation's sampling
 * error (each run's paired interval) and the spread between seeds (a t
 * interval on the gains); on average the KL is positive and the held-out
 * accuracy at least min_acc. One run alone decides nothing: its gain is of
 * the size of the seed-to-seed spread. */
static void learns_over_seeds(const Recipe *rc_, double min_acc)
{
    double gain[DPO_SEEDS], sum = 0, var_eval = 0, kl = 0, win = 0, acc = 0;
    for (int i = 0; i < DPO_SEEDS; i++) {
        EvalResult r;
        if (recipe_run(rc_, 3 + (uint64_t)i, &r) != 0)
            return;
        /* the paired gain is the difference of the two means */
        CHECK_NEAR(r.gain, r.reward - r.ref_reward, 1e-9);
        gain[i] = r.gain;
        sum += gain[i];
        var_eval += (r.gain_ci / 1.96) * (r.gain_ci / 1.96);
        kl += r.kl / DPO_SEEDS;
        win += r.win_rate / DPO_SEEDS;
        acc += r.accuracy / DPO_SEEDS;
    }
    double mean = sum / DPO_SEEDS, ss = 0;
    for (int i = 0; i < DPO_SEEDS; i++)
        ss += (gain[i] - mean) * (gain[i] - mean);
    double ci_eval = 1.96 * sqrt(var_eval) / DPO_SEEDS;               /* sampling error */
    double ci_seeds = 3.182 * sqrt(ss / (DPO_SEEDS - 1) / DPO_SEEDS); /* t(0.975, 3) */
    printf("# over %d seeds: gain %+.3f, 95%% interval %.3f (evaluation) %.3f (seeds); KL "
           "%.2f, win %.2f, accuracy %.2f\n",
           DPO_SEEDS, mean, ci_eval, ci_seeds, kl, win, acc);
    CHECKF(mean > ci_eval && mean > ci_seeds, "mean gain %.3f vs intervals %.3f, %.3f", mean,
           ci_eval, ci_seeds);
    CHECKF(kl > 0 && win > 0.5 && acc >= min_acc, "KL %.2f, win %.2f, accuracy %.2f", kl, win, acc);
}

/* A short DPO run from the reference beats it (test_eval's quick recipe). */
static void dpo_beats_the_reference(void)
{
    CHECK(fixture_ok);
    if (!fixture_ok)
        return;
    Recipe r = {.loss = PREFRUN_SOURCE_ROOT "/losses/dpo.lua", .steps = 60};
    learns_over_seeds(&r, 0.5);
}

/* 1 loss x 2 betas in two workers: CSV with a header and two rows, JSON
 * with two rows and one curve, an SVG with the curve drawn. */
static void frontier_writes_table_and_plot(void)
{
    CHECK(fixture_ok);
    if (!fixture_ok)
        return;
    char out[320], err[1024], path[400];
    cache_path(out, sizeof out, "frontier");
    TaskPrepareOptions tp;
    tiny_task(&tp, NULL, FIXTURE_STEPS);
    snprintf(path, sizeof path, "%s/main", tmp_root);
    tp.cache_dir = path;
    FrontierSetup s;
    CHECK(frontier_setup(&s, &tp, err, sizeof err) == 0);
    s.cfg.max_steps = 8;
    s.eval.n_prompts = 6;
    s.eval.samples = 2;
    s.eval.max_pairs = 16;
    s.jobs = 2;
    s.quiet = true;
    FrontierJob jobs[2] = {
        {.loss_path = PREFRUN_SOURCE_ROOT "/losses/dpo.lua", .beta = 0.1, .seed = 1},
        {.loss_path = PREFRUN_SOURCE_ROOT "/losses/dpo.lua", .beta = 0.5, .seed = 1}};
    frontier_job_dirs(jobs, 2, out);
    FrontierResult res[2];
    CHECK(frontier_run(&s, jobs, 2, res, err, sizeof err) == 0);
    CHECKF(res[0].ok && res[1].ok, "%s | %s", res[0].error, res[1].error);
    CHECK(frontier_write(out, jobs, res, 2, err, sizeof err) == 0);
    char *text;
    size_t len;
    snprintf(path, sizeof path, "%s/frontier.csv", out);
    int lines = 0;
    if (tfs_read(path, &text, &len, err, sizeof err) == 0) {
        for (size_t i = 0; i < len; i++)
            lines += text[i] == '\n';
        CHECK(strncmp(text, "loss,beta,seed,ok,reward", 24) == 0);
        free(text);
    }
    CHECK(lines == 3);
    snprintf(path, sizeof path, "%s/frontier.json", out);
    json_t *j = json_load_file(path, 0, NULL);
    CHECK(json_array_size(json_object_get(j, "rows")) == 2);
    json_t *curves = json_object_get(j, "curves");
    CHECK(json_array_size(curves) == 1);
    CHECK(json_array_size(json_object_get(json_array_get(curves, 0), "points")) == 2);
    json_decref(j);
    snprintf(path, sizeof path, "%s/frontier.svg", out);
    if (tfs_read(path, &text, &len, err, sizeof err) == 0) {
        CHECK(strncmp(text, "<svg", 4) == 0 && strstr(text, "<polyline") && strstr(text, "dpo"));
        CHECK(strstr(text, "</svg>") != NULL);
        free(text);
    } else {
        CHECKF(0, "%s", err);
    }
}

/* ---- Hugging Face models ------------------------------------------------------- */

static char hf_dir[400], hf_pairs[400];
static bool hf_ok;

static const char *tokenizer_file(const char *name)
{
    static char path[512];
    const char *d = getenv("PREFRUN_TOKENIZER_DATA");
    snprintf(path, sizeof path, "%s/gpt2/%s", d ? d : PREFRUN_SOURCE_ROOT "/.deps/tokenizers",
             name);
    return path;
}

static const char hf_pairs_text[] =
    "{\"prompt\": \"The movie was\", \"chosen\": \" great fun.\", \"rejected\": \" dull.\"}\n"
    "{\"prompt\": \"I liked\", \"chosen\": \" every scene.\", \"rejected\": \" nothing.\"}\n"
    "{\"prompt\": \"The plot\", \"chosen\": \" holds up well.\", \"rejected\": \" is a mess.\"}\n"
    "{\"prompt\": \"Music\", \"chosen\": \" soars.\", \"rejected\": \" grates.\"}\n"
    "{\"prompt\": \"Ending\", \"chosen\": \" moving.\", \"rejected\": \" rushed.\"}\n"
    "{\"prompt\": \"Score\", \"chosen\": \" 9/10\", \"rejected\": \" 2/10\"}\n";

/* A random tiny GPT-2 (vocab 50257: the tokenizer's ids; 64 positions)
 * saved as Hugging Face saves it, the real tokenizer beside it. */
static void build_hf_fixture(void)
{
    char err[1024];
    static const FsReadCap cap = {(size_t)64 << 20, "a tokenizer file", false};
    cache_path(hf_dir, sizeof hf_dir, "tiny-gpt2");
    cache_path(hf_pairs, sizeof hf_pairs, "hf-pairs.jsonl");
    if (!fsutil_exists(tokenizer_file("encoder.json")))
        return;
    GptConfig g = {.vocab = 50257, .context = 64, .width = 16, .layers = 1, .heads = 2};
    Gpt *m = gpt_new(&g, false, err, sizeof err);
    if (m)
        gpt_init(m, 13);
    char vocab[500], merges[500];
    snprintf(vocab, sizeof vocab, "%s/vocab.json", hf_dir);
    snprintf(merges, sizeof merges, "%s/merges.txt", hf_dir);
    hf_ok =
        m && hf_gpt2_save(m, hf_dir, ST_F32, err, sizeof err) == 0 &&
        fsutil_copy_atomic(tokenizer_file("encoder.json"), &cap, vocab, err, sizeof err) == 0 &&
        fsutil_copy_atomic(tokenizer_file("vocab.bpe"), &cap, merges, err, sizeof err) == 0 &&
        fsutil_write_atomic(hf_pairs, hf_pairs_text, strlen(hf_pairs_text), err, sizeof err) == 0;
    if (!hf_ok)
        printf("# hf fixture: %s\n", err);
    gpt_free(m);
}

static bool skip_hf(const char *name)
{
    if (hf_ok)
        return false;
    tl_cases++;
    printf("ok %d - %s # SKIP no GPT-2 tokenizer files (bash tests/fetch_tokenizers.sh)\n",
           tl_cases, name);
    return true;
}
#define RUN_HF(fn) (skip_hf(#fn) ? (void)0 : RUN(fn))

static void small_eval(EvalOptions *o)
{
    eval_defaults(o);
    o->n_prompts = 4;
    o->samples = 2;
    o->quiet = true;
}

/* A folder against itself: KL exactly 0, win rate 1/2, every pair a tie
 * (accuracy 0), all six held-out pairs tokenized and scored. */
static void hf_folder_against_itself(void)
{
    EvalOptions o;
    small_eval(&o);
    o.pairs_file = hf_pairs;
    EvalResult r;
    char err[1024];
    int rc = eval_model_dir(hf_dir, &o, &r, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    CHECKF(r.kl == 0.0 && r.win_rate == 0.5, "kl %.17g, win %.17g", r.kl, r.win_rate);
    CHECK(r.samples == 8 && r.pairs == 6 && r.accuracy == 0.0);
    CHECK(isfinite(r.reward) && r.mean_length > 0);
    CHECK(strcmp(r.model, hf_dir) == 0 && strcmp(r.reference, hf_dir) == 0);
}

/* One DPO run of the folder on the six pairs. */
static int train_hf(const char *run, int steps, double lr, char *err, size_t errlen)
{
    TrainOptions to = {.n_losses = 1,
                       .loss_paths = {PREFRUN_SOURCE_ROOT "/losses/dpo.lua"},
                       .loss_weights = {1.0},
                       .run_dir = run,
                       .quiet = true};
    Config *c = &to.cfg;
    config_defaults(c);
    char set[500];
    snprintf(set, sizeof set, "model=%s", hf_dir);
    const char *keys[] = {set,
                          "per_device_train_batch_size=2",
                          "logging_steps=1",
                          "eval_steps=0",
                          "save_steps=0",
                          "threads=1",
                          "seed=3"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (config_set(c, keys[i], err, errlen) != 0)
            return -1;
    snprintf(set, sizeof set, "learning_rate=%.17g", lr); /* given: with a model, else TRL's */
    if (config_set(c, set, err, errlen) != 0)
        return -1;
    snprintf(c->train_file, sizeof c->train_file, "%s", hf_pairs);
    c->max_steps = steps;
    TrainResult tr;
    if (config_finalize(c, err, errlen) != 0)
        return -1;
    return train_run(&to, &tr, err, errlen) == TRAIN_OK ? 0 : -1;
}

/* A run of the folder is evaluated against the folder's model: at
 * learning rate 0 the policy is that model, so KL is exactly 0 (a
 * reference anything else would not give it); moved, the folder is named
 * in the error, and --ref finds it. Trained for real, the policy moves
 * and ranks the pairs it trained on. */
static void hf_run_against_its_model(void)
{
    char run[400], moved[400], err[1024];
    cache_path(run, sizeof run, "hf-run-lr0");
    CHECKF(train_hf(run, 1, 0.0, err, sizeof err) == 0, "%s", err);
    EvalOptions o;
    small_eval(&o);
    EvalResult r;
    int rc = eval_path(run, &o, &r, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    CHECKF(r.kl == 0.0 && r.win_rate == 0.5, "kl %.17g", r.kl);
    CHECK(strcmp(r.reference, hf_dir) == 0 && isnan(r.accuracy) && r.samples == 8);
    cache_path(moved, sizeof moved, "tiny-gpt2-moved");
    CHECK(rename(hf_dir, moved) == 0);
    CHECK(eval_path(run, &o, &r, err, sizeof err) == -1);
    CHECKF(strstr(err, hf_dir) != NULL, "err: %s", err);
    o.reference = moved;
    rc = eval_path(run, &o, &r, err, sizeof err);
    CHECKF(rc == 0 && r.kl == 0.0 && strcmp(r.reference, moved) == 0, "%s", err);
    CHECK(rename(moved, hf_dir) == 0);
    cache_path(run, sizeof run, "hf-run");
    CHECKF(train_hf(run, 8, 1e-2, err, sizeof err) == 0, "%s", err);
    small_eval(&o);
    o.pairs_file = hf_pairs;
    rc = eval_path(run, &o, &r, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    printf("# hf run: KL %.3f, accuracy %.2f on %lld pairs\n", r.kl, r.accuracy,
           (long long)r.pairs);
    CHECK(rc == 0 && isfinite(r.kl) && r.kl != 0.0 && r.pairs == 6 && r.accuracy > 0.5);
}

/* --model on the frontier: the run trains the folder (its hf/ copy, its
 * config's model) on the task's pairs and is evaluated against it. */
static void frontier_trains_a_model_folder(void)
{
    CHECK(fixture_ok);
    if (!fixture_ok)
        return;
    char out[320], err[1024], path[400];
    cache_path(out, sizeof out, "frontier-hf");
    TaskPrepareOptions tp;
    tiny_task(&tp, NULL, FIXTURE_STEPS);
    snprintf(path, sizeof path, "%s/main", tmp_root);
    tp.cache_dir = path;
    FrontierSetup s;
    CHECK(frontier_setup(&s, &tp, err, sizeof err) == 0);
    CHECKF(frontier_use_model(&s, hf_dir, err, sizeof err) == 0, "%s", err);
    CHECK(s.cfg.vocab == 50257 && s.cfg.width == 16 && s.cfg.context <= 64);
    s.cfg.max_steps = 2;
    s.eval.n_prompts = 3;
    s.eval.samples = 2;
    s.eval.max_pairs = 8;
    s.jobs = 1;
    s.quiet = true;
    FrontierJob jobs[1] = {
        {.loss_path = PREFRUN_SOURCE_ROOT "/losses/dpo.lua", .beta = 0.1, .seed = 1}};
    frontier_job_dirs(jobs, 1, out);
    FrontierResult res[1];
    CHECK(frontier_run(&s, jobs, 1, res, err, sizeof err) == 0);
    CHECKF(res[0].ok, "%s", res[0].error);
    CHECK(strcmp(res[0].eval.reference, hf_dir) == 0 && res[0].eval.samples == 6);
    CHECK(res[0].eval.pairs == 8 && isfinite(res[0].eval.kl));
    char copy[FRONTIER_DIR_LEN + 32];
    snprintf(copy, sizeof copy, "%s/hf/vocab.json", jobs[0].run_dir);
    CHECK(fsutil_exists(copy));
    CHECK(frontier_use_model(&s, fixture.dir, err, sizeof err) == -1);
    CHECKF(strstr(err, fixture.dir) != NULL, "err: %s", err);
}

int main(void)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/prefrun-test-eval-%d", (int)getpid());
    char err[256];
    build_fixture();
    build_hf_fixture();
    RUN(pretraining_is_deterministic);
    RUN(pair_generation_is_deterministic);
    RUN(pairs_are_ordinary_data);
    RUN(reference_against_itself);
    RUN(dpo_beats_the_reference);
    RUN(frontier_writes_table_and_plot);
    RUN_HF(hf_folder_against_itself);
    RUN_HF(hf_run_against_its_model);
    RUN_HF(frontier_trains_a_model_folder);
    fsutil_remove_tree(tmp_root, err, sizeof err);
    return tl_done();
}
