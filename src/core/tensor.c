/*
 * core/tensor.c — the arena (TensorCtx), tensor creation, shapes and errors.
 *
 * The arena is a list of chunks. Allocation bumps within the newest chunk and
 * opens a new one when it is full; reset frees every chunk but one, sized to
 * the last step's total, so a steady training loop allocates nothing after
 * its first step. tensor_ctx_alloc zero-fills; tensor_ctx_alloc_uninit does
 * not, for op outputs whose kernel writes every element (a memset there was
 * a pass over every activation of the step). The tape is a plain array that
 * grows by doubling and is kept across resets.
 *
 * Every node passes through tensor_header, which enforces the size limit of
 * tensor.h (dims >= 0, at most TENSOR_MAX_NUMEL elements) before anything is
 * allocated: the one place that keeps shape arithmetic inside int64.
 */
#include "core/tensor.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Memory handed out uninitialised is marked so for valgrind's memcheck: an
 * arena chunk reused across resets still holds last step's (defined) values,
 * and a read of one would otherwise pass unnoticed. A no-op elsewhere. */
#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#endif
#endif
#ifndef VALGRIND_MAKE_MEM_UNDEFINED
#define VALGRIND_MAKE_MEM_UNDEFINED(p, n) ((void)(p), (void)(n))
#endif

#define ARENA_ALIGN 64
#define ARENA_MIN_CHUNK (1u << 20)
#define SHAPE_STR_LEN 64 /* "(d0, d1, d2, d3)": 4 dims of up to 11 characters */

typedef struct ArenaChunk {
    struct ArenaChunk *next; /* older chunk */
    size_t size, used;
    unsigned char *mem;
} ArenaChunk;

static size_t align_up(size_t n) { return (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1); }

static ArenaChunk *chunk_new(size_t size)
{
    ArenaChunk *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    c->mem = aligned_alloc(ARENA_ALIGN, align_up(size));
    if (!c->mem) {
        free(c);
        return NULL;
    }
    c->size = align_up(size);
    c->used = 0;
    c->next = NULL;
    return c;
}

static void chunks_free(ArenaChunk *c)
{
    while (c) {
        ArenaChunk *next = c->next;
        free(c->mem);
        free(c);
        c = next;
    }
}

TensorCtx *tensor_ctx_new(size_t cap_bytes)
{
    TensorCtx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return NULL;
    ctx->cap_bytes = cap_bytes;
    return ctx;
}

void tensor_ctx_free(TensorCtx *ctx)
{
    if (!ctx)
        return;
    chunks_free(ctx->chunks);
    free(ctx->tape);
    free(ctx);
}

void tensor_ctx_reset(TensorCtx *ctx)
{
    size_t total = 0;
    for (ArenaChunk *c = ctx->chunks; c; c = c->next)
        total += c->size;
    if (ctx->chunks && ctx->chunks->next) {
        /* coalesce: next step's tensors fit in one chunk */
        chunks_free(ctx->chunks);
        ctx->chunks = chunk_new(total); /* NULL is fine: alloc retries */
    }
    if (ctx->chunks)
        ctx->chunks->used = 0;
    ctx->used = 0;
    ctx->n_tape = 0;
    ctx->generation++;
    tensor_ctx_clear_error(ctx);
}

void *tensor_ctx_alloc_uninit(TensorCtx *ctx, size_t bytes)
{
    size_t need = align_up(bytes ? bytes : 1);
    if (ctx->cap_bytes && ctx->used + need > ctx->cap_bytes)
        return tensor_ctx_fail(ctx, TENSOR_ERR_NOMEM,
                               "memory cap exceeded: %zu bytes asked, %zu of %zu in use", bytes,
                               ctx->used, ctx->cap_bytes);
    ArenaChunk *c = ctx->chunks;
    if (!c || c->size - c->used < need) {
        size_t size = need > ARENA_MIN_CHUNK ? need : ARENA_MIN_CHUNK;
        if (c && size < c->size * 2 && need <= c->size * 2)
            size = c->size * 2; /* geometric growth keeps the chunk count small */
        ArenaChunk *fresh = chunk_new(size);
        if (!fresh)
            return tensor_ctx_fail(ctx, TENSOR_ERR_NOMEM, "out of memory allocating %zu bytes",
                                   bytes);
        fresh->next = c;
        ctx->chunks = c = fresh;
    }
    void *p = c->mem + c->used;
    c->used += need;
    ctx->used += need;
    if (ctx->used > ctx->peak)
        ctx->peak = ctx->used;
    VALGRIND_MAKE_MEM_UNDEFINED(p, need); /* last step's values are not this tensor's */
    return p;
}

void *tensor_ctx_alloc(TensorCtx *ctx, size_t bytes)
{
    void *p = tensor_ctx_alloc_uninit(ctx, bytes);
    if (p)
        memset(p, 0, align_up(bytes ? bytes : 1));
    return p;
}

bool tensor_ctx_ok(const TensorCtx *ctx) { return ctx->status == TENSOR_OK; }

const char *tensor_ctx_error(const TensorCtx *ctx)
{
    return ctx->status == TENSOR_OK ? "no error" : ctx->err;
}

void tensor_ctx_clear_error(TensorCtx *ctx)
{
    ctx->status = TENSOR_OK;
    ctx->err[0] = '\0';
}

void *tensor_ctx_fail(TensorCtx *ctx, TensorStatus status, const char *fmt, ...)
{
    if (ctx->status != TENSOR_OK)
        return NULL; /* keep the first error: later ones are usually its echoes */
    ctx->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    return NULL;
}

int64_t tensor_numel(int ndim, const int *shape)
{
    int64_t n = 1, nonzero = 1; /* nonzero: the product the limit applies to */
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return -1;
        if (shape[i] == 0) {
            n = 0;
            continue;
        }
        /* nonzero <= 2^40 and shape[i] < 2^31: the product is < 2^71, so test
         * by division before multiplying */
        if (nonzero > TENSOR_MAX_NUMEL / shape[i])
            return -1;
        nonzero *= shape[i];
        n *= shape[i];
    }
    return n;
}

static int tape_push(TensorCtx *ctx, Tensor *t)
{
    if (ctx->n_tape == ctx->tape_cap) {
        if (ctx->tape_cap > INT_MAX / 2) { /* 2^30 nodes: 256 GiB of headers, never reached */
            tensor_ctx_fail(ctx, TENSOR_ERR_NOMEM, "the tape is full (%d nodes)", ctx->n_tape);
            return -1;
        }
        int cap = ctx->tape_cap ? ctx->tape_cap * 2 : 256;
        Tensor **tape = realloc(ctx->tape, (size_t)cap * sizeof *tape);
        if (!tape) {
            tensor_ctx_fail(ctx, TENSOR_ERR_NOMEM, "out of memory growing the tape");
            return -1;
        }
        ctx->tape = tape;
        ctx->tape_cap = cap;
    }
    t->tape_index = ctx->n_tape;
    ctx->tape[ctx->n_tape++] = t;
    return 0;
}

/* A node without data: the caller fills data (views) or calls for it. */
static Tensor *tensor_header(TensorCtx *ctx, OpKind op, int ndim, const int *shape)
{
    if (ndim < 0 || ndim > TENSOR_MAX_DIMS)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "tensor: %d dims, expected 0 to %d", ndim,
                               TENSOR_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0)
            return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE, "tensor: dim %d has negative size %d", i,
                                   shape[i]);
    /* checked here, before any allocation, so a meta context (which allocates
     * no data and so meets no byte cap) refuses an impossible shape too */
    int64_t numel = tensor_numel(ndim, shape);
    if (numel < 0) {
        char s[SHAPE_STR_LEN];
        return tensor_ctx_fail(
            ctx, TENSOR_ERR_SHAPE, "tensor: shape %s has too many elements (at most 2^40 = %lld)",
            tensor_dims_str(ndim, shape, s, sizeof s), (long long)TENSOR_MAX_NUMEL);
    }
    Tensor *t = tensor_ctx_alloc(ctx, sizeof *t);
    if (!t)
        return NULL;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->size = numel;
    t->op = op;
    t->ctx = ctx;
    if (tape_push(ctx, t) != 0)
        return NULL;
    return t;
}

Tensor *tensor_new_node_fill(TensorCtx *ctx, OpKind op, int ndim, const int *shape, TensorFill fill)
{
    Tensor *t = tensor_header(ctx, op, ndim, shape);
    if (!t || ctx->meta || fill == TENSOR_FILL_NONE)
        return t;
    size_t bytes = (size_t)t->size * sizeof(float);
    t->data = fill == TENSOR_FILL_UNINIT ? tensor_ctx_alloc_uninit(ctx, bytes)
                                         : tensor_ctx_alloc(ctx, bytes);
    return t->data ? t : NULL;
}

Tensor *tensor_new_node(TensorCtx *ctx, OpKind op, int ndim, const int *shape)
{
    return tensor_new_node_fill(ctx, op, ndim, shape, TENSOR_FILL_ZERO);
}

Tensor *tensor_new(TensorCtx *ctx, int ndim, const int *shape)
{
    return tensor_new_node(ctx, OP_NONE, ndim, shape);
}

Tensor *tensor_from_data(TensorCtx *ctx, int ndim, const int *shape, const float *data)
{
    Tensor *t = tensor_new(ctx, ndim, shape);
    if (t && t->data && data)
        memcpy(t->data, data, (size_t)t->size * sizeof(float));
    return t;
}

Tensor *tensor_full(TensorCtx *ctx, int ndim, const int *shape, float value)
{
    Tensor *t = tensor_new(ctx, ndim, shape);
    if (t && t->data)
        for (int64_t i = 0; i < t->size; i++)
            t->data[i] = value;
    return t;
}

Tensor *tensor_scalar(TensorCtx *ctx, float value) { return tensor_full(ctx, 0, NULL, value); }

Tensor *tensor_copy(TensorCtx *ctx, const Tensor *t)
{
    if (!t)
        return NULL;
    return tensor_from_data(ctx, t->ndim, t->shape, t->data);
}

int tensor_ensure_grad(Tensor *t)
{
    if (t->grad || t->ctx->meta)
        return 0;
    t->grad = tensor_ctx_alloc(t->ctx, (size_t)t->size * sizeof(float));
    return t->grad ? 0 : -1;
}

int tensor_requires_grad(Tensor *t)
{
    t->flags |= TENSOR_REQUIRES_GRAD;
    return tensor_ensure_grad(t);
}

void tensor_zero_grad(Tensor *t)
{
    if (t->grad)
        memset(t->grad, 0, (size_t)t->size * sizeof(float));
}

bool tensor_same_shape(const Tensor *a, const Tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i])
            return false;
    return true;
}

const char *tensor_dims_str(int ndim, const int *shape, char *buf, size_t len)
{
    size_t n = (size_t)snprintf(buf, len, "(");
    for (int i = 0; i < ndim && n < len; i++)
        n += (size_t)snprintf(buf + n, len - n, i ? ", %d" : "%d", shape[i]);
    if (n < len)
        snprintf(buf + n, len - n, ")");
    return buf;
}

const char *tensor_shape_str(const Tensor *t, char *buf, size_t len)
{
    return tensor_dims_str(t->ndim, t->shape, buf, len);
}

int tensor_broadcast_shape(int na, const int *sa, int nb, const int *sb, int *nout, int *sout)
{
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int da = i < n - na ? 1 : sa[i - (n - na)];
        int db = i < n - nb ? 1 : sb[i - (n - nb)];
        if (da != db && da != 1 && db != 1)
            return -1;
        sout[i] = da == 1 ? db : da;
    }
    *nout = n;
    /* (N, 1) and (1, N) are valid for N up to 2^31 - 1; (N, N) may not be */
    return tensor_numel(n, sout) < 0 ? -2 : 0;
}

void tensor_set_name(Tensor *t, const char *name) { snprintf(t->name, sizeof t->name, "%s", name); }
