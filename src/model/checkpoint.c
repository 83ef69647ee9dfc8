/*
 * model/checkpoint.c — safetensors reading and writing, trainer_state.json, and
 * the checkpoint directories of a run (see checkpoint.h for the layout and
 * the crash-safety argument).
 *
 * Reading trusts nothing in the file: the header length, every offset and
 * every shape are checked against the file's real size, and the tensors must
 * tile the data area exactly, before any byte of data is used.
 */
#include "util/errmsg.h"
#include "model/checkpoint.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/fsutil.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this file assumes a little-endian host"
#endif

/* the reference implementation's limit; a larger "length" is corruption */
#define ST_MAX_HEADER (100u * 1000u * 1000u)

static int64_t numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

static void shape_str(int ndim, const int64_t *shape, char *out, size_t cap)
{
    size_t k = (size_t)snprintf(out, cap, "(");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < cap)
        snprintf(out + k, cap - k, ")");
}

StEntry st_entry(const char *name, const Tensor *t)
{
    StEntry e = {.name = name, .ndim = t->ndim, .data = t->data};
    for (int i = 0; i < t->ndim; i++)
        e.shape[i] = t->shape[i];
    return e;
}

/* ---- writing ---- */

static int check_entries(const char *path, const StEntry *e, int n, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        if (!e[i].name || !*e[i].name || !strcmp(e[i].name, "__metadata__"))
            return err_fail(err, errlen, "%s: tensor %d has no usable name", path, i);
        if (e[i].ndim < 0 || e[i].ndim > TENSOR_MAX_DIMS)
            return err_fail(err, errlen, "%s: tensor \"%s\" has %d dims, expected 0..%d", path,
                            e[i].name, e[i].ndim, TENSOR_MAX_DIMS);
        for (int d = 0; d < e[i].ndim; d++)
            if (e[i].shape[d] < 0)
                return err_fail(err, errlen, "%s: tensor \"%s\" has a negative dim", path,
                                e[i].name);
        if (!e[i].data && numel(e[i].ndim, e[i].shape) > 0)
            return err_fail(err, errlen, "%s: tensor \"%s\" has no data", path, e[i].name);
        for (int j = 0; j < i; j++)
            if (!strcmp(e[i].name, e[j].name))
                return err_fail(err, errlen, "%s: tensor name \"%s\" appears twice", path,
                                e[i].name);
    }
    return 0;
}

/* The header JSON, padded with spaces to a multiple of 8 bytes. */
static char *build_header(const StEntry *e, int n, const char *const *meta, size_t *len)
{
    json_t *root = json_object();
    int64_t off = 0;
    for (int i = 0; root && i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < e[i].ndim; d++)
            json_array_append_new(shape, json_integer(e[i].shape[d]));
        int64_t bytes = numel(e[i].ndim, e[i].shape) * (int64_t)sizeof(float);
        json_t *info = json_pack("{s:s, s:o, s:[I, I]}", "dtype", "F32", "shape", shape,
                                 "data_offsets", (json_int_t)off, (json_int_t)(off + bytes));
        off += bytes;
        if (!info || json_object_set_new(root, e[i].name, info)) {
            json_decref(root);
            root = NULL;
        }
    }
    if (root && meta && meta[0]) {
        json_t *m = json_object();
        int bad = !m;
        for (int i = 0; !bad && meta[i] && meta[i + 1]; i += 2) /* NULL for non-UTF-8 text */
            bad = json_object_set_new(m, meta[i], json_string(meta[i + 1]));
        if (bad)
            json_decref(m); /* json_decref(NULL) is a no-op */
        else
            bad = json_object_set_new(root, "__metadata__", m); /* steals m, even on failure */
        if (bad) {
            json_decref(root);
            root = NULL;
        }
    }
    char *text = root ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text)
        return NULL;
    size_t n0 = strlen(text), padded = (n0 + 7) / 8 * 8;
    char *out = realloc(text, padded + 1);
    if (!out) {
        free(text);
        return NULL;
    }
    memset(out + n0, ' ', padded - n0);
    out[padded] = '\0';
    *len = padded;
    return out;
}

int st_save(const char *path, const StEntry *e, int n, const char *const *meta, char *err,
            size_t errlen)
{
    if (check_entries(path, e, n, err, errlen))
        return -1;
    size_t hlen;
    char *header = build_header(e, n, meta, &hlen);
    if (!header)
        return err_fail(err, errlen,
                        "cannot write %s: out of memory, or a metadata string that is "
                        "not UTF-8",
                        path);
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    if (!f) {
        free(header);
        return -1;
    }
    uint64_t le = hlen; /* the host is little-endian (checked above) */
    fsutil_atomic_write(f, &le, 8);
    fsutil_atomic_write(f, header, hlen);
    for (int i = 0; i < n; i++)
        fsutil_atomic_write(f, e[i].data, (size_t)numel(e[i].ndim, e[i].shape) * sizeof(float));
    free(header);
    return fsutil_atomic_commit(f, err, errlen);
}

/* ---- reading ---- */

typedef struct StTensorInfo {
    char *name;
    char dtype[16];
    int ndim;
    int64_t shape[TENSOR_MAX_DIMS];
    uint64_t begin, end; /* relative to the data area */
} StTensorInfo;

struct StFile {
    char *path;
    char *buf; /* the whole file */
    size_t size;
    const char *data; /* buf + 8 + header length */
    uint64_t data_len;
    int n;
    StTensorInfo *t; /* sorted by begin */
    int n_meta;
    char **meta_keys, **meta_values;
};

static const struct {
    const char *name;
    int bytes;
} dtypes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
    {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
    {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
};

static int dtype_bytes(const char *name)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(dtypes[i].name, name))
            return dtypes[i].bytes;
    return 0;
}

void st_close(StFile *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++)
        free(f->t[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_values[i]);
    }
    free(f->t);
    free(f->meta_keys);
    free(f->meta_values);
    free(f->buf);
    free(f->path);
    free(f);
}

static int parse_metadata(StFile *f, json_t *m, char *err, size_t errlen)
{
    if (!json_is_object(m))
        return err_fail(err, errlen, "%s: bad header: \"__metadata__\" is not an object", f->path);
    size_t n = json_object_size(m);
    f->meta_keys = calloc(n ? n : 1, sizeof(char *));
    f->meta_values = calloc(n ? n : 1, sizeof(char *));
    if (!f->meta_keys || !f->meta_values)
        return err_fail(err, errlen, "%s: out of memory", f->path);
    const char *k;
    json_t *v;
    json_object_foreach(m, k, v)
    {
        if (!json_is_string(v))
            return err_fail(err, errlen, "%s: bad header: metadata \"%s\" is not a string", f->path,
                            k);
        f->meta_keys[f->n_meta] = strdup(k);
        f->meta_values[f->n_meta] = strdup(json_string_value(v));
        if (!f->meta_keys[f->n_meta++] || !f->meta_values[f->n_meta - 1])
            return err_fail(err, errlen, "%s: out of memory", f->path);
    }
    return 0;
}

static bool get_u64(const json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* One tensor's header entry, checked against the data area. */
static int parse_tensor(StFile *f, const char *name, json_t *info, StTensorInfo *t, char *err,
                        size_t errlen)
{
    const char *p = f->path;
    if (!json_is_object(info))
        return err_fail(err, errlen, "%s: bad header: tensor \"%s\" is not an object", p, name);
    json_t *dt = json_object_get(info, "dtype"), *sh = json_object_get(info, "shape");
    json_t *off = json_object_get(info, "data_offsets");
    if (!json_is_string(dt) || !dtype_bytes(json_string_value(dt)))
        return err_fail(err, errlen, "%s: bad header: tensor \"%s\" has %s dtype", p, name,
                        dt ? "an unknown" : "no");
    if (!json_is_array(sh) || json_array_size(sh) > TENSOR_MAX_DIMS)
        return err_fail(err, errlen,
                        "%s: bad header: tensor \"%s\": shape is %s, expected a list of "
                        "at most %d sizes",
                        p, name, sh ? "malformed" : "missing", TENSOR_MAX_DIMS);
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        !get_u64(json_array_get(off, 0), &t->begin) || !get_u64(json_array_get(off, 1), &t->end))
        return err_fail(err, errlen,
                        "%s: bad header: tensor \"%s\": data_offsets is not [begin, end]", p, name);
    snprintf(t->dtype, sizeof t->dtype, "%s", json_string_value(dt));
    t->ndim = (int)json_array_size(sh);
    uint64_t count = 1;
    for (int d = 0; d < t->ndim; d++) {
        uint64_t s;
        if (!get_u64(json_array_get(sh, (size_t)d), &s) || s > (uint64_t)INT32_MAX ||
            (s && count > UINT64_MAX / 16 / s))
            return err_fail(err, errlen, "%s: bad header: tensor \"%s\": shape entry %d is invalid",
                            p, name, d);
        t->shape[d] = (int64_t)s;
        count *= s;
    }
    if (t->begin > t->end || t->end > f->data_len)
        return err_fail(err, errlen,
                        "%s: tensor \"%s\": data_offsets [%" PRIu64 ", %" PRIu64 "] out of range "
                        "(data is %" PRIu64 " bytes; file truncated?)",
                        p, name, t->begin, t->end, f->data_len);
    if (t->end - t->begin != count * (uint64_t)dtype_bytes(t->dtype))
        return err_fail(err, errlen,
                        "%s: tensor \"%s\": data_offsets span %" PRIu64
                        " bytes, its shape and dtype "
                        "need %" PRIu64,
                        p, name, t->end - t->begin, count * (uint64_t)dtype_bytes(t->dtype));
    t->name = strdup(name);
    return t->name ? 0 : err_fail(err, errlen, "%s: out of memory", p);
}

static int by_begin(const void *a, const void *b)
{
    const StTensorInfo *x = a, *y = b;
    return x->begin < y->begin   ? -1
           : x->begin > y->begin ? 1
                                 : (x->end > y->end) - (x->end < y->end);
}

/* The spec: the tensors cover the data area exactly, no holes, no overlap. */
static int check_tiling(const StFile *f, char *err, size_t errlen)
{
    uint64_t at = 0;
    for (int i = 0; i < f->n; i++) {
        if (f->t[i].begin != at)
            return err_fail(err, errlen,
                            "%s: tensor \"%s\" starts at byte %" PRIu64 " of the data, "
                            "expected %" PRIu64 " (%s)",
                            f->path, f->t[i].name, f->t[i].begin, at,
                            f->t[i].begin > at ? "a hole" : "overlapping tensors");
        at = f->t[i].end;
    }
    if (at != f->data_len)
        return err_fail(err, errlen, "%s: %" PRIu64 " bytes of data after the last tensor", f->path,
                        f->data_len - at);
    return 0;
}

static int parse_header(StFile *f, const char *h, size_t hlen, char *err, size_t errlen)
{
    if (hlen == 0 || h[0] != '{')
        return err_fail(err, errlen, "%s: bad header: does not start with '{'", f->path);
    json_error_t jerr;
    json_t *root = json_loadb(h, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return err_fail(err, errlen, "%s: bad header: invalid JSON at byte %d: %s", f->path,
                        jerr.position, jerr.text);
    int rc =
        json_is_object(root) ? 0 : err_fail(err, errlen, "%s: bad header: not an object", f->path);
    size_t n = json_object_size(root);
    f->t = calloc(n ? n : 1, sizeof *f->t);
    if (!rc && !f->t)
        rc = err_fail(err, errlen, "%s: out of memory", f->path);
    const char *name;
    json_t *v;
    json_object_foreach(root, name, v)
    {
        if (rc)
            break;
        if (!strcmp(name, "__metadata__"))
            rc = parse_metadata(f, v, err, errlen);
        else if (!(rc = parse_tensor(f, name, v, &f->t[f->n], err, errlen)))
            f->n++;
    }
    json_decref(root);
    if (rc)
        return -1;
    qsort(f->t, (size_t)f->n, sizeof *f->t, by_begin);
    return check_tiling(f, err, errlen);
}

StFile *st_open(const char *path, char *err, size_t errlen)
{
    StFile *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        err_fail(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    static const FsReadCap cap = {.bytes = ST_MAX_FILE_BYTES, .kind = "a safetensors file"};
    if (fsutil_read_capped(path, &cap, &f->buf, &f->size, err, errlen)) {
        st_close(f);
        return NULL;
    }
    uint64_t hlen = 0;
    int rc = 0;
    if (f->size < 8)
        rc = err_fail(err, errlen,
                      "%s: truncated: %zu bytes, a safetensors file starts with an "
                      "8-byte header length",
                      path, f->size);
    if (!rc) {
        memcpy(&hlen, f->buf, 8);
        if (hlen > ST_MAX_HEADER)
            rc = err_fail(err, errlen,
                          "%s: bad header length %" PRIu64 " (over the %u-byte limit; "
                          "not a safetensors file?)",
                          path, hlen, ST_MAX_HEADER);
        else if (hlen > f->size - 8)
            rc = err_fail(err, errlen,
                          "%s: truncated: header length %" PRIu64 " but only %zu bytes "
                          "follow",
                          path, hlen, f->size - 8);
    }
    if (!rc) {
        f->data = f->buf + 8 + hlen;
        f->data_len = f->size - 8 - hlen;
        rc = parse_header(f, f->buf + 8, (size_t)hlen, err, errlen);
    }
    if (rc) {
        st_close(f);
        return NULL;
    }
    return f;
}

int st_count(const StFile *f) { return f->n; }
const char *st_name(const StFile *f, int i) { return i >= 0 && i < f->n ? f->t[i].name : NULL; }

static const StTensorInfo *find(const StFile *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name))
            return &f->t[i];
    return NULL;
}

int st_info(const StFile *f, const char *name, const char **dtype, int *ndim,
            int64_t shape[TENSOR_MAX_DIMS])
{
    const StTensorInfo *t = find(f, name);
    if (!t)
        return -1;
    if (dtype)
        *dtype = t->dtype;
    if (ndim)
        *ndim = t->ndim;
    if (shape)
        memcpy(shape, t->shape, sizeof t->shape);
    return 0;
}

const char *st_meta(const StFile *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (!strcmp(f->meta_keys[i], key))
            return f->meta_values[i];
    return NULL;
}

int st_read(const StFile *f, const StEntry *e, char *err, size_t errlen)
{
    const StTensorInfo *t = find(f, e->name);
    if (!t)
        return err_fail(err, errlen, "%s: no tensor \"%s\"", f->path, e->name);
    if (strcmp(t->dtype, "F32"))
        return err_fail(err, errlen, "%s: tensor \"%s\" has dtype %s, expected F32", f->path,
                        e->name, t->dtype);
    bool same = t->ndim == e->ndim;
    for (int d = 0; same && d < t->ndim; d++)
        same = t->shape[d] == e->shape[d];
    if (!same) {
        char got[96], want[96];
        shape_str(t->ndim, t->shape, got, sizeof got);
        shape_str(e->ndim, e->shape, want, sizeof want);
        return err_fail(err, errlen, "%s: tensor \"%s\" has shape %s, expected %s", f->path,
                        e->name, got, want);
    }
    memcpy(e->data, f->data + t->begin, (size_t)(t->end - t->begin)); /* may be unaligned */
    return 0;
}

int st_read_all(const StFile *f, const StEntry *e, int n, bool strict, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++)
        if (st_read(f, &e[i], err, errlen))
            return -1;
    for (int j = 0; strict && j < f->n; j++) {
        bool wanted = false;
        for (int i = 0; i < n && !wanted; i++)
            wanted = !strcmp(e[i].name, f->t[j].name);
        if (!wanted)
            return err_fail(err, errlen, "%s: holds tensor \"%s\", which is not expected here",
                            f->path, f->t[j].name);
    }
    return 0;
}

/* ---- trainer_state.json ---- */

int ckpt_state_set(TrainerState *s, const char *name, double value)
{
    for (int i = 0; i < s->n_values; i++) {
        if (!strcmp(s->value_names[i], name)) {
            s->values[i] = value;
            return 0;
        }
    }
    if (s->n_values == CKPT_MAX_VALUES || strlen(name) >= CKPT_VALUE_NAME_LEN)
        return -1;
    snprintf(s->value_names[s->n_values], CKPT_VALUE_NAME_LEN, "%s", name);
    s->values[s->n_values++] = value;
    return 0;
}

double ckpt_state_get(const TrainerState *s, const char *name, double def)
{
    for (int i = 0; i < s->n_values; i++)
        if (!strcmp(s->value_names[i], name))
            return s->values[i];
    return def;
}

/* JSON has no NaN or infinity; those travel as strings */
static json_t *number_json(double x)
{
    if (isnan(x))
        return json_string("nan");
    if (isinf(x))
        return json_string(x > 0 ? "inf" : "-inf");
    return json_real(x);
}

static int number_from_json(const json_t *v, double *x)
{
    if (json_is_number(v)) {
        *x = json_number_value(v);
        return 0;
    }
    const char *s = json_string_value(v);
    if (!s)
        return -1;
    if (!strcmp(s, "nan"))
        *x = NAN;
    else if (!strcmp(s, "inf"))
        *x = INFINITY;
    else if (!strcmp(s, "-inf"))
        *x = -INFINITY;
    else
        return -1;
    return 0;
}

int ckpt_state_save(const char *path, const TrainerState *s, char *err, size_t errlen)
{
    char rng[4][17];
    for (int i = 0; i < 4; i++) /* hex: JSON integers are signed and may lose bits */
        snprintf(rng[i], sizeof rng[i], "%016" PRIx64, s->rng[i]);
    json_t *values = json_object();
    for (int i = 0; values && i < s->n_values; i++)
        json_object_set_new(values, s->value_names[i], number_json(s->values[i]));
    json_t *root = json_pack(
        "{s:s, s:I, s:I, s:I, s:[s,s,s,s], s:I, s:I, s:o}", "format", CKPT_STATE_FORMAT, "step",
        (json_int_t)s->step, "epoch", (json_int_t)s->epoch, "epoch_pos", (json_int_t)s->epoch_pos,
        "rng", rng[0], rng[1], rng[2], rng[3], "tokens_seen", (json_int_t)s->tokens_seen,
        "skipped_batches", (json_int_t)s->skipped_batches, "values", values);
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text)
        return err_fail(err, errlen, "cannot write %s: out of memory", path);
    size_t n = strlen(text);
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    int rc = -1;
    if (f) {
        fsutil_atomic_write(f, text, n);
        fsutil_atomic_write(f, "\n", 1);
        rc = fsutil_atomic_commit(f, err, errlen);
    }
    free(text);
    return rc;
}

static int get_int_field(const json_t *root, const char *key, int64_t *out, const char *path,
                         char *err, size_t errlen)
{
    const json_t *v = json_object_get(root, key);
    if (!json_is_integer(v))
        return err_fail(err, errlen, "%s: field \"%s\" is %s, expected an integer", path, key,
                        v ? "not an integer" : "missing");
    *out = json_integer_value(v);
    /* counters of a run: never negative, and far from where step + 1 or a
     * sum of tokens could overflow */
    if (*out < 0 || *out > CKPT_MAX_COUNT)
        return err_fail(err, errlen, "%s: field \"%s\" is %lld, expected 0 to %lld", path, key,
                        (long long)*out, (long long)CKPT_MAX_COUNT);
    return 0;
}

static int parse_state(const json_t *root, TrainerState *s, const char *path, char *err,
                       size_t errlen)
{
    if (!json_is_object(root))
        return err_fail(err, errlen, "%s: expected a JSON object", path);
    if (get_int_field(root, "step", &s->step, path, err, errlen) ||
        get_int_field(root, "epoch", &s->epoch, path, err, errlen) ||
        get_int_field(root, "epoch_pos", &s->epoch_pos, path, err, errlen) ||
        get_int_field(root, "tokens_seen", &s->tokens_seen, path, err, errlen) ||
        get_int_field(root, "skipped_batches", &s->skipped_batches, path, err, errlen))
        return -1;
    /* after the fields, whose own messages come first */
    const char *format = json_string_value(json_object_get(root, "format"));
    if (!format || strcmp(format, CKPT_STATE_FORMAT))
        return err_fail(err, errlen, "%s: format is %s%s%s, expected \"%s\"", path,
                        format ? "\"" : "", format ? format : "missing", format ? "\"" : "",
                        CKPT_STATE_FORMAT);
    const json_t *rng = json_object_get(root, "rng");
    for (int i = 0; i < 4; i++) {
        const char *h = json_string_value(json_array_get(rng, (size_t)i));
        char *end = NULL;
        if (h)
            s->rng[i] = strtoull(h, &end, 16);
        if (!json_is_array(rng) || json_array_size(rng) != 4 || !h || !*h || *end)
            return err_fail(err, errlen, "%s: field \"rng\" is not a list of 4 hex strings", path);
    }
    const json_t *values = json_object_get(root, "values"), *v;
    const char *name;
    if (values && !json_is_object(values))
        return err_fail(err, errlen, "%s: field \"values\" is not an object", path);
    json_object_foreach((json_t *)values, name, v)
    {
        double x;
        if (number_from_json(v, &x))
            return err_fail(err, errlen, "%s: value \"%s\" is not a number", path, name);
        if (ckpt_state_set(s, name, x))
            return err_fail(err, errlen, "%s: too many values, or name \"%s\" too long", path,
                            name);
    }
    return 0;
}

int ckpt_state_load(const char *path, TrainerState *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    char *text;
    size_t len;
    static const FsReadCap cap = {.bytes = (size_t)1 << 20, .kind = "a trainer state"};
    if (fsutil_read_capped(path, &cap, &text, &len, err, errlen))
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!root)
        return err_fail(err, errlen, "%s:%d: invalid JSON: %s", path, jerr.line, jerr.text);
    int rc = parse_state(root, s, path, err, errlen);
    json_decref(root);
    return rc;
}

int ckpt_state_load_at(const char *dir, int64_t step, TrainerState *s, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_STATE_FILE);
    if (ckpt_state_load(path, s, err, errlen) != 0)
        return -1;
    if (s->step != step)
        return err_fail(err, errlen, "%s: step is %lld, but the checkpoint is of step %lld", path,
                        (long long)s->step, (long long)step);
    return 0;
}

/* ---- checkpoint directories ---- */

int ckpt_path(char *out, size_t cap, const char *run_dir, int64_t step, const char *file)
{
    int n = file ? snprintf(out, cap, "%s/checkpoint-%lld/%s", run_dir, (long long)step, file)
                 : snprintf(out, cap, "%s/checkpoint-%lld", run_dir, (long long)step);
    return n >= 0 && (size_t)n < cap ? 0 : -1;
}

static void partial_path(char *out, size_t cap, const char *run_dir, int64_t step)
{
    snprintf(out, cap, "%s/.checkpoint-%lld.partial", run_dir, (long long)step);
}

/* "checkpoint-<digits>" exactly; its step, or -1 */
static int64_t parse_ckpt_name(const char *name)
{
    if (strncmp(name, "checkpoint-", 11) || !isdigit((unsigned char)name[11]))
        return -1;
    char *end;
    errno = 0;
    long long s = strtoll(name + 11, &end, 10);
    return errno || *end ? -1 : (int64_t)s;
}

static bool complete(const char *run_dir, int64_t step)
{
    char p[PATH_MAX];
    if (ckpt_path(p, sizeof p, run_dir, step, CKPT_MODEL_FILE) || !fsutil_exists(p))
        return false;
    return !ckpt_path(p, sizeof p, run_dir, step, CKPT_STATE_FILE) && fsutil_exists(p);
}

/* Steps of the complete checkpoints, newest first; count in *n (malloc'ed). */
static int list_checkpoints(const char *run_dir, int64_t **steps, int *n, char *err, size_t errlen)
{
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(run_dir);
    if (!d)
        return err_fail(err, errlen, "cannot open %s: %s", run_dir, strerror(errno));
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        int64_t s = parse_ckpt_name(de->d_name);
        if (s < 0 || !complete(run_dir, s))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *ns = realloc(*steps, (size_t)cap * sizeof *ns);
            if (!ns) {
                closedir(d);
                free(*steps);
                *steps = NULL;
                return err_fail(err, errlen, "out of memory");
            }
            *steps = ns;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    for (int i = 1; i < *n; i++) /* insertion sort, descending: few entries */
        for (int j = i; j > 0 && (*steps)[j] > (*steps)[j - 1]; j--) {
            int64_t t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = t;
        }
    return 0;
}

/* The step `latest` names, or -1 when it is missing or unreadable. */
static int64_t read_latest(const char *run_dir)
{
    char p[PATH_MAX], *text;
    size_t len;
    snprintf(p, sizeof p, "%s/latest", run_dir);
    static const FsReadCap cap = {.bytes = 64, .kind = "a latest pointer"};
    if (fsutil_read_capped(p, &cap, &text, &len, NULL, 0))
        return -1;
    while (len && isspace((unsigned char)text[len - 1]))
        text[--len] = '\0';
    int64_t s = parse_ckpt_name(text);
    free(text);
    return s;
}

/* Removes hidden leftovers of interrupted commits and prunes. */
static int clean_hidden(const char *run_dir, char *err, size_t errlen)
{
    DIR *d = opendir(run_dir);
    if (!d)
        return err_fail(err, errlen, "cannot open %s: %s", run_dir, strerror(errno));
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d))) {
        if (strncmp(de->d_name, ".checkpoint-", 12))
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", run_dir, de->d_name);
        rc = fsutil_remove_tree(p, err, errlen);
    }
    closedir(d);
    return rc;
}

int ckpt_begin(const char *run_dir, int64_t step, char *dir, size_t dirlen, char *err,
               size_t errlen)
{
    if (step < 0)
        return err_fail(err, errlen, "checkpoint step %lld is negative", (long long)step);
    if (fsutil_mkdirs(run_dir, err, errlen) || clean_hidden(run_dir, err, errlen))
        return -1;
    char p[PATH_MAX];
    partial_path(p, sizeof p, run_dir, step);
    if (strlen(p) + 32 >= dirlen || strlen(p) + 32 >= sizeof p)
        return err_fail(err, errlen, "%s: path too long", run_dir);
    if (fsutil_mkdirs(p, err, errlen))
        return -1;
    snprintf(dir, dirlen, "%s", p);
    return 0;
}

/* Puts the partial directory at final; an existing final is swapped out
 * atomically where the kernel can (renameat2 RENAME_EXCHANGE), so a
 * checkpoint of that step exists at every instant. */
static int publish(const char *partial, const char *final, const char *run_dir, int64_t step,
                   char *err, size_t errlen)
{
    if (!fsutil_is_dir(final)) {
        if (rename(partial, final) != 0)
            return err_fail(err, errlen, "cannot rename %s to %s: %s", partial, final,
                            strerror(errno));
        return 0;
    }
    if (renameat2(AT_FDCWD, partial, AT_FDCWD, final, RENAME_EXCHANGE) == 0)
        return fsutil_remove_tree(partial, err, errlen); /* now holds the old files */
    char old[PATH_MAX];
    snprintf(old, sizeof old, "%s/.checkpoint-%lld.deleting", run_dir, (long long)step);
    if (fsutil_remove_tree(old, err, errlen))
        return -1;
    if (rename(final, old) != 0 || rename(partial, final) != 0)
        return err_fail(err, errlen, "cannot replace %s: %s", final, strerror(errno));
    return fsutil_remove_tree(old, err, errlen);
}

int ckpt_commit(const char *run_dir, int64_t step, int keep_last, char *err, size_t errlen)
{
    char partial[PATH_MAX], final[PATH_MAX], p[PATH_MAX + 32];
    partial_path(partial, sizeof partial, run_dir, step);
    if (ckpt_path(final, sizeof final, run_dir, step, NULL))
        return err_fail(err, errlen, "%s: path too long", run_dir);
    const char *need[] = {CKPT_MODEL_FILE, CKPT_STATE_FILE};
    for (int i = 0; i < 2; i++) {
        snprintf(p, sizeof p, "%s/%s", partial, need[i]);
        if (!fsutil_exists(p))
            return err_fail(err, errlen, "checkpoint %s is incomplete: no %s", partial, need[i]);
    }
    if (fsutil_fsync_dir(partial, err, errlen) ||
        publish(partial, final, run_dir, step, err, errlen) ||
        fsutil_fsync_dir(run_dir, err, errlen))
        return -1;
    char text[64];
    int n = snprintf(text, sizeof text, "checkpoint-%lld\n", (long long)step);
    snprintf(p, sizeof p, "%s/latest", run_dir);
    if (fsutil_write_atomic(p, text, (size_t)n, err, errlen))
        return -1;
    return ckpt_prune(run_dir, keep_last, err, errlen);
}

int ckpt_find_latest(const char *run_dir, char *dir, size_t dirlen, int64_t *step, char *err,
                     size_t errlen)
{
    if (!fsutil_is_dir(run_dir)) {
        err_fail(err, errlen, "%s: no such run directory", run_dir);
        return 1;
    }
    int64_t s = read_latest(run_dir);
    if (s < 0 || !complete(run_dir, s)) { /* no pointer yet, or it was lost: scan */
        int64_t *steps;
        int n;
        if (list_checkpoints(run_dir, &steps, &n, err, errlen))
            return -1;
        s = n ? steps[0] : -1;
        free(steps);
    }
    if (s < 0) {
        err_fail(err, errlen, "%s: no complete checkpoint", run_dir);
        return 1;
    }
    if (ckpt_path(dir, dirlen, run_dir, s, NULL))
        return err_fail(err, errlen, "%s: path too long", run_dir);
    *step = s;
    return 0;
}

int ckpt_prune(const char *run_dir, int keep_last, char *err, size_t errlen)
{
    if (keep_last <= 0)
        return 0;
    int64_t *steps, latest = read_latest(run_dir);
    int n, rc = 0;
    if (list_checkpoints(run_dir, &steps, &n, err, errlen))
        return -1;
    for (int i = keep_last; i < n && !rc; i++) {
        if (steps[i] == latest)
            continue;
        char from[PATH_MAX], to[PATH_MAX];
        ckpt_path(from, sizeof from, run_dir, steps[i], NULL);
        snprintf(to, sizeof to, "%s/.checkpoint-%lld.deleting", run_dir, (long long)steps[i]);
        /* hide it first, so a crash mid-removal never leaves a half checkpoint in view */
        if (rename(from, to) != 0)
            rc = err_fail(err, errlen, "cannot remove %s: %s", from, strerror(errno));
        else
            rc = fsutil_remove_tree(to, err, errlen);
    }
    free(steps);
    return rc;
}
