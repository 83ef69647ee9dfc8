/*
 * model/safetensors.c — safetensors reading and writing (safetensors.h).
 *
 * Reading trusts nothing in the file: the header length, every offset and
 * every shape are checked against the file's real size, and the tensors must
 * tile the data area exactly, before any byte of data is used. The file is
 * mapped read-only, so the only copy of a tensor is the one made into its
 * destination, converted and (for Conv1D weights) transposed on the way.
 */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/half.h"
#include "util/errmsg.h"
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

void st_shape_str(int ndim, const int64_t *shape, char *out, size_t cap)
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

/* ---- dtypes ---- */

static const char *const float_names[] = {[ST_F32] = "F32", [ST_BF16] = "BF16", [ST_F16] = "F16"};

const char *st_dtype_name(StDtype d) { return float_names[d]; }

static int64_t dtype_size(StDtype d) { return d == ST_F32 ? 4 : 2; }

/* the float dtype of a header's dtype string, or -1 */
static int float_dtype(const char *name)
{
    for (int d = 0; d < 3; d++)
        if (!strcmp(float_names[d], name))
            return d;
    return -1;
}

int st_dtype_parse(const char *name, StDtype *out, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        StDtype d;
    } names[] = {{"f32", ST_F32},       {"float32", ST_F32}, {"fp32", ST_F32},    {"bf16", ST_BF16},
                 {"bfloat16", ST_BF16}, {"f16", ST_F16},     {"float16", ST_F16}, {"fp16", ST_F16}};
    for (size_t i = 0; name && i < sizeof names / sizeof names[0]; i++) {
        if (!strcasecmp(name, names[i].name)) {
            *out = names[i].d;
            return 0;
        }
    }
    return err_fail(err, errlen,
                    "dtype \"%s\" is not one prefrun writes: expected f32, bf16 or f16",
                    name ? name : "");
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
        if (e[i].transposed && e[i].ndim != 2)
            return err_fail(err, errlen, "%s: tensor \"%s\" is transposed but has %d dims, not 2",
                            path, e[i].name, e[i].ndim);
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
static char *build_header(const StEntry *e, int n, const char *const *meta, StDtype dt, size_t *len)
{
    json_t *root = json_object();
    int64_t off = 0;
    for (int i = 0; root && i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < e[i].ndim; d++) /* the file's shape: a transposed entry's swapped */
            json_array_append_new(shape, json_integer(e[i].shape[e[i].transposed ? 1 - d : d]));
        int64_t bytes = numel(e[i].ndim, e[i].shape) * dtype_size(dt);
        json_t *info = json_pack("{s:s, s:o, s:[I, I]}", "dtype", st_dtype_name(dt), "shape", shape,
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

/* One element in the file's dtype at p; its size. */
static size_t encode(unsigned char *p, float v, StDtype dt)
{
    if (dt == ST_F32) {
        memcpy(p, &v, 4);
        return 4;
    }
    uint16_t h = dt == ST_BF16 ? half_f32_to_bf16(v) : half_f32_to_f16(v);
    memcpy(p, &h, 2);
    return 2;
}

/* A tensor's data in file order and dtype: F32 as it is, anything else
 * converted (and a transposed entry gathered) through a small buffer. */
static void write_data(FsAtomic *f, const StEntry *e, StDtype dt)
{
    int64_t n = numel(e->ndim, e->shape);
    if (dt == ST_F32 && !e->transposed) {
        fsutil_atomic_write(f, e->data, (size_t)n * sizeof(float));
        return;
    }
    unsigned char buf[16384];
    /* file element (r, c) of the (rows, cols) file tensor */
    int64_t rows = e->transposed ? e->shape[1] : 1, cols = e->transposed ? e->shape[0] : n;
    size_t k = 0;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++) {
            k += encode(buf + k, e->transposed ? e->data[c * rows + r] : e->data[c], dt);
            if (k == sizeof buf) {
                fsutil_atomic_write(f, buf, k);
                k = 0;
            }
        }
    }
    fsutil_atomic_write(f, buf, k);
}

int st_save_as(const char *path, const StEntry *e, int n, const char *const *meta, StDtype dtype,
               char *err, size_t errlen)
{
    if (dtype != ST_F32 && dtype != ST_BF16 && dtype != ST_F16)
        return err_fail(err, errlen, "%s: dtype %d is not one prefrun writes", path, (int)dtype);
    if (check_entries(path, e, n, err, errlen))
        return -1;
    size_t hlen;
    char *header = build_header(e, n, meta, dtype, &hlen);
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
        write_data(f, &e[i], dtype);
    free(header);
    return fsutil_atomic_commit(f, err, errlen);
}

int st_save(const char *path, const StEntry *e, int n, const char *const *meta, char *err,
            size_t errlen)
{
    return st_save_as(path, e, n, meta, ST_F32, err, errlen);
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
    unsigned char *map; /* the whole file, mapped read-only; NULL when under 8 bytes */
    size_t size;
    const unsigned char *data; /* map + 8 + header length */
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
    if (f->map)
        munmap(f->map, f->size);
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

/* Anything but a regular file is refused in fsutil's words: asked to read
 * it with a cap of 0 bytes, fsutil_read_capped names what it is (a
 * directory, a FIFO, a device) and reads nothing. */
static int refuse_special(const char *path, char *err, size_t errlen)
{
    static const FsReadCap none = {.bytes = 0, .kind = "a safetensors file"};
    char *buf = NULL;
    size_t len;
    if (fsutil_read_capped(path, &none, &buf, &len, err, errlen) == 0) /* replaced meanwhile */
        err_fail(err, errlen, "%s: not a regular file (a safetensors file)", path);
    free(buf);
    return -1;
}

/* Maps f->path whole, with fsutil_read_capped's refusals: a regular file
 * only (O_NONBLOCK: a FIFO with no writer must not hang the open), at most
 * ST_MAX_FILE_BYTES. A file under 8 bytes is not mapped. */
static int map_file(StFile *f, char *err, size_t errlen)
{
    int fd = open(f->path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return err_fail(err, errlen, "cannot read %s: %s", f->path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0)
        rc = err_fail(err, errlen, "cannot read %s: %s", f->path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = refuse_special(f->path, err, errlen);
    else if ((uint64_t)st.st_size > ST_MAX_FILE_BYTES)
        rc = err_fail(err, errlen, "%s: larger than %zu bytes, the cap for a safetensors file",
                      f->path, ST_MAX_FILE_BYTES);
    else if ((f->size = (size_t)st.st_size) >= 8) {
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED)
            rc = err_fail(err, errlen, "cannot map %s: %s", f->path, strerror(errno));
        else
            f->map = p;
    }
    close(fd);
    return rc;
}

StFile *st_open(const char *path, char *err, size_t errlen)
{
    StFile *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        err_fail(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    uint64_t hlen = 0;
    int rc = map_file(f, err, errlen);
    if (!rc && f->size < 8)
        rc = err_fail(err, errlen,
                      "%s: truncated: %zu bytes, a safetensors file starts with an "
                      "8-byte header length",
                      path, f->size);
    if (!rc) {
        memcpy(&hlen, f->map, 8);
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
        f->data = f->map + 8 + hlen;
        f->data_len = f->size - 8 - hlen;
        rc = parse_header(f, (const char *)f->map + 8, (size_t)hlen, err, errlen);
    }
    if (rc) {
        st_close(f);
        return NULL;
    }
    return f;
}

const char *st_path(const StFile *f) { return f->path; }
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

/* n elements of dtype dt at p (which may be unaligned) as float32 */
static void load_run(const unsigned char *p, StDtype dt, float *out, int64_t n)
{
    if (dt == ST_F32)
        memcpy(out, p, (size_t)n * sizeof(float));
    else if (dt == ST_BF16)
        half_bf16_load(out, p, n);
    else
        half_f16_load(out, p, n);
}

/* src (the file's bytes of one tensor) into e->data, converted; a
 * transposed entry a 32 x 32 tile at a time: its rows read into the tile,
 * then written out as columns, so both sides stream through the cache */
static void convert(const unsigned char *src, StDtype dt, const StEntry *e)
{
    int64_t es = dtype_size(dt);
    if (!e->transposed) {
        load_run(src, dt, e->data, numel(e->ndim, e->shape));
        return;
    }
    enum { TILE = 32 };
    float tile[TILE][TILE];
    int64_t R = e->shape[1], K = e->shape[0]; /* the file holds (R, K), e is (K, R) */
    for (int64_t r0 = 0; r0 < R; r0 += TILE) {
        int64_t nr = R - r0 < TILE ? R - r0 : TILE;
        for (int64_t k0 = 0; k0 < K; k0 += TILE) {
            int64_t nk = K - k0 < TILE ? K - k0 : TILE;
            for (int64_t r = 0; r < nr; r++)
                load_run(src + ((r0 + r) * K + k0) * es, dt, tile[r], nk);
            for (int64_t k = 0; k < nk; k++)
                for (int64_t r = 0; r < nr; r++)
                    e->data[(k0 + k) * R + r0 + r] = tile[r][k];
        }
    }
}

/* The shape e expects the file to hold: its own, or its transpose. */
static void file_shape(const StEntry *e, int64_t shape[TENSOR_MAX_DIMS])
{
    for (int d = 0; d < e->ndim; d++)
        shape[d] = e->shape[e->transposed ? 1 - d : d];
}

int st_read(const StFile *f, const StEntry *e, char *err, size_t errlen)
{
    const StTensorInfo *t = find(f, e->name);
    if (!t)
        return err_fail(err, errlen, "%s: no tensor \"%s\"", f->path, e->name);
    int dt = float_dtype(t->dtype);
    if (dt != ST_F32 && (!e->any_float || dt < 0))
        return err_fail(err, errlen, "%s: tensor \"%s\" has dtype %s, expected F32%s", f->path,
                        e->name, t->dtype, e->any_float ? ", F16 or BF16" : "");
    if (e->transposed && e->ndim != 2)
        return err_fail(err, errlen, "%s: tensor \"%s\": only a 2-D tensor reads transposed",
                        f->path, e->name);
    int64_t want[TENSOR_MAX_DIMS];
    file_shape(e, want);
    bool same = t->ndim == e->ndim;
    for (int d = 0; same && d < t->ndim; d++)
        same = t->shape[d] == want[d];
    if (!same) {
        char got[96], exp[96];
        st_shape_str(t->ndim, t->shape, got, sizeof got);
        st_shape_str(e->ndim, want, exp, sizeof exp);
        return err_fail(err, errlen, "%s: tensor \"%s\" has shape %s, expected %s%s", f->path,
                        e->name, got, exp, e->transposed ? " (stored transposed)" : "");
    }
    convert(f->data + t->begin, (StDtype)dt, e);
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
