/*
 * tokenizer/config.c — transformers' tokenizer_config.json and the
 * chat_template.jinja beside it: the BOS, EOS and PAD tokens (strings or
 * {"content": ...} objects), add_bos_token / add_eos_token, and the chat
 * template's text, kept for the chat-template renderer.
 *
 * For a folder of vocab.json + merges.txt (no tokenizer.json to list the
 * added tokens), the config's special tokens and added_tokens_decoder are
 * the added tokens, and GPT-2's tokenizer defaults apply where the config is
 * silent: "<|endoftext|>" is the BOS, EOS and UNK token, and special.
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"
#include "util/fsutil.h"

enum { BOS, EOS, PAD, TEMPLATE };
static const char *const token_keys[] = {"bos_token", "eos_token", "pad_token"};
static const char gpt2_default[] = "<|endoftext|>";

/* A token field: absent (*s untouched), null (NULL), "text" or an object
 * with "content". */
static int token_field(json_t *cfg, const char *key, const char **s, char *err, size_t errlen)
{
    json_t *v = json_object_get(cfg, key);
    if (!v)
        return 0;
    if (json_is_object(v))
        v = json_object_get(v, "content");
    if (json_is_null(v)) {
        *s = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return err_fail(err, errlen, "%s: expected a string, {\"content\": ...} or null", key);
    *s = json_string_value(v);
    return 0;
}

/* In a vocab.json folder, a named special token becomes an added one. */
static int add_special(Tokenizer *tok, const char *s, const char *key, char *err, size_t errlen)
{
    int32_t id = tokenizer_token_id(tok, s);
    if (id < 0)
        return err_fail(err, errlen, "%s: \"%.64s\" is not in the vocabulary", key, s);
    TokAddedToken t = {.id = id, .len = (uint32_t)strlen(s), .special = true};
    if (tok_vocab_set_added(&tok->vocab, id, s, t.len, true, err, errlen) ||
        tok_added_add(&tok->added, &t, s, err, errlen))
        return tok_err_prefix(err, errlen, "%s", key);
    return 0;
}

static int added_tokens_decoder(Tokenizer *tok, json_t *cfg, char *err, size_t errlen)
{
    json_t *d = json_object_get(cfg, "added_tokens_decoder");
    if (!d)
        return 0;
    if (!json_is_object(d) || json_object_size(d) > TOK_MAX_ADDED)
        return err_fail(err, errlen, "added_tokens_decoder: expected an object of id: token");
    const char *key;
    json_t *t;
    json_object_foreach(d, key, t)
    {
        char *end, where[96];
        long long id = strtoll(key, &end, 10);
        snprintf(where, sizeof where, "added_tokens_decoder.%.32s", key);
        if (!*key || *end)
            return err_fail(err, errlen, "%s: the key is not an id", where);
        if (tok_parse_added_token(tok, t, id, where, err, errlen))
            return -1;
    }
    return 0;
}

static int set_string(Tokenizer *tok, int slot, const char *s, char *err, size_t errlen)
{
    free(tok->cfg_strings[slot]);
    tok->cfg_strings[slot] = s ? strdup(s) : NULL;
    if (s && !tok->cfg_strings[slot])
        return err_fail(err, errlen, "out of memory");
    return 0;
}

/* chat_template: a string, or a list of {name, template} whose "default"
 * is the one kept (NULL when none is named so) */
static int chat_template(Tokenizer *tok, json_t *cfg, char *err, size_t errlen)
{
    json_t *v = json_object_get(cfg, "chat_template");
    if (!v || json_is_null(v))
        return 0;
    if (json_is_string(v))
        return set_string(tok, TEMPLATE, json_string_value(v), err, errlen);
    if (!json_is_array(v))
        return err_fail(err, errlen, "chat_template: expected a string or a list");
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        const char *name = json_string_value(json_object_get(item, "name"));
        const char *text = json_string_value(json_object_get(item, "template"));
        if (!name || !text)
            return err_fail(err, errlen, "chat_template[%zu]: expected {name, template}", i);
        if (!strcmp(name, "default"))
            return set_string(tok, TEMPLATE, text, err, errlen);
    }
    return 0;
}

static int add_flag(json_t *cfg, const char *key, int *out, char *err, size_t errlen)
{
    json_t *v = json_object_get(cfg, key);
    *out = -1;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return err_fail(err, errlen, "%s: expected true, false or null", key);
    *out = json_is_true(v);
    return 0;
}

/* The BOS and EOS that TOKENIZER_ADD_BOS_EOS adds: the config's
 * add_bos_token / add_eos_token where it says, else the post-processor's. */
static int wrap(Tokenizer *tok, char *err, size_t errlen)
{
    const TokenizerConfig *c = &tok->cfg;
    if (c->add_bos_token == 1 && c->bos_id < 0)
        return err_fail(err, errlen, "add_bos_token: true, but there is no bos_token");
    if (c->add_eos_token == 1 && c->eos_id < 0)
        return err_fail(err, errlen, "add_eos_token: true, but there is no eos_token");
    if (c->add_bos_token >= 0)
        tok->prefix.n = 0;
    if (c->add_eos_token >= 0)
        tok->suffix.n = 0;
    if ((c->add_bos_token == 1 && tok_ids_push(&tok->prefix, c->bos_id)) ||
        (c->add_eos_token == 1 && tok_ids_push(&tok->suffix, c->eos_id)))
        return err_fail(err, errlen, "out of memory");
    return 0;
}

static int read_config(Tokenizer *tok, json_t *cfg, bool gpt2, char *err, size_t errlen)
{
    const char *names[3] = {NULL, NULL, NULL}, *unk = NULL;
    if (gpt2 && tokenizer_token_id(tok, gpt2_default) >= 0)
        names[BOS] = names[EOS] = unk = gpt2_default;
    tok->cfg.add_bos_token = tok->cfg.add_eos_token = -1;
    if (cfg && !json_is_object(cfg))
        return err_fail(err, errlen, "expected an object");
    for (int k = 0; cfg && k < 3; k++)
        if (token_field(cfg, token_keys[k], &names[k], err, errlen))
            return -1;
    if (cfg && (token_field(cfg, "unk_token", &unk, err, errlen) ||
                add_flag(cfg, "add_bos_token", &tok->cfg.add_bos_token, err, errlen) ||
                add_flag(cfg, "add_eos_token", &tok->cfg.add_eos_token, err, errlen) ||
                chat_template(tok, cfg, err, errlen) ||
                (gpt2 && added_tokens_decoder(tok, cfg, err, errlen))))
        return -1;
    for (int k = 0; gpt2 && k < 4; k++) {
        const char *s = k < 3 ? names[k] : unk;
        if (s && add_special(tok, s, k < 3 ? token_keys[k] : "unk_token", err, errlen))
            return -1;
    }
    int32_t *ids[3] = {&tok->cfg.bos_id, &tok->cfg.eos_id, &tok->cfg.pad_id};
    for (int k = 0; k < 3; k++) {
        *ids[k] = names[k] ? tokenizer_token_id(tok, names[k]) : -1;
        if (names[k] && *ids[k] < 0)
            return err_fail(err, errlen, "%s: \"%.64s\" is not a token", token_keys[k], names[k]);
        if (set_string(tok, k, names[k], err, errlen))
            return -1;
    }
    return wrap(tok, err, errlen);
}

static int read_template_file(Tokenizer *tok, const char *path, char *err, size_t errlen)
{
    FsReadCap cap = {.bytes = TOK_CAP_CHAT_TEMPLATE, .kind = "a chat template", .special = false};
    char *text;
    size_t len;
    if (fsutil_read_capped(path, &cap, &text, &len, err, errlen))
        return -1;
    free(tok->cfg_strings[TEMPLATE]);
    tok->cfg_strings[TEMPLATE] = text; /* NUL-terminated by the read */
    return 0;
}

int tok_load_config(Tokenizer *tok, const char *config_path, const char *template_path,
                    bool gpt2_defaults, char *err, size_t errlen)
{
    json_t *cfg = NULL;
    if (config_path && !(cfg = tok_json_load(config_path, TOK_CAP_CONFIG_JSON,
                                             "a tokenizer_config.json", err, errlen)))
        return -1;
    int rc = read_config(tok, cfg, gpt2_defaults, err, errlen);
    json_decref(cfg);
    if (rc)
        return config_path ? tok_err_prefix(err, errlen, "%s", config_path) : -1;
    if (template_path && read_template_file(tok, template_path, err, errlen))
        return -1;
    tok->cfg.bos_token = tok->cfg_strings[BOS];
    tok->cfg.eos_token = tok->cfg_strings[EOS];
    tok->cfg.pad_token = tok->cfg_strings[PAD];
    tok->cfg.chat_template = tok->cfg_strings[TEMPLATE];
    return 0;
}
