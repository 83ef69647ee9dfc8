/*
 * lossfix.h — fixtures shared by the Lua loss tests: paths under the source
 * tree, a batch of B pairs with known log-probs, Lua text written to a
 * temporary file, and the closed form of DPO to compare against.
 */
#ifndef PREFRUN_LOSSFIX_H
#define PREFRUN_LOSSFIX_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lua/loss.h"
#include "core/ops.h"
#include "testlib.h"

/* a path under the source tree ($PREFRUN_ROOT, set by meson) */
static inline const char *fx_path(const char *rel)
{
    static char buf[8][1024];
    static int next;
    const char *root = getenv("PREFRUN_ROOT");
    char *p = buf[next++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", root ? root : ".", rel);
    return p;
}

static inline double fx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The batch of the tests: pair i has pc = -10 - i, pr = -12 + 0.5 i,
 * rc = -11, rr = -11.5 + 0.25 i, lengths 10 + i and 20 - i. */
typedef struct FxBatch {
    LossBatch b;
    float v[6][64];
} FxBatch;

static inline double fx_pc(int i) { return -10.0 - i; }
static inline double fx_pr(int i) { return -12.0 + 0.5 * i; }
static inline double fx_rc(int i)
{
    (void)i;
    return -11.0;
}
static inline double fx_rr(int i) { return -11.5 + 0.25 * i; }
static inline double fx_logits(int i) { return (fx_pc(i) - fx_pr(i)) - (fx_rc(i) - fx_rr(i)); }

static inline void fx_batch(FxBatch *fb, TensorCtx *ctx, int B)
{
    int shape[1] = {B};
    for (int i = 0; i < B; i++) {
        fb->v[0][i] = (float)fx_pc(i);
        fb->v[1][i] = (float)fx_pr(i);
        fb->v[2][i] = (float)fx_rc(i);
        fb->v[3][i] = (float)fx_rr(i);
        fb->v[4][i] = (float)(10 + i);
        fb->v[5][i] = (float)(20 - i);
    }
    Tensor *t[6];
    for (int k = 0; k < 6; k++)
        t[k] = tensor_from_data(ctx, 1, shape, fb->v[k]);
    tensor_requires_grad(t[0]);
    tensor_requires_grad(t[1]);
    fb->b = (LossBatch){.B = B,
                        .policy_chosen_logps = t[0],
                        .policy_rejected_logps = t[1],
                        .reference_chosen_logps = t[2],
                        .reference_rejected_logps = t[3],
                        .chosen_lengths = t[4],
                        .rejected_lengths = t[5]};
}

/* DPO: loss = -log sigmoid(beta logits) = log(1 + e^(-beta logits)) */
static inline double fx_dpo(double beta, double logits) { return log1p(exp(-beta * logits)); }

/* Writes text to a fresh temporary .lua file; the caller unlinks it. */
static inline const char *fx_write(const char *text)
{
    static char path[8][64];
    static int next;
    char *p = path[next++ % 8];
    snprintf(p, sizeof path[0], "/tmp/prefrun-test-XXXXXX.lua");
    int fd = mkstemps(p, 4);
    if (fd < 0)
        return NULL;
    size_t n = strlen(text);
    ssize_t w = write(fd, text, n);
    close(fd);
    return w == (ssize_t)n ? p : NULL;
}

/* Loads dpo.lua and checks its values on a fresh batch against the closed
 * form: the host still works after whatever came before. */
static inline void fx_good_loss_works(void)
{
    char err[512];
    LossScript *ls = loss_load(fx_path("tests/data/loss/dpo.lua"), NULL, NULL, err, sizeof err);
    CHECKF(ls != NULL, "the good loss no longer loads: %s", err);
    if (!ls)
        return;
    TensorCtx *ctx = tensor_ctx_new(0);
    FxBatch fb;
    fx_batch(&fb, ctx, 4);
    Tensor *l = loss_eval(ls, ctx, &fb.b, err, sizeof err);
    CHECKF(l != NULL, "the good loss no longer runs: %s", err);
    for (int i = 0; l && i < 4; i++)
        CHECK_NEAR(l->data[i], fx_dpo(0.1, fx_logits(i)), 1e-6); /* float32 of values ~0.7 */
    tensor_ctx_free(ctx);
    loss_free(ls);
}

#endif
