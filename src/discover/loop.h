/*
 * discover/loop.h — what the discovery loop's files share: the state of
 * one run (Loop) and of the candidates of the generation being evaluated.
 * discover/loop.c proposes and drives the generations; discover/evaluate.c
 * (discover/evaluate.h) screens, trains and archives results. Types only: no
 * function is declared here, so neither file calls the other through it.
 * Not a public interface.
 */
#ifndef PREFRUN_DISCOVER_LOOP_H
#define PREFRUN_DISCOVER_LOOP_H

#include <jansson.h>

#include "discover/discover.h"
#include "discover/archive.h"

/* the one build of a fitness's reference (minutes); a hang is not */
#define DISCOVER_PREPARE_WALL_SECONDS 7200

struct MpiEval;

/* One candidate under evaluation, in the parent. */
typedef struct Cand {
    int gen, idx;
    char name[ARCHIVE_NAME_LEN];
    char path[DISCOVER_PATH_LEN + 96]; /* its code, work/NAME.lua */
    json_t *screen;                    /* the screening worker's report (NULL: it failed) */
    char failure[320];                 /* why the screening worker failed */
    int end;                           /* the screening worker's PoolEnd */
    double screen_seconds;
    Behaviour behaviour;
    bool accepted; /* passed the checks, not a duplicate: to be trained */
} Cand;

typedef struct Loop {
    const DiscoverOptions *o;
    Archive *ar;
    Proposer *proposer;
    const FitnessKind *fitness;
    char losses_dir[DISCOVER_PATH_LEN + 16];
    char work_dir[DISCOVER_PATH_LEN + 16];
    struct MpiEval *mpi; /* the evaluator ranks under mpirun; NULL in one process */
    Cand *cands;         /* the generation's pending candidates */
    int n_cands;
    int trained; /* training jobs finished in this process, for the rate */
    double t0;
    char err[1024]; /* the first archive write failure inside a pool callback */
    bool failed;
} Loop;

#endif
