/*
 * test_train.c — the training loop end to end on a tiny model and the toy
 * preference set: it learns, resume equals an uninterrupted run, runs are
 * deterministic, NaN and script errors stop cleanly with the step named;
 * plus AdamW, clipping and the LR schedule against their closed forms.
 *
 * Each run is a 1-layer, width-32 model on a few hundred toy pairs, one
 * thread, and takes a fraction of a second.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "train/config.h"
#include "util/fsutil.h"
#include "testfs.h"
#include "model/optim.h"
#include "prefrun_config.h"
#include "testlib.h"
#include "train/train.h"

static char tmp_root[256];

static void tiny_config(Config *c)
{
    char err[512];
    config_defaults(c);
    c->context = 32;
    c->width = 32;
    c->layers = 1;
    c->heads = 2;
    c->toy_pairs = 200;
    c->per_device_train_batch_size = 8;
    c->per_device_eval_batch_size = 16;
    c->learning_rate = 3e-3;
    c->max_steps = 24;
    c->logging_steps = 3;
    c->eval_steps = 10;
    c->save_steps = 0;
    c->threads = 1;
    c->seed = 7;
    if (config_finalize(c, err, sizeof err) != 0)
        printf("# config: %s\n", err);
}

static const char *dpo_path(void) { return PREFRUN_SOURCE_ROOT "/losses/sigmoid.lua"; }

static void path_in(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", tmp_root, name);
}

/* Writes a loss script into the temporary directory; returns its path. */
static const char *write_script(const char *name, const char *text)
{
    static char path[8][512];
    static int k;
    char *p = path[k++ % 8], err[256];
    path_in(p, 512, name);
    if (fsutil_write_atomic(p, text, strlen(text), err, sizeof err) != 0)
        printf("# %s\n", err);
    return p;
}

static TrainStatus run(const Config *cfg, const char *loss, const char *dir, bool resume,
                       TrainResult *res, char *err, size_t errlen)
{
    TrainOptions o = {.cfg = *cfg,
                      .n_losses = 1,
                      .loss_paths = {loss},
                      .loss_weights = {1.0},
                      .run_dir = dir,
                      .resume = resume,
                      .quiet = true};
    return train_run(&o, res, err, errlen);
}


/* Values of one key over the training lines (no eval_ prefix), in order. */
static int metric_series(const char *dir, const char *key, double *out, int cap)
{
    char *text = tfs_metrics_text(dir);
    int n = 0;
    for (char *line = text; line && *line && n < cap;) {
        char *nl = strchr(line, '\n');
        json_t *j = json_loadb(line, nl ? (size_t)(nl - line) : strlen(line), 0, NULL);
        json_t *v = j ? json_object_get(j, key) : NULL;
        if (v && json_is_number(v))
            out[n++] = json_number_value(v);
        json_decref(j);
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return n;
}

/* DPO on the toy set: the loss falls and rewards/accuracies rises from the
 * coin flip of the first steps (policy = reference gives margin 0), on the
 * training pairs and on the 40 held-out ones. Measured on this config: loss
 * 0.687 -> 0.639, accuracy 0.51 -> 0.89, held-out 0.73 -> 0.85 (eval_loss
 * 0.682 -> 0.663); the bounds leave room for rounding-level changes in the
 * kernels, and a loop that does not learn (a sign error, a lost gradient, a
 * reference that moves) stays at 0.693 and 0.5. */
static void test_dpo_learns_toy_preferences(void)
{
    Config c;
    tiny_config(&c);
    c.toy_pairs = 400;
    c.max_steps = 60;
    c.logging_steps = 10;
    char dir[512], err[1024];
    path_in(dir, sizeof dir, "learn");
    TrainResult res;
    TrainStatus st = run(&c, dpo_path(), dir, false, &res, err, sizeof err);
    CHECKF(st == TRAIN_OK, "%s", err);
    double loss[16], acc[16], eval_acc[16], eval_loss[16];
    int n = metric_series(dir, "loss", loss, 16);
    CHECK(n == 6 && metric_series(dir, "rewards/accuracies", acc, 16) == 6);
    int ne = metric_series(dir, "eval_rewards/accuracies", eval_acc, 16);
    CHECK(ne == 6 && metric_series(dir, "eval_loss", eval_loss, 16) == 6); /* eval every 10 */
    if (n != 6 || ne != 6)
        return;
    CHECKF(loss[0] > 0.68 && loss[5] < loss[0] - 0.03, "loss %.4f -> %.4f", loss[0], loss[5]);
    CHECKF(acc[5] >= 0.75 && acc[5] > acc[0] + 0.15, "accuracy %.3f -> %.3f", acc[0], acc[5]);
    CHECKF(eval_acc[5] >= 0.7 && eval_loss[5] < eval_loss[0] - 0.01,
           "held-out accuracy %.3f, loss %.4f -> %.4f", eval_acc[5], eval_loss[0], eval_loss[5]);
    CHECK(res.steps == 60 && res.total_steps == 60);
    char ck[600];
    snprintf(ck, sizeof ck, "%s/checkpoint-60/model.safetensors", dir);
    CHECK(fsutil_exists(ck)); /* save_steps 0: one checkpoint, at the end */
}

/* Train 24 steps; separately train 24, lose everything after the step-12
 * checkpoint (as a kill -9 after it would), resume, finish: the metrics
 * lines and the final weights are identical, byte for byte. Logging every 5
 * steps puts the checkpoint mid-interval; accumulation 2 and a precomputed
 * reference cover the rest of the state. */
static void check_resume_equals_uninterrupted(const Config *cfg, const char *loss, const char *tag)
{
    Config c = *cfg;
    c.logging_steps = 5;
    c.save_steps = 12;
    c.gradient_accumulation_steps = 2;
    c.precompute_ref_log_probs = true;
    char a[512], b[512], err[1024], path[700], name[64];
    snprintf(name, sizeof name, "%s-whole", tag);
    path_in(a, sizeof a, name);
    snprintf(name, sizeof name, "%s-resumed", tag);
    path_in(b, sizeof b, name);
    TrainResult res;
    CHECKF(run(&c, loss, a, false, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    CHECKF(run(&c, loss, b, false, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    snprintf(path, sizeof path, "%s/checkpoint-24", b);
    CHECK(fsutil_remove_tree(path, err, sizeof err) == 0); /* `latest` now names nothing */
    CHECKF(run(&c, loss, b, true, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    CHECK(res.steps == 24);
    char *ma = tfs_metrics_text(a), *mb = tfs_metrics_text(b);
    CHECK(ma && mb && strlen(ma) > 500);
    CHECKF(ma && mb && strcmp(ma, mb) == 0, "%s: metrics differ:\n%s\nvs\n%s", tag, ma ? ma : "",
           mb ? mb : "");
    free(ma);
    free(mb);
    char pa[700], pb[700];
    snprintf(pa, sizeof pa, "%s/checkpoint-24/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/checkpoint-24/model.safetensors", b);
    CHECK(same_file(pa, pb));
    snprintf(pa, sizeof pa, "%s/checkpoint-24/optimizer.safetensors", a);
    snprintf(pb, sizeof pb, "%s/checkpoint-24/optimizer.safetensors", b);
    CHECK(same_file(pa, pb));
}

static void test_resume_equals_uninterrupted(void)
{
    Config c;
    tiny_config(&c);
    check_resume_equals_uninterrupted(&c, dpo_path(), "dpo");
}

/* A loss with state across steps (BCO's running mean of rewards): the state
 * saved in the checkpoint is restored, so the resumed run still matches. */
static void test_resume_restores_loss_state(void)
{
    Config c;
    char err[512];
    tiny_config(&c);
    CHECKF(config_set_loss_param(&c, "running_mean", 1, err, sizeof err) == 0, "%s", err);
    check_resume_equals_uninterrupted(&c, PREFRUN_SOURCE_ROOT "/losses/bco_pair.lua", "bco");
}

/* The same seed writes the same numbers, bit for bit, with one thread or
 * two (every reduction runs in a fixed order: static schedules, column-split
 * sums, blocked norms); another seed does not. */
static void test_same_seed_same_numbers(void)
{
    Config c;
    tiny_config(&c);
    c.max_steps = 6;
    char a[512], b[512], d[512], err[1024], pa[600], pb[600];
    path_in(a, sizeof a, "det-1-thread");
    path_in(b, sizeof b, "det-2-threads");
    path_in(d, sizeof d, "det-other-seed");
    TrainResult res;
    CHECKF(run(&c, dpo_path(), a, false, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    c.threads = 2;
    CHECKF(run(&c, dpo_path(), b, false, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    c.threads = 1;
    c.seed = 8;
    CHECKF(run(&c, dpo_path(), d, false, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    char *ma = tfs_metrics_text(a), *mb = tfs_metrics_text(b), *md = tfs_metrics_text(d);
    CHECK(ma && mb && md && strcmp(ma, mb) == 0 && strcmp(ma, md) != 0);
    snprintf(pa, sizeof pa, "%s/checkpoint-6/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/checkpoint-6/model.safetensors", b);
    CHECK(same_file(pa, pb));
    free(ma);
    free(mb);
    free(md);
}

/* DPO that turns NaN on b.step == 2, the third optimizer step. */
static const char *nan_script(void)
{
    return write_script("nan_at_3.lua",
                        "return {\n"
                        "  name = \"nan_at_3\",\n"
                        "  params = { beta = 0.1 },\n"
                        "  loss = function(b, p)\n"
                        "    local z = (b.policy_chosen_logps - b.policy_rejected_logps)\n"
                        "            - (b.reference_chosen_logps - b.reference_rejected_logps)\n"
                        "    local l = -logsigmoid(p.beta * z)\n"
                        "    if b.step == 2 then return l * (0 / 0) end\n"
                        "    return l\n"
                        "  end,\n"
                        "}\n");
}

/* nan_policy = stop: the run ends at step 3 with the values summarized, and
 * `latest` still names the step-2 checkpoint. */
static void test_nan_stops_with_last_good_checkpoint(void)
{
    Config c;
    tiny_config(&c);
    c.max_steps = 6;
    c.save_steps = 1;
    char dir[512], err[1024], ck[600];
    path_in(dir, sizeof dir, "nan-stop");
    TrainResult res;
    TrainStatus st = run(&c, nan_script(), dir, false, &res, err, sizeof err);
    CHECK(st == TRAIN_FAILED);
    CHECKF(strstr(err, "loss is not finite at step 3/6 (b.step = 2)"), "%s", err);
    CHECKF(strstr(err, "8 of 8 NaN"), "%s", err);
    CHECKF(strstr(err, "checkpoint-2"), "%s", err);
    int64_t step = -1;
    CHECK(ckpt_find_latest(dir, ck, sizeof ck, &step, err, sizeof err) == 0 && step == 2);
    CHECK(res.steps == 2);
}

/* nan_policy = skip: the bad batch is skipped and counted, the run finishes. */
static void test_nan_skip_counts_the_batch(void)
{
    Config c;
    tiny_config(&c);
    c.max_steps = 6;
    c.nan_policy = CONFIG_NAN_SKIP;
    char dir[512], err[1024];
    path_in(dir, sizeof dir, "nan-skip");
    TrainResult res;
    CHECKF(run(&c, nan_script(), dir, false, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    CHECK(res.steps == 6 && res.skipped_batches == 1);
    double skipped[4];
    CHECK(metric_series(dir, "skipped_batches", skipped, 4) >= 1 && skipped[0] == 1);
}

/* A finite loss whose gradient is NaN (d sqrt(x)/dx at 0 is inf, times 0)
 * stops the run too, naming the step and the first tensor hit. */
static void test_nan_gradient_stops(void)
{
    const char *path = write_script(
        "nan_grad.lua", "return {\n"
                        "  name = \"nan_grad\",\n"
                        "  params = { beta = 0.1 },\n"
                        "  loss = function(b, p)\n"
                        "    local z = b.policy_chosen_logps - b.policy_rejected_logps\n"
                        "    local l = -logsigmoid(p.beta * z)\n"
                        "    if b.step == 2 then return l + sqrt(z * 0) end\n"
                        "    return l\n"
                        "  end,\n"
                        "}\n");
    Config c;
    tiny_config(&c);
    c.max_steps = 6;
    char dir[512], err[1024];
    path_in(dir, sizeof dir, "nan-grad");
    TrainResult res;
    CHECK(run(&c, path, dir, false, &res, err, sizeof err) == TRAIN_FAILED);
    CHECKF(strstr(err, "gradient is not finite at step 3/6") &&
               strstr(err, "first in wte.weight") && strstr(err, "NaN") &&
               strstr(err, "before its first checkpoint"),
           "%s", err);
    CHECK(res.steps == 2);
}

/* A script error at b.step == 1 names the step and the script's line. */
static void test_script_error_names_step_and_line(void)
{
    const char *path = write_script("boom.lua", "return {\n"
                                                "  name = \"boom\",\n"
                                                "  params = {},\n"
                                                "  loss = function(b)\n"
                                                "    if b.step == 1 then error(\"boom\") end\n"
                                                "    return -logsigmoid(b.policy_chosen_logps "
                                                "- b.policy_rejected_logps)\n"
                                                "  end,\n"
                                                "}\n");
    Config c;
    tiny_config(&c);
    c.max_steps = 4;
    char dir[512], err[1024];
    path_in(dir, sizeof dir, "boom");
    TrainResult res;
    CHECK(run(&c, path, dir, false, &res, err, sizeof err) == TRAIN_FAILED);
    CHECKF(strstr(err, "step 2/4 (b.step = 1)") && strstr(err, "boom.lua:5:") &&
               strstr(err, "boom"),
           "%s", err);
}

/* A loss param that no script declares is an error naming it. */
static void test_unknown_loss_param_is_named(void)
{
    Config c;
    tiny_config(&c);
    char dir[512], err[1024] = "";
    path_in(dir, sizeof dir, "typo");
    CHECK(config_set(&c, "betta=0.2", err, sizeof err) == 0);
    TrainResult res;
    CHECK(run(&c, dpo_path(), dir, false, &res, err, sizeof err) == TRAIN_BAD_INPUT);
    CHECKF(strstr(err, "'betta'"), "%s", err);
}

/* ---- issue 15: hardening ------------------------------------------------- */

/* The lines of a file, each with its '\n', in out[] (pointers into *text). */
static int split_lines(const char *path, char **text, const char *out[], size_t len[], int cap)
{
    char err[256];
    size_t n;
    if (tfs_read(path, text, &n, err, sizeof err) != 0)
        return -1;
    int k = 0;
    for (char *l = *text, *nl; k < cap && (nl = strchr(l, '\n')); l = nl + 1, k++) {
        out[k] = l;
        len[k] = (size_t)(nl + 1 - l);
    }
    return k;
}

/* A full disk, simulated with fsutil's fault hook: the disk fills half-way
 * through the 4th metrics line (the eval line of step 10). The run fails,
 * naming metrics.jsonl and the error, and leaves the 3 whole lines before it
 * and no torn one. The byte count comes from an unhooked run of the same
 * config: config.yaml, then the lines (only tokens_per_sec, a time, differs
 * by a byte or two between runs; half a line is the margin). */
static void test_metrics_full_disk_leaves_whole_lines(void)
{
    Config c;
    tiny_config(&c);
    char a[512], b[512], err[1024], path[700], *text;
    path_in(a, sizeof a, "full-disk-measure");
    path_in(b, sizeof b, "full-disk");
    TrainResult res;
    CHECKF(run(&c, dpo_path(), a, false, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    const char *line[16];
    size_t len[16], cfg_len;
    snprintf(path, sizeof path, "%s/config.yaml", a);
    CHECK(tfs_read(path, &text, &cfg_len, err, sizeof err) == 0);
    free(text);
    snprintf(path, sizeof path, "%s/metrics.jsonl", a);
    int n = split_lines(path, &text, line, len, 16);
    CHECK(n == 11 && strstr(line[3], "\"eval_loss\"") && strstr(line[3], "\"step\": 10}"));
    if (n != 11)
        return;
    int64_t budget = (int64_t)(cfg_len + len[0] + len[1] + len[2] + len[3] / 2);
    free(text);
    fsutil_test_fail_after(budget);
    TrainStatus st = run(&c, dpo_path(), b, false, &res, err, sizeof err);
    fsutil_test_fail_after(-1);
    CHECKF(st == TRAIN_FAILED, "status %d", st);
    CHECKF(strstr(err, "metrics of step 10: cannot write") && strstr(err, "metrics.jsonl") &&
               strstr(err, "No space left on device"),
           "%s", err);
    CHECK(res.steps == 10);
    snprintf(path, sizeof path, "%s/metrics.jsonl", b);
    n = split_lines(path, &text, line, len, 16);
    CHECKF(n == 3 && text && strlen(text) == len[0] + len[1] + len[2], "%d lines: %s", n,
           text ? text : "");
    for (int i = 0; i < n; i++) {
        json_t *j = json_loadb(line[i], len[i], 0, NULL);
        CHECKF(j && json_integer_value(json_object_get(j, "step")) == 3 * (i + 1), "line %d", i);
        json_decref(j);
    }
    free(text);
}

/* DPO times NaN on every batch (always), or on every even b.step (half). */
static const char *nan_when(const char *name, const char *cond)
{
    char text[1024];
    snprintf(
        text, sizeof text,
        "return {\n"
        "  name = \"%s\",\n"
        "  params = { beta = 0.1 },\n"
        "  loss = function(b, p)\n"
        "    local l = -logsigmoid(p.beta * (b.policy_chosen_logps - b.policy_rejected_logps))\n"
        "    if %s then return l * (0 / 0) end\n"
        "    return l\n"
        "  end,\n"
        "}\n",
        name, cond);
    char file[64];
    snprintf(file, sizeof file, "%s.lua", name);
    return write_script(file, text);
}

/* nan_policy = skip: a run fails once more than half its steps are skipped
 * (so one NaN on every batch stops at step 4 of 6: 4 > 6 / 2), and exactly
 * half is still a run; the existing nan_skip case shows 1 in 6 is. */
static void test_nan_skip_fails_when_most_steps_skipped(void)
{
    Config c;
    tiny_config(&c);
    c.max_steps = 6;
    c.nan_policy = CONFIG_NAN_SKIP;
    char dir[512], err[1024];
    path_in(dir, sizeof dir, "skip-all");
    TrainResult res;
    TrainStatus st = run(&c, nan_when("always_nan", "true"), dir, false, &res, err, sizeof err);
    CHECKF(st == TRAIN_FAILED, "status %d", st);
    CHECKF(strstr(err, "4 of the run's 6 steps skipped, more than half") &&
               strstr(err, "loss is not finite at step 4/6"),
           "%s", err);
    CHECK(res.steps == 4 && res.skipped_batches == 4);
    c.max_steps = 1; /* the smallest run: its one step skipped */
    path_in(dir, sizeof dir, "skip-all-1");
    st = run(&c, nan_when("always_nan", "true"), dir, false, &res, err, sizeof err);
    CHECKF(st == TRAIN_FAILED && strstr(err, "1 of the run's 1 steps"), "%d: %s", st, err);
    c.max_steps = 6;
    path_in(dir, sizeof dir, "skip-half");
    st = run(&c, nan_when("half_nan", "b.step % 2 == 0"), dir, false, &res, err, sizeof err);
    CHECKF(st == TRAIN_OK, "%s", err);
    CHECK(res.steps == 6 && res.skipped_batches == 3);
}

/* A resumed run whose every step is skipped has trained nothing: it fails,
 * though the whole run, 10 of its 14 steps trained, is mostly good. */
static void test_nan_skip_fails_when_a_resume_skips_all(void)
{
    Config c;
    tiny_config(&c);
    c.max_steps = 12;
    c.save_steps = 10;
    c.nan_policy = CONFIG_NAN_SKIP;
    char dir[512], err[1024];
    path_in(dir, sizeof dir, "skip-tail");
    const char *loss = nan_when("nan_from_10", "b.step >= 10");
    TrainResult res;
    CHECKF(run(&c, loss, dir, false, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    CHECK(res.steps == 12 && res.skipped_batches == 2);
    c.max_steps = 14;
    TrainStatus st = run(&c, loss, dir, true, &res, err, sizeof err);
    CHECKF(st == TRAIN_FAILED &&
               strstr(err, "every step this run took (13 to 14 of 14) was skipped"),
           "%d: %s", st, err);
}

/* A weight that is not finite or beyond 1e6 is refused where it enters
 * train_run, naming the script; a YAML file cannot carry weights at all
 * (no such key), nor a non-finite loss param. */
static void test_absurd_loss_weights_are_refused(void)
{
    Config c;
    tiny_config(&c);
    c.max_steps = 2;
    const double bad[] = {NAN, INFINITY, 1e39, -1e7};
    for (int i = 0; i < 4; i++) {
        char dir[512], err[1024] = "", name[32];
        snprintf(name, sizeof name, "weight-%d", i);
        path_in(dir, sizeof dir, name);
        TrainOptions o = {.cfg = c,
                          .n_losses = 1,
                          .loss_paths = {dpo_path()},
                          .loss_weights = {bad[i]},
                          .run_dir = dir,
                          .quiet = true};
        TrainResult res;
        TrainStatus st = train_run(&o, &res, err, sizeof err);
        CHECKF(st == TRAIN_BAD_INPUT && strstr(err, "the weight of") &&
                   strstr(err, "sigmoid.lua") && strstr(err, "[-1e+06, 1e+06]"),
               "weight %g: %d: %s", bad[i], st, err);
    }
    const char *yaml[] = {"loss_weights: [.nan, 1]\n", "loss_weights: 1e39\n",
                          "loss: {beta: .nan}\n", "loss: {beta: nan}\n", "loss: {beta: 1e999}\n"};
    for (int i = 0; i < 5; i++) {
        char err[512] = "";
        Config y;
        config_defaults(&y);
        CHECKF(config_load_yaml_text(&y, yaml[i], strlen(yaml[i]), "run.yaml", err, sizeof err) !=
                   0,
               "accepted: %s", yaml[i]);
    }
}

/* Sets one field of a trainer_state.json (a top-level one, or one of its
 * "values" when in_values), keeping the rest. */
static void set_state(const char *path, const char *field, bool in_values, json_t *v)
{
    char err[256];
    json_t *root = json_load_file(path, 0, NULL);
    json_t *at = in_values ? json_object_get(root, "values") : root;
    CHECK(at && json_object_set_new(at, field, v) == 0);
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    CHECK(text && fsutil_write_atomic(path, text, strlen(text), err, sizeof err) == 0);
    free(text);
    json_decref(root);
}

/* Every field a resume uses, checked against its meaning: the step against
 * the checkpoint's, the counters and sums against what they count, AdamW's
 * t against the updates taken. Each case edits checkpoint-12's state of a
 * 12-step run resumed to 18, expects the field named, and is undone. */
static void test_resume_checks_every_state_field(void)
{
    Config c;
    tiny_config(&c);
    c.max_steps = 12;
    char dir[512], err[1024], state[700], *orig;
    size_t orig_len;
    path_in(dir, sizeof dir, "state-fields");
    TrainResult res;
    CHECKF(run(&c, dpo_path(), dir, false, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    snprintf(state, sizeof state, "%s/checkpoint-12/trainer_state.json", dir);
    CHECK(tfs_read(state, &orig, &orig_len, err, sizeof err) == 0);
    struct {
        const char *field;
        bool in_values;
        json_t *v;
        const char *expect;
    } cases[] = {
        {"step", false, json_integer(6), "step is 6, but the checkpoint is of step 12"},
        {"step", false, json_integer(-1), "field \"step\" is -1"},
        {"step", false, json_integer(INT64_MAX), "field \"step\""},
        {"skipped_batches", false, json_integer(13), "skipped_batches is 13, more than the step"},
        {"adam_t", true, json_integer(-1), "\"adam_t\" is -1, expected step - skipped_batches"},
        {"adam_t", true, json_integer(11), "\"adam_t\" is 11"},
        {"adam_t", true, json_real(12.5), "\"adam_t\" is 12.5"},
        {"adam_t", true, json_real(1e30), "\"adam_t\" is 1e+30"},
        {"adam_t", true, json_string("nan"), "\"adam_t\" is nan"},
        {"sum_weight", true, json_integer(-3), "\"sum_weight\" is -3, expected a count"},
        {"sum_weight", true, json_real(1.5), "\"sum_weight\" is 1.5"},
        {"sum_tokens", true, json_string("inf"), "\"sum_tokens\" is inf"},
        {"sum_loss", true, json_string("nan"), "\"sum_loss\" is nan, expected a finite number"},
        {"last_lr", true, json_real(-0.1), "\"last_lr\" is -0.1, expected a finite number >= 0"},
        {"sum_accuracy", true, json_integer(2), "\"sum_accuracy\" is 2, more than sum_weight"},
    };
    c.max_steps = 18;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        set_state(state, cases[i].field, cases[i].in_values, cases[i].v);
        if (!strcmp(cases[i].field, "sum_accuracy"))
            set_state(state, "sum_weight", true, json_integer(1));
        err[0] = '\0';
        TrainStatus st = run(&c, dpo_path(), dir, true, &res, err, sizeof err);
        CHECKF(st == TRAIN_BAD_INPUT && strstr(err, cases[i].expect) && strstr(err, state),
               "%s: %d: %s", cases[i].field, st, err);
        CHECK(fsutil_write_atomic(state, orig, orig_len, err, sizeof err) == 0);
    }
    free(orig);
    CHECKF(run(&c, dpo_path(), dir, true, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    CHECK(res.steps == 18 && res.first_step == 12);
}

/* Resuming a run at or past its (new) end trains nothing: refused, with the
 * way on named, not a success of zero steps. */
static void test_resume_past_the_end_is_refused(void)
{
    Config c;
    tiny_config(&c);
    c.max_steps = 12;
    char dir[512], err[1024];
    path_in(dir, sizeof dir, "past-end");
    TrainResult res;
    CHECKF(run(&c, dpo_path(), dir, false, &res, err, sizeof err) == TRAIN_OK, "%s", err);
    int max[] = {12, 6};
    for (int i = 0; i < 2; i++) {
        c.max_steps = max[i];
        TrainStatus st = run(&c, dpo_path(), dir, true, &res, err, sizeof err);
        CHECKF(st == TRAIN_BAD_INPUT && strstr(err, "nothing left to train") &&
                   strstr(err, "max_steps above 12"),
               "max_steps %d: %d: %s", max[i], st, err);
    }
}

/* ---- optimizer pieces against closed forms -------------------------------- */

/* Two AdamW steps on p = [1, -2] with torch's formulas written out: the
 * first segment decayed, the second not. */
static void test_adamw_matches_torch(void)
{
    OptimSegment seg[2] = {{0, 1, true}, {1, 1, false}};
    AdamWConfig cfg = {0.9, 0.999, 1e-8, 0.1};
    char err[256];
    AdamW *o = adamw_new(2, seg, 2, &cfg, err, sizeof err);
    CHECK(o != NULL);
    if (!o)
        return;
    float p[2] = {1.0f, -2.0f};
    const float g[2][2] = {{0.5f, -1.0f}, {0.25f, 2.0f}};
    double ref[2] = {1.0, -2.0}, m[2] = {0}, v[2] = {0}, lr = 0.01;
    for (int t = 1; t <= 2; t++) {
        adamw_step(o, p, g[t - 1], lr);
        for (int i = 0; i < 2; i++) {
            double gi = g[t - 1][i];
            m[i] = 0.9 * m[i] + 0.1 * gi;
            v[i] = 0.999 * v[i] + 0.001 * gi * gi;
            double mhat = m[i] / (1 - pow(0.9, t)), vhat = v[i] / (1 - pow(0.999, t));
            ref[i] *= i == 0 ? 1 - lr * 0.1 : 1.0;
            ref[i] -= lr * mhat / (sqrt(vhat) + 1e-8);
        }
    }
    CHECK_NEAR(p[0], ref[0], 1e-6);
    CHECK_NEAR(p[1], ref[1], 1e-6);
    CHECK(o->t == 2);
    adamw_free(o);
}

static void test_clip_and_schedules(void)
{
    float g[3] = {3.0f, 0.0f, 4.0f};
    CHECK_NEAR(optim_clip_grad_norm(g, 3, 1.0), 5.0, 1e-9);
    CHECK_NEAR(g[0], 3.0 / (5.0 + 1e-6), 1e-6);
    CHECK_NEAR(optim_grad_norm(g, 3), 1.0, 1e-6);
    float bad[2] = {1.0f, NAN};
    CHECK(isnan(optim_clip_grad_norm(bad, 2, 1.0)) && bad[0] == 1.0f);
    /* HF get_scheduler with 10 warmup steps of 110 */
    LrSchedule s = {LR_LINEAR, 1.0, 10, 110};
    CHECK_NEAR(lr_at(&s, 0), 0.0, 1e-12);
    CHECK_NEAR(lr_at(&s, 5), 0.5, 1e-12);
    CHECK_NEAR(lr_at(&s, 10), 1.0, 1e-12);
    CHECK_NEAR(lr_at(&s, 60), 0.5, 1e-12);
    s.kind = LR_COSINE;
    CHECK_NEAR(lr_at(&s, 60), 0.5, 1e-12); /* 0.5 (1 + cos(pi / 2)) */
    CHECK_NEAR(lr_at(&s, 35), 0.5 * (1 + cos(M_PI * 0.25)), 1e-12);
    s.kind = LR_CONSTANT;
    CHECK_NEAR(lr_at(&s, 100), 1.0, 1e-12);
    LrScheduleKind k;
    CHECK(lr_schedule_parse("cosine", &k) == 0 && k == LR_COSINE);
    CHECK(lr_schedule_parse("Cosine", &k) != 0);
}

int main(int argc, char **argv)
{
    (void)argc;
    /* as the CLI does (main.c): libgomp reads its wait policy once, at
     * load, and its default spinning starves OpenBLAS's threads in the
     * two-thread run; re-executing with a passive policy and a short spin
     * keeps it fast */
    if (!getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "passive", 1) == 0 &&
        (getenv("GOMP_SPINCOUNT") || setenv("GOMP_SPINCOUNT", "10000", 1) == 0))
        execv("/proc/self/exe", argv);
    snprintf(tmp_root, sizeof tmp_root, "/tmp/prefrun-test-train-XXXXXX");
    if (!mkdtemp(tmp_root)) {
        printf("Bail out! mkdtemp failed\n");
        return 1;
    }
    RUN(test_adamw_matches_torch);
    RUN(test_clip_and_schedules);
    RUN(test_dpo_learns_toy_preferences);
    RUN(test_resume_equals_uninterrupted);
    RUN(test_resume_restores_loss_state);
    RUN(test_same_seed_same_numbers);
    RUN(test_nan_stops_with_last_good_checkpoint);
    RUN(test_nan_skip_counts_the_batch);
    RUN(test_nan_gradient_stops);
    RUN(test_script_error_names_step_and_line);
    RUN(test_unknown_loss_param_is_named);
    RUN(test_metrics_full_disk_leaves_whole_lines);
    RUN(test_nan_skip_fails_when_most_steps_skipped);
    RUN(test_nan_skip_fails_when_a_resume_skips_all);
    RUN(test_absurd_loss_weights_are_refused);
    RUN(test_resume_checks_every_state_field);
    RUN(test_resume_past_the_end_is_refused);
    char err[256];
    fsutil_remove_tree(tmp_root, err, sizeof err);
    return tl_done();
}
