/*
 * lua/lua_tensor.c — the loss DSL: tensor handles and their metamethods, and the
 * global functions that map onto the core ops.
 *
 * This is the only layer that turns core errors into Lua errors. Every
 * function checks its arguments first (raising "bad argument #i to 'f' (...)"),
 * then makes its result in the call's context; a core failure is raised with
 * the core's message, which names the op and the shapes. A failure to get
 * tensor memory is a limit hit (the sandbox caps the context for the call).
 * Tensor memory lives in the arena, so an error raised after a tensor was
 * made leaks nothing: the arena is reset as a whole.
 *
 * Numbers: an argument may be a number wherever a tensor is accepted; it
 * becomes a 0-D constant. When every argument is a number the function
 * computes in double and returns a number (so `exp(0)` is 1, not a tensor).
 */
#include "lua/lua_tensor.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/ops.h"

typedef struct LtHandle {
    Tensor *t;
    TensorCtx *ctx;      /* the call's context when the handle was made */
    uint32_t generation; /* ctx->generation then */
    uint32_t serial;     /* the sandbox call that made it */
} LtHandle;

/* ---- handles ------------------------------------------------------------- */

static TensorCtx *lt_ctx(lua_State *L)
{
    TensorCtx *ctx = sandbox_ctx(sandbox_of(L));
    if (!ctx)
        luaL_error(L, "tensors exist only during a loss call (not at the top level of a file)");
    return ctx;
}

bool lt_is(lua_State *L, int idx) { return luaL_testudata(L, idx, LT_TYPENAME) != NULL; }

Tensor *lt_get(lua_State *L, int idx, bool *stale)
{
    LtHandle *h = luaL_testudata(L, idx, LT_TYPENAME);
    *stale = false;
    if (!h)
        return NULL;
    Sandbox *sb = sandbox_of(L);
    TensorCtx *ctx = sandbox_ctx(sb);
    /* compare the serial first: only then is h->ctx known to be alive */
    *stale = !ctx || h->serial != sandbox_serial(sb) || h->ctx != ctx ||
             h->generation != ctx->generation;
    return *stale ? NULL : h->t;
}

Tensor *lt_to(lua_State *L, int idx)
{
    bool stale;
    Tensor *t = lt_get(L, idx, &stale);
    if (stale)
        luaL_error(L, "%s", LT_STALE_MSG);
    return t;
}

void lt_push(lua_State *L, Tensor *t)
{
    Sandbox *sb = sandbox_of(L);
    TensorCtx *ctx = sandbox_ctx(sb);
    LtHandle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->t = t;
    h->ctx = ctx;
    h->generation = ctx ? ctx->generation : 0;
    h->serial = sandbox_serial(sb);
    luaL_setmetatable(L, LT_TYPENAME);
}

/* ---- argument checks and results -------------------------------------------- */

static const char *type_of(lua_State *L, int i)
{
    return lt_is(L, i) ? LT_TYPENAME : luaL_typename(L, i);
}

static int arg_error(lua_State *L, int i, const char *fname, const char *what)
{
    return luaL_error(L, "bad argument #%d to '%s' (%s)", i, fname, what);
}

static int type_error(lua_State *L, int i, const char *fname, const char *expected)
{
    char what[96];
    snprintf(what, sizeof what, "%s expected, got %s", expected, type_of(L, i));
    return arg_error(L, i, fname, what);
}

static bool is_num(lua_State *L, int i) { return lua_type(L, i) == LUA_TNUMBER; }

/* raises the core's error for fname; out of tensor memory is a limit hit */
static int core_error(lua_State *L, const char *fname)
{
    TensorCtx *ctx = lt_ctx(L);
    char msg[TENSOR_ERR_LEN + 64];
    const char *e = tensor_ctx_error(ctx);
    size_t n = strlen(fname);
    if (strncmp(e, fname, n) == 0 && e[n] == ':')
        snprintf(msg, sizeof msg, "%s", e);
    else
        snprintf(msg, sizeof msg, "%s: %s", fname, e);
    bool nomem = ctx->status == TENSOR_ERR_NOMEM;
    tensor_ctx_clear_error(ctx); /* the error now travels as a Lua error */
    if (nomem)
        return sandbox_limit_error(L, SANDBOX_LIMIT_TENSOR_BYTES, msg);
    return luaL_error(L, "%s", msg);
}

/* argument i as a tensor: a valid handle, or a number made a 0-D constant */
static Tensor *arg_tensor(lua_State *L, int i, const char *fname)
{
    Tensor *t = lt_to(L, i);
    if (t)
        return t;
    if (!is_num(L, i))
        type_error(L, i, fname, "tensor or number");
    t = tensor_scalar(lt_ctx(L), (float)lua_tonumber(L, i));
    if (!t)
        core_error(L, fname);
    return t;
}

/* argument i as a number, or dflt when absent or nil */
static double arg_number(lua_State *L, int i, const char *fname, double dflt)
{
    if (lua_isnoneornil(L, i))
        return dflt;
    if (!is_num(L, i))
        type_error(L, i, fname, "number");
    return lua_tonumber(L, i);
}

/* the dim argument i for t, 1-based or negative from the end, as a 0-based
 * dim; dflt (a 0-based dim or AG_ALL) when absent */
static int arg_dim(lua_State *L, int i, const char *fname, const Tensor *t, int dflt)
{
    char what[160], shape[64];
    if (lua_isnoneornil(L, i)) {
        if (dflt != AG_ALL && t->ndim == 0)
            return arg_error(L, i, fname, "a 0-D tensor has no dim to work along");
        return dflt;
    }
    int ok;
    lua_Integer d = lua_tointegerx(L, i, &ok);
    if (!is_num(L, i) || !ok)
        return type_error(L, i, fname, "integer dim");
    if (d == 0 || d > t->ndim || d < -t->ndim) {
        snprintf(what, sizeof what,
                 "dim %lld out of range for shape %s; dims are 1-based, negative from the end",
                 (long long)d, tensor_shape_str(t, shape, sizeof shape));
        return arg_error(L, i, fname, what);
    }
    return d > 0 ? (int)d - 1 : (int)d + t->ndim;
}

static bool arg_keepdim(lua_State *L, int i, const char *fname)
{
    if (lua_isnoneornil(L, i))
        return false;
    if (!lua_isboolean(L, i))
        type_error(L, i, fname, "boolean keepdim");
    return lua_toboolean(L, i);
}

/* Raises unless a tensor of numel elements fits the call's tensor memory.
 * Shape-only tensors allocate no data, so without this a script doubling a
 * shape-only tensor would grow its shape until the int dims overflow; with
 * it every live tensor has at most tensor_bytes / 4 elements, and products of
 * two such sizes stay far from int64 overflow. */
static void check_numel(lua_State *L, const char *fname, double numel)
{
    if (numel * sizeof(float) > (double)sandbox_tensor_bytes(sandbox_of(L))) {
        char what[96];
        snprintf(what, sizeof what, "%s: a tensor of %.0f elements", fname, numel);
        sandbox_limit_error(L, SANDBOX_LIMIT_TENSOR_BYTES, what);
    }
}

/* pushes the result of a core op, or raises its error */
static int push_result(lua_State *L, Tensor *t, const char *fname)
{
    if (!t)
        return core_error(L, fname);
    check_numel(L, fname, (double)t->size);
    sandbox_poll(L); /* the time spent inside the op counts */
    lt_push(L, t);
    return 1;
}

/* the element count of the broadcast of n tensors, in double (no overflow);
 * for shapes that do not broadcast any value will do: the op then says so */
static double bcast_numel(Tensor *const *src, int n)
{
    double numel = 1;
    for (int i = 1; i <= TENSOR_MAX_DIMS; i++) {
        int d = 1;
        for (int k = 0; k < n; k++)
            if (src[k]->ndim >= i && src[k]->shape[src[k]->ndim - i] != 1)
                d = src[k]->shape[src[k]->ndim - i];
        numel *= d;
    }
    return numel;
}

/* ---- elementwise: numbers in double, tensors through the core ---------------- */

static double d_sigmoid(double x)
{
    if (x >= 0)
        return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}
static double d_softplus(double x) { return fmax(x, 0.0) + log1p(exp(-fabs(x))); }
static double d_logsigmoid(double x) { return -d_softplus(-x); }
static double d_sign(double x) { return x > 0 ? 1.0 : x < 0 ? -1.0 : x; } /* keeps 0 and NaN */
static double d_relu(double x) { return x > 0 ? x : 0.0; }
static double d_gelu(double x)
{
    const double c = 0.7978845608028654; /* sqrt(2 / pi), the tanh approximation */
    return 0.5 * x * (1.0 + tanh(c * (x + 0.044715 * x * x * x)));
}
static double d_neg(double x) { return -x; }

typedef Tensor *(*UnaryOp)(TensorCtx *, Tensor *);

static int unary(lua_State *L, const char *fname, UnaryOp op, double (*num)(double))
{
    if (is_num(L, 1)) {
        lua_pushnumber(L, num(lua_tonumber(L, 1)));
        return 1;
    }
    Tensor *a = arg_tensor(L, 1, fname);
    return push_result(L, op(lt_ctx(L), a), fname);
}

#define UNARY(name, op, num)                                                                       \
    static int lt_##name(lua_State *L) { return unary(L, #name, op, num); }
UNARY(exp, ag_exp, exp)
UNARY(log, ag_log, log)
UNARY(log1p, ag_log1p, log1p)
UNARY(expm1, ag_expm1, expm1)
UNARY(sqrt, ag_sqrt, sqrt)
UNARY(abs, ag_abs, fabs)
UNARY(sign, ag_sign, d_sign)
UNARY(sigmoid, ag_sigmoid, d_sigmoid)
UNARY(logsigmoid, ag_logsigmoid, d_logsigmoid)
UNARY(softplus, ag_softplus, d_softplus)
UNARY(tanh, ag_tanh, tanh)
UNARY(relu, ag_relu, d_relu)
UNARY(gelu, ag_gelu, d_gelu)
UNARY(neg, ag_neg, d_neg)

typedef Tensor *(*BinaryOp)(TensorCtx *, Tensor *, Tensor *);

static int binary(lua_State *L, const char *fname, BinaryOp op, double (*num)(double, double))
{
    if (is_num(L, 1) && is_num(L, 2)) {
        lua_pushnumber(L, num(lua_tonumber(L, 1), lua_tonumber(L, 2)));
        return 1;
    }
    Tensor *a = arg_tensor(L, 1, fname);
    Tensor *b = arg_tensor(L, 2, fname);
    return push_result(L, op(lt_ctx(L), a, b), fname);
}

static double d_add(double a, double b) { return a + b; }
static double d_sub(double a, double b) { return a - b; }
static double d_mul(double a, double b) { return a * b; }
static double d_div(double a, double b) { return a / b; }
static double d_min(double a, double b) { return a <= b ? a : b; }
static double d_max(double a, double b) { return a >= b ? a : b; }

#define BINARY(name, fname, op, num)                                                               \
    static int lt_##name(lua_State *L) { return binary(L, fname, op, num); }
BINARY(add, "add", ag_add, d_add)
BINARY(sub, "sub", ag_sub, d_sub)
BINARY(mul, "mul", ag_mul, d_mul)
BINARY(div, "div", ag_div, d_div)
BINARY(minimum, "minimum", ag_minimum, d_min)
BINARY(maximum, "maximum", ag_maximum, d_max)

static int lt_unm(lua_State *L) { return lt_neg(L); }

/* pow(x, p) and x ^ p: p a number; a number base with a tensor exponent is
 * exp(p log(base)), defined for base > 0 */
static int lt_pow(lua_State *L)
{
    if (is_num(L, 1) && is_num(L, 2)) {
        lua_pushnumber(L, pow(lua_tonumber(L, 1), lua_tonumber(L, 2)));
        return 1;
    }
    if (is_num(L, 1)) {
        double base = lua_tonumber(L, 1);
        Tensor *p = arg_tensor(L, 2, "pow");
        if (!(base > 0))
            return arg_error(L, 1, "pow", "a number base with a tensor exponent must be > 0");
        TensorCtx *ctx = lt_ctx(L);
        Tensor *lb = tensor_scalar(ctx, (float)log(base));
        return push_result(L, ag_exp(ctx, ag_mul(ctx, p, lb)), "pow");
    }
    Tensor *a = arg_tensor(L, 1, "pow");
    if (!is_num(L, 2))
        return type_error(L, 2, "pow",
                          "number exponent (for a tensor exponent write exp(y * log(x)))");
    return push_result(L, ag_pow(lt_ctx(L), a, (float)lua_tonumber(L, 2)), "pow");
}

/* clamp(x, lo, hi): lo or hi may be nil for no bound */
static int lt_clamp(lua_State *L)
{
    double lo = arg_number(L, 2, "clamp", -HUGE_VAL), hi = arg_number(L, 3, "clamp", HUGE_VAL);
    if (!(lo <= hi))
        return arg_error(L, 3, "clamp", "need lo <= hi");
    if (is_num(L, 1)) {
        lua_pushnumber(L, fmin(fmax(lua_tonumber(L, 1), lo), hi));
        return 1;
    }
    Tensor *a = arg_tensor(L, 1, "clamp");
    return push_result(L, ag_clamp(lt_ctx(L), a, (float)lo, (float)hi), "clamp");
}

/* where(c, a, b): a where c ~= 0, else b; no gradient flows to c */
static int lt_where(lua_State *L)
{
    if (is_num(L, 1) && is_num(L, 2) && is_num(L, 3)) {
        lua_pushvalue(L, lua_tonumber(L, 1) != 0 ? 2 : 3);
        return 1;
    }
    Tensor *src[3] = {arg_tensor(L, 1, "where"), arg_tensor(L, 2, "where"),
                      arg_tensor(L, 3, "where")};
    check_numel(L, "where", bcast_numel(src, 3)); /* three sizes could overflow int64 */
    return push_result(L, ag_where(lt_ctx(L), src[0], src[1], src[2]), "where");
}

/* ---- comparisons: 0/1 leaves, no gradient ------------------------------------ */

typedef enum Cmp { CMP_GT, CMP_LT, CMP_GE, CMP_LE } Cmp;

static bool cmp_apply(Cmp op, double a, double b)
{
    switch (op) {
    case CMP_GT:
        return a > b;
    case CMP_LT:
        return a < b;
    case CMP_GE:
        return a >= b;
    default:
        return a <= b;
    }
}

/* strides of t seen through the broadcast shape (nd, shape) padded to 4 dims
 * on the left; 0 where t is stretched */
static void bcast_strides(const Tensor *t, int nd, int64_t *st)
{
    int64_t acc = 1;
    for (int i = TENSOR_MAX_DIMS - 1; i >= 0; i--) {
        int od = i - (TENSOR_MAX_DIMS - nd); /* dim of the output */
        int td = od - (nd - t->ndim);        /* dim of t */
        st[i] = (td < 0 || t->shape[td] == 1) ? 0 : acc;
        if (td >= 0)
            acc *= t->shape[td];
    }
}

static void cmp_fill(Cmp op, Tensor *out, const Tensor *a, const Tensor *b)
{
    int64_t n[TENSOR_MAX_DIMS], sa[TENSOR_MAX_DIMS], sb[TENSOR_MAX_DIMS];
    int pad = TENSOR_MAX_DIMS - out->ndim;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++)
        n[i] = i < pad ? 1 : out->shape[i - pad];
    bcast_strides(a, out->ndim, sa);
    bcast_strides(b, out->ndim, sb);
    int64_t k = 0;
    for (int64_t i0 = 0; i0 < n[0]; i0++)
        for (int64_t i1 = 0; i1 < n[1]; i1++)
            for (int64_t i2 = 0; i2 < n[2]; i2++)
                for (int64_t i3 = 0; i3 < n[3]; i3++, k++) {
                    float x = a->data[i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3]];
                    float y = b->data[i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3]];
                    out->data[k] = cmp_apply(op, x, y) ? 1.0f : 0.0f;
                }
}

static int compare(lua_State *L, const char *fname, Cmp op)
{
    if (is_num(L, 1) && is_num(L, 2)) {
        lua_pushnumber(L, cmp_apply(op, lua_tonumber(L, 1), lua_tonumber(L, 2)));
        return 1;
    }
    Tensor *a = arg_tensor(L, 1, fname), *b = arg_tensor(L, 2, fname);
    TensorCtx *ctx = lt_ctx(L);
    int nd, shape[TENSOR_MAX_DIMS];
    int rc = tensor_broadcast_shape(a->ndim, a->shape, b->ndim, b->shape, &nd, shape);
    if (rc != 0) {
        char sa[64], sb[64];
        return luaL_error(L, "%s: shapes %s and %s %s", fname, tensor_shape_str(a, sa, sizeof sa),
                          tensor_shape_str(b, sb, sizeof sb),
                          rc == -2 ? "broadcast to too many elements" : "do not broadcast");
    }
    if (!ctx->meta && (!a->data || !b->data))
        return luaL_error(L, "%s: an argument is shape-only and has no data", fname);
    Tensor *out = tensor_new(ctx, nd, shape);
    if (!out)
        return core_error(L, fname);
    if (!ctx->meta)
        cmp_fill(op, out, a, b);
    return push_result(L, out, fname);
}

static int lt_gt(lua_State *L) { return compare(L, "gt", CMP_GT); }
static int lt_lt(lua_State *L) { return compare(L, "lt", CMP_LT); }
static int lt_ge(lua_State *L) { return compare(L, "ge", CMP_GE); }
static int lt_le(lua_State *L) { return compare(L, "le", CMP_LE); }

/* ---- reductions ------------------------------------------------------------ */

/* population variance (divides by n, like numpy's default, not torch's) */
static Tensor *variance(TensorCtx *ctx, Tensor *x, int dim, bool keepdim)
{
    Tensor *d = ag_sub(ctx, x, ag_mean(ctx, x, dim, true));
    return ag_mean(ctx, ag_mul(ctx, d, d), dim, keepdim);
}

typedef enum Reduce { RED_SUM, RED_MEAN, RED_VAR, RED_STD } Reduce;

/* sum/mean/var/std(x [, dim [, keepdim]]): over every element without dim */
static int reduce(lua_State *L, const char *fname, Reduce kind)
{
    if (is_num(L, 1)) { /* one number: its own sum and mean, no spread */
        lua_pushnumber(L, kind <= RED_MEAN ? lua_tonumber(L, 1) : 0.0);
        return 1;
    }
    Tensor *x = arg_tensor(L, 1, fname);
    int dim = arg_dim(L, 2, fname, x, AG_ALL);
    bool keepdim = arg_keepdim(L, 3, fname);
    TensorCtx *ctx = lt_ctx(L);
    Tensor *out;
    switch (kind) {
    case RED_SUM:
        out = ag_sum(ctx, x, dim, keepdim);
        break;
    case RED_MEAN:
        out = ag_mean(ctx, x, dim, keepdim);
        break;
    case RED_VAR:
        out = variance(ctx, x, dim, keepdim);
        break;
    default:
        out = ag_sqrt(ctx, variance(ctx, x, dim, keepdim));
    }
    return push_result(L, out, fname);
}

static int lt_sum(lua_State *L) { return reduce(L, "sum", RED_SUM); }
static int lt_mean(lua_State *L) { return reduce(L, "mean", RED_MEAN); }
static int lt_var(lua_State *L) { return reduce(L, "var", RED_VAR); }
static int lt_std(lua_State *L) { return reduce(L, "std", RED_STD); }

/* logsumexp(x [, dim [, keepdim]]): dim defaults to the last */
static int lt_logsumexp(lua_State *L)
{
    if (is_num(L, 1)) {
        lua_pushvalue(L, 1);
        return 1;
    }
    Tensor *x = arg_tensor(L, 1, "logsumexp");
    int dim = arg_dim(L, 2, "logsumexp", x, x->ndim - 1);
    bool keepdim = arg_keepdim(L, 3, "logsumexp");
    return push_result(L, ag_logsumexp(lt_ctx(L), x, dim, keepdim), "logsumexp");
}

/* softmax(x [, dim]) and log_softmax(x [, dim]): dim defaults to the last */
static int lt_softmax_any(lua_State *L, const char *fname, bool log_form)
{
    if (is_num(L, 1)) {
        lua_pushnumber(L, log_form ? 0.0 : 1.0);
        return 1;
    }
    Tensor *x = arg_tensor(L, 1, fname);
    int dim = arg_dim(L, 2, fname, x, x->ndim - 1);
    TensorCtx *ctx = lt_ctx(L);
    return push_result(L, log_form ? ag_log_softmax(ctx, x, dim) : ag_softmax(ctx, x, dim), fname);
}

static int lt_softmax(lua_State *L) { return lt_softmax_any(L, "softmax", false); }
static int lt_log_softmax(lua_State *L) { return lt_softmax_any(L, "log_softmax", true); }

/* sort(x [, dim]): ascending along dim (default the last), NaN last; the
 * gradient follows each element back to its place */
static int lt_sort(lua_State *L)
{
    if (is_num(L, 1)) {
        lua_pushvalue(L, 1);
        return 1;
    }
    Tensor *x = arg_tensor(L, 1, "sort");
    int dim = arg_dim(L, 2, "sort", x, x->ndim - 1);
    return push_result(L, ag_sort(lt_ctx(L), x, dim), "sort");
}

/* ---- making and reshaping --------------------------------------------------- */

static int lt_detach(lua_State *L)
{
    if (is_num(L, 1)) {
        lua_pushvalue(L, 1);
        return 1;
    }
    Tensor *x = arg_tensor(L, 1, "detach");
    return push_result(L, ag_detach(lt_ctx(L), x), "detach");
}

static int full_like(lua_State *L, const char *fname, double value)
{
    if (is_num(L, 1)) {
        lua_pushnumber(L, value);
        return 1;
    }
    Tensor *x = arg_tensor(L, 1, fname);
    return push_result(L, tensor_full(lt_ctx(L), x->ndim, x->shape, (float)value), fname);
}

static int lt_zeros_like(lua_State *L) { return full_like(L, "zeros_like", 0.0); }
static int lt_ones_like(lua_State *L) { return full_like(L, "ones_like", 1.0); }
static int lt_full_like(lua_State *L)
{
    return full_like(L, "full_like", arg_number(L, 2, "full_like", 0.0));
}

/* cat(a, b [, dim]): a and b joined along dim (default 1) */
static int lt_cat(lua_State *L)
{
    Tensor *a = arg_tensor(L, 1, "cat"), *b = arg_tensor(L, 2, "cat");
    int dim = arg_dim(L, 3, "cat", a, 0);
    return push_result(L, ag_concat(lt_ctx(L), a, b, dim), "cat");
}

/* the shape of the nested array table at index 1, read along first entries */
static int table_shape(lua_State *L, int *ndim, int *shape)
{
    int top = lua_gettop(L);
    lua_pushvalue(L, 1);
    for (*ndim = 0;;) {
        lua_Unsigned n = lua_rawlen(L, -1);
        if (*ndim == TENSOR_MAX_DIMS)
            return arg_error(L, 1, "tensor", "tables nested deeper than 4 levels");
        if (n > INT32_MAX)
            return arg_error(L, 1, "tensor", "table too long");
        shape[(*ndim)++] = (int)n;
        if (n == 0 || lua_rawgeti(L, -1, 1) != LUA_TTABLE)
            break;
    }
    lua_settop(L, top);
    return 0;
}

/* raises unless the table at idx has exactly the shape (ndim, shape) from
 * depth on, with numbers at the bottom */
static void table_check(lua_State *L, int idx, int depth, int ndim, const int *shape)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    if (n != shape[depth])
        arg_error(L, 1, "tensor", "rows of different lengths (not rectangular)");
    for (lua_Integer i = 1; i <= n; i++) {
        int t = lua_rawgeti(L, idx, i);
        if (depth + 1 < ndim && t == LUA_TTABLE)
            table_check(L, lua_gettop(L), depth + 1, ndim, shape);
        else if (depth + 1 < ndim || t != LUA_TNUMBER)
            arg_error(L, 1, "tensor", "entries must be numbers, nested evenly");
        lua_pop(L, 1);
    }
    sandbox_poll(L);
}

static void table_fill(lua_State *L, int idx, float **out)
{
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, idx, i) == LUA_TTABLE)
            table_fill(L, lua_gettop(L), out);
        else
            *(*out)++ = (float)lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
}

/* tensor(v): a number gives a 0-D tensor, a nested array table an n-D one */
static int lt_tensor(lua_State *L)
{
    if (is_num(L, 1)) {
        TensorCtx *ctx = lt_ctx(L);
        return push_result(L, tensor_scalar(ctx, (float)lua_tonumber(L, 1)), "tensor");
    }
    if (!lua_istable(L, 1))
        return type_error(L, 1, "tensor", "number or array table");
    lua_settop(L, 1);
    int ndim = 0, shape[TENSOR_MAX_DIMS];
    table_shape(L, &ndim, shape);
    table_check(L, 1, 0, ndim, shape);
    TensorCtx *ctx = lt_ctx(L);
    Tensor *t = tensor_new(ctx, ndim, shape);
    if (!t)
        return core_error(L, "tensor");
    if (t->data) {
        float *p = t->data;
        table_fill(L, 1, &p);
    }
    return push_result(L, t, "tensor");
}

/* ---- methods ---------------------------------------------------------------- */

static Tensor *self_tensor(lua_State *L, const char *fname)
{
    Tensor *t = lt_to(L, 1);
    if (!t)
        type_error(L, 1, fname, LT_TYPENAME);
    return t;
}

static int lt_shape(lua_State *L)
{
    Tensor *t = self_tensor(L, "shape");
    lua_createtable(L, t->ndim, 0);
    for (int i = 0; i < t->ndim; i++) {
        lua_pushinteger(L, t->shape[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* x:size(d): the length of dim d; x:size() is x:shape() */
static int lt_size(lua_State *L)
{
    Tensor *t = self_tensor(L, "size");
    if (lua_isnoneornil(L, 2))
        return lt_shape(L);
    int d = arg_dim(L, 2, "size", t, 0);
    lua_pushinteger(L, t->shape[d]);
    return 1;
}

static int lt_numel(lua_State *L)
{
    lua_pushinteger(L, self_tensor(L, "numel")->size);
    return 1;
}

static int lt_dim(lua_State *L)
{
    lua_pushinteger(L, self_tensor(L, "dim")->ndim);
    return 1;
}

static const float *values_of(lua_State *L, const Tensor *t, const char *fname)
{
    if (!t->data)
        luaL_error(L,
                   "%s: a shape-only (meta) tensor has no values: the checker's shape pass "
                   "runs the loss without data",
                   fname);
    return t->data;
}

static int lt_item(lua_State *L)
{
    Tensor *t = self_tensor(L, "item");
    if (t->size != 1) {
        char s[64];
        return luaL_error(L, "item: tensor has shape %s; item() needs exactly one element",
                          tensor_shape_str(t, s, sizeof s));
    }
    lua_pushnumber(L, values_of(L, t, "item")[0]);
    return 1;
}

/* x:tolist(): numbers in nested tables of x's shape (a number for 0-D) */
static void push_list(lua_State *L, const Tensor *t, int depth, const float **p)
{
    if (depth == t->ndim) {
        lua_pushnumber(L, *(*p)++);
        return;
    }
    lua_createtable(L, t->shape[depth], 0);
    for (int i = 0; i < t->shape[depth]; i++) {
        push_list(L, t, depth + 1, p);
        lua_rawseti(L, -2, i + 1);
    }
}

static int lt_tolist(lua_State *L)
{
    Tensor *t = self_tensor(L, "tolist");
    const float *p = values_of(L, t, "tolist");
    push_list(L, t, 0, &p);
    return 1;
}

static int lt_len(lua_State *L)
{
    Tensor *t = self_tensor(L, "#");
    if (t->ndim == 0)
        return luaL_error(L, "#: a 0-D tensor has no length (use x:numel())");
    lua_pushinteger(L, t->shape[0]);
    return 1;
}

static int lt_tostring(lua_State *L)
{
    Tensor *t = self_tensor(L, "tostring");
    char s[64];
    luaL_Buffer buf;
    luaL_buffinit(L, &buf);
    lua_pushfstring(L, "tensor(shape %s", tensor_shape_str(t, s, sizeof s));
    luaL_addvalue(&buf);
    if (!t->data) {
        luaL_addstring(&buf, ", shape-only)");
    } else {
        luaL_addstring(&buf, ": ");
        for (int64_t i = 0; i < t->size && i < 8; i++) {
            snprintf(s, sizeof s, i ? ", %.6g" : "%.6g", (double)t->data[i]);
            luaL_addstring(&buf, s);
        }
        luaL_addstring(&buf, t->size > 8 ? ", ...)" : ")");
    }
    luaL_pushresult(&buf);
    return 1;
}

/* ---- registration ------------------------------------------------------------ */

/* functions that are both globals and methods (x:exp() is exp(x)) */
static const luaL_Reg dsl_funcs[] = {
    {"exp", lt_exp},
    {"log", lt_log},
    {"log1p", lt_log1p},
    {"expm1", lt_expm1},
    {"sqrt", lt_sqrt},
    {"abs", lt_abs},
    {"sign", lt_sign},
    {"sigmoid", lt_sigmoid},
    {"logsigmoid", lt_logsigmoid},
    {"softplus", lt_softplus},
    {"tanh", lt_tanh},
    {"relu", lt_relu},
    {"gelu", lt_gelu},
    {"clamp", lt_clamp},
    {"minimum", lt_minimum},
    {"maximum", lt_maximum},
    {"where", lt_where},
    {"pow", lt_pow},
    {"gt", lt_gt},
    {"lt", lt_lt},
    {"ge", lt_ge},
    {"le", lt_le},
    {"sum", lt_sum},
    {"mean", lt_mean},
    {"var", lt_var},
    {"std", lt_std},
    {"logsumexp", lt_logsumexp},
    {"softmax", lt_softmax},
    {"log_softmax", lt_log_softmax},
    {"sort", lt_sort},
    {"detach", lt_detach},
    {"zeros_like", lt_zeros_like},
    {"ones_like", lt_ones_like},
    {"full_like", lt_full_like},
    {"cat", lt_cat},
    {NULL, NULL},
};

static const luaL_Reg global_funcs[] = {
    {"tensor", lt_tensor},
    {NULL, NULL},
};

static const luaL_Reg method_funcs[] = {
    {"shape", lt_shape}, {"size", lt_size},     {"numel", lt_numel}, {"dim", lt_dim},
    {"item", lt_item},   {"tolist", lt_tolist}, {NULL, NULL},
};

static const luaL_Reg meta_funcs[] = {
    {"__add", lt_add}, {"__sub", lt_sub},           {"__mul", lt_mul},
    {"__div", lt_div}, {"__pow", lt_pow},           {"__unm", lt_unm},
    {"__len", lt_len}, {"__tostring", lt_tostring}, {NULL, NULL},
};

int lt_open(lua_State *L)
{
    luaL_newmetatable(L, LT_TYPENAME);
    luaL_setfuncs(L, meta_funcs, 0);
    lua_newtable(L); /* the methods, as __index */
    luaL_setfuncs(L, dsl_funcs, 0);
    luaL_setfuncs(L, method_funcs, 0);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable"); /* getmetatable is absent anyway */
    lua_pop(L, 1);
    lua_pushglobaltable(L);
    luaL_setfuncs(L, dsl_funcs, 0);
    luaL_setfuncs(L, global_funcs, 0);
    lua_pop(L, 1);
    return 0;
}
