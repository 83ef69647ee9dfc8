/*
 * test_eval.c — the built-in task end to end on a tiny model: task
 * generation is deterministic (same seed, same bytes, for any thread
 * count), the reference evaluated against itself gives KL exactly 0, a
 * policy trained with DPO for a short run beats the reference, and the
 * frontier of 1 loss x 2 betas writes its table and plot.
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

/* A short DPO run from the reference: higher reward than the reference on
 * held-out prompts (by more than the reward's own 95% interval), a
 * positive KL, a win rate above 1/2, held-out accuracy above chance. */
static void dpo_beats_the_reference(void)
{
    CHECK(fixture_ok);
    if (!fixture_ok)
        return;
    char dir[320], err[1024];
    cache_path(dir, sizeof dir, "run-dpo");
    TrainOptions to = {.n_losses = 1,
                       .loss_paths = {PREFRUN_SOURCE_ROOT "/losses/dpo.lua"},
                       .loss_weights = {1.0},
                       .run_dir = dir,
                       .quiet = true,
                       .init_model = fixture.reference};
    task_config_for(&to.cfg, &fixture, 60);
    TrainResult tr;
    TrainStatus st = train_run(&to, &tr, err, sizeof err);
    CHECKF(st == TRAIN_OK, "%s", err);
    EvalOptions o;
    eval_defaults(&o);
    o.n_prompts = 16;
    o.samples = 4;
    EvalResult r;
    int rc = st == TRAIN_OK ? eval_path(dir, &o, &r, err, sizeof err) : -1;
    CHECKF(rc == 0, "%s", err);
    if (rc != 0)
        return;
    printf("# dpo: reward %+.3f (reference %+.3f), KL %.2f, win %.2f, accuracy %.2f\n", r.reward,
           r.ref_reward, r.kl, r.win_rate, r.accuracy);
    CHECKF(r.reward - r.ref_reward > r.reward_ci, "reward %.3f vs reference %.3f (ci %.3f)",
           r.reward, r.ref_reward, r.reward_ci);
    CHECK(r.kl > 0 && r.win_rate > 0.5 && r.accuracy > 0.5);
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

int main(void)
{
    snprintf(tmp_root, sizeof tmp_root, "/tmp/prefrun-test-eval-%d", (int)getpid());
    char err[256];
    build_fixture();
    RUN(pretraining_is_deterministic);
    RUN(pair_generation_is_deterministic);
    RUN(pairs_are_ordinary_data);
    RUN(reference_against_itself);
    RUN(dpo_beats_the_reference);
    RUN(frontier_writes_table_and_plot);
    fsutil_remove_tree(tmp_root, err, sizeof err);
    return tl_done();
}
