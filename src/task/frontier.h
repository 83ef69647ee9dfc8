/*
 * task/frontier.h — the reward/KL frontier of losses on the built-in task: each
 * (loss, beta, seed) is trained from the reference and evaluated in its own
 * worker process, and the results become a table (CSV, JSON) and a plot of
 * reward against KL, one curve per loss (the DiscoPOP paper's IMDb figure).
 *
 *     FrontierSetup s;
 *     TaskPrepareOptions tp;
 *     task_prepare_defaults(&tp);
 *     frontier_setup(&s, &tp, err, sizeof err);     // task ready, base config
 *     FrontierJob jobs[2] = {{"losses/dpo.lua", 0.1, 1}, {"losses/dpo.lua", 0.5, 1}};
 *     frontier_job_dirs(jobs, 2, "out");            // out/runs/dpo-beta0.1-seed1, ...
 *     FrontierResult res[2];
 *     frontier_run(&s, jobs, 2, res, err, sizeof err);
 *     frontier_write("out", jobs, res, 2, err, sizeof err);  // frontier.csv/.json/.svg
 *
 * Workers. Jobs run in forked processes, at most `jobs` at a time (default:
 * one per core). A worker trains with train_run (the policy starting from
 * the task's reference, beta set as the loss param "beta", the training
 * seed as the config's seed), evaluates the final policy with eval_models,
 * writes RUN_DIR/result.json atomically and exits; the parent reads it. A
 * worker that fails or dies is a failed row with its reason, not a failed
 * frontier.
 *
 * A Hugging Face model (frontier_use_model): every run is `model: DIR`
 * (the policy starts from DIR's weights, the reference is DIR's model, the
 * task's pair texts go through DIR's tokenizer), with the task's training
 * budget (steps, batch, lengths: max_length cut to DIR's positions; the
 * rate is TRL's, as for any run of a model, unless set);
 * each policy is evaluated as eval_path evaluates a run of a model (eval.h:
 * the reference DIR's model, the tokenizer the run's copy of DIR's), on the
 * task's held-out prompts and pairs.
 *
 * Threads. GNU libgomp cannot run a parallel region with more than one
 * thread in a process forked from one that has already used its thread
 * pool: it hangs. So a worker runs single-threaded unless worker_threads
 * says otherwise, and only frontier_setup's caller-side guarantee makes that
 * safe: frontier_setup builds the task (the one multi-threaded part) in a
 * child of its own when it is not cached yet, so a parent that did nothing
 * else with OpenMP stays clean (the `prefrun frontier` command sets
 * worker_threads = cores / jobs on that basis).
 *
 * Errors are values: 0 on success, -1 with a message in err.
 */
#ifndef PREFRUN_FRONTIER_H
#define PREFRUN_FRONTIER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "train/config.h"
#include "task/eval.h"
#include "task/task_data.h"

#define FRONTIER_DIR_LEN 1024

typedef struct FrontierSetup {
    Config cfg;         /* the base training config: the task's settings and files */
    TaskAssets task;    /* reference, pairs, seed */
    EvalOptions eval;   /* eval_defaults */
    int jobs;           /* workers at a time; 0: one per core */
    int worker_threads; /* OpenMP/OpenBLAS threads per worker; 0: 1 (see above) */
    bool quiet;
    FILE *progress; /* NULL: stderr */
} FrontierSetup;

typedef struct FrontierJob {
    const char *loss_path;
    double beta;
    uint64_t seed; /* the training seed */
    char run_dir[FRONTIER_DIR_LEN];
} FrontierJob;

typedef struct FrontierResult {
    bool ok;
    char error[512]; /* why not ok */
    EvalResult eval;
    double train_seconds;
    double train_loss;     /* the last logging interval's */
    double train_accuracy; /* rewards/accuracies of the last interval */
} FrontierResult;

/* Makes the task ready for tp (in a child process when it must be built),
 * and fills s with the base config (config_defaults, task_train_defaults,
 * tp's model shape, the task's files) and defaults for the rest. */
int frontier_setup(FrontierSetup *s, const TaskPrepareOptions *tp, char *err, size_t errlen);

/* Makes every run of s train the Hugging Face model folder dir (see
 * above); call after frontier_setup, before the caller's own settings.
 * Checks the folder's config and tokenizer here, once, rather than in
 * every worker. */
int frontier_use_model(FrontierSetup *s, const char *dir, char *err, size_t errlen);

/* Sets each job's run_dir to OUT/runs/<loss name>-beta<beta>-seed<seed>. */
void frontier_job_dirs(FrontierJob *jobs, int n, const char *out_dir);

/* Runs every job (see Workers); 0 when the pool ran, whatever the jobs did. */
int frontier_run(const FrontierSetup *s, const FrontierJob *jobs, int n, FrontierResult *out,
                 char *err, size_t errlen);

/* OUT/frontier.csv (one row per job), frontier.json (rows, and per loss the
 * curve of seed means by beta), frontier.svg (reward against KL), and
 * frontier.png when rsvg-convert or convert is on PATH. */
int frontier_write(const char *out_dir, const FrontierJob *jobs, const FrontierResult *res, int n,
                   char *err, size_t errlen);

/* "losses/dpo.lua" -> "dpo" into out. */
void frontier_loss_name(const char *path, char *out, size_t len);

#endif
