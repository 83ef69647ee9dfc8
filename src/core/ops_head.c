/*
 * core/ops_head.c — the LM head and its cross-entropy as one op:
 * nll = cross_entropy(h W^T, targets), without the (S, V) logits.
 *
 * Letters: S rows (positions), C channels, V vocabulary, R rows per chunk.
 *
 * Why. With a Hugging Face vocabulary (GPT-2's 50257, Qwen's 151936) the
 * unfused ag_cross_entropy(ag_linear(h, W)) keeps the logits (S, V) and, in
 * backward, their gradient (S, V) as well: 800 MiB for S = 2048, V = 50257,
 * more than the 124M model's weights, gradients and AdamW moments together.
 * Here the rows go through in chunks of R: a chunk's logits live in one
 * scratch (R, V) in the context, reused chunk after chunk, and forward keeps
 * only each row's max and log-sum-exp (S each) and the targets. Backward
 * recomputes a chunk's logits with the same calls (so the same bits), turns
 * them in place into dlogits = (softmax - onehot) dnll, and takes
 *     dh (R, C)  = dlogits W          (each chunk writes its own rows of dh)
 *     dW (V, C) += dlogits^T h_chunk  (accumulated chunk after chunk)
 * The price is one more product of the head in backward (the recompute).
 *
 * Chunk size. R = HEAD_CHUNK_BYTES / (4 V) rows, rounded down to a multiple
 * of 16 (the sgemm kernels' row block), at least 16, at most S: 16 MiB of
 * logits, 80 rows for GPT-2's vocabulary, 16 for Qwen's. Large enough that
 * the dW update (a product over K = R rows) runs near the sgemm rate, small
 * enough to stay out of the way of the rest of the step's memory.
 * ag_linear_cross_entropy_rows takes R from the caller (tests use it to
 * cross chunk boundaries at small sizes).
 *
 * Determinism. Inside a chunk every product is split into tasks fixed by
 * the shapes alone: the logits and dW by blocks of HEAD_VBLOCK vocabulary
 * rows, dh by blocks of HEAD_CBLOCK channels; the row statistics and
 * dlogits by rows. Chunks run in order, so dW's sum over chunks has one
 * order. The bits do not depend on the thread count. OpenBLAS runs
 * single-threaded inside the op, as in ops_nn.c (one thread pool).
 *
 * Modes: a shape-only context checks shapes and computes nothing; no_grad
 * saves nothing. Saved state (out->aux, when backward will run): max (S),
 * logsum (S), targets (S).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops_internal.h"

#define HEAD_CHUNK_BYTES ((int64_t)16 << 20) /* logits scratch: see "Chunk size" */
#define HEAD_MIN_ROWS 16                     /* the least rows per chunk */
#define HEAD_VBLOCK 1024                     /* vocabulary rows per task: logits and dW */
#define HEAD_CBLOCK 128                      /* channels per task: dh */
#define SHAPE_LEN 64

/* ---- helpers ------------------------------------------------------------ */

/* d[j] = g softmax(x)[j] in place of x (d may be x); lanes independent */
ELEM_CLONES static void head_row_grad(float *d, const float *x, int V, float g, float mx, float ls)
{
#pragma omp simd
    for (int j = 0; j < V; j++)
        d[j] = g * fast_expf((x[j] - mx) - ls);
}

/* ---- the op ------------------------------------------------------------- */

/* What forward saves for backward: the rows' statistics and the targets. */
typedef struct HeadSaved {
    float *max;      // (S)
    float *logsum;   // (S)
    int32_t *target; // (S)
} HeadSaved;

static HeadSaved head_saved(void *aux, int64_t S)
{
    HeadSaved s = {.max = aux};
    s.logsum = s.max + S;
    s.target = (int32_t *)(s.logsum + S);
    return s;
}

/* rows per chunk: the caller's, or 16 MiB of logits (see "Chunk size") */
static int head_chunk_rows(int64_t S, int V, int rows)
{
    if (rows <= 0) {
        int64_t r = HEAD_CHUNK_BYTES / ((int64_t)(V > 0 ? V : 1) * (int64_t)sizeof(float));
        r = r / HEAD_MIN_ROWS * HEAD_MIN_ROWS;
        rows = r < HEAD_MIN_ROWS ? HEAD_MIN_ROWS : r > INT32_MAX ? INT32_MAX : (int)r;
    }
    return S < rows ? (S > 0 ? (int)S : 1) : rows;
}

/* logits (rc, V) = h_chunk (rc, C) W^T, a task per block of vocabulary rows */
static void head_logits(float *logits, const float *hc, int rc, const float *w, int V, int C)
{
    int blocks = (V + HEAD_VBLOCK - 1) / HEAD_VBLOCK;
    int saved = ops_blas_enter();
#pragma omp parallel for schedule(static) if ((int64_t)rc * V * C > PAR_MIN_WORK && blocks > 1)
    for (int b = 0; b < blocks; b++) {
        int v0 = b * HEAD_VBLOCK, vb = V - v0 < HEAD_VBLOCK ? V - v0 : HEAD_VBLOCK;
        ops_gemm(false, true, rc, vb, C, 1.0f, hc, C, w + (int64_t)v0 * C, C, 0.0f, logits + v0, V);
    }
    ops_blas_leave(saved);
}

static bool head_check(TensorCtx *ctx, const Tensor *h, const Tensor *w, const int32_t *targets,
                       int64_t n)
{
    const char *op = "linear_cross_entropy";
    char sh[SHAPE_LEN], sw[SHAPE_LEN];
    tensor_shape_str(h, sh, sizeof sh);
    tensor_shape_str(w, sw, sizeof sw);
    if (h->ndim != 2 || w->ndim != 2 || h->shape[1] != w->shape[1]) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                        "%s: expected h (S, C) and weight (V, C), got %s, %s", op, sh, sw);
        return false;
    }
    if (n != h->shape[0]) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "%s: %lld targets for h %s, expected %d", op,
                        (long long)n, sh, h->shape[0]);
        return false;
    }
    if (n > 0 && !targets) {
        tensor_ctx_fail(ctx, TENSOR_ERR_ARG, "%s: targets are NULL, %lld expected", op,
                        (long long)n);
        return false;
    }
    int V = w->shape[0];
    for (int64_t i = 0; i < n; i++)
        if (targets[i] < -1 || targets[i] >= V) {
            tensor_ctx_fail(ctx, TENSOR_ERR_ARG,
                            "%s: target %d at position %lld out of range [0, %d) (or -1 to ignore)",
                            op, targets[i], (long long)i, V);
            return false;
        }
    return op_has_data(ctx, op, "h", h) && op_has_data(ctx, op, "weight", w);
}

/* nll of rows [r0, r0 + rc) from their logits, and their statistics in s */
static void head_chunk_nll(float *nll, const float *logits, int64_t r0, int rc, int V,
                           const int32_t *targets, HeadSaved s)
{
#pragma omp parallel for schedule(static) if ((int64_t)rc * V > PAR_MIN_WORK)
    for (int i = 0; i < rc; i++) {
        const float *x = logits + (int64_t)i * V;
        int32_t t = targets[r0 + i];
        float mx, ls;
        ops_row_stats(x, V, &mx, &ls);
        nll[r0 + i] = t < 0 ? 0.0f : (mx - x[t]) + ls;
        if (s.max) {
            s.max[r0 + i] = mx;
            s.logsum[r0 + i] = ls;
        }
    }
}

Tensor *ag_linear_cross_entropy_rows(TensorCtx *ctx, Tensor *h, Tensor *w, const int32_t *targets,
                                     int64_t n, int chunk_rows)
{
    if (!h || !w)
        return NULL;
    if (!head_check(ctx, h, w, targets, n))
        return NULL;
    int64_t S = n;
    int V = w->shape[0], C = w->shape[1], shape[1] = {(int)S};
    Tensor *out = op_node_uninit(ctx, OP_LINEAR_CROSS_ENTROPY, 1, shape, h, w, NULL);
    if (!out)
        return NULL;
    int R = head_chunk_rows(S, V, chunk_rows);
    out->iparam[0] = R;
    HeadSaved s = {0};
    if (op_saves_aux(out)) {
        if (!(out->aux = tensor_ctx_alloc(ctx, 3 * (size_t)S * sizeof(float))))
            return NULL;
        s = head_saved(out->aux, S);
        if (S > 0) /* an empty batch may pass no targets at all */
            memcpy(s.target, targets, (size_t)S * sizeof *targets);
    }
    if (ctx->meta || S == 0)
        return out;
    float *logits = tensor_ctx_alloc_uninit(ctx, (size_t)R * V * sizeof(float)); // (R, V)
    if (!logits)
        return NULL;
    for (int64_t r0 = 0; r0 < S; r0 += R) {
        int rc = S - r0 < R ? (int)(S - r0) : R;
        head_logits(logits, h->data + r0 * C, rc, w->data, V, C);
        head_chunk_nll(out->data, logits, r0, rc, V, targets, s);
    }
    return out;
}

Tensor *ag_linear_cross_entropy(TensorCtx *ctx, Tensor *h, Tensor *w, const int32_t *targets,
                                int64_t n)
{
    return ag_linear_cross_entropy_rows(ctx, h, w, targets, n, 0);
}

/* ---- backward ----------------------------------------------------------- */

/* logits (rc, V) -> dlogits in place: (softmax - onehot) g per row; an
 * ignored row is all zeros */
static void head_chunk_dlogits(float *d, int64_t r0, int rc, int V, const float *g, HeadSaved s)
{
#pragma omp parallel for schedule(static) if ((int64_t)rc * V > PAR_MIN_WORK)
    for (int i = 0; i < rc; i++) {
        float *x = d + (int64_t)i * V;
        int32_t t = s.target[r0 + i];
        if (t < 0) {
            memset(x, 0, (size_t)V * sizeof *x);
            continue;
        }
        float gr = g[r0 + i];
        head_row_grad(x, x, V, gr, s.max[r0 + i], s.logsum[r0 + i]);
        x[t] -= gr;
    }
}

/* dh_chunk (rc, C) (beta 0: =, 1: +=) dlogits (rc, V) W (V, C), a task per
 * block of channels */
static void head_dh(float *dh, const float *dl, int rc, const float *w, int V, int C, float beta)
{
    int blocks = (C + HEAD_CBLOCK - 1) / HEAD_CBLOCK;
    int saved = ops_blas_enter();
#pragma omp parallel for schedule(static) if ((int64_t)rc * V * C > PAR_MIN_WORK && blocks > 1)
    for (int b = 0; b < blocks; b++) {
        int c0 = b * HEAD_CBLOCK, cb = C - c0 < HEAD_CBLOCK ? C - c0 : HEAD_CBLOCK;
        ops_gemm(false, false, rc, cb, V, 1.0f, dl, V, w + c0, C, beta, dh + c0, C);
    }
    ops_blas_leave(saved);
}

/* dW (V, C) += dlogits^T (V, rc) h_chunk (rc, C), a task per block of
 * vocabulary rows (each task owns its rows of dW) */
static void head_dw(float *dw, const float *dl, int rc, const float *hc, int V, int C)
{
    int blocks = (V + HEAD_VBLOCK - 1) / HEAD_VBLOCK;
    int saved = ops_blas_enter();
#pragma omp parallel for schedule(static) if ((int64_t)rc * V * C > PAR_MIN_WORK && blocks > 1)
    for (int b = 0; b < blocks; b++) {
        int v0 = b * HEAD_VBLOCK, vb = V - v0 < HEAD_VBLOCK ? V - v0 : HEAD_VBLOCK;
        ops_gemm(true, false, vb, C, rc, 1.0f, dl + v0, V, hc, C, 1.0f, dw + (int64_t)v0 * C, C);
    }
    ops_blas_leave(saved);
}

void linear_cross_entropy_backward(Tensor *out)
{
    Tensor *h = out->src[0], *w = out->src[1];
    int64_t S = h->shape[0];
    int V = w->shape[0], C = w->shape[1], R = out->iparam[0];
    HeadSaved s = head_saved(out->aux, S);
    bool first = false;
    float *dh = op_wants_grad(h) ? op_grad_first(h, &first) : NULL; // (S, C)
    float *dw = op_wants_grad(w) ? op_grad(w) : NULL;               // (V, C)
    if ((op_wants_grad(h) && !dh) || (op_wants_grad(w) && !dw) || S == 0)
        return;
    float *dl = tensor_ctx_alloc_uninit(out->ctx, (size_t)R * V * sizeof(float)); // (R, V)
    if (!dl) {
        tensor_ctx_fail(out->ctx, TENSOR_ERR_NOMEM, "linear_cross_entropy: backward out of memory");
        return;
    }
    for (int64_t r0 = 0; r0 < S; r0 += R) {
        int rc = S - r0 < R ? (int)(S - r0) : R;
        const float *hc = h->data + r0 * C; // (rc, C)
        head_logits(dl, hc, rc, w->data, V, C);
        head_chunk_dlogits(dl, r0, rc, V, out->grad, s);
        if (dh) // each chunk covers its rows of dh: = when nothing reached them yet
            head_dh(dh + r0 * C, dl, rc, w->data, V, C, first ? 0.0f : 1.0f);
        if (dw)
            head_dw(dw, dl, rc, hc, V, C);
    }
}
