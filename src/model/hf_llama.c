/*
 * model/hf_llama.c — HF Llama-family folders to and from a Gpt (hf_llama.h).
 *
 * The table below is one HF decoder layer, the importer's spec: each part's
 * name, the Gpt tensor it lives in and the row range it fills there, in
 * units the config resolves. Loading lists every part of the model from it,
 * checks the folder against that list before anything is allocated, then
 * reads each part straight into its rows of the fused tensor; saving writes
 * the same parts from the same rows. One list for both directions is what
 * keeps a round trip exact.
 *
 * Letters as in hf_llama.h: V, C, L, NH, NKV, HD, Q = (NH + 2 NKV) HD, F.
 */
#include "model/hf_llama.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/st_shards.h"
#include "util/errmsg.h"
#include "util/fsutil.h"

#define HF_NAME_LEN 96
#define LM_HEAD "lm_head.weight"
#define EMBED "model.embed_tokens.weight"
#define INV_FREQ ".rotary_emb.inv_freq" /* a buffer HF computes from the config */

/* The Gpt tensor a part lives in: a GptLayer field, by its index in
 * model.h's field order, or a top-level tensor. */
enum {
    SLOT_LN1W = 0,
    SLOT_QKVW = 2,
    SLOT_QKVB = 3,
    SLOT_ATTPROJW = 4,
    SLOT_ATTPROJB = 5,
    SLOT_LN2W = 6,
    SLOT_FCW = 8,
    SLOT_FCPROJW = 10,
    SLOT_EMBED = 100,
    SLOT_NORM,
    SLOT_HEAD,
};

/* Sizes a part is measured in: 0, C, NH HD, NKV HD, (NH + NKV) HD, F. */
typedef enum Dim { D_0, D_C, D_Q, D_KV, D_QK, D_F } Dim;

/* One part of a layer: rows [row0, row0 + rows) of its slot's tensor, of
 * cols columns (D_0: a vector); only: 'q' with qkv_bias, 'o' with o_bias. */
static const struct {
    const char *name;
    int slot;
    Dim row0, rows, cols;
    char only;
} layer_parts[] = {
    {"input_layernorm.weight", SLOT_LN1W, D_0, D_C, D_0, 0},
    {"self_attn.q_proj.weight", SLOT_QKVW, D_0, D_Q, D_C, 0},
    {"self_attn.k_proj.weight", SLOT_QKVW, D_Q, D_KV, D_C, 0},
    {"self_attn.v_proj.weight", SLOT_QKVW, D_QK, D_KV, D_C, 0},
    {"self_attn.q_proj.bias", SLOT_QKVB, D_0, D_Q, D_0, 'q'},
    {"self_attn.k_proj.bias", SLOT_QKVB, D_Q, D_KV, D_0, 'q'},
    {"self_attn.v_proj.bias", SLOT_QKVB, D_QK, D_KV, D_0, 'q'},
    {"self_attn.o_proj.weight", SLOT_ATTPROJW, D_0, D_C, D_Q, 0},
    {"self_attn.o_proj.bias", SLOT_ATTPROJB, D_0, D_C, D_0, 'o'},
    {"post_attention_layernorm.weight", SLOT_LN2W, D_0, D_C, D_0, 0},
    {"mlp.gate_proj.weight", SLOT_FCW, D_0, D_F, D_C, 0},
    {"mlp.up_proj.weight", SLOT_FCW, D_F, D_F, D_C, 0},
    {"mlp.down_proj.weight", SLOT_FCPROJW, D_0, D_C, D_F, 0},
};
#define N_LAYER_PARTS (int)(sizeof layer_parts / sizeof layer_parts[0])

/* One tensor of the file and where it lives in the Gpt. */
typedef struct Part {
    char name[HF_NAME_LEN];
    int layer, slot;          /* layer -1: a top-level tensor */
    int64_t row0, rows, cols; /* cols 0: a vector */
} Part;

/* ---- configs ---- */

int hf_llama_config(const HfConfig *c, const char *path, GptConfig *g, char *err, size_t errlen)
{
    if (c->arch == HF_ARCH_GPT2)
        return err_fail(err, errlen, "%s: a GPT2LMHeadModel, not a Llama-family model", path);
    const HfRope *r = &c->rope;
    RopeScaling scaling = r->type == HF_ROPE_LINEAR   ? ROPE_SCALING_LINEAR
                          : r->type == HF_ROPE_LLAMA3 ? ROPE_SCALING_LLAMA3
                                                      : ROPE_SCALING_NONE;
    *g = (GptConfig){
        .vocab = c->vocab,
        .context = c->context,
        .width = c->hidden,
        .layers = c->layers,
        .heads = c->heads,
        .arch = GPT_ARCH_LLAMA,
        .inner = c->inner,
        .norm_eps = (float)c->norm_eps,
        .kv_heads = c->kv_heads,
        .head_dim = c->head_dim,
        .qkv_bias = c->qkv_bias,
        .o_bias = c->o_bias,
        .untied_head = !c->tie_embeddings,
        .rope = {.head_dim = c->head_dim,
                 .theta = r->theta,
                 .scaling = scaling,
                 .factor = r->factor,
                 .low_freq_factor = r->low_freq_factor,
                 .high_freq_factor = r->high_freq_factor,
                 .original_max_position_embeddings = r->original_max_position_embeddings}};
    char why[256];
    if (gpt_config_check(g, why, sizeof why))
        return err_fail(err, errlen, "%s: %s", path, why);
    return 0;
}

HfConfig hf_llama_config_of(const GptConfig *g)
{
    const RopeConfig *r = &g->rope;
    bool linear = r->scaling == ROPE_SCALING_LINEAR, llama3 = r->scaling == ROPE_SCALING_LLAMA3;
    /* the fields of the other kinds stay 0, as parsing leaves them */
    HfRope rope = {.theta = r->theta,
                   .type = linear   ? HF_ROPE_LINEAR
                           : llama3 ? HF_ROPE_LLAMA3
                                    : HF_ROPE_DEFAULT,
                   .factor = linear || llama3 ? r->factor : 0,
                   .low_freq_factor = llama3 ? r->low_freq_factor : 0,
                   .high_freq_factor = llama3 ? r->high_freq_factor : 0,
                   .original_max_position_embeddings =
                       llama3 ? r->original_max_position_embeddings : 0};
    return (HfConfig){.arch = g->qkv_bias && !g->o_bias ? HF_ARCH_QWEN2 : HF_ARCH_LLAMA,
                      .vocab = g->vocab,
                      .context = g->context,
                      .hidden = g->width,
                      .layers = g->layers,
                      .heads = g->heads,
                      .kv_heads = gpt_kv_heads(g),
                      .head_dim = gpt_head_dim(g),
                      .inner = gpt_inner(g),
                      .norm_eps = hf_config_decimal_of(gpt_norm_eps(g)),
                      .tie_embeddings = !g->untied_head,
                      .rope = rope,
                      .qkv_bias = g->qkv_bias,
                      .o_bias = g->o_bias};
}

/* ---- the layout ---- */

static int64_t dim(const GptConfig *g, Dim d)
{
    int64_t HD = gpt_head_dim(g), NH = g->heads, NKV = gpt_kv_heads(g);
    int64_t v[] = {0, g->width, NH * HD, NKV * HD, (NH + NKV) * HD, gpt_inner(g)};
    return v[d];
}

static void top_part(Part *p, const char *name, int slot, int64_t rows, int64_t cols)
{
    *p = (Part){.layer = -1, .slot = slot, .rows = rows, .cols = cols};
    snprintf(p->name, sizeof p->name, "%s", name);
}

/* Every part of g's model in HF's order, into p (NULL: count only). */
static int list_parts(const GptConfig *g, Part *p)
{
    int n = 0;
    if (p)
        top_part(&p[n], EMBED, SLOT_EMBED, g->vocab, g->width);
    n++;
    for (int l = 0; l < g->layers; l++)
        for (int j = 0; j < N_LAYER_PARTS; j++) {
            char only = layer_parts[j].only;
            if ((only == 'q' && !g->qkv_bias) || (only == 'o' && !g->o_bias))
                continue;
            if (p) {
                p[n] = (Part){.layer = l,
                              .slot = layer_parts[j].slot,
                              .row0 = dim(g, layer_parts[j].row0),
                              .rows = dim(g, layer_parts[j].rows),
                              .cols = dim(g, layer_parts[j].cols)};
                snprintf(p[n].name, sizeof p[n].name, "model.layers.%d.%s", l, layer_parts[j].name);
            }
            n++;
        }
    if (p)
        top_part(&p[n], "model.norm.weight", SLOT_NORM, g->width, 0);
    n++;
    if (g->untied_head && p)
        top_part(&p[n], LM_HEAD, SLOT_HEAD, g->vocab, g->width);
    return n + (g->untied_head ? 1 : 0);
}

static Part *new_parts(const GptConfig *g, int *n, char *err, size_t errlen)
{
    *n = list_parts(g, NULL);
    Part *p = malloc((size_t)*n * sizeof *p);
    if (!p) {
        err_fail(err, errlen, "out of memory for %d tensor names", *n);
        return NULL;
    }
    list_parts(g, p);
    return p;
}

static Tensor *slot_tensor(const Gpt *m, const Part *p)
{
    if (p->layer < 0)
        return p->slot == SLOT_EMBED ? m->wte : p->slot == SLOT_NORM ? m->lnfw : m->head;
    const GptLayer *l = &m->h[p->layer];
    switch (p->slot) {
    case SLOT_LN1W:
        return l->ln1w;
    case SLOT_QKVW:
        return l->qkvw;
    case SLOT_QKVB:
        return l->qkvb;
    case SLOT_ATTPROJW:
        return l->attprojw;
    case SLOT_ATTPROJB:
        return l->attprojb;
    case SLOT_LN2W:
        return l->ln2w;
    case SLOT_FCW:
        return l->fcw;
    default:
        return l->fcprojw;
    }
}

/* The part as an entry viewing its rows of m's tensor. */
static StEntry part_entry(const Gpt *m, const Part *p)
{
    const Tensor *t = slot_tensor(m, p);
    return (StEntry){.name = p->name,
                     .ndim = p->cols ? 2 : 1,
                     .shape = {p->rows, p->cols},
                     .data = t->data + p->row0 * (p->cols ? p->cols : 1)};
}

/* The parts must tile m's parameters exactly, or model.c's layout moved
 * away from this table: caught here, not as a model with garbage rows. */
static int check_cover(const Gpt *m, const Part *p, int n, char *err, size_t errlen)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += p[i].rows * (p[i].cols ? p[i].cols : 1);
    if (total != m->all->size)
        return err_fail(err, errlen,
                        "internal: the Hugging Face layout covers %lld of the model's %lld "
                        "parameters",
                        (long long)total, (long long)m->all->size);
    return 0;
}

/* ---- loading ---- */

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static bool ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), k = strlen(tail);
    return n >= k && !strcmp(s + n - k, tail);
}

/* Every tensor of the folder is a part, the tied lm_head.weight or an
 * inv_freq buffer; names: the parts' names, sorted. */
static int check_extras(const StShards *s, const char *const *names, int n, const HfConfig *c,
                        char *err, size_t errlen)
{
    for (int i = 0; i < st_shards_count(s); i++) {
        const char *t = st_shards_name(s, i), *file;
        if (!strcmp(t, LM_HEAD) || ends_with(t, INV_FREQ) ||
            bsearch(&t, names, (size_t)n, sizeof *names, cmp_name))
            continue;
        st_shards_info(s, t, NULL, NULL, NULL, &file);
        return err_fail(err, errlen,
                        "%s: holds tensor \"%s\", which is not part of a %s of %d layers%s", file,
                        t, hf_arch_name(c->arch), c->layers,
                        ends_with(t, ".bias") ? " with these bias settings" : "");
    }
    return 0;
}

/* The folder holds every part and nothing else (but lm_head.weight when
 * tied, and inv_freq buffers). */
static int check_folder(const StShards *s, const HfConfig *c, const char *dir, const Part *p, int n,
                        char *err, size_t errlen)
{
    bool head = st_shards_info(s, LM_HEAD, NULL, NULL, NULL, NULL) == 0;
    if (!c->tie_embeddings && !head)
        return err_fail(
            err, errlen,
            "%s/%s: field \"tie_word_embeddings\" is false, but the weights hold no " LM_HEAD, dir,
            HF_CONFIG_FILE);
    for (int i = 0; i < n; i++)
        if (st_shards_check_float(s, p[i].name, p[i].cols ? 2 : 1,
                                  (int64_t[2]){p[i].rows, p[i].cols}, err, errlen))
            return -1;
    int64_t hs[2] = {c->vocab, c->hidden};
    if (head && c->tie_embeddings && st_shards_check_float(s, LM_HEAD, 2, hs, err, errlen))
        return -1;
    const char **names = malloc((size_t)n * sizeof *names);
    if (!names)
        return err_fail(err, errlen, "out of memory");
    for (int i = 0; i < n; i++)
        names[i] = p[i].name;
    qsort(names, (size_t)n, sizeof *names, cmp_name);
    int rc = check_extras(s, names, n, c, err, errlen);
    free(names);
    return rc;
}

static int read_parts(const StShards *s, Gpt *m, const Part *p, int n, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        StEntry e = part_entry(m, &p[i]);
        e.any_float = true;
        if (st_shards_read(s, &e, err, errlen))
            return -1;
    }
    return 0;
}

/* Weights that are not finite give a model whose every output is NaN
 * (model_file.h's rule), named here by the HF tensor and its own element,
 * not by the fused tensor they were read into. */
static int check_finite(const StShards *s, const Gpt *m, const Part *p, int n, char *err,
                        size_t errlen)
{
    for (int i = 0; i < n; i++) {
        StEntry e = part_entry(m, &p[i]);
        for (int64_t k = 0; k < p[i].rows * (p[i].cols ? p[i].cols : 1); k++) {
            if (isfinite(e.data[k]))
                continue;
            const char *file = st_shards_path(s);
            st_shards_info(s, p[i].name, NULL, NULL, NULL, &file);
            return err_fail(err, errlen,
                            "%s: tensor \"%s\" holds %s at element %lld: the weights are not "
                            "finite",
                            file, p[i].name, isnan(e.data[k]) ? "NaN" : "an infinity",
                            (long long)k);
        }
    }
    return 0;
}

/* Tied: an lm_head.weight in the folder must be the embedding, since the
 * model will compute with the embedding (HF ties them on load too). */
static int check_tied_head(const StShards *s, const Gpt *m, char *err, size_t errlen)
{
    const char *file;
    if (m->cfg.untied_head || st_shards_info(s, LM_HEAD, NULL, NULL, NULL, &file) != 0)
        return 0;
    StEntry e = st_entry(LM_HEAD, m->wte);
    e.any_float = true;
    e.data = malloc((size_t)m->wte->size * sizeof(float));
    int rc = e.data ? st_shards_read(s, &e, err, errlen) : err_fail(err, errlen, "out of memory");
    if (!rc && memcmp(e.data, m->wte->data, (size_t)m->wte->size * sizeof(float)))
        rc = err_fail(err, errlen,
                      "%s: " LM_HEAD " differs from " EMBED ", but tie_word_embeddings is true "
                      "(the model would compute with the embedding)",
                      file);
    free(e.data);
    return rc;
}

/* The model, allocated once the folder is known to fit, then filled. */
static int load_checked(const StShards *s, const HfConfig *c, const GptConfig *g, const char *dir,
                        const char *cfg_path, bool trainable, Gpt **out, char *err, size_t errlen)
{
    int n;
    Part *p = new_parts(g, &n, err, errlen);
    if (!p)
        return -1;
    char why[512];
    Gpt *m = NULL;
    int rc = check_folder(s, c, dir, p, n, err, errlen);
    if (!rc && !(m = gpt_new(g, trainable, why, sizeof why)))
        rc = err_fail(err, errlen, "%s: %s", cfg_path, why);
    if (!rc)
        rc = check_cover(m, p, n, err, errlen);
    if (!rc)
        rc = read_parts(s, m, p, n, err, errlen);
    if (!rc)
        rc = check_tied_head(s, m, err, errlen);
    if (!rc)
        rc = check_finite(s, m, p, n, err, errlen);
    free(p);
    if (rc)
        gpt_free(m);
    *out = rc ? NULL : m;
    return rc;
}

int hf_llama_load(const char *dir, const HfConfig *c, bool trainable, Gpt **out, char *err,
                  size_t errlen)
{
    *out = NULL;
    char cfg_path[PATH_MAX];
    snprintf(cfg_path, sizeof cfg_path, "%s/%s", dir, HF_CONFIG_FILE);
    GptConfig g;
    if (hf_llama_config(c, cfg_path, &g, err, errlen))
        return -1;
    StShards *s = st_shards_open(dir, err, errlen);
    if (!s)
        return -1;
    int rc = load_checked(s, c, &g, dir, cfg_path, trainable, out, err, errlen);
    st_shards_close(s);
    return rc;
}

/* ---- saving ---- */

static const char *torch_dtype(StDtype d)
{
    return d == ST_F32 ? "float32" : d == ST_BF16 ? "bfloat16" : "float16";
}

static int save_weights(const Gpt *m, const char *path, StDtype dtype, char *err, size_t errlen)
{
    int n;
    Part *p = new_parts(&m->cfg, &n, err, errlen);
    StEntry *e = p ? malloc((size_t)n * sizeof *e) : NULL;
    int rc = e   ? check_cover(m, p, n, err, errlen)
             : p ? err_fail(err, errlen, "out of memory")
                 : -1;
    for (int i = 0; !rc && i < n; i++)
        e[i] = part_entry(m, &p[i]);
    static const char *const meta[] = {"format", "pt", NULL};
    if (!rc)
        rc = st_save_as(path, e, n, meta, dtype, err, errlen);
    free(e);
    free(p);
    return rc;
}

int hf_llama_save(const Gpt *m, const char *dir, StDtype dtype, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (m->cfg.arch != GPT_ARCH_LLAMA)
        return err_fail(err, errlen, "%s: not a Llama-family model", dir);
    if (m->cfg.o_bias && !m->cfg.qkv_bias)
        return err_fail(err, errlen,
                        "%s: the model has an o_proj bias without q, k, v biases, which no "
                        "Hugging Face Llama-family architecture describes",
                        dir);
    if (snprintf(path, sizeof path, "%s/%s", dir, ST_INDEX_FILE) >= (int)sizeof path)
        return err_fail(err, errlen, "%s: path too long", dir);
    if (fsutil_exists(path))
        return err_fail(err, errlen,
                        "%s: holds a sharded model's index, which would shadow the new "
                        "%s: export into another folder",
                        path, ST_SINGLE_FILE);
    if (fsutil_mkdirs(dir, err, errlen))
        return -1;
    snprintf(path, sizeof path, "%s/%s", dir, ST_SINGLE_FILE);
    if (save_weights(m, path, dtype, err, errlen))
        return -1;
    HfConfig c = hf_llama_config_of(&m->cfg);
    snprintf(path, sizeof path, "%s/%s", dir, HF_CONFIG_FILE);
    return hf_config_save(path, &c, torch_dtype(dtype), err, errlen);
}
