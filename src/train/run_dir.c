/*
 * train/run_dir.c — run_dir_holds_run and run_dir_check (run_dir.h).
 *
 * The tree rule is checked on the path as the kernel sees it (realpath of
 * the part that exists), so a relative path, a `..` or a symlink cannot
 * hide a run the directory would be inside.
 */
#include "train/run_dir.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "util/errmsg.h"
#include "util/fsutil.h"

static bool has(const char *dir, const char *name)
{
    char p[PATH_MAX];
    return snprintf(p, sizeof p, "%s/%s", dir, name) < (int)sizeof p && fsutil_exists(p);
}

/* `latest` as ckpt_commit writes it: "checkpoint-<digits>\n" (a file named
 * latest that says anything else is not a run's) */
static bool latest_names_checkpoint(const char *dir)
{
    char p[PATH_MAX], *text;
    size_t len;
    static const FsReadCap cap = {.bytes = 64, .kind = "a latest pointer"};
    snprintf(p, sizeof p, "%s/latest", dir);
    if (!fsutil_exists(p) || fsutil_read_capped(p, &cap, &text, &len, NULL, 0) != 0)
        return false;
    size_t i = strncmp(text, "checkpoint-", 11) == 0 ? 11 : len;
    bool digits = i < len && isdigit((unsigned char)text[i]);
    while (i < len && isdigit((unsigned char)text[i]))
        i++;
    bool ok = digits && (i == len || (text[i] == '\n' && i + 1 == len));
    free(text);
    return ok;
}

static bool has_checkpoint(const char *dir, int64_t *step)
{
    char ck[PATH_MAX];
    return ckpt_find_latest(dir, ck, sizeof ck, step, NULL, 0) == 0;
}

bool run_dir_holds_run(const char *dir)
{
    int64_t step;
    return (has(dir, "metrics.jsonl") && has(dir, CKPT_CONFIG_FILE)) ||
           latest_names_checkpoint(dir) || has_checkpoint(dir, &step);
}

/* path without its last component, in place ("a" -> ".", "/a" -> "/") */
static void cut_last(char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';
    char *slash = strrchr(path, '/');
    if (!slash)
        strcpy(path, ".");
    else if (slash == path)
        path[1] = '\0';
    else
        *slash = '\0';
}

/* dir resolved as far as it exists: *whole says whether all of it does
 * (else out is the nearest existing ancestor, where mkdir -p would start). */
static int resolve(const char *dir, char out[PATH_MAX], bool *whole, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return err_fail(err, errlen, "%s: path too long", dir);
    *whole = true;
    while (!realpath(buf, out)) {
        if (errno != ENOENT || !strcmp(buf, ".") || !strcmp(buf, "/"))
            return err_fail(err, errlen, "%s: %s", buf, strerror(errno));
        *whole = false;
        cut_last(buf);
    }
    return 0;
}

/* The nearest of `from` and its ancestors (resolved) that is a run
 * (want_run) or a checkpoint directory; into hit. */
static bool enclosing(const char *from, bool want_run, char hit[PATH_MAX])
{
    snprintf(hit, PATH_MAX, "%s", from);
    for (;;) {
        if (want_run ? run_dir_holds_run(hit) : has(hit, CKPT_STATE_FILE))
            return true;
        if (!strcmp(hit, "/"))
            return false;
        cut_last(hit);
    }
}

/* A run one level down in dir (a new run there would enclose it). */
static bool holds_runs_below(const char *dir, char hit[PATH_MAX])
{
    DIR *d = opendir(dir);
    struct dirent *de;
    bool found = false;
    while (d && !found && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        found = snprintf(hit, PATH_MAX, "%s/%s", dir, de->d_name) < PATH_MAX &&
                fsutil_is_dir(hit) && run_dir_holds_run(hit);
    }
    if (d)
        closedir(d);
    return found;
}

/* dir itself, when it exists: not a checkpoint; for a new run, no
 * checkpoints of its own nor runs inside it. */
static int check_target(const char *dir, bool resume, char *err, size_t errlen)
{
    char hit[PATH_MAX], ck[PATH_MAX];
    int64_t step;
    if (has(dir, CKPT_STATE_FILE))
        return err_fail(err, errlen,
                        "%s is a checkpoint directory (it holds %s), not a run directory", dir,
                        CKPT_STATE_FILE);
    if (resume)
        return 0;
    if (ckpt_find_latest(dir, ck, sizeof ck, &step, NULL, 0) == 0)
        return err_fail(err, errlen,
                        "%s already holds a run with checkpoints (the latest of step %lld); "
                        "continue it with --resume %s or choose another --out",
                        dir, (long long)step, dir);
    if (holds_runs_below(dir, hit))
        return err_fail(err, errlen,
                        "%s holds the run %s: a run in %s would have it inside its tree; choose "
                        "another --out",
                        dir, hit, dir);
    return 0;
}

int run_dir_check(const char *dir, bool resume, char *err, size_t errlen)
{
    char real[PATH_MAX], up[PATH_MAX], hit[PATH_MAX];
    bool whole = false;
    if (resolve(dir, real, &whole, err, errlen) != 0)
        return -1;
    snprintf(up, sizeof up, "%s", real);
    if (whole) /* the ancestors proper; else real is already one */
        cut_last(up);
    bool top = whole && !strcmp(real, "/");
    if (!top && enclosing(up, true, hit)) /* first: the run it would damage, by name */
        return err_fail(err, errlen,
                        "%s is inside the run %s: its checkpoints and files would mix with that "
                        "run's; choose a directory outside it",
                        dir, hit);
    if (!top && enclosing(up, false, hit))
        return err_fail(err, errlen, "%s is inside the checkpoint directory %s; choose another",
                        dir, hit);
    return whole ? check_target(dir, resume, err, errlen) : 0;
}
