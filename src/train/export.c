/*
 * train/export.c — export_run (export.h): refuse a folder holding other
 * files, write the weights (hf_model_save), then the run's own config.json
 * and tokenizer files.
 *
 * The config is rewritten through jansson, which keeps the keys' order;
 * its reals are printed with the fewest digits that read back as the same
 * doubles (1e-05 stays 1e-05, where jansson's default of 17 digits would
 * write 1.0000000000000001e-05), so the file differs from the original in
 * torch_dtype and whitespace only.
 */
#include "train/export.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "model/hf_model.h"
#include "model/model_file.h"
#include "model/st_shards.h"
#include "train/model_load.h"
#include "train/run_hf.h"
#include "util/errmsg.h"
#include "util/fsutil.h"
#include "util/jsonfile.h"

#define MAX_HF_FILES 32
#define NAME_LEN 256

static const FsReadCap cap_config = {HF_CONFIG_MAX_BYTES, "a config.json", false};
static const FsReadCap cap_tokenizer = {(size_t)64 << 20, "a tokenizer file", false};

static const struct {
    const char *name;
    ExportDtype d;
    StDtype st;
} dtypes[] = {{"auto", EXPORT_DTYPE_AUTO, ST_F32},
              {"float32", EXPORT_DTYPE_F32, ST_F32},
              {"bfloat16", EXPORT_DTYPE_BF16, ST_BF16},
              {"float16", EXPORT_DTYPE_F16, ST_F16}};
#define N_DTYPES (int)(sizeof dtypes / sizeof dtypes[0])

int export_dtype_parse(const char *name, ExportDtype *out, char *err, size_t errlen)
{
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(name, dtypes[i].name) == 0) {
            *out = dtypes[i].d;
            return 0;
        }
    return err_fail(err, errlen, "--dtype %s: expected auto, float32, bfloat16 or float16", name);
}

static const char *torch_name(StDtype d)
{
    for (int i = 1; i < N_DTYPES; i++)
        if (dtypes[i].st == d)
            return dtypes[i].name;
    return "float32";
}

static int join(char *out, size_t len, const char *dir, const char *name, char *err, size_t errlen)
{
    if (snprintf(out, len, "%s/%s", dir, name) >= (int)len)
        return err_fail(err, errlen, "%s/%s: path too long", dir, name);
    return 0;
}

/* ---- the run's Hugging Face files ---------------------------------------------- */

typedef struct HfFiles {
    char dir[PATH_MAX]; /* RUN/hf */
    char name[MAX_HF_FILES][NAME_LEN];
    int n; /* the tokenizer files: every regular file of dir but config.json */
} HfFiles;

static bool is_file(const char *dir, const char *name)
{
    char p[PATH_MAX];
    struct stat st;
    return snprintf(p, sizeof p, "%s/%s", dir, name) < (int)sizeof p && stat(p, &st) == 0 &&
           S_ISREG(st.st_mode);
}

/* The tokenizer files of hf->dir; names starting with '.' are an
 * interrupted copy's temporaries, not the run's files. */
static int hf_files_list(HfFiles *hf, char *err, size_t errlen)
{
    DIR *d = opendir(hf->dir);
    if (!d)
        return err_fail(err, errlen, "%s: %s", hf->dir, strerror(errno));
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        if (e->d_name[0] == '.' || strcmp(e->d_name, HF_CONFIG_FILE) == 0 ||
            !is_file(hf->dir, e->d_name))
            continue;
        if (hf->n >= MAX_HF_FILES || strlen(e->d_name) >= NAME_LEN)
            rc = err_fail(err, errlen, "%s: more than %d files, or a name of %d bytes or more",
                          hf->dir, MAX_HF_FILES, NAME_LEN);
        else
            snprintf(hf->name[hf->n++], NAME_LEN, "%s", e->d_name);
    }
    closedir(d);
    return rc;
}

/* Whether export writes a file of this name into the folder: a model's
 * config and weights, or (adapter) a PEFT adapter's two files; the
 * tokenizer files either way. */
static bool written(const HfFiles *hf, const char *name, bool adapter)
{
    if (!adapter && (strcmp(name, HF_CONFIG_FILE) == 0 || strcmp(name, ST_SINGLE_FILE) == 0))
        return true;
    if (adapter &&
        (strcmp(name, CKPT_ADAPTER_FILE) == 0 || strcmp(name, CKPT_ADAPTER_CONFIG_FILE) == 0))
        return true;
    for (int i = 0; hf && i < hf->n; i++)
        if (strcmp(name, hf->name[i]) == 0)
            return true;
    return false;
}

/* out_dir is new, empty, or holds only files export writes (an earlier
 * export of the same kind of run, which this one replaces). */
static int check_out(const char *out, const HfFiles *hf, bool adapter, char *err, size_t errlen)
{
    DIR *d = opendir(out);
    if (!d) {
        if (errno == ENOENT)
            return 0;
        return err_fail(err, errlen, "--out %s: %s", out, strerror(errno));
    }
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            (!written(hf, e->d_name, adapter) || !is_file(out, e->d_name)))
            rc = err_fail(err, errlen,
                          "--out %s: holds %s, which export does not write: export into a new "
                          "or empty folder",
                          out, e->d_name);
    closedir(d);
    return rc;
}

/* ---- config.json ---------------------------------------------------------------- */

/* The fewest digits (of 17) with which every real in j reads back exactly. */
static int real_digits(const json_t *j)
{
    int p = 1;
    if (json_is_real(j)) {
        double x = json_real_value(j);
        char buf[40];
        for (p = 1; p < 17; p++) {
            snprintf(buf, sizeof buf, "%.*g", p, x);
            if (strtod(buf, NULL) == x)
                break;
        }
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            int q = real_digits(v);
            p = q > p ? q : p;
        }
    } else if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++) {
            int q = real_digits(json_array_get(j, i));
            p = q > p ? q : p;
        }
    }
    return p;
}

/* The original config's dtype key (torch_dtype, else the newer dtype). */
static const char *config_dtype(const json_t *j)
{
    const char *s = json_string_value(json_object_get(j, "torch_dtype"));
    return s ? s : json_string_value(json_object_get(j, "dtype"));
}

static json_t *config_read(const HfFiles *hf, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (join(path, sizeof path, hf->dir, HF_CONFIG_FILE, err, errlen) != 0)
        return NULL;
    json_t *j = jsonfile_load(path, &cap_config, err, errlen);
    if (j && !json_is_object(j)) {
        json_decref(j);
        err_fail(err, errlen, "%s: expected a JSON object", path);
        return NULL;
    }
    return j;
}

/* The run's config.json must describe the weights being written. */
static int config_matches(const HfFiles *hf, const Gpt *m, char *err, size_t errlen)
{
    char path[PATH_MAX];
    HfConfig c;
    if (join(path, sizeof path, hf->dir, HF_CONFIG_FILE, err, errlen) != 0 ||
        hf_config_load(path, &c, err, errlen) != 0)
        return -1;
    const GptConfig *g = &m->cfg;
    if (c.vocab != g->vocab || c.hidden != g->width || c.layers != g->layers || c.heads != g->heads)
        return err_fail(err, errlen,
                        "%s: vocab %d, hidden %d, %d layers, %d heads; the checkpoint's model "
                        "has vocab %d, width %d, %d layers, %d heads",
                        path, c.vocab, c.hidden, c.layers, c.heads, g->vocab, g->width, g->layers,
                        g->heads);
    return 0;
}

/* out/config.json = the original with torch_dtype (and dtype) set to d. */
static int config_write(json_t *j, const char *out, StDtype d, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (join(path, sizeof path, out, HF_CONFIG_FILE, err, errlen) != 0)
        return -1;
    json_object_set_new(j, "torch_dtype", json_string(torch_name(d)));
    if (json_object_get(j, "dtype"))
        json_object_set_new(j, "dtype", json_string(torch_name(d)));
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(real_digits(j)));
    if (!text)
        return err_fail(err, errlen, "%s: out of memory", path);
    size_t len = strlen(text);
    char *line = realloc(text, len + 2);
    int rc = line ? 0 : err_fail(err, errlen, "%s: out of memory", path);
    if (line) {
        line[len] = '\n'; /* a text file ends in a newline, as Hugging Face writes it */
        rc = fsutil_write_atomic(path, line, len + 1, err, errlen);
    }
    free(line ? line : text);
    return rc;
}

static int copy_tokenizer(const HfFiles *hf, const char *out, char *err, size_t errlen)
{
    char src[PATH_MAX], dst[PATH_MAX];
    for (int i = 0; i < hf->n; i++)
        if (join(src, sizeof src, hf->dir, hf->name[i], err, errlen) != 0 ||
            join(dst, sizeof dst, out, hf->name[i], err, errlen) != 0 ||
            fsutil_copy_atomic(src, &cap_tokenizer, dst, err, errlen) != 0)
            return -1;
    return 0;
}

/* ---- the export ----------------------------------------------------------------- */

/* auto: the original's torch_dtype when it is one of the three. */
static StDtype resolve_dtype(ExportDtype d, const json_t *config)
{
    const char *s = config ? config_dtype(config) : NULL;
    if (d == EXPORT_DTYPE_AUTO)
        for (int i = 1; s && i < N_DTYPES; i++)
            if (strcmp(s, dtypes[i].name) == 0)
                return dtypes[i].st;
    for (int i = 0; i < N_DTYPES; i++)
        if (dtypes[i].d == d)
            return dtypes[i].st;
    return ST_F32;
}

/* The weights, then the run's config and tokenizer files (hf NULL: none). */
static int write_all(const Gpt *m, const char *out, HfFiles *hf, json_t *config, StDtype d,
                     char *err, size_t errlen)
{
    if (hf && config_matches(hf, m, err, errlen) != 0)
        return -1;
    if (fsutil_mkdirs(out, err, errlen) != 0 || hf_model_save(m, out, d, err, errlen) != 0)
        return -1;
    if (!hf)
        return 0;
    if (config_write(config, out, d, err, errlen) != 0)
        return -1;
    return copy_tokenizer(hf, out, err, errlen);
}

int export_run(const char *path, const char *out_dir, ExportDtype dtype, ExportInfo *info,
               char *err, size_t errlen)
{
    ExportInfo local;
    info = info ? info : &local;
    *info = (ExportInfo){0};
    HfFiles *hf = calloc(1, sizeof *hf);
    if (!hf)
        return err_fail(err, errlen, "export: out of memory");
    Gpt *m = NULL;
    json_t *config = NULL;
    int has = run_hf_dir(path, hf->dir, sizeof hf->dir, err, errlen);
    int rc = has < 0 ? -1 : 0;
    if (rc == 0 && has)
        rc = hf_files_list(hf, err, errlen);
    if (rc == 0 && has && !(config = config_read(hf, err, errlen)))
        rc = -1;
    if (rc == 0)
        rc = check_out(out_dir, has ? hf : NULL, false, err, errlen);
    if (rc == 0)
        rc = run_model_load(path, &m, info->model_file, sizeof info->model_file, err, errlen);
    info->dtype = resolve_dtype(dtype, config);
    if (rc == 0)
        rc = write_all(m, out_dir, has ? hf : NULL, config, info->dtype, err, errlen);
    info->hf = has > 0;
    info->n_tokenizer_files = has > 0 ? hf->n : 0;
    json_decref(config);
    gpt_free(m);
    free(hf);
    return rc;
}

/* ---- a LoRA run's adapters ------------------------------------------------------ */

/* path's checkpoint directory when it holds LoRA adapters: 1, else 0 */
static int adapter_dir(const char *path, char *dir, size_t len, char *err, size_t errlen)
{
    char file[PATH_MAX];
    if (model_file_resolve(path, file, sizeof file, err, errlen) != 0)
        return -1;
    const char *slash = strrchr(file, '/');
    if (strcmp(slash ? slash + 1 : file, CKPT_ADAPTER_FILE) != 0)
        return 0;
    snprintf(dir, len, "%.*s", slash ? (int)(slash - file) : 1, slash ? file : ".");
    return 1;
}

int export_is_adapter_run(const char *path, char *err, size_t errlen)
{
    char dir[PATH_MAX];
    return adapter_dir(path, dir, sizeof dir, err, errlen);
}

int export_adapter(const char *path, const char *out_dir, ExportInfo *info, char *err,
                   size_t errlen)
{
    static const FsReadCap cap_adapter = {(size_t)64 << 30, "an adapter file", false};
    ExportInfo local;
    info = info ? info : &local;
    *info = (ExportInfo){.dtype = ST_F32};
    char dir[PATH_MAX], src[PATH_MAX], dst[PATH_MAX];
    int lora = adapter_dir(path, dir, sizeof dir, err, errlen);
    if (lora <= 0)
        return lora < 0 ? -1
                        : err_fail(err, errlen, "%s: not a LoRA run (no %s in its checkpoint)",
                                   path, CKPT_ADAPTER_FILE);
    HfFiles *hf = calloc(1, sizeof *hf);
    if (!hf)
        return err_fail(err, errlen, "export: out of memory");
    int has = run_hf_dir(path, hf->dir, sizeof hf->dir, err, errlen);
    int rc = has < 0 || (has && hf_files_list(hf, err, errlen) != 0) ? -1 : 0;
    if (rc == 0)
        rc = check_out(out_dir, has ? hf : NULL, true, err, errlen);
    if (rc == 0)
        rc = fsutil_mkdirs(out_dir, err, errlen);
    const char *files[] = {CKPT_ADAPTER_CONFIG_FILE, CKPT_ADAPTER_FILE};
    for (int i = 0; rc == 0 && i < 2; i++)
        rc = join(src, sizeof src, dir, files[i], err, errlen) ||
                     join(dst, sizeof dst, out_dir, files[i], err, errlen) ||
                     fsutil_copy_atomic(src, &cap_adapter, dst, err, errlen)
                 ? -1
                 : 0;
    if (rc == 0 && has)
        rc = copy_tokenizer(hf, out_dir, err, errlen);
    if (rc == 0)
        rc = join(info->model_file, sizeof info->model_file, dir, CKPT_ADAPTER_FILE, err, errlen);
    info->hf = has > 0;
    info->n_tokenizer_files = has > 0 ? hf->n : 0;
    free(hf);
    return rc;
}
