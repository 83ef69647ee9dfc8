/*
 * discover/probe.h — a loss's behaviour as data: its values and gradients on
 * a fixed probe grid, for duplicate detection, and whether it couples the
 * pairs of a batch, for the quality-diversity grid.
 *
 * Two files that compute the same function (`-logsigmoid(rho)` and
 * `softplus(-rho)`) are one candidate: the discovery loop evaluates only the
 * first. The probe evaluates the loss and the gradient of its batch mean
 * w.r.t. the policy log-probs on fixed batches — a grid of logits from -60 to
 * +60 with varied log-probs and lengths at progress 0, and random pairs with
 * token-level fields at progress 0.6 — and keeps every number. Two
 * behaviours are the same when every number agrees to PROBE_RTOL; the hash
 * of the numbers rounded to PROBE_DIGITS significant digits is their short
 * name (archived, and a fast first test).
 *
 * Coupling: the first pairs of the grid batch are evaluated again beside
 * different companions; a per-pair loss whose values move uses batch
 * statistics. Batch-level losses are coupled by definition.
 *
 * Runs generated code: call it only inside a worker process.
 */
#ifndef PREFRUN_DISCOVER_PROBE_H
#define PREFRUN_DISCOVER_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lua/loss.h"

#define PROBE_VALUES 96 /* numbers kept: loss and two gradients per probe pair */
#define PROBE_DIGITS 4  /* significant digits of the hash */
#define PROBE_RTOL 1e-4 /* two numbers agree: |a - b| <= RTOL * (1 + max(|a|, |b|)) */

typedef struct Behaviour {
    int n; /* numbers in values */
    double values[PROBE_VALUES];
    uint64_t hash; /* of the rounded values */
    bool coupled;  /* the batch's other pairs change a pair's loss */
} Behaviour;

/* Probes the loss file at path (loaded in its own sandbox with limits).
 * Returns 0, or -1 with err set (a script error on the probes). */
int probe_behaviour(const char *path, const LossLimits *limits, Behaviour *out, char *err,
                    size_t errlen);
/* The same numbers, within PROBE_RTOL. */
bool probe_same(const Behaviour *a, const Behaviour *b);
/* The hash of n numbers rounded to PROBE_DIGITS significant digits. */
uint64_t probe_hash(const double *values, int n);

#endif
