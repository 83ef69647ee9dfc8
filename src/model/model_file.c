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

int model_file_save(const Gpt *m, const char *path, const char *const *meta, char *err,
                    size_t errlen)
{
    enum { MAX_META = 32 };
    char num[5][16];
    const int v[5] = {m->cfg.vocab, m->cfg.context, m->cfg.width, m->cfg.layers, m->cfg.heads};
    const char *keys[5] = {"vocab", "context", "width", "layers", "heads"};
    const char *all[2 * MAX_META + 1];
    int k = 0;
    all[k++] = "format";
    all[k++] = "pt";
    for (int i = 0; i < 5; i++) {
        snprintf(num[i], sizeof num[i], "%d", v[i]);
        all[k++] = keys[i];
        all[k++] = num[i];
    }
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

int model_file_resolve(const char *path, char *file, size_t len, char *err, size_t errlen)
{
    if (!fsutil_is_dir(path)) {
        if (!fsutil_exists(path))
            return err_fail(err, errlen, "%s: no such file or directory", path);
        snprintf(file, len, "%s", path);
        return 0;
    }
    char dir[PATH_LEN];
    snprintf(file, len, "%s/%s", path, CKPT_MODEL_FILE);
    if (fsutil_exists(file))
        return 0;
    int64_t step;
    int rc = ckpt_find_latest(path, dir, sizeof dir, &step, err, errlen);
    if (rc == 1)
        return err_fail(err, errlen, "%s: neither a model file, a checkpoint nor a run with one",
                        path);
    if (rc != 0)
        return -1;
    snprintf(file, len, "%s/%s", dir, CKPT_MODEL_FILE);
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

static bool meta_config(const StFile *f, GptConfig *g)
{
    return meta_int(f, "vocab", &g->vocab) && meta_int(f, "context", &g->context) &&
           meta_int(f, "width", &g->width) && meta_int(f, "layers", &g->layers) &&
           meta_int(f, "heads", &g->heads);
}

int model_file_config(const char *file, GptConfig *g, char *err, size_t errlen)
{
    StFile *f = st_open(file, err, errlen);
    if (!f)
        return -1;
    int found = meta_config(f, g);
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
    int rc = 0;
    if (!meta_config(f, &g)) {
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
