/*
 * train/train_ref.c — the frozen reference's log-probs of a micro-batch:
 * from its own forward in ref_ctx, or gathered from a cache filled once per
 * data set (precompute_ref_log_probs; the reference itself is freed after
 * that, train_setup.c), or, with use_peft, from the policy's own weights
 * with the adapters off (train_lora.c). Either way they arrive as leaf tensors of the
 * caller's context, so the loss graph never reaches into the reference.
 */
#include "train/train_internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"

/* Reference log-probs from the cache: gathered by dataset index. */
static int ref_from_cache(const RefCache *c, const StepBatch *s, TensorCtx *ctx, RefLogps *out)
{
    int B = s->B, T = s->T;
    out->chosen = tensor_new(ctx, 1, &B);
    out->rejected = tensor_new(ctx, 1, &B);
    out->chosen_tokens = train_tensor_2d(ctx, B, T, NULL);
    out->rejected_tokens = train_tensor_2d(ctx, B, T, NULL);
    if (!out->chosen || !out->rejected || !out->chosen_tokens || !out->rejected_tokens)
        return -1;
    for (int b = 0; b < B; b++) {
        int64_t i = s->index[b];
        out->chosen->data[b] = c->seq[2 * i];
        out->rejected->data[b] = c->seq[2 * i + 1];
        memcpy(out->chosen_tokens->data + (size_t)b * T, c->tok + (2 * i) * c->stride,
               (size_t)T * sizeof(float));
        memcpy(out->rejected_tokens->data + (size_t)b * T, c->tok + (2 * i + 1) * c->stride,
               (size_t)T * sizeof(float));
    }
    return 0;
}

/* The frozen reference's forward in ref_ctx (no_grad), copied into ctx. */
static int ref_forward(Trainer *tr, const StepBatch *s, TensorCtx *ctx, RefLogps *out, char *err,
                       size_t errlen)
{
    const Gpt *ref = trainer_ref_model(tr);
    if (!ref) /* freed after precompute_ref_log_probs: a batch the caches should have held */
        return err_fail(err, errlen,
                        "reference forward: the reference was freed once its log-probs were "
                        "precomputed, and this batch is not in the cache");
    tensor_ctx_reset(tr->ref_ctx);
    GptPairBatch pb = {s->B, s->T, s->ids, s->targets};
    GptPairLogps lp;
    int rc = gpt_pair_logps(ref, tr->ref_ctx, &pb, &lp);
    trainer_ref_done(tr);
    if (rc != 0) {
        snprintf(err, errlen, "reference forward: %s", tensor_ctx_error(tr->ref_ctx));
        return -1;
    }
    out->chosen = tensor_copy(ctx, lp.chosen);
    out->rejected = tensor_copy(ctx, lp.rejected);
    out->chosen_tokens = tensor_copy(ctx, lp.chosen_tokens);
    out->rejected_tokens = tensor_copy(ctx, lp.rejected_tokens);
    tensor_ctx_reset(tr->ref_ctx);
    if (!out->chosen || !out->rejected || !out->chosen_tokens || !out->rejected_tokens) {
        snprintf(err, errlen, "reference log-probs: %s", tensor_ctx_error(ctx));
        return -1;
    }
    return 0;
}

int trainer_ref_logps(Trainer *tr, const RefCache *cache, const StepBatch *s, TensorCtx *ctx,
                      RefLogps *out, char *err, size_t errlen)
{
    if (cache->ready) {
        if (ref_from_cache(cache, s, ctx, out) == 0)
            return 0;
        snprintf(err, errlen, "reference log-probs: %s", tensor_ctx_error(ctx));
        return -1;
    }
    return ref_forward(tr, s, ctx, out, err, errlen);
}

/* Fills the cache with one reference forward per batch of the dataset, in
 * file order (TRL's precompute_ref_log_probs). */
int trainer_precompute_ref(Trainer *tr, const Dataset *ds, RefCache *c, char *err, size_t errlen)
{
    int stride = tr->cfg.context, cap = tr->batch->cap_B;
    c->stride = stride;
    c->seq = malloc((size_t)(2 * ds->n) * sizeof(float));
    c->tok = calloc((size_t)(2 * ds->n) * stride, sizeof(float));
    if (!c->seq || !c->tok) {
        snprintf(err, errlen, "train: out of memory for the reference cache");
        return -1;
    }
    for (int64_t start = 0; start < ds->n; start += cap) {
        int n = ds->n - start < cap ? (int)(ds->n - start) : cap;
        if (data_batch_fill_range(ds, start, n, tr->batch, err, errlen) != 0)
            return -1;
        step_batch_trim(tr->batch, &tr->sb);
        tensor_ctx_reset(tr->step_ctx);
        RefLogps r;
        if (ref_forward(tr, &tr->sb, tr->step_ctx, &r, err, errlen) != 0)
            return -1;
        for (int b = 0; b < n; b++) {
            int64_t i = start + b, T = tr->sb.T;
            c->seq[2 * i] = r.chosen->data[b];
            c->seq[2 * i + 1] = r.rejected->data[b];
            memcpy(c->tok + 2 * i * stride, r.chosen_tokens->data + b * T, T * sizeof(float));
            memcpy(c->tok + (2 * i + 1) * stride, r.rejected_tokens->data + b * T,
                   T * sizeof(float));
        }
    }
    tensor_ctx_reset(tr->step_ctx);
    c->ready = true;
    return 0;
}
