/*
 * lua/lua_tensor.h — tensors in a sandboxed Lua state: the userdata handle, its
 * metamethods, and the loss DSL's global functions over the core ops.
 *
 * A handle is {Tensor*, TensorCtx*, generation, serial}. It is valid only
 * during the sandbox call that made it (same serial, same context, context
 * not reset since): any other use raises "tensor used after its step ended"
 * instead of following a pointer into a freed or reset arena. The handle
 * itself holds no resources (no __gc): the tensor belongs to the arena.
 *
 * Lua conventions: dims are 1-based (1 is the first dim, -1 the last);
 * numbers mix with tensors anywhere and become 0-D constants; a function
 * given only numbers returns a number. The full list is in
 * the README ("Writing a loss"); every function checks its arguments before it makes
 * anything, and errors name the function, the argument and the shapes.
 */
#ifndef PREFRUN_LUA_TENSOR_H
#define PREFRUN_LUA_TENSOR_H

#include <lua.h>

#include "lua/sandbox.h"
#include "core/tensor.h"

#define LT_TYPENAME "tensor"

/* Registers the tensor metatable and the DSL's global functions in the state
 * of sb. Call once, inside a sandbox_call. */
int lt_open(lua_State *L);

/* Pushes a handle for t, valid for the current sandbox call. */
void lt_push(lua_State *L, Tensor *t);
#define LT_STALE_MSG                                                                               \
    "tensor used after its step ended (a tensor lives for one loss call; keep numbers in the "     \
    "state table s)"

/* The tensor at idx when it is a handle valid now; raises when it is a stale
 * handle; NULL when the value is not a tensor handle at all. */
Tensor *lt_to(lua_State *L, int idx);
/* the same without raising: NULL, with *stale telling a stale handle apart */
Tensor *lt_get(lua_State *L, int idx, bool *stale);
/* true when the value at idx is a tensor handle (valid or stale) */
bool lt_is(lua_State *L, int idx);

#endif
