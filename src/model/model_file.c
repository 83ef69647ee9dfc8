/*
 * model/model_file.c — a Gpt's weights as one safetensors file
 * (model_file.h), on checkpoint.c's reader and writer.
 */
#include "model/model_file.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "util/errmsg.h"
#include "util/fsutil.h"

#define PATH_LEN 1024

static StEntry *model_entries(const Gpt *m, char *err, size_t errlen)
{
    StEntry *e = malloc((size_t)m->n_tensors * sizeof *e);
    if (!e) {
        err_fail(err, errlen, "model: out of memory");
        return NULL;
    }
    for (int i = 0; i < m->n_tensors; i++)
        e[i] = st_entry(m->tensors[i]->name, m->tensors[i]);
    return e;
}

/* The shape as metadata strings: the five sizes always; the fields after
 * them only where they differ from GPT-2's defaults, so a GPT-2 file's
 * header is what it was before they existed. */
typedef struct MetaShape {
    const char *kv[2 * 20 + 1];
    char num[20][32];
    int k, n;
} MetaShape;

static void meta_put(MetaShape *ms, const char *key, const char *fmt, double v)
{
    snprintf(ms->num[ms->n], sizeof ms->num[0], fmt, v);
    ms->kv[ms->k++] = key;
    ms->kv[ms->k++] = ms->num[ms->n++];
}

static const char *const rope_names[] = {"default", "linear", "llama3"};

static void meta_shape(const GptConfig *g, MetaShape *ms)
{
    ms->k = ms->n = 0;
    meta_put(ms, "vocab", "%.0f", g->vocab);
    meta_put(ms, "context", "%.0f", g->context);
    meta_put(ms, "width", "%.0f", g->width);
    meta_put(ms, "layers", "%.0f", g->layers);
    meta_put(ms, "heads", "%.0f", g->heads);
    bool llama = g->arch == GPT_ARCH_LLAMA;
    if (llama) {
        ms->kv[ms->k++] = "arch";
        ms->kv[ms->k++] = "llama";
    }
    if (gpt_inner(g) != 4 * g->width)
        meta_put(ms, "inner", "%.0f", gpt_inner(g));
    if (gpt_norm_eps(g) != 1e-5f)
        meta_put(ms, "norm_eps", "%.9g", gpt_norm_eps(g));
    if (g->untied_head)
        meta_put(ms, "untied_head", "%.0f", 1);
    if (llama) {
        meta_put(ms, "kv_heads", "%.0f", gpt_kv_heads(g));
        meta_put(ms, "head_dim", "%.0f", gpt_head_dim(g));
        meta_put(ms, "qkv_bias", "%.0f", g->qkv_bias);
        meta_put(ms, "o_bias", "%.0f", g->o_bias);
        meta_put(ms, "rope_theta", "%.17g", g->rope.theta);
        ms->kv[ms->k++] = "rope_type";
        ms->kv[ms->k++] = rope_names[g->rope.scaling];
        meta_put(ms, "rope_factor", "%.17g", g->rope.factor);
        meta_put(ms, "rope_low_freq_factor", "%.17g", g->rope.low_freq_factor);
        meta_put(ms, "rope_high_freq_factor", "%.17g", g->rope.high_freq_factor);
        meta_put(ms, "rope_original_max_positions", "%.0f",
                 g->rope.original_max_position_embeddings);
    }
    ms->kv[ms->k] = NULL;
}

int model_file_save(const Gpt *m, const char *path, const char *const *meta, char *err,
                    size_t errlen)
{
    enum { MAX_META = 48 };
    MetaShape ms;
    meta_shape(&m->cfg, &ms);
    const char *all[2 * MAX_META + 1];
    int k = 0;
    all[k++] = "format";
    all[k++] = "pt";
    for (int i = 0; i < ms.k; i++)
        all[k++] = ms.kv[i];
    for (int i = 0; meta && meta[i] && meta[i + 1] && k < 2 * MAX_META; i += 2) {
        all[k++] = meta[i];
        all[k++] = meta[i + 1];
    }
    all[k] = NULL;
    StEntry *e = model_entries(m, err, errlen);
    int rc = e ? st_save(path, e, m->n_tensors, all, err, errlen) : -1;
    free(e);
    return rc;
}

/* Weights that are not finite (a diverged run's checkpoint) give a model
 * whose every output is NaN; evaluated, they would pass for numbers
 * ("kl -nan", a win rate of 0.75), so they are refused where they enter. */
int model_file_finite(const Gpt *m, const char *file, char *err, size_t errlen)
{
    for (int i = 0; i < m->n_tensors; i++) {
        const Tensor *t = m->tensors[i];
        for (int64_t k = 0; k < t->size; k++)
            if (!isfinite(t->data[k]))
                return err_fail(err, errlen,
                                "%s: tensor \"%s\" holds %s at element %lld: the weights are not "
                                "finite (a diverged run?)",
                                file, t->name, isnan(t->data[k]) ? "NaN" : "an infinity",
                                (long long)k);
    }
    return 0;
}

static int read_into(Gpt *m, StFile *f, const char *file, char *err, size_t errlen)
{
    StEntry *e = model_entries(m, err, errlen);
    int rc = e ? st_read_all(f, e, m->n_tensors, true, err, errlen) : -1;
    free(e);
    return rc == 0 ? model_file_finite(m, file, err, errlen) : -1;
}

int model_file_read(Gpt *m, const char *file, char *err, size_t errlen)
{
    StFile *f = st_open(file, err, errlen);
    int rc = f ? read_into(m, f, file, err, errlen) : -1;
    st_close(f);
    return rc;
}

/* dir's weights: its model file, else a LoRA checkpoint's adapters */
static bool weights_in(const char *dir, char *file, size_t len)
{
    snprintf(file, len, "%s/%s", dir, CKPT_MODEL_FILE);
    if (fsutil_exists(file))
        return true;
    snprintf(file, len, "%s/%s", dir, CKPT_ADAPTER_FILE);
    return fsutil_exists(file);
}

int model_file_resolve(const char *path, char *file, size_t len, char *err, size_t errlen)
{
    if (!fsutil_is_dir(path)) {
        if (!fsutil_exists(path))
            return err_fail(err, errlen, "%s: no such file or directory", path);
        snprintf(file, len, "%s", path);
        return 0;
    }
    char dir[PATH_LEN];
    if (weights_in(path, file, len))
        return 0;
    int64_t step;
    int rc = ckpt_find_latest(path, dir, sizeof dir, &step, err, errlen);
    if (rc == 1)
        return err_fail(err, errlen, "%s: neither a model file, a checkpoint nor a run with one",
                        path);
    if (rc != 0)
        return -1;
    if (!weights_in(dir, file, len))
        snprintf(file, len, "%s/%s", dir, CKPT_MODEL_FILE); /* the error names the file */
    return 0;
}

static bool meta_int(const StFile *f, const char *key, int *out)
{
    const char *s = st_meta(f, key);
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || end == s || *end || v <= 0 || v > 1 << 24)
        return false;
    *out = (int)v;
    return true;
}

/* An optional key: absent leaves *out; present must parse in [lo, hi]. */
static bool meta_num(const StFile *f, const char *key, double lo, double hi, double *out)
{
    const char *s = st_meta(f, key);
    char *end;
    if (!s)
        return true;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

/* The fields after the five sizes; the first key that does not parse to
 * *bad. */
static bool meta_extra(const StFile *f, GptConfig *g, const char **bad)
{
    const char *arch = st_meta(f, "arch"), *rt = st_meta(f, "rope_type");
    if (arch && strcmp(arch, "llama") && strcmp(arch, "gpt2"))
        return *bad = "arch", false;
    g->arch = arch && !strcmp(arch, "llama") ? GPT_ARCH_LLAMA : GPT_ARCH_GPT2;
    static const char *const keys[] = {"inner",
                                       "norm_eps",
                                       "untied_head",
                                       "kv_heads",
                                       "head_dim",
                                       "qkv_bias",
                                       "o_bias",
                                       "rope_theta",
                                       "rope_factor",
                                       "rope_low_freq_factor",
                                       "rope_high_freq_factor",
                                       "rope_original_max_positions"};
    double v[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    const double hi[12] = {1 << 24, 1, 1, 1 << 24, 1 << 24, 1, 1, 1e12, 1e6, 1e6, 1e6, 1 << 24};
    for (int i = 0; i < 12; i++)
        if (!meta_num(f, keys[i], 0, hi[i], &v[i]))
            return *bad = keys[i], false;
    int scaling = 0;
    while (rt && scaling < 3 && strcmp(rt, rope_names[scaling]))
        scaling++;
    if (scaling == 3)
        return *bad = "rope_type", false;
    g->inner = (int)v[0];
    g->norm_eps = (float)v[1];
    g->untied_head = v[2] != 0;
    g->kv_heads = (int)v[3];
    g->head_dim = (int)v[4];
    g->qkv_bias = v[5] != 0;
    g->o_bias = v[6] != 0;
    g->rope = (RopeConfig){.theta = v[7],
                           .scaling = (RopeScaling)scaling,
                           .factor = v[8],
                           .low_freq_factor = v[9],
                           .high_freq_factor = v[10],
                           .original_max_position_embeddings = (int)v[11]};
    return true;
}

/* 1 the header holds a shape, 0 it holds none, -1 a malformed one. */
static int meta_config(const StFile *f, const char *file, GptConfig *g, char *err, size_t errlen)
{
    *g = (GptConfig){0};
    if (!(meta_int(f, "vocab", &g->vocab) && meta_int(f, "context", &g->context) &&
          meta_int(f, "width", &g->width) && meta_int(f, "layers", &g->layers) &&
          meta_int(f, "heads", &g->heads)))
        return 0;
    const char *bad = NULL;
    if (!meta_extra(f, g, &bad))
        return err_fail(err, errlen, "%s: metadata \"%s\" is \"%s\", which is not a model setting",
                        file, bad, st_meta(f, bad));
    return 1;
}

int model_file_config(const char *file, GptConfig *g, char *err, size_t errlen)
{
    StFile *f = st_open(file, err, errlen);
    if (!f)
        return -1;
    int found = meta_config(f, file, g, err, errlen);
    st_close(f);
    return found;
}

/* The shape a header claims is checked against the tensors the file really
 * holds before anything is allocated: a 500 KB file claiming a vocabulary of
 * 16M must not cost 4 GB first. */
static int shape_fits_file(const StFile *f, const char *file, const GptConfig *g, char *err,
                           size_t errlen)
{
    if (gpt_config_check(g, err, errlen) != 0)
        return -1;
    uint64_t held = 0;
    for (int i = 0; i < st_count(f); i++) {
        int ndim;
        int64_t shape[TENSOR_MAX_DIMS];
        st_info(f, st_name(f, i), NULL, &ndim, shape);
        uint64_t n = 1;
        for (int d = 0; d < ndim; d++)
            n *= (uint64_t)shape[d]; /* st_open bounded each tensor by the data's bytes */
        held += n;
    }
    int64_t want = gpt_config_num_params(g);
    if (want < 0 || (uint64_t)want != held)
        return err_fail(err, errlen,
                        "%s: the model shape (vocab %d, context %d, width %d, layers %d, heads %d) "
                        "has %lld parameters, but the file holds %llu values",
                        file, g->vocab, g->context, g->width, g->layers, g->heads, (long long)want,
                        (unsigned long long)held);
    return 0;
}

int model_file_load(const char *file, const GptConfig *fallback, Gpt **out, char *err,
                    size_t errlen)
{
    *out = NULL;
    StFile *f = st_open(file, err, errlen);
    if (!f)
        return -1;
    GptConfig g;
    int rc = meta_config(f, file, &g, err, errlen);
    if (rc == 1)
        rc = 0;
    else if (rc == 0) {
        if (fallback)
            g = *fallback;
        else
            rc = err_fail(err, errlen, "%s: no model config in its metadata", file);
    }
    if (rc == 0)
        rc = shape_fits_file(f, file, &g, err, errlen);
    Gpt *m = NULL;
    if (rc == 0 && !(m = gpt_new(&g, false, err, errlen)))
        rc = -1;
    if (rc == 0)
        rc = read_into(m, f, file, err, errlen);
    st_close(f);
    if (rc != 0) {
        gpt_free(m);
        return -1;
    }
    *out = m;
    return 0;
}
