/*
 * src/tokenizer/ — real, exact tokenizers: Hugging Face's tokenizer.json
 * with a byte-level BPE model, GPT-2's vocab.json + merges.txt, and the
 * special tokens of tokenizer_config.json. No tensors, no Lua.
 * May include: util/.
 */
/*
 * tokenizer/tokenizer.h — text to token ids and back, as the model was
 * trained to see them.
 *
 *     char err[512];
 *     Tokenizer *tok = tokenizer_load("models/qwen3", err, sizeof err);
 *     if (!tok) ...;                                  // err names file and key
 *     int32_t *ids;
 *     size_t n;
 *     if (tokenizer_encode(tok, text, strlen(text), TOKENIZER_SPECIAL, &ids, &n, err,
 *                          sizeof err))
 *         ...;                                        // invalid UTF-8, say
 *     char *back;
 *     size_t len;
 *     tokenizer_decode(tok, ids, n, 0, &back, &len, err, sizeof err);  // == text
 *     free(ids), free(back), tokenizer_free(tok);
 *
 * What encode does, in Hugging Face's order (tokenizers crate, tokenizer.json):
 *   1. added tokens are cut out of the raw text first (leftmost, longest;
 *      honouring single_word, lstrip, rstrip); those marked normalized are
 *      looked for in the normalized text of step 2 instead;
 *   2. each remaining stretch is normalized (NFC, NFD, NFKC, NFKD or a
 *      Sequence of them);
 *   3. pre-tokenized: Split (a PCRE2 regex or a literal, with its behavior and
 *      invert), ByteLevel (prefix space, GPT-2's regex), or a Sequence;
 *   4. each piece is merged by the BPE (ranks of merges; ignore_merges).
 * Special added tokens are recognised only with TOKENIZER_SPECIAL (HF's
 * encode_special_tokens = false); non-special added tokens always are, as in
 * Hugging Face. Anything this code does not implement (another model type,
 * normalizer, pre-tokenizer, decoder or post-processor, a dropout, a subword
 * prefix) makes the load fail with a message naming it: never an
 * approximation.
 *
 * Decode is exact bytes: decode(encode(s)) == s for valid UTF-8 s, provided s
 * is already in the normalizer's form (Qwen normalizes to NFC).
 *
 * A loaded Tokenizer is read-only: encode and decode may run on one
 * Tokenizer from several threads at once.
 */
#ifndef PREFRUN_TOKENIZER_H
#define PREFRUN_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Tokenizer Tokenizer;

/* What tokenizer_config.json says (or GPT-2's defaults for a folder of
 * vocab.json + merges.txt without one). Strings are owned by the Tokenizer;
 * NULL / -1 where absent. */
typedef struct TokenizerConfig {
    const char *bos_token, *eos_token, *pad_token; /* contents */
    int32_t bos_id, eos_id, pad_id;
    int add_bos_token, add_eos_token; /* 1, 0, or -1 where the config is silent */
    /* The Jinja text of the chat template (chat_template.jinja beside the
     * config, else the config's chat_template), for the chat-template
     * renderer; this layer does nothing else with it. */
    const char *chat_template;
} TokenizerConfig;

enum {
    /* encode: recognise special added tokens (<|endoftext|>, <|im_start|>)
     * in the text; without it they are tokenized as the characters they are */
    TOKENIZER_SPECIAL = 1u << 0,
    /* encode: wrap the ids as the model expects (BOS/EOS): the config's
     * add_bos_token/add_eos_token where it has them, else tokenizer.json's
     * post-processor (TemplateProcessing, RobertaProcessing) */
    TOKENIZER_ADD_BOS_EOS = 1u << 1,
    /* decode: leave special added tokens out */
    TOKENIZER_SKIP_SPECIAL = 1u << 2,
};

/* A model folder: DIR/tokenizer.json, else DIR/vocab.json (or encoder.json)
 * + DIR/merges.txt (or vocab.bpe); then DIR/tokenizer_config.json and
 * DIR/chat_template.jinja where present. NULL with err set on failure. */
Tokenizer *tokenizer_load(const char *dir, char *err, size_t errlen);

/* Explicit files. Either `tokenizer_json`, or `vocab_json` + `merges_txt`
 * (the others NULL); `config_json` may be NULL. */
typedef struct TokenizerFiles {
    const char *tokenizer_json;
    const char *vocab_json, *merges_txt;
    const char *config_json;
    const char *chat_template_jinja;
} TokenizerFiles;
Tokenizer *tokenizer_load_files(const TokenizerFiles *files, char *err, size_t errlen);

void tokenizer_free(Tokenizer *tok);

/* text[0..len) (valid UTF-8; NUL bytes allowed) to a malloc'ed array of
 * *n ids. 0, or -1 with err set (invalid UTF-8 names its byte offset). */
int tokenizer_encode(const Tokenizer *tok, const char *text, size_t len, unsigned flags,
                     int32_t **ids, size_t *n, char *err, size_t errlen);

/* ids to their bytes, concatenated: a malloc'ed buffer of *len bytes with a
 * NUL after them. A cut multi-byte character stays cut (nothing is replaced).
 * 0, or -1 with err naming the first id that is no token. */
int tokenizer_decode(const Tokenizer *tok, const int32_t *ids, size_t n, unsigned flags, char **out,
                     size_t *len, char *err, size_t errlen);

/* One more than the largest id (model vocabulary and added tokens). */
int32_t tokenizer_vocab_size(const Tokenizer *tok);
/* The id of a token given as its text ("<|endoftext|>", or a model token as
 * written in the vocabulary, "Ġthe"), or -1. Added tokens first. */
int32_t tokenizer_token_id(const Tokenizer *tok, const char *token);
/* The bytes id decodes to (not NUL-terminated; *len set), or NULL. */
const char *tokenizer_token_bytes(const Tokenizer *tok, int32_t id, size_t *len);
bool tokenizer_is_special(const Tokenizer *tok, int32_t id);

int32_t tokenizer_bos_id(const Tokenizer *tok);
int32_t tokenizer_eos_id(const Tokenizer *tok);
int32_t tokenizer_pad_id(const Tokenizer *tok);
const TokenizerConfig *tokenizer_config(const Tokenizer *tok);

#endif
