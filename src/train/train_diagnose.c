/*
 * train/train_diagnose.c — what a failed step says: which step (as the
 * user counts it, and as b.step the script saw), which values went NaN or
 * Inf, and, when the run stops, the last checkpoint that is still good.
 * A user fixing a loss script reads only this message, so it names enough
 * to find the line.
 */
#include "train/train_internal.h"

#include <math.h>
#include <string.h>

/* "3 of 8 NaN, 0 +Inf, 1 -Inf; finite in [-2.3, 0.71]" */
static void summarize(const float *x, int64_t n, char *out, size_t len)
{
    int64_t nan = 0, pinf = 0, ninf = 0;
    float lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(x[i]))
            nan++;
        else if (isinf(x[i]))
            x[i] > 0 ? pinf++ : ninf++;
        else {
            lo = x[i] < lo ? x[i] : lo;
            hi = x[i] > hi ? x[i] : hi;
        }
    }
    int k = snprintf(out, len, "%lld of %lld NaN, %lld +Inf, %lld -Inf", (long long)nan,
                     (long long)n, (long long)pinf, (long long)ninf);
    if (lo <= hi && k > 0 && (size_t)k < len)
        snprintf(out + k, len - (size_t)k, "; finite values in [%.6g, %.6g]", lo, hi);
}

void trainer_step_name(const Trainer *tr, char *out, size_t len)
{
    snprintf(out, len, "step %lld/%lld (b.step = %lld)", (long long)tr->step + 1,
             (long long)tr->total_steps, (long long)tr->step);
}

/* Checks the loss; when it is NaN or Inf, summarizes the per-pair values. */
bool trainer_loss_finite(const Trainer *tr, const Tensor *total, const Tensor *pairs, char *err,
                         size_t errlen)
{
    if (isfinite(total->data[0]))
        return true;
    char where[128], what[256];
    trainer_step_name(tr, where, sizeof where);
    summarize(pairs->data, pairs->size, what, sizeof what);
    snprintf(err, errlen, "loss is not finite at %s: per-pair values: %s", where, what);
    return false;
}

/* Names the first parameter tensor whose gradient holds NaN or Inf. */
void trainer_grad_report(const Trainer *tr, double norm, char *err, size_t errlen)
{
    char where[128], what[256] = "";
    const char *name = "?";
    trainer_step_name(tr, where, sizeof where);
    for (int i = 0; i < tr->policy->n_tensors; i++) {
        Tensor *t = tr->policy->tensors[i];
        double n = optim_grad_norm(t->grad, t->size);
        if (!isfinite(n)) {
            name = t->name;
            summarize(t->grad, t->size, what, sizeof what);
            break;
        }
    }
    snprintf(err, errlen, "gradient is not finite at %s (norm %s): first in %s: %s", where,
             isnan(norm) ? "NaN" : "Inf", name, what);
}

void trainer_nan_stop_message(const Trainer *tr, char *err, size_t errlen)
{
    size_t k = strlen(err);
    if (tr->last_ckpt[0])
        snprintf(err + k, errlen - k, "; the run stopped; last good checkpoint: %s", tr->last_ckpt);
    else
        snprintf(err + k, errlen - k, "; the run stopped before its first checkpoint");
}
