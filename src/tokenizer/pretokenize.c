/*
 * tokenizer/pretokenize.c — tokenizer.json's pre_tokenizer: the text cut into
 * the pieces that the BPE merges one by one.
 *
 * Steps run in order over the list of pieces, as Hugging Face's
 * PreTokenizedString::split does: a Split cuts every piece by its pattern
 * (the matches and the stretches between them, flipped by `invert`) and
 * keeps, drops or glues the parts by its `behavior`; ByteLevel prepends a
 * space to a piece that lacks one (add_prefix_space) and cuts it by GPT-2's
 * pattern (use_regex). Empty pieces are dropped after every step.
 *
 * Pieces are raw bytes here. ByteLevel's other job, spelling each byte as a
 * character of GPT-2's alphabet, is left to the BPE, which starts from the
 * byte's token (vocab.c); so ByteLevel must be the last step, a Split after
 * it (which would see the spelled characters) is refused, and so is any
 * other pre-tokenizer.
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"

/* openai/gpt-2's encoder.py, as Hugging Face's ByteLevel uses it */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct TokSplitPart {
    size_t start, end; /* in the piece */
    bool match;
};

/* ---- parsing ---- */

static int add_step(TokPreTokenizer *p, TokPreStep st, const char *where, char *err, size_t errlen)
{
    if (p->n == TOK_MAX_STEPS) {
        tok_regex_free(st.re);
        return err_fail(err, errlen, "%s: more than %d pre-tokenizers", where, TOK_MAX_STEPS);
    }
    p->steps[p->n++] = st;
    return 0;
}

static int parse_byte_level(TokPreTokenizer *p, json_t *j, const char *where, char *err,
                            size_t errlen)
{
    bool prefix = false, trim = false, use_regex = true;
    /* trim_offsets moves offsets only, never ids */
    if (tok_json_bool(j, "add_prefix_space", where, true, &prefix, err, errlen) ||
        tok_json_bool(j, "trim_offsets", where, false, &trim, err, errlen) ||
        tok_json_bool(j, "use_regex", where, false, &use_regex, err, errlen))
        return -1;
    TokPreStep st = {.byte_level = true, .add_prefix_space = prefix};
    if (use_regex &&
        !(st.re = tok_regex_new(gpt2_pattern, strlen(gpt2_pattern), false, err, errlen)))
        return tok_err_prefix(err, errlen, "%s", where);
    return add_step(p, st, where, err, errlen);
}

static const struct {
    const char *name;
    TokSplitBehavior b;
} behaviors[] = {
    {"Removed", TOK_SPLIT_REMOVED},
    {"Isolated", TOK_SPLIT_ISOLATED},
    {"MergedWithPrevious", TOK_SPLIT_MERGED_WITH_PREVIOUS},
    {"MergedWithNext", TOK_SPLIT_MERGED_WITH_NEXT},
    {"Contiguous", TOK_SPLIT_CONTIGUOUS},
};

static int parse_split(TokPreTokenizer *p, json_t *j, const char *where, char *err, size_t errlen)
{
    const char *bname = NULL;
    bool invert = false;
    if (tok_json_str(j, "behavior", where, true, &bname, NULL, err, errlen) ||
        tok_json_bool(j, "invert", where, true, &invert, err, errlen))
        return -1;
    TokPreStep st = {.invert = invert, .behavior = TOK_SPLIT_ISOLATED};
    size_t k = 0, nb = sizeof behaviors / sizeof behaviors[0];
    while (k < nb && strcmp(bname, behaviors[k].name))
        k++;
    if (k == nb)
        return err_fail(err, errlen, "%s.behavior: \"%s\" is not a split behavior", where, bname);
    st.behavior = behaviors[k].b;
    json_t *pat = json_object_get(j, "pattern");
    json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
    if (!json_is_object(pat) || json_object_size(pat) != 1 || !json_is_string(re ? re : lit))
        return err_fail(err, errlen, "%s.pattern: expected {\"Regex\": ...} or {\"String\": ...}",
                        where);
    json_t *s = re ? re : lit;
    if (!(st.re = tok_regex_new(json_string_value(s), json_string_length(s), !re, err, errlen)))
        return tok_err_prefix(err, errlen, "%s.pattern", where);
    return add_step(p, st, where, err, errlen);
}

static int parse_any(TokPreTokenizer *p, json_t *j, const char *where, int depth, char *err,
                     size_t errlen)
{
    if (depth > TOK_MAX_STEPS)
        return err_fail(err, errlen, "%s: Sequences nested too deep", where);
    const char *type = tok_json_type(j, where, err, errlen);
    if (!type)
        return -1;
    if (!strcmp(type, "ByteLevel"))
        return parse_byte_level(p, j, where, err, errlen);
    if (!strcmp(type, "Split"))
        return parse_split(p, j, where, err, errlen);
    if (strcmp(type, "Sequence"))
        return err_fail(err, errlen,
                        "%s: pre-tokenizer \"%s\" is not supported (Split, ByteLevel, Sequence)",
                        where, type);
    json_t *list = json_object_get(j, "pretokenizers");
    if (!json_is_array(list))
        return err_fail(err, errlen, "%s.pretokenizers: expected an array", where);
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        char sub[256];
        snprintf(sub, sizeof sub, "%s.pretokenizers[%zu]", where, i);
        if (parse_any(p, item, sub, depth + 1, err, errlen))
            return -1;
    }
    return 0;
}

int tok_pre_parse(TokPreTokenizer *p, json_t *j, const char *where, int depth, char *err,
                  size_t errlen)
{
    if (!j || json_is_null(j))
        return err_fail(err, errlen, "%s: none; a byte-level BPE needs a ByteLevel pre-tokenizer",
                        where);
    if (parse_any(p, j, where, depth, err, errlen))
        return -1;
    for (int i = 0; i < p->n; i++)
        if (p->steps[i].byte_level && i != p->n - 1)
            return err_fail(err, errlen, "%s: a pre-tokenizer after ByteLevel is not supported",
                            where);
    if (p->n == 0 || !p->steps[p->n - 1].byte_level)
        return err_fail(err, errlen, "%s: no ByteLevel; a byte-level BPE needs one", where);
    return 0;
}

int tok_pre_gpt2(TokPreTokenizer *p, char *err, size_t errlen)
{
    TokPreStep st = {.byte_level = true};
    if (!(st.re = tok_regex_new(gpt2_pattern, strlen(gpt2_pattern), false, err, errlen)))
        return -1;
    return add_step(p, st, "pre_tokenizer", err, errlen);
}

void tok_pre_free(TokPreTokenizer *p)
{
    for (int i = 0; i < p->n; i++)
        tok_regex_free(p->steps[i].re);
    p->n = 0;
}

/* ---- running ---- */

static int grow_spans(TokSpan **v, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? 2 * *cap : 64;
    while (c < need)
        c *= 2;
    TokSpan *n = realloc(*v, c * sizeof *n);
    if (!n)
        return -1;
    *v = n;
    *cap = c;
    return 0;
}

typedef struct Run {
    TokPieces *p;
    size_t tmp_n;
    size_t last; /* Pattern::find_matches: where the previous match ended */
} Run;

static int push_tmp(Run *r, size_t off, size_t len)
{
    if (grow_spans(&r->p->tmp, &r->p->tmp_cap, r->tmp_n + 1))
        return -1;
    r->p->tmp[r->tmp_n++] = (TokSpan){off, len};
    return 0;
}

static int push_part(TokPieces *p, size_t start, size_t end, bool match)
{
    if (p->parts_n == p->parts_cap) {
        size_t c = p->parts_cap ? 2 * p->parts_cap : 64;
        struct TokSplitPart *n = realloc(p->parts, c * sizeof *n);
        if (!n)
            return -1;
        p->parts = n;
        p->parts_cap = c;
    }
    p->parts[p->parts_n++] = (struct TokSplitPart){start, end, match};
    return 0;
}

/* A match, and the stretch before it that did not match. */
static int on_match(void *ctx, size_t start, size_t end)
{
    Run *r = ctx;
    if (r->last != start && push_part(r->p, r->last, start, false))
        return -1;
    r->last = end;
    return push_part(r->p, start, end, true);
}

/* The parts of piece s[0..n): matches and gaps, covering it. */
static int find_parts(Run *r, const TokRegex *re, bool invert, const char *s, size_t n, char *err,
                      size_t errlen)
{
    r->p->parts_n = 0;
    r->last = 0;
    if (tok_regex_each(re, s, n, on_match, r, err, errlen))
        return -1;
    if (r->last != n && push_part(r->p, r->last, n, false))
        return -1;
    for (size_t i = 0; invert && i < r->p->parts_n; i++)
        r->p->parts[i].match = !r->p->parts[i].match;
    return 0;
}

/* Hugging Face's NormalizedString::split: the parts of the piece at `off`
 * kept, dropped or glued by `b`, appended to tmp; empty results dropped. */
static int fold_parts(Run *r, size_t off, TokSplitBehavior b)
{
    size_t first = r->tmp_n, np = r->p->parts_n;
    bool prev_match = false;
    for (size_t k = 0; k < np; k++) {
        const struct TokSplitPart *q =
            &r->p->parts[b == TOK_SPLIT_MERGED_WITH_NEXT ? np - 1 - k : k];
        TokSpan *last = r->tmp_n > first ? &r->p->tmp[r->tmp_n - 1] : NULL;
        bool glue = false;
        if (b == TOK_SPLIT_CONTIGUOUS)
            glue = q->match == prev_match;
        else if (b == TOK_SPLIT_MERGED_WITH_PREVIOUS || b == TOK_SPLIT_MERGED_WITH_NEXT)
            glue = q->match && !prev_match;
        prev_match = q->match;
        if (glue && last && b == TOK_SPLIT_MERGED_WITH_NEXT) {
            last->len += last->off - (off + q->start);
            last->off = off + q->start;
        } else if (glue && last) {
            last->len = off + q->end - last->off;
        } else if (!(b == TOK_SPLIT_REMOVED && q->match) &&
                   push_tmp(r, off + q->start, q->end - q->start))
            return -1;
    }
    if (b == TOK_SPLIT_MERGED_WITH_NEXT)
        for (size_t i = first, j = r->tmp_n; i + 1 < j; i++, j--) {
            TokSpan t = r->p->tmp[i];
            r->p->tmp[i] = r->p->tmp[j - 1];
            r->p->tmp[j - 1] = t;
        }
    size_t w = first;
    for (size_t i = first; i < r->tmp_n; i++)
        if (r->p->tmp[i].len)
            r->p->tmp[w++] = r->p->tmp[i];
    r->tmp_n = w;
    return 0;
}

/* ByteLevel's prefix space: the piece copied after a space at the end of
 * the text buffer (pieces hold offsets, so the buffer may move). */
static int prefix_space(TokPieces *p, TokSpan *sp)
{
    if (sp->len && p->text.v[sp->off] == ' ')
        return 0;
    char *copy = malloc(sp->len + 1);
    if (!copy)
        return -1;
    copy[0] = ' ';
    memcpy(copy + 1, p->text.v + sp->off, sp->len);
    size_t off = p->text.n;
    int rc = tok_buf_append(&p->text, copy, sp->len + 1);
    free(copy);
    *sp = (TokSpan){off, sp->len + 1};
    return rc;
}

static int run_step(const TokPreStep *st, TokPieces *p, char *err, size_t errlen)
{
    Run r = {.p = p};
    for (size_t i = 0; i < p->n; i++) {
        TokSpan sp = p->v[i];
        if (st->byte_level && st->add_prefix_space && prefix_space(p, &sp))
            return err_fail(err, errlen, "out of memory");
        if (!st->re) {
            if (push_tmp(&r, sp.off, sp.len))
                return err_fail(err, errlen, "out of memory");
            continue;
        }
        if (find_parts(&r, st->re, st->invert, p->text.v + sp.off, sp.len, err, errlen))
            return -1;
        if (fold_parts(&r, sp.off, st->byte_level ? TOK_SPLIT_ISOLATED : st->behavior))
            return err_fail(err, errlen, "out of memory");
    }
    TokSpan *t = p->v;
    size_t c = p->cap;
    p->v = p->tmp, p->cap = p->tmp_cap, p->n = r.tmp_n;
    p->tmp = t, p->tmp_cap = c;
    return 0;
}

int tok_pretokenize(const TokPreTokenizer *pre, const char *s, size_t n, TokPieces *p, char *err,
                    size_t errlen)
{
    p->text.n = 0;
    p->n = 0;
    if (n == 0)
        return 0;
    if (tok_buf_append(&p->text, s, n) || grow_spans(&p->v, &p->cap, 1))
        return err_fail(err, errlen, "out of memory");
    p->v[0] = (TokSpan){0, n};
    p->n = 1;
    for (int i = 0; i < pre->n; i++)
        if (run_step(&pre->steps[i], p, err, errlen))
            return -1;
    return 0;
}

void tok_pieces_free(TokPieces *p)
{
    free(p->text.v);
    free(p->v);
    free(p->tmp);
    free(p->parts);
    memset(p, 0, sizeof *p);
}
