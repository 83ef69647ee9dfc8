/*
 * test_train_hf_llama.c — a Llama-family Hugging Face folder through the
 * command line, as a user runs it: `prefrun train --model DIR`, then
 * `eval`, `sample --prompt` and `export --out` on the run.
 *
 * The folder: a tiny random Qwen2ForCausalLM written by hf_llama_save
 * (grouped-query attention, 4 query heads over 2 key/value heads; q, k, v
 * biases; the head tied to the embedding; vocab 151936, Qwen2.5's padded
 * size) with Qwen3's real tokenizer.json and its tokenizer_config.json,
 * whose chat_template is replaced by plain ChatML (SmolLM's), so the one
 * conversational row of the data is rendered by the chatml family.
 *
 * The checks: every metric finite; at step 1 the reference is the policy,
 * so the rewards are 0 and DPO's loss is -log sigmoid(0) = log 2 (closed
 * form); a run resumed from its step-2 checkpoint writes the same metrics
 * and weights as an uninterrupted one; the folder evaluated against itself
 * gives KL exactly 0 and win rate 1/2, the run a finite KL on all the
 * pairs; a sample is the same text for the same seed, and the exported
 * folder (the same weights) samples that text too; the export reloads to
 * the checkpoint's tensors bit for bit and, read by Python's struct + json
 * alone, has the source folder's tensor names, dtypes and shapes.
 *
 * The CLI is $PREFRUN_EXE (set by meson). The cases skip when Qwen3's
 * tokenizer files are absent (bash tests/fetch_tokenizers.sh).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/hf_model.h"
#include "prefrun_config.h"
#include "testfs.h"
#include "testlib.h"
#include "train/model_load.h"
#include "util/errmsg.h"

static char err[2048];
static char tmp[] = "/tmp/prefrun_train_hf_llamaXXXXXX";
static char exe[1024];
static bool ready, fixture_ok;

/* tmp/name, in a buffer of its own for the whole test */
static const char *in_tmp(const char *name)
{
    static char path[32][512];
    static int k;
    char *p = path[k++ % 32];
    snprintf(p, 512, "%s/%s", tmp, name);
    return p;
}

static const char *tokenizer_file(const char *name)
{
    static char path[512];
    const char *d = getenv("PREFRUN_TOKENIZER_DATA");
    snprintf(path, sizeof path, "%s/qwen3/%s", d ? d : PREFRUN_SOURCE_ROOT "/.deps/tokenizers",
             name);
    return path;
}

/* ---- fixtures ---------------------------------------------------------------- */

/* Qwen2's shape, tiny: GQA 4 over 2 heads of 8 (head_dim 8 > C / NH = 4,
 * so config.json carries it), q, k, v biases, tied, theta 1e6. */
static const GptConfig qwen2 = {.vocab = 151936,
                                .context = 64,
                                .width = 16,
                                .layers = 2,
                                .heads = 4,
                                .arch = GPT_ARCH_LLAMA,
                                .inner = 32,
                                .norm_eps = 1e-6f,
                                .kv_heads = 2,
                                .head_dim = 8,
                                .qkv_bias = true,
                                .rope = {.theta = 1e6}};

/* SmolLM-Instruct's template: plain ChatML, no default system turn. */
static const char chatml[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* Qwen3's tokenizer_config.json with chat_template set to chatml. */
static int write_tokenizer_config(const char *dir)
{
    json_error_t je;
    json_t *c = json_load_file(tokenizer_file("tokenizer_config.json"), 0, &je);
    if (!c)
        return err_fail(err, sizeof err, "tokenizer_config.json: %s", je.text);
    int rc = json_object_set_new(c, "chat_template", json_string(chatml));
    if (rc == 0)
        rc = json_dump_file(c, tfs_join(dir, "tokenizer_config.json"), JSON_INDENT(2));
    json_decref(c);
    return rc == 0 ? 0 : err_fail(err, sizeof err, "cannot write tokenizer_config.json");
}

/* Eight pairs: standard, implicit prompt, and one conversational row. */
static const char pairs[] =
    "{\"prompt\": \"The movie was\", \"chosen\": \" great fun.\", \"rejected\": \" dull.\"}\n"
    "{\"prompt\": \"I liked\", \"chosen\": \" every scene.\", \"rejected\": \" nothing.\"}\n"
    "{\"prompt\": [{\"role\": \"user\", \"content\": \"Was it good?\"}], "
    "\"chosen\": [{\"role\": \"assistant\", \"content\": \"Yes, très bien.\"}], "
    "\"rejected\": [{\"role\": \"assistant\", \"content\": \"No.\"}]}\n"
    "{\"prompt\": \"The plot\", \"chosen\": \" holds up well.\", \"rejected\": \" is a mess.\"}\n"
    "{\"chosen\": \"Overall: yes\", \"rejected\": \"Overall: no\"}\n"
    "{\"prompt\": \"Music\", \"chosen\": \" soars.\", \"rejected\": \" grates.\"}\n"
    "{\"prompt\": \"Ending\", \"chosen\": \" moving.\", \"rejected\": \" rushed.\"}\n"
    "{\"prompt\": \"Score\", \"chosen\": \" 9/10\", \"rejected\": \" 2/10\"}\n";

static const FsReadCap copy_cap = {(size_t)64 << 20, "a tokenizer file", false};

/* The folder and the data. */
static int make_fixture(void)
{
    const char *dir = in_tmp("tiny-qwen2");
    Gpt *m = gpt_new(&qwen2, false, err, sizeof err);
    if (!m)
        return -1;
    gpt_init(m, 23);
    for (int i = 0; i < m->n_tensors; i++) /* no zero biases: they must reach the file */
        for (int64_t k = 0; k < m->tensors[i]->size; k++)
            m->tensors[i]->data[k] += 0.01f * (float)((k * 7 + i) % 5);
    int rc = hf_llama_save(m, dir, ST_F32, err, sizeof err);
    gpt_free(m);
    if (rc == 0)
        rc = fsutil_copy_atomic(tokenizer_file("tokenizer.json"), &copy_cap,
                                tfs_join(dir, "tokenizer.json"), err, sizeof err);
    if (rc == 0)
        rc = write_tokenizer_config(dir);
    if (rc == 0)
        rc = fsutil_write_atomic(in_tmp("pairs.jsonl"), pairs, strlen(pairs), err, sizeof err);
    return rc;
}

/* ---- the command line ------------------------------------------------------------ */

/* `prefrun ARGS`: the exit status; stdout (stderr too unless split) in out */
static int prefrun_io(const char *args, bool split, char *out, size_t cap)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s %s", exe, args, split ? "2>/dev/null" : "2>&1");
    fflush(stdout);
    FILE *p = popen(cmd, "r");
    size_t n = 0, r;
    while (p && n + 1 < cap && (r = fread(out + n, 1, cap - 1 - n, p)) > 0)
        n += r;
    out[n] = '\0';
    int st = p ? pclose(p) : -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int prefrun(const char *args, char *out, size_t cap)
{
    return prefrun_io(args, false, out, cap);
}

/* `prefrun train` of the folder on the pairs into run, `steps` steps */
static int train(const char *run, int steps, int save_steps, double lr)
{
    char args[2048], out[8192];
    snprintf(args, sizeof args,
             "train '%s/losses/dpo.lua' --model '%s' --data '%s' --out '%s' --threads 1 --quiet "
             "--set max_steps=%d --set save_steps=%d --set learning_rate=%.17g "
             "--set per_device_train_batch_size=2 --set per_device_eval_batch_size=4 "
             "--set logging_steps=1 --set eval_steps=0 --set seed=5",
             PREFRUN_SOURCE_ROOT, in_tmp("tiny-qwen2"), in_tmp("pairs.jsonl"), run, steps,
             save_steps, lr);
    int rc = prefrun(args, out, sizeof out);
    if (rc != 0)
        printf("# prefrun train exited %d:\n# %s\n", rc, out);
    return rc;
}


/* each line's JSON object, in order; the count returned */
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
    json_object_foreach((json_t *)o, k, v)
    {
        if (json_is_number(v) && !isfinite(json_number_value(v)))
            return false;
    }
    return true;
}

static double num(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return v ? json_number_value(v) : NAN;
}

/* ---- cases --------------------------------------------------------------------- */

/* Three steps: finite metrics, and at step 1 rewards 0 and loss log 2. */
static void trains_a_qwen2_folder(void)
{
    const char *run = in_tmp("run");
    CHECK(train(run, 3, 0, 1e-2) == 0);
    CHECK(fsutil_exists(tfs_join(run, "hf/tokenizer.json")) &&
          fsutil_exists(tfs_join(run, "hf/tokenizer_config.json")) &&
          !fsutil_exists(tfs_join(run, "hf/model.safetensors")));
    json_t *m[8] = {NULL};
    int n = metric_lines(run, m, 8);
    CHECKF(n == 4, "%d metrics lines", n); /* steps 1, 2, 3 and the final evaluation */
    for (int i = 0; i < n; i++)
        CHECKF(all_finite(m[i]), "line %d has a value that is not finite", i + 1);
    if (n >= 1) {
        CHECKF(num(m[0], "rewards/chosen") == 0 && num(m[0], "rewards/rejected") == 0 &&
                   num(m[0], "rewards/margins") == 0,
               "step 1 rewards %g %g", num(m[0], "rewards/chosen"), num(m[0], "rewards/rejected"));
        CHECK_NEAR(num(m[0], "loss"), log(2.0), 1e-6); /* -log sigmoid(0), float sums */
        CHECK(num(m[0], "logps/chosen") < 0 && num(m[0], "logps/rejected") < 0);
    }
    if (n >= 3) /* the policy moved, the reference did not */
        CHECK(num(m[2], "rewards/margins") != 0);
    for (int i = 0; i < n; i++)
        json_decref(m[i]);
}

/* 4 steps at once, and 2 + `train --resume` to 4 (checkpoint-4 removed):
 * the same metrics and the same weights, byte for byte. */
static void resume_equals_uninterrupted(void)
{
    const char *a = in_tmp("whole"), *b = in_tmp("resumed");
    CHECK(train(a, 4, 2, 1e-2) == 0);
    CHECK(train(b, 4, 2, 1e-2) == 0);
    CHECK(fsutil_remove_tree(tfs_join(b, "checkpoint-4"), err, sizeof err) == 0);
    char args[1024], out[8192];
    snprintf(args, sizeof args, "train --resume '%s' --threads 1 --quiet", b);
    int rc = prefrun(args, out, sizeof out);
    CHECKF(rc == 0, "resume exited %d: %s", rc, out);
    char *ma = tfs_metrics_text(a), *mb = tfs_metrics_text(b);
    CHECKF(ma && mb && strcmp(ma, mb) == 0, "metrics differ:\n%s\nvs\n%s", ma ? ma : "",
           mb ? mb : "");
    free(ma);
    free(mb);
    CHECK(same_file(tfs_join(a, "checkpoint-4/model.safetensors"),
                    tfs_join(b, "checkpoint-4/model.safetensors")));
}

static json_t *eval_json(const char *args)
{
    char out[16384];
    int rc = prefrun_io(args, true, out, sizeof out);
    json_t *j = rc == 0 ? json_loads(out, 0, NULL) : NULL;
    if (!j)
        printf("# prefrun %s exited %d: %s\n", args, rc, out);
    return j;
}

/* The folder against itself: KL exactly 0, win rate 1/2, every pair a tie.
 * The run: finite figures on all eight pairs. */
static void evaluates_folder_and_run(void)
{
    char args[1024];
    snprintf(args, sizeof args,
             "eval --model '%s' --json --samples 2 --prompts 2 --pairs '%s' --threads 1",
             in_tmp("tiny-qwen2"), in_tmp("pairs.jsonl"));
    json_t *j = eval_json(args);
    CHECK(j != NULL);
    if (j) {
        CHECKF(num(j, "kl") == 0 && num(j, "win_rate") == 0.5, "kl %g win %g", num(j, "kl"),
               num(j, "win_rate"));
        CHECK(num(j, "pairs") == 8 && num(j, "accuracy") == 0 && num(j, "samples") == 4);
    }
    json_decref(j);
    snprintf(args, sizeof args, "eval '%s' --json --samples 2 --prompts 2 --pairs '%s' --threads 1",
             in_tmp("run"), in_tmp("pairs.jsonl"));
    j = eval_json(args);
    CHECK(j != NULL);
    if (j) {
        const char *ref = json_string_value(json_object_get(j, "reference"));
        CHECK(ref && strcmp(ref, in_tmp("tiny-qwen2")) == 0);
        CHECK(num(j, "pairs") == 8 && num(j, "samples") == 4);
        CHECKF(isfinite(num(j, "kl")) && isfinite(num(j, "reward")) && num(j, "accuracy") >= 0 &&
                   num(j, "accuracy") <= 1,
               "kl %g reward %g accuracy %g", num(j, "kl"), num(j, "reward"), num(j, "accuracy"));
    }
    json_decref(j);
}

/* `sample WHAT --prompt` with seed: its output (stdout only) in out */
static int sample(const char *what, int seed, char *out, size_t cap)
{
    char args[1024];
    snprintf(args, sizeof args,
             "sample %s --prompt 'The movie was' -n 2 --seed %d --max-new-tokens 12", what, seed);
    return prefrun_io(args, true, out, cap);
}

/* The same seed, the same text; another seed, another draw (over 12 tokens
 * of a 151936-token near-uniform model, equal draws are beyond chance). */
static void samples_are_deterministic(void)
{
    char what[600], a[8192], b[8192], c[8192];
    snprintf(what, sizeof what, "'%s'", in_tmp("run"));
    CHECK(sample(what, 3, a, sizeof a) == 0 && sample(what, 3, b, sizeof b) == 0);
    CHECKF(strcmp(a, b) == 0, "seed 3 twice:\n%s\nvs\n%s", a, b);
    CHECKF(strstr(a, "The movie was") != NULL, "%s", a);
    CHECK(sample(what, 4, c, sizeof c) == 0 && strcmp(a, c) != 0);
}

/* An independent reader of safetensors: names, dtypes and shapes of two
 * files agree (exit 0), else a line saying what differs. */
static const char py_compare[] =
    "import json, struct, sys\n"
    "def read(p):\n"
    "    b = open(p, 'rb').read()\n"
    "    n = struct.unpack('<Q', b[:8])[0]\n"
    "    h = json.loads(b[8:8 + n])\n"
    "    h.pop('__metadata__', None)\n"
    "    return {k: (v['dtype'], tuple(v['shape'])) for k, v in h.items()}\n"
    "a, b = read(sys.argv[1]), read(sys.argv[2])\n"
    "if a != b or 'lm_head.weight' in a or 'model.layers.1.self_attn.k_proj.bias' not in a:\n"
    "    print('# differ:', sorted(set(a.items()) ^ set(b.items()))[:4]); sys.exit(1)\n"
    "print('# python: %d tensors agree' % len(a))\n";

static int python_agrees(const char *src, const char *out)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        return -1;
    const char *script = in_tmp("st_compare.py");
    if (fsutil_write_atomic(script, py_compare, strlen(py_compare), err, sizeof err) != 0)
        return 0;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' '%s/model.safetensors' '%s/model.safetensors'",
             script, src, out);
    fflush(stdout);
    int st = system(cmd);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* `export RUN --out DIR`: DIR reloads as the checkpoint's tensors, bit for
 * bit, as a Qwen2ForCausalLM with the tokenizer files; Python sees the
 * source's tensor layout; and DIR samples what the run samples. */
static void export_reloads_and_samples_alike(void)
{
    const char *run = in_tmp("run"), *o = in_tmp("run-hf");
    char args[1024], out[8192];
    snprintf(args, sizeof args, "export '%s' --out '%s'", run, o);
    int rc = prefrun(args, out, sizeof out);
    CHECKF(rc == 0, "export exited %d: %s", rc, out);
    Gpt *a = NULL, *b = NULL;
    HfConfig hc;
    CHECKF(hf_model_load(o, false, &a, &hc, err, sizeof err) == 0, "%s", err);
    CHECKF(run_model_load(run, &b, NULL, 0, err, sizeof err) == 0, "%s", err);
    CHECK(a && b && gpt_config_equal(&a->cfg, &b->cfg) && a->all->size == b->all->size &&
          memcmp(a->all->data, b->all->data, (size_t)a->all->size * sizeof(float)) == 0);
    CHECK(hc.arch == HF_ARCH_QWEN2 && hc.kv_heads == 2 && hc.head_dim == 8);
    gpt_free(a);
    gpt_free(b);
    const char *src = in_tmp("tiny-qwen2");
    CHECK(same_file(tfs_join(src, "tokenizer.json"), tfs_join(o, "tokenizer.json")) &&
          same_file(tfs_join(src, "tokenizer_config.json"), tfs_join(o, "tokenizer_config.json")));
    int py = python_agrees(src, o);
    CHECK(py != 0);
    if (py < 0)
        printf("# no /usr/bin/python3: the independent read is skipped\n");
    char what[600], x[8192], y[8192];
    snprintf(what, sizeof what, "'%s'", run);
    CHECK(sample(what, 3, x, sizeof x) == 0);
    snprintf(what, sizeof what, "--model '%s'", o);
    CHECK(sample(what, 3, y, sizeof y) == 0);
    CHECKF(strcmp(x, y) == 0, "the run and its export sample differently:\n%s\nvs\n%s", x, y);
}

/* the folder and data, as a case: failing to write them fails, not skips */
static void writes_the_fixture(void)
{
    fixture_ok = make_fixture() == 0;
    CHECKF(fixture_ok, "%s", err);
}

static bool have(const char *name)
{
    if (ready && !fixture_ok) {
        tl_cases++, tl_failed_cases++;
        printf("not ok %d - %s # no fixture\n", tl_cases, name);
        return false;
    }
    if (ready)
        return true;
    tl_cases++;
    printf("ok %d - %s # SKIP no Qwen3 tokenizer files (bash tests/fetch_tokenizers.sh)\n",
           tl_cases, name);
    return false;
}
#define RUN_TOK(fn) (have(#fn) ? RUN(fn) : (void)0)

int main(void)
{
    const char *e = getenv("PREFRUN_EXE");
    snprintf(exe, sizeof exe, "%s", e ? e : PREFRUN_SOURCE_ROOT "/build/prefrun");
    if (!mkdtemp(tmp)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    ready = fsutil_exists(tokenizer_file("tokenizer.json")) &&
            fsutil_exists(tokenizer_file("tokenizer_config.json"));
    if (ready)
        RUN(writes_the_fixture);
    RUN_TOK(trains_a_qwen2_folder);
    RUN_TOK(resume_equals_uninterrupted);
    RUN_TOK(evaluates_folder_and_run);
    RUN_TOK(samples_are_deterministic);
    RUN_TOK(export_reloads_and_samples_alike);
    fsutil_remove_tree(tmp, err, sizeof err);
    return tl_done();
}
