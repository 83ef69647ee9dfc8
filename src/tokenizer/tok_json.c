/*
 * tokenizer/tok_json.c — reading the JSON files of a tokenizer: a capped
 * read (fsutil_read_capped), parsed by jansson with duplicate keys refused
 * (a vocabulary that names a token twice would otherwise lose one in
 * silence), and typed fields whose errors name the key ("model.dropout").
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdio.h>
#include <stdlib.h>

#include "util/errmsg.h"
#include "util/fsutil.h"

json_t *tok_json_load(const char *path, size_t cap, const char *kind, char *err, size_t errlen)
{
    FsReadCap c = {.bytes = cap, .kind = kind, .special = false};
    char *text;
    size_t len;
    if (fsutil_read_capped(path, &c, &text, &len, err, errlen))
        return NULL;
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!j)
        err_fail(err, errlen, "%s:%d: %s", path, je.line, je.text);
    return j;
}

int tok_json_bool(json_t *obj, const char *key, const char *where, bool required, bool *out,
                  char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (!v && !required)
        return 0;
    if (!json_is_boolean(v))
        return err_fail(err, errlen, "%s.%s: expected true or false", where, key);
    *out = json_is_true(v);
    return 0;
}

int tok_json_str(json_t *obj, const char *key, const char *where, bool required, const char **out,
                 size_t *len, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (!v && !required)
        return 0;
    if (!json_is_string(v))
        return err_fail(err, errlen, "%s.%s: expected a string", where, key);
    *out = json_string_value(v);
    if (len)
        *len = json_string_length(v);
    return 0;
}

const char *tok_json_type(json_t *obj, const char *where, char *err, size_t errlen)
{
    const char *type = NULL;
    if (!json_is_object(obj)) {
        err_fail(err, errlen, "%s: expected an object", where);
        return NULL;
    }
    if (tok_json_str(obj, "type", where, true, &type, NULL, err, errlen))
        return NULL;
    return type;
}
