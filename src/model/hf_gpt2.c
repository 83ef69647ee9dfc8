/*
 * model/hf_gpt2.c — HF GPT-2 folders to and from a Gpt (hf_gpt2.h).
 *
 * The table below is HF's GPT-2 layout, the importer's spec: each block's
 * tensors in model.c's block order, with their shapes as HF stores them.
 * Loading checks the folder against it before anything is allocated, then
 * reads each of the Gpt's tensors under its HF name (the Gpt's own name
 * behind the prefix), the Conv1D weights transposed.
 *
 * Letters: V vocabulary, P positions, C width, L layers, F the MLP's width.
 */
#include "model/hf_gpt2.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model_file.h"
#include "model/st_shards.h"
#include "util/errmsg.h"
#include "util/fsutil.h"

#define HF_NAME_LEN 96
#define GPT2_LN_EPS 1e-5f /* HF's default layer_norm_epsilon, and model.c's */
#define LM_HEAD "lm_head.weight"

/* One tensor of a block as HF stores it: rows, cols in units of C, or of F
 * where negative (-1: F; cols 0: a vector); conv1d: stored [in, out],
 * transposed from the Gpt's. */
static const struct {
    const char *name;
    int rows, cols;
    bool conv1d;
} block[GPT_LAYER_TENSORS] = {
    {"ln_1.weight", 1, 0, false},       {"ln_1.bias", 1, 0, false},
    {"attn.c_attn.weight", 1, 3, true}, {"attn.c_attn.bias", 3, 0, false},
    {"attn.c_proj.weight", 1, 1, true}, {"attn.c_proj.bias", 1, 0, false},
    {"ln_2.weight", 1, 0, false},       {"ln_2.bias", 1, 0, false},
    {"mlp.c_fc.weight", 1, -1, true},   {"mlp.c_fc.bias", -1, 0, false},
    {"mlp.c_proj.weight", -1, 1, true}, {"mlp.c_proj.bias", 1, 0, false},
};

/* ---- configs ---- */

int hf_gpt2_config(const HfConfig *c, const char *path, GptConfig *g, char *err, size_t errlen)
{
    if (c->arch != HF_ARCH_GPT2)
        return err_fail(err, errlen, "%s: a %s, not a GPT2LMHeadModel", path,
                        hf_arch_name(c->arch));
    /* HF's defaults are model.c's, and those stay 0 ("the default") so that
     * a stock GPT-2's GptConfig is what it was before the two were fields */
    float eps = (float)c->norm_eps;
    *g = (GptConfig){.vocab = c->vocab,
                     .context = c->context,
                     .width = c->hidden,
                     .layers = c->layers,
                     .heads = c->heads,
                     .inner = c->inner == 4 * c->hidden ? 0 : c->inner,
                     .norm_eps = eps == GPT2_LN_EPS ? 0 : eps};
    char why[256];
    if (gpt_config_check(g, why, sizeof why))
        return err_fail(err, errlen, "%s: %s", path, why);
    return 0;
}

HfConfig hf_gpt2_config_of(const GptConfig *g)
{
    return (HfConfig){.arch = HF_ARCH_GPT2,
                      .vocab = g->vocab,
                      .context = g->context,
                      .hidden = g->width,
                      .layers = g->layers,
                      .heads = g->heads,
                      .kv_heads = g->heads,
                      .head_dim = g->width / g->heads,
                      .inner = gpt_inner(g),
                      .norm_eps = hf_config_decimal_of(gpt_norm_eps(g)),
                      .tie_embeddings = true};
}

/* ---- the layout ---- */

/* The i-th of the 4 + 12 L tensors in block order: its name behind the
 * prefix and its shape as HF stores it. */
static void hf_tensor(const GptConfig *g, int i, char *name, int *ndim, int64_t shape[2])
{
    int64_t C = g->width, L = g->layers;
    const char *top[4] = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
    int64_t rows[4] = {g->vocab, g->context, C, C};
    if (i < 2 || i >= 2 + L * GPT_LAYER_TENSORS) {
        int k = i < 2 ? i : i - (int)(L * GPT_LAYER_TENSORS);
        snprintf(name, HF_NAME_LEN, "%s", top[k]);
        *ndim = k < 2 ? 2 : 1;
        shape[0] = rows[k];
        shape[1] = C;
        return;
    }
    int l = (i - 2) / GPT_LAYER_TENSORS, j = (i - 2) % GPT_LAYER_TENSORS;
    int64_t F = gpt_inner(g);
    snprintf(name, HF_NAME_LEN, "h.%d.%s", l, block[j].name);
    *ndim = block[j].cols ? 2 : 1;
    shape[0] = block[j].rows < 0 ? F : block[j].rows * C;
    shape[1] = block[j].cols < 0 ? F : block[j].cols * C;
}

static bool is_conv1d(const char *name)
{
    for (int j = 0; j < GPT_LAYER_TENSORS; j++) {
        size_t n = strlen(name), k = strlen(block[j].name);
        if (block[j].conv1d && n > k && !strcmp(name + n - k, block[j].name))
            return true;
    }
    return false;
}

/* Whether name (behind the prefix) is a tensor of a GPT-2 of L layers:
 * 1 a weight, 2 a causal-mask buffer to ignore, 0 neither. */
static int known_name(const char *name, int L)
{
    const char *top[4] = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
    for (int k = 0; k < 4; k++)
        if (!strcmp(name, top[k]))
            return 1;
    char *end;
    if (strncmp(name, "h.", 2) || !isdigit((unsigned char)name[2]))
        return 0;
    long l = strtol(name + 2, &end, 10);
    if (l >= L || *end != '.' || (name[2] == '0' && end != name + 3)) /* "h.01." is no layer */
        return 0;
    for (int j = 0; j < GPT_LAYER_TENSORS; j++)
        if (!strcmp(end + 1, block[j].name))
            return 1;
    return !strcmp(end + 1, "attn.bias") || !strcmp(end + 1, "attn.masked_bias") ? 2 : 0;
}

/* ---- loading ---- */

/* The folder holds every tensor of g's GPT-2 and nothing else (but the
 * tied lm_head.weight and the mask buffers). */
static int check_folder(const StShards *s, const GptConfig *g, const char *prefix, char *err,
                        size_t errlen)
{
    char name[HF_NAME_LEN], full[2 * HF_NAME_LEN];
    int ndim;
    int64_t shape[2];
    for (int i = 0; i < 4 + g->layers * GPT_LAYER_TENSORS; i++) {
        hf_tensor(g, i, name, &ndim, shape);
        snprintf(full, sizeof full, "%s%s", prefix, name);
        if (st_shards_check_float(s, full, ndim, shape, err, errlen))
            return -1;
    }
    int64_t head[2] = {g->vocab, g->width};
    if (st_shards_info(s, LM_HEAD, NULL, NULL, NULL, NULL) == 0 &&
        st_shards_check_float(s, LM_HEAD, 2, head, err, errlen))
        return -1;
    size_t p = strlen(prefix);
    for (int i = 0; i < st_shards_count(s); i++) {
        const char *n = st_shards_name(s, i), *file;
        if (!strcmp(n, LM_HEAD) || (!strncmp(n, prefix, p) && known_name(n + p, g->layers)))
            continue;
        st_shards_info(s, n, NULL, NULL, NULL, &file);
        return err_fail(err, errlen,
                        "%s: holds tensor \"%s\", which is not part of a GPT2LMHeadModel "
                        "of %d layers",
                        file, n, g->layers);
    }
    return 0;
}

/* Each of m's tensors from its HF name, Conv1D weights transposed. */
static int read_weights(const StShards *s, Gpt *m, const char *prefix, char *err, size_t errlen)
{
    char full[2 * HF_NAME_LEN];
    for (int i = 0; i < m->n_tensors; i++) {
        const Tensor *t = m->tensors[i];
        snprintf(full, sizeof full, "%s%s", prefix, t->name);
        StEntry e = st_entry(full, t);
        e.transposed = is_conv1d(t->name);
        e.any_float = true;
        if (st_shards_read(s, &e, err, errlen))
            return -1;
    }
    return 0;
}

/* lm_head.weight, when the folder has one, must be the token embedding:
 * prefrun's head is tied. Without one, the config must say tied. */
static int check_head(const StShards *s, const Gpt *m, const HfConfig *c, const char *dir,
                      char *err, size_t errlen)
{
    if (st_shards_info(s, LM_HEAD, NULL, NULL, NULL, NULL) != 0)
        return c->tie_embeddings ? 0
                                 : err_fail(err, errlen,
                                            "%s/%s: field \"tie_word_embeddings\" is false, but "
                                            "the weights hold no " LM_HEAD,
                                            dir, HF_CONFIG_FILE);
    StEntry e = st_entry(LM_HEAD, m->wte);
    e.any_float = true;
    e.data = malloc((size_t)m->wte->size * sizeof(float));
    int rc = e.data ? st_shards_read(s, &e, err, errlen) : err_fail(err, errlen, "out of memory");
    if (!rc && memcmp(e.data, m->wte->data, (size_t)m->wte->size * sizeof(float)))
        rc = err_fail(err, errlen,
                      "%s: " LM_HEAD " differs from wte.weight: prefrun's GPT ties its LM head to "
                      "the token embedding (tie_word_embeddings must hold)",
                      st_shards_path(s));
    free(e.data);
    return rc;
}

int hf_gpt2_load(const char *dir, const HfConfig *c, bool trainable, Gpt **out, char *err,
                 size_t errlen)
{
    *out = NULL;
    char cfg_path[PATH_MAX];
    snprintf(cfg_path, sizeof cfg_path, "%s/%s", dir, HF_CONFIG_FILE);
    GptConfig g;
    if (hf_gpt2_config(c, cfg_path, &g, err, errlen))
        return -1;
    StShards *s = st_shards_open(dir, err, errlen);
    if (!s)
        return -1;
    const char *prefix = st_shards_info(s, "transformer.wte.weight", NULL, NULL, NULL, NULL) == 0
                             ? "transformer."
                             : "";
    Gpt *m = NULL;
    int rc = check_folder(s, &g, prefix, err, errlen);
    if (!rc && !(m = gpt_new(&g, trainable, err, errlen)))
        rc = -1;
    if (!rc)
        rc = read_weights(s, m, prefix, err, errlen);
    if (!rc)
        rc = check_head(s, m, c, dir, err, errlen);
    if (!rc)
        rc = model_file_finite(m, st_shards_path(s), err, errlen);
    st_shards_close(s);
    if (rc) {
        gpt_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

/* ---- saving ---- */

static const char *torch_dtype(StDtype d)
{
    return d == ST_F32 ? "float32" : d == ST_BF16 ? "bfloat16" : "float16";
}

static int save_weights(const Gpt *m, const char *path, StDtype dtype, char *err, size_t errlen)
{
    StEntry *e = malloc((size_t)m->n_tensors * sizeof *e);
    char(*names)[HF_NAME_LEN] = malloc((size_t)m->n_tensors * sizeof *names);
    int rc = e && names ? 0 : err_fail(err, errlen, "%s: out of memory", path);
    for (int i = 0; !rc && i < m->n_tensors; i++) {
        const Tensor *t = m->tensors[i];
        snprintf(names[i], HF_NAME_LEN, "transformer.%s", t->name);
        e[i] = st_entry(names[i], t);
        e[i].transposed = is_conv1d(t->name);
    }
    static const char *const meta[] = {"format", "pt", NULL};
    if (!rc)
        rc = st_save_as(path, e, m->n_tensors, meta, dtype, err, errlen);
    free(e);
    free(names);
    return rc;
}

int hf_gpt2_save(const Gpt *m, const char *dir, StDtype dtype, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (m->cfg.arch != GPT_ARCH_GPT2 || m->cfg.untied_head)
        return err_fail(err, errlen,
                        "%s: not a GPT2LMHeadModel: the model is not a GPT-2 with its head tied "
                        "to wte",
                        dir);
    if (snprintf(path, sizeof path, "%s/%s", dir, ST_INDEX_FILE) >= (int)sizeof path)
        return err_fail(err, errlen, "%s: path too long", dir);
    if (fsutil_exists(path))
        return err_fail(err, errlen,
                        "%s: holds a sharded model's index, which would shadow the new "
                        "%s: export into another folder",
                        path, ST_SINGLE_FILE);
    if (fsutil_mkdirs(dir, err, errlen))
        return -1;
    snprintf(path, sizeof path, "%s/%s", dir, ST_SINGLE_FILE);
    if (save_weights(m, path, dtype, err, errlen))
        return -1;
    HfConfig c = hf_gpt2_config_of(&m->cfg);
    snprintf(path, sizeof path, "%s/%s", dir, HF_CONFIG_FILE);
    return hf_config_save(path, &c, torch_dtype(dtype), err, errlen);
}
