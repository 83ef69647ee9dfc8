/*
 * lua/sandbox.c — the Lua state of one untrusted script: allocator with a cap,
 * the whitelisted environment, the hooks that enforce the limits, and the
 * one protected entry point (sandbox_call) through which the host does all
 * its work in the state.
 *
 * Invariants.
 * - The host never touches the state outside sandbox_call: any Lua API call
 *   can raise (a memory error at least), and only a protected call turns that
 *   into a value instead of a panic.
 * - Memory has a soft and a hard cap. Passing the soft cap (lua_bytes) trips
 *   the sandbox (the message, with the line, is written right then) and
 *   re-arms the count hook to fire on the very next instruction, which raises
 *   it. Allocations keep working up to the hard cap (soft + 1/8) so that
 *   raising (which allocates) still works; past the hard cap the allocator
 *   returns NULL and Lua raises a memory error, reported with the same
 *   message.
 * - The call hook counts depth; the return hook undoes it. An error unwinds
 *   frames without return events, but nothing inside a script can catch an
 *   error (no pcall), so the count is simply restarted by every call.
 * - No script code runs during lua_close: no __gc or __close metamethod can
 *   exist without setmetatable, and the tensor userdata have none.
 */
#include "lua/sandbox.h"
#include "util/timeutil.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HOOK_PERIOD 1000 /* instructions between count hooks: ~1% overhead */
#define HOOK_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT)
#define WHERE_LEN (LUA_IDSIZE + 24)

struct Sandbox {
    lua_State *L;
    LossLimits lim;
    size_t used;     /* Lua heap bytes in use */
    size_t hard_cap; /* past this the allocator fails */
    bool armed;      /* inside sandbox_call: the limits apply */
    uint64_t instructions;
    int depth;
    double deadline; /* CLOCK_MONOTONIC seconds */
    TensorCtx *ctx;  /* the call's tensor context, NULL between calls */
    uint32_t serial;
    SandboxLimit tripped;
    char trip_msg[WHERE_LEN + TENSOR_ERR_LEN + 160];
};

LossLimits sandbox_limits_resolve(const LossLimits *in)
{
    LossLimits l = in ? *in : (LossLimits){0};
    if (!l.lua_bytes)
        l.lua_bytes = SANDBOX_DEFAULT_LUA_BYTES;
    if (!l.tensor_bytes)
        l.tensor_bytes = SANDBOX_DEFAULT_TENSOR_BYTES;
    if (!l.instructions)
        l.instructions = SANDBOX_DEFAULT_INSTRUCTIONS;
    if (!(l.seconds > 0))
        l.seconds = SANDBOX_DEFAULT_SECONDS;
    if (l.max_depth <= 0)
        l.max_depth = SANDBOX_DEFAULT_MAX_DEPTH;
    return l;
}

Sandbox *sandbox_of(lua_State *L) { return *(Sandbox **)lua_getextraspace(L); }
lua_State *sandbox_lua(Sandbox *sb) { return sb->L; }
TensorCtx *sandbox_ctx(const Sandbox *sb) { return sb->armed ? sb->ctx : NULL; }
uint32_t sandbox_serial(const Sandbox *sb) { return sb->serial; }
SandboxLimit sandbox_tripped(const Sandbox *sb) { return sb->tripped; }
size_t sandbox_lua_bytes(const Sandbox *sb) { return sb->used; }
size_t sandbox_tensor_bytes(const Sandbox *sb) { return sb->lim.tensor_bytes; }

/* ---- limits and their messages ------------------------------------------- */

static void bytes_text(char *buf, size_t len, size_t bytes)
{
    if (bytes >= ((size_t)1 << 20) && bytes % ((size_t)1 << 20) == 0)
        snprintf(buf, len, "%zu MiB", bytes >> 20);
    else
        snprintf(buf, len, "%zu bytes", bytes);
}

static void limit_text(const Sandbox *sb, SandboxLimit limit, char *buf, size_t len)
{
    char b[48];
    switch (limit) {
    case SANDBOX_LIMIT_LUA_BYTES:
        bytes_text(b, sizeof b, sb->lim.lua_bytes);
        snprintf(buf, len, "%s Lua heap per script", b);
        break;
    case SANDBOX_LIMIT_TENSOR_BYTES:
        bytes_text(b, sizeof b, sb->lim.tensor_bytes);
        snprintf(buf, len, "%s of tensors per call", b);
        break;
    case SANDBOX_LIMIT_INSTRUCTIONS:
        snprintf(buf, len, "%llu instructions per call", (unsigned long long)sb->lim.instructions);
        break;
    case SANDBOX_LIMIT_SECONDS:
        snprintf(buf, len, "%g s wall clock per call", sb->lim.seconds);
        break;
    case SANDBOX_LIMIT_DEPTH:
        snprintf(buf, len, "call depth %d", sb->lim.max_depth);
        break;
    default:
        snprintf(buf, len, "none");
    }
}

/* "FILE:LINE: " of the innermost Lua function with a known line, or "" */
static void where(lua_State *L, char *buf, size_t len)
{
    lua_Debug ar;
    for (int level = 0; lua_getstack(L, level, &ar); level++) {
        if (lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
            snprintf(buf, len, "%s:%d: ", ar.short_src, ar.currentline);
            return;
        }
    }
    buf[0] = '\0';
}

static void trip(Sandbox *sb, SandboxLimit limit, const char *pos, const char *what)
{
    if (sb->tripped)
        return; /* the first limit hit is the one reported */
    char lt[96];
    limit_text(sb, limit, lt, sizeof lt);
    sb->tripped = limit;
    snprintf(sb->trip_msg, sizeof sb->trip_msg, "%s%s (limit hit: %s)", pos, what, lt);
}

static int reraise(lua_State *L, Sandbox *sb)
{
    lua_pushstring(L, sb->trip_msg);
    return lua_error(L);
}

int sandbox_limit_error(lua_State *L, SandboxLimit limit, const char *what)
{
    Sandbox *sb = sandbox_of(L);
    if (!sb->tripped) {
        char pos[WHERE_LEN];
        where(L, pos, sizeof pos);
        trip(sb, limit, pos, what);
    }
    return reraise(L, sb);
}

void sandbox_poll(lua_State *L)
{
    Sandbox *sb = sandbox_of(L);
    if (sb->tripped)
        reraise(L, sb);
    if (sb->armed && timeutil_now() > sb->deadline)
        sandbox_limit_error(L, SANDBOX_LIMIT_SECONDS, "time budget exhausted");
}

static void hook(lua_State *L, lua_Debug *ar)
{
    Sandbox *sb = sandbox_of(L);
    if (!sb->armed)
        return;
    if (ar->event == LUA_HOOKRET) {
        if (sb->depth > 0)
            sb->depth--;
        return;
    }
    if (sb->tripped)
        reraise(L, sb);
    if (ar->event == LUA_HOOKCALL && ++sb->depth > sb->lim.max_depth)
        sandbox_limit_error(L, SANDBOX_LIMIT_DEPTH, "calls nested too deep");
    if (ar->event == LUA_HOOKCOUNT && (sb->instructions += HOOK_PERIOD) > sb->lim.instructions)
        sandbox_limit_error(L, SANDBOX_LIMIT_INSTRUCTIONS, "instruction budget exhausted");
    if (timeutil_now() > sb->deadline)
        sandbox_limit_error(L, SANDBOX_LIMIT_SECONDS, "time budget exhausted");
}

/* ---- the allocator --------------------------------------------------------- */

/* Trips the heap limit from inside an allocation. Reading the call stack is
 * safe here: Lua saves the pc before anything that can allocate, and
 * lua_getinfo with "Sl" neither allocates nor changes the state. */
static void trip_heap(Sandbox *sb)
{
    char pos[WHERE_LEN];
    where(sb->L, pos, sizeof pos);
    trip(sb, SANDBOX_LIMIT_LUA_BYTES, pos, "Lua heap exhausted");
}

static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    Sandbox *sb = ud;
    size_t old = ptr ? osize : 0; /* without ptr, osize is a type tag */
    if (nsize == 0) {
        free(ptr);
        sb->used -= old;
        return NULL;
    }
    if (nsize > old) {
        size_t grow = nsize - old;
        if (sb->used + grow > sb->hard_cap) {
            if (sb->armed && !sb->tripped)
                trip_heap(sb);
            return NULL; /* Lua raises a memory error */
        }
        if (sb->armed && !sb->tripped && sb->used + grow > sb->lim.lua_bytes) {
            trip_heap(sb);
            lua_sethook(sb->L, hook, HOOK_MASK, 1); /* raise at the next instruction */
        }
    }
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    sb->used = sb->used - old + nsize;
    return p;
}

/* ---- the environment --------------------------------------------------------- */

/* error(v [, level]) that only ever raises a string, so no table, tensor or
 * nil reaches the host as an error object */
static int sb_error(lua_State *L)
{
    int level = (int)luaL_optinteger(L, 2, 1);
    if (lua_type(L, 1) == LUA_TSTRING) {
        lua_settop(L, 1);
        if (level > 0) {
            luaL_where(L, level);
            lua_insert(L, 1);
            lua_concat(L, 2);
        }
        return lua_error(L);
    }
    const char *type = lua_isnoneornil(L, 1) ? "nil" : luaL_typename(L, 1);
    if (luaL_getmetafield(L, 1, "__name") == LUA_TSTRING)
        type = lua_tostring(L, -1);
    return luaL_error(L, "error called with a %s value (error messages must be strings)", type);
}

static int sb_assert(lua_State *L)
{
    if (lua_toboolean(L, 1))
        return lua_gettop(L); /* all arguments pass through, as in Lua */
    luaL_checkany(L, 1);
    if (lua_isnoneornil(L, 2))
        return luaL_error(L, "assertion failed!");
    if (lua_type(L, 2) != LUA_TSTRING)
        return luaL_error(L, "assertion failed! (its message is a %s, not a string)",
                          luaL_typename(L, 2));
    return luaL_error(L, "%s", lua_tostring(L, 2));
}

static bool listed(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(name, *list) == 0)
            return true;
    return false;
}

/* removes every string key of the table at idx that is not in keep */
static void keep_only(lua_State *L, int idx, const char *const *keep)
{
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING || !listed(lua_tostring(L, -1), keep)) {
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, idx); /* clearing a field during traversal is allowed */
        }
    }
}

static const char *const base_keep[] = {"assert",   "error",    "ipairs",   "next", "pairs",
                                        "select",   "tonumber", "tostring", "type", "_G",
                                        "_VERSION", "math",     "table",    NULL};
static const char *const table_keep[] = {"insert", "remove", "pack", "unpack", NULL};
static const char *const math_drop[] = {"random", "randomseed", NULL};

static const luaL_Reg sb_base[] = {
    {"error", sb_error},
    {"assert", sb_assert},
    {NULL, NULL},
};

static int open_env(lua_State *L)
{
    luaL_requiref(L, LUA_GNAME, luaopen_base, 1);
    luaL_requiref(L, LUA_MATHLIBNAME, luaopen_math, 1);
    for (const char *const *d = math_drop; *d; d++) {
        lua_pushnil(L);
        lua_setfield(L, -2, *d);
    }
    lua_pop(L, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    keep_only(L, -1, table_keep);
    lua_pop(L, 1);
    keep_only(L, -1, base_keep); /* _G */
    luaL_setfuncs(L, sb_base, 0);
    lua_pop(L, 1);
    /* the string library is never opened; make sure strings have no metatable */
    lua_pushliteral(L, "");
    lua_pushnil(L);
    lua_setmetatable(L, -2);
    lua_pop(L, 1);
    return 0;
}

/* ---- life cycle and the protected entry ----------------------------------- */

Sandbox *sandbox_new(const LossLimits *limits, char *err, size_t errlen)
{
    Sandbox *sb = calloc(1, sizeof *sb);
    if (!sb) {
        snprintf(err, errlen, "sandbox: out of memory");
        return NULL;
    }
    sb->lim = sandbox_limits_resolve(limits);
    sb->hard_cap = sb->lim.lua_bytes + sb->lim.lua_bytes / 8;
    sb->L = lua_newstate(sb_alloc, sb);
    if (!sb->L) {
        snprintf(err, errlen, "sandbox: cannot create a Lua state within %zu bytes",
                 sb->lim.lua_bytes);
        free(sb);
        return NULL;
    }
    *(Sandbox **)lua_getextraspace(sb->L) = sb;
    lua_pushcfunction(sb->L, open_env);
    if (lua_pcall(sb->L, 0, 0, 0) != LUA_OK) {
        snprintf(err, errlen, "sandbox: cannot open the environment: %s",
                 lua_type(sb->L, -1) == LUA_TSTRING ? lua_tostring(sb->L, -1) : "?");
        sandbox_free(sb);
        return NULL;
    }
    lua_sethook(sb->L, hook, HOOK_MASK, HOOK_PERIOD);
    return sb;
}

void sandbox_free(Sandbox *sb)
{
    if (!sb)
        return;
    sb->armed = false;
    if (sb->L)
        lua_close(sb->L);
    free(sb);
}

static void report(Sandbox *sb, int status, char *err, size_t errlen)
{
    lua_State *L = sb->L;
    if (status == LUA_ERRMEM && !sb->tripped)
        snprintf(err, errlen, "out of memory"); /* malloc itself failed */
    else if (sb->tripped)
        snprintf(err, errlen, "%s", sb->trip_msg);
    else if (lua_type(L, -1) == LUA_TSTRING)
        snprintf(err, errlen, "%s", lua_tostring(L, -1));
    else
        snprintf(err, errlen, "error object is a %s, not a string", luaL_typename(L, -1));
}

int sandbox_call(Sandbox *sb, TensorCtx *ctx, lua_CFunction fn, void *ud, char *err, size_t errlen)
{
    if (sb->tripped) {
        snprintf(err, errlen, "%s", sb->trip_msg);
        return -1;
    }
    if (ctx && !tensor_ctx_ok(ctx)) {
        snprintf(err, errlen, "the tensor context already has an error: %s", tensor_ctx_error(ctx));
        return -1;
    }
    size_t saved_cap = ctx ? ctx->cap_bytes : 0;
    if (ctx) {
        size_t cap = ctx->used + sb->lim.tensor_bytes;
        if (!saved_cap || cap < saved_cap)
            ctx->cap_bytes = cap;
    }
    lua_State *L = sb->L;
    sb->ctx = ctx;
    sb->serial++;
    sb->instructions = 0;
    sb->depth = 0;
    sb->deadline = timeutil_now() + sb->lim.seconds;
    sb->armed = true;
    lua_settop(L, 0);
    lua_pushcfunction(L, fn); /* neither push allocates */
    lua_pushlightuserdata(L, ud);
    int status = lua_pcall(L, 1, 0, 0);
    sb->armed = false;
    sb->ctx = NULL;
    if (ctx) {
        ctx->cap_bytes = saved_cap;
        if (status != LUA_OK)
            tensor_ctx_clear_error(ctx);
    }
    if (status != LUA_OK)
        report(sb, status, err, errlen);
    lua_settop(L, 0);
    return status == LUA_OK ? 0 : -1;
}
