/*
 * model/hf_model.c — a Hugging Face model folder to the importer of its
 * architecture (hf_model.h).
 */
#include "model/hf_model.h"

#include <limits.h>
#include <stdio.h>

#include "util/errmsg.h"
#include "util/fsutil.h"

bool hf_model_is_folder(const char *path)
{
    char p[PATH_MAX];
    return fsutil_is_dir(path) &&
           snprintf(p, sizeof p, "%s/%s", path, HF_CONFIG_FILE) < (int)sizeof p && fsutil_exists(p);
}

int hf_model_load(const char *dir, bool trainable, Gpt **out, HfConfig *cfg, char *err,
                  size_t errlen)
{
    *out = NULL;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, HF_CONFIG_FILE) >= (int)sizeof path)
        return err_fail(err, errlen, "%s: path too long", dir);
    HfConfig c;
    if (hf_config_load(path, &c, err, errlen))
        return -1;
    if (cfg)
        *cfg = c;
    return c.arch == HF_ARCH_GPT2 ? hf_gpt2_load(dir, &c, trainable, out, err, errlen)
                                  : hf_llama_load(dir, &c, trainable, out, err, errlen);
}

int hf_model_save(const Gpt *m, const char *dir, StDtype dtype, char *err, size_t errlen)
{
    return m->cfg.arch == GPT_ARCH_LLAMA ? hf_llama_save(m, dir, dtype, err, errlen)
                                         : hf_gpt2_save(m, dir, dtype, err, errlen);
}
