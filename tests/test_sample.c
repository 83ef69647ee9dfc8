/*
 * test_sample.c — the KV-cache inference path against the model's full
 * forward, and sampling: determinism by seed and across thread counts,
 * greedy decoding, top-k, the log-probs of the sampling path against
 * teacher-forced scoring, model files, and the errors of a full cache;
 * then sampling with a real tokenizer (GPT-2's, Qwen3's files from
 * tests/fetch_tokenizers.sh; those cases skip when the files are absent).
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/data.h"
#include "model/model.h"
#include "core/ops.h"
#include "core/rng.h"
#include "task/sample.h"
#include "testlib.h"
#include "train/model_load.h"
#include "model/model_file.h"
#include "prefrun_config.h"
#include "testfs.h"
#include "tokenizer/tokenizer.h"

/* The tokenizer's vocabulary, a short context so sequences fill it, two
 * layers and two heads so every path of the block runs. */
static const GptConfig small = {
    .vocab = DATA_VOCAB, .context = 32, .width = 16, .layers = 2, .heads = 2};

/* Weights far from GPT-2's init (as test_model.c does), so attention is
 * peaked, GELU is curved and logits spread over several units: a wrong
 * mask, scale or position shows far above float rounding. */
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
        bool ln_w = t->ndim == 1 && strstr(t->name, "ln") && strstr(t->name, "weight");
        for (int64_t j = 0; j < t->size; j++)
            t->data[j] = (ln_w ? 1.0f : 0.0f) + (t->ndim == 2 ? 0.3f : 0.1f) * rng_normal(&r);
    }
    return m;
}

/* logits (N, T, V) of the full forward: gpt_forward then the tied head */
static float *full_logits(const Gpt *m, const int32_t *ids, int N, int T)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    ctx->no_grad = true;
    int rows[2] = {N * T, m->cfg.width};
    Tensor *h = gpt_forward(m, ctx, ids, N, T);
    Tensor *lg = ag_linear(ctx, ag_reshape(ctx, h, 2, rows), m->wte, NULL);
    float *out = NULL;
    if (lg) {
        out = malloc((size_t)lg->size * sizeof(float));
        memcpy(out, lg->data, (size_t)lg->size * sizeof(float));
    } else {
        printf("# %s\n", tensor_ctx_error(ctx));
    }
    tensor_ctx_free(ctx);
    return out;
}

/* Three sequences of different lengths, fed interleaved (the second one
 * starts three steps late), each compared at every position with the full
 * forward of that sequence alone. Tolerance: the two paths sum the same
 * products in different orders (sgemm blocking vs per-row dots) and softmax
 * with expf vs the ops' exp; 1e-4 relative is ~1000 float ulps, far below
 * the unit-scale error any wrong mask or position would give. */
static void kv_cache_equals_full_forward(void)
{
    enum { NS = 3, T = 16 };
    Gpt *m = random_model(&small, 11);
    char err[256];
    SampleCache *c = sample_cache_new(m, NS, err, sizeof err);
    CHECK(m && c);
    if (!m || !c)
        return;
    static const int len[NS] = {16, 9, 12}, start[NS] = {0, 3, 1};
    int32_t ids[NS][T];
    Rng r;
    rng_seed(&r, 5);
    for (int s = 0; s < NS; s++)
        for (int t = 0; t < T; t++)
            ids[s][t] = (int32_t)rng_below(&r, DATA_VOCAB);
    float *full[NS];
    for (int s = 0; s < NS; s++)
        full[s] = full_logits(m, ids[s], 1, len[s]);
    float logits[NS * DATA_VOCAB];
    double worst = 0;
    for (int step = 0; step < T + 3; step++) {
        int seq[NS], n = 0;
        int32_t tok[NS];
        for (int s = 0; s < NS; s++) {
            int p = step - start[s];
            if (p >= 0 && p < len[s]) {
                seq[n] = s;
                tok[n++] = ids[s][p];
            }
        }
        if (n == 0)
            continue;
        int rc = sample_cache_step(c, seq, tok, n, logits, err, sizeof err);
        CHECKF(rc == 0, "step %d: %s", step, err);
        for (int i = 0; rc == 0 && i < n; i++) {
            int s = seq[i], p = step - start[s];
            for (int v = 0; v < DATA_VOCAB; v++) {
                double want = full[s][(size_t)p * DATA_VOCAB + v];
                double d = fabs(logits[i * DATA_VOCAB + v] - want) / (1.0 + fabs(want));
                worst = d > worst ? d : worst;
            }
        }
    }
    CHECKF(worst < 1e-4, "worst relative logit difference %.3g", worst);
    for (int s = 0; s < NS; s++) {
        CHECK(sample_cache_len(c, s) == len[s]);
        free(full[s]);
    }
    sample_cache_free(c);
    gpt_free(m);
}

/* Filling the context, a token out of range, a sequence out of range: each
 * is an error with a message, never a write past a buffer. */
static void cache_errors_are_values(void)
{
    Gpt *m = random_model(&small, 12);
    char err[256] = "";
    SampleCache *c = sample_cache_new(m, 1, err, sizeof err);
    float logits[DATA_VOCAB];
    int seq = 0;
    int32_t tok = 65;
    int rc = 0;
    for (int t = 0; t < small.context && rc == 0; t++)
        rc = sample_cache_step(c, &seq, &tok, 1, logits, err, sizeof err);
    CHECK(rc == 0);
    CHECK(sample_cache_step(c, &seq, &tok, 1, logits, err, sizeof err) == -1);
    CHECKF(strstr(err, "full") != NULL, "err: %s", err);
    sample_cache_reset(c);
    tok = DATA_VOCAB;
    CHECK(sample_cache_step(c, &seq, &tok, 1, logits, err, sizeof err) == -1);
    CHECKF(strstr(err, "token") != NULL, "err: %s", err);
    tok = 1;
    seq = 1;
    CHECK(sample_cache_step(c, &seq, &tok, 1, logits, err, sizeof err) == -1);
    sample_cache_free(c);
    gpt_free(m);
}

static const char *const prompts6[] = {"the plot was ", "i saw it ",       "",
                                       "it was a ",     "the acting was ", "the plot was "};

static int generate(const Gpt *m, const SampleOptions *o, int n, SampleResult *out)
{
    char err[256];
    int rc = sample_generate(m, prompts6, n, o, out, err, sizeof err);
    if (rc != 0) {
        printf("# %s\n", err);
        fflush(stdout);
    }
    return rc;
}

static bool same_results(const SampleResult *a, const SampleResult *b, int n)
{
    for (int i = 0; i < n; i++)
        if (!a[i].text || !b[i].text || a[i].len != b[i].len || a[i].ended != b[i].ended ||
            strcmp(a[i].text, b[i].text) != 0)
            return false;
    return true;
}

/* Same seed, same bytes — also with 1 thread vs 2 and when sequences are
 * split over chunks differently; another seed, other bytes. */
static void sampling_is_deterministic(void)
{
    Gpt *m = random_model(&small, 13);
    SampleOptions o = {.temperature = 1.0, .seed = 99};
    SampleResult a[6], b[6], c[6], d[6];
    int saved = omp_get_max_threads();
    omp_set_num_threads(2);
    CHECK(generate(m, &o, 6, a) == 0);
    omp_set_num_threads(1);
    CHECK(generate(m, &o, 6, b) == 0);
    omp_set_num_threads(saved);
    CHECK(same_results(a, b, 6));
    CHECK(generate(m, &o, 3, c) == 0); /* a prefix of the prompts: same first three */
    CHECK(same_results(a, c, 3));
    o.seed = 100;
    CHECK(generate(m, &o, 6, d) == 0);
    CHECK(!same_results(a, d, 6));
    /* prompts 0 and 5 are equal but draw from different streams */
    CHECK(a[0].text && a[5].text && (strcmp(a[0].text, a[5].text) != 0 || a[0].len == 0));
    for (int i = 0; i < 6; i++) {
        CHECK(a[i].text && (int)strlen(a[i].text) == a[i].len);
        CHECK(a[i].len + (int)strlen(prompts6[i]) + 2 <= small.context);
    }
    sample_results_free(a, 6);
    sample_results_free(b, 6);
    sample_results_free(c, 3);
    sample_results_free(d, 6);
    gpt_free(m);
}

/* Temperature 0 is the argmax chain of the full forward; top_k = 1 at any
 * temperature is the same chain. */
static void greedy_follows_the_full_forward(void)
{
    Gpt *m = random_model(&small, 14);
    SampleOptions o = {.temperature = 0, .seed = 1};
    SampleResult g[1], k1[1];
    CHECK(generate(m, &o, 1, g) == 0);
    o.temperature = 3.0;
    o.top_k = 1;
    CHECK(generate(m, &o, 1, k1) == 0);
    CHECK(same_results(g, k1, 1));
    int32_t ids[64];
    int n = 0, p = (int)strlen(prompts6[0]);
    ids[n++] = DATA_TOK_EOT;
    data_tokenize(prompts6[0], (size_t)p, ids + 1);
    n += p;
    data_tokenize(g[0].text, (size_t)g[0].len, ids + n);
    int total = n + g[0].len;
    float *lg = full_logits(m, ids, 1, total);
    for (int t = n - 1; lg && t < total - 1; t++) {
        int best = 1;
        for (int v = 1; v < DATA_VOCAB; v++)
            best = lg[(size_t)t * DATA_VOCAB + v] > lg[(size_t)t * DATA_VOCAB + best] ? v : best;
        CHECKF(best == ids[t + 1], "position %d: argmax %d, greedy took %d", t, best, ids[t + 1]);
    }
    free(lg);
    sample_results_free(g, 1);
    sample_results_free(k1, 1);
    gpt_free(m);
}

/* top_k = 3: every sampled token is among the 3 largest logits there. */
static void top_k_keeps_the_k_best(void)
{
    Gpt *m = random_model(&small, 15);
    SampleOptions o = {.temperature = 2.0, .top_k = 3, .seed = 4};
    SampleResult s[1];
    CHECK(generate(m, &o, 1, s) == 0);
    int32_t ids[64];
    int p = (int)strlen(prompts6[0]), n = 1 + p;
    ids[0] = DATA_TOK_EOT;
    data_tokenize(prompts6[0], (size_t)p, ids + 1);
    data_tokenize(s[0].text, (size_t)s[0].len, ids + n);
    float *lg = full_logits(m, ids, 1, n + s[0].len);
    for (int t = n - 1; lg && t < n + s[0].len - 1; t++) {
        const float *row = lg + (size_t)t * DATA_VOCAB;
        int above = 0;
        for (int v = 1; v < DATA_VOCAB; v++)
            above += row[v] > row[ids[t + 1]] + 1e-4f;
        CHECKF(above < 3, "position %d: token %d has %d better tokens", t, ids[t + 1], above);
    }
    free(lg);
    sample_results_free(s, 1);
    gpt_free(m);
}

/* The log-prob accumulated while sampling equals teacher-forced scoring;
 * two copies of a model score bit for bit the same. */
static void sampling_logp_matches_scoring(void)
{
    Gpt *m = random_model(&small, 16);
    char err[256];
    Gpt *copy = gpt_clone_frozen(m, err, sizeof err);
    SampleOptions o = {.temperature = 1.0, .seed = 8};
    SampleResult s[6];
    CHECK(generate(m, &o, 6, s) == 0);
    double a[6], b[6];
    CHECK(sample_score(m, prompts6, s, 6, a, err, sizeof err) == 0);
    CHECK(sample_score(copy, prompts6, s, 6, b, err, sizeof err) == 0);
    for (int i = 0; i < 6; i++) {
        CHECK_NEAR(a[i], s[i].logp, 1e-3 * (1 + fabs(a[i])));
        CHECK(a[i] == b[i]);
        CHECK(a[i] < 0);
    }
    sample_results_free(s, 6);
    gpt_free(copy);
    gpt_free(m);
}

/* Save then load: same config, same weights; a missing file is an error. */
static void model_file_round_trip(void)
{
    Gpt *m = random_model(&small, 17);
    char err[256], path[256], resolved[512];
    snprintf(path, sizeof path, "/tmp/prefrun-test-sample-%d.safetensors", (int)getpid());
    CHECK(model_file_save(m, path, NULL, err, sizeof err) == 0);
    Gpt *back = NULL;
    int rc = run_model_load(path, &back, resolved, sizeof resolved, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (rc == 0) {
        CHECK(gpt_config_equal(&back->cfg, &m->cfg));
        CHECK(memcmp(back->all->data, m->all->data, (size_t)m->all->size * sizeof(float)) == 0);
        CHECK(strcmp(resolved, path) == 0);
    }
    gpt_free(back);
    remove(path);
    CHECK(run_model_load(path, &back, NULL, 0, err, sizeof err) == -1);
    CHECK(back == NULL);
    gpt_free(m);
}

/* ---- with a tokenizer -------------------------------------------------------- */

/* Token ids from the tokenizers' own files, as Hugging Face gives them
 * (GPT2TokenizerFast("Hello world") and Qwen's chat template texts). */
#define GPT2_EOT 50256
#define GPT2_HELLO 15496  /* "Hello" */
#define GPT2_WORLD 995    /* " world" */
#define GPT2_PADDED 50304 /* GPT-2's vocabulary padded to a multiple of 64, as nanoGPT does */
#define QWEN_IM_START 151644
#define QWEN_IM_END 151645 /* Qwen3's eos_token */
#define QWEN_USER 872      /* "user" */
#define QWEN_NEWLINE 198   /* a newline */
#define QWEN_PADDED 151936 /* Qwen3's vocab_size: the tokenizer has 151669 ids */

static Tokenizer *load_tokenizer(const char *name)
{
    char dir[512], err[512];
    const char *d = getenv("PREFRUN_TOKENIZER_DATA");
    snprintf(dir, sizeof dir, "%s/%s", d ? d : PREFRUN_SOURCE_ROOT "/.deps/tokenizers", name);
    Tokenizer *t = tokenizer_load(dir, err, sizeof err);
    if (!t)
        printf("# %s\n", err);
    return t;
}

static bool skip_without(const Tokenizer *t, const char *name)
{
    if (t)
        return false;
    tl_cases++;
    printf("ok %d - %s # SKIP no tokenizer files (bash tests/fetch_tokenizers.sh)\n", tl_cases,
           name);
    return true;
}

/* A model whose logits do not depend on the context: the final LayerNorm's
 * weight is 0, so its output is its bias b at every position, and the
 * logit of token v is b . wte[v]. wte[v] = c b / |b|^2 makes that logit c;
 * every other row stays random (|logit| well under 1). */
static Gpt *constant_logits_model(int vocab, uint64_t seed)
{
    GptConfig cfg = {.vocab = vocab, .context = 16, .width = 16, .layers = 1, .heads = 2};
    Gpt *m = random_model(&cfg, seed);
    if (!m)
        return NULL;
    for (int i = 0; i < cfg.width; i++)
        m->lnfw->data[i] = 0;
    return m;
}

static void set_logit(Gpt *m, int v, double c)
{
    int C = m->cfg.width;
    double bb = 0;
    for (int i = 0; i < C; i++)
        bb += (double)m->lnfb->data[i] * m->lnfb->data[i];
    for (int i = 0; i < C; i++)
        m->wte->data[(size_t)v * C + i] = (float)(c * m->lnfb->data[i] / bb);
}

/* log softmax(l)[v] in double, l_u = b . wte[u] over the whole vocabulary */
static double constant_logp(const Gpt *m, int v)
{
    int C = m->cfg.width, V = m->cfg.vocab;
    double mx = -INFINITY, s = 0, *l = malloc((size_t)V * sizeof *l);
    for (int u = 0; u < V; u++) {
        l[u] = 0;
        for (int i = 0; i < C; i++)
            l[u] += (double)m->lnfb->data[i] * m->wte->data[(size_t)u * C + i];
        mx = l[u] > mx ? l[u] : mx;
    }
    for (int u = 0; u < V; u++)
        s += exp(l[u] - mx);
    double out = l[v] - mx - log(s);
    free(l);
    return out;
}

static bool ids_are(const SampleResult *r, const int32_t *want, int n)
{
    if (!r->ids || r->n_ids != n)
        return false;
    for (int i = 0; i < n; i++)
        if (r->ids[i] != want[i])
            return false;
    return true;
}

/* The prompt is encoded without special tokens added (TRL's
 * add_special_tokens=False), an empty one becomes [BOS]; padded ids, the
 * likeliest of all here, are never drawn; greedy repeats the best real
 * token to max_new_tokens, and the text is its decode; the log-prob is the
 * closed-form log-softmax, and sample_score of the kept ids gives it too. */
static void tokenizer_prompts_padding_and_text(void)
{
    Tokenizer *tok = load_tokenizer("gpt2");
    if (skip_without(tok, __func__))
        return;
    Gpt *m = constant_logits_model(GPT2_PADDED, 21);
    for (int v = 50257; v < GPT2_PADDED; v++)
        set_logit(m, v, 10); /* padding rows: the model's favourites */
    set_logit(m, GPT2_HELLO, 5);
    SampleOptions o = {.temperature = 0, .max_new_tokens = 3, .tokenizer = tok};
    const char *prompts[2] = {"Hello world", ""};
    SampleResult r[2];
    char err[256];
    int rc = sample_generate(m, prompts, 2, &o, r, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    if (rc == 0) {
        const int32_t want0[] = {GPT2_HELLO, GPT2_WORLD, GPT2_HELLO, GPT2_HELLO, GPT2_HELLO};
        const int32_t want1[] = {GPT2_EOT, GPT2_HELLO, GPT2_HELLO, GPT2_HELLO};
        CHECK(ids_are(&r[0], want0, 5) && r[0].prompt_len == 2);
        CHECK(ids_are(&r[1], want1, 4) && r[1].prompt_len == 1);
        for (int i = 0; i < 2; i++) {
            CHECKF(r[i].text && strcmp(r[i].text, "HelloHelloHello") == 0, "text %s", r[i].text);
            CHECK(r[i].len == 15 && !r[i].ended);
            CHECK_NEAR(r[i].logp, 3 * constant_logp(m, GPT2_HELLO), 1e-4);
        }
        double lp[2];
        CHECK(sample_score(m, prompts, r, 2, lp, err, sizeof err) == 0);
        CHECK_NEAR(lp[0], r[0].logp, 1e-4);
        CHECK_NEAR(lp[1], r[1].logp, 1e-4);
        sample_results_free(r, 2);
    }
    /* temperature 1: still never a padded id, whatever the seed */
    o = (SampleOptions){.temperature = 1, .seed = 3, .max_new_tokens = 8, .tokenizer = tok};
    const char *p4[4] = {"a", "b", "c", "d"};
    SampleResult s[4];
    CHECK(sample_generate(m, p4, 4, &o, s, err, sizeof err) == 0);
    for (int i = 0; i < 4; i++)
        for (int t = 0; s[i].ids && t < s[i].n_ids; t++)
            CHECKF(s[i].ids[t] < 50257, "sample %d drew padded id %d", i, (int)s[i].ids[t]);
    sample_results_free(s, 4);
    gpt_free(m);
    tokenizer_free(tok);
}

/* A completion ends at the tokenizer's EOS, or at a stop id; neither is in
 * the text, both are in the ids, and the log-prob counts them. */
static void tokenizer_eos_and_stop_ids_end_completions(void)
{
    Tokenizer *tok = load_tokenizer("gpt2");
    if (skip_without(tok, __func__))
        return;
    Gpt *m = constant_logits_model(50257, 22);
    set_logit(m, GPT2_EOT, 6);
    SampleOptions o = {.temperature = 0, .tokenizer = tok};
    const char *prompts[1] = {"Hello"};
    SampleResult r[1];
    char err[256];
    CHECK(sample_generate(m, prompts, 1, &o, r, err, sizeof err) == 0);
    const int32_t want[] = {GPT2_HELLO, GPT2_EOT};
    CHECK(ids_are(&r[0], want, 2) && r[0].ended && r[0].len == 0 && r[0].text && !r[0].text[0]);
    CHECK_NEAR(r[0].logp, constant_logp(m, GPT2_EOT), 1e-4);
    sample_results_free(r, 1);
    set_logit(m, GPT2_EOT, -6);
    set_logit(m, GPT2_WORLD, 6);
    o.n_stop = 1;
    o.stop_ids[0] = GPT2_WORLD;
    CHECK(sample_generate(m, prompts, 1, &o, r, err, sizeof err) == 0);
    const int32_t want2[] = {GPT2_HELLO, GPT2_WORLD};
    CHECK(ids_are(&r[0], want2, 2) && r[0].ended && r[0].len == 0);
    sample_results_free(r, 1);
    gpt_free(m);
    tokenizer_free(tok);
}

/* Qwen3: special tokens written in the prompt are its own ids, the EOS is
 * tokenizer_config.json's <|im_end|>, and an empty prompt, with no BOS to
 * start from, is an error saying so. */
static void tokenizer_without_bos_and_special_prompts(void)
{
    Tokenizer *tok = load_tokenizer("qwen3");
    if (skip_without(tok, __func__))
        return;
    Gpt *m = constant_logits_model(QWEN_PADDED, 23);
    set_logit(m, QWEN_IM_END, 6);
    SampleOptions o = {.temperature = 0, .tokenizer = tok};
    const char *prompts[1] = {"<|im_start|>user\n"};
    SampleResult r[1];
    char err[256];
    int rc = sample_generate(m, prompts, 1, &o, r, err, sizeof err);
    CHECKF(rc == 0, "%s", err);
    const int32_t want[] = {QWEN_IM_START, QWEN_USER, QWEN_NEWLINE, QWEN_IM_END};
    CHECK(rc == 0 && ids_are(&r[0], want, 4) && r[0].prompt_len == 3 && r[0].ended);
    if (rc == 0)
        sample_results_free(r, 1);
    const char *empty[1] = {""};
    CHECK(sample_generate(m, empty, 1, &o, r, err, sizeof err) == -1);
    CHECKF(strstr(err, "no BOS") != NULL, "err: %s", err);
    gpt_free(m);
    tokenizer_free(tok);
}

/* generation_config.json's eos_token_id, a number or a list. */
static void stop_ids_from_generation_config(void)
{
    char dir[] = "/tmp/prefrun-test-sample-genXXXXXX", err[512];
    CHECK(mkdtemp(dir) != NULL);
    SampleOptions o = {0};
    CHECK(sample_stop_ids_load(dir, &o, err, sizeof err) == 0 && o.n_stop == 0);
    const char *path = tfs_join(dir, "generation_config.json");
    const char *list = "{\"bos_token_id\": 1, \"eos_token_id\": [151645, 151643]}";
    CHECK(fsutil_write_atomic(path, list, strlen(list), err, sizeof err) == 0);
    CHECK(sample_stop_ids_load(dir, &o, err, sizeof err) == 0);
    CHECK(o.n_stop == 2 && o.stop_ids[0] == 151645 && o.stop_ids[1] == 151643);
    const char *one = "{\"eos_token_id\": 50256}";
    CHECK(fsutil_write_atomic(path, one, strlen(one), err, sizeof err) == 0);
    CHECK(sample_stop_ids_load(dir, &o, err, sizeof err) == 0);
    CHECK(o.n_stop == 1 && o.stop_ids[0] == 50256);
    const char *bad = "{\"eos_token_id\": \"</s>\"}";
    CHECK(fsutil_write_atomic(path, bad, strlen(bad), err, sizeof err) == 0);
    CHECK(sample_stop_ids_load(dir, &o, err, sizeof err) == -1);
    CHECKF(strstr(err, "generation_config.json") && strstr(err, "eos_token_id"), "err: %s", err);
    remove(path);
    rmdir(dir);
}

int main(void)
{
    RUN(kv_cache_equals_full_forward);
    RUN(cache_errors_are_values);
    RUN(sampling_is_deterministic);
    RUN(greedy_follows_the_full_forward);
    RUN(top_k_keeps_the_k_best);
    RUN(sampling_logp_matches_scoring);
    RUN(model_file_round_trip);
    RUN(tokenizer_prompts_padding_and_text);
    RUN(tokenizer_eos_and_stop_ids_end_completions);
    RUN(tokenizer_without_bos_and_special_prompts);
    RUN(stop_ids_from_generation_config);
    return tl_done();
}
