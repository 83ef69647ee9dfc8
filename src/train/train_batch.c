/*
 * train/train_batch.c — one micro-batch on its way to the loss: the rows
 * trimmed to the longest sequence, the LossBatch the scripts see, and the
 * weighted loss that backward starts from. Shared by the step, evaluation
 * and the reference cache.
 */
#include "train/train_internal.h"

#include <string.h>

#include "core/ops.h"

/* Copies the batch into (2B, T) rows with T = longest sequence - 1: the last
 * token of a sequence predicts nothing, positions past it are padding with
 * no target, and causal attention keeps earlier positions independent of
 * later ones, so the log-probs are those of the full rows at a fraction of
 * the cost (toy pairs are ~18 tokens in a 64-position context). */
void step_batch_trim(const DataBatch *b, StepBatch *s)
{
    int R = 2 * b->B, T = 1;
    for (int n = 0; n < R; n++)
        T = b->seq_len[n] - 1 > T ? b->seq_len[n] - 1 : T;
    s->B = b->B;
    s->T = T;
    s->index = b->index;
    s->tokens = 0;
    for (int n = 0; n < R; n++) {
        memcpy(s->ids + (size_t)n * T, b->ids + (size_t)n * b->T, (size_t)T * sizeof(int32_t));
        memcpy(s->targets + (size_t)n * T, b->targets + (size_t)n * b->T,
               (size_t)T * sizeof(int32_t));
        memcpy(s->mask + (size_t)n * T, b->mask + (size_t)n * b->T, (size_t)T * sizeof(float));
        s->resp_len[n] = (float)b->resp_len[n];
        s->tokens += b->seq_len[n];
    }
}

Tensor *train_tensor_2d(TensorCtx *ctx, int rows, int cols, const float *data)
{
    int shape[2] = {rows, cols};
    return tensor_from_data(ctx, 2, shape, data);
}

/* What the loss scripts see (loss.h). */
int trainer_loss_batch(const Trainer *tr, const StepBatch *s, TensorCtx *ctx,
                       const GptPairLogps *pol, const RefLogps *ref, LossBatch *lb)
{
    int B = s->B, T = s->T;
    *lb = (LossBatch){
        .B = B,
        .policy_chosen_logps = pol->chosen,
        .policy_rejected_logps = pol->rejected,
        .reference_chosen_logps = ref->chosen,
        .reference_rejected_logps = ref->rejected,
        .chosen_lengths = tensor_from_data(ctx, 1, &B, s->resp_len),
        .rejected_lengths = tensor_from_data(ctx, 1, &B, s->resp_len + B),
        .T = T,
        .policy_chosen_token_logps = pol->chosen_tokens,
        .policy_rejected_token_logps = pol->rejected_tokens,
        .reference_chosen_token_logps = ref->chosen_tokens,
        .reference_rejected_token_logps = ref->rejected_tokens,
        .chosen_mask = train_tensor_2d(ctx, B, T, s->mask),
        .rejected_mask = train_tensor_2d(ctx, B, T, s->mask + (size_t)B * T),
        .step = tr->step,
        .progress = (double)tr->step / (double)tr->total_steps,
    };
    return lb->chosen_lengths && lb->rejected_lengths && lb->chosen_mask && lb->rejected_mask ? 0
                                                                                              : -1;
}

/* The weighted sum of the scripts (loss_eval_weighted: (B), or 0-D when a
 * script is batch-level), its per-pair values to *pairs, and the mean that
 * backward starts from. */
Tensor *trainer_total_loss(Trainer *tr, TensorCtx *ctx, const LossBatch *lb, Tensor **pairs,
                           char *err, size_t errlen)
{
    Tensor *l = loss_eval_weighted(tr->loss, tr->weight, tr->n_loss, ctx, lb, err, errlen);
    *pairs = l;
    if (!l)
        return NULL;
    Tensor *mean = l->ndim > 0 ? ag_mean(ctx, l, AG_ALL, false) : l;
    if (!mean)
        snprintf(err, errlen, "loss mean: %s", tensor_ctx_error(ctx));
    return mean;
}
