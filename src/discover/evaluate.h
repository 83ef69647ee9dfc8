/*
 * discover/evaluate.h — the evaluation cascade of one generation, called by
 * the loop's driver (discover/loop.c) after each proposal step: screen, then
 * hurdle and full training, each result archived (discover/evaluate.c). Not a
 * public interface.
 */
#ifndef PREFRUN_DISCOVER_EVALUATE_H
#define PREFRUN_DISCOVER_EVALUATE_H

#include <stddef.h>

#include "discover/loop.h"

/* Screens, trains and archives the pending candidates of generation gen. */
int discover_evaluate(Loop *L, int gen, char *err, size_t errlen);

/* The training job of one candidate — the hurdle, then the full fitness —
 * as the JSON text a worker returns ({"hurdle"?, "full"?, "curve",
 * "passed"} or {"error", "stage"}); runs in a worker process (tensor code).
 * scrub is taken out of error messages (the scratch directory's path). Also
 * what an evaluator rank runs (discover/mpi_eval.h). */
char *discover_train_text(const DiscoverOptions *o, const FitnessKind *f, const char *path,
                          const char *run_dir, const char *scrub);

#endif
