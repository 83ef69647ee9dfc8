/*
 * util/jsonfile.c — jsonfile_load (jsonfile.h).
 */
#include "util/jsonfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *jsonfile_load(const char *path, const FsReadCap *cap, char *err, size_t errlen)
{
    char *text;
    size_t len;
    if (fsutil_read_capped(path, cap, &text, &len, err, errlen) != 0)
        return NULL;
    json_error_t je;
    json_t *j = json_loadb(text, len, 0, &je);
    free(text);
    if (!j && err && errlen)
        snprintf(err, errlen, "%s:%d: %s", path, je.line, je.text);
    return j;
}

int jsonfile_save(const char *path, const json_t *j, char *err, size_t errlen)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    if (!text) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps's NUL becomes the final newline */
    int rc = fsutil_write_atomic(path, text, len + 1, err, errlen);
    free(text);
    return rc;
}
