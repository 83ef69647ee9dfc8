/*
 * tokenizer/tokenizer.c — the Tokenizer as tokenizer.h shows it: loading a
 * folder or explicit files, encode (added tokens, then normalization, then
 * added tokens marked normalized, then pre-tokenization and the BPE of each
 * piece), decode, and the lookups.
 */
#include "tokenizer/tokenizer_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "util/errmsg.h"
#include "util/fsutil.h"

/* ---- loading ---- */

void tokenizer_free(Tokenizer *tok)
{
    if (!tok)
        return;
    tok_vocab_free(&tok->vocab);
    tok_merges_free(&tok->merges);
    tok_added_free(&tok->added);
    tok_pre_free(&tok->pre);
    free(tok->prefix.v);
    free(tok->suffix.v);
    for (int i = 0; i < 4; i++)
        free(tok->cfg_strings[i]);
    free(tok);
}

Tokenizer *tokenizer_load_files(const TokenizerFiles *f, char *err, size_t errlen)
{
    bool hf = f->tokenizer_json != NULL, gpt2 = f->vocab_json && f->merges_txt;
    if (hf == gpt2 || (hf && (f->vocab_json || f->merges_txt))) {
        err_fail(err, errlen, "tokenizer files: give tokenizer.json, or vocab.json and merges.txt");
        return NULL;
    }
    Tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok) {
        err_fail(err, errlen, "out of memory");
        return NULL;
    }
    tok->cfg.bos_id = tok->cfg.eos_id = tok->cfg.pad_id = -1;
    tok->cfg.add_bos_token = tok->cfg.add_eos_token = -1;
    int rc = hf ? tok_load_hf_json(tok, f->tokenizer_json, err, errlen)
                : tok_load_gpt2_files(tok, f->vocab_json, f->merges_txt, err, errlen);
    if (!rc)
        rc = tok_load_config(tok, f->config_json, f->chat_template_jinja, gpt2, err, errlen);
    if (!rc && tok_added_finish(&tok->added, &tok->normalizer, err, errlen))
        rc = tok_err_prefix(err, errlen, "added tokens");
    if (rc) {
        tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

/* dir/name when that file exists, in buf; else NULL */
static const char *in_dir(const char *dir, const char *name, char *buf, size_t len)
{
    if (snprintf(buf, len, "%s/%s", dir, name) >= (int)len || !fsutil_exists(buf))
        return NULL;
    return buf;
}

Tokenizer *tokenizer_load(const char *dir, char *err, size_t errlen)
{
    char tj[PATH_MAX], vj[PATH_MAX], mt[PATH_MAX], cj[PATH_MAX], ct[PATH_MAX];
    if (!fsutil_is_dir(dir)) {
        err_fail(err, errlen, "%s: not a directory (a tokenizer's folder)", dir);
        return NULL;
    }
    TokenizerFiles f = {
        .tokenizer_json = in_dir(dir, "tokenizer.json", tj, sizeof tj),
        .config_json = in_dir(dir, "tokenizer_config.json", cj, sizeof cj),
        .chat_template_jinja = in_dir(dir, "chat_template.jinja", ct, sizeof ct),
    };
    if (!f.tokenizer_json) {
        f.vocab_json = in_dir(dir, "vocab.json", vj, sizeof vj);
        if (!f.vocab_json)
            f.vocab_json = in_dir(dir, "encoder.json", vj, sizeof vj);
        f.merges_txt = in_dir(dir, "merges.txt", mt, sizeof mt);
        if (!f.merges_txt)
            f.merges_txt = in_dir(dir, "vocab.bpe", mt, sizeof mt);
        if (!f.vocab_json || !f.merges_txt) {
            err_fail(err, errlen,
                     "%s: no tokenizer.json, nor vocab.json (or encoder.json) with merges.txt "
                     "(or vocab.bpe)",
                     dir);
            return NULL;
        }
    }
    return tokenizer_load_files(&f, err, errlen);
}

/* ---- encode ---- */

typedef struct Encode {
    const Tokenizer *tok;
    bool special;
    TokIds ids;
    TokPieces pieces;
    TokBpeScratch bpe;
    char *err;
    size_t errlen;
} Encode;

static int oom(Encode *e) { return err_fail(e->err, e->errlen, "encode: out of memory"); }

/* A stretch of normalized text, or an added token found in it. */
static int on_normalized(void *ctx, int32_t id, const char *s, size_t n)
{
    Encode *e = ctx;
    if (id >= 0)
        return tok_ids_push(&e->ids, id) ? oom(e) : 0;
    if (tok_pretokenize(&e->tok->pre, s, n, &e->pieces, e->err, e->errlen))
        return tok_err_prefix(e->err, e->errlen, "encode: pre_tokenizer");
    for (size_t i = 0; i < e->pieces.n; i++) {
        const TokSpan *p = &e->pieces.v[i];
        if (tok_bpe_encode(&e->tok->vocab, &e->tok->merges, e->tok->ignore_merges,
                           e->pieces.text.v + p->off, p->len, &e->bpe, &e->ids))
            return oom(e);
    }
    return 0;
}

/* A stretch of raw text, or an added token found in it. */
static int on_raw(void *ctx, int32_t id, const char *s, size_t n)
{
    Encode *e = ctx;
    if (id >= 0)
        return tok_ids_push(&e->ids, id) ? oom(e) : 0;
    char *norm;
    size_t len;
    if (tok_normalize(&e->tok->normalizer, s, n, &norm, &len, e->err, e->errlen))
        return tok_err_prefix(e->err, e->errlen, "encode");
    int rc = tok_added_split(&e->tok->added, 1, e->special, norm ? norm : s, len, on_normalized, e);
    free(norm);
    return rc;
}

/* The offset of the first byte that starts no valid UTF-8 character (a NUL
 * is a character here), or n. */
static size_t utf8_bad(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0)
            return i;
        i += (size_t)k;
    }
    return n;
}

static int push_all(TokIds *out, const TokIds *in)
{
    for (size_t i = 0; i < in->n; i++)
        if (tok_ids_push(out, in->v[i]))
            return -1;
    return 0;
}

int tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, unsigned flags,
                     int32_t **ids, size_t *n, char *err, size_t errlen)
{
    *ids = NULL;
    *n = 0;
    size_t bad = utf8_bad(text, len);
    if (bad < len)
        return err_fail(err, errlen, "encode: byte %zu of the text is not valid UTF-8", bad);
    Encode e = {.tok = tok, .special = flags & TOKENIZER_SPECIAL, .err = err, .errlen = errlen};
    bool wrap = flags & TOKENIZER_ADD_BOS_EOS;
    int rc = wrap && push_all(&e.ids, &tok->prefix) ? oom(&e) : 0;
    if (!rc)
        rc = tok_added_split(&tok->added, 0, e.special, text, len, on_raw, &e);
    if (!rc && wrap && push_all(&e.ids, &tok->suffix))
        rc = oom(&e);
    tok_pieces_free(&e.pieces);
    tok_bpe_scratch_free(&e.bpe);
    if (rc) {
        free(e.ids.v);
        return -1;
    }
    *ids = e.ids.v ? e.ids.v : malloc(sizeof(int32_t)); /* never NULL on success */
    *n = e.ids.n;
    return *ids ? 0 : err_fail(err, errlen, "encode: out of memory");
}

/* ---- decode and lookups ---- */

int tokenizer_decode(const Tokenizer *tok, const int32_t *ids, size_t n, unsigned flags, char **out,
                     size_t *len, char *err, size_t errlen)
{
    TokBuf b = {0};
    *out = NULL;
    *len = 0;
    for (size_t i = 0; i < n; i++) {
        size_t k;
        const char *bytes = tokenizer_token_bytes(tok, ids[i], &k);
        if (!bytes) {
            free(b.v);
            return err_fail(err, errlen, "decode: ids[%zu] = %d is no token", i, ids[i]);
        }
        if ((flags & TOKENIZER_SKIP_SPECIAL) && tok->vocab.info[ids[i]].special)
            continue;
        if (tok_buf_append(&b, bytes, k)) {
            free(b.v);
            return err_fail(err, errlen, "decode: out of memory");
        }
    }
    if (!b.v && tok_buf_append(&b, "", 0))
        return err_fail(err, errlen, "decode: out of memory");
    *out = b.v;
    *len = b.n;
    return 0;
}

int32_t tokenizer_vocab_size(const Tokenizer *tok) { return tok->vocab.n_ids; }

int32_t tokenizer_token_id(const Tokenizer *tok, const char *token)
{
    size_t n = strlen(token);
    int32_t id = tok_strmap_get(&tok->added.by_content, token, n);
    return id >= 0 ? id : tok_strmap_get(&tok->vocab.model, token, n);
}

const char *tokenizer_token_bytes(const Tokenizer *tok, int32_t id, size_t *len)
{
    if (id < 0 || id >= tok->vocab.n_ids || tok->vocab.info[id].kind == TOK_ID_NONE)
        return NULL;
    *len = tok->vocab.info[id].len;
    return tok->vocab.bytes.v + tok->vocab.info[id].off;
}

bool tokenizer_is_special(const Tokenizer *tok, int32_t id)
{
    size_t k;
    return tokenizer_token_bytes(tok, id, &k) && tok->vocab.info[id].special;
}

int32_t tokenizer_bos_id(const Tokenizer *tok) { return tok->cfg.bos_id; }
int32_t tokenizer_eos_id(const Tokenizer *tok) { return tok->cfg.eos_id; }
int32_t tokenizer_pad_id(const Tokenizer *tok) { return tok->cfg.pad_id; }
const TokenizerConfig *tokenizer_config(const Tokenizer *tok) { return &tok->cfg; }
