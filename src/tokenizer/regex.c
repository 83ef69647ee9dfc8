/*
 * tokenizer/regex.c — the patterns of tokenizer.json on PCRE2.
 *
 * Hugging Face compiles them with Oniguruma (Ruby syntax, Unicode), and a few
 * escapes mean other things there than in PCRE2 with PCRE2_UTF | PCRE2_UCP,
 * so a pattern is rewritten before it is compiled:
 *   \s  Oniguruma: U+0009..U+000D, U+0085 and Z (PCRE2's adds U+180E, a
 *       space before Unicode 6.3)
 *   \w  Oniguruma: Letter | Mark | Number | Connector_Punctuation (PCRE2's
 *       has no marks)
 *   \h  Oniguruma: a hex digit (PCRE2: horizontal space)
 *   \v  Oniguruma: the character U+000B (PCRE2: vertical space)
 *   \uHHHH  Oniguruma's code point escape -> \x{HHHH}
 * and what cannot be rewritten faithfully is refused, naming it: \S, \W, \H
 * inside a class, \b and \B (word boundaries of another \w), \Q, nested
 * classes and && intersections, and the options m and s ("(?m)" is dotall in
 * Ruby, multiline in PCRE2). ^ and $ are line anchors in Ruby: compiled with
 * PCRE2_MULTILINE and LF newlines. \d needs nothing: with PCRE2_UCP it is
 * Nd in both. Matches iterate as Oniguruma's find_iter: from the left, an
 * empty match right after a match skipped.
 */
#include "tokenizer/tokenizer_internal.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"

struct TokRegex {
    pcre2_code *code;
};

typedef struct Rewrite {
    const char *p;
    size_t n, i;
    bool in_class, class_start;
    TokBuf out;
} Rewrite;

static int emit(Rewrite *r, const char *s) { return tok_buf_append(&r->out, s, strlen(s)); }

static int refuse(char *err, size_t errlen, const Rewrite *r, const char *what)
{
    return err_fail(err, errlen, "pattern byte %zu: %s (Oniguruma and PCRE2 differ; refused)", r->i,
                    what);
}

/* One escape at p[i] == '\\'; advances r->i past it. */
static int rewrite_escape(Rewrite *r, char *err, size_t errlen)
{
    if (r->i + 1 >= r->n)
        return err_fail(err, errlen, "pattern ends with a backslash");
    char d = r->p[r->i + 1];
    const char *in = NULL, *out = NULL; /* the rewrite inside and outside a class */
    switch (d) {
    case 's':
        in = "\\x{09}-\\x{0D}\\x{85}\\p{Z}", out = "[\\x{09}-\\x{0D}\\x{85}\\p{Z}]";
        break;
    case 'S':
        out = "[^\\x{09}-\\x{0D}\\x{85}\\p{Z}]";
        break;
    case 'w':
        in = "\\p{L}\\p{M}\\p{N}\\p{Pc}", out = "[\\p{L}\\p{M}\\p{N}\\p{Pc}]";
        break;
    case 'W':
        out = "[^\\p{L}\\p{M}\\p{N}\\p{Pc}]";
        break;
    case 'h':
        in = "0-9a-fA-F", out = "[0-9a-fA-F]";
        break;
    case 'H':
        out = "[^0-9a-fA-F]";
        break;
    case 'v':
        in = out = "\\x{0B}";
        break;
    case 'b':
    case 'B':
        in = d == 'b' ? "\\x{08}" : NULL;
        break; /* a backspace in a class */
    case 'Q':
        return refuse(err, errlen, r, "\\Q quoting");
    case 'u': {
        char hex[16];
        if (r->i + 6 > r->n)
            return refuse(err, errlen, r, "a \\u escape without four hex digits");
        snprintf(hex, sizeof hex, "\\x{%.4s}", r->p + r->i + 2);
        for (int k = 0; k < 4; k++)
            if (!strchr("0123456789abcdefABCDEF", r->p[r->i + 2 + k]) || !r->p[r->i + 2 + k])
                return refuse(err, errlen, r, "a \\u escape without four hex digits");
        r->i += 6;
        r->class_start = false;
        return emit(r, hex);
    }
    default: { /* the same in both: copy the backslash and the whole character */
        size_t k = 2;
        while (r->i + k < r->n && ((uint8_t)r->p[r->i + k] & 0xC0) == 0x80)
            k++;
        int rc = tok_buf_append(&r->out, r->p + r->i, k);
        r->i += k;
        r->class_start = false;
        return rc;
    }
    }
    const char *use = r->in_class ? in : out;
    if (!use)
        return refuse(err, errlen, r,
                      d == 'b' || d == 'B' ? "a word boundary (\\b, \\B)"
                                           : "a negated class escape (\\S, \\W, \\H) in a class");
    r->i += 2;
    r->class_start = false;
    return emit(r, use);
}

/* "(?" + option letters + ':' or ')': refuse m and s, whose meanings swap. */
static int check_options(const Rewrite *r, char *err, size_t errlen)
{
    size_t j = r->i + 2;
    bool ms = false;
    while (j < r->n && strchr("imsx-", r->p[j]) && r->p[j]) {
        ms |= r->p[j] == 'm' || r->p[j] == 's';
        j++;
    }
    if (ms && j < r->n && (r->p[j] == ':' || r->p[j] == ')'))
        return refuse(err, errlen, r, "the inline option m or s");
    return 0;
}

static int rewrite_char(Rewrite *r, char *err, size_t errlen)
{
    char c = r->p[r->i];
    char next = r->i + 1 < r->n ? r->p[r->i + 1] : '\0';
    if (r->in_class) {
        if (c == '[')
            return refuse(err, errlen, r, "a nested class or POSIX bracket");
        if (c == '&' && next == '&')
            return refuse(err, errlen, r, "a class intersection (&&)");
        if (c == ']' && !r->class_start)
            r->in_class = false;
        r->class_start = c == '^' && r->class_start && r->p[r->i - 1] == '[';
    } else if (c == '[') {
        r->in_class = r->class_start = true;
    } else if (c == '(' && next == '?' && check_options(r, err, errlen)) {
        return -1;
    }
    r->i++;
    return tok_buf_append(&r->out, &c, 1);
}

/* The PCRE2 spelling of an Oniguruma pattern, in *out (malloc'ed). On
 * failure err holds the reason, or is empty when memory ran out. */
static int rewrite(const char *p, size_t n, TokBuf *out, char *err, size_t errlen)
{
    Rewrite r = {.p = p, .n = n};
    while (r.i < n) {
        if (p[r.i] == '\\' ? rewrite_escape(&r, err, errlen) : rewrite_char(&r, err, errlen)) {
            free(r.out.v);
            return -1;
        }
    }
    if (r.in_class) {
        free(r.out.v);
        return err_fail(err, errlen, "pattern: a class is not closed");
    }
    *out = r.out;
    return 0;
}

TokRegex *tok_regex_new(const char *pattern, size_t len, bool literal, char *err, size_t errlen)
{
    if (len > TOK_MAX_PATTERN_BYTES) {
        err_fail(err, errlen, "a pattern of %zu bytes (at most %d)", len, TOK_MAX_PATTERN_BYTES);
        return NULL;
    }
    TokBuf pat = {0};
    if (err && errlen)
        *err = '\0';
    if (literal ? tok_buf_append(&pat, pattern, len) : rewrite(pattern, len, &pat, err, errlen)) {
        if (err && errlen && !*err)
            err_fail(err, errlen, "out of memory");
        return NULL;
    }
    TokRegex *re = calloc(1, sizeof *re);
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!re || !cc || pcre2_set_newline(cc, PCRE2_NEWLINE_LF)) {
        err_fail(err, errlen, "out of memory");
        goto fail;
    }
    /* PCRE2_LITERAL admits no UCP or MULTILINE (nor needs them) */
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP | PCRE2_MULTILINE);
    int ec;
    PCRE2_SIZE eo;
    re->code = pcre2_compile((PCRE2_SPTR)(pat.v ? pat.v : ""), pat.n, opts, &ec, &eo, cc);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        err_fail(err, errlen, "pattern does not compile: %s (at byte %zu of PCRE2's spelling)",
                 (const char *)msg, (size_t)eo);
        goto fail;
    }
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE); /* no JIT: the interpreter, same results */
    pcre2_compile_context_free(cc);
    free(pat.v);
    return re;
fail:
    pcre2_compile_context_free(cc);
    free(pat.v);
    tok_regex_free(re);
    return NULL;
}

/* One search from `pos`; JIT's fixed stack can run out where the interpreter
 * (with its heap) does not. rc as pcre2_match. */
static int search(const TokRegex *re, const char *s, size_t n, size_t pos, pcre2_match_data *md)
{
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                         NULL);
    return rc;
}

int tok_regex_each(const TokRegex *re, const char *s, size_t n, TokMatchFn fn, void *ctx, char *err,
                   size_t errlen)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (!md)
        return err_fail(err, errlen, "out of memory");
    bool matched = false;
    size_t pos = 0, last_end = 0;
    int rc = 0;
    while (pos <= n) {
        int m = search(re, s ? s : "", n, pos, md);
        if (m == PCRE2_ERROR_NOMATCH)
            break;
        if (m < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(m, msg, sizeof msg);
            rc = err_fail(err, errlen, "pattern match failed: %s", (const char *)msg);
            break;
        }
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t st = ov[0], en = ov[1];
        if (en < st) { /* \K in a lookahead can do this */
            rc = err_fail(err, errlen, "pattern match ends before it starts (\\K?)");
            break;
        }
        if (st == en) { /* resume one character on */
            pos = en + 1;
            while (pos < n && ((uint8_t)s[pos] & 0xC0) == 0x80)
                pos++;
            if (matched && last_end == en)
                continue;
        } else
            pos = en;
        matched = true;
        last_end = en;
        if ((rc = fn(ctx, st, en)) != 0)
            break;
    }
    pcre2_match_data_free(md);
    return rc;
}

void tok_regex_free(TokRegex *re)
{
    if (!re)
        return;
    pcre2_code_free(re->code);
    free(re);
}
