/*
 * discover/loop.c — the discovery loop's driver (discover.h): setup and resume,
 * the generations, and the proposal step with the archive listing each
 * proposer call sees. Evaluation is discover/evaluate.c.
 *
 * Resume rule: a generation is complete when it has all its proposals and
 * each has a result. The loop starts at generation 0 and, for each one,
 * proposes only the indices the archive lacks and evaluates only the
 * proposals without a result — so a rerun after a kill at any point repeats
 * no finished evaluation and loses none. The proposer's randomness is drawn
 * from (seed, generation, index), so evolve re-proposes identically.
 *
 * The parent never runs tensor code (workers do, see discover/pool.h): the
 * proposers here are text, HTTP and fork/exec only.
 */
#include "discover/discover.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "discover/evaluate.h"
#include "discover/loop.h"
#include "discover/mpi_eval.h"
#include "discover/pool.h"
#include "util/text.h"
#include "util/errmsg.h"
#include "util/fsutil.h"
#include "lua/loss.h"
#include "lua/sandbox.h"
#include "util/timeutil.h"

#define TEXT_LEN 1024
#define MAX_CODE_BYTES                                                                             \
    ((size_t)64 << 10) /* a loss is a few hundred bytes; more is a runaway reply */

/* ---- what a proposer sees of an archived candidate -------------------------------- */

/* Strings of one ProposeContext, freed together after the call. */
typedef struct Held {
    json_t *json[3 * (PROPOSE_MAX_PARENTS + PROPOSE_MAX_FAILURES + PROPOSE_MAX_LEADERS)];
    char *text[3 * (PROPOSE_MAX_PARENTS + PROPOSE_MAX_FAILURES + PROPOSE_MAX_LEADERS)];
    int n_json, n_text;
} Held;

static void held_free(Held *h)
{
    for (int i = 0; i < h->n_json; i++)
        json_decref(h->json[i]);
    for (int i = 0; i < h->n_text; i++)
        free(h->text[i]);
    h->n_json = h->n_text = 0;
}

static json_t *hold_json(Held *h, json_t *j)
{
    if (j)
        h->json[h->n_json++] = j;
    return j;
}

static const char *hold_text(Held *h, char *t)
{
    if (t)
        h->text[h->n_text++] = t;
    return t;
}

static double num_at(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* "f(0) = 0.693, f'(0) = -0.500, convex, no stationary point, ..." */
static char *shape_text(const json_t *res)
{
    const json_t *s = json_object_get(res, "shape");
    if (!json_is_true(json_object_get(s, "valid")))
        return NULL;
    char *out = malloc(TEXT_LEN);
    if (!out)
        return NULL;
    const json_t *st = json_object_get(s, "stationary");
    size_t k = 0;
    int n =
        snprintf(out, TEXT_LEN, "in rho = beta*logits (beta %g): f(0) = %.4g, f'(0) = %+.4g, %s",
                 num_at(s, "beta"), num_at(s, "f0"), num_at(s, "slope0"),
                 json_string_value(json_object_get(s, "convexity")));
    for (k = 0; k < json_array_size(st) && n < TEXT_LEN - 80; k++) {
        const json_t *p = json_array_get(st, k);
        n += snprintf(out + n, TEXT_LEN - (size_t)n, ", local %s at rho = %+.3g",
                      json_string_value(json_object_get(p, "kind")), num_at(p, "rho"));
    }
    const char *coupling =
        json_string_value(json_object_get(json_object_get(res, "descriptors"), "coupling"));
    double range = json_number_value(json_array_get(json_object_get(s, "range"), 1));
    snprintf(out + n, TEXT_LEN - (size_t)n, ", slope %+.3g at rho = -%g and %+.3g at +%g%s",
             num_at(s, "slope_left"), range, num_at(s, "slope_right"), range,
             !coupling                          ? ""
             : strcmp(coupling, "coupled") == 0 ? "; couples the pairs of a batch"
                                                : "; per pair (no batch coupling)");
    return out;
}

/* "loss 0.693 -> 0.503, train accuracy 0.00 -> 0.93 over 300 steps; held-out ..." */
static char *curve_text(const json_t *res)
{
    const json_t *c = json_object_get(res, "curve");
    const json_t *fit = json_object_get(res, "fitness");
    if (!fit || json_is_null(fit))
        fit = json_object_get(res, "hurdle");
    size_t n = json_array_size(c);
    if (n == 0 || !fit)
        return NULL;
    char *out = malloc(TEXT_LEN);
    if (!out)
        return NULL;
    const json_t *a = json_array_get(c, 0), *b = json_array_get(c, n - 1);
    int k = snprintf(out, TEXT_LEN, "training loss");
    for (size_t i = 0; i < n && k < TEXT_LEN - 120; i++)
        k += snprintf(out + k, TEXT_LEN - (size_t)k, "%s%.4g", i ? " -> " : " ",
                      json_number_value(json_array_get(json_array_get(c, i), 1)));
    snprintf(out + k, TEXT_LEN - (size_t)k,
             " over %g steps; train accuracy %.2f -> %.2f; held-out accuracy %.3f, reward "
             "margin %.4g",
             json_number_value(json_array_get(b, 0)), json_number_value(json_array_get(a, 2)),
             json_number_value(json_array_get(b, 2)), num_at(fit, "value"),
             num_at(fit, "eval_margin"));
    return out;
}

/* "- error [shape] message (line 7)", one per line */
static char *diag_text(const json_t *res)
{
    const json_t *ds = json_object_get(res, "diagnostics");
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    size_t k;
    json_t *d;
    json_array_foreach(ds, k, d)
    {
        const char *sev = json_string_value(json_object_get(d, "severity"));
        if (sev && strcmp(sev, "info") == 0 && k > 0)
            continue;
        json_t *line = json_object_get(d, "line");
        fprintf(f, "- %s [%s] %s", sev ? sev : "error",
                json_string_value(json_object_get(d, "code")),
                json_string_value(json_object_get(d, "message")));
        if (json_is_integer(line))
            fprintf(f, " (line %lld)", (long long)json_integer_value(line));
        fputc('\n', f);
    }
    fclose(f);
    return out;
}

static void describe(const Loop *L, const ArchiveEntry *e, ProposeEntry *pe, Held *h)
{
    json_t *prop = hold_json(h, archive_read_proposal(L->ar, e));
    json_t *res = hold_json(h, archive_read_result(L->ar, e));
    *pe = (ProposeEntry){.name = e->name,
                         .generation = e->gen,
                         .status = cand_status_name(e->status),
                         .fitness = e->status == CAND_VALID ? e->fitness : e->hurdle};
    /* the hurdle is one seed: its interval is the noise floor's */
    double noise = archive_noise(L->ar);
    pe->interval = e->status == CAND_VALID ? fitness_interval(e->scores.se, e->scores.n, noise)
                                           : fitness_interval(NAN, 1, noise);
    pe->code = json_string_value(json_object_get(prop, "code"));
    pe->genome = json_string_value(json_object_get(prop, "genome"));
    pe->thought = json_string_value(json_object_get(prop, "thought"));
    pe->shape = hold_text(h, shape_text(res));
    pe->curve = hold_text(h, curve_text(res));
    pe->diagnostics = hold_text(h, diag_text(res));
}

static uint64_t candidate_seed(uint64_t seed, int gen, int idx)
{
    return seed * 0x9E3779B97F4A7C15ULL + (uint64_t)gen * 0x100000001B3ULL + (uint64_t)idx;
}

static void build_context(const Loop *L, int gen, int idx, ProposeContext *ctx, Held *h)
{
    const DiscoverOptions *o = L->o;
    const ArchiveEntry *picked[PROPOSE_MAX_LEADERS];
    Rng r;
    *ctx = (ProposeContext){.generation = gen,
                            .index = idx,
                            .seed = candidate_seed(o->seed, gen, idx),
                            .fitness_metric = L->fitness->summary,
                            .n_evaluated = archive_count(L->ar)};
    rng_seed(&r, ctx->seed ^ 0x5851F42D4C957F2DULL); /* parents: a stream of their own */
    ctx->n_parents =
        archive_parents(L->ar, &r, o->parents, proposer_needs_genome(L->proposer), picked);
    for (int i = 0; i < ctx->n_parents; i++)
        describe(L, picked[i], &ctx->parents[i], h);
    ctx->n_failures = archive_failures(L->ar, o->failures_shown, picked);
    for (int i = 0; i < ctx->n_failures; i++)
        describe(L, picked[i], &ctx->failures[i], h);
    ctx->n_leaders = archive_leaders(L->ar, o->leaders_shown, picked);
    for (int i = 0; i < ctx->n_leaders; i++)
        describe(L, picked[i], &ctx->leaders[i], h);
}

/* ---- proposals ----------------------------------------------------------------------- */

static int append(Loop *L, json_t *rec, char *err, size_t errlen)
{
    int rc = rec ? archive_append(L->ar, rec, err, errlen) : -1;
    if (!rec)
        snprintf(err, errlen,
                 "discover: an archive record could not be encoded (out of memory, "
                 "or text that is not UTF-8)");
    json_decref(rec);
    return rc;
}

/* the proposal record; for a reply without code also its no_code result */
static int archive_proposal(Loop *L, int gen, int idx, const Proposal *p, const char *proposer,
                            double seconds, char *err, size_t errlen)
{
    char name[ARCHIVE_NAME_LEN];
    archive_unique_name(L->ar, p->name[0] ? p->name : "candidate", name);
    json_t *parents = json_array();
    for (int i = 0; i < p->n_parents; i++)
        json_array_append_new(parents, json_string(p->parents[i]));
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx",
             (unsigned long long)(p->code ? archive_hash(p->code) : 0));
    json_t *rec =
        json_pack("{s:s, s:i, s:i, s:s, s:s, s:s?, s:s, s:s?, s:s?, s:o, s:o, s:I}", "type",
                  "proposal", "gen", gen, "idx", idx, "name", name, "proposer", proposer, "thought",
                  p->thought, "code_hash", hash, "code", p->code, "genome", p->genome, "parents",
                  parents, "seconds", archive_num(seconds), "time", (json_int_t)time(NULL));
    if (p->raw && !p->code && rec) /* what the proposer said instead of code */
        json_object_set_new(rec, "reply", json_stringn(p->raw, strnlen(p->raw, 4000)));
    if (append(L, rec, err, errlen) != 0)
        return -1;
    if (p->code)
        return 0;
    json_t *res = json_pack("{s:s, s:i, s:i, s:s, s:s, s:[{s:s, s:s, s:s, s:n}], s:{s:o}}", "type",
                            "result", "gen", gen, "idx", idx, "name", name, "status", "no_code",
                            "diagnostics", "severity", "error", "code", "reply", "message",
                            p->error, "line", "timings", "propose", archive_num(seconds));
    char shown[1200]; /* the proposer's words: escaped for the terminal */
    if (!L->o->quiet)
        fprintf(stderr, "discover: gen %d #%d %s: no code: %s\n", gen, idx, name,
                text_for_terminal(p->error, shown, sizeof shown));
    return append(L, res, err, errlen);
}

/* generation 0: the library losses named in seed_losses */
static int propose_seed(Loop *L, int idx, Proposal *p, char *err, size_t errlen)
{
    const char *name = L->o->seed_losses[idx];
    char path[DISCOVER_PATH_LEN];
    size_t len;
    snprintf(path, sizeof path, "%s/%s.lua", loss_default_lib_dir(), name);
    memset(p, 0, sizeof *p);
    if (fsutil_read_capped(path, SANDBOX_SOURCE_CAP, &p->code, &len, err, errlen) != 0) {
        snprintf(err, errlen, "seed_losses: no library loss '%s' (%s)", name, path);
        return -1;
    }
    snprintf(p->name, sizeof p->name, "%s", name);
    char thought[DISCOVER_PATH_LEN + 32];
    snprintf(thought, sizeof thought, "library loss %s", path);
    p->thought = propose_strdup(thought);
    p->genome = propose_strdup(propose_evolve_seed_genome(name));
    return 0;
}

static int propose_one(Loop *L, int gen, int idx, char *err, size_t errlen)
{
    Proposal p;
    double t0 = timeutil_now();
    int rc;
    if (gen == 0) {
        rc = propose_seed(L, idx, &p, err, errlen);
    } else {
        ProposeContext ctx;
        Held h = {0};
        build_context(L, gen, idx, &ctx, &h);
        rc = proposer_propose(L->proposer, &ctx, &p, err, errlen);
        held_free(&h);
    }
    if (rc == 0 && p.code && strlen(p.code) > MAX_CODE_BYTES) {
        snprintf(p.error, sizeof p.error, "the code is longer than %zu KiB", MAX_CODE_BYTES >> 10);
        free(p.code);
        p.code = NULL;
    }
    const char *who = gen == 0 ? "seed" : propose_kind_name(L->o->propose.kind);
    if (rc == 0)
        rc = archive_proposal(L, gen, idx, &p, who, timeutil_now() - t0, err, errlen);
    proposal_free(&p);
    return rc;
}

static int gen_size(const DiscoverOptions *o, int gen)
{
    return gen == 0 ? o->n_seed_losses : o->candidates;
}

static int propose_generation(Loop *L, int gen, char *err, size_t errlen)
{
    for (int idx = archive_gen_count(L->ar, gen); idx < gen_size(L->o, gen); idx++)
        if (propose_one(L, gen, idx, err, errlen) != 0)
            return -1;
    return 0;
}

/* ---- the run ----------------------------------------------------------------------------- */

static int save_settings(const DiscoverOptions *o, char *err, size_t errlen)
{
    char path[DISCOVER_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/discover.yaml", o->out_dir);
    char *text = discover_to_yaml(o);
    int rc = text ? fsutil_write_atomic(path, text, strlen(text), err, errlen) : -1;
    if (!text)
        snprintf(err, errlen, "discover: out of memory");
    free(text);
    return rc;
}

static int setup(Loop *L, char *err, size_t errlen)
{
    const DiscoverOptions *o = L->o;
    snprintf(L->losses_dir, sizeof L->losses_dir, "%s/losses", o->out_dir);
    snprintf(L->work_dir, sizeof L->work_dir, "%s/work", o->out_dir);
    if (fsutil_mkdirs(L->losses_dir, err, errlen) != 0 ||
        fsutil_remove_tree(L->work_dir, err, errlen) != 0 || /* a killed run's scratch */
        fsutil_mkdirs(L->work_dir, err, errlen) != 0 || save_settings(o, err, errlen) != 0)
        return -1;
    int dropped = 0;
    if (!(L->ar = archive_open(o->out_dir, &dropped, err, errlen)))
        return -1;
    archive_set_noise(L->ar, discover_noise_sd(o)); /* before any elite is used */
    if (dropped && !o->quiet)
        fprintf(stderr, "discover: dropped a torn last line of %s/archive.jsonl (a killed run)\n",
                o->out_dir);
    if (!(L->fitness = fitness_find(o->fitness, err, errlen)))
        return -1;
    L->proposer = proposer_new(&o->propose, err, errlen);
    return L->proposer ? 0 : -1;
}

/* ---- preparing the fitness ---------------------------------------------------------------- */

/* Building the task's reference is tensor code, and the parent must start no
 * OpenMP or BLAS threads before it forks workers (discover/pool.h), so the
 * one build runs in a worker of its own, before generation 0; the training
 * workers then find it in the cache instead of all waiting on one build. */

typedef struct Prepare {
    const Loop *L;
    char err[1024];
    bool ok;
} Prepare;

static char *prepare_work(void *arg, size_t i)
{
    (void)i;
    const Loop *L = ((Prepare *)arg)->L;
    char err[1024] = "";
    int rc = L->fitness->prepare(L->o->quiet, err, sizeof err);
    char *text = malloc(sizeof err + 8); /* "ok", or "error: " and why */
    if (text && rc == 0)
        snprintf(text, sizeof err + 8, "ok");
    else if (text)
        snprintf(text, sizeof err + 8, "error: %s", err[0] ? err : "failed");
    return text;
}

static void prepare_done(void *arg, size_t i, const PoolOutcome *o)
{
    (void)i;
    Prepare *p = arg;
    p->ok = o->end == POOL_OK && strcmp(o->text, "ok") == 0;
    snprintf(p->err, sizeof p->err, "%s",
             o->end != POOL_OK                     ? o->message
             : strncmp(o->text, "error: ", 7) == 0 ? o->text + 7
                                                   : o->text);
}

static int prepare_fitness(const Loop *L, char *err, size_t errlen)
{
    if (!L->fitness->prepare)
        return 0;
    Prepare p = {.L = L};
    PoolLimits lim = {.workers = 1,
                      .wall_seconds = DISCOVER_PREPARE_WALL_SECONDS,
                      .mem_bytes = (size_t)L->o->memory_mb << 20};
    if (pool_run(1, prepare_work, prepare_done, &p, &lim, err, errlen) != 0)
        return -1;
    if (!p.ok)
        return err_fail(err, errlen, "fitness %s: preparing: %s", L->fitness->name, p.err);
    return 0;
}

static void summary(const Loop *L)
{
    int n[CAND_STATUS_COUNT] = {0};
    for (int i = 0; i < archive_count(L->ar); i++)
        n[archive_entry(L->ar, i)->status]++;
    double hours = (timeutil_now() - L->t0) / 3600.0;
    fprintf(stderr, "discover: %d candidates:", archive_count(L->ar));
    for (int s = 0; s < CAND_STATUS_COUNT; s++)
        if (n[s])
            fprintf(stderr, " %s %d", cand_status_name((CandStatus)s), n[s]);
    fprintf(stderr, "; %d cells; this run trained %d in %.1f min (%.0f per hour)\n",
            archive_cell_count(L->ar), L->trained, hours * 60,
            hours > 0 ? L->trained / hours : 0.0);
}

int discover_run(const DiscoverOptions *o, char *err, size_t errlen)
{
    Loop L = {.o = o, .t0 = timeutil_now()};
    int rc = setup(&L, err, errlen);
    if (rc == 0)
        rc = prepare_fitness(&L, err, errlen);
    if (rc == 0 && !(L.mpi = mpi_eval_open(o, err, errlen)) && err[0])
        rc = -1; /* under mpirun: the evaluator ranks get the final settings */
    for (int gen = 0; rc == 0 && gen <= o->generations; gen++) {
        if (gen_size(o, gen) == 0)
            continue;
        rc = propose_generation(&L, gen, err, errlen);
        if (rc == 0)
            rc = discover_evaluate(&L, gen, err, errlen);
    }
    if (L.ar && !o->quiet)
        summary(&L);
    char rerr[256];
    if (L.work_dir[0])
        fsutil_remove_tree(L.work_dir, rerr, sizeof rerr);
    mpi_eval_close(L.mpi);
    proposer_free(L.proposer);
    archive_close(L.ar);
    return rc;
}
