/*
 * train/model_load.c — run_model_load (model_load.h).
 */
#include "train/model_load.h"

#include <stdio.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/hf_gpt2.h"
#include "model/hf_llama.h"
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

int run_model_load(const char *path, Gpt **out, char *resolved, size_t rlen, char *err,
                   size_t errlen)
{
    char file[PATH_LEN + 32];
    GptConfig g;
    *out = NULL;
    if (model_file_resolve(path, file, sizeof file, err, errlen) != 0)
        return -1;
    int found = model_file_config(file, &g, err, errlen);
    if (found < 0 || (found == 0 && config_beside(file, &g, err, errlen) != 0))
        return -1;
    if (model_file_load(file, &g, out, err, errlen) != 0)
        return -1;
    if (resolved)
        snprintf(resolved, rlen, "%s", file);
    return 0;
}
