/*
 * model/lora.c — LoRA adapters on a frozen Gpt (see lora.h): target names,
 * the parameter block and PEFT's init, the forward hook, merging, and
 * PEFT's adapter folder (adapter_config.json + adapter_model.safetensors).
 *
 * The block is laid out layer by layer, modules in LoraModule order, A then
 * B; each leaf's name is its PEFT key without the model prefix
 * ("layers.0.self_attn.q_proj.lora_A.weight", "h.0.attn.c_attn.lora_A.weight").
 */
#include "model/lora.h"

#include <cblas.h>
#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "model/safetensors.h"
#include "util/errmsg.h"
#include "util/fsutil.h"
#include "util/jsonfile.h"

#define LORA_CONFIG_MAX_BYTES ((size_t)1 << 20)
#define ALL_LINEAR "all-linear"

/* PEFT's (suffix) name and the HF module path of each module */
static const struct {
    const char *name, *path;
    GptArch arch;
} module_table[LORA_N_MODULES] = {
    [LORA_Q_PROJ] = {"q_proj", "self_attn.q_proj", GPT_ARCH_LLAMA},
    [LORA_K_PROJ] = {"k_proj", "self_attn.k_proj", GPT_ARCH_LLAMA},
    [LORA_V_PROJ] = {"v_proj", "self_attn.v_proj", GPT_ARCH_LLAMA},
    [LORA_O_PROJ] = {"o_proj", "self_attn.o_proj", GPT_ARCH_LLAMA},
    [LORA_GATE_PROJ] = {"gate_proj", "mlp.gate_proj", GPT_ARCH_LLAMA},
    [LORA_UP_PROJ] = {"up_proj", "mlp.up_proj", GPT_ARCH_LLAMA},
    [LORA_DOWN_PROJ] = {"down_proj", "mlp.down_proj", GPT_ARCH_LLAMA},
    [LORA_C_ATTN] = {"c_attn", "attn.c_attn", GPT_ARCH_GPT2},
    [LORA_ATTN_C_PROJ] = {"attn.c_proj", "attn.c_proj", GPT_ARCH_GPT2},
    [LORA_C_FC] = {"c_fc", "mlp.c_fc", GPT_ARCH_GPT2},
    [LORA_MLP_C_PROJ] = {"mlp.c_proj", "mlp.c_proj", GPT_ARCH_GPT2},
};

#define BIT(m) (1u << (m))
#define GPT2_C_PROJ (BIT(LORA_ATTN_C_PROJ) | BIT(LORA_MLP_C_PROJ))

const char *lora_module_name(LoraModule m)
{
    return m >= 0 && m < LORA_N_MODULES ? module_table[m].name : "?";
}

static uint32_t arch_modules(GptArch arch)
{
    uint32_t all = 0;
    for (int m = 0; m < LORA_N_MODULES; m++)
        if (module_table[m].arch == arch)
            all |= BIT(m);
    return all;
}

/* PEFT's defaults (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING) */
static uint32_t default_modules(GptArch arch)
{
    return arch == GPT_ARCH_LLAMA ? BIT(LORA_Q_PROJ) | BIT(LORA_V_PROJ) : BIT(LORA_C_ATTN);
}

/* one name's bits for arch: a PEFT name, or a module path (suffix matching);
 * 0 when it names no linear of arch */
static uint32_t name_bits(GptArch arch, const char *tok, size_t n)
{
    if (arch == GPT_ARCH_GPT2 && n == 6 && !strncmp(tok, "c_proj", 6))
        return GPT2_C_PROJ;
    for (int m = 0; m < LORA_N_MODULES; m++)
        if (module_table[m].arch == arch &&
            ((strlen(module_table[m].name) == n && !strncmp(tok, module_table[m].name, n)) ||
             (strlen(module_table[m].path) == n && !strncmp(tok, module_table[m].path, n))))
            return BIT(m);
    return 0;
}

int lora_targets_parse(GptArch arch, const char *spec, uint32_t *out, char *err, size_t errlen)
{
    const char *valid = arch == GPT_ARCH_LLAMA
                            ? "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
                            : "c_attn, c_proj, attn.c_proj, mlp.c_proj, c_fc";
    uint32_t bits = 0;
    bool any = false;
    for (const char *p = spec ? spec : ""; *p;) {
        while (*p == ',' || isspace((unsigned char)*p))
            p++;
        size_t n = 0;
        while (p[n] && p[n] != ',' && !isspace((unsigned char)p[n]))
            n++;
        if (!n)
            break;
        any = true;
        uint32_t b = n == strlen(ALL_LINEAR) && !strncmp(p, ALL_LINEAR, n) ? arch_modules(arch)
                                                                           : name_bits(arch, p, n);
        if (!b)
            return err_fail(err, errlen,
                            "lora: target module '%.*s' is not a linear of a %s model; "
                            "expected %s or all-linear",
                            (int)n, p, arch == GPT_ARCH_LLAMA ? "Llama-family" : "GPT-2", valid);
        bits |= b;
        p += n;
    }
    *out = any ? bits : default_modules(arch);
    return 0;
}

float lora_config_scale(const LoraConfig *c)
{
    return c->use_rslora ? c->alpha / sqrtf((float)c->r) : c->alpha / (float)c->r;
}

/* in, out and the first column of module m in a model of shape g */
static void module_geom(const GptConfig *g, LoraModule m, int *in, int *out, int *col0)
{
    int C = g->width, F = gpt_inner(g), NH = g->heads, NKV = gpt_kv_heads(g);
    int HD = gpt_head_dim(g);
    int t[LORA_N_MODULES][3] = {
        [LORA_Q_PROJ] = {C, NH * HD, 0},
        [LORA_K_PROJ] = {C, NKV * HD, NH * HD},
        [LORA_V_PROJ] = {C, NKV * HD, (NH + NKV) * HD},
        [LORA_O_PROJ] = {NH * HD, C, 0},
        [LORA_GATE_PROJ] = {C, F, 0},
        [LORA_UP_PROJ] = {C, F, F},
        [LORA_DOWN_PROJ] = {F, C, 0},
        [LORA_C_ATTN] = {C, 3 * C, 0},
        [LORA_ATTN_C_PROJ] = {C, C, 0},
        [LORA_C_FC] = {C, F, 0},
        [LORA_MLP_C_PROJ] = {F, C, 0},
    };
    *in = t[m][0];
    *out = t[m][1];
    *col0 = t[m][2];
}

int64_t lora_num_params(const GptConfig *g, uint32_t mods, int r)
{
    int64_t per = 0;
    for (int m = 0; m < LORA_N_MODULES; m++)
        if (mods & BIT(m)) {
            int in, out, c0;
            module_geom(g, (LoraModule)m, &in, &out, &c0);
            per += (int64_t)r * (in + out);
        }
    return per * g->layers;
}

/* ---- the block ------------------------------------------------------------ */

static Tensor *leaf(GptLora *l, int rows, int cols, int64_t off, const char *name)
{
    Tensor *t = tensor_ctx_alloc(l->ctx, sizeof *t);
    if (!t)
        return NULL;
    t->ndim = 2;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->size = (int64_t)rows * cols;
    t->data = l->all->data + off;
    t->grad = l->all->grad + off;
    t->op = OP_NONE;
    t->ctx = l->ctx;
    t->flags = TENSOR_REQUIRES_GRAD | TENSOR_PARAM;
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

/* the leaf name of (layer, m), A or B */
static void leaf_name(GptArch arch, int layer, LoraModule m, char ab, char *buf, size_t len)
{
    snprintf(buf, len, "%s.%d.%s.lora_%c.weight", arch == GPT_ARCH_LLAMA ? "layers" : "h", layer,
             module_table[m].path, ab);
}

static int build_views(GptLora *l)
{
    const GptConfig *g = &l->base;
    int L = g->layers, n = 0;
    l->ad = tensor_ctx_alloc(l->ctx, (size_t)L * LORA_N_MODULES * sizeof *l->ad);
    l->tensors = tensor_ctx_alloc(l->ctx, 2 * (size_t)L * LORA_N_MODULES * sizeof *l->tensors);
    if (!l->ad || !l->tensors)
        return -1;
    int64_t off = 0;
    for (int i = 0; i < L; i++)
        for (int m = 0; m < LORA_N_MODULES; m++) {
            LoraAdapter *a = &l->ad[i * LORA_N_MODULES + m];
            module_geom(g, (LoraModule)m, &a->in, &a->out, &a->col0);
            if (!(l->modules & BIT(m)))
                continue;
            char na[TENSOR_NAME_LEN], nb[TENSOR_NAME_LEN];
            leaf_name(g->arch, i, (LoraModule)m, 'A', na, sizeof na);
            leaf_name(g->arch, i, (LoraModule)m, 'B', nb, sizeof nb);
            a->A = leaf(l, l->cfg.r, a->in, off, na);
            off += (int64_t)l->cfg.r * a->in;
            a->B = leaf(l, a->out, l->cfg.r, off, nb);
            off += (int64_t)a->out * l->cfg.r;
            if (!a->A || !a->B)
                return -1;
            l->tensors[n++] = a->A;
            l->tensors[n++] = a->B;
        }
    l->n_tensors = n;
    return 0;
}

static int config_check(const Gpt *base, const LoraConfig *c, char *err, size_t errlen)
{
    if (base->trainable)
        return err_fail(err, errlen,
                        "lora: the base model must be frozen (made with trainable = false): its "
                        "weights get no gradients");
    if (c->r < 1 || c->r > LORA_MAX_R)
        return err_fail(err, errlen, "lora: r must be 1 to %d, got %d", LORA_MAX_R, c->r);
    if (!isfinite(c->alpha) || c->alpha == 0)
        return err_fail(err, errlen, "lora: lora_alpha must be finite and nonzero, got %g",
                        (double)c->alpha);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return err_fail(err, errlen, "lora: lora_dropout must be in [0, 1), got %g",
                        (double)c->dropout);
    return 0;
}

/* adapters of base's shape for the given modules, zeroed */
static GptLora *lora_alloc(const Gpt *base, const LoraConfig *cfg, uint32_t mods, char *err,
                           size_t errlen)
{
    int64_t n = lora_num_params(&base->cfg, mods, cfg->r);
    if (n > INT32_MAX) {
        err_fail(err, errlen, "lora: %lld adapter parameters exceed the 2^31 a tensor holds",
                 (long long)n);
        return NULL;
    }
    GptLora *l = calloc(1, sizeof *l);
    if (!l || !(l->ctx = tensor_ctx_new(0))) {
        free(l);
        err_fail(err, errlen, "lora: out of memory");
        return NULL;
    }
    l->cfg = *cfg;
    l->cfg.target_modules = NULL;
    l->modules = mods;
    l->scale = lora_config_scale(cfg);
    l->enabled = true;
    l->base = base->cfg;
    int ni = (int)n;
    l->all = tensor_new(l->ctx, 1, &ni);
    if (!l->all || tensor_requires_grad(l->all) != 0 || build_views(l) != 0) {
        err_fail(err, errlen, "lora: out of memory for %d adapter parameters", ni);
        gpt_lora_free(l);
        return NULL;
    }
    tensor_set_name(l->all, "lora_params");
    return l;
}

GptLora *gpt_lora_new(const Gpt *base, const LoraConfig *cfg, uint64_t seed, char *err,
                      size_t errlen)
{
    uint32_t mods;
    if (config_check(base, cfg, err, errlen) ||
        lora_targets_parse(base->cfg.arch, cfg->target_modules, &mods, err, errlen))
        return NULL;
    GptLora *l = lora_alloc(base, cfg, mods, err, errlen);
    if (!l)
        return NULL;
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < l->n_tensors; i += 2) { /* B stays zero */
        Tensor *A = l->tensors[i];
        double bound = 1.0 / sqrt((double)A->shape[1]);
        for (int64_t j = 0; j < A->size; j++)
            A->data[j] = (float)(bound * (2.0 * rng_uniform(&r) - 1.0));
    }
    return l;
}

void gpt_lora_free(GptLora *l)
{
    if (!l)
        return;
    tensor_ctx_free(l->ctx);
    free(l);
}

int gpt_lora_attach(Gpt *m, const GptLora *l, char *err, size_t errlen)
{
    if (l && !gpt_config_equal(&m->cfg, &l->base))
        return err_fail(err, errlen, "lora: the adapters were made for a model of another shape");
    if (l && m->trainable)
        return err_fail(err, errlen, "lora: adapters go on a frozen model (trainable = false)");
    m->lora = l;
    return 0;
}

void gpt_lora_zero_grad(GptLora *l) { tensor_zero_grad(l->all); }

int64_t gpt_lora_num_params(const GptLora *l) { return l->all->size; }

bool gpt_lora_decays(const GptLora *l, int i) { return l->tensors[i]->ndim >= 2; }

/* ---- forward hook and merge ----------------------------------------------- */

bool gpt_lora_active(const Gpt *m, int layer, LoraModule mod)
{
    const GptLora *l = m->lora;
    return l && l->enabled && layer >= 0 && layer < l->base.layers &&
           l->ad[layer * LORA_N_MODULES + mod].A;
}

/* splitmix64's finaliser, to give each (step, layer, module) its own mask */
static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

Tensor *gpt_lora_apply(TensorCtx *ctx, const Gpt *m, int layer, LoraModule mod, Tensor *x,
                       Tensor *y)
{
    if (!gpt_lora_active(m, layer, mod))
        return y;
    const GptLora *l = m->lora;
    const LoraAdapter *a = &l->ad[layer * LORA_N_MODULES + mod];
    uint64_t site = (uint64_t)layer * LORA_N_MODULES + (uint64_t)mod + 1;
    LoraDropout d = {l->cfg.dropout, mix64(l->dropout_seed ^ mix64(site))};
    return ag_lora(ctx, y, x, a->A, a->B, l->scale, a->col0, &d);
}

/* the base weight module mod of layer writes into: its rows [col0, col0 + out) */
static Tensor *module_weight(const Gpt *m, int layer, LoraModule mod)
{
    const GptLayer *h = &m->h[layer];
    switch (mod) {
    case LORA_Q_PROJ:
    case LORA_K_PROJ:
    case LORA_V_PROJ:
    case LORA_C_ATTN:
        return h->qkvw;
    case LORA_O_PROJ:
    case LORA_ATTN_C_PROJ:
        return h->attprojw;
    case LORA_GATE_PROJ:
    case LORA_UP_PROJ:
    case LORA_C_FC:
        return h->fcw;
    default:
        return h->fcprojw;
    }
}

int gpt_lora_merge(Gpt *m, const GptLora *l, char *err, size_t errlen)
{
    if (!gpt_config_equal(&m->cfg, &l->base))
        return err_fail(err, errlen, "lora: merge into a model of another shape");
    int r = l->cfg.r;
    for (int i = 0; i < l->base.layers; i++)
        for (int k = 0; k < LORA_N_MODULES; k++) {
            const LoraAdapter *a = &l->ad[i * LORA_N_MODULES + k];
            if (!a->A)
                continue;
            Tensor *w = module_weight(m, i, (LoraModule)k); // (Y, in)
            // W[col0:col0+out] (out, in) += scale B (out, r) A (r, in)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, a->out, a->in, r, l->scale,
                        a->B->data, r, a->A->data, a->in, 1.0f, w->data + (int64_t)a->col0 * a->in,
                        a->in);
        }
    return 0;
}

/* ---- PEFT's folder -------------------------------------------------------- */

static const char *peft_prefix(GptArch arch)
{
    return arch == GPT_ARCH_LLAMA ? "base_model.model.model." : "base_model.model.transformer.";
}

void gpt_lora_peft_key(const GptLora *l, int i, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s", peft_prefix(l->base.arch), l->tensors[i]->name);
}

/* target_modules as PEFT lists them: GPT-2's two c_proj as "c_proj" */
static json_t *targets_json(const GptLora *l)
{
    json_t *a = json_array();
    uint32_t mods = l->modules;
    if ((mods & GPT2_C_PROJ) == GPT2_C_PROJ) {
        json_array_append_new(a, json_string("c_proj"));
        mods &= ~GPT2_C_PROJ;
    }
    for (int m = 0; m < LORA_N_MODULES; m++)
        if (mods & BIT(m))
            json_array_append_new(a, json_string(module_table[m].name));
    return a;
}

static json_t *config_json(const GptLora *l)
{
    json_t *j = json_object();
    json_object_set_new(j, "peft_type", json_string("LORA"));
    json_object_set_new(j, "task_type", json_string("CAUSAL_LM"));
    json_object_set_new(j, "base_model_name_or_path",
                        l->base_model[0] ? json_string(l->base_model) : json_null());
    json_object_set_new(j, "r", json_integer(l->cfg.r));
    json_object_set_new(j, "lora_alpha", json_real(l->cfg.alpha));
    json_object_set_new(j, "lora_dropout", json_real(l->cfg.dropout));
    json_object_set_new(j, "use_rslora", json_boolean(l->cfg.use_rslora));
    json_object_set_new(j, "target_modules", targets_json(l));
    json_object_set_new(j, "bias", json_string("none"));
    json_object_set_new(j, "fan_in_fan_out", json_boolean(l->base.arch == GPT_ARCH_GPT2));
    json_object_set_new(j, "init_lora_weights", json_true());
    json_object_set_new(j, "inference_mode", json_true());
    json_object_set_new(j, "modules_to_save", json_null());
    json_object_set_new(j, "use_dora", json_false());
    return j;
}

static void join(char *buf, size_t len, const char *dir, const char *name)
{
    snprintf(buf, len, "%s/%s", dir, name);
}

int gpt_lora_save(const GptLora *l, const char *dir, char *err, size_t errlen)
{
    char path[4096];
    if (fsutil_mkdirs(dir, err, errlen))
        return -1;
    StEntry *e = calloc((size_t)l->n_tensors, sizeof *e);
    char(*keys)[128] = calloc((size_t)l->n_tensors, sizeof *keys);
    int rc = e && keys ? 0 : err_fail(err, errlen, "lora: out of memory");
    for (int i = 0; rc == 0 && i < l->n_tensors; i++) {
        gpt_lora_peft_key(l, i, keys[i], sizeof keys[i]);
        e[i] = st_entry(keys[i], l->tensors[i]);
    }
    static const char *const meta[] = {"format", "pt", NULL};
    join(path, sizeof path, dir, "adapter_model.safetensors");
    if (rc == 0)
        rc = st_save(path, e, l->n_tensors, meta, err, errlen);
    free(e);
    free(keys);
    if (rc)
        return -1;
    json_t *j = config_json(l);
    join(path, sizeof path, dir, "adapter_config.json");
    rc = j ? jsonfile_save(path, j, err, errlen) : err_fail(err, errlen, "lora: out of memory");
    json_decref(j);
    return rc;
}

/* ---- loading -------------------------------------------------------------- */

/* target_modules of adapter_config.json: a list of names, or the string
 * "all-linear" (PEFT reads any other string as a regex, which prefrun does
 * not) */
static int targets_of(const json_t *t, GptArch arch, const char *path, uint32_t *mods, char *err,
                      size_t errlen)
{
    char spec[1024] = "";
    size_t used = 0, i;
    json_t *v;
    if (json_is_string(t)) {
        if (strcmp(json_string_value(t), ALL_LINEAR))
            return err_fail(err, errlen,
                            "%s: target_modules \"%s\" is a regular expression to PEFT (matched "
                            "against whole module paths); prefrun takes a list of module names "
                            "or \"all-linear\"",
                            path, json_string_value(t));
        snprintf(spec, sizeof spec, "%s", ALL_LINEAR);
    } else if (json_is_array(t) && json_array_size(t) > 0) {
        json_array_foreach(t, i, v)
        {
            if (!json_is_string(v))
                return err_fail(err, errlen, "%s: target_modules[%zu] must be a string", path, i);
            int w = snprintf(spec + used, sizeof spec - used, "%s ", json_string_value(v));
            if (w < 0 || (size_t)w >= sizeof spec - used)
                return err_fail(err, errlen, "%s: target_modules is too long", path);
            used += (size_t)w;
        }
    } else {
        return err_fail(err, errlen, "%s: target_modules must be a non-empty list of names", path);
    }
    if (lora_targets_parse(arch, spec, mods, err, errlen) == 0)
        return 0;
    char why[512];
    snprintf(why, sizeof why, "%s", err);
    return err_fail(err, errlen, "%s: %s", path, why);
}

/* a number field (absent: def), a bool field (absent: def) */
static int num_field(const json_t *j, const char *key, double def, double *out, const char *path,
                     char *err, size_t errlen)
{
    const json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v))
        return err_fail(err, errlen, "%s: %s must be a number", path, key);
    *out = json_number_value(v);
    return 0;
}

/* the features of PEFT's LoraConfig that prefrun's adapters do not have */
static int unsupported(const json_t *j, const char *path, char *err, size_t errlen)
{
    const json_t *v;
    if ((v = json_object_get(j, "bias")) && !json_is_null(v) &&
        (!json_is_string(v) || strcmp(json_string_value(v), "none")))
        return err_fail(err, errlen, "%s: bias must be \"none\" (trained biases are not supported)",
                        path);
    if (json_is_true(json_object_get(j, "use_dora")))
        return err_fail(err, errlen, "%s: use_dora is not supported", path);
    const char *lists[] = {"modules_to_save", "layers_to_transform", "rank_pattern",
                           "alpha_pattern"};
    for (int k = 0; k < 4; k++) {
        v = json_object_get(j, lists[k]);
        bool empty = !v || json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0) ||
                     (json_is_object(v) && json_object_size(v) == 0);
        if (!empty)
            return err_fail(err, errlen, "%s: %s is not supported", path, lists[k]);
    }
    return 0;
}

static int read_config(const char *path, GptArch arch, LoraConfig *c, uint32_t *mods,
                       char *base_model, size_t bm_len, char *err, size_t errlen)
{
    static const FsReadCap cap = {.bytes = LORA_CONFIG_MAX_BYTES, .kind = "an adapter config"};
    json_t *j = jsonfile_load(path, &cap, err, errlen);
    if (!j)
        return -1;
    int rc = -1;
    const json_t *pt = json_object_get(j, "peft_type"), *rs = json_object_get(j, "use_rslora");
    const json_t *r = json_object_get(j, "r"), *bm = json_object_get(j, "base_model_name_or_path");
    double alpha = 8, drop = 0;
    if (!json_is_object(j))
        err_fail(err, errlen, "%s: expected a JSON object", path);
    else if (!json_is_string(pt) || strcmp(json_string_value(pt), "LORA"))
        err_fail(err, errlen, "%s: peft_type must be \"LORA\"", path);
    else if (!json_is_integer(r) || json_integer_value(r) < 1 || json_integer_value(r) > LORA_MAX_R)
        err_fail(err, errlen, "%s: r must be an integer from 1 to %d", path, LORA_MAX_R);
    else if (rs && !json_is_null(rs) && !json_is_boolean(rs))
        err_fail(err, errlen, "%s: use_rslora must be true or false", path);
    else if (num_field(j, "lora_alpha", 8, &alpha, path, err, errlen) ||
             num_field(j, "lora_dropout", 0, &drop, path, err, errlen) ||
             unsupported(j, path, err, errlen) ||
             targets_of(json_object_get(j, "target_modules"), arch, path, mods, err, errlen))
        ;
    else {
        *c = (LoraConfig){.r = (int)json_integer_value(r),
                          .alpha = (float)alpha,
                          .use_rslora = json_is_true(rs),
                          .dropout = (float)drop};
        snprintf(base_model, bm_len, "%s", json_is_string(bm) ? json_string_value(bm) : "");
        rc = 0;
    }
    json_decref(j);
    return rc;
}

/* PEFT's key and shape of tensor ab (0: A, 1: B) of (layer, m) */
static void expected(const GptConfig *g, int r, int layer, LoraModule m, int ab, char *key,
                     size_t len, int64_t shape[2])
{
    int in, out, c0;
    module_geom(g, m, &in, &out, &c0);
    char name[TENSOR_NAME_LEN];
    leaf_name(g->arch, layer, m, ab ? 'B' : 'A', name, sizeof name);
    snprintf(key, len, "%s%s", peft_prefix(g->arch), name);
    shape[0] = ab ? out : r;
    shape[1] = ab ? r : in;
}

static bool is_expected(const GptConfig *g, uint32_t mods, int r, const char *name)
{
    char key[160];
    int64_t sh[2];
    for (int i = 0; i < g->layers; i++)
        for (int m = 0; m < LORA_N_MODULES; m++)
            for (int ab = 0; (mods & BIT(m)) && ab < 2; ab++) {
                expected(g, r, i, (LoraModule)m, ab, key, sizeof key, sh);
                if (!strcmp(key, name))
                    return true;
            }
    return false;
}

/* Every tensor the config asks for is in the file with its shape, and
 * nothing else is: checked on the header alone, before any allocation. */
static int check_tensors(const StFile *f, const GptConfig *g, uint32_t mods, int r, char *err,
                         size_t errlen)
{
    char key[160], want[64], got[64];
    int n = 0;
    for (int i = 0; i < g->layers; i++)
        for (int m = 0; m < LORA_N_MODULES; m++)
            for (int ab = 0; (mods & BIT(m)) && ab < 2; ab++, n++) {
                const char *dt;
                int nd;
                int64_t sh[TENSOR_MAX_DIMS], ws[2];
                expected(g, r, i, (LoraModule)m, ab, key, sizeof key, ws);
                if (st_info(f, key, &dt, &nd, sh) != 0)
                    return err_fail(err, errlen,
                                    "%s: tensor %s is missing (target_modules of "
                                    "adapter_config.json ask for it)",
                                    st_path(f), key);
                if (nd != 2 || sh[0] != ws[0] || sh[1] != ws[1]) {
                    st_shape_str(nd, sh, got, sizeof got);
                    st_shape_str(2, ws, want, sizeof want);
                    return err_fail(err, errlen,
                                    "%s: tensor %s is %s, expected %s (r = %d in "
                                    "adapter_config.json, and the base model's sizes)",
                                    st_path(f), key, got, want, r);
                }
            }
    for (int k = 0; st_count(f) != n && k < st_count(f); k++)
        if (!is_expected(g, mods, r, st_name(f, k)))
            return err_fail(err, errlen,
                            "%s: unexpected tensor %s: not the lora_A or lora_B of a module in "
                            "target_modules of this %d-layer %s model",
                            st_path(f), st_name(f, k), g->layers,
                            g->arch == GPT_ARCH_LLAMA ? "Llama-family" : "GPT-2");
    return 0;
}

static int read_tensors(const StFile *f, GptLora *l, char *err, size_t errlen)
{
    char key[160];
    for (int i = 0; i < l->n_tensors; i++) {
        gpt_lora_peft_key(l, i, key, sizeof key);
        StEntry e = st_entry(key, l->tensors[i]);
        e.any_float = true;
        if (st_read(f, &e, err, errlen))
            return -1;
        for (int64_t k = 0; k < l->tensors[i]->size; k++)
            if (!isfinite(l->tensors[i]->data[k]))
                return err_fail(err, errlen, "%s: tensor %s holds a value that is not finite",
                                st_path(f), key);
    }
    return 0;
}

GptLora *gpt_lora_load(const Gpt *base, const char *dir, char *err, size_t errlen)
{
    char path[4096], bm[512];
    LoraConfig c;
    uint32_t mods;
    join(path, sizeof path, dir, "adapter_config.json");
    if (read_config(path, base->cfg.arch, &c, &mods, bm, sizeof bm, err, errlen))
        return NULL;
    if (config_check(base, &c, err, errlen)) {
        char why[512];
        snprintf(why, sizeof why, "%s", err);
        err_fail(err, errlen, "%s: %s", path, why);
        return NULL;
    }
    join(path, sizeof path, dir, "adapter_model.safetensors");
    StFile *f = st_open(path, err, errlen);
    if (!f)
        return NULL;
    GptLora *l = NULL;
    if (check_tensors(f, &base->cfg, mods, c.r, err, errlen) == 0 &&
        (l = lora_alloc(base, &c, mods, err, errlen)) && read_tensors(f, l, err, errlen)) {
        gpt_lora_free(l);
        l = NULL;
    }
    st_close(f);
    if (l)
        snprintf(l->base_model, sizeof l->base_model, "%s", bm);
    return l;
}
