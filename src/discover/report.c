/*
 * discover/report.c — `prefrun discover --report DIR`: the leaderboard of a
 * discovery run as a table, and DIR/leaderboard.svg, the best fitness per
 * generation (DiscoPOP's figure of the same name).
 *
 * The report only reads the archive (no lock, no truncation: it may run
 * beside a live loop); a torn last line is skipped. The SVG is written
 * atomically inside DIR.
 *
 * Each fitness is shown with its 95% interval, and each row says whether it
 * is resolved from the top row by discover/compare.h's test (the one the
 * loop's elites use), with the noise floor of DIR/discover.yaml's settings
 * (noise_sd, else its fitness's; the defaults' when the file is absent).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discover/discover.h"
#include "discover/archive.h"
#include "discover/compare.h"
#include "util/errmsg.h"
#include "util/fsutil.h"

#define TOP 20
#define SVG_W 640
#define SVG_H 360
#define PAD 48

typedef struct Row {
    int gen, idx;
    char name[ARCHIVE_NAME_LEN];
    CandStatus status;
    double fitness;
    FitnessScores scores;
    char seeds[64];
    char cell[ARCHIVE_CELL_LEN];
    char file[ARCHIVE_NAME_LEN + 16];
} Row;

typedef struct Table {
    Row *rows;
    int n, cap;
    int proposals, max_gen;
    double noise_sd;  /* compare.h's floor */
    char fitness[32]; /* the settings' fitness, for the note under the table */
} Table;

static void seeds_text(const json_t *fit, char *out, size_t n)
{
    const json_t *s = json_object_get(fit, "seeds");
    size_t k = 0, i;
    json_t *v;
    out[0] = '\0';
    json_array_foreach(s, i, v)
    {
        k += (size_t)snprintf(out + k, n > k ? n - k : 0, "%s%lld", i ? "," : "",
                              (long long)json_integer_value(v));
        if (k >= n)
            break;
    }
}

static int add_row(Table *t, const json_t *j)
{
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 64;
        Row *nr = realloc(t->rows, (size_t)cap * sizeof *nr);
        if (!nr)
            return -1;
        t->rows = nr;
        t->cap = cap;
    }
    Row *r = &t->rows[t->n++];
    const json_t *fit = json_object_get(j, "fitness");
    const char *cell =
        json_string_value(json_object_get(json_object_get(j, "descriptors"), "cell"));
    const char *file = json_string_value(json_object_get(j, "file"));
    *r = (Row){.gen = (int)json_integer_value(json_object_get(j, "gen")),
               .idx = (int)json_integer_value(json_object_get(j, "idx")),
               .status = cand_status_parse(json_string_value(json_object_get(j, "status")))};
    fitness_scores_from_json(fit, &r->scores);
    r->fitness = r->scores.mean;
    snprintf(r->name, sizeof r->name, "%s", json_string_value(json_object_get(j, "name")));
    snprintf(r->cell, sizeof r->cell, "%s", cell ? cell : "");
    snprintf(r->file, sizeof r->file, "%s", file ? file : "");
    seeds_text(fit, r->seeds, sizeof r->seeds);
    return 0;
}

static int read_table(const char *dir, Table *t, char *err, size_t errlen)
{
    char path[DISCOVER_PATH_LEN + 16], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/archive.jsonl", dir);
    static const FsReadCap cap = {.bytes = (size_t)1 << 30, .kind = "an archive"};
    if (fsutil_read_capped(path, &cap, &text, &len, err, errlen) != 0)
        return -1;
    int rc = 0;
    for (char *line = text; rc == 0 && *line;) {
        char *nl = strchr(line, '\n');
        if (!nl)
            break; /* a torn last line */
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, NULL);
        const char *type = json_string_value(json_object_get(j, "type"));
        int gen = (int)json_integer_value(json_object_get(j, "gen"));
        t->max_gen = gen > t->max_gen ? gen : t->max_gen;
        if (type && strcmp(type, "proposal") == 0)
            t->proposals++;
        else if (type && strcmp(type, "result") == 0)
            rc = add_row(t, j);
        json_decref(j);
        line = nl + 1;
    }
    free(text);
    if (rc != 0)
        snprintf(err, errlen, "report: out of memory");
    return rc;
}

static int by_fitness(const void *a, const void *b)
{
    const Row *x = a, *y = b;
    bool vx = x->status == CAND_VALID && !isnan(x->fitness);
    bool vy = y->status == CAND_VALID && !isnan(y->fitness);
    if (vx != vy)
        return vx ? -1 : 1;
    if (vx && x->fitness != y->fitness)
        return x->fitness > y->fitness ? -1 : 1;
    return x->gen != y->gen ? x->gen - y->gen : x->idx - y->idx; /* the archive's tie order */
}

static void print_counts(FILE *f, const Table *t, const char *dir)
{
    int n[CAND_STATUS_COUNT + 1] = {0};
    for (int i = 0; i < t->n; i++)
        n[t->rows[i].status]++;
    fprintf(f, "prefrun discover: %s: %d proposals in generations 0-%d, %d finished (", dir,
            t->proposals, t->max_gen, t->n);
    const char *sep = "";
    for (int s = 1; s < CAND_STATUS_COUNT; s++)
        if (n[s]) {
            fprintf(f, "%s%s %d", sep, cand_status_name((CandStatus)s), n[s]);
            sep = ", ";
        }
    fprintf(f, ")\n\n");
}

/* "0.8123 ± 0.0150" (the interval n/a when neither se nor a floor is known) */
static void fitness_text(const Table *t, const Row *r, char *out, size_t n)
{
    double iv = fitness_interval(r->scores.se, r->scores.n, t->noise_sd);
    if (isnan(iv))
        snprintf(out, n, "%.4f ± n/a", r->fitness);
    else
        snprintf(out, n, "%.4f ± %.4f", r->fitness, iv);
}

/* row r against the top row: "best" (it is the top), "=" unresolved, "<"
 * resolved worse, ">" resolved better (possible only on other seeds) */
static const char *versus_top(const Table *t, const Row *r)
{
    const Row *top = &t->rows[0];
    if (r == top)
        return "best";
    int c = fitness_compare(&r->scores, &top->scores, t->noise_sd, NULL);
    return c < 0 ? "<" : c > 0 ? ">" : "=";
}

static void print_top(FILE *f, const Table *t)
{
    fprintf(f, "%4s  %-19s %-7s %-6s %4s  %-28s %-38s %s\n", "rank", "fitness ± 95%", "vs best",
            "seeds", "gen", "name", "cell (slope0, convexity, tails, coupling)", "file");
    for (int i = 0; i < t->n && i < TOP; i++) {
        const Row *r = &t->rows[i];
        if (r->status != CAND_VALID || isnan(r->fitness))
            break;
        char fit[48];
        fitness_text(t, r, fit, sizeof fit);
        /* the header's and each row's one "±" is two bytes in one column:
         * printf pads bytes, so the same width lines them up */
        fprintf(f, "%4d  %-19s %-7s %-6s %4d  %-28s %-38s %s\n", i + 1, fit, versus_top(t, r),
                r->seeds, r->gen, r->name, r->cell, r->file);
    }
    fprintf(f,
            "\n± is the 95%% interval of the mean over the seeds, 1.96 * max(se, noise_sd / "
            "sqrt(n)),\nwith noise_sd %.4g (fitness %s). vs best: \"=\" not resolved from rank 1, "
            "\"<\" resolved\nworse, by the paired t test (95%%, two-sided) over the common seeds, "
            "floored at\n1.96 * noise_sd * sqrt(2 / n) (discover/compare.h; the loop's elites use "
            "it too).\n",
            t->noise_sd, t->fitness);
}

/* best[g]: the best valid fitness of generation g (NAN when none) */
static double *per_generation(const Table *t)
{
    double *best = malloc(((size_t)t->max_gen + 1) * sizeof *best);
    for (int g = 0; best && g <= t->max_gen; g++)
        best[g] = NAN;
    for (int i = 0; best && i < t->n; i++) {
        const Row *r = &t->rows[i];
        if (r->status == CAND_VALID && !isnan(r->fitness) && r->gen <= t->max_gen &&
            (isnan(best[r->gen]) || r->fitness > best[r->gen]))
            best[r->gen] = r->fitness;
    }
    return best;
}

static void print_generations(FILE *f, const Table *t, const double *best)
{
    fprintf(f, "\n%4s  %-10s %-10s\n", "gen", "best", "best so far");
    double so_far = NAN;
    for (int g = 0; g <= t->max_gen; g++) {
        if (!isnan(best[g]) && (isnan(so_far) || best[g] > so_far))
            so_far = best[g];
        fprintf(f, "%4d  %-10.4f %-10.4f\n", g, best[g], so_far);
    }
}

/* ---- the plot ---------------------------------------------------------------------------- */

static double px(int g, int max_gen)
{
    return PAD + (SVG_W - 2 * PAD) * (max_gen > 0 ? (double)g / max_gen : 0.5);
}

static double py(double v, double lo, double hi)
{
    return SVG_H - PAD - (SVG_H - 2 * PAD) * (hi > lo ? (v - lo) / (hi - lo) : 0.5);
}

static void svg_points(FILE *f, const Table *t, double lo, double hi)
{
    for (int i = 0; i < t->n; i++) {
        const Row *r = &t->rows[i];
        if (r->status == CAND_VALID && !isnan(r->fitness))
            fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3' fill='#999' fill-opacity='0.6'/>\n",
                    px(r->gen, t->max_gen), py(r->fitness, lo, hi));
    }
}

static void svg_best(FILE *f, const Table *t, const double *best, double lo, double hi)
{
    fputs("<polyline fill='none' stroke='#1f77b4' stroke-width='2' points='", f);
    double so_far = NAN;
    for (int g = 0; g <= t->max_gen; g++) {
        if (!isnan(best[g]) && (isnan(so_far) || best[g] > so_far))
            so_far = best[g];
        if (!isnan(so_far))
            fprintf(f, "%.1f,%.1f ", px(g, t->max_gen), py(so_far, lo, hi));
    }
    fputs("'/>\n", f);
    for (int g = 0; g <= t->max_gen; g++)
        if (!isnan(best[g]))
            fprintf(f, "<circle cx='%.1f' cy='%.1f' r='4' fill='#ff7f0e'/>\n", px(g, t->max_gen),
                    py(best[g], lo, hi));
}

static char *svg_text(const Table *t, const double *best)
{
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < t->n; i++)
        if (t->rows[i].status == CAND_VALID && !isnan(t->rows[i].fitness)) {
            lo = fmin(lo, t->rows[i].fitness);
            hi = fmax(hi, t->rows[i].fitness);
        }
    if (!(lo <= hi)) { /* no valid candidate yet: an empty unit axis */
        lo = 0;
        hi = 1;
    }
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    fprintf(f,
            "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' "
            "font-family='sans-serif' font-size='12'>\n<rect width='100%%' height='100%%' "
            "fill='white'/>\n",
            SVG_W, SVG_H);
    fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='black'/>\n", PAD, SVG_H - PAD,
            SVG_W - PAD, SVG_H - PAD);
    fprintf(f, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='black'/>\n", PAD, PAD, PAD,
            SVG_H - PAD);
    fprintf(f, "<text x='%d' y='%d' text-anchor='middle'>generation (0-%d)</text>\n", SVG_W / 2,
            SVG_H - 12, t->max_gen);
    fprintf(f,
            "<text x='14' y='%d' transform='rotate(-90 14 %d)' text-anchor='middle'>fitness "
            "(%.4g to %.4g)</text>\n",
            SVG_H / 2, SVG_H / 2, lo, hi);
    fprintf(f,
            "<text x='%d' y='24' text-anchor='middle'>best fitness per generation (orange), "
            "best so far (blue), all valid (grey)</text>\n",
            SVG_W / 2);
    svg_points(f, t, lo, hi);
    svg_best(f, t, best, lo, hi);
    fputs("</svg>\n", f);
    fclose(f);
    return out;
}

/* the run's noise floor: its discover.yaml's settings, else the defaults' */
static int read_noise(const char *dir, Table *t, char *err, size_t errlen)
{
    DiscoverOptions *o = malloc(sizeof *o);
    if (!o)
        return err_fail(err, errlen, "report: out of memory");
    char path[DISCOVER_PATH_LEN + 16];
    snprintf(path, sizeof path, "%s/discover.yaml", dir);
    discover_defaults(o);
    int rc = fsutil_exists(path) ? discover_load_yaml(o, path, err, errlen) : 0;
    t->noise_sd = discover_noise_sd(o);
    snprintf(t->fitness, sizeof t->fitness, "%s", o->fitness);
    free(o);
    return rc;
}

int discover_report(FILE *f, const char *dir, char *err, size_t errlen)
{
    Table t = {0};
    if (read_noise(dir, &t, err, errlen) != 0 || read_table(dir, &t, err, errlen) != 0) {
        free(t.rows);
        return -1;
    }
    double *best = per_generation(&t);
    char *svg = best ? svg_text(&t, best) : NULL;
    char path[DISCOVER_PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/leaderboard.svg", dir);
    int rc = svg ? fsutil_write_atomic(path, svg, strlen(svg), err, errlen) : -1;
    if (!svg)
        snprintf(err, errlen, "report: out of memory");
    if (rc == 0) {
        qsort(t.rows, (size_t)t.n, sizeof *t.rows, by_fitness);
        print_counts(f, &t, dir);
        print_top(f, &t);
        print_generations(f, &t, best);
        fprintf(f, "\nplot: %s\n", path);
    }
    free(svg);
    free(best);
    free(t.rows);
    return rc;
}
