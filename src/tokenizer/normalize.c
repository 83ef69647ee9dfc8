/*
 * tokenizer/normalize.c — tokenizer.json's normalizer: the Unicode
 * normalization forms (NFC, NFD, NFKC, NFKD, by utf8proc) and a Sequence of
 * them, applied in order. Any other normalizer (Lowercase, Replace, Strip,
 * Prepend, Precompiled, BertNormalizer, ...) is refused by name: applying
 * some of a file's normalizers would tokenize differently, silently.
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "util/errmsg.h"

static const struct {
    const char *name;
    TokNormForm form;
} forms[] = {{"NFC", TOK_NFC}, {"NFD", TOK_NFD}, {"NFKC", TOK_NFKC}, {"NFKD", TOK_NFKD}};

int tok_normalizer_parse(TokNormalizer *nz, json_t *j, const char *where, int depth, char *err,
                         size_t errlen)
{
    if (!j || json_is_null(j))
        return 0;
    if (depth > TOK_MAX_STEPS)
        return err_fail(err, errlen, "%s: Sequences nested too deep", where);
    const char *type = tok_json_type(j, where, err, errlen);
    if (!type)
        return -1;
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        if (strcmp(type, forms[i].name))
            continue;
        if (nz->n == TOK_MAX_STEPS)
            return err_fail(err, errlen, "%s: more than %d normalizers", where, TOK_MAX_STEPS);
        nz->steps[nz->n++] = forms[i].form;
        return 0;
    }
    if (strcmp(type, "Sequence"))
        return err_fail(err, errlen,
                        "%s: normalizer \"%s\" is not supported (NFC, NFD, NFKC, NFKD, Sequence)",
                        where, type);
    json_t *list = json_object_get(j, "normalizers");
    if (!json_is_array(list))
        return err_fail(err, errlen, "%s.normalizers: expected an array", where);
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        char sub[256];
        snprintf(sub, sizeof sub, "%s.normalizers[%zu]", where, i);
        if (tok_normalizer_parse(nz, item, sub, depth + 1, err, errlen))
            return -1;
    }
    return 0;
}

static utf8proc_option_t options(TokNormForm f)
{
    switch (f) {
    case TOK_NFC:
        return UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    case TOK_NFD:
        return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE;
    case TOK_NFKC:
        return UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    case TOK_NFKD:
        return UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    }
    return UTF8PROC_STABLE;
}

int tok_normalize(const TokNormalizer *nz, const char *s, size_t n, char **out, size_t *outlen,
                  char *err, size_t errlen)
{
    *out = NULL;
    *outlen = n;
    if (nz->n == 0)
        return 0;
    if (n > (size_t)PTRDIFF_MAX / 8) /* utf8proc sizes are ssize_t; decomposing grows text */
        return err_fail(err, errlen, "normalize: a text of %zu bytes is too long", n);
    char *cur = NULL;
    size_t len = n;
    for (int k = 0; k < nz->n; k++) {
        utf8proc_uint8_t *dst = NULL;
        /* without UTF8PROC_NULLTERM a NUL is an ordinary character */
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)(cur ? cur : s),
                                          (utf8proc_ssize_t)len, &dst, options(nz->steps[k]));
        free(cur);
        if (m < 0)
            return err_fail(err, errlen, "normalize: %s", utf8proc_errmsg(m));
        cur = (char *)dst;
        len = (size_t)m;
    }
    *out = cur;
    *outlen = len;
    return 0;
}
