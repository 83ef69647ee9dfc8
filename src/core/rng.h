/*
 * core/rng.h — a small deterministic random number generator (xoshiro128+ style
 * state seeded by splitmix64). Every random choice in prefrun (weight init,
 * data order, sampling, probes, task generation) draws from an Rng seeded
 * from the run's seed, so the same seed gives the same numbers everywhere.
 */
#ifndef PREFRUN_RNG_H
#define PREFRUN_RNG_H

#include <stdint.h>

typedef struct Rng {
    uint64_t s[4];
} Rng;

void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_u64(Rng *r);
double rng_uniform(Rng *r);             /* [0, 1) */
float rng_normal(Rng *r);               /* standard normal (Box-Muller) */
uint32_t rng_below(Rng *r, uint32_t n); /* uniform in [0, n), n > 0 */
void rng_shuffle(Rng *r, int32_t *a, int64_t n);

#endif
