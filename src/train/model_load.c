/*
 * train/model_load.c — run_model_load (model_load.h).
 */
#include "train/model_load.h"

#include <stdio.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/model_file.h"
#include "train/config.h"
#include "util/errmsg.h"
#include "util/fsutil.h"

#define PATH_LEN 1024

/* The shape in the config.yaml beside file. */
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
