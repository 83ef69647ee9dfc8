/*
 * fuzz_trainer_state — a checkpoint's trainer_state.json (ckpt_state_load),
 * and for a state that loads, the round trip a resume relies on: saved with
 * ckpt_state_save and loaded again, every field is the same, doubles bit
 * for bit.
 *
 * Bar: no crash, no sanitizer report, nothing left allocated; the round
 * trip holds.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "model/checkpoint.h"

static TrainerState st, back; /* ~5 KiB each */

static int same(const TrainerState *a, const TrainerState *b)
{
    if (a->step != b->step || a->epoch != b->epoch || a->epoch_pos != b->epoch_pos ||
        memcmp(a->rng, b->rng, sizeof a->rng) || a->tokens_seen != b->tokens_seen ||
        a->skipped_batches != b->skipped_batches || a->n_values != b->n_values)
        return 0;
    for (int i = 0; i < a->n_values; i++)
        if (strcmp(a->value_names[i], b->value_names[i]) ||
            memcmp(&a->values[i], &b->values[i], sizeof(double)))
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    const char *path = fuzz_write_file("trainer_state.json", data, size);
    if (ckpt_state_load(path, &st, err, sizeof err) != 0)
        return 0;
    const char *out = fuzz_path("saved_state.json", 1);
    if (ckpt_state_save(out, &st, err, sizeof err) != 0)
        fuzz_fail("a loaded state does not save: %s", err);
    if (ckpt_state_load(out, &back, err, sizeof err) != 0)
        fuzz_fail("a saved state does not load back: %s", err);
    if (!same(&st, &back))
        fuzz_fail("a saved state reads back different");
    return 0;
}
