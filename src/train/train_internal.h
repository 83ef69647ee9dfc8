/*
 * train/train_internal.h — what the files of train_run share: the run's
 * state (Trainer) and the functions one file offers the others. Not for
 * callers outside src/train/: they use train.h.
 *
 * The files, in the order a run meets them:
 *   train_setup.c      losses, data, the step plan, models, optimizer, buffers;
 *                      the run directory; freeing it all
 *   train_lora.c       use_peft: the frozen base, its adapters, their checkpoint
 *   train_checkpoint.c checkpoint-<step>/ save, and resume from the latest
 *   train_ref.c        the frozen reference's log-probs: forward or cache
 *   train_batch.c      a micro-batch trimmed to its rows, the LossBatch, the loss
 *   train.c            train_run: the loop and the step
 *   train_diagnose.c   what a failed step says: where, and which values
 *   train_metrics.c    metrics.jsonl, the interval's sums, progress lines
 *   train_eval.c       the held-out evaluation
 *   train_bench.c      the step alone, for prefrun bench
 *   train_dp.c         under mpirun: the rank's share of a micro-batch, the
 *                      gathered log-probs, the gradient sum over the ranks
 *
 * Invariants:
 *   - the policy's parameters and gradients live in its own context; each
 *     micro-batch's activations and loss graph live in step_ctx, which is
 *     reset after the micro-batch, so memory is flat after the first step;
 *   - the reference runs in ref_ctx, a no_grad context reset right after its
 *     log-probs are copied out: no tape sources, nothing saved for backward,
 *     and its blocks stream through the model's two scratch arenas (model.h);
 *     with precompute_ref_log_probs it runs once per data set at setup and
 *     is then freed (every later step and evaluation reads the caches);
 *   - everything a resumed run needs to write the same metrics as an
 *     uninterrupted one is in the checkpoint: weights, AdamW moments and step
 *     count, the data order's (epoch, pos), the counters and the partial sums
 *     of the current logging interval;
 *   - every number is a function of the seed: the data order, the init, and
 *     kernels whose reductions run in a fixed order (OpenMP static schedules).
 *
 * Letters: B pairs per micro-batch, T positions (trimmed to the batch's
 * longest sequence), n pairs in a dataset, P parameters.
 */
#ifndef PREFRUN_TRAIN_INTERNAL_H
#define PREFRUN_TRAIN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "lua/loss.h"
#include "model/lora.h"
#include "model/model.h"
#include "model/optim.h"
#include "tokenizer/tokenizer.h"
#include "train/config.h"
#include "train/data.h"
#include "train/train.h"

#define PATH_LEN 1024
#define MSG_LEN 1024

/* A micro-batch trimmed to its longest sequence: rows as in DataBatch. */
typedef struct StepBatch {
    int B, T;
    int32_t *ids;         // (2B, T)
    int32_t *targets;     // (2B, T)
    float *mask;          // (2B, T)
    float *resp_len;      // (2B)
    const int64_t *index; // (B) dataset indices
    int64_t tokens;       /* prompt + response tokens of the 2B sequences */
} StepBatch;

/* Reference log-probs of a dataset by pair index (precompute_ref_log_probs). */
typedef struct RefCache {
    bool ready;
    int stride; /* positions per row: the config's context */
    float *seq; // (n, 2) chosen, rejected
    float *tok; // (n, 2, stride)
} RefCache;

/* Reference log-probs of one micro-batch, as tensors of the step context. */
typedef struct RefLogps {
    Tensor *chosen, *rejected;               // (B)
    Tensor *chosen_tokens, *rejected_tokens; // (B, T)
} RefLogps;

/* Sums over the micro-batches of one logging interval (or one evaluation). */
typedef struct MetricSums {
    double loss, chosen, rejected, accuracy, margin, logp_chosen, logp_rejected;
    double weight;        /* micro-batches (training) or pairs (evaluation) summed */
    double grad_norm, lr; /* of the interval's last step */
    double tokens;
} MetricSums;

typedef struct Trainer {
    const TrainOptions *opt;
    Config cfg;
    Gpt *policy;    /* with use_peft: the frozen base, the adapters attached */
    Gpt *ref;       /* NULL once precompute_ref_log_probs has cached all it is needed
                     * for, and always with use_peft (trainer_ref_model) */
    GptLora *lora;  /* use_peft: what AdamW updates; NULL for full fine-tuning */
    Tokenizer *tok; /* the model's (cfg.model); NULL: the byte tokenizer */
    AdamW *adam;
    LrSchedule sched;
    LossScript *loss[TRAIN_MAX_LOSSES];
    double weight[TRAIN_MAX_LOSSES];
    int n_loss;
    double beta;
    Dataset *train, *eval;
    DataOrder order;
    DataBatch *batch;
    StepBatch sb;
    TensorCtx *step_ctx, *ref_ctx;
    RefCache train_ref, eval_ref;
    int64_t step, total_steps, skipped, tokens_seen;
    MetricSums sums;
    int metrics_fd; /* metrics.jsonl, O_APPEND; -1 when closed (every initializer sets it) */
    char metrics_path[PATH_LEN + 32];
    FILE *progress;
    bool tty;
    char run_dir[PATH_LEN];
    char last_ckpt[PATH_LEN];
    double t_start, t_interval;
    int64_t step_at_start, skipped_at_start; /* when this process's loop began */
    double interval_tokens;
    /* data parallel (train_dp.c): rank 0 of 1 in a plain run; only rank 0
     * writes (run directory, metrics, checkpoints) or prints */
    int rank, world;
    bool quiet;
    StepBatch local; /* this rank's pairs of the micro-batch */
    float *dp_mine, *dp_all;
    int *dp_counts;
    double comm_seconds; /* waiting on the other ranks: gathers and sums */
} Trainer;

/* MICRO_NONFINITE: a NaN or Inf loss or gradient, err says where. */
typedef enum MicroResult { MICRO_OK, MICRO_NONFINITE, MICRO_ERROR } MicroResult;

/* ---- train_setup.c ---- */
TrainStatus trainer_setup(Trainer *tr, char *err, size_t errlen);
int trainer_load_losses(Trainer *tr, char *err, size_t errlen);
int trainer_build_model(Trainer *tr, char *err, size_t errlen);
int trainer_alloc_buffers(Trainer *tr, char *err, size_t errlen);
void trainer_free(Trainer *tr);

/* ---- train_lora.c ---- */
int trainer_build_lora(Trainer *tr, char *err, size_t errlen);
/* What AdamW updates and clipping sees: the adapters, or the policy's block */
Tensor *trainer_params(const Trainer *tr);
void trainer_zero_grad(Trainer *tr);
/* The dropout masks of micro-batch `micro` of the current step */
void trainer_lora_seed(Trainer *tr, int micro);
/* The reference to run: tr->ref, or the policy with its adapters off until
 * trainer_ref_done; NULL when freed after precompute_ref_log_probs */
const Gpt *trainer_ref_model(Trainer *tr);
void trainer_ref_done(Trainer *tr);
int trainer_save_adapters(const Trainer *tr, const char *dir, char *err, size_t errlen);
int trainer_load_adapters(Trainer *tr, const char *dir, char *err, size_t errlen);

/* ---- train_checkpoint.c ---- */
int trainer_save_checkpoint(Trainer *tr, char *err, size_t errlen);
int trainer_resume(Trainer *tr, char *err, size_t errlen);

/* ---- train_ref.c ---- */
int trainer_ref_logps(Trainer *tr, const RefCache *cache, const StepBatch *s, TensorCtx *ctx,
                      RefLogps *out, char *err, size_t errlen);
int trainer_precompute_ref(Trainer *tr, const Dataset *ds, RefCache *c, char *err, size_t errlen);

/* ---- train_batch.c ---- */
void step_batch_trim(const DataBatch *b, StepBatch *s);
Tensor *train_tensor_2d(TensorCtx *ctx, int rows, int cols, const float *data);
int trainer_loss_batch(const Trainer *tr, const StepBatch *s, TensorCtx *ctx,
                       const GptPairLogps *pol, const RefLogps *ref, LossBatch *lb);
Tensor *trainer_total_loss(Trainer *tr, TensorCtx *ctx, const LossBatch *lb, Tensor **pairs,
                           char *err, size_t errlen);

/* ---- train.c ---- */
MicroResult trainer_micro_step(Trainer *tr, const StepBatch *s, float scale, char *err,
                               size_t errlen);
MicroResult trainer_update(Trainer *tr, char *err, size_t errlen);

/* ---- train_dp.c ---- */
int trainer_dp_setup(Trainer *tr, char *err, size_t errlen);
void trainer_dp_free(Trainer *tr);
TrainStatus trainer_dp_agree(Trainer *tr, TrainStatus st, char *err, size_t errlen);
MicroResult trainer_micro_step_dp(Trainer *tr, const StepBatch *s, float scale, char *err,
                                  size_t errlen);
int trainer_dp_reduce(Trainer *tr, char *err, size_t errlen);

/* ---- train_diagnose.c ---- */
void trainer_step_name(const Trainer *tr, char *out, size_t len);
bool trainer_loss_finite(const Trainer *tr, const Tensor *total, const Tensor *pairs, char *err,
                         size_t errlen);
void trainer_grad_report(const Trainer *tr, double norm, char *err, size_t errlen);
void trainer_nan_stop_message(const Trainer *tr, char *err, size_t errlen);

/* ---- train_metrics.c ---- */
int trainer_open_metrics(Trainer *tr, char *err, size_t errlen);
void metric_sums_add(MetricSums *m, double beta, const GptPairLogps *pol, const RefLogps *ref,
                     int B, double loss, double w);
void trainer_count_micro_batch(Trainer *tr, const StepBatch *s, const GptPairLogps *pol,
                               const RefLogps *ref, double loss);
int trainer_write_metrics(Trainer *tr, const char *prefix, const MetricSums *m, bool train,
                          double tok_per_sec, char *err, size_t errlen);
/* Progress, and the interval's metrics line when it is due; -1 when it
 * could not be written. */
int trainer_log_step(Trainer *tr, TrainResult *res, char *err, size_t errlen);

/* ---- train_eval.c ---- */
int trainer_evaluate(Trainer *tr, char *err, size_t errlen);

#endif
