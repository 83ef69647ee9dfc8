/*
 * task/sample.h — generation from a Gpt: a KV-cache
 * inference path, sampling with temperature and top-k (bytes, or a model's
 * own tokenizer), and teacher-forced scoring of completions.
 *
 *     Gpt *m;
 *     run_model_load("runs/dpo", &m, NULL, 0, err, sizeof err); // train/model_load.h
 *     SampleOptions o = {.temperature = 1.0, .top_k = 0, .seed = 1};
 *     o.tokenizer = tok;  // a Hugging Face model's (tokenizer.h), or NULL: bytes
 *     const char *prompts[2] = {"the plot was ", "i saw it twice . it was a "};
 *     SampleResult out[2];
 *     sample_generate(m, prompts, 2, &o, out, err, sizeof err);  // out[i].text
 *     double logp[2];
 *     sample_score(m, prompts, out, 2, logp, err, sizeof err);  // log p(out[i] | prompt)
 *     sample_results_free(out, 2);
 *
 * Tokens and the end of a completion, without a tokenizer (SampleOptions
 * .tokenizer NULL: prefrun's own byte model). Sequences are laid out as
 * data.h lays out a preference pair: [EOT] + bytes(prompt) +
 * bytes(completion) + [EOT], with EOT (DATA_TOK_EOT) as BOS and EOS. The
 * built-in task's documents end in '\n'; pretrain.c tokenizes each document
 * as [EOT] + its bytes without the '\n' + [EOT], so the reference learns to
 * end a review with EOT exactly where a DPO pair's response ends. A
 * completion is therefore the bytes generated before the first EOT (which is
 * not part of its text; `ended` says it was produced), or before the context
 * (or max_new_tokens) ran out. Byte 0 is never sampled, so a completion is
 * also a C string; tokens at or above DATA_VOCAB (a model with a larger
 * vocabulary) are never sampled.
 *
 * With a tokenizer (a Hugging Face model's, tokenizer/tokenizer.h), as TRL
 * and data.h tokenize a prompt: prompt ids = encode(prompt) with
 * add_special_tokens=False (special tokens written in the text are
 * recognised, no BOS or EOS added), except that an empty prompt becomes
 * [BOS] (the first completion token needs a position to be predicted from;
 * a tokenizer without a BOS then refuses an empty prompt). A completion
 * ends at the tokenizer's EOS id (tokenizer_config.json's eos_token) or at
 * any of SampleOptions.stop_ids (generation_config.json's eos_token_id,
 * sample_stop_ids_load), which, like EOT, is not part of its text. Ids the
 * tokenizer cannot decode (a model vocabulary padded beyond the
 * tokenizer's, holes in it) are never sampled; every other id, special
 * tokens included, may be. The text is the decode of the completion's ids
 * with special tokens skipped (Hugging Face's skip_special_tokens=True); it
 * may hold NUL bytes (len counts them) and need not end on a UTF-8
 * character boundary when the context ran out.
 *
 * The ids. Every result of sample_generate keeps the row it was sampled as,
 * prompt ids then completion ids (its EOS included when it ended), and
 * sample_score scores exactly those ids: no re-encoding, so a KL estimate
 * is over the tokens actually drawn (decode then encode need not give the
 * same ids back: " the" can be sampled as " t" + "he"). A result built by
 * hand without ids is scored in the byte layout above.
 *
 * KV cache. Generation runs on model/decode.h's decoder (GPT-2 and the
 * Llama family; no autograd, no tensor context), each sized to the longest
 * prompt + completion of the call. SampleCache is that decoder over the
 * whole context, for callers that feed sequences by hand: its logits equal
 * the full forward's (gpt_forward + the head) to float rounding
 * (tests/test_sample.c, tests/test_decode.c).
 *
 * Determinism. Sequence i draws from its own Rng seeded from (seed, i), and
 * sequences are processed in fixed chunks of SAMPLE_CHUNK (one chunk per
 * OpenMP task, OpenBLAS single-threaded inside), so the same seed gives the
 * same bytes for any thread count. Scoring goes through the model's own
 * forward (gpt_token_logps) in fixed chunks too: the same model and texts
 * give the same log-probs bit for bit, so two copies of one model score
 * identically (the KL of a model to itself is exactly 0).
 *
 * Errors are values: 0 on success, -1 with a message in err.
 */
#ifndef PREFRUN_SAMPLE_H
#define PREFRUN_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/decode.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

#define SAMPLE_CHUNK 16    /* sequences per KV cache and per scoring forward */
#define SAMPLE_MAX_STOP 16 /* stop ids besides the tokenizer's EOS */

/* ---- KV cache ---- */

typedef struct GptDecoder SampleCache;

/* gpt_decoder_new(m, n_seq, m->cfg.context, ...): n_seq sequences of up to
 * the context. */
SampleCache *sample_cache_new(const Gpt *m, int n_seq, char *err, size_t errlen);
void sample_cache_free(SampleCache *c);
/* Empties every sequence. */
void sample_cache_reset(SampleCache *c);
/* Tokens held by sequence s. */
int sample_cache_len(const SampleCache *c, int s);
/* gpt_decoder_step: appends tok[i] to sequence seq[i] for i < n (distinct
 * sequences) and writes the next-token logits of each to logits (n, V).
 * Fails when a sequence is full or a token is out of range. */
int sample_cache_step(SampleCache *c, const int *seq, const int32_t *tok, int n, float *logits,
                      char *err, size_t errlen);

/* ---- sampling ---- */

typedef struct SampleOptions {
    double temperature; /* > 0: softmax(logits / temperature); 0: greedy */
    int top_k;          /* > 0: sample among the k most likely tokens only */
    int max_new_tokens; /* > 0: at most this many tokens; 0: until the context is full */
    uint64_t seed;
    const Tokenizer *tokenizer; /* NULL: the byte layout; else the model's (above), borrowed */
    int32_t stop_ids[SAMPLE_MAX_STOP]; /* with a tokenizer: more ids that end a completion */
    int n_stop;
} SampleOptions;

typedef struct SampleResult {
    char *text;     /* the completion, malloc'ed, NUL-terminated, without EOT/EOS */
    int len;        /* bytes of text */
    bool ended;     /* the model produced EOT/EOS (else it ran out of room) */
    double logp;    /* log p(completion [+ EOS if ended] | prompt), untempered */
    int32_t *ids;   // (n_ids) malloc'ed: prompt ids, completion ids [+ EOS]; NULL: by hand
    int n_ids;      /* prompt_len + completion tokens */
    int prompt_len; /* prompt ids, the leading EOT or BOS included */
} SampleResult;

/* One completion per prompt (repeat a prompt for several). out (n). */
int sample_generate(const Gpt *m, const char *const *prompts, int n, const SampleOptions *o,
                    SampleResult *out, char *err, size_t errlen);
void sample_results_free(SampleResult *r, int n);

/* Teacher-forced log p(completion [+ EOS if ended] | prompt) of each
 * result under m, summed over the completion's tokens, into logp (n): the
 * ids of a result that has them (prompts unused), else the byte layout of
 * prompts[i] + text. */
int sample_score(const Gpt *m, const char *const *prompts, const SampleResult *res, int n,
                 double *logp, char *err, size_t errlen);

/* generation_config.json's eos_token_id (a number or a list) in dir, into
 * o->stop_ids: 0 (none when the file or the key is absent), or -1 with err
 * naming the file for a malformed one or more than SAMPLE_MAX_STOP ids. */
int sample_stop_ids_load(const char *dir, SampleOptions *o, char *err, size_t errlen);

/* Sets OpenBLAS to one thread (OpenMP splits the work instead); returns the
 * old count for sample_blas_leave. */
int sample_blas_enter(void);
void sample_blas_leave(int n);

#endif
