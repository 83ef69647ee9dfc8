/*
 * task/sample.h — generation from a Gpt: a KV-cache
 * inference path, sampling with temperature and top-k, and teacher-forced
 * scoring of completions.
 *
 *     Gpt *m;
 *     run_model_load("runs/dpo", &m, NULL, 0, err, sizeof err); // train/model_load.h
 *     SampleOptions o = {.temperature = 1.0, .top_k = 0, .seed = 1};
 *     const char *prompts[2] = {"the plot was ", "i saw it twice . it was a "};
 *     SampleResult out[2];
 *     sample_generate(m, prompts, 2, &o, out, err, sizeof err);  // out[i].text
 *     double logp[2];
 *     sample_score(m, prompts, out, 2, logp, err, sizeof err);  // log p(out[i] | prompt)
 *     sample_results_free(out, 2);
 *
 * Tokens and the end of a completion. Sequences are laid out as data.h lays
 * out a preference pair: [EOT] + bytes(prompt) + bytes(completion) + [EOT],
 * with EOT (DATA_TOK_EOT) as BOS and EOS. The built-in task's documents end
 * in '\n'; pretrain.c tokenizes each document as [EOT] + its bytes without
 * the '\n' + [EOT], so the reference learns to end a review with EOT exactly
 * where a DPO pair's response ends. A completion is therefore the bytes
 * generated before the first EOT (which is not part of its text; `ended`
 * says it was produced), or before the context (or max_new_tokens) ran out.
 * Byte 0 is never sampled, so a completion is also a C string; tokens at or
 * above DATA_VOCAB (a model with a larger vocabulary) are never sampled.
 *
 * KV cache. The inference path reads the model's weights directly: no
 * autograd, no tensor context. Each step appends one token to each of a set
 * of sequences (each at its own position, so prompts of different lengths
 * share a batch), computing per layer one sgemm per projection over the
 * step's rows and attention over the cached keys and values. Its logits
 * equal the full forward's (gpt_forward + the tied head) to float rounding
 * (tests/test_sample.c).
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

#include "model/model.h"

#define SAMPLE_CHUNK 16 /* sequences per KV cache and per scoring forward */

/* ---- KV cache ---- */

typedef struct SampleCache SampleCache;

/* A cache for n_seq sequences of up to m->cfg.context tokens. */
SampleCache *sample_cache_new(const Gpt *m, int n_seq, char *err, size_t errlen);
void sample_cache_free(SampleCache *c);
/* Empties every sequence. */
void sample_cache_reset(SampleCache *c);
/* Tokens held by sequence s. */
int sample_cache_len(const SampleCache *c, int s);
/* Appends tok[i] to sequence seq[i] for i < n (distinct sequences) and
 * writes the next-token logits of each to logits (n, V). Fails when a
 * sequence is full or a token is out of range. */
int sample_cache_step(SampleCache *c, const int *seq, const int32_t *tok, int n, float *logits,
                      char *err, size_t errlen);

/* ---- sampling ---- */

typedef struct SampleOptions {
    double temperature; /* > 0: softmax(logits / temperature); 0: greedy */
    int top_k;          /* > 0: sample among the k most likely tokens only */
    int max_new_tokens; /* > 0: at most this many; 0: until the context is full */
    uint64_t seed;
} SampleOptions;

typedef struct SampleResult {
    char *text;  /* the completion, malloc'ed, NUL-terminated, without EOT */
    int len;     /* bytes of text */
    bool ended;  /* the model produced EOT (else it ran out of room) */
    double logp; /* log p(completion [+ EOT if ended] | prompt), untempered */
} SampleResult;

/* One completion per prompt (repeat a prompt for several). out (n). */
int sample_generate(const Gpt *m, const char *const *prompts, int n, const SampleOptions *o,
                    SampleResult *out, char *err, size_t errlen);
void sample_results_free(SampleResult *r, int n);

/* Teacher-forced log p(completion [+ EOT if ended] | prompt) of each
 * result under m, summed over the completion's tokens, into logp (n). */
int sample_score(const Gpt *m, const char *const *prompts, const SampleResult *res, int n,
                 double *logp, char *err, size_t errlen);

/* Sets OpenBLAS to one thread (OpenMP splits the work instead); returns the
 * old count for sample_blas_leave. */
int sample_blas_enter(void);
void sample_blas_leave(int n);

#endif
