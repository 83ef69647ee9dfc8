/*
 * task/fitness_api.h — the contract of a fitness: how a candidate loss is
 * scored, as one function type that the task fitness (task/fitness.h), the
 * interim fitness (task/fitness_interim.h) and any later one implement, and
 * that the discovery loop's registry of named fitnesses
 * (discover/fitness_kinds.h) lists.
 *
 *     FitnessOptions fo = {.cfg = cfg, .steps = 300, .n_seeds = 2, .seeds = {1, 2},
 *                          .work_dir = "out/work/g3-1"};
 *     FitnessResult r;
 *     FitnessFn fn = fitness_interim; // or fitness_evaluate, the task fitness
 *     if (fn("out/losses/cand.lua", &fo, &r, err, sizeof err) != 0) ...;
 *     // r.fitness: higher is better; r.per_seed[i] for r.seeds[i]
 *
 * The contract of a FitnessFn (what the loop relies on):
 *   - it runs inside a discovery worker process (bounded by setrlimit and a
 *     wall-clock timeout), so it may take seconds to minutes and may use the
 *     training loop; it must not fork or write outside opt->work_dir, which it
 *     may fill and must leave empty (or absent) when it returns;
 *   - the loss file has already passed `prefrun check`; a run that fails
 *     anyway (NaN, a script limit hit in step 900) returns -1 with err set,
 *     which becomes the candidate's diagnostic;
 *   - it is deterministic in (loss file, cfg, steps, seeds): a resumed
 *     discovery run re-scores a candidate to the same number;
 *   - fitness is a scalar, higher is better, comparable across candidates
 *     scored with the same options; `metric` names it for the archive and
 *     the prompt;
 *   - common random numbers: seed s is the same experiment for every
 *     candidate. What is random in a run is a function of the seed and the
 *     options only, never of the loss: the data (interim: the toy pairs and
 *     their held-out split are drawn from s; task: the task's fixed pair
 *     files), the data order and the initialisation (s; task: the reference
 *     itself), and the evaluation (interim: the held-out pairs of s; task:
 *     the task's fixed held-out prompts, sampled with seed s). So per_seed[i]
 *     of two candidates differ only by their losses, and the discovery loop
 *     compares candidates seed by seed (discover/compare.h, a paired test);
 *   - se is the standard error of fitness over the seeds, sd / sqrt(n) with
 *     the sample sd (n - 1), NAN with one seed: the seed-to-seed spread of
 *     ONE loss. fitness_standard_error below computes it.
 */
#ifndef PREFRUN_TASK_FITNESS_API_H
#define PREFRUN_TASK_FITNESS_API_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "train/config.h"

#define FITNESS_MAX_SEEDS 8
#define FITNESS_CURVE_POINTS 8

typedef struct FitnessOptions {
    Config cfg;  /* training settings, finalized; seed and max_steps are set per run */
    int steps;   /* optimizer steps of each run; 0: the fitness's own default */
    int n_seeds; /* runs, one per seed */
    uint64_t seeds[FITNESS_MAX_SEEDS];
    const char *work_dir; /* scratch space inside the discovery directory */
} FitnessOptions;

/* One point of a training curve (of the first seed): TRL's metric names. */
typedef struct FitnessPoint {
    int64_t step;
    double loss;     /* mean training loss of the logging interval */
    double accuracy; /* rewards/accuracies of the interval */
} FitnessPoint;

typedef struct FitnessResult {
    double fitness; /* mean of per_seed; higher is better */
    double se;      /* standard error of that mean: sd / sqrt(n); NAN for one seed */
    char metric[48];
    int n_seeds;
    uint64_t seeds[FITNESS_MAX_SEEDS];
    double per_seed[FITNESS_MAX_SEEDS];
    double eval_margin; /* eval_rewards/margins, mean over seeds */
    double eval_loss;   /* eval_loss, mean over seeds */
    int steps;
    int n_curve;
    FitnessPoint curve[FITNESS_CURVE_POINTS];
    double seconds;
} FitnessResult;

/* sd(x) / sqrt(n), the sample sd (n - 1 in the variance); NAN for n < 2 */
static inline double fitness_standard_error(const double *x, int n)
{
    if (n < 2)
        return NAN;
    double mean = 0, ss = 0;
    for (int i = 0; i < n; i++)
        mean += x[i] / n;
    for (int i = 0; i < n; i++)
        ss += (x[i] - mean) * (x[i] - mean);
    return sqrt(ss / (n - 1)) / sqrt((double)n);
}

typedef int (*FitnessFn)(const char *loss_path, const FitnessOptions *opt, FitnessResult *out,
                         char *err, size_t errlen);

/* Builds what fn needs and every worker would otherwise build at once (the
 * task's reference and pairs): run once by the loop before generation 0,
 * in a worker process of its own (the loop's parent runs no tensor code).
 * May take minutes the first time; says so unless quiet. */
typedef int (*FitnessPrepareFn)(bool quiet, char *err, size_t errlen);

#endif
