/*
 * test_ops_lora.c — the fused LoRA op (core/ops_lora.c): forward values and
 * the gradients of y, x, A and B against a plain double reference
 * differentiated by finite differences (gradcheck.h), for a column range
 * that starts past 0, batch dims, rank 1 and a rank above the input width;
 * dropout's mask (its rate, its scale, one mask per seed, none without
 * recording) and forward/backward consistency under one seed; the in-place
 * path on a linear's output, chained as q/k/v are; accumulation, thread-
 * count determinism and the argument errors.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "gradcheck.h"
#include "testlib.h"

typedef struct LoraArg {
    int R, K, Y, O, r, col0;
    float scale;
    LoraDropout drop; /* p 0: none */
    bool linear;      /* y = x W^T made inside the op (the in-place path) */
    int chain;        /* 2: a second update at col0 + 1 with the same A, B */
} LoraArg;

/* y[row, col0 + o] += scale sum_j B[o, j] sum_k A[j, k] drop(x)[row, k] */
static void ref_update(const LoraArg *a, const double *x, const double *A, const double *B,
                       int col0, double *out)
{
    for (int row = 0; row < a->R; row++)
        for (int o = 0; o < a->O; o++) {
            double s = 0;
            for (int j = 0; j < a->r; j++) {
                double xa = 0;
                for (int k = 0; k < a->K; k++) {
                    int64_t i = (int64_t)row * a->K + k;
                    xa += A[j * a->K + k] * x[i] * ag_lora_dropout_factor(&a->drop, i);
                }
                s += B[o * a->r + j] * xa;
            }
            out[(int64_t)row * a->Y + col0 + o] += a->scale * s;
        }
}

/* inputs: y, x, A, B; or with linear: x, W, A, B */
static void ref_lora(const double *const *in, double *out, const void *arg)
{
    const LoraArg *a = arg;
    const double *x = a->linear ? in[0] : in[1];
    if (a->linear) { /* y = x W^T, W (Y, K) */
        for (int row = 0; row < a->R; row++)
            for (int c = 0; c < a->Y; c++) {
                double s = 0;
                for (int k = 0; k < a->K; k++)
                    s += x[row * a->K + k] * in[1][c * a->K + k];
                out[row * a->Y + c] = s;
            }
    } else {
        memcpy(out, in[0], (size_t)a->R * a->Y * sizeof *out);
    }
    for (int c = 0; c < (a->chain ? a->chain : 1); c++)
        ref_update(a, x, in[2], in[3], a->col0 + c, out);
}

static Tensor *op_lora(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const LoraArg *a = arg;
    Tensor *x = a->linear ? in[0] : in[1];
    Tensor *y = a->linear ? ag_linear(ctx, x, in[1], NULL) : in[0];
    const LoraDropout *d = a->drop.p > 0 ? &a->drop : NULL;
    for (int c = 0; c < (a->chain ? a->chain : 1); c++)
        y = ag_lora(ctx, y, x, in[2], in[3], a->scale, a->col0 + c, d);
    return y;
}

/* a (R, last) input, as (2, R / 2, last) when R is even: batch dims */
static GcInput rows_input(int R, int last, double lo, double hi, uint64_t seed)
{
    int s3[3] = {2, R / 2, last}, s2[2] = {R, last};
    return R % 2 == 0 ? gc_input(3, s3, lo, hi, seed) : gc_input(2, s2, lo, hi, seed);
}

static void gradcheck_lora(LoraArg a, uint64_t seed)
{
    int sa[2] = {a.r, a.K}, sb[2] = {a.O, a.r}, sw[2] = {a.Y, a.K};
    GcSpec s = {.name = "lora", .op = op_lora, .ref = ref_lora, .arg = &a, .n_in = 4};
    if (a.linear) {
        s.in[0] = rows_input(a.R, a.K, -1, 1, seed);
        s.in[1] = gc_input(2, sw, -0.5, 0.5, seed + 1);
    } else {
        s.in[0] = rows_input(a.R, a.Y, -1, 1, seed);
        s.in[1] = rows_input(a.R, a.K, -1, 1, seed + 1);
    }
    s.in[2] = gc_input(2, sa, -0.6, 0.6, seed + 2);
    s.in[3] = gc_input(2, sb, -0.6, 0.6, seed + 3); /* nonzero B: every gradient is live */
    CHECK(gradcheck_free(&s) == 0);
}

static void test_lora_gradcheck(void)
{
    LoraArg a = {.R = 6, .K = 5, .Y = 11, .O = 4, .r = 3, .col0 = 3, .scale = 1.7f};
    gradcheck_lora(a, 11);
}

static void test_lora_rank_one_gradcheck(void)
{
    LoraArg a = {.R = 3, .K = 4, .Y = 4, .O = 4, .r = 1, .col0 = 0, .scale = 2.0f};
    gradcheck_lora(a, 21);
}

static void test_lora_rank_above_width_gradcheck(void)
{
    LoraArg a = {.R = 4, .K = 3, .Y = 9, .O = 2, .r = 7, .col0 = 7, .scale = 0.5f};
    gradcheck_lora(a, 31);
}

static void test_lora_dropout_gradcheck(void)
{
    LoraArg a = {.R = 8, .K = 6, .Y = 10, .O = 5, .r = 2, .col0 = 4, .scale = 1.25f};
    a.drop = (LoraDropout){.p = 0.3f, .seed = 0x1234abcdULL};
    gradcheck_lora(a, 41);
    a.drop.p = 0.75f; /* most entries dropped */
    gradcheck_lora(a, 42);
}

/* y = x W^T from a linear, then two updates in place (as q and k add into
 * one fused qkv): x gets gradient from the linear and both updates */
static void test_lora_in_place_chain_gradcheck(void)
{
    LoraArg a = {.R = 6, .K = 4, .Y = 9, .O = 3, .r = 2, .col0 = 2, .scale = 0.8f};
    a.linear = true;
    a.chain = 2;
    gradcheck_lora(a, 51);
    a.drop = (LoraDropout){.p = 0.2f, .seed = 99};
    gradcheck_lora(a, 52);
}

/* the op on a linear's output writes there (no copy); on a leaf, or an
 * op's output that its backward reads, it copies and leaves y as it was */
static void test_lora_in_place_only_on_nodes(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    int sx[2] = {3, 4}, sw[2] = {5, 4}, sa[2] = {2, 4}, sb[2] = {5, 2};
    Tensor *x = gc_tensor(ctx, 2, sx, -1, 1, 1, false), *W = gc_tensor(ctx, 2, sw, -1, 1, 2, true);
    Tensor *A = gc_tensor(ctx, 2, sa, -1, 1, 3, true), *B = gc_tensor(ctx, 2, sb, -1, 1, 4, true);
    Tensor *y = ag_linear(ctx, x, W, NULL);
    Tensor *out = ag_lora(ctx, y, x, A, B, 1.0f, 0, NULL);
    CHECK(out && out->data == y->data);
    Tensor *leaf = gc_tensor(ctx, 2, (int[2]){3, 5}, -1, 1, 5, false);
    float before[15];
    memcpy(before, leaf->data, sizeof before);
    Tensor *out2 = ag_lora(ctx, leaf, x, A, B, 1.0f, 0, NULL);
    CHECK(out2 && out2->data != leaf->data && memcmp(before, leaf->data, sizeof before) == 0);
    CHECK(out2 && out2->data[0] != leaf->data[0]);
    /* exp's backward reads its output: that y is copied, not written */
    Tensor *e = ag_exp(ctx, leaf);
    float e0 = e ? e->data[0] : 0;
    Tensor *out3 = ag_lora(ctx, e, x, A, B, 1.0f, 0, NULL);
    CHECK(out3 && out3->data != e->data && e->data[0] == e0);
    tensor_ctx_free(ctx);
}

/* B = 0 (PEFT's init): the output is y to the bit */
static void test_lora_zero_b_is_identity(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    int sx[2] = {7, 6}, sa[2] = {3, 6}, sb[2] = {4, 3}, sy[2] = {7, 9};
    Tensor *x = gc_tensor(ctx, 2, sx, -3, 3, 1, false), *y = gc_tensor(ctx, 2, sy, -3, 3, 2, false);
    Tensor *A = gc_tensor(ctx, 2, sa, -1, 1, 3, true), *B = tensor_new(ctx, 2, sb);
    tensor_requires_grad(B);
    LoraDropout d = {0.5f, 7};
    Tensor *out = ag_lora(ctx, y, x, A, B, 3.0f, 5, &d);
    CHECK(out && memcmp(out->data, y->data, (size_t)y->size * sizeof(float)) == 0);
    tensor_ctx_free(ctx);
}

/* The mask: a rate near p over many entries, kept entries scaled by
 * 1 / (1 - p), one mask per seed, and none in a no_grad context. */
static void test_lora_dropout_mask(void)
{
    LoraDropout d = {0.3f, 2024}, e = {0.3f, 2025};
    int64_t n = 200000, zeros = 0, differ = 0;
    for (int64_t i = 0; i < n; i++) {
        float f = ag_lora_dropout_factor(&d, i);
        CHECK(f == 0.0f || f == 1.0f / 0.7f);
        zeros += f == 0.0f;
        differ += f != ag_lora_dropout_factor(&e, i);
    }
    double rate = (double)zeros / n; /* sd sqrt(0.21 / n) ~ 0.001 */
    CHECKF(fabs(rate - 0.3) < 0.006, "dropped %.4f of entries, expected 0.3", rate);
    /* two independent masks disagree on 2 p (1 - p) = 0.42 of entries */
    CHECKF(fabs((double)differ / n - 0.42) < 0.01, "seeds 2024 and 2025 differ on %.4f",
           (double)differ / n);
    LoraDropout none = {0.0f, 1};
    CHECK(ag_lora_dropout_factor(&none, 5) == 1.0f && ag_lora_dropout_factor(NULL, 5) == 1.0f);

    TensorCtx *ctx = tensor_ctx_new(0);
    ctx->no_grad = true;
    int sx[2] = {4, 8}, sa[2] = {2, 8}, sb[2] = {3, 2}, sy[2] = {4, 3};
    Tensor *x = gc_tensor(ctx, 2, sx, -1, 1, 1, false), *y = gc_tensor(ctx, 2, sy, -1, 1, 2, false);
    Tensor *A = gc_tensor(ctx, 2, sa, -1, 1, 3, false), *B = gc_tensor(ctx, 2, sb, -1, 1, 4, false);
    LoraDropout big = {0.9f, 3};
    Tensor *with = ag_lora(ctx, y, x, A, B, 1.0f, 0, &big);
    Tensor *without = ag_lora(ctx, y, x, A, B, 1.0f, 0, NULL);
    CHECK(with && without && memcmp(with->data, without->data, 12 * sizeof(float)) == 0);
    tensor_ctx_free(ctx);
}

static Tensor *accumulate_case(TensorCtx *ctx)
{
    int sx[2] = {5, 4}, sa[2] = {2, 4}, sb[2] = {3, 2}, sy[2] = {5, 6};
    Tensor *y = gc_tensor(ctx, 2, sy, -1, 1, 1, true), *x = gc_tensor(ctx, 2, sx, -1, 1, 2, true);
    Tensor *A = gc_tensor(ctx, 2, sa, -1, 1, 3, true), *B = gc_tensor(ctx, 2, sb, -1, 1, 4, true);
    LoraDropout d = {0.25f, 77};
    return ag_lora(ctx, y, x, A, B, 1.5f, 2, &d);
}

/* in place on a linear's output, two updates: y's gradient is shared */
static Tensor *accumulate_in_place_case(TensorCtx *ctx)
{
    int sx[2] = {5, 4}, sw[2] = {6, 4}, sa[2] = {2, 4}, sb[2] = {3, 2};
    Tensor *x = gc_tensor(ctx, 2, sx, -1, 1, 1, true), *W = gc_tensor(ctx, 2, sw, -1, 1, 2, true);
    Tensor *A = gc_tensor(ctx, 2, sa, -1, 1, 3, true), *B = gc_tensor(ctx, 2, sb, -1, 1, 4, true);
    LoraDropout d = {0.25f, 77};
    Tensor *y = ag_lora(ctx, ag_linear(ctx, x, W, NULL), x, A, B, 1.5f, 0, &d);
    return ag_lora(ctx, y, x, A, B, 0.5f, 3, NULL);
}

static void test_lora_accumulates(void)
{
    Tensor *(*cases[2])(TensorCtx *) = {accumulate_case, accumulate_in_place_case};
    for (int k = 0; k < 2; k++) {
        TensorCtx *ctx = tensor_ctx_new(0);
        Tensor *out = cases[k](ctx);
        CHECK(out != NULL);
        if (out)
            gc_check_accumulates(ctx, out, 4);
        tensor_ctx_free(ctx);
    }
}

/* big enough that the products split into tasks */
static Tensor *threads_case(TensorCtx *ctx)
{
    int sx[3] = {4, 256, 64}, sw[2] = {192, 64}, sa[2] = {16, 64}, sb[2] = {128, 16};
    Tensor *x = gc_tensor(ctx, 3, sx, -1, 1, 1, true), *W = gc_tensor(ctx, 2, sw, -1, 1, 2, false);
    Tensor *A = gc_tensor(ctx, 2, sa, -1, 1, 3, true), *B = gc_tensor(ctx, 2, sb, -1, 1, 4, true);
    LoraDropout d = {0.1f, 5};
    return ag_lora(ctx, ag_linear(ctx, x, W, NULL), x, A, B, 2.0f, 64, &d);
}

static void test_lora_threads(void) { gc_check_threads("lora", threads_case); }

static void test_lora_errors(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    int sx[2] = {3, 4}, sa[2] = {2, 4}, sb[2] = {5, 2}, sy[2] = {3, 6};
    Tensor *x = tensor_new(ctx, 2, sx), *A = tensor_new(ctx, 2, sa), *B = tensor_new(ctx, 2, sb);
    Tensor *y = tensor_new(ctx, 2, sy);
    CHECK(ag_lora(ctx, y, x, A, B, 1, 2, NULL) == NULL); /* columns 2..6 of 6 */
    CHECKF(strstr(tensor_ctx_error(ctx), "columns 2 to 6") != NULL, "%s", tensor_ctx_error(ctx));
    tensor_ctx_clear_error(ctx);
    CHECK(ag_lora(ctx, y, x, B, A, 1, 0, NULL) == NULL);
    CHECKF(strstr(tensor_ctx_error(ctx), "A (5, 2) does not fit x (3, 4)") != NULL, "%s",
           tensor_ctx_error(ctx));
    tensor_ctx_clear_error(ctx);
    int sy2[2] = {2, 6};
    CHECK(ag_lora(ctx, tensor_new(ctx, 2, sy2), x, A, B, 1, 0, NULL) == NULL);
    CHECK(strstr(tensor_ctx_error(ctx), "same leading dims") != NULL);
    tensor_ctx_clear_error(ctx);
    LoraDropout bad = {1.0f, 0};
    CHECK(ag_lora(ctx, y, x, A, B, 1, 1, &bad) == NULL);
    CHECK(strstr(tensor_ctx_error(ctx), "dropout in [0, 1)") != NULL);
    tensor_ctx_clear_error(ctx);
    CHECK(ag_lora(ctx, y, x, A, B, NAN, 1, NULL) == NULL);
    CHECK(ag_lora(ctx, NULL, x, A, B, 1, 1, NULL) == NULL);
    tensor_ctx_free(ctx);
}

static void test_lora_meta_shapes(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    ctx->meta = true;
    int sx[3] = {2, 3, 4}, sa[2] = {2, 4}, sb[2] = {5, 2}, sy[3] = {2, 3, 8};
    Tensor *out = ag_lora(ctx, tensor_new(ctx, 3, sy), tensor_new(ctx, 3, sx),
                          tensor_new(ctx, 2, sa), tensor_new(ctx, 2, sb), 1, 3, NULL);
    CHECK(out && out->ndim == 3 && out->shape[2] == 8 && !out->data);
    tensor_ctx_free(ctx);
}

int main(void)
{
    omp_set_num_threads(2);
    RUN(test_lora_gradcheck);
    RUN(test_lora_rank_one_gradcheck);
    RUN(test_lora_rank_above_width_gradcheck);
    RUN(test_lora_dropout_gradcheck);
    RUN(test_lora_in_place_chain_gradcheck);
    RUN(test_lora_in_place_only_on_nodes);
    RUN(test_lora_zero_b_is_identity);
    RUN(test_lora_dropout_mask);
    RUN(test_lora_accumulates);
    RUN(test_lora_threads);
    RUN(test_lora_errors);
    RUN(test_lora_meta_shapes);
    return tl_done();
}
