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
#include "model/lora.h"

#define GPT_LN_EPS 1e-5f
#define GPT_INIT_STD 0.02f

typedef enum InitKind { INIT_NORMAL, INIT_RESIDUAL, INIT_ZERO, INIT_ONE } InitKind;

typedef struct ParamSpec {
    const char *name;
    int rows, cols; /* cols 0: a vector of rows entries */
    InitKind init;
} ParamSpec;

/* One block's tensors, in block order, one per GptLayer field (rows 0: the
 * config has no such tensor). */
static void layer_specs(const GptConfig *g, ParamSpec s[GPT_LAYER_TENSORS])
{
    int C = g->width, F = gpt_inner(g);
    if (g->arch == GPT_ARCH_LLAMA) {
        int NH = g->heads, NKV = gpt_kv_heads(g), HD = gpt_head_dim(g), Q = (NH + 2 * NKV) * HD;
        const ParamSpec t[GPT_LAYER_TENSORS] = {
            {"input_layernorm.weight", C, 0, INIT_ONE},
            {"", 0, 0, INIT_ZERO},
            {"self_attn.qkv_proj.weight", Q, C, INIT_NORMAL},
            {"self_attn.qkv_proj.bias", g->qkv_bias ? Q : 0, 0, INIT_ZERO},
            {"self_attn.o_proj.weight", C, NH * HD, INIT_NORMAL},
            {"self_attn.o_proj.bias", g->o_bias ? C : 0, 0, INIT_ZERO},
            {"post_attention_layernorm.weight", C, 0, INIT_ONE},
            {"", 0, 0, INIT_ZERO},
            {"mlp.gate_up_proj.weight", 2 * F, C, INIT_NORMAL},
            {"", 0, 0, INIT_ZERO},
            {"mlp.down_proj.weight", C, F, INIT_NORMAL},
            {"", 0, 0, INIT_ZERO},
        };
        memcpy(s, t, sizeof t);
        return;
    }
    const ParamSpec t[GPT_LAYER_TENSORS] = {
        {"ln_1.weight", C, 0, INIT_ONE},
        {"ln_1.bias", C, 0, INIT_ZERO},
        {"attn.c_attn.weight", 3 * C, C, INIT_NORMAL},
        {"attn.c_attn.bias", 3 * C, 0, INIT_ZERO},
        {"attn.c_proj.weight", C, C, INIT_RESIDUAL},
        {"attn.c_proj.bias", C, 0, INIT_ZERO},
        {"ln_2.weight", C, 0, INIT_ONE},
        {"ln_2.bias", C, 0, INIT_ZERO},
        {"mlp.c_fc.weight", F, C, INIT_NORMAL},
        {"mlp.c_fc.bias", F, 0, INIT_ZERO},
        {"mlp.c_proj.weight", C, F, INIT_RESIDUAL},
        {"mlp.c_proj.bias", C, 0, INIT_ZERO},
    };
    memcpy(s, t, sizeof t);
}

static int64_t spec_numel(const ParamSpec *s) { return (int64_t)s->rows * (s->cols ? s->cols : 1); }

int gpt_inner(const GptConfig *cfg) { return cfg->inner > 0 ? cfg->inner : 4 * cfg->width; }

float gpt_norm_eps(const GptConfig *cfg) { return cfg->norm_eps > 0 ? cfg->norm_eps : GPT_LN_EPS; }

int gpt_kv_heads(const GptConfig *cfg) { return cfg->kv_heads > 0 ? cfg->kv_heads : cfg->heads; }

int gpt_head_dim(const GptConfig *cfg)
{
    return cfg->head_dim > 0 ? cfg->head_dim : cfg->heads > 0 ? cfg->width / cfg->heads : 0;
}

static bool rope_equal(const RopeConfig *a, const RopeConfig *b)
{
    return a->theta == b->theta && a->scaling == b->scaling && a->factor == b->factor &&
           a->low_freq_factor == b->low_freq_factor && a->high_freq_factor == b->high_freq_factor &&
           a->original_max_position_embeddings == b->original_max_position_embeddings;
}

bool gpt_config_equal(const GptConfig *a, const GptConfig *b)
{
    return a->vocab == b->vocab && a->context == b->context && a->width == b->width &&
           a->layers == b->layers && a->heads == b->heads && a->arch == b->arch &&
           gpt_inner(a) == gpt_inner(b) && gpt_norm_eps(a) == gpt_norm_eps(b) &&
           gpt_kv_heads(a) == gpt_kv_heads(b) && gpt_head_dim(a) == gpt_head_dim(b) &&
           a->qkv_bias == b->qkv_bias && a->o_bias == b->o_bias &&
           a->untied_head == b->untied_head &&
           (a->arch != GPT_ARCH_LLAMA || rope_equal(&a->rope, &b->rope));
}

/* The Llama-only fields: their sizes and the rope settings. */
static const char *llama_check(const GptConfig *cfg, char *why, size_t len)
{
    int NH = cfg->heads, NKV = gpt_kv_heads(cfg), HD = gpt_head_dim(cfg);
    if (cfg->kv_heads < 0 || cfg->head_dim < 0 || HD <= 0)
        return "model: kv_heads and head_dim must be positive";
    if (NH % NKV)
        return snprintf(why, len, "model: kv_heads (%d) must divide heads (%d)", NKV, NH), why;
    if (!cfg->head_dim && cfg->width % NH)
        return snprintf(why, len, "model: heads (%d) must divide width (%d)", NH, cfg->width), why;
    if (HD % 2)
        return snprintf(why, len, "model: head_dim (%d) must be even for rotary embeddings", HD),
               why;
    if (cfg->rope.theta <= 0)
        return "model: rope theta must be positive";
    return NULL;
}

/* The arch-specific checks; NULL or the message (in why or static). */
static const char *arch_check(const GptConfig *cfg, char *why, size_t len)
{
    if (cfg->inner < 0 || cfg->norm_eps < 0 || !(cfg->norm_eps < 1))
        return "model: inner and norm_eps must be positive (0: the default)";
    if (cfg->arch == GPT_ARCH_LLAMA)
        return llama_check(cfg, why, len);
    if (cfg->arch != GPT_ARCH_GPT2)
        return "model: unknown architecture";
    if (cfg->kv_heads || cfg->head_dim || cfg->qkv_bias || cfg->o_bias)
        return "model: kv_heads, head_dim and the bias switches are Llama settings";
    if (cfg->width % cfg->heads != 0)
        return snprintf(why, len, "model: heads (%d) must divide width (%d)", cfg->heads,
                        cfg->width),
               why;
    return NULL;
}

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
    char why[160];
    const char *msg = arch_check(cfg, why, sizeof why);
    if (msg) {
        snprintf(err, errlen, "%s", msg);
        return -1;
    }
    if (gpt_config_num_params(cfg) > INT32_MAX) {
        snprintf(err, errlen, "model: %lld parameters exceed the 2^31 a tensor holds",
                 (long long)gpt_config_num_params(cfg));
        return -1;
    }
    return 0;
}

/* The top-level tensors before the blocks (embeddings) and after (final
 * norm, head), by arch. */
static int top_specs(const GptConfig *g, bool after, ParamSpec *s)
{
    int C = g->width, n = 0;
    bool llama = g->arch == GPT_ARCH_LLAMA;
    if (!after) {
        s[n++] =
            (ParamSpec){llama ? "embed_tokens.weight" : "wte.weight", g->vocab, C, INIT_NORMAL};
        if (!llama)
            s[n++] = (ParamSpec){"wpe.weight", g->context, C, INIT_NORMAL};
        return n;
    }
    s[n++] = (ParamSpec){llama ? "norm.weight" : "ln_f.weight", C, 0, INIT_ONE};
    if (!llama)
        s[n++] = (ParamSpec){"ln_f.bias", C, 0, INIT_ZERO};
    if (g->untied_head)
        s[n++] = (ParamSpec){"lm_head.weight", g->vocab, C, INIT_NORMAL};
    return n;
}

/* Every tensor's spec in block order (embeddings, h.0..h.L-1 or layers.*,
 * final norm, head); with slot (may be NULL) each one's GptLayer field
 * (0..11) or -1 for a top-level tensor. Returns the count; specs NULL
 * counts only. */
static int all_specs(const GptConfig *cfg, ParamSpec *specs, char (*prefix)[24], int *slot)
{
    ParamSpec top[3], blk[GPT_LAYER_TENSORS];
    int n = 0, nt = top_specs(cfg, false, top);
    const char *lp = cfg->arch == GPT_ARCH_LLAMA ? "layers" : "h";
    for (int i = 0; i < nt; i++, n++)
        if (specs) {
            specs[n] = top[i];
            prefix[n][0] = '\0';
            slot[n] = -1;
        }
    layer_specs(cfg, blk);
    for (int l = 0; l < cfg->layers; l++)
        for (int j = 0; j < GPT_LAYER_TENSORS; j++) {
            if (blk[j].rows == 0)
                continue;
            if (specs) {
                specs[n] = blk[j];
                snprintf(prefix[n], sizeof prefix[0], "%s.%d.", lp, l);
                slot[n] = j;
            }
            n++;
        }
    nt = top_specs(cfg, true, top);
    for (int i = 0; i < nt; i++, n++)
        if (specs) {
            specs[n] = top[i];
            prefix[n][0] = '\0';
            slot[n] = -1;
        }
    return n;
}

int64_t gpt_config_num_params(const GptConfig *cfg)
{
    ParamSpec top[3], blk[GPT_LAYER_TENSORS];
    int64_t n = 0, per_layer = 0;
    for (int after = 0; after < 2; after++)
        for (int i = 0, k = top_specs(cfg, after, top); i < k; i++)
            n += spec_numel(&top[i]);
    layer_specs(cfg, blk);
    for (int j = 0; j < GPT_LAYER_TENSORS; j++)
        per_layer += spec_numel(&blk[j]);
    return n + (int64_t)cfg->layers * per_layer;
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

/* The GptLayer field of slot j (layer_specs' order). */
static Tensor **layer_field(GptLayer *l, int j)
{
    Tensor **f[GPT_LAYER_TENSORS] = {&l->ln1w,     &l->ln1b,     &l->qkvw,    &l->qkvb,
                                     &l->attprojw, &l->attprojb, &l->ln2w,    &l->ln2b,
                                     &l->fcw,      &l->fcb,      &l->fcprojw, &l->fcprojb};
    return f[j];
}

/* Points the named fields at the views, by the slot each one fills. */
static void bind_fields(Gpt *m, const int *slot)
{
    Tensor **t = m->tensors;
    bool llama = m->cfg.arch == GPT_ARCH_LLAMA;
    int n = m->n_tensors, first = llama ? 1 : 2;
    int tail = n - (llama ? 1 : 2) - (m->cfg.untied_head ? 1 : 0);
    int per = (tail - first) / m->cfg.layers;
    m->wte = t[0];
    m->wpe = llama ? NULL : t[1];
    for (int i = first; i < tail; i++)
        *layer_field(&m->h[(i - first) / per], slot[i]) = t[i];
    m->lnfw = t[tail];
    m->lnfb = llama ? NULL : t[tail + 1];
    m->head = m->cfg.untied_head ? t[n - 1] : m->wte;
}

static int build_views(Gpt *m)
{
    int n = all_specs(&m->cfg, NULL, NULL, NULL);
    ParamSpec *specs = malloc((size_t)n * sizeof *specs);
    char(*prefix)[24] = malloc((size_t)n * sizeof *prefix);
    int *slot = malloc((size_t)n * sizeof *slot);
    m->tensors = tensor_ctx_alloc(m->ctx, (size_t)n * sizeof *m->tensors);
    m->init_kind = tensor_ctx_alloc(m->ctx, (size_t)n);
    m->h = tensor_ctx_alloc(m->ctx, (size_t)m->cfg.layers * sizeof *m->h);
    int rc = specs && prefix && slot && m->tensors && m->init_kind && m->h ? 0 : -1;
    if (rc == 0) {
        all_specs(&m->cfg, specs, prefix, slot);
        memset(m->h, 0, (size_t)m->cfg.layers * sizeof *m->h);
    }
    int64_t offset = 0;
    for (int i = 0; rc == 0 && i < n; i++) {
        m->tensors[i] = param_view(m, &specs[i], prefix[i], offset);
        m->init_kind[i] = (unsigned char)specs[i].init;
        offset += spec_numel(&specs[i]);
        rc = m->tensors[i] ? 0 : -1;
    }
    m->n_tensors = n;
    if (rc == 0)
        bind_fields(m, slot);
    free(specs);
    free(prefix);
    free(slot);
    return rc;
}

/* Llama's cos/sin table for every position, once, in the model's context. */
static int build_rope(Gpt *m)
{
    if (m->cfg.arch != GPT_ARCH_LLAMA)
        return 0;
    RopeConfig r = m->cfg.rope;
    r.head_dim = gpt_head_dim(&m->cfg);
    m->rope = ag_rope_table(m->ctx, &r, m->cfg.context);
    return m->rope ? 0 : -1;
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
    if (build_rope(m) != 0) {
        snprintf(err, errlen, "model: rotary table: %s", tensor_ctx_error(m->ctx));
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

/* GPT-2's MLP up-projection: the fused linear + GELU, or, with an adapter
 * on c_fc, the linear, its adapter, then GELU (the bits of the fused op when
 * the update is 0: the same product, the same GELU) */
static Tensor *gpt2_fc(TensorCtx *ctx, const Gpt *m, int i, const GptLayer *l, Tensor *h)
{
    if (!gpt_lora_active(m, i, LORA_C_FC))
        return ag_linear_gelu(ctx, h, l->fcw, l->fcb);
    Tensor *pre = gpt_lora_apply(ctx, m, i, LORA_C_FC, h, ag_linear(ctx, h, l->fcw, l->fcb));
    return ag_gelu(ctx, pre);
}

/* x (N, T, C) -> x + attn(ln1(x)) + mlp(ln2(...)), pre-LayerNorm; each
 * residual add is fused into the projection before it (linear_add); the
 * adapters of layer i (m->lora) add into each linear's output */
static Tensor *gpt2_block(TensorCtx *ctx, const Gpt *m, int i, Tensor *x)
{
    const GptLayer *l = &m->h[i];
    float eps = gpt_norm_eps(&m->cfg);
    Tensor *h = ag_layernorm(ctx, x, l->ln1w, l->ln1b, eps); // (N, T, C)
    Tensor *qkv = ag_linear(ctx, h, l->qkvw, l->qkvb);       // (N, T, 3C)
    qkv = gpt_lora_apply(ctx, m, i, LORA_C_ATTN, h, qkv);
    Tensor *att = ag_attention(ctx, qkv, m->cfg.heads);       // (N, T, C)
    x = ag_linear_add(ctx, att, l->attprojw, l->attprojb, x); // (N, T, C)
    x = gpt_lora_apply(ctx, m, i, LORA_ATTN_C_PROJ, att, x);
    h = ag_layernorm(ctx, x, l->ln2w, l->ln2b, eps);
    Tensor *fc = gpt2_fc(ctx, m, i, l, h);                 // (N, T, F)
    x = ag_linear_add(ctx, fc, l->fcprojw, l->fcprojb, x); // (N, T, C)
    return gpt_lora_apply(ctx, m, i, LORA_MLP_C_PROJ, fc, x);
}

/* x (N, T, C) -> x + attn(rms1(x)) + mlp(rms2(...)) as LlamaDecoderLayer:
 * q and k rotated in place in the fused qkv, then grouped-query attention;
 * SwiGLU on the fused gate|up. */
static Tensor *llama_block(TensorCtx *ctx, const Gpt *m, int i, Tensor *x)
{
    const GptLayer *l = &m->h[i];
    const GptConfig *g = &m->cfg;
    int NH = g->heads, NKV = gpt_kv_heads(g), HD = gpt_head_dim(g);
    float eps = gpt_norm_eps(g);
    int N = x ? x->shape[0] : 0, T = x ? x->shape[1] : 0;
    int heads4[4] = {N, T, NH + 2 * NKV, HD}, flat[3] = {N, T, (NH + 2 * NKV) * HD};
    Tensor *h = ag_rmsnorm(ctx, x, l->ln1w, eps);      // (N, T, C)
    Tensor *qkv = ag_linear(ctx, h, l->qkvw, l->qkvb); // (N, T, Q)
    qkv = gpt_lora_apply(ctx, m, i, LORA_Q_PROJ, h, qkv);
    qkv = gpt_lora_apply(ctx, m, i, LORA_K_PROJ, h, qkv);
    qkv = gpt_lora_apply(ctx, m, i, LORA_V_PROJ, h, qkv);
    qkv = ag_rope(ctx, ag_reshape(ctx, qkv, 4, heads4), m->rope, 0, NH + NKV);
    Tensor *att =
        ag_gqa_attention(ctx, ag_reshape(ctx, qkv, 3, flat), NH, NKV, HD); // (N, T, NH HD)
    x = ag_linear_add(ctx, att, l->attprojw, l->attprojb, x);              // (N, T, C)
    x = gpt_lora_apply(ctx, m, i, LORA_O_PROJ, att, x);
    h = ag_rmsnorm(ctx, x, l->ln2w, eps);
    Tensor *gu = ag_linear(ctx, h, l->fcw, NULL); // (N, T, 2F)
    gu = gpt_lora_apply(ctx, m, i, LORA_GATE_PROJ, h, gu);
    gu = gpt_lora_apply(ctx, m, i, LORA_UP_PROJ, h, gu);
    Tensor *act = ag_swiglu(ctx, gu);                 // (N, T, F)
    x = ag_linear_add(ctx, act, l->fcprojw, NULL, x); // (N, T, C)
    return gpt_lora_apply(ctx, m, i, LORA_DOWN_PROJ, act, x);
}

static Tensor *block_forward(TensorCtx *ctx, const Gpt *m, int l, Tensor *x)
{
    return m->cfg.arch == GPT_ARCH_LLAMA ? llama_block(ctx, m, l, x) : gpt2_block(ctx, m, l, x);
}

static Tensor *final_norm(TensorCtx *ctx, const Gpt *m, Tensor *x)
{
    float eps = gpt_norm_eps(&m->cfg);
    return m->cfg.arch == GPT_ARCH_LLAMA ? ag_rmsnorm(ctx, x, m->lnfw, eps)
                                         : ag_layernorm(ctx, x, m->lnfw, m->lnfb, eps);
}

static Tensor *embed(const Gpt *m, TensorCtx *ctx, const int32_t *ids, int N, int T)
{
    int shape[2] = {N, T};
    Tensor *tok = ag_embedding(ctx, m->wte, ids, 2, shape); // (N, T, C)
    if (!m->wpe)
        return tok;                               /* Llama: positions enter through RoPE */
    Tensor *pos = ag_slice(ctx, m->wpe, 0, 0, T); // (T, C)
    return ag_add(ctx, tok, pos);                 // (N, T, C)
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
        x = block_forward(s[(l + 1) % 2], m, l, x);
        tensor_ctx_reset(s[l % 2]); /* block l's input: read, no longer needed */
    }
    Tensor *out = x ? final_norm(ctx, m, x) : NULL;
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
        x = block_forward(ctx, m, l, x);
    return final_norm(ctx, m, x);
}

/* The LM head and cross-entropy on the rows whose target counts only: the
 * prompt's positions (target -1) need no logits. The head is the fused,
 * chunked op, so a 50k-150k vocabulary's (rows, V) logits are never all
 * resident. The rows are gathered by an embedding lookup into h, and the
 * per-row losses put back in place by a second one into (losses, 0), which
 * gives masked positions exactly 0. */
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
    Tensor *hs = ag_embedding(ctx, h2, sel, 1, s1);                         // (S, C)
    Tensor *nll = ag_linear_cross_entropy(ctx, hs, m->head, sel_tg, n_sel); // (S)
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
    Tensor *nll = ag_linear_cross_entropy(ctx, h2, m->head, targets, (int64_t)N * T); // (NT)
    return ag_neg(ctx, ag_reshape(ctx, nll, 2, nt));                                  // (N, T)
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
