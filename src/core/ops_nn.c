/*
 * core/ops_nn.c — the network ops: matmul, linear, gather, embedding, layernorm,
 * cross-entropy and fused causal self-attention (multi-head, and grouped-query
 * for the Llama family), each constructor beside its backward.
 *
 * Letters, used in every shape comment below:
 *   M, K, N  a product (M, K) @ (K, N);  R  rows: numel / last dim
 *   B batch, T time, C channels, NH heads, NKV key/value heads, HS head size
 *   (C / NH in GPT-2's attention), V vocabulary
 *
 * One thread pool. Products go through cblas_sgemm (transpose flags and
 * leading dims, so no transpose and no head slice of qkv is ever copied), but
 * OpenBLAS runs single-threaded inside these ops and the OpenMP pool splits
 * the work: a product into row blocks, attention into heads. Two pools on the
 * same cores fight — an OpenMP worker that just finished a region spins for
 * milliseconds (libgomp's spin count, long PAUSEs on Zen) and halves a
 * threaded sgemm that follows. blas_enter/blas_leave set OpenBLAS to one
 * thread and back, so callers outside this file keep their own setting.
 *
 * Determinism. Results are bit-identical for any OpenMP thread count: work is
 * split into independent rows, heads or columns, in tasks fixed by the shapes
 * alone (OpenBLAS's value for a row can depend on how rows were partitioned),
 * and every sum runs in a fixed order inside one task. Sums over rows into a
 * shared weight (bias, layernorm w and b, the embedding table) are therefore
 * split by column, never by row.
 *
 * Saved state (in out->aux, only when backward will run): gather, embedding
 * and cross-entropy keep a copy of their integer indices; layernorm keeps
 * mean and rstd per row; cross-entropy the row max and log-sum-exp; attention
 * its probabilities (B, NH, T, T).
 */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops_internal.h"

#define SHAPE_LEN 64
#define COL_BLOCK 16        /* columns per task in column-split sums: a cache line */
#define GEMM_SPLIT_MACS 1e6 /* smaller products run as one call: a task must pay for waking */
#define GEMM_TASK_ROWS 64   /* at least this many rows per task, ... */
#define GEMM_TASK_MACS 48e6 /* ... a task per this much work, ... */
#define GEMM_MAX_TASKS 16   /* ... and at most this many tasks per product */
#define WGRAD_ROWS 512      /* rows per part, at least, of a weight gradient's sum ... */
#define WGRAD_MAX_PARTS 8   /* ... in at most this many parts (a power of two) */
#define ATTN_ROWS 16        /* query rows per causal block in attention */

/* ---- helpers ------------------------------------------------------------ */

/* OpenBLAS to one thread for the duration of an op; returns what to restore.
 * Only a pthreads OpenBLAS needs it: an OpenMP one already runs single-
 * threaded inside our parallel regions, and its set_num_threads would set
 * the OpenMP pool's size too. */
int ops_blas_enter(void)
{
    if (openblas_get_parallel() != 1) /* 0 sequential, 1 pthreads, 2 OpenMP */
        return 0;
    int n = openblas_get_num_threads();
    if (n != 1)
        openblas_set_num_threads(1);
    return n;
}

void ops_blas_leave(int saved)
{
    if (saved > 1)
        openblas_set_num_threads(saved);
}

/* Row-major C = alpha op(A) op(B) + beta C on one thread, with the
 * degenerate sizes cblas rejects (a zero leading dim) handled here. */
void ops_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float *a, int lda,
              const float *b, int ldb, float beta, float *c, int ldc)
{
    if (m == 0 || n == 0)
        return;
    if (k == 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(int64_t)i * ldc + j] = beta == 0 ? 0 : beta * c[(int64_t)i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
                k, alpha, a, lda, b, ldb, beta, c, ldc);
}

/* Rows of C per task: from the shape alone, a multiple of 16 (the kernels'
 * row block), all of C when the product is too small to split. Tasks are
 * few and large: every task packs all of op(B) again, so on tiny (every
 * product 2 tasks, not 8) the step ran 2% faster; a large product still
 * gets up to 16 for a machine with that many cores. */
static int gemm_task_rows(int m, int n, int k)
{
    double macs = (double)m * n * k;
    if (macs < GEMM_SPLIT_MACS || m < 2 * GEMM_TASK_ROWS)
        return m > 0 ? m : 1;
    int tasks = 2; /* a power of two: an even share for 2, 4, 8 or 16 threads */
    while (tasks < GEMM_MAX_TASKS && macs >= 2.0 * tasks * GEMM_TASK_MACS &&
           m >= 2 * tasks * GEMM_TASK_ROWS)
        tasks *= 2;
    int rows = (m + tasks - 1) / tasks;
    return (rows + 15) / 16 * 16;
}

/* What gemm_par does around each task's product, on the task's rows while
 * they are in cache: fill sets each row of C to `fill` (n entries) first and
 * the product is added to it (linear's bias); then `res`, (m, n) like C, is
 * added to the finished rows (a residual connection: res + (bias + product),
 * the bits of adding it afterwards); or, with act, the finished rows (the
 * pre-activation) go through GELU into `act` (which may be C). */
typedef struct GemmRows {
    const float *fill, *res;
    float *act;
} GemmRows;

/* row (n) += res (n): the residual epilogue */
static void add_row(float *row, const float *res, int n)
{
#pragma omp simd
    for (int j = 0; j < n; j++)
        row[j] = res[j] + row[j];
}

/* gemm split by rows of C over the OpenMP threads */
static void gemm_par(bool ta, bool tb, int m, int n, int k, const float *a, int lda, const float *b,
                     int ldb, float beta, float *c, int ldc, GemmRows rw)
{
    int rows = gemm_task_rows(m, n, k), tasks = (m + rows - 1) / rows;
    int saved = ops_blas_enter();
#pragma omp parallel for schedule(static) if (tasks > 1)
    for (int t = 0; t < tasks; t++) {
        int m0 = t * rows, mt = m - m0 < rows ? m - m0 : rows;
        float *ct = c + (int64_t)m0 * ldc;
        for (int i = 0; rw.fill && i < mt; i++)
            memcpy(ct + (int64_t)i * ldc, rw.fill, (size_t)n * sizeof *ct);
        const float *at = ta ? a + m0 : a + (int64_t)m0 * lda; // row m0 of op(A)
        ops_gemm(ta, tb, mt, n, k, 1.0f, at, lda, b, ldb, rw.fill ? 1.0f : beta, ct, ldc);
        for (int i = 0; rw.res && i < mt; i++)
            add_row(ct + (int64_t)i * ldc, rw.res + (int64_t)(m0 + i) * n, n);
        for (int i = 0; rw.act && i < mt; i++)
            gelu_span(0, n, rw.act + (int64_t)(m0 + i) * n, ct + (int64_t)i * ldc);
    }
    ops_blas_leave(saved);
}

/* Checks n integer indices against [lo, hi); names the first bad one. */
static bool indices_ok(TensorCtx *ctx, const char *op, const char *what, const int32_t *idx,
                       int64_t n, int32_t lo, int32_t hi)
{
    if (n > 0 && !idx) {
        tensor_ctx_fail(ctx, TENSOR_ERR_ARG, "%s: %ss are NULL, %lld expected", op, what,
                        (long long)n);
        return false;
    }
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < lo || idx[i] >= hi) {
            tensor_ctx_fail(ctx, TENSOR_ERR_ARG,
                            "%s: %s %d at position %lld out of range [0, %d)%s", op, what, idx[i],
                            (long long)i, hi, lo < 0 ? " (or -1 to ignore)" : "");
            return false;
        }
    return true;
}

/* A copy of n > 0 indices in ctx, for backward: the caller's array may be
 * freed after the call. NULL on OOM, with the error set. */
static int32_t *copy_indices(TensorCtx *ctx, const int32_t *idx, int64_t n)
{
    int32_t *copy = tensor_ctx_alloc(ctx, (size_t)n * sizeof *copy);
    if (copy)
        memcpy(copy, idx, (size_t)n * sizeof *copy);
    return copy;
}

/* dst[j] += sum over r of g[r, j]: rows summed in order, in double, one task
 * per column block. */
static void colsum_add(float *dst, const float *g, int64_t R, int N) // g (R, N), dst (N)
{
    int n_blocks = (N + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (R * N > PAR_MIN_WORK)
    for (int blk = 0; blk < n_blocks; blk++) {
        int c0 = blk * COL_BLOCK, w = N - c0 < COL_BLOCK ? N - c0 : COL_BLOCK;
        double acc[COL_BLOCK] = {0};
        for (int64_t r = 0; r < R; r++) {
            const float *gr = g + r * N + c0;
#pragma omp simd
            for (int j = 0; j < w; j++)
                acc[j] += gr[j];
        }
        for (int j = 0; j < w; j++)
            dst[c0 + j] += (float)acc[j];
    }
}

/* max of p[0..n), NaN entries skipped (a NaN still reaches the caller's sum
 * of exp(p - max)). Eight running maxima rather than `omp simd reduction`:
 * gcc keeps that reduction's vector in memory, ten times slower. */
static float row_max(const float *p, int n)
{
    float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                  -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++)
            m[l] = p[j + l] > m[l] ? p[j + l] : m[l];
    for (; j < n; j++)
        m[0] = p[j] > m[0] ? p[j] : m[0];
    float mx = m[0];
    for (int l = 1; l < 8; l++)
        mx = m[l] > mx ? m[l] : mx;
    return mx;
}

/* ---- matmul ------------------------------------------------------------- */

/* `batch` products (M, K) @ (K, N); a shared b (b_stride 0) is collapsed into
 * one product of all of a's rows, M = numel(a) / K. */
typedef struct MatmulDims {
    int batch, M, K, N;
    int64_t a_stride, b_stride, c_stride;
} MatmulDims;

static MatmulDims matmul_dims(const Tensor *a, const Tensor *b)
{
    MatmulDims d = {.K = b->shape[b->ndim - 2], .N = b->shape[b->ndim - 1]};
    if (b->ndim == 2) {
        d.batch = 1;
        d.M = (int)tensor_numel(a->ndim - 1, a->shape);
    } else {
        d.batch = (int)tensor_numel(a->ndim - 2, a->shape);
        d.M = a->shape[a->ndim - 2];
    }
    d.a_stride = (int64_t)d.M * d.K;
    d.b_stride = b->ndim == 2 ? 0 : (int64_t)d.K * d.N;
    d.c_stride = (int64_t)d.M * d.N;
    return d;
}

/* BLAS takes int sizes: the rows a product runs over must fit one, which a
 * tensor of up to TENSOR_MAX_NUMEL elements need not */
static bool rows_fit_int(TensorCtx *ctx, const char *op, const Tensor *t, int lead)
{
    char st[SHAPE_LEN];
    if (tensor_numel(lead, t->shape) <= INT_MAX)
        return true;
    tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "%s: %s has more than %d rows", op,
                    tensor_shape_str(t, st, sizeof st), INT_MAX);
    return false;
}

static bool matmul_check(TensorCtx *ctx, const Tensor *a, const Tensor *b)
{
    char sa[SHAPE_LEN], sb[SHAPE_LEN];
    tensor_shape_str(a, sa, sizeof sa);
    tensor_shape_str(b, sb, sizeof sb);
    if (a->ndim < 2 || b->ndim < 2 || (b->ndim > 2 && b->ndim != a->ndim)) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                        "matmul: expected (M, K) @ (K, N), (B, M, K) @ (B, K, N) or "
                        "(B, M, K) @ (K, N), got %s @ %s",
                        sa, sb);
        return false;
    }
    if (a->shape[a->ndim - 1] != b->shape[b->ndim - 2]) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "matmul: inner dims differ: %s @ %s", sa, sb);
        return false;
    }
    for (int i = 0; b->ndim > 2 && i < b->ndim - 2; i++)
        if (a->shape[i] != b->shape[i]) {
            tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "matmul: batch dims differ: %s @ %s", sa, sb);
            return false;
        }
    if (!rows_fit_int(ctx, "matmul", a, b->ndim == 2 ? a->ndim - 1 : a->ndim - 2))
        return false;
    return op_has_data(ctx, "matmul", "argument 1", a) &&
           op_has_data(ctx, "matmul", "argument 2", b);
}

/* C_i (+)= op(A_i) op(B_i) for each batch item: one product split by rows, or
 * one task per item (each item's rows then come from one call). */
static void gemm_batch(int batch, bool ta, bool tb, int m, int n, int k, const float *a, int lda,
                       int64_t sa, const float *b, int ldb, int64_t sb, float beta, float *c,
                       int64_t sc)
{
    if (batch == 1) {
        gemm_par(ta, tb, m, n, k, a, lda, b, ldb, beta, c, n, (GemmRows){0});
        return;
    }
    int saved = ops_blas_enter();
#pragma omp parallel for schedule(static) if ((double)batch * m * n * k >= GEMM_SPLIT_MACS)
    for (int i = 0; i < batch; i++)
        ops_gemm(ta, tb, m, n, k, 1.0f, a + i * sa, lda, b + i * sb, ldb, beta, c + i * sc, n);
    ops_blas_leave(saved);
}

Tensor *ag_matmul(TensorCtx *ctx, Tensor *a, Tensor *b)
{
    if (!a || !b)
        return NULL;
    if (!matmul_check(ctx, a, b))
        return NULL;
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 1] = b->shape[b->ndim - 1];
    Tensor *out = op_node_uninit(ctx, OP_MATMUL, a->ndim, shape, a, b, NULL);
    if (!out || ctx->meta)
        return out;
    MatmulDims d = matmul_dims(a, b);
    gemm_batch(d.batch, false, false, d.M, d.N, d.K, a->data, d.K, d.a_stride, b->data, d.N,
               d.b_stride, 0.0f, out->data, d.c_stride);
    return out;
}

void matmul_backward(Tensor *out)
{
    Tensor *a = out->src[0], *b = out->src[1];
    MatmulDims d = matmul_dims(a, b);
    const float *g = out->grad; // (batch, M, N)
    float *da = op_wants_grad(a) ? op_grad(a) : NULL;
    float *db = op_wants_grad(b) ? op_grad(b) : NULL;
    if ((op_wants_grad(a) && !da) || (op_wants_grad(b) && !db))
        return;
    if (da) // dA += dC B^T
        gemm_batch(d.batch, false, true, d.M, d.K, d.N, g, d.N, d.c_stride, b->data, d.N,
                   d.b_stride, 1.0f, da, d.a_stride);
    if (db) // dB += A^T dC; with a shared B, (numel(a) / K) rows of A in one product
        gemm_batch(d.batch, true, false, d.K, d.N, d.M, a->data, d.K, d.a_stride, g, d.N,
                   d.c_stride, 1.0f, db, d.b_stride);
}

/* ---- linear ------------------------------------------------------------- */

static bool linear_check(TensorCtx *ctx, const Tensor *x, const Tensor *w, const Tensor *bias)
{
    char sx[SHAPE_LEN], sw[SHAPE_LEN], sb[SHAPE_LEN];
    tensor_shape_str(x, sx, sizeof sx);
    tensor_shape_str(w, sw, sizeof sw);
    if (w->ndim != 2) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "linear: weight must be (N, K), got %s", sw);
        return false;
    }
    if (x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1]) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                        "linear: x %s does not fit weight %s: expected x (..., %d)", sx, sw,
                        w->shape[1]);
        return false;
    }
    if (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0])) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                        "linear: bias %s does not fit weight %s: expected (%d)",
                        tensor_shape_str(bias, sb, sizeof sb), sw, w->shape[0]);
        return false;
    }
    if (!rows_fit_int(ctx, "linear", x, x->ndim - 1))
        return false;
    return op_has_data(ctx, "linear", "x", x) && op_has_data(ctx, "linear", "weight", w) &&
           (!bias || op_has_data(ctx, "linear", "bias", bias));
}

/* the residual of linear_add: x's shape with N last, data unless shape-only */
static bool residual_check(TensorCtx *ctx, const Tensor *out, const Tensor *res)
{
    char so[SHAPE_LEN], sr[SHAPE_LEN];
    if (!tensor_same_shape(out, res)) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "linear_add: residual %s does not fit output %s",
                        tensor_shape_str(res, sr, sizeof sr), tensor_shape_str(out, so, sizeof so));
        return false;
    }
    return op_has_data(ctx, "linear_add", "residual", res);
}

/* y = act(x W^T + b) [+ res]; with GELU the pre-activation is kept in
 * out->aux (R, N) when backward will run */
static Tensor *linear_op(TensorCtx *ctx, Tensor *x, Tensor *w, Tensor *bias, LinearAct act,
                         Tensor *res)
{
    if (!x || !w)
        return NULL;
    if (!linear_check(ctx, x, w, bias))
        return NULL;
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    int N = w->shape[0], K = w->shape[1];
    shape[x->ndim - 1] = N;
    Tensor *out = op_node_uninit(ctx, OP_LINEAR, x->ndim, shape, x, w, bias);
    if (!out || (res && (!residual_check(ctx, out, res) || !op_add_source(out, res))))
        return NULL;
    out->iparam[0] = act;
    bool keep_pre = act == LINEAR_GELU && op_saves_aux(out);
    if (keep_pre && !(out->aux = tensor_ctx_alloc_uninit(ctx, (size_t)out->size * sizeof(float))))
        return NULL;
    if (ctx->meta)
        return out;
    int R = (int)tensor_numel(x->ndim - 1, x->shape);
    // y (R, N) = x (R, K) W^T (+ bias): W used in place, transposed by the flag
    GemmRows rw = {bias ? bias->data : NULL, res ? res->data : NULL,
                   act == LINEAR_GELU ? out->data : NULL};
    float *c = keep_pre ? out->aux : out->data;
    gemm_par(false, true, R, N, K, x->data, K, w->data, K, 0.0f, c, N, rw);
    return out;
}

Tensor *ag_linear(TensorCtx *ctx, Tensor *x, Tensor *w, Tensor *bias)
{
    return linear_op(ctx, x, w, bias, LINEAR_NONE, NULL);
}

Tensor *ag_linear_gelu(TensorCtx *ctx, Tensor *x, Tensor *w, Tensor *bias)
{
    return linear_op(ctx, x, w, bias, LINEAR_GELU, NULL);
}

Tensor *ag_linear_add(TensorCtx *ctx, Tensor *x, Tensor *w, Tensor *bias, Tensor *res)
{
    if (!res)
        return NULL;
    return linear_op(ctx, x, w, bias, LINEAR_NONE, res);
}

/* d pre-activation = g gelu'(pre) into scratch, for a GELU linear */
static const float *linear_gelu_grad(Tensor *out)
{
    float *d = tensor_ctx_alloc_uninit(out->ctx, (size_t)out->size * sizeof(float));
    if (d)
        gelu_grad_into(d, out->aux, out->grad, out->size, true);
    return d;
}

/* dW (N, K) += g^T x and db (N) += the column sums of g, for g (R, N) and
 * x (R, K). The sum over the R rows is split into a fixed number of parts,
 * one task each, whose partial products are then added in part order: each
 * task packs only its own rows of g and x. (Split by rows of dW instead,
 * every task packed all of x, a third of the product's time at K = 128.)
 * The parts depend on the shape alone, so the bits do not depend on the
 * thread count. -1 on OOM. */
static int weight_grads(float *dw, float *db, const float *g, const float *x, int R, int N, int K,
                        TensorCtx *ctx)
{
    int parts = 1;
    while (parts < WGRAD_MAX_PARTS && R >= 2 * parts * WGRAD_ROWS)
        parts *= 2;
    if (parts == 1 || (double)R * N * K < GEMM_SPLIT_MACS) {
        if (dw)
            gemm_par(true, false, N, K, R, g, N, x, K, 1.0f, dw, K, (GemmRows){0});
        if (db)
            colsum_add(db, g, R, N);
        return 0;
    }
    int rows = (R + parts - 1) / parts;
    int64_t nk = (int64_t)N * K;
    float *pw = dw ? tensor_ctx_alloc_uninit(ctx, (size_t)(parts * nk) * sizeof *pw) : NULL;
    double *pb = db ? tensor_ctx_alloc(ctx, (size_t)parts * N * sizeof *pb) : NULL;
    if ((dw && !pw) || (db && !pb))
        return -1;
    int saved = ops_blas_enter();
#pragma omp parallel for schedule(static)
    for (int t = 0; t < parts; t++) {
        int r0 = t * rows, rt = R - r0 < rows ? R - r0 : rows;
        const float *gt = g + (int64_t)r0 * N;
        if (pw) // part t of g^T x
            ops_gemm(true, false, N, K, rt, 1.0f, gt, N, x + (int64_t)r0 * K, K, 0.0f, pw + t * nk,
                     K);
        for (int r = 0; pb && r < rt; r++) {
            double *acc = pb + (int64_t)t * N;
            const float *gr = gt + (int64_t)r * N;
#pragma omp simd
            for (int j = 0; j < N; j++)
                acc[j] += gr[j];
        }
    }
    ops_blas_leave(saved);
#pragma omp parallel for simd schedule(static) if (pw && nk > PAR_MIN_WORK)
    for (int64_t i = 0; i < (pw ? nk : 0); i++) {
        float sum = pw[i];
        for (int t = 1; t < parts; t++)
            sum += pw[t * nk + i];
        dw[i] += sum;
    }
    for (int j = 0; pb && j < N; j++) {
        double sum = 0;
        for (int t = 0; t < parts; t++)
            sum += pb[(int64_t)t * N + j];
        db[j] += (float)sum;
    }
    return 0;
}

void linear_backward(Tensor *out)
{
    Tensor *x = out->src[0], *w = out->src[1], *bias = out->src[2];
    int N = w->shape[0], K = w->shape[1];
    int R = (int)tensor_numel(x->ndim - 1, x->shape);
    bool first;
    float *dx = op_wants_grad(x) ? op_grad_first(x, &first) : NULL; // (R, K)
    float *dw = op_wants_grad(w) ? op_grad(w) : NULL;               // (N, K)
    float *db = op_wants_grad(bias) ? op_grad(bias) : NULL;         // (N)
    if ((op_wants_grad(x) && !dx) || (op_wants_grad(w) && !dw) || (op_wants_grad(bias) && !db))
        return;
    Tensor *res = out->src[3];
    bool res_first;
    float *dres = op_wants_grad(res) ? op_grad_first(res, &res_first) : NULL;           // (R, N)
    const float *g = out->iparam[0] == LINEAR_GELU ? linear_gelu_grad(out) : out->grad; // (R, N)
    if (!g || (op_wants_grad(res) && !dres)) {
        tensor_ctx_fail(out->ctx, TENSOR_ERR_NOMEM, "linear: backward out of memory");
        return;
    }
    if (dres) // d res += g
        grad_add(dres, out->grad, out->size, res_first);
    if (dx) // dx += g W (dx = g W when nothing reached it yet)
        gemm_par(false, false, R, K, N, g, N, w->data, K, first ? 0.0f : 1.0f, dx, K,
                 (GemmRows){0});
    if ((dw || db) && weight_grads(dw, db, g, x->data, R, N, K, out->ctx) != 0)
        tensor_ctx_fail(out->ctx, TENSOR_ERR_NOMEM, "linear: backward out of memory");
}

/* ---- gather ------------------------------------------------------------- */

Tensor *ag_gather(TensorCtx *ctx, Tensor *x, const int32_t *idx, int64_t n)
{
    if (!x)
        return NULL;
    char sx[SHAPE_LEN];
    tensor_shape_str(x, sx, sizeof sx);
    if (x->ndim < 1)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "gather: x must be (..., V), got %s", sx);
    int V = x->shape[x->ndim - 1];
    int64_t R = tensor_numel(x->ndim - 1, x->shape);
    if (n != R)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                               "gather: %lld indices for x %s, expected %lld (one per row)",
                               (long long)n, sx, (long long)R);
    if (!indices_ok(ctx, "gather", "index", idx, n, 0, V) || !op_has_data(ctx, "gather", "x", x))
        return NULL;
    Tensor *out = op_node_uninit(ctx, OP_GATHER, x->ndim - 1, x->shape, x, NULL, NULL);
    if (!out)
        return NULL;
    if (op_saves_aux(out) && n > 0 && !(out->aux = copy_indices(ctx, idx, n)))
        return NULL;
    if (ctx->meta)
        return out;
    for (int64_t i = 0; i < R; i++)
        out->data[i] = x->data[i * V + idx[i]];
    return out;
}

void gather_backward(Tensor *out)
{
    Tensor *x = out->src[0];
    const int32_t *idx = out->aux; // (R)
    int V = x->shape[x->ndim - 1];
    float *dx = op_grad(x); // (R, V)
    if (!dx)
        return;
    for (int64_t i = 0; i < out->size; i++)
        dx[i * V + idx[i]] += out->grad[i];
}

/* ---- embedding ---------------------------------------------------------- */

Tensor *ag_embedding(TensorCtx *ctx, Tensor *w, const int32_t *ids, int ndim, const int *shape)
{
    if (!w)
        return NULL;
    char sw[SHAPE_LEN];
    if (w->ndim != 2)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "embedding: weight must be (V, C), got %s",
                               tensor_shape_str(w, sw, sizeof sw));
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS - 1 || (ndim > 0 && !shape))
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                               "embedding: ids have %d dims, expected 0 to %d", ndim,
                               TENSOR_MAX_DIMS - 1);
    int out_shape[TENSOR_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                                   "embedding: ids dim %d has negative size %d", i, shape[i]);
        out_shape[i] = shape[i];
    }
    out_shape[ndim] = w->shape[1];
    int64_t n = tensor_numel(ndim, shape);
    if (!indices_ok(ctx, "embedding", "id", ids, n, 0, w->shape[0]) ||
        !op_has_data(ctx, "embedding", "weight", w))
        return NULL;
    Tensor *out = op_node_uninit(ctx, OP_EMBEDDING, ndim + 1, out_shape, w, NULL, NULL);
    if (!out)
        return NULL;
    if (op_saves_aux(out) && n > 0 && !(out->aux = copy_indices(ctx, ids, n)))
        return NULL;
    if (ctx->meta)
        return out;
    int C = w->shape[1];
#pragma omp parallel for schedule(static) if (n * C > PAR_MIN_WORK)
    for (int64_t i = 0; i < n; i++)
        memcpy(out->data + i * C, w->data + (int64_t)ids[i] * C, (size_t)C * sizeof(float));
    return out;
}

/* dW[id] += g[i] for every position i: positions in order, split by column,
 * so repeated ids sum in one fixed order whatever the thread count. */
void embedding_backward(Tensor *out)
{
    Tensor *w = out->src[0];
    const int32_t *ids = out->aux; // (n)
    int C = w->shape[1];
    int64_t n = C ? out->size / C : 0;
    float *dw = op_grad(w); // (V, C)
    if (!dw || n == 0)
        return;
    const float *g = out->grad; // (n, C)
    int n_blocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (n * C > PAR_MIN_WORK)
    for (int blk = 0; blk < n_blocks; blk++) {
        int c0 = blk * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
        for (int64_t i = 0; i < n; i++) {
            float *dst = dw + (int64_t)ids[i] * C;
            const float *src = g + i * C;
#pragma omp simd
            for (int c = c0; c < c1; c++)
                dst[c] += src[c];
        }
    }
}

/* ---- layernorm ---------------------------------------------------------- */

static bool layernorm_check(TensorCtx *ctx, const Tensor *x, const Tensor *w, const Tensor *b,
                            float eps)
{
    char sx[SHAPE_LEN], sp[SHAPE_LEN];
    tensor_shape_str(x, sx, sizeof sx);
    if (x->ndim < 1) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "layernorm: x must be (..., C), got %s", sx);
        return false;
    }
    int C = x->shape[x->ndim - 1];
    const Tensor *p[2] = {w, b};
    const char *name[2] = {"weight", "bias"};
    for (int i = 0; i < 2; i++)
        if (p[i]->ndim != 1 || p[i]->shape[0] != C) {
            tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                            "layernorm: %s %s does not fit x %s: expected (%d)", name[i],
                            tensor_shape_str(p[i], sp, sizeof sp), sx, C);
            return false;
        }
    if (!(eps >= 0) || isinf(eps)) {
        tensor_ctx_fail(ctx, TENSOR_ERR_ARG, "layernorm: eps must be finite and >= 0, got %g",
                        (double)eps);
        return false;
    }
    return op_has_data(ctx, "layernorm", "x", x) && op_has_data(ctx, "layernorm", "weight", w) &&
           op_has_data(ctx, "layernorm", "bias", b);
}

/* One row, two passes in double: a large offset does not swamp the variance. */
ELEM_CLONES static void layernorm_row(float *y, const float *x, const float *w, const float *b,
                                      int C, float eps, float *mean_out, float *rstd_out)
{
    double s, v;
    LANE_SUM(s, C, c, (double)x[c]);
    float mean = (float)(s / C);
    LANE_SUM(v, C, c, ((double)x[c] - mean) * ((double)x[c] - mean));
    float rstd = (float)(1.0 / sqrt(v / C + eps));
#pragma omp simd
    for (int c = 0; c < C; c++)
        y[c] = (x[c] - mean) * rstd * w[c] + b[c];
    *mean_out = mean;
    *rstd_out = rstd;
}

Tensor *ag_layernorm(TensorCtx *ctx, Tensor *x, Tensor *w, Tensor *b, float eps)
{
    if (!x || !w || !b)
        return NULL;
    if (!layernorm_check(ctx, x, w, b, eps))
        return NULL;
    Tensor *out = op_node_uninit(ctx, OP_LAYERNORM, x->ndim, x->shape, x, w, b);
    if (!out)
        return NULL;
    out->fparam[0] = eps;
    int C = x->shape[x->ndim - 1];
    int64_t R = tensor_numel(x->ndim - 1, x->shape);
    float *stats = NULL; // (2, R): mean, then rstd
    if (op_saves_aux(out) &&
        !(stats = out->aux = tensor_ctx_alloc(ctx, 2 * (size_t)R * sizeof(float))))
        return NULL;
    if (ctx->meta || C == 0)
        return out;
#pragma omp parallel for schedule(static) if (R * C > PAR_MIN_WORK)
    for (int64_t r = 0; r < R; r++) {
        float mean, rstd;
        layernorm_row(out->data + r * C, x->data + r * C, w->data, b->data, C, eps, &mean, &rstd);
        if (stats) {
            stats[r] = mean;
            stats[R + r] = rstd;
        }
    }
    return out;
}

/* One row of dx += rstd (dn - mean(dn) - xhat mean(dn xhat)), dn = g w;
 * when first, dx is uninitialised and 0 + that is stored */
ELEM_CLONES static void layernorm_backward_row(float *dr, const float *xr, const float *w,
                                               const float *gr, float mean, float rstd, int C,
                                               bool first)
{
    double s1, s2;
    LANE_SUM(s1, C, c, (double)(gr[c] * w[c]));
    LANE_SUM(s2, C, c, (double)(gr[c] * w[c]) * ((xr[c] - mean) * rstd));
    float m1 = (float)(s1 / C), m2 = (float)(s2 / C);
    if (first)
        memset(dr, 0, (size_t)C * sizeof *dr);
#pragma omp simd
    for (int c = 0; c < C; c++)
        dr[c] += rstd * (gr[c] * w[c] - m1 - (xr[c] - mean) * rstd * m2);
}

static void layernorm_backward_x(float *dx, const float *x, const float *w, const float *g,
                                 const float *stats, int64_t R, int C, bool first)
{
#pragma omp parallel for schedule(static) if (R * C > PAR_MIN_WORK)
    for (int64_t r = 0; r < R; r++)
        layernorm_backward_row(dx + r * C, x + r * C, w, g + r * C, stats[r], stats[R + r], C,
                               first);
}

/* dw, db of columns c0..c0+wd-1 (wd <= COL_BLOCK): rows in order, columns in
 * independent lanes (so cloned, ELEM_CLONES, with the same bits on each).
 * x - 0 is x, so RMSNorm (mean NULL) gets its own xhat = x rstd exactly. */
ELEM_CLONES static void norm_wb_block(float *dw, float *db, const float *x, const float *g,
                                      const float *mean, const float *rstd, int64_t R, int C,
                                      int c0, int wd)
{
    double aw[COL_BLOCK] = {0}, ab[COL_BLOCK] = {0};
    for (int64_t r = 0; r < R; r++) {
        const float *xr = x + r * C + c0, *gr = g + r * C + c0;
        float mu = mean ? mean[r] : 0.0f, rs = rstd[r];
#pragma omp simd
        for (int j = 0; j < wd; j++) {
            aw[j] += (double)gr[j] * ((xr[j] - mu) * rs);
            ab[j] += gr[j];
        }
    }
    for (int j = 0; j < wd; j++) {
        if (dw)
            dw[c0 + j] += (float)aw[j];
        if (db)
            db[c0 + j] += (float)ab[j];
    }
}

void norm_backward_wb(float *dw, float *db, const float *x, const float *g, const float *mean,
                      const float *rstd, int64_t R, int C)
{
    int n_blocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (R * C > PAR_MIN_WORK)
    for (int blk = 0; blk < n_blocks; blk++) {
        int c0 = blk * COL_BLOCK, wd = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
        norm_wb_block(dw, db, x, g, mean, rstd, R, C, c0, wd);
    }
}

void layernorm_backward(Tensor *out)
{
    Tensor *x = out->src[0], *w = out->src[1], *b = out->src[2];
    int C = x->shape[x->ndim - 1];
    int64_t R = tensor_numel(x->ndim - 1, x->shape);
    bool first;
    float *dx = op_wants_grad(x) ? op_grad_first(x, &first) : NULL; // (R, C)
    float *dw = op_wants_grad(w) ? op_grad(w) : NULL;               // (C)
    float *db = op_wants_grad(b) ? op_grad(b) : NULL;               // (C)
    if ((op_wants_grad(x) && !dx) || (op_wants_grad(w) && !dw) || (op_wants_grad(b) && !db))
        return;
    if (C == 0)
        return;
    if (dx)
        layernorm_backward_x(dx, x->data, w->data, out->grad, out->aux, R, C, first);
    const float *stats = out->aux; // (2, R): mean, then rstd
    if (dw || db)
        norm_backward_wb(dw, db, x->data, out->grad, stats, stats + R, R, C);
}

/* ---- cross-entropy ------------------------------------------------------ */

/* Saved per row: the max logit and log(sum exp(x - max)), then the targets;
 * backward recomputes the probabilities from them instead of keeping (N, V). */
typedef struct CeSaved {
    float *max;      // (N)
    float *logsum;   // (N)
    int32_t *target; // (N)
} CeSaved;

static CeSaved ce_saved(void *aux, int64_t N)
{
    CeSaved s = {.max = aux};
    s.logsum = s.max + N;
    s.target = (int32_t *)(s.logsum + N);
    return s;
}

/* the row's max and log(sum exp(x - max)), the sum in lanes (LANE_SUM) */
ELEM_CLONES void ops_row_stats(const float *x, int V, float *max_out, float *logsum_out)
{
    float mx = row_max(x, V);
    double sum;
    LANE_SUM(sum, V, j, (double)fast_expf(x[j] - mx));
    *max_out = mx;
    *logsum_out = (float)log(sum);
}

/* d[j] += g softmax(x)[j] for one row; lanes independent (ELEM_CLONES) */
ELEM_CLONES static void ce_row_grad(float *d, const float *x, int V, float g, float mx, float ls)
{
#pragma omp simd
    for (int j = 0; j < V; j++)
        d[j] += g * fast_expf((x[j] - mx) - ls);
}

Tensor *ag_cross_entropy(TensorCtx *ctx, Tensor *logits, const int32_t *targets, int64_t n)
{
    if (!logits)
        return NULL;
    char sl[SHAPE_LEN];
    tensor_shape_str(logits, sl, sizeof sl);
    if (logits->ndim != 2)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                               "cross_entropy: logits must be (N, V), got %s", sl);
    int64_t N = logits->shape[0];
    int V = logits->shape[1];
    if (n != N)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                               "cross_entropy: %lld targets for logits %s, expected %lld",
                               (long long)n, sl, (long long)N);
    if (!indices_ok(ctx, "cross_entropy", "target", targets, n, -1, V) ||
        !op_has_data(ctx, "cross_entropy", "logits", logits))
        return NULL;
    int shape[1] = {(int)N};
    Tensor *out = op_node_uninit(ctx, OP_CROSS_ENTROPY, 1, shape, logits, NULL, NULL);
    if (!out)
        return NULL;
    CeSaved s = {0};
    if (op_saves_aux(out)) {
        if (!(out->aux = tensor_ctx_alloc(ctx, 3 * (size_t)N * sizeof(float))))
            return NULL;
        s = ce_saved(out->aux, N);
        memcpy(s.target, targets, (size_t)N * sizeof *targets);
    }
    if (ctx->meta)
        return out;
#pragma omp parallel for schedule(static) if (N * V > PAR_MIN_WORK)
    for (int64_t r = 0; r < N; r++) {
        const float *x = logits->data + r * V;
        float mx, ls;
        ops_row_stats(x, V, &mx, &ls);
        out->data[r] = targets[r] < 0 ? 0.0f : (mx - x[targets[r]]) + ls;
        if (s.max) {
            s.max[r] = mx;
            s.logsum[r] = ls;
        }
    }
    return out;
}

/* d logits += g (softmax(x) - onehot(target)); ignored rows get nothing */
void cross_entropy_backward(Tensor *out)
{
    Tensor *logits = out->src[0];
    int64_t N = logits->shape[0];
    int V = logits->shape[1];
    CeSaved s = ce_saved(out->aux, N);
    bool first;
    float *dl = op_grad_first(logits, &first); // (N, V)
    if (!dl)
        return;
#pragma omp parallel for schedule(static) if (N * V > PAR_MIN_WORK)
    for (int64_t r = 0; r < N; r++) {
        float *d = dl + r * V;
        if (first)
            memset(d, 0, (size_t)V * sizeof *d);
        if (s.target[r] < 0)
            continue;
        const float *x = logits->data + r * V;
        float g = out->grad[r];
        ce_row_grad(d, x, V, g, s.max[r], s.logsum[r]);
        d[s.target[r]] -= g;
    }
}

/* ---- attention ---------------------------------------------------------- */

/* qkv (B, T, (NH + 2 NKV) HS) holds at each position NH query heads, then
 * NKV key heads, then NKV value heads, each HS wide, and query head h reads
 * kv head h / G, G = NH / NKV: grouped-query attention. GPT-2's multi-head
 * attention is the case NKV = NH, HS = C / NH, qkv (B, T, 3C). Per query
 * head (b, h), with k and v its kv head's:
 *   P = softmax(mask(q k^T / sqrt(HS)))   (T, T), causal
 *   out = P v                              (T, HS), row stride NH HS
 * Forward: one task per query head. Query rows go in blocks of ATTN_ROWS,
 * and block [i0, i1) multiplies only keys [0, i1): the masked upper triangle
 * is mostly never computed, which halves the work for long T. Backward: one
 * task per kv head, running its G query heads in order, so that their
 * contributions to its dk and dv are added in one fixed order by one thread. */
typedef struct AttnDims {
    int B, T, NH, NKV, HS;
    int ld;  /* a qkv row: (NH + 2 NKV) HS */
    int ldo; /* an output row: NH HS */
    float scale;
} AttnDims;

static AttnDims attn_dims(int B, int T, int NH, int NKV, int HS)
{
    AttnDims d = {.B = B, .T = T, .NH = NH, .NKV = NKV, .HS = HS};
    d.ld = (NH + 2 * NKV) * HS;
    d.ldo = NH * HS;
    d.scale = 1.0f / sqrtf((float)HS);
    return d;
}

/* qkv offset of query head bh's q at time 0 (bh = b NH + h) */
static int64_t attn_q_offset(AttnDims d, int64_t bh)
{
    return (bh / d.NH) * d.T * d.ld + (bh % d.NH) * d.HS;
}

/* qkv offset of kv head bg's k at time 0 (bg = b NKV + g); its v is NKV
 * heads further on */
static int64_t attn_k_offset(AttnDims d, int64_t bg)
{
    return (bg / d.NKV) * d.T * d.ld + (d.NH + bg % d.NKV) * d.HS;
}

/* the kv head that query head bh reads */
static int64_t attn_kv_of(AttnDims d, int64_t bh)
{
    return (bh / d.NH) * d.NKV + (bh % d.NH) / (d.NH / d.NKV);
}

/* output offset of query head bh at time 0 */
static int64_t attn_out_offset(AttnDims d, int64_t bh)
{
    return (bh / d.NH) * d.T * d.ldo + (bh % d.NH) * d.HS;
}

/* Scores -> unnormalised probabilities for a block of query rows i0..i0+m-1
 * (row r of p, stride T, has keys 0..i1-1 computed): p = exp(p - max[r])
 * for keys j <= i0 + r, 0 for the masked ones. One call for the block, with
 * lanes independent (keys), so it is cloned for wider ISAs (ELEM_CLONES);
 * the row maxima and sums stay in the caller, in the baseline build. */
ELEM_CLONES static void exp_block(float *p, int m, int T, int i0, int i1, const float *max)
{
    for (int r = 0; r < m; r++) {
        float *pr = p + (int64_t)r * T, mx = max[r];
        int last = i0 + r;
#pragma omp simd
        for (int j = 0; j < i1; j++)
            pr[j] = u2f(f2u(fast_expf(pr[j] - mx)) & -(uint32_t)(j <= last));
    }
}

/* A block of query rows i0..i0+m-1 (scores for keys 0..i1-1, row stride T)
 * -> causal softmax probabilities; zeros from i1 up to `width` */
static void causal_softmax_block(float *p, int m, int T, int i0, int i1, int width)
{
    float max[ATTN_ROWS];
    for (int r = 0; r < m; r++)
        max[r] = row_max(p + (int64_t)r * T, i0 + r + 1);
    exp_block(p, m, T, i0, i1, max);
    for (int r = 0; r < m; r++) {
        float *pr = p + (int64_t)r * T, sum = 0; /* at most T terms in [0, 1], one 1 */
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j <= i0 + r; j++)
            sum += pr[j];
        float inv = 1.0f / sum;
#pragma omp simd
        for (int j = 0; j <= i0 + r; j++)
            pr[j] *= inv;
        for (int j = i1; j < width; j++)
            pr[j] = 0.0f;
    }
}

/* dst (HS, T) <- src^T, src one head's k or v: T rows of HS, row stride ld */
static void head_transpose(float *dst, const float *src, AttnDims d)
{
    for (int t = 0; t < d.T; t++)
        for (int c = 0; c < d.HS; c++)
            dst[(int64_t)c * d.T + t] = src[(int64_t)t * d.ld + c];
}

/* One query head: out (T, HS) from its q, k and v (row stride ld). p
 * receives the probabilities: all (T, T) of them when p_whole (saved for
 * backward), else it is one (ATTN_ROWS, T) block reused for every block. */
static void attention_head(float *out, float *p, bool p_whole, const float *q, const float *k,
                           const float *v, float *kt, AttnDims d)
{
    int T = d.T;
    head_transpose(kt, k, d); /* q k^T is then a plain product */
    for (int i0 = 0; i0 < T; i0 += ATTN_ROWS) {
        int i1 = i0 + ATTN_ROWS < T ? i0 + ATTN_ROWS : T, m = i1 - i0;
        float *pb = p_whole ? p + (int64_t)i0 * T : p; // (m, T), row stride T
        ops_gemm(false, false, m, i1, d.HS, d.scale, q + (int64_t)i0 * d.ld, d.ld, kt, T, 0.0f, pb,
                 T);
        causal_softmax_block(pb, m, T, i0, i1, p_whole ? T : i1);
        ops_gemm(false, false, m, d.HS, i1, 1.0f, pb, T, v, d.ld, 0.0f, out + (int64_t)i0 * d.ldo,
                 d.ldo);
    }
}

/* Every query head, one task each: out (B, T, NH HS) from qkv, saving the
 * probabilities in att (B, NH, T, T) unless it is NULL. -1 on OOM. */
static int attention_forward(float *out, float *att, const float *qkv, AttnDims d)
{
    int64_t n_heads = (int64_t)d.B * d.NH, TT = (int64_t)d.T * d.T;
    int failed = 0, saved = ops_blas_enter();
#pragma omp parallel
    {
        float *scratch = // k^T (HS, T), and one (ATTN_ROWS, T) block of P when none are saved
            malloc(((size_t)d.HS + (att ? 0 : ATTN_ROWS)) * d.T * sizeof(float));
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t bh = 0; bh < n_heads; bh++) {
            const float *k = qkv + attn_k_offset(d, attn_kv_of(d, bh));
            if (scratch)
                attention_head(out + attn_out_offset(d, bh),
                               att ? att + bh * TT : scratch + (int64_t)d.HS * d.T, att != NULL,
                               qkv + attn_q_offset(d, bh), k, k + (int64_t)d.NKV * d.HS, scratch,
                               d);
        }
        free(scratch);
    }
    ops_blas_leave(saved);
    return failed ? -1 : 0;
}

/* the attention node for checked arguments: (B, T, NH HS) */
static Tensor *attention_node(TensorCtx *ctx, Tensor *qkv, int NH, int NKV, int HS)
{
    if (!op_has_data(ctx, "attention", "qkv", qkv))
        return NULL;
    int shape[3] = {qkv->shape[0], qkv->shape[1], NH * HS};
    Tensor *out = op_node_uninit(ctx, OP_ATTENTION, 3, shape, qkv, NULL, NULL);
    if (!out)
        return NULL;
    out->iparam[0] = NH;
    out->iparam[1] = NKV;
    out->iparam[2] = HS;
    AttnDims d = attn_dims(qkv->shape[0], qkv->shape[1], NH, NKV, HS);
    size_t att_bytes = (size_t)d.B * d.NH * d.T * d.T * sizeof(float);
    if (op_saves_aux(out) && !(out->aux = tensor_ctx_alloc_uninit(ctx, att_bytes)))
        return NULL;
    if (ctx->meta || out->size == 0)
        return out;
    if (attention_forward(out->data, out->aux, qkv->data, d) != 0)
        return tensor_ctx_fail(ctx, TENSOR_ERR_NOMEM, "attention: out of memory for scratch");
    return out;
}

Tensor *ag_attention(TensorCtx *ctx, Tensor *qkv, int n_head)
{
    if (!qkv)
        return NULL;
    char sq[SHAPE_LEN];
    tensor_shape_str(qkv, sq, sizeof sq);
    if (qkv->ndim != 3 || qkv->shape[2] % 3 != 0)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "attention: qkv must be (B, T, 3C), got %s",
                               sq);
    if (n_head <= 0 || (qkv->shape[2] / 3) % n_head != 0)
        return tensor_ctx_fail(ctx, TENSOR_ERR_ARG,
                               "attention: %d heads do not divide C = %d of qkv %s", n_head,
                               qkv->shape[2] / 3, sq);
    return attention_node(ctx, qkv, n_head, n_head, qkv->shape[2] / 3 / n_head);
}

Tensor *ag_gqa_attention(TensorCtx *ctx, Tensor *qkv, int n_head, int n_kv_head, int head_dim)
{
    if (!qkv)
        return NULL;
    char sq[SHAPE_LEN];
    tensor_shape_str(qkv, sq, sizeof sq);
    if (n_head <= 0 || n_kv_head <= 0 || head_dim <= 0)
        return tensor_ctx_fail(ctx, TENSOR_ERR_ARG,
                               "attention: %d heads, %d kv heads of size %d: expected all > 0",
                               n_head, n_kv_head, head_dim);
    if (n_head % n_kv_head != 0)
        return tensor_ctx_fail(ctx, TENSOR_ERR_ARG,
                               "attention: %d kv heads do not divide %d query heads", n_kv_head,
                               n_head);
    int64_t width = ((int64_t)n_head + 2 * (int64_t)n_kv_head) * head_dim;
    if (qkv->ndim != 3 || qkv->shape[2] != width)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                               "attention: qkv must be (B, T, (NH + 2 NKV) HD) = (B, T, %lld) for "
                               "%d heads, %d kv heads of size %d, got %s",
                               (long long)width, n_head, n_kv_head, head_dim, sq);
    return attention_node(ctx, qkv, n_head, n_kv_head, head_dim);
}

/* dS = P (dP - rowsum(P dP)) for query i, in place over dP; zeros up to width */
static void softmax_backward_row(float *dp, const float *p, int i, int width)
{
    float dot = 0;
#pragma omp simd reduction(+ : dot)
    for (int j = 0; j <= i; j++)
        dot += p[j] * dp[j];
#pragma omp simd
    for (int j = 0; j <= i; j++)
        dp[j] = p[j] * (dp[j] - dot);
    for (int j = i + 1; j < width; j++)
        dp[j] = 0.0f;
}

/* One query head's backward, block by block: ds is (ATTN_ROWS, T) scratch, vt
 * its kv head's v^T (HS, T), go the head's dout (row stride NH HS); dq and
 * dk are its and its kv head's slices of dqkv (row stride ld), dv is NKV
 * heads after dk. */
static void attention_head_backward(float *dq, float *dk, float *ds, const float *vt,
                                    const float *p, const float *go, const float *q, const float *k,
                                    AttnDims d)
{
    int ld = d.ld, T = d.T;
    float *dv = dk + (int64_t)d.NKV * d.HS;
    for (int i0 = 0; i0 < T; i0 += ATTN_ROWS) {
        int i1 = i0 + ATTN_ROWS < T ? i0 + ATTN_ROWS : T, m = i1 - i0;
        const float *pb = p + (int64_t)i0 * T, *gb = go + (int64_t)i0 * d.ldo;
        // dP = dout v^T ; dv += P^T dout
        ops_gemm(false, false, m, i1, d.HS, 1.0f, gb, d.ldo, vt, T, 0.0f, ds, T);
        ops_gemm(true, false, i1, d.HS, m, 1.0f, pb, T, gb, d.ldo, 1.0f, dv, ld);
        for (int i = i0; i < i1; i++)
            softmax_backward_row(ds + (int64_t)(i - i0) * T, pb + (int64_t)(i - i0) * T, i, i1);
        // dq += scale dS k ; dk += scale dS^T q
        ops_gemm(false, false, m, d.HS, i1, d.scale, ds, T, k, ld, 1.0f, dq + (int64_t)i0 * ld, ld);
        ops_gemm(true, false, i1, d.HS, m, d.scale, ds, T, q + (int64_t)i0 * ld, ld, 1.0f, dk, ld);
    }
}

/* kv head bg and its G query heads: when first, zero the dqkv columns they
 * own (G q heads, one k, one v), then each query head in order; ds is
 * (ATTN_ROWS + HS, T) scratch, NULL after a failed malloc */
static void attention_group_backward(float *dqkv, float *ds, const Tensor *out, AttnDims d,
                                     int64_t bg, bool first)
{
    const float *qkv = out->src[0]->data, *att = out->aux; // att (B, NH, T, T)
    int G = d.NH / d.NKV;
    int64_t koff = attn_k_offset(d, bg), bh0 = (bg / d.NKV) * d.NH + (bg % d.NKV) * G;
    int64_t qoff = attn_q_offset(d, bh0), voff = koff + (int64_t)d.NKV * d.HS;
    for (int64_t t = 0; first && t < d.T; t++) {
        memset(dqkv + qoff + t * d.ld, 0, (size_t)G * d.HS * sizeof(float));
        memset(dqkv + koff + t * d.ld, 0, (size_t)d.HS * sizeof(float));
        memset(dqkv + voff + t * d.ld, 0, (size_t)d.HS * sizeof(float));
    }
    if (!ds)
        return;
    float *vt = ds + (int64_t)ATTN_ROWS * d.T;
    head_transpose(vt, qkv + voff, d); /* dout v^T is then a plain product */
    for (int64_t bh = bh0; bh < bh0 + G; bh++) {
        int64_t off = attn_q_offset(d, bh);
        attention_head_backward(dqkv + off, dqkv + koff, ds, vt, att + bh * d.T * d.T,
                                out->grad + attn_out_offset(d, bh), qkv + off, qkv + koff, d);
    }
}

void attention_backward(Tensor *out)
{
    Tensor *qkv = out->src[0];
    AttnDims d =
        attn_dims(qkv->shape[0], qkv->shape[1], out->iparam[0], out->iparam[1], out->iparam[2]);
    int64_t n_groups = (int64_t)d.B * d.NKV;
    bool first;
    float *dqkv = op_grad_first(qkv, &first); // (B, T, (NH + 2 NKV) HS)
    if (!dqkv || out->size == 0)
        return;
    int failed = 0, saved = ops_blas_enter();
#pragma omp parallel
    {
        // a (ATTN_ROWS, T) block of dS, then v^T (HS, T)
        float *ds = malloc(((size_t)ATTN_ROWS + d.HS) * d.T * sizeof(float));
        if (!ds) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t bg = 0; bg < n_groups; bg++)
            attention_group_backward(dqkv, ds, out, d, bg, first);
        free(ds);
    }
    ops_blas_leave(saved);
    if (failed)
        tensor_ctx_fail(out->ctx, TENSOR_ERR_NOMEM, "attention: backward out of memory");
}
