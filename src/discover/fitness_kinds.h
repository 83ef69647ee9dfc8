/*
 * discover/fitness_kinds.h — how the discovery loop scores a candidate loss: one
 * function type, a registry of named fitnesses (`--fitness NAME`), and the
 * interim fitness (a cheap stand-in, still used by the tests).
 *
 *     FitnessOptions fo = {.cfg = cfg, .steps = 300, .n_seeds = 2, .seeds = {1, 2},
 *                          .work_dir = "out/work/g3-1"};
 *     FitnessResult r;
 *     const FitnessKind *k = fitness_find("task", err, sizeof err);
 *     if (!k || k->fn("out/losses/cand.lua", &fo, &r, err, sizeof err) != 0) ...;
 *     // r.fitness: higher is better; r.per_seed[i] for r.seeds[i]
 *
 * The registry (discover/fitness_kinds.c):
 *   task     the default: reward - 0.01 KL on the built-in task (fitness.h);
 *   interim  held-out preference accuracy after a short run (below).
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
 *
 * THE INTERIM FITNESS ("interim") trains the candidate from scratch for
 * `steps` optimizer steps per seed with train_run (train.h) on the training
 * config's data (the built-in preference data unless train_file is set)
 * (0 steps: INTERIM_STEPS), and returns the held-out preference accuracy of
 * the implicit reward, eval_rewards/accuracies = mean over eval pairs of [log pi/pi_ref(chosen) >
 * log pi/pi_ref(rejected)], averaged over the seeds. It does not depend on
 * the loss's beta (a sign test), so losses with different scales compare
 * fairly; the eval margin and loss are kept for the archive. It is
 * superseded by "task" (fitness.h), which scores what the DiscoPOP paper
 * scores (reward of sampled completions against KL to the reference) but
 * needs the task's pretrained reference; interim needs nothing built and
 * runs in seconds on a tiny model, so the loop's tests use it.
 */
#ifndef PREFRUN_DISCOVER_FITNESS_H
#define PREFRUN_DISCOVER_FITNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "train/config.h"

#define FITNESS_MAX_SEEDS 8
#define FITNESS_CURVE_POINTS 8
#define INTERIM_STEPS 400 /* the interim fitness's steps per seed when asked for 0 */

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

typedef struct FitnessKind {
    const char *name;         /* for --fitness and the config's `fitness:` */
    FitnessFn fn;             /* NULL: reserved, not built yet */
    FitnessPrepareFn prepare; /* NULL: nothing to build first */
    const char *summary;      /* one line, for --help and the prompt */
    /* the loop's cascade budget when the config sets none: each fitness has
     * its own scale (an accuracy, a reward) and its own cost */
    int hurdle_steps;  /* steps of the hurdle run; 0: no hurdle */
    double hurdle_min; /* the hurdle run's fitness must reach this */
} FitnessKind;

/* The kind named name; NULL with err set when it is unknown or not built. */
const FitnessKind *fitness_find(const char *name, char *err, size_t errlen);
/* The registry, for --help: i in [0, fitness_kind_count()). */
int fitness_kind_count(void);
const FitnessKind *fitness_kind(int i);

/* The interim fitness described above. */
int fitness_interim(const char *loss_path, const FitnessOptions *opt, FitnessResult *out, char *err,
                    size_t errlen);

#endif
