/*
 * test_train_hf.c — `prefrun train --model DIR` end to end: a tiny random
 * GPT-2 written as a Hugging Face folder (hf_gpt2_save) with the real GPT-2
 * tokenizer files beside it (vocab.json and merges.txt, the names Hugging
 * Face's gpt2 folder gives encoder.json and vocab.bpe), trained a few steps
 * with losses/dpo.lua on a small TRL JSONL; and the run's copy of the
 * model's files (run_hf.h).
 *
 * The checks: the run keeps hf/ with the config and tokenizer files and no
 * weights; every metric is finite; at step 1 the reference is the policy,
 * so the rewards are 0 and DPO's loss is -log sigmoid(0) = log 2 (closed
 * form); a resumed run writes the same metrics and weights as an
 * uninterrupted one, tokenizing with its own copy after the model folder's
 * tokenizer files are gone; precompute_ref_log_probs frees the reference.
 *
 * The model: vocab 50257 (the tokenizer's ids), 64 positions, width 16, one
 * layer; 0.8 M parameters, a step takes milliseconds. The cases skip when
 * the tokenizer files are absent (bash tests/fetch_tokenizers.sh).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/hf_gpt2.h"
#include "prefrun_config.h"
#include "testfs.h"
#include "testlib.h"
#include "train/config.h"
#include "train/run_hf.h"
#include "train/train.h"
#include "train/train_internal.h" /* the Trainer, to see its reference freed */

static char err[1024];
static char tmp[] = "/tmp/prefrun_train_hfXXXXXX";
static char model[256], data[256];
static bool ready;

static const char *tokenizer_file(const char *name)
{
    static char path[256];
    const char *d = getenv("PREFRUN_TOKENIZER_DATA");
    snprintf(path, sizeof path, "%s/gpt2/%s", d ? d : PREFRUN_SOURCE_ROOT "/.deps/tokenizers",
             name);
    return path;
}

static const FsReadCap copy_cap = {(size_t)64 << 20, "a tokenizer file", false};

/* Ten pairs in the standard format, two with an implicit prompt. */
static const char pairs[] =
    "{\"prompt\": \"The movie was\", \"chosen\": \" great fun.\", \"rejected\": \" dull.\"}\n"
    "{\"prompt\": \"I liked\", \"chosen\": \" every scene.\", \"rejected\": \" nothing.\"}\n"
    "{\"prompt\": \"Hello world,\", \"chosen\": \" this is GPT-2.\", \"rejected\": \" bye.\"}\n"
    "{\"prompt\": \"The plot\", \"chosen\": \" holds up well.\", \"rejected\": \" is a mess.\"}\n"
    "{\"prompt\": \"Acting:\", \"chosen\": \" superb\", \"rejected\": \" wooden\"}\n"
    "{\"prompt\": \"Music\", \"chosen\": \" soars.\", \"rejected\": \" grates.\"}\n"
    "{\"chosen\": \"Overall: yes\", \"rejected\": \"Overall: no\"}\n"
    "{\"chosen\": \"Would watch again\", \"rejected\": \"Would not watch\"}\n"
    "{\"prompt\": \"Ending\", \"chosen\": \" moving.\", \"rejected\": \" rushed.\"}\n"
    "{\"prompt\": \"Score\", \"chosen\": \" 9/10\", \"rejected\": \" 2/10\"}\n";

/* The folder: a random tiny GPT-2 in HF's layout, the real tokenizer. */
static int make_model(void)
{
    snprintf(model, sizeof model, "%s/tiny-gpt2", tmp);
    snprintf(data, sizeof data, "%s/pairs.jsonl", tmp);
    GptConfig g = {.vocab = 50257, .context = 64, .width = 16, .layers = 1, .heads = 2};
    Gpt *m = gpt_new(&g, false, err, sizeof err);
    if (!m)
        return -1;
    gpt_init(m, 11);
    int rc = hf_gpt2_save(m, model, ST_F32, err, sizeof err);
    gpt_free(m);
    if (rc == 0)
        rc = fsutil_copy_atomic(tokenizer_file("encoder.json"), &copy_cap,
                                tfs_join(model, "vocab.json"), err, sizeof err);
    if (rc == 0)
        rc = fsutil_copy_atomic(tokenizer_file("vocab.bpe"), &copy_cap,
                                tfs_join(model, "merges.txt"), err, sizeof err);
    if (rc == 0)
        rc = fsutil_write_atomic(data, pairs, strlen(pairs), err, sizeof err);
    return rc;
}

static bool have(const char *name)
{
    if (ready)
        return true;
    tl_cases++;
    printf("ok %d - %s # SKIP no GPT-2 tokenizer files (bash tests/fetch_tokenizers.sh)\n",
           tl_cases, name);
    return false;
}
#define RUN_HF(fn) (have(#fn) ? RUN(fn) : (void)0)

/* The settings of every run here, through the keys a user would set. */
static int hf_config(Config *c, int steps)
{
    char set[400];
    config_defaults(c);
    snprintf(set, sizeof set, "model=%s", model);
    const char *keys[] = {set,
                          "per_device_train_batch_size=2",
                          "per_device_eval_batch_size=4",
                          "logging_steps=1",
                          "eval_steps=0",
                          "save_steps=0",
                          "learning_rate=1e-3",
                          "threads=1",
                          "seed=5"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (config_set(c, keys[i], err, sizeof err) != 0)
            return -1;
    c->max_steps = steps;
    snprintf(c->train_file, sizeof c->train_file, "%s", data);
    return config_finalize(c, err, sizeof err);
}

static TrainStatus train(const Config *c, const char *dir, bool resume, TrainResult *res)
{
    TrainOptions o = {.cfg = *c,
                      .n_losses = 1,
                      .loss_paths = {PREFRUN_SOURCE_ROOT "/losses/dpo.lua"},
                      .loss_weights = {1.0},
                      .run_dir = dir,
                      .resume = resume,
                      .quiet = true};
    return train_run(&o, res, err, sizeof err);
}


/* Each line's JSON object, in order; the count returned. */
static int metric_lines(const char *dir, json_t **out, int cap)
{
    char *text = tfs_metrics_text(dir);
    int n = 0;
    for (char *line = text; line && *line && n < cap;) {
        char *nl = strchr(line, '\n');
        out[n] = json_loadb(line, nl ? (size_t)(nl - line) : strlen(line), 0, NULL);
        n += out[n] != NULL;
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return n;
}

static bool all_finite(const json_t *o)
{
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)o, k,
                        v) if (json_is_number(v) && !isfinite(json_number_value(v))) return false;
    return true;
}

static double num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return v ? json_number_value(v) : NAN;
}

/* Three steps: hf/ holds the config and tokenizer (no weights), config.yaml
 * names the model, metrics are finite, step 1 has rewards 0 and loss log 2. */
static void trains_a_model_folder(void)
{
    Config c;
    CHECKF(hf_config(&c, 3) == 0, "%s", err);
    CHECK(c.vocab == 50257 && c.width == 16 && c.layers == 1 && c.context == 64);
    const char *dir = tfs_join(tmp, "run");
    char run[256];
    snprintf(run, sizeof run, "%s", dir);
    TrainResult res;
    CHECKF(train(&c, run, false, &res) == TRAIN_OK, "%s", err);
    CHECK(res.steps == 3);
    char hf[300];
    snprintf(hf, sizeof hf, "%s/hf", run);
    CHECK(fsutil_exists(tfs_join(hf, "config.json")) && fsutil_exists(tfs_join(hf, "vocab.json")) &&
          fsutil_exists(tfs_join(hf, "merges.txt")));
    CHECK(same_file(tfs_join(hf, "vocab.json"), tfs_join(model, "vocab.json")));
    CHECK(!fsutil_exists(tfs_join(hf, "model.safetensors")));
    Config saved;
    config_defaults(&saved);
    CHECKF(config_load_yaml(&saved, tfs_join(run, "config.yaml"), err, sizeof err) == 0, "%s", err);
    CHECK(strcmp(saved.model, model) == 0 && saved.vocab == 50257);
    json_t *m[8] = {NULL};
    int n = metric_lines(run, m, 8);
    CHECKF(n == 4, "%d metrics lines", n); /* steps 1, 2, 3 and the final evaluation */
    for (int i = 0; i < n; i++)
        CHECKF(all_finite(m[i]), "line %d has a value that is not finite", i + 1);
    if (n >= 1) {
        /* the policy is the reference at step 1: bit for bit the same forward */
        CHECKF(num(m[0], "rewards/chosen") == 0 && num(m[0], "rewards/rejected") == 0 &&
                   num(m[0], "rewards/margins") == 0,
               "step 1 rewards %g %g", num(m[0], "rewards/chosen"), num(m[0], "rewards/rejected"));
        CHECK_NEAR(num(m[0], "loss"), log(2.0), 1e-6); /* -log sigmoid(0), float sums */
        CHECK(num(m[0], "logps/chosen") < 0);
    }
    if (n >= 3) /* the policy moved: the reference did not */
        CHECK(num(m[2], "rewards/margins") != 0);
    for (int i = 0; i < n; i++)
        json_decref(m[i]);
    /* a checkpoint's tokenizer is the run's copy */
    Tokenizer *tok = NULL;
    CHECKF(run_hf_tokenizer(tfs_join(run, "checkpoint-3/model.safetensors"), &tok, err,
                            sizeof err) == 0 &&
               tok && tokenizer_vocab_size(tok) == 50257,
           "%s", err);
    tokenizer_free(tok);
}

/* 4 steps at once, and 2 + resume 2 with the model folder's tokenizer
 * files removed in between: the same metrics and weights, byte for byte. */
static void resume_equals_uninterrupted(void)
{
    Config c;
    CHECKF(hf_config(&c, 4) == 0, "%s", err);
    c.save_steps = 2;
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/whole", tmp);
    snprintf(b, sizeof b, "%s/resumed", tmp);
    TrainResult res;
    CHECKF(train(&c, a, false, &res) == TRAIN_OK, "%s", err);
    CHECKF(train(&c, b, false, &res) == TRAIN_OK, "%s", err);
    CHECK(fsutil_remove_tree(tfs_join(b, "checkpoint-4"), err, sizeof err) == 0);
    CHECK(rename(tfs_join(model, "vocab.json"), tfs_join(tmp, "vocab.json")) == 0 &&
          rename(tfs_join(model, "merges.txt"), tfs_join(tmp, "merges.txt")) == 0);
    CHECKF(train(&c, b, true, &res) == TRAIN_OK, "%s", err);
    CHECK(res.steps == 4 && res.first_step == 2);
    CHECK(rename(tfs_join(tmp, "vocab.json"), tfs_join(model, "vocab.json")) == 0 &&
          rename(tfs_join(tmp, "merges.txt"), tfs_join(model, "merges.txt")) == 0);
    char *ma = tfs_metrics_text(a), *mb = tfs_metrics_text(b);
    CHECKF(ma && mb && strcmp(ma, mb) == 0, "metrics differ:\n%s\nvs\n%s", ma ? ma : "",
           mb ? mb : "");
    free(ma);
    free(mb);
    char pa[400], pb[400];
    snprintf(pa, sizeof pa, "%s/checkpoint-4/model.safetensors", a);
    snprintf(pb, sizeof pb, "%s/checkpoint-4/model.safetensors", b);
    CHECK(same_file(pa, pb));
}

/* With precompute_ref_log_probs the reference is gone once its log-probs
 * are cached (train and held-out sets), and a run so set trains as usual. */
static void precompute_frees_the_reference(void)
{
    Config c;
    CHECKF(hf_config(&c, 2) == 0, "%s", err);
    c.precompute_ref_log_probs = true;
    char dir[256];
    snprintf(dir, sizeof dir, "%s/precompute", tmp);
    TrainOptions o = {.cfg = c,
                      .n_losses = 1,
                      .loss_paths = {PREFRUN_SOURCE_ROOT "/losses/dpo.lua"},
                      .loss_weights = {1.0},
                      .run_dir = dir,
                      .quiet = true};
    Trainer tr = {.opt = &o, .cfg = o.cfg, .metrics_fd = -1};
    CHECKF(trainer_setup(&tr, err, sizeof err) == TRAIN_OK, "%s", err);
    CHECK(tr.ref == NULL && tr.policy != NULL && tr.tok != NULL);
    CHECK(tr.train_ref.ready && tr.eval && tr.eval_ref.ready);
    trainer_free(&tr);
    TrainResult res;
    snprintf(dir, sizeof dir, "%s/precompute-run", tmp);
    CHECKF(train(&c, dir, false, &res) == TRAIN_OK && res.steps == 2, "%s", err);
    json_t *m[4] = {NULL};
    int n = metric_lines(dir, m, 4);
    CHECK(n == 3);
    if (n >= 1)
        CHECK(num(m[0], "rewards/margins") == 0 && fabs(num(m[0], "loss") - log(2.0)) < 1e-6);
    for (int i = 0; i < n; i++)
        json_decref(m[i]);
}

/* run_hf.h alone: a copy replaces the earlier one (a file the folder no
 * longer has goes), paths lead to the run's hf/, a run without one gives
 * NULL, an hf/ without config.json is an error. */
static void run_hf_files(void)
{
    char run[256], hf[300], got[300];
    snprintf(run, sizeof run, "%s/hf-run", tmp);
    snprintf(hf, sizeof hf, "%s/hf", run);
    const char *stale = tfs_join(model, "tokenizer_config.json");
    CHECK(fsutil_write_atomic(stale, "{}", 2, err, sizeof err) == 0);
    CHECKF(run_hf_save(run, model, err, sizeof err) == 0, "%s", err);
    CHECK(fsutil_exists(tfs_join(hf, "tokenizer_config.json")));
    CHECK(remove(stale) == 0);
    CHECKF(run_hf_save(run, model, err, sizeof err) == 0, "%s", err);
    CHECK(!fsutil_exists(tfs_join(hf, "tokenizer_config.json")) &&
          fsutil_exists(tfs_join(hf, "merges.txt")));
    CHECK(run_hf_dir(run, got, sizeof got, err, sizeof err) == 1 && strcmp(got, hf) == 0);
    /* a checkpoint directory, and a file in it (trainer_state.json marks one) */
    char ck[400];
    snprintf(ck, sizeof ck, "%s/checkpoint-7", run);
    CHECK(fsutil_mkdirs(ck, err, sizeof err) == 0 &&
          fsutil_write_atomic(tfs_join(ck, "trainer_state.json"), "{}", 2, err, sizeof err) == 0);
    CHECK(run_hf_dir(ck, got, sizeof got, err, sizeof err) == 1 && strcmp(got, hf) == 0);
    CHECK(run_hf_dir(tfs_join(ck, "trainer_state.json"), got, sizeof got, err, sizeof err) == 1 &&
          strcmp(got, hf) == 0);
    /* prefrun's own model: no hf/, no tokenizer */
    Tokenizer *tok = (Tokenizer *)1;
    CHECK(run_hf_tokenizer(tmp, &tok, err, sizeof err) == 0 && tok == NULL);
    CHECK(run_hf_dir(tfs_join(tmp, "nothing"), got, sizeof got, err, sizeof err) == -1 &&
          strstr(err, "nothing"));
    CHECK(remove(tfs_join(hf, "config.json")) == 0);
    CHECK(run_hf_dir(ck, got, sizeof got, err, sizeof err) == -1 && strstr(err, "config.json"));
    CHECK(run_hf_save(run, tmp, err, sizeof err) == -1 && strstr(err, "no config.json"));
}

int main(void)
{
    if (!mkdtemp(tmp)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    ready = fsutil_exists(tokenizer_file("encoder.json")) && make_model() == 0;
    if (!ready && fsutil_exists(tokenizer_file("encoder.json")))
        printf("# model folder: %s\n", err);
    RUN_HF(trains_a_model_folder);
    RUN_HF(resume_equals_uninterrupted);
    RUN_HF(precompute_frees_the_reference);
    RUN_HF(run_hf_files);
    fsutil_remove_tree(tmp, err, sizeof err);
    return tl_done();
}
