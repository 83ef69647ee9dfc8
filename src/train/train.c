/*
 * train/train.c — train_run: the loop over optimizer steps and the step
 * itself, each stage a named call into the files around it
 * (train_internal.h lists them).
 *
 * One step: gradients zeroed; per micro-batch the policy forward, the
 * reference's log-probs, the loss and backward scaled by 1/accumulation;
 * then the NaN/Inf check, clipping and AdamW. A step that fails part-way
 * leaves the interval's metric sums as they were before it.
 */
#include "train/train_internal.h"

#include <math.h>

#include "core/ops.h"
#include "util/timeutil.h"

/* One micro-batch: forward, reference, loss, backward scaled by 1/accum. */
MicroResult trainer_micro_step(Trainer *tr, const StepBatch *s, float scale, char *err,
                               size_t errlen)
{
    TensorCtx *ctx = tr->step_ctx;
    tensor_ctx_reset(ctx);
    GptPairBatch pb = {s->B, s->T, s->ids, s->targets};
    GptPairLogps pol;
    RefLogps ref;
    LossBatch lb;
    char where[128];
    trainer_step_name(tr, where, sizeof where);
    if (gpt_pair_logps(tr->policy, ctx, &pb, &pol) != 0) {
        snprintf(err, errlen, "%s: policy forward: %s", where, tensor_ctx_error(ctx));
        return MICRO_ERROR;
    }
    if (trainer_ref_logps(tr, &tr->train_ref, s, ctx, &ref, err, errlen) != 0 ||
        trainer_loss_batch(tr, s, ctx, &pol, &ref, &lb) != 0)
        return MICRO_ERROR;
    char lerr[MSG_LEN];
    Tensor *pairs;
    Tensor *total = trainer_total_loss(tr, ctx, &lb, &pairs, lerr, sizeof lerr);
    if (!total) {
        snprintf(err, errlen, "%s: %s", where, lerr);
        return MICRO_ERROR;
    }
    if (!trainer_loss_finite(tr, total, pairs, err, errlen))
        return MICRO_NONFINITE;
    if (ag_backward(ctx, total, &scale) != 0) {
        snprintf(err, errlen, "%s: backward: %s", where, tensor_ctx_error(ctx));
        return MICRO_ERROR;
    }
    trainer_count_micro_batch(tr, s, &pol, &ref, total->data[0]);
    tensor_ctx_reset(ctx);
    return MICRO_OK;
}

/* After the micro-batches: NaN/Inf check, clipping, AdamW at the scheduled rate. */
MicroResult trainer_update(Trainer *tr, char *err, size_t errlen)
{
    if (trainer_dp_reduce(tr, err, errlen) != 0)
        return MICRO_ERROR;
    Tensor *p = trainer_params(tr);
    double norm = optim_clip_grad_norm(p->grad, p->size, tr->cfg.max_grad_norm);
    if (!isfinite(norm)) {
        trainer_grad_report(tr, norm, err, errlen);
        return MICRO_NONFINITE;
    }
    double lr = lr_at(&tr->sched, tr->step);
    adamw_step(tr->adam, p->data, p->grad, lr);
    tr->sums.grad_norm = norm;
    tr->sums.lr = lr;
    tr->step++;
    return MICRO_OK;
}

/* Data for the rest of a skipped step: the order moves on as if it ran. */
static void skip_micro_batches(Trainer *tr, int n)
{
    char ignored[MSG_LEN];
    for (int i = 0; i < n; i++)
        data_next_batch(tr->train, &tr->order, tr->batch, ignored, sizeof ignored);
}

/* One optimizer step. Returns MICRO_OK, MICRO_NONFINITE (with nan_policy =
 * skip the step was skipped and counted; with stop the run must end) or
 * MICRO_ERROR. */
static MicroResult train_step(Trainer *tr, char *err, size_t errlen)
{
    const int accum = tr->cfg.gradient_accumulation_steps;
    trainer_zero_grad(tr);
    MetricSums before = tr->sums;
    for (int k = 0; k < accum; k++) {
        if (data_next_batch(tr->train, &tr->order, tr->batch, err, errlen) != 0)
            return MICRO_ERROR;
        step_batch_trim(tr->batch, &tr->sb);
        trainer_lora_seed(tr, k);
        float scale = 1.0f / (float)accum;
        MicroResult r = tr->world > 1 ? trainer_micro_step_dp(tr, &tr->sb, scale, err, errlen)
                                      : trainer_micro_step(tr, &tr->sb, scale, err, errlen);
        if (r == MICRO_NONFINITE && tr->cfg.nan_policy == CONFIG_NAN_SKIP)
            skip_micro_batches(tr, accum - 1 - k);
        if (r != MICRO_OK) {
            tr->sums = before; /* a skipped step adds nothing to the metrics */
            return r;
        }
    }
    MicroResult r = trainer_update(tr, err, errlen);
    if (r != MICRO_OK)
        tr->sums = before;
    return r;
}

/* nan_policy = skip carries a run past a bad batch, not past a broken loss.
 * The rule: a run fails once more than half of its planned steps have been
 * skipped (most of its updates never happened, so its result would be the
 * schedule's, not the loss's; and it can no longer end with most steps
 * trained, so it stops at once rather than at the end); and it fails at the
 * end when every step this process ran was skipped (a resumed tail that
 * never trained is no success either, though the whole run be mostly good). */
static TrainStatus too_many_skipped(const Trainer *tr, const char *last, char *err, size_t errlen)
{
    if (2 * tr->skipped <= tr->total_steps)
        return TRAIN_OK;
    char why[MSG_LEN];
    snprintf(why, sizeof why, "%s", last);
    snprintf(err, errlen,
             "nan_policy = skip: %lld of the run's %lld steps skipped, more than half: the loss "
             "or its gradient is not finite on most batches; the last: %s",
             (long long)tr->skipped, (long long)tr->total_steps, why);
    return TRAIN_FAILED;
}

static TrainStatus all_skipped(const Trainer *tr, char *err, size_t errlen)
{
    int64_t ran = tr->step - tr->step_at_start;
    if (ran == 0 || tr->skipped - tr->skipped_at_start < ran)
        return TRAIN_OK;
    snprintf(err, errlen,
             "nan_policy = skip: every step this run took (%lld to %lld of %lld) was skipped: "
             "nothing was trained",
             (long long)tr->step_at_start + 1, (long long)tr->step, (long long)tr->total_steps);
    return TRAIN_FAILED;
}

/* A NaN/Inf step: with nan_policy = stop the run ends, naming its last good
 * checkpoint; with skip it counts as a step without an update. */
static TrainStatus nonfinite_step(Trainer *tr, char *err, size_t errlen)
{
    if (tr->cfg.nan_policy == CONFIG_NAN_STOP) {
        trainer_nan_stop_message(tr, err, errlen);
        return TRAIN_FAILED;
    }
    tr->skipped++;
    tr->step++; /* the step happened, without an update (as AMP's skipped steps) */
    if (!tr->quiet)
        fprintf(tr->progress, "%s%s: batch skipped (nan_policy = skip)\n", tr->tty ? "\n" : "",
                err);
    return too_many_skipped(tr, err, err, errlen);
}

/* After a step: evaluation and checkpoint when due. */
static TrainStatus after_step(Trainer *tr, char *err, size_t errlen)
{
    bool last = tr->step == tr->total_steps;
    int ev = tr->cfg.eval_steps, sv = tr->cfg.save_steps;
    if ((last || (ev > 0 && tr->step % ev == 0)) && trainer_evaluate(tr, err, errlen) != 0)
        return TRAIN_FAILED;
    if ((last || (sv > 0 && tr->step % sv == 0)) && trainer_save_checkpoint(tr, err, errlen) != 0)
        return TRAIN_FAILED;
    return TRAIN_OK;
}

static TrainStatus loop(Trainer *tr, TrainResult *res, char *err, size_t errlen)
{
    tr->t_start = tr->t_interval = timeutil_now();
    tr->step_at_start = tr->step;
    tr->skipped_at_start = tr->skipped;
    while (tr->step < tr->total_steps) {
        MicroResult r = train_step(tr, err, errlen);
        if (r == MICRO_ERROR ||
            (r == MICRO_NONFINITE && nonfinite_step(tr, err, errlen) != TRAIN_OK))
            return TRAIN_FAILED;
        if (trainer_log_step(tr, res, err, errlen) != 0)
            return TRAIN_FAILED;
        double t0 = timeutil_now();
        TrainStatus st = after_step(tr, err, errlen);
        tr->t_interval += timeutil_now() - t0; /* evaluation and saving are not throughput */
        if (st != TRAIN_OK)
            return st;
    }
    return all_skipped(tr, err, errlen);
}

TrainStatus train_run(const TrainOptions *opt, TrainResult *res, char *err, size_t errlen)
{
    Trainer tr = {.opt = opt, .cfg = opt->cfg, .metrics_fd = -1};
    *res = (TrainResult){0};
    double t0 = timeutil_now();
    TrainStatus st = trainer_dp_agree(&tr, trainer_setup(&tr, err, errlen), err, errlen);
    if (st == TRAIN_OK)
        st = loop(&tr, res, err, errlen);
    res->steps = tr.step;
    res->first_step = tr.step_at_start;
    res->total_steps = tr.total_steps;
    res->skipped_batches = tr.skipped;
    res->seconds = timeutil_now() - t0;
    res->world = tr.world;
    res->comm_seconds = tr.comm_seconds;
    trainer_free(&tr);
    return st;
}
