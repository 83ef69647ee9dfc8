/*
 * test_config.c — defaults (with their TRL/HF sources), YAML loading and its
 * error messages (file, line, key, expected type), --set overrides and the
 * loss-param rule, derived values, the YAML round trip, and the shape keys
 * that a Hugging Face model folder's config.json sets (`model`).
 */
#include <stdlib.h>
#include <string.h>

#include "train/config.h"
#include "util/fsutil.h"
#include "prefrun_config.h"
#include "testlib.h"

static char err[512];

static const char *fixture(const char *name)
{
    static char path[1024];
    const char *root = getenv("PREFRUN_ROOT");
    snprintf(path, sizeof path, "%s/tests/data/%s", root ? root : PREFRUN_SOURCE_ROOT, name);
    return path;
}

static int load(Config *cfg, const char *text)
{
    return config_load_yaml_text(cfg, text, strlen(text), "run.yaml", err, sizeof err);
}

#define CHECK_ERR(call, frag)                                                                      \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        CHECKF(rc_ != 0, "%s succeeded, expected an error with \"%s\"", #call, frag);              \
        CHECKF(strstr(err, frag), "error \"%s\" lacks \"%s\"", err, frag);                         \
    } while (0)

static void defaults_follow_trl(void)
{
    Config c;
    config_defaults(&c);
    /* HF TrainingArguments / TRL DPOConfig values */
    CHECK(c.per_device_train_batch_size == 8 && c.per_device_eval_batch_size == 8);
    CHECK(c.gradient_accumulation_steps == 1 && c.lr_scheduler_type == CONFIG_SCHEDULE_LINEAR);
    CHECK(c.adam_beta1 == 0.9 && c.adam_beta2 == 0.999 && c.adam_epsilon == 1e-8);
    CHECK(c.weight_decay == 0.0 && c.max_grad_norm == 1.0 && c.warmup_ratio == 0.0);
    CHECK(c.num_train_epochs == 3.0 && c.max_steps == -1 && c.seed == 42);
    CHECK(!c.precompute_ref_log_probs && !c.dataloader_drop_last && !c.skip_invalid);
    CHECK(c.nan_policy == CONFIG_NAN_STOP && c.n_loss_params == 0);
    CHECK(config_finalize(&c, err, sizeof err) == 0);
    /* max_length follows the context, the prompt budget is half, as 512 of TRL's 1024 */
    CHECK(c.max_length == c.context && c.max_prompt_length == c.context / 2);
}

static void key_table_is_complete(void)
{
    CHECK(config_key_count() > 30);
    for (int i = 0; i < config_key_count(); i++) {
        CHECK(config_key_name(i) && config_key_type(i) && config_key_help(i));
        for (int j = 0; j < i; j++)
            CHECK(strcmp(config_key_name(i), config_key_name(j)) != 0);
    }
    CHECK(config_key_name(config_key_count()) == NULL);
}

static void yaml_file_loads(void)
{
    Config c;
    config_defaults(&c);
    CHECKF(config_load_yaml(&c, fixture("run_ok.yaml"), err, sizeof err) == 0, "%s", err);
    CHECK(c.learning_rate == 3.0e-4 && c.lr_scheduler_type == CONFIG_SCHEDULE_COSINE);
    CHECK(c.per_device_train_batch_size == 16 && c.layers == 4 && c.width == 128);
    CHECK(c.skip_invalid && strcmp(c.train_file, "data/train.jsonl") == 0 && c.seed == 7);
    CHECK(c.n_loss_params == 2);
    const ConfigLossParam *beta = config_loss_param(&c, "beta");
    CHECK(beta && beta->value == 0.2 && config_loss_param(&c, "tau")->value == 0.05);
    CHECK(c.heads == 4 && c.adam_beta2 == 0.999); /* untouched keys keep defaults */
}

static void yaml_errors_name_file_line_key(void)
{
    Config c;
    config_defaults(&c);
    CHECK_ERR(config_load_yaml(&c, fixture("bad_unknown.yaml"), err, sizeof err),
              "bad_unknown.yaml:3: unknown key \"lerning_rate\"");
    CHECK_ERR(config_load_yaml(&c, fixture("bad_type.yaml"), err, sizeof err),
              "bad_type.yaml:3: key \"learning_rate\": expected a number, got \"fast\"");
    CHECK_ERR(config_load_yaml(&c, fixture("bad_syntax.yaml"), err, sizeof err),
              "bad_syntax.yaml:3:");
    CHECK(strstr(err, "invalid YAML"));
    CHECK_ERR(config_load_yaml(&c, "/nonexistent/run.yaml", err, sizeof err),
              "/nonexistent/run.yaml");
}

static void yaml_wrong_types(void)
{
    Config c;
    config_defaults(&c);
    CHECK_ERR(load(&c, "layers: \"2\"\n"),
              "run.yaml:1: key \"layers\": expected an integer, got the quoted string \"2\"");
    CHECK_ERR(load(&c, "\nlayers: 2.5\n"), "run.yaml:2: key \"layers\": expected an integer");
    CHECK_ERR(load(&c, "skip_invalid: yes\n"), "key \"skip_invalid\": expected true or false");
    CHECK_ERR(load(&c, "lr_scheduler_type: cosin\n"),
              "expected one of linear, cosine, constant, got \"cosin\"");
    CHECK_ERR(load(&c, "width:\n  - 64\n"),
              "run.yaml:2: key \"width\": expected an integer, got a list");
    CHECK_ERR(load(&c, "learning_rate: ~\n"), "key \"learning_rate\": expected a number");
    CHECK_ERR(load(&c, "learning_rate: .nan\n"), "expected a number");
    CHECK_ERR(load(&c, "seed: -1\n"), "key \"seed\": expected a non-negative integer");
    CHECK_ERR(load(&c, "layers: 0\n"), "key \"layers\": 0 is out of range");
    CHECK_ERR(load(&c, "loss:\n  beta: big\n"),
              "run.yaml:2: loss param \"beta\": expected a number");
    CHECK_ERR(load(&c, "model:\n  layers: 2\n"), "run.yaml:2: unknown key \"model.layers\"");
    CHECK_ERR(load(&c, "- layers\n"), "run.yaml:1: the file is a list, expected a mapping");
    CHECK_ERR(load(&c, "layers: 2\nwidth: 8\nlayers: 3\n"), "run.yaml:3: duplicate key \"layers\"");
    CHECK_ERR(load(&c, "layers: 2\n---\nlayers: 3\n"), "a second YAML document");
    CHECK_ERR(load(&c, "layers: 2\n\twidth: 4\n"), "invalid YAML");
    /* a failed load changes nothing, not even the keys before the bad one */
    Config fresh;
    config_defaults(&fresh);
    CHECK_ERR(load(&c, "layers: 7\nwidth: nope\n"), "width");
    CHECK(c.layers == fresh.layers && memcmp(&c, &fresh, sizeof c) == 0);
}

static void yaml_empty_and_comments(void)
{
    Config c, d;
    config_defaults(&c);
    config_defaults(&d);
    CHECK(load(&c, "") == 0 && load(&c, "# only a comment\n") == 0);
    CHECK(memcmp(&c, &d, sizeof c) == 0);
    CHECK(load(&c, "loss: {beta: 0.5}\nsave_total_limit: 3 # keep three\n") == 0);
    CHECK(config_loss_param(&c, "beta")->value == 0.5 && c.save_total_limit == 3);
}

static void set_overrides(void)
{
    Config c;
    config_defaults(&c);
    CHECK(config_set(&c, "learning_rate=5e-4", err, sizeof err) == 0 && c.learning_rate == 5e-4);
    CHECK(config_set(&c, "output_dir=runs/a b", err, sizeof err) == 0 &&
          strcmp(c.output_dir, "runs/a b") == 0);
    CHECK(config_set(&c, "nan_policy=skip", err, sizeof err) == 0 &&
          c.nan_policy == CONFIG_NAN_SKIP);
    CHECK(config_set(&c, "seed=18446744073709551615", err, sizeof err) == 0 &&
          c.seed == UINT64_MAX);
    /* loss params: loss.NAME always; a plain NAME that is not a config key too */
    CHECK(config_set(&c, "loss.beta=0.3", err, sizeof err) == 0);
    CHECK(config_set(&c, "tau=0.07", err, sizeof err) == 0);
    CHECK(config_set(&c, "beta=0.4", err, sizeof err) == 0); /* replaces, keeps the order */
    CHECK(c.n_loss_params == 2 && strcmp(c.loss_params[0].name, "beta") == 0 &&
          c.loss_params[0].value == 0.4 && c.loss_params[1].value == 0.07);
    CHECK_ERR(config_set(&c, "learning_rate=fast", err, sizeof err),
              "--set learning_rate=fast: key \"learning_rate\": expected a number, got \"fast\"");
    CHECK_ERR(config_set(&c, "beta=high", err, sizeof err),
              "--set beta=high: loss param \"beta\": expected a number");
    CHECK_ERR(config_set(&c, "layers", err, sizeof err), "expected KEY=VALUE");
    CHECK_ERR(config_set(&c, "=3", err, sizeof err), "expected KEY=VALUE");
    CHECK_ERR(config_set(&c, "model.layers=3", err, sizeof err), "loss param \"model.layers\"");
    CHECK_ERR(config_set(&c, "layers=", err, sizeof err), "expected an integer");
}

static void finalize_checks_relations(void)
{
    Config c;
    config_defaults(&c);
    c.max_length = 40;
    CHECK(config_finalize(&c, err, sizeof err) == 0 && c.max_prompt_length == 20);
    config_defaults(&c);
    c.heads = 3;
    CHECK_ERR(config_finalize(&c, err, sizeof err), "heads (3) must divide width (64)");
    config_defaults(&c);
    c.max_length = 100;
    CHECK_ERR(config_finalize(&c, err, sizeof err), "max_length (100) exceeds the context (64)");
    config_defaults(&c);
    c.vocab = 256;
    CHECK_ERR(config_finalize(&c, err, sizeof err), "at least 257");
    config_defaults(&c);
    c.max_prompt_length = 64;
    CHECK_ERR(config_finalize(&c, err, sizeof err), "max_prompt_length");
}

/* chat_format names a template family; another name is refused when the
 * settings are finalized, before any data is read */
static void chat_format_is_checked(void)
{
    Config c;
    config_defaults(&c);
    CHECK(config_set(&c, "chat_format=llama3", err, sizeof err) == 0);
    CHECK(strcmp(c.chat_format, "llama3") == 0);
    CHECK(config_finalize(&c, err, sizeof err) == 0);
    config_defaults(&c);
    CHECK(config_set(&c, "chat_format=jinja", err, sizeof err) == 0);
    CHECK_ERR(config_finalize(&c, err, sizeof err), "chat_format is \"jinja\"");
}

/* LoRA: TRL ModelConfig's defaults; target_modules as a YAML list (flow or
 * block) or one comma-separated string; a lora key without use_peft, a
 * regex-looking name, an empty name: errors naming the key */
static void lora_settings(void)
{
    Config c;
    config_defaults(&c);
    CHECK(!c.use_peft && c.lora_r == 16 && c.lora_alpha == 32 && c.lora_dropout == 0.05);
    CHECK(!c.use_rslora && c.target_modules[0] == '\0');
    CHECKF(load(&c, "use_peft: true\ntarget_modules: [q_proj, v_proj]\nlora_r: 8\n") == 0, "%s",
           err);
    CHECK(c.use_peft && c.lora_r == 8 && strcmp(c.target_modules, "q_proj,v_proj") == 0);
    CHECKF(load(&c, "target_modules:\n  - c_attn\n  - c_fc\n") == 0, "%s", err);
    CHECK(strcmp(c.target_modules, "c_attn,c_fc") == 0);
    CHECKF(config_set(&c, "target_modules= gate_proj , up_proj", err, sizeof err) == 0, "%s", err);
    CHECK(strcmp(c.target_modules, "gate_proj,up_proj") == 0);
    char item[32];
    CHECK(config_list_item(c.target_modules, 0, item, sizeof item) && !strcmp(item, "gate_proj"));
    CHECK(config_list_item(c.target_modules, 1, item, sizeof item) && !strcmp(item, "up_proj"));
    CHECK(!config_list_item(c.target_modules, 2, item, sizeof item));
    CHECK(!config_list_item("", 0, item, sizeof item));
    CHECKF(config_set(&c, "target_modules=all-linear", err, sizeof err) == 0, "%s", err);
    CHECK(strcmp(c.target_modules, "all-linear") == 0);
    CHECKF(load(&c, "target_modules: ~\n") == 0 && c.target_modules[0] == '\0', "%s", err);
    CHECKF(load(&c, "target_modules: []\n") == 0 && c.target_modules[0] == '\0', "%s", err);
    CHECK_ERR(config_set(&c, "target_modules=.*proj", err, sizeof err), "'*'");
    CHECK_ERR(config_set(&c, "target_modules=q_proj,,v_proj", err, sizeof err), "an empty name");
    CHECK_ERR(config_set(&c, "target_modules=q_proj,", err, sizeof err), "an empty name");
    CHECK_ERR(load(&c, "target_modules: [q_proj, {a: 1}]\n"), "expected a list of names");
    CHECK_ERR(load(&c, "target_modules: [\"q_proj,v_proj\"]\n"), "expected a list of names");
    CHECK_ERR(load(&c, "lora_r: [1, 2]\n"), "expected an integer, got a list");
    CHECK_ERR(config_set(&c, "lora_dropout=1", err, sizeof err), "out of range");
    CHECK_ERR(config_set(&c, "lora_r=0", err, sizeof err), "out of range");
    CHECK(config_finalize(&c, err, sizeof err) == 0);
    Config off;
    config_defaults(&off);
    CHECK(config_set(&off, "lora_alpha=16", err, sizeof err) == 0);
    CHECK_ERR(config_finalize(&off, err, sizeof err), "lora_alpha is set but use_peft is false");
    config_defaults(&off);
    CHECK(load(&off, "target_modules: [c_attn]\n") == 0);
    CHECK_ERR(config_finalize(&off, err, sizeof err), "target_modules is set but use_peft");
}

static void yaml_round_trip_is_exact(void)
{
    Config c, back;
    config_defaults(&c);
    c.learning_rate = 0.1 + 0.2; /* needs all 17 digits */
    c.weight_decay = 1e-300;
    c.seed = UINT64_MAX;
    c.sandbox_instructions = 123456789012345LL;
    c.lr_scheduler_type = CONFIG_SCHEDULE_CONSTANT;
    c.dataloader_drop_last = true;
    snprintf(c.target_modules, sizeof c.target_modules, "q_proj,v_proj");
    snprintf(c.train_file, sizeof c.train_file, "dir with: colon/\"q\"\\ \x01\ttab é.jsonl");
    config_set_loss_param(&c, "beta", 1.0 / 3.0, err, sizeof err);
    config_set_loss_param(&c, "neg", -2.5e-7, err, sizeof err);
    char *y = config_to_yaml(&c);
    config_defaults(&back);
    CHECKF(y && load(&back, y) == 0, "%s", err);
    CHECK(back.learning_rate == c.learning_rate && back.weight_decay == c.weight_decay);
    CHECK(back.seed == c.seed && back.sandbox_instructions == c.sandbox_instructions);
    CHECK(back.lr_scheduler_type == c.lr_scheduler_type && back.dataloader_drop_last);
    CHECK(strcmp(back.train_file, c.train_file) == 0);
    CHECK(strcmp(back.target_modules, "q_proj,v_proj") == 0);
    CHECK(back.n_loss_params == 2 && back.loss_params[0].value == 1.0 / 3.0 &&
          back.loss_params[1].value == -2.5e-7);
    char *y2 = config_to_yaml(&back);
    CHECK(y2 && strcmp(y, y2) == 0);
    /* saved atomically, read back from disk */
    char dir[] = "/tmp/prefrun_cfgXXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    CHECKF(config_save_yaml(&c, path, err, sizeof err) == 0, "%s", err);
    config_defaults(&back);
    CHECKF(config_load_yaml(&back, path, err, sizeof err) == 0, "%s", err);
    char *y3 = config_to_yaml(&back);
    CHECK(y3 && strcmp(y, y3) == 0);
    free(y);
    free(y2);
    free(y3);
    fsutil_remove_tree(dir, err, sizeof err);
}

/* A model folder in a temporary directory holding only a GPT-2
 * config.json (all config_finalize reads) of the given sizes. */
static const char *model_dir(char *dir, size_t len, int vocab, int positions, int embd, int layers,
                             int heads)
{
    static char root[] = "/tmp/prefrun_cfgmodelXXXXXX";
    static bool made;
    if (!made && !(made = mkdtemp(root) != NULL))
        return NULL;
    snprintf(dir, len, "%s/m%d-%d", root, positions, embd);
    char path[600], text[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(text, sizeof text,
             "{\"architectures\": [\"GPT2LMHeadModel\"], \"model_type\": \"gpt2\", \"vocab_size\": "
             "%d, \"n_positions\": %d, \"n_embd\": %d, \"n_layer\": %d, \"n_head\": %d}",
             vocab, positions, embd, layers, heads);
    if (fsutil_mkdirs(dir, err, sizeof err) != 0 ||
        fsutil_write_atomic(path, text, strlen(text), err, sizeof err) != 0)
        return NULL;
    return root;
}

static int set(Config *c, const char *fmt, const char *arg)
{
    char a[700];
    snprintf(a, sizeof a, fmt, arg);
    return config_set(c, a, err, sizeof err);
}

/* With `model`, vocab, width, layers and heads are its config.json's; the
 * context is TRL's max_length 1024 where the model's positions allow it,
 * else those positions, or a given max_length; finalize run again changes
 * nothing. */
static void model_sets_the_shape(void)
{
    char small[512], big[512];
    const char *root = model_dir(small, sizeof small, 50257, 64, 16, 3, 2);
    CHECKF(root && model_dir(big, sizeof big, 50257, 2048, 32, 2, 4), "%s", err);
    if (!root)
        return;
    Config c;
    config_defaults(&c);
    CHECK(set(&c, "model=%s", small) == 0 && strcmp(c.model, small) == 0);
    CHECKF(config_finalize(&c, err, sizeof err) == 0, "%s", err);
    CHECK(c.vocab == 50257 && c.width == 16 && c.layers == 3 && c.heads == 2);
    CHECK(c.context == 64 && c.max_length == 64 && c.max_prompt_length == 32);
    CHECK(c.learning_rate == 1e-6); /* TRL DPOConfig's, for a pretrained model */
    Config again = c;
    CHECK(config_finalize(&again, err, sizeof err) == 0 && memcmp(&again, &c, sizeof c) == 0);
    config_defaults(&c);
    CHECK(set(&c, "model=%s", big) == 0 && config_finalize(&c, err, sizeof err) == 0);
    CHECK(c.context == 1024 && c.max_length == 1024 && c.max_prompt_length == 512);
    config_defaults(&c);
    CHECK(set(&c, "model=%s", big) == 0 &&
          config_set(&c, "learning_rate=5e-5", err, sizeof err) == 0);
    CHECK(config_finalize(&c, err, sizeof err) == 0 && c.learning_rate == 5e-5);
    config_defaults(&c);
    CHECK(set(&c, "model=%s", big) == 0 && config_set(&c, "max_length=1500", err, sizeof err) == 0);
    CHECK(config_finalize(&c, err, sizeof err) == 0 && c.context == 1500 && c.max_length == 1500);
    /* a config.yaml saved by such a run, read back with every key given, finalizes the same */
    char *y = config_to_yaml(&c);
    Config back;
    config_defaults(&back);
    CHECKF(y && load(&back, y) == 0 && config_finalize(&back, err, sizeof err) == 0, "%s", err);
    CHECK(back.context == 1500 && back.width == 32 && strcmp(back.model, big) == 0);
    free(y);
    /* without model, nothing of this: the defaults stay prefrun's */
    config_defaults(&c);
    CHECK(config_finalize(&c, err, sizeof err) == 0 && c.vocab == 257 && c.context == 64);
    CHECK(c.learning_rate == 1e-3);
    fsutil_remove_tree(root, err, sizeof err);
}

/* A given shape value that differs from the model's is an error naming the
 * key and both values; an equal one is fine; a context past the model's
 * positions and a folder without config.json are errors naming them. */
static void model_conflicts_are_named(void)
{
    char dir[512];
    const char *root = model_dir(dir, sizeof dir, 50257, 64, 16, 3, 2);
    CHECKF(root, "%s", err);
    if (!root)
        return;
    Config c;
    config_defaults(&c);
    CHECK(set(&c, "model=%s", dir) == 0 && config_set(&c, "width=32", err, sizeof err) == 0);
    CHECK_ERR(config_finalize(&c, err, sizeof err),
              "width is set to 32, but the model's hidden size is 16");
    CHECK(strstr(err, "/config.json"));
    config_defaults(&c);
    char yaml[700];
    snprintf(yaml, sizeof yaml, "model: %s\nlayers: 3\nvocab: 50000\n", dir);
    CHECK(load(&c, yaml) == 0);
    CHECK_ERR(config_finalize(&c, err, sizeof err),
              "vocab is set to 50000, but the model's vocab_size is 50257");
    config_defaults(&c);
    snprintf(yaml, sizeof yaml, "model: %s\nlayers: 3\nheads: 2\ncontext: 48\n", dir);
    CHECK(load(&c, yaml) == 0 && config_finalize(&c, err, sizeof err) == 0);
    CHECK(c.context == 48 && c.max_length == 48 && c.layers == 3);
    config_defaults(&c);
    CHECK(set(&c, "model=%s", dir) == 0 && config_set(&c, "context=128", err, sizeof err) == 0);
    CHECK_ERR(config_finalize(&c, err, sizeof err),
              "context (128) exceeds the model's 64 positions");
    config_defaults(&c);
    CHECK(set(&c, "model=%s", dir) == 0 && config_set(&c, "max_length=100", err, sizeof err) == 0);
    CHECK_ERR(config_finalize(&c, err, sizeof err), "max_length (100) exceeds the context (64)");
    config_defaults(&c);
    CHECK(set(&c, "model=%s/none", root) == 0);
    CHECK_ERR(config_finalize(&c, err, sizeof err), "/none/config.json");
    fsutil_remove_tree(root, err, sizeof err);
}

int main(void)
{
    RUN(defaults_follow_trl);
    RUN(key_table_is_complete);
    RUN(yaml_file_loads);
    RUN(yaml_errors_name_file_line_key);
    RUN(yaml_wrong_types);
    RUN(yaml_empty_and_comments);
    RUN(set_overrides);
    RUN(finalize_checks_relations);
    RUN(chat_format_is_checked);
    RUN(lora_settings);
    RUN(yaml_round_trip_is_exact);
    RUN(model_sets_the_shape);
    RUN(model_conflicts_are_named);
    return tl_done();
}
