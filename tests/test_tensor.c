/*
 * test_tensor.c — the arena, shapes, modes and the backward walk: what every
 * op relies on and no gradient check sees.
 *
 * Memory is checked to the byte: every arena allocation is rounded up to
 * ARENA_ALIGN, so a node costs align(sizeof(Tensor)) for its header plus
 * align(4 * size) for its data (a view: the header alone).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "testlib.h"

#define ARENA_ALIGN 64 /* tensor.h: tensor_ctx_alloc is 64-byte aligned */

static size_t align64(size_t n) { return (n + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN; }
static size_t header_bytes(void) { return align64(sizeof(Tensor)); }
static size_t data_bytes(const Tensor *t) { return align64(t->size ? (size_t)t->size * 4 : 1); }

static bool has_shape(const Tensor *t, int nd, const int *shape)
{
    if (!t || t->ndim != nd)
        return false;
    for (int i = 0; i < nd; i++)
        if (t->shape[i] != shape[i])
            return false;
    return true;
}

/* ---- arena ---------------------------------------------------------------- */

static void arena_cap_gives_nomem_and_reset_recovers(void)
{
    TensorCtx *ctx = tensor_ctx_new(1 << 16);
    int shape[1] = {1000}; /* 4000 bytes of data each */
    int made = 0;
    while (tensor_new(ctx, 1, shape) && made < 100)
        made++;
    CHECK(made > 0 && made < 16); /* 64 KiB hold fewer than 16 such nodes */
    CHECK(ctx->status == TENSOR_ERR_NOMEM);
    CHECKF(strstr(tensor_ctx_error(ctx), "memory cap exceeded") &&
               strstr(tensor_ctx_error(ctx), "65536"),
           "message: %s", tensor_ctx_error(ctx));
    CHECK(ctx->used <= ctx->cap_bytes);
    /* ops on a NULL keep returning NULL; the first error stays */
    CHECK(ag_exp(ctx, ag_add(ctx, NULL, NULL)) == NULL);
    CHECK(ctx->status == TENSOR_ERR_NOMEM);
    uint32_t gen = ctx->generation;
    tensor_ctx_reset(ctx);
    CHECK(tensor_ctx_ok(ctx) && ctx->used == 0 && ctx->generation == gen + 1);
    Tensor *a = tensor_full(ctx, 1, shape, 2.0f);
    Tensor *y = ag_sum(ctx, ag_mul(ctx, a, a), AG_ALL, false);
    CHECK(y && y->data[0] == 4000.0f && tensor_ctx_ok(ctx));
    tensor_ctx_free(ctx);
}

/* one step's worth of work: a few 256 KB buffers, more than the arena's first
 * 1 MiB chunk, so the first step spans several chunks */
static float arena_work(TensorCtx *ctx, Tensor *w)
{
    int shape[2] = {64, 1000};
    Tensor *x = tensor_full(ctx, 2, shape, 0.5f);
    Tensor *h = ag_tanh(ctx, ag_mul(ctx, x, w));
    Tensor *loss = ag_mean(ctx, ag_logsigmoid(ctx, h), AG_ALL, false);
    if (!loss || ag_backward(ctx, loss, NULL) != 0)
        return NAN;
    return loss->data[0];
}

static void arena_reset_reuses_memory_over_100_cycles(void)
{
    TensorCtx *params = tensor_ctx_new(0), *step = tensor_ctx_new(0);
    int shape[1] = {1000};
    Tensor *w = tensor_full(params, 1, shape, 0.25f);
    tensor_requires_grad(w);
    float first = arena_work(step, w);
    size_t peak = step->peak;
    CHECK(peak > (1u << 20));
    const void *first_node = NULL;
    bool same_node = true, same_value = true, peak_flat = true, gen_ok = true;
    for (int cycle = 0; cycle < 100; cycle++) {
        uint32_t gen = step->generation;
        tensor_ctx_reset(step);
        gen_ok = gen_ok && step->generation == gen + 1 && step->used == 0;
        float v = arena_work(step, w);
        same_value = same_value && v == first;
        peak_flat = peak_flat && step->peak == peak;
        /* after the first reset the arena is one chunk: the same address every cycle */
        const void *node = step->tape[0];
        if (!first_node)
            first_node = node;
        same_node = same_node && node == first_node;
    }
    CHECK(gen_ok);
    CHECK(same_value);
    CHECKF(peak_flat, "peak grew from %zu to %zu", peak, step->peak);
    CHECK(same_node);
    tensor_ctx_free(step);
    tensor_ctx_free(params);
}

/* Fault injection: a cap at every 64-byte step up to what the work needs makes
 * each allocation in the forward and the backward fail in turn. */
static int fault_work(TensorCtx *ctx)
{
    int s23[2] = {2, 3}, s3[1] = {3}, s6[1] = {6};
    Tensor *x = tensor_full(ctx, 2, s23, 0.5f), *b = tensor_full(ctx, 1, s3, -1.0f);
    if (!x || !b || tensor_requires_grad(x) || tensor_requires_grad(b))
        return -1;
    Tensor *h = ag_softmax(ctx, ag_add(ctx, x, b), -1); /* (2, 3) */
    Tensor *c = ag_concat(ctx, ag_slice(ctx, h, 1, 0, 2), ag_transpose(ctx, x, 0, 1), 0);
    Tensor *r = ag_reshape(ctx, ag_where(ctx, b, h, x), 1, s6); /* (6) */
    Tensor *l = ag_add(ctx, ag_sum(ctx, c, AG_ALL, false), ag_logsumexp(ctx, r, 0, false));
    return l ? ag_backward(ctx, l, NULL) : -1;
}

static void every_allocation_failure_is_a_clean_error(void)
{
    TensorCtx *full = tensor_ctx_new(0);
    CHECK(fault_work(full) == 0);
    size_t need = full->peak;
    tensor_ctx_free(full);
    int clean = 0, failed = 0;
    for (size_t cap = ARENA_ALIGN; cap < need; cap += ARENA_ALIGN) {
        TensorCtx *ctx = tensor_ctx_new(cap);
        int rc = fault_work(ctx);
        failed += rc != 0;
        clean += rc != 0 && ctx->status == TENSOR_ERR_NOMEM && ctx->used <= cap;
        tensor_ctx_free(ctx);
    }
    CHECK(failed > 10 && clean == failed);
    TensorCtx *ctx = tensor_ctx_new(need);
    CHECK(fault_work(ctx) == 0);
    tensor_ctx_free(ctx);
}

/* ---- shapes ---------------------------------------------------------------- */

static bool bshape(int na, const int *sa, int nb, const int *sb, int nw, const int *want)
{
    int n = -7, out[TENSOR_MAX_DIMS];
    if (tensor_broadcast_shape(na, sa, nb, sb, &n, out) != 0)
        return nw < 0;
    if (n != nw)
        return false;
    for (int i = 0; i < n; i++)
        if (out[i] != want[i])
            return false;
    return true;
}

#define A(...) ((int[]){__VA_ARGS__})
#define FAILS -1, NULL

static void broadcast_shape_follows_numpy_rules(void)
{
    CHECK(bshape(1, A(4), 1, A(4), 1, A(4)));
    CHECK(bshape(2, A(2, 3), 1, A(3), 2, A(2, 3)));
    CHECK(bshape(1, A(3), 2, A(2, 3), 2, A(2, 3)));
    CHECK(bshape(2, A(4, 1), 2, A(1, 5), 2, A(4, 5)));
    CHECK(bshape(0, NULL, 3, A(2, 3, 4), 3, A(2, 3, 4)));
    CHECK(bshape(3, A(2, 3, 4), 0, NULL, 3, A(2, 3, 4)));
    CHECK(bshape(0, NULL, 0, NULL, 0, NULL));
    CHECK(bshape(3, A(3, 1, 5), 2, A(4, 1), 3, A(3, 4, 5)));
    CHECK(bshape(4, A(1, 3, 1, 5), 4, A(2, 1, 4, 1), 4, A(2, 3, 4, 5)));
    CHECK(bshape(2, A(2, 0), 2, A(2, 1), 2, A(2, 0))); /* 1 stretches to 0 */
    CHECK(bshape(1, A(1), 1, A(0), 1, A(0)));
    CHECK(bshape(1, A(4), 1, A(8), FAILS));
    CHECK(bshape(2, A(2, 3), 1, A(2), FAILS));
    CHECK(bshape(2, A(2, 0), 2, A(2, 3), FAILS));
    CHECK(bshape(3, A(2, 3, 4), 2, A(3, 1), 3, A(2, 3, 4)));
    CHECK(bshape(3, A(2, 3, 4), 2, A(2, 4), FAILS));
}

/* The size limit (tensor.h): at most 2^40 elements, zero dims counted as 1.
 * A shape past it is TENSOR_ERR_SHAPE naming the shape, never an int64
 * product that wraps (UBSan, in the asan build, would report one). */
static void numel_is_checked_and_never_overflows(void)
{
    const int64_t lim = TENSOR_MAX_NUMEL;
    CHECK(lim == (int64_t)1 << 40);
    CHECK(tensor_numel(0, NULL) == 1);
    CHECK(tensor_numel(3, A(5, 0, 7)) == 0);
    CHECK(tensor_numel(2, A(1 << 20, 1 << 20)) == lim);   /* the largest allowed */
    CHECK(tensor_numel(2, A(INT_MAX, 512)) == lim - 512); /* one dim of 2^31 - 1 */
    CHECK(tensor_numel(2, A(1 << 20, (1 << 20) + 1)) == -1);
    CHECK(tensor_numel(2, A(INT_MAX, INT_MAX)) == -1);          /* 2^62: fits int64, too big */
    CHECK(tensor_numel(3, A(INT_MAX, INT_MAX, INT_MAX)) == -1); /* 2^93: int64 would wrap */
    CHECK(tensor_numel(4, A(INT_MAX, INT_MAX, INT_MAX, INT_MAX)) == -1);
    CHECK(tensor_numel(3, A(0, INT_MAX, INT_MAX)) == -1); /* zeros count as 1 */
    CHECK(tensor_numel(2, A(3, -1)) == -1);
}

static void shapes_over_2_40_elements_are_errors_even_in_meta_mode(void)
{
    /* a meta context allocates no data, so no byte cap would stop these; the
     * shape (2^31, 2^31, 2^31) does not fit an int, (2^31 - 1)^3 is its stand-in */
    TensorCtx *ctx = tensor_ctx_new(0);
    ctx->meta = true;
    CHECK(tensor_new(ctx, 3, A(INT_MAX, INT_MAX, INT_MAX)) == NULL);
    CHECK(ctx->status == TENSOR_ERR_SHAPE);
    CHECKF(strcmp(tensor_ctx_error(ctx),
                  "tensor: shape (2147483647, 2147483647, 2147483647) has too many elements "
                  "(at most 2^40 = 1099511627776)") == 0,
           "message: %s", tensor_ctx_error(ctx));
    CHECK(ctx->used == 0 && ctx->n_tape == 0); /* refused before anything was taken */
    tensor_ctx_clear_error(ctx);
    CHECK(tensor_new(ctx, 4, A(INT_MAX, INT_MAX, INT_MAX, INT_MAX)) == NULL);
    CHECK(ctx->status == TENSOR_ERR_SHAPE);
    tensor_ctx_clear_error(ctx);
    CHECK(tensor_new(ctx, 3, A(3, 1 << 20, 1 << 19)) == NULL); /* 1.5 * 2^40 */
    CHECK(ctx->status == TENSOR_ERR_SHAPE);
    tensor_ctx_clear_error(ctx);
    Tensor *t = tensor_new(ctx, 2, A(1 << 20, 1 << 20)); /* exactly the limit: a shape is fine */
    CHECKF(t && t->size == TENSOR_MAX_NUMEL && !t->data, "%s", tensor_ctx_error(ctx));
    tensor_ctx_free(ctx);

    /* a context with data refuses the shape too, before asking for 4 TiB */
    ctx = tensor_ctx_new(0);
    CHECK(tensor_new(ctx, 2, A(1 << 20, (1 << 20) + 1)) == NULL);
    CHECK(ctx->status == TENSOR_ERR_SHAPE && ctx->used == 0);
    CHECKF(strstr(tensor_ctx_error(ctx), "(1048576, 1048577)"), "message: %s",
           tensor_ctx_error(ctx));
    tensor_ctx_free(ctx);
}

static void broadcast_shape_reports_a_result_over_the_limit(void)
{
    int n = 0, out[TENSOR_MAX_DIMS];
    /* valid operands (2^40 elements each) that broadcast to 2^80 */
    CHECK(tensor_broadcast_shape(4, A(1 << 20, 1, 1 << 20, 1), 4, A(1, 1 << 20, 1, 1 << 20), &n,
                                 out) == -2);
    CHECK(n == 4 && out[0] == 1 << 20 && out[1] == 1 << 20 && out[2] == 1 << 20 &&
          out[3] == 1 << 20);
    CHECK(tensor_broadcast_shape(2, A(INT_MAX, 1), 2, A(1, INT_MAX), &n, out) == -2);
    CHECK(tensor_broadcast_shape(2, A(1 << 20, 1), 1, A(1 << 20), &n, out) == 0); /* 2^40 */
    CHECK(tensor_broadcast_shape(2, A(1 << 20, 1), 1, A(3), &n, out) == 0);
    CHECK(tensor_broadcast_shape(1, A(4), 1, A(8), &n, out) == -1); /* mismatch stays -1 */
}

/* ---- modes ----------------------------------------------------------------- */

/* every node y made by expr in no_grad mode: no sources, no grad, no aux, and
 * exactly its header and data (a view: its header) taken from the arena */
#define NO_GRAD_NODE(expr, view)                                                                   \
    do {                                                                                           \
        size_t before_ = ctx->used;                                                                \
        Tensor *y_ = (expr);                                                                       \
        CHECKF(y_ != NULL, "%s: %s", #expr, tensor_ctx_error(ctx));                                \
        if (y_) {                                                                                  \
            size_t want_ = header_bytes() + ((view) ? 0 : data_bytes(y_));                         \
            CHECKF(!y_->src[0] && !y_->src[1] && !y_->src[2], "%s recorded sources", #expr);       \
            CHECKF(!y_->grad && !y_->aux, "%s kept a grad or aux", #expr);                         \
            CHECKF(!(y_->flags & TENSOR_REQUIRES_GRAD), "%s requires grad", #expr);                \
            CHECKF(ctx->used - before_ == want_, "%s took %zu bytes, its data is %zu", #expr,      \
                   ctx->used - before_, want_);                                                    \
        }                                                                                          \
    } while (0)

static void no_grad_records_nothing_and_costs_only_the_data(void)
{
    TensorCtx *params = tensor_ctx_new(0), *ctx = tensor_ctx_new(0);
    int s8[1] = {8}, s238[3] = {2, 3, 8}, s45[2] = {4, 5}, s58[2] = {5, 8}, s1412[3] = {1, 4, 12};
    Tensor *w = tensor_full(params, 1, s8, 1.0f), *emb = tensor_full(params, 2, s58, 0.1f);
    tensor_requires_grad(w);
    tensor_requires_grad(emb);
    ctx->no_grad = true;
    Tensor *x = tensor_full(ctx, 3, s238, 0.5f), *logits = tensor_full(ctx, 2, s45, 0.2f);
    Tensor *qkv = tensor_full(ctx, 3, s1412, 0.3f);
    tensor_requires_grad(x);
    int32_t targets[4] = {0, 1, 4, -1}, idx[4] = {0, 1, 4, 2}, ids[2] = {1, 3};
    NO_GRAD_NODE(ag_mul(ctx, x, w), false);
    NO_GRAD_NODE(ag_where(ctx, w, x, w), false);
    NO_GRAD_NODE(ag_logsigmoid(ctx, x), false);
    NO_GRAD_NODE(ag_pow(ctx, x, 2.0f), false);
    NO_GRAD_NODE(ag_sum(ctx, x, 1, true), false);
    NO_GRAD_NODE(ag_log_softmax(ctx, x, -1), false);
    NO_GRAD_NODE(ag_logsumexp(ctx, x, 0, false), false);
    NO_GRAD_NODE(ag_reshape(ctx, x, 2, A(6, -1)), true);
    NO_GRAD_NODE(ag_transpose(ctx, x, 0, 2), false);
    NO_GRAD_NODE(ag_concat(ctx, x, x, 1), false);
    NO_GRAD_NODE(ag_slice(ctx, x, 2, 1, 3), false);
    NO_GRAD_NODE(ag_detach(ctx, x), true);
    NO_GRAD_NODE(ag_linear(ctx, x, emb, NULL), false);
    NO_GRAD_NODE(ag_layernorm(ctx, x, w, w, 1e-5f), false);
    NO_GRAD_NODE(ag_cross_entropy(ctx, logits, targets, 4), false);
    NO_GRAD_NODE(ag_gather(ctx, logits, idx, 4), false);
    NO_GRAD_NODE(ag_embedding(ctx, emb, ids, 1, A(2)), false);
    NO_GRAD_NODE(ag_attention(ctx, qkv, 2), false);
    tensor_ctx_free(ctx);
    tensor_ctx_free(params);
}

static void meta_mode_allocates_no_data_and_computes_shapes(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    ctx->meta = true;
    Tensor *x = tensor_new(ctx, 3, A(2, 3, 4)), *c = tensor_new(ctx, 2, A(3, 1));
    Tensor *w = tensor_new(ctx, 2, A(5, 4)), *qkv = tensor_new(ctx, 3, A(2, 7, 12));
    CHECK(x && !x->data && w && !w->data);
    CHECK(tensor_requires_grad(x) == 0 && !x->grad);
    int32_t tg[6] = {0, 1, 2, 3, 4, 0};
    struct {
        Tensor *t;
        int nd, shape[TENSOR_MAX_DIMS];
    } cases[] = {
        {ag_add(ctx, x, c), 3, {2, 3, 4}},
        {ag_where(ctx, c, x, ag_sum(ctx, x, AG_ALL, false)), 3, {2, 3, 4}},
        {ag_exp(ctx, x), 3, {2, 3, 4}},
        {ag_sum(ctx, x, 1, true), 3, {2, 1, 4}},
        {ag_mean(ctx, x, AG_ALL, true), 3, {1, 1, 1}},
        {ag_logsumexp(ctx, x, -1, false), 2, {2, 3}},
        {ag_softmax(ctx, x, 0), 3, {2, 3, 4}},
        {ag_reshape(ctx, x, 2, A(-1, 6)), 2, {4, 6}},
        {ag_transpose(ctx, x, 0, 2), 3, {4, 3, 2}},
        {ag_slice(ctx, x, 1, 1, 2), 3, {2, 2, 4}},
        {ag_concat(ctx, x, x, 2), 3, {2, 3, 8}},
        {ag_detach(ctx, x), 3, {2, 3, 4}},
        {ag_linear(ctx, x, w, NULL), 3, {2, 3, 5}},
        {ag_cross_entropy(ctx, ag_reshape(ctx, ag_linear(ctx, x, w, NULL), 2, A(6, 5)), tg, 6),
         1,
         {6}},
        {ag_attention(ctx, qkv, 2), 3, {2, 7, 4}},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        CHECKF(has_shape(cases[i].t, cases[i].nd, cases[i].shape), "case %d: %s", i,
               tensor_ctx_error(ctx));
        CHECKF(!cases[i].t || (!cases[i].t->data && !cases[i].t->aux), "case %d has data", i);
    }
    CHECKF(ctx->used == (size_t)ctx->n_tape * header_bytes(),
           "meta arena holds %zu bytes for %d headers", ctx->used, ctx->n_tape);
    /* shape errors are still found, and backward is refused */
    CHECK(ag_add(ctx, x, w) == NULL && ctx->status == TENSOR_ERR_SHAPE);
    tensor_ctx_clear_error(ctx);
    CHECK(ag_backward(ctx, cases[4].t, NULL) != 0 && ctx->status == TENSOR_ERR_META);
    tensor_ctx_free(ctx);
}

/* ---- backward ---------------------------------------------------------------- */

/* loss = sum(w * w * x) over one step's context; d loss / dw = 2 w x */
static Tensor *wwx_loss(TensorCtx *ctx, Tensor *w)
{
    Tensor *x = tensor_from_data(ctx, 1, A(3), (float[]){1.0f, -2.0f, 0.5f});
    return ag_sum(ctx, ag_mul(ctx, ag_mul(ctx, w, w), x), AG_ALL, false);
}

static void backward_accumulates_into_leaves_across_steps(void)
{
    TensorCtx *params = tensor_ctx_new(0), *step = tensor_ctx_new(0);
    Tensor *w = tensor_from_data(params, 1, A(3), (float[]){2.0f, 3.0f, -1.0f});
    tensor_requires_grad(w);
    CHECK(ag_backward(step, wwx_loss(step, w), NULL) == 0);
    tensor_ctx_reset(step);
    CHECK(ag_backward(step, wwx_loss(step, w), NULL) == 0);
    float want[3] = {2 * 2 * 2.0f * 1.0f, 2 * 2 * 3.0f * -2.0f, 2 * 2 * -1.0f * 0.5f};
    for (int i = 0; i < 3; i++)
        CHECK(w->grad[i] == want[i]);
    tensor_zero_grad(w);
    CHECK(w->grad[0] == 0.0f);
    tensor_ctx_free(step);
    tensor_ctx_free(params);
}

static void backward_twice_on_one_graph_adds_the_gradient_twice(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *w = tensor_from_data(ctx, 1, A(3), (float[]){2.0f, 3.0f, -1.0f});
    tensor_requires_grad(w);
    Tensor *loss = wwx_loss(ctx, w);
    CHECK(ag_backward(ctx, loss, NULL) == 0);
    CHECK(ag_backward(ctx, loss, NULL) == 0);
    float want[3] = {2 * 2 * 2.0f * 1.0f, 2 * 2 * 3.0f * -2.0f, 2 * 2 * -1.0f * 0.5f};
    for (int i = 0; i < 3; i++)
        CHECKF(w->grad[i] == want[i], "w->grad[%d] = %g, expected %g", i, w->grad[i], want[i]);
    tensor_ctx_free(ctx);
}

static void backward_from_a_second_root_counts_a_shared_subgraph_once(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = tensor_from_data(ctx, 1, A(2), (float[]){1.0f, 2.0f});
    tensor_requires_grad(x);
    Tensor *y = ag_mul(ctx, x, x);
    Tensor *l1 = ag_sum(ctx, y, AG_ALL, false), *l2 = ag_mean(ctx, y, AG_ALL, false);
    CHECK(ag_backward(ctx, l1, NULL) == 0);
    CHECK(ag_backward(ctx, l2, NULL) == 0);
    /* d l1/dx + d l2/dx = 2x + x */
    CHECKF(x->grad[0] == 3.0f && x->grad[1] == 6.0f, "x->grad = (%g, %g), expected (3, 6)",
           x->grad[0], x->grad[1]);
    tensor_ctx_free(ctx);
}

static void backward_from_a_non_scalar_needs_a_seed(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = tensor_full(ctx, 2, A(2, 3), 1.0f);
    tensor_requires_grad(x);
    Tensor *y = ag_exp(ctx, x);
    CHECK(ag_backward(ctx, y, NULL) != 0 && ctx->status == TENSOR_ERR_BACKWARD);
    CHECKF(strstr(tensor_ctx_error(ctx), "(2, 3)") && strstr(tensor_ctx_error(ctx), "seed"),
           "message: %s", tensor_ctx_error(ctx));
    CHECK(x->grad[0] == 0.0f);
    tensor_ctx_clear_error(ctx);
    float seed[6] = {1, 2, 3, 4, 5, 6};
    CHECK(ag_backward(ctx, y, seed) == 0);
    for (int i = 0; i < 6; i++)
        CHECK(x->grad[i] == seed[i] * expf(1.0f));
    tensor_ctx_free(ctx);
}

static void deep_chain_of_100k_ops_backward_does_not_recurse(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *x = tensor_scalar(ctx, 3.0f), *one = tensor_scalar(ctx, 1.0f), *y = x;
    tensor_requires_grad(x);
    for (int i = 0; i < 100000; i++)
        y = i % 2 ? ag_neg(ctx, y) : ag_add(ctx, y, one); /* d y / dx = +-1 */
    CHECK(y && ctx->n_tape == 100002);
    CHECK(y && ag_backward(ctx, y, NULL) == 0);
    CHECK(y && y->data[0] == 3.0f && x->grad[0] == 1.0f); /* 50000 (x + 1) -> -(x + 1) pairs */
    tensor_ctx_free(ctx);
}

static void op_table_is_complete(void)
{
    CHECK(ag_table_complete());
    for (int op = 1; op < OP_COUNT; op++)
        for (int other = 1; other < op; other++)
            CHECKF(strcmp(ag_op_name(op), ag_op_name(other)) != 0, "ops %d and %d share a name", op,
                   other);
    CHECK(strcmp(ag_op_name(OP_LOG_SOFTMAX), "log_softmax") == 0);
    CHECK(strcmp(ag_op_name(OP_COUNT), "?") == 0);
}

int main(void)
{
    RUN(arena_cap_gives_nomem_and_reset_recovers);
    RUN(arena_reset_reuses_memory_over_100_cycles);
    RUN(every_allocation_failure_is_a_clean_error);
    RUN(broadcast_shape_follows_numpy_rules);
    RUN(numel_is_checked_and_never_overflows);
    RUN(shapes_over_2_40_elements_are_errors_even_in_meta_mode);
    RUN(broadcast_shape_reports_a_result_over_the_limit);
    RUN(no_grad_records_nothing_and_costs_only_the_data);
    RUN(meta_mode_allocates_no_data_and_computes_shapes);
    RUN(backward_accumulates_into_leaves_across_steps);
    RUN(backward_twice_on_one_graph_adds_the_gradient_twice);
    RUN(backward_from_a_second_root_counts_a_shared_subgraph_once);
    RUN(backward_from_a_non_scalar_needs_a_seed);
    RUN(deep_chain_of_100k_ops_backward_does_not_recurse);
    RUN(op_table_is_complete);
    return tl_done();
}
