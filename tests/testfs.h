/*
 * testfs.h — file helpers shared by the tests that compare run outputs.
 */
#ifndef PREFRUN_TESTFS_H
#define PREFRUN_TESTFS_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"

/* true when both files read and hold the same bytes */
static inline bool same_file(const char *a, const char *b)
{
    char *x, *y, err[256];
    size_t nx, ny;
    if (fsutil_read_file(a, &x, &nx, err, sizeof err) != 0)
        return false;
    if (fsutil_read_file(b, &y, &ny, err, sizeof err) != 0) {
        free(x);
        return false;
    }
    bool same = nx == ny && memcmp(x, y, nx) == 0;
    free(x);
    free(y);
    return same;
}

#endif
