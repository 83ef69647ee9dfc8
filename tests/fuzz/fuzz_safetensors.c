/*
 * fuzz_safetensors — a safetensors file (st_open maps and validates all of
 * it), then every tensor's info, a read of each small float tensor (F32,
 * F16, BF16; 2-D ones also transposed, as HF's Conv1D weights are; and one
 * with a wrong shape, which must fail), a few metadata keys, and the round
 * trip: the tensors read (but one named "", which st_save refuses as a name
 * prefrun never writes), saved with st_save, open again with the same
 * names and shapes.
 *
 * Bar: no crash, no sanitizer report, nothing left allocated, no tensor
 * read past the file; what st_open accepts st_read can read; the round trip
 * holds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "model/safetensors.h"

#define MAX_TENSORS 64
#define MAX_ELEMS ((int64_t)1 << 16)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    const char *path = fuzz_write_file("in.safetensors", data, size);
    StFile *f = st_open(path, err, sizeof err);
    if (!f)
        return 0;
    static const char *const keys[] = {"vocab", "width", "format", "", "__metadata__"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        (void)st_meta(f, keys[k]);
    int n = st_count(f), n_kept = 0;
    StEntry kept[MAX_TENSORS];
    for (int i = 0; i < n; i++) {
        const char *name = st_name(f, i), *dtype;
        StEntry e = {.name = name, .any_float = true};
        if (st_info(f, name, &dtype, &e.ndim, e.shape) != 0)
            fuzz_fail("tensor %d ('%s') is listed but has no info", i, name);
        int64_t elems = 1;
        for (int d = 0; d < e.ndim && elems <= MAX_ELEMS; d++)
            elems = e.shape[d] < 0 || e.shape[d] > MAX_ELEMS ? MAX_ELEMS + 1 : elems * e.shape[d];
        if ((strcmp(dtype, "F32") && strcmp(dtype, "F16") && strcmp(dtype, "BF16")) ||
            elems > MAX_ELEMS)
            continue;
        e.data = malloc((size_t)(elems ? elems : 1) * sizeof(float));
        if (!e.data)
            abort();
        if (st_read(f, &e, err, sizeof err) != 0)
            fuzz_fail("st_open accepted '%s' but st_read fails: %s", name, err);
        if (e.ndim == 2) {
            StEntry t = e;
            t.shape[0] = e.shape[1];
            t.shape[1] = e.shape[0];
            t.transposed = true;
            if (!(t.data = malloc((size_t)(elems ? elems : 1) * sizeof(float))))
                abort();
            if (st_read(f, &t, err, sizeof err) != 0)
                fuzz_fail("'%s' does not read transposed: %s", name, err);
            for (int64_t r = 0; r < e.shape[0]; r++)
                for (int64_t c = 0; c < e.shape[1]; c++)
                    if (memcmp(&e.data[r * e.shape[1] + c], &t.data[c * e.shape[0] + r],
                               sizeof(float)))
                        fuzz_fail("'%s' read transposed is not the transpose", name);
            free(t.data);
        }
        StEntry wrong = e;
        if (wrong.ndim < TENSOR_MAX_DIMS)
            wrong.shape[wrong.ndim++] = 2; /* one dimension more: never the file's shape */
        else
            wrong.ndim = 0;
        if (st_read(f, &wrong, err, sizeof err) == 0)
            fuzz_fail("'%s' read with a shape it does not have", name);
        if (n_kept < MAX_TENSORS && name[0]) /* st_save refuses "" (st_open need not) */
            kept[n_kept++] = e;
        else
            free(e.data);
    }
    if (n_kept > 0) {
        const char *out = fuzz_path("out.safetensors", 1);
        if (st_save(out, kept, n_kept, NULL, err, sizeof err) != 0)
            fuzz_fail("tensors read from a valid file do not save: %s", err);
        StFile *g = st_open(out, err, sizeof err);
        if (!g)
            fuzz_fail("a saved file does not open: %s", err);
        for (int i = 0; i < n_kept; i++) {
            const char *dtype;
            int ndim;
            int64_t shape[TENSOR_MAX_DIMS];
            if (st_info(g, kept[i].name, &dtype, &ndim, shape) != 0 || ndim != kept[i].ndim ||
                memcmp(shape, kept[i].shape, sizeof(int64_t) * (size_t)ndim) != 0)
                fuzz_fail("'%s' saved and opened again has another shape", kept[i].name);
        }
        st_close(g);
    }
    for (int i = 0; i < n_kept; i++)
        free(kept[i].data);
    st_close(f);
    return 0;
}
