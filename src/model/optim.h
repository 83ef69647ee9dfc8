/*
 * model/optim.h — AdamW with decoupled weight decay, global-norm gradient clipping
 * and the learning-rate schedule, over one flat parameter vector.
 *
 * The optimizer does not know the model: it sees n floats of parameters and
 * gradients and a list of segments that say which ranges are decayed (the
 * model decides: every weight except biases and LayerNorm, as Hugging Face's
 * Trainer does). Its state (moments m and v, step count) is held in tensors of
 * its own persistent context, so a checkpoint can save and restore it.
 *
 * Determinism: every reduction sums fixed-size blocks in a fixed order, so
 * the gradient norm (and with it every update) is the same bit for bit for
 * any thread count.
 */
#ifndef PREFRUN_OPTIM_H
#define PREFRUN_OPTIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

typedef struct AdamWConfig {
    double beta1, beta2, eps; /* torch defaults 0.9, 0.999, 1e-8 */
    double weight_decay;      /* decoupled: p -= lr * wd * p */
} AdamWConfig;

typedef struct OptimSegment {
    int64_t offset, size;
    bool decay;
} OptimSegment;

typedef struct AdamW {
    AdamWConfig cfg;
    TensorCtx *ctx;
    Tensor *m; // (n) first moment
    Tensor *v; // (n) second moment
    int64_t n;
    int64_t t; /* updates taken */
    OptimSegment *segments;
    int n_segments;
} AdamW;

/* segments must cover [0, n) without overlap; they are copied. */
AdamW *adamw_new(int64_t n, const OptimSegment *segments, int n_segments, const AdamWConfig *cfg,
                 char *err, size_t errlen);
void adamw_free(AdamW *o);
/* One update of params (n) from grads (n) at learning rate lr (PyTorch's
 * AdamW: p *= 1 - lr wd on decayed segments, then p -= lr m̂ / (√v̂ + eps)). */
void adamw_step(AdamW *o, float *params, const float *grads, double lr);

/* sqrt(sum g²) in double, blocked so it does not depend on the thread count;
 * NaN or Inf when any entry is. */
double optim_grad_norm(const float *g, int64_t n);
/* Scales g by max_norm / (norm + 1e-6) when norm > max_norm (torch's
 * clip_grad_norm_); max_norm <= 0 disables clipping. Returns the norm
 * before clipping. */
double optim_clip_grad_norm(float *g, int64_t n, double max_norm);

typedef enum LrScheduleKind { LR_CONSTANT, LR_LINEAR, LR_COSINE } LrScheduleKind;

typedef struct LrSchedule {
    LrScheduleKind kind;
    double peak;          /* the learning rate after warmup */
    int64_t warmup_steps; /* linear from 0 */
    int64_t total_steps;  /* optimizer steps of the whole run */
} LrSchedule;

/* The learning rate of optimizer step `step` (from 0), as Hugging Face's
 * get_scheduler: warmup lr·s/w, then cosine 0.5(1 + cos(π p)), linear
 * (total - s)/(total - w), or constant, with p the fraction after warmup. */
double lr_at(const LrSchedule *s, int64_t step);
/* "constant", "linear", "cosine" -> kind; -1 for anything else */
int lr_schedule_parse(const char *name, LrScheduleKind *kind);
const char *lr_schedule_name(LrScheduleKind kind);

#endif
