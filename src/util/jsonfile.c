/*
 * util/jsonfile.c — jsonfile_load (jsonfile.h).
 */
#include "util/jsonfile.h"

#include <stdio.h>
#include <stdlib.h>

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
