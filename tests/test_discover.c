/*
 * test_discover.c — the discovery loop (discover.h) and its parts: reply
 * parsing, names, settings files, the archive's torn-line rule, worker
 * bounds, behaviour probes, the evolve and command proposers, the noise-aware
 * comparison in the archive and the report (discover/compare.h) and the
 * noise-floor measurement, and end-to-end
 * runs: against tests/fake_llm.py (an OpenAI-compatible server on loopback
 * replaying canned replies, valid, malformed and hostile), with the offline
 * evolve proposer, and a resume after kill -9.
 *
 * Every run uses a tiny model (width 16, one layer, 96 toy pairs) and a few
 * optimizer steps: the tests check the loop's bookkeeping, not the losses'
 * quality. Runs live in a fresh directory under /tmp, removed at the end.
 * The registration sets OMP_NUM_THREADS=1: this process runs tensor code
 * (the probe tests) and then forks workers, which is only safe without an
 * OpenMP thread pool.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/text.h"
#include "discover/discover.h"
#include "discover/archive.h"
#include "discover/compare.h"
#include "task/fitness.h"
#include "task/fitness_interim.h"
#include "discover/pool.h"
#include "discover/probe.h"
#include "util/fsutil.h"
#include "prefrun_config.h"
#include "discover/propose.h"
#include "testlib.h"
#include "testfs.h"

static char root_dir[256]; /* this run's scratch directory */
static char err[2048];

static const char *source_root(void)
{
    const char *r = getenv("PREFRUN_ROOT");
    return r ? r : PREFRUN_SOURCE_ROOT;
}

static const char *path_in(const char *name)
{
    static char p[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", root_dir, name);
    return p[k];
}

static void write_text(const char *path, const char *text)
{
    CHECKF(fsutil_write_atomic(path, text, strlen(text), err, sizeof err) == 0, "%s", err);
}

/* a loss file whose body returns expr (rho = beta * logits is in scope) */
static char *loss_code(const char *name, const char *body)
{
    char *out = malloc(4096);
    snprintf(out, 4096,
             "return {\n  name = \"%s\",\n  params = { beta = 0.1 },\n  loss = function(b, p)\n"
             "    local logits = (b.policy_chosen_logps - b.policy_rejected_logps)\n"
             "                 - (b.reference_chosen_logps - b.reference_rejected_logps)\n"
             "    local rho = p.beta * logits\n%s\n  end,\n}\n",
             name, body);
    return out;
}

static void write_loss(const char *file, const char *body)
{
    char *code = loss_code("t", body);
    write_text(path_in(file), code);
    free(code);
}

/* the archive's records, in order, as one JSON array (a torn last line skipped) */
static json_t *records(const char *dir)
{
    char path[600], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/archive.jsonl", dir);
    json_t *all = json_array();
    if (tfs_read(path, &text, &len, err, sizeof err) != 0)
        return all;
    for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, NULL);
        if (j)
            json_array_append_new(all, j);
    }
    free(text);
    return all;
}

static json_t *find_record(json_t *all, const char *type, int gen, int idx)
{
    size_t i;
    json_t *r;
    json_array_foreach(all, i, r)
    {
        if (strcmp(json_string_value(json_object_get(r, "type")), type) == 0 &&
            json_integer_value(json_object_get(r, "gen")) == gen &&
            json_integer_value(json_object_get(r, "idx")) == idx)
            return r;
    }
    return NULL;
}

static const char *status_of(json_t *all, int gen, int idx)
{
    json_t *r = find_record(all, "result", gen, idx);
    const char *s = r ? json_string_value(json_object_get(r, "status")) : NULL;
    return s ? s : "(no result)";
}

static const char *first_message(json_t *res)
{
    json_t *d = json_array_get(json_object_get(res, "diagnostics"), 0);
    const char *m = json_string_value(json_object_get(d, "message"));
    return m ? m : "";
}

/* the tiny settings every run here uses */
static void tiny(DiscoverOptions *o, const char *dir)
{
    static const char *const sets[] = {
        "context=16",
        "width=16",
        "heads=2",
        "layers=1",
        "toy_pairs=96",
        "eval_fraction=0.25",
        "learning_rate=0.01",
        "warmup_steps=1",
        "per_device_train_batch_size=8",
        "sandbox_instructions=5000000",
    };
    discover_defaults(o);
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        CHECKF(config_set(&o->train, sets[i], err, sizeof err) == 0, "%s", err);
    snprintf(o->out_dir, sizeof o->out_dir, "%s", dir);
    /* not the default "task": it trains a pretrained reference for minutes */
    CHECKF(discover_set(o, "fitness", "interim", err, sizeof err) == 0, "%s", err);
    o->workers = 2;
    o->hurdle_steps = 4;
    o->hurdle_min = 0.55; /* better than chance; the reversed loss stays below */
    o->full_steps = 6;
    o->n_fitness_seeds = 1;
    o->fitness_seeds[0] = 1;
    o->timeout = 60;
    o->quiet = true;
}

/* ---- replies -------------------------------------------------------------------- */

static void reply_json_in_fence_with_prose(void)
{
    Proposal p = {0};
    propose_parse_reply("Here is my idea.\n```json\n{\"thought\": \"smooth hinge\", \"name\": "
                        "\"Smooth Hinge!\", \"code\": \"return {name = 'x'}\"}\n```\nEnjoy.",
                        &p);
    CHECK(p.code && strcmp(p.code, "return {name = 'x'}") == 0);
    CHECK(p.thought && strcmp(p.thought, "smooth hinge") == 0);
    CHECK(strcmp(p.name, "Smooth Hinge!") == 0);
    proposal_free(&p);
}

static void reply_bare_json_and_fenced_code_field(void)
{
    Proposal p = {0};
    propose_parse_reply("Sure: {\"thought\": \"t\", \"code\": \"```lua\\nreturn {name = "
                        "\\\"fenced\\\"}\\n```\"} -- done",
                        &p);
    CHECKF(p.code && strcmp(p.code, "return {name = \"fenced\"}\n") == 0, "code: %s", p.code);
    CHECK(strcmp(p.name, "fenced") == 0); /* no "name": taken from the code */
    proposal_free(&p);
}

static void reply_lua_fence_with_first_line_as_thought(void)
{
    Proposal p = {0};
    propose_parse_reply(
        "A tanh-saturated DPO.\n\n```lua\nreturn {\n  name = \"tanh_dpo\",\n}\n```\n", &p);
    CHECK(p.code && strstr(p.code, "tanh_dpo"));
    CHECK(p.thought && strcmp(p.thought, "A tanh-saturated DPO.") == 0);
    CHECK(strcmp(p.name, "tanh_dpo") == 0);
    proposal_free(&p);
}

static void reply_malformed_or_without_code_is_an_error(void)
{
    Proposal p = {0};
    propose_parse_reply("{\"thought\": \"x\", \"code\": \"return {", &p);
    CHECK(!p.code);
    CHECKF(strstr(p.error, "malformed JSON"), "error: %s", p.error);
    proposal_free(&p);
    propose_parse_reply("I'm sorry, but I can't help with that.", &p);
    CHECK(!p.code);
    CHECKF(strstr(p.error, "no code") && strstr(p.error, "I'm sorry"), "error: %s", p.error);
    proposal_free(&p);
    propose_parse_reply("{\"thought\": \"no code here\"}", &p);
    CHECK(!p.code && strstr(p.error, "no \"code\""));
    proposal_free(&p);
}

/* ---- names, settings, fitness registry ---------------------------------------------- */

static void names_are_sanitised_and_unique(void)
{
    char out[ARCHIVE_NAME_LEN];
    archive_sanitize_name("Smooth Hinge!! v2", out);
    CHECK(strcmp(out, "smooth_hinge_v2") == 0);
    archive_sanitize_name("../../etc/passwd", out);
    CHECK(strcmp(out, "etc_passwd") == 0);
    archive_sanitize_name("ünïcode", out);
    regex_t re;
    regcomp(&re, "^[a-z0-9_]+$", REG_EXTENDED | REG_NOSUB);
    CHECKF(regexec(&re, out, 0, NULL, 0) == 0, "%s", out);
    archive_sanitize_name("", out);
    CHECK(strcmp(out, "candidate") == 0);
    regfree(&re);
}

static void settings_round_trip_and_unknown_keys(void)
{
    DiscoverOptions o, back;
    discover_defaults(&o);
    char ex[600];
    snprintf(ex, sizeof ex, "%s/examples/discover.yaml", source_root());
    CHECKF(discover_load_yaml(&o, ex, err, sizeof err) == 0, "%s", err);
    CHECK(o.candidates == 4 && o.propose.kind == PROPOSE_EVOLVE && o.train.width == 64);
    o.propose.kind = PROPOSE_COMMAND;
    o.propose.argc = 2;
    snprintf(o.propose.argv[0], PROPOSE_STR_LEN, "python3");
    snprintf(o.propose.argv[1], PROPOSE_STR_LEN, "say \"hi\".py");
    o.train.layers = 3;
    o.hurdle_min = 0.123456789;
    char *text = discover_to_yaml(&o);
    write_text(path_in("round.yaml"), text);
    free(text);
    discover_defaults(&back);
    CHECKF(discover_load_yaml(&back, path_in("round.yaml"), err, sizeof err) == 0, "%s", err);
    CHECK(back.propose.kind == PROPOSE_COMMAND && back.propose.argc == 2);
    CHECK(strcmp(back.propose.argv[1], "say \"hi\".py") == 0);
    CHECK(back.train.layers == 3 && back.hurdle_min == 0.123456789);
    CHECK(back.n_seed_losses == 4 && strcmp(back.seed_losses[3], "discopop") == 0);
    write_text(path_in("bad1.yaml"), "candidates: 3\ncandidatez: 4\n");
    CHECK(discover_load_yaml(&back, path_in("bad1.yaml"), err, sizeof err) != 0);
    CHECKF(strstr(err, ":2:") && strstr(err, "candidatez"), "%s", err);
    write_text(path_in("bad2.yaml"), "llm:\n  url: http://x\n  modle: m\n");
    CHECK(discover_load_yaml(&back, path_in("bad2.yaml"), err, sizeof err) != 0);
    CHECKF(strstr(err, ":3:") && strstr(err, "llm.modle"), "%s", err);
    write_text(path_in("bad3.yaml"), "# a — dash\ntrain:\n  width: 8\n  widht: 8\n");
    CHECK(discover_load_yaml(&back, path_in("bad3.yaml"), err, sizeof err) != 0);
    CHECKF(strstr(err, ":4:") && strstr(err, "widht"), "%s", err);
}

/* the issue: the loop scores the built-in task's fitness unless told
 * otherwise; resolving it builds nothing (the reference is built by the
 * loop's prepare step, which this test does not run) */
static void fitness_task_is_the_registered_default(void)
{
    DiscoverOptions *o = malloc(sizeof *o);
    discover_defaults(o);
    CHECKF(strcmp(o->fitness, "task") == 0, "default fitness: %s", o->fitness);
    snprintf(o->out_dir, sizeof o->out_dir, "%s", path_in("unused"));
    CHECKF(discover_finalize(o, err, sizeof err) == 0, "%s", err);
    CHECK(o->hurdle_steps == 60 && o->hurdle_min == -0.25); /* the task row's, fitness.c */
    const FitnessKind *k = fitness_find("task", err, sizeof err);
    CHECKF(k && k->fn == fitness_evaluate && k->prepare == fitness_prepare, "%s", err);
    CHECK(k == fitness_kind(0)); /* listed first in --help */
    k = fitness_find("interim", err, sizeof err);
    CHECK(k && k->fn == fitness_interim && !k->prepare);
    CHECK(fitness_find("nope", err, sizeof err) == NULL && strstr(err, "unknown") &&
          strstr(err, "task") && strstr(err, "interim"));
    free(o);
}

/* ---- the archive ------------------------------------------------------------------------- */

static void archive_drops_a_torn_last_line(void)
{
    const char *dir = path_in("torn");
    fsutil_mkdirs(dir, err, sizeof err);
    char file[600];
    snprintf(file, sizeof file, "%s/archive.jsonl", dir);
    write_text(file,
               "{\"type\":\"proposal\",\"gen\":0,\"idx\":0,\"name\":\"a\",\"code\":\"x\"}\n"
               "{\"type\":\"result\",\"gen\":0,\"idx\":0,\"name\":\"a\",\"status\":\"invalid\"}\n"
               "{\"type\":\"proposal\",\"gen\":0,\"id");
    int dropped = 0;
    Archive *ar = archive_open(dir, &dropped, err, sizeof err);
    CHECKF(ar != NULL, "%s", err);
    if (!ar)
        return;
    CHECK(dropped == 1 && archive_count(ar) == 1);
    CHECK(archive_entry(ar, 0)->status == CAND_INVALID);
    int again = 0; /* a second loop on the same directory is refused */
    CHECK(archive_open(dir, &again, err, sizeof err) == NULL && strstr(err, "another"));
    json_t *rec = json_pack("{s:s, s:i, s:i, s:s, s:s}", "type", "proposal", "gen", 1, "idx", 0,
                            "name", "b", "code", "y");
    CHECKF(archive_append(ar, rec, err, sizeof err) == 0, "%s", err);
    json_decref(rec);
    archive_close(ar);
    json_t *all = records(dir);
    CHECK(json_array_size(all) == 3); /* the torn bytes are gone, the new line whole */
    json_decref(all);
    write_text(file, "{\"type\":\"proposal\",\"gen\":0,\"idx\":0,\"name\":\"a\"}\nnot json\n{}\n");
    CHECK(archive_open(dir, &dropped, err, sizeof err) == NULL && strstr(err, ":2:"));
}

/* The parents depend on the seed and the archive's content only: the same
 * results, archived in another completion order (as a resumed run or other
 * timing gives), give the same parents. */
static void parents_do_not_depend_on_completion_order(void)
{
    static const char *names[4] = {"aa", "bb", "cc", "dd"};
    static const double fit[4] = {0.5, 0.4, 0.3, 0.2};
    static const int orders[2][4] = {{0, 1, 2, 3}, {3, 1, 0, 2}};
    char picked[2][8][ARCHIVE_NAME_LEN];
    int n_picked[2][8];
    for (int o = 0; o < 2; o++) {
        char text[4096] = "";
        size_t at = 0;
        for (int i = 0; i < 4; i++)
            at += (size_t)snprintf(text + at, sizeof text - at,
                                   "{\"type\":\"proposal\",\"gen\":0,\"idx\":%d,\"name\":\"%s\","
                                   "\"code\":\"c%d\",\"genome\":\"g\"}\n",
                                   i, names[i], i);
        for (int k = 0; k < 4; k++) {
            int i = orders[o][k];
            at += (size_t)snprintf(text + at, sizeof text - at,
                                   "{\"type\":\"result\",\"gen\":0,\"idx\":%d,\"name\":\"%s\","
                                   "\"status\":\"valid\",\"fitness\":{\"value\":%g},"
                                   "\"descriptors\":{\"cell\":\"cell%d\"}}\n",
                                   i, names[i], fit[i], i);
        }
        char dir[64];
        snprintf(dir, sizeof dir, "order%d", o);
        const char *d = path_in(dir);
        fsutil_mkdirs(d, err, sizeof err);
        char file[600];
        snprintf(file, sizeof file, "%s/archive.jsonl", d);
        write_text(file, text);
        int dropped = 0;
        Archive *ar = archive_open(d, &dropped, err, sizeof err);
        CHECKF(ar != NULL, "%s", err);
        if (!ar)
            return;
        CHECK(archive_cell_count(ar) == 4);
        for (int draw = 0; draw < 8; draw++) {
            Rng r;
            rng_seed(&r, 1000 + (uint64_t)draw);
            const ArchiveEntry *out[3];
            n_picked[o][draw] = archive_parents(ar, &r, 2, true, out);
            picked[o][draw][0] = 0;
            for (int i = 0; i < n_picked[o][draw]; i++) {
                strcat(picked[o][draw], out[i]->name);
                strcat(picked[o][draw], " ");
            }
        }
        archive_close(ar);
    }
    for (int draw = 0; draw < 8; draw++)
        CHECKF(n_picked[0][draw] == n_picked[1][draw] && !strcmp(picked[0][draw], picked[1][draw]),
               "draw %d: '%s' vs '%s'", draw, picked[0][draw], picked[1][draw]);
}

/* ---- noise: the comparison in the archive, the report and the floor ------------------------- */

/* an archive result line: valid, in cell, with per-seed values */
static size_t put_result(char *text, size_t at, size_t cap, int gen, int idx, const char *name,
                         const char *cell, const double *v, int n)
{
    json_t *seeds = json_array(), *per = json_array();
    double mean = 0;
    for (int i = 0; i < n; i++) {
        json_array_append_new(seeds, json_integer(i + 1));
        json_array_append_new(per, json_real(v[i]));
        mean += v[i] / n;
    }
    json_t *rec = json_pack("{s:s, s:i, s:i, s:s, s:s, s:{s:f, s:f, s:o, s:o}, s:{s:s}}", "type",
                            "result", "gen", gen, "idx", idx, "name", name, "status", "valid",
                            "fitness", "value", mean, "se", fitness_standard_error(v, n), "seeds",
                            seeds, "per_seed", per, "descriptors", "cell", cell);
    char *line = json_dumps(rec, JSON_COMPACT | JSON_REAL_PRECISION(17));
    at += (size_t)snprintf(text + at, cap - at, "%s\n", line);
    free(line);
    json_decref(rec);
    return at;
}

static size_t put_proposal(char *text, size_t at, size_t cap, int gen, int idx, const char *name)
{
    return at + (size_t)snprintf(text + at, cap - at,
                                 "{\"type\":\"proposal\",\"gen\":%d,\"idx\":%d,\"name\":\"%s\","
                                 "\"code\":\"c%d_%d\",\"genome\":\"g\"}\n",
                                 gen, idx, name, gen, idx);
}

static Archive *open_text(const char *name, const char *text)
{
    const char *d = path_in(name);
    fsutil_mkdirs(d, err, sizeof err);
    char file[600];
    snprintf(file, sizeof file, "%s/archive.jsonl", d);
    write_text(file, text);
    int dropped = 0;
    Archive *ar = archive_open(d, &dropped, err, sizeof err);
    CHECKF(ar != NULL, "%s", err);
    return ar;
}

/* A newcomer with a higher mean that is not resolved better (a constant
 * +0.01 over 3 seeds, inside the floor 1.96 * 0.023 * sqrt(2/3) = 0.037)
 * does not replace the elite nor win a tournament; with no floor the same
 * shift is resolved and it does. */
static void elites_and_tournaments_need_a_resolved_difference(void)
{
    static const double a[3] = {0.80, 0.82, 0.84}, b[3] = {0.81, 0.83, 0.85};
    static const double c[3] = {0.90, 0.92, 0.94}; /* +0.1: resolved at either floor */
    char text[8192] = "";
    size_t at = 0;
    at = put_proposal(text, at, sizeof text, 0, 0, "aa");
    at = put_proposal(text, at, sizeof text, 1, 0, "bb");
    at = put_result(text, at, sizeof text, 0, 0, "aa", "x", a, 3);
    at = put_result(text, at, sizeof text, 1, 0, "bb", "x", b, 3);
    Archive *ar = open_text("elite", text);
    if (!ar)
        return;
    archive_set_noise(ar, 0.023);
    CHECK(strcmp(archive_elite(ar, "x")->name, "aa") == 0);
    CHECK(archive_compare(ar, archive_entry(ar, 1), archive_entry(ar, 0)) == 0);
    archive_set_noise(ar, 0);
    CHECK(strcmp(archive_elite(ar, "x")->name, "bb") == 0);
    archive_close(ar);
    at = put_proposal(text, at, sizeof text, 2, 0, "cc");
    at = put_result(text, at, sizeof text, 2, 0, "cc", "x", c, 3);
    ar = open_text("elite2", text);
    if (!ar)
        return;
    archive_set_noise(ar, 0.023);
    CHECK(strcmp(archive_elite(ar, "x")->name, "cc") == 0);
    archive_close(ar);
    /* the tournament: aa and bb elites of two cells; the first parent is the
     * best of 3 draws, so bb (drawn alone 1/8 of the time) wins only then
     * when unresolved, and whenever drawn (7/8) when resolved */
    at = 0;
    at = put_proposal(text, at, sizeof text, 0, 0, "aa");
    at = put_proposal(text, at, sizeof text, 1, 0, "bb");
    at = put_result(text, at, sizeof text, 0, 0, "aa", "x", a, 3);
    at = put_result(text, at, sizeof text, 1, 0, "bb", "y", b, 3);
    ar = open_text("tournament", text);
    if (!ar)
        return;
    for (int k = 0; k < 2; k++) {
        archive_set_noise(ar, k == 0 ? 0.023 : 0);
        int bb_first = 0;
        for (int draw = 0; draw < 64; draw++) {
            Rng r;
            rng_seed(&r, 500 + (uint64_t)draw);
            const ArchiveEntry *out[2];
            bb_first += archive_parents(ar, &r, 1, false, out) == 1 && !strcmp(out[0]->name, "bb");
        }
        CHECKF(k == 0 ? bb_first < 20 : bb_first > 44, "noise %s: bb first %d of 64",
               k == 0 ? "0.023" : "0", bb_first);
    }
    archive_close(ar);
}

static FitnessResult score(const char *loss, const FitnessOptions *fo)
{
    FitnessResult r;
    CHECKF(fitness_interim(loss, fo, &r, err, sizeof err) == 0, "%s: %s", loss, err);
    return r;
}

/* the report's row of name: its "vs best" column; "" when absent */
static const char *versus(const char *report, const char *name, char out[8])
{
    out[0] = '\0';
    for (const char *line = report; line && *line; line = strchr(line, '\n'), line += !!line) {
        int rank, gen;
        double fit, iv;
        char vs[8], seeds[64], row_name[64];
        if (sscanf(line, "%d %lf ± %lf %7s %63s %d %63s", &rank, &fit, &iv, vs, seeds, &gen,
                   row_name) == 7 &&
            strcmp(row_name, name) == 0)
            snprintf(out, 8, "%s", vs);
    }
    return out;
}

/* The two cases, with the interim fitness on the same seeds: two
 * byte-identical copies of losses/dpo.lua are never reported different, in
 * the archive or the report; a loss that ignores the preference (SFT on both
 * responses: symmetric in chosen and rejected) is reported worse than DPO.
 * The default model, 80 steps, 4 seeds, 256 held-out pairs (measured there:
 * DPO 0.81, the symmetric loss 0.71, paired d about 0.09 against a
 * threshold of about 0.035), about 6 s on one core. */
static void identical_losses_tie_and_a_broken_one_is_worse(void)
{
    char *dpo;
    size_t len;
    char lib[600];
    snprintf(lib, sizeof lib, "%s/losses/dpo.lua", source_root());
    CHECKF(tfs_read(lib, &dpo, &len, err, sizeof err) == 0, "%s", err);
    write_text(path_in("dpo_a.lua"), dpo);
    write_text(path_in("dpo_b.lua"), dpo);
    free(dpo);
    write_text(path_in("sft_both.lua"),
               "return {\n  name = \"sft_both\",\n  loss = function(b, p)\n"
               "    return -(b.policy_chosen_logps + b.policy_rejected_logps) * 0.05\n"
               "  end,\n}\n");
    DiscoverOptions *o = malloc(sizeof *o);
    discover_defaults(o);
    CHECK(config_set(&o->train, "toy_pairs=1024", err, sizeof err) == 0);
    CHECK(config_set(&o->train, "eval_fraction=0.25", err, sizeof err) == 0);
    CHECKF(config_finalize(&o->train, err, sizeof err) == 0, "%s", err);
    FitnessOptions fo = {.cfg = o->train,
                         .steps = 80,
                         .n_seeds = 4,
                         .seeds = {1, 2, 3, 4},
                         .work_dir = path_in("noise_work")};
    FitnessResult ra = score(path_in("dpo_a.lua"), &fo), rb = score(path_in("dpo_b.lua"), &fo);
    FitnessResult rs = score(path_in("sft_both.lua"), &fo);
    free(o);
    CHECK(memcmp(ra.per_seed, rb.per_seed, sizeof ra.per_seed) == 0 && isfinite(ra.se));
    double noise = fitness_find("interim", err, sizeof err)->noise_sd;
    FitnessScores a, b, sym;
    fitness_scores_of(&ra, &a);
    fitness_scores_of(&rb, &b);
    fitness_scores_of(&rs, &sym);
    FitnessDiff d;
    CHECK(fitness_compare(&a, &b, noise, &d) == 0 && fitness_compare(&b, &a, noise, NULL) == 0);
    CHECKF(fitness_compare(&a, &sym, noise, &d) == 1, "dpo %.4f, symmetric %.4f: d %.4f h %.4f",
           ra.fitness, rs.fitness, d.d, d.h);
    CHECK(fitness_compare(&sym, &b, noise, NULL) == -1);
    /* the archive: both copies in one cell, the later-proposed one finishing
     * first; the earlier stays the elite, as an unresolved pair goes to it */
    char text[16384] = "";
    size_t at = 0;
    at = put_proposal(text, at, sizeof text, 0, 0, "dpo_a");
    at = put_proposal(text, at, sizeof text, 0, 1, "dpo_b");
    at = put_proposal(text, at, sizeof text, 0, 2, "sft_both");
    at = put_result(text, at, sizeof text, 0, 1, "dpo_b", "x", rb.per_seed, 4);
    at = put_result(text, at, sizeof text, 0, 0, "dpo_a", "x", ra.per_seed, 4);
    at = put_result(text, at, sizeof text, 0, 2, "sft_both", "x", rs.per_seed, 4);
    fsutil_mkdirs(path_in("noise_run"), err, sizeof err);
    write_text(path_in("noise_run/discover.yaml"), "fitness: interim\n");
    Archive *ar = open_text("noise_run", text);
    if (!ar)
        return;
    archive_set_noise(ar, noise);
    CHECK(strcmp(archive_elite(ar, "x")->name, "dpo_a") == 0);
    CHECK(archive_compare(ar, archive_find(ar, 0, 0), archive_find(ar, 0, 1)) == 0);
    CHECK(archive_compare(ar, archive_find(ar, 0, 2), archive_find(ar, 0, 0)) == -1);
    archive_close(ar);
    FILE *f = tmpfile();
    CHECKF(discover_report(f, path_in("noise_run"), err, sizeof err) == 0, "%s", err);
    rewind(f);
    char buf[8192] = "", va[8], vb[8], vs[8];
    buf[fread(buf, 1, sizeof buf - 1, f)] = '\0';
    fclose(f);
    versus(buf, "dpo_a", va);
    versus(buf, "dpo_b", vb);
    CHECKF(!strcmp(va, "best") && !strcmp(vb, "="), "%s", buf); /* ties: the earlier first */
    CHECKF(!strcmp(versus(buf, "sft_both", vs), "<"), "%s", buf);
    CHECKF(strstr(buf, "paired t test") && strstr(buf, "noise_sd 0.023 (fitness interim)"), "%s",
           buf);
}

/* --noise-floor's runs: seed by seed, the same values as one call over the
 * seeds; mean and sd as their closed forms; nothing left in the work dir */
static void noise_floor_runs_each_seed_alone(void)
{
    DiscoverOptions *o = malloc(sizeof *o);
    tiny(o, path_in("unused"));
    CHECKF(config_finalize(&o->train, err, sizeof err) == 0, "%s", err);
    char loss[600];
    snprintf(loss, sizeof loss, "%s/losses/dpo.lua", source_root());
    const char *work = path_in("floor_work");
    NoiseFloor nf;
    const FitnessKind *k = fitness_find("interim", err, sizeof err);
    CHECKF(fitness_noise_floor(k, &o->train, 6, loss, 8, work, NULL, &nf, err, sizeof err) == 0,
           "%s", err);
    FitnessOptions fo = {.cfg = o->train, .steps = 6, .n_seeds = 8, .work_dir = work};
    for (int i = 0; i < 8; i++)
        fo.seeds[i] = (uint64_t)i + 1;
    FitnessResult r = score(loss, &fo);
    CHECK(nf.n == 8 && memcmp(nf.per_seed, r.per_seed, 8 * sizeof(double)) == 0);
    double mean = 0, ss = 0;
    for (int i = 0; i < 8; i++)
        mean += r.per_seed[i] / 8;
    for (int i = 0; i < 8; i++)
        ss += (r.per_seed[i] - mean) * (r.per_seed[i] - mean);
    CHECK_NEAR(nf.mean, mean, 1e-12);
    CHECK_NEAR(nf.sd, sqrt(ss / 7), 1e-12);
    CHECK_NEAR(nf.se, sqrt(ss / 7 / 8), 1e-12);
    CHECK_NEAR(r.se, nf.se, 1e-12);
    CHECK(nf.sd > 0); /* the seeds are different experiments */
    DIR *dir = opendir(work);
    int entries = 0;
    for (struct dirent *e; dir && (e = readdir(dir));)
        entries += e->d_name[0] != '.';
    if (dir)
        closedir(dir);
    CHECK(entries == 0);
    CHECK(fitness_noise_floor(k, &o->train, 6, loss, 1, work, NULL, &nf, err, sizeof err) != 0);
    free(o);
}

/* ---- worker bounds ----------------------------------------------------------------------- */

static char *pool_job(void *arg, size_t i)
{
    (void)arg;
    if (i == 1)
        abort(); /* a crash (SIGABRT: sanitizers do not intercept it) */
    if (i == 2)
        for (volatile unsigned k = 0;; k++) /* unsigned: wraps, no undefined behaviour */
            ;
    if (i == 3) {
#if defined(__SANITIZE_ADDRESS__) /* no address-space limit under ASan: do not try */
        return NULL;
#endif
        for (size_t n = 0; n < 64; n++) { /* 16 GiB, past a 1 GiB address-space limit */
            char *p = malloc((size_t)256 << 20);
            if (!p)
                return NULL;
            memset(p, 1, (size_t)256 << 20);
        }
    }
    char *t = malloc(16);
    snprintf(t, 16, "job %zu", i);
    return t;
}

static PoolOutcome outcomes[4];
static char texts[4][32];

static void pool_done(void *arg, size_t i, const PoolOutcome *o)
{
    (void)arg;
    outcomes[i] = *o;
    snprintf(texts[i], sizeof texts[i], "%s", o->text ? o->text : "");
}

static void pool_bounds_crash_timeout_memory(void)
{
    PoolLimits lim = {
        .workers = 4, .wall_seconds = 1.5, .cpu_seconds = 30, .mem_bytes = (size_t)1 << 30};
    CHECKF(pool_run(4, pool_job, pool_done, NULL, &lim, err, sizeof err) == 0, "%s", err);
    CHECK(outcomes[0].end == POOL_OK && strcmp(texts[0], "job 0") == 0);
    CHECKF(outcomes[1].end == POOL_SIGNAL && strstr(outcomes[1].message, "signal 6"), "%s",
           outcomes[1].message);
    CHECK(outcomes[2].end == POOL_TIMEOUT && strstr(outcomes[2].message, "wall-clock"));
    CHECKF(outcomes[3].end != POOL_OK, "the memory job ended %d", outcomes[3].end);
}

/* ---- behaviour probes --------------------------------------------------------------------- */

/* -logsigmoid(x) and softplus(-x) are one loss; a hinge is another; a loss
 * that subtracts the batch mean couples the pairs */
static void probe_rewrites_are_one_behaviour(void)
{
    write_loss("p_a.lua", "    return -logsigmoid(rho)");
    write_loss("p_b.lua", "    local z = -rho\n    return softplus(z) * 1.0");
    write_loss("p_c.lua", "    return relu(1 - rho)");
    write_loss("p_d.lua", "    return -logsigmoid(rho - mean(rho))");
    Behaviour a, b, c, d;
    LossLimits lim = {0};
    CHECKF(probe_behaviour(path_in("p_a.lua"), &lim, &a, err, sizeof err) == 0, "%s", err);
    CHECKF(probe_behaviour(path_in("p_b.lua"), &lim, &b, err, sizeof err) == 0, "%s", err);
    CHECKF(probe_behaviour(path_in("p_c.lua"), &lim, &c, err, sizeof err) == 0, "%s", err);
    CHECKF(probe_behaviour(path_in("p_d.lua"), &lim, &d, err, sizeof err) == 0, "%s", err);
    CHECK(a.n == PROBE_VALUES && probe_same(&a, &b));
    CHECK(!probe_same(&a, &c) && a.hash != c.hash);
    CHECK(!a.coupled && !c.coupled && d.coupled);
    CHECK(!probe_same(&a, &d));
}

/* ---- proposers -------------------------------------------------------------------------- */

static void evolve_is_seeded_and_writes_valid_lua(void)
{
    ProposeConfig cfg;
    propose_config_defaults(&cfg);
    Proposer *p = proposer_new(&cfg, err, sizeof err);
    CHECKF(p != NULL, "%s", err);
    if (!p)
        return;
    ProposeContext ctx = {.generation = 3, .index = 1, .seed = 77, .n_parents = 2};
    ctx.parents[0] = (ProposeEntry){.name = "dpo", .genome = "beta=0.1 (neg (logsigmoid rho))"};
    ctx.parents[1] = (ProposeEntry){.name = "hinge", .genome = "beta=0.2 (relu (sub 1 rho))"};
    Proposal a, b, c;
    CHECKF(proposer_propose(p, &ctx, &a, err, sizeof err) == 0, "%s", err);
    CHECKF(proposer_propose(p, &ctx, &b, err, sizeof err) == 0, "%s", err);
    CHECK(a.code && b.code && strcmp(a.code, b.code) == 0 && strcmp(a.genome, b.genome) == 0);
    int differ = 0;
    for (uint64_t s = 1; s <= 8; s++) {
        ctx.seed = s;
        CHECKF(proposer_propose(p, &ctx, &c, err, sizeof err) == 0, "%s", err);
        differ += c.genome && strcmp(c.genome, a.genome) != 0;
        CHECK(c.code && strstr(c.code, "genome: ") && strstr(c.code, "loss = function(b, p)"));
        proposal_free(&c);
    }
    CHECK(differ >= 5);
    CHECK(strcmp(a.name, "evo_g3_1") == 0);
    CHECK(propose_evolve_seed_genome("discopop") && !propose_evolve_seed_genome("no_such"));
    proposal_free(&a);
    proposal_free(&b);
    proposer_free(p);
}

static ProposeConfig command_config(const char *script, double timeout)
{
    ProposeConfig cfg;
    propose_config_defaults(&cfg);
    cfg.kind = PROPOSE_COMMAND;
    snprintf(cfg.prompt_path, sizeof cfg.prompt_path, "%s/lua/discover_prompt.md", source_root());
    const char *py = getenv("PYTHON3");
    snprintf(cfg.argv[0], PROPOSE_STR_LEN, "%s", py ? py : "python3");
    snprintf(cfg.argv[1], PROPOSE_STR_LEN, "-c");
    snprintf(cfg.argv[2], PROPOSE_STR_LEN, "%s", script);
    cfg.argc = 3;
    cfg.command_timeout = timeout;
    return cfg;
}

static void command_proposer_pipes_and_times_out(void)
{
    /* reads the whole prompt, then answers with a fenced block naming the prompt's size */
    ProposeConfig cfg = command_config(
        "import sys\nprompt = sys.stdin.read()\nassert 'loss-file contract' in prompt\n"
        "print('A bigger margin.\\n```lua\\nreturn { name = \"cmd_loss\" } -- %d\\n```' % "
        "len(prompt))",
        20);
    Proposer *p = proposer_new(&cfg, err, sizeof err);
    CHECKF(p != NULL, "%s", err);
    ProposeContext ctx = {.generation = 1, .fitness_metric = "accuracy"};
    Proposal out;
    CHECKF(p && proposer_propose(p, &ctx, &out, err, sizeof err) == 0, "%s", err);
    CHECKF(out.code && strstr(out.code, "cmd_loss"), "error: %s", out.error);
    CHECK(out.thought && strcmp(out.thought, "A bigger margin.") == 0);
    proposal_free(&out);
    proposer_free(p);
    cfg = command_config("import time\ntime.sleep(30)", 0.5); /* a hung command: not fatal */
    p = proposer_new(&cfg, err, sizeof err);
    double t0 = (double)time(NULL);
    CHECK(p && proposer_propose(p, &ctx, &out, err, sizeof err) == 0);
    CHECK(!out.code && strstr(out.error, "did not answer"));
    CHECK((double)time(NULL) - t0 < 10);
    proposal_free(&out);
    proposer_free(p);
    snprintf(cfg.argv[0], PROPOSE_STR_LEN, "/nonexistent/llm-client"); /* fatal */
    p = proposer_new(&cfg, err, sizeof err);
    CHECK(p && proposer_propose(p, &ctx, &out, err, sizeof err) != 0 && strstr(err, "cannot run"));
    proposal_free(&out);
    proposer_free(p);
}

/* a reply's bytes are untrusted: code that is not UTF-8 is no code, other
 * text is cleaned, and nothing of it can stop the archive from encoding it */
static void command_reply_with_invalid_utf8_is_made_safe(void)
{
    ProposeConfig cfg = command_config("import sys\nsys.stdin.read()\n"
                                       "sys.stdout.buffer.write(b'caf\\xe9 "
                                       "thought\\n```lua\\nreturn { name = \"x\\xff\" }\\n```\\n')",
                                       20);
    Proposer *p = proposer_new(&cfg, err, sizeof err);
    CHECKF(p != NULL, "%s", err);
    ProposeContext ctx = {.generation = 1, .fitness_metric = "accuracy"};
    Proposal out;
    CHECKF(p && proposer_propose(p, &ctx, &out, err, sizeof err) == 0, "%s", err);
    CHECK(out.code == NULL);
    CHECKF(strstr(out.error, "not valid UTF-8"), "error: %s", out.error);
    CHECK(!out.raw || text_utf8_valid(out.raw, strlen(out.raw)));
    CHECK(!out.thought || text_utf8_valid(out.thought, strlen(out.thought)));
    json_t *rec = json_pack("{s:s?, s:s?, s:s}", "thought", out.thought, "reply", out.raw, "error",
                            out.error);
    CHECK(rec != NULL); /* jansson refuses invalid UTF-8 with NULL */
    json_decref(rec);
    proposal_free(&out);
    proposer_free(p);
}

/* ---- the fake LLM server ------------------------------------------------------------------ */

static pid_t server_pid;

static int start_server(const char *replies_json, int *port)
{
    write_text(path_in("replies.json"), replies_json);
    remove(path_in("port"));
    char script[600];
    snprintf(script, sizeof script, "%s/tests/fake_llm.py", source_root());
    const char *py = getenv("PYTHON3");
    server_pid = fork();
    if (server_pid == 0) {
        execlp(py ? py : "python3", py ? py : "python3", script, "--replies",
               path_in("replies.json"), "--record", path_in("requests.jsonl"), "--port-file",
               path_in("port"), "--lifetime", "120", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200 && !fsutil_exists(path_in("port")); i++)
        usleep(50000);
    char *text;
    size_t len;
    if (tfs_read(path_in("port"), &text, &len, err, sizeof err) != 0)
        return -1;
    *port = atoi(text);
    free(text);
    return *port > 0 ? 0 : -1;
}

static void stop_server(void)
{
    if (server_pid > 0) {
        kill(server_pid, SIGTERM);
        waitpid(server_pid, NULL, 0);
        server_pid = 0;
    }
}

static void add_reply(json_t *list, const char *content)
{
    json_array_append_new(list, json_pack("{s:s}", "content", content));
}

static void add_code_reply(json_t *list, const char *name, const char *body, const char *thought)
{
    char *code = loss_code(name, body);
    json_t *obj = json_pack("{s:s, s:s, s:s}", "thought", thought, "name", name, "code", code);
    char *text = json_dumps(obj, 0);
    char wrapped[8192];
    snprintf(wrapped, sizeof wrapped, "Here is my proposal.\n```json\n%s\n```\n", text);
    add_reply(list, wrapped);
    free(text);
    free(code);
    json_decref(obj);
}

static char canary[300];

/* generation 1: seven replies, the first after a 500 */
static void generation_one(json_t *r)
{
    char body[512];
    json_array_append_new(r, json_pack("{s:i}", "status", 500));
    add_code_reply(r, "Margin DPO", "    return softplus(-rho) + 0.1 * relu(0.5 - rho)",
                   "DPO plus a hinge on small margins");
    add_reply(r, "{\"thought\": \"truncated\", \"name\": \"x\", \"code\": \"return {");
    add_reply(r, "I'm sorry, but I cannot write code today.");
    add_code_reply(r, "mean_dpo", "    return mean(-logsigmoid(rho))", "a scalar by mistake");
    add_code_reply(r, "nan_loss", "    return sqrt(-1 - rho * rho)", "a NaN");
    snprintf(body, sizeof body,
             "    local f = io.open(\"%s\", \"w\")\n    f:write(\"owned\")\n    return "
             "-logsigmoid(rho)",
             canary);
    add_code_reply(r, "io_loss", body, "hostile: a file");
    json_array_append_new(r, json_pack("{s:s}", "refusal", "I can't help with that request."));
}

/* generation 2: hostile code, a rewrite of generation 1's valid loss, two valid ones */
static void generation_two(json_t *r)
{
    char body[512];
    snprintf(body, sizeof body, "    os.execute(\"touch %s\")\n    return -logsigmoid(rho)",
             canary);
    add_code_reply(r, "os_loss", body, "hostile: a process");
    add_code_reply(r, "load_loss",
                   "    local g = load(\"return 1\")\n    return -logsigmoid(rho) * g()",
                   "hostile: load");
    add_code_reply(r, "loop_loss", "    while true do end", "hostile: a loop");
    add_code_reply(r, "bomb_loss",
                   "    local t = {}\n    for i = 1, 1e9 do t[i] = {i} end\n    return "
                   "-logsigmoid(rho)",
                   "hostile: memory");
    add_code_reply(r, "margin_rewrite", "    return -logsigmoid(rho) + relu(0.5 - rho) / 10",
                   "the same as Margin DPO, rewritten");
    char *code = loss_code("tanh_dpo", "    return -logsigmoid(rho) + 0.05 * tanh(-rho)");
    char fenced[4096];
    snprintf(fenced, sizeof fenced, "A tanh-saturated DPO.\n\n```lua\n%s```\n", code);
    add_reply(r, fenced);
    free(code);
    add_code_reply(r, "reversed", "    return -logsigmoid(-rho)", "the wrong direction");
}

static json_t *requests(void)
{
    json_t *all = json_array();
    char *text;
    size_t len;
    if (tfs_read(path_in("requests.jsonl"), &text, &len, err, sizeof err) != 0)
        return all;
    for (char *line = text, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, NULL);
        if (j)
            json_array_append_new(all, j);
    }
    free(text);
    return all;
}

static const char *user_message(json_t *reqs, size_t i)
{
    json_t *msgs = json_object_get(json_array_get(reqs, i), "messages");
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *c = json_string_value(json_object_get(last, "content"));
    return c ? c : "";
}

static void check_statuses(json_t *all)
{
    static const char *const g1[] = {"valid",   "no_code", "no_code", "invalid",
                                     "invalid", "invalid", "no_code"};
    static const char *const g2[] = {"invalid",   "invalid", "invalid",     "invalid",
                                     "duplicate", "valid",   "below_hurdle"};
    CHECKF(strcmp(status_of(all, 0, 0), "valid") == 0, "seed: %s", status_of(all, 0, 0));
    for (int i = 0; i < 7; i++) {
        CHECKF(strcmp(status_of(all, 1, i), g1[i]) == 0, "gen 1 #%d: %s", i, status_of(all, 1, i));
        CHECKF(strcmp(status_of(all, 2, i), g2[i]) == 0, "gen 2 #%d: %s (hurdle %g)", i,
               status_of(all, 2, i),
               json_number_value(json_object_get(
                   json_object_get(find_record(all, "result", 2, i), "hurdle"), "value")));
    }
    CHECK(strstr(first_message(find_record(all, "result", 1, 3)), "shape ()"));
    CHECK(strstr(first_message(find_record(all, "result", 1, 4)), "nan"));
    CHECK(strstr(first_message(find_record(all, "result", 1, 5)), "global 'io'"));
    CHECK(strstr(first_message(find_record(all, "result", 1, 6)), "refused"));
    CHECK(strstr(first_message(find_record(all, "result", 2, 2)), "instruction"));
    CHECK(strstr(first_message(find_record(all, "result", 2, 3)), "heap"));
    json_t *dup = find_record(all, "result", 2, 4);
    CHECK(strcmp(json_string_value(json_object_get(dup, "duplicate_of")), "margin_dpo") == 0);
}

static void check_valid(json_t *all, const char *dir, int gen, int idx, const char *name)
{
    json_t *res = find_record(all, "result", gen, idx);
    json_t *prop = find_record(all, "proposal", gen, idx);
    json_t *fit = json_object_get(res, "fitness");
    CHECKF(strcmp(json_string_value(json_object_get(res, "name")), name) == 0, "name %s",
           json_string_value(json_object_get(res, "name")));
    CHECK(json_is_number(json_object_get(fit, "value")));
    CHECK(json_integer_value(json_array_get(json_object_get(fit, "seeds"), 0)) == 1);
    CHECK(json_is_array(json_object_get(res, "curve")) && json_object_get(res, "descriptors"));
    char path[700], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/losses/%s.lua", dir, name);
    CHECKF(tfs_read(path, &text, &len, err, sizeof err) == 0, "%s", err);
    CHECK(text && strcmp(text, json_string_value(json_object_get(prop, "code"))) == 0);
    free(text);
}

static void check_prompts(json_t *all, json_t *reqs)
{
    CHECKF(json_array_size(reqs) == 15, "%zu requests (14 proposals + 1 retry)",
           json_array_size(reqs));
    CHECK(json_equal(json_array_get(reqs, 0), json_array_get(reqs, 1))); /* the retry */
    CHECK(strstr(user_message(reqs, 1), "Parent 1: `hinge`"));           /* generation 0's seed */
    const char *p = user_message(reqs, 8); /* generation 2's first prompt */
    for (int i = 1; i <= 6; i++) {
        const char *m = first_message(find_record(all, "result", 1, i));
        CHECKF(m[0] && strstr(p, m), "gen 1 #%d's diagnostic is not in the next prompt: %s", i, m);
    }
    CHECK(strstr(p, "margin_dpo"));
    json_t *sys = json_array_get(json_object_get(json_array_get(reqs, 8), "messages"), 0);
    CHECK(strcmp(json_string_value(json_object_get(sys, "role")), "system") == 0);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(reqs, 8), "model")),
                 "fake-model") == 0);
}

static void llm_end_to_end_against_a_fake_server(void)
{
    snprintf(canary, sizeof canary, "/tmp/prefrun_canary_%d", (int)getpid());
    remove(canary);
    json_t *replies = json_array();
    generation_one(replies);
    generation_two(replies);
    char *rtext = json_dumps(replies, 0);
    json_decref(replies);
    int port = 0;
    int started = start_server(rtext, &port);
    free(rtext);
    CHECKF(started == 0, "the fake server did not start: %s", err);
    if (started != 0) {
        stop_server();
        return;
    }
    DiscoverOptions *o = malloc(sizeof *o);
    const char *dir = path_in("llm");
    tiny(o, dir);
    o->propose.kind = PROPOSE_LLM;
    snprintf(o->propose.url, sizeof o->propose.url, "http://127.0.0.1:%d/v1/", port);
    snprintf(o->propose.model, sizeof o->propose.model, "fake-model");
    snprintf(o->propose.key_env, sizeof o->propose.key_env, "PREFRUN_TEST_NO_KEY");
    o->propose.backoff = 0.05;
    o->propose.retries = 2;
    o->n_seed_losses = 1;
    snprintf(o->seed_losses[0], sizeof o->seed_losses[0], "hinge");
    o->generations = 2;
    o->candidates = 7;
    o->failures_shown = PROPOSE_MAX_FAILURES;
    CHECKF(discover_finalize(o, err, sizeof err) == 0, "%s", err);
    CHECKF(discover_run(o, err, sizeof err) == 0, "%s", err);
    stop_server();
    json_t *all = records(dir), *reqs = requests();
    check_statuses(all);
    check_valid(all, dir, 1, 0, "margin_dpo");
    check_valid(all, dir, 2, 5, "tanh_dpo");
    check_prompts(all, reqs);
    CHECKF(!fsutil_exists(canary), "hostile code wrote %s", canary);
    json_decref(all);
    json_decref(reqs);
    free(o);
}

static void llm_fatal_http_errors_stop_the_loop(void)
{
    int port = 0;
    CHECK(start_server("[{\"status\": 401}]", &port) == 0);
    DiscoverOptions *o = malloc(sizeof *o);
    tiny(o, path_in("llm401"));
    o->propose.kind = PROPOSE_LLM;
    snprintf(o->propose.url, sizeof o->propose.url, "http://127.0.0.1:%d/v1/chat/completions",
             port);
    snprintf(o->propose.key_env, sizeof o->propose.key_env, "PREFRUN_TEST_NO_KEY");
    o->n_seed_losses = 0;
    o->generations = 1;
    o->candidates = 1;
    CHECKF(discover_finalize(o, err, sizeof err) == 0, "%s", err);
    CHECK(discover_run(o, err, sizeof err) != 0);
    CHECKF(strstr(err, "HTTP 401") && strstr(err, "PREFRUN_TEST_NO_KEY"), "%s", err);
    stop_server();
    free(o);
}

/* ---- evolve, report, resume ------------------------------------------------------------------ */

static void evolve_two_generations_and_report(void)
{
    DiscoverOptions *o = malloc(sizeof *o);
    const char *dir = path_in("evolve");
    tiny(o, dir);
    o->n_seed_losses = 2;
    snprintf(o->seed_losses[0], sizeof o->seed_losses[0], "dpo");
    snprintf(o->seed_losses[1], sizeof o->seed_losses[1], "hinge");
    o->generations = 2;
    o->candidates = 3;
    CHECKF(discover_finalize(o, err, sizeof err) == 0, "%s", err);
    CHECKF(discover_run(o, err, sizeof err) == 0, "%s", err);
    json_t *all = records(dir);
    CHECKF(json_array_size(all) == 16, "%zu records, expected 8 proposals + 8 results",
           json_array_size(all));
    int valid = 0, with_genome = 0;
    for (int g = 1; g <= 2; g++)
        for (int i = 0; i < 3; i++) {
            json_t *prop = find_record(all, "proposal", g, i);
            with_genome += json_is_string(json_object_get(prop, "genome"));
            valid += strcmp(status_of(all, g, i), "valid") == 0;
        }
    CHECK(with_genome == 6 && valid >= 1);
    FILE *f = tmpfile();
    CHECKF(discover_report(f, dir, err, sizeof err) == 0, "%s", err);
    rewind(f);
    char buf[8192] = "";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    CHECKF(strstr(buf, "rank") && strstr(buf, "best so far"), "%s", buf);
    CHECK(fsutil_exists(path_in("evolve/leaderboard.svg")));
    CHECK(!fsutil_exists(path_in("evolve/work"))); /* scratch removed at the end */
    json_decref(all);
    free(o);
}

static int count_results(const char *dir)
{
    json_t *all = records(dir);
    int n = 0;
    size_t i;
    json_t *r;
    json_array_foreach(all, i, r)
    {
        n += strcmp(json_string_value(json_object_get(r, "type")), "result") == 0;
    }
    json_decref(all);
    return n;
}

static void resume_after_kill_loses_and_repeats_nothing(void)
{
    DiscoverOptions *o = malloc(sizeof *o);
    const char *dir = path_in("resume");
    tiny(o, dir);
    o->n_seed_losses = 1;
    snprintf(o->seed_losses[0], sizeof o->seed_losses[0], "dpo");
    o->generations = 40; /* longer than the test waits: it is killed in the middle */
    o->candidates = 2;
    o->workers = 1;
    o->full_steps = 12;
    CHECKF(discover_finalize(o, err, sizeof err) == 0, "%s", err);
    pid_t pid = fork();
    if (pid == 0)
        _exit(discover_run(o, err, sizeof err) == 0 ? 0 : 1);
    for (int i = 0; i < 600 && count_results(dir) < 5; i++)
        usleep(20000);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    char *before_text;
    size_t before_len;
    char archive[600];
    snprintf(archive, sizeof archive, "%s/archive.jsonl", dir);
    tfs_read(archive, &before_text, &before_len, err, sizeof err);
    char *cut = strrchr(before_text, '\n'); /* the whole lines before the kill */
    size_t whole = cut ? (size_t)(cut - before_text + 1) : 0;
    json_t *before = records(dir);
    int last_gen = 0;
    size_t i;
    json_t *r;
    json_array_foreach(before, i, r)
    {
        int g = (int)json_integer_value(json_object_get(r, "gen"));
        last_gen = g > last_gen ? g : last_gen;
    }
    CHECKF(last_gen < 40, "the run finished before it was killed");
    o->generations = last_gen; /* finish the generation it was killed in */
    CHECKF(discover_run(o, err, sizeof err) == 0, "%s", err);
    char *after_text;
    size_t after_len;
    tfs_read(archive, &after_text, &after_len, err, sizeof err);
    CHECK(after_len >= whole && memcmp(before_text, after_text, whole) == 0); /* nothing lost */
    json_t *after = records(dir);
    int expected = 1 + 2 * last_gen;
    for (int g = 0; g <= last_gen; g++)
        for (int k = 0; k < (g == 0 ? 1 : 2); k++) {
            int props = 0, results = 0;
            json_array_foreach(after, i, r)
            {
                if (json_integer_value(json_object_get(r, "gen")) != g ||
                    json_integer_value(json_object_get(r, "idx")) != k)
                    continue;
                const char *t = json_string_value(json_object_get(r, "type"));
                props += strcmp(t, "proposal") == 0;
                results += strcmp(t, "result") == 0;
            }
            CHECKF(props == 1 && results == 1, "gen %d #%d: %d proposals, %d results", g, k, props,
                   results);
        }
    CHECKF((int)json_array_size(after) == 2 * expected, "%zu records, expected %d",
           json_array_size(after), 2 * expected);
    json_decref(before);
    json_decref(after);
    free(before_text);
    free(after_text);
    free(o);
}

int main(void)
{
    snprintf(root_dir, sizeof root_dir, "/tmp/prefrun_test_discover_XXXXXX");
    if (!mkdtemp(root_dir)) {
        printf("Bail out! cannot make a scratch directory: %s\n", strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    RUN(reply_json_in_fence_with_prose);
    RUN(reply_bare_json_and_fenced_code_field);
    RUN(reply_lua_fence_with_first_line_as_thought);
    RUN(reply_malformed_or_without_code_is_an_error);
    RUN(names_are_sanitised_and_unique);
    RUN(settings_round_trip_and_unknown_keys);
    RUN(fitness_task_is_the_registered_default);
    RUN(archive_drops_a_torn_last_line);
    RUN(parents_do_not_depend_on_completion_order);
    RUN(elites_and_tournaments_need_a_resolved_difference);
    RUN(identical_losses_tie_and_a_broken_one_is_worse);
    RUN(noise_floor_runs_each_seed_alone);
    RUN(pool_bounds_crash_timeout_memory);
    RUN(probe_rewrites_are_one_behaviour);
    RUN(evolve_is_seeded_and_writes_valid_lua);
    RUN(command_proposer_pipes_and_times_out);
    RUN(command_reply_with_invalid_utf8_is_made_safe);
    RUN(llm_end_to_end_against_a_fake_server);
    RUN(llm_fatal_http_errors_stop_the_loop);
    RUN(evolve_two_generations_and_report);
    RUN(resume_after_kill_loses_and_repeats_nothing);
    stop_server();
    if (!getenv("PREFRUN_TEST_KEEP")) /* set it to look at the runs afterwards */
        fsutil_remove_tree(root_dir, err, sizeof err);
    else
        printf("# kept %s\n", root_dir);
    return tl_done();
}
