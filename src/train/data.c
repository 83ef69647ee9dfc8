/*
 * train/data.c — TRL JSONL preference pairs to byte-level token ids, truncation,
 * batches and the per-epoch order (see data.h for the formats and rules).
 *
 * Invariants: every pair's tokens are stored already truncated, so every
 * stored sequence is at most max_length long and its prompt is at least one
 * token (P >= 1), which means every response token has a position that
 * predicts it. A DataOrder's permutation depends only on (seed, epoch).
 */
#include "util/errmsg.h"
#include "train/data.h"

#include <ctype.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"
#include "core/rng.h"

int data_options_check(const DataOptions *opt, char *err, size_t errlen)
{
    if (opt->max_length < 2)
        return err_fail(err, errlen, "max_length is %d, expected at least 2", opt->max_length);
    if (opt->max_prompt_length < 1 || opt->max_prompt_length >= opt->max_length)
        return err_fail(
            err, errlen,
            "max_prompt_length is %d, expected 1 <= max_prompt_length < max_length (%d)",
            opt->max_prompt_length, opt->max_length);
    return 0;
}

/* ---- tokenizer ---- */

void data_tokenize(const char *bytes, size_t len, int32_t *out)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (unsigned char)bytes[i];
}

size_t data_detokenize(const int32_t *ids, int n, char *out, size_t cap)
{
    static const char eot[] = "<|endoftext|>";
    size_t need = 0;
    for (int i = 0; i < n; i++) {
        if (ids[i] >= 0 && ids[i] < 256) {
            if (need + 1 < cap)
                out[need] = (char)ids[i];
            need++;
        } else {
            for (const char *p = eot; *p; p++, need++)
                if (need + 1 < cap)
                    out[need] = *p;
        }
    }
    if (cap)
        out[need < cap ? need : cap - 1] = '\0';
    return need;
}

/* ---- dataset storage ---- */

Dataset *data_new(const DataOptions *opt, const char *source, char *err, size_t errlen)
{
    if (data_options_check(opt, err, errlen))
        return NULL;
    Dataset *ds = calloc(1, sizeof *ds);
    if (!ds) {
        err_fail(err, errlen, "out of memory");
        return NULL;
    }
    ds->opt = *opt;
    snprintf(ds->source, sizeof ds->source, "%s", source ? source : "");
    return ds;
}

void data_free(Dataset *ds)
{
    if (!ds)
        return;
    free(ds->pairs);
    free(ds->pool);
    free(ds);
}

static int reserve(Dataset *ds, int64_t more_tokens)
{
    if (ds->n == ds->pairs_cap) {
        int64_t cap = ds->pairs_cap ? ds->pairs_cap * 2 : 256;
        DataPair *p = realloc(ds->pairs, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        ds->pairs = p;
        ds->pairs_cap = cap;
    }
    if (ds->n_tokens + more_tokens > ds->pool_cap) {
        int64_t cap = ds->pool_cap ? ds->pool_cap : 4096;
        while (cap < ds->n_tokens + more_tokens)
            cap *= 2;
        int32_t *p = realloc(ds->pool, (size_t)cap * sizeof *p);
        if (!p)
            return -1;
        ds->pool = p;
        ds->pool_cap = cap;
    }
    return 0;
}

/* Token j of "[EOT] + bytes" (a prompt) or of "bytes + [EOT]" (a response). */
static int32_t prompt_tok(const char *s, size_t j)
{
    return j == 0 ? DATA_TOK_EOT : (unsigned char)s[j - 1];
}
static int32_t resp_tok(const char *s, size_t len, size_t j)
{
    return j < len ? (unsigned char)s[j] : DATA_TOK_EOT;
}

typedef struct Cut {
    size_t p_start, p_len; /* prompt tokens kept: [p_start, p_start + p_len) */
    size_t c_len, r_len;   /* response tokens kept, from the start */
} Cut;

/* The truncation rule of data.h, on token counts with the EOTs added. */
static Cut truncate_pair(size_t prompt_bytes, size_t chosen_bytes, size_t rejected_bytes,
                         const DataOptions *opt)
{
    size_t L = (size_t)opt->max_length, P = (size_t)opt->max_prompt_length;
    Cut c = {0, prompt_bytes + 1, chosen_bytes + 1, rejected_bytes + 1};
    size_t longer = c.c_len > c.r_len ? c.c_len : c.r_len;
    if (c.p_len + longer > L && c.p_len > P) { /* keep_end: the prompt's end */
        c.p_start = c.p_len - P;
        c.p_len = P;
    }
    if (c.p_len + longer > L) { /* then the responses' starts */
        size_t budget = L - c.p_len;
        if (c.c_len > budget)
            c.c_len = budget;
        if (c.r_len > budget)
            c.r_len = budget;
    }
    return c;
}

int data_add_pair(Dataset *ds, const char *prompt, size_t prompt_len, const char *chosen,
                  size_t chosen_len, const char *rejected, size_t rejected_len, int line,
                  const char *where, char *err, size_t errlen)
{
    if (chosen_len == 0 || rejected_len == 0)
        return err_fail(err, errlen, "%s: field \"%s\" is empty, expected a non-empty response",
                        where, chosen_len == 0 ? "chosen" : "rejected");
    Cut c = truncate_pair(prompt_len, chosen_len, rejected_len, &ds->opt);
    int64_t total = (int64_t)(c.p_len + c.c_len + c.r_len);
    if (reserve(ds, total))
        return err_fail(err, errlen, "%s: out of memory", where);
    int32_t *out = ds->pool + ds->n_tokens;
    for (size_t j = 0; j < c.p_len; j++)
        *out++ = prompt_tok(prompt, c.p_start + j);
    for (size_t j = 0; j < c.c_len; j++)
        *out++ = resp_tok(chosen, chosen_len, j);
    for (size_t j = 0; j < c.r_len; j++)
        *out++ = resp_tok(rejected, rejected_len, j);
    DataPair *p = &ds->pairs[ds->n++];
    p->off = ds->n_tokens;
    p->prompt_len = (int)c.p_len;
    p->chosen_len = (int)c.c_len;
    p->rejected_len = (int)c.r_len;
    p->line = line;
    p->truncated = c.p_start > 0 || c.c_len < chosen_len + 1 || c.r_len < rejected_len + 1;
    ds->n_truncated += p->truncated;
    ds->n_tokens += total;
    int longest =
        p->prompt_len + (p->chosen_len > p->rejected_len ? p->chosen_len : p->rejected_len);
    if (longest > ds->max_seq_len)
        ds->max_seq_len = longest;
    return 0;
}

/* ---- JSONL ---- */

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "a list";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    default:
        return "null";
    }
}

static bool blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)s[i]))
            return false;
    return true;
}

/* The string field `key` of obj, or -1 with a message naming where and key. */
static int string_field(const json_t *obj, const char *key, const char *where, const char **s,
                        size_t *len, char *err, size_t errlen)
{
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return err_fail(err, errlen,
                        "%s: missing field \"%s\" (expected an object with string fields prompt, "
                        "chosen, rejected)",
                        where, key);
    if (!json_is_string(v))
        return err_fail(
            err, errlen,
            "%s: field \"%s\" is %s, expected a string (the conversational format is not "
            "supported)",
            where, key, json_type_name(v));
    *s = json_string_value(v);
    *len = json_string_length(v);
    return 0;
}

/* One non-blank line to a pair; -1 with err naming FILE:LINE. */
static int parse_line(Dataset *ds, const char *line, size_t len, int lineno, const char *name,
                      char *err, size_t errlen)
{
    char where[300];
    snprintf(where, sizeof where, "%s:%d", name, lineno);
    json_error_t jerr;
    /* duplicates would make "which chosen?" ambiguous; NUL is a valid byte of text */
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!obj)
        return err_fail(err, errlen, "%s: invalid JSON at column %d: %s", where, jerr.column,
                        jerr.text);
    int rc = -1;
    const char *f[3];
    size_t n[3];
    if (!json_is_object(obj))
        err_fail(
            err, errlen,
            "%s: line is %s, expected a JSON object with string fields prompt, chosen, rejected",
            where, json_type_name(obj));
    else if (!string_field(obj, "prompt", where, &f[0], &n[0], err, errlen) &&
             !string_field(obj, "chosen", where, &f[1], &n[1], err, errlen) &&
             !string_field(obj, "rejected", where, &f[2], &n[2], err, errlen))
        rc = data_add_pair(ds, f[0], n[0], f[1], n[1], f[2], n[2], lineno, where, err, errlen);
    json_decref(obj);
    return rc;
}

Dataset *data_load_jsonl_text(const char *text, size_t len, const char *name,
                              const DataOptions *opt, char *err, size_t errlen)
{
    Dataset *ds = data_new(opt, name, err, errlen);
    if (!ds)
        return NULL;
    const char *p = text, *end = text + len;
    char msg[320];
    for (int lineno = 1; p < end; lineno++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        if (blank(p, n)) {
            ds->n_blank++;
        } else if (parse_line(ds, p, n, lineno, name, msg, sizeof msg)) {
            if (!opt->skip_invalid || strstr(msg, "out of memory")) {
                err_fail(err, errlen, "%s", msg);
                data_free(ds);
                return NULL;
            }
            if (ds->n_skipped++ == 0)
                snprintf(ds->first_skip, sizeof ds->first_skip, "%s", msg);
        }
        p += n + 1;
    }
    if (ds->n == 0) {
        if (ds->n_skipped)
            err_fail(err, errlen,
                     "%s: no valid preference pair (%lld malformed lines skipped; first: %s)", name,
                     (long long)ds->n_skipped, ds->first_skip);
        else
            err_fail(err, errlen,
                     "%s: no preference pairs (expected JSON lines with prompt, chosen, "
                     "rejected)",
                     name);
        data_free(ds);
        return NULL;
    }
    return ds;
}

Dataset *data_load_jsonl(const char *path, const DataOptions *opt, char *err, size_t errlen)
{
    if (data_options_check(opt, err, errlen))
        return NULL;
    char *text;
    size_t len;
    static const FsReadCap cap = {
        .bytes = DATA_MAX_FILE_BYTES, .kind = "a JSONL data file", .special = true};
    if (fsutil_read_capped(path, &cap, &text, &len, err, errlen))
        return NULL;
    Dataset *ds = data_load_jsonl_text(text, len, path, opt, err, errlen);
    free(text);
    return ds;
}

int data_pair_sequence(const Dataset *ds, int64_t i, bool rejected, int32_t *out, int cap)
{
    const DataPair *p = &ds->pairs[i];
    int resp = rejected ? p->rejected_len : p->chosen_len;
    if (p->prompt_len + resp > cap)
        return -1;
    const int32_t *src = ds->pool + p->off;
    memcpy(out, src, (size_t)p->prompt_len * sizeof *out);
    const int32_t *r = src + p->prompt_len + (rejected ? p->chosen_len : 0);
    memcpy(out + p->prompt_len, r, (size_t)resp * sizeof *out);
    return p->prompt_len + resp;
}

/* ---- split ---- */

static int copy_pair(Dataset *dst, const Dataset *src, int64_t i)
{
    const DataPair *p = &src->pairs[i];
    int64_t total = p->prompt_len + p->chosen_len + p->rejected_len;
    if (reserve(dst, total))
        return -1;
    memcpy(dst->pool + dst->n_tokens, src->pool + p->off, (size_t)total * sizeof(int32_t));
    DataPair *q = &dst->pairs[dst->n++];
    *q = *p;
    q->off = dst->n_tokens;
    dst->n_tokens += total;
    dst->n_truncated += p->truncated;
    int longest =
        p->prompt_len + (p->chosen_len > p->rejected_len ? p->chosen_len : p->rejected_len);
    if (longest > dst->max_seq_len)
        dst->max_seq_len = longest;
    return 0;
}

int data_split(const Dataset *ds, double fraction, uint64_t seed, Dataset **train,
               Dataset **heldout, char *err, size_t errlen)
{
    *train = *heldout = NULL;
    if (!(fraction >= 0.0 && fraction < 1.0))
        return err_fail(err, errlen, "eval fraction is %g, expected 0 <= fraction < 1", fraction);
    if (ds->n > INT32_MAX)
        return err_fail(err, errlen, "%s: too many pairs to split", ds->source);
    int64_t n_eval = llround(fraction * (double)ds->n);
    if (fraction > 0 && ds->n >= 2) { /* both sides non-empty */
        if (n_eval < 1)
            n_eval = 1;
        if (n_eval > ds->n - 1)
            n_eval = ds->n - 1;
    }
    if (ds->n < 2)
        n_eval = 0;
    int32_t *perm = malloc((size_t)(ds->n ? ds->n : 1) * sizeof *perm);
    bool *is_eval = calloc((size_t)(ds->n ? ds->n : 1), sizeof *is_eval);
    char src[300];
    snprintf(src, sizeof src, "%s (train split)", ds->source);
    Dataset *tr = data_new(&ds->opt, src, err, errlen);
    snprintf(src, sizeof src, "%s (held-out split)", ds->source);
    Dataset *ev = data_new(&ds->opt, src, err, errlen);
    int rc = perm && is_eval && tr && ev ? 0 : -1;
    if (rc == 0) {
        for (int64_t i = 0; i < ds->n; i++)
            perm[i] = (int32_t)i;
        Rng r;
        rng_seed(&r, seed);
        rng_shuffle(&r, perm, ds->n);
        for (int64_t i = 0; i < n_eval; i++)
            is_eval[perm[i]] = true;
        for (int64_t i = 0; i < ds->n && rc == 0; i++)
            rc = copy_pair(is_eval[i] ? ev : tr, ds, i);
    }
    free(perm);
    free(is_eval);
    if (rc) {
        data_free(tr);
        data_free(ev);
        return err_fail(err, errlen, "%s: out of memory while splitting", ds->source);
    }
    *train = tr;
    *heldout = ev;
    return 0;
}

/* ---- batches ---- */

DataBatch *data_batch_new(int cap_B, int T)
{
    if (cap_B < 1 || T < 2)
        return NULL;
    DataBatch *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    size_t rows = 2 * (size_t)cap_B, cells = rows * (size_t)T;
    b->cap_B = cap_B;
    b->T = T;
    b->ids = malloc(cells * sizeof *b->ids);
    b->targets = malloc(cells * sizeof *b->targets);
    b->mask = malloc(cells * sizeof *b->mask);
    b->resp_len = malloc(rows * sizeof *b->resp_len);
    b->seq_len = malloc(rows * sizeof *b->seq_len);
    b->index = malloc((size_t)cap_B * sizeof *b->index);
    if (!b->ids || !b->targets || !b->mask || !b->resp_len || !b->seq_len || !b->index) {
        data_batch_free(b);
        return NULL;
    }
    return b;
}

void data_batch_free(DataBatch *b)
{
    if (!b)
        return;
    free(b->ids);
    free(b->targets);
    free(b->mask);
    free(b->resp_len);
    free(b->seq_len);
    free(b->index);
    free(b);
}

/* One row: the sequence, EOT padding, next-token targets on the response. */
static void fill_row(const Dataset *ds, int64_t i, bool rejected, const DataBatch *b, int row)
{
    const DataPair *p = &ds->pairs[i];
    int T = b->T;
    int32_t *ids = b->ids + (size_t)row * T, *tg = b->targets + (size_t)row * T;
    float *mk = b->mask + (size_t)row * T;
    int n = data_pair_sequence(ds, i, rejected, ids, T);
    for (int t = n; t < T; t++)
        ids[t] = DATA_TOK_EOT;
    for (int t = 0; t < T; t++) {
        /* position t predicts token t + 1; only response tokens are scored */
        bool scored = t + 1 >= p->prompt_len && t + 1 < n;
        tg[t] = scored ? ids[t + 1] : -1;
        mk[t] = scored ? 1.0f : 0.0f;
    }
    b->seq_len[row] = n;
    b->resp_len[row] = n - p->prompt_len;
}

int data_batch_fill(const Dataset *ds, const int64_t *idx, int n, DataBatch *b, char *err,
                    size_t errlen)
{
    if (n < 1 || n > b->cap_B)
        return err_fail(err, errlen, "batch of %d pairs, expected 1..%d", n, b->cap_B);
    for (int k = 0; k < n; k++) {
        if (idx[k] < 0 || idx[k] >= ds->n)
            return err_fail(err, errlen, "%s: pair index %lld out of range (n = %lld)", ds->source,
                            (long long)idx[k], (long long)ds->n);
        const DataPair *p = &ds->pairs[idx[k]];
        int longest =
            p->prompt_len + (p->chosen_len > p->rejected_len ? p->chosen_len : p->rejected_len);
        if (longest > b->T)
            return err_fail(err, errlen,
                            "%s: pair %lld has %d tokens, more than the batch's T = %d", ds->source,
                            (long long)idx[k], longest, b->T);
    }
    b->B = n;
    for (int k = 0; k < n; k++) {
        b->index[k] = idx[k];
        fill_row(ds, idx[k], false, b, k);
        fill_row(ds, idx[k], true, b, n + k);
    }
    return 0;
}

int data_batch_fill_range(const Dataset *ds, int64_t start, int n, DataBatch *b, char *err,
                          size_t errlen)
{
    if (n < 1 || n > b->cap_B)
        return err_fail(err, errlen, "batch of %d pairs, expected 1..%d", n, b->cap_B);
    for (int k = 0; k < n; k++) /* b->index doubles as the index list: fill copies in place */
        b->index[k] = start + k;
    return data_batch_fill(ds, b->index, n, b, err, errlen);
}

/* ---- order ---- */

/* The permutation of an epoch: a function of (seed, epoch) only. */
static void order_perm(DataOrder *o)
{
    for (int64_t i = 0; i < o->n; i++)
        o->perm[i] = (int32_t)i;
    if (!o->shuffle)
        return;
    Rng r;
    rng_seed(&r, o->seed);
    uint64_t s = rng_u64(&r) ^ (0x9E3779B97F4A7C15ull * (uint64_t)(o->epoch + 1));
    rng_seed(&r, s);
    rng_shuffle(&r, o->perm, o->n);
}

int data_order_init(DataOrder *o, int64_t n, int batch_size, bool drop_last, bool shuffle,
                    uint64_t seed, char *err, size_t errlen)
{
    memset(o, 0, sizeof *o);
    if (n < 1 || n > INT32_MAX)
        return err_fail(err, errlen, "data order over %lld pairs, expected 1..%d", (long long)n,
                        INT32_MAX);
    if (batch_size < 1)
        return err_fail(err, errlen, "batch size %d, expected at least 1", batch_size);
    if (drop_last && n < batch_size)
        return err_fail(
            err, errlen,
            "%lld pairs are fewer than one batch of %d, and dataloader_drop_last drops it",
            (long long)n, batch_size);
    o->perm = malloc((size_t)n * sizeof *o->perm);
    if (!o->perm)
        return err_fail(err, errlen, "out of memory");
    o->n = n;
    o->batch_size = batch_size;
    o->drop_last = drop_last;
    o->shuffle = shuffle;
    o->seed = seed;
    order_perm(o);
    return 0;
}

void data_order_free(DataOrder *o)
{
    free(o->perm);
    o->perm = NULL;
}

int64_t data_order_batches_per_epoch(const DataOrder *o)
{
    return o->drop_last ? o->n / o->batch_size : (o->n + o->batch_size - 1) / o->batch_size;
}

int data_order_seek(DataOrder *o, int64_t epoch, int64_t pos, char *err, size_t errlen)
{
    if (epoch < 0 || pos < 0 || pos > o->n)
        return err_fail(err, errlen,
                        "data position epoch %lld, pair %lld is out of range (%lld pairs)",
                        (long long)epoch, (long long)pos, (long long)o->n);
    o->epoch = epoch;
    o->pos = pos;
    order_perm(o);
    return 0;
}

static bool epoch_done(const DataOrder *o)
{
    int64_t left = o->n - o->pos;
    return left <= 0 || (o->drop_last && left < o->batch_size);
}

int data_order_next(DataOrder *o, int64_t *idx)
{
    if (epoch_done(o)) {
        o->epoch++;
        o->pos = 0;
        order_perm(o);
    }
    int64_t left = o->n - o->pos;
    int k = left < o->batch_size ? (int)left : o->batch_size;
    for (int i = 0; i < k; i++)
        idx[i] = o->perm[o->pos + i];
    o->pos += k;
    return k;
}

int data_next_batch(const Dataset *ds, DataOrder *o, DataBatch *b, char *err, size_t errlen)
{
    if (o->n != ds->n)
        return err_fail(err, errlen, "%s: data order is over %lld pairs, the data set has %lld",
                        ds->source, (long long)o->n, (long long)ds->n);
    if (o->batch_size > b->cap_B)
        return err_fail(err, errlen, "batch size %d exceeds the batch buffer's %d", o->batch_size,
                        b->cap_B);
    int k = data_order_next(o, b->index);
    return data_batch_fill(ds, b->index, k, b, err, errlen);
}
