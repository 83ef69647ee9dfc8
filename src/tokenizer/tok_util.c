/*
 * tokenizer/tok_util.c — the small things every file of the folder uses:
 * growable id and byte arrays, and error messages that gain a prefix (the
 * file, then the key) on their way up.
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Grows *v (of *cap elements of `size` bytes) to hold `need`; doubling keeps
 * pushes amortised O(1). */
static int grow(void **v, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / size)
            return -1;
        c *= 2;
    }
    void *p = realloc(*v, c * size);
    if (!p)
        return -1;
    *v = p;
    *cap = c;
    return 0;
}

int tok_ids_push(TokIds *ids, int32_t id)
{
    if (grow((void **)&ids->v, &ids->cap, ids->n + 1, sizeof *ids->v))
        return -1;
    ids->v[ids->n++] = id;
    return 0;
}

int tok_buf_append(TokBuf *b, const void *data, size_t n)
{
    /* one spare byte keeps room for a terminating NUL */
    if (n > SIZE_MAX - b->n - 1 || grow((void **)&b->v, &b->cap, b->n + n + 1, 1))
        return -1;
    if (n)
        memcpy(b->v + b->n, data, n);
    b->n += n;
    b->v[b->n] = '\0';
    return 0;
}

int tok_err_prefix(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return -1;
    char prefix[512], rest[1024];
    snprintf(rest, sizeof rest, "%s", err);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "%s: %s", prefix, rest);
    return -1;
}
