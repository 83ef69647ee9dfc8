/*
 * util/mpi_comm.h — the one door to MPI (util/mpi_comm.c is the only file
 * that includes <mpi.h>): start-up, who am I, text messages that never block,
 * and the reduction data-parallel training will sum its gradients with.
 *
 *     if (comm_init(err, sizeof err) != 0) ...   // MPI_Init only under a launcher
 *     if (comm_size() > 1 && comm_rank() == 0) ...
 *     comm_send(1, TAG, text, strlen(text), err, sizeof err);
 *     while ((got = comm_recv(&from, &tag, &text, &len, err, sizeof err)) == 1) ...
 *     comm_finalize();
 *
 * WHEN MPI STARTS. Only when an MPI launcher started this process (mpirun,
 * mpiexec, srun: their environment variables, see comm_launched). Open MPI
 * 4.1 can also start a lone process as a "singleton", but that costs a
 * third of a second and a helper daemon on every plain `prefrun` command, for
 * a world of one; so a plain run, and every build without MPI
 * (-Dmpi=disabled, no PREFRUN_HAVE_MPI), is rank 0 of 1 and never touches
 * MPI.
 *
 * ERRORS RETURN. MPI_COMM_WORLD's error handler is MPI_ERRORS_RETURN, so a
 * failed call is a -1 with err set here, not an abort of the whole job.
 *
 * NEVER BLOCKING. comm_send copies the text and posts an MPI_Isend; sends
 * are completed by later comm_send/comm_recv calls (comm_progress). comm_recv
 * is MPI_Iprobe: 0 at once when nothing is there. A blocking MPI call in
 * Open MPI spins a core at 100%, which would steal it from the training
 * workers of the same machine, and a blocking send to a rank that died would
 * never return; callers sleep in poll() instead (discover/pool.h).
 *
 * Threads: MPI_THREAD_SINGLE; only the calling process's main thread talks
 * MPI. Children forked after comm_init (the worker pool) must not call any
 * comm_ function: they inherit no usable MPI state.
 */
#ifndef PREFRUN_UTIL_MPI_COMM_H
#define PREFRUN_UTIL_MPI_COMM_H

#include <stdbool.h>
#include <stddef.h>

#define COMM_HOST_LEN 256

/* true when this binary was built with MPI (PREFRUN_HAVE_MPI) */
bool comm_built(void);
/* true when an MPI launcher's environment is present (OMPI_COMM_WORLD_SIZE,
 * PMIX_RANK, PMI_RANK or PMI_SIZE) */
bool comm_launched(void);
/* MPI_Init when built with MPI and launched; a no-op otherwise, and when
 * called again. Launched by mpirun without MPI built in is an error (each
 * rank would run the whole loop on the same directory). */
int comm_init(char *err, size_t errlen);
/* 0 and 1 without MPI */
int comm_rank(void);
int comm_size(void);
/* MPI_Get_processor_name, or gethostname without MPI */
const char *comm_host(void);

/* Sends len bytes to rank `to` (a copy is kept until the send completes). */
int comm_send(int to, int tag, const char *data, size_t len, char *err, size_t errlen);
/* 1 with a message (*data malloc'ed, NUL-terminated, the caller frees),
 * 0 when none is waiting, -1 with err set. */
int comm_recv(int *from, int *tag, char **data, size_t *len, char *err, size_t errlen);
/* completes what sends it can; the number still pending */
int comm_progress(void);
/* drops the pending sends to a rank given up for lost (never completed) */
void comm_forget(int rank);

/* In-place elementwise sums over all ranks in a fixed order: rank 0 adds
 * rank 1's values, then rank 2's, ..., then broadcasts, so the result is
 * bit-identical for a given world size whatever the network (MPI_Allreduce
 * may pick its reduction tree by message size). No-ops in a world of one.
 * The float one is data-parallel training's gradient sum. */
int comm_allreduce_sum(double *v, size_t n, char *err, size_t errlen);
int comm_allreduce_sum_float(float *v, size_t n, char *err, size_t errlen);
/* Every rank's `mine` (counts[r] values from rank r; n == counts[rank]),
 * concatenated in rank order into all, on every rank: exact copies. */
int comm_allgather_float(const float *mine, int n, float *all, const int *counts, char *err,
                         size_t errlen);
/* Rank 0's len bytes of buf to every rank (buf ends NUL-terminated). */
int comm_bcast_text(char *buf, size_t len, char *err, size_t errlen);
/* MPI_Abort of the whole job, for a rank that fails where its peers would
 * wait for it for ever (a collective it will not reach); no-op in a world
 * of one. Collectives here never spin a core while they wait. */
void comm_abort(int code);

/* MPI_Finalize when comm_init started MPI (skipped when skip_wait: a rank
 * was lost and a finalize would wait on it); no-op otherwise. */
void comm_finalize(bool skip_wait);

#endif
