/*
 * fuzz_st_shards — a sharded model's model.safetensors.index.json: the input
 * is the index, in a folder that also holds two small shards (written once,
 * at start-up: "a" (2, 3) and "s" () in model-00001-of-00002.safetensors,
 * "w" (2, 2, 2) in model-00002-of-00002.safetensors); st_shards_open checks
 * the index against them, then every tensor it lists is looked up and read.
 *
 * Bar: no crash, no sanitizer report, nothing left allocated; an index that
 * opens names only tensors its shards hold and can read; no file outside
 * the folder is opened (the index's file names are plain names).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "model/safetensors.h"
#include "model/st_shards.h"

#define MAX_ELEMS 64

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512];
    float a[6] = {1, 2, 3, 4, 5, 6}, s = 0.5f, w[8] = {0};
    StEntry e1[2] = {{.name = "a", .ndim = 2, .shape = {2, 3}, .data = a},
                     {.name = "s", .ndim = 0, .data = &s}};
    StEntry e2[1] = {{.name = "w", .ndim = 3, .shape = {2, 2, 2}, .data = w}};
    if (st_save(fuzz_path("model-00001-of-00002.safetensors", 0), e1, 2, NULL, err, sizeof err) ||
        st_save(fuzz_path("model-00002-of-00002.safetensors", 0), e2, 1, NULL, err, sizeof err))
        fuzz_fail("the shards: %s", err);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    fuzz_write_file(ST_INDEX_FILE, data, size);
    StShards *s = st_shards_open(fuzz_dir(), err, sizeof err);
    if (!s)
        return 0;
    (void)st_shards_path(s);
    float buf[MAX_ELEMS];
    for (int i = 0; i < st_shards_count(s); i++) {
        const char *name = st_shards_name(s, i), *dtype, *file;
        StEntry e = {.name = name, .data = buf, .any_float = true};
        if (st_shards_info(s, name, &dtype, &e.ndim, e.shape, &file) != 0)
            fuzz_fail("'%s' is listed but has no info", name);
        int64_t elems = 1;
        for (int d = 0; d < e.ndim; d++)
            elems *= e.shape[d];
        if (elems > MAX_ELEMS)
            fuzz_fail("'%s' has %lld elements, more than any shard holds", name, (long long)elems);
        if (st_shards_read(s, &e, err, sizeof err) != 0)
            fuzz_fail("'%s' is listed but does not read: %s", name, err);
    }
    st_shards_close(s);
    return 0;
}
