/*
 * discover/archive.c — the JSONL archive, its index and the
 * quality-diversity grid (discover/archive.h).
 *
 * Invariants: entries are in proposal order (the file's order); each entry's
 * result, once indexed, never changes (a result line for a finished
 * candidate is an error); cells[] holds, per occupied cell, the index of its
 * best valid entry.
 */
#include "discover/archive.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define PATH_LEN 1024
#define TOURNAMENT 3

typedef struct Cell {
    char key[ARCHIVE_CELL_LEN];
    int elite; /* entry index */
} Cell;

struct Archive {
    char path[PATH_LEN];
    int fd;
    ArchiveEntry *e;
    int n, cap;
    Cell *cells;
    int n_cells, cap_cells;
    double noise_sd; /* compare.h's floor */
};

static const char *const status_names[CAND_STATUS_COUNT] = {
    [CAND_PENDING] = "pending",           [CAND_VALID] = "valid",
    [CAND_HURDLE] = "below_hurdle",       [CAND_INVALID] = "invalid",
    [CAND_DUPLICATE] = "duplicate",       [CAND_NO_CODE] = "no_code",
    [CAND_TRAIN_FAILED] = "train_failed", [CAND_CRASHED] = "crashed",
    [CAND_TIMEOUT] = "timeout",
};

const char *cand_status_name(CandStatus s)
{
    return s < CAND_STATUS_COUNT ? status_names[s] : "unknown";
}

CandStatus cand_status_parse(const char *s)
{
    for (int i = 0; s && i < CAND_STATUS_COUNT; i++)
        if (strcmp(s, status_names[i]) == 0)
            return (CandStatus)i;
    return CAND_STATUS_COUNT;
}

bool cand_failed(CandStatus s)
{
    return s == CAND_INVALID || s == CAND_NO_CODE || s == CAND_TRAIN_FAILED || s == CAND_CRASHED ||
           s == CAND_TIMEOUT || s == CAND_DUPLICATE;
}

uint64_t archive_hash(const char *text)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

json_t *archive_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* ---- the grid ---------------------------------------------------------------- */

static double shape_num(const json_t *shape, const char *key)
{
    json_t *v = json_object_get(shape, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static const char *slope0_bin(double s)
{
    if (!(fabs(s) < 1e9))
        return "nan";
    if (s >= 0.05)
        return "pos";
    if (s > -0.05)
        return "flat";
    return s > -0.3 ? "weak" : s > -0.75 ? "mid" : "steep";
}

/* rho -> -range: pairs ranked the wrong way by far */
static const char *left_bin(double s)
{
    if (!(fabs(s) < 1e9))
        return "nan";
    if (s > 0.05)
        return "wrong";
    return s > -0.05 ? "flat" : s >= -1.5 ? "linear" : "steep";
}

/* rho -> +range: pairs already ranked right by far */
static const char *right_bin(double s)
{
    if (!(fabs(s) < 1e9))
        return "nan";
    return s < -0.05 ? "pushes" : s > 0.05 ? "pulls" : "stops";
}

json_t *archive_cell(const json_t *shape, bool coupled, char cell[ARCHIVE_CELL_LEN])
{
    cell[0] = '\0';
    if (!shape || !json_is_true(json_object_get(shape, "valid")))
        return NULL;
    const char *conv = json_string_value(json_object_get(shape, "convexity"));
    const char *s0 = slope0_bin(shape_num(shape, "slope0"));
    const char *l = left_bin(shape_num(shape, "slope_left"));
    const char *r = right_bin(shape_num(shape, "slope_right"));
    const char *c = coupled ? "coupled" : "pair";
    snprintf(cell, ARCHIVE_CELL_LEN, "s0=%s,%s,L=%s,R=%s,%s", s0, conv ? conv : "?", l, r, c);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "cell", cell, "slope0", s0, "convexity",
                     conv ? conv : "?", "tail_left", l, "tail_right", r, "coupling", c);
}

static bool earlier(const ArchiveEntry *a, const ArchiveEntry *b)
{
    return a->gen != b->gen ? a->gen < b->gen : a->idx < b->idx;
}

/* a ranks above b: higher mean fitness, then the earlier candidate (the
 * leaders' total order) */
static bool ranks_above(const ArchiveEntry *a, const ArchiveEntry *b)
{
    if (a->fitness != b->fitness)
        return a->fitness > b->fitness;
    return earlier(a, b);
}

int archive_compare(const Archive *ar, const ArchiveEntry *a, const ArchiveEntry *b)
{
    return fitness_compare(&a->scores, &b->scores, ar->noise_sd, NULL);
}

/* a wins against b (elites, tournaments): resolved better, or unresolved
 * and the earlier candidate (archive.h) */
static bool wins(const Archive *ar, const ArchiveEntry *a, const ArchiveEntry *b)
{
    int c = archive_compare(ar, a, b);
    return c > 0 || (c == 0 && earlier(a, b));
}

static int update_grid(Archive *ar, int i)
{
    const ArchiveEntry *e = &ar->e[i];
    if (e->status != CAND_VALID || !e->cell[0] || isnan(e->fitness))
        return 0;
    for (int k = 0; k < ar->n_cells; k++) {
        if (strcmp(ar->cells[k].key, e->cell) != 0)
            continue;
        if (wins(ar, e, &ar->e[ar->cells[k].elite]))
            ar->cells[k].elite = i;
        return 0;
    }
    if (ar->n_cells == ar->cap_cells) {
        int cap = ar->cap_cells ? 2 * ar->cap_cells : 16;
        Cell *nc = realloc(ar->cells, (size_t)cap * sizeof *nc);
        if (!nc)
            return -1;
        ar->cells = nc;
        ar->cap_cells = cap;
    }
    Cell *c = &ar->cells[ar->n_cells++];
    snprintf(c->key, sizeof c->key, "%s", e->cell);
    c->elite = i;
    return 0;
}

int archive_cell_count(const Archive *ar) { return ar->n_cells; }

const ArchiveEntry *archive_elite(const Archive *ar, const char *cell)
{
    for (int k = 0; k < ar->n_cells; k++)
        if (strcmp(ar->cells[k].key, cell) == 0)
            return &ar->e[ar->cells[k].elite];
    return NULL;
}

double archive_noise(const Archive *ar) { return ar->noise_sd; }

static int by_result_line(const void *a, const void *b, void *arg)
{
    const Archive *ar = arg;
    off_t x = ar->e[*(const int *)a].res_off, y = ar->e[*(const int *)b].res_off;
    return (x > y) - (x < y);
}

/* The elites again, the results taken in the file's order as loading and
 * appending took them (which pair met which incumbent depends on it). The
 * cells are the same ones, so update_grid allocates nothing here. */
void archive_set_noise(Archive *ar, double noise_sd)
{
    ar->noise_sd = noise_sd;
    ar->n_cells = 0;
    int *order = malloc(((size_t)ar->n + 1) * sizeof *order), n = 0;
    for (int i = 0; i < ar->n; i++)
        if (ar->e[i].res_len) {
            if (order)
                order[n++] = i;
            else
                update_grid(ar, i); /* no memory to sort: proposal order */
        }
    if (order)
        qsort_r(order, (size_t)n, sizeof *order, by_result_line, ar);
    for (int k = 0; k < n; k++)
        update_grid(ar, order[k]);
    free(order);
}

/* ---- indexing records ---------------------------------------------------------- */

static int get_int(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : -1;
}

static double get_num(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static ArchiveEntry *find_mut(const Archive *ar, int gen, int idx)
{
    for (int i = ar->n - 1; i >= 0; i--)
        if (ar->e[i].gen == gen && ar->e[i].idx == idx)
            return &ar->e[i];
    return NULL;
}

/* names become file names: only what archive_sanitize_name makes */
static bool valid_name(const char *name)
{
    size_t n = name ? strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_") : 0;
    return n > 0 && !name[n] && n < ARCHIVE_NAME_LEN;
}

static int index_proposal(Archive *ar, const json_t *j, off_t off, size_t len, char *err,
                          size_t errlen)
{
    int gen = get_int(j, "gen"), idx = get_int(j, "idx");
    const char *name = json_string_value(json_object_get(j, "name"));
    if (gen < 0 || idx < 0 || !valid_name(name) || find_mut(ar, gen, idx)) {
        snprintf(err, errlen,
                 "a proposal without gen/idx, with a name not matching ^[a-z0-9_]+$, or proposed "
                 "twice (gen %d, idx %d)",
                 gen, idx);
        return -1;
    }
    if (ar->n == ar->cap) {
        int cap = ar->cap ? 2 * ar->cap : 64;
        ArchiveEntry *ne = realloc(ar->e, (size_t)cap * sizeof *ne);
        if (!ne) {
            snprintf(err, errlen, "archive: out of memory");
            return -1;
        }
        ar->e = ne;
        ar->cap = cap;
    }
    ArchiveEntry *e = &ar->e[ar->n++];
    const char *code = json_string_value(json_object_get(j, "code"));
    *e = (ArchiveEntry){.gen = gen,
                        .idx = idx,
                        .fitness = NAN,
                        .hurdle = NAN,
                        .has_code = code != NULL,
                        .has_genome = json_is_string(json_object_get(j, "genome")),
                        .prop_off = off,
                        .prop_len = len};
    snprintf(e->name, sizeof e->name, "%s", name);
    e->code_hash = code ? archive_hash(code) : 0;
    return 0;
}

int archive_behaviour_from_json(const json_t *j, Behaviour *b)
{
    json_t *probe = json_object_get(j, "probe");
    const char *hash = json_string_value(json_object_get(j, "behaviour"));
    if (!json_is_array(probe) || !hash)
        return -1;
    memset(b, 0, sizeof *b);
    size_t k;
    json_t *v;
    json_array_foreach(probe, k, v)
    {
        if (b->n < PROBE_VALUES)
            b->values[b->n++] = json_is_number(v) ? json_number_value(v) : NAN;
    }
    b->hash = strtoull(hash, NULL, 16);
    b->coupled = json_is_true(json_object_get(j, "coupled"));
    return 0;
}

json_t *archive_behaviour_json(const Behaviour *b)
{
    json_t *probe = json_array();
    for (int i = 0; i < b->n; i++) /* float32 results: 9 significant digits are exact */
        json_array_append_new(probe, archive_num(b->values[i]));
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)b->hash);
    return json_pack("{s:s, s:o, s:b}", "behaviour", hash, "probe", probe, "coupled", b->coupled);
}

static Behaviour *behaviour_of(const json_t *j)
{
    Behaviour *b = malloc(sizeof *b);
    if (b && archive_behaviour_from_json(j, b) != 0) {
        free(b);
        b = NULL;
    }
    return b;
}

static int index_result(Archive *ar, const json_t *j, off_t off, size_t len, char *err,
                        size_t errlen)
{
    ArchiveEntry *e = find_mut(ar, get_int(j, "gen"), get_int(j, "idx"));
    CandStatus st = cand_status_parse(json_string_value(json_object_get(j, "status")));
    if (!e || e->res_len || st == CAND_STATUS_COUNT || st == CAND_PENDING) {
        snprintf(err, errlen, "a result without its proposal, a second result, or no status");
        return -1;
    }
    e->status = st;
    e->res_off = off;
    e->res_len = len;
    fitness_scores_from_json(json_object_get(j, "fitness"), &e->scores);
    e->fitness = e->scores.mean;
    e->hurdle = get_num(json_object_get(j, "hurdle"), "value");
    e->behaviour = behaviour_of(j);
    const char *cell =
        json_string_value(json_object_get(json_object_get(j, "descriptors"), "cell"));
    snprintf(e->cell, sizeof e->cell, "%s", cell ? cell : "");
    if (update_grid(ar, (int)(e - ar->e)) != 0) {
        snprintf(err, errlen, "archive: out of memory");
        return -1;
    }
    return 0;
}

static int index_record(Archive *ar, const json_t *j, off_t off, size_t len, char *err,
                        size_t errlen)
{
    const char *type = json_string_value(json_object_get(j, "type"));
    if (type && strcmp(type, "proposal") == 0)
        return index_proposal(ar, j, off, len, err, errlen);
    if (type && strcmp(type, "result") == 0)
        return index_result(ar, j, off, len, err, errlen);
    snprintf(err, errlen, "a record of unknown type '%s'", type ? type : "(none)");
    return -1;
}

/* ---- open, load, append -------------------------------------------------------- */

/* Indexes every line; a torn last line is cut off the file. */
static int load(Archive *ar, int *dropped, char *err, size_t errlen)
{
    FILE *f = fdopen(dup(ar->fd), "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", ar->path, strerror(errno));
        return -1;
    }
    char *line = NULL, msg[256];
    size_t cap = 0;
    ssize_t n;
    off_t off = 0;
    int rc = 0, lineno = 0;
    while (rc == 0 && (n = getline(&line, &cap, f)) > 0) {
        lineno++;
        bool whole = line[n - 1] == '\n';
        json_t *j = whole ? json_loadb(line, (size_t)n - 1, 0, NULL) : NULL;
        if (!j && fgetc(f) == EOF) { /* the last line: torn by a kill */
            *dropped = 1;
            if (ftruncate(ar->fd, off) != 0) {
                snprintf(err, errlen, "%s: cannot drop the torn last line: %s", ar->path,
                         strerror(errno));
                rc = -1;
            }
            break;
        }
        if (!j || index_record(ar, j, off, (size_t)n - 1, msg, sizeof msg) != 0) {
            snprintf(err, errlen, "%s:%d: %s; the archive was edited (fix or remove the line)",
                     ar->path, lineno, j ? msg : "not a JSON object");
            rc = -1;
        }
        json_decref(j);
        off += n;
    }
    free(line);
    fclose(f);
    return rc;
}

Archive *archive_open(const char *dir, int *dropped, char *err, size_t errlen)
{
    *dropped = 0;
    Archive *ar = calloc(1, sizeof *ar);
    if (!ar) {
        snprintf(err, errlen, "archive: out of memory");
        return NULL;
    }
    snprintf(ar->path, sizeof ar->path, "%s/archive.jsonl", dir);
    ar->fd = open(ar->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (ar->fd < 0) {
        snprintf(err, errlen, "%s: %s", ar->path, strerror(errno));
        free(ar);
        return NULL;
    }
    if (flock(ar->fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "%s: another `prefrun discover` is using this directory", ar->path);
        archive_close(ar);
        return NULL;
    }
    if (load(ar, dropped, err, errlen) != 0) {
        archive_close(ar);
        return NULL;
    }
    return ar;
}

void archive_close(Archive *ar)
{
    if (!ar)
        return;
    for (int i = 0; i < ar->n; i++)
        free(ar->e[i].behaviour);
    free(ar->e);
    free(ar->cells);
    if (ar->fd >= 0)
        close(ar->fd);
    free(ar);
}

int archive_append(Archive *ar, json_t *record, char *err, size_t errlen)
{
    char *text = json_dumps(record, JSON_COMPACT | JSON_REAL_PRECISION(10));
    if (!text) {
        snprintf(err, errlen, "archive: cannot serialise a record");
        return -1;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps's NUL becomes the line end: one write per line */
    off_t off = lseek(ar->fd, 0, SEEK_END);
    ssize_t w = off < 0 ? -1 : write(ar->fd, text, len + 1);
    int rc = 0;
    if (w != (ssize_t)(len + 1) || fsync(ar->fd) != 0) {
        snprintf(err, errlen, "%s: cannot append a record: %s", ar->path,
                 w < 0 ? strerror(errno) : "short write (disk full?)");
        rc = -1;
    }
    char msg[256];
    if (rc == 0 && index_record(ar, record, off, len, msg, sizeof msg) != 0) {
        snprintf(err, errlen, "%s: %s", ar->path, msg);
        rc = -1;
    }
    free(text);
    return rc;
}

/* ---- queries --------------------------------------------------------------------- */

int archive_count(const Archive *ar) { return ar->n; }
const ArchiveEntry *archive_entry(const Archive *ar, int i) { return &ar->e[i]; }
const ArchiveEntry *archive_find(const Archive *ar, int gen, int idx)
{
    return find_mut(ar, gen, idx);
}

int archive_gen_count(const Archive *ar, int gen)
{
    int n = 0;
    for (int i = 0; i < ar->n; i++)
        n += ar->e[i].gen == gen;
    return n;
}

int archive_last_gen(const Archive *ar)
{
    int g = -1;
    for (int i = 0; i < ar->n; i++)
        g = ar->e[i].gen > g ? ar->e[i].gen : g;
    return g;
}

static json_t *read_line(const Archive *ar, off_t off, size_t len)
{
    if (len == 0)
        return NULL;
    char *buf = malloc(len);
    json_t *j = NULL;
    if (buf && pread(ar->fd, buf, len, off) == (ssize_t)len)
        j = json_loadb(buf, len, 0, NULL);
    free(buf);
    return j;
}

json_t *archive_read_proposal(const Archive *ar, const ArchiveEntry *e)
{
    return read_line(ar, e->prop_off, e->prop_len);
}

json_t *archive_read_result(const Archive *ar, const ArchiveEntry *e)
{
    return read_line(ar, e->res_off, e->res_len);
}

const ArchiveEntry *archive_same_code(const Archive *ar, uint64_t code_hash)
{
    for (int i = 0; i < ar->n; i++) {
        const ArchiveEntry *e = &ar->e[i];
        if (e->res_len && e->has_code && e->code_hash == code_hash && e->status != CAND_DUPLICATE)
            return e;
    }
    return NULL;
}

const ArchiveEntry *archive_same_behaviour(const Archive *ar, const Behaviour *b)
{
    for (int i = 0; i < ar->n; i++) /* the hash first: equal rounded numbers */
        if (ar->e[i].behaviour && ar->e[i].behaviour->hash == b->hash)
            return &ar->e[i];
    for (int i = 0; i < ar->n; i++) /* then within tolerance: a value on a rounding edge */
        if (ar->e[i].behaviour && probe_same(ar->e[i].behaviour, b))
            return &ar->e[i];
    return NULL;
}

void archive_sanitize_name(const char *want, char out[ARCHIVE_NAME_LEN])
{
    size_t n = 0;
    bool sep = false;
    for (const unsigned char *p = (const unsigned char *)(want ? want : ""); *p; p++) {
        if (n + 1 >= ARCHIVE_NAME_LEN - 6) /* room for a _NNNN suffix */
            break;
        if (isalnum(*p) && *p < 128) {
            if (sep && n > 0)
                out[n++] = '_';
            out[n++] = (char)tolower(*p);
            sep = false;
        } else {
            sep = true; /* runs of anything else become one '_' */
        }
    }
    out[n] = '\0';
    if (n == 0)
        snprintf(out, ARCHIVE_NAME_LEN, "candidate");
}

static bool name_taken(const Archive *ar, const char *name)
{
    for (int i = 0; i < ar->n; i++)
        if (strcmp(ar->e[i].name, name) == 0)
            return true;
    return false;
}

void archive_unique_name(const Archive *ar, const char *want, char out[ARCHIVE_NAME_LEN])
{
    char base[ARCHIVE_NAME_LEN];
    archive_sanitize_name(want, base);
    snprintf(out, ARCHIVE_NAME_LEN, "%s", base);
    for (unsigned k = 2; name_taken(ar, out) && k < 100000; k++) /* the base leaves 6 bytes */
        snprintf(out, ARCHIVE_NAME_LEN, "%.*s_%u", ARCHIVE_NAME_LEN - 8, base, k % 100000u);
}

/* ---- parents, failures, leaders -------------------------------------------------- */

/* elites in the order of their candidates (gen, idx): cells are made as
 * results arrive, in worker-completion order, and a draw over that order
 * would make the parents depend on timing (and differ after a resume) */
static int by_candidate(const void *a, const void *b, void *arg)
{
    const Archive *ar = arg;
    const ArchiveEntry *x = &ar->e[*(const int *)a], *y = &ar->e[*(const int *)b];
    return x->gen != y->gen ? (x->gen > y->gen) - (x->gen < y->gen)
                            : (x->idx > y->idx) - (x->idx < y->idx);
}

static int elites(const Archive *ar, bool need_genome, int *out)
{
    int n = 0;
    for (int k = 0; k < ar->n_cells; k++)
        if (!need_genome || ar->e[ar->cells[k].elite].has_genome)
            out[n++] = ar->cells[k].elite;
    qsort_r(out, (size_t)n, sizeof *out, by_candidate, (void *)ar);
    return n;
}

static bool chosen(const ArchiveEntry **out, int n, const ArchiveEntry *e)
{
    for (int i = 0; i < n; i++)
        if (out[i] == e)
            return true;
    return false;
}

int archive_parents(const Archive *ar, Rng *r, int want, bool need_genome, const ArchiveEntry **out)
{
    int *el = malloc(((size_t)ar->n_cells + 1) * sizeof *el);
    if (!el)
        return 0;
    int ne = elites(ar, need_genome, el), n = 0;
    if (ne > 0 && want > 0) { /* the first: best of a small tournament */
        const ArchiveEntry *best = NULL;
        for (int t = 0; t < TOURNAMENT; t++) {
            const ArchiveEntry *c = &ar->e[el[rng_below(r, (uint32_t)ne)]];
            best = !best || wins(ar, c, best) ? c : best;
        }
        out[n++] = best;
    }
    for (int tries = 0; n < want && n < ne && tries < 8 * want; tries++) {
        const ArchiveEntry *c = &ar->e[el[rng_below(r, (uint32_t)ne)]];
        if (!chosen(out, n, c))
            out[n++] = c; /* the others: uniform over the other cells */
    }
    free(el);
    /* fewer cells than parents wanted: the best remaining valid candidates */
    const ArchiveEntry *lead[8];
    int nl = archive_leaders(ar, 8, lead);
    for (int i = 0; i < nl && n < want; i++)
        if (!chosen(out, n, lead[i]) && (!need_genome || lead[i]->has_genome))
            out[n++] = lead[i];
    return n;
}

int archive_failures(const Archive *ar, int want, const ArchiveEntry **out)
{
    int n = 0;
    for (int i = ar->n - 1; i >= 0 && n < want; i--)
        if (ar->e[i].res_len && cand_failed(ar->e[i].status))
            out[n++] = &ar->e[i];
    return n;
}

int archive_leaders(const Archive *ar, int want, const ArchiveEntry **out)
{
    int n = 0;
    for (int i = 0; i < ar->n; i++) {
        const ArchiveEntry *e = &ar->e[i];
        if (e->status != CAND_VALID || isnan(e->fitness))
            continue;
        int at = n < want ? n++ : want; /* insertion into the sorted top list */
        while (at > 0 && ranks_above(e, out[at - 1])) {
            if (at < want)
                out[at] = out[at - 1];
            at--;
        }
        if (at < want)
            out[at] = e;
    }
    return n;
}
