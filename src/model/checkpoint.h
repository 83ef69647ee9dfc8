/*
 * model/checkpoint.h — the checkpoint directory of a run and its trainer
 * state; the safetensors files in it are safetensors.h's (included here, as
 * every user of a checkpoint reads one).
 *
 * Checkpoint directory of a run:
 *     RUN_DIR/checkpoint-<step>/model.safetensors
 *                              /optimizer.safetensors
 *                              /trainer_state.json
 *                              /config.yaml
 *                              /loss.lua
 *     RUN_DIR/latest            "checkpoint-<step>\n"
 * ckpt_begin makes RUN_DIR/.checkpoint-<step>.partial/; the trainer writes
 * the files there; ckpt_commit renames it to checkpoint-<step> (one atomic
 * rename of a directory whose files are all fsync'ed), fsyncs RUN_DIR, and
 * only then rewrites `latest` atomically and prunes old checkpoints (each is
 * first renamed to a hidden name, then removed). So at every instant
 * `latest` names a complete checkpoint, and a kill -9 at any moment leaves
 * it loadable; stale hidden directories are cleaned by the next ckpt_begin.
 */
#ifndef PREFRUN_CHECKPOINT_H
#define PREFRUN_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/safetensors.h"

/* ---- trainer state (trainer_state.json) ---- */

#define CKPT_MAX_VALUES 64
#define CKPT_VALUE_NAME_LEN 64

/* What the trainer needs, besides weights and optimizer moments, to resume
 * exactly. `values` carries any other numbers (running metric sums, counters)
 * under names the trainer picks; doubles round-trip bit for bit. */
#define CKPT_STATE_FORMAT "prefrun-trainer-state-1"
#define CKPT_MAX_COUNT ((int64_t)1 << 53) /* steps, tokens: exact in a double too */

typedef struct TrainerState {
    int64_t step;      /* optimizer steps done */
    int64_t epoch;     /* DataOrder.epoch */
    int64_t epoch_pos; /* DataOrder.pos */
    uint64_t rng[4];   /* the trainer's Rng state */
    int64_t tokens_seen;
    int64_t skipped_batches; /* nan_policy = skip */
    int n_values;
    char value_names[CKPT_MAX_VALUES][CKPT_VALUE_NAME_LEN];
    double values[CKPT_MAX_VALUES];
} TrainerState;

int ckpt_state_set(TrainerState *s, const char *name, double value); /* 0, or -1 when full */
/* The value, or def when absent. */
double ckpt_state_get(const TrainerState *s, const char *name, double def);
int ckpt_state_save(const char *path, const TrainerState *s, char *err, size_t errlen);
/* Loads and checks a trainer state: its format must be CKPT_STATE_FORMAT
 * (a newer or unknown one is refused, not guessed at) and every counter in
 * [0, CKPT_MAX_COUNT]. */
int ckpt_state_load(const char *path, TrainerState *s, char *err, size_t errlen);
/* The same for the state of checkpoint directory dir, whose name says it
 * was taken at `step`: a state that claims another step is refused. */
int ckpt_state_load_at(const char *dir, int64_t step, TrainerState *s, char *err, size_t errlen);

/* ---- checkpoint directories ---- */

#define CKPT_MODEL_FILE "model.safetensors"
/* A LoRA run's checkpoint holds its adapters in PEFT's layout (model/lora.h)
 * instead of the model file: the base model stays where the run read it. */
#define CKPT_ADAPTER_FILE "adapter_model.safetensors"
#define CKPT_ADAPTER_CONFIG_FILE "adapter_config.json"
#define CKPT_OPTIMIZER_FILE "optimizer.safetensors"
#define CKPT_STATE_FILE "trainer_state.json"
#define CKPT_CONFIG_FILE "config.yaml"
#define CKPT_LOSS_FILE "loss.lua"

/* Creates RUN_DIR (mkdir -p) and an empty RUN_DIR/.checkpoint-<step>.partial/,
 * removing stale partial or half-deleted directories; its path goes to dir. */
int ckpt_begin(const char *run_dir, int64_t step, char *dir, size_t dirlen, char *err,
               size_t errlen);
/* Publishes the partial directory as checkpoint-<step> (replacing one of the
 * same step), points `latest` at it, then keeps the newest keep_last
 * checkpoints (0: all). The checkpoint must hold model.safetensors (or a
 * LoRA run's adapter_model.safetensors) and trainer_state.json. */
int ckpt_commit(const char *run_dir, int64_t step, int keep_last, char *err, size_t errlen);
/* The last complete checkpoint: the one `latest` names, or when `latest` is
 * missing or names no complete checkpoint, the highest complete
 * checkpoint-<step>. Its directory goes to dir and its step to *step.
 * Returns 0, 1 when the run has no checkpoint (not an error), -1 on error. */
int ckpt_find_latest(const char *run_dir, char *dir, size_t dirlen, int64_t *step, char *err,
                     size_t errlen);
/* Removes all but the newest keep_last checkpoints (never the latest one). */
int ckpt_prune(const char *run_dir, int keep_last, char *err, size_t errlen);
/* The path RUN_DIR/checkpoint-<step>/FILE (FILE may be NULL for the directory). */
int ckpt_path(char *out, size_t cap, const char *run_dir, int64_t step, const char *file);

#endif
