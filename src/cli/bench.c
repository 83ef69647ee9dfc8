/*
 * cli/bench.c — `prefrun bench`: the full DPO training step (policy forward
 * and backward on chosen + rejected, reference forward, the Lua loss,
 * clipping, AdamW) timed on fixed model sizes, against the OpenBLAS sgemm
 * peak measured in the same process with the same threads; with each
 * config's peak RSS against what the step should hold, and PyTorch's speed
 * on the same step (bench/torch_dpo.py) measured right after it.
 *
 * Configs: tiny and small (the issue's), and gpt2-124m, GPT-2 small's shape
 * (V 50257, C 768, L 12, H 12) at T 256 and per-device batch 4 — a CPU run
 * of TRL's DPOTrainer uses a small per_device_train_batch_size (TRL's
 * example scripts give 2 to 8; the Trainer default 8 makes a step of
 * minutes here), so 4: 2048 tokens a step. --model DIR benches a Hugging
 * Face folder's shape at the same T and B (--batch sets another B), its
 * weights loaded as `train` loads them (Config.model).
 *
 * FLOPs per step, as the issue counts them: Kaplan et al. 2020's 6N rule
 * (their Table 1: 2N a token forward, twice that backward) plus attention
 * as PaLM's appendix B counts it (Chowdhery et al. 2022: 6N + 12 L H Q T a
 * token, forward + backward, H Q the attention width), with N the weights
 * of the matmuls a token goes through and D = NH HD the attention width:
 *     N = L (C (NH + 2 NKV) HD + D C + m C F) + V C
 *         (q, k, v rows; the output projection; m MLP matrices of C x F:
 *         m = 2 for GPT-2's fc and proj, 3 for SwiGLU's gate, up, down;
 *         then the head, a V x C matmul tied or not; embeddings are a
 *         lookup, norms and biases are left out)
 *     policy     (6 N + 12 L T D) · 2BT     forward + backward
 *     reference  (2 N +  4 L T D) · 2BT     forward only
 * GPT-2 (NKV = NH, D = C, F = 4C) gives N = 12 L C² + V C. Grouped-query
 * attention shrinks k and v only: every query head still scores all T
 * positions, so the attention term has NH, not NKV. Tokens per step: 2BT
 * (chosen and rejected rows). Each row's N and FLOPs are printed exactly
 * (the "flops" line), so that a test can hold them to a closed form.
 *
 * Memory expected, in float32 words, with P the policy's parameters, X =
 * 2B T C (one activation of the 2B rows), A = 2B NH T² (one layer's
 * attention probabilities) and W a layer's matmul weights (N's per-layer
 * term; 12 C² for GPT-2):
 *     state       5 P: weights, gradient, AdamW's two moments, the frozen
 *                 reference's weights
 *     policy      L (2 s X + A + p W) + 8 X: per layer s X of saved outputs
 *                 and as much again of their gradients; the weight
 *                 gradients' partial sums, p parts of W (ops_nn.c's
 *                 weight_grads splits the 2BT rows into p = 1..8 parts of
 *                 at least 512, and each part's sum stays in the step's
 *                 arena); then embeddings, final norm and the selected
 *                 rows of the head. GPT-2: s = 16 (qkv 3, MLP
 *                 pre-activation and output 4 + 4, 5 others). Llama
 *                 (model.c's llama_block, an estimate: s counts each op's
 *                 output once): s = 4 + (2 Q + D + 3 F) / C, Q = (NH +
 *                 2 NKV) HD (qkv before and after RoPE, attention, two
 *                 norms, two residuals, gate|up 2F and SwiGLU F)
 *     reference   2 r X: its no_grad forward streams through two block
 *                 arenas of r X each; GPT-2 r = 12, Llama r = s (an
 *                 estimate: the reference arena's peak is printed beside)
 *     head        3 min(S V, 4 Mi): the fused head's logits scratch (16 MiB
 *                 at most; forward, backward, reference), S the response
 *                 tokens (the unfused head holds 2 S V instead)
 * The peak RSS (getrusage's ru_maxrss, the process's high-water mark) adds
 * the program itself, OpenBLAS's buffers and the 48 MiB of the sgemm
 * operands; configs run smallest first, so each row's figure is its own.
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
#include "model/hf_config.h"
#include "model/hf_model.h"
#include "model/lora.h"
#include "train/config.h"
#include "util/fsutil.h"
#include "prefrun_config.h"
#include "core/rng.h"
#include "util/timeutil.h"
#include "train/train.h"

#define BENCH_NAME_LEN 32
#define BENCH_PYTHON "/usr/bin/python3" /* Debian's, with python3-torch */
#define BENCH_TORCH_SCRIPT PREFRUN_SOURCE_ROOT "/bench/torch_dpo.py"
#define MIB (1024.0 * 1024.0)

typedef struct BenchModel {
    char name[BENCH_NAME_LEN];
    int V, T, C, L, H, B;
    bool in_all; /* run by --config all */
    /* the architecture, from a folder's config (0 for the named GPT-2
     * shapes: bench_shape fills NKV = H, HD = C / H, F = 4C) */
    GptArch arch;
    int KV, HD, F;                 /* NKV, HD, the MLP's width */
    bool untied, qkv_bias, o_bias; /* Llama: torch_dpo.py's --llama */
    double theta;                  /* Llama: rope_theta */
} BenchModel;

/* designated: the architecture fields stay 0 (GPT-2, bench_shape's defaults) */
#define GPT2_SHAPE(n, v, t, c, l, h, b, all)                                                       \
    {                                                                                              \
        .name = n, .V = v, .T = t, .C = c, .L = l, .H = h, .B = b, .in_all = all                   \
    }
static const BenchModel bench_models[] = {
    GPT2_SHAPE("tiny", 256, 64, 128, 4, 4, 16, true),
    GPT2_SHAPE("small", 256, 128, 256, 6, 8, 8, true),
    GPT2_SHAPE("gpt2-124m", 50257, 256, 768, 12, 12, 4, false), /* minutes: only by name */
};
#define N_MODELS (int)(sizeof bench_models / sizeof bench_models[0])
#define BENCH_HF_T 256 /* --model: gpt2-124m's T and B */
#define BENCH_HF_B 4

/* m with the GPT-2 defaults of a named shape filled in */
static BenchModel bench_shape(const BenchModel *m)
{
    BenchModel s = *m;
    s.KV = s.KV ? s.KV : s.H;
    s.HD = s.HD ? s.HD : s.C / s.H;
    s.F = s.F ? s.F : 4 * s.C;
    return s;
}

/* one layer's matmul weights: q, k, v; the output projection; the MLP */
static double layer_weights(const BenchModel *m)
{
    double C = m->C, q = (double)(m->H + 2 * m->KV) * m->HD, d = (double)m->H * m->HD;
    double mlp = (m->arch == GPT_ARCH_LLAMA ? 3.0 : 2.0) * C * m->F;
    return C * q + d * C + mlp;
}

/* N of the header: the matmul weights a token goes through */
static double matmul_weights(const BenchModel *m)
{
    return m->L * layer_weights(m) + (double)m->V * m->C;
}

static double step_flops(const BenchModel *m)
{
    double N = matmul_weights(m), tokens = 2.0 * m->B * m->T;
    double att = (double)m->L * m->T * ((double)m->H * m->HD); /* L T D */
    return (6 * N + 12 * att) * tokens + (2 * N + 4 * att) * tokens;
}

/* ---- the sgemm peak ----------------------------------------------------- */

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

/* ---- configs ------------------------------------------------------------ */

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

/* --model DIR: its shape from config.json (config_finalize, as train
 * reads it) at BENCH_HF_T positions (fewer if the model has fewer) and
 * batch B (--batch; default BENCH_HF_B). EXIT_OK, or EXIT_INPUT with the
 * reason printed. */
static int hf_model_config(const char *dir, int B, BenchModel *m, Config *cfg)
{
    char err[1024], path[CONFIG_PATH_LEN + 16];
    if (strlen(dir) >= sizeof cfg->model) {
        fprintf(stderr, "prefrun bench: --model: path longer than %zu bytes\n",
                sizeof cfg->model - 1);
        return EXIT_INPUT;
    }
    HfConfig hc;
    GptConfig g;
    snprintf(path, sizeof path, "%s/%s", dir, HF_CONFIG_FILE);
    int rc = hf_config_load(path, &hc, err, sizeof err);
    if (rc == 0) /* the architecture's sizes, as the importer reads them */
        rc = hc.arch == HF_ARCH_GPT2 ? hf_gpt2_config(&hc, path, &g, err, sizeof err)
                                     : hf_llama_config(&hc, path, &g, err, sizeof err);
    if (rc == 0) {
        config_defaults(cfg);
        snprintf(cfg->model, sizeof cfg->model, "%s", dir);
        /* max_length sets the context (config_finalize), within the model's positions */
        cfg->max_length = hc.context < BENCH_HF_T ? hc.context : BENCH_HF_T;
        cfg->per_device_train_batch_size = B;
        cfg->per_device_eval_batch_size = B;
        rc = config_finalize(cfg, err, sizeof err);
    }
    if (rc != 0) {
        fprintf(stderr, "prefrun bench: --model: %s\n", err);
        return EXIT_INPUT;
    }
    const char *base = strrchr(dir, '/') && strrchr(dir, '/')[1] ? strrchr(dir, '/') + 1 : dir;
    *m = (BenchModel){.V = cfg->vocab,
                      .T = cfg->context,
                      .C = cfg->width,
                      .L = cfg->layers,
                      .H = cfg->heads,
                      .B = B,
                      .arch = g.arch,
                      .KV = gpt_kv_heads(&g),
                      .HD = gpt_head_dim(&g),
                      .F = gpt_inner(&g),
                      .untied = g.untied_head,
                      .qkv_bias = g.qkv_bias,
                      .o_bias = g.o_bias,
                      .theta = g.rope.theta};
    snprintf(m->name, sizeof m->name, "%s", base);
    return EXIT_OK;
}

/* ---- timing ------------------------------------------------------------- */

typedef struct BenchResult {
    double best_s, mean_s; /* step time: the fastest, and the mean */
    double peak;           /* the best sgemm FLOP/s, measured between the steps */
    TrainBenchMemory mem;
    double rss; /* bytes: ru_maxrss after the config's steps */
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

static int bench_model(const BenchModel *m, const Config *cfg, const char *loss, const Peak *pk,
                       int steps, BenchResult *out)
{
    char err[1024] = "out of memory";
    size_t n = 2 * (size_t)m->B * m->T;
    int32_t *ids = malloc(n * sizeof *ids), *targets = malloc(n * sizeof *targets);
    float *mask = malloc(n * sizeof *mask);
    TrainBench *b = ids && targets && mask ? train_bench_new(cfg, loss, err, sizeof err) : NULL;
    int rc = -1;
    if (b) {
        make_batch(m, ids, targets, mask);
        rc = time_steps(b, m, pk, steps, ids, targets, mask, out, err, sizeof err);
        out->mem = train_bench_memory(b);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        out->rss = (double)ru.ru_maxrss * 1024.0; /* Linux: KiB */
    }
    if (rc != 0)
        fprintf(stderr, "prefrun bench: %s: %s\n", m->name, err);
    train_bench_free(b);
    free(ids);
    free(targets);
    free(mask);
    return rc;
}

/* ---- memory ------------------------------------------------------------- */

typedef struct BenchMemory {
    double state, activations; /* bytes, as the header counts them */
} BenchMemory;

/* the parts ops_nn.c's weight_grads sums R rows in (WGRAD_ROWS 512,
 * WGRAD_MAX_PARTS 8 there) */
static int wgrad_parts(double R)
{
    int parts = 1;
    while (parts < 8 && R >= 2.0 * parts * 512)
        parts *= 2;
    return parts;
}

static BenchMemory expected_memory(const BenchModel *m, int64_t params)
{
    double X = 2.0 * m->B * m->T * m->C, A = 2.0 * m->B * m->H * (double)m->T * m->T;
    double S = 2.0 * m->B * (m->T - m->T / 4), head = S * m->V;
    double wparts = wgrad_parts(2.0 * m->B * m->T) * layer_weights(m);
    double s = 16, r = 12; /* GPT-2's saved and streamed outputs, in X */
    if (m->arch == GPT_ARCH_LLAMA) {
        double Q = (double)(m->H + 2 * m->KV) * m->HD, D = (double)m->H * m->HD;
        s = r = 4 + (2 * Q + D + 3.0 * m->F) / m->C;
    }
    head = head < 4.0 * MIB ? head : 4.0 * MIB; /* floats: 16 MiB */
    double act = m->L * (2 * s * X + A + wparts) + 8 * X + 2 * r * X + 3 * head;
    return (BenchMemory){5.0 * 4 * (double)params, 4 * act};
}

static void print_memory(const BenchModel *m, const BenchResult *r)
{
    BenchMemory e = expected_memory(m, r->mem.params);
    double want = e.state + e.activations;
    printf("  memory %s: peak RSS %.1f MiB, expected %.1f MiB (state %.1f + activations %.1f; "
           "arenas: step %.1f, reference %.1f): RSS/expected %.2f\n",
           m->name, r->rss / MIB, want / MIB, e.state / MIB, e.activations / MIB,
           (double)r->mem.step_arena_peak / MIB, (double)r->mem.ref_arena_peak / MIB,
           r->rss / want);
}

/* ---- PyTorch, side by side ---------------------------------------------- */

typedef struct TorchResult {
    double tokens_s, best_ms, rss_mib;
} TorchResult;

/* bench/torch_dpo.py on m's shape with the same threads and steps: 0 with
 * its figures, or -1 with why not in `why` (no torch, no script, failed). */
static int run_torch(const BenchModel *m, int threads, int steps, TorchResult *out, char *why,
                     size_t whylen)
{
    const char *no = NULL;
    if (!fsutil_exists(BENCH_PYTHON) || !fsutil_exists(BENCH_TORCH_SCRIPT) ||
        strchr(BENCH_TORCH_SCRIPT, '\''))
        no = BENCH_PYTHON " or " BENCH_TORCH_SCRIPT " missing (or the path holds a quote)";
    else if (system(BENCH_PYTHON " -c 'import torch' 2>/dev/null") != 0)
        no = BENCH_PYTHON " cannot import torch (apt-get install python3-torch)";
    if (no) {
        snprintf(why, whylen, "%s", no);
        return -1;
    }
    char cmd[1024], llama[160] = "", line[512];
    if (m->arch == GPT_ARCH_LLAMA) /* the Llama shape: kv heads, head_dim, F, switches, theta */
        snprintf(llama, sizeof llama, " --llama %d,%d,%d,%d,%d,%d,%.17g", m->KV, m->HD, m->F,
                 !m->untied, m->qkv_bias, m->o_bias, m->theta);
    snprintf(cmd, sizeof cmd,
             BENCH_PYTHON " '" BENCH_TORCH_SCRIPT "' --shape %d,%d,%d,%d,%d,%d%s --name bench "
                          "--threads %d --steps %d 2>&1",
             m->V, m->T, m->C, m->L, m->H, m->B, llama, threads, steps);
    fflush(stdout);
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(why, whylen, "cannot start %s", BENCH_PYTHON);
        return -1;
    }
    bool found = false;
    snprintf(why, whylen, "torch_dpo.py printed no result");
    while (fgets(line, sizeof line, p)) {
        int th;
        if (sscanf(line, "torch bench threads %d %lf ms %lf tokens/s peak RSS %lf MiB", &th,
                   &out->best_ms, &out->tokens_s, &out->rss_mib) == 4)
            found = true;
        else if (!found) /* its last words before a failure */
            snprintf(why, whylen, "torch_dpo.py: %.*s", (int)strcspn(line, "\n"), line);
    }
    int status = pclose(p);
    if (found && status != 0)
        snprintf(why, whylen, "torch_dpo.py exited with status %d", status);
    return found && status == 0 ? 0 : -1;
}

static void print_torch(const BenchModel *m, const BenchResult *r, int threads, int steps)
{
    TorchResult t;
    char why[600];
    if (run_torch(m, threads, steps, &t, why, sizeof why) != 0) {
        printf("  torch %s: not measured: %s\n", m->name, why);
        return;
    }
    double tok = 2.0 * m->B * m->T / r->best_s;
    printf("  torch %s: %d threads, best %.1f ms, %.0f tokens/s, peak RSS %.1f MiB: prefrun/torch "
           "%.2f\n",
           m->name, threads, t.best_ms, t.tokens_s, t.rss_mib, tok / t.tokens_s);
}

/* ---- the command -------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun bench [--config tiny|small|gpt2-124m|all | --model DIR]\n"
               "                     [--batch B] [--threads N] [--steps N] [--loss FILE]\n"
               "                     [--no-torch] [--lora R]\n\n"
               "Times the full DPO training step (policy forward + backward on chosen and\n"
               "rejected, reference forward, the Lua loss, clipping, AdamW) and prints\n"
               "tokens/s (chosen + rejected tokens), model FLOP/s, and that as a share of\n"
               "the OpenBLAS sgemm peak measured in the same run with the same threads.\n"
               "FLOPs/step = (6N + 12LTD)*2BT + (2N + 4LTD)*2BT, D = NH*HD the attention\n"
               "width, N the matmul weights: 12LC^2 + VC for GPT-2, L(C(NH + 2NKV)HD +\n"
               "DC + 3CF) + VC for the Llama family (printed per config).\n"
               "Then, per config: the peak RSS against the memory the step should hold\n"
               "(weights, gradient, AdamW moments and the reference: 20 bytes a parameter,\n"
               "plus activations from the shape), and PyTorch's tokens/s on the same step\n"
               "(bench/torch_dpo.py with /usr/bin/python3's torch, same threads and steps)\n"
               "with prefrun's over it.\n\n"
               "  --config NAME   tiny (V=256 T=64 C=128 L=4 H=4 B=16), small (V=256 T=128\n"
               "                  C=256 L=6 H=8 B=8), gpt2-124m (V=50257 T=256 C=768 L=12\n"
               "                  H=12 B=4: GPT-2 small, minutes a run), or all (default:\n"
               "                  tiny and small)\n"
               "  --model DIR     a Hugging Face model folder instead: its shape and weights,\n"
               "                  T=256 (or its positions, if fewer), B=4\n"
               "  --batch B       with --model: B pairs a step instead of 4 (a 0.5B model\n"
               "                  at B=1 holds about 13 GB)\n"
               "  --threads N     OpenMP and OpenBLAS threads (default: all cores)\n"
               "  --steps N       timed steps per config after 2 warm-up steps (default 10);\n"
               "                  tokens/s and FLOP/s are of the fastest step, against the\n"
               "                  fastest of the sgemms timed between the steps\n"
               "  --loss FILE     the loss script (default: losses/sigmoid.lua, TRL's DPO)\n"
               "  --no-torch      skip the PyTorch comparison\n"
               "  --lora R        also time LoRA training (use_peft, rank R on every linear,\n"
               "                  TRL's alpha 32 and dropout 0.05), before each config's full\n"
               "                  fine-tuning, and print its step time and peak RSS against\n"
               "                  the full run's\n\n"
               "examples:\n  prefrun bench --config small --threads 2\n"
               "  prefrun bench --config gpt2-124m --threads 2 --lora 16 --no-torch\n");
}

/* --config: NULL for all, else the one it names */
static int pick_models(const char *which, const BenchModel **one)
{
    *one = NULL;
    for (int i = 0; i < N_MODELS; i++)
        if (strcmp(which, bench_models[i].name) == 0)
            *one = &bench_models[i];
    if (!*one && strcmp(which, "all") != 0)
        return cli_usage_error("bench",
                               "--config: expected tiny, small, gpt2-124m or all, got '%s'", which);
    return 0;
}

typedef struct BenchRun {
    const char *loss;
    const Peak *pk;
    int threads, steps;
    bool torch;
    int lora_r; /* > 0: a LoRA run of each config first (use_peft, all-linear) */
} BenchRun;

/* The LoRA run of cfg: TRL's LoRA defaults at rank r on every linear */
static int bench_lora(const BenchRun *br, const BenchModel *m, const Config *cfg, BenchResult *out)
{
    Config lc = *cfg;
    lc.use_peft = true;
    lc.lora_r = br->lora_r;
    snprintf(lc.target_modules, sizeof lc.target_modules, "all-linear");
    return bench_model(m, &lc, br->loss, br->pk, br->steps, out);
}

/* LoRA against full fine-tuning, both measured in this run: the LoRA state
 * is the frozen weights (4 bytes a parameter, no reference copy) and the
 * adapters' weights, gradients and moments (16 bytes each) */
static void print_lora(const BenchModel *m, const BenchRun *br, const BenchResult *lo,
                       const BenchResult *full)
{
    BenchMemory e = expected_memory(m, full->mem.params);
    double state = 4.0 * (double)full->mem.params + 16.0 * (double)lo->mem.params;
    printf("  lora %s: r %d on all-linear, %lld adapter parameters (%.2f%% of %lld): best %.1f ms "
           "vs full %.1f ms (%.2fx), peak RSS %.1f MiB vs full %.1f MiB (%.2f), expected %.1f "
           "MiB (state %.1f + activations %.1f)\n",
           m->name, br->lora_r, (long long)lo->mem.params,
           100.0 * (double)lo->mem.params / (double)full->mem.params, (long long)full->mem.params,
           lo->best_s * 1e3, full->best_s * 1e3, full->best_s / lo->best_s, lo->rss / MIB,
           full->rss / MIB, lo->rss / full->rss, (state + e.activations) / MIB, state / MIB,
           e.activations / MIB);
}

/* one table row for m, then its memory and torch lines; EXIT_OK or EXIT_FAILED */
static int run_one(const BenchRun *br, const BenchModel *shape, const Config *cfg)
{
    BenchModel full = bench_shape(shape);
    const BenchModel *m = &full;
    BenchResult r, lo;
    /* LoRA first: ru_maxrss only grows, so its peak is its own, and the
     * full run's (larger) peak is read after it */
    if (br->lora_r > 0 && bench_lora(br, m, cfg, &lo) != 0)
        return EXIT_FAILED;
    if (bench_model(m, cfg, br->loss, br->pk, br->steps, &r) != 0)
        return EXIT_FAILED;
    double flops = step_flops(m) / r.best_s;
    printf("%-9s %5d %4d %4d %2d %2d %3d %9.1f %9.1f %9.0f %8.1f %10.1f %7.1f%%\n", m->name, m->V,
           m->T, m->C, m->L, m->H, m->B, r.best_s * 1e3, r.mean_s * 1e3,
           2.0 * m->B * m->T / r.best_s, flops / 1e9, r.peak / 1e9, 100 * flops / r.peak);
    printf("  flops %s: N %.0f matmul weights, %.0f FLOPs/step (%s)\n", m->name, matmul_weights(m),
           step_flops(m), m->arch == GPT_ARCH_LLAMA ? "llama" : "gpt2");
    print_memory(m, &r);
    if (br->lora_r > 0)
        print_lora(m, br, &lo, &r);
    if (br->torch)
        print_torch(m, &r, br->threads, br->steps);
    fflush(stdout);
    return EXIT_OK;
}

/* the table: one model (hf: --model's; one: --config's) or all of `all` */
static int run(const BenchRun *br, const BenchModel *one, const BenchModel *hf,
               const Config *hf_cfg)
{
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("prefrun bench: %d threads, OPENBLAS_CORETYPE=%s; best of %d steps, each after one "
           "2048^3 sgemm\n",
           br->threads, coretype ? coretype : "(unset)", br->steps);
    printf("%-9s %5s %4s %4s %2s %2s %3s %9s %9s %9s %8s %10s %8s\n", "config", "V", "T", "C", "L",
           "H", "B", "best ms", "mean ms", "tokens/s", "GFLOP/s", "sgemm GF/s", "of peak");
    fflush(stdout);
    if (hf)
        return run_one(br, hf, hf_cfg);
    int rc = EXIT_OK;
    for (int i = 0; i < N_MODELS; i++) {
        const BenchModel *m = &bench_models[i];
        if ((one && one != m) || (!one && !m->in_all))
            continue;
        Config cfg;
        model_config(m, &cfg);
        if (run_one(br, m, &cfg) != EXIT_OK)
            rc = EXIT_FAILED;
    }
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    const char *which = NULL, *loss = PREFRUN_SOURCE_ROOT "/losses/sigmoid.lua", *model = NULL;
    int threads = 0, steps = 10, batch = 0, lora_r = 0;
    bool no_torch = false;
    const CliOpt opts[] = {
        CLI_STRING("config", 0, &which),
        CLI_STRING("model", 0, &model),
        CLI_INT("threads", 0, &threads, 0, 1 << 10),
        CLI_INT("steps", 0, &steps, 1, 1 << 20),
        CLI_INT("batch", 0, &batch, 1, 1 << 16),
        CLI_STRING("loss", 0, &loss),
        CLI_FLAG("no-torch", 0, &no_torch),
        CLI_INT("lora", 0, &lora_r, 1, LORA_MAX_R),
    };
    const CliCommand cmd = {CLI_COMMAND("bench", usage, opts)};
    const BenchModel *one = NULL;
    int rc = cli_parse(&cmd, argc, argv);
    if (rc == CLI_CONTINUE && which && model)
        rc = cli_usage_error("bench", "--config and --model both name what to bench: give one");
    if (rc == CLI_CONTINUE && batch && !model)
        rc = cli_usage_error("bench", "--batch goes with --model (the named configs have theirs)");
    if (rc != CLI_CONTINUE || (rc = pick_models(which ? which : "all", &one)) != 0)
        return rc;
    if (!fsutil_exists(loss)) {
        fprintf(stderr, "prefrun bench: loss script %s not found (give --loss FILE)\n", loss);
        return EXIT_INPUT;
    }
    BenchModel hf;
    Config hf_cfg;
    if (model && (rc = hf_model_config(model, batch ? batch : BENCH_HF_B, &hf, &hf_cfg)) != EXIT_OK)
        return rc;
    threads = train_set_threads(threads);
    Peak pk;
    if (peak_init(&pk, 2048) != 0) {
        peak_free(&pk);
        fprintf(stderr, "prefrun bench: out of memory\n");
        return EXIT_FAILED;
    }
    peak_once(&pk); /* wakes OpenBLAS's threads */
    BenchRun br = {loss, &pk, threads, steps, !no_torch, lora_r};
    rc = run(&br, one, model ? &hf : NULL, &hf_cfg);
    peak_free(&pk);
    return rc;
}
