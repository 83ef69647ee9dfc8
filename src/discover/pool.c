/*
 * discover/pool.c — bounded worker processes (discover/pool.h).
 *
 * The parent keeps up to `workers` slots, each a child with the read end of
 * its pipe; one poll() waits on all of them with a timeout that ends at the
 * nearest deadline. A child's text is read as it comes (a child blocked on a
 * full pipe would otherwise never exit), capped at POOL_MAX_TEXT.
 */
#include "util/fsutil.h"
#include "discover/pool.h"
#include "util/timeutil.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#define POOL_MAX_TEXT ((size_t)16 << 20) /* a result is a few KiB of JSON */
#define CHILD_FD 3                       /* the pipe's write end, in the child */

typedef struct Slot {
    pid_t pid; /* 0: free */
    int fd;
    size_t job;
    double t0;
    char *buf;
    size_t len, cap;
    bool overflow;
} Slot;

/* ---- the child ------------------------------------------------------------- */

static void limit_memory(size_t extra)
{
#ifndef UNDER_ASAN /* ASan's shadow memory is terabytes of address space */
    long pages = 0;
    FILE *statm = fopen("/proc/self/statm", "r");
    if (statm) {
        if (fscanf(statm, "%ld", &pages) != 1)
            pages = 0;
        fclose(statm);
    }
    rlim_t as = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (rlim_t)extra;
    struct rlimit mem = {as, as};
    setrlimit(RLIMIT_AS, &mem);
#else
    (void)extra;
#endif
}

static void limit_child(const PoolLimits *lim)
{
    if (lim->cpu_seconds > 0) {
        rlim_t s = (rlim_t)ceil(lim->cpu_seconds);
        struct rlimit cpu = {s, s + 1}; /* SIGXCPU, then SIGKILL a second later */
        setrlimit(RLIMIT_CPU, &cpu);
    }
    if (lim->mem_bytes > 0)
        limit_memory(lim->mem_bytes);
}

static void child_main(int fd, pid_t parent, PoolWorkFn work, void *arg, size_t i,
                       const PoolLimits *lim)
{
    /* die with the parent: a killed loop must not leave workers writing */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(98);
    if (dup2(fd, CHILD_FD) < 0)
        _exit(97);
    close_range(CHILD_FD + 1, ~0u, 0); /* the archive, other workers' pipes */
    signal(SIGPIPE, SIG_DFL);
    limit_child(lim);
    char *text = work(arg, i);
    if (!text)
        _exit(3);
    int rc = fsutil_write_fd(CHILD_FD, text, strlen(text)) == 0 ? 0 : 4;
    free(text);
    _exit(rc); /* no atexit handlers, no flush of the parent's stdio buffers */
}

/* ---- the parent ------------------------------------------------------------ */

static int start(Slot *s, size_t job, PoolWorkFn work, void *arg, const PoolLimits *lim)
{
    int fd[2];
    if (pipe(fd) != 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid(), pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return -1;
    }
    if (pid == 0) {
        close(fd[0]);
        child_main(fd[1], parent, work, arg, job, lim);
    }
    close(fd[1]);
    *s = (Slot){.pid = pid, .fd = fd[0], .job = job, .t0 = timeutil_now()};
    return 0;
}

/* reads what is there; 1 at end of file, 0 otherwise */
static int drain(Slot *s)
{
    char chunk[65536];
    ssize_t r = read(s->fd, chunk, sizeof chunk);
    if (r < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : 1;
    if (r == 0)
        return 1;
    if (s->overflow || s->len + (size_t)r + 1 > POOL_MAX_TEXT) {
        s->overflow = true;
        return 0;
    }
    if (s->len + (size_t)r + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 16384;
        while (cap < s->len + (size_t)r + 1)
            cap *= 2;
        char *nb = realloc(s->buf, cap);
        if (!nb) {
            s->overflow = true;
            return 0;
        }
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, chunk, (size_t)r);
    s->len += (size_t)r;
    s->buf[s->len] = '\0';
    return 0;
}

static void describe(PoolOutcome *o, int status, const PoolLimits *lim, bool overflow)
{
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        o->end = POOL_SIGNAL;
        o->code = sig;
        snprintf(o->message, sizeof o->message,
                 "the worker process was killed by signal %d (%s)%s; limits: %.0f s CPU, "
                 "%.0f s wall clock, %zu MiB address space",
                 sig, strsignal(sig),
                 sig == SIGXCPU || sig == SIGKILL ? ": CPU time or memory limit" : "",
                 lim->cpu_seconds, lim->wall_seconds, lim->mem_bytes >> 20);
    } else if (overflow) {
        o->end = POOL_EXIT;
        snprintf(o->message, sizeof o->message, "the worker process wrote more than %zu MiB",
                 POOL_MAX_TEXT >> 20);
    } else if (WEXITSTATUS(status) != 0 || o->len == 0) {
        o->end = POOL_EXIT;
        o->code = WEXITSTATUS(status);
        snprintf(o->message, sizeof o->message,
                 "the worker process exited with status %d without a result (out of memory "
                 "under its %zu MiB limit?)",
                 o->code, lim->mem_bytes >> 20);
    }
}

/* the slot's child has ended (or is killed now when timed_out) */
static void finish(Slot *s, bool timed_out, PoolDoneFn done, void *arg, const PoolLimits *lim)
{
    if (timed_out)
        kill(s->pid, SIGKILL);
    int status = 0;
    while (waitpid(s->pid, &status, 0) < 0 && errno == EINTR)
        ;
    close(s->fd);
    PoolOutcome o = {
        .end = POOL_OK, .text = s->buf, .len = s->len, .seconds = timeutil_now() - s->t0};
    if (timed_out) {
        o.end = POOL_TIMEOUT;
        snprintf(o.message, sizeof o.message,
                 "the worker process ran past its wall-clock limit of %.0f s and was killed",
                 lim->wall_seconds);
    } else {
        describe(&o, status, lim, s->overflow);
    }
    if (o.end != POOL_OK) {
        o.text = NULL;
        o.len = 0;
    }
    done(arg, s->job, &o);
    free(s->buf);
    *s = (Slot){0};
}

struct Pool {
    PoolLimits lim;
    PoolWorkFn work;
    PoolDoneFn done;
    void *arg;
    int w;
    Slot slots[];
};

static int wait_ms(const Pool *p, int max_ms)
{
    double now = timeutil_now(), next = now + max_ms / 1000.0;
    for (int k = 0; p->lim.wall_seconds > 0 && k < p->w; k++)
        if (p->slots[k].pid && p->slots[k].t0 + p->lim.wall_seconds < next)
            next = p->slots[k].t0 + p->lim.wall_seconds;
    double ms = (next - now) * 1000.0 + 1.0;
    return ms < 0 ? 0 : ms > max_ms ? max_ms : (int)ms;
}

Pool *pool_new(const PoolLimits *lim, PoolWorkFn work, PoolDoneFn done, void *arg)
{
    int w = lim->workers > 0 ? lim->workers : 1;
    Pool *p = calloc(1, sizeof *p + (size_t)w * sizeof(Slot));
    if (p)
        *p = (Pool){.lim = *lim, .work = work, .done = done, .arg = arg, .w = w};
    return p;
}

int pool_idle(const Pool *p)
{
    int a = 0;
    for (int k = 0; k < p->w; k++)
        a += p->slots[k].pid == 0;
    return a;
}

int pool_busy(const Pool *p) { return p->w - pool_idle(p); }

int pool_start(Pool *p, size_t job)
{
    for (int k = 0; k < p->w; k++) {
        if (p->slots[k].pid)
            continue;
        if (start(&p->slots[k], job, p->work, p->arg, &p->lim) == 0)
            return 0;
        PoolOutcome o = {.end = POOL_START, .code = errno};
        snprintf(o.message, sizeof o.message, "cannot start a worker process: %s", strerror(errno));
        p->done(p->arg, job, &o);
        return 0;
    }
    return -1;
}

int pool_wait(Pool *p, int max_ms)
{
    struct pollfd pfd[p->w];
    int map[p->w], n = 0;
    for (int k = 0; k < p->w; k++)
        if (p->slots[k].pid) {
            pfd[n] = (struct pollfd){.fd = p->slots[k].fd, .events = POLLIN};
            map[n++] = k;
        }
    int r = poll(n ? pfd : NULL, (nfds_t)n, wait_ms(p, max_ms));
    if (r < 0 && errno != EINTR)
        return -1;
    for (int j = 0; r > 0 && j < n; j++)
        if (pfd[j].revents && drain(&p->slots[map[j]]) == 1)
            finish(&p->slots[map[j]], false, p->done, p->arg, &p->lim);
    double now = timeutil_now();
    for (int k = 0; k < p->w; k++)
        if (p->slots[k].pid && p->lim.wall_seconds > 0 &&
            now > p->slots[k].t0 + p->lim.wall_seconds)
            finish(&p->slots[k], true, p->done, p->arg, &p->lim);
    return 0;
}

void pool_free(Pool *p)
{
    if (!p)
        return;
    for (int k = 0; k < p->w; k++) /* what still runs is killed; its outcome a timeout */
        if (p->slots[k].pid)
            finish(&p->slots[k], true, p->done, p->arg, &p->lim);
    free(p);
}

int pool_run(size_t n, PoolWorkFn work, PoolDoneFn done, void *arg, const PoolLimits *lim,
             char *err, size_t errlen)
{
    Pool *p = pool_new(lim, work, done, arg);
    if (!p) {
        snprintf(err, errlen, "worker pool: out of memory");
        return -1;
    }
    size_t next = 0;
    int rc = 0;
    while (rc == 0 && (next < n || pool_busy(p) > 0)) {
        while (next < n && pool_idle(p) > 0)
            pool_start(p, next++);
        if (pool_busy(p) > 0 && pool_wait(p, 1000) != 0) {
            snprintf(err, errlen, "worker pool: poll: %s", strerror(errno));
            rc = -1;
        }
    }
    pool_free(p); /* kills children only after a pool failure */
    return rc;
}
