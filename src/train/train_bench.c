/*
 * train/train_bench.c — the training step alone, for prefrun bench: a
 * Trainer set up with the run's own setup functions, minus data, metrics
 * and checkpoints, and fed batches the caller makes. It runs the same
 * micro-step and update as train_run, so what bench times is what trains.
 */
#include "train/train_internal.h"

#include <stdlib.h>
#include <string.h>

struct TrainBench {
    Trainer tr;
    TrainOptions opt;
};

TrainBench *train_bench_new(const Config *cfg, const char *loss_path, char *err, size_t errlen)
{
    TrainBench *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "bench: out of memory");
        return NULL;
    }
    b->opt = (TrainOptions){.cfg = *cfg,
                            .n_losses = 1,
                            .loss_paths = {loss_path},
                            .loss_weights = {1.0},
                            .quiet = true};
    b->tr = (Trainer){.opt = &b->opt,
                      .cfg = *cfg,
                      .total_steps = INT32_MAX,
                      .metrics_fd = -1,
                      .world = 1,
                      .quiet = true};
    b->tr.sched = (LrSchedule){LR_CONSTANT, cfg->learning_rate, 0, INT32_MAX};
    if (trainer_load_losses(&b->tr, err, errlen) != 0 ||
        trainer_build_model(&b->tr, err, errlen) != 0 ||
        trainer_alloc_buffers(&b->tr, err, errlen) != 0) {
        train_bench_free(b);
        return NULL;
    }
    return b;
}

void train_bench_free(TrainBench *b)
{
    if (!b)
        return;
    trainer_free(&b->tr);
    free(b);
}

int train_bench_step(TrainBench *b, const int32_t *ids, const int32_t *targets, const float *mask,
                     int B, int T, char *err, size_t errlen)
{
    Trainer *tr = &b->tr;
    StepBatch *s = &tr->sb;
    size_t rows = 2 * (size_t)B;
    if (B > tr->batch->cap_B || T > tr->cfg.context) {
        snprintf(err, errlen, "bench: batch (%d, %d) exceeds (%d, %d)", B, T, tr->batch->cap_B,
                 tr->cfg.context);
        return -1;
    }
    s->B = B;
    s->T = T;
    s->tokens = (int64_t)rows * T;
    memcpy(s->ids, ids, rows * T * sizeof *ids);
    memcpy(s->targets, targets, rows * T * sizeof *targets);
    memcpy(s->mask, mask, rows * T * sizeof *mask);
    for (size_t n = 0; n < rows; n++) {
        s->resp_len[n] = 0;
        for (int t = 0; t < T; t++)
            s->resp_len[n] += mask[n * T + t];
    }
    trainer_zero_grad(tr);
    trainer_lora_seed(tr, 0);
    MicroResult r = trainer_micro_step(tr, s, 1.0f, err, errlen);
    if (r == MICRO_OK)
        r = trainer_update(tr, err, errlen);
    return r == MICRO_OK ? 0 : -1;
}

TrainBenchMemory train_bench_memory(const TrainBench *b)
{
    const Trainer *tr = &b->tr;
    TrainBenchMemory m = {.params = trainer_params(tr)->size,
                          .step_arena_peak = tr->step_ctx->peak};
    m.ref_arena_peak = tr->ref_ctx->peak;
    const Gpt *ref = tr->ref ? tr->ref : tr->lora ? tr->policy : NULL; /* LoRA: the base */
    for (int i = 0; ref && i < 2; i++) /* the streaming forward's two block arenas */
        m.ref_arena_peak += ref->scratch[i]->peak;
    return m;
}
