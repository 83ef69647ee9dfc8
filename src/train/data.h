/*
 * train/data.h — preference pairs: TRL-format JSONL in (standard, implicit
 * prompt, conversational through the model's chat template), token ids
 * (byte-level, or the model's own tokenizer), TRL-style truncation, and
 * fixed-shape (2B, T) batches out.
 *
 *     DataOptions opt = {.max_length = 64, .max_prompt_length = 32};
 *     Dataset *ds = data_load_jsonl("train.jsonl", &opt, err, sizeof err);
 *     DataOrder order;                   // shuffled per epoch from a seed
 *     data_order_init(&order, ds->n, 8, false, true, seed, err, sizeof err);
 *     DataBatch *b = data_batch_new(8, 64); // capacity B = 8, T = 64
 *     data_next_batch(ds, &order, b, err, sizeof err); // b->ids, b->targets: (2B, T)
 *
 * Input. One JSON object per line in one of TRL's three preference formats,
 * told apart per line by the fields' types (other fields are ignored):
 *   standard           string fields "prompt", "chosen" and "rejected";
 *   implicit prompt    "chosen" and "rejected" only (strings, or lists of
 *                      messages): the prompt is their shared start, cut off
 *                      as TRL's extract_prompt does (below);
 *   conversational     "prompt", "chosen" and "rejected" lists of
 *                      {"role": string, "content": string} messages,
 *                      rendered with the model's chat template (below).
 * A list counts as messages when its first element is an object (TRL's
 * is_conversational); a string "prompt" next to message lists is ignored
 * and the prompt extracted (TRL's maybe_extract_prompt: UltraFeedback-style
 * rows). Lines are parsed with jansson. Whitespace-only lines are not pairs
 * and are passed over (counted in n_blank). Anything else that is not such
 * an object (invalid JSON, a missing or mistyped field, a message without a
 * string role or content, an empty message list, a role the chat format
 * does not have, a duplicate key, an empty chosen or rejected) is an error
 * "FILE:LINE: what was expected"; with skip_invalid the line is skipped
 * instead and counted in n_skipped, and the first such message is kept in
 * first_skip so the caller can report it. A conversational line when no chat
 * format can be had is an error even with skip_invalid: it is the setup,
 * not the line, that is wrong. JSON text must be UTF-8 (RFC 8259; jansson
 * refuses other bytes with a line error); any text, including "\u0000",
 * works with either tokenizer (a text the model's tokenizer refuses is a
 * line error).
 *
 * Implicit prompt (TRL's extract_prompt, trl/data_utils.py). With m the
 * shorter length (characters of strings, messages of lists), the prompt is
 * the first i elements where i is the first position at which chosen and
 * rejected differ, moved back by one when chosen[i - 1] is a space (so a
 * reply's leading space stays in the reply); where neither differs in its
 * first m elements, i = m - 1, so each response keeps at least its last
 * common element. Messages are equal when they are equal JSON objects.
 * Strings are compared by character (a UTF-8 sequence is not split). TRL
 * at i = 0 reads chosen[-1] (Python's last element) for the space test;
 * here i = 0 stays 0. A conversation whose first messages differ has no
 * prompt, an error.
 *
 * Conversational (TRL's apply_chat_template for preference rows). The chat
 * format (tokenizer/chat_template.h) is opt.chat_format when set, else the
 * family chat_format_detect finds in opt.chat_template (with its default
 * system message); with neither, a conversational line is an error that
 * names the chat_format setting. Then, as TRL does:
 *   prompt  = render(prompt messages, add_generation_prompt) when the last
 *             prompt message is the user's, or the render that continues it
 *             (continue_final_message) when it is the assistant's; another
 *             last role is an error;
 *   pc, pr  = render(prompt + chosen), render(prompt + rejected), no
 *             generation prompt;
 *   prompt is cut to its longest common prefix with pc, then with pr (a
 *             no-op for these families: TRL does it for DeepSeek-R1);
 *   chosen  = pc after that prefix, rejected likewise.
 * BOS and EOS once each. TRL tokenizes these texts with
 * add_special_tokens=False, so BOS comes only from the template's text
 * (llama3, mistral, gemma write bos_token; chatml and zephyr none), and for
 * plain text appends EOS unless the response already ends with it. The
 * model's tokenizer (below) does exactly that. The byte tokenizer always
 * adds EOT as BOS and as EOS, so with it: a rendered prompt that starts with
 * opt.bos_token loses that text, and a rendered response that ends with
 * opt.eos_token (longer than it) loses that text, before tokenization.
 *
 * Tokenizer. Without opt.tokenizer, byte-level: byte b is token b
 * (0..255). One special token, DATA_TOK_EOT = 256 (GPT-2's <|endoftext|>
 * role), so DATA_VOCAB = 257. A pair becomes
 *     prompt   = [EOT] + bytes(prompt)          (EOT acts as BOS)
 *     response = bytes(response) + [EOT]        (EOT acts as EOS)
 * as TRL's DPOTrainer does with a tokenizer that has BOS and EOS. The leading
 * EOT also gives the first response token a position to be predicted from
 * when the prompt is empty. Padding positions hold EOT and are masked.
 *
 * With opt.tokenizer (a model's, tokenizer/tokenizer.h), as current TRL's
 * DPOTrainer.tokenize_row does for a decoder-only model: the prompt, chosen
 * and rejected texts (rendered first, for conversational lines) are each
 * encoded with add_special_tokens=False, special added tokens in the text
 * recognised (TOKENIZER_SPECIAL: the template writes <|im_start|> as text);
 * no BOS is added (it comes from the template's text where the template
 * writes it), and EOS (tokenizer_config.json's eos_token) is appended to
 * each response unless its ids already end with it (a text ending in the
 * eos_token's text). An empty prompt would leave the first response token
 * nothing to be predicted from: it becomes [BOS], or, for a tokenizer
 * without one, is a line error. Padding positions hold the pad token
 * (pad_token, else eos_token). A tokenizer without an EOS, or with a pad
 * id >= opt.vocab, is an error (data_new); an id >= opt.vocab in a pair is
 * a line error.
 *
 * Truncation (max_length L, max_prompt_length P, token counts after the
 * special tokens are added). With Lr = the longer of the two responses:
 *   1. if len(prompt) + Lr > L, the prompt keeps its LAST P tokens
 *      (truncation_mode "keep_end": the end of a prompt is nearest the reply);
 *   2. if still len(prompt) + Lr > L, each response keeps its FIRST
 *      L - len(prompt) tokens.
 * This is TRL DPOTrainer's rule up to v0.11 (tokenize_row /
 * _build_tokenized_answer), with one difference: TRL cut responses to
 * L - P even when the prompt was shorter than P; here they keep every token
 * that fits. Current TRL (since the v0.12-era rewrite of tokenize_row and
 * concatenated_forward; default max_length 1024, max_prompt_length 512,
 * truncation_mode "keep_end") instead always cuts the prompt to P and completions
 * to max_completion_length, then cuts each whole sequence to its last L
 * tokens in the forward pass; that can eat the start of a long response and
 * give chosen and rejected different prompts, so prefrun keeps the older rule,
 * which always keeps the prompt a shared prefix and keeps the start of each
 * response. Requires 1 <= P < L.
 *
 * Batches. A DataBatch of capacity (B, T) holds b->B <= B pairs as one
 * (2b->B, T) block: rows 0..B-1 chosen, rows B..2B-1 rejected (the model's
 * GptPairBatch layout). targets[n, t] = ids[n, t + 1] when that token is a
 * response token, else -1; mask[n, t] = 1.0f exactly where targets >= 0, so
 * the sum of mask over a row is the response length. Positions past a
 * sequence's end hold the dataset's pad_id (EOT, or the tokenizer's pad)
 * with target -1.
 *
 * Order. DataOrder gives each epoch its own permutation, a function of
 * (seed, epoch) alone, so a resumed run needs only (epoch, pos) to continue
 * the same sequence of batches. A batch never spans two epochs; the last
 * batch of an epoch may be short (b->B < capacity) unless drop_last.
 */
#ifndef PREFRUN_DATA_H
#define PREFRUN_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer/tokenizer.h"

#define DATA_TOK_EOT 256
#define DATA_VOCAB 257
/* a data file is read whole; TRL-sized preference sets are well under this */
#define DATA_MAX_FILE_BYTES ((size_t)4 << 30)

typedef struct DataOptions {
    int max_length;        /* L: longest prompt + response, in tokens */
    int max_prompt_length; /* P: prompt budget when L is exceeded */
    bool skip_invalid;     /* skip (and count) malformed lines instead of failing */
    /* Conversational lines. Read only while a file loads and never kept: a
     * Dataset's opt has them NULL. */
    const char *chat_format;   /* a chat_format value ("chatml"...); NULL or "": detect */
    const char *chat_template; /* tokenizer_config.json's chat_template (Jinja), or NULL */
    const char *bos_token;     /* tokenizer_config.json's bos_token text; NULL: none */
    const char *eos_token;     /* its eos_token text; NULL: none */
    /* The model's tokenizer, or NULL: the byte tokenizer. Borrowed, and
     * kept in the Dataset: it must outlive every call that adds pairs
     * (data_add_pair, data_split). With it, chat_template, bos_token and
     * eos_token left NULL are its tokenizer_config's. */
    const Tokenizer *tokenizer;
    int vocab; /* with a tokenizer: the model's vocab_size, ids must be below it; 0: unchecked */
} DataOptions;

/* One tokenized pair; its tokens live in the dataset's pool at off:
 * prompt (prompt_len), then chosen response, then rejected response. */
typedef struct DataPair {
    int64_t off;
    int prompt_len;
    int chosen_len;   /* response tokens, EOS (EOT) included */
    int rejected_len; /* response tokens, EOS (EOT) included */
    int line;         /* 1-based source line; 0 when generated */
    bool truncated;
} DataPair;

typedef struct Dataset {
    int64_t n;       /* pairs */
    DataPair *pairs; // (n)
    int32_t *pool;   // (n_tokens) every pair's ids, back to back
    int64_t n_tokens;
    int64_t n_truncated; /* pairs cut by max_length */
    int64_t n_skipped;   /* malformed lines skipped (skip_invalid) */
    int64_t n_blank;     /* whitespace-only lines passed over */
    int max_seq_len;     /* longest prompt + response after truncation */
    int32_t pad_id;      /* padding: EOT, or the tokenizer's pad (else its eos) */
    DataOptions opt;
    char source[256];     /* file name, or a description of generated data */
    char first_skip[320]; /* the first skipped line's error, "" if none */
    int64_t pairs_cap, pool_cap;
} Dataset;

/* Checks 1 <= max_prompt_length < max_length, and chat_format's name. */
int data_options_check(const DataOptions *opt, char *err, size_t errlen);

/* Byte-level tokenizer: writes len ids (one per byte) to out. */
void data_tokenize(const char *bytes, size_t len, int32_t *out);
/* Inverse for ids < 256; EOT is written as "<|endoftext|>". Returns the
 * length the text needs (snprintf style); out is always NUL-terminated. */
size_t data_detokenize(const int32_t *ids, int n, char *out, size_t cap);

/* An empty dataset with the given options (checked; the chat fields are
 * not kept; a tokenizer without an EOS is an error). */
Dataset *data_new(const DataOptions *opt, const char *source, char *err, size_t errlen);
void data_free(Dataset *ds);
/* Tokenizes, truncates and appends one pair. An empty chosen or rejected is
 * an error (the message names `where`, e.g. "train.jsonl:12", and the field). */
int data_add_pair(Dataset *ds, const char *prompt, size_t prompt_len, const char *chosen,
                  size_t chosen_len, const char *rejected, size_t rejected_len, int line,
                  const char *where, char *err, size_t errlen);
/* Reads a TRL JSONL file (any of the three formats, mixed freely); a file
 * with no pair at all is an error. */
Dataset *data_load_jsonl(const char *path, const DataOptions *opt, char *err, size_t errlen);
/* The same from text in memory; `name` stands for the file in messages. */
Dataset *data_load_jsonl_text(const char *text, size_t len, const char *name,
                              const DataOptions *opt, char *err, size_t errlen);

/* Copies pair i's full chosen (or rejected) sequence, prompt + response, into
 * out (cap ids); returns its length, or -1 if it does not fit. */
int data_pair_sequence(const Dataset *ds, int64_t i, bool rejected, int32_t *out, int cap);

/* Splits ds into train and held-out sets: round(fraction * n) pairs chosen
 * by a permutation from seed go to *heldout (at least one pair to each side
 * when n >= 2 and 0 < fraction < 1); each side keeps the file's order. */
int data_split(const Dataset *ds, double fraction, uint64_t seed, Dataset **train,
               Dataset **heldout, char *err, size_t errlen);

/* ---- batches ---- */

typedef struct DataBatch {
    int cap_B, T;      /* capacity: pairs, positions */
    int B;             /* pairs in this batch, <= cap_B */
    int32_t *ids;      // (2B, T) rows 0..B-1 chosen, B..2B-1 rejected
    int32_t *targets;  // (2B, T) next token where it is a response token, else -1
    float *mask;       // (2B, T) 1.0f where targets >= 0
    int32_t *resp_len; // (2B) response tokens (= row sum of mask)
    int32_t *seq_len;  // (2B) prompt + response tokens
    int64_t *index;    // (B) dataset index of each pair
} DataBatch;

DataBatch *data_batch_new(int cap_B, int T);
void data_batch_free(DataBatch *b);
/* Fills b with the n pairs idx[0..n-1] (n <= cap_B); every sequence must fit
 * in T (max_length <= T guarantees it). 0 or -1 with err set. */
int data_batch_fill(const Dataset *ds, const int64_t *idx, int n, DataBatch *b, char *err,
                    size_t errlen);
/* Fills b with pairs start .. start+n-1 in file order (evaluation). */
int data_batch_fill_range(const Dataset *ds, int64_t start, int n, DataBatch *b, char *err,
                          size_t errlen);

typedef struct DataOrder {
    int64_t n;      /* pairs in the dataset */
    int batch_size; /* B */
    bool drop_last; /* skip an epoch's short last batch */
    bool shuffle;   /* false: file order every epoch */
    uint64_t seed;
    int64_t epoch; /* current epoch, from 0 */
    int64_t pos;   /* next position in this epoch's permutation; the epoch
                      counter moves on lazily, at the first batch of the next
                      epoch, so epochs done = epoch + pos / n */
    int32_t *perm; // (n) this epoch's order
} DataOrder;

int data_order_init(DataOrder *o, int64_t n, int batch_size, bool drop_last, bool shuffle,
                    uint64_t seed, char *err, size_t errlen);
void data_order_free(DataOrder *o);
/* Batches in one epoch (ceil, or floor with drop_last). */
int64_t data_order_batches_per_epoch(const DataOrder *o);
/* Puts the order at (epoch, pos), as saved in a checkpoint. */
int data_order_seek(DataOrder *o, int64_t epoch, int64_t pos, char *err, size_t errlen);
/* The next batch's pair indices into idx (cap batch_size); returns how many.
 * Moves to the next epoch (new permutation) when this one is used up. */
int data_order_next(DataOrder *o, int64_t *idx);
/* data_order_next + data_batch_fill. */
int data_next_batch(const Dataset *ds, DataOrder *o, DataBatch *b, char *err, size_t errlen);

#endif
