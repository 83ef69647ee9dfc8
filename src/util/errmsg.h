/*
 * util/errmsg.h — the one way library code reports an error: format a message
 * into the caller's buffer (naming the file, line, field or argument, and
 * what was expected) and return -1. Callers return that value on.
 */
#ifndef PREFRUN_ERRMSG_H
#define PREFRUN_ERRMSG_H

#include <stddef.h>

/* writes the message when err is non-NULL and errlen > 0; always returns -1 */
int err_fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
