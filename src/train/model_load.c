/*
 * train/model_load.c — run_model_load (model_load.h).
 */
#include "train/model_load.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/hf_gpt2.h"
#include "model/hf_llama.h"
#include "model/hf_model.h"
#include "model/lora.h"
#include "model/model_file.h"
#include "train/run_hf.h"
#include "train/config.h"
#include "util/errmsg.h"
#include "util/fsutil.h"

#define PATH_LEN 1024

/* A run of a model folder: the shape of its copy of config.json (RUN/hf/) */
static int hf_shape(const char *file, GptConfig *g, char *err, size_t errlen)
{
    char hf[PATH_LEN], path[PATH_LEN + 32];
    int found = run_hf_dir(file, hf, sizeof hf, err, errlen);
    if (found == 0)
        return err_fail(err, errlen, "%s: no model shape in its metadata, and its run has no hf/",
                        file);
    if (found < 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", hf, HF_CONFIG_FILE);
    HfConfig hc;
    if (hf_config_load(path, &hc, err, errlen) != 0)
        return -1;
    return hc.arch == HF_ARCH_GPT2 ? hf_gpt2_config(&hc, path, g, err, errlen)
                                   : hf_llama_config(&hc, path, g, err, errlen);
}

/* The shape in the config.yaml beside file (checkpoints written before
 * their model files carried it); for a run of a model folder, that
 * folder's. */
static int config_beside(const char *file, GptConfig *g, char *err, size_t errlen)
{
    char yaml[PATH_LEN + 32];
    const char *slash = strrchr(file, '/');
    int dlen = slash ? (int)(slash - file) : 1;
    snprintf(yaml, sizeof yaml, "%.*s/%s", dlen, slash ? file : ".", CKPT_CONFIG_FILE);
    if (!fsutil_exists(yaml))
        return err_fail(err, errlen, "%s: no model config in its metadata and no %s beside it",
                        file, CKPT_CONFIG_FILE);
    Config c;
    config_defaults(&c);
    if (config_load_yaml(&c, yaml, err, errlen) != 0)
        return -1;
    if (c.model[0])
        return hf_shape(file, g, err, errlen);
    *g = (GptConfig){.vocab = c.vocab,
                     .context = c.context,
                     .width = c.width,
                     .layers = c.layers,
                     .heads = c.heads};
    return 0;
}

/* adapter_config.json's base_model_name_or_path ("" when null or absent) */
static int adapter_base(const char *dir, char *out, size_t len, char *err, size_t errlen)
{
    static const FsReadCap cap = {.bytes = (size_t)1 << 20, .kind = "an adapter config"};
    char path[PATH_LEN + 32], *text;
    size_t n;
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_ADAPTER_CONFIG_FILE);
    if (fsutil_read_capped(path, &cap, &text, &n, err, errlen) != 0)
        return -1;
    json_error_t je;
    json_t *j = json_loadb(text, n, 0, &je);
    free(text);
    if (!json_is_object(j)) {
        json_decref(j);
        return err_fail(err, errlen, "%s:%d: expected a JSON object (%s)", path, je.line, je.text);
    }
    const json_t *b = json_object_get(j, "base_model_name_or_path");
    snprintf(out, len, "%s", json_is_string(b) ? json_string_value(b) : "");
    json_decref(j);
    return 0;
}

/* The base of a LoRA checkpoint (train_lora.c): the run's model folder,
 * else the model file it started from, else prefrun's init of the run's
 * seed and shape. */
static int lora_base(const char *dir, Gpt **out, char *err, size_t errlen)
{
    char yaml[PATH_LEN + 32], base[PATH_LEN];
    snprintf(yaml, sizeof yaml, "%s/%s", dir, CKPT_CONFIG_FILE);
    Config c;
    config_defaults(&c);
    if (config_load_yaml(&c, yaml, err, errlen) != 0)
        return -1;
    if (c.model[0])
        return hf_model_load(c.model, false, out, NULL, err, errlen);
    if (adapter_base(dir, base, sizeof base, err, errlen) != 0)
        return -1;
    if (base[0])
        return model_file_load(base, NULL, out, err, errlen);
    GptConfig g = {.vocab = c.vocab,
                   .context = c.context,
                   .width = c.width,
                   .layers = c.layers,
                   .heads = c.heads};
    if (!(*out = gpt_new(&g, false, err, errlen)))
        return -1;
    gpt_init(*out, c.seed);
    return 0;
}

/* A LoRA checkpoint as one model: its base with the adapters merged in. */
static int lora_load(const char *file, Gpt **out, char *err, size_t errlen)
{
    char dir[PATH_LEN];
    const char *slash = strrchr(file, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - file) : 1, slash ? file : ".");
    Gpt *base = NULL;
    if (lora_base(dir, &base, err, errlen) != 0) {
        gpt_free(base);
        return -1;
    }
    GptLora *l = gpt_lora_load(base, dir, err, errlen);
    int rc = l ? gpt_lora_merge(base, l, err, errlen) : -1;
    gpt_lora_free(l);
    if (rc == 0)
        rc = model_file_finite(base, file, err, errlen);
    if (rc != 0) {
        gpt_free(base);
        return -1;
    }
    *out = base;
    return 0;
}

static bool is_adapter_file(const char *file)
{
    const char *slash = strrchr(file, '/');
    return strcmp(slash ? slash + 1 : file, CKPT_ADAPTER_FILE) == 0;
}

int run_model_load(const char *path, Gpt **out, char *resolved, size_t rlen, char *err,
                   size_t errlen)
{
    char file[PATH_LEN + 32];
    GptConfig g;
    *out = NULL;
    if (model_file_resolve(path, file, sizeof file, err, errlen) != 0)
        return -1;
    if (is_adapter_file(file)) {
        if (lora_load(file, out, err, errlen) != 0)
            return -1;
        if (resolved)
            snprintf(resolved, rlen, "%s", file);
        return 0;
    }
    int found = model_file_config(file, &g, err, errlen);
    if (found < 0 || (found == 0 && config_beside(file, &g, err, errlen) != 0))
        return -1;
    if (model_file_load(file, &g, out, err, errlen) != 0)
        return -1;
    if (resolved)
        snprintf(resolved, rlen, "%s", file);
    return 0;
}
