/*
 * discover/fitness_kinds.h — how the discovery loop picks the fitness that
 * scores a candidate loss: a registry of named fitnesses (`--fitness NAME`).
 * The function type they share and its contract are task/fitness_api.h.
 *
 *     FitnessOptions fo = {.cfg = cfg, .steps = 300, .n_seeds = 2, .seeds = {1, 2},
 *                          .work_dir = "out/work/g3-1"};
 *     FitnessResult r;
 *     const FitnessKind *k = fitness_find("task", err, sizeof err);
 *     if (!k || k->fn("out/losses/cand.lua", &fo, &r, err, sizeof err) != 0) ...;
 *     // r.fitness: higher is better; r.per_seed[i] for r.seeds[i]
 *
 * The registry (discover/fitness_kinds.c):
 *   task     the default: reward - 0.01 KL on the built-in task (task/fitness.h);
 *   interim  held-out preference accuracy after a short run (task/fitness_interim.h).
 */
#ifndef PREFRUN_DISCOVER_FITNESS_KINDS_H
#define PREFRUN_DISCOVER_FITNESS_KINDS_H

#include "task/fitness_api.h"

typedef struct FitnessKind {
    const char *name;         /* for --fitness and the config's `fitness:` */
    FitnessFn fn;             /* NULL: reserved, not built yet */
    FitnessPrepareFn prepare; /* NULL: nothing to build first */
    const char *summary;      /* one line, for --help and the prompt */
    /* the loop's cascade budget when the config sets none: each fitness has
     * its own scale (an accuracy, a reward) and its own cost */
    int hurdle_steps;  /* steps of the hurdle run; 0: no hurdle */
    double hurdle_min; /* the hurdle run's fitness must reach this */
    /* the noise floor: the sd of ONE seed's fitness for one loss across
     * seeds, at the loop's default settings (discover/compare.h floors
     * every comparison and interval with it; the noise_sd setting
     * overrides it) */
    double noise_sd;
} FitnessKind;

/* The kind named name; NULL with err set when it is unknown or not built. */
const FitnessKind *fitness_find(const char *name, char *err, size_t errlen);
/* The registry, for --help: i in [0, fitness_kind_count()). */
int fitness_kind_count(void);
const FitnessKind *fitness_kind(int i);

#endif
