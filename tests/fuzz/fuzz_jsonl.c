/*
 * fuzz_jsonl — a TRL preference JSONL file from memory
 * (data_load_jsonl_text), strict and with skip_invalid, then what training
 * does with the pairs: sequences, a batch in file order, a held-out split.
 *
 * Bar: no crash, no sanitizer report, nothing left allocated; every pair
 * loaded fits max_length (the batch of width max_length takes it).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "train/data.h"

#define L 48
#define P 16

static void use(const Dataset *ds)
{
    char err[512];
    int32_t seq[L];
    for (int64_t i = 0; i < ds->n && i < 8; i++)
        for (int r = 0; r < 2; r++)
            if (data_pair_sequence(ds, i, r, seq, L) < 0)
                fuzz_fail("pair %lld does not fit max_length %d", (long long)i, L);
    DataBatch *b = data_batch_new(4, L);
    if (!b)
        abort();
    int n = ds->n < 4 ? (int)ds->n : 4;
    if (data_batch_fill_range(ds, 0, n, b, err, sizeof err) != 0)
        fuzz_fail("a batch of %d loaded pairs: %s", n, err);
    data_batch_free(b);
    Dataset *tr = NULL, *ho = NULL;
    if (data_split(ds, 0.25, 1, &tr, &ho, err, sizeof err) == 0) {
        data_free(tr);
        data_free(ho);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    for (int skip = 0; skip < 2; skip++) {
        DataOptions opt = {.max_length = L, .max_prompt_length = P, .skip_invalid = skip};
        Dataset *ds =
            data_load_jsonl_text((const char *)data, size, "fuzz.jsonl", &opt, err, sizeof err);
        if (!ds)
            continue;
        use(ds);
        data_free(ds);
    }
    return 0;
}
