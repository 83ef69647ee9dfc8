/*
 * train/train_eval.c — the held-out evaluation: the eval set in file order
 * through the policy and the loss scripts in a no_grad context, averaged
 * over pairs, written as one eval_* metrics line.
 *
 * It borrows the step's context and batch buffers (the step is not running)
 * and leaves the context reset and with gradients on again.
 */
#include "train/train_internal.h"

#include "util/timeutil.h"

/* n pairs of the eval set from start, added to m weighted by pairs. */
static int eval_batch(Trainer *tr, int64_t start, int n, MetricSums *m, double *tokens, char *err,
                      size_t errlen)
{
    TensorCtx *ctx = tr->step_ctx;
    if (data_batch_fill_range(tr->eval, start, n, tr->batch, err, errlen) != 0)
        return -1;
    step_batch_trim(tr->batch, &tr->sb);
    tensor_ctx_reset(ctx);
    GptPairBatch pb = {tr->sb.B, tr->sb.T, tr->sb.ids, tr->sb.targets};
    GptPairLogps pol;
    RefLogps ref;
    LossBatch lb;
    char lerr[MSG_LEN] = "";
    Tensor *total = NULL, *pairs;
    if (gpt_pair_logps(tr->policy, ctx, &pb, &pol) != 0 ||
        trainer_ref_logps(tr, &tr->eval_ref, &tr->sb, ctx, &ref, lerr, sizeof lerr) != 0 ||
        trainer_loss_batch(tr, &tr->sb, ctx, &pol, &ref, &lb) != 0 ||
        !(total = trainer_total_loss(tr, ctx, &lb, &pairs, lerr, sizeof lerr))) {
        snprintf(err, errlen, "evaluation after step %lld: %s", (long long)tr->step,
                 tensor_ctx_ok(ctx) ? lerr : tensor_ctx_error(ctx));
        return -1;
    }
    metric_sums_add(m, tr->beta, &pol, &ref, n, total->data[0], n);
    *tokens += (double)tr->sb.tokens;
    return 0;
}

int trainer_evaluate(Trainer *tr, char *err, size_t errlen)
{
    if (!tr->eval)
        return 0;
    MetricSums m = {0};
    TensorCtx *ctx = tr->step_ctx;
    int cap = tr->cfg.per_device_eval_batch_size;
    double t0 = timeutil_now(), tokens = 0;
    int rc = 0;
    ctx->no_grad = true;
    for (int64_t start = 0; rc == 0 && start < tr->eval->n; start += cap) {
        int n = tr->eval->n - start < cap ? (int)(tr->eval->n - start) : cap;
        rc = eval_batch(tr, start, n, &m, &tokens, err, errlen);
    }
    ctx->no_grad = false;
    tensor_ctx_reset(ctx);
    if (rc != 0)
        return -1;
    double el = timeutil_now() - t0, w = m.weight > 0 ? m.weight : 1;
    if (trainer_write_metrics(tr, "eval_", &m, false, el > 0 ? tokens / el : 0, err, errlen) != 0)
        return -1;
    if (!tr->quiet)
        fprintf(tr->progress, "%seval at step %lld: loss %.4f  acc %.3f  margin %.4f\n",
                tr->tty ? "\n" : "", (long long)tr->step, m.loss / w, m.accuracy / w, m.margin / w);
    return 0;
}
