/*
 * train/train_dp.c — data-parallel training under `mpirun -np N prefrun
 * train` (util/mpi_comm.h). The global batch is the configured one
 * whatever N: every rank reads the same micro-batch (the data order depends
 * only on the seed), trims it to the same length T, and runs the policy and
 * the reference on its share of the pairs, [r·B/N, (r+1)·B/N). The ranks
 * then gather each other's log-probs, so every rank computes the loss, the
 * reward metrics and the state of stateful losses on the whole micro-batch,
 * exactly as one process does; batch-coupled losses (prefrun check's
 * batch_coupled) therefore see the same batch as with one rank and need no
 * special case. The loss's gradient with respect to the rank's own rows'
 * log-probs goes back through its share of the model (one backward of
 * sum(logps · dloss/dlogps)), and trainer_update sums the parameter
 * gradients over the ranks in rank order before clipping and AdamW, so
 * every rank holds the same weights.
 *
 * What is bit-identical to one process: the batches, T, and the first
 * step's loss and metrics (a row's log-probs do not depend on the other rows
 * of its matmuls). What is not: a parameter's gradient is a sum over rows,
 * which one process forms inside one sgemm and N ranks as N partial sums
 * added in rank order. Float addition is not associative, so the gradients
 * differ in their last bits (relative 1e-7), and later steps inherit that
 * through the weights. tests/test_train_mpi.sh asserts the tolerance this
 * gives on a short run (README, "More than one machine"); for a given N the
 * results are bit-identical from run to run (a fixed reduction order).
 */
#include "train/train_internal.h"

#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "util/errmsg.h"
#include "util/mpi_comm.h"
#include "util/timeutil.h"

static int share_lo(int B, int r, int N) { return (int)((int64_t)B * r / N); }

int trainer_dp_setup(Trainer *tr, char *err, size_t errlen)
{
    tr->rank = tr->opt->data_parallel ? comm_rank() : 0;
    tr->world = tr->opt->data_parallel ? comm_size() : 1;
    tr->quiet = tr->opt->quiet || tr->rank > 0;
    if (tr->world == 1)
        return 0;
    int cap = tr->cfg.per_device_train_batch_size, T = tr->cfg.context;
    size_t rows = 2 * (size_t)cap, per_pair = 4 + 4 * (size_t)T;
    StepBatch *l = &tr->local;
    l->ids = malloc(rows * T * sizeof(int32_t));
    l->targets = malloc(rows * T * sizeof(int32_t));
    l->mask = malloc(rows * T * sizeof(float));
    l->resp_len = malloc(rows * sizeof(float));
    tr->dp_mine = malloc((size_t)cap * per_pair * sizeof(float));
    tr->dp_all = malloc((size_t)cap * per_pair * sizeof(float));
    tr->dp_counts = malloc((size_t)tr->world * sizeof(int));
    if (!l->ids || !l->targets || !l->mask || !l->resp_len || !tr->dp_mine || !tr->dp_all ||
        !tr->dp_counts)
        return err_fail(err, errlen, "train: out of memory for the data-parallel buffers");
    return 0;
}

void trainer_dp_free(Trainer *tr)
{
    free(tr->local.ids);
    free(tr->local.targets);
    free(tr->local.mask);
    free(tr->local.resp_len);
    free(tr->dp_mine);
    free(tr->dp_all);
    free(tr->dp_counts);
}

/* Every rank's setup status: a rank that failed has its own message; the
 * others say so instead of waiting for it in the first step. */
TrainStatus trainer_dp_agree(Trainer *tr, TrainStatus st, char *err, size_t errlen)
{
    if (tr->world == 1)
        return st;
    double failed = st != TRAIN_OK;
    char why[MSG_LEN];
    double t0 = timeutil_now();
    if (comm_allreduce_sum(&failed, 1, why, sizeof why) != 0)
        return snprintf(err, errlen, "rank %d: %s", tr->rank, why), TRAIN_FAILED;
    tr->comm_seconds += timeutil_now() - t0;
    if (st == TRAIN_OK && failed > 0) {
        snprintf(err, errlen, "rank %d: %d other rank(s) failed to set up the run (see above)",
                 tr->rank, (int)failed);
        return TRAIN_BAD_INPUT;
    }
    return st;
}

/* This rank's pairs of the micro-batch s, at the same T. */
static void take_share(const Trainer *tr, const StepBatch *s, StepBatch *l)
{
    int B = s->B, T = s->T, lo = share_lo(B, tr->rank, tr->world);
    int n = share_lo(B, tr->rank + 1, tr->world) - lo;
    l->B = n;
    l->T = T;
    l->index = s->index + lo;
    l->tokens = 0;
    for (int half = 0; half < 2; half++) { /* chosen rows, then rejected rows */
        size_t from = (size_t)(half * B + lo) * T, to = (size_t)half * n * T;
        memcpy(l->ids + to, s->ids + from, (size_t)n * T * sizeof(int32_t));
        memcpy(l->targets + to, s->targets + from, (size_t)n * T * sizeof(int32_t));
        memcpy(l->mask + to, s->mask + from, (size_t)n * T * sizeof(float));
        memcpy(l->resp_len + half * n, s->resp_len + half * B + lo, (size_t)n * sizeof(float));
    }
}

/* The eight log-prob arrays of a share, in the gather's order. */
static void share_arrays(const GptPairLogps *p, const RefLogps *r, Tensor *out[8])
{
    Tensor *a[8] = {p->chosen,        p->rejected,        r->chosen,        r->rejected,
                    p->chosen_tokens, p->rejected_tokens, r->chosen_tokens, r->rejected_tokens};
    memcpy(out, a, sizeof a);
}

/* The whole micro-batch's log-probs, from every rank's share, as leaves of
 * ctx (the policy's with gradients). */
static int gather(Trainer *tr, const StepBatch *s, const GptPairLogps *pol, const RefLogps *ref,
                  GptPairLogps *fpol, RefLogps *fref, char *err, size_t errlen)
{
    int B = s->B, T = s->T, n = tr->local.B;
    Tensor *mine[8] = {0};
    if (n > 0)
        share_arrays(pol, ref, mine);
    float *w = tr->dp_mine;
    for (int k = 0; k < 8 && n > 0; k++) {
        size_t len = (size_t)n * (k < 4 ? 1 : T);
        memcpy(w, mine[k]->data, len * sizeof(float));
        w += len;
    }
    for (int r = 0; r < tr->world; r++)
        tr->dp_counts[r] =
            (share_lo(B, r + 1, tr->world) - share_lo(B, r, tr->world)) * (4 + 4 * T);
    double t0 = timeutil_now();
    int rc =
        comm_allgather_float(tr->dp_mine, n * (4 + 4 * T), tr->dp_all, tr->dp_counts, err, errlen);
    tr->comm_seconds += timeutil_now() - t0;
    if (rc != 0)
        return -1;
    TensorCtx *ctx = tr->step_ctx;
    *fpol = (GptPairLogps){tensor_new(ctx, 1, &B), tensor_new(ctx, 1, &B),
                           train_tensor_2d(ctx, B, T, NULL), train_tensor_2d(ctx, B, T, NULL)};
    *fref = (RefLogps){tensor_new(ctx, 1, &B), tensor_new(ctx, 1, &B),
                       train_tensor_2d(ctx, B, T, NULL), train_tensor_2d(ctx, B, T, NULL)};
    Tensor *full[8];
    share_arrays(fpol, fref, full);
    for (int k = 0; k < 8; k++)
        if (!full[k])
            return err_fail(err, errlen, "gathered log-probs: %s", tensor_ctx_error(ctx));
    const float *at = tr->dp_all;
    for (int r = 0; r < tr->world; r++) {
        int lo = share_lo(B, r, tr->world), m = share_lo(B, r + 1, tr->world) - lo;
        for (int k = 0; k < 8; k++) {
            size_t row = k < 4 ? 1 : (size_t)T, len = (size_t)m * row;
            memcpy(full[k]->data + (size_t)lo * row, at, len * sizeof(float));
            at += len;
        }
    }
    Tensor *grads[4] = {fpol->chosen, fpol->rejected, fpol->chosen_tokens, fpol->rejected_tokens};
    for (int k = 0; k < 4; k++)
        if (tensor_requires_grad(grads[k]) != 0)
            return err_fail(err, errlen, "gathered log-probs: %s", tensor_ctx_error(ctx));
    return 0;
}

/* sum over this rank's rows of logp · dloss/dlogp: its backward is the
 * loss's backward through this rank's share of the model */
static Tensor *share_surrogate(Trainer *tr, const GptPairLogps *pol, const GptPairLogps *fpol)
{
    TensorCtx *ctx = tr->step_ctx;
    int n = tr->local.B, T = tr->local.T;
    int lo = share_lo(fpol->chosen->shape[0], tr->rank, tr->world);
    Tensor *mine[4] = {pol->chosen, pol->rejected, pol->chosen_tokens, pol->rejected_tokens};
    Tensor *full[4] = {fpol->chosen, fpol->rejected, fpol->chosen_tokens, fpol->rejected_tokens};
    Tensor *sum = NULL;
    for (int k = 0; k < 4; k++) {
        size_t row = k < 2 ? 1 : (size_t)T;
        Tensor *g = k < 2 ? tensor_from_data(ctx, 1, &n, full[k]->grad + lo)
                          : train_tensor_2d(ctx, n, T, full[k]->grad + (size_t)lo * row);
        Tensor *term = g ? ag_sum(ctx, ag_mul(ctx, mine[k], g), AG_ALL, false) : NULL;
        sum = sum && term ? ag_add(ctx, sum, term) : term;
        if (!sum)
            return NULL;
    }
    return sum;
}

/* One micro-batch of a data-parallel step (train.c's trainer_micro_step,
 * the loss on the gathered batch). */
MicroResult trainer_micro_step_dp(Trainer *tr, const StepBatch *s, float scale, char *err,
                                  size_t errlen)
{
    TensorCtx *ctx = tr->step_ctx;
    tensor_ctx_reset(ctx);
    StepBatch *l = &tr->local;
    take_share(tr, s, l);
    GptPairLogps pol = {0}, fpol;
    RefLogps ref = {0}, fref;
    LossBatch lb;
    char where[128];
    trainer_step_name(tr, where, sizeof where);
    GptPairBatch pb = {l->B, l->T, l->ids, l->targets};
    if (l->B > 0 && gpt_pair_logps(tr->policy, ctx, &pb, &pol) != 0) {
        snprintf(err, errlen, "%s: policy forward: %s", where, tensor_ctx_error(ctx));
        return MICRO_ERROR;
    }
    if ((l->B > 0 && trainer_ref_logps(tr, &tr->train_ref, l, ctx, &ref, err, errlen) != 0) ||
        gather(tr, s, &pol, &ref, &fpol, &fref, err, errlen) != 0 ||
        trainer_loss_batch(tr, s, ctx, &fpol, &fref, &lb) != 0)
        return MICRO_ERROR;
    char lerr[MSG_LEN];
    Tensor *pairs;
    Tensor *total = trainer_total_loss(tr, ctx, &lb, &pairs, lerr, sizeof lerr);
    if (!total) {
        snprintf(err, errlen, "%s: %s", where, lerr);
        return MICRO_ERROR;
    }
    if (!trainer_loss_finite(tr, total, pairs, err, errlen))
        return MICRO_NONFINITE; /* the same verdict on every rank: the same batch */
    Tensor *sur = NULL;
    if (ag_backward(ctx, total, &scale) != 0 ||
        (l->B > 0 && (!(sur = share_surrogate(tr, &pol, &fpol)) || ag_backward(ctx, sur, NULL)))) {
        snprintf(err, errlen, "%s: backward: %s", where, tensor_ctx_error(ctx));
        return MICRO_ERROR;
    }
    trainer_count_micro_batch(tr, s, &fpol, &fref, total->data[0]);
    tensor_ctx_reset(ctx);
    return MICRO_OK;
}

/* The step's parameter gradients summed over the ranks (before clipping). */
int trainer_dp_reduce(Trainer *tr, char *err, size_t errlen)
{
    if (tr->world == 1)
        return 0;
    Tensor *p = trainer_params(tr);
    double t0 = timeutil_now();
    int rc = comm_allreduce_sum_float(p->grad, (size_t)p->size, err, errlen);
    tr->comm_seconds += timeutil_now() - t0;
    return rc;
}
