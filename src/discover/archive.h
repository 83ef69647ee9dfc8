/*
 * discover/archive.h — the discovery run's memory: DIR/archive.jsonl, an
 * append-only log of every candidate, and the index built from it (names,
 * behaviours, the quality-diversity grid, parents and recent failures).
 *
 * THE FILE. One JSON object per line, two kinds per candidate:
 *   {"type": "proposal", "gen", "idx", "name", "proposer", "thought",
 *    "code_hash", "code", "genome"?, "parents", "seconds", "time"}
 *   {"type": "result", "gen", "idx", "name", "status", "diagnostics",
 *    "shape"?, "descriptors"?, "behaviour"?, "probe"?, "duplicate_of"?,
 *    "hurdle"?, "fitness"? {"metric", "value", "se", "seeds", "per_seed", ...},
 *    "curve"?, "timings", "file"?}
 * A proposal is written before its evaluation starts, the result when it
 * ends, so a resumed run re-evaluates exactly the proposals without a result
 * and never proposes again what was proposed. Each line goes out in one
 * write() on an O_APPEND descriptor followed by fsync(): a kill leaves at most
 * a torn last line (no '\n', or not JSON), which archive_open drops (it
 * truncates the file there). An unreadable line elsewhere is an error: the
 * file was edited, and guessing would lose evaluations. The file is locked
 * (flock) so two loops cannot share one directory.
 *
 * THE INDEX keeps, per candidate, only what the loop decides with (status,
 * fitness, behaviour, grid cell) and the byte ranges of its two lines; code,
 * diagnostics and curves are read back from the file when a prompt needs
 * them, so memory grows by a few hundred bytes per candidate, not by its
 * text.
 *
 * THE GRID. A valid candidate's cell is named by its shape descriptors
 * (archive_cell): the slope at 0 (rho = beta * logits), convexity, the tails
 * at both ends, and batch coupling; the cell's elite is its best candidate.
 * Parents are drawn from the elites — the first by a tournament on fitness,
 * the rest uniformly from other cells — so prompts and mutations see
 * different shapes, not just the current best.
 *
 * BETTER means resolved better by discover/compare.h's test (paired over
 * the common seeds, floored by the noise set with archive_set_noise): a
 * newcomer replaces a cell's elite, and a tournament entrant its current
 * winner, only when it is resolved better. An unresolved pair goes to the
 * earlier candidate (gen, idx) — the incumbent, unless the newcomer is an
 * earlier candidate of the same generation that finished later — so the
 * winner of a pair does not depend on worker timing. Leaders
 * (archive_leaders) are ranked by mean fitness: a ranking needs a total
 * order; whether a rank is resolved is the report's column.
 */
#ifndef PREFRUN_DISCOVER_ARCHIVE_H
#define PREFRUN_DISCOVER_ARCHIVE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "discover/compare.h"
#include "discover/probe.h"
#include "core/rng.h"

#define ARCHIVE_NAME_LEN 48
#define ARCHIVE_CELL_LEN 64

typedef enum CandStatus {
    CAND_PENDING = 0,  /* proposed; no result yet */
    CAND_VALID,        /* passed the checks and the hurdle; fully scored */
    CAND_HURDLE,       /* passed the checks; below the hurdle after the short run */
    CAND_INVALID,      /* rejected by the checker (diagnostics say why) */
    CAND_DUPLICATE,    /* behaves as an earlier candidate (duplicate_of) */
    CAND_NO_CODE,      /* the proposer's reply had no usable code */
    CAND_TRAIN_FAILED, /* training failed: NaN, a script error mid-run */
    CAND_CRASHED,      /* the worker died: signal, process limit */
    CAND_TIMEOUT,      /* the worker ran past its wall clock */
    CAND_STATUS_COUNT
} CandStatus;

const char *cand_status_name(CandStatus s);
/* CAND_STATUS_COUNT when the text names no status */
CandStatus cand_status_parse(const char *s);
/* statuses shown to the proposer as failures to learn from (duplicates
 * included: "this behaves exactly as X" is worth telling an LLM) */
bool cand_failed(CandStatus s);

typedef struct ArchiveEntry {
    int gen, idx;
    char name[ARCHIVE_NAME_LEN];
    uint64_t code_hash;
    bool has_code, has_genome;
    CandStatus status;
    double fitness;              /* full evaluation; NAN when none */
    FitnessScores scores;        /* its per-seed values and se (scores.mean == fitness) */
    double hurdle;               /* the short run's fitness; NAN when none */
    Behaviour *behaviour;        /* screened candidates only (malloc'ed) */
    char cell[ARCHIVE_CELL_LEN]; /* "" when not in the grid */
    off_t prop_off, res_off;     /* the two lines in the file */
    size_t prop_len, res_len;    /* res_len 0: pending */
} ArchiveEntry;

typedef struct Archive Archive;

/* Opens (creating) DIR/archive.jsonl and indexes it; *dropped is set to 1
 * when a torn last line was removed. NULL with err set. */
Archive *archive_open(const char *dir, int *dropped, char *err, size_t errlen);
void archive_close(Archive *ar);

/* The noise floor of every comparison (compare.h's noise_sd; 0 until set)
 * and the grid's elites chosen again with it. */
void archive_set_noise(Archive *ar, double noise_sd);
double archive_noise(const Archive *ar);
/* compare.h's test of two entries' full fitnesses under the archive's noise:
 * +1 a resolved better, -1 worse, 0 unresolved (or either has none) */
int archive_compare(const Archive *ar, const ArchiveEntry *a, const ArchiveEntry *b);
/* The elite of the cell named cell; NULL when the cell is empty. */
const ArchiveEntry *archive_elite(const Archive *ar, const char *cell);

/* Writes one record as one line (write + fsync) and indexes it. */
int archive_append(Archive *ar, json_t *record, char *err, size_t errlen);

int archive_count(const Archive *ar);
const ArchiveEntry *archive_entry(const Archive *ar, int i);
const ArchiveEntry *archive_find(const Archive *ar, int gen, int idx);
/* proposals of generation gen */
int archive_gen_count(const Archive *ar, int gen);
/* the highest generation with a proposal; -1 when empty */
int archive_last_gen(const Archive *ar);

/* The line of a record, parsed (the caller decrefs); NULL on failure. */
json_t *archive_read_proposal(const Archive *ar, const ArchiveEntry *e);
json_t *archive_read_result(const Archive *ar, const ArchiveEntry *e);

/* A finished candidate with this code, or with this behaviour; NULL if none. */
const ArchiveEntry *archive_same_code(const Archive *ar, uint64_t code_hash);
const ArchiveEntry *archive_same_behaviour(const Archive *ar, const Behaviour *b);

/* want sanitised to ^[a-z0-9_]+$ (at most ARCHIVE_NAME_LEN - 1 bytes) and made
 * unique among the archive's names by a suffix _2, _3, ... */
void archive_unique_name(const Archive *ar, const char *want, char out[ARCHIVE_NAME_LEN]);
void archive_sanitize_name(const char *want, char out[ARCHIVE_NAME_LEN]);

/* The grid cell of a checked loss from its shape summary (check_report_json's
 * "shape") and coupling; also returns the descriptors as a JSON object (the
 * caller decrefs). "" and NULL when the shape is not valid. */
json_t *archive_cell(const json_t *shape, bool coupled, char cell[ARCHIVE_CELL_LEN]);

/* Up to want parents (distinct), as described above; need_genome keeps only
 * candidates with an expression genome (the evolve proposer's). */
int archive_parents(const Archive *ar, Rng *r, int want, bool need_genome,
                    const ArchiveEntry **out);
/* the want most recent failures (cand_failed), newest first */
int archive_failures(const Archive *ar, int want, const ArchiveEntry **out);
/* the want best valid candidates, best first */
int archive_leaders(const Archive *ar, int want, const ArchiveEntry **out);
/* cells with an elite */
int archive_cell_count(const Archive *ar);

/* A behaviour from the "behaviour" (hex hash), "probe" (numbers) and
 * "coupled" fields of j; 0, or -1 when j has none. */
int archive_behaviour_from_json(const json_t *j, Behaviour *b);
/* Those three fields as a new object (to merge into a record). */
json_t *archive_behaviour_json(const Behaviour *b);

/* FNV-1a of text, the archive's code_hash */
uint64_t archive_hash(const char *text);

/* a JSON number, or null for NaN and infinities (JSON has neither) */
json_t *archive_num(double v);

#endif
