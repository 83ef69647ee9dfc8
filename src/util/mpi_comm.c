/*
 * util/mpi_comm.c — the MPI wrapper (util/mpi_comm.h); the only file that
 * includes <mpi.h>. Without PREFRUN_HAVE_MPI every function is the world of
 * one: rank 0, size 1, sends to nobody.
 *
 * Pending sends are a small array of (request, buffer): MPI_Isend needs the
 * buffer alive until the request completes, and a send to a dead rank never
 * completes, so comm_forget drops those without waiting on them.
 */
#include "util/mpi_comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util/errmsg.h"
#include "prefrun_config.h"

#ifdef PREFRUN_HAVE_MPI
#include <mpi.h>
#endif

static struct {
    bool started;
    int rank, size;
    char host[COMM_HOST_LEN];
} g = {.size = 1};

bool comm_launched(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (getenv(vars[i]))
            return true;
    return false;
}

int comm_rank(void) { return g.rank; }

int comm_size(void) { return g.size; }

static void plain_host(void)
{
    if (!g.host[0] && gethostname(g.host, sizeof g.host - 1) != 0)
        snprintf(g.host, sizeof g.host, "localhost");
}

const char *comm_host(void)
{
    plain_host();
    return g.host;
}

#ifdef PREFRUN_HAVE_MPI

typedef struct Pending {
    MPI_Request req;
    char *buf;
    int to;
} Pending;

static Pending *pend;
static int n_pend, cap_pend;

bool comm_built(void) { return true; }

static int mpi_fail(int rc, const char *what, char *err, size_t errlen)
{
    char msg[MPI_MAX_ERROR_STRING] = "";
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    return err_fail(err, errlen, "MPI: %s failed: %s", what, msg);
}

int comm_init(char *err, size_t errlen)
{
    if (g.started || !comm_launched())
        return 0;
    int rc = MPI_Init(NULL, NULL);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Init", err, errlen);
    g.started = true;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g.size);
    int len = 0;
    if (MPI_Get_processor_name(g.host, &len) != MPI_SUCCESS || len <= 0)
        plain_host();
    return 0;
}

int comm_progress(void)
{
    int k = 0;
    for (int i = 0; i < n_pend; i++) {
        int done = 0;
        if (MPI_Test(&pend[i].req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done)
            free(pend[i].buf);
        else
            pend[k++] = pend[i];
    }
    n_pend = k;
    return n_pend;
}

int comm_send(int to, int tag, const char *data, size_t len, char *err, size_t errlen)
{
    if (!g.started || to < 0 || to >= g.size || len > (size_t)1 << 30)
        return err_fail(err, errlen, "MPI: no rank %d to send %zu bytes to (world of %d)", to, len,
                        g.size);
    comm_progress();
    if (n_pend == cap_pend) {
        int cap = cap_pend ? 2 * cap_pend : 16;
        Pending *np = realloc(pend, (size_t)cap * sizeof *np);
        if (!np)
            return err_fail(err, errlen, "MPI: out of memory");
        pend = np;
        cap_pend = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return err_fail(err, errlen, "MPI: out of memory");
    memcpy(copy, data, len);
    Pending *p = &pend[n_pend];
    int rc = MPI_Isend(copy, (int)len, MPI_CHAR, to, tag, MPI_COMM_WORLD, &p->req);
    if (rc != MPI_SUCCESS) {
        free(copy);
        return mpi_fail(rc, "MPI_Isend", err, errlen);
    }
    p->buf = copy;
    p->to = to;
    n_pend++;
    return 0;
}

int comm_recv(int *from, int *tag, char **data, size_t *len, char *err, size_t errlen)
{
    *data = NULL;
    *len = 0;
    if (!g.started)
        return 0;
    comm_progress();
    int flag = 0, count = 0;
    MPI_Status st;
    int rc = MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &st);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Iprobe", err, errlen);
    if (!flag)
        return 0;
    MPI_Get_count(&st, MPI_CHAR, &count);
    char *buf = malloc((size_t)count + 1);
    if (!buf)
        return err_fail(err, errlen, "MPI: out of memory for a %d-byte message", count);
    /* the message is there (probed): this receive does not wait */
    rc = MPI_Recv(buf, count, MPI_CHAR, st.MPI_SOURCE, st.MPI_TAG, MPI_COMM_WORLD,
                  MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
        free(buf);
        return mpi_fail(rc, "MPI_Recv", err, errlen);
    }
    buf[count] = '\0';
    *from = st.MPI_SOURCE;
    *tag = st.MPI_TAG;
    *data = buf;
    *len = (size_t)count;
    return 1;
}

void comm_forget(int rank)
{
    int k = 0;
    for (int i = 0; i < n_pend; i++) {
        if (pend[i].to == rank) {
            /* a request to a dead peer never completes: MPI_Request_free
             * lets the library drop it; its buffer is leaked on purpose,
             * as MPI may still read it */
            MPI_Request_free(&pend[i].req);
        } else {
            pend[k++] = pend[i];
        }
    }
    n_pend = k;
}

/* Waits for a request without spinning a core: a rank that waits here
 * (on a peer still evaluating or saving) must not steal the CPU of the
 * peers that share its machine. Short waits stay short: the first
 * thousand tests do not sleep. */
static int wait_polite(MPI_Request *req)
{
    for (long i = 0;; i++) {
        int done = 0;
        int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS || done)
            return rc;
        if (i > 1000) {
            struct timespec ts = {0, i > 100000 ? 2000000 : 50000};
            nanosleep(&ts, NULL);
        }
    }
}

/* The fixed-order sum of n values of type t: rank 0 adds rank 1's, then
 * rank 2's, ..., then broadcasts; elt is sizeof one value. */
static int reduce_fixed(void *v, size_t n, MPI_Datatype t, size_t elt, const char *what, char *err,
                        size_t errlen)
{
    if (n > (size_t)1 << 30)
        return err_fail(err, errlen, "MPI: %s of %zu values is too long", what, n);
    int rc = MPI_SUCCESS;
    MPI_Request req;
    if (g.rank == 0) {
        void *tmp = malloc(n * elt);
        if (!tmp)
            return err_fail(err, errlen, "MPI: out of memory for %s", what);
        for (int r = 1; r < g.size && rc == MPI_SUCCESS; r++) { /* rank order: fixed sums */
            rc = MPI_Irecv(tmp, (int)n, t, r, 0x7ED, MPI_COMM_WORLD, &req);
            rc = rc == MPI_SUCCESS ? wait_polite(&req) : rc;
            if (rc == MPI_SUCCESS && t == MPI_FLOAT)
                for (size_t i = 0; i < n; i++)
                    ((float *)v)[i] += ((const float *)tmp)[i];
            else if (rc == MPI_SUCCESS)
                for (size_t i = 0; i < n; i++)
                    ((double *)v)[i] += ((const double *)tmp)[i];
        }
        free(tmp);
    } else {
        rc = MPI_Isend(v, (int)n, t, 0, 0x7ED, MPI_COMM_WORLD, &req);
        rc = rc == MPI_SUCCESS ? wait_polite(&req) : rc;
    }
    if (rc == MPI_SUCCESS)
        rc = MPI_Ibcast(v, (int)n, t, 0, MPI_COMM_WORLD, &req);
    rc = rc == MPI_SUCCESS ? wait_polite(&req) : rc;
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, what, err, errlen);
}

int comm_allreduce_sum(double *v, size_t n, char *err, size_t errlen)
{
    if (!g.started || g.size == 1 || n == 0)
        return 0;
    return reduce_fixed(v, n, MPI_DOUBLE, sizeof *v, "a sum", err, errlen);
}

int comm_allreduce_sum_float(float *v, size_t n, char *err, size_t errlen)
{
    if (!g.started || g.size == 1 || n == 0)
        return 0;
    return reduce_fixed(v, n, MPI_FLOAT, sizeof *v, "the gradient sum", err, errlen);
}

int comm_allgather_float(const float *mine, int n, float *all, const int *counts, char *err,
                         size_t errlen)
{
    if (!g.started || g.size == 1) {
        memcpy(all, mine, (size_t)n * sizeof *all);
        return 0;
    }
    int *displs = malloc((size_t)g.size * sizeof *displs);
    if (!displs)
        return err_fail(err, errlen, "MPI: out of memory");
    for (int r = 0, at = 0; r < g.size; at += counts[r], r++)
        displs[r] = at;
    MPI_Request req;
    int rc =
        MPI_Iallgatherv(mine, n, MPI_FLOAT, all, counts, displs, MPI_FLOAT, MPI_COMM_WORLD, &req);
    rc = rc == MPI_SUCCESS ? wait_polite(&req) : rc;
    free(displs);
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "the log-prob gather", err, errlen);
}

int comm_bcast_text(char *buf, size_t len, char *err, size_t errlen)
{
    if (!g.started || g.size == 1 || len == 0)
        return 0;
    if (len > (size_t)1 << 30)
        return err_fail(err, errlen, "MPI: a %zu-byte broadcast is too long", len);
    MPI_Request req;
    int rc = MPI_Ibcast(buf, (int)len, MPI_CHAR, 0, MPI_COMM_WORLD, &req);
    rc = rc == MPI_SUCCESS ? wait_polite(&req) : rc;
    buf[len - 1] = '\0';
    return rc == MPI_SUCCESS ? 0 : mpi_fail(rc, "a broadcast", err, errlen);
}

void comm_abort(int code)
{
    if (g.started && g.size > 1)
        MPI_Abort(MPI_COMM_WORLD, code);
}

void comm_finalize(bool skip_wait)
{
    if (!g.started)
        return;
    comm_progress();
    if (!skip_wait)
        MPI_Finalize();
    g.started = false;
}

#else /* no MPI: the world of one */

bool comm_built(void) { return false; }

int comm_init(char *err, size_t errlen)
{
    if (comm_launched() && getenv("OMPI_COMM_WORLD_SIZE") &&
        atoi(getenv("OMPI_COMM_WORLD_SIZE")) > 1)
        return err_fail(err, errlen,
                        "started by mpirun with %s ranks, but this prefrun was built without "
                        "MPI (meson setup -Dmpi=enabled)",
                        getenv("OMPI_COMM_WORLD_SIZE"));
    return 0;
}

int comm_send(int to, int tag, const char *data, size_t len, char *err, size_t errlen)
{
    (void)tag;
    (void)data;
    return err_fail(err, errlen, "MPI: no rank %d to send %zu bytes to (built without MPI)", to,
                    len);
}

int comm_recv(int *from, int *tag, char **data, size_t *len, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    *from = *tag = 0;
    *data = NULL;
    *len = 0;
    return 0;
}

int comm_progress(void) { return 0; }

void comm_forget(int rank) { (void)rank; }

int comm_allreduce_sum(double *v, size_t n, char *err, size_t errlen)
{
    (void)v;
    (void)n;
    (void)err;
    (void)errlen;
    return 0;
}

int comm_allreduce_sum_float(float *v, size_t n, char *err, size_t errlen)
{
    (void)v;
    (void)n;
    (void)err;
    (void)errlen;
    return 0;
}

int comm_allgather_float(const float *mine, int n, float *all, const int *counts, char *err,
                         size_t errlen)
{
    (void)counts;
    (void)err;
    (void)errlen;
    memcpy(all, mine, (size_t)n * sizeof *all);
    return 0;
}

int comm_bcast_text(char *buf, size_t len, char *err, size_t errlen)
{
    (void)buf;
    (void)len;
    (void)err;
    (void)errlen;
    return 0;
}

void comm_abort(int code) { (void)code; }

void comm_finalize(bool skip_wait) { (void)skip_wait; }

#endif
