/*
 * discover/compare.h — the one way the discovery loop and its report decide
 * that one candidate's fitness is better than another's, and how a fitness
 * is shown with its uncertainty. The archive's elites and tournaments
 * (discover/archive.c), the leaderboard (discover/report.c), the progress
 * lines and the prompts all go through it, so none of them calls a
 * difference real that the others call noise.
 *
 *     FitnessScores a, b;
 *     fitness_scores_from_json(json_object_get(res_a, "fitness"), &a);
 *     fitness_scores_from_json(json_object_get(res_b, "fitness"), &b);
 *     FitnessDiff d;
 *     int c = fitness_compare(&a, &b, noise_sd, &d); // +1 a better, -1 worse, 0 unresolved
 *     printf("%.4f ± %.4f\n", a.mean, fitness_interval(a.se, a.n, noise_sd));
 *
 * THE TEST. Every candidate is scored on the same seeds, and seed s is the
 * same experiment for all of them (common random numbers: the FitnessFn
 * contract, task/fitness_api.h), so the comparison is paired: over the n
 * seeds both have, d_s = a_s - b_s and d = mean(d_s). a is better iff
 *
 *     d > h,  h = max(t(0.975, n - 1) * sd(d_s) / sqrt(n),  1.96 * noise_sd * sqrt(2 / n))
 *
 * worse iff d < -h, else unresolved. The first term is the two-sided 95%
 * paired t test (Student's t with n - 1 degrees of freedom; the pairing
 * removes what the seeds share: data, order, prompts). The second is a floor
 * from the measured noise: noise_sd is the sd of ONE seed's fitness for one
 * loss across seeds (FitnessKind.noise_sd, measured with `prefrun discover
 * --noise-floor`, or the noise_sd setting), and 1.96 * noise_sd * sqrt(2 / n)
 * is the 95% half-width of a difference of two n-seed means whose seed noise
 * were independent. Why the floor: with 2 or 3 seeds the sample sd(d_s) is
 * itself noise, and two losses that happen to move together on those seeds
 * would "resolve" a gap far below what another seed would show; the floor
 * makes n seeds resolve no less than the noise measured on >= 8 seeds allows.
 * With one common seed sd(d_s) is undefined and the floor alone decides.
 * Identical per-seed values (d_s = 0 for all s) are never resolved.
 *
 * Without common seeds (scored on different seeds, or an archive without
 * per_seed), the two means are compared with the floor only, for two
 * independent means: h = 1.96 * noise_sd * sqrt(1/n_a + 1/n_b) (n taken as 1
 * where unknown); FitnessDiff.n is then 0.
 *
 * THE INTERVAL of one fitness: 1.96 * max(se, noise_sd / sqrt(n)), the 95%
 * half-width of an n-seed mean with its standard error floored by the
 * measured noise for the same reason (se is NAN for one seed).
 *
 * MEASURING noise_sd (`prefrun discover --noise-floor LOSS.lua`):
 * fitness_noise_floor scores one loss on seeds 1..n, one seed per call, and
 * returns the per-seed values, their mean, sd and se; the sd is the noise_sd
 * to put in FitnessKind's table or the noise_sd setting.
 */
#ifndef PREFRUN_DISCOVER_COMPARE_H
#define PREFRUN_DISCOVER_COMPARE_H

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>

#include "task/fitness_api.h"
#include "discover/fitness_kinds.h"
#include "train/config.h"

#define NOISE_MAX_SEEDS 64
#define FITNESS_Z975 1.959963984540054 /* the standard normal's 0.975 quantile */

/* What the comparison needs of a fitness: a FitnessResult's numbers, or
 * those of an archived "fitness" object. */
typedef struct FitnessScores {
    double mean; /* the fitness; NAN when none */
    double se;   /* its standard error; NAN when unknown (one seed) */
    int n;       /* seeds with a value in per_seed; 0: only the mean is known */
    uint64_t seeds[FITNESS_MAX_SEEDS];
    double per_seed[FITNESS_MAX_SEEDS];
} FitnessScores;

typedef struct FitnessDiff {
    double d; /* mean paired difference a - b (the difference of means without common seeds) */
    double h; /* the threshold |d| had to exceed */
    int n;    /* common seeds; 0: no pairing */
} FitnessDiff;

void fitness_scores_of(const FitnessResult *r, FitnessScores *out);
/* From an archive "fitness" object ({"value", "se"?, "seeds"?, "per_seed"?});
 * mean NAN when fit is not one. */
void fitness_scores_from_json(const json_t *fit, FitnessScores *out);

/* +1 when a is resolved better than b, -1 worse, 0 unresolved (the test
 * above); out may be NULL. noise_sd NAN or negative reads as 0. A NAN mean
 * on either side is unresolved. */
int fitness_compare(const FitnessScores *a, const FitnessScores *b, double noise_sd,
                    FitnessDiff *out);

/* 1.96 * max(se, noise_sd / sqrt(n)) (n < 1 taken as 1); NAN when neither
 * is known */
double fitness_interval(double se, int n, double noise_sd);

typedef struct NoiseFloor {
    int n;
    double per_seed[NOISE_MAX_SEEDS]; /* for seeds 1..n */
    double mean, sd, se;              /* sd: the suggested noise_sd */
    double seconds;
} NoiseFloor;

/* Scores loss_path with k on seeds 1..n_seeds (2 to NOISE_MAX_SEEDS), one
 * seed per call, in this process, with train's settings and steps (0: the
 * fitness's default); scratch files under work_dir. A line per seed on
 * progress unless it is NULL. -1 with err set when a run fails. */
int fitness_noise_floor(const FitnessKind *k, const Config *train, int steps, const char *loss_path,
                        int n_seeds, const char *work_dir, FILE *progress, NoiseFloor *out,
                        char *err, size_t errlen);

/* t(0.975, df), the two-sided 95% quantile of Student's t; NAN for df < 1 */
double fitness_t975(int df);

#endif
