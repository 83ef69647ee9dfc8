/*
 * tokenizer/tokenizer_internal.h — the parts of a Tokenizer that the files
 * of this folder share: the vocabulary (vocab.c), the merges and the merge
 * loop (bpe.c), the byte-level alphabet (bytelevel.c), added tokens
 * (added.c), normalizers (normalize.c), pre-tokenizers (pretokenize.c,
 * regex.c), and the loaders (hf_json.c, gpt2_files.c, config.c) that fill
 * them in. Not for other folders: they use tokenizer.h.
 *
 * Ids are int32 in [0, TOK_MAX_IDS). Every id knows the bytes it decodes to;
 * a BPE piece is merged on raw bytes, each byte starting as the id of its
 * byte-level character (GPT-2's bytes_to_unicode), which is what the
 * ByteLevel pre-tokenizer followed by a byte-level vocabulary amounts to.
 */
#ifndef PREFRUN_TOKENIZER_INTERNAL_H
#define PREFRUN_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tokenizer/tokenizer.h"

/* Bounds that turn a hostile file into one clean error before allocation. */
#define TOK_MAX_IDS (1 << 22) /* vocabulary + added tokens */
#define TOK_MAX_MERGES (1 << 23)
#define TOK_MAX_TOKEN_BYTES (1 << 16) /* one token's text */
#define TOK_MAX_ADDED (1 << 16)
#define TOK_MAX_STEPS 16 /* normalizers, pre-tokenizers, nesting */
#define TOK_MAX_PATTERN_BYTES (1 << 16)

/* File caps (fsutil_read_capped): Qwen's tokenizer.json is ~11 MB. */
#define TOK_CAP_TOKENIZER_JSON ((size_t)64 << 20)
#define TOK_CAP_VOCAB_JSON ((size_t)32 << 20)
#define TOK_CAP_MERGES_TXT ((size_t)32 << 20)
#define TOK_CAP_CONFIG_JSON ((size_t)4 << 20)
#define TOK_CAP_CHAT_TEMPLATE ((size_t)1 << 20)

/* ---- growable arrays (util-style, owned by their struct) ---- */
typedef struct TokIds {
    int32_t *v;
    size_t n, cap;
} TokIds;
int tok_ids_push(TokIds *ids, int32_t id);

typedef struct TokBuf {
    char *v;
    size_t n, cap;
} TokBuf;
int tok_buf_append(TokBuf *b, const void *data, size_t n);

/* ---- strmap.c: byte strings to int32 (open addressing, keys copied) ---- */
typedef struct TokStrMap {
    struct TokStrEntry *entries; /* (n) */
    uint32_t *slots;             /* (cap): entry index + 1, 0 when empty */
    size_t n, entries_cap, cap;
    TokBuf keys;
} TokStrMap;
int tok_strmap_reserve(TokStrMap *m, size_t n);
/* 0 when inserted, 1 when the key was there (*old set, value kept), -1 out
 * of memory */
int tok_strmap_put(TokStrMap *m, const char *key, size_t len, int32_t val, int32_t *old);
int32_t tok_strmap_get(const TokStrMap *m, const char *key, size_t len); /* -1: absent */
void tok_strmap_free(TokStrMap *m);

/* ---- vocab.c: every id's bytes and kind ---- */
enum { TOK_ID_NONE = 0, TOK_ID_MODEL = 1, TOK_ID_ADDED = 2 };
typedef struct TokIdInfo {
    uint32_t off, len; /* decoded bytes in TokVocab.bytes */
    uint8_t kind;
    bool special;
} TokIdInfo;
typedef struct TokVocab {
    TokStrMap model; /* model token, as the file writes it, to its id */
    TokIdInfo *info; /* (cap) */
    int32_t n_ids;   /* one more than the largest id */
    size_t cap;
    TokBuf bytes;
    int32_t byte_id[256]; /* the model token of each single byte; -1 where none */
} TokVocab;
int tok_vocab_reserve(TokVocab *v, size_t n_model);
/* A model token: `s` as the file writes it (byte-level characters). Names
 * the clash on a repeated id or string. */
int tok_vocab_add_model(TokVocab *v, const char *s, size_t len, int64_t id, char *err,
                        size_t errlen);
/* An added token's id decodes to its content's bytes. */
int tok_vocab_set_added(TokVocab *v, int32_t id, const char *content, size_t len, bool special,
                        char *err, size_t errlen);
/* After the model tokens: the byte table; every byte that valid UTF-8 can
 * hold must have a token. */
int tok_vocab_finish_model(TokVocab *v, char *err, size_t errlen);
void tok_vocab_free(TokVocab *v);

/* ---- bytelevel.c: GPT-2's bytes_to_unicode ---- */
/* The code point byte b stands for in a byte-level vocabulary. */
uint32_t tok_bytelevel_char(uint8_t b);
/* The byte code point cp stands for, or -1 when cp is not in the alphabet. */
int tok_bytelevel_byte(uint32_t cp);
/* Appends the byte-level spelling (UTF-8) of bytes[0..n) to out. */
int tok_bytelevel_spell(const char *bytes, size_t n, TokBuf *out);
/* A vocabulary token's bytes: the bytes its characters stand for, or, when
 * one of them is not in the alphabet, its own UTF-8 (Hugging Face's
 * ByteLevel decoder does the same). */
int tok_bytelevel_unspell(const char *s, size_t n, TokBuf *out);

/* ---- bpe.c: merges and the merge loop ---- */
typedef struct TokMerges {
    struct TokMergeSlot *slots; /* (cap) */
    size_t n, cap;
} TokMerges;
int tok_merges_reserve(TokMerges *m, size_t n);
/* Merge of rank `rank`: a + b, both model tokens as the file writes them,
 * whose concatenation must be one too. A pair given twice keeps the later
 * rank (as Hugging Face's map does). */
int tok_merges_add(TokMerges *m, const TokVocab *v, const char *a, size_t alen, const char *b,
                   size_t blen, uint32_t rank, char *err, size_t errlen);
void tok_merges_free(TokMerges *m);

typedef struct TokBpeScratch {
    struct TokSymbol *sym;
    size_t sym_cap;
    struct TokMerge *heap;
    size_t heap_cap;
    TokBuf spell;
} TokBpeScratch;
/* Appends the ids of one pre-token (raw bytes) to out. */
int tok_bpe_encode(const TokVocab *v, const TokMerges *m, bool ignore_merges, const char *piece,
                   size_t len, TokBpeScratch *s, TokIds *out);
void tok_bpe_scratch_free(TokBpeScratch *s);

/* ---- added.c: added tokens, cut out of the text before anything else ---- */
typedef struct TokAddedToken {
    int32_t id;
    uint32_t off, len;   /* content, in TokAdded.text */
    uint32_t moff, mlen; /* what is matched: the content, normalized when `normalized` */
    bool special, single_word, lstrip, rstrip, normalized;
} TokAddedToken;
typedef struct TokAdded {
    TokAddedToken *v; /* (n) */
    size_t n, cap;
    TokBuf text;
    TokStrMap by_content;
    /* per set (0: matched in the raw text, 1: in the normalized text) and
     * first byte: the tokens, longest first, as order[first[s][b] ..
     * first[s][b + 1]) */
    uint32_t *order;
    uint32_t first[2][257];
} TokAdded;
int tok_added_add(TokAdded *a, const TokAddedToken *t, const char *content, char *err,
                  size_t errlen);
/* After every token is in: the matching tables. `norm` normalizes the
 * contents of tokens marked normalized. */
struct TokNormalizer;
int tok_added_finish(TokAdded *a, const struct TokNormalizer *norm, char *err, size_t errlen);
/* Calls fn for each stretch of s[0..n) in order: an added token (id >= 0) or
 * text between them (id -1); set 0 or 1 as above. */
typedef int (*TokSegmentFn)(void *ctx, int32_t id, const char *s, size_t n);
int tok_added_split(const TokAdded *a, int set, bool with_special, const char *s, size_t n,
                    TokSegmentFn fn, void *ctx);
void tok_added_free(TokAdded *a);

/* ---- normalize.c ---- */
typedef enum { TOK_NFC, TOK_NFD, TOK_NFKC, TOK_NFKD } TokNormForm;
typedef struct TokNormalizer {
    TokNormForm steps[TOK_MAX_STEPS];
    int n;
} TokNormalizer;
/* The normalizer of tokenizer.json (a JSON value; NULL or null: none). */
int tok_normalizer_parse(TokNormalizer *nz, json_t *j, const char *where, int depth, char *err,
                         size_t errlen);
/* *out = a malloc'ed normalized copy (NUL after it), or NULL when there are
 * no steps (use the input). */
int tok_normalize(const TokNormalizer *nz, const char *s, size_t n, char **out, size_t *outlen,
                  char *err, size_t errlen);

/* ---- regex.c: Hugging Face's (Oniguruma) patterns on PCRE2 ---- */
typedef struct TokRegex TokRegex;
/* literal: the pattern is a plain string (Split's {"String": ...}) */
TokRegex *tok_regex_new(const char *pattern, size_t len, bool literal, char *err, size_t errlen);
/* Calls fn(ctx, start, end) for each match in s[0..n) from the left, as
 * Oniguruma's find_iter yields them (an empty match right after a match is
 * skipped). 0, or -1 with err set. */
typedef int (*TokMatchFn)(void *ctx, size_t start, size_t end);
int tok_regex_each(const TokRegex *re, const char *s, size_t n, TokMatchFn fn, void *ctx, char *err,
                   size_t errlen);
void tok_regex_free(TokRegex *re);

/* ---- pretokenize.c ---- */
typedef enum {
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
    TOK_SPLIT_CONTIGUOUS,
} TokSplitBehavior;
typedef struct TokPreStep {
    bool byte_level; /* else a Split */
    TokRegex *re;    /* Split's pattern; ByteLevel's GPT-2 regex, or NULL */
    TokSplitBehavior behavior;
    bool invert;
    bool add_prefix_space; /* ByteLevel */
} TokPreStep;
typedef struct TokPreTokenizer {
    TokPreStep steps[TOK_MAX_STEPS];
    int n;
} TokPreTokenizer;
int tok_pre_parse(TokPreTokenizer *p, json_t *j, const char *where, int depth, char *err,
                  size_t errlen);
/* GPT-2's own: ByteLevel without a prefix space, with its regex. */
int tok_pre_gpt2(TokPreTokenizer *p, char *err, size_t errlen);
typedef struct TokSpan {
    size_t off, len;
} TokSpan;
typedef struct TokPieces {
    TokBuf text;      /* the pieces point into it */
    TokSpan *v, *tmp; /* (n) */
    size_t n, cap, tmp_cap;
    struct TokSplitPart *parts;
    size_t parts_n, parts_cap;
} TokPieces;
/* s[0..n) cut into pre-tokens (raw bytes) in p->text / p->v. */
int tok_pretokenize(const TokPreTokenizer *pre, const char *s, size_t n, TokPieces *p, char *err,
                    size_t errlen);
void tok_pieces_free(TokPieces *p);
void tok_pre_free(TokPreTokenizer *p);

/* ---- tok_json.c: JSON fields with messages that name file and key ---- */
json_t *tok_json_load(const char *path, size_t cap, const char *kind, char *err, size_t errlen);
/* each returns 0 or -1; a missing key leaves the default (*out untouched)
 * unless `required`; a wrong type is an error naming "where.key" */
int tok_json_bool(json_t *obj, const char *key, const char *where, bool required, bool *out,
                  char *err, size_t errlen);
int tok_json_str(json_t *obj, const char *key, const char *where, bool required, const char **out,
                 size_t *len, char *err, size_t errlen);
/* "type" of a tagged object, or NULL with err set */
const char *tok_json_type(json_t *obj, const char *where, char *err, size_t errlen);

/* ---- the Tokenizer ---- */
struct Tokenizer {
    TokVocab vocab;
    TokMerges merges;
    bool ignore_merges;
    TokAdded added;
    TokNormalizer normalizer;
    TokPreTokenizer pre;
    /* the post-processor's ids around one sequence (TOKENIZER_ADD_BOS_EOS) */
    TokIds prefix, suffix;
    TokenizerConfig cfg;
    char *cfg_strings[4]; /* owned: bos, eos, pad, chat_template */
};

/* hf_json.c: fills tok from a parsed tokenizer.json */
int tok_load_hf_json(Tokenizer *tok, const char *path, char *err, size_t errlen);
/* gpt2_files.c: fills tok from vocab.json + merges.txt */
int tok_load_gpt2_files(Tokenizer *tok, const char *vocab_path, const char *merges_path, char *err,
                        size_t errlen);
/* config.c: tokenizer_config.json (NULL: none) and a chat_template.jinja
 * (NULL: none); `gpt2_defaults` for a folder without tokenizer.json */
int tok_load_config(Tokenizer *tok, const char *config_path, const char *template_path,
                    bool gpt2_defaults, char *err, size_t errlen);
/* The parser of one added token object (tokenizer.json's added_tokens[i],
 * tokenizer_config.json's added_tokens_decoder values): hf_json.c. */
int tok_parse_added_token(Tokenizer *tok, json_t *j, int64_t id, const char *where, char *err,
                          size_t errlen);

/* errors: prefix err's message with "fmt: " (the file, the key) */
int tok_err_prefix(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
