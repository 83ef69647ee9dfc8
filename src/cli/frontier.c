/*
 * cli/frontier.c — `prefrun frontier`: every loss at every beta (and seed)
 * trained from the task's reference in parallel worker processes, each
 * evaluated; the reward/KL table and plot written to --out (frontier.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "task/frontier.h"

#define MAX_LOSSES 16
#define MAX_BETAS 32
#define MAX_SETS 64

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun frontier LOSS.lua [LOSS2.lua ...] --betas B1,B2,... --out DIR\n"
               "                        [--seeds N] [--jobs N] [--steps N] [--set KEY=VALUE]...\n"
               "                        [--model MODEL]\n\n"
               "Trains each loss at each beta (the loss param `beta`) and seed on the built-in\n"
               "task, starting from its pretrained reference, in parallel worker processes;\n"
               "evaluates each policy (reward, KL to the reference, win rate, held-out\n"
               "accuracy; see prefrun eval) and writes DIR/frontier.csv, frontier.json and\n"
               "frontier.svg (frontier.png too when rsvg-convert or convert is installed):\n"
               "mean reward against KL, one curve per loss. Runs go to DIR/runs/.\n"
               "With --model MODEL, every run trains that Hugging Face model folder instead\n"
               "(the same as --set model=MODEL in prefrun train) on the task's pair texts\n"
               "through its tokenizer, and is evaluated against MODEL's model as the\n"
               "reference (see prefrun eval).\n\n"
               "options:\n"
               "  --betas LIST     comma-separated betas (required)\n"
               "  --out DIR        output directory (required)\n"
               "  --seeds N        training seeds 1..N per point (default 1)\n"
               "  --jobs N         workers at a time (default: one per core)\n"
               "  --steps N        optimizer steps per run (default: the task's)\n"
               "  --set KEY=VALUE  a training setting, as in prefrun train (repeatable)\n"
               "  --model MODEL    a Hugging Face model folder every run trains (default:\n"
               "                   prefrun's own model, from the task's reference)\n"
               "  --samples N      eval completions per prompt (default 4)\n"
               "  --prompts P      eval held-out prompts (default 64)\n"
               "  --cache DIR      the task cache (see prefrun pretrain)\n"
               "  --quiet          no progress output\n"
               "  -h, --help       this text\n\n"
               "example:\n"
               "  prefrun frontier losses/dpo.lua losses/discopop.lua \\\n"
               "      --betas 0.01,0.05,0.1,0.5 --out runs/frontier\n");
}

typedef struct FrontierArgs {
    const char *losses[MAX_LOSSES];
    int n_losses;
    double betas[MAX_BETAS];
    int n_betas, seeds, jobs, steps, samples, prompts;
    const char *out, *cache, *model;
    const char *sets[MAX_SETS];
    int n_sets;
    bool quiet;
} FrontierArgs;

static int parse(int argc, char **argv, FrontierArgs *a)
{
    const CliOpt opts[] = {
        CLI_DOUBLES("betas", 0, a->betas, &a->n_betas, 0, INFINITY, true),
        CLI_STRING("out", 0, &a->out),
        CLI_INT("seeds", 0, &a->seeds, 1, 64),
        CLI_INT("jobs", 0, &a->jobs, 1, 1024),
        CLI_INT("steps", 0, &a->steps, 1, 1 << 30),
        CLI_INT("samples", 0, &a->samples, 1, 1 << 16),
        CLI_INT("prompts", 0, &a->prompts, 1, 1 << 16),
        CLI_STRING("cache", 0, &a->cache),
        CLI_STRING("model", 0, &a->model),
        CLI_STRINGS("set", 0, a->sets, &a->n_sets),
        CLI_FLAG("quiet", 0, &a->quiet),
    };
    const CliCommand cmd = {CLI_COMMAND("frontier", usage, opts), .operand = "LOSS.lua",
                            .operands = a->losses, .n_operands = &a->n_losses,
                            .max_operands = CLI_N(a->losses)};
    int rc = cli_parse(&cmd, argc, argv);
    if (rc != CLI_CONTINUE)
        return rc;
    if (!a->n_losses || !a->n_betas || !a->out)
        return cli_usage_error("frontier", "loss scripts, --betas and --out are required "
                                           "(see prefrun frontier --help)");
    return CLI_CONTINUE;
}

/* --steps, --set, eval sizes and the worker count over the setup's defaults */
static int configure(const FrontierArgs *a, FrontierSetup *s, int n_jobs, char *err, size_t errlen)
{
    if (a->steps > 0)
        s->cfg.max_steps = a->steps;
    for (int i = 0; i < a->n_sets; i++)
        if (config_set(&s->cfg, a->sets[i], err, errlen) != 0)
            return -1;
    if (a->samples > 0)
        s->eval.samples = a->samples;
    if (a->prompts > 0)
        s->eval.n_prompts = a->prompts;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    s->jobs = a->jobs > 0 ? a->jobs : (int)(cores > 0 ? cores : 1);
    int running = s->jobs < n_jobs ? s->jobs : n_jobs;
    /* the parent never ran OpenMP (frontier_setup built the task in a child),
     * so workers may use several threads each */
    s->worker_threads = running > 0 && cores / running > 1 ? (int)(cores / running) : 1;
    s->quiet = a->quiet;
    return config_finalize(&s->cfg, err, errlen);
}

static FrontierJob *make_jobs(const FrontierArgs *a, int *n)
{
    *n = a->n_losses * a->n_betas * a->seeds;
    FrontierJob *jobs = calloc((size_t)*n, sizeof *jobs);
    int k = 0;
    for (int l = 0; jobs && l < a->n_losses; l++)
        for (int b = 0; b < a->n_betas; b++)
            for (int s = 1; s <= a->seeds; s++)
                jobs[k++] = (FrontierJob){
                    .loss_path = a->losses[l], .beta = a->betas[b], .seed = (uint64_t)s};
    if (jobs)
        frontier_job_dirs(jobs, *n, a->out);
    return jobs;
}

static void report_files(const char *out, int ok, int n)
{
    char png[1100];
    snprintf(png, sizeof png, "%s/frontier.png", out);
    fprintf(stderr, "frontier: %d of %d runs ok; wrote %s/frontier.csv, .json, .svg%s\n", ok, n,
            out, access(png, F_OK) == 0 ? ", .png" : " (no PNG: rsvg-convert/convert not found)");
}

static int run(const FrontierArgs *a)
{
    char err[2048];
    TaskPrepareOptions tp;
    task_prepare_defaults(&tp);
    tp.cache_dir = a->cache;
    tp.quiet = a->quiet;
    FrontierSetup s;
    int n;
    FrontierJob *jobs = make_jobs(a, &n);
    FrontierResult *res = calloc((size_t)n, sizeof *res);
    int rc = jobs && res ? 0 : -1;
    snprintf(err, sizeof err, "out of memory");
    if (rc == 0)
        rc = frontier_setup(&s, &tp, err, sizeof err);
    if (rc == 0 && a->model)
        rc = frontier_use_model(&s, a->model, err, sizeof err);
    if (rc == 0)
        rc = configure(a, &s, n, err, sizeof err);
    if (rc == 0 && !a->quiet)
        fprintf(stderr, "frontier: %d runs, %d at a time, %d thread(s) each, %d steps\n", n,
                s.jobs < n ? s.jobs : n, s.worker_threads, s.cfg.max_steps);
    if (rc == 0)
        rc = frontier_run(&s, jobs, n, res, err, sizeof err);
    if (rc == 0)
        rc = frontier_write(a->out, jobs, res, n, err, sizeof err);
    int failed = 0;
    for (int i = 0; rc == 0 && i < n; i++)
        failed += !res[i].ok;
    if (rc != 0)
        cli_error("frontier", 0, err);
    else if (!a->quiet)
        report_files(a->out, n - failed, n);
    free(jobs);
    free(res);
    return rc != 0 ? EXIT_INPUT : failed ? EXIT_FAILED : EXIT_OK;
}

int cmd_frontier(int argc, char **argv)
{
    FrontierArgs a = {.seeds = 1};
    int rc = parse(argc, argv, &a);
    return rc == CLI_CONTINUE ? run(&a) : rc;
}
