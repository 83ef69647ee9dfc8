/*
 * src/train/ — training a policy with a loss: TRL-format JSONL pairs (data,
 * toydata), the run's settings (config), a run's model from its directory
 * (model_load), where a run may live (run_dir) and the training loop (train:
 * the step; train_setup, train_ref, train_batch, train_metrics, train_eval,
 * train_checkpoint, train_diagnose and train_bench, sharing
 * train_internal.h).
 * May include: util/, core/, lua/, model/.
 */
/*
 * train/train.h — the training loop of `prefrun train`: a GPT policy trained
 * against its frozen reference with one or more Lua losses.
 *
 *     TrainOptions opt = {.cfg = cfg, .n_losses = 1, .loss_paths = {"losses/dpo.lua"},
 *                         .loss_weights = {1.0}, .run_dir = "runs/dpo"};
 *     TrainResult res;
 *     TrainStatus st = train_run(&opt, &res, err, sizeof err);
 *
 * One optimizer step, top to bottom (train.c, train_step):
 *   for each of gradient_accumulation_steps micro-batches:
 *     batch -> policy log-probs of chosen and rejected (one forward on 2B rows)
 *           -> reference log-probs (no_grad forward, or the precomputed cache)
 *           -> LossBatch -> loss_eval of each script -> weighted mean
 *           -> backward into the policy's gradient block; the step's arena is reset
 *   -> NaN/Inf check -> global-norm clipping -> AdamW at the scheduled rate.
 *
 * The run directory: RUN_DIR/config.yaml (the effective config),
 * RUN_DIR/metrics.jsonl (one JSON object per logging step and per
 * evaluation, TRL's metric names), and checkpoint-<step>/ directories with a
 * `latest` pointer (checkpoint.h). A resumed run (resume = true) continues
 * from the latest checkpoint and writes exactly the metrics lines the
 * uninterrupted run would have written (tokens_per_sec aside: it is a time).
 */
#ifndef PREFRUN_TRAIN_H
#define PREFRUN_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "train/config.h"

#define TRAIN_MAX_LOSSES 8
/* |weight| of a loss script at most: a larger one is a typo or an attack
 * (1e39 overflows float), not a weighting */
#define TRAIN_MAX_LOSS_WEIGHT 1e6

typedef enum TrainStatus {
    TRAIN_OK = 0,
    TRAIN_FAILED = 1,    /* ran and failed: NaN/Inf, a loss script error */
    TRAIN_BAD_INPUT = 3, /* data, config, loss file or checkpoint unusable */
} TrainStatus;

typedef struct TrainOptions {
    Config cfg; /* finalized (config_finalize) */
    int n_losses;
    const char *loss_paths[TRAIN_MAX_LOSSES];
    double loss_weights[TRAIN_MAX_LOSSES]; /* finite, |w| <= TRAIN_MAX_LOSS_WEIGHT */
    const char *run_dir;                   /* required */
    bool resume;            /* continue the run in run_dir from its latest checkpoint */
    bool quiet;             /* no progress output */
    bool data_parallel;     /* split each batch over the ranks of mpirun (train_dp.c); false:
                               this process trains alone, also under mpirun (discover's jobs) */
    FILE *progress;         /* where progress goes; NULL: stderr */
    const char *init_model; /* NULL: gpt_init from the seed; else the policy (and so the
                               reference) starts from this model file (the task's reference) */
} TrainOptions;

typedef struct TrainResult {
    int64_t steps;           /* optimizer steps done */
    int64_t first_step;      /* steps already done when this process started (resume) */
    int64_t total_steps;     /* planned */
    int64_t skipped_batches; /* nan_policy = skip */
    double last_loss;        /* mean loss of the last logging interval */
    double last_accuracy;    /* rewards/accuracies of the last logging interval */
    double seconds;
    int world;           /* ranks that trained it (mpirun -np N; 1 in a plain run) */
    double comm_seconds; /* of seconds, waiting on the other ranks (gathers, gradient sums) */
} TrainResult;

TrainStatus train_run(const TrainOptions *opt, TrainResult *res, char *err, size_t errlen);

/* 0 when w may weigh the loss loss_path (finite, |w| <= TRAIN_MAX_LOSS_WEIGHT);
 * else -1 with err naming the script and the range. train_run checks its
 * options with it; so do callers that read weights from elsewhere. */
int train_check_loss_weight(double w, const char *loss_path, char *err, size_t errlen);

/* Threads for OpenMP and OpenBLAS; n <= 0 means every core. Returns n used. */
int train_set_threads(int n);

/* The training step alone, on batches the caller makes (prefrun bench):
 * the same code as train_run's step, on one micro-batch, without data,
 * metrics files or checkpoints. cfg supplies the model, the batch capacity
 * (per_device_train_batch_size, context) and the optimizer settings. */
typedef struct TrainBench TrainBench;
TrainBench *train_bench_new(const Config *cfg, const char *loss_path, char *err, size_t errlen);
/* ids, targets, mask (2B, T) as in data.h's DataBatch. 0, or -1 with err. */
int train_bench_step(TrainBench *b, const int32_t *ids, const int32_t *targets, const float *mask,
                     int B, int T, char *err, size_t errlen);
void train_bench_free(TrainBench *b);
/* What a bench's trainer holds, for the memory figures of prefrun bench:
 * the policy's parameter count, and the high-water marks in bytes of the
 * step's arena (the policy's activations and their gradients) and of the
 * reference's (its forward), over the steps run so far. */
typedef struct TrainBenchMemory {
    int64_t params;
    size_t step_arena_peak, ref_arena_peak;
} TrainBenchMemory;
TrainBenchMemory train_bench_memory(const TrainBench *b);

#endif
