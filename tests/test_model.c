/*
 * test_model.c — the GPT policy/reference: init, whole-model gradients
 * against finite differences, response-only log-probs, and a reference
 * forward that records nothing.
 */
#include <math.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model/model_file.h"
#include "core/ops.h"
#include "core/rng.h"
#include "testlib.h"

/* V 13, maxT 8, C 8, L 2, NH 2: every op of the model, small enough that the
 * whole finite-difference sweep runs in milliseconds. */
static const GptConfig tiny = {.vocab = 13, .context = 8, .width = 8, .layers = 2, .heads = 2};

/* The Llama family at the same size, with every optional part on: grouped
 * queries (4 heads on 2 key/value heads), a head_dim (4) that is not C / NH,
 * an MLP width of its own (12), q/k/v and output biases, an untied head and
 * Llama 3's frequency scaling. */
static const GptConfig tiny_llama = {.vocab = 13,
                                     .context = 8,
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
                                              .original_max_position_embeddings = 4}};

/* The plain one: tied head, no biases, NKV = NH, default rope. */
static const GptConfig tiny_llama_tied = {.vocab = 13,
                                          .context = 8,
                                          .width = 8,
                                          .layers = 2,
                                          .heads = 2,
                                          .arch = GPT_ARCH_LLAMA,
                                          .inner = 16,
                                          .rope = {.theta = 10000}};

enum { NB = 2, NT = 7 }; /* pairs, positions */

/* ids (2B, T) and targets with prompt lengths 3 and 2, responses of varied
 * length and one padded row, as data.c lays them out. */
static void make_batch(int32_t ids[2 * NB * NT], int32_t targets[2 * NB * NT], uint64_t seed)
{
    static const int prompt[2 * NB] = {3, 2, 3, 2}, seq[2 * NB] = {7, 6, 5, 7};
    Rng r;
    rng_seed(&r, seed);
    for (int n = 0; n < 2 * NB; n++)
        for (int t = 0; t < NT; t++) {
            ids[n * NT + t] = t < seq[n] ? (int32_t)rng_below(&r, tiny.vocab) : 0;
            bool response = t + 1 >= prompt[n] && t + 1 < seq[n];
            targets[n * NT + t] = -1;
            if (response)
                targets[n * NT + t] = 0; /* filled below, once ids are known */
        }
    for (int i = 0; i < 2 * NB * NT; i++)
        if (targets[i] == 0)
            targets[i] = ids[i + 1];
}

/* Weights far from GPT-2's 0.02 init so every path (attention softmax,
 * GELU's curve, LayerNorm's scale) carries gradient of order 0.1 to 1, well
 * above the finite-difference noise floor. */
static void randomize(Gpt *m, uint64_t seed)
{
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < m->n_tensors; i++) {
        Tensor *t = m->tensors[i];
        bool ln_weight = t->ndim == 1 && (strstr(t->name, "ln") || strstr(t->name, "norm")) &&
                         strstr(t->name, "weight");
        for (int64_t j = 0; j < t->size; j++)
            t->data[j] = (ln_weight ? 1.0f : 0.0f) + (t->ndim == 2 ? 0.4f : 0.2f) * rng_normal(&r);
    }
}

/* L = sum_n w_n logp_n over the 2B sequences (w fixed, mixed signs), summed
 * in double from the float model's per-sequence log-probs. */
static const double seq_weight[2 * NB] = {0.7, -1.1, 0.4, 1.3};

static double model_loss(const Gpt *m, TensorCtx *ctx, const int32_t *ids, const int32_t *tg,
                         Tensor **seq_out)
{
    GptPairBatch b = {.B = NB, .T = NT, .ids = ids, .targets = tg};
    GptPairLogps lp;
    if (gpt_pair_logps(m, ctx, &b, &lp) != 0)
        return NAN;
    Tensor *seq = ag_concat(ctx, lp.chosen, lp.rejected, 0); // (2B)
    if (!seq)
        return NAN;
    double L = 0;
    for (int n = 0; n < 2 * NB; n++)
        L += seq_weight[n] * seq->data[n];
    if (seq_out)
        *seq_out = seq;
    return L;
}

static void test_init_is_gpt2_and_deterministic(void)
{
    GptConfig cfg = {.vocab = 64, .context = 16, .width = 32, .layers = 3, .heads = 4};
    char err[256];
    Gpt *a = gpt_new(&cfg, true, err, sizeof err), *b = gpt_new(&cfg, true, err, sizeof err);
    CHECKF(a && b, "%s", err);
    if (!a || !b)
        return;
    CHECK(a->all->size == gpt_config_num_params(&cfg));
    CHECK(a->n_tensors == 4 + 12 * cfg.layers);
    gpt_init(a, 42);
    gpt_init(b, 42);
    CHECK(memcmp(a->all->data, b->all->data, (size_t)a->all->size * sizeof(float)) == 0);
    gpt_init(b, 43);
    CHECK(memcmp(a->all->data, b->all->data, (size_t)a->all->size * sizeof(float)) != 0);
    /* sample std of 64x32 = 2048 normals is 0.02 within ~3% (1/sqrt(2n) relative) */
    double s = 0;
    for (int64_t j = 0; j < a->wte->size; j++)
        s += (double)a->wte->data[j] * a->wte->data[j];
    CHECK_NEAR(sqrt(s / (double)a->wte->size), 0.02, 0.02 * 0.06);
    double sr = 0;
    Tensor *proj = a->h[1].fcprojw; /* residual projection: 0.02 / sqrt(2L) */
    for (int64_t j = 0; j < proj->size; j++)
        sr += (double)proj->data[j] * proj->data[j];
    CHECK_NEAR(sqrt(sr / (double)proj->size), 0.02 / sqrt(6.0), 0.02 / sqrt(6.0) * 0.06);
    CHECK(a->h[0].ln1w->data[0] == 1.0f && a->h[0].qkvb->data[5] == 0.0f);
    CHECK(a->lnfw->data[cfg.width - 1] == 1.0f && a->lnfb->data[0] == 0.0f);
    CHECK(gpt_tensor_decays(a, 0) && !gpt_tensor_decays(a, 2)); /* wte yes, ln_1.weight no */
    CHECK(strcmp(a->h[2].qkvw->name, "h.2.attn.c_attn.weight") == 0);
    gpt_free(a);
    gpt_free(b);
}

static void test_config_errors_name_the_field(void)
{
    char err[256] = "";
    GptConfig bad = tiny;
    bad.heads = 3;
    CHECK(gpt_new(&bad, true, err, sizeof err) == NULL);
    CHECKF(strstr(err, "heads (3) must divide width (8)"), "%s", err);
    bad = tiny;
    bad.layers = 0;
    CHECK(gpt_config_check(&bad, err, sizeof err) != 0 && strstr(err, "layers"));
    Gpt *m = gpt_new(&tiny, true, err, sizeof err);
    TensorCtx *ctx = tensor_ctx_new(0);
    int32_t ids[2 * 9] = {0};
    CHECK(gpt_forward(m, ctx, ids, 2, 9) == NULL); /* 9 positions, context 8 */
    CHECKF(strstr(tensor_ctx_error(ctx), "expected 1..8 positions"), "%s", tensor_ctx_error(ctx));
    tensor_ctx_free(ctx);
    gpt_free(m);
}

/* Whole-model gradient check. Analytic dL/dθ from one backward against the
 * central difference (L(θ + h) - L(θ - h)) / 2h of the float32 model itself.
 * Step and tolerance: L is a sum of ~10 log-probs of size ~3, so float32
 * rounding in one evaluation of L is ~1e-6 absolute; with h = 1e-2 that adds
 * ~1e-4 to the difference quotient, and the truncation error h² L''' / 6 is
 * of the same order for these weights (measured: the largest gap over the 55
 * entries is 9e-4, on a gradient of 0.87). So |analytic - fd| <= 2e-3 +
 * 1e-2 |fd|, about ten times the largest gap seen. A wrong backward (a
 * missing term, a transposed weight, a lost residual) is off by 10% to 100%. */
/* Finite differences on a few entries of every named tensor of cfg's model. */
static void gradcheck_model(const GptConfig *cfg, const char *const *names, int n_names)
{
    char err[256];
    Gpt *m = gpt_new(cfg, true, err, sizeof err);
    CHECKF(m != NULL, "%s", err);
    if (!m)
        return;
    TensorCtx *ctx = tensor_ctx_new(0);
    int32_t ids[2 * NB * NT], tg[2 * NB * NT];
    make_batch(ids, tg, 7);
    randomize(m, 11);
    float seed[2 * NB];
    for (int n = 0; n < 2 * NB; n++)
        seed[n] = (float)seq_weight[n];
    Tensor *seq = NULL;
    model_loss(m, ctx, ids, tg, &seq);
    CHECKF(seq && ag_backward(ctx, seq, seed) == 0, "%s", tensor_ctx_error(ctx));
    const double h = 1e-2;
    int checked = 0, nonzero = 0, found = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        Tensor *t = m->tensors[i];
        bool pick = false;
        for (int k = 0; k < n_names; k++)
            pick = pick || strcmp(t->name, names[k]) == 0;
        found += pick;
        for (int64_t j = 0; pick && j < t->size; j += t->size / 5 + 1) {
            float x = t->data[j];
            t->data[j] = x + (float)h;
            tensor_ctx_reset(ctx);
            double lp = model_loss(m, ctx, ids, tg, NULL);
            t->data[j] = x - (float)h;
            tensor_ctx_reset(ctx);
            double lm = model_loss(m, ctx, ids, tg, NULL);
            t->data[j] = x;
            double fd = (lp - lm) / (2 * h), got = t->grad[j];
            CHECKF(fabs(got - fd) <= 2e-3 + 1e-2 * fabs(fd), "%s[%lld]: analytic %.6g, fd %.6g",
                   t->name, (long long)j, got, fd);
            checked++;
            nonzero += fabs(fd) > 1e-2;
        }
    }
    CHECKF(found == n_names, "%d of the %d named tensors exist", found, n_names);
    CHECK(checked >= 4 * n_names);
    CHECKF(nonzero >= checked / 2, "only %d of %d gradients are sizeable", nonzero, checked);
    tensor_ctx_free(ctx);
    gpt_free(m);
}

static void test_whole_model_gradcheck(void)
{
    /* a few entries of every kind of tensor, both layers, the tied head */
    const char *names[] = {"wte.weight",
                           "wpe.weight",
                           "h.0.ln_1.weight",
                           "h.0.attn.c_attn.weight",
                           "h.0.attn.c_attn.bias",
                           "h.0.attn.c_proj.weight",
                           "h.1.ln_2.bias",
                           "h.1.mlp.c_fc.weight",
                           "h.1.mlp.c_proj.weight",
                           "h.1.mlp.c_proj.bias",
                           "ln_f.weight",
                           "ln_f.bias"};
    gradcheck_model(&tiny, names, (int)(sizeof names / sizeof names[0]));
}

/* Every tensor kind of the Llama block, through RoPE, GQA and SwiGLU. */
static void test_llama_gradcheck(void)
{
    const char *names[] = {"embed_tokens.weight",
                           "layers.0.input_layernorm.weight",
                           "layers.0.self_attn.qkv_proj.weight",
                           "layers.0.self_attn.qkv_proj.bias",
                           "layers.0.self_attn.o_proj.weight",
                           "layers.1.self_attn.o_proj.bias",
                           "layers.1.post_attention_layernorm.weight",
                           "layers.1.mlp.gate_up_proj.weight",
                           "layers.1.mlp.down_proj.weight",
                           "norm.weight",
                           "lm_head.weight"};
    gradcheck_model(&tiny_llama, names, (int)(sizeof names / sizeof names[0]));
    const char *tied[] = {"embed_tokens.weight", "layers.1.self_attn.qkv_proj.weight",
                          "layers.0.mlp.gate_up_proj.weight", "norm.weight"};
    gradcheck_model(&tiny_llama_tied, tied, 4);
}

/* The tensors a Llama config makes, their shapes and the parameter count. */
static void test_llama_layout(void)
{
    char err[256];
    Gpt *m = gpt_new(&tiny_llama, true, err, sizeof err);
    CHECKF(m != NULL, "%s", err);
    if (!m)
        return;
    /* embed, 2 x (2 norms, qkv w+b, o w+b, gate_up, down), norm, lm_head */
    CHECK(m->n_tensors == 1 + 2 * 8 + 2);
    CHECK(m->wpe == NULL && m->lnfb == NULL && m->head != m->wte && m->rope != NULL);
    const GptLayer *l = &m->h[1];
    CHECK(l->qkvw->shape[0] == (4 + 2 * 2) * 4 && l->qkvw->shape[1] == 8);
    CHECK(l->qkvb->size == 32 && l->attprojw->shape[1] == 16 && l->attprojb->size == 8);
    CHECK(l->fcw->shape[0] == 24 && l->fcprojw->shape[1] == 12);
    CHECK(l->ln1b == NULL && l->ln2b == NULL && l->fcb == NULL && l->fcprojb == NULL);
    int64_t n = 0;
    for (int i = 0; i < m->n_tensors; i++)
        n += m->tensors[i]->size;
    /* 13*8 embed + 2 * (8+8 + 32*8+32 + 8*16+8 + 24*8 + 8*12) + 8 + 13*8 */
    CHECK(n == 104 + 2 * (16 + 288 + 136 + 192 + 96) + 8 + 104);
    CHECK(n == gpt_config_num_params(&tiny_llama) && n == m->all->size);
    Gpt *t = gpt_new(&tiny_llama_tied, false, err, sizeof err);
    CHECK(t && t->head == t->wte && t->h[0].qkvb == NULL && t->h[0].attprojb == NULL);
    /* a head_dim that is odd, or kv heads that do not divide the heads */
    GptConfig bad = tiny_llama;
    bad.head_dim = 3;
    CHECK(gpt_config_check(&bad, err, sizeof err) != 0 && strstr(err, "head_dim"));
    bad = tiny_llama;
    bad.kv_heads = 3;
    CHECK(gpt_config_check(&bad, err, sizeof err) != 0 && strstr(err, "kv_heads"));
    gpt_free(t);
    gpt_free(m);
}

/* Per-sequence log-probs count response positions only: they equal a plain
 * double log-softmax of the model's own logits summed over targets >= 0, and
 * differ from the sum over every position (so the check can tell). */
static void logps_mask_the_prompt(const GptConfig *cfg)
{
    char err[256];
    Gpt *m = gpt_new(cfg, true, err, sizeof err);
    randomize(m, 5);
    TensorCtx *ctx = tensor_ctx_new(0);
    int32_t ids[2 * NB * NT], tg[2 * NB * NT];
    make_batch(ids, tg, 3);
    GptPairBatch b = {.B = NB, .T = NT, .ids = ids, .targets = tg};
    GptPairLogps lp;
    CHECK(gpt_pair_logps(m, ctx, &b, &lp) == 0);
    Tensor *hid = gpt_forward(m, ctx, ids, 2 * NB, NT); // (2B, T, C)
    const int V = cfg->vocab, C = cfg->width;
    for (int n = 0; n < 2 * NB; n++) {
        double masked = 0, everything = 0;
        for (int t = 0; t < NT; t++) {
            double logit[16], mx = -INFINITY, s = 0;
            for (int v = 0; v < V; v++) {
                logit[v] = 0;
                for (int c = 0; c < C; c++)
                    logit[v] += (double)hid->data[(n * NT + t) * C + c] * m->head->data[v * C + c];
                mx = fmax(mx, logit[v]);
            }
            for (int v = 0; v < V; v++)
                s += exp(logit[v] - mx);
            int next = t + 1 < NT ? ids[n * NT + t + 1] : 0;
            double logp = logit[next] - mx - log(s);
            everything += logp;
            Tensor *tok = n < NB ? lp.chosen_tokens : lp.rejected_tokens;
            float got = tok->data[(n % NB) * NT + t];
            if (tg[n * NT + t] >= 0) {
                masked += logp;
                CHECK_NEAR(got, logp, 1e-4);
            } else {
                CHECK(got == 0.0f);
            }
        }
        Tensor *seq = n < NB ? lp.chosen : lp.rejected;
        CHECK_NEAR(seq->data[n % NB], masked, 1e-4 * (1 + fabs(masked)));
        CHECK(fabs(masked - everything) > 0.1);
    }
    CHECK(lp.chosen->ndim == 1 && lp.chosen->shape[0] == NB);
    CHECK(lp.rejected_tokens->ndim == 2 && lp.rejected_tokens->shape[1] == NT);
    tensor_ctx_free(ctx);
    gpt_free(m);
}

/* The frozen reference in a no_grad context: the same numbers as the policy
 * (bit for bit: streaming changes where tensors live, not the arithmetic),
 * no sources, nothing saved for backward, no gradient memory. */
static void reference_records_nothing(const GptConfig *cfg)
{
    char err[256];
    Gpt *policy = gpt_new(cfg, true, err, sizeof err);
    gpt_init(policy, 9);
    Gpt *ref = gpt_clone_frozen(policy, err, sizeof err);
    CHECKF(ref != NULL, "%s", err);
    CHECK(ref->all->grad == NULL && ref->wte->grad == NULL && !(ref->wte->flags & 1u));
    int32_t ids[2 * NB * NT], tg[2 * NB * NT];
    make_batch(ids, tg, 1);
    GptPairBatch b = {.B = NB, .T = NT, .ids = ids, .targets = tg};
    TensorCtx *pctx = tensor_ctx_new(0), *rctx = tensor_ctx_new(0);
    rctx->no_grad = true;
    GptPairLogps pl, rl;
    CHECK(gpt_pair_logps(policy, pctx, &b, &pl) == 0);
    CHECK(gpt_pair_logps(ref, rctx, &b, &rl) == 0);
    for (int i = 0; i < NB; i++) {
        CHECK(pl.chosen->data[i] == rl.chosen->data[i]);
        CHECK(pl.rejected->data[i] == rl.rejected->data[i]);
    }
    int recorded = 0;
    for (int i = 0; i < rctx->n_tape; i++) {
        Tensor *t = rctx->tape[i];
        recorded += t->src[0] || t->src[1] || t->src[2] || t->aux || t->grad ||
                    (t->flags & TENSOR_REQUIRES_GRAD);
    }
    CHECKF(recorded == 0, "%d reference nodes record something", recorded);
    /* the policy keeps every activation and what backward needs; the
     * reference streams its blocks through two scratch arenas, emptied after */
    CHECKF(rctx->used < pctx->used / 4, "reference used %zu bytes, policy %zu", rctx->used,
           pctx->used);
    CHECK(ref->scratch[0]->used == 0 && ref->scratch[1]->used == 0);
    CHECK(ref->scratch[0]->peak < pctx->used / cfg->layers);
    /* and backward from the reference has nothing to walk */
    Tensor *s = ag_sum(rctx, rl.chosen, AG_ALL, false);
    CHECK(s && s->src[0] == NULL);
    tensor_ctx_free(pctx);
    tensor_ctx_free(rctx);
    gpt_free(policy);
    gpt_free(ref);
}

static void test_logps_mask_the_prompt(void)
{
    logps_mask_the_prompt(&tiny);
    logps_mask_the_prompt(&tiny_llama); /* its own head: the logits must use it */
}

static void test_reference_records_nothing(void)
{
    reference_records_nothing(&tiny);
    reference_records_nothing(&tiny_llama);
}

/* A Llama model file keeps its whole config (the fields after the five
 * sizes are header metadata) and its weights bit for bit; a GPT-2 file's
 * header has no such field. */
static void test_llama_model_file_round_trip(void)
{
    char err[256], path[256];
    const GptConfig *cfgs[2] = {&tiny_llama, &tiny};
    for (int k = 0; k < 2; k++) {
        Gpt *m = gpt_new(cfgs[k], false, err, sizeof err);
        randomize(m, 3);
        snprintf(path, sizeof path, "/tmp/prefrun-test-model-%d.safetensors", (int)getpid());
        CHECKF(model_file_save(m, path, NULL, err, sizeof err) == 0, "%s", err);
        GptConfig g;
        CHECK(model_file_config(path, &g, err, sizeof err) == 1);
        CHECK(gpt_config_equal(&g, cfgs[k]));
        Gpt *back = NULL;
        CHECKF(model_file_load(path, NULL, &back, err, sizeof err) == 0, "%s", err);
        if (back) {
            CHECK(gpt_config_equal(&back->cfg, &m->cfg));
            CHECK(!memcmp(back->all->data, m->all->data, (size_t)m->all->size * sizeof(float)));
            CHECK(back->cfg.rope.scaling == cfgs[k]->rope.scaling);
        }
        gpt_free(back);
        gpt_free(m);
        remove(path);
    }
}

int main(void)
{
    RUN(test_init_is_gpt2_and_deterministic);
    RUN(test_config_errors_name_the_field);
    RUN(test_whole_model_gradcheck);
    RUN(test_llama_gradcheck);
    RUN(test_llama_layout);
    RUN(test_llama_model_file_round_trip);
    RUN(test_logps_mask_the_prompt);
    RUN(test_reference_records_nothing);
    return tl_done();
}
