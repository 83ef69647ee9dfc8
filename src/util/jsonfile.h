/*
 * util/jsonfile.h — a JSON file read under a cap (fsutil_read_capped), then
 * parsed by jansson: json_load_file would read a file of any size, or a
 * device, without a bound. And written atomically (fsutil_write_atomic):
 * json_dump_file would leave half a file behind a crash.
 *
 *     json_t *j = jsonfile_load("run/result.json", &cap, err, sizeof err);
 *     jsonfile_save("run/eval.json", j, err, sizeof err);
 */
#ifndef PREFRUN_JSONFILE_H
#define PREFRUN_JSONFILE_H

#include <jansson.h>
#include <stddef.h>

#include "util/fsutil.h"

/* The document, or NULL with "PATH: ..." or "PATH:LINE: ..." in err. */
json_t *jsonfile_load(const char *path, const FsReadCap *cap, char *err, size_t errlen);

/* j indented by 2, a final newline; 0 or -1 with "PATH: ..." in err. */
int jsonfile_save(const char *path, const json_t *j, char *err, size_t errlen);

#endif
