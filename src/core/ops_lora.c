/*
 * core/ops_lora.c — the LoRA update (Hu et al. 2021, as PEFT computes it),
 * one fused op with its backward beside it:
 *
 *     out = y, with columns [col0, col0 + O) of every row increased by
 *           scale (drop(x) A^T) B^T
 *
 * y (..., Y) is the frozen product x W^T (+ b) of a linear that the adapter
 * targets, x (..., K) that linear's input, A (r, K), B (O, r). Fused q/k/v
 * and gate/up weights are one linear here, so an adapter of one of the
 * parts adds into its own column range of the fused output (col0).
 *
 * Dropout is PEFT's lora_dropout: on x, before A, kept entries scaled by
 * 1 / (1 - p), only in training (a context that records: not no_grad). The
 * mask is not stored: entry i of x is kept when a counter-based hash of
 * (seed, i) clears p, so backward recomputes the same mask from the seed
 * (no (rows, K) mask per adapter in a step's memory; the hash is 32-bit
 * integer work that vectorises, a few instructions per entry).
 *
 * Saved for backward: the (R, r) product xa = drop(x) A^T, and the seed.
 * dB = scale g_s^T xa, d xa = scale g_s B, dA = d xa^T drop(x), dx = drop'(d
 * xa A), dy = g (g_s: the op's output gradient in the adapter's columns).
 * In place, y's gradient is out's buffer itself, not a copy: out is y's
 * only consumer, so d y = d out exactly, and a step keeps one (rows, Y)
 * gradient per fused linear however many adapters add into it.
 *
 * In place. When y is the output of a linear (linear, linear_gelu,
 * linear_add) or of another lora op, in ctx, out is a view of y's data and
 * the update is added there: no copy of a (rows, Y) activation per adapter
 * (q, k and v add into one fused qkv). That is safe on the tape because
 * nothing reads y's data after this op but through out: linear's backward
 * reads x, W, its gradient and (GELU) its saved pre-activation, never its
 * output, and this op's backward reads only x, A, B, xa and the gradients,
 * never y's or out's data. What the caller promises, and model.c keeps: y
 * has no other consumer (the linear's output handed to ag_lora is not used
 * again). Any other y (a leaf, a gradcheck input, an op whose backward
 * reads its output) is copied, so it is never written.
 *
 * Determinism: the products go through cblas_sgemm on one thread per task,
 * in tasks fixed by the shapes (rows of the output, or columns of a weight
 * gradient, whose sum over rows then stays inside one task), so the bits do
 * not depend on the thread count.
 *
 * Letters: R rows (numel / last dim), K input width, Y the output's width,
 * O the adapter's output width, r the rank.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops_internal.h"

#define SHAPE_LEN 64
#define LORA_TASK_ROWS 256 /* rows of a product per task */
#define LORA_TASK_COLS 64  /* columns of a weight gradient per task */
#define LORA_PAR_MACS 1e6  /* smaller products run as one call */

typedef struct LoraSaved {
    float *xa; // (R, r) drop(x) A^T
    uint64_t seed;
    float p; /* the dropout applied; 0: none */
} LoraSaved;

/* ---- dropout mask ------------------------------------------------------- */

/* splitmix64's finaliser: a bijection of 64 bits with full avalanche */
static inline uint64_t lora_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The mask hash is 32-bit so that it vectorises (a 64-bit multiply has no
 * SSE2 or AVX2 form): entry i is kept when fmix32(lo * golden + key) >= the
 * threshold, lo = the low 32 bits of i, key = a 64-bit mix of the seed and
 * i's high 32 bits. fmix32 is murmur3's finaliser, a bijection with full
 * avalanche, so the entries of one tensor get distinct, well-spread hashes. */
#define MASK_CHUNK 65536 /* entries per task; divides 2^32, so a chunk has one key */

static inline uint32_t fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    return h ^ (h >> 16);
}

static inline uint32_t mask_key(uint64_t seed, int64_t i)
{
    return (uint32_t)(lora_mix(seed + ((uint64_t)i >> 32)) >> 32);
}

/* the keep threshold of p on the 32-bit hash */
static inline uint32_t lora_threshold(float p) { return (uint32_t)((double)p * 4294967296.0); }

/* all ones when entry lo (of a chunk with this key) is kept */
static inline uint32_t keep_bits(uint32_t key, uint32_t lo, uint32_t thresh)
{
    return -(uint32_t)(fmix32(lo * 0x9E3779B9u + key) >= thresh);
}

float ag_lora_dropout_factor(const LoraDropout *d, int64_t i)
{
    if (!d || !(d->p > 0))
        return 1.0f;
    uint32_t keep = keep_bits(mask_key(d->seed, i), (uint32_t)i, lora_threshold(d->p));
    return keep ? 1.0f / (1.0f - d->p) : 0.0f;
}

/* dst[j] = (or +=) drop(x)[j] for the n entries from index i0 on, one key;
 * the select by masks, so the loop vectorises, cloned for wider ISAs */
ELEM_CLONES static void mask_span(float *dst, const float *x, int64_t n, uint32_t key, uint32_t lo0,
                                  uint32_t thresh, float inv, bool add)
{
    if (add) {
#pragma omp simd
        for (int64_t j = 0; j < n; j++)
            dst[j] += u2f(f2u(x[j] * inv) & keep_bits(key, lo0 + (uint32_t)j, thresh));
        return;
    }
#pragma omp simd
    for (int64_t j = 0; j < n; j++)
        dst[j] = u2f(f2u(x[j] * inv) & keep_bits(key, lo0 + (uint32_t)j, thresh));
}

/* dst[i] = drop(x)[i] (add: dst[i] += drop(x)[i]) over n entries of a
 * (R, K) block, in chunks split over the threads */
static void lora_mask(float *dst, const float *x, int64_t n, uint64_t seed, float p, bool add)
{
    uint32_t thresh = lora_threshold(p);
    float inv = 1.0f / (1.0f - p);
    int64_t chunks = (n + MASK_CHUNK - 1) / MASK_CHUNK;
#pragma omp parallel for schedule(static) if (n > PAR_MIN_WORK)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t i0 = c * MASK_CHUNK, m = n - i0 < MASK_CHUNK ? n - i0 : MASK_CHUNK;
        mask_span(dst + i0, x + i0, m, mask_key(seed, i0), (uint32_t)i0, thresh, inv, add);
    }
}

/* ---- products ----------------------------------------------------------- */

/* C (m, n) = alpha op(A) B^T-or-B + beta C split by rows of C in fixed
 * tasks (A not transposed: its rows follow C's) */
static void lora_gemm_rows(bool tb, int m, int n, int k, float alpha, const float *a, int lda,
                           const float *b, int ldb, float beta, float *c, int ldc)
{
    bool split = (double)m * n * k >= LORA_PAR_MACS && m >= 2 * LORA_TASK_ROWS;
    int rows = split ? LORA_TASK_ROWS : (m > 0 ? m : 1), tasks = (m + rows - 1) / rows;
    int saved = ops_blas_enter();
#pragma omp parallel for schedule(static) if (tasks > 1)
    for (int t = 0; t < tasks; t++) {
        int m0 = t * rows, mt = m - m0 < rows ? m - m0 : rows;
        ops_gemm(false, tb, mt, n, k, alpha, a + (int64_t)m0 * lda, lda, b, ldb, beta,
                 c + (int64_t)m0 * ldc, ldc);
    }
    ops_blas_leave(saved);
}

/* D (n, q) += alpha G^T X for G (m, n) and X (m, q): a weight gradient,
 * summed over the m rows, split by rows of D (columns of G) in fixed tasks */
static void lora_gemm_wgrad(int n, int q, int m, float alpha, const float *g, int ldg,
                            const float *x, int ldx, float *d)
{
    bool split = (double)m * n * q >= LORA_PAR_MACS && n >= 2 * LORA_TASK_COLS;
    int cols = split ? LORA_TASK_COLS : (n > 0 ? n : 1), tasks = (n + cols - 1) / cols;
    int saved = ops_blas_enter();
#pragma omp parallel for schedule(static) if (tasks > 1)
    for (int t = 0; t < tasks; t++) {
        int n0 = t * cols, nt = n - n0 < cols ? n - n0 : cols;
        ops_gemm(true, false, nt, q, m, alpha, g + n0, ldg, x, ldx, 1.0f, d + (int64_t)n0 * q, q);
    }
    ops_blas_leave(saved);
}

/* ---- the op ------------------------------------------------------------- */

typedef struct LoraDims {
    int R, K, Y, O, r, col0;
} LoraDims;

static LoraDims lora_dims(const Tensor *y, const Tensor *x, const Tensor *A, const Tensor *B,
                          int col0)
{
    return (LoraDims){.R = (int)tensor_numel(x->ndim - 1, x->shape),
                      .K = x->shape[x->ndim - 1],
                      .Y = y->shape[y->ndim - 1],
                      .O = B->shape[0],
                      .r = A->shape[0],
                      .col0 = col0};
}

/* the first problem with the shapes, written into msg; false when none */
static bool lora_problem(char *msg, size_t len, const Tensor *y, const Tensor *x, const Tensor *A,
                         const Tensor *B, int col0)
{
    char sy[SHAPE_LEN], sx[SHAPE_LEN], sa[SHAPE_LEN], sb[SHAPE_LEN];
    tensor_shape_str(y, sy, sizeof sy);
    tensor_shape_str(x, sx, sizeof sx);
    tensor_shape_str(A, sa, sizeof sa);
    tensor_shape_str(B, sb, sizeof sb);
    bool lead = x->ndim >= 1 && y->ndim == x->ndim;
    for (int i = 0; lead && i < x->ndim - 1; i++)
        lead = x->shape[i] == y->shape[i];
    if (!lead)
        snprintf(msg, len, "y %s and x %s must be (..., Y) and (..., K) with the same leading dims",
                 sy, sx);
    else if (A->ndim != 2 || A->shape[0] < 1 || A->shape[1] != x->shape[x->ndim - 1])
        snprintf(msg, len, "A %s does not fit x %s: expected (r, %d), r >= 1", sa, sx,
                 x->shape[x->ndim - 1]);
    else if (B->ndim != 2 || B->shape[1] != A->shape[0])
        snprintf(msg, len, "B %s does not fit A %s: expected (O, %d)", sb, sa, A->shape[0]);
    else if (col0 < 0 || (int64_t)col0 + B->shape[0] > y->shape[y->ndim - 1])
        snprintf(msg, len, "columns %d to %lld of B %s are not all in y %s", col0,
                 (long long)col0 + B->shape[0] - 1, sb, sy);
    else if (tensor_numel(x->ndim - 1, x->shape) > INT32_MAX)
        snprintf(msg, len, "x %s has more rows than a product takes (2^31)", sx);
    else
        return false;
    return true;
}

static bool lora_check(TensorCtx *ctx, const Tensor *y, const Tensor *x, const Tensor *A,
                       const Tensor *B, float scale, int col0, float p)
{
    char msg[TENSOR_ERR_LEN];
    if (lora_problem(msg, sizeof msg, y, x, A, B, col0)) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "lora: %s", msg);
        return false;
    }
    if (!isfinite(scale) || !(p >= 0 && p < 1)) {
        tensor_ctx_fail(ctx, TENSOR_ERR_ARG,
                        "lora: scale must be finite and dropout in [0, 1), got %g and %g",
                        (double)scale, (double)p);
        return false;
    }
    return op_has_data(ctx, "lora", "y", y) && op_has_data(ctx, "lora", "x", x) &&
           op_has_data(ctx, "lora", "A", A) && op_has_data(ctx, "lora", "B", B);
}

/* the output node: a view of y's data when y is a linear's or lora's
 * output in ctx (in place, see the header), else a copy of y */
static Tensor *lora_node(TensorCtx *ctx, Tensor *y, Tensor *x, Tensor *A)
{
    bool in_place = (y->op == OP_LINEAR || y->op == OP_LORA) && y->ctx == ctx;
    Tensor *out = in_place ? op_node_view(ctx, OP_LORA, y->ndim, y->shape, y, y->data)
                           : op_node_uninit(ctx, OP_LORA, y->ndim, y->shape, y, NULL, NULL);
    if (!out)
        return NULL;
    if (!ctx->no_grad) { /* op_node_view records one source; the others by hand */
        const Tensor *other = x->ctx != ctx && x->op != OP_NONE && op_wants_grad(x) ? x : NULL;
        if (other || (A->ctx != ctx && A->op != OP_NONE && op_wants_grad(A)))
            return tensor_ctx_fail(ctx, TENSOR_ERR_ARG,
                                   "lora: %s is an intermediate of another context; graphs may "
                                   "cross contexts only through leaves",
                                   other ? "x" : "A");
        out->src[1] = x;
        out->src[2] = A;
        if (op_wants_grad(x) || op_wants_grad(A))
            out->flags |= TENSOR_REQUIRES_GRAD;
    }
    if (!in_place && !ctx->meta)
        memcpy(out->data, y->data, (size_t)y->size * sizeof(float));
    return out;
}

/* xa = drop(x) A^T into xa (R, r); -1 on OOM */
static int lora_down(float *xa, const float *x, const float *A, LoraDims d, uint64_t seed, float p)
{
    const float *xd = x;
    float *tmp = NULL;
    if (p > 0) {
        if (!(tmp = malloc((size_t)d.R * d.K * sizeof *tmp)))
            return -1;
        lora_mask(tmp, x, (int64_t)d.R * d.K, seed, p, false);
        xd = tmp;
    }
    lora_gemm_rows(true, d.R, d.r, d.K, 1.0f, xd, d.K, A, d.K, 0.0f, xa, d.r);
    free(tmp);
    return 0;
}

Tensor *ag_lora(TensorCtx *ctx, Tensor *y, Tensor *x, Tensor *A, Tensor *B, float scale, int col0,
                const LoraDropout *drop)
{
    if (!y || !x || !A || !B)
        return NULL;
    float p = drop && !ctx->no_grad ? drop->p : 0.0f; /* dropout only in training */
    if (!lora_check(ctx, y, x, A, B, scale, col0, drop ? drop->p : 0.0f))
        return NULL;
    Tensor *out = lora_node(ctx, y, x, A);
    if (!out || !op_add_source(out, B))
        return NULL;
    out->fparam[0] = scale;
    out->iparam[0] = col0;
    LoraDims d = lora_dims(y, x, A, B, col0);
    LoraSaved *sv = NULL;
    if (op_saves_aux(out)) {
        if (!(sv = out->aux = tensor_ctx_alloc(ctx, sizeof *sv)) ||
            !(sv->xa = tensor_ctx_alloc_uninit(ctx, (size_t)d.R * d.r * sizeof(float))))
            return NULL;
        sv->seed = drop ? drop->seed : 0;
        sv->p = p;
    }
    if (ctx->meta || d.R == 0 || d.O == 0)
        return out;
    float *xa = sv ? sv->xa : malloc((size_t)d.R * d.r * sizeof *xa); // (R, r)
    if (!xa || lora_down(xa, x->data, A->data, d, drop ? drop->seed : 0, p) != 0) {
        if (!sv)
            free(xa);
        return tensor_ctx_fail(ctx, TENSOR_ERR_NOMEM, "lora: out of memory for (%d, %d)", d.R, d.K);
    }
    // out[:, col0:col0+O] += scale xa B^T
    lora_gemm_rows(true, d.R, d.O, d.r, scale, xa, d.r, B->data, d.r, 1.0f, out->data + col0, d.Y);
    if (!sv)
        free(xa);
    return out;
}

/* dA += dxa^T drop(x) and dx += drop'(dxa A), from dxa (R, r); -1 on OOM */
static int lora_backward_down(Tensor *out, const float *dxa, LoraDims d)
{
    Tensor *x = out->src[1], *A = out->src[2];
    const LoraSaved *sv = out->aux;
    int64_t n = (int64_t)d.R * d.K;
    float *tmp = sv->p > 0 ? malloc((size_t)n * sizeof *tmp) : NULL; // (R, K)
    if (sv->p > 0 && !tmp)
        return -1;
    if (op_wants_grad(A)) {
        float *dA = op_grad(A); // (r, K)
        if (!dA)
            goto fail;
        if (tmp)
            lora_mask(tmp, x->data, n, sv->seed, sv->p, false);
        lora_gemm_wgrad(d.r, d.K, d.R, 1.0f, dxa, d.r, tmp ? tmp : x->data, d.K, dA);
    }
    if (op_wants_grad(x)) {
        bool first;
        float *dx = op_grad_first(x, &first); // (R, K)
        if (!dx)
            goto fail;
        if (!tmp) {
            lora_gemm_rows(false, d.R, d.K, d.r, 1.0f, dxa, d.r, A->data, d.K, first ? 0.0f : 1.0f,
                           dx, d.K);
        } else {
            lora_gemm_rows(false, d.R, d.K, d.r, 1.0f, dxa, d.r, A->data, d.K, 0.0f, tmp, d.K);
            if (first)
                memset(dx, 0, (size_t)n * sizeof *dx);
            lora_mask(dx, tmp, n, sv->seed, sv->p, true);
        }
    }
    free(tmp);
    return 0;
fail:
    free(tmp);
    return -1;
}

void lora_backward(Tensor *out)
{
    Tensor *y = out->src[0], *x = out->src[1], *A = out->src[2], *B = out->src[3];
    const LoraSaved *sv = out->aux;
    LoraDims d = lora_dims(y, x, A, B, out->iparam[0]);
    float scale = out->fparam[0];
    const float *gs = out->grad + d.col0; // (R, O) with leading dim Y
    if (op_wants_grad(y)) {               // dy = g: the update is added
        if (out->data == y->data && (!y->grad || y->grad == out->grad)) {
            y->grad = out->grad; /* in place: out is y's only consumer, share g */
        } else {
            bool first;
            float *dy = op_grad_first(y, &first);
            if (!dy)
                return;
            grad_add(dy, out->grad, out->size, first);
        }
    }
    if (d.R == 0 || d.O == 0)
        return;
    if (op_wants_grad(B)) { // dB += scale g_s^T xa
        float *dB = op_grad(B);
        if (!dB)
            return;
        lora_gemm_wgrad(d.O, d.r, d.R, scale, gs, d.Y, sv->xa, d.r, dB);
    }
    if (!op_wants_grad(A) && !op_wants_grad(x))
        return;
    float *dxa = malloc((size_t)d.R * d.r * sizeof *dxa); // (R, r) = scale g_s B
    if (dxa)
        lora_gemm_rows(false, d.R, d.r, d.O, scale, gs, d.Y, B->data, d.r, 0.0f, dxa, d.r);
    if (!dxa || lora_backward_down(out, dxa, d) != 0)
        tensor_ctx_fail(out->ctx, TENSOR_ERR_NOMEM, "lora: backward out of memory");
    free(dxa);
}
