/*
 * train/config.h — the run configuration: every setting of `prefrun train`, its
 * default, loading from YAML (libyaml), `--set key=value` overrides, and
 * writing the effective configuration back as YAML.
 *
 *     Config cfg;
 *     config_defaults(&cfg);
 *     if (config_load_yaml(&cfg, "run.yaml", err, sizeof err) ||   // optional
 *         config_set(&cfg, "learning_rate=3e-4", err, sizeof err) ||
 *         config_finalize(&cfg, err, sizeof err))                  // derived values, checks
 *         ...;
 *     config_save_yaml(&cfg, "run/config.yaml", err, sizeof err);  // atomic
 *
 * Keys. The YAML file is one mapping of the flat keys listed by
 * `config_key_name` (TRL's TrainingArguments/DPOConfig names where one
 * exists, e.g. learning_rate, per_device_train_batch_size, max_length), plus
 * an optional `loss:` mapping of numbers that go to the loss script's params.
 * A nested mapping is the same as dotted keys: `loss: {beta: 0.2}` is the
 * key `loss.beta`. --set takes the same keys. The loss-param rule:
 *   - `loss.NAME` is always a loss param;
 *   - in --set only, a plain NAME that is not a config key is a loss param
 *     too (`--set beta=0.2`), since the config cannot know which params a
 *     script declares; the trainer must reject a loss param the script does
 *     not declare (loss_set_param does), so a typo still fails by name;
 *   - in a YAML file a plain unknown key is an error (file, line, key).
 *
 * Types. Integers, numbers, booleans (true/false), strings, and enums (one
 * of the listed words). A value of the wrong type ("abc" for a number, a
 * quoted "8" for an integer, a list, null) is an error naming the file, line,
 * key and expected type; so is a duplicate key or malformed YAML.
 *
 * Defaults follow TRL's DPOConfig (trl/trainer/dpo_config.py) and HF
 * TrainingArguments where they apply; the exceptions are sized for the small
 * from-scratch model this project trains on 2 cores and are marked "prefrun"
 * in config.c's key table.
 */
#ifndef PREFRUN_CONFIG_H
#define PREFRUN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/fsutil.h"

#define CONFIG_PATH_LEN 512
#define CONFIG_MAX_LOSS_PARAMS 32
#define CONFIG_PARAM_NAME_LEN 64

typedef enum ConfigSchedule {
    CONFIG_SCHEDULE_LINEAR = 0, /* linear warmup, then linear decay to 0 */
    CONFIG_SCHEDULE_COSINE,     /* linear warmup, then cosine decay to 0 */
    CONFIG_SCHEDULE_CONSTANT,   /* linear warmup, then constant */
} ConfigSchedule;

typedef enum ConfigNanPolicy {
    CONFIG_NAN_STOP = 0, /* stop the run, keep the last good checkpoint */
    CONFIG_NAN_SKIP,     /* skip the batch (counted) */
} ConfigNanPolicy;

typedef struct ConfigLossParam {
    char name[CONFIG_PARAM_NAME_LEN];
    double value;
} ConfigLossParam;

typedef struct Config {
    /* model (GptConfig). With `model` set, vocab, width, layers and heads are
     * its config.json's, and context defaults to min(its positions,
     * max_length or TRL's 1024) (config_finalize). */
    char model[CONFIG_PATH_LEN]; /* a Hugging Face model folder; "" = prefrun's own GPT */
    int vocab;                   /* V */
    int context;                 /* T: positions, = batch buffer width */
    int width;                   /* C */
    int layers;                  /* L */
    int heads;                   /* NH */
    /* data */
    char train_file[CONFIG_PATH_LEN]; /* "" = the built-in default data */
    char eval_file[CONFIG_PATH_LEN];  /* "" = split eval_fraction off train */
    double eval_fraction;
    int max_length;        /* 0 = context */
    int max_prompt_length; /* 0 = max_length / 2 */
    bool skip_invalid;
    char chat_format[CONFIG_PATH_LEN]; /* conversational data's template; "" = none set */
    bool dataloader_drop_last;
    int toy_pairs; /* pairs of the generated default data set */
    /* optimisation */
    int per_device_train_batch_size;
    int per_device_eval_batch_size;
    int gradient_accumulation_steps;
    double learning_rate;
    ConfigSchedule lr_scheduler_type;
    int warmup_steps;    /* > 0 overrides warmup_ratio */
    double warmup_ratio; /* of the total optimizer steps */
    double weight_decay;
    double adam_beta1, adam_beta2, adam_epsilon;
    double max_grad_norm; /* <= 0: no clipping */
    double num_train_epochs;
    int max_steps; /* > 0 overrides num_train_epochs */
    bool precompute_ref_log_probs;
    ConfigNanPolicy nan_policy;
    /* LoRA adapters (TRL ModelConfig's names and defaults; PEFT's meaning):
     * with use_peft the model's weights stay frozen and only the adapters
     * train; the reference is the same weights with the adapters off */
    bool use_peft;
    int lora_r;                           /* rank r */
    double lora_alpha;                    /* scale alpha / r (alpha / sqrt(r) with rslora) */
    double lora_dropout;                  /* on the adapters' input, in [0, 1) */
    bool use_rslora;                      /* rank-stabilised scale alpha / sqrt(r) */
    char target_modules[CONFIG_PATH_LEN]; /* comma-separated names, "all-linear"; "" = PEFT's
                                              default for the architecture */
    /* run */
    uint64_t seed;
    int threads; /* 0 = all cores */
    int logging_steps;
    int eval_steps;                   /* 0 = no evaluation at intervals */
    int save_steps;                   /* 0 = save only at the end */
    int save_total_limit;             /* checkpoints kept; 0 = all */
    char output_dir[CONFIG_PATH_LEN]; /* "" = chosen by the trainer */
    /* loss script sandbox (LossLimits; 0 = the sandbox's default) */
    int64_t sandbox_lua_bytes;
    int64_t sandbox_tensor_bytes;
    int64_t sandbox_instructions;
    double sandbox_seconds;
    int sandbox_max_depth;
    /* loss params, in the order first set */
    int n_loss_params;
    ConfigLossParam loss_params[CONFIG_MAX_LOSS_PARAMS];
    /* bit i: key i (config_key_name) was set by a YAML file or --set, so
     * config_finalize can tell a value given for a model's shape key (which
     * must agree with the model) from a default (which the model replaces);
     * fields assigned in C count as defaults */
    uint64_t given;
} Config;

void config_defaults(Config *cfg);
/* Applies a YAML file's keys over cfg. 0, or -1 with "FILE:LINE: ..." in err. */
/* A YAML settings file (this one, discover's, a checkpoint's config.yaml)
 * is read to at most 1 MiB and nested at most 32 deep: libyaml's time grows
 * with the square of the nesting, so a hostile file is stopped at its
 * 33rd level, before any document is built. */
#define CONFIG_YAML_MAX_BYTES ((size_t)1 << 20)
#define CONFIG_YAML_MAX_DEPTH 32
#define CONFIG_YAML_CAP                                                                            \
    (&(const FsReadCap){.bytes = CONFIG_YAML_MAX_BYTES, .kind = "a YAML file", .special = true})

/* 0 when text nests collections at most CONFIG_YAML_MAX_DEPTH deep (or is
 * not YAML at all: the parser that follows says why); -1 with a message
 * naming the line otherwise. */
int config_yaml_depth_check(const char *text, size_t len, const char *name, char *err,
                            size_t errlen);

int config_load_yaml(Config *cfg, const char *path, char *err, size_t errlen);
/* The same for YAML text in memory; `name` stands for the file in messages. */
int config_load_yaml_text(Config *cfg, const char *text, size_t len, const char *name, char *err,
                          size_t errlen);
/* One "key=value" override (value read as a plain YAML scalar). */
int config_set(Config *cfg, const char *assignment, char *err, size_t errlen);
/* The i-th name of a comma-separated list such as target_modules, into
 * out (at most len - 1 bytes); false past the last. */
bool config_list_item(const char *list, int i, char *out, size_t len);
/* Resolves derived defaults (max_length, max_prompt_length) and checks the
 * ranges and relations (heads divide width, max_length <= context, ...).
 * With `model` set, first reads MODEL/config.json (model/hf_config.h): its
 * vocab_size, hidden size, layers and heads replace the config's, a value
 * given for one of those keys that differs is an error naming the key and
 * both values, and a context beyond the model's positions is an error.
 * A lora_* key or target_modules given without use_peft is an error (it
 * would change nothing). */
int config_finalize(Config *cfg, char *err, size_t errlen);

/* The effective configuration as YAML text (malloc'ed, NUL-terminated);
 * numbers are written so they read back bit for bit. NULL on OOM. */
char *config_to_yaml(const Config *cfg);
/* config_to_yaml written atomically to path. */
int config_save_yaml(const Config *cfg, const char *path, char *err, size_t errlen);

/* Loss params: set (adds or replaces), find (NULL when absent). */
int config_set_loss_param(Config *cfg, const char *name, double value, char *err, size_t errlen);
const ConfigLossParam *config_loss_param(const Config *cfg, const char *name);

/* The known keys, for --help and docs: i in [0, config_key_count()). */
int config_key_count(void);
const char *config_key_name(int i);
const char *config_key_type(int i); /* "integer", "number", "one of linear|cosine|constant", ... */
const char *config_key_help(int i); /* what it means, and where its default comes from */

const char *config_schedule_name(ConfigSchedule s);
const char *config_nan_policy_name(ConfigNanPolicy p);

#endif
