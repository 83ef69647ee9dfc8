/*
 * tokenizer/added.c — added tokens (tokenizer.json's added_tokens): found in
 * the text before normalization and pre-tokenization, as Hugging Face's
 * AddedVocabulary does.
 *
 * Tokens marked normalized are looked for in the normalized text (with their
 * content normalized alike), the others in the raw text. Matching is
 * leftmost-longest and does not overlap; a match is then
 *   - skipped when the token is special and specials are not recognised
 *     (HF's encode_special_tokens), or when it is single_word and a word
 *     character touches it on either side; the search resumes after it;
 *   - widened over the whitespace before it (lstrip; not past the previous
 *     match) and after it (rstrip); the search resumes after the widening.
 * Word and space characters are those of the Rust regex crate that HF uses
 * here (\w, \s): see is_word and is_space.
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "util/errmsg.h"
#include "util/text.h"

/* Unicode White_Space */
static bool is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Rust's \w: Alphabetic, Mark, Decimal_Number, Connector_Punctuation,
 * Join_Control. Alphabetic is taken as the letters, Nl, and the circled and
 * squared Latin letters (its Other_Alphabetic symbols); the rest of
 * Other_Alphabetic is marks, already in. */
static bool is_word(uint32_t c)
{
    if (c == 0x200C || c == 0x200D || (c >= 0x24B6 && c <= 0x24E9) ||
        (c >= 0x1F130 && c <= 0x1F149) || (c >= 0x1F150 && c <= 0x1F169) ||
        (c >= 0x1F170 && c <= 0x1F189))
        return true;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_MC:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
        return true;
    default:
        return false;
    }
}

/* The character at s[i] (valid UTF-8 assumed), its length in *k. */
static uint32_t char_at(const char *s, size_t n, size_t i, size_t *k)
{
    utf8proc_int32_t c = 0;
    utf8proc_ssize_t m =
        utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
    *k = m > 0 ? (size_t)m : 1;
    return m > 0 ? (uint32_t)c : 0xFFFD;
}

/* Where the character ending at s[i - 1] starts. */
static size_t char_before(const char *s, size_t i)
{
    do
        i--;
    while (i > 0 && ((uint8_t)s[i] & 0xC0) == 0x80);
    return i;
}

static bool word_before(const char *s, size_t n, size_t i)
{
    size_t k;
    return i > 0 && is_word(char_at(s, n, char_before(s, i), &k));
}

static bool word_after(const char *s, size_t n, size_t i)
{
    size_t k;
    return i < n && is_word(char_at(s, n, i, &k));
}

/* Start of the whitespace that ends at i. */
static size_t spaces_before(const char *s, size_t n, size_t i)
{
    size_t k;
    while (i > 0 && is_space(char_at(s, n, char_before(s, i), &k)))
        i = char_before(s, i);
    return i;
}

/* End of the whitespace that starts at i. */
static size_t spaces_after(const char *s, size_t n, size_t i)
{
    size_t k;
    while (i < n && is_space(char_at(s, n, i, &k)))
        i += k;
    return i;
}

int tok_added_add(TokAdded *a, const TokAddedToken *t, const char *content, char *err,
                  size_t errlen)
{
    int32_t old;
    int rc = tok_strmap_put(&a->by_content, content, t->len, t->id, &old);
    if (rc < 0)
        return err_fail(err, errlen, "out of memory");
    if (rc > 0 && old != t->id) {
        char shown[160];
        return err_fail(err, errlen, "\"%s\" is added twice, as %d and %d",
                        text_for_terminal(content, shown, sizeof shown), old, t->id);
    }
    if (rc > 0) { /* the same token again: the later flags win, as in HF */
        for (size_t i = 0; i < a->n; i++)
            if (a->v[i].id == t->id) {
                TokAddedToken keep = a->v[i];
                a->v[i] = *t;
                a->v[i].off = keep.off;
            }
        return 0;
    }
    if (a->n == TOK_MAX_ADDED)
        return err_fail(err, errlen, "more than %d added tokens", TOK_MAX_ADDED);
    if (a->n == a->cap) {
        size_t c = a->cap ? 2 * a->cap : 32;
        TokAddedToken *v = realloc(a->v, c * sizeof *v);
        if (!v)
            return err_fail(err, errlen, "out of memory");
        a->v = v;
        a->cap = c;
    }
    TokAddedToken e = *t;
    e.off = (uint32_t)a->text.n;
    if (tok_buf_append(&a->text, content, t->len))
        return err_fail(err, errlen, "out of memory");
    a->v[a->n++] = e;
    return 0;
}

/* What each token is matched as: its content, normalized when marked so. */
static int match_strings(TokAdded *a, const TokNormalizer *norm, char *err, size_t errlen)
{
    for (size_t i = 0; i < a->n; i++) {
        TokAddedToken *t = &a->v[i];
        char *out;
        size_t len;
        t->moff = t->off, t->mlen = t->len;
        if (!t->normalized || !norm)
            continue;
        /* a copy: normalizing may grow a->text under the content */
        char *content = malloc(t->len + 1);
        if (!content)
            return err_fail(err, errlen, "out of memory");
        memcpy(content, a->text.v + t->off, t->len);
        int rc = tok_normalize(norm, content, t->len, &out, &len, err, errlen);
        free(content);
        if (rc)
            return -1;
        if (out) {
            size_t off = a->text.n;
            rc = tok_buf_append(&a->text, out, len);
            free(out);
            if (rc)
                return err_fail(err, errlen, "out of memory");
            t->moff = (uint32_t)off, t->mlen = (uint32_t)len;
        }
    }
    return 0;
}

typedef struct SortKey {
    uint32_t bucket; /* set * 256 + first byte */
    uint32_t len, index;
} SortKey;

static int by_bucket_longest_first(const void *x, const void *y)
{
    const SortKey *a = x, *b = y;
    if (a->bucket != b->bucket)
        return a->bucket < b->bucket ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index;
}

int tok_added_finish(TokAdded *a, const TokNormalizer *norm, char *err, size_t errlen)
{
    if (match_strings(a, norm, err, errlen))
        return -1;
    SortKey *keys = malloc((a->n ? a->n : 1) * sizeof *keys);
    free(a->order);
    a->order = malloc((a->n ? a->n : 1) * sizeof *a->order);
    if (!keys || !a->order) {
        free(keys);
        return err_fail(err, errlen, "out of memory");
    }
    size_t m = 0;
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i].mlen) /* normalized to nothing: matches nowhere */
            keys[m++] = (SortKey){.bucket = (a->v[i].normalized ? 256u : 0u) +
                                            (uint8_t)a->text.v[a->v[i].moff],
                                  .len = a->v[i].mlen,
                                  .index = (uint32_t)i};
    qsort(keys, m, sizeof *keys, by_bucket_longest_first);
    size_t k = 0;
    for (uint32_t set = 0; set < 2; set++)
        for (uint32_t b = 0; b <= 256; b++) {
            while (k < m && keys[k].bucket < set * 256 + b)
                k++;
            a->first[set][b] = (uint32_t)k;
        }
    for (k = 0; k < m; k++)
        a->order[k] = keys[k].index;
    free(keys);
    return 0;
}

/* The leftmost-longest match at or after `pos`: its token, or NULL. */
static const TokAddedToken *find(const TokAdded *a, int set, const char *s, size_t n, size_t pos,
                                 size_t *at)
{
    for (size_t p = pos; p < n; p++) {
        uint8_t b = (uint8_t)s[p];
        for (uint32_t k = a->first[set][b]; k < a->first[set][b + 1]; k++) {
            const TokAddedToken *t = &a->v[a->order[k]];
            if (t->mlen <= n - p && !memcmp(s + p, a->text.v + t->moff, t->mlen)) {
                *at = p;
                return t;
            }
        }
    }
    return NULL;
}

int tok_added_split(const TokAdded *a, int set, bool with_special, const char *s, size_t n,
                    TokSegmentFn fn, void *ctx)
{
    size_t done = 0, pos = 0, st;
    const TokAddedToken *t;
    while (a->n && (t = find(a, set, s, n, pos, &st)) != NULL) {
        size_t en = st + t->mlen;
        pos = en;
        if (t->special && !with_special)
            continue;
        if (t->single_word && (word_before(s, n, st) || word_after(s, n, en)))
            continue;
        if (t->lstrip) {
            st = spaces_before(s, n, st);
            st = st > done ? st : done;
        }
        if (t->rstrip)
            pos = en = spaces_after(s, n, en);
        if (done < st && fn(ctx, -1, s + done, st - done))
            return -1;
        if (fn(ctx, t->id, s + st, en - st))
            return -1;
        done = en;
    }
    if (done < n && fn(ctx, -1, s + done, n - done))
        return -1;
    return 0;
}

void tok_added_free(TokAdded *a)
{
    free(a->v);
    free(a->text.v);
    free(a->order);
    tok_strmap_free(&a->by_content);
    memset(a, 0, sizeof *a);
}
