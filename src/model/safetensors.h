/*
 * model/safetensors.h — one safetensors file: reading (mapped, validated,
 * converted to float32) and writing (atomic, in F32, BF16 or F16).
 *
 * Safetensors (huggingface/safetensors, the format PyTorch and HF users
 * read): an 8-byte little-endian header length N, N bytes of JSON header,
 * then the data. The header maps each tensor name to {"dtype", "shape",
 * "data_offsets": [begin, end]} (offsets relative to the data start) and may
 * hold "__metadata__", a string-to-string map. prefrun writes F32 (BF16 or
 * F16 on request, for export), pads the header with spaces to a multiple of
 * 8 (so data is aligned, as the reference writer does) and writes the file
 * atomically (fsutil).
 *
 * Reading maps the file read-only (mmap: a checkpoint of many gigabytes is
 * not copied into memory first) and validates everything before any tensor
 * is used and before anything is allocated beyond the header's own entries:
 * a truncated file, a bad or oversized header, offsets out of range,
 * overlapping or leaving holes (the spec forbids both) are errors naming the
 * file and the tensor. Tensors may come in any order in the header. Each
 * read then converts one tensor straight from the mapping into its
 * destination: F32 copied, F16 and BF16 widened exactly (half.h), a Conv1D
 * weight transposed on the way when asked.
 *
 *     StEntry e[2] = {st_entry("wte", wte), st_entry("wpe", wpe)};
 *     st_save("model.safetensors", e, 2, NULL, err, sizeof err);
 *     StFile *f = st_open("model.safetensors", err, sizeof err);
 *     st_read_all(f, e, 2, true, err, sizeof err);   // into wte->data, wpe->data
 *     st_close(f);
 *
 * The mapping lives until st_close; a file truncated by another process
 * while mapped would fault (SIGBUS) on the next read, as with any mmap.
 */
#ifndef PREFRUN_SAFETENSORS_H
#define PREFRUN_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

/* a model file is mapped, not read; the cap bounds what one file may claim
 * (64 GiB holds 16G float32 weights) */
#define ST_MAX_FILE_BYTES ((size_t)1 << 36)

/* The float dtypes prefrun converts from and writes. */
typedef enum StDtype { ST_F32, ST_BF16, ST_F16 } StDtype;

/* "F32", "BF16", "F16" */
const char *st_dtype_name(StDtype d);
/* The dtype of a name ("F32", "bf16", "float16", ... case-insensitive);
 * 0, or -1 with err naming the accepted ones. */
int st_dtype_parse(const char *name, StDtype *out, char *err, size_t errlen);

/* One named float32 tensor: the source when saving, the destination (shape
 * checked, data written) when reading. */
typedef struct StEntry {
    const char *name;
    int ndim; /* 0..TENSOR_MAX_DIMS */
    int64_t shape[TENSOR_MAX_DIMS];
    float *data; /* (prod(shape)) */
    /* 2-D only: the file holds the transpose, (shape[1], shape[0]) (HF
     * GPT-2's Conv1D weights are stored [in, out], nn.Linear's [out, in]) */
    bool transposed;
    /* reading: F16 and BF16 are accepted too, converted exactly; without
     * it only F32 is (prefrun's own checkpoints are F32) */
    bool any_float;
} StEntry;

/* "(2, 3)", for messages */
void st_shape_str(int ndim, const int64_t *shape, char *out, size_t cap);

/* An entry viewing t's shape and data under the given name. */
StEntry st_entry(const char *name, const Tensor *t);

/* Writes n entries (names distinct) atomically in F32. meta: NULL, or a
 * NULL-terminated list of key, value strings for "__metadata__". */
int st_save(const char *path, const StEntry *e, int n, const char *const *meta, char *err,
            size_t errlen);
/* st_save with every tensor converted to dtype (rounded to nearest even). */
int st_save_as(const char *path, const StEntry *e, int n, const char *const *meta, StDtype dtype,
               char *err, size_t errlen);

typedef struct StFile StFile;

/* Maps and validates the whole file (a regular file of at most
 * ST_MAX_FILE_BYTES). */
StFile *st_open(const char *path, char *err, size_t errlen);
void st_close(StFile *f);
const char *st_path(const StFile *f);
int st_count(const StFile *f);
const char *st_name(const StFile *f, int i); /* in data order */
/* dtype, shape of a tensor; -1 when absent */
int st_info(const StFile *f, const char *name, const char **dtype, int *ndim,
            int64_t shape[TENSOR_MAX_DIMS]);
/* A "__metadata__" value, or NULL. */
const char *st_meta(const StFile *f, const char *key);
/* Converts tensor e->name into e->data after checking its dtype (F32; with
 * e->any_float F16 and BF16 too) and its shape (e's, or its transpose). */
int st_read(const StFile *f, const StEntry *e, char *err, size_t errlen);
/* st_read for every entry; strict: the file may hold no other tensors. */
int st_read_all(const StFile *f, const StEntry *e, int n, bool strict, char *err, size_t errlen);

#endif
