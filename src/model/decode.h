/*
 * model/decode.h — incremental decoding of a Gpt with a KV cache: no graph,
 * no tensor context, the model's weights read in place. It owns the cache
 * (keys and values of every position fed) and the step's scratch rows.
 *
 *     GptDecoder *d = gpt_decoder_new(m, 2, 64, err, sizeof err); // 2 sequences, <= 64 tokens
 *     int seq[2] = {0, 1};
 *     int32_t tok[2] = {bos, bos};
 *     gpt_decoder_step(d, seq, tok, 2, logits, err, sizeof err);  // logits (2, V)
 *     gpt_decoder_reset(d);                                       // every sequence empty
 *     gpt_decoder_free(d);
 *
 * Each step appends one token to each of a set of distinct sequences, each
 * at its own position (prompts of different lengths share a step), with one
 * sgemm per projection over the step's rows and attention over the cached
 * keys and values. Both of model.h's families:
 *   GPT-2: LayerNorm, learned positions, GELU (tanh form) MLP of width F;
 *   Llama: RMSNorm, RoPE from the model's table at each row's own position,
 *   grouped-query attention (query head h reads kv head h / (NH / NKV)),
 *   optional q/k/v and output biases, SwiGLU MLP.
 * Its logits equal the full forward's (gpt_forward, then m->head) to float
 * rounding (tests/test_decode.c). The arithmetic of a GPT-2 step is fixed:
 * the task's cached pairs were sampled with it.
 *
 * Memory: the cache is L x S x max_len x NKV HD floats, twice (keys and
 * values); max_len is the longest sequence (prompt + completion) the caller
 * will feed, at most the context, so a short completion does not pay for a
 * 32k-token context.
 *
 * Threads: a decoder is one thread's; several may share one model (they
 * only read it). OpenBLAS's thread count is the caller's to set.
 *
 * Letters: S sequences, n rows in one step (n <= S), C width, L layers, NH
 * query heads, NKV key/value heads, HD head dim, F MLP width, V vocabulary.
 * Errors are values: NULL or -1 with a message in err.
 */
#ifndef PREFRUN_DECODE_H
#define PREFRUN_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef struct GptDecoder GptDecoder;

/* A decoder for n_seq sequences of up to max_len tokens (1 <= max_len <=
 * m->cfg.context). m is borrowed and must outlive it. */
GptDecoder *gpt_decoder_new(const Gpt *m, int n_seq, int max_len, char *err, size_t errlen);
void gpt_decoder_free(GptDecoder *d);
/* Empties every sequence. */
void gpt_decoder_reset(GptDecoder *d);
/* Tokens held by sequence s (0 <= s < n_seq). */
int gpt_decoder_len(const GptDecoder *d, int s);
/* Floats the KV cache holds: L S max_len NKV HD, keys and values. */
size_t gpt_decoder_cache_floats(const GptDecoder *d);
/* Appends tok[i] to sequence seq[i] for i < n (distinct sequences) and
 * writes the next-token logits of each to logits (n, V). Fails, changing
 * nothing, when a sequence is full, out of range or repeated, or a token is
 * out of range. */
int gpt_decoder_step(GptDecoder *d, const int *seq, const int32_t *tok, int n, float *logits,
                     char *err, size_t errlen);

#endif
