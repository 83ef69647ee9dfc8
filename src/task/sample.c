/*
 * task/sample.c — sampling and scoring (see sample.h for the token layout,
 * the end of a completion and the determinism rule), on model/decode.h's
 * KV-cache decoder.
 *
 * Each thread's decoder is sized to the longest sequence this call feeds
 * (a prompt and its completion but the last token, within the context),
 * not to the whole context: the cache grows with what is generated.
 *
 * Sampling keeps each sequence's ids (prompt, then completion) in its Gen;
 * what may be drawn (Cands) and what ends a completion (Vocab) are the
 * byte layout's or the tokenizer's, fixed before the threads start and
 * only read by them. Without a tokenizer the draws are the same
 * arithmetic, in the same order, as before tokenizers existed, so the
 * task's cached pairs stay valid.
 *
 * Letters: S sequences in a decoder, n rows in one step (n <= S), maxT
 * context, V vocabulary.
 */
#include "task/sample.h"

#include <cblas.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/data.h"
#include "util/errmsg.h"
#include "util/fsutil.h"
#include "util/jsonfile.h"
#include "core/ops.h"
#include "core/rng.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int sample_blas_enter(void)
{
    int n = openblas_get_num_threads();
    if (n != 1)
        openblas_set_num_threads(1);
    return n;
}

void sample_blas_leave(int n)
{
    if (n != 1)
        openblas_set_num_threads(n);
}

/* ---- KV cache: model/decode.h's decoder over the whole context -------- */

SampleCache *sample_cache_new(const Gpt *m, int n_seq, char *err, size_t errlen)
{
    return gpt_decoder_new(m, n_seq, m->cfg.context, err, errlen);
}

void sample_cache_free(SampleCache *c) { gpt_decoder_free(c); }

void sample_cache_reset(SampleCache *c) { gpt_decoder_reset(c); }

int sample_cache_len(const SampleCache *c, int s) { return gpt_decoder_len(c, s); }

int sample_cache_step(SampleCache *c, const int *seq, const int32_t *tok, int n, float *logits,
                      char *err, size_t errlen)
{
    return gpt_decoder_step(c, seq, tok, n, logits, err, errlen);
}

/* ---- sampling ----------------------------------------------------------- */

/* The ids a draw may pick: those of [lo, hi) where allow is NULL or 1. */
typedef struct Cands {
    int lo, hi;
    unsigned char *allow; // (V) or NULL
    int n;                /* how many */
} Cands;

/* What ends a completion and what its text is: the byte layout's EOT, or a
 * tokenizer's EOS and stop ids. */
typedef struct Vocab {
    const Tokenizer *tok; /* NULL: bytes */
    Cands c;
    int32_t stop[SAMPLE_MAX_STOP + 1];
    int n_stop;
} Vocab;

/* One sequence's generation state. */
typedef struct Gen {
    int32_t *ids; // (plen + cap + 1) the prompt's ids, then the completion's
    int plen;     /* prompt ids, the leading EOT or BOS included */
    int fed;      /* ids fed so far */
    int cap;      /* most completion tokens: leaves room for EOS in maxT */
    int n;        /* completion tokens, EOS included once ended */
    char *text;   // (cap + 1) the byte layout's bytes, as they come
    int len;
    bool done, ended;
    double logp;
    int32_t next; /* the token to feed at the next step */
    Rng rng;
} Gen;

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* log p(t) under the model's full softmax, as sample_score computes it */
static double token_logp(const float *lg, int V, int t)
{
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < V; i++)
        mx = lg[i] > mx ? lg[i] : mx;
    for (int i = 0; i < V; i++)
        s += exp((double)lg[i] - mx);
    return (double)lg[t] - mx - log(s);
}

static bool is_cand(const Cands *c, int i) { return !c->allow || c->allow[i]; }

/* The top-k cut: the k-th largest candidate logit (ties at it all stay
 * in), or -inf when k keeps every candidate. work (V) is scratch. */
static float top_k_cut(const float *lg, const Cands *c, int k, float *work)
{
    if (k <= 0 || k >= c->n)
        return -INFINITY;
    int m = 0;
    for (int i = c->lo; i < c->hi; i++)
        if (is_cand(c, i))
            work[m++] = lg[i];
    qsort(work, (size_t)m, sizeof(float), cmp_desc);
    return work[k - 1];
}

/* Draws a token from lg (V) among the candidates with temperature and
 * top-k; work (V) is scratch. */
static int32_t draw(const float *lg, const Cands *c, const SampleOptions *o, Rng *r, float *work)
{
    int best = -1;
    for (int i = c->lo; i < c->hi; i++)
        if (is_cand(c, i) && (best < 0 || lg[i] > lg[best]))
            best = i;
    if (o->temperature <= 0)
        return best;
    float cut = top_k_cut(lg, c, o->top_k, work);
    double total = 0, inv_t = 1.0 / o->temperature;
    for (int i = c->lo; i < c->hi; i++)
        total += is_cand(c, i) && lg[i] >= cut ? exp(((double)lg[i] - lg[best]) * inv_t) : 0.0;
    double u = rng_uniform(r) * total, acc = 0;
    int last = best;
    for (int i = c->lo; i < c->hi; i++) {
        if (!is_cand(c, i) || lg[i] < cut)
            continue;
        acc += exp(((double)lg[i] - lg[best]) * inv_t);
        last = i;
        if (u < acc)
            return i;
    }
    return last; /* u within rounding of total */
}

static uint64_t seq_seed(uint64_t seed, int64_t i)
{
    return seed ^ (0x9E3779B97F4A7C15ULL * (uint64_t)(i + 1));
}

/* The byte layout's prompt row: [EOT] + bytes(prompt). */
static int prompt_bytes(const char *prompt, int32_t **ids, int *n, char *err, size_t errlen)
{
    size_t p = strlen(prompt);
    if (p > (size_t)INT32_MAX - 1 || !(*ids = malloc((p + 1) * sizeof **ids)))
        return err_fail(err, errlen, "sample: out of memory");
    (*ids)[0] = DATA_TOK_EOT;
    data_tokenize(prompt, p, *ids + 1);
    *n = (int)p + 1;
    return 0;
}

/* A tokenizer's prompt row: encode(prompt) without BOS/EOS, special tokens
 * in the text recognised (as data.h); [BOS] for an empty prompt. */
static int prompt_tokens(const Tokenizer *tok, const char *prompt, int64_t index, int32_t **ids,
                         int *n, char *err, size_t errlen)
{
    size_t k = 0;
    char e[256];
    if (tokenizer_encode(tok, prompt, strlen(prompt), TOKENIZER_SPECIAL, ids, &k, e, sizeof e))
        return err_fail(err, errlen, "sample: prompt %lld: %s", (long long)index, e);
    if (k == 0) {
        int32_t bos = tokenizer_bos_id(tok);
        if (bos < 0)
            return err_fail(err, errlen,
                            "sample: prompt %lld is empty and the tokenizer has no BOS token to "
                            "start from: give a prompt",
                            (long long)index);
        free(*ids);
        if (!(*ids = malloc(sizeof **ids)))
            return err_fail(err, errlen, "sample: out of memory");
        (*ids)[k++] = bos;
    }
    *n = (int)k;
    return 0;
}

/* The prompt's row in g->ids (room for the completion after it). */
static int gen_prompt(Gen *g, const Vocab *v, const char *prompt, int V, int64_t index, char *err,
                      size_t errlen)
{
    int32_t *p = NULL;
    int n = 0;
    int rc = v->tok ? prompt_tokens(v->tok, prompt, index, &p, &n, err, errlen)
                    : prompt_bytes(prompt, &p, &n, err, errlen);
    for (int i = 0; rc == 0 && i < n; i++)
        if (p[i] < 0 || p[i] >= V)
            rc = err_fail(err, errlen,
                          "sample: prompt %lld: token %d is beyond the model's vocabulary of %d",
                          (long long)index, (int)p[i], V);
    if (rc == 0) {
        g->ids = p;
        g->plen = n;
    } else {
        free(p);
    }
    return rc;
}

static int gen_init(Gen *g, const Vocab *v, const char *prompt, const GptConfig *m,
                    const SampleOptions *o, int64_t index, char *err, size_t errlen)
{
    *g = (Gen){0};
    if (gen_prompt(g, v, prompt, m->vocab, index, err, errlen) != 0)
        return -1;
    /* prompt, completion and EOS must fit in maxT positions */
    g->cap = m->context - 1 - g->plen;
    if (o->max_new_tokens > 0 && o->max_new_tokens < g->cap)
        g->cap = o->max_new_tokens;
    if (g->cap < 1)
        return err_fail(err, errlen,
                        "sample: prompt %lld (%d tokens) leaves no room in a context of %d",
                        (long long)index, g->plen, m->context);
    int32_t *ids = realloc(g->ids, ((size_t)g->plen + g->cap + 1) * sizeof *ids);
    if (!ids)
        return err_fail(err, errlen, "sample: out of memory");
    g->ids = ids;
    g->text = v->tok ? NULL : malloc((size_t)g->cap + 1);
    if (!v->tok && !g->text)
        return err_fail(err, errlen, "sample: out of memory");
    if (g->text)
        g->text[0] = '\0';
    g->next = g->ids[0];
    g->fed = 1;
    rng_seed(&g->rng, seq_seed(o->seed, index));
    return 0;
}

static bool is_stop(const Vocab *v, int32_t t)
{
    for (int i = 0; i < v->n_stop; i++)
        if (t == v->stop[i])
            return true;
    return false;
}

/* After a step: feed the prompt on, or sample the next token from lg. */
static void gen_advance(Gen *g, const float *lg, int V, const Vocab *v, const SampleOptions *o,
                        float *work)
{
    if (g->fed < g->plen) {
        g->next = g->ids[g->fed++];
        return;
    }
    int32_t t = draw(lg, &v->c, o, &g->rng, work);
    g->logp += token_logp(lg, V, t);
    g->ids[g->plen + g->n++] = t;
    if (is_stop(v, t)) {
        g->done = g->ended = true;
        return;
    }
    if (g->text) {
        g->text[g->len++] = (char)t;
        g->text[g->len] = '\0';
    }
    g->next = t;
    g->done = g->n >= g->cap;
}

typedef struct ChunkWork {
    GptDecoder *dec;
    int V;
    float *logits; // (S, V)
    float *work;   // (V)
    int *seq;      // (S)
    int32_t *tok;  // (S)
} ChunkWork;

/* Runs n <= SAMPLE_CHUNK generations to the end. */
static int generate_chunk(ChunkWork *w, Gen *g, int n, const Vocab *v, const SampleOptions *o,
                          char *err, size_t errlen)
{
    int V = w->V;
    gpt_decoder_reset(w->dec);
    for (;;) {
        int rows = 0;
        for (int i = 0; i < n; i++)
            if (!g[i].done) {
                w->seq[rows] = i;
                w->tok[rows++] = g[i].next;
            }
        if (rows == 0)
            return 0;
        if (gpt_decoder_step(w->dec, w->seq, w->tok, rows, w->logits, err, errlen) != 0)
            return -1;
        for (int r = 0; r < rows; r++)
            gen_advance(&g[w->seq[r]], w->logits + (size_t)r * V, V, v, o, w->work);
    }
}

static void chunk_work_free(ChunkWork *w)
{
    gpt_decoder_free(w->dec);
    free(w->logits);
    free(w->work);
    free(w->seq);
    free(w->tok);
}

/* A decoder for SAMPLE_CHUNK sequences of max_len tokens, and its rows. */
static int chunk_work_new(ChunkWork *w, const Gpt *m, int max_len, char *err, size_t errlen)
{
    size_t V = (size_t)m->cfg.vocab;
    *w = (ChunkWork){.dec = gpt_decoder_new(m, SAMPLE_CHUNK, max_len, err, errlen),
                     .V = m->cfg.vocab};
    if (!w->dec)
        return -1;
    w->logits = malloc(SAMPLE_CHUNK * V * sizeof(float));
    w->work = malloc(V * sizeof(float));
    w->seq = malloc(SAMPLE_CHUNK * sizeof(int));
    w->tok = malloc(SAMPLE_CHUNK * sizeof(int32_t));
    if (w->logits && w->work && w->seq && w->tok)
        return 0;
    chunk_work_free(w);
    return err_fail(err, errlen, "sample: out of memory");
}

/* The generation's shared, read-only state. */
typedef struct GenAll {
    const Gpt *m;
    Gen *g;
    int n;
    const Vocab *v;
    const SampleOptions *o;
    int max_len; /* the most tokens any of g feeds: the decoders' size */
} GenAll;

/* Generates chunks ci = first, first + stride, ... with one ChunkWork. */
static int generate_strided(const GenAll *a, int first, int stride, char *err, size_t errlen)
{
    ChunkWork w;
    if (chunk_work_new(&w, a->m, a->max_len, err, errlen) != 0)
        return -1;
    int rc = 0;
    for (int c0 = first * SAMPLE_CHUNK; rc == 0 && c0 < a->n; c0 += stride * SAMPLE_CHUNK) {
        int k = a->n - c0 < SAMPLE_CHUNK ? a->n - c0 : SAMPLE_CHUNK;
        rc = generate_chunk(&w, a->g + c0, k, a->v, a->o, err, errlen);
    }
    chunk_work_free(&w);
    return rc;
}

/* Every chunk, split over the OpenMP threads; the first error wins. */
static int generate_all(const GenAll *a, char *err, size_t errlen)
{
    int failed = 0, saved = sample_blas_enter();
#pragma omp parallel
    {
        char my_err[256];
        int nt = 1, id = 0;
#ifdef _OPENMP
        nt = omp_get_num_threads();
        id = omp_get_thread_num();
#endif
        if (generate_strided(a, id, nt, my_err, sizeof my_err) != 0) {
#pragma omp critical(sample_err)
            if (!failed++)
                snprintf(err, errlen, "%s", my_err);
        }
    }
    sample_blas_leave(saved);
    return failed ? -1 : 0;
}

/* The candidates and stops of o for a model of V tokens. */
static int vocab_make(Vocab *v, const SampleOptions *o, int V, char *err, size_t errlen)
{
    *v = (Vocab){.tok = o->tokenizer};
    if (!v->tok) { /* bytes 1..255 and EOT: token 0 would end a C string */
        v->c = (Cands){.lo = 1, .hi = V < DATA_VOCAB ? V : DATA_VOCAB};
        v->c.n = v->c.hi - v->c.lo;
        v->stop[v->n_stop++] = DATA_TOK_EOT;
        return v->c.n > 0 ? 0 : err_fail(err, errlen, "sample: a model of %d tokens", V);
    }
    if (o->n_stop < 0 || o->n_stop > SAMPLE_MAX_STOP)
        return err_fail(err, errlen, "sample: %d stop ids (at most %d)", o->n_stop,
                        SAMPLE_MAX_STOP);
    int32_t tv = tokenizer_vocab_size(v->tok);
    v->c = (Cands){.lo = 0, .hi = V < tv ? V : tv, .allow = calloc((size_t)V, 1)};
    if (!v->c.allow)
        return err_fail(err, errlen, "sample: out of memory");
    for (int i = v->c.lo; i < v->c.hi; i++) {
        size_t k;
        v->c.allow[i] = tokenizer_token_bytes(v->tok, i, &k) != NULL;
        v->c.n += v->c.allow[i];
    }
    if (tokenizer_eos_id(v->tok) >= 0)
        v->stop[v->n_stop++] = tokenizer_eos_id(v->tok);
    for (int i = 0; i < o->n_stop; i++)
        v->stop[v->n_stop++] = o->stop_ids[i];
    if (v->c.n == 0)
        return err_fail(err, errlen, "sample: no id below %d is a token of the tokenizer", V);
    return 0;
}

/* A tokenizer's completion text: its ids decoded, the EOS left out,
 * special tokens skipped. */
static int gen_decode(Gen *g, const Tokenizer *tok, char *err, size_t errlen)
{
    char *text, e[256];
    size_t len;
    int n = g->n - (g->ended ? 1 : 0);
    if (tokenizer_decode(tok, g->ids + g->plen, (size_t)n, TOKENIZER_SKIP_SPECIAL, &text, &len, e,
                         sizeof e) != 0)
        return err_fail(err, errlen, "sample: %s", e);
    if (len > INT32_MAX) {
        free(text);
        return err_fail(err, errlen, "sample: a completion of %zu bytes", len);
    }
    g->text = text;
    g->len = (int)len;
    return 0;
}

static int generate(const Gpt *m, const char *const *prompts, Gen *g, int n, const Vocab *v,
                    const SampleOptions *o, char *err, size_t errlen)
{
    int rc = 0;
    GenAll a = {m, g, n, v, o, 1};
    for (int i = 0; rc == 0 && i < n; i++) {
        rc = gen_init(&g[i], v, prompts[i], &m->cfg, o, i, err, errlen);
        /* the prompt, then every completion token but the last (never fed) */
        if (rc == 0 && g[i].plen + g[i].cap - 1 > a.max_len)
            a.max_len = g[i].plen + g[i].cap - 1;
    }
    if (rc == 0)
        rc = generate_all(&a, err, errlen);
    for (int i = 0; rc == 0 && v->tok && i < n; i++)
        rc = gen_decode(&g[i], v->tok, err, errlen);
    return rc;
}

int sample_generate(const Gpt *m, const char *const *prompts, int n, const SampleOptions *o,
                    SampleResult *out, char *err, size_t errlen)
{
    if (n <= 0)
        return 0;
    if (o->temperature < 0 || !isfinite(o->temperature) || o->top_k < 0)
        return err_fail(err, errlen, "sample: temperature must be >= 0 and top_k >= 0");
    Vocab v;
    Gen *g = calloc((size_t)n, sizeof *g);
    int rc = g ? vocab_make(&v, o, m->cfg.vocab, err, errlen)
               : err_fail(err, errlen, "sample: out of memory");
    if (rc == 0)
        rc = generate(m, prompts, g, n, &v, o, err, errlen);
    for (int i = 0; g && i < n; i++) {
        out[i] = (SampleResult){.text = g[i].text,
                                .len = g[i].len,
                                .ended = g[i].ended,
                                .logp = g[i].logp,
                                .ids = g[i].ids,
                                .n_ids = g[i].plen + g[i].n,
                                .prompt_len = g[i].plen};
        if (rc != 0) {
            sample_results_free(&out[i], 1);
            out[i] = (SampleResult){0};
        }
    }
    if (g)
        free(v.c.allow);
    free(g);
    return rc;
}

void sample_results_free(SampleResult *r, int n)
{
    for (int i = 0; r && i < n; i++) {
        free(r[i].text);
        free(r[i].ids);
        r[i].text = NULL;
        r[i].ids = NULL;
    }
}

/* ---- stop ids --------------------------------------------------------------- */

static int stop_id_add(SampleOptions *o, const json_t *v, const char *path, char *err,
                       size_t errlen)
{
    json_int_t id = json_integer_value(v);
    if (!json_is_integer(v) || id < 0 || id > INT32_MAX)
        return err_fail(err, errlen, "%s: eos_token_id: expected token ids (integers >= 0)", path);
    if (o->n_stop >= SAMPLE_MAX_STOP)
        return err_fail(err, errlen, "%s: eos_token_id: more than %d ids", path, SAMPLE_MAX_STOP);
    o->stop_ids[o->n_stop++] = (int32_t)id;
    return 0;
}

int sample_stop_ids_load(const char *dir, SampleOptions *o, char *err, size_t errlen)
{
    char path[4096];
    static const FsReadCap cap = {(size_t)4 << 20, "a generation_config.json", false};
    o->n_stop = 0;
    if (snprintf(path, sizeof path, "%s/generation_config.json", dir) >= (int)sizeof path)
        return err_fail(err, errlen, "%s: path too long", dir);
    if (!fsutil_exists(path))
        return 0;
    json_t *j = jsonfile_load(path, &cap, err, errlen);
    if (!j)
        return -1;
    const json_t *e = json_object_get(j, "eos_token_id");
    int rc = 0;
    if (json_is_array(e))
        for (size_t i = 0; rc == 0 && i < json_array_size(e); i++)
            rc = stop_id_add(o, json_array_get(e, i), path, err, errlen);
    else if (e && !json_is_null(e))
        rc = stop_id_add(o, e, path, err, errlen);
    json_decref(j);
    return rc;
}

/* ---- scoring ------------------------------------------------------------ */

/* Tokens of result r's row: its ids, or [EOT] prompt completion [EOT if
 * ended]. */
static int score_len(const char *prompt, const SampleResult *r)
{
    if (r->ids)
        return r->n_ids;
    return 1 + (int)strlen(prompt) + r->len + (r->ended ? 1 : 0);
}

/* Row i of ids and targets (T positions): the row's tokens, padded with its
 * first; targets from the first completion token on, -1 elsewhere. seq is
 * scratch for the row's len tokens. */
static void score_fill(const char *prompt, const SampleResult *r, int T, int32_t *seq, int32_t *ids,
                       int32_t *tg)
{
    int len = score_len(prompt, r), start;
    if (r->ids) {
        memcpy(seq, r->ids, (size_t)len * sizeof *seq);
        start = r->prompt_len;
    } else {
        int p = (int)strlen(prompt);
        seq[0] = DATA_TOK_EOT;
        data_tokenize(prompt, (size_t)p, seq + 1);
        data_tokenize(r->text, (size_t)r->len, seq + 1 + p);
        if (r->ended)
            seq[len - 1] = DATA_TOK_EOT;
        start = 1 + p;
    }
    for (int t = 0; t < T; t++) {
        ids[t] = t < len ? seq[t] : seq[0]; /* padding: never attended to by the row's tokens */
        tg[t] = t + 1 < len && t + 1 >= start ? seq[t + 1] : -1;
    }
}

/* One forward over n results: logp[i] = sum of row i's target log-probs. */
static int score_chunk(const Gpt *m, TensorCtx *ctx, const char *const *prompts,
                       const SampleResult *res, int n, double *logp, char *err, size_t errlen)
{
    int maxT = m->cfg.context, T = 1;
    if (n < 1)
        return 0;
    for (int i = 0; i < n; i++) {
        int len = score_len(prompts[i], &res[i]);
        if (len > maxT + 1) /* T = len - 1 positions predict the len - 1 tokens after the first */
            return err_fail(err, errlen, "sample: completion %d does not fit in a context of %d", i,
                            maxT);
        if (res[i].ids && (res[i].prompt_len < 1 || res[i].prompt_len > len))
            return err_fail(err, errlen, "sample: result %d: a prompt of %d of its %d ids", i,
                            res[i].prompt_len, len);
        for (int t = 0; res[i].ids && t < len; t++)
            if (res[i].ids[t] < 0 || res[i].ids[t] >= m->cfg.vocab)
                return err_fail(err, errlen,
                                "sample: result %d: token %d is beyond the model's vocabulary "
                                "of %d",
                                i, (int)res[i].ids[t], m->cfg.vocab);
        T = len - 1 > T ? len - 1 : T;
    }
    int32_t *seq = malloc((size_t)(maxT + 1) * sizeof *seq);
    int32_t *ids = malloc((size_t)n * T * sizeof *ids), *tg = malloc((size_t)n * T * sizeof *tg);
    int rc = seq && ids && tg ? 0 : err_fail(err, errlen, "sample: out of memory");
    for (int i = 0; rc == 0 && i < n; i++)
        score_fill(prompts[i], &res[i], T, seq, ids + (size_t)i * T, tg + (size_t)i * T);
    Tensor *lp = rc == 0 ? gpt_token_logps(m, ctx, ids, tg, n, T) : NULL; // (n, T)
    if (rc == 0 && !lp)
        rc = err_fail(err, errlen, "sample: %s", tensor_ctx_error(ctx));
    for (int i = 0; rc == 0 && i < n; i++) {
        double s = 0;
        for (int t = 0; t < T; t++)
            s += lp->data[(size_t)i * T + t];
        logp[i] = s;
    }
    free(seq);
    free(ids);
    free(tg);
    return rc;
}

int sample_score(const Gpt *m, const char *const *prompts, const SampleResult *res, int n,
                 double *logp, char *err, size_t errlen)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    if (!ctx)
        return err_fail(err, errlen, "sample: out of memory");
    ctx->no_grad = true;
    int rc = 0;
    for (int i0 = 0; rc == 0 && i0 < n; i0 += SAMPLE_CHUNK) {
        int k = n - i0 < SAMPLE_CHUNK ? n - i0 : SAMPLE_CHUNK;
        rc = score_chunk(m, ctx, prompts + i0, res + i0, k, logp + i0, err, errlen);
        tensor_ctx_reset(ctx);
    }
    tensor_ctx_free(ctx);
    return rc;
}
