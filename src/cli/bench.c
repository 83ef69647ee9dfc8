/*
 * cli/bench.c — `prefrun bench`: the full DPO training step (policy forward
 * and backward on chosen + rejected, reference forward, the Lua loss,
 * clipping, AdamW) timed on fixed model sizes, against the OpenBLAS sgemm
 * peak measured in the same process with the same threads.
 *
 * FLOPs per step, as the issue counts them (Kaplan et al. 2020's 6N rule
 * plus attention), with N = 12 L C² + V C:
 *     policy     (6 N + 12 L T C) · 2BT     forward + backward
 *     reference  (2 N +  4 L T C) · 2BT     forward only
 * Tokens per step: 2BT (chosen and rejected rows).
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "train/config.h"
#include "util/fsutil.h"
#include "prefrun_config.h"
#include "core/rng.h"
#include "util/timeutil.h"
#include "train/train.h"

typedef struct BenchModel {
    const char *name;
    int V, T, C, L, H, B;
} BenchModel;

static const BenchModel bench_models[] = {
    {"tiny", 256, 64, 128, 4, 4, 16},
    {"small", 256, 128, 256, 6, 8, 8},
};
#define N_MODELS (int)(sizeof bench_models / sizeof bench_models[0])

static double step_flops(const BenchModel *m)
{
    double L = m->L, T = m->T, C = m->C, tokens = 2.0 * m->B * m->T;
    double N = 12 * L * C * C + (double)m->V * C;
    return (6 * N + 12 * L * T * C) * tokens + (2 * N + 4 * L * T * C) * tokens;
}

/* Large square sgemm operands: the machine's attainable FLOP rate. */
typedef struct Peak {
    int n;
    float *a, *b, *c; // (n, n) each
} Peak;

static int peak_init(Peak *p, int n)
{
    size_t nn = (size_t)n * n;
    *p = (Peak){n, malloc(nn * sizeof(float)), malloc(nn * sizeof(float)),
                malloc(nn * sizeof(float))};
    if (!p->a || !p->b || !p->c)
        return -1;
    for (size_t i = 0; i < nn; i++) {
        p->a[i] = (float)(i % 7) * 0.1f;
        p->b[i] = (float)(i % 5) * 0.1f;
    }
    return 0;
}

static void peak_free(Peak *p)
{
    free(p->a);
    free(p->b);
    free(p->c);
}

/* FLOP/s of one n^3 sgemm. */
static double peak_once(const Peak *p)
{
    double t0 = timeutil_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->n, p->n, p->n, 1.0f, p->a, p->n, p->b,
                p->n, 0.0f, p->c, p->n);
    return 2.0 * p->n * p->n * p->n / (timeutil_now() - t0);
}

/* A (2B, T) block of random tokens; the last 3/4 of each row is response. */
static void make_batch(const BenchModel *m, int32_t *ids, int32_t *targets, float *mask)
{
    Rng r;
    rng_seed(&r, 7);
    int rows = 2 * m->B, prompt = m->T / 4;
    for (int n = 0; n < rows; n++)
        for (int t = 0; t < m->T; t++)
            ids[n * m->T + t] = (int32_t)rng_below(&r, (uint32_t)m->V);
    for (int n = 0; n < rows; n++)
        for (int t = 0; t < m->T; t++) {
            bool resp = t + 1 >= prompt && t + 1 < m->T;
            targets[n * m->T + t] = resp ? ids[n * m->T + t + 1] : -1;
            mask[n * m->T + t] = resp ? 1.0f : 0.0f;
        }
}

static void model_config(const BenchModel *m, Config *cfg)
{
    config_defaults(cfg);
    cfg->vocab = m->V;
    cfg->context = m->T;
    cfg->width = m->C;
    cfg->layers = m->L;
    cfg->heads = m->H;
    cfg->per_device_train_batch_size = m->B;
    cfg->per_device_eval_batch_size = m->B;
    cfg->learning_rate = 1e-4;
}

typedef struct BenchResult {
    double best_s, mean_s; /* step time: the fastest, and the mean */
    double peak;           /* the best sgemm FLOP/s, measured between the steps */
} BenchResult;

/* Two warm-up steps, then `steps` timed steps, each after one timed sgemm.
 * Interleaving makes the ratio robust on a shared machine: both the best
 * step and the best sgemm are taken from the same stretch of time, so a
 * neighbour's load lowers both, not one. */
static int time_steps(TrainBench *b, const BenchModel *m, const Peak *pk, int steps,
                      const int32_t *ids, const int32_t *targets, const float *mask,
                      BenchResult *out, char *err, size_t errlen)
{
    int rc = 0;
    *out = (BenchResult){.best_s = INFINITY};
    for (int i = 0; rc == 0 && i < 2; i++)
        rc = train_bench_step(b, ids, targets, mask, m->B, m->T, err, errlen);
    for (int i = 0; rc == 0 && i < steps; i++) {
        double f = peak_once(pk);
        out->peak = f > out->peak ? f : out->peak;
        double t0 = timeutil_now();
        rc = train_bench_step(b, ids, targets, mask, m->B, m->T, err, errlen);
        double dt = timeutil_now() - t0;
        out->best_s = dt < out->best_s ? dt : out->best_s;
        out->mean_s += dt / steps;
    }
    return rc;
}

static int bench_model(const BenchModel *m, const char *loss, const Peak *pk, int steps,
                       BenchResult *out)
{
    char err[1024] = "out of memory";
    Config cfg;
    model_config(m, &cfg);
    size_t n = 2 * (size_t)m->B * m->T;
    int32_t *ids = malloc(n * sizeof *ids), *targets = malloc(n * sizeof *targets);
    float *mask = malloc(n * sizeof *mask);
    TrainBench *b = ids && targets && mask ? train_bench_new(&cfg, loss, err, sizeof err) : NULL;
    int rc = -1;
    if (b) {
        make_batch(m, ids, targets, mask);
        rc = time_steps(b, m, pk, steps, ids, targets, mask, out, err, sizeof err);
    }
    if (rc != 0)
        fprintf(stderr, "prefrun bench: %s: %s\n", m->name, err);
    train_bench_free(b);
    free(ids);
    free(targets);
    free(mask);
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun bench [--config tiny|small|all] [--threads N] [--steps N]\n\n"
               "Times the full DPO training step (policy forward + backward on chosen and\n"
               "rejected, reference forward, the Lua loss, clipping, AdamW) and prints\n"
               "tokens/s (chosen + rejected tokens), model FLOP/s, and that as a share of\n"
               "the OpenBLAS sgemm peak measured in the same run with the same threads.\n"
               "FLOPs/step = (6N + 12LTC)*2BT + (2N + 4LTC)*2BT, N = 12LC^2 + VC.\n\n"
               "  --config NAME   tiny (V=256 T=64 C=128 L=4 H=4 B=16), small (V=256 T=128\n"
               "                  C=256 L=6 H=8 B=8), or all (default)\n"
               "  --threads N     OpenMP and OpenBLAS threads (default: all cores)\n"
               "  --steps N       timed steps per config after 2 warm-up steps (default 10);\n"
               "                  tokens/s and FLOP/s are of the fastest step, against the\n"
               "                  fastest of the sgemms timed between the steps\n"
               "  --loss FILE     the loss script (default: losses/sigmoid.lua, TRL's DPO)\n\n"
               "example:\n  prefrun bench --config small --threads 2\n");
}

/* --config: NULL for all, else the one it names */
static int pick_models(const char *which, const BenchModel **one)
{
    *one = NULL;
    for (int i = 0; i < N_MODELS; i++)
        if (strcmp(which, bench_models[i].name) == 0)
            *one = &bench_models[i];
    if (!*one && strcmp(which, "all") != 0)
        return cli_usage_error("bench", "--config: expected tiny, small or all, got '%s'", which);
    return 0;
}

/* one table row per model (one: that model only) */
static int run(const char *loss, const BenchModel *one, const Peak *pk, int threads, int steps)
{
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("prefrun bench: %d threads, OPENBLAS_CORETYPE=%s; best of %d steps, each after one "
           "2048^3 sgemm\n",
           threads, coretype ? coretype : "(unset)", steps);
    printf("%-6s %4s %4s %4s %2s %2s %3s %8s %8s %9s %8s %10s %8s\n", "config", "V", "T", "C", "L",
           "H", "B", "best ms", "mean ms", "tokens/s", "GFLOP/s", "sgemm GF/s", "of peak");
    int rc = EXIT_OK;
    for (int i = 0; i < N_MODELS; i++) {
        const BenchModel *m = &bench_models[i];
        BenchResult r;
        if (one && one != m)
            continue;
        if (bench_model(m, loss, pk, steps, &r) != 0) {
            rc = EXIT_FAILED;
            continue;
        }
        double flops = step_flops(m) / r.best_s;
        printf("%-6s %4d %4d %4d %2d %2d %3d %8.1f %8.1f %9.0f %8.1f %10.1f %7.1f%%\n", m->name,
               m->V, m->T, m->C, m->L, m->H, m->B, r.best_s * 1e3, r.mean_s * 1e3,
               2.0 * m->B * m->T / r.best_s, flops / 1e9, r.peak / 1e9, 100 * flops / r.peak);
        fflush(stdout);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS %.1f MiB\n", (double)ru.ru_maxrss / 1024.0);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    const char *which = "all", *loss = PREFRUN_SOURCE_ROOT "/losses/sigmoid.lua";
    int threads = 0, steps = 10;
    const CliOpt opts[] = {
        CLI_STRING("config", 0, &which),
        CLI_INT("threads", 0, &threads, 0, 1 << 10),
        CLI_INT("steps", 0, &steps, 1, 1 << 20),
        CLI_STRING("loss", 0, &loss),
    };
    const CliCommand cmd = {CLI_COMMAND("bench", usage, opts)};
    const BenchModel *one;
    int rc = cli_parse(&cmd, argc, argv);
    if (rc != CLI_CONTINUE || (rc = pick_models(which, &one)) != 0)
        return rc;
    if (!fsutil_exists(loss)) {
        fprintf(stderr, "prefrun bench: loss script %s not found (give --loss FILE)\n", loss);
        return EXIT_INPUT;
    }
    threads = train_set_threads(threads);
    Peak pk;
    if (peak_init(&pk, 2048) != 0) {
        peak_free(&pk);
        fprintf(stderr, "prefrun bench: out of memory\n");
        return EXIT_FAILED;
    }
    peak_once(&pk); /* wakes OpenBLAS's threads */
    rc = run(loss, one, &pk, threads, steps);
    peak_free(&pk);
    return rc;
}
