/*
 * discover/mpi_eval.h — distributed evaluation for `mpirun -np N prefrun
 * discover`: rank 0 runs the loop as in one process (propose, screen,
 * deduplicate, and the only writer of DIR/archive.jsonl); ranks 1..N-1 are
 * evaluators that take training jobs (hurdle + full fitness of one
 * candidate: its loss text, name, generation and index; the settings came
 * once, at start) and send back the text discover/pool.h's worker produced.
 *
 *   rank 0                                 rank r > 0 (mpi_eval_serve)
 *   mpi_eval_open: settings YAML  ------>  load them, prepare the fitness
 *                                 <------  READY {host, workers}, then a
 *                                          BEAT every 2 s, always
 *   mpi_eval_run: JOB {id, code..} ----->  run it in its own pool (fork,
 *                                 <------  limits, sandbox), RESULT {id, end,
 *                                          text} (the PoolOutcome)
 *   mpi_eval_dismiss: STOP        ------>  kill what runs, remove scratch
 *
 * WHO TRAINS. Every rank, rank 0 included, runs up to `workers` training
 * jobs at once in its own worker pool: -np N --workers W trains N*W
 * candidates at a time. Screening (check + probe, milliseconds) stays in
 * rank 0's pool.
 *
 * WHAT SURVIVES WHAT.
 *   - a job process killed (kill -9, the OOM killer: SIGKILL) on any rank:
 *     the rank's supervisor reports it, and rank 0 re-queues the job on
 *     another rank (MPI_MAX_RETRIES retries, then it is archived as crashed);
 *   - a whole evaluator rank killed or hung (its supervisor silent for
 *     rank_timeout seconds, or a job past its timeout plus rank_timeout):
 *     the rank is given up for the rest of the run, its jobs re-queued.
 *     Open MPI 4.1 aborts the whole job when a rank dies unless mpirun is
 *     given --enable-recovery (tested: the other ranks then go on and sends
 *     to the dead rank return); without it, rerun with the same --out;
 *   - rank 0 killed: the job ends (mpirun kills the rest); a rerun resumes.
 * Every failed attempt is recorded (rank, host, why) in the "attempts" list
 * of the candidate's result; every result records the "rank" and "host"
 * that ran it.
 */
#ifndef PREFRUN_DISCOVER_MPI_EVAL_H
#define PREFRUN_DISCOVER_MPI_EVAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "discover/discover.h"
#include "discover/pool.h"

#define MPI_MAX_RETRIES 2

typedef struct MpiEval MpiEval;

/* Where a job's final outcome came from. */
typedef struct MpiWhere {
    int rank;
    const char *host;
    const json_t *attempts; /* the failed attempts before it; NULL when none */
} MpiWhere;

/* the job's description for an evaluator rank: {"name", "gen", "idx", "code"} */
typedef json_t *(*MpiJobFn)(void *arg, size_t i);
typedef void (*MpiDoneFn)(void *arg, size_t i, const PoolOutcome *o, const MpiWhere *w);

/* Rank 0: the evaluator ranks, once settings are final and the fitness is
 * prepared (their settings are o's). NULL with err empty in a world of
 * one; NULL with err set on a failure. */
MpiEval *mpi_eval_open(const DiscoverOptions *o, char *err, size_t errlen);
/* Runs jobs 0..n-1 on rank 0's pool (work) and the evaluator ranks (job),
 * each outcome to done, re-queueing lost ones; 0, or -1 with err set when
 * rank 0 itself cannot go on. */
int mpi_eval_run(MpiEval *m, size_t n, PoolWorkFn work, MpiJobFn job, MpiDoneFn done, void *arg,
                 const PoolLimits *lim, char *err, size_t errlen);
void mpi_eval_close(MpiEval *m);

/* Rank 0, at exit: tells every evaluator to stop (also when discover never
 * opened them: a usage error). True when some rank was given up (then
 * MPI_Finalize, which waits on every rank, must not be called). */
bool mpi_eval_dismiss(void);

/* Ranks > 0: the evaluator's life, until STOP; 0, or -1 with err set. */
int mpi_eval_serve(char *err, size_t errlen);

#endif
