/*
 * discover/pool.h — running jobs in bounded worker processes, several at a
 * time: the discovery loop's second line of defence around generated code.
 *
 *     PoolLimits lim = {.workers = 2, .wall_seconds = 600, .cpu_seconds = 900,
 *                       .mem_bytes = 2ul << 30};
 *     pool_run(n_jobs, work, done, arg, &lim, err, sizeof err);
 *
 * Each job runs work(arg, i) in a forked child; the text it returns is sent
 * to the parent through a pipe and handed to done(arg, i, outcome) in the
 * parent as soon as that child ends, in completion order. The child:
 *   - dies with its parent (PR_SET_PDEATHSIG), so killing the loop with -9
 *     leaves no worker writing behind it;
 *   - has RLIMIT_CPU (SIGXCPU, then SIGKILL one second later) and RLIMIT_AS
 *     (its address space at fork plus mem_bytes; not under ASan, whose shadow
 *     memory is terabytes of address space) and every inherited descriptor but
 *     stdin, stdout, stderr and its pipe closed;
 *   - is killed (SIGKILL) by the parent past wall_seconds.
 * A child that crashes, is killed, exits without a result or times out
 * yields an outcome with end != POOL_OK and a message saying which, for the
 * candidate's diagnostic; the pool itself goes on.
 *
 * The same pool step by step, for a caller that also waits on something else
 * (the MPI evaluator ranks, discover/mpi_eval.h): pool_new, then pool_start
 * a job whenever pool_idle > 0, and pool_wait(p, ms) in the caller's loop —
 * it sleeps at most ms (in poll, not spinning) and hands each ended job to
 * done; pool_free kills what still runs.
 *
 * The parent must not have started OpenMP or BLAS threads before pool_run
 * (a forked child inherits no thread pool, and libgomp's is not fork-safe):
 * the discovery loop runs every tensor computation inside workers.
 */
#ifndef PREFRUN_DISCOVER_POOL_H
#define PREFRUN_DISCOVER_POOL_H

#include <stddef.h>

typedef enum PoolEnd {
    POOL_OK = 0,  /* exited 0 after sending its text */
    POOL_TIMEOUT, /* killed by the parent past wall_seconds */
    POOL_SIGNAL,  /* killed by a signal (SIGXCPU, SIGKILL, SIGSEGV, ...) */
    POOL_EXIT,    /* exited nonzero, or zero without a result */
    POOL_START,   /* fork or pipe failed: the job never ran */
} PoolEnd;

typedef struct PoolLimits {
    int workers;         /* children at a time (>= 1) */
    double wall_seconds; /* per job; <= 0: none */
    double cpu_seconds;  /* per job; <= 0: none */
    size_t mem_bytes;    /* address space a job may add; 0: none */
} PoolLimits;

typedef struct PoolOutcome {
    PoolEnd end;
    int code;   /* the signal or exit status */
    char *text; /* what work returned (NUL-terminated); NULL unless POOL_OK */
    size_t len;
    double seconds; /* wall clock of the job */
    char message[256];
} PoolOutcome;

/* Runs in the child; returns malloc'ed text (NULL: the job failed). */
typedef char *(*PoolWorkFn)(void *arg, size_t i);
/* Runs in the parent when job i ends; o->text is freed after it returns. */
typedef void (*PoolDoneFn)(void *arg, size_t i, const PoolOutcome *o);

/* Runs jobs 0..n-1. Returns 0 when every job got an outcome (whatever its
 * end), -1 with err set on a failure of the pool itself (poll failed). */
int pool_run(size_t n, PoolWorkFn work, PoolDoneFn done, void *arg, const PoolLimits *lim,
             char *err, size_t errlen);

typedef struct Pool Pool;
/* NULL when out of memory; lim, work, done and arg serve every job */
Pool *pool_new(const PoolLimits *lim, PoolWorkFn work, PoolDoneFn done, void *arg);
/* Starts job in a free slot: 0 (a failed fork is reported to done as
 * POOL_START), -1 when every slot is busy. */
int pool_start(Pool *p, size_t job);
int pool_idle(const Pool *p);
int pool_busy(const Pool *p);
/* Waits up to max_ms for children (the nearest wall-clock deadline
 * earlier), reaps those that ended and kills those past their limit; -1 when
 * poll itself fails. */
int pool_wait(Pool *p, int max_ms);
/* Kills what still runs (each reported to done as POOL_TIMEOUT), frees p. */
void pool_free(Pool *p);

#endif
