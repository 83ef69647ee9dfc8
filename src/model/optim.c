/*
 * model/optim.c — AdamW, gradient-norm clipping, learning-rate schedules.
 *
 * The update is elementwise, so any split over threads gives the same
 * numbers; the gradient norm is the one reduction, and it sums fixed blocks
 * of OPTIM_BLOCK entries in parallel (each block's sum vectorised the same
 * way whatever the thread count), then the block sums in order.
 */
#include "model/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OPTIM_BLOCK 4096

AdamW *adamw_new(int64_t n, const OptimSegment *segments, int n_segments, const AdamWConfig *cfg,
                 char *err, size_t errlen)
{
    int64_t covered = 0;
    for (int i = 0; i < n_segments; i++) {
        if (segments[i].offset != covered || segments[i].size < 0) {
            snprintf(err, errlen, "adamw: segment %d starts at %lld, expected %lld", i,
                     (long long)segments[i].offset, (long long)covered);
            return NULL;
        }
        covered += segments[i].size;
    }
    if (covered != n || n > INT32_MAX) {
        snprintf(err, errlen, "adamw: segments cover %lld of %lld parameters", (long long)covered,
                 (long long)n);
        return NULL;
    }
    AdamW *o = calloc(1, sizeof *o);
    int shape[1] = {(int)n};
    if (o && (o->ctx = tensor_ctx_new(0)) &&
        (o->segments = malloc((size_t)(n_segments ? n_segments : 1) * sizeof *segments))) {
        o->m = tensor_new(o->ctx, 1, shape);
        o->v = tensor_new(o->ctx, 1, shape);
    }
    if (!o || !o->m || !o->v) {
        snprintf(err, errlen, "adamw: out of memory for %lld parameters", (long long)n);
        adamw_free(o);
        return NULL;
    }
    tensor_set_name(o->m, "exp_avg");
    tensor_set_name(o->v, "exp_avg_sq");
    memcpy(o->segments, segments, (size_t)n_segments * sizeof *segments);
    o->n_segments = n_segments;
    o->n = n;
    o->cfg = *cfg;
    return o;
}

void adamw_free(AdamW *o)
{
    if (!o)
        return;
    if (o->ctx)
        tensor_ctx_free(o->ctx);
    free(o->segments);
    free(o);
}

/* One parameter tensor's update. Blocks of OPTIM_BLOCK over the threads,
 * each an `omp simd` loop: gcc's -O2 cost model would otherwise leave it
 * scalar (sqrtf and the division are most of the step's optimizer time). */
static void adamw_segment(AdamW *o, const OptimSegment *s, float *p, const float *g, double lr)
{
    const float b1 = (float)o->cfg.beta1, b2 = (float)o->cfg.beta2;
    const double bc1 = 1.0 - pow(o->cfg.beta1, (double)o->t);
    const double bc2 = 1.0 - pow(o->cfg.beta2, (double)o->t);
    const float step = (float)(lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
    const float eps = (float)o->cfg.eps;
    const float shrink = s->decay ? (float)(1.0 - lr * o->cfg.weight_decay) : 1.0f;
    float *m = o->m->data, *v = o->v->data;
    const int64_t n_blocks = (s->size + OPTIM_BLOCK - 1) / OPTIM_BLOCK;
#pragma omp parallel for schedule(static) if (n_blocks > 1)
    for (int64_t b = 0; b < n_blocks; b++) {
        int64_t lo = s->offset + b * OPTIM_BLOCK, end = s->offset + s->size;
        int64_t hi = end - lo < OPTIM_BLOCK ? end : lo + OPTIM_BLOCK;
#pragma omp simd
        for (int64_t i = lo; i < hi; i++) {
            float gi = g[i];
            m[i] = b1 * m[i] + (1.0f - b1) * gi;
            v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
            float denom = sqrtf(v[i]) * inv_sqrt_bc2 + eps;
            p[i] = p[i] * shrink - step * m[i] / denom;
        }
    }
}

void adamw_step(AdamW *o, float *params, const float *grads, double lr)
{
    o->t++;
    for (int i = 0; i < o->n_segments; i++)
        adamw_segment(o, &o->segments[i], params, grads, lr);
}

double optim_grad_norm(const float *g, int64_t n)
{
    int64_t n_blocks = (n + OPTIM_BLOCK - 1) / OPTIM_BLOCK;
    double *part = malloc((size_t)(n_blocks ? n_blocks : 1) * sizeof *part);
    double total = 0;
    if (!part) { /* still correct, only serial */
        for (int64_t i = 0; i < n; i++)
            total += (double)g[i] * g[i];
        return sqrt(total);
    }
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < n_blocks; b++) {
        int64_t lo = b * OPTIM_BLOCK, hi = lo + OPTIM_BLOCK < n ? lo + OPTIM_BLOCK : n;
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t i = lo; i < hi; i++)
            s += (double)g[i] * g[i];
        part[b] = s;
    }
    for (int64_t b = 0; b < n_blocks; b++)
        total += part[b];
    free(part);
    return sqrt(total);
}

double optim_clip_grad_norm(float *g, int64_t n, double max_norm)
{
    double norm = optim_grad_norm(g, n);
    if (max_norm > 0 && isfinite(norm) && norm > max_norm) {
        float scale = (float)(max_norm / (norm + 1e-6));
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < n; i++)
            g[i] *= scale;
    }
    return norm;
}

double lr_at(const LrSchedule *s, int64_t step)
{
    if (step < s->warmup_steps)
        return s->peak * (double)step / (double)(s->warmup_steps > 1 ? s->warmup_steps : 1);
    int64_t span = s->total_steps - s->warmup_steps;
    double progress = (double)(step - s->warmup_steps) / (double)(span > 1 ? span : 1);
    double f = 1.0;
    switch (s->kind) {
    case LR_CONSTANT:
        break;
    case LR_LINEAR:
        f = (double)(s->total_steps - step) / (double)(span > 1 ? span : 1);
        break;
    case LR_COSINE:
        f = 0.5 * (1.0 + cos(M_PI * progress));
        break;
    }
    return s->peak * (f > 0 ? f : 0);
}

static const char *const schedule_names[] = {"constant", "linear", "cosine"};

int lr_schedule_parse(const char *name, LrScheduleKind *kind)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(name, schedule_names[i]) == 0) {
            *kind = (LrScheduleKind)i;
            return 0;
        }
    return -1;
}

const char *lr_schedule_name(LrScheduleKind kind)
{
    return kind >= LR_CONSTANT && kind <= LR_COSINE ? schedule_names[kind] : "?";
}
