/*
 * test_export.c — `prefrun export` (train/export.h): a run's policy as a
 * Hugging Face folder.
 *
 * The runs: a byte-model run on the toy pairs; a run of a tiny random GPT-2
 * folder (hf_gpt2_save, F32) with the real GPT-2 tokenizer files beside it
 * (vocab.json and merges.txt, Hugging Face's names for GPT-2's encoder.json
 * and vocab.bpe) and a generation_config.json, its config.json carrying
 * keys prefrun does not read; and a run of the same model saved in BF16,
 * trained one step at learning rate 0 (AdamW then moves no weight, so the
 * policy is the folder's weights as read).
 *
 * The checks: the exported weights read back (hf_model_load) equal the
 * checkpoint's bit for bit; a BF16 folder comes back as the same bytes; the
 * config.json is the run's own with only torch_dtype changed; the tokenizer
 * files are byte copies; and, read independently by Python (struct + json,
 * no prefrun code), the exported model.safetensors has the source folder's
 * tensor names, dtypes and shapes. The CLI's errors: a missing run, a
 * non-empty --out, a bad --dtype, each with its exit code and the name in
 * the message. The cases that need the tokenizer files skip when they are
 * absent (bash tests/fetch_tokenizers.sh).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/hf_gpt2.h"
#include "model/hf_model.h"
#include "prefrun_config.h"
#include "testfs.h"
#include "testlib.h"
#include "tokenizer/tokenizer.h"
#include "train/config.h"
#include "train/export.h"
#include "train/model_load.h"
#include "train/train.h"

static char err[2048];
static char tmp[] = "/tmp/prefrun_exportXXXXXX";
static bool have_tokenizer;

static const char *tokenizer_file(const char *name)
{
    static char path[512];
    const char *d = getenv("PREFRUN_TOKENIZER_DATA");
    snprintf(path, sizeof path, "%s/gpt2/%s", d ? d : PREFRUN_SOURCE_ROOT "/.deps/tokenizers",
             name);
    return path;
}

static const FsReadCap copy_cap = {(size_t)64 << 20, "a tokenizer file", false};

/* tmp/name, in a buffer of its own for the whole test (tfs_join's
 * rotating buffers are for the files inside these folders) */
static const char *in_tmp(const char *name)
{
    static char path[32][512];
    static int k;
    char *p = path[k++ % 32];
    snprintf(p, 512, "%s/%s", tmp, name);
    return p;
}

/* ---- fixtures ---------------------------------------------------------------- */

/* Keys a real GPT-2 config.json has that prefrun ignores, and a nested one. */
static const char extra_keys[] =
    "{\"bos_token_id\": 50256, \"eos_token_id\": 50256, \"initializer_range\": 0.02, "
    "\"summary_type\": \"cls_index\", \"task_specific_params\": {\"text-generation\": "
    "{\"do_sample\": true, \"max_length\": 50}}, \"transformers_version\": \"4.41.2\"}";

/* config.json with extra_keys merged in, as Python's json.dump would write it */
static int add_keys(const char *dir)
{
    const char *path = tfs_join(dir, "config.json");
    json_t *c = json_load_file(path, 0, NULL), *x = json_loads(extra_keys, 0, NULL);
    int rc = c && x ? json_object_update(c, x) : -1;
    if (rc == 0)
        rc = json_dump_file(c, path, JSON_INDENT(2));
    json_decref(c);
    json_decref(x);
    return rc;
}

/* A tiny random GPT-2 in HF's layout in dtype, with the real tokenizer. */
static int make_folder(const char *dir, StDtype dtype)
{
    GptConfig g = {.vocab = 50257, .context = 64, .width = 16, .layers = 1, .heads = 2};
    Gpt *m = gpt_new(&g, false, err, sizeof err);
    if (!m)
        return -1;
    gpt_init(m, 11);
    int rc = hf_gpt2_save(m, dir, dtype, err, sizeof err);
    gpt_free(m);
    static const char gen[] = "{\"bos_token_id\": 50256, \"eos_token_id\": 50256}\n";
    if (rc == 0)
        rc = add_keys(dir);
    if (rc == 0)
        rc = fsutil_copy_atomic(tokenizer_file("encoder.json"), &copy_cap,
                                tfs_join(dir, "vocab.json"), err, sizeof err);
    if (rc == 0)
        rc = fsutil_copy_atomic(tokenizer_file("vocab.bpe"), &copy_cap, tfs_join(dir, "merges.txt"),
                                err, sizeof err);
    if (rc == 0)
        rc = fsutil_write_atomic(tfs_join(dir, "generation_config.json"), gen, strlen(gen), err,
                                 sizeof err);
    return rc;
}

static const char pairs[] =
    "{\"prompt\": \"The movie was\", \"chosen\": \" great fun.\", \"rejected\": \" dull.\"}\n"
    "{\"prompt\": \"I liked\", \"chosen\": \" every scene.\", \"rejected\": \" nothing.\"}\n"
    "{\"prompt\": \"The plot\", \"chosen\": \" holds up well.\", \"rejected\": \" is a mess.\"}\n"
    "{\"prompt\": \"Music\", \"chosen\": \" soars.\", \"rejected\": \" grates.\"}\n";

/* A few DPO steps: of model (a folder) on the pairs, or of the byte model
 * on the toy pairs (model NULL). */
static int train(const char *model, const char *run, int steps, double lr)
{
    Config c;
    config_defaults(&c);
    char set[600];
    snprintf(set, sizeof set, "model=%s", model ? model : "");
    const char *keys[] = {"per_device_train_batch_size=2",
                          "logging_steps=1",
                          "eval_steps=0",
                          "save_steps=0",
                          "threads=1",
                          "seed=5"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (config_set(&c, keys[i], err, sizeof err) != 0)
            return -1;
    if (model && config_set(&c, set, err, sizeof err) != 0)
        return -1;
    if (!model) {
        c.context = 32, c.width = 16, c.layers = 1, c.heads = 2, c.toy_pairs = 64;
    } else {
        const char *data = in_tmp("pairs.jsonl");
        if (fsutil_write_atomic(data, pairs, strlen(pairs), err, sizeof err) != 0)
            return -1;
        snprintf(c.train_file, sizeof c.train_file, "%s", data);
    }
    snprintf(set, sizeof set, "learning_rate=%.17g", lr); /* given: with a model, else TRL's */
    if (config_set(&c, set, err, sizeof err) != 0)
        return -1;
    c.max_steps = steps;
    if (config_finalize(&c, err, sizeof err) != 0)
        return -1;
    TrainOptions o = {.cfg = c,
                      .n_losses = 1,
                      .loss_paths = {PREFRUN_SOURCE_ROOT "/losses/dpo.lua"},
                      .loss_weights = {1.0},
                      .run_dir = run,
                      .quiet = true};
    TrainResult res;
    return train_run(&o, &res, err, sizeof err) == TRAIN_OK ? 0 : -1;
}

/* ---- checks -------------------------------------------------------------------- */

static bool same_weights(const Gpt *a, const Gpt *b)
{
    return a && b && gpt_config_equal(&a->cfg, &b->cfg) &&
           memcmp(a->all->data, b->all->data, (size_t)a->all->size * sizeof(float)) == 0;
}

/* The export read back as a model equals the run's checkpoint. */
static bool reads_back_as(const char *out, const char *run)
{
    Gpt *a = NULL, *b = NULL;
    int rc = hf_model_load(out, false, &a, NULL, err, sizeof err);
    if (rc == 0)
        rc = run_model_load(run, &b, NULL, 0, err, sizeof err);
    if (rc != 0)
        printf("# %s\n", err);
    bool same = rc == 0 && same_weights(a, b);
    gpt_free(a);
    gpt_free(b);
    return same;
}

/* The folder holds exactly these files (NULL-terminated). */
static bool holds_exactly(const char *dir, const char *const *names)
{
    int n = 0;
    for (; names[n]; n++)
        if (!fsutil_exists(tfs_join(dir, names[n])))
            return false;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A '%s' | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int count = -1;
    if (p && fscanf(p, "%d", &count) != 1)
        count = -1;
    if (p)
        pclose(p);
    return count == n;
}

/* The run's config.json and the export's agree but for torch_dtype, whose
 * value is want. */
static bool config_kept(const char *run_config, const char *out, const char *want)
{
    json_t *a = json_load_file(run_config, 0, NULL);
    json_t *b = json_load_file(tfs_join(out, "config.json"), 0, NULL);
    const char *d = json_string_value(json_object_get(b, "torch_dtype"));
    bool ok = a && b && d && strcmp(d, want) == 0;
    if (ok) {
        json_object_del(a, "torch_dtype");
        json_object_del(b, "torch_dtype");
        ok = json_equal(a, b);
    }
    json_decref(a);
    json_decref(b);
    return ok;
}

/* An independent reader of safetensors files: the 8-byte little-endian
 * header length, the JSON header, the tensors' bytes. Exit 0 when the two
 * files have the same names, dtypes and shapes (and, with "bytes", the same
 * data); else a line saying what differs. */
static const char py_compare[] =
    "import json, struct, sys\n"
    "def read(p):\n"
    "    b = open(p, 'rb').read()\n"
    "    n = struct.unpack('<Q', b[:8])[0]\n"
    "    h = json.loads(b[8:8 + n])\n"
    "    h.pop('__metadata__', None)\n"
    "    data = {k: b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]] for k, v in "
    "h.items()}\n"
    "    return {k: (v['dtype'], v['shape']) for k, v in h.items()}, data\n"
    "a, da = read(sys.argv[1])\n"
    "b, db = read(sys.argv[2])\n"
    "if a != b:\n"
    "    print('# differ:', sorted(set(a.items()) ^ set(b.items()), key=str)[:4]); sys.exit(1)\n"
    "if sys.argv[3] == 'bytes' and da != db:\n"
    "    print('# tensor bytes differ:', [k for k in da if da[k] != db[k]][:4]); sys.exit(1)\n"
    "print('# python: %d tensors agree' % len(a))\n";

/* 1: agree, 0: differ, -1: no python3 */
static int python_agrees(const char *src_dir, const char *out_dir, bool bytes)
{
    if (access("/usr/bin/python3", X_OK) != 0)
        return -1;
    const char *script = in_tmp("st_compare.py");
    if (fsutil_write_atomic(script, py_compare, strlen(py_compare), err, sizeof err) != 0)
        return 0;
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s' '%s/model.safetensors' '%s/model.safetensors' %s", script,
             src_dir, out_dir, bytes ? "bytes" : "shapes");
    fflush(stdout);
    int st = system(cmd);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* ---- cases --------------------------------------------------------------------- */

/* prefrun's byte model: a GPT-2 folder of config.json and model.safetensors
 * only (no tokenizer files), F32 by default, equal to the checkpoint. */
static void byte_model_run_exports_as_gpt2(void)
{
    const char *r = in_tmp("byte-run"), *o = in_tmp("byte-out");
    CHECKF(train(NULL, r, 3, 1e-3) == 0, "%s", err);
    ExportInfo info;
    CHECKF(export_run(r, o, EXPORT_DTYPE_AUTO, &info, err, sizeof err) == 0, "%s", err);
    CHECK(!info.hf && info.dtype == ST_F32 && info.n_tokenizer_files == 0);
    CHECK(strstr(info.model_file, "checkpoint-3") != NULL);
    static const char *const files[] = {"config.json", "model.safetensors", NULL};
    CHECK(holds_exactly(o, files));
    CHECK(reads_back_as(o, r));
    HfConfig c;
    CHECKF(hf_config_load(tfs_join(o, "config.json"), &c, err, sizeof err) == 0, "%s", err);
    CHECK(c.arch == HF_ARCH_GPT2 && c.vocab == 257 && c.hidden == 16 && c.context == 32);
    /* again into the same folder: an earlier export is replaced, not refused */
    CHECKF(export_run(r, o, EXPORT_DTYPE_F16, &info, err, sizeof err) == 0, "%s", err);
    CHECK(info.dtype == ST_F16);
}

/* A run of a Hugging Face folder: its config.json back (torch_dtype aside),
 * its tokenizer files as bytes, its weights bit for bit; the folder loads
 * as a tokenizer too. */
static void model_run_keeps_config_and_tokenizer(void)
{
    const char *s = in_tmp("gpt2-f32"), *r = in_tmp("f32-run"), *o = in_tmp("f32-out");
    CHECKF(make_folder(s, ST_F32) == 0, "%s", err);
    CHECKF(train(s, r, 2, 1e-3) == 0, "%s", err);
    ExportInfo info;
    CHECKF(export_run(r, o, EXPORT_DTYPE_AUTO, &info, err, sizeof err) == 0, "%s", err);
    CHECK(info.hf && info.dtype == ST_F32 && info.n_tokenizer_files == 3);
    static const char *const files[] = {"config.json", "model.safetensors",      "vocab.json",
                                        "merges.txt",  "generation_config.json", NULL};
    CHECK(holds_exactly(o, files));
    CHECK(reads_back_as(o, r));
    CHECK(config_kept(tfs_join(s, "config.json"), o, "float32"));
    CHECK(same_file(tfs_join(s, "vocab.json"), tfs_join(o, "vocab.json")));
    CHECK(same_file(tfs_join(s, "merges.txt"), tfs_join(o, "merges.txt")));
    CHECK(same_file(tfs_join(s, "generation_config.json"), tfs_join(o, "generation_config.json")));
    Tokenizer *tok = tokenizer_load(o, err, sizeof err);
    CHECKF(tok && tokenizer_eos_id(tok) == 50256, "%s", err);
    tokenizer_free(tok);
    int py = python_agrees(s, o, false);
    CHECK(py != 0);
    if (py < 0)
        printf("# no /usr/bin/python3: the independent read is skipped\n");
    /* --dtype bfloat16: the config says so, the tensors are BF16 */
    CHECKF(export_run(r, o, EXPORT_DTYPE_BF16, &info, err, sizeof err) == 0, "%s", err);
    CHECK(info.dtype == ST_BF16 && config_kept(tfs_join(s, "config.json"), o, "bfloat16"));
}

/* A BF16 folder, trained at learning rate 0, exports (dtype auto: the
 * config's bfloat16) as the very bytes it was read from. */
static void bf16_folder_comes_back_as_its_bytes(void)
{
    const char *s = in_tmp("gpt2-bf16"), *r = in_tmp("bf16-run"), *o = in_tmp("bf16-out");
    CHECKF(make_folder(s, ST_BF16) == 0, "%s", err);
    CHECKF(train(s, r, 1, 0.0) == 0, "%s", err);
    ExportInfo info;
    CHECKF(export_run(r, o, EXPORT_DTYPE_AUTO, &info, err, sizeof err) == 0, "%s", err);
    CHECK(info.dtype == ST_BF16);
    CHECK(same_file(tfs_join(s, "model.safetensors"), tfs_join(o, "model.safetensors")));
    CHECK(reads_back_as(o, r)); /* the checkpoint's floats are all BF16 values */
    CHECK(config_kept(tfs_join(s, "config.json"), o, "bfloat16"));
    CHECK(python_agrees(s, o, true) != 0);
}

/* ---- the command line ------------------------------------------------------------ */

static char exe[1024];

/* `prefrun ARGS 2>&1`: the exit status, the output in out */
static int prefrun(const char *args, char *out, size_t cap)
{
    char cmd[3072];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", exe, args);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, cap - 1, p) : 0;
    out[n] = '\0';
    int st = p ? pclose(p) : -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A missing run (3), an --out with another file (3, nothing written), a bad
 * dtype (2): each message names the path, the file or the value. */
static void cli_errors_name_what_is_wrong(void)
{
    char args[2048], out[4096];
    const char *run = in_tmp("byte-run");
    snprintf(args, sizeof args, "export %s/no-such-run --out %s/x", tmp, tmp);
    CHECK(prefrun(args, out, sizeof out) == 3);
    CHECKF(strstr(out, "no-such-run") != NULL, "output: %s", out);
    const char *busy = in_tmp("busy");
    CHECK(fsutil_mkdirs(busy, err, sizeof err) == 0 &&
          fsutil_write_atomic(tfs_join(busy, "notes.txt"), "x", 1, err, sizeof err) == 0);
    snprintf(args, sizeof args, "export %s --out %s", run, busy);
    CHECK(prefrun(args, out, sizeof out) == 3);
    CHECKF(strstr(out, "notes.txt") != NULL, "output: %s", out);
    CHECK(!fsutil_exists(tfs_join(busy, "model.safetensors")) &&
          !fsutil_exists(tfs_join(busy, "config.json")));
    snprintf(args, sizeof args, "export %s --out %s/y --dtype fp8", run, tmp);
    CHECK(prefrun(args, out, sizeof out) == 2);
    CHECKF(strstr(out, "fp8") != NULL && strstr(out, "bfloat16") != NULL, "output: %s", out);
    snprintf(args, sizeof args, "export %s", run);
    CHECK(prefrun(args, out, sizeof out) == 2);
    CHECKF(strstr(out, "--out") != NULL, "output: %s", out);
    snprintf(args, sizeof args, "export %s --out %s/z --dtype float16", run, tmp);
    CHECKF(prefrun(args, out, sizeof out) == 0, "output: %s", out);
    CHECK(reads_back_as(in_tmp("z"), run) == false); /* f16 rounds trained weights */
}

static bool skip(const char *name)
{
    if (have_tokenizer)
        return false;
    tl_cases++;
    printf("ok %d - %s # SKIP no GPT-2 tokenizer files (bash tests/fetch_tokenizers.sh)\n",
           tl_cases, name);
    return true;
}
#define RUN_TOK(fn) (skip(#fn) ? (void)0 : RUN(fn))

int main(int argc, char **argv)
{
    (void)argc;
    const char *e = getenv("PREFRUN_EXE");
    snprintf(exe, sizeof exe, "%s", e ? e : PREFRUN_SOURCE_ROOT "/build/prefrun");
    (void)argv;
    if (!mkdtemp(tmp)) {
        printf("Bail out! mkdtemp\n");
        return 1;
    }
    have_tokenizer =
        fsutil_exists(tokenizer_file("encoder.json")) && fsutil_exists(tokenizer_file("vocab.bpe"));
    RUN(byte_model_run_exports_as_gpt2);
    RUN_TOK(model_run_keeps_config_and_tokenizer);
    RUN_TOK(bf16_folder_comes_back_as_its_bytes);
    RUN(cli_errors_name_what_is_wrong);
    fsutil_remove_tree(tmp, err, sizeof err);
    return tl_done();
}
