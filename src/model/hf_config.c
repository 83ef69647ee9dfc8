/*
 * model/hf_config.c — config.json of a Hugging Face model (hf_config.h):
 * the architecture, its sizes, and a refusal for every field whose value
 * would make the model compute something prefrun does not.
 *
 * Each field is read by one helper that knows its JSON type, its default and
 * its range, and names the field (with its parent object, "rope_scaling.
 * factor") and the file in its message; a parse is a list of such reads.
 */
#include "model/hf_config.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"
#include "util/fsutil.h"

/* One object of the file being read: where messages point. */
typedef struct Reader {
    const char *path;
    const json_t *obj;
    const char *scope; /* "" or "rope_scaling." */
    char *err;
    size_t errlen;
} Reader;

static const struct {
    const char *name, *type;
    HfArch arch;
} archs[] = {
    {"GPT2LMHeadModel", "gpt2", HF_ARCH_GPT2},
    {"LlamaForCausalLM", "llama", HF_ARCH_LLAMA},
    {"MistralForCausalLM", "mistral", HF_ARCH_MISTRAL},
    {"Qwen2ForCausalLM", "qwen2", HF_ARCH_QWEN2},
};
#define N_ARCHS (sizeof archs / sizeof archs[0])

const char *hf_arch_name(HfArch a) { return archs[a].name; }
const char *hf_arch_model_type(HfArch a) { return archs[a].type; }

/* v as short JSON text for a message ("\"relu\"", "true", "1.5") */
static void value_text(const json_t *v, char *out, size_t cap)
{
    char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    snprintf(out, cap, "%s", s ? s : "?");
    if (s && strlen(s) >= cap && cap > 4)
        memcpy(out + cap - 4, "...", 4);
    free(s);
}

static int bad(const Reader *r, const char *key, const json_t *v, const char *want)
{
    char text[80];
    value_text(v, text, sizeof text);
    return err_fail(r->err, r->errlen, "%s: field \"%s%s\" is %s, expected %s", r->path, r->scope,
                    key, text, want);
}

static int missing(const Reader *r, const char *key)
{
    return err_fail(r->err, r->errlen, "%s: field \"%s%s\" is missing", r->path, r->scope, key);
}

/* The field, or NULL when absent or null. */
static const json_t *field(const Reader *r, const char *key)
{
    const json_t *v = json_object_get(r->obj, key);
    return json_is_null(v) ? NULL : v;
}

/* A size in 1..HF_MAX_SIZE; when absent or null, def (0: required). */
static int get_size(const Reader *r, const char *key, int def, int *out)
{
    const json_t *v = field(r, key);
    if (!v && !def)
        return missing(r, key);
    if (!v) {
        *out = def;
        return 0;
    }
    json_int_t x = json_integer_value(v);
    if (!json_is_integer(v) || x < 1 || x > HF_MAX_SIZE) {
        char want[64];
        snprintf(want, sizeof want, "an integer from 1 to %d", HF_MAX_SIZE);
        return bad(r, key, v, want);
    }
    *out = (int)x;
    return 0;
}

/* A positive finite number; def when absent (NAN: required). */
static int get_positive(const Reader *r, const char *key, double def, double *out)
{
    const json_t *v = field(r, key);
    if (!v && isnan(def))
        return missing(r, key);
    double x = v ? json_number_value(v) : def;
    if (v && (!json_is_number(v) || !(x > 0) || !isfinite(x)))
        return bad(r, key, v, "a positive number");
    *out = x;
    return 0;
}

static int get_bool(const Reader *r, const char *key, bool def, bool *out)
{
    const json_t *v = field(r, key);
    if (v && !json_is_boolean(v))
        return bad(r, key, v, "true or false");
    *out = v ? json_is_true(v) : def;
    return 0;
}

/* A flag prefrun computes only one way: absent means def (HF's default). */
static int require_bool(const Reader *r, const char *key, bool def, bool want)
{
    bool b = def;
    if (get_bool(r, key, def, &b))
        return -1;
    if (b != want)
        return err_fail(r->err, r->errlen, "%s: field \"%s%s\" is %s: prefrun computes only %s",
                        r->path, r->scope, key, b ? "true" : "false", want ? "true" : "false");
    return 0;
}

/* A string field that must be `want` (the default when absent). */
static int require_string(const Reader *r, const char *key, const char *want)
{
    const json_t *v = field(r, key);
    if (v && !json_is_string(v))
        return bad(r, key, v, "a string");
    if (v && strcmp(json_string_value(v), want))
        return err_fail(r->err, r->errlen, "%s: field \"%s%s\" is \"%s\": only \"%s\" is supported",
                        r->path, r->scope, key, json_string_value(v), want);
    return 0;
}

/* ---- the architecture ---- */

static int find_arch(const Reader *r, const char *s, bool by_type, HfArch *out)
{
    for (size_t i = 0; i < N_ARCHS; i++) {
        if (!strcmp(by_type ? archs[i].type : archs[i].name, s)) {
            *out = archs[i].arch;
            return 0;
        }
    }
    return err_fail(r->err, r->errlen,
                    by_type ? "%s: model_type \"%s\" is not supported (supported: gpt2, llama, "
                              "mistral, qwen2)"
                            : "%s: architecture \"%s\" is not supported (supported: "
                              "GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, "
                              "Qwen2ForCausalLM)",
                    r->path, s);
}

static int detect_arch(const Reader *r, HfArch *out)
{
    const json_t *a = field(r, "architectures"), *t = field(r, "model_type");
    if (t && !json_is_string(t))
        return bad(r, "model_type", t, "a string");
    if (!a && !t)
        return err_fail(r->err, r->errlen,
                        "%s: neither \"architectures\" nor \"model_type\": not a Hugging Face "
                        "model config?",
                        r->path);
    if (!a)
        return find_arch(r, json_string_value(t), true, out);
    if (!json_is_array(a) || json_array_size(a) != 1 || !json_is_string(json_array_get(a, 0)))
        return bad(r, "architectures", a, "a list of one class name");
    const char *name = json_string_value(json_array_get(a, 0));
    if (find_arch(r, name, false, out))
        return -1;
    if (t && strcmp(json_string_value(t), archs[*out].type))
        return err_fail(r->err, r->errlen,
                        "%s: model_type \"%s\" does not match architecture \"%s\" (model_type "
                        "\"%s\")",
                        r->path, json_string_value(t), name, archs[*out].type);
    return 0;
}

/* ---- GPT-2 ---- */

static int parse_gpt2(const Reader *r, HfConfig *c)
{
    const char *positions = field(r, "n_positions") || !field(r, "n_ctx") ? "n_positions" : "n_ctx";
    if (get_size(r, "vocab_size", 0, &c->vocab) || get_size(r, positions, 0, &c->context) ||
        get_size(r, "n_embd", 0, &c->hidden) || get_size(r, "n_layer", 0, &c->layers) ||
        get_size(r, "n_head", 0, &c->heads))
        return -1;
    if (get_size(r, "n_inner", 4 * c->hidden, &c->inner) ||
        get_positive(r, "layer_norm_epsilon", 1e-5, &c->norm_eps) ||
        get_bool(r, "tie_word_embeddings", true, &c->tie_embeddings) ||
        require_string(r, "activation_function", "gelu_new") ||
        require_bool(r, "scale_attn_weights", true, true) ||
        require_bool(r, "scale_attn_by_inverse_layer_idx", false, false) ||
        require_bool(r, "reorder_and_upcast_attn", false, false) ||
        require_bool(r, "add_cross_attention", false, false))
        return -1;
    if (c->hidden % c->heads)
        return err_fail(r->err, r->errlen, "%s: field \"n_head\" (%d) does not divide n_embd (%d)",
                        r->path, c->heads, c->hidden);
    c->kv_heads = c->heads;
    c->head_dim = c->hidden / c->heads;
    return 0;
}

/* ---- the Llama family ---- */

/* rope_scaling (or rope_parameters, which newer files write instead, with
 * rope_theta inside): rope_type (or the older "type") picks the kind. */
static int parse_rope(const Reader *r, HfRope *rope)
{
    if (get_positive(r, "rope_theta", 10000.0, &rope->theta))
        return -1;
    const char *key = field(r, "rope_scaling") ? "rope_scaling" : "rope_parameters";
    const json_t *s = field(r, key);
    rope->type = HF_ROPE_DEFAULT;
    if (!s)
        return 0;
    if (!json_is_object(s))
        return bad(r, key, s, "an object or null");
    char scope[32];
    snprintf(scope, sizeof scope, "%s.", key);
    Reader sr = {r->path, s, scope, r->err, r->errlen};
    if (!strcmp(key, "rope_parameters") &&
        get_positive(&sr, "rope_theta", rope->theta, &rope->theta))
        return -1;
    const json_t *t = field(&sr, "rope_type") ? field(&sr, "rope_type") : field(&sr, "type");
    const char *type = t ? json_string_value(t) : "default";
    if (!type)
        return bad(&sr, "rope_type", t, "a string");
    if (!strcmp(type, "default"))
        return 0;
    rope->type = !strcmp(type, "linear") ? HF_ROPE_LINEAR : HF_ROPE_LLAMA3;
    if (strcmp(type, "linear") && strcmp(type, "llama3"))
        return err_fail(r->err, r->errlen,
                        "%s: field \"%srope_type\" is \"%s\": only default, linear and llama3 "
                        "RoPE scaling are supported",
                        r->path, scope, type);
    if (get_positive(&sr, "factor", NAN, &rope->factor))
        return -1;
    if (rope->type == HF_ROPE_LINEAR)
        return 0;
    if (get_positive(&sr, "low_freq_factor", NAN, &rope->low_freq_factor) ||
        get_positive(&sr, "high_freq_factor", NAN, &rope->high_freq_factor) ||
        get_size(&sr, "original_max_position_embeddings", 0,
                 &rope->original_max_position_embeddings))
        return -1;
    return 0;
}

/* Mistral: sliding_window (HF's default 4096; null: none). Qwen2: only with
 * use_sliding_window. A window shorter than the context would change the
 * attention at the lengths the model is made for: refused. */
static int parse_window(const Reader *r, HfConfig *c)
{
    bool on = c->arch == HF_ARCH_MISTRAL;
    if (c->arch == HF_ARCH_QWEN2 && get_bool(r, "use_sliding_window", false, &on))
        return -1;
    const json_t *v = json_object_get(r->obj, "sliding_window");
    if (!on || json_is_null(v))
        return 0;
    if (get_size(r, "sliding_window", 4096, &c->sliding_window))
        return -1;
    if (c->sliding_window < c->context)
        return err_fail(r->err, r->errlen,
                        "%s: field \"sliding_window\" is %d, shorter than max_position_embeddings "
                        "(%d): sliding-window attention is not supported",
                        r->path, c->sliding_window, c->context);
    return 0;
}

static int llama_sizes(const Reader *r, HfConfig *c)
{
    if (get_size(r, "vocab_size", 0, &c->vocab) ||
        get_size(r, "max_position_embeddings", 0, &c->context) ||
        get_size(r, "hidden_size", 0, &c->hidden) ||
        get_size(r, "intermediate_size", 0, &c->inner) ||
        get_size(r, "num_hidden_layers", 0, &c->layers) ||
        get_size(r, "num_attention_heads", 0, &c->heads) ||
        get_size(r, "num_key_value_heads", c->heads, &c->kv_heads))
        return -1;
    if (!field(r, "head_dim") && c->hidden % c->heads)
        return err_fail(r->err, r->errlen,
                        "%s: field \"num_attention_heads\" (%d) does not divide hidden_size (%d) "
                        "and there is no head_dim",
                        r->path, c->heads, c->hidden);
    if (get_size(r, "head_dim", c->hidden / c->heads, &c->head_dim))
        return -1;
    if (c->heads % c->kv_heads)
        return err_fail(r->err, r->errlen,
                        "%s: field \"num_key_value_heads\" (%d) does not divide "
                        "num_attention_heads (%d)",
                        r->path, c->kv_heads, c->heads);
    return 0;
}

static int parse_llama(const Reader *r, HfConfig *c)
{
    if (llama_sizes(r, c) || get_positive(r, "rms_norm_eps", 1e-6, &c->norm_eps) ||
        get_bool(r, "tie_word_embeddings", false, &c->tie_embeddings) ||
        require_string(r, "hidden_act", "silu") || parse_rope(r, &c->rope) || parse_window(r, c))
        return -1;
    if (c->arch == HF_ARCH_LLAMA) {
        if (require_bool(r, "mlp_bias", false, false) ||
            get_bool(r, "attention_bias", false, &c->qkv_bias))
            return -1;
        c->o_bias = c->qkv_bias;
    }
    if (c->arch == HF_ARCH_QWEN2)
        c->qkv_bias = true; /* Qwen2's q, k and v projections always have biases, o none */
    return 0;
}

/* ---- loading ---- */

int hf_config_parse(const char *text, size_t len, const char *path, HfConfig *c, char *err,
                    size_t errlen)
{
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return err_fail(err, errlen, "%s:%d: invalid JSON: %s", path, jerr.line, jerr.text);
    Reader r = {path, root, "", err, errlen};
    int rc = json_is_object(root) ? 0 : err_fail(err, errlen, "%s: expected a JSON object", path);
    if (!rc && field(&r, "quantization_config"))
        rc = err_fail(err, errlen,
                      "%s: field \"quantization_config\" is set: quantized weights are not "
                      "supported",
                      path);
    if (!rc)
        rc = detect_arch(&r, &c->arch);
    if (!rc)
        rc = c->arch == HF_ARCH_GPT2 ? parse_gpt2(&r, c) : parse_llama(&r, c);
    json_decref(root);
    return rc;
}

int hf_config_load(const char *path, HfConfig *c, char *err, size_t errlen)
{
    static const FsReadCap cap = {.bytes = HF_CONFIG_MAX_BYTES, .kind = "a model config"};
    char *text;
    size_t len;
    if (fsutil_read_capped(path, &cap, &text, &len, err, errlen))
        return -1;
    int rc = hf_config_parse(text, len, path, c, err, errlen);
    free(text);
    return rc;
}

/* ---- writing ---- */

/* The shortest decimal that reads back as x ("1e-05", not 1.0000000000000001e-05). */
static void shortest(double x, char *out, size_t cap)
{
    for (int p = 1; p <= 17; p++) {
        snprintf(out, cap, "%.*g", p, x);
        if (strtod(out, NULL) == x)
            return;
    }
}

double hf_config_decimal_of(float x)
{
    char s[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(s, sizeof s, "%.*g", p, (double)x);
        if (strtof(s, NULL) == x)
            return strtod(s, NULL);
    }
    return x;
}

/* x as a JSON float, as Python writes one: "10000.0", "1e-06" (HF checks
 * some rope fields are floats, not ints) */
static void json_float(double x, char *out, size_t cap)
{
    if (x == floor(x) && fabs(x) < 1e16) /* where Python's repr is positional */
        snprintf(out, cap, "%.1f", x);
    else
        shortest(x, out, cap);
}

static int save_gpt2(const char *path, const HfConfig *c, const char *torch_dtype, char *err,
                     size_t errlen)
{
    char eps[32], inner[16];
    shortest(c->norm_eps, eps, sizeof eps);
    snprintf(inner, sizeof inner, c->inner == 4 * c->hidden ? "null" : "%d", c->inner);
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    if (!f)
        return -1;
    /* dropout 0: prefrun trains without it, and this is the model it trained */
    fsutil_atomic_printf(
        f,
        "{\n  \"architectures\": [\"GPT2LMHeadModel\"],\n  \"model_type\": \"gpt2\",\n"
        "  \"vocab_size\": %d,\n  \"n_positions\": %d,\n  \"n_embd\": %d,\n  \"n_layer\": %d,\n"
        "  \"n_head\": %d,\n  \"n_inner\": %s,\n  \"activation_function\": \"gelu_new\",\n"
        "  \"layer_norm_epsilon\": %s,\n  \"scale_attn_weights\": true,\n"
        "  \"scale_attn_by_inverse_layer_idx\": false,\n  \"reorder_and_upcast_attn\": false,\n"
        "  \"tie_word_embeddings\": %s,\n  \"resid_pdrop\": 0.0,\n  \"embd_pdrop\": 0.0,\n"
        "  \"attn_pdrop\": 0.0,\n  \"torch_dtype\": \"%s\"\n}\n",
        c->vocab, c->context, c->hidden, c->layers, c->heads, inner, eps,
        c->tie_embeddings ? "true" : "false", torch_dtype);
    return fsutil_atomic_commit(f, err, errlen);
}

/* rope_scaling as parse_rope reads it back: null, or the kind's fields */
static void rope_json(const HfRope *r, char *out, size_t cap)
{
    char f[32], lo[32], hi[32];
    json_float(r->factor, f, sizeof f);
    json_float(r->low_freq_factor, lo, sizeof lo);
    json_float(r->high_freq_factor, hi, sizeof hi);
    if (r->type == HF_ROPE_DEFAULT)
        snprintf(out, cap, "null");
    else if (r->type == HF_ROPE_LINEAR)
        snprintf(out, cap, "{\"rope_type\": \"linear\", \"factor\": %s}", f);
    else
        snprintf(out, cap,
                 "{\"rope_type\": \"llama3\", \"factor\": %s, \"low_freq_factor\": %s, "
                 "\"high_freq_factor\": %s, \"original_max_position_embeddings\": %d}",
                 f, lo, hi, r->original_max_position_embeddings);
}

/* What only one architecture of the family says: Llama's attention_bias
 * (q, k, v and o together) and mlp_bias, Mistral's sliding_window, Qwen2's
 * use_sliding_window; or why c cannot be said at all. */
static const char *llama_arch_fields(const HfConfig *c, char *out, size_t cap)
{
    char win[16];
    snprintf(win, sizeof win, c->sliding_window ? "%d" : "null", c->sliding_window);
    switch (c->arch) {
    case HF_ARCH_LLAMA:
        if (c->qkv_bias != c->o_bias)
            return "a LlamaForCausalLM has one attention_bias for q, k, v and o_proj";
        if (c->sliding_window)
            return "a LlamaForCausalLM has no sliding_window";
        snprintf(out, cap, "  \"attention_bias\": %s,\n  \"mlp_bias\": false,\n",
                 c->qkv_bias ? "true" : "false");
        return NULL;
    case HF_ARCH_MISTRAL:
        if (c->qkv_bias || c->o_bias)
            return "a MistralForCausalLM has no attention biases";
        snprintf(out, cap, "  \"sliding_window\": %s,\n", win);
        return NULL;
    default: /* Qwen2 */
        if (!c->qkv_bias || c->o_bias)
            return "a Qwen2ForCausalLM has biases on q, k and v_proj and none on o_proj";
        snprintf(out, cap, "  \"use_sliding_window\": %s,\n  \"sliding_window\": %s,\n",
                 c->sliding_window ? "true" : "false", win);
        return NULL;
    }
}

static bool rope_finite(const HfRope *r)
{
    return isfinite(r->theta) && isfinite(r->factor) && isfinite(r->low_freq_factor) &&
           isfinite(r->high_freq_factor);
}

static int save_llama(const char *path, const HfConfig *c, const char *torch_dtype, char *err,
                      size_t errlen)
{
    char eps[32], theta[32], rope[256], extra[160];
    const char *why = llama_arch_fields(c, extra, sizeof extra);
    if (why)
        return err_fail(err, errlen, "%s: cannot write this config: %s", path, why);
    if (!isfinite(c->norm_eps) || !rope_finite(&c->rope))
        return err_fail(err, errlen, "%s: rms_norm_eps or a rope field is not finite", path);
    json_float(c->norm_eps, eps, sizeof eps);
    json_float(c->rope.theta, theta, sizeof theta);
    rope_json(&c->rope, rope, sizeof rope);
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    if (!f)
        return -1;
    fsutil_atomic_printf(
        f,
        "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n  \"vocab_size\": %d,\n"
        "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
        "  \"num_attention_heads\": %d,\n  \"num_key_value_heads\": %d,\n  \"head_dim\": %d,\n"
        "  \"hidden_act\": \"silu\",\n  \"max_position_embeddings\": %d,\n"
        "  \"rms_norm_eps\": %s,\n  \"rope_theta\": %s,\n  \"rope_scaling\": %s,\n"
        "  \"tie_word_embeddings\": %s,\n%s  \"attention_dropout\": 0.0,\n"
        "  \"torch_dtype\": \"%s\"\n}\n",
        hf_arch_name(c->arch), hf_arch_model_type(c->arch), c->vocab, c->hidden, c->inner,
        c->layers, c->heads, c->kv_heads, c->head_dim, c->context, eps, theta, rope,
        c->tie_embeddings ? "true" : "false", extra, torch_dtype);
    return fsutil_atomic_commit(f, err, errlen);
}

int hf_config_save(const char *path, const HfConfig *c, const char *torch_dtype, char *err,
                   size_t errlen)
{
    if ((unsigned)c->arch >= N_ARCHS)
        return err_fail(err, errlen, "%s: unknown architecture %d", path, (int)c->arch);
    return c->arch == HF_ARCH_GPT2 ? save_gpt2(path, c, torch_dtype, err, errlen)
                                   : save_llama(path, c, torch_dtype, err, errlen);
}
