/*
 * lua/sandbox.h — a Lua state for untrusted code: a whitelisted environment and
 * hard limits on memory, instructions, wall-clock time and call depth.
 *
 * Loss scripts may be written by an LLM in a discovery loop, so a script is
 * hostile until proven otherwise. A Sandbox owns one lua_State and runs every
 * piece of work in it (loading a chunk, calling the loss, reading results)
 * through sandbox_call, which arms the limits, runs a C function in protected
 * mode and turns any failure into one message:
 *
 *     Sandbox *sb = sandbox_new(NULL, err, sizeof err);        // defaults
 *     if (!sb || sandbox_call(sb, ctx, my_fn, &my_args, err, sizeof err) != 0)
 *         fprintf(stderr, "%s\n", err);   // "file.lua:12: ... (limit hit: ...)"
 *     sandbox_free(sb);                   // always safe, even after a failure
 *
 * The environment (everything else is absent, not just hidden):
 *   base:  assert error ipairs next pairs select tonumber tostring type _G _VERSION
 *          (error and assert are replaced by versions that only raise strings)
 *   math:  everything but random and randomseed (scripts must be deterministic)
 *   table: insert remove pack unpack
 * No io, os, require, package, debug, load, loadstring, dofile, loadfile,
 * string (the string library is never opened, so strings have no metatable and
 * ("x"):rep(n) fails), collectgarbage, setmetatable, getmetatable, rawget,
 * rawset, rawequal, rawlen, pcall, xpcall, coroutine, print, warn. Chunks are
 * text only. Without setmetatable no __gc or __close is reachable, so closing
 * the state runs no script code; without pcall a limit error cannot be caught.
 *
 * Limits (LossLimits in loss.h; a zero field takes the default):
 *   lua_bytes     64 MiB   Lua heap of the state (a custom lua_Alloc)
 *   tensor_bytes  256 MiB  tensor bytes one call may add to its TensorCtx
 *   instructions  50 M     VM instructions per call (a count hook)
 *   seconds       2.0      wall clock per call, C time included: checked by the
 *                          hooks and after every tensor operation
 *   max_depth     200      nested calls (Lua and C), via call/return hooks
 * A limit hit is sticky: the state is tripped, every later hook raises again,
 * and every later sandbox_call fails at once with the same message.
 */
#ifndef PREFRUN_SANDBOX_H
#define PREFRUN_SANDBOX_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/fsutil.h"
#include "lua/loss.h" /* LossLimits: the limits are part of the loss interface */
#include "core/tensor.h"

#define SANDBOX_DEFAULT_LUA_BYTES ((size_t)64 << 20)
#define SANDBOX_DEFAULT_TENSOR_BYTES ((size_t)256 << 20)
#define SANDBOX_DEFAULT_INSTRUCTIONS 50000000ull
#define SANDBOX_DEFAULT_SECONDS 2.0
#define SANDBOX_DEFAULT_MAX_DEPTH 200
#define SANDBOX_MAX_SOURCE_BYTES ((size_t)1 << 20) /* a loss file larger than this is refused */
/* ...checked while the file is read (fsutil_read_capped), never after */
#define SANDBOX_SOURCE_CAP                                                                         \
    (&(const FsReadCap){.bytes = SANDBOX_MAX_SOURCE_BYTES, .kind = "a loss script"})

typedef enum SandboxLimit {
    SANDBOX_LIMIT_NONE = 0,
    SANDBOX_LIMIT_LUA_BYTES,
    SANDBOX_LIMIT_TENSOR_BYTES,
    SANDBOX_LIMIT_INSTRUCTIONS,
    SANDBOX_LIMIT_SECONDS,
    SANDBOX_LIMIT_DEPTH,
} SandboxLimit;

typedef struct Sandbox Sandbox;

/* limits with every zero field replaced by its default (in may be NULL) */
LossLimits sandbox_limits_resolve(const LossLimits *in);

/* A fresh state with the whitelisted environment; NULL with err set. */
Sandbox *sandbox_new(const LossLimits *limits, char *err, size_t errlen);
void sandbox_free(Sandbox *sb);
lua_State *sandbox_lua(Sandbox *sb);
/* the Sandbox of a state made by sandbox_new (stored in its extra space) */
Sandbox *sandbox_of(lua_State *L);

/* Runs fn(ud) in protected mode with the limits armed: the instruction count,
 * depth and deadline start afresh; ctx (may be NULL) becomes the call's tensor
 * context with its byte cap lowered to what is in use plus tensor_bytes, and
 * is restored afterwards. fn receives ud as a light userdata at index 1 and
 * passes results back through it. Returns 0, or -1 with err set to
 * "FILE:LINE: what" (plus " (limit hit: ...)" for a limit); an error the call
 * left in ctx is cleared. */
int sandbox_call(Sandbox *sb, TensorCtx *ctx, lua_CFunction fn, void *ud, char *err, size_t errlen);

/* What the tensor binding asks of the sandbox during a call. */
TensorCtx *sandbox_ctx(const Sandbox *sb);  /* NULL outside sandbox_call */
uint32_t sandbox_serial(const Sandbox *sb); /* differs for every call */
void sandbox_poll(lua_State *L);            /* raises if tripped or past the deadline */
/* trips the sandbox and raises "FILE:LINE: what (limit hit: <limit>)" */
int sandbox_limit_error(lua_State *L, SandboxLimit limit, const char *what);

/* the tensor bytes one call may make (its limit) */
size_t sandbox_tensor_bytes(const Sandbox *sb);
/* the limit that tripped the sandbox, or SANDBOX_LIMIT_NONE */
SandboxLimit sandbox_tripped(const Sandbox *sb);
/* bytes of Lua heap in use now */
size_t sandbox_lua_bytes(const Sandbox *sb);

#endif
