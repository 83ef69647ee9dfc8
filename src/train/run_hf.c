/*
 * train/run_hf.c — a run's own copy of its Hugging Face files (run_hf.h):
 * which files, under which read caps, and how a run directory, checkpoint
 * directory or file inside one leads back to RUN/hf/.
 *
 * The caps are the tokenizer's own (src/tokenizer's read caps per kind of
 * file) and model/hf_config.h's for config.json, so a folder the model and
 * tokenizer loaders accept is never refused here.
 */
#include "train/run_hf.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "util/errmsg.h"
#include "util/fsutil.h"

#define MIB ((size_t)1 << 20)

static const FsReadCap cap_config = {HF_CONFIG_MAX_BYTES, "a config.json", false};
static const FsReadCap cap_tokenizer = {64 * MIB, "a tokenizer.json", false};
static const FsReadCap cap_small_json = {4 * MIB, "a tokenizer settings file", false};
static const FsReadCap cap_vocab = {32 * MIB, "a vocabulary file", false};
static const FsReadCap cap_merges = {32 * MIB, "a merges file", false};
static const FsReadCap cap_template = {MIB, "a chat template", false};

static const struct {
    const char *name;
    const FsReadCap *cap;
} hf_files[] = {
    {HF_CONFIG_FILE, &cap_config}, /* first: run_hf_dir takes its presence for a whole copy */
    {"tokenizer.json", &cap_tokenizer},
    {"tokenizer_config.json", &cap_small_json},
    {"special_tokens_map.json", &cap_small_json},
    {"generation_config.json", &cap_small_json},
    {"vocab.json", &cap_vocab},
    {"merges.txt", &cap_merges},
    {"encoder.json", &cap_vocab}, /* GPT-2's original names, which tokenizer_load reads too */
    {"vocab.bpe", &cap_merges},
    {"chat_template.jinja", &cap_template},
};
#define N_HF_FILES (int)(sizeof hf_files / sizeof hf_files[0])

static int join(char *out, size_t len, const char *dir, const char *name, char *err, size_t errlen)
{
    if (snprintf(out, len, "%s/%s", dir, name) >= (int)len)
        return err_fail(err, errlen, "%s/%s: path too long", dir, name);
    return 0;
}

/* One file of the list: copied when model_dir has it, else any earlier
 * copy removed (a stale tokenizer.json would shadow a new vocab.json). */
static int copy_one(const char *model_dir, const char *hf, int i, char *err, size_t errlen)
{
    char src[PATH_MAX], dst[PATH_MAX];
    if (join(src, sizeof src, model_dir, hf_files[i].name, err, errlen) != 0 ||
        join(dst, sizeof dst, hf, hf_files[i].name, err, errlen) != 0)
        return -1;
    if (fsutil_exists(src))
        return fsutil_copy_atomic(src, hf_files[i].cap, dst, err, errlen);
    return fsutil_remove_tree(dst, err, errlen);
}

int run_hf_save(const char *run_dir, const char *model_dir, char *err, size_t errlen)
{
    char hf[PATH_MAX], config[PATH_MAX];
    if (join(hf, sizeof hf, run_dir, RUN_HF_DIR, err, errlen) != 0 ||
        join(config, sizeof config, model_dir, HF_CONFIG_FILE, err, errlen) != 0)
        return -1;
    if (!fsutil_exists(config))
        return err_fail(err, errlen, "%s: no %s, expected a Hugging Face model folder", model_dir,
                        HF_CONFIG_FILE);
    char old[PATH_MAX];
    if (fsutil_mkdirs(hf, err, errlen) != 0 ||
        join(old, sizeof old, hf, HF_CONFIG_FILE, err, errlen) != 0 ||
        fsutil_remove_tree(old, err, errlen) != 0)
        return -1;
    /* config.json last: until it is there again, the copy is not taken for one */
    for (int i = N_HF_FILES - 1; i >= 0; i--)
        if (copy_one(model_dir, hf, i, err, errlen) != 0)
            return -1;
    return 0;
}

/* dir's parent ("." for a bare name), trailing slashes ignored. */
static void parent_of(const char *dir, char *out, size_t len)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    while (n > 0 && dir[n - 1] != '/')
        n--;
    while (n > 1 && dir[n - 1] == '/')
        n--;
    if (n == 0)
        snprintf(out, len, ".");
    else
        snprintf(out, len, "%.*s", (int)n, dir);
}

/* 1 when run/hf is a complete copy (its config.json there), 0 when run has
 * no hf/, -1 for an hf/ without config.json. */
static int hf_in(const char *run, char *out, size_t len, char *err, size_t errlen)
{
    char config[PATH_MAX];
    if (join(out, len, run, RUN_HF_DIR, err, errlen) != 0)
        return -1;
    if (!fsutil_is_dir(out))
        return 0;
    if (join(config, sizeof config, out, HF_CONFIG_FILE, err, errlen) != 0)
        return -1;
    if (!fsutil_exists(config))
        return err_fail(err, errlen, "%s: no %s (an interrupted copy of the run's model files?)",
                        out, HF_CONFIG_FILE);
    return 1;
}

int run_hf_dir(const char *path, char *out, size_t len, char *err, size_t errlen)
{
    char dir[PATH_MAX], state[PATH_MAX];
    if (!fsutil_exists(path))
        return err_fail(err, errlen, "%s: no such file or directory", path);
    if (fsutil_is_dir(path))
        snprintf(dir, sizeof dir, "%s", path);
    else
        parent_of(path, dir, sizeof dir);
    int rc = hf_in(dir, out, len, err, errlen);
    if (rc != 0)
        return rc;
    if (join(state, sizeof state, dir, CKPT_STATE_FILE, err, errlen) != 0)
        return -1;
    if (!fsutil_exists(state)) /* neither a run with hf/ nor a checkpoint */
        return 0;
    char run[PATH_MAX];
    parent_of(dir, run, sizeof run);
    return hf_in(run, out, len, err, errlen);
}

int run_hf_tokenizer(const char *path, Tokenizer **out, char *err, size_t errlen)
{
    char hf[PATH_MAX];
    *out = NULL;
    int rc = run_hf_dir(path, hf, sizeof hf, err, errlen);
    if (rc <= 0)
        return rc;
    *out = tokenizer_load(hf, err, errlen);
    return *out ? 0 : -1;
}
