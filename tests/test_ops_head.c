/*
 * test_ops_head.c — ag_linear_cross_entropy (src/core/ops_head.c), the LM
 * head fused with its cross-entropy, against three independent sources:
 *   - a plain double reference, differentiated by central differences
 *     (tests/gradcheck.h), at random small shapes: S below one chunk, S over
 *     several chunks with a partial last one, V past one vocabulary block
 *     and not a multiple of it, ignored targets, logits near +-1e4;
 *   - the unfused ag_cross_entropy(ag_linear(h, W)) at the default chunk
 *     size on GPT-2's vocabulary (several chunks) and at odd explicit ones;
 *   - PyTorch (tests/head_reference.py with Debian's python3-torch):
 *     F.cross_entropy(h @ W.T, t, reduction='none') and its autograd.
 * Then: the same bits under 1 and 2 threads, accumulation into leaves, the
 * no_grad and shape-only modes, error messages.
 *
 * Letters: S rows, C channels, V vocabulary, R rows per chunk.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "testfs.h"
#include "core/ops.h"
#include "util/fsutil.h"

static void rand_targets(int32_t *t, int64_t n, int V, uint64_t seed)
{
    Rng r;
    rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++)
        t[i] = (int32_t)rng_below(&r, (uint32_t)V);
}

/* ---- the double reference ----------------------------------------------- */

typedef struct HeadArg {
    int S, C, V, rows; /* rows: per chunk for the op (0: its default) */
    const int32_t *t;
} HeadArg;

/* nll[s] = logsumexp_v(h_s . w_v) - h_s . w_t, 0 where t = -1 */
static void ref_head(const double *const *in, double *out, const void *arg)
{
    const HeadArg *a = arg;
    double *z = malloc((size_t)a->V * sizeof *z);
    for (int s = 0; s < a->S; s++) {
        double mx = -INFINITY, sum = 0;
        for (int v = 0; v < a->V; v++) {
            z[v] = 0;
            for (int c = 0; c < a->C; c++)
                z[v] += in[0][(int64_t)s * a->C + c] * in[1][(int64_t)v * a->C + c];
            mx = z[v] > mx ? z[v] : mx;
        }
        for (int v = 0; v < a->V; v++)
            sum += exp(z[v] - mx);
        out[s] = a->t[s] < 0 ? 0 : mx + log(sum) - z[a->t[s]];
    }
    free(z);
}

static Tensor *op_head(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const HeadArg *a = arg;
    return ag_linear_cross_entropy_rows(ctx, in[0], in[1], a->t, a->S, a->rows);
}

static void gradcheck_head(const char *name, int S, int C, int V, int rows, double range,
                           double rtol, double atol, uint64_t seed)
{
    int32_t *t = malloc((size_t)S * sizeof *t);
    rand_targets(t, S, V, seed);
    for (int s = 1; s < S; s += 3)
        t[s] = -1; /* ignored: loss 0 and no gradient */
    HeadArg arg = {S, C, V, rows, t};
    int sh[2] = {S, C}, sw[2] = {V, C};
    GcSpec g = {.name = name, .op = op_head, .ref = ref_head, .arg = &arg, .n_in = 2};
    g.rtol = rtol;
    g.atol = atol;
    g.in[0] = gc_input(2, sh, -range, range, seed + 1);
    g.in[1] = gc_input(2, sw, -range, range, seed + 2);
    gradcheck_free(&g);
    free(t);
}

/* S = 5 below one chunk (the default: thousands of rows at V = 7) */
static void test_gradcheck_one_chunk(void)
{
    gradcheck_head("head, S < R", 5, 4, 7, 0, 2, 0, 0, 11);
}

/* S = 23 in chunks of 4: five full ones and a last of 3 */
static void test_gradcheck_several_chunks(void)
{
    gradcheck_head("head, 6 chunks", 23, 5, 11, 4, 2, 0, 0, 12);
}

/* V = 1100: past one vocabulary block of 1024 (the tasks of the logits and
 * dW products), not a multiple of it; S = 7 in chunks of 3 */
static void test_gradcheck_vocab_blocks(void)
{
    gradcheck_head("head, V = 1100", 7, 3, 1100, 3, 1, 0, 0, 13);
}

/* h and W in [-60, 60] at C = 3: logits up to about +-1e4, where exp
 * overflows without the max trick. The loss is a difference of such
 * logits, so it carries their absolute rounding (half an ulp of 1e4 is
 * 5e-4, a few of them over the sum of C products): atol 2e-3, which also
 * covers a loss near 0 (the target the top logit). Elsewhere float's
 * relative rounding, far inside rtol 1e-5; the probabilities at this scale
 * are 0 or 1 to float precision, so the gradients are nearly exact. */
static void test_gradcheck_extreme_logits(void)
{
    gradcheck_head("head, logits to 1e4", 9, 3, 17, 4, 60, 1e-5, 2e-3, 14);
}

/* ---- against the unfused pair ------------------------------------------- */

typedef struct Diff {
    double nll, dh, dw; /* max |fused - unfused| over max |unfused| */
} Diff;

static double rel_diff(const float *a, const float *b, int64_t n)
{
    double d = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fabs((double)a[i] - b[i]) > d ? fabs((double)a[i] - b[i]) : d;
        m = fabs((double)b[i]) > m ? fabs((double)b[i]) : m;
        if (!isfinite(a[i]))
            return INFINITY;
    }
    return m > 0 ? d / m : d;
}

/* One backward of both forms from the same seed, on the same leaves. */
static Diff fused_vs_unfused(int S, int C, int V, int rows, double range, uint64_t seed)
{
    Diff r = {INFINITY, INFINITY, INFINITY};
    int32_t *t = malloc((size_t)S * sizeof *t);
    float *g = malloc((size_t)S * sizeof *g);
    rand_targets(t, S, V, seed);
    for (int s = 0; s < S; s += 5)
        t[s] = -1;
    for (int s = 0; s < S; s++)
        g[s] = (float)((s % 7) - 3) * 0.25f;
    TensorCtx *ctx = tensor_ctx_new(0);
    int sh[2] = {S, C}, sw[2] = {V, C};
    Tensor *h1 = gc_tensor(ctx, 2, sh, -range, range, seed + 1, true);
    Tensor *w1 = gc_tensor(ctx, 2, sw, -range, range, seed + 2, true);
    Tensor *h2 = gc_tensor(ctx, 2, sh, -range, range, seed + 1, true);
    Tensor *w2 = gc_tensor(ctx, 2, sw, -range, range, seed + 2, true);
    Tensor *fused = ag_linear_cross_entropy_rows(ctx, h1, w1, t, S, rows);
    Tensor *plain = ag_cross_entropy(ctx, ag_linear(ctx, h2, w2, NULL), t, S);
    CHECKF(fused && plain, "%s", tensor_ctx_error(ctx));
    if (fused && plain && ag_backward(ctx, fused, g) == 0 && ag_backward(ctx, plain, g) == 0)
        r = (Diff){rel_diff(fused->data, plain->data, S), rel_diff(h1->grad, h2->grad, h1->size),
                   rel_diff(w1->grad, w2->grad, w1->size)};
    tensor_ctx_free(ctx);
    free(t);
    free(g);
    return r;
}

/* Both forms are float32 with the same row statistics; only the products'
 * blocking differs, a few ulps of a sum over C (and over S, V in the
 * gradients): 1e-5 of the largest entry is float rounding, and an error in
 * a single row or chunk would be far larger. */
static void check_unfused(const char *name, int S, int C, int V, int rows, double range,
                          uint64_t seed)
{
    Diff d = fused_vs_unfused(S, C, V, rows, range, seed);
    printf("#   %s: relative difference nll %.2e, dh %.2e, dW %.2e\n", name, d.nll, d.dh, d.dw);
    CHECKF(d.nll <= 1e-5 && d.dh <= 1e-5 && d.dw <= 1e-5,
           "%s: relative difference nll %.3g, dh %.3g, dW %.3g", name, d.nll, d.dh, d.dw);
}

/* GPT-2's vocabulary at the default chunk (80 rows): 3 chunks, the last of 40 */
static void test_matches_unfused_gpt2_vocab(void)
{
    check_unfused("V 50257, default chunk", 200, 24, 50257, 0, 1, 21);
}

static void test_matches_unfused_odd_chunks(void)
{
    check_unfused("S < chunk", 9, 16, 300, 0, 1, 22);
    check_unfused("chunks of 7", 100, 33, 2500, 7, 1, 23);
    check_unfused("chunks of 1", 13, 8, 1025, 1, 1, 24);
    check_unfused("one row per chunk past S", 6, 8, 40, 64, 1, 25);
    check_unfused("logits to 1e4", 40, 4, 1500, 16, 50, 26);
}

/* ---- against PyTorch ---------------------------------------------------- */

static int write_raw(const char *path, const void *p, size_t bytes)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(p, 1, bytes, f);
    return fclose(f) == 0 && n == bytes ? 0 : -1;
}

/* a file of n floats into a malloc'ed array, NULL when it is not that */
static float *read_floats(const char *path, int64_t n)
{
    char *data, e[256];
    size_t len;
    if (tfs_read(path, &data, &len, e, sizeof e) != 0)
        return NULL;
    if (len != (size_t)n * sizeof(float)) {
        free(data);
        return NULL;
    }
    return (float *)data;
}

static const char *source_root(void)
{
    const char *r = getenv("PREFRUN_ROOT");
    return r ? r : ".";
}

/* The case and torch's answer: 0 when the script ran */
static int run_torch(const char *dir, const Tensor *h, const Tensor *w, const int32_t *t,
                     const float *g)
{
    int S = h->shape[0], C = h->shape[1], V = w->shape[0];
    FILE *f = fopen(tfs_join(dir, "shape.txt"), "w");
    if (!f)
        return -1;
    fprintf(f, "%d %d %d\n", S, C, V);
    fclose(f);
    if (write_raw(tfs_join(dir, "h.f32"), h->data, (size_t)h->size * 4) != 0 ||
        write_raw(tfs_join(dir, "w.f32"), w->data, (size_t)w->size * 4) != 0 ||
        write_raw(tfs_join(dir, "t.i32"), t, (size_t)S * 4) != 0 ||
        write_raw(tfs_join(dir, "g.f32"), g, (size_t)S * 4) != 0)
        return -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/tests/head_reference.py %s", source_root(), dir);
    return system(cmd);
}

/* S = 70 in chunks of 16, V = 1500 (two vocabulary blocks, the second
 * partial), every fifth target ignored. Both float32, with different
 * summation orders: 1e-5 of the largest entry, as against the unfused pair. */
static void torch_reference_agrees(void)
{
    enum { S = 70, C = 24, V = 1500 };
    char dir[64] = "/tmp/prefrun_headXXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    int32_t t[S];
    float g[S];
    rand_targets(t, S, V, 31);
    for (int s = 0; s < S; s++) {
        t[s] = s % 5 == 2 ? -1 : t[s];
        g[s] = 0.5f + 0.01f * (float)s;
    }
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *h = gc_tensor(ctx, 2, (int[]){S, C}, -1, 1, 32, true);
    Tensor *w = gc_tensor(ctx, 2, (int[]){V, C}, -1, 1, 33, true);
    Tensor *nll = ag_linear_cross_entropy_rows(ctx, h, w, t, S, 16);
    CHECK(nll && ag_backward(ctx, nll, g) == 0);
    CHECK(run_torch(dir, h, w, t, g) == 0);
    float *tn = read_floats(tfs_join(dir, "nll.f32"), S);
    float *tdh = read_floats(tfs_join(dir, "dh.f32"), (int64_t)S * C);
    float *tdw = read_floats(tfs_join(dir, "dw.f32"), (int64_t)V * C);
    CHECKF(tn && tdh && tdw, "torch's outputs missing in %s", dir);
    if (nll && tn && tdh && tdw) {
        double dn = rel_diff(nll->data, tn, S), dh = rel_diff(h->grad, tdh, h->size);
        double dw = rel_diff(w->grad, tdw, w->size);
        printf("#   vs torch: relative difference nll %.2e, dh %.2e, dW %.2e\n", dn, dh, dw);
        CHECK(dn <= 1e-5 && dh <= 1e-5 && dw <= 1e-5);
    }
    free(tn);
    free(tdh);
    free(tdw);
    tensor_ctx_free(ctx);
    char e[256];
    fsutil_remove_tree(dir, e, sizeof e);
}

/* Without python3-torch this case fails, unless PREFRUN_SKIP_TORCH says to
 * skip it (as test_hf_model.c): a TAP skip, never a silent pass. */
static void run_torch_reference(void)
{
    if (system("/usr/bin/python3 -c 'import torch' 2>/dev/null") == 0) {
        RUN(torch_reference_agrees);
        return;
    }
    const char *why = "/usr/bin/python3 cannot import torch: apt-get install python3-torch "
                      "(bash .ci/bootstrap.sh installs it)";
    if (getenv("PREFRUN_SKIP_TORCH")) {
        printf("ok %d - torch_reference_agrees # SKIP %s\n", ++tl_cases, why);
        return;
    }
    printf("#   %s\n", why);
    tl_cases++;
    tl_failed_cases++;
    printf("not ok %d - torch_reference_agrees\n", tl_cases);
}

/* ---- threads, accumulation, modes, errors ------------------------------- */

/* past the 32768-element threshold of every loop, three vocabulary blocks,
 * four chunks of 32 rows, the last of 4 */
static Tensor *case_head(TensorCtx *ctx)
{
    static int32_t t[100];
    rand_targets(t, 100, 3000, 41);
    t[7] = t[50] = -1;
    Tensor *h = gc_tensor(ctx, 2, (int[]){100, 40}, -1, 1, 42, true);
    Tensor *w = gc_tensor(ctx, 2, (int[]){3000, 40}, -1, 1, 43, true);
    return ag_linear_cross_entropy_rows(ctx, h, w, t, 100, 32);
}

static void test_threads_same_bits(void) { gc_check_threads("linear_cross_entropy", case_head); }

/* Backward adds (+=) into the leaves: a second pass holds twice the first.
 * Not to the bit, unlike gradcheck.h's gc_check_accumulates: the op adds
 * each chunk's dW, and each K block of dh's product, straight into the
 * leaf's gradient, so the second pass rounds (g + c1) + c2 ... where the
 * first rounded c1 + c2 ...: float rounding, 1e-6 of the largest entry
 * (an assignment instead of an add would be off by the whole of g). */
static void test_backward_accumulates(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *out = case_head(ctx), *leaf[2] = {ctx->tape[0], ctx->tape[1]};
    CHECK(out != NULL);
    float *seed = malloc(100 * sizeof *seed), *first[2] = {0};
    for (int i = 0; i < 100; i++)
        seed[i] = (float)(i % 7) - 2.5f;
    CHECK(out && ag_backward(ctx, out, seed) == 0);
    for (int k = 0; out && k < 2; k++) {
        first[k] = malloc((size_t)leaf[k]->size * sizeof(float));
        for (int64_t i = 0; i < leaf[k]->size; i++)
            first[k][i] = 2 * leaf[k]->grad[i];
    }
    CHECK(out && ag_backward(ctx, out, seed) == 0);
    for (int k = 0; out && k < 2; k++) {
        double d = rel_diff(leaf[k]->grad, first[k], leaf[k]->size);
        CHECKF(d <= 1e-6, "leaf %d: two passes differ from twice one by %.3g", k, d);
        free(first[k]);
    }
    free(seed);
    tensor_ctx_free(ctx);
}

/* no_grad: the same values, nothing saved, nothing recorded */
static void test_no_grad_saves_nothing(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *out = case_head(ctx);
    TensorCtx *frozen = tensor_ctx_new(0);
    frozen->no_grad = true;
    Tensor *again = case_head(frozen);
    CHECK(out && again && again->aux == NULL && again->src[0] == NULL);
    CHECK(out && again && memcmp(out->data, again->data, 100 * sizeof(float)) == 0);
    tensor_ctx_free(frozen);
    tensor_ctx_free(ctx);
}

/* A shape-only context computes the shape and allocates nothing; a
 * shape-only tensor handed to a context that computes values is an error. */
static void test_meta_shapes_only(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    ctx->meta = true;
    Tensor *h = tensor_new(ctx, 2, (int[]){6, 8}), *w = tensor_new(ctx, 2, (int[]){50257, 8});
    tensor_requires_grad(h);
    tensor_requires_grad(w);
    static const int32_t t[6] = {0, 1, -1, 50256, 3, 4};
    Tensor *out = ag_linear_cross_entropy(ctx, h, w, t, 6);
    CHECK(out && out->data == NULL && out->aux == NULL && out->ndim == 1 && out->shape[0] == 6);
    CHECK(ctx->used < 4096); /* no (R, V) scratch */
    TensorCtx *real = tensor_ctx_new(0);
    Tensor *rh = tensor_new(real, 2, (int[]){6, 8});
    CHECK(ag_linear_cross_entropy(real, rh, w, t, 6) == NULL);
    CHECKF(strcmp(tensor_ctx_error(real), "linear_cross_entropy: weight is shape-only and has no "
                                          "data") == 0,
           "%s", tensor_ctx_error(real));
    tensor_ctx_free(real);
    tensor_ctx_free(ctx);
}

#define CHECK_ERR(ctx, expr, want)                                                                 \
    do {                                                                                           \
        tensor_ctx_clear_error(ctx);                                                               \
        CHECK((expr) == NULL);                                                                     \
        CHECKF(strcmp(tensor_ctx_error(ctx), want) == 0, "error \"%s\", expected \"%s\"",          \
               tensor_ctx_error(ctx), want);                                                       \
    } while (0)

static void test_errors(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *h = tensor_new(ctx, 2, (int[]){3, 4}), *w = tensor_new(ctx, 2, (int[]){5, 4});
    Tensor *w3 = tensor_new(ctx, 2, (int[]){5, 3}), *h1 = tensor_new(ctx, 1, (int[]){4});
    int32_t t[3] = {0, 4, -1}, bad[3] = {0, 5, -1}, worse[3] = {-2, 0, 0};
    CHECK(ag_linear_cross_entropy(ctx, h, w, t, 3) != NULL);
    CHECK_ERR(ctx, ag_linear_cross_entropy(ctx, h, w3, t, 3),
              "linear_cross_entropy: expected h (S, C) and weight (V, C), got (3, 4), (5, 3)");
    CHECK_ERR(ctx, ag_linear_cross_entropy(ctx, h1, w, t, 1),
              "linear_cross_entropy: expected h (S, C) and weight (V, C), got (4), (5, 4)");
    CHECK_ERR(ctx, ag_linear_cross_entropy(ctx, h, w, t, 2),
              "linear_cross_entropy: 2 targets for h (3, 4), expected 3");
    CHECK_ERR(ctx, ag_linear_cross_entropy(ctx, h, w, NULL, 3),
              "linear_cross_entropy: targets are NULL, 3 expected");
    CHECK_ERR(ctx, ag_linear_cross_entropy(ctx, h, w, bad, 3),
              "linear_cross_entropy: target 5 at position 1 out of range [0, 5) (or -1 to ignore)");
    CHECK_ERR(ctx, ag_linear_cross_entropy(ctx, h, w, worse, 3),
              "linear_cross_entropy: target -2 at position 0 out of range [0, 5) (or -1 to "
              "ignore)");
    tensor_ctx_clear_error(ctx);
    CHECK(ag_linear_cross_entropy(ctx, NULL, w, t, 3) == NULL && tensor_ctx_ok(ctx));
    tensor_ctx_free(ctx);
}

/* S = 0: an empty loss, and a backward that touches nothing */
static void test_empty(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    Tensor *h = gc_tensor(ctx, 2, (int[]){0, 4}, -1, 1, 51, true);
    Tensor *w = gc_tensor(ctx, 2, (int[]){5, 4}, -1, 1, 52, true);
    Tensor *out = ag_linear_cross_entropy(ctx, h, w, NULL, 0);
    CHECK(out && out->size == 0);
    float seed = 0;
    CHECK(out && ag_backward(ctx, out, &seed) == 0);
    for (int i = 0; i < 20; i++)
        CHECK(w->grad[i] == 0.0f);
    tensor_ctx_free(ctx);
}

int main(void)
{
    RUN(test_gradcheck_one_chunk);
    RUN(test_gradcheck_several_chunks);
    RUN(test_gradcheck_vocab_blocks);
    RUN(test_gradcheck_extreme_logits);
    RUN(test_matches_unfused_gpt2_vocab);
    RUN(test_matches_unfused_odd_chunks);
    run_torch_reference();
    RUN(test_threads_same_bits);
    RUN(test_backward_accumulates);
    RUN(test_no_grad_saves_nothing);
    RUN(test_meta_shapes_only);
    RUN(test_errors);
    RUN(test_empty);
    return tl_done();
}
