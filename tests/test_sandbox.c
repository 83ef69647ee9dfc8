/*
 * test_sandbox.c — hostile loss scripts against the sandbox.
 *
 * Each script in tests/data/hostile/ attempts one thing a loss must not do
 * (escape to files or processes, compile code, tamper with metatables, loop,
 * recurse or allocate without end, raise odd error objects, return the wrong
 * thing, keep a tensor past its step). For each the test checks:
 *   - it is rejected at the stage the spec says (loading, first or second call),
 *   - with the expected message, naming the file and the line marked
 *     "-- REJECT HERE" in the script,
 *   - within a bounded time (the limits below are tight so this stays fast),
 *   - and afterwards the host loads and runs a good loss with correct values.
 * Run under ASan too (build-lua-asan): no leak, no invalid access on any path.
 */
#include <lauxlib.h>
#include <lua.h>

#include "lossfix.h"
#include "lua/sandbox.h"

/* tight limits: every bomb goes off in milliseconds */
static const LossLimits tight = {
    .lua_bytes = (size_t)8 << 20,
    .tensor_bytes = (size_t)8 << 20,
    .instructions = 5000000,
    .seconds = 1.0,
    .max_depth = 200,
};

/* the line of the "-- REJECT HERE" marker in file (0: none) */
static int marked_line(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    int n = 0, found = 0;
    while (f && !found && fgets(line, sizeof line, f)) {
        n++;
        if (strstr(line, "-- REJECT HERE"))
            found = n;
    }
    if (f)
        fclose(f);
    return found;
}

typedef struct Hostile {
    const char *file;   /* in tests/data/hostile/ */
    int fails_at;       /* 0: loading; 1, 2: the first or second loss call */
    const char *expect; /* a substring of the error message */
} Hostile;

/* Loads the script and calls it until the expected failure; returns the
 * error message (static) or NULL when nothing failed. */
static const char *run_hostile(const Hostile *h, const LossLimits *lim, int *failed_at,
                               double *seconds)
{
    static char err[1024];
    char rel[128];
    snprintf(rel, sizeof rel, "tests/data/hostile/%s", h->file);
    double t0 = fx_now();
    *failed_at = -1;
    LossScript *ls = loss_load(fx_path(rel), fx_path("tests/data/loss/lib"), lim, err, sizeof err);
    if (!ls)
        *failed_at = 0;
    TensorCtx *ctx = tensor_ctx_new(0);
    for (int call = 1; ls && call <= 2 && *failed_at < 0; call++) {
        tensor_ctx_reset(ctx); /* a new step: tensors of the last one are gone */
        FxBatch fb;
        fx_batch(&fb, ctx, 4);
        if (!loss_eval(ls, ctx, &fb.b, err, sizeof err))
            *failed_at = call;
        CHECKF(tensor_ctx_ok(ctx), "%s: the step's context keeps an error: %s", h->file,
               tensor_ctx_error(ctx));
        CHECKF(ctx->cap_bytes == 0, "%s: the context's cap was not restored", h->file);
    }
    tensor_ctx_free(ctx);
    loss_free(ls);
    *seconds = fx_now() - t0;
    return *failed_at >= 0 ? err : NULL;
}

static void expect_rejected(const Hostile *h, const LossLimits *lim)
{
    int at;
    double secs;
    const char *err = run_hostile(h, lim, &at, &secs);
    CHECKF(err != NULL, "%s: was not rejected", h->file);
    if (!err)
        return;
    CHECKF(at == h->fails_at, "%s: failed at stage %d, expected %d: %s", h->file, at, h->fails_at,
           err);
    CHECKF(strstr(err, h->expect), "%s: error \"%s\" does not say \"%s\"", h->file, err, h->expect);
    char rel[128], where[160];
    snprintf(rel, sizeof rel, "tests/data/hostile/%s", h->file);
    int line = marked_line(fx_path(rel));
    snprintf(where, sizeof where, "%s:%d: ", h->file, line);
    CHECKF(line == 0 || strstr(err, where), "%s: error \"%s\" does not point at %s", h->file, err,
           where);
    /* limits are 1 s (or less) per call; allow for a slow sanitizer build */
    CHECKF(secs < 3.0, "%s: took %.2f s to reject", h->file, secs);
    fx_good_loss_works();
}

static const Hostile escapes[] = {
    {"io_open.lua", 0, "attempt to index a nil value (global 'io')"},
    {"os_execute.lua", 1, "attempt to index a nil value (global 'os')"},
    {"require_os.lua", 0, "attempt to call a nil value (global 'require')"},
    {"load_code.lua", 0, "attempt to call a nil value (global 'load')"},
    {"dofile.lua", 0, "attempt to call a nil value (global 'dofile')"},
    {"string_dump.lua", 0, "attempt to index a nil value (global 'string')"},
    {"string_rep.lua", 0, "attempt to index a string value"},
    {"string_meta.lua", 0, "attempt to call a nil value (global 'getmetatable')"},
    {"gc_finalizer.lua", 0, "attempt to call a nil value (global 'setmetatable')"},
    {"close_var.lua", 1, "variable 'x' got a non-closable value"},
    {"debug_hook.lua", 0, "attempt to index a nil value (global 'debug')"},
    {"pcall_catch.lua", 1, "attempt to call a nil value (global 'pcall')"},
    {"coroutine_wrap.lua", 0, "attempt to index a nil value (global 'coroutine')"},
    {"collectgarbage.lua", 0, "attempt to call a nil value (global 'collectgarbage')"},
    {"binary_chunk.lua", 0, "attempt to load a binary chunk"},
    {"use_escape.lua", 0, "use: a loss name is lowercase letters, digits and _"},
    {"use_unknown.lua", 0, "use: no loss named 'no_such_loss'"},
};

static void escapes_are_rejected(void)
{
    for (size_t i = 0; i < sizeof escapes / sizeof escapes[0]; i++)
        expect_rejected(&escapes[i], &tight);
}

static const Hostile bombs[] = {
    {"loop_top.lua", 0, "instruction budget exhausted (limit hit: 5000000 instructions per call)"},
    {"loop_loss.lua", 1, "instruction budget exhausted (limit hit: 5000000 instructions per call)"},
    {"mem_table.lua", 1, "Lua heap exhausted (limit hit: 8 MiB Lua heap per script)"},
    {"mem_string.lua", 0, "Lua heap exhausted (limit hit: 8 MiB Lua heap per script)"},
    {"mem_tensor.lua", 1, "(limit hit: 8 MiB of tensors per call)"},
    {"deep_recursion.lua", 1, "calls nested too deep (limit hit: call depth 200)"},
};

static void bombs_hit_their_limits(void)
{
    for (size_t i = 0; i < sizeof bombs / sizeof bombs[0]; i++)
        expect_rejected(&bombs[i], &tight);
}

/* On shape-only tensors nothing is allocated, so nothing runs out: the
 * binding counts elements instead, before a shape can overflow. */
static void shape_only_bombs_hit_the_tensor_limit(void)
{
    static const char *const files[] = {"tests/data/hostile/mem_tensor.lua",
                                        "tests/data/hostile/where_overflow.lua"};
    for (int k = 0; k < 2; k++) {
        char err[512];
        LossScript *ls = loss_load(fx_path(files[k]), NULL, &tight, err, sizeof err);
        CHECKF(ls != NULL, "%s", err);
        TensorCtx *ctx = tensor_ctx_new(0);
        ctx->meta = true;
        FxBatch fb;
        fx_batch(&fb, ctx, 4);
        double t0 = fx_now();
        CHECK(ls && loss_eval(ls, ctx, &fb.b, err, sizeof err) == NULL);
        CHECKF(strstr(err, "elements (limit hit: 8 MiB of tensors per call)"), "%s: %s", files[k],
               err);
        CHECKF(strstr(err, k ? "where_overflow.lua:16: where:" : "mem_tensor.lua:9: cat:"), "%s",
               err);
        CHECK(fx_now() - t0 < 1.0);
        tensor_ctx_free(ctx);
        loss_free(ls);
    }
    fx_good_loss_works();
}

static void wall_clock_covers_a_spin(void)
{
    LossLimits lim = tight;
    lim.instructions = (uint64_t)1 << 50; /* cannot run out first */
    lim.seconds = 0.2;
    Hostile h = {"wall_clock.lua", 1,
                 "time budget exhausted (limit hit: 0.2 s wall clock per call)"};
    int at;
    double secs;
    expect_rejected(&h, &lim);
    run_hostile(&h, &lim, &at, &secs);
    CHECKF(secs >= 0.2 && secs < 1.0, "the 0.2 s budget stopped the spin after %.3f s", secs);
}

static const Hostile bad_errors[] = {
    {"error_table.lua", 1, "error called with a table value (error messages must be strings)"},
    {"error_tensor.lua", 1, "error called with a tensor value"},
    {"error_nil.lua", 1, "error called with a nil value"},
    {"assert_table.lua", 1, "assertion failed! (its message is a table, not a string)"},
};

static void odd_error_objects_become_messages(void)
{
    for (size_t i = 0; i < sizeof bad_errors / sizeof bad_errors[0]; i++)
        expect_rejected(&bad_errors[i], &tight);
}

static const Hostile bad_returns[] = {
    {"scalar_return.lua", 1, "loss returned a tensor of shape (); expected a tensor of shape (4)"},
    {"wrong_shape.lua", 1, "loss returned a tensor of shape (8); expected a tensor of shape (4)"},
    {"number_return.lua", 1, "loss returned number; expected a tensor of shape (4)"},
    {"nil_return.lua", 1, "loss returned nil"},
    {"stale_upvalue.lua", 2, "tensor used after its step ended"},
    {"stale_return.lua", 2, "loss returned a tensor from an earlier call"},
};

static void wrong_returns_are_named(void)
{
    for (size_t i = 0; i < sizeof bad_returns / sizeof bad_returns[0]; i++)
        expect_rejected(&bad_returns[i], &tight);
}

/* A limit hit trips the script for good: the next call fails at once with
 * the same message instead of running again. */
static void limits_are_sticky(void)
{
    char err[512], err2[512];
    LossScript *ls =
        loss_load(fx_path("tests/data/hostile/loop_loss.lua"), NULL, &tight, err, sizeof err);
    CHECK(ls != NULL);
    if (!ls)
        return;
    TensorCtx *ctx = tensor_ctx_new(0);
    FxBatch fb;
    fx_batch(&fb, ctx, 4);
    CHECK(loss_eval(ls, ctx, &fb.b, err, sizeof err) == NULL);
    double t0 = fx_now();
    CHECK(loss_eval(ls, ctx, &fb.b, err2, sizeof err2) == NULL);
    CHECKF(fx_now() - t0 < 0.01, "the second call ran again (%.3f s)", fx_now() - t0);
    CHECKF(strcmp(err, err2) == 0, "second message \"%s\" differs from \"%s\"", err2, err);
    tensor_ctx_free(ctx);
    loss_free(ls);
}

/* collects the global names of a fresh sandbox, sorted, comma-separated */
static int list_globals(lua_State *L)
{
    char *out = lua_touserdata(L, 1);
    const char *names[128];
    int n = 0;
    lua_pushglobaltable(L);
    lua_pushnil(L);
    while (lua_next(L, -2) && n < 128) {
        lua_pop(L, 1);
        names[n++] = lua_tostring(L, -1);
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
            const char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    out[0] = '\0';
    for (int i = 0; i < n; i++)
        snprintf(out + strlen(out), 1024 - strlen(out), "%s%s", i ? "," : "", names[i]);
    return 0;
}

static int list_table(lua_State *L)
{
    char *out = lua_touserdata(L, 1);
    out[0] = '\0';
    lua_getglobal(L, (const char *)out + 512);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        lua_pop(L, 1);
        snprintf(out + strlen(out), 512 - strlen(out), "%s,", lua_tostring(L, -1));
    }
    return 0;
}

/* the environment is exactly the whitelist of sandbox.h */
static void environment_is_the_whitelist(void)
{
    char err[256], names[1024];
    Sandbox *sb = sandbox_new(NULL, err, sizeof err);
    CHECKF(sb != NULL, "%s", err);
    if (!sb)
        return;
    CHECK(sandbox_call(sb, NULL, list_globals, names, err, sizeof err) == 0);
    CHECKF(strcmp(names, "_G,_VERSION,assert,error,ipairs,math,next,pairs,select,table,"
                         "tonumber,tostring,type") == 0,
           "globals: %s", names);
    snprintf(names + 512, 64, "math");
    CHECK(sandbox_call(sb, NULL, list_table, names, err, sizeof err) == 0);
    CHECKF(!strstr(names, "random"), "math has random functions: %s", names);
    snprintf(names + 512, 64, "table");
    CHECK(sandbox_call(sb, NULL, list_table, names, err, sizeof err) == 0);
    CHECKF(strlen(names) == strlen("insert,remove,pack,unpack,") && strstr(names, "insert") &&
               strstr(names, "remove") && strstr(names, "pack") && strstr(names, "unpack"),
           "table: %s", names);
    sandbox_free(sb);
}

/* the state table persists across calls, only for declared keys, and only
 * when a call succeeds; p and b are fresh on every call */
static void state_is_bounded_and_kept(void)
{
    const char *path =
        fx_write("return { name = 'st', params = { beta = 0.1 }, state = { count = 0, m = 1 },\n"
                 "  loss = function(b, p, s)\n"
                 "    s.count = s.count + 1\n"
                 "    s.m = detach(mean(b.policy_chosen_logps))   -- a one-element tensor\n"
                 "    local r = -logsigmoid(p.beta * b.policy_chosen_logps)\n"
                 "    p.beta = 100; b.policy_chosen_logps = nil  -- must not reach the next call\n"
                 "    if s.count == 3 then s.bogus = 1 end      -- undeclared: an error\n"
                 "    return r\n"
                 "  end }\n");
    char err[512];
    LossScript *ls = loss_load(path, NULL, &tight, err, sizeof err);
    CHECKF(ls != NULL, "%s", err);
    TensorCtx *ctx = tensor_ctx_new(0);
    for (int call = 1; ls && call <= 3; call++) {
        tensor_ctx_reset(ctx);
        FxBatch fb;
        fx_batch(&fb, ctx, 4);
        Tensor *l = loss_eval(ls, ctx, &fb.b, err, sizeof err);
        if (call < 3) {
            CHECKF(l != NULL, "call %d: %s", call, err);
            CHECK_NEAR(l ? l->data[0] : NAN, log1p(exp(0.1 * 10)), 1e-6); /* beta stays 0.1 */
            CHECK_NEAR(loss_state_value(ls, 0), call, 0);                 /* count */
            CHECK_NEAR(loss_state_value(ls, 1), -11.5, 1e-6);             /* mean of pc */
        } else {
            CHECK(l == NULL);
            CHECKF(strstr(err, "state key 'bogus' is not declared"), "%s", err);
            CHECK_NEAR(loss_state_value(ls, 0), 2, 0); /* the failed call committed nothing */
        }
    }
    CHECK(ls && strcmp(loss_state_name(ls, 0), "count") == 0);
    tensor_ctx_free(ctx);
    loss_free(ls);
    unlink(path);
}

/* An unknown parameter is an error naming it and the known ones. */
static void unknown_param_is_named(void)
{
    char err[512];
    LossScript *ls = loss_load(fx_path("tests/data/loss/dpo.lua"), NULL, NULL, err, sizeof err);
    CHECK(ls != NULL);
    if (!ls)
        return;
    CHECK(loss_set_param(ls, "beta", 0.5, err, sizeof err) == 0);
    CHECK_NEAR(loss_param_value(ls, 0), 0.5, 0);
    CHECK(loss_set_param(ls, "bta", 0.5, err, sizeof err) != 0);
    CHECKF(strstr(err, "unknown parameter 'bta'") && strstr(err, "beta"), "%s", err);
    loss_free(ls);
}

int main(void)
{
    RUN(environment_is_the_whitelist);
    RUN(escapes_are_rejected);
    RUN(bombs_hit_their_limits);
    RUN(shape_only_bombs_hit_the_tensor_limit);
    RUN(wall_clock_covers_a_spin);
    RUN(odd_error_objects_become_messages);
    RUN(wrong_returns_are_named);
    RUN(limits_are_sticky);
    RUN(state_is_bounded_and_kept);
    RUN(unknown_param_is_named);
    return tl_done();
}
