/*
 * testfs.h — file helpers shared by the tests that compare run outputs.
 */
#ifndef PREFRUN_TESTFS_H
#define PREFRUN_TESTFS_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"

/* dir/name in one of 8 rotating buffers (a call's result lives for the next
 * seven calls: enough for the paths of one check) */
static inline const char *tfs_join(const char *dir, const char *name)
{
    static char path[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(path[k], sizeof path[k], "%s/%s", dir, name);
    return path[k];
}

/* A whole file, as fsutil_read_capped reads it, with the cap of a test
 * fixture: the library's own reads each have the cap of their kind. */
static inline int tfs_read(const char *path, char **data, size_t *len, char *err, size_t errlen)
{
    static const FsReadCap cap = {.bytes = (size_t)1 << 32, .kind = "a test file"};
    return fsutil_read_capped(path, &cap, data, len, err, errlen);
}

/* true when both files read and hold the same bytes */
static inline bool same_file(const char *a, const char *b)
{
    char *x, *y, err[256];
    size_t nx, ny;
    if (tfs_read(a, &x, &nx, err, sizeof err) != 0)
        return false;
    if (tfs_read(b, &y, &ny, err, sizeof err) != 0) {
        free(x);
        return false;
    }
    bool same = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

/* dir/metrics.jsonl's text without its tokens_per_sec values (a time, the
 * one thing two runs of the same config may differ in); NULL when it
 * cannot be read (malloc'ed) */
static inline char *tfs_metrics_text(const char *dir)
{
    char *text, err[256], path[4096 + 32];
    size_t len;
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    if (tfs_read(path, &text, &len, err, sizeof err) != 0)
        return NULL;
    for (char *p; (p = strstr(text, "\"tokens_per_sec\": "));) {
        char *end = strchr(p, ',');
        if (!end)
            break;
        memmove(p, end + 2, strlen(end + 2) + 1);
    }
    return text;
}

#endif
