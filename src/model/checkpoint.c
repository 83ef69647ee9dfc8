/*
 * model/checkpoint.c — trainer_state.json and the checkpoint directories of a
 * run (see checkpoint.h for the layout and the crash-safety argument); the
 * safetensors files themselves are safetensors.c's.
 */
#include "util/errmsg.h"
#include "model/checkpoint.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/fsutil.h"

/* ---- trainer_state.json ---- */

int ckpt_state_set(TrainerState *s, const char *name, double value)
{
    for (int i = 0; i < s->n_values; i++) {
        if (!strcmp(s->value_names[i], name)) {
            s->values[i] = value;
            return 0;
        }
    }
    if (s->n_values == CKPT_MAX_VALUES || strlen(name) >= CKPT_VALUE_NAME_LEN)
        return -1;
    snprintf(s->value_names[s->n_values], CKPT_VALUE_NAME_LEN, "%s", name);
    s->values[s->n_values++] = value;
    return 0;
}

double ckpt_state_get(const TrainerState *s, const char *name, double def)
{
    for (int i = 0; i < s->n_values; i++)
        if (!strcmp(s->value_names[i], name))
            return s->values[i];
    return def;
}

/* JSON has no NaN or infinity; those travel as strings */
static json_t *number_json(double x)
{
    if (isnan(x))
        return json_string("nan");
    if (isinf(x))
        return json_string(x > 0 ? "inf" : "-inf");
    return json_real(x);
}

static int number_from_json(const json_t *v, double *x)
{
    if (json_is_number(v)) {
        *x = json_number_value(v);
        return 0;
    }
    const char *s = json_string_value(v);
    if (!s)
        return -1;
    if (!strcmp(s, "nan"))
        *x = NAN;
    else if (!strcmp(s, "inf"))
        *x = INFINITY;
    else if (!strcmp(s, "-inf"))
        *x = -INFINITY;
    else
        return -1;
    return 0;
}

int ckpt_state_save(const char *path, const TrainerState *s, char *err, size_t errlen)
{
    char rng[4][17];
    for (int i = 0; i < 4; i++) /* hex: JSON integers are signed and may lose bits */
        snprintf(rng[i], sizeof rng[i], "%016" PRIx64, s->rng[i]);
    json_t *values = json_object();
    for (int i = 0; values && i < s->n_values; i++)
        json_object_set_new(values, s->value_names[i], number_json(s->values[i]));
    json_t *root = json_pack(
        "{s:s, s:I, s:I, s:I, s:[s,s,s,s], s:I, s:I, s:o}", "format", CKPT_STATE_FORMAT, "step",
        (json_int_t)s->step, "epoch", (json_int_t)s->epoch, "epoch_pos", (json_int_t)s->epoch_pos,
        "rng", rng[0], rng[1], rng[2], rng[3], "tokens_seen", (json_int_t)s->tokens_seen,
        "skipped_batches", (json_int_t)s->skipped_batches, "values", values);
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text)
        return err_fail(err, errlen, "cannot write %s: out of memory", path);
    size_t n = strlen(text);
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    int rc = -1;
    if (f) {
        fsutil_atomic_write(f, text, n);
        fsutil_atomic_write(f, "\n", 1);
        rc = fsutil_atomic_commit(f, err, errlen);
    }
    free(text);
    return rc;
}

static int get_int_field(const json_t *root, const char *key, int64_t *out, const char *path,
                         char *err, size_t errlen)
{
    const json_t *v = json_object_get(root, key);
    if (!json_is_integer(v))
        return err_fail(err, errlen, "%s: field \"%s\" is %s, expected an integer", path, key,
                        v ? "not an integer" : "missing");
    *out = json_integer_value(v);
    /* counters of a run: never negative, and far from where step + 1 or a
     * sum of tokens could overflow */
    if (*out < 0 || *out > CKPT_MAX_COUNT)
        return err_fail(err, errlen, "%s: field \"%s\" is %lld, expected 0 to %lld", path, key,
                        (long long)*out, (long long)CKPT_MAX_COUNT);
    return 0;
}

static int parse_state(const json_t *root, TrainerState *s, const char *path, char *err,
                       size_t errlen)
{
    if (!json_is_object(root))
        return err_fail(err, errlen, "%s: expected a JSON object", path);
    if (get_int_field(root, "step", &s->step, path, err, errlen) ||
        get_int_field(root, "epoch", &s->epoch, path, err, errlen) ||
        get_int_field(root, "epoch_pos", &s->epoch_pos, path, err, errlen) ||
        get_int_field(root, "tokens_seen", &s->tokens_seen, path, err, errlen) ||
        get_int_field(root, "skipped_batches", &s->skipped_batches, path, err, errlen))
        return -1;
    /* after the fields, whose own messages come first */
    const char *format = json_string_value(json_object_get(root, "format"));
    if (!format || strcmp(format, CKPT_STATE_FORMAT))
        return err_fail(err, errlen, "%s: format is %s%s%s, expected \"%s\"", path,
                        format ? "\"" : "", format ? format : "missing", format ? "\"" : "",
                        CKPT_STATE_FORMAT);
    const json_t *rng = json_object_get(root, "rng");
    for (int i = 0; i < 4; i++) {
        const char *h = json_string_value(json_array_get(rng, (size_t)i));
        char *end = NULL;
        if (h)
            s->rng[i] = strtoull(h, &end, 16);
        if (!json_is_array(rng) || json_array_size(rng) != 4 || !h || !*h || *end)
            return err_fail(err, errlen, "%s: field \"rng\" is not a list of 4 hex strings", path);
    }
    const json_t *values = json_object_get(root, "values"), *v;
    const char *name;
    if (values && !json_is_object(values))
        return err_fail(err, errlen, "%s: field \"values\" is not an object", path);
    json_object_foreach((json_t *)values, name, v)
    {
        double x;
        if (number_from_json(v, &x))
            return err_fail(err, errlen, "%s: value \"%s\" is not a number", path, name);
        if (ckpt_state_set(s, name, x))
            return err_fail(err, errlen, "%s: too many values, or name \"%s\" too long", path,
                            name);
    }
    return 0;
}

int ckpt_state_load(const char *path, TrainerState *s, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    char *text;
    size_t len;
    static const FsReadCap cap = {.bytes = (size_t)1 << 20, .kind = "a trainer state"};
    if (fsutil_read_capped(path, &cap, &text, &len, err, errlen))
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    free(text);
    if (!root)
        return err_fail(err, errlen, "%s:%d: invalid JSON: %s", path, jerr.line, jerr.text);
    int rc = parse_state(root, s, path, err, errlen);
    json_decref(root);
    return rc;
}

int ckpt_state_load_at(const char *dir, int64_t step, TrainerState *s, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_STATE_FILE);
    if (ckpt_state_load(path, s, err, errlen) != 0)
        return -1;
    if (s->step != step)
        return err_fail(err, errlen, "%s: step is %lld, but the checkpoint is of step %lld", path,
                        (long long)s->step, (long long)step);
    return 0;
}

/* ---- checkpoint directories ---- */

int ckpt_path(char *out, size_t cap, const char *run_dir, int64_t step, const char *file)
{
    int n = file ? snprintf(out, cap, "%s/checkpoint-%lld/%s", run_dir, (long long)step, file)
                 : snprintf(out, cap, "%s/checkpoint-%lld", run_dir, (long long)step);
    return n >= 0 && (size_t)n < cap ? 0 : -1;
}

static void partial_path(char *out, size_t cap, const char *run_dir, int64_t step)
{
    snprintf(out, cap, "%s/.checkpoint-%lld.partial", run_dir, (long long)step);
}

/* "checkpoint-<digits>" exactly; its step, or -1 */
static int64_t parse_ckpt_name(const char *name)
{
    if (strncmp(name, "checkpoint-", 11) || !isdigit((unsigned char)name[11]))
        return -1;
    char *end;
    errno = 0;
    long long s = strtoll(name + 11, &end, 10);
    return errno || *end ? -1 : (int64_t)s;
}

/* the checkpoint's weights: the model file, or a LoRA run's adapters */
static bool has_weights(const char *run_dir, int64_t step)
{
    char p[PATH_MAX], q[PATH_MAX];
    return (!ckpt_path(p, sizeof p, run_dir, step, CKPT_MODEL_FILE) && fsutil_exists(p)) ||
           (!ckpt_path(q, sizeof q, run_dir, step, CKPT_ADAPTER_FILE) && fsutil_exists(q));
}

static bool complete(const char *run_dir, int64_t step)
{
    char p[PATH_MAX];
    if (!has_weights(run_dir, step))
        return false;
    return !ckpt_path(p, sizeof p, run_dir, step, CKPT_STATE_FILE) && fsutil_exists(p);
}

/* Steps of the complete checkpoints, newest first; count in *n (malloc'ed). */
static int list_checkpoints(const char *run_dir, int64_t **steps, int *n, char *err, size_t errlen)
{
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(run_dir);
    if (!d)
        return err_fail(err, errlen, "cannot open %s: %s", run_dir, strerror(errno));
    int cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        int64_t s = parse_ckpt_name(de->d_name);
        if (s < 0 || !complete(run_dir, s))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *ns = realloc(*steps, (size_t)cap * sizeof *ns);
            if (!ns) {
                closedir(d);
                free(*steps);
                *steps = NULL;
                return err_fail(err, errlen, "out of memory");
            }
            *steps = ns;
        }
        (*steps)[(*n)++] = s;
    }
    closedir(d);
    for (int i = 1; i < *n; i++) /* insertion sort, descending: few entries */
        for (int j = i; j > 0 && (*steps)[j] > (*steps)[j - 1]; j--) {
            int64_t t = (*steps)[j];
            (*steps)[j] = (*steps)[j - 1];
            (*steps)[j - 1] = t;
        }
    return 0;
}

/* The step `latest` names, or -1 when it is missing or unreadable. */
static int64_t read_latest(const char *run_dir)
{
    char p[PATH_MAX], *text;
    size_t len;
    snprintf(p, sizeof p, "%s/latest", run_dir);
    static const FsReadCap cap = {.bytes = 64, .kind = "a latest pointer"};
    if (fsutil_read_capped(p, &cap, &text, &len, NULL, 0))
        return -1;
    while (len && isspace((unsigned char)text[len - 1]))
        text[--len] = '\0';
    int64_t s = parse_ckpt_name(text);
    free(text);
    return s;
}

/* Removes hidden leftovers of interrupted commits and prunes. */
static int clean_hidden(const char *run_dir, char *err, size_t errlen)
{
    DIR *d = opendir(run_dir);
    if (!d)
        return err_fail(err, errlen, "cannot open %s: %s", run_dir, strerror(errno));
    struct dirent *de;
    int rc = 0;
    while (!rc && (de = readdir(d))) {
        if (strncmp(de->d_name, ".checkpoint-", 12))
            continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", run_dir, de->d_name);
        rc = fsutil_remove_tree(p, err, errlen);
    }
    closedir(d);
    return rc;
}

int ckpt_begin(const char *run_dir, int64_t step, char *dir, size_t dirlen, char *err,
               size_t errlen)
{
    if (step < 0)
        return err_fail(err, errlen, "checkpoint step %lld is negative", (long long)step);
    if (fsutil_mkdirs(run_dir, err, errlen) || clean_hidden(run_dir, err, errlen))
        return -1;
    char p[PATH_MAX];
    partial_path(p, sizeof p, run_dir, step);
    if (strlen(p) + 32 >= dirlen || strlen(p) + 32 >= sizeof p)
        return err_fail(err, errlen, "%s: path too long", run_dir);
    if (fsutil_mkdirs(p, err, errlen))
        return -1;
    snprintf(dir, dirlen, "%s", p);
    return 0;
}

/* Puts the partial directory at final; an existing final is swapped out
 * atomically where the kernel can (renameat2 RENAME_EXCHANGE), so a
 * checkpoint of that step exists at every instant. */
static int publish(const char *partial, const char *final, const char *run_dir, int64_t step,
                   char *err, size_t errlen)
{
    if (!fsutil_is_dir(final)) {
        if (rename(partial, final) != 0)
            return err_fail(err, errlen, "cannot rename %s to %s: %s", partial, final,
                            strerror(errno));
        return 0;
    }
    if (renameat2(AT_FDCWD, partial, AT_FDCWD, final, RENAME_EXCHANGE) == 0)
        return fsutil_remove_tree(partial, err, errlen); /* now holds the old files */
    char old[PATH_MAX];
    snprintf(old, sizeof old, "%s/.checkpoint-%lld.deleting", run_dir, (long long)step);
    if (fsutil_remove_tree(old, err, errlen))
        return -1;
    if (rename(final, old) != 0 || rename(partial, final) != 0)
        return err_fail(err, errlen, "cannot replace %s: %s", final, strerror(errno));
    return fsutil_remove_tree(old, err, errlen);
}

int ckpt_commit(const char *run_dir, int64_t step, int keep_last, char *err, size_t errlen)
{
    char partial[PATH_MAX], final[PATH_MAX], p[PATH_MAX + 32];
    partial_path(partial, sizeof partial, run_dir, step);
    if (ckpt_path(final, sizeof final, run_dir, step, NULL))
        return err_fail(err, errlen, "%s: path too long", run_dir);
    char q[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/%s", partial, CKPT_MODEL_FILE);
    snprintf(q, sizeof q, "%s/%s", partial, CKPT_ADAPTER_FILE);
    if (!fsutil_exists(p) && !fsutil_exists(q))
        return err_fail(err, errlen, "checkpoint %s is incomplete: no %s (nor %s)", partial,
                        CKPT_MODEL_FILE, CKPT_ADAPTER_FILE);
    snprintf(p, sizeof p, "%s/%s", partial, CKPT_STATE_FILE);
    if (!fsutil_exists(p))
        return err_fail(err, errlen, "checkpoint %s is incomplete: no %s", partial,
                        CKPT_STATE_FILE);
    if (fsutil_fsync_dir(partial, err, errlen) ||
        publish(partial, final, run_dir, step, err, errlen) ||
        fsutil_fsync_dir(run_dir, err, errlen))
        return -1;
    char text[64];
    int n = snprintf(text, sizeof text, "checkpoint-%lld\n", (long long)step);
    snprintf(p, sizeof p, "%s/latest", run_dir);
    if (fsutil_write_atomic(p, text, (size_t)n, err, errlen))
        return -1;
    return ckpt_prune(run_dir, keep_last, err, errlen);
}

int ckpt_find_latest(const char *run_dir, char *dir, size_t dirlen, int64_t *step, char *err,
                     size_t errlen)
{
    if (!fsutil_is_dir(run_dir)) {
        err_fail(err, errlen, "%s: no such run directory", run_dir);
        return 1;
    }
    int64_t s = read_latest(run_dir);
    if (s < 0 || !complete(run_dir, s)) { /* no pointer yet, or it was lost: scan */
        int64_t *steps;
        int n;
        if (list_checkpoints(run_dir, &steps, &n, err, errlen))
            return -1;
        s = n ? steps[0] : -1;
        free(steps);
    }
    if (s < 0) {
        err_fail(err, errlen, "%s: no complete checkpoint", run_dir);
        return 1;
    }
    if (ckpt_path(dir, dirlen, run_dir, s, NULL))
        return err_fail(err, errlen, "%s: path too long", run_dir);
    *step = s;
    return 0;
}

int ckpt_prune(const char *run_dir, int keep_last, char *err, size_t errlen)
{
    if (keep_last <= 0)
        return 0;
    int64_t *steps, latest = read_latest(run_dir);
    int n, rc = 0;
    if (list_checkpoints(run_dir, &steps, &n, err, errlen))
        return -1;
    for (int i = keep_last; i < n && !rc; i++) {
        if (steps[i] == latest)
            continue;
        char from[PATH_MAX], to[PATH_MAX];
        ckpt_path(from, sizeof from, run_dir, steps[i], NULL);
        snprintf(to, sizeof to, "%s/.checkpoint-%lld.deleting", run_dir, (long long)steps[i]);
        /* hide it first, so a crash mid-removal never leaves a half checkpoint in view */
        if (rename(from, to) != 0)
            rc = err_fail(err, errlen, "cannot remove %s: %s", from, strerror(errno));
        else
            rc = fsutil_remove_tree(to, err, errlen);
    }
    free(steps);
    return rc;
}
