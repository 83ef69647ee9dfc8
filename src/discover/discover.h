/*
 * src/discover/ — the discovery loop: proposing (loop, propose and its
 * proposers), screening and training candidates (evaluate, pool, probe),
 * the archive and its report, the settings (config) and the registry of
 * fitnesses (fitness_kinds).
 * May include: util/, core/, lua/, model/, train/, task/.
 */
/*
 * discover/discover.h — the discovery loop behind `prefrun discover`: propose new
 * loss files, check them, train and score them, archive them; unattended,
 * resumable, and safe against whatever the proposer writes.
 *
 *     DiscoverOptions o;
 *     discover_defaults(&o);
 *     discover_load_yaml(&o, "examples/discover.yaml", err, sizeof err); // optional
 *     snprintf(o.out_dir, sizeof o.out_dir, "runs/disc");
 *     discover_finalize(&o, err, sizeof err);
 *     discover_run(&o, err, sizeof err);            // resumes when runs/disc has an archive
 *     discover_report(stdout, "runs/disc", err, sizeof err);
 *
 * ONE GENERATION (discover/loop.c):
 *   1. propose   `candidates` new losses, one proposer call each, every one
 *                archived as a proposal before anything runs it. Generation 0
 *                is the library losses named in seed_losses.
 *   2. screen    in worker processes (discover/pool.h): `prefrun check`
 *                (schema, shapes, numerics, signal, shape summary) and the
 *                behaviour probe (discover/probe.h). Identical code or
 *                identical behaviour to an archived candidate ends here as a
 *                duplicate; a failed check as invalid, with its diagnostics.
 *   3. hurdle    a short training run (hurdle_steps, the first seed); below
 *                hurdle_min the candidate stops here (below_hurdle).
 *   4. full      the fitness (discover/fitness_kinds.h) over every seed.
 * Steps 3 and 4 run in one worker per candidate, `workers` at a time; a
 * crash, a process limit or the wall-clock timeout becomes the candidate's
 * diagnostic. Each result is archived as it arrives.
 *
 * FILES, all under out_dir (nothing else is written):
 *   archive.jsonl      every proposal and result (discover/archive.h)
 *   losses/NAME.lua    every candidate that passed the checks, for prefrun train
 *   discover.yaml      the effective settings, read back by a rerun
 *   work/              scratch files of running candidates (emptied as they end)
 *   leaderboard.svg    best fitness per generation (discover_report)
 * A rerun with the same out_dir continues: finished evaluations are kept,
 * proposals without a result are evaluated, then the remaining generations
 * run. The proposer never sees a diagnostic it cannot act on: failures of
 * generation g are in the prompts of generation g + 1.
 */
#ifndef PREFRUN_DISCOVER_H
#define PREFRUN_DISCOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "train/config.h"
#include "discover/fitness_kinds.h"
#include "discover/propose.h"

#define DISCOVER_PATH_LEN 1024
#define DISCOVER_MAX_SEED_LOSSES 16

typedef struct DiscoverOptions {
    char out_dir[DISCOVER_PATH_LEN];
    int generations; /* after generation 0 (the seeds) */
    int candidates;  /* proposals per generation */
    int workers;     /* worker processes; 0: one per core */
    uint64_t seed;
    int n_seed_losses; /* library losses evaluated as generation 0 */
    char seed_losses[DISCOVER_MAX_SEED_LOSSES][64];
    /* the cascade and the fitness */
    char fitness[32];  /* a name in the fitness registry */
    int hurdle_steps;  /* the short run; 0: no hurdle; -1: the fitness's (FitnessKind) */
    double hurdle_min; /* fitness the short run must reach; NAN: the fitness's */
    int full_steps;    /* steps of each full-evaluation run; 0: the fitness's default */
    int n_fitness_seeds;
    uint64_t fitness_seeds[FITNESS_MAX_SEEDS];
    double noise_sd; /* the comparison's noise floor (compare.h); NAN: the fitness's */
    /* worker bounds */
    double timeout;      /* wall-clock seconds per training job */
    double cpu_seconds;  /* CPU seconds per training job */
    int memory_mb;       /* address space a worker may add */
    double rank_timeout; /* under mpirun: silence after which an evaluator rank is lost */
    /* what prompts show */
    int parents; /* parents per proposal (>= 2 for llm prompts) */
    int failures_shown;
    int leaders_shown;
    bool quiet; /* no per-candidate progress lines */
    ProposeConfig propose;
    Config train; /* the training settings of every fitness run (interim: all of
                   * them; task: threads, sandbox limits, nan_policy, fitness.h) */
} DiscoverOptions;

void discover_defaults(DiscoverOptions *o);
/* Applies a discover.yaml over o; unknown keys are errors naming file, line
 * and key. The `train:` mapping holds `prefrun train` config keys. */
int discover_load_yaml(DiscoverOptions *o, const char *path, char *err, size_t errlen);
/* One key (as in the YAML file: "candidates", "llm.url", ...) from text;
 * list keys take comma-separated items. For command-line flags. */
int discover_set(DiscoverOptions *o, const char *key, const char *value, char *err, size_t errlen);
/* The keys with their meaning, for --help. */
void discover_print_keys(FILE *f);
/* Checks ranges and resolves defaults (workers, the prompt path). */
int discover_finalize(DiscoverOptions *o, char *err, size_t errlen);
/* The noise floor comparisons use: the noise_sd setting, else the fitness's
 * (FitnessKind.noise_sd); 0 when the fitness is unknown. */
double discover_noise_sd(const DiscoverOptions *o);
/* The effective settings as YAML text that discover_load_yaml reads back
 * (malloc'ed). */
char *discover_to_yaml(const DiscoverOptions *o);

/* Runs (or resumes) the loop in o->out_dir. 0 when every generation is done;
 * -1 with err set when it cannot go on (the proposer failed for good, the
 * archive cannot be written). Progress lines go to stderr. */
int discover_run(const DiscoverOptions *o, char *err, size_t errlen);

/* The leaderboard of a discovery directory: a table on f and
 * DIR/leaderboard.svg (best fitness per generation). */
int discover_report(FILE *f, const char *dir, char *err, size_t errlen);

#endif
