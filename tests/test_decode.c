/*
 * test_decode.c — model/decode.h's KV-cache decoder against the model's
 * full forward (gpt_forward, then the head as a double dot product) for
 * GPT-2, GPT-2 with an MLP width other than 4C and epsilon 1e-6, and a tiny
 * Llama (GQA, head_dim != C / NH, biases, untied head, llama3 RoPE
 * scaling); reset, the errors of a step and of a new decoder, the cache's
 * size; then sampling a tiny Llama end to end through task/sample.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "model/decode.h"
#include "model/model.h"
#include "task/sample.h"
#include "testlib.h"
#include "train/data.h"

static const GptConfig gpt2 = {.vocab = 50, .context = 24, .width = 16, .layers = 2, .heads = 2};

static const GptConfig gpt2_wide = {.vocab = 50,
                                    .context = 24,
                                    .width = 16,
                                    .layers = 2,
                                    .heads = 2,
                                    .inner = 24,
                                    .norm_eps = 1e-6f};

/* test_model.c's tiny_llama with a longer context, and the llama3 band
 * edges (original 16: wavelengths 4 to 16) put its first frequency
 * (wavelength 2 pi) in the smoothed band, its second past it. */
static const GptConfig llama = {.vocab = 13,
                                .context = 24,
                                .width = 8,
                                .layers = 2,
                                .heads = 4,
                                .arch = GPT_ARCH_LLAMA,
                                .inner = 12,
                                .norm_eps = 1e-6f,
                                .kv_heads = 2,
                                .head_dim = 4,
                                .qkv_bias = true,
                                .o_bias = true,
                                .untied_head = true,
                                .rope = {.theta = 500000,
                                         .scaling = ROPE_SCALING_LLAMA3,
                                         .factor = 8,
                                         .low_freq_factor = 1,
                                         .high_freq_factor = 4,
                                         .original_max_position_embeddings = 16}};

/* Weights far from GPT-2's init (as test_sample.c does): attention peaked,
 * GELU and SiLU curved, logits spread over several units, so a wrong mask,
 * scale, position or head shows far above float rounding. */
static Gpt *random_model(const GptConfig *cfg, uint64_t seed)
{
    char err[256];
    Gpt *m = gpt_new(cfg, false, err, sizeof err);
    if (!m) {
        printf("# %s\n", err);
        return NULL;
    }
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        Tensor *t = m->tensors[i];
        bool norm_w = t->ndim == 1 && (strstr(t->name, "ln") || strstr(t->name, "norm")) &&
                      strstr(t->name, "weight");
        for (int64_t j = 0; j < t->size; j++)
            t->data[j] = (norm_w ? 1.0f : 0.0f) + (t->ndim == 2 ? 0.3f : 0.1f) * rng_normal(&r);
    }
    return m;
}

/* logits (T, V) of one sequence by the full forward: gpt_forward, then
 * each hidden state dotted with m->head's rows in double */
static double *full_logits(const Gpt *m, const int32_t *ids, int T)
{
    int C = m->cfg.width, V = m->cfg.vocab;
    TensorCtx *ctx = tensor_ctx_new(0);
    ctx->no_grad = true;
    Tensor *h = gpt_forward(m, ctx, ids, 1, T); // (1, T, C)
    double *out = h ? malloc((size_t)T * V * sizeof *out) : NULL;
    if (!h)
        printf("# %s\n", tensor_ctx_error(ctx));
    for (int t = 0; out && t < T; t++)
        for (int v = 0; v < V; v++) {
            double s = 0;
            for (int c = 0; c < C; c++)
                s += (double)h->data[(size_t)t * C + c] * m->head->data[(size_t)v * C + c];
            out[(size_t)t * V + v] = s;
        }
    tensor_ctx_free(ctx);
    return out;
}

enum { NS = 3, ML = 16 }; /* sequences, the decoders' max_len (< the context, 24) */

static const int seq_len[NS] = {ML, 9, 12}, seq_start[NS] = {0, 3, 1};

/* Feeds NS sequences interleaved (sequence 1 starts three steps late, so a
 * step's rows sit at different positions); logits of every step, in order,
 * into lg (sum of seq_len, V). Returns the worst |decode - full| / (1 +
 * |full|), or -1 on a step error. */
static double feed_all(GptDecoder *d, const Gpt *m, int32_t ids[NS][ML], double *full[NS],
                       float *lg)
{
    int V = m->cfg.vocab, k = 0;
    double worst = 0;
    char err[256];
    for (int step = 0; step < ML + 3; step++) {
        int seq[NS], n = 0;
        int32_t tok[NS];
        for (int s = 0; s < NS; s++) {
            int p = step - seq_start[s];
            if (p >= 0 && p < seq_len[s]) {
                seq[n] = s;
                tok[n++] = ids[s][p];
            }
        }
        if (n == 0)
            continue;
        if (gpt_decoder_step(d, seq, tok, n, lg + (size_t)k * V, err, sizeof err) != 0) {
            printf("# step %d: %s\n", step, err);
            return -1;
        }
        for (int i = 0; i < n; i++, k++) {
            int s = seq[i], p = step - seq_start[s];
            for (int v = 0; v < V; v++) {
                double want = full[s][(size_t)p * V + v];
                double e = fabs(lg[(size_t)k * V + v] - want) / (1.0 + fabs(want));
                worst = e > worst ? e : worst;
            }
        }
    }
    return worst;
}

/* Every position's logits against the full forward, twice (the second
 * time after a reset: the same bits); the lengths and the cache's size.
 * Tolerance 1e-4 relative, as test_sample.c's: the paths sum the same
 * products in other orders (sgemm blocking, expf vs the ops' exp), ~1e-6
 * in practice, where a wrong position, head or norm is off by ~0.1 to 1. */
static void decoder_matches_forward(const char *name, const GptConfig *cfg, uint64_t seed)
{
    Gpt *m = random_model(cfg, seed);
    char err[256] = "";
    GptDecoder *d = m ? gpt_decoder_new(m, NS, ML, err, sizeof err) : NULL;
    CHECKF(d != NULL, "%s: %s", name, err);
    if (!d) {
        gpt_free(m);
        return;
    }
    int V = cfg->vocab, total = seq_len[0] + seq_len[1] + seq_len[2];
    int32_t ids[NS][ML];
    double *full[NS];
    Rng r;
    rng_seed(&r, seed + 100);
    for (int s = 0; s < NS; s++) {
        for (int t = 0; t < ML; t++)
            ids[s][t] = (int32_t)rng_below(&r, (uint64_t)V);
        full[s] = full_logits(m, ids[s], seq_len[s]);
    }
    float *a = malloc((size_t)total * V * sizeof *a), *b = malloc((size_t)total * V * sizeof *b);
    double worst = feed_all(d, m, ids, full, a);
    CHECKF(worst >= 0 && worst < 1e-4, "%s: worst relative logit difference %.3g", name, worst);
    printf("# %s: worst relative logit difference %.3g\n", name, worst);
    for (int s = 0; s < NS; s++)
        CHECK(gpt_decoder_len(d, s) == seq_len[s]);
    gpt_decoder_reset(d);
    CHECK(gpt_decoder_len(d, 0) == 0 && gpt_decoder_len(d, 2) == 0);
    CHECK(feed_all(d, m, ids, full, b) == worst);
    CHECKF(memcmp(a, b, (size_t)total * V * sizeof *a) == 0, "%s: after reset, other logits", name);
    size_t want = (size_t)cfg->layers * NS * ML * gpt_kv_heads(cfg) * gpt_head_dim(cfg) * 2;
    CHECKF(gpt_decoder_cache_floats(d) == want, "%s: %zu cache floats, expected %zu", name,
           gpt_decoder_cache_floats(d), want);
    for (int s = 0; s < NS; s++)
        free(full[s]);
    free(a);
    free(b);
    gpt_decoder_free(d);
    gpt_free(m);
}

static void gpt2_matches_forward(void) { decoder_matches_forward("gpt2", &gpt2, 21); }
static void gpt2_wide_matches_forward(void)
{
    decoder_matches_forward("gpt2 inner 24, eps 1e-6", &gpt2_wide, 22);
}
static void llama_matches_forward(void) { decoder_matches_forward("llama", &llama, 23); }

/* One step that must fail with a message holding want, leaving the
 * lengths as they were. */
static void step_fails(GptDecoder *d, const int *seq, const int32_t *tok, int n, const char *want)
{
    char err[256] = "";
    float lg[2 * 13];
    int len0 = gpt_decoder_len(d, 0), len1 = gpt_decoder_len(d, 1);
    CHECK(gpt_decoder_step(d, seq, tok, n, lg, err, sizeof err) == -1);
    CHECKF(strstr(err, want) != NULL, "expected \"%s\" in: %s", want, err);
    CHECK(gpt_decoder_len(d, 0) == len0 && gpt_decoder_len(d, 1) == len1);
}

/* A full sequence (max_len reached), tokens and sequences out of range, a
 * sequence twice in a step, no rows; decoders of no sequences or of a
 * max_len outside 1..context. Each is an error value, never a write past a
 * buffer (the ASan build runs this). */
static void errors_are_values(void)
{
    Gpt *m = random_model(&llama, 24);
    char err[256] = "";
    GptDecoder *d = gpt_decoder_new(m, 2, 4, err, sizeof err);
    CHECKF(d != NULL, "%s", err);
    if (!d) {
        gpt_free(m);
        return;
    }
    float lg[2 * 13];
    int seq[2] = {0, 1};
    int32_t tok[2] = {3, 12};
    for (int t = 0; t < 4; t++)
        CHECK(gpt_decoder_step(d, seq, tok, 1, lg, err, sizeof err) == 0);
    step_fails(d, seq, tok, 2, "full");
    CHECK(gpt_decoder_len(d, 0) == 4 && gpt_decoder_len(d, 1) == 0);
    gpt_decoder_reset(d);
    int32_t bad_hi[2] = {3, 13}, bad_lo[2] = {-1, 3};
    step_fails(d, seq, bad_hi, 2, "token 13");
    step_fails(d, seq, bad_lo, 2, "token -1");
    int far[2] = {0, 2}, neg[1] = {-1}, twice[2] = {1, 1};
    step_fails(d, far, tok, 2, "sequence 2");
    step_fails(d, neg, tok, 1, "sequence -1");
    step_fails(d, twice, tok, 2, "twice");
    step_fails(d, seq, tok, 0, "rows");
    step_fails(d, seq, tok, 3, "rows");
    CHECK(gpt_decoder_step(d, twice, tok, 1, lg, err, sizeof err) == 0); /* marks cleared */
    gpt_decoder_free(d);
    CHECK(gpt_decoder_new(m, 0, 4, err, sizeof err) == NULL && strstr(err, "sequence"));
    CHECK(gpt_decoder_new(m, 1, 0, err, sizeof err) == NULL && strstr(err, "max_len"));
    CHECK(gpt_decoder_new(m, 1, llama.context + 1, err, sizeof err) == NULL &&
          strstr(err, "max_len"));
    d = gpt_decoder_new(m, 1, llama.context, err, sizeof err);
    CHECK(d != NULL);
    gpt_decoder_free(d);
    gpt_free(m);
}

/* The byte layout needs the bytes and EOT in the vocabulary. */
static GptConfig llama_bytes(void)
{
    GptConfig c = llama;
    c.vocab = DATA_VOCAB;
    c.context = 32;
    return c;
}

static const char *const prompts[3] = {"ab", "", "the "};

static bool same_ids(const SampleResult *a, const SampleResult *b, int n)
{
    for (int i = 0; i < n; i++)
        if (a[i].n_ids != b[i].n_ids || memcmp(a[i].ids, b[i].ids, (size_t)a[i].n_ids * 4) != 0)
            return false;
    return true;
}

/* argmax over what greedy decoding may pick: bytes 1..255 and EOT */
static int full_argmax(const double *lg)
{
    int best = 1;
    for (int v = 2; v < DATA_VOCAB; v++)
        best = lg[v] > lg[best] ? v : best;
    return best;
}

/* Greedy completions are the full forward's argmax at every position. */
static void greedy_is_forward_argmax(const Gpt *m)
{
    char err[256] = "";
    SampleOptions o = {.temperature = 0, .max_new_tokens = 12, .seed = 1};
    SampleResult g[3];
    CHECKF(sample_generate(m, prompts, 3, &o, g, err, sizeof err) == 0, "%s", err);
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        double *lg = full_logits(m, g[i].ids, g[i].n_ids);
        for (int t = g[i].prompt_len; lg && t < g[i].n_ids; t++)
            bad += g[i].ids[t] != full_argmax(lg + (size_t)(t - 1) * DATA_VOCAB);
        CHECK(lg != NULL && g[i].n_ids - g[i].prompt_len >= 1 &&
              g[i].n_ids - g[i].prompt_len <= 12);
        free(lg);
    }
    CHECKF(bad == 0, "%d greedy tokens are not the full forward's argmax", bad);
    sample_results_free(g, 3);
}

/* Sampling a tiny Llama: the same seed, the same ids; another seed, other
 * ids; the sampler's log-probs equal teacher-forced scoring's (the model's
 * own forward) to 1e-4 relative; greedy follows the full forward. */
static void llama_samples_end_to_end(void)
{
    GptConfig cfg = llama_bytes();
    Gpt *m = random_model(&cfg, 25);
    if (!m) {
        CHECK(m != NULL);
        return;
    }
    char err[256] = "";
    SampleOptions o = {.temperature = 1.0, .max_new_tokens = 20, .seed = 7};
    SampleResult a[3], b[3], c[3];
    CHECKF(sample_generate(m, prompts, 3, &o, a, err, sizeof err) == 0, "%s", err);
    CHECKF(sample_generate(m, prompts, 3, &o, b, err, sizeof err) == 0, "%s", err);
    o.seed = 8;
    CHECKF(sample_generate(m, prompts, 3, &o, c, err, sizeof err) == 0, "%s", err);
    CHECK(same_ids(a, b, 3));
    CHECK(!same_ids(a, c, 3));
    double lp[3];
    CHECKF(sample_score(m, prompts, a, 3, lp, err, sizeof err) == 0, "%s", err);
    for (int i = 0; i < 3; i++) {
        CHECK(a[i].n_ids - a[i].prompt_len >= 1 && a[i].n_ids - a[i].prompt_len <= 20);
        CHECKF(fabs(lp[i] - a[i].logp) <= 1e-4 * (1 + fabs(lp[i])),
               "result %d: sampled logp %.9g, scored %.9g", i, a[i].logp, lp[i]);
    }
    sample_results_free(a, 3);
    sample_results_free(b, 3);
    sample_results_free(c, 3);
    greedy_is_forward_argmax(m);
    gpt_free(m);
}

int main(void)
{
    RUN(gpt2_matches_forward);
    RUN(gpt2_wide_matches_forward);
    RUN(llama_matches_forward);
    RUN(errors_are_values);
    RUN(llama_samples_end_to_end);
    return tl_done();
}
