/*
 * discover/evaluate.c — the evaluation cascade of one generation (discover.h):
 * screen (check + behaviour probe) and train (hurdle, then the full
 * fitness), each in bounded worker processes, each result archived as it
 * arrives.
 *
 * What runs where: everything that executes a candidate's code — the
 * checker, the probe, training — runs in a worker (the *_work functions,
 * which return JSON text); the parent only classifies that text and writes
 * the archive. A worker's scratch files live in work/ and are removed with
 * it; a candidate that passes the checks is saved as losses/NAME.lua before
 * it trains, so a crash in training still leaves its file for inspection.
 */
#include "discover/evaluate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/check.h"
#include "lua/sandbox.h"
#include "discover/loop.h"
#include "discover/mpi_eval.h"
#include "discover/pool.h"
#include "discover/probe.h"
#include "util/text.h"
#include "util/fsutil.h"
#include "util/mpi_comm.h"

/* a check and a probe take milliseconds; hostile code is cut by the sandbox
 * first, these only catch what slips past it */
#define SCREEN_WALL_SECONDS 120
#define SCREEN_CPU_SECONDS 60
#define CHECK_SEED 20240601

typedef struct Eval {
    Loop *L;
    int *jobs; /* training job -> index in L->cands */
    int n_jobs;
} Eval;

static LossLimits limits_of(const Config *c)
{
    return (LossLimits){.lua_bytes = (size_t)c->sandbox_lua_bytes,
                        .tensor_bytes = (size_t)c->sandbox_tensor_bytes,
                        .instructions = (uint64_t)c->sandbox_instructions,
                        .seconds = c->sandbox_seconds,
                        .max_depth = c->sandbox_max_depth};
}

static char *dump(json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
    json_decref(j);
    return text;
}

/* ---- screening: in the worker ------------------------------------------------------ */

static void add_probe_failure(json_t *rep, const char *msg)
{
    json_object_set_new(rep, "ok", json_false());
    json_array_append_new(json_object_get(rep, "diagnostics"),
                          json_pack("{s:s, s:s, s:s, s:n}", "severity", "error", "code", "probe",
                                    "message", msg, "line"));
}

static char *screen_work(void *arg, size_t i)
{
    const Eval *ev = arg;
    const Cand *c = &ev->L->cands[i];
    CheckOptions copt = {.limits = limits_of(&ev->L->o->train), .seed = CHECK_SEED};
    CheckReport *rep = malloc(sizeof *rep);
    if (!rep)
        return NULL;
    check_run(c->path, &copt, rep);
    char *text = check_report_json(rep);
    bool ok = rep->ok;
    free(rep);
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    if (!j || !ok)
        return dump(j);
    Behaviour *b = malloc(sizeof *b);
    char err[512];
    if (!b || probe_behaviour(c->path, &copt.limits, b, err, sizeof err) != 0) {
        add_probe_failure(j, b ? err : "probe: out of memory");
    } else {
        json_t *bj = archive_behaviour_json(b);
        json_object_update(j, bj);
        json_decref(bj);
    }
    free(b);
    return dump(j);
}

/* ---- screening: in the parent ---------------------------------------------------------- */

/* s without every occurrence of prefix: messages name "NAME.lua:7", not
 * the scratch directory the worker ran the file from */
static json_t *scrubbed(const char *s, const char *prefix)
{
    size_t n = strlen(prefix);
    char *out = malloc(strlen(s) + 1), *w = out;
    if (!out)
        return json_string(s);
    while (*s) {
        if (strncmp(s, prefix, n) == 0)
            s += n;
        else
            *w++ = *s++;
    }
    *w = '\0';
    json_t *j = json_string(out);
    free(out);
    return j;
}

static void scrub_diagnostics(json_t *diags, const char *prefix)
{
    size_t k;
    json_t *d;
    json_array_foreach(diags, k, d)
    {
        const char *m = json_string_value(json_object_get(d, "message"));
        if (m)
            json_object_set_new(d, "message", scrubbed(m, prefix));
    }
}

static void screen_done(void *arg, size_t i, const PoolOutcome *o)
{
    const Eval *ev = arg;
    Cand *c = &ev->L->cands[i];
    c->end = o->end;
    c->screen_seconds = o->seconds;
    snprintf(c->failure, sizeof c->failure, "%s", o->message);
    c->screen = o->end == POOL_OK ? json_loads(o->text, 0, NULL) : NULL;
    if (o->end == POOL_OK && !c->screen)
        snprintf(c->failure, sizeof c->failure, "the checker's report was not JSON");
    char prefix[sizeof ev->L->work_dir + 1];
    snprintf(prefix, sizeof prefix, "%s/", ev->L->work_dir);
    scrub_diagnostics(json_object_get(c->screen, "diagnostics"), prefix);
}

static json_t *result_base(const Cand *c, const char *status)
{
    return json_pack("{s:s, s:i, s:i, s:s, s:s}", "type", "result", "gen", c->gen, "idx", c->idx,
                     "name", c->name, "status", status);
}

static json_t *one_diag(const char *code, const char *msg)
{
    return json_pack("[{s:s, s:s, s:s, s:n}]", "severity", "error", "code", code, "message", msg,
                     "line");
}

/* rank and host of a result, with the failed attempts before it (mpirun) */
static void add_where(json_t *rec, const MpiWhere *w)
{
    json_object_set_new(rec, "rank", json_integer(w->rank));
    json_object_set_new(rec, "host", json_string(w->host));
    if (w->attempts)
        json_object_set(rec, "attempts", (json_t *)w->attempts);
}

static int write_result(Loop *L, json_t *rec, const char *line)
{
    if (rec && L->mpi && !json_object_get(rec, "rank")) /* screened on rank 0 */
        add_where(rec, &(MpiWhere){.rank = 0, .host = comm_host()});
    if (!rec || archive_append(L->ar, rec, L->err, sizeof L->err) != 0) {
        if (!rec)
            snprintf(L->err, sizeof L->err, "discover: out of memory");
        L->failed = true;
    }
    json_decref(rec);
    char shown[2048]; /* the line holds a worker's diagnostics: escaped for the terminal */
    if (!L->o->quiet && line)
        fprintf(stderr, "%s\n", text_for_terminal(line, shown, sizeof shown));
    return L->failed ? -1 : 0;
}

/* the screen's findings every later record of the candidate carries */
static void add_screen(json_t *rec, const Cand *c)
{
    json_object_set(rec, "diagnostics", json_object_get(c->screen, "diagnostics"));
    json_t *shape = json_object_get(c->screen, "shape");
    if (shape)
        json_object_set(rec, "shape", shape);
    char cell[ARCHIVE_CELL_LEN];
    json_t *d = archive_cell(shape, c->behaviour.coupled, cell);
    if (d)
        json_object_set_new(rec, "descriptors", d);
    if (c->behaviour.n > 0) {
        json_t *bj = archive_behaviour_json(&c->behaviour);
        json_object_update(rec, bj);
        json_decref(bj);
    }
}

static void progress(char *line, size_t n, const Cand *c, const char *what)
{
    snprintf(line, n, "discover: gen %d #%d %s: %s", c->gen, c->idx, c->name, what);
}

/* the host could not start a worker (fork or pipe failed): not the
 * candidate's fault, so nothing is archived and the loop stops; a rerun
 * evaluates the candidate again */
static int host_failure(Loop *L, const char *why)
{
    if (!L->failed)
        snprintf(L->err, sizeof L->err, "discover: %s", why);
    L->failed = true;
    return -1;
}

static int screen_failed(Loop *L, const Cand *c)
{
    if (c->end == POOL_START)
        return host_failure(L, c->failure);
    const char *st = c->end == POOL_TIMEOUT ? "timeout" : "crashed";
    json_t *rec = result_base(c, st);
    json_object_set_new(rec, "diagnostics", one_diag(st, c->failure));
    json_object_set_new(rec, "timings",
                        json_pack("{s:o}", "screen", archive_num(c->screen_seconds)));
    char line[512];
    progress(line, sizeof line, c, c->failure);
    return write_result(L, rec, line);
}

static int invalid(Loop *L, const Cand *c)
{
    json_t *rec = result_base(c, "invalid");
    add_screen(rec, c);
    json_object_set_new(rec, "timings",
                        json_pack("{s:o}", "screen", archive_num(c->screen_seconds)));
    json_t *d0 = json_array_get(json_object_get(c->screen, "diagnostics"), 0);
    char line[640];
    snprintf(line, sizeof line, "discover: gen %d #%d %s: invalid: %.400s", c->gen, c->idx, c->name,
             json_string_value(json_object_get(d0, "message")));
    return write_result(L, rec, line);
}

static int duplicate(Loop *L, const Cand *c, const char *of)
{
    json_t *rec = result_base(c, "duplicate");
    char msg[256];
    snprintf(msg, sizeof msg,
             "behaves exactly as `%s` (the same loss and gradient values on the probe grid); "
             "not evaluated again",
             of);
    json_object_set_new(rec, "diagnostics",
                        json_pack("[{s:s, s:s, s:s, s:n}]", "severity", "info", "code", "duplicate",
                                  "message", msg, "line"));
    json_object_set_new(rec, "duplicate_of", json_string(of));
    if (c->screen)
        add_screen(rec, c);
    char line[512];
    snprintf(line, sizeof line, "discover: gen %d #%d %s: duplicate of %s", c->gen, c->idx, c->name,
             of);
    return write_result(L, rec, line);
}

/* a duplicate among this generation's earlier accepted candidates */
static const Cand *same_in_generation(const Loop *L, const Cand *c)
{
    for (const Cand *o = L->cands; o < c; o++)
        if (o->accepted &&
            (o->behaviour.hash == c->behaviour.hash || probe_same(&o->behaviour, &c->behaviour)))
            return o;
    return NULL;
}

static int save_loss(Loop *L, const Cand *c)
{
    char path[DISCOVER_PATH_LEN + ARCHIVE_NAME_LEN + 40];
    snprintf(path, sizeof path, "%s/%s.lua", L->losses_dir, c->name);
    if (fsutil_copy_atomic(c->path, SANDBOX_SOURCE_CAP, path, L->err, sizeof L->err) != 0) {
        L->failed = true;
        return -1;
    }
    return 0;
}

/* one screened candidate: archived as a failure, or accepted for training */
static int classify(Loop *L, Cand *c)
{
    if (c->end != POOL_OK || !c->screen)
        return screen_failed(L, c);
    if (archive_behaviour_from_json(c->screen, &c->behaviour) != 0)
        c->behaviour.n = 0;
    if (!json_is_true(json_object_get(c->screen, "ok")))
        return invalid(L, c);
    const ArchiveEntry *e = archive_same_behaviour(L->ar, &c->behaviour);
    const Cand *twin = e ? NULL : same_in_generation(L, c);
    if (e || twin)
        return duplicate(L, c, e ? e->name : twin->name);
    c->accepted = true;
    return save_loss(L, c);
}

/* ---- training: in the worker --------------------------------------------------------- */

static json_t *fitness_json(const FitnessResult *r)
{
    json_t *seeds = json_array(), *per = json_array();
    for (int i = 0; i < r->n_seeds; i++) {
        json_array_append_new(seeds, json_integer((json_int_t)r->seeds[i]));
        json_array_append_new(per, archive_num(r->per_seed[i]));
    }
    return json_pack("{s:s, s:o, s:o, s:o, s:o, s:i, s:o, s:o, s:o}", "metric", r->metric, "value",
                     archive_num(r->fitness), "se", archive_num(r->se), "seeds", seeds, "per_seed",
                     per, "steps", r->steps, "eval_margin", archive_num(r->eval_margin),
                     "eval_loss", archive_num(r->eval_loss), "seconds", archive_num(r->seconds));
}

static json_t *curve_json(const FitnessResult *r)
{
    json_t *c = json_array();
    for (int i = 0; i < r->n_curve; i++)
        json_array_append_new(c, json_pack("[I, o, o]", (json_int_t)r->curve[i].step,
                                           archive_num(r->curve[i].loss),
                                           archive_num(r->curve[i].accuracy)));
    return c;
}

/* one stage: 0 with its fields in out, or -1 with "error" (scrub taken out
 * of it) and "stage" */
static int stage(const DiscoverOptions *o, const FitnessKind *f, const char *path,
                 FitnessOptions *fo, const char *name, const char *scrub, json_t *out)
{
    FitnessResult r;
    char err[1024];
    if (f->fn(path, fo, &r, err, sizeof err) != 0) {
        json_object_set_new(out, "error", scrubbed(err, scrub));
        json_object_set_new(out, "stage", json_string(name));
        return -1;
    }
    json_object_set_new(out, name, fitness_json(&r));
    json_object_set_new(out, "curve", curve_json(&r));
    json_object_set_new(out, "passed",
                        json_boolean(strcmp(name, "full") == 0 || r.fitness >= o->hurdle_min));
    return 0;
}

char *discover_train_text(const DiscoverOptions *o, const FitnessKind *f, const char *path,
                          const char *run_dir, const char *scrub)
{
    FitnessOptions fo = {.cfg = o->train, .work_dir = run_dir};
    json_t *out = json_object();
    if (o->hurdle_steps > 0) {
        fo.steps = o->hurdle_steps;
        fo.n_seeds = 1;
        fo.seeds[0] = o->fitness_seeds[0];
        if (stage(o, f, path, &fo, "hurdle", scrub, out) != 0 ||
            !json_is_true(json_object_get(out, "passed")))
            return dump(out);
    }
    fo.steps = o->full_steps;
    fo.n_seeds = o->n_fitness_seeds;
    memcpy(fo.seeds, o->fitness_seeds, sizeof fo.seeds);
    stage(o, f, path, &fo, "full", scrub, out);
    return dump(out);
}

static char *train_work(void *arg, size_t job)
{
    const Eval *ev = arg;
    const Cand *c = &ev->L->cands[ev->jobs[job]];
    char dir[DISCOVER_PATH_LEN + 80], prefix[sizeof ev->L->work_dir + 1];
    snprintf(dir, sizeof dir, "%s/g%d_%d_run", ev->L->work_dir, c->gen, c->idx);
    snprintf(prefix, sizeof prefix, "%s/", ev->L->work_dir);
    return discover_train_text(ev->L->o, ev->L->fitness, c->path, dir, prefix);
}

/* ---- training: in the parent ------------------------------------------------------------ */

static const char *train_status(const PoolOutcome *o, const json_t *j)
{
    if (o->end == POOL_TIMEOUT)
        return "timeout";
    if (o->end != POOL_OK || !j)
        return "crashed";
    if (json_object_get(j, "error"))
        return "train_failed";
    return json_object_get(j, "full") ? "valid" : "below_hurdle";
}

static void train_line(const Loop *L, char *line, size_t n, const Cand *c, const char *st,
                       const json_t *j, const char *why, double seconds)
{
    FitnessScores full;
    fitness_scores_from_json(json_object_get(j, "full"), &full);
    double hurdle = json_number_value(json_object_get(json_object_get(j, "hurdle"), "value"));
    double noise = archive_noise(L->ar);
    if (strcmp(st, "valid") == 0)
        snprintf(line, n,
                 "discover: gen %d #%d %s: valid, fitness %.4f ± %.4f (95%%, %d seeds; hurdle "
                 "%.4f), %.1f s",
                 c->gen, c->idx, c->name, full.mean, fitness_interval(full.se, full.n, noise),
                 full.n, hurdle, seconds);
    else if (strcmp(st, "below_hurdle") == 0)
        snprintf(line, n, "discover: gen %d #%d %s: below the hurdle (%.4f), %.1f s", c->gen,
                 c->idx, c->name, hurdle, seconds);
    else
        snprintf(line, n, "discover: gen %d #%d %s: %s: %.300s", c->gen, c->idx, c->name, st, why);
}

static void train_finish(void *arg, size_t job, const PoolOutcome *o, const MpiWhere *w)
{
    const Eval *ev = arg;
    Loop *L = ev->L;
    const Cand *c = &L->cands[ev->jobs[job]];
    if (o->end == POOL_START) {
        host_failure(L, o->message);
        return;
    }
    json_t *j = o->end == POOL_OK ? json_loads(o->text, 0, NULL) : NULL;
    const char *st = train_status(o, j);
    const char *why = json_string_value(json_object_get(j, "error"));
    json_t *rec = result_base(c, st);
    add_screen(rec, c);
    if (strcmp(st, "crashed") == 0 || strcmp(st, "timeout") == 0 || why)
        json_object_set_new(rec, "diagnostics",
                            one_diag(why ? "train" : st, why ? why : o->message));
    const char *keys[] = {"hurdle", "curve"};
    for (int k = 0; k < 2; k++)
        if (json_object_get(j, keys[k]))
            json_object_set(rec, keys[k], json_object_get(j, keys[k]));
    if (json_object_get(j, "full"))
        json_object_set(rec, "fitness", json_object_get(j, "full"));
    char file[ARCHIVE_NAME_LEN + 16];
    snprintf(file, sizeof file, "losses/%s.lua", c->name);
    json_object_set_new(rec, "file", json_string(file));
    json_object_set_new(rec, "timings",
                        json_pack("{s:o, s:o}", "screen", archive_num(c->screen_seconds), "train",
                                  archive_num(o->seconds)));
    char line[640];
    train_line(L, line, sizeof line, c, st, j, why ? why : o->message, o->seconds);
    json_decref(j);
    L->trained++;
    if (w)
        add_where(rec, w);
    write_result(L, rec, line);
}

static void train_done(void *arg, size_t job, const PoolOutcome *o)
{
    train_finish(arg, job, o, NULL);
}

/* what an evaluator rank needs of a training job: the code and its names */
static json_t *train_job(void *arg, size_t job)
{
    const Eval *ev = arg;
    const Cand *c = &ev->L->cands[ev->jobs[job]];
    char *code = NULL, err[256];
    size_t len;
    if (fsutil_read_capped(c->path, SANDBOX_SOURCE_CAP, &code, &len, err, sizeof err) != 0)
        return NULL;
    json_t *j = json_pack("{s:s, s:i, s:i, s:s}", "name", c->name, "gen", c->gen, "idx", c->idx,
                          "code", code);
    free(code);
    return j;
}

/* ---- the generation ------------------------------------------------------------------------ */

static void free_cands(Loop *L)
{
    for (int i = 0; i < L->n_cands; i++)
        json_decref(L->cands[i].screen);
    free(L->cands);
    L->cands = NULL;
    L->n_cands = 0;
}

/* one pending proposal into L->cands, or archived at once when its code is
 * an archived candidate's */
static int add_pending(Loop *L, const ArchiveEntry *e, char *err, size_t errlen)
{
    json_t *prop = archive_read_proposal(L->ar, e);
    const char *code = json_string_value(json_object_get(prop, "code"));
    Cand *c = &L->cands[L->n_cands];
    *c = (Cand){.gen = e->gen, .idx = e->idx};
    snprintf(c->name, sizeof c->name, "%s", e->name);
    snprintf(c->path, sizeof c->path, "%s/%s.lua", L->work_dir, e->name); /* names are unique */
    const ArchiveEntry *same = code ? archive_same_code(L->ar, archive_hash(code)) : NULL;
    int rc = 0;
    if (!code) {
        snprintf(err, errlen, "archive: the proposal of %s has no code", e->name);
        rc = -1;
    } else if (same) {
        rc = duplicate(L, c, same->name);
    } else {
        rc = fsutil_write_atomic(c->path, code, strlen(code), err, errlen);
        L->n_cands += rc == 0;
    }
    json_decref(prop);
    if (L->failed)
        snprintf(err, errlen, "%s", L->err);
    return rc;
}

static int collect(Loop *L, int gen, char *err, size_t errlen)
{
    int n = archive_count(L->ar);
    L->cands = calloc((size_t)n + 1, sizeof *L->cands);
    if (!L->cands) {
        snprintf(err, errlen, "discover: out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const ArchiveEntry *e = archive_entry(L->ar, i);
        if (e->gen == gen && e->res_len == 0 && add_pending(L, e, err, errlen) != 0)
            return -1;
    }
    return 0;
}

static PoolLimits train_limits(const DiscoverOptions *o)
{
    return (PoolLimits){.workers = o->workers,
                        .wall_seconds = o->timeout,
                        .cpu_seconds = o->cpu_seconds,
                        .mem_bytes = (size_t)o->memory_mb << 20};
}

static int screen_and_train(Loop *L, char *err, size_t errlen)
{
    Eval ev = {.L = L, .jobs = calloc((size_t)L->n_cands + 1, sizeof(int))};
    PoolLimits sl = train_limits(L->o);
    sl.wall_seconds = SCREEN_WALL_SECONDS;
    sl.cpu_seconds = SCREEN_CPU_SECONDS;
    int rc = ev.jobs ? pool_run((size_t)L->n_cands, screen_work, screen_done, &ev, &sl, err, errlen)
                     : -1;
    for (int i = 0; rc == 0 && i < L->n_cands; i++) {
        rc = classify(L, &L->cands[i]);
        if (rc == 0 && L->cands[i].accepted)
            ev.jobs[ev.n_jobs++] = i;
    }
    PoolLimits tl = train_limits(L->o);
    if (rc == 0 && L->mpi)
        rc = mpi_eval_run(L->mpi, (size_t)ev.n_jobs, train_work, train_job, train_finish, &ev, &tl,
                          err, errlen);
    else if (rc == 0)
        rc = pool_run((size_t)ev.n_jobs, train_work, train_done, &ev, &tl, err, errlen);
    if (!ev.jobs)
        snprintf(err, errlen, "discover: out of memory");
    free(ev.jobs);
    return rc;
}

int discover_evaluate(Loop *L, int gen, char *err, size_t errlen)
{
    int rc = collect(L, gen, err, errlen);
    if (rc == 0 && L->n_cands > 0)
        rc = screen_and_train(L, err, errlen);
    if (L->failed) {
        snprintf(err, errlen, "%s", L->err);
        rc = -1;
    }
    for (int i = 0; i < L->n_cands; i++)
        remove(L->cands[i].path);
    free_cands(L);
    return rc;
}
