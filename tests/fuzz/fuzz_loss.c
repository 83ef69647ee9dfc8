/*
 * fuzz_loss — a loss script through the sandbox: loss_load, then loss_eval
 * on a small batch of 4 pairs with 3 token positions, backward through the
 * result, a second call (state committed by the first), a --set of the
 * first param and a weighted sum of the script with itself.
 *
 * Bar: any text fails with a message or runs; no crash, no sanitizer
 * report, nothing left allocated; the sandbox limits are FUZZ_LOSS_LIMITS
 * (fuzz_common.h). use("name") resolves in the source tree's losses/.
 */
#include <stddef.h>
#include <stdint.h>

#include "core/ops.h"
#include "core/tensor.h"
#include "fuzz_common.h"
#include "lua/loss.h"

#define NB 4
#define NT 3

static float seq[6][NB] = {
    {-10, -11, -12, -13},   /* policy chosen */
    {-12, -11.5, -11, -10}, /* policy rejected */
    {-11, -11, -11, -11},   /* reference chosen */
    {-11.5, -11.25, -11, -10.75},
    {10, 11, 12, 13}, /* lengths */
    {20, 19, 18, 17},
};
static float tok[6][NB * NT] = {
    {-1, -2, -3, -1, -2, -3, -1, -2, -3, -1, -2, -3},
    {-3, -2, -1, -3, -2, -1, -3, -2, -1, -3, -2, -1},
    {-2, -2, -2, -2, -2, -2, -2, -2, -2, -2, -2, -2},
    {-2, -1, -2, -1, -2, -1, -2, -1, -2, -1, -2, -1},
    {1, 1, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1}, /* masks */
    {1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0},
};

static Tensor *field(TensorCtx *ctx, int ndim, const int *shape, const float *data, int grad)
{
    Tensor *t = tensor_from_data(ctx, ndim, shape, data);
    if (t && grad)
        tensor_requires_grad(t);
    return t;
}

static void batch(TensorCtx *ctx, LossBatch *b, int64_t step, double progress)
{
    int s1[1] = {NB}, s2[2] = {NB, NT};
    *b = (LossBatch){.B = NB, .T = NT, .step = step, .progress = progress};
    b->policy_chosen_logps = field(ctx, 1, s1, seq[0], 1);
    b->policy_rejected_logps = field(ctx, 1, s1, seq[1], 1);
    b->reference_chosen_logps = field(ctx, 1, s1, seq[2], 0);
    b->reference_rejected_logps = field(ctx, 1, s1, seq[3], 0);
    b->chosen_lengths = field(ctx, 1, s1, seq[4], 0);
    b->rejected_lengths = field(ctx, 1, s1, seq[5], 0);
    b->policy_chosen_token_logps = field(ctx, 2, s2, tok[0], 1);
    b->policy_rejected_token_logps = field(ctx, 2, s2, tok[1], 1);
    b->reference_chosen_token_logps = field(ctx, 2, s2, tok[2], 0);
    b->reference_rejected_token_logps = field(ctx, 2, s2, tok[3], 0);
    b->chosen_mask = field(ctx, 2, s2, tok[4], 0);
    b->rejected_mask = field(ctx, 2, s2, tok[5], 0);
}

/* backward from l: d mean when (B), d l when 0-D */
static void backward(TensorCtx *ctx, Tensor *l)
{
    static const float ones[NB] = {0.25f, 0.25f, 0.25f, 0.25f};
    if (l->size == 1)
        ag_backward(ctx, l, NULL);
    else if (l->size == NB)
        ag_backward(ctx, l, ones);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write_file("loss.lua", data, size);
    char err[1024];
    LossScript *ls = loss_load(path, NULL, &FUZZ_LOSS_LIMITS, err, sizeof err);
    if (!ls)
        return 0;
    (void)loss_name(ls);
    (void)loss_unknown_fields(ls);
    (void)loss_line(ls);
    for (int i = 0; i < loss_state_count(ls); i++)
        (void)loss_state_value(ls, i);
    TensorCtx *ctx = tensor_ctx_new((size_t)16 << 20);
    LossBatch b;
    for (int call = 0; call < 2; call++) {
        batch(ctx, &b, call, 0.5 * call);
        Tensor *l = loss_eval(ls, ctx, &b, err, sizeof err);
        if (l)
            backward(ctx, l);
        tensor_ctx_reset(ctx);
    }
    if (loss_param_count(ls) > 0 &&
        loss_set_param(ls, loss_param_name(ls, 0), 0.5, err, sizeof err) == 0) {
        batch(ctx, &b, 2, 1.0);
        LossScript *both[2] = {ls, ls};
        static const double w[2] = {0.5, 2.0};
        Tensor *l = loss_eval_weighted(both, w, 2, ctx, &b, err, sizeof err);
        if (l)
            backward(ctx, l);
    }
    tensor_ctx_free(ctx);
    loss_free(ls);
    return 0;
}
