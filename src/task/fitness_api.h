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
 *     the prompt.
 */
#ifndef PREFRUN_TASK_FITNESS_API_H
#define PREFRUN_TASK_FITNESS_API_H

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

typedef int (*FitnessFn)(const char *loss_path, const FitnessOptions *opt, FitnessResult *out,
                         char *err, size_t errlen);

/* Builds what fn needs and every worker would otherwise build at once (the
 * task's reference and pairs): run once by the loop before generation 0,
 * in a worker process of its own (the loop's parent runs no tensor code).
 * May take minutes the first time; says so unless quiet. */
typedef int (*FitnessPrepareFn)(bool quiet, char *err, size_t errlen);

#endif
