/*
 * lua/loss.c — loss files: loading and validating the returned table, use() of
 * library losses, and evaluating the loss on a batch (loss.h).
 *
 * A LossScript owns one Sandbox. The host's copy of everything the script
 * declared (name, params, state) lives in C, so nothing the script does to
 * its own tables between calls can change what the host believes: the batch
 * `b`, the params `p` and the state `s` are fresh tables on every call, and
 * the state is read back (and committed) only when the call succeeds.
 *
 * Registry keys are the addresses of two statics: the loss function and the
 * use() cache. Library files are loaded into the same state as the script
 * (they share its globals and limits), once per state.
 */
#include "lua/loss.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"
#include "lua/lua_tensor.h"
#include "core/ops.h"
#include "prefrun_config.h"
#include "lua/sandbox.h"

#define LOSS_MAX_KEYS 64
#define LOSS_KEY_LEN 32
#define LOSS_NAME_LEN 64
#define LOSS_PATH_LEN 1024

typedef struct LossKV {
    char key[LOSS_KEY_LEN];
    double value;
} LossKV;

struct LossScript {
    Sandbox *sb;
    char path[LOSS_PATH_LEN];
    char lib_dir[LOSS_PATH_LEN];
    char name[LOSS_NAME_LEN];
    int n_params;
    LossKV params[LOSS_MAX_KEYS]; /* sorted by key: the order is stable */
    int n_state;
    LossKV state[LOSS_MAX_KEYS];
    bool batch_level;
    int loss_line;
    char unknown[256];
};

static const char LOSS_FN_KEY = 0; /* registry[&LOSS_FN_KEY] = the loss function */

static const char *const known_fields[] = {"name",  "params",      "loss", "batch_level",
                                           "state", "description", NULL};

const char *loss_default_lib_dir(void)
{
    const char *env = getenv("PREFRUN_LOSSES");
    return env && *env ? env : PREFRUN_SOURCE_ROOT "/losses";
}

const char *loss_name(const LossScript *ls) { return ls->name; }
const char *loss_path(const LossScript *ls) { return ls->path; }
int loss_param_count(const LossScript *ls) { return ls->n_params; }
const char *loss_param_name(const LossScript *ls, int i) { return ls->params[i].key; }
double loss_param_value(const LossScript *ls, int i) { return ls->params[i].value; }
int loss_is_batch_level(const LossScript *ls) { return ls->batch_level; }
int loss_state_count(const LossScript *ls) { return ls->n_state; }
const char *loss_state_name(const LossScript *ls, int i) { return ls->state[i].key; }
double loss_state_value(const LossScript *ls, int i) { return ls->state[i].value; }

int loss_set_state(LossScript *ls, const char *key, double value, char *err, size_t errlen)
{
    for (int i = 0; i < ls->n_state; i++) {
        if (strcmp(ls->state[i].key, key) != 0)
            continue;
        if (!isfinite(value)) {
            snprintf(err, errlen, "%s: state.%s: expected a finite number, got %g", ls->path, key,
                     value);
            return -1;
        }
        ls->state[i].value = value;
        return 0;
    }
    snprintf(err, errlen, "%s: state key '%s' is not declared in the file's state table", ls->path,
             key);
    return -1;
}
const char *loss_unknown_fields(const LossScript *ls) { return ls->unknown; }
int loss_line(const LossScript *ls) { return ls->loss_line; }

/* ---- use("name") ------------------------------------------------------------ */

static bool lib_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash && slash[1] ? slash + 1 : path;
}

/* use(name): the table returned by <lib_dir>/<name>.lua, loaded once per
 * state; upvalues: the LossScript, the cache table */
static int loss_use(lua_State *L)
{
    size_t n;
    const char *name = lua_type(L, 1) == LUA_TSTRING ? lua_tolstring(L, 1, &n) : NULL;
    if (!name || !lib_name_ok(name, n))
        return luaL_error(L, "use: a loss name is lowercase letters, digits and _ (got %s)",
                          name ? name : luaL_typename(L, 1));
    LossScript *ls = lua_touserdata(L, lua_upvalueindex(1));
    int cached = lua_getfield(L, lua_upvalueindex(2), name);
    if (cached == LUA_TTABLE)
        return 1;
    if (cached != LUA_TNIL)
        return luaL_error(L, "use: '%s' uses itself (a circular use)", name);
    lua_pop(L, 1);
    char path[LOSS_PATH_LEN + 80], chunk[LOSS_PATH_LEN + 80], msg[LOSS_PATH_LEN + 200];
    snprintf(path, sizeof path, "%s/%s.lua", ls->lib_dir, name);
    snprintf(chunk, sizeof chunk, "@%s/%s.lua", base_name(ls->lib_dir), name);
    char *src;
    size_t len;
    if (fsutil_read_capped(path, SANDBOX_SOURCE_CAP, &src, &len, msg, sizeof msg) != 0)
        return luaL_error(L, "use: no loss named '%s' (%s)", name, msg);
    int status = luaL_loadbufferx(L, src, len, chunk, "t"); /* returns, never raises */
    free(src);
    if (status != LUA_OK)
        return lua_error(L);
    lua_pushboolean(L, 1);
    lua_setfield(L, lua_upvalueindex(2), name); /* marks it as loading */
    lua_call(L, 0, 1);
    if (!lua_istable(L, -1))
        return luaL_error(L, "use: %s must return a table (got %s)", chunk + 1,
                          luaL_typename(L, -1));
    lua_pushvalue(L, -1);
    lua_setfield(L, lua_upvalueindex(2), name);
    return 1;
}

/* ---- the schema ------------------------------------------------------------- */

static bool ident_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= LOSS_KEY_LEN || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const LossKV *)a)->key, ((const LossKV *)b)->key);
}

/* reads the table field `what` (at the top) of string keys to finite numbers */
static int read_numbers(lua_State *L, const LossScript *ls, const char *what, LossKV *kv)
{
    int n = 0, t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, t)) {
        if (lua_type(L, -2) != LUA_TSTRING || !ident_ok(lua_tostring(L, -2)))
            return luaL_error(L, "%s: %s: keys must be names of up to %d letters, digits or _",
                              ls->path, what, LOSS_KEY_LEN - 1);
        const char *key = lua_tostring(L, -2);
        if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(lua_tonumber(L, -1)))
            return luaL_error(L, "%s: %s.%s must be a finite number (got %s)", ls->path, what, key,
                              lua_type(L, -1) == LUA_TNUMBER ? "a non-finite number"
                                                             : luaL_typename(L, -1));
        if (n == LOSS_MAX_KEYS)
            return luaL_error(L, "%s: %s has more than %d entries", ls->path, what, LOSS_MAX_KEYS);
        snprintf(kv[n].key, sizeof kv[n].key, "%s", key);
        kv[n++].value = lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    qsort(kv, (size_t)n, sizeof *kv, kv_cmp);
    return n;
}

/* the optional field `what` of the table at t: a table of numbers (or nil,
 * giving none) read into kv; returns the count */
static int read_number_field(lua_State *L, const LossScript *ls, int t, const char *what,
                             LossKV *kv)
{
    int type = lua_getfield(L, t, what), n = 0;
    if (type != LUA_TNIL && type != LUA_TTABLE)
        luaL_error(L, "%s: field '%s' must be a table of numbers (got %s)", ls->path, what,
                   luaL_typename(L, -1));
    if (type == LUA_TTABLE)
        n = read_numbers(L, ls, what, kv);
    lua_pop(L, 1);
    return n;
}

static void note_unknown_fields(lua_State *L, LossScript *ls, int t)
{
    lua_pushnil(L);
    while (lua_next(L, t)) {
        lua_pop(L, 1);
        bool known = false;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (const char *const *f = known_fields; *f && !known; f++)
                known = strcmp(lua_tostring(L, -1), *f) == 0;
        if (!known) {
            size_t used = strlen(ls->unknown);
            snprintf(ls->unknown + used, sizeof ls->unknown - used, "%s%s", used ? ", " : "",
                     lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(a non-string key)");
        }
    }
}

/* validates the table at index t and copies what it declares into ls */
static void read_schema(lua_State *L, LossScript *ls, int t)
{
    if (!lua_istable(L, t))
        luaL_error(L,
                   "%s: the file must return a table {name = ..., params = {...}, loss = "
                   "function(b, p, s) ... end} (got %s)",
                   ls->path, luaL_typename(L, t));
    size_t n = 0;
    lua_getfield(L, t, "name");
    const char *name = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (!name || n == 0 || n >= LOSS_NAME_LEN)
        luaL_error(L, "%s: field 'name' must be a non-empty string of under %d characters (got %s)",
                   ls->path, LOSS_NAME_LEN, luaL_typename(L, -1));
    snprintf(ls->name, sizeof ls->name, "%s", name);
    lua_pop(L, 1);
    ls->n_params = read_number_field(L, ls, t, "params", ls->params);
    ls->n_state = read_number_field(L, ls, t, "state", ls->state);
    int type = lua_getfield(L, t, "batch_level");
    if (type != LUA_TNIL && type != LUA_TBOOLEAN)
        luaL_error(L, "%s: field 'batch_level' must be true or false (got %s)", ls->path,
                   luaL_typename(L, -1));
    ls->batch_level = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, t, "loss") != LUA_TFUNCTION)
        luaL_error(L, "%s: field 'loss' must be a function(b, p, s) (got %s)", ls->path,
                   luaL_typename(L, -1));
    lua_Debug ar;
    lua_pushvalue(L, -1);
    lua_getinfo(L, ">S", &ar);
    ls->loss_line = ar.linedefined;
    lua_rawsetp(L, LUA_REGISTRYINDEX, &LOSS_FN_KEY);
    note_unknown_fields(L, ls, t);
}

typedef struct LoadArgs {
    LossScript *ls;
    const char *src;
    size_t len;
} LoadArgs;

static int load_fn(lua_State *L)
{
    LoadArgs *a = lua_touserdata(L, 1);
    LossScript *ls = a->ls;
    lt_open(L);
    lua_pushlightuserdata(L, ls);
    lua_newtable(L); /* the use() cache */
    lua_pushcclosure(L, loss_use, 2);
    lua_setglobal(L, "use");
    char chunk[LOSS_PATH_LEN + 2];
    snprintf(chunk, sizeof chunk, "@%s", ls->path);
    if (luaL_loadbufferx(L, a->src, a->len, chunk, "t") != LUA_OK)
        return lua_error(L);
    lua_call(L, 0, 1);
    read_schema(L, ls, lua_gettop(L));
    return 0;
}

LossScript *loss_load(const char *path, const char *lib_dir, const LossLimits *limits, char *err,
                      size_t errlen)
{
    char *src;
    size_t len;
    if (fsutil_read_capped(path, SANDBOX_SOURCE_CAP, &src, &len, err, errlen) != 0)
        return NULL;
    LossScript *ls = calloc(1, sizeof *ls);
    if (!ls) {
        snprintf(err, errlen, "%s: out of memory", path);
        free(src);
        return NULL;
    }
    snprintf(ls->path, sizeof ls->path, "%s", path);
    snprintf(ls->lib_dir, sizeof ls->lib_dir, "%s", lib_dir ? lib_dir : loss_default_lib_dir());
    ls->sb = sandbox_new(limits, err, errlen);
    LoadArgs args = {ls, src, len};
    if (!ls->sb || sandbox_call(ls->sb, NULL, load_fn, &args, err, errlen) != 0) {
        free(src);
        loss_free(ls);
        return NULL;
    }
    free(src);
    return ls;
}

void loss_free(LossScript *ls)
{
    if (!ls)
        return;
    sandbox_free(ls->sb);
    free(ls);
}

int loss_set_param(LossScript *ls, const char *key, double value, char *err, size_t errlen)
{
    for (int i = 0; i < ls->n_params; i++)
        if (strcmp(ls->params[i].key, key) == 0) {
            if (!isfinite(value)) {
                snprintf(err, errlen, "%s: parameter '%s' must be finite", ls->path, key);
                return -1;
            }
            ls->params[i].value = value;
            return 0;
        }
    size_t n = (size_t)snprintf(err, errlen, "%s: unknown parameter '%s' for loss '%s' (", ls->path,
                                key, ls->name);
    for (int i = 0; i < ls->n_params && n < errlen; i++)
        n += (size_t)snprintf(err + n, errlen - n, "%s%s",
                              i ? ", " : "its parameters: ", ls->params[i].key);
    if (n < errlen)
        snprintf(err + n, errlen - n, "%s)", ls->n_params ? "" : "it has no parameters");
    return -1;
}

/* ---- evaluation --------------------------------------------------------------- */

typedef struct EvalArgs {
    LossScript *ls;
    const LossBatch *b;
    Tensor *out;
    double state[LOSS_MAX_KEYS]; /* the new state, committed on success */
} EvalArgs;

static void set_tensor(lua_State *L, const char *name, Tensor *t)
{
    if (t) {
        lt_push(L, t);
        lua_setfield(L, -2, name);
    }
}

static void push_batch(lua_State *L, const LossBatch *b)
{
    lua_createtable(L, 0, 20);
    set_tensor(L, "policy_chosen_logps", b->policy_chosen_logps);
    set_tensor(L, "policy_rejected_logps", b->policy_rejected_logps);
    set_tensor(L, "reference_chosen_logps", b->reference_chosen_logps);
    set_tensor(L, "reference_rejected_logps", b->reference_rejected_logps);
    set_tensor(L, "chosen_lengths", b->chosen_lengths);
    set_tensor(L, "rejected_lengths", b->rejected_lengths);
    set_tensor(L, "policy_chosen_token_logps", b->policy_chosen_token_logps);
    set_tensor(L, "policy_rejected_token_logps", b->policy_rejected_token_logps);
    set_tensor(L, "reference_chosen_token_logps", b->reference_chosen_token_logps);
    set_tensor(L, "reference_rejected_token_logps", b->reference_rejected_token_logps);
    set_tensor(L, "chosen_mask", b->chosen_mask);
    set_tensor(L, "rejected_mask", b->rejected_mask);
    lua_pushinteger(L, b->B);
    lua_setfield(L, -2, "batch_size");
    if (b->policy_chosen_token_logps) {
        lua_pushinteger(L, b->T);
        lua_setfield(L, -2, "T");
    }
    lua_pushinteger(L, (lua_Integer)b->step);
    lua_setfield(L, -2, "step");
    lua_pushnumber(L, b->progress);
    lua_setfield(L, -2, "progress");
}

static void push_kv(lua_State *L, const LossKV *kv, int n)
{
    lua_createtable(L, 0, n);
    for (int i = 0; i < n; i++) {
        lua_pushnumber(L, kv[i].value);
        lua_setfield(L, -2, kv[i].key);
    }
}

/* raises "FILE:LINE: loss returned <got>; expected <what the file promises>" */
static int bad_result(lua_State *L, const LossScript *ls, int B, const char *got, const char *hint)
{
    char want[80];
    if (ls->batch_level)
        snprintf(want, sizeof want, "a 0-D tensor (the file declares batch_level = true)");
    else
        snprintf(want, sizeof want, "a tensor of shape (%d), one loss per pair", B);
    return luaL_error(L, "%s:%d: loss returned %s; expected %s%s", ls->path, ls->loss_line, got,
                      want, hint);
}

/* the loss's result at the top: a live tensor of shape (B), or 0-D */
static Tensor *check_result(lua_State *L, const LossScript *ls, int B)
{
    bool stale;
    Tensor *t = lt_get(L, -1, &stale);
    char got[160], shape[64];
    if (stale)
        bad_result(L, ls, B, "a tensor from an earlier call (" LT_STALE_MSG ")", "");
    if (!t)
        bad_result(L, ls, B, lua_isnil(L, -1) ? "nil (a missing return?)" : luaL_typename(L, -1),
                   "");
    if (ls->batch_level ? t->ndim != 0 : t->ndim != 1 || t->shape[0] != B) {
        snprintf(got, sizeof got, "a tensor of shape %s", tensor_shape_str(t, shape, sizeof shape));
        bad_result(L, ls, B, got,
                   ls->batch_level || t->ndim ? "" : " (a scalar needs batch_level = true)");
    }
    return t;
}

/* reads the state table at index s into a->state; only declared keys,
 * numbers or one-element tensors (shape-only tensors keep the old value) */
static void read_state(lua_State *L, EvalArgs *a, int s)
{
    const LossScript *ls = a->ls;
    for (int i = 0; i < ls->n_state; i++) {
        lua_getfield(L, s, ls->state[i].key);
        Tensor *t = lt_to(L, -1);
        if (lua_type(L, -1) == LUA_TNUMBER)
            a->state[i] = lua_tonumber(L, -1);
        else if (t && t->size == 1)
            a->state[i] = t->data ? t->data[0] : ls->state[i].value;
        else
            luaL_error(L, "%s: state.%s must be a number or a one-element tensor (got %s)",
                       ls->path, ls->state[i].key, t ? "a larger tensor" : luaL_typename(L, -1));
        if (!isfinite(a->state[i]))
            luaL_error(L, "%s: state.%s became %f, expected a finite number", ls->path,
                       ls->state[i].key, (lua_Number)a->state[i]); /* Lua's %f is %.14g */
        lua_pop(L, 1);
    }
    lua_pushnil(L);
    while (lua_next(L, s)) {
        lua_pop(L, 1);
        bool declared = false;
        for (int i = 0; i < ls->n_state && !declared; i++)
            declared = lua_type(L, -1) == LUA_TSTRING &&
                       strcmp(lua_tostring(L, -1), ls->state[i].key) == 0;
        if (!declared)
            luaL_error(L,
                       "%s: state key '%s' is not declared in the file's state table "
                       "(declare it there with its initial value)",
                       ls->path, lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "?");
    }
}

static int eval_fn(lua_State *L)
{
    EvalArgs *a = lua_touserdata(L, 1);
    LossScript *ls = a->ls;
    push_kv(L, ls->state, ls->n_state); /* 2: s, read back after the call */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &LOSS_FN_KEY);
    push_batch(L, a->b);
    push_kv(L, ls->params, ls->n_params);
    lua_pushvalue(L, 2);
    lua_call(L, 3, 1);
    a->out = check_result(L, ls, a->b->B);
    read_state(L, a, 2);
    return 0;
}

/* the batch must match its documented shapes before the script sees it */
static int check_batch(const LossScript *ls, const LossBatch *b, char *err, size_t errlen)
{
    const struct {
        const char *name;
        const Tensor *t;
        bool required, tokens;
    } f[] = {
        {"policy_chosen_logps", b->policy_chosen_logps, true, false},
        {"policy_rejected_logps", b->policy_rejected_logps, true, false},
        {"reference_chosen_logps", b->reference_chosen_logps, true, false},
        {"reference_rejected_logps", b->reference_rejected_logps, true, false},
        {"chosen_lengths", b->chosen_lengths, false, false},
        {"rejected_lengths", b->rejected_lengths, false, false},
        {"policy_chosen_token_logps", b->policy_chosen_token_logps, false, true},
        {"policy_rejected_token_logps", b->policy_rejected_token_logps, false, true},
        {"reference_chosen_token_logps", b->reference_chosen_token_logps, false, true},
        {"reference_rejected_token_logps", b->reference_rejected_token_logps, false, true},
        {"chosen_mask", b->chosen_mask, false, true},
        {"rejected_mask", b->rejected_mask, false, true},
    };
    if (b->B < 1) {
        snprintf(err, errlen, "%s: batch of %d pairs", ls->path, b->B);
        return -1;
    }
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        char s[64];
        const Tensor *t = f[i].t;
        if (!t && f[i].required) {
            snprintf(err, errlen, "%s: the batch has no %s", ls->path, f[i].name);
            return -1;
        }
        bool ok = !t || (f[i].tokens ? t->ndim == 2 && t->shape[0] == b->B && t->shape[1] == b->T
                                     : t->ndim == 1 && t->shape[0] == b->B);
        if (!ok) {
            snprintf(err, errlen, "%s: batch field %s has shape %s, expected (%d%s)", ls->path,
                     f[i].name, tensor_shape_str(t, s, sizeof s), b->B, f[i].tokens ? ", T" : "");
            return -1;
        }
    }
    return 0;
}

Tensor *loss_eval(LossScript *ls, TensorCtx *ctx, const LossBatch *b, char *err, size_t errlen)
{
    if (check_batch(ls, b, err, errlen) != 0)
        return NULL;
    EvalArgs a = {.ls = ls, .b = b};
    if (sandbox_call(ls->sb, ctx, eval_fn, &a, err, errlen) != 0)
        return NULL;
    for (int i = 0; i < ls->n_state; i++)
        ls->state[i].value = a.state[i];
    return a.out;
}

Tensor *loss_eval_weighted(LossScript *const *ls, const double *weights, int n, TensorCtx *ctx,
                           const LossBatch *b, char *err, size_t errlen)
{
    bool scalar = false;
    for (int i = 0; i < n; i++)
        scalar = scalar || ls[i]->batch_level;
    if (n < 1) {
        snprintf(err, errlen, "a weighted loss needs at least one script");
        return NULL;
    }
    Tensor *total = NULL;
    for (int i = 0; i < n; i++) {
        Tensor *l = loss_eval(ls[i], ctx, b, err, errlen);
        if (!l)
            return NULL;
        if (scalar && !ls[i]->batch_level)
            l = ag_mean(ctx, l, AG_ALL, false);
        Tensor *term = ag_mul(ctx, l, tensor_scalar(ctx, (float)weights[i]));
        total = total ? ag_add(ctx, total, term) : term;
        if (!total) {
            snprintf(err, errlen, "weighted loss: %s", tensor_ctx_error(ctx));
            return NULL;
        }
    }
    return total;
}
