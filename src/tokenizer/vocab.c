/*
 * tokenizer/vocab.c — the table of ids (TokVocab): for every id the bytes it
 * decodes to and whether it is a model token or an added one (special or
 * not); the model's strings for lookups; and the id of each single byte, the
 * symbols a BPE piece starts from.
 *
 * Invariants once loaded: an id has at most one model string and one set of
 * bytes; a model string has one id; every byte that valid UTF-8 can hold has
 * a token (a byte-level BPE that lacked one could not encode all text).
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"
#include "util/text.h"

int tok_vocab_reserve(TokVocab *v, size_t n_model)
{
    if (n_model > TOK_MAX_IDS)
        return -1;
    return tok_strmap_reserve(&v->model, n_model);
}

/* Makes room for `id`, new entries empty. */
static int ensure_id(TokVocab *v, int32_t id)
{
    if ((size_t)id < v->cap) {
        if (id >= v->n_ids)
            v->n_ids = id + 1;
        return 0;
    }
    size_t cap = v->cap ? v->cap : 1024;
    while (cap <= (size_t)id)
        cap *= 2;
    TokIdInfo *info = realloc(v->info, cap * sizeof *info);
    if (!info)
        return -1;
    memset(info + v->cap, 0, (cap - v->cap) * sizeof *info);
    v->info = info;
    v->cap = cap;
    v->n_ids = id + 1;
    return 0;
}

static const char *shown(const char *s, size_t n, char *out, size_t outlen)
{
    char tmp[128];
    size_t k = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
    memcpy(tmp, s, k);
    tmp[k] = '\0';
    return text_for_terminal(tmp, out, outlen);
}

int tok_vocab_add_model(TokVocab *v, const char *s, size_t len, int64_t id, char *err,
                        size_t errlen)
{
    char a[160];
    if (id < 0 || id >= TOK_MAX_IDS)
        return err_fail(err, errlen, "token \"%s\": id %lld is outside [0, %d)",
                        shown(s, len, a, sizeof a), (long long)id, TOK_MAX_IDS);
    if (len == 0 || len > TOK_MAX_TOKEN_BYTES)
        return err_fail(err, errlen, "id %lld: a token of %zu bytes (1 to %d allowed)",
                        (long long)id, len, TOK_MAX_TOKEN_BYTES);
    if (ensure_id(v, (int32_t)id))
        return err_fail(err, errlen, "out of memory");
    if (v->info[id].kind != TOK_ID_NONE)
        return err_fail(err, errlen, "id %lld is given to two tokens (the second \"%s\")",
                        (long long)id, shown(s, len, a, sizeof a));
    int32_t old;
    int rc = tok_strmap_put(&v->model, s, len, (int32_t)id, &old);
    if (rc < 0)
        return err_fail(err, errlen, "out of memory");
    if (rc > 0)
        return err_fail(err, errlen, "token \"%s\" has two ids (%d and %lld)",
                        shown(s, len, a, sizeof a), old, (long long)id);
    size_t off = v->bytes.n;
    if (tok_bytelevel_unspell(s, len, &v->bytes))
        return err_fail(err, errlen, "out of memory");
    v->info[id] = (TokIdInfo){
        .off = (uint32_t)off, .len = (uint32_t)(v->bytes.n - off), .kind = TOK_ID_MODEL};
    return 0;
}

int tok_vocab_set_added(TokVocab *v, int32_t id, const char *content, size_t len, bool special,
                        char *err, size_t errlen)
{
    char a[160];
    if (id < 0 || id >= TOK_MAX_IDS)
        return err_fail(err, errlen, "id %d is outside [0, %d)", id, TOK_MAX_IDS);
    int32_t model_id = tok_strmap_get(&v->model, content, len);
    if (model_id >= 0 && model_id != id)
        return err_fail(err, errlen, "\"%s\" is the model's token %d, not %d",
                        shown(content, len, a, sizeof a), model_id, id);
    if (ensure_id(v, id))
        return err_fail(err, errlen, "out of memory");
    TokIdInfo *in = &v->info[id];
    bool same = in->len == len && !memcmp(v->bytes.v + in->off, content, len);
    if (in->kind == TOK_ID_MODEL && !same)
        return err_fail(err, errlen, "id %d is the model's token for other bytes than \"%s\"", id,
                        shown(content, len, a, sizeof a));
    if (in->kind == TOK_ID_ADDED && !same)
        return err_fail(err, errlen, "id %d is given to two added tokens (the second \"%s\")", id,
                        shown(content, len, a, sizeof a));
    size_t off = v->bytes.n;
    if (tok_buf_append(&v->bytes, content, len))
        return err_fail(err, errlen, "out of memory");
    *in = (TokIdInfo){
        .off = (uint32_t)off, .len = (uint32_t)len, .kind = TOK_ID_ADDED, .special = special};
    return 0;
}

/* Bytes that no valid UTF-8 holds: C0, C1 (overlong leads) and F5..FF. */
static bool utf8_byte(unsigned b) { return b != 0xC0 && b != 0xC1 && b < 0xF5; }

int tok_vocab_finish_model(TokVocab *v, char *err, size_t errlen)
{
    for (unsigned b = 0; b < 256; b++) {
        TokBuf spell = {0};
        char c = (char)b;
        if (tok_bytelevel_spell(&c, 1, &spell)) {
            free(spell.v);
            return err_fail(err, errlen, "out of memory");
        }
        v->byte_id[b] = tok_strmap_get(&v->model, spell.v, spell.n);
        int missing = v->byte_id[b] < 0 && utf8_byte(b);
        char shown_c[16];
        if (missing)
            text_for_terminal(spell.v, shown_c, sizeof shown_c);
        free(spell.v);
        if (missing)
            return err_fail(err, errlen,
                            "no token for byte 0x%02X (\"%s\"): not a byte-level BPE vocabulary", b,
                            shown_c);
    }
    return 0;
}

void tok_vocab_free(TokVocab *v)
{
    tok_strmap_free(&v->model);
    free(v->info);
    free(v->bytes.v);
    memset(v, 0, sizeof *v);
}
