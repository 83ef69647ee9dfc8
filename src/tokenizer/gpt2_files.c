/*
 * tokenizer/gpt2_files.c — GPT-2's original files: vocab.json (also named
 * encoder.json: {"token": id, ...}) and merges.txt (also named vocab.bpe: one
 * merge "left right" a line, the first line possibly a "#version" comment),
 * read as Hugging Face's BPE::read_file reads them. The rest is GPT-2's
 * fixed pipeline: no normalizer, ByteLevel without a prefix space and with
 * GPT-2's regex, the ByteLevel decoder.
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"
#include "util/fsutil.h"

static int load_vocab(Tokenizer *tok, const char *path, char *err, size_t errlen)
{
    json_t *j = tok_json_load(path, TOK_CAP_VOCAB_JSON, "a vocab.json", err, errlen);
    if (!j)
        return -1;
    int rc = 0;
    if (!json_is_object(j))
        rc = err_fail(err, errlen, "%s: expected an object of token: id", path);
    else if (json_object_size(j) > TOK_MAX_IDS)
        rc = err_fail(err, errlen, "%s: %zu tokens (at most %d)", path, json_object_size(j),
                      TOK_MAX_IDS);
    else if (tok_vocab_reserve(&tok->vocab, json_object_size(j)))
        rc = err_fail(err, errlen, "out of memory");
    const char *key;
    json_t *id;
    json_object_foreach(j, key, id)
    {
        if (rc)
            break;
        if (!json_is_integer(id))
            rc = err_fail(err, errlen, "%s: the id of \"%.64s\" is not an integer", path, key);
        else if (tok_vocab_add_model(&tok->vocab, key, strlen(key), json_integer_value(id), err,
                                     errlen))
            rc = tok_err_prefix(err, errlen, "%s", path);
    }
    json_decref(j);
    if (!rc && tok_vocab_finish_model(&tok->vocab, err, errlen))
        rc = tok_err_prefix(err, errlen, "%s", path);
    return rc;
}

/* One line (no newline): "#version..." is skipped, anything else must be
 * two tokens around exactly one space. */
static int merge_line(Tokenizer *tok, const char *line, size_t n, uint32_t *rank, char *err,
                      size_t errlen)
{
    if (n >= 8 && !memcmp(line, "#version", 8))
        return 0;
    const char *sp = memchr(line, ' ', n);
    if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp + 1 - line)))
        return err_fail(err, errlen, "expected \"left right\" with one space");
    size_t alen = (size_t)(sp - line);
    if (tok_merges_add(&tok->merges, &tok->vocab, line, alen, sp + 1, n - alen - 1, *rank, err,
                       errlen))
        return -1;
    ++*rank;
    return 0;
}

static int load_merges(Tokenizer *tok, const char *path, char *err, size_t errlen)
{
    FsReadCap cap = {.bytes = TOK_CAP_MERGES_TXT, .kind = "a merges.txt", .special = false};
    char *text;
    size_t len;
    if (fsutil_read_capped(path, &cap, &text, &len, err, errlen))
        return -1;
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    int rc = 0;
    if (lines > TOK_MAX_MERGES || tok_merges_reserve(&tok->merges, lines + 1))
        rc =
            err_fail(err, errlen, "%s: %zu lines (at most %d merges)", path, lines, TOK_MAX_MERGES);
    uint32_t rank = 0;
    size_t lineno = 0;
    /* lines as Rust's BufRead::lines gives them: "\n" or "\r\n" ends one,
     * and a final newline opens no empty last line */
    for (size_t i = 0; !rc && i < len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) : len, n = end - i;
        if (n && text[i + n - 1] == '\r')
            n--;
        lineno++;
        if (merge_line(tok, text + i, n, &rank, err, errlen))
            rc = tok_err_prefix(err, errlen, "%s:%zu", path, lineno);
        i = end + 1;
    }
    free(text);
    return rc;
}

int tok_load_gpt2_files(Tokenizer *tok, const char *vocab_path, const char *merges_path, char *err,
                        size_t errlen)
{
    if (load_vocab(tok, vocab_path, err, errlen) || load_merges(tok, merges_path, err, errlen))
        return -1;
    return tok_pre_gpt2(&tok->pre, err, errlen);
}
