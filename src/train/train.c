/*
 * train/train.c — the training loop: setup, the step, metrics, evaluation,
 * checkpoints and resume.
 *
 * Invariants:
 *   - the policy's parameters and gradients live in its own context; each
 *     micro-batch's activations and loss graph live in step_ctx, which is
 *     reset after the micro-batch, so memory is flat after the first step;
 *   - the reference runs in ref_ctx, a no_grad context reset right after its
 *     log-probs are copied out: no tape sources, nothing saved for backward,
 *     and its blocks stream through the model's two scratch arenas (model.h);
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
#include "train/train.h"

#include <cblas.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "train/data.h"
#include "util/fsutil.h"
#include "lua/loss.h"
#include "model/model.h"
#include "core/ops.h"
#include "model/optim.h"
#include "util/timeutil.h"
#include "train/toydata.h"
#include "model/model_file.h"

#define PATH_LEN 1024
#define MSG_LEN 1024
#define DEFAULT_BETA 0.1 /* TRL's DPOConfig.beta, for the reward metrics */

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
    Gpt *policy, *ref;
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
    FILE *metrics, *progress;
    bool tty;
    char run_dir[PATH_LEN];
    char last_ckpt[PATH_LEN];
    double t_start, t_interval;
    int64_t step_at_start;
    double interval_tokens;
} Trainer;

int train_set_threads(int n)
{
    if (n <= 0)
        n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    return n;
}

/* ---- setup: losses ------------------------------------------------------ */

static bool loss_declares(const LossScript *ls, const char *name)
{
    for (int i = 0; i < loss_param_count(ls); i++)
        if (strcmp(loss_param_name(ls, i), name) == 0)
            return true;
    return false;
}

/* Each config loss param goes to every script that declares it; one that no
 * script declares is an error naming it (a typo must not pass silently). */
static int apply_loss_params(Trainer *tr, char *err, size_t errlen)
{
    for (int p = 0; p < tr->cfg.n_loss_params; p++) {
        const ConfigLossParam *cp = &tr->cfg.loss_params[p];
        int takers = 0;
        for (int i = 0; i < tr->n_loss; i++) {
            if (!loss_declares(tr->loss[i], cp->name))
                continue;
            if (loss_set_param(tr->loss[i], cp->name, cp->value, err, errlen) != 0)
                return -1;
            takers++;
        }
        if (takers == 0) {
            snprintf(err, errlen, "loss param '%s' is not declared by %s%s", cp->name,
                     tr->n_loss > 1 ? "any of the losses, e.g. " : "", loss_path(tr->loss[0]));
            return -1;
        }
    }
    return 0;
}

static double loss_beta(const Trainer *tr)
{
    for (int i = 0; i < tr->n_loss; i++)
        for (int p = 0; p < loss_param_count(tr->loss[i]); p++)
            if (strcmp(loss_param_name(tr->loss[i], p), "beta") == 0)
                return loss_param_value(tr->loss[i], p);
    return DEFAULT_BETA;
}

static int load_losses(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    LossLimits lim = {.lua_bytes = (size_t)c->sandbox_lua_bytes,
                      .tensor_bytes = (size_t)c->sandbox_tensor_bytes,
                      .instructions = (uint64_t)c->sandbox_instructions,
                      .seconds = c->sandbox_seconds,
                      .max_depth = c->sandbox_max_depth};
    if (tr->opt->n_losses < 1 || tr->opt->n_losses > TRAIN_MAX_LOSSES) {
        snprintf(err, errlen, "train: 1 to %d loss scripts, got %d", TRAIN_MAX_LOSSES,
                 tr->opt->n_losses);
        return -1;
    }
    for (int i = 0; i < tr->opt->n_losses; i++) {
        tr->loss[i] = loss_load(tr->opt->loss_paths[i], NULL, &lim, err, errlen);
        if (!tr->loss[i])
            return -1;
        tr->weight[i] = tr->opt->loss_weights[i];
        tr->n_loss = i + 1;
    }
    if (apply_loss_params(tr, err, errlen) != 0)
        return -1;
    tr->beta = loss_beta(tr);
    return 0;
}

/* ---- setup: data, model, optimizer -------------------------------------- */

static int load_data(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    DataOptions dopt = {.max_length = c->max_length,
                        .max_prompt_length = c->max_prompt_length,
                        .skip_invalid = c->skip_invalid};
    Dataset *all = c->train_file[0] ? data_load_jsonl(c->train_file, &dopt, err, errlen)
                                    : toydata_dataset(c->seed, c->toy_pairs, &dopt, err, errlen);
    if (!all)
        return -1;
    if (c->eval_file[0]) {
        tr->train = all;
        tr->eval = data_load_jsonl(c->eval_file, &dopt, err, errlen);
        return tr->eval ? 0 : -1;
    }
    if (c->eval_fraction <= 0 || all->n < 2) {
        tr->train = all;
        return 0;
    }
    int rc = data_split(all, c->eval_fraction, c->seed, &tr->train, &tr->eval, err, errlen);
    data_free(all);
    return rc;
}

/* HF Trainer's plan: update steps per epoch = floor(batches / accumulation)
 * (at least 1); max_steps > 0 wins over epochs. */
static int plan_steps(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    if (data_order_init(&tr->order, tr->train->n, c->per_device_train_batch_size,
                        c->dataloader_drop_last, true, c->seed, err, errlen) != 0)
        return -1;
    int64_t per_epoch = data_order_batches_per_epoch(&tr->order) / c->gradient_accumulation_steps;
    if (per_epoch < 1)
        per_epoch = 1;
    tr->total_steps =
        c->max_steps > 0 ? c->max_steps : (int64_t)ceil(c->num_train_epochs * (double)per_epoch);
    if (tr->total_steps < 1) {
        snprintf(err, errlen, "train: the run has no steps (num_train_epochs %g, max_steps %d)",
                 c->num_train_epochs, c->max_steps);
        return -1;
    }
    LrScheduleKind kinds[] = {[CONFIG_SCHEDULE_LINEAR] = LR_LINEAR,
                              [CONFIG_SCHEDULE_COSINE] = LR_COSINE,
                              [CONFIG_SCHEDULE_CONSTANT] = LR_CONSTANT};
    tr->sched = (LrSchedule){
        .kind = kinds[c->lr_scheduler_type],
        .peak = c->learning_rate,
        .warmup_steps = c->warmup_steps > 0
                            ? c->warmup_steps
                            : (int64_t)ceil(c->warmup_ratio * (double)tr->total_steps),
        .total_steps = tr->total_steps,
    };
    return 0;
}

static int build_model(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    GptConfig g = {c->vocab, c->context, c->width, c->layers, c->heads};
    tr->policy = gpt_new(&g, true, err, errlen);
    if (!tr->policy)
        return -1;
    gpt_init(tr->policy, c->seed);
    if (tr->opt->init_model && model_file_read(tr->policy, tr->opt->init_model, err, errlen))
        return -1;
    /* the reference is the initial policy: a frozen copy made before step 1 */
    tr->ref = gpt_clone_frozen(tr->policy, err, errlen);
    if (!tr->ref)
        return -1;
    OptimSegment *seg = malloc((size_t)tr->policy->n_tensors * sizeof *seg);
    if (!seg) {
        snprintf(err, errlen, "train: out of memory");
        return -1;
    }
    int64_t off = 0;
    for (int i = 0; i < tr->policy->n_tensors; i++) {
        seg[i] =
            (OptimSegment){off, tr->policy->tensors[i]->size, gpt_tensor_decays(tr->policy, i)};
        off += seg[i].size;
    }
    AdamWConfig ac = {c->adam_beta1, c->adam_beta2, c->adam_epsilon, c->weight_decay};
    tr->adam = adamw_new(off, seg, tr->policy->n_tensors, &ac, err, errlen);
    free(seg);
    return tr->adam ? 0 : -1;
}

static int alloc_buffers(Trainer *tr, char *err, size_t errlen)
{
    int B = tr->cfg.per_device_train_batch_size, E = tr->cfg.per_device_eval_batch_size;
    int cap = B > E ? B : E, T = tr->cfg.context;
    size_t rows = 2 * (size_t)cap;
    tr->batch = data_batch_new(cap, T);
    tr->sb.ids = malloc(rows * T * sizeof(int32_t));
    tr->sb.targets = malloc(rows * T * sizeof(int32_t));
    tr->sb.mask = malloc(rows * T * sizeof(float));
    tr->sb.resp_len = malloc(rows * sizeof(float));
    tr->step_ctx = tensor_ctx_new(0);
    tr->ref_ctx = tensor_ctx_new(0);
    if (!tr->batch || !tr->sb.ids || !tr->sb.targets || !tr->sb.mask || !tr->sb.resp_len ||
        !tr->step_ctx || !tr->ref_ctx) {
        snprintf(err, errlen, "train: out of memory for batch buffers");
        return -1;
    }
    tr->ref_ctx->no_grad = true;
    return 0;
}

static void trainer_free(Trainer *tr)
{
    for (int i = 0; i < tr->n_loss; i++)
        loss_free(tr->loss[i]);
    gpt_free(tr->policy);
    gpt_free(tr->ref);
    adamw_free(tr->adam);
    data_free(tr->train);
    data_free(tr->eval);
    data_order_free(&tr->order);
    data_batch_free(tr->batch);
    free(tr->sb.ids);
    free(tr->sb.targets);
    free(tr->sb.mask);
    free(tr->sb.resp_len);
    if (tr->step_ctx)
        tensor_ctx_free(tr->step_ctx);
    if (tr->ref_ctx)
        tensor_ctx_free(tr->ref_ctx);
    RefCache *caches[2] = {&tr->train_ref, &tr->eval_ref};
    for (int i = 0; i < 2; i++) {
        free(caches[i]->seq);
        free(caches[i]->tok);
    }
    if (tr->metrics)
        fclose(tr->metrics);
}

/* ---- the micro-batch ---------------------------------------------------- */

/* Copies the batch into (2B, T) rows with T = longest sequence - 1: the last
 * token of a sequence predicts nothing, positions past it are padding with
 * no target, and causal attention keeps earlier positions independent of
 * later ones, so the log-probs are those of the full rows at a fraction of
 * the cost (toy pairs are ~18 tokens in a 64-position context). */
static void trim_batch(const DataBatch *b, StepBatch *s)
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

static Tensor *tensor_2d(TensorCtx *ctx, int rows, int cols, const float *data)
{
    int shape[2] = {rows, cols};
    return tensor_from_data(ctx, 2, shape, data);
}

/* Reference log-probs from the cache: gathered by dataset index. */
static int ref_from_cache(const RefCache *c, const StepBatch *s, TensorCtx *ctx, RefLogps *out)
{
    int B = s->B, T = s->T;
    out->chosen = tensor_new(ctx, 1, &B);
    out->rejected = tensor_new(ctx, 1, &B);
    out->chosen_tokens = tensor_2d(ctx, B, T, NULL);
    out->rejected_tokens = tensor_2d(ctx, B, T, NULL);
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
    tensor_ctx_reset(tr->ref_ctx);
    GptPairBatch pb = {s->B, s->T, s->ids, s->targets};
    GptPairLogps lp;
    if (gpt_pair_logps(tr->ref, tr->ref_ctx, &pb, &lp) != 0) {
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

static int ref_logps(Trainer *tr, const RefCache *cache, const StepBatch *s, TensorCtx *ctx,
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
static int precompute_ref(Trainer *tr, const Dataset *ds, RefCache *c, char *err, size_t errlen)
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
        trim_batch(tr->batch, &tr->sb);
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

/* What the loss scripts see (loss.h). */
static int make_loss_batch(const Trainer *tr, const StepBatch *s, TensorCtx *ctx,
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
        .chosen_mask = tensor_2d(ctx, B, T, s->mask),
        .rejected_mask = tensor_2d(ctx, B, T, s->mask + (size_t)B * T),
        .step = tr->step,
        .progress = (double)tr->step / (double)tr->total_steps,
    };
    return lb->chosen_lengths && lb->rejected_lengths && lb->chosen_mask && lb->rejected_mask ? 0
                                                                                              : -1;
}

/* The weighted sum of the scripts (loss_eval_weighted: (B), or 0-D when a
 * script is batch-level), its per-pair values to *pairs, and the mean that
 * backward starts from. */
static Tensor *total_loss(Trainer *tr, TensorCtx *ctx, const LossBatch *lb, Tensor **pairs,
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

/* TRL's reward metrics of one micro-batch, added to m with weight w. */
static void add_metrics(MetricSums *m, double beta, const GptPairLogps *pol, const RefLogps *ref,
                        int B, double loss, double w)
{
    double ch = 0, rj = 0, acc = 0, lc = 0, lr = 0;
    for (int b = 0; b < B; b++) {
        double rc = beta * ((double)pol->chosen->data[b] - ref->chosen->data[b]);
        double rr = beta * ((double)pol->rejected->data[b] - ref->rejected->data[b]);
        ch += rc;
        rj += rr;
        acc += rc > rr;
        lc += pol->chosen->data[b];
        lr += pol->rejected->data[b];
    }
    m->loss += w * loss;
    m->chosen += w * ch / B;
    m->rejected += w * rj / B;
    m->accuracy += w * acc / B;
    m->margin += w * (ch - rj) / B;
    m->logp_chosen += w * lc / B;
    m->logp_rejected += w * lr / B;
    m->weight += w;
}

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

static void step_name(const Trainer *tr, char *out, size_t len)
{
    snprintf(out, len, "step %lld/%lld (b.step = %lld)", (long long)tr->step + 1,
             (long long)tr->total_steps, (long long)tr->step);
}

typedef enum MicroResult { MICRO_OK, MICRO_NONFINITE, MICRO_ERROR } MicroResult;

/* Checks the loss; when it is NaN or Inf, summarizes the per-pair values. */
static bool loss_finite(const Trainer *tr, const Tensor *total, const Tensor *pairs, char *err,
                        size_t errlen)
{
    if (isfinite(total->data[0]))
        return true;
    char where[128], what[256];
    step_name(tr, where, sizeof where);
    summarize(pairs->data, pairs->size, what, sizeof what);
    snprintf(err, errlen, "loss is not finite at %s: per-pair values: %s", where, what);
    return false;
}

/* One micro-batch: forward, reference, loss, backward scaled by 1/accum. */
static MicroResult micro_step(Trainer *tr, const StepBatch *s, float scale, char *err,
                              size_t errlen)
{
    TensorCtx *ctx = tr->step_ctx;
    tensor_ctx_reset(ctx);
    GptPairBatch pb = {s->B, s->T, s->ids, s->targets};
    GptPairLogps pol;
    RefLogps ref;
    LossBatch lb;
    char where[128];
    step_name(tr, where, sizeof where);
    if (gpt_pair_logps(tr->policy, ctx, &pb, &pol) != 0) {
        snprintf(err, errlen, "%s: policy forward: %s", where, tensor_ctx_error(ctx));
        return MICRO_ERROR;
    }
    if (ref_logps(tr, &tr->train_ref, s, ctx, &ref, err, errlen) != 0 ||
        make_loss_batch(tr, s, ctx, &pol, &ref, &lb) != 0)
        return MICRO_ERROR;
    char lerr[MSG_LEN];
    Tensor *pairs;
    Tensor *total = total_loss(tr, ctx, &lb, &pairs, lerr, sizeof lerr);
    if (!total) {
        snprintf(err, errlen, "%s: %s", where, lerr);
        return MICRO_ERROR;
    }
    if (!loss_finite(tr, total, pairs, err, errlen))
        return MICRO_NONFINITE;
    if (ag_backward(ctx, total, &scale) != 0) {
        snprintf(err, errlen, "%s: backward: %s", where, tensor_ctx_error(ctx));
        return MICRO_ERROR;
    }
    add_metrics(&tr->sums, tr->beta, &pol, &ref, s->B, total->data[0], 1.0);
    tr->sums.tokens += (double)s->tokens;
    tr->interval_tokens += (double)s->tokens;
    tr->tokens_seen += s->tokens;
    tensor_ctx_reset(ctx);
    return MICRO_OK;
}

/* Names the first parameter tensor whose gradient holds NaN or Inf. */
static void grad_report(const Trainer *tr, double norm, char *err, size_t errlen)
{
    char where[128], what[256] = "";
    const char *name = "?";
    step_name(tr, where, sizeof where);
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

/* ---- the step ------------------------------------------------------------ */

/* After the micro-batches: NaN/Inf check, clipping, AdamW at the scheduled rate. */
static MicroResult optimizer_update(Trainer *tr, char *err, size_t errlen)
{
    Gpt *p = tr->policy;
    double norm = optim_clip_grad_norm(p->all->grad, p->all->size, tr->cfg.max_grad_norm);
    if (!isfinite(norm)) {
        grad_report(tr, norm, err, errlen);
        return MICRO_NONFINITE;
    }
    double lr = lr_at(&tr->sched, tr->step);
    adamw_step(tr->adam, p->all->data, p->all->grad, lr);
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
    gpt_zero_grad(tr->policy);
    MetricSums before = tr->sums;
    for (int k = 0; k < accum; k++) {
        if (data_next_batch(tr->train, &tr->order, tr->batch, err, errlen) != 0)
            return MICRO_ERROR;
        trim_batch(tr->batch, &tr->sb);
        MicroResult r = micro_step(tr, &tr->sb, 1.0f / (float)accum, err, errlen);
        if (r == MICRO_NONFINITE && tr->cfg.nan_policy == CONFIG_NAN_SKIP)
            skip_micro_batches(tr, accum - 1 - k);
        if (r != MICRO_OK) {
            tr->sums = before; /* a skipped step adds nothing to the metrics */
            return r;
        }
    }
    MicroResult r = optimizer_update(tr, err, errlen);
    if (r != MICRO_OK)
        tr->sums = before;
    return r;
}

/* ---- metrics ------------------------------------------------------------- */

static double epoch_now(const Trainer *tr)
{
    return (double)tr->order.epoch + (double)tr->order.pos / (double)tr->order.n;
}

/* ", "KEY": value" with %.10g (exact to float precision, and the same text
 * for the same number); JSON has no NaN or Inf, so those are written null. */
static void json_num(FILE *f, const char *prefix, const char *key, double v)
{
    if (isfinite(v))
        fprintf(f, ", \"%s%s\": %.10g", prefix, key, v);
    else
        fprintf(f, ", \"%s%s\": null", prefix, key);
}

/* One JSON object per line, keys in a fixed order (TRL's names). */
static void write_metrics(Trainer *tr, const char *prefix, const MetricSums *m, bool train,
                          double tok_per_sec)
{
    double w = m->weight > 0 ? m->weight : 1;
    FILE *f = tr->metrics;
    fprintf(f, "{\"epoch\": %.6g", epoch_now(tr));
    json_num(f, prefix, "loss", m->loss / w);
    if (train) {
        json_num(f, "", "grad_norm", m->grad_norm);
        json_num(f, "", "learning_rate", m->lr);
    }
    json_num(f, prefix, "rewards/chosen", m->chosen / w);
    json_num(f, prefix, "rewards/rejected", m->rejected / w);
    json_num(f, prefix, "rewards/accuracies", m->accuracy / w);
    json_num(f, prefix, "rewards/margins", m->margin / w);
    json_num(f, prefix, "logps/chosen", m->logp_chosen / w);
    json_num(f, prefix, "logps/rejected", m->logp_rejected / w);
    if (train && tr->skipped > 0)
        fprintf(f, ", \"skipped_batches\": %lld", (long long)tr->skipped);
    fprintf(f, ", \"tokens_per_sec\": %.1f, \"step\": %lld}\n", tok_per_sec, (long long)tr->step);
    fflush(f);
}

static void format_eta(double seconds, char *out, size_t len)
{
    long s = seconds > 0 && seconds < 1e7 ? (long)(seconds + 0.5) : 0;
    snprintf(out, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
}

static void show_progress(Trainer *tr, const MetricSums *m, bool logged)
{
    if (tr->opt->quiet)
        return;
    double w = m->weight > 0 ? m->weight : 1, el = timeutil_now() - tr->t_start;
    int64_t done = tr->step - tr->step_at_start;
    char eta[32];
    format_eta(done > 0 ? el / (double)done * (double)(tr->total_steps - tr->step) : 0, eta,
               sizeof eta);
    if (tr->tty) {
        int width = 24, fill = (int)(width * tr->step / tr->total_steps);
        fprintf(tr->progress, "\r[%.*s%*s] step %lld/%lld  loss %.4f  acc %.3f  ETA %s ", fill,
                "========================", width - fill, "", (long long)tr->step,
                (long long)tr->total_steps, m->loss / w, m->accuracy / w, eta);
        if (tr->step == tr->total_steps)
            fputc('\n', tr->progress);
    } else if (logged) {
        fprintf(tr->progress, "step %lld/%lld  loss %.4f  acc %.3f  lr %.3g  ETA %s\n",
                (long long)tr->step, (long long)tr->total_steps, m->loss / w, m->accuracy / w,
                m->lr, eta);
    }
    fflush(tr->progress);
}

static void log_step(Trainer *tr, TrainResult *res)
{
    bool due = tr->step % tr->cfg.logging_steps == 0 || tr->step == tr->total_steps;
    show_progress(tr, &tr->sums, due);
    if (!due || tr->sums.weight == 0)
        return;
    double el = timeutil_now() - tr->t_interval;
    write_metrics(tr, "", &tr->sums, true, el > 0 ? tr->interval_tokens / el : 0);
    double w = tr->sums.weight;
    res->last_loss = tr->sums.loss / w;
    res->last_accuracy = tr->sums.accuracy / w;
    tr->sums = (MetricSums){0};
    tr->interval_tokens = 0;
    tr->t_interval = timeutil_now();
}

/* ---- evaluation ---------------------------------------------------------- */

/* The held-out set in file order, policy and loss in a no_grad context. */
static int evaluate(Trainer *tr, char *err, size_t errlen)
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
        rc = data_batch_fill_range(tr->eval, start, n, tr->batch, err, errlen);
        if (rc != 0)
            break;
        trim_batch(tr->batch, &tr->sb);
        tensor_ctx_reset(ctx);
        GptPairBatch pb = {tr->sb.B, tr->sb.T, tr->sb.ids, tr->sb.targets};
        GptPairLogps pol;
        RefLogps ref;
        LossBatch lb;
        char lerr[MSG_LEN] = "";
        Tensor *total = NULL, *pairs;
        rc = gpt_pair_logps(tr->policy, ctx, &pb, &pol) != 0 ||
             ref_logps(tr, &tr->eval_ref, &tr->sb, ctx, &ref, lerr, sizeof lerr) != 0 ||
             make_loss_batch(tr, &tr->sb, ctx, &pol, &ref, &lb) != 0 ||
             !(total = total_loss(tr, ctx, &lb, &pairs, lerr, sizeof lerr));
        if (rc != 0) {
            snprintf(err, errlen, "evaluation after step %lld: %s", (long long)tr->step,
                     tensor_ctx_ok(ctx) ? lerr : tensor_ctx_error(ctx));
            break;
        }
        add_metrics(&m, tr->beta, &pol, &ref, n, total->data[0], n); /* weighted by pairs */
        tokens += (double)tr->sb.tokens;
    }
    ctx->no_grad = false;
    tensor_ctx_reset(ctx);
    if (rc != 0)
        return -1;
    double el = timeutil_now() - t0, w = m.weight > 0 ? m.weight : 1;
    write_metrics(tr, "eval_", &m, false, el > 0 ? tokens / el : 0);
    if (!tr->opt->quiet)
        fprintf(tr->progress, "%seval at step %lld: loss %.4f  acc %.3f  margin %.4f\n",
                tr->tty ? "\n" : "", (long long)tr->step, m.loss / w, m.accuracy / w, m.margin / w);
    return 0;
}

/* ---- checkpoints --------------------------------------------------------- */

static const char *const sum_names[] = {"sum_loss",          "sum_chosen", "sum_rejected",
                                        "sum_accuracy",      "sum_margin", "sum_logp_chosen",
                                        "sum_logp_rejected", "sum_weight", "last_grad_norm",
                                        "last_lr",           "sum_tokens"};
#define N_SUMS (int)(sizeof sum_names / sizeof sum_names[0])

static double *sum_field(MetricSums *m, int i)
{
    double *f[N_SUMS] = {&m->loss,      &m->chosen,      &m->rejected,      &m->accuracy,
                         &m->margin,    &m->logp_chosen, &m->logp_rejected, &m->weight,
                         &m->grad_norm, &m->lr,          &m->tokens};
    return f[i];
}

static int save_model(const Gpt *m, const char *path, char *err, size_t errlen)
{
    StEntry *e = malloc((size_t)m->n_tensors * sizeof *e);
    if (!e) {
        snprintf(err, errlen, "checkpoint: out of memory");
        return -1;
    }
    for (int i = 0; i < m->n_tensors; i++)
        e[i] = st_entry(m->tensors[i]->name, m->tensors[i]);
    const char *meta[] = {"format", "pt", "producer", "prefrun", NULL};
    int rc = st_save(path, e, m->n_tensors, meta, err, errlen);
    free(e);
    return rc;
}

static int save_state(Trainer *tr, const char *dir, char *err, size_t errlen)
{
    TrainerState s = {.step = tr->step,
                      .epoch = tr->order.epoch,
                      .epoch_pos = tr->order.pos,
                      .tokens_seen = tr->tokens_seen,
                      .skipped_batches = tr->skipped};
    for (int i = 0; i < N_SUMS; i++)
        ckpt_state_set(&s, sum_names[i], *sum_field(&tr->sums, i));
    ckpt_state_set(&s, "adam_t", (double)tr->adam->t);
    for (int i = 0; i < tr->n_loss; i++) { /* --resume without --loss-weights reuses them */
        char name[CKPT_VALUE_NAME_LEN];
        snprintf(name, sizeof name, "loss_weight.%d", i);
        ckpt_state_set(&s, name, tr->weight[i]);
    }
    for (int i = 0; i < tr->n_loss; i++) /* restored by load_checkpoint */
        for (int k = 0; k < loss_state_count(tr->loss[i]); k++) {
            char name[CKPT_VALUE_NAME_LEN];
            snprintf(name, sizeof name, "loss%d.state.%s", i, loss_state_name(tr->loss[i], k));
            ckpt_state_set(&s, name, loss_state_value(tr->loss[i], k));
        }
    char path[PATH_LEN + 64];
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_STATE_FILE);
    return ckpt_state_save(path, &s, err, errlen);
}

static int save_checkpoint(Trainer *tr, char *err, size_t errlen)
{
    char dir[PATH_LEN], path[PATH_LEN + 64];
    if (ckpt_begin(tr->run_dir, tr->step, dir, sizeof dir, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_MODEL_FILE);
    if (save_model(tr->policy, path, err, errlen) != 0)
        return -1;
    StEntry opt[2] = {st_entry("exp_avg", tr->adam->m), st_entry("exp_avg_sq", tr->adam->v)};
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_OPTIMIZER_FILE);
    if (st_save(path, opt, 2, NULL, err, errlen) != 0 || save_state(tr, dir, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_CONFIG_FILE);
    if (config_save_yaml(&tr->cfg, path, err, errlen) != 0)
        return -1;
    for (int i = 0; i < tr->n_loss; i++) {
        if (i == 0)
            snprintf(path, sizeof path, "%s/%s", dir, CKPT_LOSS_FILE);
        else
            snprintf(path, sizeof path, "%s/loss-%d.lua", dir, i + 1);
        if (fsutil_copy_atomic(loss_path(tr->loss[i]), path, err, errlen) != 0)
            return -1;
    }
    if (ckpt_commit(tr->run_dir, tr->step, tr->cfg.save_total_limit, err, errlen) != 0)
        return -1;
    ckpt_path(tr->last_ckpt, sizeof tr->last_ckpt, tr->run_dir, tr->step, NULL);
    return 0;
}

static int load_tensors(const char *path, const StEntry *e, int n, char *err, size_t errlen)
{
    StFile *f = st_open(path, err, errlen);
    if (!f)
        return -1;
    int rc = st_read_all(f, e, n, true, err, errlen);
    st_close(f);
    return rc;
}

static int load_checkpoint(Trainer *tr, const char *dir, char *err, size_t errlen)
{
    char path[PATH_LEN + 64];
    Gpt *m = tr->policy;
    StEntry *e = malloc((size_t)m->n_tensors * sizeof *e);
    if (!e)
        return -1;
    for (int i = 0; i < m->n_tensors; i++)
        e[i] = st_entry(m->tensors[i]->name, m->tensors[i]);
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_MODEL_FILE);
    int rc = load_tensors(path, e, m->n_tensors, err, errlen);
    free(e);
    StEntry opt[2] = {st_entry("exp_avg", tr->adam->m), st_entry("exp_avg_sq", tr->adam->v)};
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_OPTIMIZER_FILE);
    TrainerState s;
    if (rc != 0 || load_tensors(path, opt, 2, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_STATE_FILE);
    if (ckpt_state_load(path, &s, err, errlen) != 0 ||
        data_order_seek(&tr->order, s.epoch, s.epoch_pos, err, errlen) != 0)
        return -1;
    tr->step = s.step;
    tr->tokens_seen = s.tokens_seen;
    tr->skipped = s.skipped_batches;
    for (int i = 0; i < N_SUMS; i++)
        *sum_field(&tr->sums, i) = ckpt_state_get(&s, sum_names[i], 0);
    tr->adam->t = (int64_t)ckpt_state_get(&s, "adam_t", (double)s.step);
    /* a stateful loss (bco_pair's running mean) continues where it stopped */
    for (int i = 0; i < tr->n_loss; i++)
        for (int k = 0; k < loss_state_count(tr->loss[i]); k++) {
            char name[CKPT_VALUE_NAME_LEN];
            const char *key = loss_state_name(tr->loss[i], k);
            snprintf(name, sizeof name, "loss%d.state.%s", i, key);
            double v = ckpt_state_get(&s, name, loss_state_value(tr->loss[i], k));
            if (loss_set_state(tr->loss[i], key, v, err, errlen) != 0)
                return -1;
        }
    snprintf(tr->last_ckpt, sizeof tr->last_ckpt, "%s", dir);
    return 0;
}

/* Keeps the metrics lines of steps <= step (a run killed after its last
 * checkpoint may have logged past it), rewritten atomically. */
static int truncate_metrics(const char *path, int64_t step, char *err, size_t errlen)
{
    char *text;
    size_t len;
    if (!fsutil_exists(path))
        return 0;
    if (fsutil_read_file(path, &text, &len, err, errlen) != 0)
        return -1;
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    if (!f) {
        free(text);
        return -1;
    }
    for (char *line = text, *next; line && *line; line = next) {
        char *nl = strchr(line, '\n');
        next = nl ? nl + 1 : NULL;
        if (!nl)
            break; /* a torn last line: the kill came mid-write */
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, NULL);
        json_t *s = j ? json_object_get(j, "step") : NULL;
        if (s && json_is_integer(s) && json_integer_value(s) <= step)
            fsutil_atomic_write(f, line, (size_t)(next - line));
        json_decref(j);
    }
    free(text);
    return fsutil_atomic_commit(f, err, errlen);
}

/* ---- run ------------------------------------------------------------------ */

static int open_run_dir(Trainer *tr, char *err, size_t errlen)
{
    char path[PATH_LEN + 32];
    if (fsutil_mkdirs(tr->run_dir, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/metrics.jsonl", tr->run_dir);
    if (tr->opt->resume) {
        if (truncate_metrics(path, tr->step, err, errlen) != 0)
            return -1;
    } else if (fsutil_exists(path) && remove(path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    tr->metrics = fopen(path, "a");
    if (!tr->metrics) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof path, "%s/config.yaml", tr->run_dir);
    return config_save_yaml(&tr->cfg, path, err, errlen);
}

static int resume_run(Trainer *tr, char *err, size_t errlen)
{
    char dir[PATH_LEN];
    int64_t step;
    int rc = ckpt_find_latest(tr->run_dir, dir, sizeof dir, &step, err, errlen);
    if (rc == 1)
        snprintf(err, errlen, "--resume %s: the run has no checkpoint to resume from", tr->run_dir);
    if (rc != 0 || load_checkpoint(tr, dir, err, errlen) != 0)
        return -1;
    return 0;
}

static TrainStatus setup(Trainer *tr, char *err, size_t errlen)
{
    snprintf(tr->run_dir, sizeof tr->run_dir, "%s", tr->opt->run_dir);
    train_set_threads(tr->cfg.threads);
    tr->progress = tr->opt->progress ? tr->opt->progress : stderr;
    tr->tty = isatty(fileno(tr->progress));
    if (tr->cfg.vocab < DATA_VOCAB) {
        snprintf(err, errlen, "train: vocab %d is smaller than the tokenizer's %d tokens",
                 tr->cfg.vocab, DATA_VOCAB);
        return TRAIN_BAD_INPUT;
    }
    if (load_losses(tr, err, errlen) != 0 || load_data(tr, err, errlen) != 0 ||
        plan_steps(tr, err, errlen) != 0 || build_model(tr, err, errlen) != 0 ||
        alloc_buffers(tr, err, errlen) != 0)
        return TRAIN_BAD_INPUT;
    if (tr->opt->resume && resume_run(tr, err, errlen) != 0)
        return TRAIN_BAD_INPUT;
    if (open_run_dir(tr, err, errlen) != 0)
        return TRAIN_BAD_INPUT;
    if (tr->cfg.precompute_ref_log_probs &&
        (precompute_ref(tr, tr->train, &tr->train_ref, err, errlen) != 0 ||
         (tr->eval && precompute_ref(tr, tr->eval, &tr->eval_ref, err, errlen) != 0)))
        return TRAIN_FAILED;
    return TRAIN_OK;
}

/* After a step: evaluation and checkpoint when due. */
static TrainStatus after_step(Trainer *tr, char *err, size_t errlen)
{
    bool last = tr->step == tr->total_steps;
    int ev = tr->cfg.eval_steps, sv = tr->cfg.save_steps;
    if ((last || (ev > 0 && tr->step % ev == 0)) && evaluate(tr, err, errlen) != 0)
        return TRAIN_FAILED;
    if ((last || (sv > 0 && tr->step % sv == 0)) && save_checkpoint(tr, err, errlen) != 0)
        return TRAIN_FAILED;
    return TRAIN_OK;
}

static void nan_stop_message(const Trainer *tr, char *err, size_t errlen)
{
    size_t k = strlen(err);
    if (tr->last_ckpt[0])
        snprintf(err + k, errlen - k, "; the run stopped; last good checkpoint: %s", tr->last_ckpt);
    else
        snprintf(err + k, errlen - k, "; the run stopped before its first checkpoint");
}

static TrainStatus loop(Trainer *tr, TrainResult *res, char *err, size_t errlen)
{
    tr->t_start = tr->t_interval = timeutil_now();
    tr->step_at_start = tr->step;
    while (tr->step < tr->total_steps) {
        MicroResult r = train_step(tr, err, errlen);
        if (r == MICRO_ERROR)
            return TRAIN_FAILED;
        if (r == MICRO_NONFINITE) {
            if (tr->cfg.nan_policy == CONFIG_NAN_STOP) {
                nan_stop_message(tr, err, errlen);
                return TRAIN_FAILED;
            }
            tr->skipped++;
            tr->step++; /* the step happened, without an update (as AMP's skipped steps) */
            if (!tr->opt->quiet)
                fprintf(tr->progress, "%s%s: batch skipped (nan_policy = skip)\n",
                        tr->tty ? "\n" : "", err);
        }
        log_step(tr, res);
        double t0 = timeutil_now();
        TrainStatus st = after_step(tr, err, errlen);
        tr->t_interval += timeutil_now() - t0; /* evaluation and saving are not throughput */
        if (st != TRAIN_OK)
            return st;
    }
    return TRAIN_OK;
}

TrainStatus train_run(const TrainOptions *opt, TrainResult *res, char *err, size_t errlen)
{
    Trainer tr = {.opt = opt, .cfg = opt->cfg};
    *res = (TrainResult){0};
    double t0 = timeutil_now();
    TrainStatus st = setup(&tr, err, errlen);
    if (st == TRAIN_OK)
        st = loop(&tr, res, err, errlen);
    res->steps = tr.step;
    res->first_step = tr.step_at_start;
    res->total_steps = tr.total_steps;
    res->skipped_batches = tr.skipped;
    res->seconds = timeutil_now() - t0;
    trainer_free(&tr);
    return st;
}

/* ---- the benchmark's step ------------------------------------------------ */

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
    b->tr = (Trainer){.opt = &b->opt, .cfg = *cfg, .total_steps = INT32_MAX};
    b->tr.sched = (LrSchedule){LR_CONSTANT, cfg->learning_rate, 0, INT32_MAX};
    if (load_losses(&b->tr, err, errlen) != 0 || build_model(&b->tr, err, errlen) != 0 ||
        alloc_buffers(&b->tr, err, errlen) != 0) {
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
    gpt_zero_grad(tr->policy);
    MicroResult r = micro_step(tr, s, 1.0f, err, errlen);
    if (r == MICRO_OK)
        r = optimizer_update(tr, err, errlen);
    return r == MICRO_OK ? 0 : -1;
}
