/*
 * discover/mpi_eval.c — distributed evaluation over MPI (discover/mpi_eval.h):
 * rank 0's dispatcher (mpi_eval_run) and the evaluator ranks' supervisor
 * (mpi_eval_serve). Messages go through util/mpi_comm.h, never blocking:
 * both sides loop over "receive what is there, start what can start, check
 * deadlines, sleep in poll() for up to POLL_MS" so that an idle rank costs no
 * CPU the training workers of its machine could use.
 *
 * The rank table is this process's (one loop per process): mpi_eval_dismiss
 * at exit reads which ranks were given up.
 */
#include "discover/mpi_eval.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "discover/archive.h"
#include "discover/evaluate.h"
#include "discover/loop.h"
#include "util/errmsg.h"
#include "util/fsutil.h"
#include "util/mpi_comm.h"
#include "util/timeutil.h"

enum { TAG_SETTINGS = 1, TAG_READY, TAG_BEAT, TAG_JOB, TAG_RESULT, TAG_STOP };

#define POLL_MS 20
#define BEAT_SECONDS 2.0

typedef enum RankState { R_WAIT, R_READY, R_LOST } RankState;

typedef struct Rank {
    RankState state;
    char host[COMM_HOST_LEN];
    int cap, busy;
    double seen; /* last message */
} Rank;

struct MpiEval {
    Rank *ranks; /* [0] is rank 0's own pool */
    int n;
    double rank_timeout;
    bool quiet;
    double t0;
    int evaluated; /* final outcomes, for the rate */
    int next_id;
};

static MpiEval g_m; /* this process's: see the header comment */
static bool g_open;

static char *dumps(json_t *j)
{
    char *t = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(j);
    return t;
}

static const char *str_or(const json_t *j, const char *key, const char *dflt)
{
    const char *v = json_string_value(json_object_get(j, key));
    return v ? v : dflt;
}

static int send_json(int to, int tag, json_t *j, char *err, size_t errlen)
{
    char *t = dumps(j);
    if (!t)
        return err_fail(err, errlen, "discover: out of memory for a message to rank %d", to);
    int rc = comm_send(to, tag, t, strlen(t), err, errlen);
    free(t);
    return rc;
}

/* ---- rank 0: the rank table ------------------------------------------------------------ */

MpiEval *mpi_eval_open(const DiscoverOptions *o, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (comm_size() <= 1 || comm_rank() != 0)
        return NULL;
    MpiEval *m = &g_m;
    if (!g_open) {
        m->ranks = calloc((size_t)comm_size(), sizeof *m->ranks);
        if (!m->ranks) {
            err_fail(err, errlen, "discover: out of memory");
            return NULL;
        }
        m->n = comm_size();
        m->t0 = timeutil_now();
        char *yaml = discover_to_yaml(o);
        for (int r = 1; yaml && r < m->n; r++) {
            m->ranks[r].seen = m->t0;
            if (comm_send(r, TAG_SETTINGS, yaml, strlen(yaml), err, errlen) != 0)
                m->ranks[r].state = R_LOST;
        }
        free(yaml);
        g_open = true;
    }
    m->ranks[0] = (Rank){.state = R_READY, .cap = o->workers, .seen = timeutil_now()};
    snprintf(m->ranks[0].host, sizeof m->ranks[0].host, "%s", comm_host());
    m->rank_timeout = o->rank_timeout;
    m->quiet = o->quiet;
    return m;
}

void mpi_eval_close(MpiEval *m)
{
    (void)m; /* the table lives until mpi_eval_dismiss: the next generation uses it */
}

bool mpi_eval_dismiss(void)
{
    if (comm_size() <= 1 || comm_rank() != 0)
        return false;
    bool lost = false;
    char err[256];
    for (int r = 1; r < comm_size(); r++) {
        if (g_open && g_m.ranks[r].state == R_LOST)
            lost = true;
        else
            comm_send(r, TAG_STOP, "", 0, err, sizeof err);
    }
    for (int i = 0; i < 50 && comm_progress() > 0; i++) /* let the STOPs out */
        poll(NULL, 0, POLL_MS);
    free(g_m.ranks);
    g_m = (MpiEval){0};
    g_open = false;
    return lost;
}

/* ---- rank 0: one run of jobs -------------------------------------------------------------- */

typedef enum JobState { J_QUEUED, J_RUNNING, J_DONE } JobState;

typedef struct Job {
    JobState state;
    int rank, id, avoid; /* where it runs; the attempt's id; the rank that failed it */
    double t_sent;
    json_t *attempts; /* failed attempts */
} Job;

typedef struct Run {
    MpiEval *m;
    Job *jobs;
    size_t n, left;
    PoolWorkFn work;
    MpiJobFn job;
    MpiDoneFn done;
    void *arg;
    const PoolLimits *lim;
    Pool *local;
} Run;

static void progress_line(const Run *run)
{
    const MpiEval *m = run->m;
    char line[1024];
    int k = snprintf(line, sizeof line, "discover: in flight:");
    for (int r = 0; r < m->n && k < (int)sizeof line - 40; r++) {
        if (m->ranks[r].state == R_LOST)
            k += snprintf(line + k, sizeof line - (size_t)k, " rank %d lost,", r);
        else
            k += snprintf(line + k, sizeof line - (size_t)k, " rank %d %d/%d,", r, m->ranks[r].busy,
                          m->ranks[r].cap);
    }
    int queued = 0;
    for (size_t i = 0; i < run->n; i++)
        queued += run->jobs[i].state == J_QUEUED;
    double hours = (timeutil_now() - m->t0) / 3600.0;
    snprintf(line + k, sizeof line - (size_t)k, " %d queued; %d evaluated, %.0f per hour", queued,
             m->evaluated, hours > 0 ? m->evaluated / hours : 0.0);
    fprintf(stderr, "%s\n", line);
}

/* one outcome of job i on rank r: the final one, or a lost attempt re-queued */
static void settle(Run *run, size_t i, const PoolOutcome *o, int r, bool lost)
{
    Job *j = &run->jobs[i];
    MpiEval *m = run->m;
    if (m->ranks[r].busy > 0)
        m->ranks[r].busy--;
    lost = lost || (o->end == POOL_SIGNAL && o->code == SIGKILL) || o->end == POOL_START;
    if (lost) {
        if (!j->attempts)
            j->attempts = json_array();
        json_array_append_new(j->attempts,
                              json_pack("{s:i, s:s, s:s, s:o}", "rank", r, "host", m->ranks[r].host,
                                        "error", o->message, "seconds", archive_num(o->seconds)));
        if (json_array_size(j->attempts) <= MPI_MAX_RETRIES) {
            if (!m->quiet)
                fprintf(stderr, "discover: job %zu lost on rank %d (%s): %s; re-queued\n", i, r,
                        m->ranks[r].host, o->message);
            j->state = J_QUEUED;
            j->avoid = r;
            return;
        }
    }
    MpiWhere w = {.rank = r, .host = m->ranks[r].host, .attempts = j->attempts};
    run->done(run->arg, i, o, &w);
    j->state = J_DONE;
    run->left--;
    m->evaluated++;
    if (!m->quiet)
        progress_line(run);
}

static void give_up(Run *run, int r, const char *why)
{
    Rank *rk = &run->m->ranks[r];
    if (rk->state == R_LOST)
        return;
    rk->state = R_LOST;
    comm_forget(r);
    fprintf(stderr, "discover: rank %d (%s) given up: %s; its jobs are re-queued\n", r, rk->host,
            why);
    for (size_t i = 0; run && i < run->n; i++) {
        Job *j = &run->jobs[i];
        if (j->state != J_RUNNING || j->rank != r)
            continue;
        PoolOutcome o = {.end = POOL_EXIT, .code = -1, .seconds = timeutil_now() - j->t_sent};
        snprintf(o.message, sizeof o.message, "rank %d (%.64s) was lost mid-job: %.150s", r,
                 rk->host, why);
        settle(run, i, &o, r, true);
    }
    rk->busy = 0;
}

static void local_done(void *arg, size_t i, const PoolOutcome *o) { settle(arg, i, o, 0, false); }

static char *local_work(void *arg, size_t i)
{
    const Run *run = arg;
    return run->work(run->arg, i);
}

static void on_ready(Run *run, int r, const json_t *j)
{
    Rank *rk = &run->m->ranks[r];
    snprintf(rk->host, sizeof rk->host, "%s", str_or(j, "host", "?"));
    const char *e = json_string_value(json_object_get(j, "error"));
    if (e) {
        give_up(run, r, e);
        return;
    }
    rk->cap = (int)json_integer_value(json_object_get(j, "workers"));
    rk->state = rk->cap > 0 ? R_READY : R_LOST;
}

static void on_result(Run *run, int r, const json_t *j)
{
    int id = (int)json_integer_value(json_object_get(j, "id"));
    for (size_t i = 0; i < run->n; i++) {
        Job *jb = &run->jobs[i];
        if (jb->state != J_RUNNING || jb->rank != r || jb->id != id)
            continue;
        PoolOutcome o = {.end = (PoolEnd)json_integer_value(json_object_get(j, "end")),
                         .code = (int)json_integer_value(json_object_get(j, "code")),
                         .seconds = json_number_value(json_object_get(j, "seconds"))};
        snprintf(o.message, sizeof o.message, "%s", str_or(j, "message", ""));
        const char *t = json_string_value(json_object_get(j, "text"));
        o.text = (char *)t;
        o.len = t ? strlen(t) : 0;
        if (o.end == POOL_OK && !t)
            o.end = POOL_EXIT;
        settle(run, i, &o, r, false);
        return;
    }
    /* a stale result: its job was given up and re-queued meanwhile */
}

static void on_message(Run *run, int from, int tag, const char *text)
{
    if (from <= 0 || from >= run->m->n || run->m->ranks[from].state == R_LOST)
        return;
    run->m->ranks[from].seen = timeutil_now();
    json_t *j = tag == TAG_READY || tag == TAG_RESULT ? json_loads(text, 0, NULL) : NULL;
    if (tag == TAG_READY && j)
        on_ready(run, from, j);
    else if (tag == TAG_RESULT && j)
        on_result(run, from, j);
    json_decref(j);
}

/* a free rank for job j: rank 0's pool first, then the least busy
 * evaluator; the rank that failed it only when no other is alive */
static int target(const Run *run, const Job *j)
{
    const MpiEval *m = run->m;
    int best = -1, alive_other = 0;
    for (int r = 0; r < m->n; r++) {
        const Rank *rk = &m->ranks[r];
        if (rk->state != R_READY)
            continue;
        alive_other += r != j->avoid;
        bool free_slot = r == 0 ? pool_idle(run->local) > 0 : rk->busy < rk->cap;
        if (!free_slot || r == j->avoid)
            continue;
        if (best < 0 || (best > 0 && rk->busy < m->ranks[best].busy))
            best = r;
    }
    if (best < 0 && alive_other == 0 && j->avoid >= 0 && m->ranks[j->avoid].state == R_READY) {
        const Rank *rk = &m->ranks[j->avoid];
        if (j->avoid == 0 ? pool_idle(run->local) > 0 : rk->busy < rk->cap)
            best = j->avoid;
    }
    return best;
}

static void send_job(Run *run, size_t i, int r)
{
    Job *j = &run->jobs[i];
    char err[512];
    json_t *desc = run->job(run->arg, i);
    j->id = ++run->m->next_id;
    if (desc)
        json_object_set_new(desc, "id", json_integer(j->id));
    if (!desc || send_json(r, TAG_JOB, desc, err, sizeof err) != 0) {
        give_up(run, r, desc ? err : "the job's description could not be made");
        return;
    }
    j->state = J_RUNNING;
    j->rank = r;
    j->t_sent = timeutil_now();
    run->m->ranks[r].busy++;
}

static void dispatch(Run *run)
{
    for (size_t i = 0; i < run->n; i++) {
        Job *j = &run->jobs[i];
        if (j->state != J_QUEUED)
            continue;
        int r = target(run, j);
        if (r < 0)
            continue;
        if (r > 0) {
            send_job(run, i, r);
            continue;
        }
        j->state = J_RUNNING;
        j->rank = 0;
        j->t_sent = timeutil_now();
        run->m->ranks[0].busy++;
        pool_start(run->local, i); /* a failed fork is an outcome (settle) */
    }
}

static void check_deadlines(Run *run)
{
    MpiEval *m = run->m;
    double now = timeutil_now();
    char why[160];
    for (int r = 1; r < m->n; r++)
        if (m->ranks[r].state != R_LOST && now - m->ranks[r].seen > m->rank_timeout) {
            snprintf(why, sizeof why, "silent for %.0f s (rank_timeout)", now - m->ranks[r].seen);
            give_up(run, r, why);
        }
    double limit = (run->lim->wall_seconds > 0 ? run->lim->wall_seconds : 1e9) + m->rank_timeout;
    for (size_t i = 0; i < run->n; i++) {
        const Job *j = &run->jobs[i];
        if (j->state == J_RUNNING && j->rank > 0 && now - j->t_sent > limit) {
            snprintf(why, sizeof why, "a job ran %.0f s, past its timeout plus rank_timeout",
                     now - j->t_sent);
            give_up(run, j->rank, why);
        }
    }
}

static int receive_all(Run *run, char *err, size_t errlen)
{
    int from, tag, got;
    char *text;
    size_t len;
    while ((got = comm_recv(&from, &tag, &text, &len, err, errlen)) == 1) {
        on_message(run, from, tag, text);
        free(text);
    }
    return got;
}

int mpi_eval_run(MpiEval *m, size_t n, PoolWorkFn work, MpiJobFn job, MpiDoneFn done, void *arg,
                 const PoolLimits *lim, char *err, size_t errlen)
{
    Run run = {
        .m = m, .n = n, .left = n, .work = work, .job = job, .done = done, .arg = arg, .lim = lim};
    run.jobs = calloc(n + 1, sizeof *run.jobs);
    run.local = run.jobs ? pool_new(lim, local_work, local_done, &run) : NULL;
    if (!run.local) {
        free(run.jobs);
        return err_fail(err, errlen, "discover: out of memory");
    }
    for (size_t i = 0; i < n; i++)
        run.jobs[i].avoid = -1;
    int rc = 0;
    while (rc == 0 && run.left > 0) {
        dispatch(&run);
        if (receive_all(&run, err, errlen) < 0)
            rc = -1;
        check_deadlines(&run);
        if (rc == 0 && pool_wait(run.local, POLL_MS) != 0)
            rc = err_fail(err, errlen, "worker pool: poll failed");
    }
    pool_free(run.local); /* only after a failure: the jobs still running */
    for (size_t i = 0; i < n; i++)
        json_decref(run.jobs[i].attempts);
    free(run.jobs);
    return rc;
}

/* ---- ranks > 0: the evaluator ------------------------------------------------------------ */

typedef struct EJob {
    int id;
    char path[DISCOVER_PATH_LEN + 96]; /* the loss, scratch/NAME.lua */
    char dir[DISCOVER_PATH_LEN + 96];  /* its run directory */
} EJob;

typedef struct Serve {
    DiscoverOptions *o;
    const FitnessKind *fit;
    char scratch[DISCOVER_PATH_LEN];
    Pool *prep, *pool;
    bool prep_over, stop;
    EJob *jobs;
    size_t n_jobs, cap_jobs, next; /* jobs[next..] wait for a slot */
    char err[1024];
} Serve;

static void send_ready(Serve *s, const char *error)
{
    char err[512];
    send_json(0, TAG_READY,
              json_pack("{s:s, s:i, s:s?}", "host", comm_host(), "workers",
                        error ? 0 : s->o->workers, "error", error),
              err, sizeof err);
}

static char *serve_work(void *arg, size_t i)
{
    const Serve *s = arg;
    char prefix[sizeof s->scratch + 1];
    snprintf(prefix, sizeof prefix, "%s/", s->scratch);
    return discover_train_text(s->o, s->fit, s->jobs[i].path, s->jobs[i].dir, prefix);
}

static void serve_done(void *arg, size_t i, const PoolOutcome *o)
{
    Serve *s = arg;
    char err[512];
    remove(s->jobs[i].path);
    fsutil_remove_tree(s->jobs[i].dir, err, sizeof err);
    if (s->stop) /* killed at STOP: rank 0 no longer listens */
        return;
    json_t *j =
        json_pack("{s:i, s:i, s:i, s:s, s:o}", "id", s->jobs[i].id, "end", (int)o->end, "code",
                  o->code, "message", o->message, "seconds", archive_num(o->seconds));
    if (j && o->text)
        json_object_set_new(j, "text", json_string(o->text));
    send_json(0, TAG_RESULT, j, err, sizeof err);
}

static char *prep_work(void *arg, size_t i)
{
    (void)i;
    const Serve *s = arg;
    char err[1024] = "";
    char *text = malloc(sizeof err + 8);
    if (text && s->fit->prepare(true, err, sizeof err) == 0)
        snprintf(text, sizeof err + 8, "ok");
    else if (text)
        snprintf(text, sizeof err + 8, "error: %s", err[0] ? err : "failed");
    return text;
}

static void begin_training(Serve *s)
{
    PoolLimits lim = {.workers = s->o->workers,
                      .wall_seconds = s->o->timeout,
                      .cpu_seconds = s->o->cpu_seconds,
                      .mem_bytes = (size_t)s->o->memory_mb << 20};
    s->pool = pool_new(&lim, serve_work, serve_done, s);
    send_ready(s, s->pool ? NULL : "out of memory");
}

static void prep_done(void *arg, size_t i, const PoolOutcome *o)
{
    (void)i;
    Serve *s = arg;
    s->prep_over = true; /* freed by the loop: this runs inside pool_wait(s->prep) */
    if (o->end == POOL_OK && strcmp(o->text, "ok") == 0) {
        begin_training(s);
        return;
    }
    char why[1100];
    snprintf(why, sizeof why, "preparing fitness %s: %s", s->fit->name,
             o->end != POOL_OK ? o->message : o->text);
    send_ready(s, why);
}

static int on_settings(Serve *s, const char *yaml)
{
    char path[sizeof s->scratch + 16];
    snprintf(path, sizeof path, "%s/discover.yaml", s->scratch);
    discover_defaults(s->o);
    if (fsutil_write_atomic(path, yaml, strlen(yaml), s->err, sizeof s->err) != 0 ||
        discover_load_yaml(s->o, path, s->err, sizeof s->err) != 0)
        return -1;
    snprintf(s->o->out_dir, sizeof s->o->out_dir, "%s", s->scratch);
    if (discover_finalize(s->o, s->err, sizeof s->err) != 0 ||
        !(s->fit = fitness_find(s->o->fitness, s->err, sizeof s->err)))
        return -1;
    if (!s->fit->prepare) {
        begin_training(s);
        return 0;
    }
    PoolLimits lim = {.workers = 1,
                      .wall_seconds = DISCOVER_PREPARE_WALL_SECONDS,
                      .mem_bytes = (size_t)s->o->memory_mb << 20};
    if (!(s->prep = pool_new(&lim, prep_work, prep_done, s)))
        return err_fail(s->err, sizeof s->err, "out of memory");
    return pool_start(s->prep, 0) == 0 ? 0 : err_fail(s->err, sizeof s->err, "no worker slot");
}

static int on_job(Serve *s, const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    const char *code = json_string_value(json_object_get(j, "code"));
    if (!code || !s->pool) {
        json_decref(j);
        return err_fail(s->err, sizeof s->err, "a job message without code (or before READY)");
    }
    if (s->n_jobs == s->cap_jobs) {
        size_t cap = s->cap_jobs ? 2 * s->cap_jobs : 16;
        EJob *nj = realloc(s->jobs, cap * sizeof *nj);
        if (!nj) {
            json_decref(j);
            return err_fail(s->err, sizeof s->err, "out of memory");
        }
        s->jobs = nj;
        s->cap_jobs = cap;
    }
    EJob *e = &s->jobs[s->n_jobs];
    char name[ARCHIVE_NAME_LEN];
    archive_sanitize_name(str_or(j, "name", "candidate"), name);
    e->id = (int)json_integer_value(json_object_get(j, "id"));
    snprintf(e->path, sizeof e->path, "%s/%s.lua", s->scratch, name);
    snprintf(e->dir, sizeof e->dir, "%s/g%d_%d_run", s->scratch,
             (int)json_integer_value(json_object_get(j, "gen")),
             (int)json_integer_value(json_object_get(j, "idx")));
    int rc = fsutil_write_atomic(e->path, code, strlen(code), s->err, sizeof s->err);
    json_decref(j);
    s->n_jobs += rc == 0;
    return rc;
}

static int serve_message(Serve *s, int from, int tag, const char *text)
{
    if (from != 0)
        return 0;
    if (tag == TAG_STOP)
        s->stop = true;
    else if (tag == TAG_SETTINGS)
        return on_settings(s, text);
    else if (tag == TAG_JOB)
        return on_job(s, text);
    return 0;
}

static int serve_loop(Serve *s, char *err, size_t errlen)
{
    double beat = 0;
    while (!s->stop) {
        if (timeutil_now() >= beat) { /* always, also while preparing */
            if (comm_send(0, TAG_BEAT, "", 0, err, errlen) != 0)
                return -1;
            beat = timeutil_now() + BEAT_SECONDS;
        }
        int from, tag, got;
        char *text;
        size_t len;
        while ((got = comm_recv(&from, &tag, &text, &len, err, errlen)) == 1) {
            int rc = serve_message(s, from, tag, text);
            free(text);
            if (rc != 0) {
                send_ready(s, s->err); /* rank 0 gives this rank up, saying why */
                return err_fail(err, errlen, "%s", s->err);
            }
        }
        if (got < 0)
            return -1;
        while (s->pool && s->next < s->n_jobs && pool_idle(s->pool) > 0)
            pool_start(s->pool, s->next++);
        Pool *p = s->prep && !s->prep_over ? s->prep : s->pool;
        if (p ? pool_wait(p, POLL_MS) != 0 : poll(NULL, 0, POLL_MS) < 0)
            return err_fail(err, errlen, "worker pool: poll failed");
        if (s->prep_over && s->prep) {
            pool_free(s->prep);
            s->prep = NULL;
        }
    }
    return 0;
}

int mpi_eval_serve(char *err, size_t errlen)
{
    Serve s = {.o = malloc(sizeof(DiscoverOptions))};
    const char *tmp = getenv("TMPDIR");
    snprintf(s.scratch, sizeof s.scratch, "%s/prefrun-rank%d-XXXXXX", tmp && *tmp ? tmp : "/tmp",
             comm_rank());
    if (!s.o || !mkdtemp(s.scratch)) {
        free(s.o);
        return err_fail(err, errlen, "rank %d: no scratch directory %s", comm_rank(), s.scratch);
    }
    int rc = serve_loop(&s, err, errlen);
    pool_free(s.pool); /* kills what still runs: STOP came, or rank 0 is gone */
    pool_free(s.prep);
    char rerr[256];
    fsutil_remove_tree(s.scratch, rerr, sizeof rerr);
    free(s.jobs);
    free(s.o);
    return rc;
}
