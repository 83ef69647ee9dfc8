/*
 * train/data.c — TRL JSONL preference pairs (standard, implicit prompt,
 * conversational) to token ids (byte-level or the model's tokenizer),
 * truncation, batches and the per-epoch order (see data.h for the formats
 * and rules).
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
#include "tokenizer/chat_template.h"
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
    ChatFormat f;
    if (opt->chat_format && *opt->chat_format &&
        chat_format_parse(opt->chat_format, &f, err, errlen))
        return -1;
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

/* What a tokenizer pads with (data.h), or -1 with err set when it cannot
 * serve: no EOS, or a pad id the model cannot embed. */
static int32_t tokenizer_pad(const DataOptions *opt, char *err, size_t errlen)
{
    const Tokenizer *tok = opt->tokenizer;
    int32_t eos = tokenizer_eos_id(tok), pad = tokenizer_pad_id(tok);
    if (eos < 0)
        return err_fail(err, errlen,
                        "the tokenizer has no EOS token (tokenizer_config.json names no "
                        "eos_token): every response must end with one");
    pad = pad >= 0 ? pad : eos;
    if (opt->vocab > 0 && pad >= opt->vocab) /* padding goes through the embedding too */
        return err_fail(err, errlen,
                        "the tokenizer's pad token (id %d) is outside the model's vocabulary "
                        "of %d",
                        (int)pad, opt->vocab);
    return pad;
}

Dataset *data_new(const DataOptions *opt, const char *source, char *err, size_t errlen)
{
    if (data_options_check(opt, err, errlen))
        return NULL;
    int32_t pad = opt->tokenizer ? tokenizer_pad(opt, err, errlen) : DATA_TOK_EOT;
    if (pad < 0)
        return NULL;
    Dataset *ds = calloc(1, sizeof *ds);
    if (!ds) {
        err_fail(err, errlen, "out of memory");
        return NULL;
    }
    ds->pad_id = pad;
    ds->opt = *opt;
    /* the caller's strings are read while loading only (data.h) */
    ds->opt.chat_format = ds->opt.chat_template = ds->opt.bos_token = ds->opt.eos_token = NULL;
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

/* A pair's three token sequences before truncation: prompt, chosen,
 * rejected, each with its special tokens (data.h). */
typedef struct PairIds {
    int32_t *ids[3];
    size_t n[3];
} PairIds;

static const char *const field_names[3] = {"prompt", "chosen", "rejected"};

static void pair_ids_free(PairIds *p)
{
    for (int f = 0; f < 3; f++)
        free(p->ids[f]);
}

/* The byte tokenizer: [EOT] + bytes(prompt), bytes(response) + [EOT]. */
static int byte_ids(const char *const text[3], const size_t len[3], PairIds *out, const char *where,
                    char *err, size_t errlen)
{
    for (int f = 0; f < 3; f++) {
        if (!(out->ids[f] = malloc((len[f] + 1) * sizeof(int32_t))))
            return err_fail(err, errlen, "%s: out of memory", where);
        out->n[f] = len[f] + 1;
        data_tokenize(text[f], len[f], out->ids[f] + (f == 0));
        out->ids[f][f == 0 ? 0 : len[f]] = DATA_TOK_EOT;
    }
    return 0;
}

/* ids[0, *n) + [id], reallocated. */
static int append_id(int32_t **ids, size_t *n, int32_t id)
{
    int32_t *p = realloc(*ids, (*n + 1) * sizeof *p);
    if (!p)
        return -1;
    p[(*n)++] = id;
    *ids = p;
    return 0;
}

/* The model's tokenizer, as TRL's tokenize_row (data.h): each text encoded
 * with its special tokens recognised, EOS after each response unless it
 * ends with one, BOS for an empty prompt; every id within the vocabulary. */
static int tokenizer_ids(const Dataset *ds, const char *const text[3], const size_t len[3],
                         PairIds *out, const char *where, char *err, size_t errlen)
{
    const Tokenizer *tok = ds->opt.tokenizer;
    int32_t eos = tokenizer_eos_id(tok), bos = tokenizer_bos_id(tok);
    for (int f = 0; f < 3; f++) {
        char why[320];
        if (tokenizer_encode(tok, text[f], len[f], TOKENIZER_SPECIAL, &out->ids[f], &out->n[f], why,
                             sizeof why))
            return err_fail(err, errlen, "%s: field \"%s\": %s", where, field_names[f], why);
        size_t n = out->n[f];
        if (f == 0 && n == 0 && bos < 0)
            return err_fail(err, errlen,
                            "%s: the prompt is empty and the tokenizer has no BOS token to put "
                            "before the responses (their first token needs a position to be "
                            "predicted from): give the pair a prompt",
                            where);
        bool add = f == 0 ? n == 0 : n == 0 || out->ids[f][n - 1] != eos;
        if (add && append_id(&out->ids[f], &out->n[f], f == 0 ? bos : eos))
            return err_fail(err, errlen, "%s: out of memory", where);
        for (size_t j = 0; ds->opt.vocab > 0 && j < out->n[f]; j++)
            if (out->ids[f][j] >= ds->opt.vocab)
                return err_fail(err, errlen,
                                "%s: field \"%s\": token id %d is outside the model's vocabulary "
                                "of %d (is the tokenizer the model's?)",
                                where, field_names[f], (int)out->ids[f][j], ds->opt.vocab);
    }
    return 0;
}

typedef struct Cut {
    size_t p_start, p_len; /* prompt tokens kept: [p_start, p_start + p_len) */
    size_t c_len, r_len;   /* response tokens kept, from the start */
} Cut;

/* The truncation rule of data.h, on token counts with the special tokens. */
static Cut truncate_pair(const size_t n[3], const DataOptions *opt)
{
    size_t L = (size_t)opt->max_length, P = (size_t)opt->max_prompt_length;
    Cut c = {0, n[0], n[1], n[2]};
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

/* The cut pair appended to ds (its pool has room). */
static void store_pair(Dataset *ds, const PairIds *t, const Cut *c, int line)
{
    int32_t *out = ds->pool + ds->n_tokens;
    memcpy(out, t->ids[0] + c->p_start, c->p_len * sizeof *out);
    memcpy(out + c->p_len, t->ids[1], c->c_len * sizeof *out);
    memcpy(out + c->p_len + c->c_len, t->ids[2], c->r_len * sizeof *out);
    DataPair *p = &ds->pairs[ds->n++];
    p->off = ds->n_tokens;
    p->prompt_len = (int)c->p_len;
    p->chosen_len = (int)c->c_len;
    p->rejected_len = (int)c->r_len;
    p->line = line;
    p->truncated = c->p_start > 0 || c->c_len < t->n[1] || c->r_len < t->n[2];
    ds->n_truncated += p->truncated;
    ds->n_tokens += (int64_t)(c->p_len + c->c_len + c->r_len);
    int longest =
        p->prompt_len + (p->chosen_len > p->rejected_len ? p->chosen_len : p->rejected_len);
    if (longest > ds->max_seq_len)
        ds->max_seq_len = longest;
}

int data_add_pair(Dataset *ds, const char *prompt, size_t prompt_len, const char *chosen,
                  size_t chosen_len, const char *rejected, size_t rejected_len, int line,
                  const char *where, char *err, size_t errlen)
{
    if (chosen_len == 0 || rejected_len == 0)
        return err_fail(err, errlen, "%s: field \"%s\" is empty, expected a non-empty response",
                        where, chosen_len == 0 ? "chosen" : "rejected");
    const char *text[3] = {prompt, chosen, rejected};
    const size_t len[3] = {prompt_len, chosen_len, rejected_len};
    PairIds t = {{NULL}, {0}};
    int rc = ds->opt.tokenizer ? tokenizer_ids(ds, text, len, &t, where, err, errlen)
                               : byte_ids(text, len, &t, where, err, errlen);
    Cut c = {0};
    if (rc == 0) { /* every kept count is at most max_length: an int */
        c = truncate_pair(t.n, &ds->opt);
        if (reserve(ds, (int64_t)(c.p_len + c.c_len + c.r_len)))
            rc = err_fail(err, errlen, "%s: out of memory", where);
    }
    if (rc == 0)
        store_pair(ds, &t, &c, line);
    pair_ids_free(&t);
    return rc;
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
        return err_fail(err, errlen,
                        "%s: field \"%s\" is %s, expected a string (or, in the conversational "
                        "format, a list of {\"role\", \"content\"} messages)",
                        where, key, json_type_name(v));
    *s = json_string_value(v);
    *len = json_string_length(v);
    return 0;
}

/* ---- the three formats ---- */

#define PARSE_FATAL (-2) /* a parse_line result that skip_invalid does not skip */

/* One load: the dataset, the caller's options (with the chat fields) and the
 * chat template, resolved at the first conversational line. */
typedef struct Loader {
    Dataset *ds;
    const DataOptions *opt;
    const char *name;
    bool chat_ready;
    ChatTemplate chat;
    char *default_system; /* owned; the detected template's, or NULL */
} Loader;

/* TRL's is_conversational: a list whose first element is an object. */
static bool is_messages(const json_t *v)
{
    return json_is_array(v) && json_array_size(v) > 0 && json_is_object(json_array_get(v, 0));
}

/* Message i of field `key` into *m (strings point into the JSON). */
static int parse_message(const json_t *v, const char *key, size_t i, const char *where,
                         ChatMessage *m, char *err, size_t errlen)
{
    static const char want[] = "expected an object with string fields role and content";
    if (!json_is_object(v))
        return err_fail(err, errlen, "%s: field \"%s\" message %zu is %s, %s", where, key, i + 1,
                        json_type_name(v), want);
    const json_t *role = json_object_get(v, "role"), *content = json_object_get(v, "content");
    const char *missing = !role ? "role" : !content ? "content" : NULL;
    if (missing)
        return err_fail(err, errlen, "%s: field \"%s\" message %zu has no \"%s\" (%s)", where, key,
                        i + 1, missing, want);
    const json_t *bad = !json_is_string(role) ? role : !json_is_string(content) ? content : NULL;
    if (bad)
        return err_fail(err, errlen,
                        "%s: field \"%s\" message %zu: \"%s\" is %s, expected a string", where, key,
                        i + 1, bad == role ? "role" : "content", json_type_name(bad));
    if (strlen(json_string_value(role)) != json_string_length(role))
        return err_fail(err, errlen, "%s: field \"%s\" message %zu: \"role\" holds a NUL byte",
                        where, key, i + 1);
    *m = (ChatMessage){json_string_value(role), json_string_value(content),
                       json_string_length(content)};
    return 0;
}

/* Field `key` of obj as a non-empty list of messages: *out malloc'ed. */
static int messages_field(const json_t *obj, const char *key, const char *where, ChatMessage **out,
                          int *n, char *err, size_t errlen)
{
    *out = NULL;
    const json_t *v = json_object_get(obj, key);
    if (!v)
        return err_fail(err, errlen,
                        "%s: missing field \"%s\" (expected a list of {\"role\", "
                        "\"content\"} messages)",
                        where, key);
    if (!json_is_array(v))
        return err_fail(err, errlen,
                        "%s: field \"%s\" is %s, expected a list of {\"role\", "
                        "\"content\"} messages",
                        where, key, json_type_name(v));
    size_t k = json_array_size(v);
    if (k == 0)
        return err_fail(err, errlen,
                        "%s: field \"%s\" is an empty list, expected at least one "
                        "{\"role\", \"content\"} message",
                        where, key);
    if (k > INT_MAX / 4)
        return err_fail(err, errlen, "%s: field \"%s\" has %zu messages, too many", where, key, k);
    ChatMessage *m = malloc(k * sizeof *m);
    if (!m)
        return err_fail(err, errlen, "%s: out of memory", where);
    for (size_t i = 0; i < k; i++) {
        if (parse_message(json_array_get(v, i), key, i, where, &m[i], err, errlen)) {
            free(m);
            return -1;
        }
    }
    *out = m;
    *n = (int)k;
    return 0;
}

/* TRL's extract_prompt on strings (data.h): the prompt's length in bytes,
 * at a character boundary. Needs cl, rl >= 1. */
static size_t shared_prompt_len(const char *c, size_t cl, const char *r, size_t rl)
{
    size_t m = cl < rl ? cl : rl, i = 0;
    while (i < m && c[i] == r[i])
        i++;
    bool differ = i < m;
    if (!differ) /* no difference in the first m: the last common character goes */
        i = m - 1;
    while (i > 0 && ((unsigned char)c[i] & 0xC0) == 0x80) /* to its character's start */
        i--;
    if (differ && i > 0 && c[i - 1] == ' ')
        i--;
    return i;
}

/* The same on message lists: how many leading messages are equal, by TRL's rule. */
static size_t shared_prompt_messages(const json_t *c, const json_t *r)
{
    size_t m = json_array_size(c) < json_array_size(r) ? json_array_size(c) : json_array_size(r);
    for (size_t i = 0; i < m; i++)
        if (!json_equal(json_array_get(c, i), json_array_get(r, i)))
            return i;
    return m - 1;
}

/* Longest common prefix of a and b, at a character boundary of a. */
static size_t common_prefix(const char *a, size_t na, const char *b, size_t nb)
{
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i])
        i++;
    while (i > 0 && i < na && ((unsigned char)a[i] & 0xC0) == 0x80)
        i--;
    return i;
}

static bool starts_with(const char *s, size_t n, const char *p)
{
    size_t k = p ? strlen(p) : 0;
    return k > 0 && n >= k && memcmp(s, p, k) == 0;
}

/* s[0, *n) without a trailing eos text (when more than that text remains). */
static void drop_eos(const char *s, size_t *n, const char *eos)
{
    size_t k = eos ? strlen(eos) : 0;
    if (k > 0 && *n > k && memcmp(s + *n - k, eos, k) == 0)
        *n -= k;
}

/* The chat template of this load (data.h: chat_format, else detection). */
static int chat_setup(Loader *ld, const char *where, char *err, size_t errlen)
{
    if (ld->chat_ready)
        return 0;
    const DataOptions *o = ld->opt;
    /* with a tokenizer, what the options leave NULL is its config's */
    const TokenizerConfig *tc = o->tokenizer ? tokenizer_config(o->tokenizer) : NULL;
    const char *jinja = o->chat_template ? o->chat_template : tc ? tc->chat_template : NULL;
    const char *bos = o->bos_token ? o->bos_token : tc ? tc->bos_token : NULL;
    const char *eos = o->eos_token ? o->eos_token : tc ? tc->eos_token : NULL;
    char why[512];
    ChatFormat f;
    int rc;
    if (o->chat_format && *o->chat_format)
        rc = chat_format_parse(o->chat_format, &f, why, sizeof why);
    else if (jinja)
        rc = chat_format_detect(jinja, &f, &ld->default_system, why, sizeof why);
    else
        rc = err_fail(why, sizeof why,
                      "a conversational line needs a chat format: set chat_format to one "
                      "of " CHAT_FORMAT_NAMES ", or use a model whose tokenizer_config.json has a "
                      "chat_template");
    if (rc) {
        err_fail(err, errlen, "%s: %s", where, why);
        return PARSE_FATAL;
    }
    ld->chat = (ChatTemplate){f, bos, eos, ld->default_system};
    ld->chat_ready = true;
    return 0;
}

/* The prompt's text as TRL renders it: with the generation prompt after a
 * user message, continuing an assistant message. */
static int render_prompt(const Loader *ld, const ChatMessage *p, int np, const char *label,
                         const char *where, char **out, size_t *len, char *err, size_t errlen)
{
    char why[320];
    int rc;
    const char *last = p[np - 1].role;
    if (strcmp(last, "user") == 0)
        rc = chat_render(&ld->chat, p, np, true, out, len, why, sizeof why);
    else if (strcmp(last, "assistant") == 0)
        rc = chat_render_continue(&ld->chat, p, np, out, len, why, sizeof why);
    else
        rc = err_fail(why, sizeof why,
                      "the prompt's last message (message %d) has role \"%s\", expected user (a "
                      "reply follows) or assistant (the reply continues it)",
                      np, last);
    return rc ? err_fail(err, errlen, "%s: %s: %s", where, label, why) : 0;
}

/* render(p + c) into *out; labels name the list that message numbers count in. */
static int render_whole(const Loader *ld, const ChatMessage *p, int np, const ChatMessage *c,
                        int nc, const char *label, const char *where, char **out, size_t *len,
                        char *err, size_t errlen)
{
    ChatMessage *all = malloc((size_t)(np + nc) * sizeof *all);
    if (!all)
        return err_fail(err, errlen, "%s: out of memory", where);
    memcpy(all, p, (size_t)np * sizeof *all);
    memcpy(all + np, c, (size_t)nc * sizeof *all);
    char why[320];
    int rc = chat_render(&ld->chat, all, np + nc, false, out, len, why, sizeof why);
    free(all);
    return rc ? err_fail(err, errlen, "%s: %s: %s", where, label, why) : 0;
}

/* A conversational pair: the texts of data.h's rule, then data_add_pair. */
static int add_conversation(Loader *ld, const ChatMessage *p, int np, const ChatMessage *c, int nc,
                            const ChatMessage *r, int nr, bool implicit, int lineno,
                            const char *where, char *err, size_t errlen)
{
    int rc = chat_setup(ld, where, err, errlen);
    if (rc)
        return rc;
    char *pt = NULL, *ct = NULL, *rt = NULL;
    size_t pl, cl, rl;
    rc = render_prompt(ld, p, np, implicit ? "chosen" : "prompt", where, &pt, &pl, err, errlen);
    if (!rc)
        rc = render_whole(ld, p, np, c, nc, implicit ? "chosen" : "prompt + chosen", where, &ct,
                          &cl, err, errlen);
    if (!rc)
        rc = render_whole(ld, p, np, r, nr, implicit ? "rejected" : "prompt + rejected", where, &rt,
                          &rl, err, errlen);
    if (!rc) {
        pl = common_prefix(pt, pl, ct, cl);
        pl = common_prefix(pt, pl, rt, rl);
        size_t skip = 0, c_len = cl - pl, r_len = rl - pl;
        if (!ld->opt->tokenizer) { /* the byte tokenizer adds its own BOS and EOS (data.h) */
            skip = starts_with(pt, pl, ld->chat.bos) ? strlen(ld->chat.bos) : 0;
            drop_eos(ct + pl, &c_len, ld->chat.eos);
            drop_eos(rt + pl, &r_len, ld->chat.eos);
        }
        rc = data_add_pair(ld->ds, pt + skip, pl - skip, ct + pl, c_len, rt + pl, r_len, lineno,
                           where, err, errlen);
    }
    free(pt);
    free(ct);
    free(rt);
    return rc;
}

/* Explicit prompt, chosen and rejected message lists. */
static int parse_conversational(Loader *ld, const json_t *obj, int lineno, const char *where,
                                char *err, size_t errlen)
{
    ChatMessage *p = NULL, *c = NULL, *r = NULL;
    int np, nc, nr, rc = -1;
    if (!messages_field(obj, "prompt", where, &p, &np, err, errlen) &&
        !messages_field(obj, "chosen", where, &c, &nc, err, errlen) &&
        !messages_field(obj, "rejected", where, &r, &nr, err, errlen))
        rc = add_conversation(ld, p, np, c, nc, r, nr, false, lineno, where, err, errlen);
    free(p);
    free(c);
    free(r);
    return rc;
}

/* Implicit prompt on message lists: the shared first messages are the prompt. */
static int parse_implicit_messages(Loader *ld, const json_t *obj, int lineno, const char *where,
                                   char *err, size_t errlen)
{
    ChatMessage *c = NULL, *r = NULL;
    int nc, nr, rc = -1;
    if (!messages_field(obj, "chosen", where, &c, &nc, err, errlen) &&
        !messages_field(obj, "rejected", where, &r, &nr, err, errlen)) {
        int k = (int)shared_prompt_messages(json_object_get(obj, "chosen"),
                                            json_object_get(obj, "rejected"));
        if (k == 0)
            rc = err_fail(err, errlen,
                          "%s: chosen and rejected differ from their first message, expected a "
                          "shared prompt (their common first messages)",
                          where);
        else
            rc = add_conversation(ld, c, k, c + k, nc - k, r + k, nr - k, true, lineno, where, err,
                                  errlen);
    }
    free(c);
    free(r);
    return rc;
}

/* Implicit prompt: chosen and rejected strings or message lists, no usable prompt. */
static int parse_implicit(Loader *ld, const json_t *obj, int lineno, const char *where, char *err,
                          size_t errlen)
{
    const json_t *c = json_object_get(obj, "chosen"), *r = json_object_get(obj, "rejected");
    if (!c || !r)
        return err_fail(err, errlen,
                        "%s: missing field \"%s\" (expected an object with fields chosen and "
                        "rejected, and prompt unless it is their shared start)",
                        where, !c ? "chosen" : "rejected");
    if (json_is_array(c))
        return parse_implicit_messages(ld, obj, lineno, where, err, errlen);
    if (!json_is_string(c))
        return err_fail(err, errlen,
                        "%s: field \"chosen\" is %s, expected a string or a list of {\"role\", "
                        "\"content\"} messages",
                        where, json_type_name(c));
    if (!json_is_string(r))
        return err_fail(err, errlen, "%s: field \"rejected\" is %s, expected a string like chosen",
                        where, json_type_name(r));
    const char *cs = json_string_value(c), *rs = json_string_value(r);
    size_t cl = json_string_length(c), rl = json_string_length(r);
    if (cl == 0 || rl == 0) /* data_add_pair's message */
        return data_add_pair(ld->ds, "", 0, cs, cl, rs, rl, lineno, where, err, errlen);
    size_t k = shared_prompt_len(cs, cl, rs, rl);
    return data_add_pair(ld->ds, cs, k, cs + k, cl - k, rs + k, rl - k, lineno, where, err, errlen);
}

static int parse_standard(Loader *ld, const json_t *obj, int lineno, const char *where, char *err,
                          size_t errlen)
{
    const char *f[3];
    size_t n[3];
    if (string_field(obj, "prompt", where, &f[0], &n[0], err, errlen) ||
        string_field(obj, "chosen", where, &f[1], &n[1], err, errlen) ||
        string_field(obj, "rejected", where, &f[2], &n[2], err, errlen))
        return -1;
    return data_add_pair(ld->ds, f[0], n[0], f[1], n[1], f[2], n[2], lineno, where, err, errlen);
}

/* One non-blank line to a pair, in the format its fields' types say (data.h);
 * -1 (or PARSE_FATAL) with err naming FILE:LINE. */
static int parse_line(Loader *ld, const char *line, size_t len, int lineno, char *err,
                      size_t errlen)
{
    char where[300];
    snprintf(where, sizeof where, "%s:%d", ld->name, lineno);
    json_error_t jerr;
    /* duplicates would make "which chosen?" ambiguous; NUL is a valid byte of text */
    json_t *obj = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!obj)
        return err_fail(err, errlen, "%s: invalid JSON at column %d: %s", where, jerr.column,
                        jerr.text);
    int rc;
    const json_t *p = json_object_get(obj, "prompt"), *c = json_object_get(obj, "chosen");
    if (!json_is_object(obj))
        rc = err_fail(
            err, errlen,
            "%s: line is %s, expected a JSON object with string fields prompt, chosen, rejected",
            where, json_type_name(obj));
    else if (json_is_array(p) && (is_messages(p) || is_messages(c)))
        rc = parse_conversational(ld, obj, lineno, where, err, errlen);
    else if (!p || (json_is_string(p) && is_messages(c))) /* maybe_extract_prompt */
        rc = parse_implicit(ld, obj, lineno, where, err, errlen);
    else
        rc = parse_standard(ld, obj, lineno, where, err, errlen);
    json_decref(obj);
    return rc;
}

/* Every line of text into ld->ds; -1 on a line error that is not skipped. */
static int load_lines(Loader *ld, const char *text, size_t len, char *err, size_t errlen)
{
    Dataset *ds = ld->ds;
    const char *p = text, *end = text + len;
    char msg[1024];
    for (int lineno = 1; p < end; lineno++) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        int rc = blank(p, n) ? 1 : parse_line(ld, p, n, lineno, msg, sizeof msg);
        if (rc == 1) {
            ds->n_blank++;
        } else if (rc) {
            if (rc == PARSE_FATAL || !ld->opt->skip_invalid || strstr(msg, "out of memory"))
                return err_fail(err, errlen, "%s", msg);
            if (ds->n_skipped++ == 0)
                snprintf(ds->first_skip, sizeof ds->first_skip, "%.*s",
                         (int)sizeof ds->first_skip - 1, msg);
        }
        p += n + 1;
    }
    return 0;
}

Dataset *data_load_jsonl_text(const char *text, size_t len, const char *name,
                              const DataOptions *opt, char *err, size_t errlen)
{
    Dataset *ds = data_new(opt, name, err, errlen);
    if (!ds)
        return NULL;
    Loader ld = {.ds = ds, .opt = opt, .name = name};
    int rc = load_lines(&ld, text, len, err, errlen);
    free(ld.default_system);
    if (rc) {
        data_free(ds);
        return NULL;
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

/* One row: the sequence, padding, next-token targets on the response. */
static void fill_row(const Dataset *ds, int64_t i, bool rejected, const DataBatch *b, int row)
{
    const DataPair *p = &ds->pairs[i];
    int T = b->T;
    int32_t *ids = b->ids + (size_t)row * T, *tg = b->targets + (size_t)row * T;
    float *mk = b->mask + (size_t)row * T;
    int n = data_pair_sequence(ds, i, rejected, ids, T);
    for (int t = n; t < T; t++)
        ids[t] = ds->pad_id;
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
