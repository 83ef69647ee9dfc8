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

#endif
