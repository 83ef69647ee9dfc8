/*
 * test_bench.c — `prefrun bench` as a user runs it: that it runs and prints
 * every figure (the table row, the memory line, the PyTorch line), on
 * tiny with one step, and on a Hugging Face folder with --model (GPT-2,
 * and a Llama-family one, whose FLOPs per step must equal the closed form
 * worked out by hand below from its architecture); and its usage errors.
 * Never a timing: what the numbers are is the benchmark's business, not a
 * test's (the gpt2-124m shape takes minutes and is left out). The
 * executable is $PREFRUN_EXE (set by meson).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "model/hf_model.h"
#include "model/model.h"
#include "util/fsutil.h"
#include "testlib.h"

/* runs `prefrun ARGS 2>&1`; its exit status, and its output in *out (malloc'ed) */
static int run(const char *args, char **out)
{
    const char *exe = getenv("PREFRUN_EXE");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s 2>&1", exe ? exe : "./prefrun", args);
    FILE *p = popen(cmd, "r");
    size_t n = 0, cap = 1 << 16, r;
    char *buf = malloc(cap);
    while (p && buf && (r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    if (buf)
        buf[n] = '\0';
    int status = p ? pclose(p) : -1;
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* the line of out that starts with prefix, NUL-terminated in a static buffer */
static const char *line_of(const char *out, const char *prefix)
{
    static char line[1024];
    for (const char *p = out; p && *p;) {
        size_t len = strcspn(p, "\n");
        if (strncmp(p, prefix, strlen(prefix)) == 0) {
            snprintf(line, sizeof line, "%.*s", (int)len, p);
            return line;
        }
        p += len + (p[len] == '\n');
    }
    return NULL;
}

/* A table row: name, V T C L H B, then six positive figures (best and
 * mean ms, tokens/s, GFLOP/s, sgemm GF/s, share of peak). */
static void check_row(const char *out, const char *name, int V, int T)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "%s ", name);
    const char *row = line_of(out, prefix);
    CHECKF(row != NULL, "no '%s' row in:\n%s", name, out);
    if (!row)
        return;
    char got[64];
    int v, t, c, l, h, b;
    double f[6];
    int n = sscanf(row, "%63s %d %d %d %d %d %d %lf %lf %lf %lf %lf %lf%%", got, &v, &t, &c, &l, &h,
                   &b, &f[0], &f[1], &f[2], &f[3], &f[4], &f[5]);
    CHECKF(n == 13 && v == V && t == T, "row: %s", row);
    for (int i = 0; n == 13 && i < 6; i++)
        CHECKF(f[i] > 0, "row figure %d is %g: %s", i, f[i], row);
}

/* "  memory NAME: peak RSS X MiB, expected Y MiB (...): RSS/expected R" */
static void check_memory(const char *out, const char *name)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "  memory %s: peak RSS ", name);
    const char *line = line_of(out, prefix);
    CHECKF(line != NULL, "no memory line for %s in:\n%s", name, out);
    if (!line)
        return;
    double rss, want, ratio;
    const char *e = strstr(line, "expected "), *r = strstr(line, "RSS/expected ");
    CHECKF(e && r && sscanf(line + strlen(prefix), "%lf", &rss) == 1 &&
               sscanf(e + 9, "%lf", &want) == 1 && sscanf(r + 13, "%lf", &ratio) == 1 && rss > 0 &&
               want > 0 && ratio > 0,
           "memory line: %s", line);
}

static bool torch_available(void)
{
    return system("/usr/bin/python3 -c 'import torch' 2>/dev/null") == 0;
}

/* tiny, one step: the row, the memory line, and the torch line with its
 * ratio (CI has torch; without it the line says why it is missing) */
static void bench_tiny_prints_every_field(void)
{
    char *out;
    CHECK(run("bench --config tiny --steps 1 --threads 2", &out) == 0);
    CHECKF(strstr(out, "prefrun bench: 2 threads") != NULL, "%s", out);
    check_row(out, "tiny", 256, 64);
    check_memory(out, "tiny");
    const char *t = line_of(out, "  torch tiny: ");
    CHECKF(t != NULL, "no torch line in:\n%s", out);
    if (t && torch_available()) {
        const char *r = strstr(t, "prefrun/torch ");
        double ratio = 0;
        CHECKF(r && sscanf(r + 14, "%lf", &ratio) == 1 && ratio > 0 && strstr(t, "2 threads"),
               "torch line: %s", t);
    } else if (t) {
        CHECKF(strstr(t, "not measured: ") != NULL, "torch line: %s", t);
    }
    CHECK(line_of(out, "small ") == NULL); /* one config asked for, one run */
    free(out);
}

/* "  flops NAME: N <n> matmul weights, <f> FLOPs/step (ARCH)" */
static bool flops_line(const char *out, const char *name, double *n, double *f, char *arch)
{
    char prefix[64];
    snprintf(prefix, sizeof prefix, "  flops %s: N ", name);
    const char *line = line_of(out, prefix);
    return line && sscanf(line + strlen(prefix), "%lf matmul weights, %lf FLOPs/step (%15[a-z0-9])",
                          n, f, arch) == 3;
}

/* --model: a tiny GPT-2 folder written by hf_model_save; its 32 positions
 * are fewer than bench's 256, so T = 32. --no-torch: no torch line. */
static void bench_model_folder(void)
{
    char dir[64] = "/tmp/prefrun_benchXXXXXX", err[512], args[256];
    CHECK(mkdtemp(dir) != NULL);
    GptConfig g = {.vocab = 300, .context = 32, .width = 32, .layers = 2, .heads = 2};
    Gpt *m = gpt_new(&g, false, err, sizeof err);
    CHECKF(m != NULL, "%s", err);
    if (m) {
        gpt_init(m, 3);
        CHECKF(hf_model_save(m, dir, ST_F32, err, sizeof err) == 0, "%s", err);
    }
    gpt_free(m);
    snprintf(args, sizeof args, "bench --model %s --steps 1 --threads 1 --no-torch", dir);
    char *out;
    CHECK(run(args, &out) == 0);
    check_row(out, strrchr(dir, '/') + 1, 300, 32);
    check_memory(out, strrchr(dir, '/') + 1);
    CHECKF(strstr(out, "  torch ") == NULL, "%s", out);
    /* GPT-2's count: 12 L C² + V C = 24576 + 9600, (8 N + 16 L T C) 2 B T */
    double n = 0, f = 0;
    char arch[16] = "";
    CHECKF(flops_line(out, strrchr(dir, '/') + 1, &n, &f, arch), "no flops line in:\n%s", out);
    CHECKF(n == 34176 && f == (8.0 * 34176 + 16.0 * 2 * 32 * 32) * 2 * 4 * 32 &&
               strcmp(arch, "gpt2") == 0,
           "N %.17g, FLOPs %.17g, %s", n, f, arch);
    free(out);
    fsutil_remove_tree(dir, err, sizeof err);
}

/* --model on a Qwen2-shaped folder with an untied head: V 300, C 32, L 2,
 * NH 4, NKV 2, an explicit head_dim HD 16 (not C / NH = 8), F 48; its 32
 * positions give T 32, and --batch 2 gives B 2. By hand, from the architecture:
 *   per layer  q C NH HD = 2048, k and v 2 C NKV HD = 2048, o_proj
 *              NH HD C = 2048, gate, up, down 3 C F = 4608: 10752
 *   N          L 10752 + V C (the head) = 21504 + 9600 = 31104
 *   attention  L T NH HD = 2 32 64 = 4096 a token
 *   FLOPs      (6 N + 12 4096 + 2 N + 4 4096) 2 B T = 314368 128 = 40239104
 * (GPT-2's formula would say 12 L C² + V C = 34176.) With torch, the
 * PyTorch line has a ratio: torch_dpo.py built the Llama shape. */
static void bench_llama_folder(void)
{
    char dir[64] = "/tmp/prefrun_benchXXXXXX", err[512], args[256];
    CHECK(mkdtemp(dir) != NULL);
    GptConfig g = {.vocab = 300,
                   .context = 32,
                   .width = 32,
                   .layers = 2,
                   .heads = 4,
                   .arch = GPT_ARCH_LLAMA,
                   .inner = 48,
                   .norm_eps = 1e-6f,
                   .kv_heads = 2,
                   .head_dim = 16,
                   .qkv_bias = true,
                   .untied_head = true,
                   .rope = {.theta = 1e6}};
    Gpt *m = gpt_new(&g, false, err, sizeof err);
    CHECKF(m != NULL, "%s", err);
    if (m) {
        gpt_init(m, 5);
        CHECKF(hf_model_save(m, dir, ST_F32, err, sizeof err) == 0, "%s", err);
    }
    gpt_free(m);
    const char *name = strrchr(dir, '/') + 1;
    bool torch = torch_available();
    snprintf(args, sizeof args, "bench --model %s --batch 2 --steps 1 --threads 1%s", dir,
             torch ? "" : " --no-torch");
    char *out;
    CHECK(run(args, &out) == 0);
    check_row(out, name, 300, 32);
    check_memory(out, name);
    double n = 0, f = 0;
    char arch[16] = "";
    CHECKF(flops_line(out, name, &n, &f, arch), "no flops line in:\n%s", out);
    CHECKF(n == 31104 && f == 40239104.0 && strcmp(arch, "llama") == 0, "N %.17g, FLOPs %.17g, %s",
           n, f, arch);
    const char *t = line_of(out, "  torch ");
    if (torch) {
        const char *r = t ? strstr(t, "prefrun/torch ") : NULL;
        double ratio = 0;
        CHECKF(r && sscanf(r + 14, "%lf", &ratio) == 1 && ratio > 0, "torch line: %s\n%s",
               t ? t : "(none)", out);
    } else {
        printf("# no /usr/bin/python3 with torch: the PyTorch side is not run\n");
        CHECK(t == NULL);
    }
    free(out);
    fsutil_remove_tree(dir, err, sizeof err);
}

static void bench_usage_errors(void)
{
    char *out;
    CHECK(run("bench --config huge", &out) == 2);
    CHECKF(strstr(out, "expected tiny, small, gpt2-124m or all, got 'huge'"), "%s", out);
    free(out);
    CHECK(run("bench --config tiny --model /tmp", &out) == 2);
    CHECKF(strstr(out, "--config and --model"), "%s", out);
    free(out);
    CHECK(run("bench --model /nonexistent/model --no-torch", &out) == 3);
    CHECKF(strstr(out, "--model: ") && strstr(out, "/nonexistent/model"), "%s", out);
    free(out);
    CHECK(run("bench --config tiny --batch 1", &out) == 2);
    CHECKF(strstr(out, "--batch goes with --model"), "%s", out);
    free(out);
    CHECK(run("bench --help", &out) == 0);
    CHECKF(strstr(out, "gpt2-124m") && strstr(out, "--model DIR") && strstr(out, "examples:") &&
               strstr(out, "--lora R"),
           "%s", out);
    free(out);
}

int main(void)
{
    RUN(bench_usage_errors);
    RUN(bench_tiny_prints_every_field);
    RUN(bench_model_folder);
    RUN(bench_llama_folder);
    return tl_done();
}
