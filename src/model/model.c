/*
 * model/model.c — the GPT-2-style decoder: parameter block, init, forward, and the
 * per-sequence response log-probs.
 *
 * The parameter block is one tensor `all` (n_params) in the model's own
 * context; every named weight is a leaf header whose data (and grad) point
 * into it. Leaf headers are not on any tape: backward reaches them through
 * the step's nodes that use them and accumulates into the shared block.
 *
 * Letters as in model.h: N sequences, T positions, C width, L layers,
 * NH heads, V vocabulary, maxT context.
 */
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "core/rng.h"

#define GPT_LN_EPS 1e-5f
#define GPT_INIT_STD 0.02f

typedef enum InitKind { INIT_NORMAL, INIT_RESIDUAL, INIT_ZERO, INIT_ONE } InitKind;

typedef struct ParamSpec {
    const char *name;
    int rows, cols; /* cols 0: a vector of rows entries */
    InitKind init;
} ParamSpec;

/* One block's tensors, in block order; matches the fields of GptLayer. */
static void layer_specs(int C, ParamSpec s[GPT_LAYER_TENSORS])
{
    const ParamSpec t[GPT_LAYER_TENSORS] = {
        {"ln_1.weight", C, 0, INIT_ONE},
        {"ln_1.bias", C, 0, INIT_ZERO},
        {"attn.c_attn.weight", 3 * C, C, INIT_NORMAL},
        {"attn.c_attn.bias", 3 * C, 0, INIT_ZERO},
        {"attn.c_proj.weight", C, C, INIT_RESIDUAL},
        {"attn.c_proj.bias", C, 0, INIT_ZERO},
        {"ln_2.weight", C, 0, INIT_ONE},
        {"ln_2.bias", C, 0, INIT_ZERO},
        {"mlp.c_fc.weight", 4 * C, C, INIT_NORMAL},
        {"mlp.c_fc.bias", 4 * C, 0, INIT_ZERO},
        {"mlp.c_proj.weight", C, 4 * C, INIT_RESIDUAL},
        {"mlp.c_proj.bias", C, 0, INIT_ZERO},
    };
    memcpy(s, t, sizeof t);
}

static int64_t spec_numel(const ParamSpec *s) { return (int64_t)s->rows * (s->cols ? s->cols : 1); }

int gpt_config_check(const GptConfig *cfg, char *err, size_t errlen)
{
    const char *bad = cfg->vocab <= 0     ? "vocab"
                      : cfg->context <= 0 ? "context"
                      : cfg->width <= 0   ? "width"
                      : cfg->layers <= 0  ? "layers"
                      : cfg->heads <= 0   ? "heads"
                                          : NULL;
    if (bad) {
        snprintf(err, errlen, "model: %s must be positive", bad);
        return -1;
    }
    if (cfg->width % cfg->heads != 0) {
        snprintf(err, errlen, "model: heads (%d) must divide width (%d)", cfg->heads, cfg->width);
        return -1;
    }
    if (gpt_config_num_params(cfg) > INT32_MAX) {
        snprintf(err, errlen, "model: %lld parameters exceed the 2^31 a tensor holds",
                 (long long)gpt_config_num_params(cfg));
        return -1;
    }
    return 0;
}

int64_t gpt_config_num_params(const GptConfig *cfg)
{
    int64_t C = cfg->width, L = cfg->layers;
    int64_t per_layer = 12 * C * C + 13 * C; /* weights 3C²+C²+4C²+4C², vectors 13C */
    return (int64_t)cfg->vocab * C + (int64_t)cfg->context * C + L * per_layer + 2 * C;
}

/* A leaf header over n floats of the block at offset. */
static Tensor *param_view(Gpt *m, const ParamSpec *s, const char *prefix, int64_t offset)
{
    Tensor *t = tensor_ctx_alloc(m->ctx, sizeof *t);
    if (!t)
        return NULL;
    t->ndim = s->cols ? 2 : 1;
    t->shape[0] = s->rows;
    t->shape[1] = s->cols;
    t->size = spec_numel(s);
    t->data = m->all->data + offset;
    t->grad = m->all->grad ? m->all->grad + offset : NULL;
    t->op = OP_NONE;
    t->ctx = m->ctx;
    t->flags = m->trainable ? TENSOR_REQUIRES_GRAD | TENSOR_PARAM : 0;
    snprintf(t->name, sizeof t->name, "%s%s", prefix, s->name);
    return t;
}

/* Every tensor's spec in block order: wte, wpe, h.0..h.L-1, ln_f. */
static int all_specs(const GptConfig *cfg, ParamSpec *specs, char (*prefix)[16])
{
    int n = 0, C = cfg->width;
    specs[n] = (ParamSpec){"wte.weight", cfg->vocab, C, INIT_NORMAL};
    prefix[n++][0] = '\0';
    specs[n] = (ParamSpec){"wpe.weight", cfg->context, C, INIT_NORMAL};
    prefix[n++][0] = '\0';
    for (int l = 0; l < cfg->layers; l++) {
        layer_specs(C, specs + n);
        for (int i = 0; i < GPT_LAYER_TENSORS; i++)
            snprintf(prefix[n + i], sizeof prefix[0], "h.%d.", l);
        n += GPT_LAYER_TENSORS;
    }
    specs[n] = (ParamSpec){"ln_f.weight", C, 0, INIT_ONE};
    prefix[n++][0] = '\0';
    specs[n] = (ParamSpec){"ln_f.bias", C, 0, INIT_ZERO};
    prefix[n++][0] = '\0';
    return n;
}

/* Points the named fields at the views, in the order all_specs made them. */
static void bind_fields(Gpt *m)
{
    Tensor **t = m->tensors;
    m->wte = t[0];
    m->wpe = t[1];
    for (int l = 0; l < m->cfg.layers; l++) {
        Tensor **s = t + 2 + l * GPT_LAYER_TENSORS;
        m->h[l] =
            (GptLayer){s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11]};
    }
    m->lnfw = t[m->n_tensors - 2];
    m->lnfb = t[m->n_tensors - 1];
}

static int build_views(Gpt *m)
{
    int n = 4 + m->cfg.layers * GPT_LAYER_TENSORS;
    ParamSpec *specs = malloc((size_t)n * sizeof *specs);
    char(*prefix)[16] = malloc((size_t)n * sizeof *prefix);
    m->tensors = tensor_ctx_alloc(m->ctx, (size_t)n * sizeof *m->tensors);
    m->init_kind = tensor_ctx_alloc(m->ctx, (size_t)n);
    m->h = tensor_ctx_alloc(m->ctx, (size_t)m->cfg.layers * sizeof *m->h);
    int rc = specs && prefix && m->tensors && m->init_kind && m->h ? 0 : -1;
    if (rc == 0)
        all_specs(&m->cfg, specs, prefix);
    int64_t offset = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        m->tensors[i] = param_view(m, &specs[i], prefix[i], offset);
        m->init_kind[i] = (unsigned char)specs[i].init;
        offset += spec_numel(&specs[i]);
        rc = m->tensors[i] ? 0 : -1;
    }
    m->n_tensors = n;
    free(specs);
    free(prefix);
    if (rc == 0)
        bind_fields(m);
    return rc;
}

Gpt *gpt_new(const GptConfig *cfg, bool trainable, char *err, size_t errlen)
{
    if (gpt_config_check(cfg, err, errlen) != 0)
        return NULL;
    Gpt *m = calloc(1, sizeof *m);
    if (!m || !(m->ctx = tensor_ctx_new(0))) {
        free(m);
        snprintf(err, errlen, "model: out of memory");
        return NULL;
    }
    m->cfg = *cfg;
    m->trainable = trainable;
    int n = (int)gpt_config_num_params(cfg);
    m->all = tensor_new(m->ctx, 1, &n);
    if (!m->all || (trainable && tensor_requires_grad(m->all) != 0) || build_views(m) != 0) {
        snprintf(err, errlen, "model: out of memory for %d parameters", n);
        gpt_free(m);
        return NULL;
    }
    tensor_set_name(m->all, "params");
    for (int i = 0; i < 2; i++) {
        if (!(m->scratch[i] = tensor_ctx_new(0))) {
            snprintf(err, errlen, "model: out of memory");
            gpt_free(m);
            return NULL;
        }
        m->scratch[i]->no_grad = true;
    }
    return m;
}

void gpt_free(Gpt *m)
{
    if (!m)
        return;
    for (int i = 0; i < 2; i++)
        if (m->scratch[i])
            tensor_ctx_free(m->scratch[i]);
    tensor_ctx_free(m->ctx);
    free(m);
}

void gpt_init(Gpt *m, uint64_t seed)
{
    Rng r;
    rng_seed(&r, seed);
    float resid_std = GPT_INIT_STD / sqrtf(2.0f * (float)m->cfg.layers);
    for (int i = 0; i < m->n_tensors; i++) {
        Tensor *t = m->tensors[i];
        InitKind kind = (InitKind)m->init_kind[i];
        float std = kind == INIT_RESIDUAL ? resid_std : GPT_INIT_STD;
        for (int64_t j = 0; j < t->size; j++)
            t->data[j] = kind == INIT_ONE ? 1.0f : kind == INIT_ZERO ? 0.0f : std * rng_normal(&r);
    }
}

Gpt *gpt_clone_frozen(const Gpt *m, char *err, size_t errlen)
{
    Gpt *c = gpt_new(&m->cfg, false, err, errlen);
    if (c)
        memcpy(c->all->data, m->all->data, (size_t)m->all->size * sizeof(float));
    return c;
}

void gpt_zero_grad(Gpt *m) { tensor_zero_grad(m->all); }

bool gpt_tensor_decays(const Gpt *m, int i) { return m->tensors[i]->ndim >= 2; }

/* x (N, T, C) -> x + attn(ln1(x)) + mlp(ln2(...)), pre-LayerNorm; each
 * residual add is fused into the projection before it (linear_add) */
static Tensor *block_forward(TensorCtx *ctx, const GptLayer *l, Tensor *x, int NH)
{
    Tensor *h = ag_layernorm(ctx, x, l->ln1w, l->ln1b, GPT_LN_EPS); // (N, T, C)
    Tensor *qkv = ag_linear(ctx, h, l->qkvw, l->qkvb);              // (N, T, 3C)
    Tensor *att = ag_attention(ctx, qkv, NH);                       // (N, T, C)
    x = ag_linear_add(ctx, att, l->attprojw, l->attprojb, x);       // (N, T, C)
    h = ag_layernorm(ctx, x, l->ln2w, l->ln2b, GPT_LN_EPS);
    Tensor *fc = ag_linear_gelu(ctx, h, l->fcw, l->fcb);      // (N, T, 4C)
    return ag_linear_add(ctx, fc, l->fcprojw, l->fcprojb, x); // (N, T, C)
}

static Tensor *embed(const Gpt *m, TensorCtx *ctx, const int32_t *ids, int N, int T)
{
    int shape[2] = {N, T};
    Tensor *tok = ag_embedding(ctx, m->wte, ids, 2, shape); // (N, T, C)
    Tensor *pos = ag_slice(ctx, m->wpe, 0, 0, T);           // (T, C)
    return ag_add(ctx, tok, pos);                           // (N, T, C)
}

/* The no_grad forward: block l writes into scratch[(l + 1) % 2] while it
 * reads block l-1's output from the other, which is then reset. Cross-context
 * sources are allowed because nothing is recorded. */
static Tensor *forward_streaming(const Gpt *m, TensorCtx *ctx, const int32_t *ids, int N, int T)
{
    TensorCtx *const *s = m->scratch;
    tensor_ctx_reset(s[0]);
    tensor_ctx_reset(s[1]);
    Tensor *x = embed(m, s[0], ids, N, T);
    for (int l = 0; x && l < m->cfg.layers; l++) {
        x = block_forward(s[(l + 1) % 2], &m->h[l], x, m->cfg.heads);
        tensor_ctx_reset(s[l % 2]); /* block l's input: read, no longer needed */
    }
    Tensor *out = x ? ag_layernorm(ctx, x, m->lnfw, m->lnfb, GPT_LN_EPS) : NULL;
    for (int i = 0; i < 2 && !out; i++)
        if (!tensor_ctx_ok(s[i]))
            tensor_ctx_fail(ctx, s[i]->status, "%s", tensor_ctx_error(s[i]));
    tensor_ctx_reset(s[0]);
    tensor_ctx_reset(s[1]);
    return out;
}

Tensor *gpt_forward(const Gpt *m, TensorCtx *ctx, const int32_t *ids, int N, int T)
{
    if (T <= 0 || T > m->cfg.context || N <= 0)
        return tensor_ctx_fail(ctx, TENSOR_ERR_SHAPE,
                               "model: batch (%d, %d) does not fit: expected 1..%d positions", N, T,
                               m->cfg.context);
    if (ctx->no_grad && !ctx->meta)
        return forward_streaming(m, ctx, ids, N, T);
    Tensor *x = embed(m, ctx, ids, N, T);
    for (int l = 0; l < m->cfg.layers; l++)
        x = block_forward(ctx, &m->h[l], x, m->cfg.heads);
    return ag_layernorm(ctx, x, m->lnfw, m->lnfb, GPT_LN_EPS);
}

/* The LM head and cross-entropy on the rows whose target counts only: the
 * prompt's positions (target -1) need no logits. The rows are gathered by
 * an embedding lookup into h, and the per-row losses put back in place by a
 * second one into (losses, 0), which gives masked positions exactly 0. */
static Tensor *selected_logps(const Gpt *m, TensorCtx *ctx, Tensor *h2, const int32_t *targets,
                              int N, int T, int n_sel)
{
    int64_t NT = (int64_t)N * T;
    int32_t *sel = tensor_ctx_alloc_uninit(ctx, (size_t)(2 * n_sel + NT) * sizeof *sel);
    if (!sel)
        return NULL;
    int32_t *sel_tg = sel + n_sel, *where = sel_tg + n_sel; // (S), (S), (NT)
    for (int64_t i = 0, k = 0; i < NT; i++) {
        where[i] = targets[i] >= 0 ? (int32_t)k : n_sel;
        if (targets[i] >= 0) {
            sel[k] = (int32_t)i;
            sel_tg[k++] = targets[i];
        }
    }
    int s1[1] = {n_sel}, s2[2] = {n_sel, 1}, one[2] = {1, 1}, nt[2] = {N, T};
    Tensor *hs = ag_embedding(ctx, h2, sel, 1, s1);                                       // (S, C)
    Tensor *nll = ag_cross_entropy(ctx, ag_linear(ctx, hs, m->wte, NULL), sel_tg, n_sel); // (S)
    Tensor *zero = tensor_new(ctx, 2, one);
    if (zero)
        zero->data[0] = 0.0f;
    Tensor *col = ag_concat(ctx, ag_reshape(ctx, nll, 2, s2), zero, 0); // (S + 1, 1)
    Tensor *tok = ag_embedding(ctx, col, where, 2, nt);                 // (N, T, 1)
    return ag_neg(ctx, ag_reshape(ctx, tok, 2, nt));                    // (N, T)
}

Tensor *gpt_token_logps(const Gpt *m, TensorCtx *ctx, const int32_t *ids, const int32_t *targets,
                        int N, int T)
{
    Tensor *h = gpt_forward(m, ctx, ids, N, T); // (N, T, C)
    int rows[2] = {N * T, m->cfg.width}, nt[2] = {N, T};
    Tensor *h2 = ag_reshape(ctx, h, 2, rows); // (NT, C)
    int n_sel = 0;
    for (int64_t i = 0; i < (int64_t)N * T; i++)
        n_sel += targets[i] >= 0;
    if (h2 && !ctx->meta && n_sel > 0 && n_sel < N * T)
        return selected_logps(m, ctx, h2, targets, N, T, n_sel);
    Tensor *logits = ag_linear(ctx, h2, m->wte, NULL);                    // (NT, V)
    Tensor *nll = ag_cross_entropy(ctx, logits, targets, (int64_t)N * T); // (NT)
    return ag_neg(ctx, ag_reshape(ctx, nll, 2, nt));                      // (N, T)
}

int gpt_pair_logps(const Gpt *m, TensorCtx *ctx, const GptPairBatch *batch, GptPairLogps *out)
{
    int B = batch->B, T = batch->T;
    Tensor *tok = gpt_token_logps(m, ctx, batch->ids, batch->targets, 2 * B, T); // (2B, T)
    Tensor *seq = ag_sum(ctx, tok, 1, false);                                    // (2B)
    out->chosen = ag_slice(ctx, seq, 0, 0, B);
    out->rejected = ag_slice(ctx, seq, 0, B, B);
    out->chosen_tokens = ag_slice(ctx, tok, 0, 0, B);
    out->rejected_tokens = ag_slice(ctx, tok, 0, B, B);
    bool ok = out->chosen && out->rejected && out->chosen_tokens && out->rejected_tokens;
    return ok ? 0 : -1;
}
