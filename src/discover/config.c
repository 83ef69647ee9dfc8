/*
 * discover/config.c — the settings of `prefrun discover`: defaults, the
 * discover.yaml reader (libyaml), range checks, and the YAML writer whose
 * output the reader takes back (DIR/discover.yaml of a resumable run).
 *
 * Keys are one table (name, type, field, range, help), so the reader, the
 * writer, --help and the error messages cannot disagree. Sections `llm:`,
 * `command:` and `evolve:` are the dotted keys llm.url, command.argv, ...;
 * the `train:` mapping is handed to config.h's own reader (the text of the
 * mapping, padded so that its line numbers stay those of the file), so every
 * `prefrun train` key works there with that reader's checks.
 */
#include "util/text.h"
#include "util/errmsg.h"
#include "discover/discover.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "util/fsutil.h"
#include "task/fitness_interim.h"
#include "prefrun_config.h"

typedef enum KeyType {
    K_INT,
    K_U64,
    K_NUM,
    K_STR,
    K_BOOL,
    K_PROPOSER,
    K_NAMES, /* seed_losses: a list of loss names */
    K_SEEDS, /* fitness_seeds: a list of integers */
    K_ARGV,  /* command.argv: a list of strings */
} KeyType;

typedef struct Key {
    const char *name;
    KeyType type;
    size_t off;
    size_t size; /* of a K_STR field */
    double lo, hi;
    const char *help;
} Key;

#define F(field) offsetof(DiscoverOptions, field)
#define S(field) sizeof(((DiscoverOptions *)0)->field)

static const Key keys[] = {
    {"generations", K_INT, F(generations), 0, 0, 1e6, "generations after the seeds (gen 0)"},
    {"candidates", K_INT, F(candidates), 0, 1, 1000, "proposals per generation"},
    {"workers", K_INT, F(workers), 0, 0, 1024, "worker processes; 0 = one per core"},
    {"seed", K_U64, F(seed), 0, 0, 0, "seed of the proposer's choices"},
    {"seed_losses", K_NAMES, F(seed_losses), 0, 0, 0,
     "library losses evaluated as generation 0, e.g. [dpo, hinge]"},
    {"proposer", K_PROPOSER, F(propose.kind), 0, 0, 0, "evolve | llm | command"},
    {"prompt", K_STR, F(propose.prompt_path), S(propose.prompt_path), 0, 0,
     "prompt template (llm, command); default lua/discover_prompt.md"},
    {"fitness", K_STR, F(fitness), S(fitness), 0, 0, "task (default) | interim"},
    {"hurdle_steps", K_INT, F(hurdle_steps), 0, 0, 1e7,
     "steps of the hurdle run; 0 = none (default: the fitness's, 60)"},
    {"hurdle_min", K_NUM, F(hurdle_min), 0, -1e9, 1e9,
     "fitness the hurdle run must reach (default: the fitness's: task -0.25, interim 0.55)"},
    {"full_steps", K_INT, F(full_steps), 0, 0, 1e7,
     "steps of each full-evaluation run; 0 = the fitness's default (task 200, interim 400)"},
    {"fitness_seeds", K_SEEDS, F(fitness_seeds), 0, 0, 0, "training seeds of the full evaluation"},
    {"noise_sd", K_NUM, F(noise_sd), 0, 0, 1e9,
     "seed-to-seed sd of one loss's fitness: the floor of ties (default: the fitness's; "
     "see --noise-floor)"},
    {"timeout", K_NUM, F(timeout), 0, 1, 1e7, "wall-clock seconds per training job"},
    {"cpu_seconds", K_NUM, F(cpu_seconds), 0, 1, 1e7, "CPU seconds per training job"},
    {"memory_mb", K_INT, F(memory_mb), 0, 64, 1 << 22, "address space (MiB) a worker may add"},
    {"rank_timeout", K_NUM, F(rank_timeout), 0, 1, 1e6,
     "under mpirun: seconds of silence (or past a job's timeout) after which an evaluator "
     "rank is given up and its jobs re-queued"},
    {"parents", K_INT, F(parents), 0, 1, PROPOSE_MAX_PARENTS, "parents shown per proposal"},
    {"failures_shown", K_INT, F(failures_shown), 0, 0, PROPOSE_MAX_FAILURES,
     "recent failures shown per prompt"},
    {"leaders_shown", K_INT, F(leaders_shown), 0, 0, PROPOSE_MAX_LEADERS,
     "leaderboard entries shown per prompt"},
    {"quiet", K_BOOL, F(quiet), 0, 0, 0, "no per-candidate progress lines"},
    {"llm.url", K_STR, F(propose.url), S(propose.url), 0, 0,
     "OpenAI-compatible base URL (.../v1) or the full .../chat/completions"},
    {"llm.model", K_STR, F(propose.model), S(propose.model), 0, 0, "model name"},
    {"llm.key_env", K_STR, F(propose.key_env), S(propose.key_env), 0, 0,
     "environment variable with the API key (unset: no key sent)"},
    {"llm.temperature", K_NUM, F(propose.temperature), 0, 0, 2, "sampling temperature"},
    {"llm.max_tokens", K_INT, F(propose.max_tokens), 0, 0, 1 << 20, "reply cap; 0 = not sent"},
    {"llm.connect_timeout", K_NUM, F(propose.connect_timeout), 0, 0.01, 3600, "seconds"},
    {"llm.timeout", K_NUM, F(propose.timeout), 0, 0.01, 86400, "seconds per request"},
    {"llm.retries", K_INT, F(propose.retries), 0, 0, 100, "retries on 429, 5xx, timeouts"},
    {"llm.backoff", K_NUM, F(propose.backoff), 0, 0, 3600, "seconds before the first retry"},
    {"command.argv", K_ARGV, F(propose.argv), 0, 0, 0, "the command and its arguments"},
    {"command.timeout", K_NUM, F(propose.command_timeout), 0, 0.01, 86400, "seconds per reply"},
    {"evolve.max_nodes", K_INT, F(propose.max_nodes), 0, 5, 1000, "expression size cap"},
};
#define N_KEYS (int)(sizeof keys / sizeof keys[0])

void discover_defaults(DiscoverOptions *o)
{
    memset(o, 0, sizeof *o);
    o->generations = 10;
    o->candidates = 4;
    o->seed = 1;
    static const char *const seeds[] = {"dpo", "hinge", "robust", "discopop"};
    o->n_seed_losses = 4;
    for (int i = 0; i < 4; i++)
        snprintf(o->seed_losses[i], sizeof o->seed_losses[i], "%s", seeds[i]);
    snprintf(o->fitness, sizeof o->fitness, "task"); /* the issue: the built-in task's fitness */
    o->hurdle_steps = -1; /* -1, NAN, 0: the fitness's own (FitnessKind, FitnessFn) */
    o->hurdle_min = NAN;
    o->full_steps = 0;
    o->n_fitness_seeds = 3; /* seed-to-seed spread (~0.02) is larger than many gains */
    for (int i = 0; i < 3; i++)
        o->fitness_seeds[i] = (uint64_t)i + 1;
    o->noise_sd = NAN; /* the fitness's (FitnessKind) */
    o->timeout = 600;
    o->cpu_seconds = 1200;
    o->memory_mb = 4096;
    o->rank_timeout = 60; /* an evaluator rank's heartbeat is every 2 s */
    o->parents = 2;
    o->failures_shown = 4;
    o->leaders_shown = 5;
    propose_config_defaults(&o->propose);
    config_defaults(&o->train);
    o->train.threads = 1; /* one worker per core, one thread per worker */
    /* a held-out set of ~400 pairs: accuracy in steps of 0.25%, not 1% */
    o->train.toy_pairs = 2048;
    o->train.eval_fraction = 0.2;
}

/* ---- one key ----------------------------------------------------------------------- */

static const Key *find_key(const char *name)
{
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static int parse_number(const Key *k, const char *v, double *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !isfinite(x))
        return err_fail(err, errlen, "%s: expected a number, got \"%s\"", k->name, v);
    bool integral = k->type == K_INT || k->type == K_U64;
    if (integral && x != floor(x))
        return err_fail(err, errlen, "%s: expected an integer, got \"%s\"", k->name, v);
    if (k->type != K_U64 && (x < k->lo || x > k->hi))
        return err_fail(err, errlen, "%s: %s is out of range [%g, %g]", k->name, v, k->lo, k->hi);
    if (k->type == K_U64 && x < 0)
        return err_fail(err, errlen, "%s: expected a non-negative integer, got \"%s\"", k->name, v);
    *out = x;
    return 0;
}

static int set_scalar(DiscoverOptions *o, const Key *k, const char *v, char *err, size_t errlen)
{
    char *field = (char *)o + k->off;
    double x;
    switch (k->type) {
    case K_STR:
        if (strlen(v) >= k->size)
            return err_fail(err, errlen, "%s: longer than %zu bytes", k->name, k->size - 1);
        snprintf(field, k->size, "%s", v);
        return 0;
    case K_BOOL:
        if (strcmp(v, "true") && strcmp(v, "false"))
            return err_fail(err, errlen, "%s: expected true or false, got \"%s\"", k->name, v);
        *(bool *)field = strcmp(v, "true") == 0;
        return 0;
    case K_PROPOSER:
        if (propose_kind_parse(v, (ProposeKind *)field) != 0)
            return err_fail(err, errlen, "%s: expected evolve, llm or command, got \"%s\"", k->name,
                            v);
        return 0;
    case K_U64:
        if (parse_number(k, v, &x, err, errlen))
            return -1;
        *(uint64_t *)field = strtoull(v, NULL, 10);
        return 0;
    default:
        if (parse_number(k, v, &x, err, errlen))
            return -1;
        if (k->type == K_INT)
            *(int *)field = (int)x;
        else
            *(double *)field = x;
        return 0;
    }
}

/* item i of a list key */
static int set_item(DiscoverOptions *o, const Key *k, int i, const char *v, char *err,
                    size_t errlen)
{
    if (k->type == K_NAMES) {
        if (i >= DISCOVER_MAX_SEED_LOSSES || strlen(v) >= sizeof o->seed_losses[0])
            return err_fail(err, errlen, "seed_losses: at most %d names of < 64 bytes",
                            DISCOVER_MAX_SEED_LOSSES);
        snprintf(o->seed_losses[i], sizeof o->seed_losses[i], "%s", v);
        o->n_seed_losses = i + 1;
        return 0;
    }
    if (k->type == K_ARGV) {
        if (i >= PROPOSE_MAX_ARGV || strlen(v) >= PROPOSE_STR_LEN)
            return err_fail(err, errlen, "command.argv: at most %d words of < %d bytes",
                            PROPOSE_MAX_ARGV, PROPOSE_STR_LEN);
        snprintf(o->propose.argv[i], PROPOSE_STR_LEN, "%s", v);
        o->propose.argc = i + 1;
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long s = strtoull(v, &end, 10);
    if (end == v || *end || errno || v[0] == '-' || i >= FITNESS_MAX_SEEDS)
        return err_fail(err, errlen, "fitness_seeds: at most %d non-negative integers, got \"%s\"",
                        FITNESS_MAX_SEEDS, v);
    o->fitness_seeds[i] = s;
    o->n_fitness_seeds = i + 1;
    return 0;
}

static bool is_list(const Key *k)
{
    return k->type == K_NAMES || k->type == K_SEEDS || k->type == K_ARGV;
}

static void clear_list(DiscoverOptions *o, const Key *k)
{
    if (k->type == K_NAMES)
        o->n_seed_losses = 0;
    else if (k->type == K_ARGV)
        o->propose.argc = 0;
    else
        o->n_fitness_seeds = 0;
}

/* "train.KEY": the key KEY of the train: mapping, through config.h's own
 * setter (a string value taken as it is, never parsed as YAML). */
static int set_train(DiscoverOptions *o, const char *key, const char *value, char *err,
                     size_t errlen)
{
    char assignment[CONFIG_PATH_LEN + 128];
    if (snprintf(assignment, sizeof assignment, "%s=%s", key, value) >= (int)sizeof assignment)
        return err_fail(err, errlen, "train.%s: the value is too long", key);
    char msg[512];
    if (config_set(&o->train, assignment, msg, sizeof msg) != 0)
        return err_fail(err, errlen, "train.%s: %s", key, msg);
    return 0;
}

int discover_set(DiscoverOptions *o, const char *key, const char *value, char *err, size_t errlen)
{
    if (strncmp(key, "train.", 6) == 0)
        return set_train(o, key + 6, value, err, errlen);
    const Key *k = find_key(key);
    if (!k)
        return err_fail(err, errlen, "unknown key \"%s\"", key);
    if (!is_list(k))
        return set_scalar(o, k, value, err, errlen);
    clear_list(o, k); /* a comma-separated list, as on the command line */
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", value);
    int i = 0;
    for (char *save, *w = strtok_r(buf, ", ", &save); w; w = strtok_r(NULL, ", ", &save))
        if (set_item(o, k, i++, w, err, errlen) != 0)
            return -1;
    return 0;
}

/* ---- YAML ---------------------------------------------------------------------------- */

typedef struct Reader {
    DiscoverOptions *o;
    yaml_document_t *doc;
    const char *name;
    const char *text; /* the file, for the train: mapping's span */
    char *err;
    size_t errlen;
} Reader;

static int line_of(const yaml_node_t *n) { return (int)n->start_mark.line + 1; }

/* The byte offset of a mark: libyaml counts characters, not bytes, so the
 * offset is found by walking to the mark's line and column (UTF-8 aware). */
static size_t byte_of(const char *text, const yaml_mark_t *m)
{
    size_t i = 0;
    for (size_t line = 0; line < m->line && text[i]; i++)
        line += text[i] == '\n';
    for (size_t col = 0; col < m->column && text[i] && text[i] != '\n'; col++)
        do
            i++;
        while (((unsigned char)text[i] & 0xC0) == 0x80); /* continuation bytes */
    return i;
}

/* the train: mapping: its own text, padded to its position, to config.h */
static int read_train(Reader *rd, const yaml_node_t *v)
{
    size_t from = byte_of(rd->text, &v->start_mark), to = byte_of(rd->text, &v->end_mark);
    size_t pad = v->start_mark.line + v->start_mark.column;
    char *text = to >= from ? malloc(pad + (to - from) + 1) : NULL;
    if (!text)
        return err_fail(rd->err, rd->errlen, "%s: out of memory", rd->name);
    memset(text, '\n', v->start_mark.line);
    memset(text + v->start_mark.line, ' ', v->start_mark.column);
    memcpy(text + pad, rd->text + from, to - from);
    text[pad + (to - from)] = '\0';
    int rc = config_load_yaml_text(&rd->o->train, text, pad + (to - from), rd->name, rd->err,
                                   rd->errlen);
    free(text);
    return rc;
}

static int read_list(Reader *rd, const Key *k, const yaml_node_t *v)
{
    clear_list(rd->o, k);
    int i = 0;
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top;
         it++, i++) {
        yaml_node_t *n = yaml_document_get_node(rd->doc, *it);
        char msg[512];
        if (n->type != YAML_SCALAR_NODE)
            return err_fail(rd->err, rd->errlen, "%s:%d: %s: expected a list of scalars", rd->name,
                            line_of(n), k->name);
        if (set_item(rd->o, k, i, (const char *)n->data.scalar.value, msg, sizeof msg) != 0)
            return err_fail(rd->err, rd->errlen, "%s:%d: %s", rd->name, line_of(n), msg);
    }
    return 0;
}

static int read_value(Reader *rd, const char *key, const yaml_node_t *kn, const yaml_node_t *v)
{
    const Key *k = find_key(key);
    char msg[512];
    if (!k)
        return err_fail(rd->err, rd->errlen,
                        "%s:%d: unknown key \"%s\" (see `prefrun discover --help` for the keys)",
                        rd->name, line_of(kn), key);
    if (is_list(k) && v->type == YAML_SEQUENCE_NODE)
        return read_list(rd, k, v);
    if (v->type != YAML_SCALAR_NODE)
        return err_fail(rd->err, rd->errlen, "%s:%d: %s: expected %s", rd->name, line_of(v), key,
                        is_list(k) ? "a list" : "a scalar");
    bool quoted = v->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    if (quoted && k->type != K_STR && !is_list(k))
        return err_fail(rd->err, rd->errlen, "%s:%d: %s: expected an unquoted value", rd->name,
                        line_of(v), key);
    if (discover_set(rd->o, key, (const char *)v->data.scalar.value, msg, sizeof msg) != 0)
        return err_fail(rd->err, rd->errlen, "%s:%d: %s", rd->name, line_of(v), msg);
    return 0;
}

static int read_mapping(Reader *rd, const yaml_node_t *map, const char *prefix)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = yaml_document_get_node(rd->doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(rd->doc, p->value);
        if (kn->type != YAML_SCALAR_NODE)
            return err_fail(rd->err, rd->errlen, "%s:%d: a key must be a name", rd->name,
                            line_of(kn));
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *qn = yaml_document_get_node(rd->doc, q->key); /* scalar: checked */
            if (strcmp((const char *)qn->data.scalar.value, (const char *)kn->data.scalar.value) ==
                0)
                return err_fail(rd->err, rd->errlen, "%s:%d: duplicate key \"%s%s\"", rd->name,
                                line_of(kn), prefix, (const char *)kn->data.scalar.value);
        }
        const char *name = (const char *)kn->data.scalar.value;
        char key[128];
        snprintf(key, sizeof key, "%s%s", prefix, name);
        bool section = !prefix[0] && (strcmp(name, "llm") == 0 || strcmp(name, "command") == 0 ||
                                      strcmp(name, "evolve") == 0);
        int rc;
        if (!prefix[0] && strcmp(name, "train") == 0 && vn->type == YAML_MAPPING_NODE)
            rc = read_train(rd, vn);
        else if (section && vn->type == YAML_MAPPING_NODE)
            rc = read_mapping(rd, vn, strcat(key, "."));
        else
            rc = read_value(rd, key, kn, vn);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int read_document(Reader *rd, yaml_document_t *doc)
{
    yaml_node_t *root = yaml_document_get_root_node(doc);
    if (!root)
        return 0;
    if (root->type != YAML_MAPPING_NODE)
        return err_fail(rd->err, rd->errlen, "%s:%d: expected a mapping of key: value", rd->name,
                        line_of(root));
    rd->doc = doc;
    return read_mapping(rd, root, "");
}

int discover_load_yaml(DiscoverOptions *o, const char *path, char *err, size_t errlen)
{
    char *text;
    size_t len;
    if (fsutil_read_capped(path, CONFIG_YAML_CAP, &text, &len, err, errlen) != 0)
        return -1;
    if (config_yaml_depth_check(text, len, path, err, errlen) != 0) {
        free(text);
        return -1;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    DiscoverOptions work = *o; /* o changes only when the whole file is good */
    Reader rd = {.o = &work, .name = path, .text = text, .err = err, .errlen = errlen};
    int rc = -1;
    if (!yaml_parser_initialize(&parser)) {
        free(text);
        return err_fail(err, errlen, "%s: out of memory", path);
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        err_fail(err, errlen, "%s:%d:%d: invalid YAML: %s", path, (int)parser.problem_mark.line + 1,
                 (int)parser.problem_mark.column + 1,
                 parser.problem ? parser.problem : "syntax error");
    } else {
        rc = read_document(&rd, &doc);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    free(text);
    if (rc == 0)
        *o = work;
    return rc;
}

/* ---- checks ----------------------------------------------------------------------------- */

int discover_finalize(DiscoverOptions *o, char *err, size_t errlen)
{
    if (!o->out_dir[0])
        return err_fail(err, errlen, "discover: no output directory (--out DIR)");
    if (o->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o->workers = n > 0 ? (int)n : 1;
    }
    if (!o->propose.prompt_path[0])
        snprintf(o->propose.prompt_path, sizeof o->propose.prompt_path, "%s",
                 PREFRUN_SOURCE_ROOT "/lua/discover_prompt.md");
    if (o->n_fitness_seeds < 1)
        return err_fail(err, errlen, "fitness_seeds: at least one seed");
    if (o->propose.kind == PROPOSE_COMMAND && o->propose.argc < 1)
        return err_fail(err, errlen, "proposer command: set command.argv in the config");
    char msg[256];
    const FitnessKind *k = fitness_find(o->fitness, msg, sizeof msg);
    if (!k)
        return err_fail(err, errlen, "fitness: %s", msg);
    if (o->hurdle_steps < 0)
        o->hurdle_steps = k->hurdle_steps;
    if (isnan(o->hurdle_min))
        o->hurdle_min = k->hurdle_min;
    if (isnan(o->noise_sd))
        o->noise_sd = k->noise_sd;
    /* interim scores the held-out pairs of train:'s data; task has its own */
    if (k->fn == fitness_interim && o->train.eval_fraction <= 0 && !o->train.eval_file[0])
        return err_fail(err, errlen,
                        "train: the fitness needs held-out pairs (eval_fraction > 0 or "
                        "eval_file)");
    return config_finalize(&o->train, err, errlen);
}

double discover_noise_sd(const DiscoverOptions *o)
{
    if (!isnan(o->noise_sd))
        return o->noise_sd;
    const FitnessKind *k = fitness_find(o->fitness, NULL, 0);
    return k ? k->noise_sd : 0;
}

/* ---- writing ------------------------------------------------------------------------------ */

/* a YAML double-quoted string that reads back as the same text (util/text.h) */
static void put_string(FILE *f, const char *s)
{
    char q[8];
    fputc('"', f);
    for (size_t n = strlen(s), k; n; s += k, n -= k) {
        k = text_yaml_char(s, n, q);
        fputs(q, f);
    }
    fputc('"', f);
}

/* the shortest text that reads back as the same double */
static void put_double(FILE *f, double x)
{
    char buf[40];
    for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    fprintf(f, "%s\n", buf);
}

static void put_list(FILE *f, const DiscoverOptions *o, const Key *k)
{
    fputc('[', f);
    int n = k->type == K_NAMES  ? o->n_seed_losses
            : k->type == K_ARGV ? o->propose.argc
                                : o->n_fitness_seeds;
    for (int i = 0; i < n; i++) {
        if (i)
            fputs(", ", f);
        if (k->type == K_SEEDS)
            fprintf(f, "%llu", (unsigned long long)o->fitness_seeds[i]);
        else
            put_string(f, k->type == K_NAMES ? o->seed_losses[i] : o->propose.argv[i]);
    }
    fputs("]\n", f);
}

/* a value below its key's range is "unset" (the fitness's default), not written */
static bool unset(const DiscoverOptions *o, const Key *k)
{
    const char *field = (const char *)o + k->off;
    return (k->type == K_INT && *(const int *)field < k->lo) ||
           (k->type == K_NUM && isnan(*(const double *)field));
}

static void put_key(FILE *f, const DiscoverOptions *o, const Key *k)
{
    const char *field = (const char *)o + k->off;
    if (unset(o, k))
        return;
    const char *dot = strchr(k->name, '.');
    fprintf(f, "%s%s: ", dot ? "  " : "", dot ? dot + 1 : k->name);
    switch (k->type) {
    case K_INT:
        fprintf(f, "%d\n", *(const int *)field);
        break;
    case K_U64:
        fprintf(f, "%llu\n", (unsigned long long)*(const uint64_t *)field);
        break;
    case K_NUM:
        put_double(f, *(const double *)field);
        break;
    case K_BOOL:
        fputs(*(const bool *)field ? "true\n" : "false\n", f);
        break;
    case K_PROPOSER:
        fprintf(f, "%s\n", propose_kind_name(*(const ProposeKind *)field));
        break;
    case K_STR:
        put_string(f, field);
        fputc('\n', f);
        break;
    default:
        put_list(f, o, k);
    }
}

static void put_train(FILE *f, const Config *c)
{
    char *t = config_to_yaml(c);
    fputs("train:\n", f);
    for (char *line = t; line && *line;) {
        size_t n = strcspn(line, "\n");
        if (line[0] != '#' && n > 0)
            fprintf(f, "  %.*s\n", (int)n, line);
        line += n + (line[n] == '\n');
    }
    free(t);
}

char *discover_to_yaml(const DiscoverOptions *o)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    fputs("# prefrun discover settings (`prefrun discover --config` reads this back)\n", f);
    char section[32] = "";
    for (int i = 0; i < N_KEYS; i++) {
        const char *dot = strchr(keys[i].name, '.');
        int sl = dot ? (int)(dot - keys[i].name) : 0;
        if (dot && ((int)strlen(section) != sl || strncmp(section, keys[i].name, sl) != 0)) {
            snprintf(section, sizeof section, "%.*s", sl, keys[i].name);
            fprintf(f, "%s:\n", section);
        }
        put_key(f, o, &keys[i]);
    }
    put_train(f, &o->train);
    fclose(f);
    return out;
}

/* for --help: the keys and what they mean */
void discover_print_keys(FILE *f)
{
    for (int i = 0; i < N_KEYS; i++)
        fprintf(f, "  %-22s %s\n", keys[i].name, keys[i].help);
    fprintf(f, "  %-22s %s\n", "train", "a mapping of `prefrun train` keys (width, layers, ...)");
}
