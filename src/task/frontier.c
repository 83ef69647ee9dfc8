/*
 * task/frontier.c — train-and-evaluate jobs in forked workers, and the frontier
 * table and plot (frontier.h).
 *
 * The parent only forks, polls its own children (waitpid on their pids, so
 * other children of a caller are never reaped here), and reads each job's
 * result.json; it runs no model code, so it stays free of OpenMP state.
 * A worker's whole answer is its result file: a worker that dies before
 * writing it is a failed job with the signal or status named.
 */
#include "task/frontier.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/jsonfile.h"
#include "util/errmsg.h"
#include "util/fsutil.h"
#include "util/timeutil.h"
#include "model/hf_config.h"
#include "model/hf_model.h"
#include "tokenizer/tokenizer.h"
#include "train/train.h"
#include "train/model_load.h"

#define RESULT_FILE "result.json"
#define POLL_NS 20000000L /* 20 ms between polls of running workers */

void frontier_loss_name(const char *path, char *out, size_t len)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 4 && strcmp(base + n - 4, ".lua") == 0)
        n -= 4;
    snprintf(out, len, "%.*s", (int)n, base);
}

void frontier_job_dirs(FrontierJob *jobs, int n, const char *out_dir)
{
    for (int i = 0; i < n; i++) {
        char name[128];
        frontier_loss_name(jobs[i].loss_path, name, sizeof name);
        snprintf(jobs[i].run_dir, sizeof jobs[i].run_dir, "%s/runs/%s-beta%g-seed%llu", out_dir,
                 name, jobs[i].beta, (unsigned long long)jobs[i].seed);
    }
}

/* ---- setup ---------------------------------------------------------------- */

/* task_prepare in a child, so building (multi-threaded) leaves this
 * process without an OpenMP pool; its error comes back through a pipe. */
static int prepare_in_child(const TaskPrepareOptions *tp, char *err, size_t errlen)
{
    int fd[2];
    if (pipe(fd) != 0)
        return err_fail(err, errlen, "frontier: pipe: %s", strerror(errno));
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return err_fail(err, errlen, "frontier: fork: %s", strerror(errno));
    if (pid == 0) {
        close(fd[0]);
        char e[1024] = "";
        TaskAssets a;
        int rc = task_prepare(tp, &a, e, sizeof e);
        if (rc != 0 && write(fd[1], e, strlen(e)) < 0)
            rc = 2;
        _exit(rc == 0 ? 0 : 1);
    }
    close(fd[1]);
    char msg[1024];
    ssize_t n = read(fd[0], msg, sizeof msg - 1);
    close(fd[0]);
    msg[n > 0 ? n : 0] = '\0';
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    return err_fail(err, errlen, "%s", msg[0] ? msg : "frontier: preparing the task failed");
}

int frontier_setup(FrontierSetup *s, const TaskPrepareOptions *tp, char *err, size_t errlen)
{
    *s = (FrontierSetup){0};
    if (prepare_in_child(tp, err, errlen) != 0)
        return -1;
    TaskPrepareOptions quiet = *tp;
    quiet.quiet = true;
    quiet.force = false; /* the child rebuilt what force asked for */
    if (task_prepare(&quiet, &s->task, err, errlen) != 0)
        return -1;
    config_defaults(&s->cfg);
    task_train_defaults(&s->cfg);
    task_train_config(&s->cfg, &s->task);
    if (s->cfg.max_length > s->cfg.context)
        s->cfg.max_length = s->cfg.context;
    s->cfg.threads = 1;
    eval_defaults(&s->eval);
    s->eval.quiet = true;
    return config_finalize(&s->cfg, err, errlen);
}

int frontier_use_model(FrontierSetup *s, const char *dir, char *err, size_t errlen)
{
    char path[FRONTIER_DIR_LEN + 32];
    HfConfig hc;
    if (strlen(dir) >= sizeof s->cfg.model)
        return err_fail(err, errlen, "--model: the path is longer than %zu bytes",
                        sizeof s->cfg.model - 1);
    if (!hf_model_is_folder(dir))
        return err_fail(err, errlen, "--model %s: no %s, expected a Hugging Face model folder", dir,
                        HF_CONFIG_FILE);
    snprintf(path, sizeof path, "%s/%s", dir, HF_CONFIG_FILE);
    if (hf_config_load(path, &hc, err, errlen) != 0)
        return -1;
    Tokenizer *tok = tokenizer_load(dir, err, errlen);
    if (!tok)
        return -1;
    tokenizer_free(tok);
    snprintf(s->cfg.model, sizeof s->cfg.model, "%s", dir);
    if (s->cfg.max_length > hc.context) /* the task's lengths, within the model's positions */
        s->cfg.max_length = hc.context;
    if (s->cfg.max_prompt_length >= s->cfg.max_length)
        s->cfg.max_prompt_length = s->cfg.max_length / 2;
    return config_finalize(&s->cfg, err, errlen);
}

/* ---- the worker ------------------------------------------------------------ */

static int write_result(const FrontierJob *j, const FrontierResult *r)
{
    char path[FRONTIER_DIR_LEN + 32], err[256];
    snprintf(path, sizeof path, "%s/%s", j->run_dir, RESULT_FILE);
    json_t *o = json_pack("{s:b, s:s, s:s, s:f, s:I, s:f, s:f, s:f}", "ok", r->ok, "error",
                          r->error, "loss", j->loss_path, "beta", j->beta, "seed",
                          (json_int_t)j->seed, "train_seconds", r->train_seconds, "train_loss",
                          isfinite(r->train_loss) ? r->train_loss : 0.0, "train_accuracy",
                          isfinite(r->train_accuracy) ? r->train_accuracy : 0.0);
    if (o && r->ok)
        json_object_set_new(o, "eval", eval_result_json(&r->eval));
    char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    json_decref(o);
    int rc = text ? fsutil_write_atomic(path, text, strlen(text), err, sizeof err) : -1;
    free(text);
    return rc;
}

static int train_job(const FrontierSetup *s, const FrontierJob *j, FrontierResult *r, char *err,
                     size_t errlen)
{
    TrainOptions to = {.cfg = s->cfg,
                       .n_losses = 1,
                       .loss_paths = {j->loss_path},
                       .loss_weights = {1.0},
                       .run_dir = j->run_dir,
                       .quiet = true,
                       .init_model = s->cfg.model[0] ? NULL : s->task.reference};
    to.cfg.seed = j->seed;
    to.cfg.threads = s->worker_threads > 0 ? s->worker_threads : 1;
    if (config_set_loss_param(&to.cfg, "beta", j->beta, err, errlen) != 0 ||
        fsutil_remove_tree(j->run_dir, err, errlen) != 0)
        return -1;
    TrainResult tr;
    double t0 = timeutil_now();
    if (train_run(&to, &tr, err, errlen) != TRAIN_OK)
        return -1;
    r->train_seconds = timeutil_now() - t0;
    r->train_loss = tr.last_loss;
    r->train_accuracy = tr.last_accuracy;
    return 0;
}

static int eval_job(const FrontierSetup *s, const FrontierJob *j, FrontierResult *r, char *err,
                    size_t errlen)
{
    if (s->cfg.model[0]) { /* the run's reference and tokenizer are its model's */
        int rc = eval_path(j->run_dir, &s->eval, &r->eval, err, errlen);
        snprintf(r->eval.model, sizeof r->eval.model, "%s", j->run_dir);
        return rc;
    }
    Gpt *pol = NULL, *ref = NULL;
    int rc = run_model_load(j->run_dir, &pol, r->eval.model, sizeof r->eval.model, err, errlen);
    if (rc == 0)
        rc = run_model_load(s->task.reference, &ref, NULL, 0, err, errlen);
    if (rc == 0)
        rc =
            eval_models(pol, ref, s->task.seed, s->task.eval_file, &s->eval, &r->eval, err, errlen);
    if (rc == 0) {
        snprintf(r->eval.model, sizeof r->eval.model, "%s", j->run_dir);
        snprintf(r->eval.reference, sizeof r->eval.reference, "%s", s->task.reference);
    }
    gpt_free(pol);
    gpt_free(ref);
    return rc;
}

/* The child's whole life: train, evaluate, write the result, exit. */
static void worker(const FrontierSetup *s, const FrontierJob *j)
{
    FrontierResult r = {0};
    char err[sizeof r.error];
    if (fsutil_mkdirs(j->run_dir, err, sizeof err) != 0) {
        fprintf(stderr, "frontier: %s\n", err);
        _exit(1);
    }
    r.ok = train_job(s, j, &r, err, sizeof err) == 0 && eval_job(s, j, &r, err, sizeof err) == 0;
    if (!r.ok)
        snprintf(r.error, sizeof r.error, "%s", err);
    char merr[256]; /* training removed the directory first, and may have failed before
                       making it again */
    int rc = fsutil_mkdirs(j->run_dir, merr, sizeof merr) == 0 ? write_result(j, &r) : -1;
    _exit(rc == 0 && r.ok ? 0 : 1);
}

/* ---- the pool ---------------------------------------------------------------- */

static void read_result(const FrontierJob *j, FrontierResult *r, int status)
{
    char path[FRONTIER_DIR_LEN + 32];
    snprintf(path, sizeof path, "%s/%s", j->run_dir, RESULT_FILE);
    json_t *o = jsonfile_load(
        path, (&(const FsReadCap){.bytes = (size_t)1 << 20, .kind = "a run result"}), NULL, 0);
    *r = (FrontierResult){0};
    if (!o) {
        if (WIFSIGNALED(status))
            snprintf(r->error, sizeof r->error, "worker killed by signal %d", WTERMSIG(status));
        else
            snprintf(r->error, sizeof r->error, "worker exited with status %d and no result",
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return;
    }
    const char *e = json_string_value(json_object_get(o, "error"));
    snprintf(r->error, sizeof r->error, "%s", e ? e : "");
    r->train_seconds = json_number_value(json_object_get(o, "train_seconds"));
    r->train_loss = json_number_value(json_object_get(o, "train_loss"));
    r->train_accuracy = json_number_value(json_object_get(o, "train_accuracy"));
    r->ok = json_is_true(json_object_get(o, "ok")) &&
            eval_result_from_json(json_object_get(o, "eval"), &r->eval) == 0;
    json_decref(o);
}

static void report(const FrontierSetup *s, const FrontierJob *j, const FrontierResult *r, int done,
                   int n)
{
    FILE *f = s->quiet ? NULL : s->progress ? s->progress : stderr;
    char name[128];
    if (!f)
        return;
    frontier_loss_name(j->loss_path, name, sizeof name);
    if (r->ok)
        fprintf(f,
                "frontier: [%d/%d] %s beta=%g seed=%llu: reward %+.3f, KL %.2f, win %.2f "
                "(train %.0f s, eval %.0f s)\n",
                done, n, name, j->beta, (unsigned long long)j->seed, r->eval.reward, r->eval.kl,
                r->eval.win_rate, r->train_seconds, r->eval.seconds);
    else
        fprintf(f, "frontier: [%d/%d] %s beta=%g seed=%llu failed: %s\n", done, n, name, j->beta,
                (unsigned long long)j->seed, r->error);
    fflush(f);
}

static int workers_wanted(const FrontierSetup *s, int n)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int w = s->jobs > 0 ? s->jobs : (int)(cores > 0 ? cores : 1);
    return w < n ? w : n;
}

/* Reaps finished workers among pid (w slots; 0: free); returns how many. */
static int reap(const FrontierSetup *s, const FrontierJob *jobs, pid_t *pid, int *job, int w,
                FrontierResult *out, int *done, int n)
{
    int reaped = 0;
    for (int k = 0; k < w; k++) {
        int st;
        if (pid[k] <= 0 || waitpid(pid[k], &st, WNOHANG) != pid[k])
            continue;
        read_result(&jobs[job[k]], &out[job[k]], st);
        report(s, &jobs[job[k]], &out[job[k]], ++*done, n);
        pid[k] = 0;
        reaped++;
    }
    return reaped;
}

/* The worker slots of a run: slot k runs jobs[job[k]] as pid[k] (0: free). */
typedef struct Pool {
    int w, next, running, done;
    pid_t *pid; // (w)
    int *job;   // (w)
} Pool;

/* Fills free slots with the next jobs; -1 when fork fails. */
static int launch(const FrontierSetup *s, const FrontierJob *jobs, int n, Pool *p, char *err,
                  size_t errlen)
{
    for (int k = 0; k < p->w && p->next < n; k++) {
        if (p->pid[k] > 0)
            continue;
        fflush(NULL); /* a child must not flush the parent's buffers again */
        pid_t pid = fork();
        if (pid < 0)
            return err_fail(err, errlen, "frontier: fork: %s", strerror(errno));
        if (pid == 0)
            worker(s, &jobs[p->next]); /* never returns */
        p->pid[k] = pid;
        p->job[k] = p->next++;
        p->running++;
    }
    return 0;
}

int frontier_run(const FrontierSetup *s, const FrontierJob *jobs, int n, FrontierResult *out,
                 char *err, size_t errlen)
{
    Pool p = {.w = workers_wanted(s, n)};
    p.pid = calloc((size_t)(p.w > 0 ? p.w : 1), sizeof *p.pid);
    p.job = calloc((size_t)(p.w > 0 ? p.w : 1), sizeof *p.job);
    int rc = p.pid && p.job ? 0 : err_fail(err, errlen, "frontier: out of memory");
    for (int i = 0; i < n; i++)
        out[i] = (FrontierResult){.error = "not run"};
    while (p.done < n && (rc == 0 || p.running > 0)) {
        if (rc == 0)
            rc = launch(s, jobs, n, &p, err, errlen);
        int r = reap(s, jobs, p.pid, p.job, p.w, out, &p.done, n);
        p.running -= r;
        if (r == 0)
            nanosleep(&(struct timespec){0, POLL_NS}, NULL);
    }
    free(p.pid);
    free(p.job);
    return rc;
}

/* ---- the table ----------------------------------------------------------------- */

/* One (loss, beta): the means over its seeds that finished. */
typedef struct CurvePoint {
    double beta;
    int n;
    double reward, kl, win, acc; /* sums, then means */
    double reward_sq, kl_sq;     /* sums of squares, then sds */
} CurvePoint;

typedef struct Curve {
    char name[128];
    int n;
    CurvePoint *pt; // (n) in order of first appearance
} Curve;

typedef struct Curves {
    int n;
    Curve *c;          // (n)
    double ref_reward; /* the reference's mean reward (NAN: no result) */
} Curves;

static void curves_free(Curves *cs)
{
    for (int i = 0; i < cs->n; i++)
        free(cs->c[i].pt);
    free(cs->c);
}

static Curve *curve_for(Curves *cs, const char *name, int cap)
{
    for (int i = 0; i < cs->n; i++)
        if (strcmp(cs->c[i].name, name) == 0)
            return &cs->c[i];
    Curve *c = &cs->c[cs->n];
    *c = (Curve){.pt = calloc((size_t)cap, sizeof *c->pt)};
    if (!c->pt)
        return NULL;
    snprintf(c->name, sizeof c->name, "%s", name);
    cs->n++;
    return c;
}

static void point_add(Curve *c, double beta, const EvalResult *e)
{
    CurvePoint *p = NULL;
    for (int i = 0; i < c->n && !p; i++)
        p = c->pt[i].beta == beta ? &c->pt[i] : NULL;
    if (!p) {
        p = &c->pt[c->n++];
        p->beta = beta;
    }
    p->n++;
    p->reward += e->reward;
    p->kl += e->kl;
    p->win += e->win_rate;
    p->acc += e->accuracy;
    p->reward_sq += e->reward * e->reward;
    p->kl_sq += e->kl * e->kl;
}

static double sd_of(double sum_sq, double mean, int n)
{
    return n > 1 ? sqrt(fmax(0, (sum_sq - n * mean * mean) / (n - 1))) : NAN;
}

static void point_finish(CurvePoint *p)
{
    p->reward /= p->n;
    p->kl /= p->n;
    p->win /= p->n;
    p->acc /= p->n;
    p->reward_sq = sd_of(p->reward_sq, p->reward, p->n);
    p->kl_sq = sd_of(p->kl_sq, p->kl, p->n);
}

static int curves_make(const FrontierJob *jobs, const FrontierResult *res, int n, Curves *cs)
{
    *cs = (Curves){.c = calloc((size_t)(n > 0 ? n : 1), sizeof *cs->c), .ref_reward = NAN};
    if (!cs->c)
        return -1;
    for (int i = 0; i < n; i++) {
        if (!res[i].ok)
            continue;
        char name[128];
        frontier_loss_name(jobs[i].loss_path, name, sizeof name);
        Curve *c = curve_for(cs, name, n);
        if (!c)
            return -1;
        point_add(c, jobs[i].beta, &res[i].eval);
        cs->ref_reward = res[i].eval.ref_reward;
    }
    for (int i = 0; i < cs->n; i++)
        for (int k = 0; k < cs->c[i].n; k++)
            point_finish(&cs->c[i].pt[k]);
    return 0;
}

static int write_csv(const char *path, const FrontierJob *jobs, const FrontierResult *res, int n,
                     char *err, size_t errlen)
{
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    if (!f)
        return -1;
    fsutil_atomic_printf(f, "loss,beta,seed,ok,reward,reward_ci95,kl,kl_ci95,win_rate,accuracy,"
                            "ref_reward,train_seconds,eval_seconds,error\n");
    for (int i = 0; i < n; i++) {
        const EvalResult *e = &res[i].eval;
        char name[128];
        frontier_loss_name(jobs[i].loss_path, name, sizeof name);
        fsutil_atomic_printf(f, "%s,%g,%llu,%d,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.2f,%.2f,", name,
                             jobs[i].beta, (unsigned long long)jobs[i].seed, res[i].ok, e->reward,
                             e->reward_ci, e->kl, e->kl_ci, e->win_rate, e->accuracy, e->ref_reward,
                             res[i].train_seconds, e->seconds);
        fsutil_atomic_printf(f, "\"");
        for (const char *c = res[i].error; *c; c++) /* CSV quoting: "" inside quotes */
            fsutil_atomic_write(f, *c == '"' ? "\"\"" : *c == '\n' ? " " : c, *c == '"' ? 2 : 1);
        fsutil_atomic_printf(f, "\"\n");
    }
    return fsutil_atomic_commit(f, err, errlen);
}

static json_t *jnum(double x) { return isfinite(x) ? json_real(x) : json_null(); }

static json_t *rows_json(const FrontierJob *jobs, const FrontierResult *res, int n)
{
    json_t *rows = json_array();
    for (int i = 0; i < n; i++) {
        char name[128];
        frontier_loss_name(jobs[i].loss_path, name, sizeof name);
        json_t *r = json_pack("{s:s, s:s, s:f, s:I, s:b, s:s, s:o}", "loss", name, "loss_path",
                              jobs[i].loss_path, "beta", jobs[i].beta, "seed",
                              (json_int_t)jobs[i].seed, "ok", res[i].ok, "error", res[i].error,
                              "train_seconds", jnum(res[i].train_seconds));
        if (res[i].ok)
            json_object_set_new(r, "eval", eval_result_json(&res[i].eval));
        json_array_append_new(rows, r);
    }
    return rows;
}

static json_t *curves_json(const Curves *cs)
{
    json_t *arr = json_array();
    for (int i = 0; i < cs->n; i++) {
        json_t *pts = json_array();
        for (int k = 0; k < cs->c[i].n; k++) {
            const CurvePoint *p = &cs->c[i].pt[k];
            json_array_append_new(pts, json_pack("{s:f, s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "beta",
                                                 p->beta, "seeds", p->n, "reward", jnum(p->reward),
                                                 "reward_sd", jnum(p->reward_sq), "kl", jnum(p->kl),
                                                 "kl_sd", jnum(p->kl_sq), "win_rate", jnum(p->win),
                                                 "accuracy", jnum(p->acc)));
        }
        json_array_append_new(arr, json_pack("{s:s, s:o}", "loss", cs->c[i].name, "points", pts));
    }
    return arr;
}

static int write_json(const char *path, const FrontierJob *jobs, const FrontierResult *res, int n,
                      const Curves *cs, char *err, size_t errlen)
{
    json_t *o = json_pack("{s:o, s:o, s:o}", "rows", rows_json(jobs, res, n), "curves",
                          curves_json(cs), "ref_reward", jnum(cs->ref_reward));
    char *text = o ? json_dumps(o, JSON_INDENT(2)) : NULL;
    json_decref(o);
    if (!text)
        return err_fail(err, errlen, "frontier: out of memory");
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps's NUL becomes the final newline */
    int rc = fsutil_write_atomic(path, text, len + 1, err, errlen);
    free(text);
    return rc;
}

/* ---- the plot -------------------------------------------------------------------- */

enum { SVG_W = 760, SVG_H = 480, PAD_L = 72, PAD_R = 180, PAD_T = 44, PAD_B = 58 };

static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd",
                                      "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
#define N_COLORS (int)(sizeof palette / sizeof palette[0])

typedef struct Axis {
    double lo, hi, step; /* the range shown and its tick spacing */
} Axis;

/* A 1-2-5 tick step giving about 5 ticks over [lo, hi], and the range
 * widened to whole steps. */
static Axis axis_make(double lo, double hi)
{
    if (!(hi > lo)) {
        lo -= 0.5;
        hi += 0.5;
    }
    double raw = (hi - lo) / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
    double step = (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
    return (Axis){floor(lo / step) * step, ceil(hi / step) * step, step};
}

static double px(const Axis *a, double v)
{
    return PAD_L + (v - a->lo) / (a->hi - a->lo) * (SVG_W - PAD_L - PAD_R);
}
static double py(const Axis *a, double v)
{
    return SVG_H - PAD_B - (v - a->lo) / (a->hi - a->lo) * (SVG_H - PAD_T - PAD_B);
}

static void data_range(const Curves *cs, Axis *x, Axis *y)
{
    double xmin = 0, xmax = 0, ylo = INFINITY, yhi = -INFINITY; /* KL 0: the reference */
    if (isfinite(cs->ref_reward))
        ylo = yhi = cs->ref_reward;
    for (int i = 0; i < cs->n; i++)
        for (int k = 0; k < cs->c[i].n; k++) {
            const CurvePoint *p = &cs->c[i].pt[k];
            xmin = fmin(xmin, p->kl); /* an estimate can dip below 0 */
            xmax = fmax(xmax, p->kl);
            ylo = fmin(ylo, p->reward);
            yhi = fmax(yhi, p->reward);
        }
    if (!isfinite(ylo))
        ylo = -1, yhi = 1;
    *x = axis_make(xmin, xmax > xmin ? xmax + 0.05 * (xmax - xmin) : xmin + 1);
    double pad = 0.05 * (yhi - ylo);
    *y = axis_make(ylo - pad, yhi + pad);
}

static void svg_axes(FsAtomic *f, const Axis *x, const Axis *y)
{
    double x0 = PAD_L, x1 = SVG_W - PAD_R, y0 = SVG_H - PAD_B, y1 = PAD_T;
    fsutil_atomic_printf(f,
                         "<rect x='%g' y='%g' width='%g' height='%g' fill='none' "
                         "stroke='#444'/>\n",
                         x0, y1, x1 - x0, y0 - y1);
    for (double v = x->lo; v <= x->hi + 1e-9 * x->step; v += x->step)
        fsutil_atomic_printf(f,
                             "<line x1='%.1f' y1='%g' x2='%.1f' y2='%g' stroke='#ddd'/>"
                             "<text x='%.1f' y='%g' text-anchor='middle'>%g</text>\n",
                             px(x, v), y0, px(x, v), y1, px(x, v), y0 + 18, v);
    for (double v = y->lo; v <= y->hi + 1e-9 * y->step; v += y->step)
        fsutil_atomic_printf(f,
                             "<line x1='%g' y1='%.1f' x2='%g' y2='%.1f' stroke='#ddd'/>"
                             "<text x='%g' y='%.1f' text-anchor='end'>%g</text>\n",
                             x0, py(y, v), x1, py(y, v), x0 - 6, py(y, v) + 4,
                             fabs(v) < 1e-12 ? 0 : v);
    fsutil_atomic_printf(f,
                         "<text x='%g' y='%d' text-anchor='middle'>KL(policy || reference), "
                         "nats per sequence</text>\n",
                         (x0 + x1) / 2, SVG_H - 16);
    fsutil_atomic_printf(f,
                         "<text transform='translate(18 %g) rotate(-90)' "
                         "text-anchor='middle'>mean task reward</text>\n",
                         (y0 + y1) / 2);
}

static int cmp_kl(const void *a, const void *b)
{
    const CurvePoint *p = a, *q = b;
    return (p->kl > q->kl) - (p->kl < q->kl);
}

static void svg_curve(FsAtomic *f, Curve *c, const char *color, int index, const Axis *x,
                      const Axis *y)
{
    qsort(c->pt, (size_t)c->n, sizeof *c->pt, cmp_kl); /* a frontier is drawn along KL */
    fsutil_atomic_printf(f, "<polyline fill='none' stroke='%s' stroke-width='2' points='", color);
    for (int k = 0; k < c->n; k++)
        fsutil_atomic_printf(f, "%.1f,%.1f ", px(x, c->pt[k].kl), py(y, c->pt[k].reward));
    fsutil_atomic_printf(f, "'/>\n");
    for (int k = 0; k < c->n; k++)
        fsutil_atomic_printf(f,
                             "<circle cx='%.1f' cy='%.1f' r='4' fill='%s'/>"
                             "<text x='%.1f' y='%.1f' font-size='10' fill='%s'>&#946;=%g</text>\n",
                             px(x, c->pt[k].kl), py(y, c->pt[k].reward), color,
                             px(x, c->pt[k].kl) + 6, py(y, c->pt[k].reward) - 6, color,
                             c->pt[k].beta);
    double ly = PAD_T + 16 + 20 * index, lx = SVG_W - PAD_R + 16;
    fsutil_atomic_printf(f,
                         "<line x1='%g' y1='%g' x2='%g' y2='%g' stroke='%s' stroke-width='2'/>"
                         "<text x='%g' y='%g'>%s</text>\n",
                         lx, ly, lx + 22, ly, color, lx + 28, ly + 4, c->name);
}

static int write_svg(const char *path, Curves *cs, char *err, size_t errlen)
{
    Axis x, y;
    data_range(cs, &x, &y);
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    if (!f)
        return -1;
    fsutil_atomic_printf(f,
                         "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' "
                         "font-family='sans-serif' font-size='12'>\n"
                         "<rect width='100%%' height='100%%' fill='white'/>\n"
                         "<text x='%d' y='26' font-size='15'>Reward against KL on the "
                         "built-in task (means over seeds)</text>\n",
                         SVG_W, SVG_H, PAD_L);
    svg_axes(f, &x, &y);
    if (isfinite(cs->ref_reward))
        fsutil_atomic_printf(f,
                             "<circle cx='%.1f' cy='%.1f' r='5' fill='none' stroke='black'/>"
                             "<text x='%.1f' y='%.1f' font-size='10'>reference</text>\n",
                             px(&x, 0), py(&y, cs->ref_reward), px(&x, 0) + 7,
                             py(&y, cs->ref_reward) + 14);
    for (int i = 0; i < cs->n; i++)
        svg_curve(f, &cs->c[i], palette[i % N_COLORS], i, &x, &y);
    fsutil_atomic_printf(f, "</svg>\n");
    return fsutil_atomic_commit(f, err, errlen);
}

/* PATH lookup of an executable */
static bool on_path(const char *prog)
{
    const char *path = getenv("PATH");
    char dir[1024];
    for (const char *p = path; p && *p;) {
        const char *colon = strchr(p, ':');
        size_t n = colon ? (size_t)(colon - p) : strlen(p);
        snprintf(dir, sizeof dir, "%.*s/%s", (int)n, p, prog);
        if (n && access(dir, X_OK) == 0)
            return true;
        p = colon ? colon + 1 : NULL;
    }
    return false;
}

/* svg -> png with rsvg-convert or ImageMagick's convert; false when neither
 * is there or it failed (the SVG is the plot; the PNG is a convenience). */
static bool convert_png(const char *svg, const char *png)
{
    bool rsvg = on_path("rsvg-convert");
    if (!rsvg && !on_path("convert"))
        return false;
    unlink(png); /* never leave a stale plot beside a new table */
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY); /* a converter's chatter is not ours */
        if (null >= 0) {
            dup2(null, STDOUT_FILENO);
            dup2(null, STDERR_FILENO);
        }
        if (rsvg)
            execlp("rsvg-convert", "rsvg-convert", "-o", png, svg, (char *)NULL);
        else
            execlp("convert", "convert", svg, png, (char *)NULL);
        _exit(127);
    }
    int st;
    bool ok = pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok)
        unlink(png);
    return ok;
}

int frontier_write(const char *out_dir, const FrontierJob *jobs, const FrontierResult *res, int n,
                   char *err, size_t errlen)
{
    char csv[FRONTIER_DIR_LEN + 32], js[FRONTIER_DIR_LEN + 32], svg[FRONTIER_DIR_LEN + 32];
    char png[FRONTIER_DIR_LEN + 32];
    snprintf(csv, sizeof csv, "%s/frontier.csv", out_dir);
    snprintf(js, sizeof js, "%s/frontier.json", out_dir);
    snprintf(svg, sizeof svg, "%s/frontier.svg", out_dir);
    snprintf(png, sizeof png, "%s/frontier.png", out_dir);
    Curves cs;
    if (fsutil_mkdirs(out_dir, err, errlen) != 0)
        return -1;
    if (curves_make(jobs, res, n, &cs) != 0) {
        curves_free(&cs);
        return err_fail(err, errlen, "frontier: out of memory");
    }
    int rc = write_csv(csv, jobs, res, n, err, errlen);
    if (rc == 0)
        rc = write_json(js, jobs, res, n, &cs, err, errlen);
    if (rc == 0)
        rc = write_svg(svg, &cs, err, errlen);
    curves_free(&cs);
    if (rc == 0)
        convert_png(svg, png);
    return rc;
}
