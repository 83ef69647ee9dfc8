/*
 * test_compare.c — discover/compare.h: the paired comparison of two
 * fitnesses floored by the measured noise, the interval of one fitness,
 * the t quantiles and the scores read from an archive's "fitness" object.
 *
 * Every expected threshold is worked out here in closed form from the
 * test's definition (compare.h): h = max(t(0.975, n-1) * sd(d) / sqrt(n),
 * 1.96 * noise * sqrt(2 / n)), with t(0.975, 1) = tan(0.475 pi) and
 * t(0.975, 2) = 0.95 * sqrt(2 / (4 * 0.975 * 0.025)) (Student's t quantiles
 * of 1 and 2 degrees of freedom have closed forms), and the other t values
 * from a numerical integration of Student's density (Simpson's rule, done
 * once in Python: 3.1824 for 3 degrees of freedom, 2.3646 for 7).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "discover/compare.h"
#include "testlib.h"

#define Z 1.959963984540054

/* scores on seeds first, first + 1, ... */
static FitnessScores scores(const double *v, int n, uint64_t first)
{
    FitnessScores s = {.n = n, .mean = 0};
    for (int i = 0; i < n; i++) {
        s.seeds[i] = first + (uint64_t)i;
        s.per_seed[i] = v[i];
        s.mean += v[i] / n;
    }
    s.se = fitness_standard_error(v, n);
    return s;
}

static FitnessScores shifted(const FitnessScores *b, const double *shift)
{
    FitnessScores a = *b;
    a.mean = 0;
    for (int i = 0; i < a.n; i++) {
        a.per_seed[i] += shift[i];
        a.mean += a.per_seed[i] / a.n;
    }
    return a;
}

static void t_quantiles_match_closed_forms(void)
{
    CHECK_NEAR(fitness_t975(1), tan(0.475 * M_PI), 1e-4);
    CHECK_NEAR(fitness_t975(2), 0.95 * sqrt(2 / (4 * 0.975 * 0.025)), 1e-4);
    CHECK_NEAR(fitness_t975(3), 3.1824, 1e-4);
    CHECK_NEAR(fitness_t975(7), 2.3646, 1e-4);
    CHECK_NEAR(fitness_t975(31), 2.03951, 2e-4);    /* beyond the table */
    CHECK_NEAR(fitness_t975(1000), 1.962339, 1e-5); /* tends to the normal's 1.96 */
    CHECK(isnan(fitness_t975(0)));
}

static void standard_error_is_sd_over_sqrt_n(void)
{
    const double x[4] = {1, 2, 3, 4}; /* variance 5/3 */
    CHECK_NEAR(fitness_standard_error(x, 4), sqrt(5.0 / 3) / 2, 1e-12);
    CHECK(isnan(fitness_standard_error(x, 1)));
}

/* the issue: two identical losses are never reported as different, at any
 * noise floor (0 included) and any number of seeds */
static void identical_per_seed_values_never_differ(void)
{
    const double v[8] = {0.81, 0.77, 0.93, 0.52, 0.64, 0.70, 0.88, 0.79};
    const double noises[4] = {0, 1e-9, 0.01, NAN};
    for (int n = 1; n <= 8; n++)
        for (int k = 0; k < 4; k++) {
            FitnessScores a = scores(v, n, 1), b = scores(v, n, 1);
            FitnessDiff d;
            CHECKF(fitness_compare(&a, &b, noises[k], &d) == 0, "n %d noise %g: d %g h %g", n,
                   noises[k], d.d, d.h);
            CHECK(d.n == n && d.d == 0);
        }
}

/* a constant shift: sd(d) = 0, so the floor alone decides */
static void constant_shift_against_the_floor(void)
{
    const double v[8] = {0.81, 0.77, 0.93, 0.52, 0.64, 0.70, 0.88, 0.79};
    const double up10[8] = {0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1};
    const double up2[8] = {0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.02};
    FitnessScores b = scores(v, 3, 1), a = shifted(&b, up10);
    FitnessDiff d;
    CHECK(fitness_compare(&a, &b, 0.02, &d) == 1); /* 0.1 > 1.96 * 0.02 * sqrt(2/3) */
    CHECK_NEAR(d.d, 0.1, 1e-12);
    CHECK_NEAR(d.h, Z * 0.02 * sqrt(2.0 / 3), 1e-12);
    CHECK(d.n == 3);
    CHECK(fitness_compare(&b, &a, 0.02, &d) == -1);
    a = shifted(&b, up2); /* 0.02 < 0.0320: inside the floor */
    CHECK(fitness_compare(&a, &b, 0.02, &d) == 0);
    CHECK(fitness_compare(&b, &a, 0.02, &d) == 0);
    b = scores(v, 8, 1); /* eight seeds: the floor is 1.96 * 0.02 * 0.5 = 0.0196 */
    a = shifted(&b, up2);
    CHECK(fitness_compare(&a, &b, 0.02, &d) == 1);
    CHECK_NEAR(d.h, Z * 0.02 * 0.5, 1e-12);
    CHECK(fitness_compare(&a, &b, 0, &d) == 1); /* no floor: any exact shift */
}

/* d_s alternating 0.15, 0.05: mean 0.1; two seeds cannot tell, four can */
static void noisy_shift_resolves_only_with_more_seeds(void)
{
    const double v[4] = {0.5, 0.6, 0.55, 0.65}, shift[4] = {0.15, 0.05, 0.15, 0.05};
    FitnessScores b2 = scores(v, 2, 1), a2 = shifted(&b2, shift);
    FitnessDiff d;
    CHECK(fitness_compare(&a2, &b2, 0.01, &d) == 0);
    CHECK_NEAR(d.h, tan(0.475 * M_PI) * sqrt(0.005) / sqrt(2.0), 1e-4); /* sd = sqrt(0.005) */
    FitnessScores b4 = scores(v, 4, 1), a4 = shifted(&b4, shift);
    CHECK(fitness_compare(&a4, &b4, 0.01, &d) == 1);
    CHECK_NEAR(d.d, 0.1, 1e-12);
    CHECK_NEAR(d.h, 3.1824 * sqrt(0.01 / 3) / 2, 1e-4); /* 0.0919 < 0.1 */
    /* the floor over a lucky small spread: two seeds moving together */
    const double lucky[2] = {0.030, 0.031};
    FitnessScores a = shifted(&b2, lucky);
    CHECK(fitness_compare(&a, &b2, 0.05, &d) == 0); /* t term 0.0064; floor 0.098 */
    CHECK_NEAR(d.h, Z * 0.05, 1e-12);
    CHECK(fitness_compare(&a, &b2, 0.001, &d) == 1); /* a small floor: the t test decides */
}

static void only_common_seeds_are_paired(void)
{
    const double va[3] = {0.9, 0.5, 0.6}, vb[3] = {0.4, 0.5, 0.1};
    FitnessScores a = scores(va, 3, 1), b = scores(vb, 3, 2); /* seeds 1-3 and 2-4 */
    FitnessDiff d;
    fitness_compare(&a, &b, 0, &d);
    CHECK(d.n == 2); /* seeds 2 and 3 */
    CHECK_NEAR(d.d, ((0.5 - 0.4) + (0.6 - 0.5)) / 2, 1e-12);
    CHECK_NEAR(d.h, 0, 1e-12); /* d_s = 0.1, 0.1 */
}

static void no_common_seeds_compares_means_with_the_floor(void)
{
    const double va[2] = {0.5, 0.5}, vb[2] = {0.4, 0.4};
    FitnessScores a = scores(va, 2, 1), b = scores(vb, 2, 3);
    FitnessDiff d;
    CHECK(fitness_compare(&a, &b, 0.02, &d) == 1);
    CHECK(d.n == 0);
    CHECK_NEAR(d.d, 0.1, 1e-12);
    CHECK_NEAR(d.h, Z * 0.02 * sqrt(1.0 / 2 + 1.0 / 2), 1e-12);
    CHECK(fitness_compare(&a, &b, 0.1, &d) == 0);                              /* 0.1 < 0.196 */
    FitnessScores m = {.mean = 0.5, .se = NAN}, w = {.mean = 0.45, .se = NAN}; /* means only */
    CHECK(fitness_compare(&m, &w, 0.01, &d) == 1);
    CHECK_NEAR(d.h, Z * 0.01 * sqrt(2.0), 1e-12);
    CHECK(fitness_compare(&m, &w, 0.02, &d) == 0);
    FitnessScores none = {.mean = NAN};
    CHECK(fitness_compare(&m, &none, 0, &d) == 0 && fitness_compare(&none, &m, 0, &d) == 0);
}

/* the test is antisymmetric: a against b is b against a, reversed */
static void comparison_is_antisymmetric(void)
{
    uint64_t x = 12345;
    for (int trial = 0; trial < 200; trial++) {
        double va[8], vb[8];
        for (int i = 0; i < 8; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            va[i] = (double)(x >> 11) / 9007199254740992.0;
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            vb[i] = va[i] * 0.3 + (double)(x >> 11) / 9007199254740992.0 * 0.8;
        }
        int n = 1 + trial % 8;
        FitnessScores a = scores(va, n, 1), b = scores(vb, n, 1);
        double noise = (trial % 5) * 0.02;
        CHECK(fitness_compare(&a, &b, noise, NULL) == -fitness_compare(&b, &a, noise, NULL));
    }
}

static void interval_floors_the_standard_error(void)
{
    CHECK_NEAR(fitness_interval(0.01, 4, 0.03), Z * 0.015, 1e-12); /* noise / sqrt(4) wins */
    CHECK_NEAR(fitness_interval(0.02, 4, 0.03), Z * 0.02, 1e-12);  /* se wins */
    CHECK_NEAR(fitness_interval(NAN, 1, 0.02), Z * 0.02, 1e-12);   /* one seed: the floor */
    CHECK_NEAR(fitness_interval(0.01, 4, 0), Z * 0.01, 1e-12);
    CHECK(isnan(fitness_interval(NAN, 1, 0)));
}

static void scores_read_from_an_archived_fitness(void)
{
    json_t *fit = json_loads("{\"value\": 0.7, \"se\": 0.05, \"seeds\": [1, 2, 3], "
                             "\"per_seed\": [0.6, null, 0.8]}",
                             0, NULL);
    FitnessScores s;
    fitness_scores_from_json(fit, &s);
    CHECK(s.mean == 0.7 && s.se == 0.05);
    CHECK(s.n == 2 && s.seeds[0] == 1 && s.seeds[1] == 3 && s.per_seed[1] == 0.8);
    json_decref(fit);
    fit = json_loads("{\"value\": 0.7, \"seeds\": [1, 2], \"per_seed\": [0.6]}", 0, NULL);
    fitness_scores_from_json(fit, &s);
    CHECK(s.mean == 0.7 && s.n == 0 && isnan(s.se)); /* not parallel lists: no pairing */
    json_decref(fit);
    fitness_scores_from_json(NULL, &s);
    CHECK(isnan(s.mean) && s.n == 0);
    FitnessResult r = {
        .fitness = 0.5, .se = 0.1, .n_seeds = 2, .seeds = {4, 5}, .per_seed = {0.4, 0.6}};
    fitness_scores_of(&r, &s);
    CHECK(s.mean == 0.5 && s.se == 0.1 && s.n == 2 && s.seeds[1] == 5 && s.per_seed[0] == 0.4);
}

int main(void)
{
    RUN(t_quantiles_match_closed_forms);
    RUN(standard_error_is_sd_over_sqrt_n);
    RUN(identical_per_seed_values_never_differ);
    RUN(constant_shift_against_the_floor);
    RUN(noisy_shift_resolves_only_with_more_seeds);
    RUN(only_common_seeds_are_paired);
    RUN(no_common_seeds_compares_means_with_the_floor);
    RUN(comparison_is_antisymmetric);
    RUN(interval_floors_the_standard_error);
    RUN(scores_read_from_an_archived_fitness);
    return tl_done();
}
