/*
 * discover/compare.c — the paired comparison of two fitnesses, floored by
 * the measured noise, the interval of one fitness, and the measurement of
 * that noise (discover/compare.h, where the test is described).
 */
#include "discover/compare.h"

#include <math.h>
#include <string.h>

#include "util/errmsg.h"
#include "util/timeutil.h"

#define Z975 FITNESS_Z975

/* t(0.975, df) for df = 1..30; checked against a numerical integration of
 * Student's density (and df 1, 2 against their closed forms in the tests) */
static const double t975[31] = {
    NAN,    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788,  2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796,
    2.0739, 2.0687,  2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
};

double fitness_t975(int df)
{
    if (df < 1)
        return NAN;
    if (df <= 30)
        return t975[df];
    /* beyond the table: the Cornish-Fisher expansion in 1/df (error < 1e-4 here) */
    double z = Z975, v = df;
    return z + (z * z * z + z) / (4 * v) + (5 * pow(z, 5) + 16 * z * z * z + 3 * z) / (96 * v * v);
}

double fitness_interval(double se, int n, double noise_sd)
{
    double floor = noise_sd > 0 ? noise_sd / sqrt(n > 1 ? n : 1) : NAN;
    double s = fmax(se, floor); /* fmax: the other when one is NAN */
    return isnan(s) ? NAN : Z975 * s;
}

/* ---- the scores ----------------------------------------------------------------------- */

void fitness_scores_of(const FitnessResult *r, FitnessScores *out)
{
    memset(out, 0, sizeof *out);
    out->mean = r->fitness;
    out->se = r->n_seeds > 1 ? r->se : NAN;
    for (int i = 0; i < r->n_seeds && i < FITNESS_MAX_SEEDS; i++) {
        out->seeds[out->n] = r->seeds[i];
        out->per_seed[out->n++] = r->per_seed[i];
    }
}

static double num(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

void fitness_scores_from_json(const json_t *fit, FitnessScores *out)
{
    memset(out, 0, sizeof *out);
    out->mean = num(fit, "value");
    out->se = num(fit, "se");
    const json_t *seeds = json_object_get(fit, "seeds"), *per = json_object_get(fit, "per_seed");
    size_t n = json_array_size(seeds);
    if (n != json_array_size(per)) /* not a pair of parallel lists: no pairing */
        return;
    for (size_t i = 0; i < n && out->n < FITNESS_MAX_SEEDS; i++) {
        const json_t *s = json_array_get(seeds, i), *v = json_array_get(per, i);
        if (!json_is_integer(s) || json_integer_value(s) < 0 || !json_is_number(v))
            continue; /* a seed without a value (null: NaN) is left out of the pairing */
        out->seeds[out->n] = (uint64_t)json_integer_value(s);
        out->per_seed[out->n++] = json_number_value(v);
    }
}

/* ---- the test ---------------------------------------------------------------------------- */

/* the paired differences over the seeds both have; their count */
static int paired(const FitnessScores *a, const FitnessScores *b, double *d)
{
    int n = 0;
    for (int i = 0; i < a->n; i++)
        for (int j = 0; j < b->n; j++)
            if (a->seeds[i] == b->seeds[j] && isfinite(a->per_seed[i]) &&
                isfinite(b->per_seed[j])) {
                d[n++] = a->per_seed[i] - b->per_seed[j];
                break;
            }
    return n;
}

static void paired_diff(const double *d, int n, double noise, FitnessDiff *out)
{
    double mean = 0, ss = 0;
    for (int i = 0; i < n; i++)
        mean += d[i] / n;
    for (int i = 0; i < n; i++)
        ss += (d[i] - mean) * (d[i] - mean);
    double t_term = n > 1 ? fitness_t975(n - 1) * sqrt(ss / (n - 1)) / sqrt((double)n) : NAN;
    double floor = Z975 * noise * sqrt(2.0 / n);
    *out = (FitnessDiff){.d = mean, .h = fmax(t_term, floor), .n = n};
}

int fitness_compare(const FitnessScores *a, const FitnessScores *b, double noise_sd,
                    FitnessDiff *out)
{
    FitnessDiff tmp;
    if (!out)
        out = &tmp;
    double noise = noise_sd > 0 ? noise_sd : 0; /* NAN too */
    double d[FITNESS_MAX_SEEDS];
    int n = paired(a, b, d);
    if (n > 0) {
        paired_diff(d, n, noise, out);
    } else {
        double na = a->n > 0 ? a->n : 1, nb = b->n > 0 ? b->n : 1;
        *out = (FitnessDiff){
            .d = a->mean - b->mean, .h = Z975 * noise * sqrt(1 / na + 1 / nb), .n = 0};
    }
    if (!isfinite(out->d))
        return 0;
    return out->d > out->h ? 1 : out->d < -out->h ? -1 : 0;
}

/* ---- measuring the noise ------------------------------------------------------------------- */

int fitness_noise_floor(const FitnessKind *k, const Config *train, int steps, const char *loss_path,
                        int n_seeds, const char *work_dir, FILE *progress, NoiseFloor *out,
                        char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (n_seeds < 2 || n_seeds > NOISE_MAX_SEEDS)
        return err_fail(err, errlen, "noise floor: 2 to %d seeds (got %d)", NOISE_MAX_SEEDS,
                        n_seeds);
    double t0 = timeutil_now();
    FitnessOptions fo = {.cfg = *train, .steps = steps, .n_seeds = 1, .work_dir = work_dir};
    for (int i = 0; i < n_seeds; i++) {
        FitnessResult r;
        fo.seeds[0] = (uint64_t)i + 1;
        char msg[1024];
        if (k->fn(loss_path, &fo, &r, msg, sizeof msg) != 0)
            return err_fail(err, errlen, "%s, seed %d: %s", loss_path, i + 1, msg);
        out->per_seed[out->n++] = r.fitness;
        if (progress)
            fprintf(progress, "seed %-3d %s %.6f  (%d steps, %.1f s)\n", i + 1, r.metric, r.fitness,
                    r.steps, r.seconds);
    }
    for (int i = 0; i < out->n; i++)
        out->mean += out->per_seed[i] / out->n;
    out->se = fitness_standard_error(out->per_seed, out->n);
    out->sd = out->se * sqrt((double)out->n);
    out->seconds = timeutil_now() - t0;
    return 0;
}
