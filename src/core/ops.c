/*
 * core/ops.c — the op table, and the elementwise, reduction and shape ops, each
 * constructor beside its backward.
 *
 * Letters, used in the comments below: a tensor seen around one dim d is
 * (O, K, I), O = product of the dims before d, K = shape[d], I = product of the
 * dims after d (around all dims: (1, size, 1)).
 *
 * Invariants.
 * - Tensors are immutable once made, so every backward here reads its sources'
 *   data and its own output instead of saving copies: these ops keep nothing in
 *   aux, and no_grad mode costs exactly the output data.
 * - Results do not depend on the thread count: threads split elementwise work
 *   and independent rows only; every sum runs in one thread in a fixed order,
 *   accumulating in double.
 * - Elementwise rules are data: one forward expression and one derivative
 *   expression per differentiable argument, expanded into loops by the macros
 *   below. Broadcasting backward rules write a gradient of the output's shape,
 *   and one helper, unbroadcast, sums it into the argument's shape.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops_internal.h"

#define SHAPE_LEN 64
#define RUN_CHUNK 8192 /* elements per task when one broadcast run is long */

/* PAR_FOR(work, i, count, body): `for (int64_t i = 0; i < count; i++) body`,
 * split over threads when work (the elements the loop touches) is above
 * PAR_MIN_ELEMS, where a thread's share outweighs the cost of waking it.
 * Below it the loop is plain C: an `if (...)` clause on `omp parallel` would
 * still call into the OpenMP runtime (GOMP_parallel, futex wake-ups) when
 * false, microseconds per op, which was a third of a small loss call.
 * Iterations must be independent (elementwise work, whole rows), so the
 * result is the same bits with any thread count. */
#define PAR_MIN_ELEMS 32768
#define PAR_FOR(work, i, count, ...)                                                               \
    do {                                                                                           \
        const int64_t par_count_ = (count);                                                        \
        if ((work) > PAR_MIN_ELEMS) {                                                              \
            _Pragma("omp parallel for schedule(static)") for (int64_t i = 0; i < par_count_; i++)  \
                __VA_ARGS__                                                                        \
        } else {                                                                                   \
            for (int64_t i = 0; i < par_count_; i++)                                               \
                __VA_ARGS__                                                                        \
        }                                                                                          \
    } while (0)

/* ---- op table ------------------------------------------------------------ */

static void add_backward(Tensor *out);
static void sub_backward(Tensor *out);
static void mul_backward(Tensor *out);
static void div_backward(Tensor *out);
static void minimum_backward(Tensor *out);
static void maximum_backward(Tensor *out);
static void where_backward(Tensor *out);
static void neg_backward(Tensor *out);
static void pow_backward(Tensor *out);
static void exp_backward(Tensor *out);
static void log_backward(Tensor *out);
static void log1p_backward(Tensor *out);
static void expm1_backward(Tensor *out);
static void sqrt_backward(Tensor *out);
static void abs_backward(Tensor *out);
static void sign_backward(Tensor *out);
static void sigmoid_backward(Tensor *out);
static void logsigmoid_backward(Tensor *out);
static void softplus_backward(Tensor *out);
static void tanh_backward(Tensor *out);
static void relu_backward(Tensor *out);
static void gelu_backward(Tensor *out);
static void clamp_backward(Tensor *out);
static void sum_backward(Tensor *out);
static void logsumexp_backward(Tensor *out);
static void softmax_backward(Tensor *out);
static void log_softmax_backward(Tensor *out);
static void reshape_backward(Tensor *out);
static void transpose_backward(Tensor *out);
static void slice_backward(Tensor *out);
static void concat_backward(Tensor *out);
static void sort_backward(Tensor *out);

const OpInfo ag_op_table[OP_COUNT] = {
    [OP_NONE] = {"leaf", NULL},
    [OP_ADD] = {"add", add_backward},
    [OP_SUB] = {"sub", sub_backward},
    [OP_MUL] = {"mul", mul_backward},
    [OP_DIV] = {"div", div_backward},
    [OP_MINIMUM] = {"minimum", minimum_backward},
    [OP_MAXIMUM] = {"maximum", maximum_backward},
    [OP_WHERE] = {"where", where_backward},
    [OP_NEG] = {"neg", neg_backward},
    [OP_POW] = {"pow", pow_backward},
    [OP_EXP] = {"exp", exp_backward},
    [OP_LOG] = {"log", log_backward},
    [OP_LOG1P] = {"log1p", log1p_backward},
    [OP_EXPM1] = {"expm1", expm1_backward},
    [OP_SQRT] = {"sqrt", sqrt_backward},
    [OP_ABS] = {"abs", abs_backward},
    [OP_SIGN] = {"sign", sign_backward},
    [OP_SIGMOID] = {"sigmoid", sigmoid_backward},
    [OP_LOGSIGMOID] = {"logsigmoid", logsigmoid_backward},
    [OP_SOFTPLUS] = {"softplus", softplus_backward},
    [OP_TANH] = {"tanh", tanh_backward},
    [OP_RELU] = {"relu", relu_backward},
    [OP_GELU] = {"gelu", gelu_backward},
    [OP_CLAMP] = {"clamp", clamp_backward},
    [OP_SUM] = {"sum", sum_backward},
    [OP_MEAN] = {"mean", sum_backward}, /* sum_backward scales by 1/K for mean */
    [OP_LOGSUMEXP] = {"logsumexp", logsumexp_backward},
    [OP_SOFTMAX] = {"softmax", softmax_backward},
    [OP_LOG_SOFTMAX] = {"log_softmax", log_softmax_backward},
    [OP_RESHAPE] = {"reshape", reshape_backward},
    [OP_TRANSPOSE] = {"transpose", transpose_backward},
    [OP_SLICE] = {"slice", slice_backward},
    [OP_CONCAT] = {"concat", concat_backward},
    [OP_SORT] = {"sort", sort_backward},
    [OP_MATMUL] = {"matmul", matmul_backward},
    [OP_LINEAR] = {"linear", linear_backward},
    [OP_GATHER] = {"gather", gather_backward},
    [OP_EMBEDDING] = {"embedding", embedding_backward},
    [OP_LAYERNORM] = {"layernorm", layernorm_backward},
    [OP_CROSS_ENTROPY] = {"cross_entropy", cross_entropy_backward},
    [OP_ATTENTION] = {"attention", attention_backward},
    [OP_RMSNORM] = {"rmsnorm", rmsnorm_backward},
    [OP_ROPE] = {"rope", rope_backward},
    [OP_SWIGLU] = {"swiglu", swiglu_backward},
    [OP_LINEAR_CROSS_ENTROPY] = {"linear_cross_entropy", linear_cross_entropy_backward},
    [OP_LORA] = {"lora", lora_backward},
};
_Static_assert(sizeof ag_op_table / sizeof ag_op_table[0] == OP_COUNT,
               "ag_op_table must have one row per OpKind");
/* The size above is fixed by the declaration, so it cannot notice a missing
 * row; this count can. A new op: add its row and backward, then bump it
 * (ag_table_complete checks at run time that no row is empty). */
_Static_assert(OP_COUNT == 46, "a new OpKind needs a row (and a backward) in ag_op_table");

/* ---- shared checks -------------------------------------------------------- */

/* false when a source is NULL (its error is already recorded) or, outside a
 * meta context, has no data to read */
static bool args_ok(TensorCtx *ctx, const char *op, int n, Tensor *const *src)
{
    for (int k = 0; k < n; k++)
        if (!src[k])
            return false;
    for (int k = 0; k < n; k++)
        if (!ctx->meta && !src[k]->data) {
            tensor_ctx_fail(ctx, TENSOR_ERR_META, "%s: argument %d is shape-only and has no data",
                            op, k + 1);
            return false;
        }
    return true;
}

/* ---- broadcasting --------------------------------------------------------- */

/* How up to three operands map onto a broadcast output. Dims of size 1 are
 * dropped and neighbours that stretch the same operands are merged, leaving
 * nd outer dims and one inner run of `run` contiguous output elements, along
 * which operand k advances by step[k]: 1, or 0 where it is stretched. */
typedef struct Bcast {
    int n_in, nd;
    int64_t dim[TENSOR_MAX_DIMS];       /* (nd) outer dims */
    int64_t stride[3][TENSOR_MAX_DIMS]; /* (n_in, nd) elements; 0 where stretched */
    int64_t step[3];
    int64_t run, n_runs;
} Bcast;

static void bcast_init(Bcast *bc, const Tensor *out, int n_in, Tensor *const *in)
{
    int64_t size[TENSOR_MAX_DIMS];
    bool stretched[TENSOR_MAX_DIMS][3];
    int m = 0;
    for (int d = 0; d < out->ndim; d++) {
        if (out->shape[d] == 1)
            continue;
        bool s[3] = {false, false, false};
        for (int k = 0; k < n_in; k++) {
            int off = out->ndim - in[k]->ndim;
            s[k] = d < off || in[k]->shape[d - off] == 1;
        }
        if (m > 0 && memcmp(s, stretched[m - 1], sizeof s) == 0) {
            size[m - 1] *= out->shape[d];
            continue;
        }
        size[m] = out->shape[d];
        memcpy(stretched[m++], s, sizeof s);
    }
    bc->n_in = n_in;
    for (int k = 0; k < n_in; k++) {
        int64_t acc = 1, stride[TENSOR_MAX_DIMS];
        for (int j = m - 1; j >= 0; j--) {
            stride[j] = stretched[j][k] ? 0 : acc;
            acc *= stretched[j][k] ? 1 : size[j];
        }
        for (int j = 0; j + 1 < m; j++)
            bc->stride[k][j] = stride[j];
        bc->step[k] = m ? stride[m - 1] : 0;
    }
    bc->nd = m ? m - 1 : 0;
    bc->run = m ? size[m - 1] : 1;
    bc->n_runs = 1;
    for (int j = 0; j < bc->nd; j++)
        bc->n_runs *= bc->dim[j] = size[j];
}

/* where run r starts in each operand */
static void bcast_offsets(const Bcast *bc, int64_t r, int64_t *off)
{
    for (int k = 0; k < bc->n_in; k++)
        off[k] = 0;
    for (int j = bc->nd - 1; j >= 0; j--) {
        int64_t i = r % bc->dim[j];
        r /= bc->dim[j];
        for (int k = 0; k < bc->n_in; k++)
            off[k] += i * bc->stride[k][j];
    }
}

/* One run of an elementwise rule: dst, g (d out) and z (out) are laid out like
 * the output; operand k is read at in[k][i * st[k]]. */
typedef void (*RunFn)(int64_t n, float *dst, const float *g, const float *z, const float *const *in,
                      const int64_t *st);

/* Runs fn over the whole output, long runs split into chunks so that a
 * same-shape or scalar-operand op still spreads over the threads. With
 * zero_dst each chunk of dst is zeroed just before fn adds to it, while it is
 * in cache: the first write of an uninitialised gradient (op_grad_first). */
static void bcast_apply(const Bcast *bc, RunFn fn, float *dst, const float *g, const float *z,
                        Tensor *const *src, bool zero_dst)
{
    int64_t chunks = (bc->run + RUN_CHUNK - 1) / RUN_CHUNK;
    int64_t items = bc->n_runs * chunks;
    PAR_FOR(bc->n_runs * bc->run, it, items, {
        int64_t r = it / chunks, c0 = (it % chunks) * RUN_CHUNK, off[3];
        int64_t len = bc->run - c0 < RUN_CHUNK ? bc->run - c0 : RUN_CHUNK, at = r * bc->run + c0;
        const float *in[3] = {NULL, NULL, NULL};
        bcast_offsets(bc, r, off);
        for (int k = 0; k < bc->n_in; k++)
            in[k] = src[k]->data + off[k] + c0 * bc->step[k];
        if (zero_dst)
            memset(dst + at, 0, (size_t)len * sizeof *dst);
        fn(len, dst + at, g ? g + at : NULL, z ? z + at : NULL, in, bc->step);
    });
}

/* Sums d, a gradient laid out like out, into src's grad over the dims that
 * out stretched src along: the one reduction every broadcasting backward
 * shares. Serial and in double, so the sum order is fixed. */
static void unbroadcast(Tensor *src, const float *d, const Tensor *out, bool first)
{
    Bcast bc;
    bcast_init(&bc, out, 1, &src);
    double *acc = tensor_ctx_alloc(out->ctx, (size_t)src->size * sizeof *acc); // (src->size)
    if (!acc)
        return;
    for (int64_t r = 0; r < bc.n_runs; r++) {
        int64_t off[3];
        const float *dr = d + r * bc.run;
        bcast_offsets(&bc, r, off);
        for (int64_t i = 0; i < bc.run; i++)
            acc[off[0] + i * bc.step[0]] += dr[i];
    }
    for (int64_t j = 0; j < src->size; j++)
        src->grad[j] = (first ? 0.0f : src->grad[j]) + (float)acc[j];
}

/* Accumulates d out / d src_k, written by rule over the output's layout, into
 * src_k's grad: straight in when src_k was not stretched (same layout), else
 * through a scratch buffer and unbroadcast. */
static void bcast_backward(Tensor *out, int k, RunFn rule)
{
    Tensor *src = out->src[k];
    bool first;
    if (!op_wants_grad(src) || !op_grad_first(src, &first))
        return;
    int n_in = out->src[2] ? 3 : 2;
    bool direct = src->size == out->size;
    float *d =
        direct ? src->grad : tensor_ctx_alloc_uninit(out->ctx, (size_t)out->size * sizeof *d);
    if (!d)
        return;
    Bcast bc;
    bcast_init(&bc, out, n_in, out->src);
    bcast_apply(&bc, rule, d, out->grad, out->data, out->src, !direct || first);
    if (!direct)
        unbroadcast(src, d, out, first);
}

/* rc is tensor_broadcast_shape's: -1 the shapes do not broadcast, -2 they
 * broadcast to nd, shape, which is too large to be a tensor */
static Tensor *bcast_fail(TensorCtx *ctx, OpKind op, int n, Tensor *const *src, int rc, int nd,
                          const int *shape)
{
    char s[3][SHAPE_LEN], so[SHAPE_LEN];
    for (int k = 0; k < n; k++)
        tensor_shape_str(src[k], s[k], SHAPE_LEN);
    if (rc == -2)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                               "%s: shapes %s, %s%s%s broadcast to %s, more than the %lld "
                               "elements a tensor may hold",
                               ag_op_name(op), s[0], s[1], n > 2 ? ", " : "", n > 2 ? s[2] : "",
                               tensor_dims_str(nd, shape, so, sizeof so),
                               (long long)TENSOR_MAX_NUMEL);
    if (n == 2)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "%s: shapes %s and %s do not broadcast",
                               ag_op_name(op), s[0], s[1]);
    return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                           "%s: shapes %s (cond), %s (a) and %s (b) do not broadcast",
                           ag_op_name(op), s[0], s[1], s[2]);
}

/* The constructor of every broadcasting op: n (2 or 3) sources, forward rule fwd. */
static Tensor *bcast_op(TensorCtx *ctx, OpKind op, int n, Tensor *const *src, RunFn fwd)
{
    if (!args_ok(ctx, ag_op_name(op), n, src))
        return NULL;
    int nd = src[0]->ndim, shape[TENSOR_MAX_DIMS], prev[TENSOR_MAX_DIMS];
    memcpy(shape, src[0]->shape, sizeof shape);
    int too_large = 0;
    for (int k = 1; k < n; k++) {
        memcpy(prev, shape, sizeof prev); /* tensor_broadcast_shape must not alias */
        int rc = tensor_broadcast_shape(nd, prev, src[k]->ndim, src[k]->shape, &nd, shape);
        if (rc == -1)
            return bcast_fail(ctx, op, n, src, rc, nd, shape);
        too_large = too_large || rc == -2; /* go on: a later mismatch is the better message */
    }
    if (too_large)
        return bcast_fail(ctx, op, n, src, -2, nd, shape);
    Tensor *out = op_node_uninit(ctx, op, nd, shape, src[0], src[1], n > 2 ? src[2] : NULL);
    if (!out || ctx->meta)
        return out;
    Bcast bc;
    bcast_init(&bc, out, n, src);
    bcast_apply(&bc, fwd, out->data, NULL, NULL, src, false);
    return out;
}

/* ---- elementwise binary: rules as data ------------------------------------ */

/* Expands STMT over a run with x, y the operands' values at position i; the
 * loop is written out per step pattern so that the common cases (same shape,
 * one side a scalar) are unit-stride loops the compiler can vectorise. */
#define RUN2(n, in, st, STMT)                                                                      \
    do {                                                                                           \
        const float *pa = (in)[0], *pb = (in)[1];                                                  \
        if ((st)[0] && (st)[1]) {                                                                  \
            for (int64_t i = 0; i < (n); i++) {                                                    \
                const float x = pa[i], y = pb[i];                                                  \
                (void)x, (void)y;                                                                  \
                STMT;                                                                              \
            }                                                                                      \
        } else if ((st)[0]) {                                                                      \
            const float y = pb[0];                                                                 \
            for (int64_t i = 0; i < (n); i++) {                                                    \
                const float x = pa[i];                                                             \
                (void)x, (void)y;                                                                  \
                STMT;                                                                              \
            }                                                                                      \
        } else {                                                                                   \
            const float x = pa[0];                                                                 \
            for (int64_t i = 0; i < (n); i++) {                                                    \
                const float y = pb[i]; /* both steps are 0 only in runs of 1 */                    \
                (void)x, (void)y;                                                                  \
                STMT;                                                                              \
            }                                                                                      \
        }                                                                                          \
    } while (0)

/* A binary op from its rules: FWD(x, y); DA and DB the derivatives of out with
 * respect to a and b times g[i] = d out, with z[i] = out. */
#define BINARY_OP(name, KIND, FWD, DA, DB)                                                         \
    static void name##_fwd(int64_t n, float *o, const float *g, const float *z,                    \
                           const float *const *in, const int64_t *st)                              \
    {                                                                                              \
        (void)g, (void)z;                                                                          \
        RUN2(n, in, st, o[i] = (FWD));                                                             \
    }                                                                                              \
    static void name##_da(int64_t n, float *d, const float *g, const float *z,                     \
                          const float *const *in, const int64_t *st)                               \
    {                                                                                              \
        (void)z;                                                                                   \
        RUN2(n, in, st, d[i] += (DA));                                                             \
    }                                                                                              \
    static void name##_db(int64_t n, float *d, const float *g, const float *z,                     \
                          const float *const *in, const int64_t *st)                               \
    {                                                                                              \
        (void)z;                                                                                   \
        RUN2(n, in, st, d[i] += (DB));                                                             \
    }                                                                                              \
    static void name##_backward(Tensor *out)                                                       \
    {                                                                                              \
        bcast_backward(out, 0, name##_da);                                                         \
        bcast_backward(out, 1, name##_db);                                                         \
    }                                                                                              \
    Tensor *ag_##name(TensorCtx *ctx, Tensor *a, Tensor *b)                                        \
    {                                                                                              \
        Tensor *src[2] = {a, b};                                                                   \
        return bcast_op(ctx, KIND, 2, src, name##_fwd);                                            \
    }

/* a wins ties and a NaN in a, so that the tie's gradient goes to a and a NaN
 * on either side reaches the output */
static inline bool pick_min(float x, float y) { return x <= y || isnan(x); }
static inline bool pick_max(float x, float y) { return x >= y || isnan(x); }

BINARY_OP(add, OP_ADD, x + y, g[i], g[i])
BINARY_OP(sub, OP_SUB, x - y, g[i], -g[i])
BINARY_OP(mul, OP_MUL, (x * y), g[i] * y, g[i] * x)
BINARY_OP(div, OP_DIV, x / y, g[i] / y, -g[i] * z[i] / y)
BINARY_OP(minimum, OP_MINIMUM, pick_min(x, y) ? x : y, pick_min(x, y) ? g[i] : 0.0f,
          pick_min(x, y) ? 0.0f : g[i])
BINARY_OP(maximum, OP_MAXIMUM, pick_max(x, y) ? x : y, pick_max(x, y) ? g[i] : 0.0f,
          pick_max(x, y) ? 0.0f : g[i])

/* where: operands cond, a, b; cond is nonzero to pick a (NaN counts as nonzero) */
static void where_fwd(int64_t n, float *o, const float *g, const float *z, const float *const *in,
                      const int64_t *st)
{
    (void)g, (void)z;
    for (int64_t i = 0; i < n; i++)
        o[i] = in[0][i * st[0]] != 0 ? in[1][i * st[1]] : in[2][i * st[2]];
}

static void where_da(int64_t n, float *d, const float *g, const float *z, const float *const *in,
                     const int64_t *st)
{
    (void)z;
    for (int64_t i = 0; i < n; i++)
        d[i] += in[0][i * st[0]] != 0 ? g[i] : 0.0f;
}

static void where_db(int64_t n, float *d, const float *g, const float *z, const float *const *in,
                     const int64_t *st)
{
    (void)z;
    for (int64_t i = 0; i < n; i++)
        d[i] += in[0][i * st[0]] != 0 ? 0.0f : g[i];
}

Tensor *ag_where(TensorCtx *ctx, Tensor *cond, Tensor *a, Tensor *b)
{
    Tensor *src[3] = {cond, a, b};
    return bcast_op(ctx, OP_WHERE, 3, src, where_fwd);
}

static void where_backward(Tensor *out)
{
    bcast_backward(out, 1, where_da); /* cond gets no gradient */
    bcast_backward(out, 2, where_db);
}

/* ---- elementwise unary: rules as data ------------------------------------- */

typedef void (*UnaryFn)(int64_t n, float *o, const float *a, const float *p);

/* SIMD_FOR(n, i, body): `for (int64_t i = 0; i < n; i++) body` for an
 * elementwise body, in chunks of ELEM_CHUNK split over threads (PAR_FOR),
 * each chunk an `omp simd` loop. The pragma is what vectorises the loop at
 * -O2 (gcc's default cost model there refuses any loop that needs a
 * remainder), and it changes no result: the body has no reduction. A body
 * that calls libm stays scalar; branch-free bodies (GELU through fast_expf)
 * run four or eight lanes at a time. */
#define ELEM_CHUNK 4096
#define SIMD_FOR(n, i, ...)                                                                        \
    do {                                                                                           \
        const int64_t simd_n_ = (n);                                                               \
        PAR_FOR(simd_n_, simd_c_, (simd_n_ + ELEM_CHUNK - 1) / ELEM_CHUNK, {                       \
            const int64_t simd_left_ = simd_n_ - simd_c_ * ELEM_CHUNK;                             \
            const int64_t simd_end_ =                                                              \
                simd_c_ * ELEM_CHUNK + (simd_left_ < ELEM_CHUNK ? simd_left_ : ELEM_CHUNK);        \
            _Pragma("omp simd") for (int64_t i = simd_c_ * ELEM_CHUNK; i < simd_end_; i++)         \
                __VA_ARGS__                                                                        \
        });                                                                                        \
    } while (0)

/* A unary op from its rules: FWD(x, p) with p = out->fparam; DX the
 * derivative times g[i] = d out, with z[i] = out. */
#define UNARY_OP(name, FWD, DX)                                                                    \
    static void name##_fwd(int64_t n, float *o, const float *a, const float *p)                    \
    {                                                                                              \
        (void)p;                                                                                   \
        SIMD_FOR(n, i, {                                                                           \
            const float x = a[i];                                                                  \
            o[i] = (FWD);                                                                          \
        });                                                                                        \
    }                                                                                              \
    static void name##_backward(Tensor *out)                                                       \
    {                                                                                              \
        float *d = op_grad(out->src[0]);                                                           \
        if (!d)                                                                                    \
            return;                                                                                \
        const float *a = out->src[0]->data, *z = out->data, *g = out->grad, *p = out->fparam;      \
        int64_t n = out->size;                                                                     \
        (void)z, (void)g, (void)p;                                                                 \
        SIMD_FOR(n, i, {                                                                           \
            const float x = a[i];                                                                  \
            (void)x;                                                                               \
            d[i] += (DX);                                                                          \
        });                                                                                        \
    }

static Tensor *unary_op(TensorCtx *ctx, OpKind op, Tensor *a, UnaryFn fwd, float p0, float p1)
{
    if (!args_ok(ctx, ag_op_name(op), 1, &a))
        return NULL;
    Tensor *out = op_node_uninit(ctx, op, a->ndim, a->shape, a, NULL, NULL);
    if (!out)
        return NULL;
    out->fparam[0] = p0;
    out->fparam[1] = p1;
    if (!ctx->meta)
        fwd(out->size, out->data, a->data, out->fparam);
    return out;
}

/* 1 / (1 + e^-x), with the exponential taken of -|x| so it never overflows */
static inline float sigmoid_f(float x)
{
    if (x >= 0)
        return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

/* log(1 + e^-|x|): the part of softplus and logsigmoid that cannot overflow;
 * softplus(100) = 100 + log1p(e^-100) is then exactly 100 in float */
static inline float log1p_exp_neg_abs(float x) { return log1pf(expf(-fabsf(x))); }

/* gelu_f and gelu_grad: in ops_internal.h, where test_ops.c can reach them */

/* relu and sign pass NaN through, so a NaN upstream stays detectable */
UNARY_OP(neg, -x, -g[i])
UNARY_OP(pow, powf(x, p[0]), p[0] == 0.0f ? 0.0f : g[i] * p[0] * powf(x, p[0] - 1.0f))
UNARY_OP(exp, expf(x), g[i] * z[i])
UNARY_OP(log, logf(x), g[i] / x)
UNARY_OP(log1p, log1pf(x), g[i] / (1.0f + x))
UNARY_OP(expm1, expm1f(x), g[i] * (z[i] + 1.0f))
UNARY_OP(sqrt, sqrtf(x), 0.5f * g[i] / z[i])
UNARY_OP(abs, fabsf(x), x > 0 ? g[i] : x < 0 ? -g[i] : 0.0f)
UNARY_OP(sign, x > 0 ? 1.0f : x < 0 ? -1.0f : x, 0.0f)
/* 1 - sigmoid(x) is taken as sigmoid(-x): no cancellation for x >> 0 */
UNARY_OP(sigmoid, sigmoid_f(x), g[i] * z[i] * sigmoid_f(-x))
UNARY_OP(logsigmoid, fminf(x, 0.0f) - log1p_exp_neg_abs(x), g[i] * sigmoid_f(-x))
UNARY_OP(softplus, fmaxf(x, 0.0f) + log1p_exp_neg_abs(x), g[i] * sigmoid_f(x))
UNARY_OP(tanh, tanhf(x), g[i] * (1.0f - z[i] * z[i]))
UNARY_OP(relu, x > 0 || isnan(x) ? x : 0.0f, x > 0 ? g[i] : 0.0f)
/* GELU's loops are the heaviest elementwise work in a training step, and the
 * build targets baseline x86-64 (SSE2, four lanes): each chunk runs in a
 * function cloned for AVX-512F and AVX2 as well, picked once at load time
 * by the CPU. None of those ISAs adds FMA here (and -std=c11 turns
 * contraction off), there is no reduction, and every lane computes the same
 * IEEE operations in the same order, so each clone gives the same bits as the
 * SSE2 path (a test in test_ops.c compares them). */
ELEM_CLONES void gelu_span(int64_t lo, int64_t hi, float *o, const float *a)
{
#pragma omp simd
    for (int64_t i = lo; i < hi; i++)
        o[i] = gelu_f(a[i]);
}
ELEM_CLONES static void gelu_grad_add(int64_t lo, int64_t hi, float *d, const float *a,
                                      const float *g)
{
#pragma omp simd
    for (int64_t i = lo; i < hi; i++)
        d[i] += g[i] * gelu_grad(a[i]);
}
ELEM_CLONES static void gelu_grad_set(int64_t lo, int64_t hi, float *d, const float *a,
                                      const float *g)
{
#pragma omp simd
    for (int64_t i = lo; i < hi; i++)
        d[i] = 0.0f + g[i] * gelu_grad(a[i]);
}
static void gelu_grad_span(int64_t lo, int64_t hi, float *d, const float *a, const float *g,
                           bool first)
{
    if (first)
        gelu_grad_set(lo, hi, d, a, g);
    else
        gelu_grad_add(lo, hi, d, a, g);
}
/* RUN_FOR(n, lo, hi, call): call for [lo, hi) chunks of ELEM_CHUNK covering
 * [0, n), split over threads as SIMD_FOR does */
#define RUN_FOR(n, lo, hi, ...)                                                                    \
    do {                                                                                           \
        const int64_t run_n_ = (n);                                                                \
        PAR_FOR(run_n_, run_c_, (run_n_ + ELEM_CHUNK - 1) / ELEM_CHUNK, {                          \
            const int64_t lo = run_c_ * ELEM_CHUNK;                                                \
            const int64_t hi = run_n_ - lo < ELEM_CHUNK ? run_n_ : lo + ELEM_CHUNK;                \
            __VA_ARGS__;                                                                           \
        });                                                                                        \
    } while (0)
static void gelu_fwd(int64_t n, float *o, const float *a, const float *p)
{
    (void)p;
    RUN_FOR(n, lo, hi, gelu_span(lo, hi, o, a));
}
void gelu_grad_into(float *d, const float *a, const float *g, int64_t n, bool first)
{
    RUN_FOR(n, lo, hi, gelu_grad_span(lo, hi, d, a, g, first));
}
static void gelu_backward(Tensor *out)
{
    bool first;
    float *d = op_grad_first(out->src[0], &first);
    if (d)
        gelu_grad_into(d, out->src[0]->data, out->grad, out->size, first);
}
/* Gradient only strictly inside (lo, hi): at a bound the function has a kink,
 * and the zero of the clamped side is chosen, so a value pinned at its bound
 * (a clipped ratio, say) gets no push from the clamp. NaN passes through. */
UNARY_OP(clamp, (x < p[0] ? p[0] : (x > p[1] ? p[1] : x)), x > p[0] && x < p[1] ? g[i] : 0.0f)

Tensor *ag_neg(TensorCtx *ctx, Tensor *a) { return unary_op(ctx, OP_NEG, a, neg_fwd, 0, 0); }
Tensor *ag_exp(TensorCtx *ctx, Tensor *a) { return unary_op(ctx, OP_EXP, a, exp_fwd, 0, 0); }
Tensor *ag_log(TensorCtx *ctx, Tensor *a) { return unary_op(ctx, OP_LOG, a, log_fwd, 0, 0); }
Tensor *ag_sqrt(TensorCtx *ctx, Tensor *a) { return unary_op(ctx, OP_SQRT, a, sqrt_fwd, 0, 0); }
Tensor *ag_abs(TensorCtx *ctx, Tensor *a) { return unary_op(ctx, OP_ABS, a, abs_fwd, 0, 0); }
Tensor *ag_sign(TensorCtx *ctx, Tensor *a) { return unary_op(ctx, OP_SIGN, a, sign_fwd, 0, 0); }
Tensor *ag_tanh(TensorCtx *ctx, Tensor *a) { return unary_op(ctx, OP_TANH, a, tanh_fwd, 0, 0); }
Tensor *ag_relu(TensorCtx *ctx, Tensor *a) { return unary_op(ctx, OP_RELU, a, relu_fwd, 0, 0); }
Tensor *ag_gelu(TensorCtx *ctx, Tensor *a) { return unary_op(ctx, OP_GELU, a, gelu_fwd, 0, 0); }

Tensor *ag_log1p(TensorCtx *ctx, Tensor *a) { return unary_op(ctx, OP_LOG1P, a, log1p_fwd, 0, 0); }

Tensor *ag_expm1(TensorCtx *ctx, Tensor *a) { return unary_op(ctx, OP_EXPM1, a, expm1_fwd, 0, 0); }

Tensor *ag_sigmoid(TensorCtx *ctx, Tensor *a)
{
    return unary_op(ctx, OP_SIGMOID, a, sigmoid_fwd, 0, 0);
}

Tensor *ag_logsigmoid(TensorCtx *ctx, Tensor *a)
{
    return unary_op(ctx, OP_LOGSIGMOID, a, logsigmoid_fwd, 0, 0);
}

Tensor *ag_softplus(TensorCtx *ctx, Tensor *a)
{
    return unary_op(ctx, OP_SOFTPLUS, a, softplus_fwd, 0, 0);
}

Tensor *ag_pow(TensorCtx *ctx, Tensor *a, float exponent)
{
    if (a && isnan(exponent))
        return tensor_ctx_fail(ctx, TENSOR_ERR_ARG, "pow: exponent is NaN");
    return unary_op(ctx, OP_POW, a, pow_fwd, exponent, 0);
}

Tensor *ag_clamp(TensorCtx *ctx, Tensor *a, float lo, float hi)
{
    if (a && !(lo <= hi))
        return tensor_ctx_fail(ctx, TENSOR_ERR_ARG, "clamp: bounds lo %g and hi %g, need lo <= hi",
                               (double)lo, (double)hi);
    return unary_op(ctx, OP_CLAMP, a, clamp_fwd, lo, hi);
}

/* ---- reductions and normalisations ---------------------------------------- */

/* a seen as (O, K, I) around dim d (d = -1: every dim, (1, size, 1)); row r
 * of the O * I rows starts at base(r) and steps by I */
typedef struct Rows {
    int64_t outer, k, inner;
} Rows;

static Rows rows_of(const Tensor *a, int d)
{
    if (d < 0)
        return (Rows){1, a->size, 1};
    return (Rows){tensor_numel(d, a->shape), a->shape[d],
                  tensor_numel(a->ndim - d - 1, a->shape + d + 1)};
}

static int64_t row_base(Rows v, int64_t r) { return r / v.inner * v.k * v.inner + r % v.inner; }

/* dim for op: AG_ALL (-1 back, where all_ok) or a dim normalised into range;
 * false with the error set otherwise */
static bool reduce_dim(TensorCtx *ctx, OpKind op, const Tensor *a, int dim, bool all_ok, int *d)
{
    if (dim == AG_ALL && !all_ok) {
        tensor_ctx_fail(ctx, TENSOR_ERR_ARG, "%s: needs one dim; AG_ALL is for sum and mean",
                        ag_op_name(op));
        return false;
    }
    *d = dim == AG_ALL ? -1 : op_dim(ctx, ag_op_name(op), a, dim);
    return dim == AG_ALL || *d >= 0;
}

/* the node of a reduction of a over d (-1: all); iparam[1] = keepdim */
static Tensor *reduce_node(TensorCtx *ctx, OpKind op, Tensor *a, int d, bool keepdim)
{
    int nd = 0, shape[TENSOR_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++)
        if (i == d || d < 0) {
            if (keepdim)
                shape[nd++] = 1;
        } else {
            shape[nd++] = a->shape[i];
        }
    Tensor *out = op_node_uninit(ctx, op, nd, shape, a, NULL, NULL);
    if (out)
        out->iparam[1] = keepdim;
    return out;
}

/* One row of a row-wise op, a seen as v: row r of a (and of out, for softmax
 * and log_softmax) starts at row_base(v, r) and steps by v.inner; a reduction's
 * result for the row is out->data[r]. Forward rows write out->data, backward
 * rows add into dst, a's grad. */
typedef void (*RowFn)(const Tensor *a, Tensor *out, float *dst, Rows v, int64_t r);

/* fn over every row, rows split over threads: each row is one thread's, in order */
static void for_rows(const Tensor *a, Tensor *out, float *dst, int d, RowFn fn)
{
    Rows v = rows_of(a, d);
    PAR_FOR(a->size, r, v.outer * v.inner, { fn(a, out, dst, v, r); });
}

static void row_backward(Tensor *out, RowFn fn)
{
    float *d = op_grad(out->src[0]);
    if (d)
        for_rows(out->src[0], out, d, out->iparam[0], fn);
}

/* the constructor of a row-wise op: checks, the node (reduced over d, or
 * a's shape), and the forward rows */
static Tensor *row_op(TensorCtx *ctx, OpKind op, Tensor *a, int dim, bool keepdim, RowFn fwd)
{
    int d;
    bool reduces = op == OP_SUM || op == OP_MEAN || op == OP_LOGSUMEXP;
    if (!args_ok(ctx, ag_op_name(op), 1, &a) ||
        !reduce_dim(ctx, op, a, dim, op == OP_SUM || op == OP_MEAN, &d))
        return NULL;
    Tensor *out = reduces ? reduce_node(ctx, op, a, d, keepdim)
                          : op_node_uninit(ctx, op, a->ndim, a->shape, a, NULL, NULL);
    if (!out)
        return NULL;
    out->iparam[0] = d;
    if (!ctx->meta)
        for_rows(a, out, out->data, d, fwd);
    return out;
}

/* 1 / K for mean (of nothing: NaN, as numpy), 1 for sum */
static double sum_scale(const Tensor *out, Rows v)
{
    return out->op == OP_MEAN ? 1.0 / (double)v.k : 1.0;
}

static void sum_row(const Tensor *a, Tensor *out, float *dst, Rows v, int64_t r)
{
    (void)dst;
    const float *x = a->data + row_base(v, r);
    double s = 0;
    for (int64_t j = 0; j < v.k; j++)
        s += x[j * v.inner];
    out->data[r] = (float)(s * sum_scale(out, v));
}

static void sum_backward_row(const Tensor *a, Tensor *out, float *dst, Rows v, int64_t r)
{
    (void)a;
    float gr = out->grad[r] * (float)sum_scale(out, v), *d = dst + row_base(v, r);
    for (int64_t j = 0; j < v.k; j++)
        d[j * v.inner] += gr;
}

Tensor *ag_sum(TensorCtx *ctx, Tensor *a, int dim, bool keepdim)
{
    return row_op(ctx, OP_SUM, a, dim, keepdim, sum_row);
}

Tensor *ag_mean(TensorCtx *ctx, Tensor *a, int dim, bool keepdim)
{
    return row_op(ctx, OP_MEAN, a, dim, keepdim, sum_row);
}

static void sum_backward(Tensor *out) { row_backward(out, sum_backward_row); }

/* the row's max, or the value that decides the result alone: NaN if any
 * element is NaN, +inf if any is, -inf if all are (or the row is empty) */
static float row_max(const float *x, int64_t k, int64_t st)
{
    float m = -INFINITY;
    for (int64_t j = 0; j < k; j++)
        if (x[j * st] > m || isnan(x[j * st]))
            m = x[j * st];
    return m;
}

/* log sum_j e^x_j with the max trick; exp(x - m) <= 1 cannot overflow */
static double row_logsumexp(const float *x, int64_t k, int64_t st)
{
    float m = row_max(x, k, st);
    if (!isfinite(m))
        return m;
    double s = 0;
    for (int64_t j = 0; j < k; j++)
        s += expf(x[j * st] - m);
    return m + log(s);
}

static void logsumexp_row(const Tensor *a, Tensor *out, float *dst, Rows v, int64_t r)
{
    (void)dst;
    out->data[r] = (float)row_logsumexp(a->data + row_base(v, r), v.k, v.inner);
}

/* d lse / d x_j = softmax_j = e^(x_j - lse) */
static void logsumexp_backward_row(const Tensor *a, Tensor *out, float *dst, Rows v, int64_t r)
{
    int64_t b = row_base(v, r), st = v.inner;
    for (int64_t j = 0; j < v.k; j++)
        dst[b + j * st] += out->grad[r] * expf(a->data[b + j * st] - out->data[r]);
}

Tensor *ag_logsumexp(TensorCtx *ctx, Tensor *a, int dim, bool keepdim)
{
    return row_op(ctx, OP_LOGSUMEXP, a, dim, keepdim, logsumexp_row);
}

static void logsumexp_backward(Tensor *out) { row_backward(out, logsumexp_backward_row); }

static void softmax_row(const Tensor *a, Tensor *out, float *dst, Rows v, int64_t r)
{
    (void)dst;
    int64_t b = row_base(v, r), st = v.inner;
    const float *x = a->data + b;
    float *y = out->data + b, m = row_max(x, v.k, st);
    double s = 0;
    for (int64_t j = 0; j < v.k; j++) {
        y[j * st] = expf(x[j * st] - m);
        s += y[j * st];
    }
    for (int64_t j = 0; j < v.k; j++)
        y[j * st] = (float)(y[j * st] / s);
}

/* dx_j = y_j (g_j - sum_i g_i y_i) */
static void softmax_backward_row(const Tensor *a, Tensor *out, float *dst, Rows v, int64_t r)
{
    (void)a;
    int64_t b = row_base(v, r), st = v.inner;
    const float *y = out->data + b, *g = out->grad + b;
    double dot = 0;
    for (int64_t j = 0; j < v.k; j++)
        dot += (double)g[j * st] * y[j * st];
    for (int64_t j = 0; j < v.k; j++)
        dst[b + j * st] += y[j * st] * (float)(g[j * st] - dot);
}

Tensor *ag_softmax(TensorCtx *ctx, Tensor *a, int dim)
{
    return row_op(ctx, OP_SOFTMAX, a, dim, false, softmax_row);
}

static void softmax_backward(Tensor *out) { row_backward(out, softmax_backward_row); }

static void log_softmax_row(const Tensor *a, Tensor *out, float *dst, Rows v, int64_t r)
{
    (void)dst;
    int64_t b = row_base(v, r), st = v.inner;
    double lse = row_logsumexp(a->data + b, v.k, st);
    for (int64_t j = 0; j < v.k; j++)
        out->data[b + j * st] = (float)(a->data[b + j * st] - lse);
}

/* dx_j = g_j - softmax_j sum_i g_i, softmax_j = e^(out_j) */
static void log_softmax_backward_row(const Tensor *a, Tensor *out, float *dst, Rows v, int64_t r)
{
    (void)a;
    int64_t b = row_base(v, r), st = v.inner;
    const float *g = out->grad + b, *y = out->data + b;
    double sg = 0;
    for (int64_t j = 0; j < v.k; j++)
        sg += g[j * st];
    for (int64_t j = 0; j < v.k; j++)
        dst[b + j * st] += g[j * st] - expf(y[j * st]) * (float)sg;
}

Tensor *ag_log_softmax(TensorCtx *ctx, Tensor *a, int dim)
{
    return row_op(ctx, OP_LOG_SOFTMAX, a, dim, false, log_softmax_row);
}

static void log_softmax_backward(Tensor *out) { row_backward(out, log_softmax_backward_row); }

/* ---- shape ------------------------------------------------------------------ */

static void add_into(float *d, const float *g, int64_t n)
{
    PAR_FOR(n, i, n, { d[i] += g[i]; });
}

void grad_add(float *d, const float *g, int64_t n, bool first)
{
    if (first)
        PAR_FOR(n, i, n, { d[i] = 0.0f + g[i]; });
    else
        add_into(d, g, n);
}

/* shape with its one -1 (if any) resolved against a->size; false with the error set */
static bool reshape_resolve(TensorCtx *ctx, const Tensor *a, int nd, const int *shape, int *out)
{
    if (nd < 0 || nd > TENSOR_MAX_DIMS || (nd > 0 && !shape)) {
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "reshape: %d dims, expected 0 to %d", nd,
                        TENSOR_MAX_DIMS);
        return false;
    }
    int free_dim = -1;
    bool fit = true;
    int64_t known = 1; /* product of the given dims, kept <= TENSOR_MAX_NUMEL */
    for (int i = 0; i < nd; i++) {
        out[i] = shape[i];
        if (shape[i] == -1 && free_dim < 0)
            free_dim = i;
        else if (shape[i] < 0)
            fit = false;
        else if (shape[i] > 0 && known > TENSOR_MAX_NUMEL / shape[i])
            fit = false; /* (2^31 - 1)^4 overflows int64: no tensor has that many */
        else
            known *= shape[i];
    }
    if (free_dim >= 0) /* a -1 next to a zero dim could be anything */
        fit = fit && known > 0 && a->size % known == 0 && a->size / known <= INT32_MAX;
    if (fit && free_dim >= 0)
        out[free_dim] = (int)(a->size / known);
    if (fit && tensor_numel(nd, out) == a->size)
        return true;
    char sa[SHAPE_LEN], sb[SHAPE_LEN];
    Tensor want = {.ndim = nd};
    for (int i = 0; i < nd; i++)
        want.shape[i] = shape[i];
    tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "reshape: cannot view %s (%lld elements) as %s",
                    tensor_shape_str(a, sa, sizeof sa), (long long)a->size,
                    tensor_shape_str(&want, sb, sizeof sb));
    return false;
}

Tensor *ag_reshape(TensorCtx *ctx, Tensor *a, int ndim, const int *shape)
{
    int s[TENSOR_MAX_DIMS];
    if (!args_ok(ctx, "reshape", 1, &a) || !reshape_resolve(ctx, a, ndim, shape, s))
        return NULL;
    return op_node_view(ctx, OP_RESHAPE, ndim, s, a, a->data);
}

static void reshape_backward(Tensor *out)
{
    bool first;
    float *d = op_grad_first(out->src[0], &first);
    if (d)
        grad_add(d, out->grad, out->size, first);
}

Tensor *ag_detach(TensorCtx *ctx, Tensor *a)
{
    if (!args_ok(ctx, "detach", 1, &a))
        return NULL;
    return op_node_view(ctx, OP_NONE, a->ndim, a->shape, NULL, a->data);
}

/* dst = src (or dst += src when add) with dims d0 and d1 swapped; src has
 * like's shape, dst that shape with the two dims exchanged */
static void swap_dims(float *dst, const float *src, const Tensor *like, int d0, int d1, bool add)
{
    int dshape[TENSOR_MAX_DIMS], nd = like->ndim, pad = TENSOR_MAX_DIMS - nd;
    int64_t dstride[TENSOR_MAX_DIMS], n[TENSOR_MAX_DIMS] = {1, 1, 1, 1}, st[TENSOR_MAX_DIMS] = {0};
    memcpy(dshape, like->shape, sizeof dshape);
    dshape[d0] = like->shape[d1];
    dshape[d1] = like->shape[d0];
    int64_t acc = 1;
    for (int j = nd - 1; j >= 0; acc *= dshape[j--])
        dstride[j] = acc;
    for (int j = 0; j < nd; j++) {
        n[pad + j] = like->shape[j];
        st[pad + j] = dstride[j == d0 ? d1 : j == d1 ? d0 : j];
    }
    int64_t i = 0;
    for (int64_t i0 = 0; i0 < n[0]; i0++)
        for (int64_t i1 = 0; i1 < n[1]; i1++)
            for (int64_t i2 = 0; i2 < n[2]; i2++)
                for (int64_t i3 = 0; i3 < n[3]; i3++, i++) {
                    float *p = dst + i0 * st[0] + i1 * st[1] + i2 * st[2] + i3 * st[3];
                    *p = add ? *p + src[i] : src[i];
                }
}

Tensor *ag_transpose(TensorCtx *ctx, Tensor *a, int dim0, int dim1)
{
    if (!args_ok(ctx, "transpose", 1, &a))
        return NULL;
    int d0 = op_dim(ctx, "transpose", a, dim0),
        d1 = d0 < 0 ? -1 : op_dim(ctx, "transpose", a, dim1);
    if (d1 < 0)
        return NULL;
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[d0] = a->shape[d1];
    shape[d1] = a->shape[d0];
    Tensor *out = op_node_uninit(ctx, OP_TRANSPOSE, a->ndim, shape, a, NULL, NULL);
    if (!out)
        return NULL;
    out->iparam[0] = d0;
    out->iparam[1] = d1;
    if (!ctx->meta)
        swap_dims(out->data, a->data, a, d0, d1, false);
    return out;
}

static void transpose_backward(Tensor *out)
{
    float *d = op_grad(out->src[0]);
    if (d)
        swap_dims(d, out->grad, out, out->iparam[0], out->iparam[1], true);
}

/* outer blocks of len floats: dst row o (stride dst_row) = or += src row o */
static void copy_blocks(float *dst, int64_t dst_row, const float *src, int64_t src_row,
                        int64_t outer, int64_t len, bool add)
{
    for (int64_t o = 0; o < outer; o++) {
        float *dr = dst + o * dst_row;
        const float *sr = src + o * src_row;
        if (add)
            add_into(dr, sr, len);
        else
            memcpy(dr, sr, (size_t)len * sizeof *dr);
    }
}

Tensor *ag_slice(TensorCtx *ctx, Tensor *a, int dim, int start, int length)
{
    char sa[SHAPE_LEN];
    if (!args_ok(ctx, "slice", 1, &a))
        return NULL;
    int d = op_dim(ctx, "slice", a, dim);
    if (d < 0)
        return NULL;
    if (start < 0 || length < 0 || start > a->shape[d] - length)
        return tensor_ctx_fail(ctx, TENSOR_ERR_ARG,
                               "slice: start %d, length %d out of range for dim %d of %s", start,
                               length, dim, tensor_shape_str(a, sa, sizeof sa));
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[d] = length;
    Tensor *out = op_node_uninit(ctx, OP_SLICE, a->ndim, shape, a, NULL, NULL);
    if (!out)
        return NULL;
    out->iparam[0] = d;
    out->iparam[1] = start;
    out->iparam[2] = length;
    if (!ctx->meta) {
        Rows v = rows_of(a, d);
        copy_blocks(out->data, length * v.inner, a->data + start * v.inner, v.k * v.inner, v.outer,
                    length * v.inner, false);
    }
    return out;
}

static void slice_backward(Tensor *out)
{
    Tensor *a = out->src[0];
    float *d = op_grad(a);
    if (!d)
        return;
    Rows v = rows_of(a, out->iparam[0]);
    int64_t start = out->iparam[1], len = out->iparam[2];
    copy_blocks(d + start * v.inner, v.k * v.inner, out->grad, len * v.inner, v.outer,
                len * v.inner, true);
}

static bool concat_check(TensorCtx *ctx, const Tensor *a, const Tensor *b, int d)
{
    char sa[SHAPE_LEN], sb[SHAPE_LEN];
    bool fit = a->ndim == b->ndim;
    for (int i = 0; fit && i < a->ndim; i++)
        fit = i == d || a->shape[i] == b->shape[i];
    if (!fit)
        tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "concat: shapes %s and %s differ outside dim %d",
                        tensor_shape_str(a, sa, sizeof sa), tensor_shape_str(b, sb, sizeof sb), d);
    return fit;
}

Tensor *ag_concat(TensorCtx *ctx, Tensor *a, Tensor *b, int dim)
{
    Tensor *src[2] = {a, b};
    if (!args_ok(ctx, "concat", 2, src))
        return NULL;
    int d = op_dim(ctx, "concat", a, dim);
    if (d < 0 || !concat_check(ctx, a, b, d))
        return NULL;
    if (a->shape[d] > INT_MAX - b->shape[d]) { /* a dim is an int */
        char sa[SHAPE_LEN], sb[SHAPE_LEN];
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                               "concat: shapes %s and %s along dim %d give a dim of %lld, more "
                               "than %d",
                               tensor_shape_str(a, sa, sizeof sa),
                               tensor_shape_str(b, sb, sizeof sb), d,
                               (long long)a->shape[d] + b->shape[d], INT_MAX);
    }
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[d] = a->shape[d] + b->shape[d];
    Tensor *out = op_node_uninit(ctx, OP_CONCAT, a->ndim, shape, a, b, NULL);
    if (!out)
        return NULL;
    out->iparam[0] = d;
    if (!ctx->meta) {
        Rows va = rows_of(a, d), vb = rows_of(b, d);
        int64_t row = (va.k + vb.k) * va.inner;
        copy_blocks(out->data, row, a->data, va.k * va.inner, va.outer, va.k * va.inner, false);
        copy_blocks(out->data + va.k * va.inner, row, b->data, vb.k * vb.inner, vb.outer,
                    vb.k * vb.inner, false);
    }
    return out;
}

static void concat_backward(Tensor *out)
{
    Tensor *a = out->src[0], *b = out->src[1];
    Rows va = rows_of(a, out->iparam[0]), vb = rows_of(b, out->iparam[0]);
    int64_t row = (va.k + vb.k) * va.inner;
    float *da = op_wants_grad(a) ? op_grad(a) : NULL;
    float *db = op_wants_grad(b) ? op_grad(b) : NULL;
    if (da)
        copy_blocks(da, va.k * va.inner, out->grad, row, va.outer, va.k * va.inner, true);
    if (db)
        copy_blocks(db, vb.k * vb.inner, out->grad + va.k * va.inner, row, vb.outer,
                    vb.k * vb.inner, true);
}

/* qsort_r's comparator over indices into one strided row: NaN sorts last,
 * ties by index, so the order is total and the sort is stable */
typedef struct SortRow {
    const float *x;
    int64_t stride;
} SortRow;

static int sort_cmp(const void *pa, const void *pb, void *arg)
{
    const SortRow *r = arg;
    int32_t ia = *(const int32_t *)pa, ib = *(const int32_t *)pb;
    float a = r->x[ia * r->stride], b = r->x[ib * r->stride];
    bool na = isnan(a), nb = isnan(b);
    if (na != nb)
        return na ? 1 : -1;
    if (!na && a != b)
        return a < b ? -1 : 1;
    return (ia > ib) - (ia < ib);
}

Tensor *ag_sort(TensorCtx *ctx, Tensor *a, int dim)
{
    if (!args_ok(ctx, "sort", 1, &a))
        return NULL;
    int d = op_dim(ctx, "sort", a, dim);
    if (d < 0)
        return NULL;
    Tensor *out = op_node_uninit(ctx, OP_SORT, a->ndim, a->shape, a, NULL, NULL);
    if (!out)
        return NULL;
    out->iparam[0] = d;
    if (ctx->meta)
        return out;
    Rows v = rows_of(a, d);
    int32_t *perm = tensor_ctx_alloc(ctx, (size_t)(a->size ? a->size : 1) * sizeof *perm);
    if (!perm)
        return NULL;
    for (int64_t r = 0; r < v.outer * v.inner; r++) {
        int64_t base = row_base(v, r);
        int32_t *p = perm + r * v.k;
        for (int64_t j = 0; j < v.k; j++)
            p[j] = (int32_t)j;
        SortRow row = {a->data + base, v.inner};
        qsort_r(p, (size_t)v.k, sizeof *p, sort_cmp, &row);
        for (int64_t j = 0; j < v.k; j++)
            out->data[base + j * v.inner] = a->data[base + p[j] * v.inner];
    }
    if (op_saves(out))
        out->aux = perm;
    return out;
}

static void sort_backward(Tensor *out)
{
    float *d = op_grad(out->src[0]);
    const int32_t *perm = out->aux;
    if (!d || !perm)
        return;
    Rows v = rows_of(out->src[0], out->iparam[0]);
    for (int64_t r = 0; r < v.outer * v.inner; r++) {
        int64_t base = row_base(v, r);
        for (int64_t j = 0; j < v.k; j++)
            d[base + perm[r * v.k + j] * v.inner] += out->grad[base + j * v.inner];
    }
}
