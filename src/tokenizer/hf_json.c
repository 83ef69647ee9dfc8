/*
 * tokenizer/hf_json.c — Hugging Face's tokenizer.json: the BPE model (vocab,
 * merges as "a b" strings or ["a", "b"] pairs, ignore_merges), added_tokens,
 * and the normalizer, pre_tokenizer, post_processor and decoder sections
 * (parsed by normalize.c and pretokenize.c, the last two here).
 *
 * Refused, by name: a model other than BPE, BPE dropout (random by design),
 * a continuing_subword_prefix or end_of_word_suffix, a post-processor other
 * than ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing or a
 * Sequence of them, a decoder other than ByteLevel. Accepted and without
 * effect on ids: unk_token, fuse_unk and byte_fallback (every byte has a
 * token, so none is ever unknown), trim_offsets (offsets only), truncation
 * and padding (batch settings, which transformers turns off too).
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"

static int parse_vocab(Tokenizer *tok, json_t *vocab, char *err, size_t errlen)
{
    if (!json_is_object(vocab))
        return err_fail(err, errlen, "model.vocab: expected an object of token: id");
    if (json_object_size(vocab) > TOK_MAX_IDS)
        return err_fail(err, errlen, "model.vocab: %zu tokens (at most %d)",
                        json_object_size(vocab), TOK_MAX_IDS);
    if (tok_vocab_reserve(&tok->vocab, json_object_size(vocab)))
        return err_fail(err, errlen, "out of memory");
    const char *key;
    json_t *id;
    json_object_foreach(vocab, key, id)
    {
        if (!json_is_integer(id))
            return err_fail(err, errlen, "model.vocab: the id of \"%.64s\" is not an integer", key);
        if (tok_vocab_add_model(&tok->vocab, key, strlen(key), json_integer_value(id), err, errlen))
            return tok_err_prefix(err, errlen, "model.vocab");
    }
    return tok_vocab_finish_model(&tok->vocab, err, errlen)
               ? tok_err_prefix(err, errlen, "model.vocab")
               : 0;
}

/* One merge: "a b" (exactly one space, as HF's split(' ') wants two parts)
 * or ["a", "b"]. */
static int parse_merge(Tokenizer *tok, json_t *m, uint32_t rank, char *err, size_t errlen)
{
    const char *a, *b;
    size_t alen, blen;
    if (json_is_string(m)) {
        a = json_string_value(m);
        const char *sp = strchr(a, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return err_fail(err, errlen, "expected \"left right\" with one space");
        alen = (size_t)(sp - a);
        b = sp + 1;
        blen = strlen(b);
    } else if (json_is_array(m) && json_array_size(m) == 2 &&
               json_is_string(json_array_get(m, 0)) && json_is_string(json_array_get(m, 1))) {
        a = json_string_value(json_array_get(m, 0));
        alen = json_string_length(json_array_get(m, 0));
        b = json_string_value(json_array_get(m, 1));
        blen = json_string_length(json_array_get(m, 1));
    } else
        return err_fail(err, errlen, "expected \"left right\" or [\"left\", \"right\"]");
    return tok_merges_add(&tok->merges, &tok->vocab, a, alen, b, blen, rank, err, errlen);
}

static int parse_merges(Tokenizer *tok, json_t *merges, char *err, size_t errlen)
{
    if (!json_is_array(merges))
        return err_fail(err, errlen, "model.merges: expected an array");
    if (json_array_size(merges) > TOK_MAX_MERGES)
        return err_fail(err, errlen, "model.merges: %zu merges (at most %d)",
                        json_array_size(merges), TOK_MAX_MERGES);
    if (tok_merges_reserve(&tok->merges, json_array_size(merges)))
        return err_fail(err, errlen, "out of memory");
    size_t i;
    json_t *m;
    uint32_t rank = 0;
    json_array_foreach(merges, i, m)
    {
        /* HF drops "#version" lines before numbering the merges */
        if (json_is_string(m) && !strncmp(json_string_value(m), "#version", 8))
            continue;
        if (parse_merge(tok, m, rank++, err, errlen))
            return tok_err_prefix(err, errlen, "model.merges[%zu]", i);
    }
    return 0;
}

/* a field that must be null, absent, or the given harmless value */
static int only_empty_string(json_t *model, const char *key, char *err, size_t errlen)
{
    json_t *v = json_object_get(model, key);
    if (!v || json_is_null(v) || (json_is_string(v) && !*json_string_value(v)))
        return 0;
    return err_fail(err, errlen, "model.%s: not supported (only null or \"\")", key);
}

static int parse_model(Tokenizer *tok, json_t *model, char *err, size_t errlen)
{
    if (!json_is_object(model))
        return err_fail(err, errlen, "model: expected an object");
    json_t *type = json_object_get(model, "type");
    if (type && (!json_is_string(type) || strcmp(json_string_value(type), "BPE")))
        return err_fail(err, errlen, "model.type: \"%.64s\" is not supported (only BPE)",
                        json_is_string(type) ? json_string_value(type) : "?");
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) &&
        !(json_is_number(dropout) && json_number_value(dropout) == 0.0))
        return err_fail(err, errlen, "model.dropout: not supported (BPE dropout is random)");
    if (only_empty_string(model, "continuing_subword_prefix", err, errlen) ||
        only_empty_string(model, "end_of_word_suffix", err, errlen))
        return -1;
    json_t *im = json_object_get(model, "ignore_merges");
    if (im && !json_is_null(im) &&
        tok_json_bool(model, "ignore_merges", "model", true, &tok->ignore_merges, err, errlen))
        return -1;
    if (!json_object_get(model, "vocab") || !json_object_get(model, "merges"))
        return err_fail(err, errlen, "model: needs vocab and merges");
    if (parse_vocab(tok, json_object_get(model, "vocab"), err, errlen))
        return -1;
    return parse_merges(tok, json_object_get(model, "merges"), err, errlen);
}

int tok_parse_added_token(Tokenizer *tok, json_t *j, int64_t id, const char *where, char *err,
                          size_t errlen)
{
    const char *content = NULL;
    size_t len = 0;
    TokAddedToken t = {0};
    if (!json_is_object(j))
        return err_fail(err, errlen, "%s: expected an object", where);
    if (tok_json_str(j, "content", where, true, &content, &len, err, errlen) ||
        tok_json_bool(j, "special", where, false, &t.special, err, errlen))
        return -1;
    t.normalized = !t.special; /* the default of HF's AddedToken::from */
    if (tok_json_bool(j, "single_word", where, false, &t.single_word, err, errlen) ||
        tok_json_bool(j, "lstrip", where, false, &t.lstrip, err, errlen) ||
        tok_json_bool(j, "rstrip", where, false, &t.rstrip, err, errlen) ||
        tok_json_bool(j, "normalized", where, false, &t.normalized, err, errlen))
        return -1;
    if (id < 0 || id >= TOK_MAX_IDS)
        return err_fail(err, errlen, "%s.id: %lld is outside [0, %d)", where, (long long)id,
                        TOK_MAX_IDS);
    if (len == 0) /* HF ignores an empty added token */
        return 0;
    if (len > TOK_MAX_TOKEN_BYTES)
        return err_fail(err, errlen, "%s.content: %zu bytes (at most %d)", where, len,
                        TOK_MAX_TOKEN_BYTES);
    t.id = (int32_t)id;
    t.len = (uint32_t)len;
    if (tok_vocab_set_added(&tok->vocab, t.id, content, len, t.special, err, errlen) ||
        tok_added_add(&tok->added, &t, content, err, errlen))
        return tok_err_prefix(err, errlen, "%s", where);
    return 0;
}

static int parse_added(Tokenizer *tok, json_t *list, char *err, size_t errlen)
{
    if (!list || json_is_null(list))
        return 0;
    if (!json_is_array(list))
        return err_fail(err, errlen, "added_tokens: expected an array");
    if (json_array_size(list) > TOK_MAX_ADDED)
        return err_fail(err, errlen, "added_tokens: %zu tokens (at most %d)", json_array_size(list),
                        TOK_MAX_ADDED);
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t)
    {
        char where[64];
        snprintf(where, sizeof where, "added_tokens[%zu]", i);
        json_t *id = json_object_get(t, "id");
        if (!json_is_integer(id))
            return err_fail(err, errlen, "%s.id: expected an integer", where);
        if (tok_parse_added_token(tok, t, json_integer_value(id), where, err, errlen))
            return -1;
    }
    return 0;
}

/* ---- post_processor: the ids around one sequence (TOKENIZER_ADD_BOS_EOS) ---- */

typedef struct Wrap {
    TokIds pre, post;
} Wrap;

/* RobertaProcessing / BertProcessing: "cls": [token, id], "sep": [token, id] */
static int pair_id(json_t *p, const char *key, const char *where, int32_t *id, char *err,
                   size_t errlen)
{
    json_t *v = json_object_get(p, key);
    json_t *n = json_array_get(v, 1);
    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_integer(n) ||
        json_integer_value(n) < 0 || json_integer_value(n) >= TOK_MAX_IDS)
        return err_fail(err, errlen, "%s.%s: expected [token, id]", where, key);
    *id = (int32_t)json_integer_value(n);
    return 0;
}

/* TemplateProcessing's ids of one SpecialToken piece of "single" */
static int template_ids(json_t *p, json_t *piece, const char *where, TokIds *out, char *err,
                        size_t errlen)
{
    const char *name =
        json_string_value(json_object_get(json_object_get(piece, "SpecialToken"), "id"));
    json_t *ids = json_object_get(
        json_object_get(json_object_get(p, "special_tokens"), name ? name : ""), "ids");
    if (!name || !json_is_array(ids))
        return err_fail(err, errlen, "%s.single: a SpecialToken without its ids in special_tokens",
                        where);
    size_t i;
    json_t *id;
    json_array_foreach(ids, i, id)
    {
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= TOK_MAX_IDS)
            return err_fail(err, errlen, "%s.special_tokens.%.64s.ids: not ids", where, name);
        if (tok_ids_push(out, (int32_t)json_integer_value(id)))
            return err_fail(err, errlen, "out of memory");
    }
    return 0;
}

static int parse_template(json_t *p, const char *where, Wrap *w, char *err, size_t errlen)
{
    json_t *single = json_object_get(p, "single");
    if (!json_is_array(single))
        return err_fail(err, errlen, "%s.single: expected an array", where);
    bool seen_a = false;
    size_t i;
    json_t *piece;
    json_array_foreach(single, i, piece)
    {
        json_t *seq = json_object_get(piece, "Sequence");
        if (seq) {
            const char *id = json_string_value(json_object_get(seq, "id"));
            if (!id || strcmp(id, "A") || seen_a)
                return err_fail(err, errlen, "%s.single[%zu]: expected one Sequence \"A\"", where,
                                i);
            seen_a = true;
        } else if (template_ids(p, piece, where, seen_a ? &w->post : &w->pre, err, errlen))
            return -1;
    }
    if (!seen_a)
        return err_fail(err, errlen, "%s.single: no Sequence \"A\"", where);
    return 0;
}

static int parse_post(json_t *p, const char *where, int depth, Wrap *w, char *err, size_t errlen)
{
    if (!p || json_is_null(p))
        return 0;
    if (depth > TOK_MAX_STEPS)
        return err_fail(err, errlen, "%s: Sequences nested too deep", where);
    const char *type = tok_json_type(p, where, err, errlen);
    if (!type)
        return -1;
    if (!strcmp(type, "ByteLevel")) /* offsets only */
        return 0;
    if (!strcmp(type, "TemplateProcessing"))
        return parse_template(p, where, w, err, errlen);
    if (!strcmp(type, "RobertaProcessing") || !strcmp(type, "BertProcessing")) {
        int32_t cls, sep;
        if (pair_id(p, "cls", where, &cls, err, errlen) ||
            pair_id(p, "sep", where, &sep, err, errlen))
            return -1;
        if (tok_ids_push(&w->pre, cls) || tok_ids_push(&w->post, sep))
            return err_fail(err, errlen, "out of memory");
        return 0;
    }
    if (strcmp(type, "Sequence"))
        return err_fail(err, errlen,
                        "%s: post-processor \"%s\" is not supported (ByteLevel, "
                        "TemplateProcessing, RobertaProcessing, BertProcessing, Sequence)",
                        where, type);
    json_t *list = json_object_get(p, "processors");
    if (!json_is_array(list))
        return err_fail(err, errlen, "%s.processors: expected an array", where);
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        char sub[256];
        snprintf(sub, sizeof sub, "%s.processors[%zu]", where, i);
        /* each processor wraps what the previous ones made */
        Wrap inner = {0};
        int rc = parse_post(item, sub, depth + 1, &inner, err, errlen);
        for (size_t k = 0; !rc && k < w->pre.n; k++)
            rc = tok_ids_push(&inner.pre, w->pre.v[k]);
        for (size_t k = 0; !rc && k < inner.post.n; k++)
            rc = tok_ids_push(&w->post, inner.post.v[k]);
        free(w->pre.v);
        w->pre = inner.pre;
        free(inner.post.v);
        if (rc)
            return err && errlen && *err ? -1 : err_fail(err, errlen, "out of memory");
    }
    return 0;
}

static int parse_decoder(json_t *d, char *err, size_t errlen)
{
    if (!d || json_is_null(d))
        return err_fail(err, errlen, "decoder: none; a byte-level BPE needs a ByteLevel decoder");
    const char *type = tok_json_type(d, "decoder", err, errlen);
    if (!type)
        return -1;
    if (strcmp(type, "ByteLevel"))
        return err_fail(err, errlen, "decoder: \"%s\" is not supported (only ByteLevel)", type);
    return 0;
}

static int parse_root(Tokenizer *tok, json_t *root, char *err, size_t errlen)
{
    if (!json_is_object(root))
        return err_fail(err, errlen, "expected an object");
    json_t *version = json_object_get(root, "version");
    if (version && (!json_is_string(version) || strcmp(json_string_value(version), "1.0")))
        return err_fail(err, errlen, "version: expected \"1.0\"");
    Wrap w = {0};
    int rc = -1;
    if (!parse_model(tok, json_object_get(root, "model"), err, errlen) &&
        !tok_normalizer_parse(&tok->normalizer, json_object_get(root, "normalizer"), "normalizer",
                              0, err, errlen) &&
        !parse_added(tok, json_object_get(root, "added_tokens"), err, errlen) &&
        !tok_pre_parse(&tok->pre, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", 0, err,
                       errlen) &&
        !parse_post(json_object_get(root, "post_processor"), "post_processor", 0, &w, err,
                    errlen) &&
        !parse_decoder(json_object_get(root, "decoder"), err, errlen))
        rc = 0;
    tok->prefix = w.pre;
    tok->suffix = w.post;
    /* the post-processor names its ids by number: each must be a token */
    for (size_t i = 0; !rc && i < w.pre.n + w.post.n; i++) {
        int32_t id = i < w.pre.n ? w.pre.v[i] : w.post.v[i - w.pre.n];
        size_t k;
        if (!tokenizer_token_bytes(tok, id, &k))
            rc = err_fail(err, errlen, "post_processor: id %d is no token", id);
    }
    return rc;
}

int tok_load_hf_json(Tokenizer *tok, const char *path, char *err, size_t errlen)
{
    json_t *root = tok_json_load(path, TOK_CAP_TOKENIZER_JSON, "a tokenizer.json", err, errlen);
    if (!root)
        return -1;
    int rc = parse_root(tok, root, err, errlen);
    json_decref(root);
    return rc ? tok_err_prefix(err, errlen, "%s", path) : 0;
}
