/*
 * model/st_shards.c — one model folder's safetensors files as one set of
 * tensors (st_shards.h): the index checked against the shards it names.
 *
 * The tensors of every shard are gathered into one table sorted by name, so
 * a name held by two shards shows as two neighbours and a lookup is a
 * binary search. The names point into the StFiles, which the set owns.
 */
#include "model/st_shards.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"
#include "util/fsutil.h"

typedef struct ShardTensor {
    const char *name;
    int shard;
} ShardTensor;

struct StShards {
    char *path;        /* the index, or the single file */
    StFile **files;    // (n_files)
    char **shard_name; // (n_files) as the index names them
    int n_files;
    ShardTensor *t; // (n) sorted by name
    int n;
};

void st_shards_close(StShards *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_files; i++) {
        st_close(s->files[i]);
        free(s->shard_name[i]);
    }
    free(s->files);
    free(s->shard_name);
    free(s->t);
    free(s->path);
    free(s);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const ShardTensor *)a)->name, ((const ShardTensor *)b)->name);
}

/* Every tensor of every shard into s->t, sorted; a name twice is an error. */
static int collect(StShards *s, char *err, size_t errlen)
{
    int64_t total = 0;
    for (int i = 0; i < s->n_files; i++)
        total += st_count(s->files[i]);
    if (total > INT_MAX || !(s->t = malloc((size_t)(total ? total : 1) * sizeof *s->t)))
        return err_fail(err, errlen, "%s: out of memory for %lld tensors", s->path,
                        (long long)total);
    for (int i = 0; i < s->n_files; i++)
        for (int j = 0; j < st_count(s->files[i]); j++)
            s->t[s->n++] = (ShardTensor){st_name(s->files[i], j), i};
    qsort(s->t, (size_t)s->n, sizeof *s->t, by_name);
    for (int i = 1; i < s->n; i++)
        if (!strcmp(s->t[i - 1].name, s->t[i].name))
            return err_fail(err, errlen, "%s: tensor \"%s\" is in two shards, %s and %s", s->path,
                            s->t[i].name, st_path(s->files[s->t[i - 1].shard]),
                            st_path(s->files[s->t[i].shard]));
    return 0;
}

static const ShardTensor *lookup(const StShards *s, const char *name)
{
    ShardTensor key = {name, 0};
    return bsearch(&key, s->t, (size_t)s->n, sizeof *s->t, by_name);
}

/* Room for one more file; its name is taken over (freed on failure). */
static int add_file(StShards *s, const char *dir, char *name, char *err, size_t errlen)
{
    StFile **f = realloc(s->files, (size_t)(s->n_files + 1) * sizeof *f);
    char **nm = f ? realloc(s->shard_name, (size_t)(s->n_files + 1) * sizeof *nm) : NULL;
    if (f)
        s->files = f;
    if (nm)
        s->shard_name = nm;
    if (!f || !nm || !name) {
        free(name);
        return err_fail(err, errlen, "%s: out of memory", s->path);
    }
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) {
        err_fail(err, errlen, "%s: path of shard %s too long", s->path, name);
        free(name);
        return -1;
    }
    StFile *file = st_open(path, err, errlen);
    if (!file) {
        free(name);
        return -1;
    }
    s->files[s->n_files] = file;
    s->shard_name[s->n_files++] = name;
    return 0;
}

static int shard_of(const StShards *s, const char *name)
{
    for (int i = 0; i < s->n_files; i++)
        if (!strcmp(s->shard_name[i], name))
            return i;
    return -1;
}

/* A shard file name from weight_map: a plain name in the folder. */
static int check_shard_name(const StShards *s, const char *tensor, const json_t *v, char *err,
                            size_t errlen)
{
    const char *name = json_string_value(v);
    if (!name)
        return err_fail(err, errlen, "%s: weight_map[\"%s\"] is not a file name", s->path, tensor);
    if (!*name || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, "..") ||
        strlen(name) > 255)
        return err_fail(err, errlen,
                        "%s: weight_map[\"%s\"] is \"%s\", expected a file name in the "
                        "model's folder",
                        s->path, tensor, name);
    return 0;
}

/* Opens each distinct shard weight_map names, in order of first mention. */
static int open_shards(StShards *s, const char *dir, json_t *wm, char *err, size_t errlen)
{
    const char *tensor;
    json_t *v;
    json_object_foreach(wm, tensor, v)
    {
        if (check_shard_name(s, tensor, v, err, errlen))
            return -1;
        if (shard_of(s, json_string_value(v)) >= 0)
            continue;
        if (s->n_files == ST_MAX_SHARDS)
            return err_fail(err, errlen, "%s: more than %d shards", s->path, ST_MAX_SHARDS);
        if (add_file(s, dir, strdup(json_string_value(v)), err, errlen))
            return -1;
    }
    return 0;
}

/* The index and the shards name the same tensors in the same places. */
static int check_index(const StShards *s, json_t *wm, char *err, size_t errlen)
{
    const char *tensor;
    json_t *v;
    json_object_foreach(wm, tensor, v)
    {
        const ShardTensor *t = lookup(s, tensor);
        if (!t)
            return err_fail(err, errlen, "%s: tensor \"%s\" is in no shard (the index names %s)",
                            s->path, tensor, json_string_value(v));
        if (strcmp(s->shard_name[t->shard], json_string_value(v)))
            return err_fail(err, errlen, "%s: the index puts tensor \"%s\" in %s, but %s holds it",
                            s->path, tensor, json_string_value(v), st_path(s->files[t->shard]));
    }
    for (int i = 0; i < s->n; i++)
        if (!json_object_get(wm, s->t[i].name))
            return err_fail(err, errlen, "%s: tensor \"%s\" of %s is not in the index's weight_map",
                            s->path, s->t[i].name, st_path(s->files[s->t[i].shard]));
    return 0;
}

static int open_index(StShards *s, const char *dir, char *err, size_t errlen)
{
    static const FsReadCap cap = {.bytes = ST_MAX_INDEX_BYTES, .kind = "a safetensors index"};
    char *text;
    size_t len;
    if (fsutil_read_capped(s->path, &cap, &text, &len, err, errlen))
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    free(text);
    if (!root)
        return err_fail(err, errlen, "%s:%d: invalid JSON: %s", s->path, jerr.line, jerr.text);
    json_t *wm = json_object_get(root, "weight_map");
    int rc = 0;
    if (!json_is_object(wm) || json_object_size(wm) == 0)
        rc = err_fail(err, errlen, "%s: \"weight_map\" is %s, expected an object of tensor: file",
                      s->path,
                      !wm                  ? "missing"
                      : json_is_object(wm) ? "empty"
                                           : "not an object");
    if (!rc)
        rc = open_shards(s, dir, wm, err, errlen);
    if (!rc)
        rc = collect(s, err, errlen);
    if (!rc)
        rc = check_index(s, wm, err, errlen);
    json_decref(root);
    return rc;
}

StShards *st_shards_open(const char *dir, char *err, size_t errlen)
{
    StShards *s = calloc(1, sizeof *s);
    char path[PATH_MAX];
    if (!s || snprintf(path, sizeof path, "%s/%s", dir, ST_INDEX_FILE) >= (int)sizeof path) {
        free(s);
        err_fail(err, errlen, "%s: %s", dir, s ? "path too long" : "out of memory");
        return NULL;
    }
    bool sharded = fsutil_exists(path);
    if (!sharded)
        snprintf(path, sizeof path, "%s/%s", dir, ST_SINGLE_FILE);
    int rc = (s->path = strdup(path)) ? 0 : err_fail(err, errlen, "%s: out of memory", dir);
    if (!rc && sharded)
        rc = open_index(s, dir, err, errlen);
    else if (!rc && !fsutil_exists(path))
        rc = err_fail(err, errlen, "%s: no %s or %s: not a Hugging Face model folder?", dir,
                      ST_SINGLE_FILE, ST_INDEX_FILE);
    else if (!rc)
        rc = add_file(s, dir, strdup(ST_SINGLE_FILE), err, errlen) || collect(s, err, errlen);
    if (rc) {
        st_shards_close(s);
        return NULL;
    }
    return s;
}

const char *st_shards_path(const StShards *s) { return s->path; }
int st_shards_count(const StShards *s) { return s->n; }
const char *st_shards_name(const StShards *s, int i)
{
    return i >= 0 && i < s->n ? s->t[i].name : NULL;
}

int st_shards_info(const StShards *s, const char *name, const char **dtype, int *ndim,
                   int64_t shape[TENSOR_MAX_DIMS], const char **file)
{
    const ShardTensor *t = lookup(s, name);
    if (!t)
        return -1;
    if (file)
        *file = st_path(s->files[t->shard]);
    return st_info(s->files[t->shard], name, dtype, ndim, shape);
}

int st_shards_read(const StShards *s, const StEntry *e, char *err, size_t errlen)
{
    const ShardTensor *t = lookup(s, e->name);
    if (!t)
        return err_fail(err, errlen, "%s: no tensor \"%s\"%s", s->path, e->name,
                        s->n_files > 1 ? " in any shard" : "");
    return st_read(s->files[t->shard], e, err, errlen);
}

static bool float_dtype(const char *d)
{
    return !strcmp(d, "F32") || !strcmp(d, "BF16") || !strcmp(d, "F16");
}

int st_shards_check_float(const StShards *s, const char *name, int ndim, const int64_t *shape,
                          char *err, size_t errlen)
{
    const char *dtype, *file;
    int nd;
    int64_t sh[TENSOR_MAX_DIMS];
    if (st_shards_info(s, name, &dtype, &nd, sh, &file))
        return err_fail(err, errlen, "%s: no tensor \"%s\"", st_shards_path(s), name);
    if (!float_dtype(dtype))
        return err_fail(err, errlen, "%s: tensor \"%s\" has dtype %s, expected F32, F16 or BF16",
                        file, name, dtype);
    bool same = nd == ndim;
    for (int d = 0; same && d < nd; d++)
        same = sh[d] == shape[d];
    if (!same) {
        char got[96], want[96];
        st_shape_str(nd, sh, got, sizeof got);
        st_shape_str(ndim, shape, want, sizeof want);
        return err_fail(err, errlen, "%s: tensor \"%s\" has shape %s, expected %s", file, name, got,
                        want);
    }
    return 0;
}
