/*
 * train/config.c — the run configuration: one table of keys (name, type, range,
 * help), YAML loading with libyaml's document API (nodes carry their line),
 * --set overrides, and YAML output that reads back to the same values.
 *
 * The key table is the single source of what a key is: loading, --set,
 * --help and saving all walk it, so a field added to Config and to the table
 * is handled everywhere. Defaults live in config_defaults, each with its
 * source (TRL DPOConfig / HF TrainingArguments, or "prefrun" and why).
 */
#include "util/text.h"
#include "util/errmsg.h"
#include "train/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "model/hf_config.h"
#include "train/data.h"
#include "util/fsutil.h"

/* TRL DPOConfig.max_length: with a model, the default context when its own
 * positions allow that many */
#define TRL_MAX_LENGTH 1024
/* TRL DPOConfig.learning_rate: with a model, the default rate */
#define TRL_LEARNING_RATE 1e-6

void config_defaults(Config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    /* model: prefrun's small default, trainable in about a minute on 2 cores */
    cfg->vocab = DATA_VOCAB; /* 256 bytes + EOT */
    cfg->context = 64;
    cfg->width = 64;
    cfg->layers = 2;
    cfg->heads = 4;
    /* data */
    cfg->eval_fraction = 0.1;   /* prefrun: TRL needs an explicit eval set */
    cfg->max_length = 0;        /* = context; TRL's 1024 exceeds our context */
    cfg->max_prompt_length = 0; /* = max_length / 2, TRL's 512 / 1024 ratio */
    cfg->toy_pairs = 1024;
    /* optimisation: HF TrainingArguments defaults unless noted */
    cfg->per_device_train_batch_size = 8;
    cfg->per_device_eval_batch_size = 8;
    cfg->gradient_accumulation_steps = 1;
    cfg->learning_rate = 1e-3; /* prefrun: TRL's 1e-6 is for fine-tuning a pretrained LLM */
    cfg->lr_scheduler_type = CONFIG_SCHEDULE_LINEAR;
    cfg->adam_beta1 = 0.9;
    cfg->adam_beta2 = 0.999;
    cfg->adam_epsilon = 1e-8;
    cfg->max_grad_norm = 1.0;
    cfg->num_train_epochs = 3.0;
    cfg->max_steps = -1;
    cfg->nan_policy = CONFIG_NAN_STOP;
    /* LoRA: TRL ModelConfig (trl/trainer/model_config.py) */
    cfg->use_peft = false;
    cfg->lora_r = 16;
    cfg->lora_alpha = 32;
    cfg->lora_dropout = 0.05;
    cfg->use_rslora = false;
    /* run */
    cfg->seed = 42;
    cfg->logging_steps = 10; /* prefrun: HF's 500 is longer than the default run */
    cfg->eval_steps = 50;
    cfg->save_steps = 100;
}

/* ---- the key table ---- */

typedef enum KeyType {
    KEY_INT,
    KEY_I64,
    KEY_U64,
    KEY_DOUBLE,
    KEY_BOOL,
    KEY_STRING,
    KEY_SCHEDULE,
    KEY_NAN_POLICY,
    KEY_LIST, /* names: a YAML list or one comma-separated string, kept comma-separated */
} KeyType;

typedef struct Key {
    const char *name;
    KeyType type;
    size_t off;
    double lo, hi; /* inclusive range of numeric keys */
    const char *help;
} Key;

// clang-format off
#define K(field, type, lo, hi, help) {#field, type, offsetof(Config, field), lo, hi, help}
// clang-format on
#define BIG 9.0e18

static const Key keys[] = {
    K(model, KEY_STRING, 0, 0,
      "Hugging Face model folder to train: its weights, shape and tokenizer; \"\" = prefrun's "
      "own GPT"),
    K(vocab, KEY_INT, 1, INT_MAX,
      "vocabulary size V (>= 257 for the byte tokenizer) [prefrun; with model: its]"),
    K(context, KEY_INT, 2, 1 << 20,
      "context length T: positions per sequence [prefrun: 64; with model: min(its, 1024)]"),
    K(width, KEY_INT, 1, 1 << 16, "model width C [prefrun; with model: its]"),
    K(layers, KEY_INT, 1, 1024, "transformer blocks L [prefrun; with model: its]"),
    K(heads, KEY_INT, 1, 1 << 16, "attention heads, dividing width [prefrun; with model: its]"),
    K(train_file, KEY_STRING, 0, 0, "TRL JSONL preference pairs; \"\" = the built-in data"),
    K(eval_file, KEY_STRING, 0, 0, "held-out JSONL; \"\" = split eval_fraction off the data"),
    K(chat_format, KEY_STRING, 0, 0,
      "conversational data's chat template: chatml, llama3, zephyr, mistral, gemma"),
    K(eval_fraction, KEY_DOUBLE, 0, 0.99, "share held out when no eval_file [prefrun]"),
    K(max_length, KEY_INT, 0, INT_MAX, "max prompt+response tokens; 0 = context [TRL: 1024]"),
    K(max_prompt_length, KEY_INT, 0, INT_MAX,
      "prompt budget when max_length is exceeded; 0 = max_length/2 [TRL: 512]"),
    K(skip_invalid, KEY_BOOL, 0, 0, "skip and count malformed data lines instead of failing"),
    K(dataloader_drop_last, KEY_BOOL, 0, 0, "drop each epoch's short last batch [HF: false]"),
    K(toy_pairs, KEY_INT, 2, 1 << 24, "pairs of the generated default data [prefrun]"),
    K(per_device_train_batch_size, KEY_INT, 1, 1 << 20, "pairs per micro-batch B [HF: 8]"),
    K(per_device_eval_batch_size, KEY_INT, 1, 1 << 20, "pairs per eval batch [HF: 8]"),
    K(gradient_accumulation_steps, KEY_INT, 1, 1 << 20, "micro-batches per optimizer step [HF: 1]"),
    K(learning_rate, KEY_DOUBLE, 0, 10,
      "peak AdamW learning rate [prefrun: 1e-3; with model: TRL DPOConfig's 1e-6]"),
    K(lr_scheduler_type, KEY_SCHEDULE, 0, 0, "decay after warmup [HF: linear]"),
    K(warmup_steps, KEY_INT, 0, INT_MAX, "linear warmup steps; > 0 overrides warmup_ratio [HF: 0]"),
    K(warmup_ratio, KEY_DOUBLE, 0, 1, "warmup as a share of all steps [HF: 0.0]"),
    K(weight_decay, KEY_DOUBLE, 0, 10, "AdamW decoupled weight decay [HF: 0.0]"),
    K(adam_beta1, KEY_DOUBLE, 0, 0.999999, "[HF: 0.9]"),
    K(adam_beta2, KEY_DOUBLE, 0, 0.999999999, "[HF: 0.999]"),
    K(adam_epsilon, KEY_DOUBLE, 1e-30, 1, "[HF: 1e-8]"),
    K(max_grad_norm, KEY_DOUBLE, 0, 1e30, "gradient clipping norm; 0 = none [HF: 1.0]"),
    K(num_train_epochs, KEY_DOUBLE, 0, 1e9, "epochs, when max_steps <= 0 [HF: 3.0]"),
    K(max_steps, KEY_INT, -1, INT_MAX, "optimizer steps; > 0 overrides epochs [HF: -1]"),
    K(precompute_ref_log_probs, KEY_BOOL, 0, 0,
      "compute reference log-probs once per data set [TRL: false]"),
    K(use_peft, KEY_BOOL, 0, 0,
      "train LoRA adapters on frozen weights; the reference is the weights without them "
      "[TRL: false]"),
    K(lora_r, KEY_INT, 1, 1 << 16, "LoRA rank r [TRL: 16]"),
    K(lora_alpha, KEY_DOUBLE, 1e-30, 1e9, "LoRA alpha: the update is scaled alpha / r [TRL: 32]"),
    K(lora_dropout, KEY_DOUBLE, 0, 0.999999, "dropout on the adapters' input [TRL: 0.05]"),
    K(use_rslora, KEY_BOOL, 0, 0, "rank-stabilised scale alpha / sqrt(r) [TRL: false]"),
    K(target_modules, KEY_LIST, 0, 0,
      "modules that get adapters: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj "
      "(Llama), c_attn, c_proj, c_fc (GPT-2), or all-linear; a list or comma-separated; \"\" = "
      "PEFT's default (q_proj, v_proj; GPT-2 c_attn) [TRL: lora_target_modules]"),
    K(nan_policy, KEY_NAN_POLICY, 0, 0,
      "on a NaN/Inf loss or gradient: stop, or skip the batch (a run that skips more than "
      "half its steps fails)"),
    K(seed, KEY_U64, 0, 0, "seed of init, data order and splits [HF: 42]"),
    K(threads, KEY_INT, 0, 4096, "threads; 0 = all cores"),
    K(logging_steps, KEY_INT, 1, INT_MAX, "steps between metric lines [prefrun: 10; HF: 500]"),
    K(eval_steps, KEY_INT, 0, INT_MAX, "steps between held-out evaluations; 0 = none [prefrun]"),
    K(save_steps, KEY_INT, 0, INT_MAX, "steps between checkpoints; 0 = only at the end [HF: 500]"),
    K(save_total_limit, KEY_INT, 0, INT_MAX, "checkpoints kept; 0 = all [HF: None = all]"),
    K(output_dir, KEY_STRING, 0, 0, "run directory; \"\" = chosen by prefrun train"),
    K(sandbox_lua_bytes, KEY_I64, 0, BIG, "loss script Lua heap cap; 0 = sandbox default"),
    K(sandbox_tensor_bytes, KEY_I64, 0, BIG, "tensor bytes per loss call; 0 = default"),
    K(sandbox_instructions, KEY_I64, 0, BIG, "VM instructions per loss call; 0 = default"),
    K(sandbox_seconds, KEY_DOUBLE, 0, 1e6, "seconds per loss call; 0 = default"),
    K(sandbox_max_depth, KEY_INT, 0, 1 << 20, "Lua call depth; 0 = default"),
};
#define N_KEYS (int)(sizeof keys / sizeof keys[0])
_Static_assert(N_KEYS <= 64, "Config.given has a bit per key");

static const char *const schedule_names[] = {"linear", "cosine", "constant"};
static const char *const nan_names[] = {"stop", "skip"};
_Static_assert(sizeof schedule_names / sizeof *schedule_names == CONFIG_SCHEDULE_CONSTANT + 1,
               "a schedule without a name");
_Static_assert(sizeof nan_names / sizeof *nan_names == CONFIG_NAN_SKIP + 1,
               "a nan policy without a name");

int config_key_count(void) { return N_KEYS; }
const char *config_key_name(int i) { return i >= 0 && i < N_KEYS ? keys[i].name : NULL; }
const char *config_key_help(int i) { return i >= 0 && i < N_KEYS ? keys[i].help : NULL; }

static const char *type_name(KeyType t)
{
    switch (t) {
    case KEY_INT:
    case KEY_I64:
        return "an integer";
    case KEY_U64:
        return "a non-negative integer";
    case KEY_DOUBLE:
        return "a number";
    case KEY_BOOL:
        return "true or false";
    case KEY_STRING:
        return "a string";
    case KEY_SCHEDULE:
        return "one of linear, cosine, constant";
    case KEY_NAN_POLICY:
        return "one of stop, skip";
    case KEY_LIST:
        return "a list of names";
    }
    return "?";
}

const char *config_key_type(int i) { return i >= 0 && i < N_KEYS ? type_name(keys[i].type) : NULL; }
const char *config_schedule_name(ConfigSchedule s) { return schedule_names[s]; }
const char *config_nan_policy_name(ConfigNanPolicy p) { return nan_names[p]; }

static const Key *find_key(const char *name)
{
    for (int i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

/* ---- scalar parsing ---- */

/* A scalar as YAML gave it: text, and whether it was quoted (a quoted "8"
 * is a string, not an integer). */
typedef struct Scalar {
    const char *text;
    bool quoted;
} Scalar;

static bool is_null(Scalar v)
{
    return !v.quoted && (!*v.text || !strcmp(v.text, "~") || !strcmp(v.text, "null") ||
                         !strcmp(v.text, "Null") || !strcmp(v.text, "NULL"));
}

static int parse_int(Scalar v, long long *out)
{
    if (v.quoted || !*v.text)
        return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v.text, &end, 10);
    if (errno || *end)
        return -1;
    *out = x;
    return 0;
}

static int parse_double(Scalar v, double *out)
{
    if (v.quoted || !*v.text || isspace((unsigned char)v.text[0]))
        return -1;
    char *end;
    errno = 0;
    double x = strtod(v.text, &end);
    if (*end || !isfinite(x) || (errno == ERANGE && fabs(x) > 1.0)) /* underflow to 0 is fine */
        return -1;
    *out = x;
    return 0;
}

static int parse_bool(Scalar v, bool *out)
{
    static const char *const t[] = {"true", "True", "TRUE"}, *const f[] = {"false", "False",
                                                                           "FALSE"};
    for (int i = 0; i < 3 && !v.quoted; i++) {
        if (!strcmp(v.text, t[i]) || !strcmp(v.text, f[i])) {
            *out = !strcmp(v.text, t[i]);
            return 0;
        }
    }
    return -1;
}

static int parse_enum(Scalar v, const char *const *names, int n, int *out)
{
    for (int i = 0; i < n; i++) {
        if (!strcmp(v.text, names[i])) {
            *out = i;
            return 0;
        }
    }
    return -1;
}

/* ---- lists of names ---- */

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.';
}

/* text ("a,b", spaces around names allowed; "" or null: empty) checked and
 * stored comma-separated without spaces */
static int set_list(char *field, const char *text, const char *where, const char *key, char *err,
                    size_t errlen)
{
    char out[CONFIG_PATH_LEN];
    size_t n = 0;
    bool empty_item = false;
    for (const char *p = text; *p;) {
        while (*p == ' ')
            p++;
        const char *start = p;
        while (name_char(*p))
            p++;
        size_t len = (size_t)(p - start);
        while (*p == ' ')
            p++;
        if (*p && *p != ',')
            return err_fail(err, errlen,
                            "%s: key \"%s\": '%c' in \"%s\": expected names of letters, digits, "
                            "_, - and . separated by commas",
                            where, key, *p, text);
        empty_item = empty_item || len == 0;
        if (n + len + 2 > sizeof out)
            return err_fail(err, errlen, "%s: key \"%s\": longer than %d bytes", where, key,
                            CONFIG_PATH_LEN - 1);
        if (n)
            out[n++] = ',';
        memcpy(out + n, start, len);
        n += len;
        if (*p == ',')
            p++;
    }
    out[n] = '\0';
    size_t tl = strlen(text);
    while (tl && text[tl - 1] == ' ')
        tl--;
    empty_item = empty_item || (tl && text[tl - 1] == ',');
    if (empty_item && *text)
        return err_fail(err, errlen, "%s: key \"%s\": an empty name in \"%s\"", where, key, text);
    snprintf(field, CONFIG_PATH_LEN, "%s", out);
    return 0;
}

bool config_list_item(const char *list, int i, char *out, size_t len)
{
    const char *p = list;
    for (int k = 0; k < i && p; k++)
        p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL;
    if (!p || !*p)
        return false;
    size_t n = strcspn(p, ",");
    snprintf(out, len, "%.*s", (int)n, p);
    return true;
}

/* Stores v into k's field. `where` is "FILE:LINE" or "--set KEY=VALUE". */
static int apply_key(Config *cfg, const Key *k, Scalar v, const char *where, char *err,
                     size_t errlen)
{
    char *field = (char *)cfg + k->off;
    long long i = 0;
    double d = 0;
    bool b = false;
    int e = 0, bad = 0;
    switch (k->type) {
    case KEY_INT:
    case KEY_I64:
        bad = parse_int(v, &i) || i < (long long)k->lo || (double)i > k->hi;
        if (!bad && k->type == KEY_INT)
            *(int *)field = (int)i;
        else if (!bad)
            *(int64_t *)field = (int64_t)i;
        break;
    case KEY_U64: {
        unsigned long long u = 0;
        char *end = NULL;
        bad = v.quoted || !isdigit((unsigned char)v.text[0]); /* strtoull would take "-1" */
        if (!bad) {
            errno = 0;
            u = strtoull(v.text, &end, 10);
            bad = errno || *end;
        }
        if (!bad)
            *(uint64_t *)field = u;
        break;
    }
    case KEY_DOUBLE:
        bad = parse_double(v, &d) || d < k->lo || d > k->hi;
        if (!bad)
            *(double *)field = d;
        break;
    case KEY_BOOL:
        bad = parse_bool(v, &b);
        if (!bad)
            *(bool *)field = b;
        break;
    case KEY_STRING:
        if (strlen(v.text) >= CONFIG_PATH_LEN)
            return err_fail(err, errlen, "%s: key \"%s\": value is longer than %d bytes", where,
                            k->name, CONFIG_PATH_LEN - 1);
        snprintf(field, CONFIG_PATH_LEN, "%s", is_null(v) ? "" : v.text);
        break;
    case KEY_LIST:
        if (is_null(v))
            field[0] = '\0';
        else if (set_list(field, v.text, where, k->name, err, errlen) != 0)
            return -1;
        break;
    case KEY_SCHEDULE:
        bad = parse_enum(v, schedule_names, CONFIG_SCHEDULE_CONSTANT + 1, &e);
        if (!bad)
            *(ConfigSchedule *)field = (ConfigSchedule)e;
        break;
    case KEY_NAN_POLICY:
        bad = parse_enum(v, nan_names, CONFIG_NAN_SKIP + 1, &e);
        if (!bad)
            *(ConfigNanPolicy *)field = (ConfigNanPolicy)e;
        break;
    }
    if (!bad) {
        cfg->given |= (uint64_t)1 << (k - keys);
        return 0;
    }
    bool numeric = k->type == KEY_INT || k->type == KEY_I64 || k->type == KEY_DOUBLE;
    bool typed = (k->type == KEY_DOUBLE) ? !parse_double(v, &d) : !parse_int(v, &i);
    if (numeric && typed) /* the right type, out of range */
        return err_fail(err, errlen, "%s: key \"%s\": %s is out of range [%g, %g]", where, k->name,
                        v.text, k->lo, k->hi);
    return err_fail(err, errlen, "%s: key \"%s\": expected %s, got %s\"%s\"", where, k->name,
                    type_name(k->type), v.quoted ? "the quoted string " : "", v.text);
}

/* ---- loss params ---- */

static bool valid_param_name(const char *s)
{
    if (!(isalpha((unsigned char)*s) || *s == '_') || strlen(s) >= CONFIG_PARAM_NAME_LEN)
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

int config_set_loss_param(Config *cfg, const char *name, double value, char *err, size_t errlen)
{
    if (!valid_param_name(name))
        return err_fail(err, errlen, "loss param \"%s\": expected a name of letters, digits and _",
                        name);
    for (int i = 0; i < cfg->n_loss_params; i++) {
        if (!strcmp(cfg->loss_params[i].name, name)) {
            cfg->loss_params[i].value = value;
            return 0;
        }
    }
    if (cfg->n_loss_params == CONFIG_MAX_LOSS_PARAMS)
        return err_fail(err, errlen, "loss param \"%s\": more than %d loss params", name,
                        CONFIG_MAX_LOSS_PARAMS);
    ConfigLossParam *p = &cfg->loss_params[cfg->n_loss_params++];
    snprintf(p->name, sizeof p->name, "%s", name);
    p->value = value;
    return 0;
}

const ConfigLossParam *config_loss_param(const Config *cfg, const char *name)
{
    for (int i = 0; i < cfg->n_loss_params; i++)
        if (!strcmp(cfg->loss_params[i].name, name))
            return &cfg->loss_params[i];
    return NULL;
}

static int apply_loss_param(Config *cfg, const char *name, Scalar v, const char *where, char *err,
                            size_t errlen)
{
    double d;
    if (!valid_param_name(name))
        return err_fail(err, errlen,
                        "%s: loss param \"%s\": expected a name of letters, digits and _", where,
                        name);
    if (parse_double(v, &d))
        return err_fail(err, errlen, "%s: loss param \"%s\": expected a number, got %s\"%s\"",
                        where, name, v.quoted ? "the quoted string " : "", v.text);
    char msg[256];
    if (config_set_loss_param(cfg, name, d, msg, sizeof msg))
        return err_fail(err, errlen, "%s: %s", where, msg);
    return 0;
}

/* ---- YAML ---- */

typedef struct Loader {
    Config *cfg;
    yaml_document_t *doc;
    const char *name;
    char **seen; /* flattened keys already set by this file */
    int n_seen, cap_seen;
    char *err;
    size_t errlen;
} Loader;

static const char *node_kind(const yaml_node_t *n)
{
    return n->type == YAML_SEQUENCE_NODE  ? "a list"
           : n->type == YAML_MAPPING_NODE ? "a mapping"
                                          : "a scalar";
}

static int mark_seen(Loader *ld, const char *key, int line)
{
    for (int i = 0; i < ld->n_seen; i++)
        if (!strcmp(ld->seen[i], key))
            return err_fail(ld->err, ld->errlen, "%s:%d: duplicate key \"%s\"", ld->name, line,
                            key);
    if (ld->n_seen == ld->cap_seen) {
        int cap = ld->cap_seen ? ld->cap_seen * 2 : 32;
        char **s = realloc(ld->seen, (size_t)cap * sizeof *s);
        if (!s)
            return err_fail(ld->err, ld->errlen, "%s: out of memory", ld->name);
        ld->seen = s;
        ld->cap_seen = cap;
    }
    if (!(ld->seen[ld->n_seen] = strdup(key)))
        return err_fail(ld->err, ld->errlen, "%s: out of memory", ld->name);
    ld->n_seen++;
    return 0;
}

/* One flattened key with a scalar value. */
static int load_scalar(Loader *ld, const char *key, const yaml_node_t *val, int line)
{
    char where[CONFIG_PATH_LEN + 32];
    snprintf(where, sizeof where, "%s:%d", ld->name, (int)val->start_mark.line + 1);
    Scalar v = {(const char *)val->data.scalar.value,
                val->data.scalar.style != YAML_PLAIN_SCALAR_STYLE};
    if (!strncmp(key, "loss.", 5))
        return apply_loss_param(ld->cfg, key + 5, v, where, ld->err, ld->errlen);
    const Key *k = find_key(key);
    if (!k)
        return err_fail(ld->err, ld->errlen,
                        "%s:%d: unknown key \"%s\" (the keys are listed by `prefrun train --help`; "
                        "loss params go under `loss:`)",
                        ld->name, line, key);
    return apply_key(ld->cfg, k, v, where, ld->err, ld->errlen);
}

/* A list key's YAML sequence: its scalars joined with commas, each checked
 * as a name (a comma inside one is refused by set_list) */
static int load_list(Loader *ld, const Key *k, const yaml_node_t *seq)
{
    char joined[CONFIG_PATH_LEN] = "", where[CONFIG_PATH_LEN + 32];
    size_t n = 0;
    for (yaml_node_item_t *it = seq->data.sequence.items.start; it < seq->data.sequence.items.top;
         it++) {
        yaml_node_t *item = yaml_document_get_node(ld->doc, *it);
        snprintf(where, sizeof where, "%s:%d", ld->name, (int)item->start_mark.line + 1);
        const char *text =
            item->type == YAML_SCALAR_NODE ? (const char *)item->data.scalar.value : NULL;
        if (!text || !*text || strchr(text, ','))
            return err_fail(ld->err, ld->errlen, "%s: key \"%s\": expected a list of names, got %s",
                            where, k->name, text ? "\"" : node_kind(item));
        size_t len = strlen(text);
        if (n + len + 2 > sizeof joined)
            return err_fail(ld->err, ld->errlen, "%s: key \"%s\": longer than %d bytes", where,
                            k->name, CONFIG_PATH_LEN - 1);
        n += (size_t)snprintf(joined + n, sizeof joined - n, "%s%s", n ? "," : "", text);
    }
    snprintf(where, sizeof where, "%s:%d", ld->name, (int)seq->start_mark.line + 1);
    if (set_list((char *)ld->cfg + k->off, joined, where, k->name, ld->err, ld->errlen) != 0)
        return -1;
    ld->cfg->given |= (uint64_t)1 << (k - keys);
    return 0;
}

static int load_mapping(Loader *ld, const yaml_node_t *map, const char *prefix)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *kn = yaml_document_get_node(ld->doc, p->key);
        yaml_node_t *vn = yaml_document_get_node(ld->doc, p->value);
        int line = (int)kn->start_mark.line + 1;
        if (kn->type != YAML_SCALAR_NODE)
            return err_fail(ld->err, ld->errlen, "%s:%d: a key is %s, expected a name", ld->name,
                            line, node_kind(kn));
        char key[CONFIG_PATH_LEN];
        if (snprintf(key, sizeof key, "%s%s", prefix, (const char *)kn->data.scalar.value) >=
            (int)sizeof key - 1) /* room for the "." of a nested mapping */
            return err_fail(ld->err, ld->errlen, "%s:%d: key too long", ld->name, line);
        if (mark_seen(ld, key, line))
            return -1;
        int rc;
        if (vn->type == YAML_MAPPING_NODE) { /* `a: {b: 1}` is the key a.b */
            strcat(key, ".");
            rc = load_mapping(ld, vn, key);
        } else if (vn->type == YAML_SEQUENCE_NODE && find_key(key) &&
                   find_key(key)->type == KEY_LIST) {
            rc = load_list(ld, find_key(key), vn);
        } else if (vn->type == YAML_SEQUENCE_NODE) {
            const Key *k = find_key(key);
            rc = err_fail(ld->err, ld->errlen, "%s:%d: key \"%s\": expected %s, got a list",
                          ld->name, (int)vn->start_mark.line + 1, key,
                          k ? type_name(k->type) : "a number");
        } else {
            rc = load_scalar(ld, key, vn, line);
        }
        if (rc)
            return -1;
    }
    return 0;
}

static int yaml_syntax_error(const yaml_parser_t *p, const char *name, char *err, size_t errlen)
{
    const yaml_mark_t *m = &p->problem_mark;
    if (p->context)
        return err_fail(err, errlen, "%s:%d:%d: invalid YAML: %s %s", name, (int)m->line + 1,
                        (int)m->column + 1, p->problem ? p->problem : "syntax error", p->context);
    return err_fail(err, errlen, "%s:%d:%d: invalid YAML: %s", name, (int)m->line + 1,
                    (int)m->column + 1, p->problem ? p->problem : "syntax error");
}

/* Loads every key of one document onto a copy; cfg changes only on success. */
static int load_document(Config *cfg, yaml_parser_t *parser, yaml_document_t *doc, const char *name,
                         char *err, size_t errlen)
{
    yaml_node_t *root = yaml_document_get_root_node(doc);
    if (!root) /* an empty file: nothing to change */
        return 0;
    if (root->type != YAML_MAPPING_NODE)
        return err_fail(err, errlen, "%s:%d: the file is %s, expected a mapping of key: value",
                        name, (int)root->start_mark.line + 1, node_kind(root));
    yaml_document_t next;
    if (!yaml_parser_load(parser, &next))
        return yaml_syntax_error(parser, name, err, errlen);
    bool more = yaml_document_get_root_node(&next) != NULL;
    int line = more ? (int)yaml_document_get_root_node(&next)->start_mark.line + 1 : 0;
    yaml_document_delete(&next);
    if (more)
        return err_fail(err, errlen, "%s:%d: a second YAML document; expected one mapping", name,
                        line);
    Config work = *cfg;
    Loader ld = {.cfg = &work, .doc = doc, .name = name, .err = err, .errlen = errlen};
    int rc = load_mapping(&ld, root, "");
    for (int i = 0; i < ld.n_seen; i++)
        free(ld.seen[i]);
    free(ld.seen);
    if (rc == 0)
        *cfg = work;
    return rc;
}

int config_yaml_depth_check(const char *text, size_t len, const char *name, char *err,
                            size_t errlen)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return err_fail(err, errlen, "%s: out of memory", name);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int depth = 0, rc = 0;
    for (bool done = false; !done && rc == 0;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev))
            break; /* a syntax error: yaml_parser_load reports it with its place */
        done = ev.type == YAML_STREAM_END_EVENT;
        if (ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_SEQUENCE_START_EVENT)
            depth++;
        else if (ev.type == YAML_MAPPING_END_EVENT || ev.type == YAML_SEQUENCE_END_EVENT)
            depth--;
        if (depth > CONFIG_YAML_MAX_DEPTH)
            rc = err_fail(err, errlen, "%s:%d: nested more than %d deep", name,
                          (int)ev.start_mark.line + 1, CONFIG_YAML_MAX_DEPTH);
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    return rc;
}

int config_load_yaml_text(Config *cfg, const char *text, size_t len, const char *name, char *err,
                          size_t errlen)
{
    if (len > CONFIG_YAML_MAX_BYTES)
        return err_fail(err, errlen, "%s: larger than %zu bytes, the cap for a YAML file", name,
                        CONFIG_YAML_MAX_BYTES);
    if (config_yaml_depth_check(text, len, name, err, errlen) != 0)
        return -1;
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return err_fail(err, errlen, "%s: out of memory", name);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    yaml_document_t doc;
    int rc;
    if (!yaml_parser_load(&parser, &doc)) {
        rc = yaml_syntax_error(&parser, name, err, errlen);
    } else {
        rc = load_document(cfg, &parser, &doc, name, err, errlen);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&parser);
    return rc;
}

int config_load_yaml(Config *cfg, const char *path, char *err, size_t errlen)
{
    char *text;
    size_t len;
    if (fsutil_read_capped(path, CONFIG_YAML_CAP, &text, &len, err, errlen))
        return -1;
    int rc = config_load_yaml_text(cfg, text, len, path, err, errlen);
    free(text);
    return rc;
}

int config_set(Config *cfg, const char *assignment, char *err, size_t errlen)
{
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return err_fail(err, errlen, "--set %s: expected KEY=VALUE", assignment);
    char key[CONFIG_PATH_LEN], where[CONFIG_PATH_LEN + 16];
    size_t klen = (size_t)(eq - assignment);
    if (klen >= sizeof key)
        return err_fail(err, errlen, "--set: key too long");
    memcpy(key, assignment, klen);
    key[klen] = '\0';
    snprintf(where, sizeof where, "--set %s", assignment);
    Scalar v = {eq + 1, false};
    const Key *k = find_key(key);
    if (k)
        return apply_key(cfg, k, v, where, err, errlen);
    /* not a config key: a loss param, checked against the script by the trainer */
    return apply_loss_param(cfg, strncmp(key, "loss.", 5) ? key : key + 5, v, where, err, errlen);
}

static bool given(const Config *cfg, const char *name)
{
    const Key *k = find_key(name);
    return k && ((cfg->given >> (k - keys)) & 1);
}

/* With `model`: the shape keys from MODEL/config.json (config.h). Run
 * again on its own result it changes nothing: a context it chose is
 * chosen again from the max_length that followed it. */
static int finalize_model(Config *cfg, char *err, size_t errlen)
{
    char path[CONFIG_PATH_LEN + 16];
    snprintf(path, sizeof path, "%s/%s", cfg->model, HF_CONFIG_FILE);
    HfConfig hc;
    if (hf_config_load(path, &hc, err, errlen) != 0)
        return -1;
    const struct {
        const char *key, *field;
        int *value, model;
    } shape[] = {{"vocab", "vocab_size", &cfg->vocab, hc.vocab},
                 {"width", "hidden size", &cfg->width, hc.hidden},
                 {"layers", "layers", &cfg->layers, hc.layers},
                 {"heads", "attention heads", &cfg->heads, hc.heads}};
    for (size_t i = 0; i < sizeof shape / sizeof shape[0]; i++) {
        if (given(cfg, shape[i].key) && *shape[i].value != shape[i].model)
            return err_fail(err, errlen,
                            "%s is set to %d, but the model's %s is %d (%s): with model, leave %s "
                            "unset",
                            shape[i].key, *shape[i].value, shape[i].field, shape[i].model, path,
                            shape[i].key);
        *shape[i].value = shape[i].model;
    }
    /* a pretrained model is fine-tuned: TRL DPOConfig's rate, not prefrun's */
    if (!given(cfg, "learning_rate"))
        cfg->learning_rate = TRL_LEARNING_RATE;
    if (given(cfg, "context") && cfg->context > hc.context)
        return err_fail(err, errlen, "context (%d) exceeds the model's %d positions (%s)",
                        cfg->context, hc.context, path);
    if (!given(cfg, "context")) { /* TRL: max_length 1024, within the model's positions */
        int want = cfg->max_length > 0 ? cfg->max_length : TRL_MAX_LENGTH;
        cfg->context = want < hc.context ? want : hc.context;
    }
    return 0;
}

/* Without use_peft a LoRA setting changes nothing, so one given with a
 * value other than its default is a mistake worth naming (a saved
 * config.yaml gives every key, with the defaults' values: that passes). */
static int check_lora_unused(const Config *cfg, char *err, size_t errlen)
{
    Config d;
    config_defaults(&d);
    const struct {
        const char *key;
        bool differs;
    } lora[] = {{"lora_r", cfg->lora_r != d.lora_r},
                {"lora_alpha", cfg->lora_alpha != d.lora_alpha},
                {"lora_dropout", cfg->lora_dropout != d.lora_dropout},
                {"use_rslora", cfg->use_rslora != d.use_rslora},
                {"target_modules", strcmp(cfg->target_modules, d.target_modules) != 0}};
    for (size_t i = 0; i < sizeof lora / sizeof *lora; i++)
        if (lora[i].differs && given(cfg, lora[i].key))
            return err_fail(err, errlen,
                            "%s is set but use_peft is false: set use_peft: true to train LoRA "
                            "adapters",
                            lora[i].key);
    return 0;
}

int config_finalize(Config *cfg, char *err, size_t errlen)
{
    if (cfg->model[0] && finalize_model(cfg, err, errlen) != 0)
        return -1;
    if (cfg->max_length == 0)
        cfg->max_length = cfg->context;
    if (cfg->max_prompt_length == 0)
        cfg->max_prompt_length = cfg->max_length / 2;
    if (cfg->width % cfg->heads)
        return err_fail(err, errlen, "heads (%d) must divide width (%d)", cfg->heads, cfg->width);
    if (!cfg->model[0] && cfg->vocab < DATA_VOCAB) /* a model's tokenizer is checked on load */
        return err_fail(err, errlen,
                        "vocab is %d, the byte tokenizer needs at least %d (256 bytes + EOT)",
                        cfg->vocab, DATA_VOCAB);
    if (cfg->max_length > cfg->context)
        return err_fail(err, errlen, "max_length (%d) exceeds the context (%d)", cfg->max_length,
                        cfg->context);
    DataOptions opt = {.max_length = cfg->max_length,
                       .max_prompt_length = cfg->max_prompt_length,
                       .skip_invalid = cfg->skip_invalid,
                       .chat_format = cfg->chat_format};
    if (data_options_check(&opt, err, errlen))
        return -1;
    if (!cfg->use_peft && check_lora_unused(cfg, err, errlen) != 0)
        return -1;
    if (cfg->max_steps <= 0 && !(cfg->num_train_epochs > 0))
        return err_fail(err, errlen,
                        "num_train_epochs is 0 and max_steps is not set: nothing to train");
    return 0;
}

/* ---- YAML output ---- */

typedef struct Buf {
    char *s;
    size_t len, cap;
    bool oom;
} Buf;

static void put(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(Buf *b, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !b->oom; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
        } else if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        } else {
            size_t cap = (b->cap + (size_t)n) * 2;
            char *s = realloc(b->s, cap);
            if (!s)
                b->oom = true;
            else {
                b->s = s;
                b->cap = cap;
            }
        }
    }
}

/* The shortest %g that reads back to exactly x. */
static void put_double(Buf *b, double x)
{
    char s[40];
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(s, sizeof s, "%.*g", prec, x);
        if (strtod(s, NULL) == x)
            break;
    }
    put(b, "%s", s);
}

/* A YAML double-quoted string that reads back as the same text: the
 * characters libyaml refuses raw, or would fold, escaped (util/text.h). */
static void put_quoted(Buf *b, const char *s)
{
    char q[8];
    put(b, "\"");
    for (size_t n = strlen(s), k; n; s += k, n -= k) {
        k = text_yaml_char(s, n, q);
        put(b, "%s", q);
    }
    put(b, "\"");
}

static void put_value(Buf *b, const Config *cfg, const Key *k)
{
    const char *field = (const char *)cfg + k->off;
    switch (k->type) {
    case KEY_INT:
        put(b, "%d", *(const int *)field);
        break;
    case KEY_I64:
        put(b, "%lld", (long long)*(const int64_t *)field);
        break;
    case KEY_U64:
        put(b, "%llu", (unsigned long long)*(const uint64_t *)field);
        break;
    case KEY_DOUBLE:
        put_double(b, *(const double *)field);
        break;
    case KEY_BOOL:
        put(b, "%s", *(const bool *)field ? "true" : "false");
        break;
    case KEY_STRING:
        put_quoted(b, field);
        break;
    case KEY_SCHEDULE:
        put(b, "%s", schedule_names[*(const ConfigSchedule *)field]);
        break;
    case KEY_NAN_POLICY:
        put(b, "%s", nan_names[*(const ConfigNanPolicy *)field]);
        break;
    case KEY_LIST: /* a flow list of the names: [q_proj, v_proj] */
        put(b, "[");
        for (const char *p = field; *p;) {
            size_t n = strcspn(p, ",");
            put(b, "%s%.*s", p == field ? "" : ", ", (int)n, p);
            p += n + (p[n] == ',');
        }
        put(b, "]");
        break;
    }
}

char *config_to_yaml(const Config *cfg)
{
    Buf b = {malloc(4096), 0, 4096, false};
    if (!b.s)
        return NULL;
    b.s[0] = '\0';
    put(&b, "# prefrun run configuration (every key; `prefrun train --config` reads it back)\n");
    for (int i = 0; i < N_KEYS; i++) {
        put(&b, "%s: ", keys[i].name);
        put_value(&b, cfg, &keys[i]);
        put(&b, "\n");
    }
    if (cfg->n_loss_params)
        put(&b, "loss:\n");
    for (int i = 0; i < cfg->n_loss_params; i++) {
        put(&b, "  %s: ", cfg->loss_params[i].name);
        put_double(&b, cfg->loss_params[i].value);
        put(&b, "\n");
    }
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

int config_save_yaml(const Config *cfg, const char *path, char *err, size_t errlen)
{
    char *text = config_to_yaml(cfg);
    if (!text)
        return err_fail(err, errlen, "cannot write %s: out of memory", path);
    int rc = fsutil_write_atomic(path, text, strlen(text), err, errlen);
    free(text);
    return rc;
}
