/*
 * test_ops.c — the elementwise, reduction and shape ops of ops.c.
 *
 * Every op is gradient-checked (gradcheck.h) against a plain double-precision
 * reference written here, at random inputs and at extreme ones; then come the
 * cases a gradient check cannot see: exact values at the extremes, kinks,
 * NaN and inf, error messages, NULL propagation, views, and independence of
 * the thread count.
 *
 * Tolerances, |got - want| <= ATOL + RTOL |want|:
 *   RTOL 1e-5: an elementwise op rounds its float32 result a few times
 *     (6e-8 relative each), a reduction accumulates in double and rounds once;
 *     the finite-difference reference is exact to ~1e-9 here. 1e-5 leaves a
 *     margin of 20x or more over float rounding while any wrong derivative
 *     formula is off by far more.
 *   ATOL 1e-6: results that cancel to near zero in float (1 - tanh^2 in
 *     saturation, g - dot in the softmax backward, a denormal sigmoid(-100))
 *     carry an absolute error of a few 1e-8 times the values around them.
 * A case that needs a different tolerance says so beside it.
 */
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "gradcheck.h"
#include "core/ops.h"
#include "core/ops_internal.h"
#include "testlib.h"

#define RTOL 1e-5
#define ATOL 1e-6

/* ---- shapes and references ------------------------------------------------ */

typedef struct Shape {
    int ndim, d[TENSOR_MAX_DIMS];
} Shape;

#define S0 ((Shape){0, {0}})
#define S1(a) ((Shape){1, {a}})
#define S2(a, b) ((Shape){2, {a, b}})
#define S3(a, b, c) ((Shape){3, {a, b, c}})
#define S4(a, b, c, d) ((Shape){4, {a, b, c, d}})

static int64_t numel(Shape s) { return tensor_numel(s.ndim, s.d); }

static void unravel(int64_t i, Shape s, int *idx)
{
    for (int j = s.ndim - 1; j >= 0; j--) {
        idx[j] = (int)(i % s.d[j]);
        i /= s.d[j];
    }
}

static int64_t ravel(Shape s, const int *idx)
{
    int64_t i = 0;
    for (int j = 0; j < s.ndim; j++)
        i = i * s.d[j] + idx[j];
    return i;
}

static bool shape_is(const Tensor *t, Shape s)
{
    if (!t || t->ndim != s.ndim)
        return false;
    for (int j = 0; j < s.ndim; j++)
        if (t->shape[j] != s.d[j])
            return false;
    return true;
}

/* the op's output, or NULL (failing the case) when its shape is not want */
static Tensor *expect_shape(Tensor *t, Shape want)
{
    char got[64], exp[64];
    Tensor w = {.ndim = want.ndim};
    memcpy(w.shape, want.d, sizeof w.shape);
    CHECKF(!t || shape_is(t, want), "output shape %s, expected %s",
           t ? tensor_shape_str(t, got, sizeof got) : "-", tensor_shape_str(&w, exp, sizeof exp));
    return t && shape_is(t, want) ? t : NULL;
}

/* numpy broadcasting, written out again for the reference */
static Shape broadcast(const Shape *in, int n)
{
    Shape out = {0, {0}};
    for (int k = 0; k < n; k++)
        out.ndim = in[k].ndim > out.ndim ? in[k].ndim : out.ndim;
    for (int j = 0; j < out.ndim; j++) {
        out.d[j] = 1;
        for (int k = 0; k < n; k++) {
            int off = out.ndim - in[k].ndim;
            if (j >= off && in[k].d[j - off] != 1)
                out.d[j] = in[k].d[j - off];
        }
    }
    return out;
}

/* where output element idx reads operand s */
static int64_t broadcast_index(Shape s, Shape out, const int *idx)
{
    int64_t i = 0;
    for (int j = 0; j < s.ndim; j++) {
        int oj = j + out.ndim - s.ndim;
        i = i * s.d[j] + (s.d[j] == 1 ? 0 : idx[oj]);
    }
    return i;
}

/* runs gradcheck on inputs of the given shapes and values */
static void run_gc(const char *name, GcOp op, GcRef ref, const void *arg, int n_in,
                   const Shape *shapes, double *const *values, const bool *diff, double rtol,
                   double atol)
{
    GcSpec s = {.name = name, .op = op, .ref = ref, .arg = arg, .n_in = n_in};
    for (int k = 0; k < n_in; k++) {
        s.in[k].ndim = shapes[k].ndim;
        memcpy(s.in[k].shape, shapes[k].d, sizeof s.in[k].shape);
        s.in[k].values = values[k];
        s.in[k].differentiable = diff[k];
    }
    s.rtol = rtol;
    s.atol = atol;
    gradcheck(&s);
}

static double *random_values(Shape s, double lo, double hi, uint64_t seed)
{
    int64_t n = numel(s);
    double *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    gc_fill(v, n, lo, hi, seed);
    return v;
}

/* ---- unary ops -------------------------------------------------------------- */

typedef struct Unary {
    const char *name;
    Tensor *(*op)(TensorCtx *, Tensor *);
    double (*ref)(double);
    /* ops with scalar arguments (pow, clamp) use these instead */
    Tensor *(*op_p)(TensorCtx *, Tensor *, const float *p);
    double (*ref_p)(double, const float *p);
    float p[2];
    Shape shape; /* set by check_unary */
} Unary;

static Tensor *unary_gc_op(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const Unary *u = arg;
    Tensor *out = u->op ? u->op(ctx, in[0]) : u->op_p(ctx, in[0], u->p);
    return expect_shape(out, u->shape);
}

static void unary_gc_ref(const double *const *in, double *out, const void *arg)
{
    const Unary *u = arg;
    for (int64_t i = 0; i < numel(u->shape); i++)
        out[i] = u->op ? u->ref(in[0][i]) : u->ref_p(in[0][i], u->p);
}

static void check_unary_values(Unary u, Shape s, double *x, double rtol, double atol)
{
    char name[96];
    snprintf(name, sizeof name, "%s at %s", u.name, numel(s) == 1 ? "" : "random x");
    if (numel(s) == 1)
        snprintf(name + strlen(name), sizeof name - strlen(name), "%g", x[0]);
    u.shape = s;
    run_gc(name, unary_gc_op, unary_gc_ref, &u, 1, &s, &x, (bool[]){true}, rtol, atol);
}

/* Random inputs in [lo, hi) on a (2, 3, 5) tensor, then each extreme on its
 * own: the check's finite differences see one sum over all outputs, and an
 * output of 1e38 next to one of 1 would drown the small one's change in the
 * double rounding of the sum. */
static void check_unary(Unary u, double lo, double hi, const double *extreme, int n_extreme)
{
    Shape s = S3(2, 3, 5);
    double *x = random_values(s, lo, hi, 7);
    check_unary_values(u, s, x, RTOL, ATOL);
    free(x);
    for (int i = 0; i < n_extreme; i++) {
        double e = extreme[i];
        check_unary_values(u, S0, &e, RTOL, ATOL);
    }
}

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* both signs out to |x| = 100, avoiding the kink at 0 */
static const double PM100[] = {-100, -50, -20, -7.5, -1, -1e-3, 1e-3, 1, 7.5, 20, 50, 100};

static double r_neg(double x) { return -x; }
static double r_exp(double x) { return exp(x); }
static double r_log(double x) { return log(x); }
static double r_log1p(double x) { return log(1.0 + x); }
static double r_expm1(double x) { return exp(x) - 1.0; }
static double r_sqrt(double x) { return sqrt(x); }
static double r_abs(double x) { return x < 0 ? -x : x; }
static double r_sign(double x) { return x > 0 ? 1 : x < 0 ? -1 : 0; }
static double r_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
static double r_logsigmoid(double x) { return -log(1.0 + exp(-x)); }
static double r_softplus(double x) { return log(1.0 + exp(x)); }
static double r_tanh(double x) { return tanh(x); }
static double r_relu(double x) { return x > 0 ? x : 0; }
static double r_gelu(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}
static double r_pow(double x, const float *p) { return pow(x, p[0]); }
static double r_clamp(double x, const float *p) { return x < p[0] ? p[0] : x > p[1] ? p[1] : x; }
static Tensor *op_pow(TensorCtx *c, Tensor *a, const float *p) { return ag_pow(c, a, p[0]); }
static Tensor *op_clamp(TensorCtx *c, Tensor *a, const float *p)
{
    return ag_clamp(c, a, p[0], p[1]);
}

#define U(name, op, ref) ((Unary){name, op, ref, NULL, NULL, {0, 0}, S0})
#define UP(name, p0, p1, op, ref) ((Unary){name, NULL, NULL, op, ref, {p0, p1}, S0})

static void grad_neg_random_and_pm100(void)
{
    check_unary(U("neg", ag_neg, r_neg), -3, 3, PM100, COUNT(PM100));
}

static void grad_exp_random_and_extremes_where_finite(void)
{
    /* e^88 = 1.7e38 is the largest finite float value of the family near 88.7 */
    static const double x[] = {-100, -50, -20, -1e-3, 1e-3, 20, 50, 80, 88};
    check_unary(U("exp", ag_exp, r_exp), -5, 5, x, COUNT(x));
}

static void grad_expm1_random_and_extremes_where_finite(void)
{
    static const double x[] = {-100, -50, -20, -1e-4, 1e-4, 20, 50, 80, 88};
    check_unary(U("expm1", ag_expm1, r_expm1), -5, 5, x, COUNT(x));
}

static void grad_log_random_tiny_and_huge(void)
{
    /* The finite-difference step is 1e-6 for |x| < 1, so x = 1e-3 is the
     * tiniest input it resolves (relative truncation error h^2 / 3x^2 = 3e-7);
     * log at 1e-30 is checked against its closed form further down. */
    static const double x[] = {1e-3, 2e-3, 1e-2, 0.5, 1, 100, 1e6, 1e20};
    check_unary(U("log", ag_log, r_log), 0.1, 10, x, COUNT(x));
}

static void grad_log1p_random_near_minus_one_and_huge(void)
{
    static const double x[] = {-0.999, -0.99, -0.5, -1e-4, 1e-4, 1, 100, 1e6};
    check_unary(U("log1p", ag_log1p, r_log1p), -0.9, 5, x, COUNT(x));
}

static void grad_sqrt_random_tiny_and_huge(void)
{
    static const double x[] = {1e-3, 1e-2, 0.5, 100, 1e6, 1e20};
    check_unary(U("sqrt", ag_sqrt, r_sqrt), 0.1, 10, x, COUNT(x));
}

static void grad_abs_random_and_pm100(void)
{
    check_unary(U("abs", ag_abs, r_abs), -3, 3, PM100, COUNT(PM100));
}

static void grad_sign_is_zero_random_and_pm100(void)
{
    check_unary(U("sign", ag_sign, r_sign), -3, 3, PM100, COUNT(PM100));
}

static void grad_sigmoid_random_and_pm100(void)
{
    check_unary(U("sigmoid", ag_sigmoid, r_sigmoid), -8, 8, PM100, COUNT(PM100));
}

static void grad_logsigmoid_random_and_pm100(void)
{
    check_unary(U("logsigmoid", ag_logsigmoid, r_logsigmoid), -8, 8, PM100, COUNT(PM100));
}

static void grad_softplus_random_and_pm100(void)
{
    check_unary(U("softplus", ag_softplus, r_softplus), -8, 8, PM100, COUNT(PM100));
}

static void grad_tanh_random_and_pm100(void)
{
    check_unary(U("tanh", ag_tanh, r_tanh), -4, 4, PM100, COUNT(PM100));
}

static void grad_relu_random_and_pm100(void)
{
    check_unary(U("relu", ag_relu, r_relu), -3, 3, PM100, COUNT(PM100));
}

static void grad_gelu_random_and_pm100(void)
{
    check_unary(U("gelu", ag_gelu, r_gelu), -5, 5, PM100, COUNT(PM100));
}

static void grad_pow_integer_fractional_negative_and_zero_exponents(void)
{
    check_unary(UP("pow 2", 2, 0, op_pow, r_pow), -3, 3, PM100, COUNT(PM100));
    check_unary(UP("pow 3", 3, 0, op_pow, r_pow), -3, 3, PM100, COUNT(PM100));
    check_unary(UP("pow -1", -1, 0, op_pow, r_pow), 0.5, 3, PM100, COUNT(PM100));
    check_unary(UP("pow 1", 1, 0, op_pow, r_pow), -3, 3, PM100, COUNT(PM100));
    check_unary(UP("pow 0", 0, 0, op_pow, r_pow), -3, 3, PM100, COUNT(PM100));
    static const double pos[] = {1e-3, 0.5, 1, 100, 1e4};
    check_unary(UP("pow 0.5", 0.5f, 0, op_pow, r_pow), 0.1, 3, pos, COUNT(pos));
    check_unary(UP("pow -2.5", -2.5f, 0, op_pow, r_pow), 0.1, 3, pos, COUNT(pos));
    check_unary(UP("pow 1.5", 1.5f, 0, op_pow, r_pow), 0.1, 3, pos, COUNT(pos));
}

static void grad_clamp_inside_outside_and_infinite_bounds(void)
{
    /* the extremes, both sides of each bound but never on one (a kink) */
    static const double x[] = {-100, -50, -1.5, -1 - 1e-3, -1 + 1e-3, 0.5, 1 - 1e-3, 1 + 1e-3, 100};
    check_unary(UP("clamp [-1, 1]", -1, 1, op_clamp, r_clamp), -3, 3, x, COUNT(x));
    check_unary(UP("clamp [0.8, 1.2]", 0.8f, 1.2f, op_clamp, r_clamp), 0, 2, PM100, COUNT(PM100));
    check_unary(UP("clamp [-inf, 0.5]", -INFINITY, 0.5f, op_clamp, r_clamp), -3, 3, PM100,
                COUNT(PM100));
}

/* ---- broadcasting ops ------------------------------------------------------- */

typedef struct Ew {
    const char *name;
    Tensor *(*op2)(TensorCtx *, Tensor *, Tensor *);
    Tensor *(*op3)(TensorCtx *, Tensor *, Tensor *, Tensor *);
    double (*f)(const double *v); /* one output element from its operands' values */
    int n_in;
    Shape in[3], out;
} Ew;

static Tensor *ew_gc_op(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const Ew *e = arg;
    Tensor *out = e->n_in == 2 ? e->op2(ctx, in[0], in[1]) : e->op3(ctx, in[0], in[1], in[2]);
    return expect_shape(out, e->out);
}

static void ew_gc_ref(const double *const *in, double *out, const void *arg)
{
    const Ew *e = arg;
    for (int64_t i = 0; i < numel(e->out); i++) {
        int idx[TENSOR_MAX_DIMS];
        double v[3];
        unravel(i, e->out, idx);
        for (int k = 0; k < e->n_in; k++)
            v[k] = in[k][broadcast_index(e->in[k], e->out, idx)];
        out[i] = e->f(v);
    }
}

static double f_add(const double *v) { return v[0] + v[1]; }
static double f_sub(const double *v) { return v[0] - v[1]; }
static double f_mul(const double *v) { return v[0] * v[1]; }
static double f_div(const double *v) { return v[0] / v[1]; }
static double f_min(const double *v) { return v[0] <= v[1] ? v[0] : v[1]; }
static double f_max(const double *v) { return v[0] >= v[1] ? v[0] : v[1]; }
static double f_where(const double *v) { return v[0] != 0 ? v[1] : v[2]; }

/* the broadcasting cases every binary op is checked on */
static const Shape PAIRS[][2] = {
    {S1(5), S1(5)},                   /* (B) with (B) */
    {S2(3, 4), S2(3, 1)},             /* (B, T) with (B, 1) */
    {S2(3, 4), S2(1, 4)},             /* (B, T) with (1, T) */
    {S2(3, 1), S2(3, 4)},             /* the stretched side first */
    {S0, S2(3, 4)},                   /* a scalar with anything */
    {S2(3, 4), S0},                   /* and on the right */
    {S0, S3(2, 3, 4)},                /* 0-D with 3-D */
    {S1(1), S2(3, 4)},                /* a (1) stretches like a scalar */
    {S2(3, 1), S2(1, 4)},             /* both stretch */
    {S1(4), S3(2, 3, 4)},             /* lower rank, aligned on the right */
    {S3(2, 1, 4), S2(3, 1)},          /* (2, 1, 4) with (3, 1) -> (2, 3, 4) */
    {S4(2, 3, 4, 5), S4(2, 1, 4, 1)}, /* 4-D, alternating stretch */
    {S4(1, 3, 1, 5), S4(2, 1, 4, 1)}, /* size-1 dims on both sides */
};

/* b's values for div: |b| in [0.5, 2], both signs */
static double *divisor_values(Shape s, uint64_t seed)
{
    double *v = random_values(s, -1.5, 1.5, seed);
    for (int64_t i = 0; i < numel(s); i++)
        v[i] += v[i] < 0 ? -0.5 : 0.5;
    return v;
}

static void check_binary(const char *name, Tensor *(*op)(TensorCtx *, Tensor *, Tensor *),
                         double (*f)(const double *), double lo, double hi, bool divisor)
{
    for (int c = 0; c < COUNT(PAIRS); c++) {
        Ew e = {.op2 = op, .f = f, .n_in = 2, .in = {PAIRS[c][0], PAIRS[c][1]}};
        e.out = broadcast(e.in, 2);
        char label[128], sa[48], sb[48];
        Tensor ta = {.ndim = e.in[0].ndim}, tb = {.ndim = e.in[1].ndim};
        memcpy(ta.shape, e.in[0].d, sizeof ta.shape);
        memcpy(tb.shape, e.in[1].d, sizeof tb.shape);
        snprintf(label, sizeof label, "%s %s with %s", name, tensor_shape_str(&ta, sa, sizeof sa),
                 tensor_shape_str(&tb, sb, sizeof sb));
        e.name = label;
        double *v[2] = {random_values(e.in[0], lo, hi, 100 + (uint64_t)c),
                        divisor ? divisor_values(e.in[1], 200 + (uint64_t)c)
                                : random_values(e.in[1], lo, hi, 200 + (uint64_t)c)};
        run_gc(label, ew_gc_op, ew_gc_ref, &e, 2, e.in, v, (bool[]){true, true}, RTOL, ATOL);
        free(v[0]);
        free(v[1]);
    }
}

static void check_binary_values(const char *name, Tensor *(*op)(TensorCtx *, Tensor *, Tensor *),
                                double (*f)(const double *), double *a, double *b, int n)
{
    Ew e = {.name = name, .op2 = op, .f = f, .n_in = 2, .in = {S1(n), S1(n)}, .out = S1(n)};
    run_gc(name, ew_gc_op, ew_gc_ref, &e, 2, e.in, (double *[]){a, b}, (bool[]){true, true}, RTOL,
           ATOL);
}

/* pairs out to |x| = 100 on both sides */
static double BIG_A[] = {-100, -100, 100, 100, -50, 37.5, -1e-3, 1e-3};
static double BIG_B[] = {-100, 100, -99, 100, 0.75, -80, 100, -100};
/* the same without ties, where minimum and maximum have a kink */
static double MIN_A[] = {-100, 100, 50, -50, 99, -1e-3};
static double MIN_B[] = {100, -100, 49, -49.5, 100, 1e-3};

static void grad_add_broadcasts_and_pm100(void)
{
    check_binary("add", ag_add, f_add, -2, 2, false);
    check_binary_values("add at +-100", ag_add, f_add, BIG_A, BIG_B, COUNT(BIG_A));
}

static void grad_sub_broadcasts_and_pm100(void)
{
    check_binary("sub", ag_sub, f_sub, -2, 2, false);
    check_binary_values("sub at +-100", ag_sub, f_sub, BIG_A, BIG_B, COUNT(BIG_A));
}

static void grad_mul_broadcasts_and_pm100(void)
{
    check_binary("mul", ag_mul, f_mul, -2, 2, false);
    check_binary_values("mul at +-100", ag_mul, f_mul, BIG_A, BIG_B, COUNT(BIG_A));
}

static void grad_div_broadcasts_and_extremes(void)
{
    check_binary("div", ag_div, f_div, -2, 2, true);
    double a[] = {-100, 100, 1, -1, 1e-3, 100};
    double b[] = {1e-3, -1e-3, 100, -100, 7, 0.25};
    check_binary_values("div extremes", ag_div, f_div, a, b, COUNT(a));
}

static void grad_minimum_broadcasts_and_pm100(void)
{
    check_binary("minimum", ag_minimum, f_min, -2, 2, false);
    check_binary_values("minimum at +-100", ag_minimum, f_min, MIN_A, MIN_B, COUNT(MIN_A));
}

static void grad_maximum_broadcasts_and_pm100(void)
{
    check_binary("maximum", ag_maximum, f_max, -2, 2, false);
    check_binary_values("maximum at +-100", ag_maximum, f_max, MIN_A, MIN_B, COUNT(MIN_A));
}

static void grad_where_with_broadcasting_cond(void)
{
    static const Shape cases[][3] = {
        {S2(3, 4), S2(3, 4), S2(3, 4)}, /* all the same */
        {S2(3, 1), S2(3, 4), S0},       /* cond broadcasts over T, b a scalar */
        {S1(4), S2(3, 1), S2(1, 4)},    /* all three stretch */
        {S0, S2(2, 3), S2(2, 3)},       /* a scalar cond */
        {S3(2, 3, 1), S1(5), S2(3, 5)}, /* cond is the widest */
    };
    for (int c = 0; c < COUNT(cases); c++) {
        Ew e = {.name = "where", .op3 = ag_where, .f = f_where, .n_in = 3};
        memcpy(e.in, cases[c], sizeof e.in);
        e.out = broadcast(e.in, 3);
        double *v[3];
        v[0] = random_values(e.in[0], 0, 1, 300 + (uint64_t)c);
        for (int64_t i = 0; i < numel(e.in[0]); i++)
            v[0][i] = v[0][i] < 0.5 ? 0.0 : 1.0; /* a 0/1 mask; the op takes any nonzero */
        v[1] = random_values(e.in[1], -100, 100, 400 + (uint64_t)c);
        v[2] = random_values(e.in[2], -100, 100, 500 + (uint64_t)c);
        run_gc("where", ew_gc_op, ew_gc_ref, &e, 3, e.in, v, (bool[]){false, true, true}, RTOL,
               ATOL);
        for (int k = 0; k < 3; k++)
            free(v[k]);
    }
}

/* ---- reductions -------------------------------------------------------------- */

typedef struct Red {
    OpKind kind;
    int dim; /* as passed; AG_ALL allowed for sum and mean */
    bool keepdim;
    Shape in, out;
} Red;

static Tensor *red_gc_op(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const Red *r = arg;
    Tensor *out = NULL;
    switch (r->kind) {
    case OP_SUM:
        out = ag_sum(ctx, in[0], r->dim, r->keepdim);
        break;
    case OP_MEAN:
        out = ag_mean(ctx, in[0], r->dim, r->keepdim);
        break;
    case OP_LOGSUMEXP:
        out = ag_logsumexp(ctx, in[0], r->dim, r->keepdim);
        break;
    case OP_SOFTMAX:
        out = ag_softmax(ctx, in[0], r->dim);
        break;
    default:
        out = ag_log_softmax(ctx, in[0], r->dim);
    }
    return expect_shape(out, r->out);
}

/* the position among the reduced results of input element idx */
static int64_t red_key(const Red *r, const int *idx)
{
    int d = r->dim < 0 && r->dim != AG_ALL ? r->dim + r->in.ndim : r->dim;
    int64_t key = 0;
    for (int j = 0; j < r->in.ndim; j++)
        if (r->dim != AG_ALL && j != d)
            key = key * r->in.d[j] + idx[j];
    return key;
}

/* plain sums of x (or of e^x) over each reduced group, in double */
static void red_gc_ref(const double *const *in, double *out, const void *arg)
{
    const Red *r = arg;
    int64_t n = numel(r->in);
    double *acc = calloc((size_t)(n ? n : 1), sizeof *acc);
    double *count = calloc((size_t)(n ? n : 1), sizeof *count);
    bool expo = r->kind == OP_LOGSUMEXP || r->kind == OP_SOFTMAX || r->kind == OP_LOG_SOFTMAX;
    int idx[TENSOR_MAX_DIMS];
    for (int64_t i = 0; i < n; i++) {
        unravel(i, r->in, idx);
        acc[red_key(r, idx)] += expo ? exp(in[0][i]) : in[0][i];
        count[red_key(r, idx)] += 1;
    }
    if (r->kind == OP_SOFTMAX || r->kind == OP_LOG_SOFTMAX) {
        for (int64_t i = 0; i < n; i++) {
            unravel(i, r->in, idx);
            double s = acc[red_key(r, idx)];
            out[i] = r->kind == OP_SOFTMAX ? exp(in[0][i]) / s : in[0][i] - log(s);
        }
    } else {
        for (int64_t k = 0; k < numel(r->out); k++)
            out[k] = r->kind == OP_SUM    ? acc[k]
                     : r->kind == OP_MEAN ? acc[k] / count[k]
                                          : log(acc[k]);
    }
    free(acc);
    free(count);
}

static Shape reduced_shape(Shape in, int dim, bool keepdim)
{
    Shape out = {0, {0}};
    int d = dim < 0 && dim != AG_ALL ? dim + in.ndim : dim;
    for (int j = 0; j < in.ndim; j++)
        if (dim == AG_ALL || j == d) {
            if (keepdim)
                out.d[out.ndim++] = 1;
        } else {
            out.d[out.ndim++] = in.d[j];
        }
    return out;
}

static void check_reduction(OpKind kind, Shape in, int dim, bool keepdim, double lo, double hi,
                            double rtol, double atol)
{
    Red r = {kind, dim, keepdim, in, in};
    if (kind == OP_SUM || kind == OP_MEAN || kind == OP_LOGSUMEXP)
        r.out = reduced_shape(in, dim, keepdim);
    char name[96], d[16];
    snprintf(d, sizeof d, dim == AG_ALL ? "ALL" : "%d", dim);
    snprintf(name, sizeof name, "%s over dim %s%s of a %d-D", ag_op_name(kind), d,
             keepdim ? " keepdim" : "", in.ndim);
    double *x = random_values(in, lo, hi, 600 + (uint64_t)(dim & 7) + 8u * keepdim);
    run_gc(name, red_gc_op, red_gc_ref, &r, 1, &in, &x, (bool[]){true}, rtol, atol);
    free(x);
}

/* every dim of a (2, 3, 4), counted from both ends, with and without keepdim */
static void check_reduction_all_dims(OpKind kind, bool all, double lo, double hi)
{
    Shape s = S3(2, 3, 4);
    for (int keep = 0; keep < 2; keep++) {
        for (int dim = -3; dim < 3; dim++)
            check_reduction(kind, s, dim, keep, lo, hi, RTOL, ATOL);
        if (all)
            check_reduction(kind, s, AG_ALL, keep, lo, hi, RTOL, ATOL);
    }
}

static void grad_sum_each_dim_all_and_keepdim(void)
{
    check_reduction_all_dims(OP_SUM, true, -2, 2);
    check_reduction(OP_SUM, S0, AG_ALL, false, -2, 2, RTOL, ATOL);  /* a 0-D sums to itself */
    check_reduction(OP_SUM, S1(7), 0, true, -100, 100, RTOL, ATOL); /* large terms */
    check_reduction(OP_SUM, S4(2, 3, 2, 3), 2, false, -2, 2, RTOL, ATOL);
}

static void grad_mean_each_dim_all_and_keepdim(void)
{
    check_reduction_all_dims(OP_MEAN, true, -2, 2);
    check_reduction(OP_MEAN, S4(2, 3, 2, 3), 1, true, -100, 100, RTOL, ATOL);
}

static void grad_long_reductions_keep_full_precision(void)
{
    /* Accumulating in double, a sum of 4096 terms still rounds only once: the
     * same tight tolerance holds as for a handful of terms. */
    check_reduction(OP_SUM, S1(4096), AG_ALL, false, -1, 1, RTOL, ATOL);
    check_reduction(OP_MEAN, S2(8, 512), 1, false, -1, 1, RTOL, ATOL);
    check_reduction(OP_LOGSUMEXP, S2(2, 1024), 1, false, -10, 10, RTOL, ATOL);
}

static void grad_logsumexp_each_dim_keepdim_and_pm100(void)
{
    check_reduction_all_dims(OP_LOGSUMEXP, false, -3, 3);
    check_reduction(OP_LOGSUMEXP, S2(3, 5), 1, false, -100, 100, RTOL, ATOL);
    check_reduction(OP_LOGSUMEXP, S2(3, 5), 0, true, -100, 100, RTOL, ATOL);
}

static void grad_softmax_each_dim_and_pm100(void)
{
    check_reduction_all_dims(OP_SOFTMAX, false, -3, 3);
    check_reduction(OP_SOFTMAX, S2(3, 5), 1, false, -100, 100, RTOL, ATOL);
    check_reduction(OP_SOFTMAX, S3(2, 5, 3), 1, false, -100, 100, RTOL, ATOL);
}

static void grad_log_softmax_each_dim_and_pm100(void)
{
    check_reduction_all_dims(OP_LOG_SOFTMAX, false, -3, 3);
    check_reduction(OP_LOG_SOFTMAX, S2(3, 5), 1, false, -100, 100, RTOL, ATOL);
    check_reduction(OP_LOG_SOFTMAX, S3(2, 5, 3), 1, false, -100, 100, RTOL, ATOL);
}

/* ---- shape ops -------------------------------------------------------------- */

typedef struct Sh {
    OpKind kind;
    int nd, shape[TENSOR_MAX_DIMS]; /* reshape's target, -1 allowed */
    int dim, d1, start, len;        /* transpose: dim, d1; slice: dim, start, len; concat: dim */
    Shape in[2], out;
} Sh;

static Tensor *sh_gc_op(TensorCtx *ctx, Tensor **in, const void *arg)
{
    const Sh *s = arg;
    Tensor *out = NULL;
    switch (s->kind) {
    case OP_RESHAPE:
        out = ag_reshape(ctx, in[0], s->nd, s->shape);
        break;
    case OP_TRANSPOSE:
        out = ag_transpose(ctx, in[0], s->dim, s->d1);
        break;
    case OP_SLICE:
        out = ag_slice(ctx, in[0], s->dim, s->start, s->len);
        break;
    case OP_SORT:
        out = ag_sort(ctx, in[0], s->dim);
        break;
    default:
        out = ag_concat(ctx, in[0], in[1], s->dim);
    }
    return expect_shape(out, s->out);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* the idx[d]-th smallest value of x along dim d through idx (selection sort
 * of a copy: plainly correct, independent of the op's qsort_r with indices) */
static double sorted_rank(const double *x, Shape in, const int *idx, int d)
{
    double row[64];
    int at[TENSOR_MAX_DIMS];
    memcpy(at, idx, sizeof at);
    for (int j = 0; j < in.d[d]; j++) {
        at[d] = j;
        row[j] = x[ravel(in, at)];
    }
    qsort(row, (size_t)in.d[d], sizeof row[0], cmp_double);
    return row[idx[d]];
}

static void sh_gc_ref(const double *const *in, double *out, const void *arg)
{
    const Sh *s = arg;
    int nd = s->in[0].ndim, d = s->dim < 0 ? s->dim + nd : s->dim;
    int d1 = s->d1 < 0 ? s->d1 + nd : s->d1;
    for (int64_t i = 0; i < numel(s->out); i++) {
        int idx[TENSOR_MAX_DIMS], tmp;
        unravel(i, s->out, idx);
        switch (s->kind) {
        case OP_RESHAPE:
            out[i] = in[0][i];
            break;
        case OP_TRANSPOSE:
            tmp = idx[d], idx[d] = idx[d1], idx[d1] = tmp;
            out[i] = in[0][ravel(s->in[0], idx)];
            break;
        case OP_SLICE:
            idx[d] += s->start;
            out[i] = in[0][ravel(s->in[0], idx)];
            break;
        case OP_SORT:
            out[i] = sorted_rank(in[0], s->in[0], idx, d);
            break;
        default:
            if (idx[d] < s->in[0].d[d]) {
                out[i] = in[0][ravel(s->in[0], idx)];
            } else {
                idx[d] -= s->in[0].d[d];
                out[i] = in[1][ravel(s->in[1], idx)];
            }
        }
    }
}

static void check_shape_op(const char *name, Sh s)
{
    int n_in = s.kind == OP_CONCAT ? 2 : 1;
    double *v[2] = {random_values(s.in[0], -3, 3, 700), random_values(s.in[1], -3, 3, 701)};
    run_gc(name, sh_gc_op, sh_gc_ref, &s, n_in, s.in, v, (bool[]){true, true}, RTOL, ATOL);
    free(v[0]);
    free(v[1]);
}

static void grad_reshape_with_and_without_minus_one(void)
{
    check_shape_op(
        "reshape (2,3,4) to (4,-1)",
        (Sh){.kind = OP_RESHAPE, .nd = 2, .shape = {4, -1}, .in = {S3(2, 3, 4)}, .out = S2(4, 6)});
    check_shape_op(
        "reshape (6,4) to (24)",
        (Sh){.kind = OP_RESHAPE, .nd = 1, .shape = {24}, .in = {S2(6, 4)}, .out = S1(24)});
    check_shape_op("reshape (1) to 0-D",
                   (Sh){.kind = OP_RESHAPE, .nd = 0, .in = {S1(1)}, .out = S0});
    check_shape_op("reshape (24) to (-1,2,3,2)", (Sh){.kind = OP_RESHAPE,
                                                      .nd = 4,
                                                      .shape = {-1, 2, 3, 2},
                                                      .in = {S1(24)},
                                                      .out = S4(2, 2, 3, 2)});
}

static void grad_transpose_every_pair(void)
{
    Shape in = S3(2, 3, 4);
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            Sh s = {.kind = OP_TRANSPOSE, .dim = a, .d1 = b - 3, .in = {in}, .out = in};
            s.out.d[a] = in.d[b];
            s.out.d[b] = in.d[a];
            check_shape_op("transpose (2,3,4)", s);
        }
    check_shape_op("transpose 4-D dims 1 and 3", (Sh){.kind = OP_TRANSPOSE,
                                                      .dim = 1,
                                                      .d1 = 3,
                                                      .in = {S4(2, 3, 4, 5)},
                                                      .out = S4(2, 5, 4, 3)});
}

static void grad_slice_each_dim(void)
{
    check_shape_op("slice dim 0", (Sh){.kind = OP_SLICE,
                                       .dim = 0,
                                       .start = 1,
                                       .len = 1,
                                       .in = {S3(2, 3, 4)},
                                       .out = S3(1, 3, 4)});
    check_shape_op("slice dim 1", (Sh){.kind = OP_SLICE,
                                       .dim = 1,
                                       .start = 1,
                                       .len = 2,
                                       .in = {S3(2, 3, 4)},
                                       .out = S3(2, 2, 4)});
    check_shape_op("slice dim -1", (Sh){.kind = OP_SLICE,
                                        .dim = -1,
                                        .start = 3,
                                        .len = 1,
                                        .in = {S3(2, 3, 4)},
                                        .out = S3(2, 3, 1)});
    check_shape_op("slice whole dim 2", (Sh){.kind = OP_SLICE,
                                             .dim = 2,
                                             .start = 0,
                                             .len = 4,
                                             .in = {S3(2, 3, 4)},
                                             .out = S3(2, 3, 4)});
}

static void grad_concat_each_dim(void)
{
    check_shape_op("concat dim 0",
                   (Sh){.kind = OP_CONCAT, .dim = 0, .in = {S2(1, 3), S2(2, 3)}, .out = S2(3, 3)});
    check_shape_op(
        "concat dim 1",
        (Sh){.kind = OP_CONCAT, .dim = 1, .in = {S3(2, 3, 4), S3(2, 2, 4)}, .out = S3(2, 5, 4)});
    check_shape_op("concat dim -1",
                   (Sh){.kind = OP_CONCAT, .dim = -1, .in = {S2(2, 3), S2(2, 5)}, .out = S2(2, 8)});
}

static void grad_sort_each_dim(void)
{
    check_shape_op("sort dim -1 of (2,3,4)",
                   (Sh){.kind = OP_SORT, .dim = -1, .in = {S3(2, 3, 4)}, .out = S3(2, 3, 4)});
    check_shape_op("sort dim 1 of (2,3,4)",
                   (Sh){.kind = OP_SORT, .dim = 1, .in = {S3(2, 3, 4)}, .out = S3(2, 3, 4)});
    check_shape_op("sort a batch (7)",
                   (Sh){.kind = OP_SORT, .dim = 0, .in = {S1(7)}, .out = S1(7)});
}

static void sort_is_stable_with_nan_last(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    float v[6] = {3, NAN, -1, 3, -INFINITY, 0};
    Tensor *x = tensor_from_data(ctx, 1, (int[]){6}, v);
    tensor_requires_grad(x);
    Tensor *y = ag_sort(ctx, x, 0);
    CHECK(y != NULL);
    float want[5] = {-INFINITY, -1, 0, 3, 3};
    for (int i = 0; y && i < 5; i++)
        CHECKF(y->data[i] == want[i], "sorted[%d] = %g, expected %g", i, y->data[i], want[i]);
    CHECK(y && isnan(y->data[5]));
    /* seed 1..6 on the sorted positions: each lands on its source element;
     * the two 3s keep their order, so x[0] gets position 4's seed, x[3] position 5's */
    float seed[6] = {1, 2, 3, 4, 5, 6};
    CHECK(y && ag_backward(ctx, y, seed) == 0);
    float want_grad[6] = {4, 6, 2, 5, 1, 3};
    for (int i = 0; i < 6; i++)
        CHECKF(x->grad[i] == want_grad[i], "grad[%d] = %g, expected %g", i, x->grad[i],
               want_grad[i]);
    tensor_ctx_free(ctx);
}

/* ---- a whole loss --------------------------------------------------------- */

/* DPO: mean(-logsigmoid(beta ((pc - pr) - ref_margin))) over the batch */
#define DPO_B 6
#define DPO_BETA 0.1f

static Tensor *dpo_gc_op(TensorCtx *ctx, Tensor **in, const void *arg)
{
    (void)arg;
    Tensor *margin = ag_sub(ctx, ag_sub(ctx, in[0], in[1]), in[2]);
    Tensor *z = ag_mul(ctx, tensor_scalar(ctx, DPO_BETA), margin);
    return ag_mean(ctx, ag_neg(ctx, ag_logsigmoid(ctx, z)), AG_ALL, false);
}

static void dpo_gc_ref(const double *const *in, double *out, const void *arg)
{
    (void)arg;
    double s = 0;
    for (int i = 0; i < DPO_B; i++)
        s += log(1.0 + exp(-(double)DPO_BETA * ((in[0][i] - in[1][i]) - in[2][i])));
    out[0] = s / DPO_B;
}

static void grad_dpo_loss_end_to_end_ordinary_and_saturated(void)
{
    Shape s[3] = {S1(DPO_B), S1(DPO_B), S1(DPO_B)};
    double *v[3] = {random_values(s[0], -80, -20, 800), random_values(s[0], -80, -20, 801),
                    random_values(s[0], -5, 5, 802)};
    run_gc("dpo loss", dpo_gc_op, dpo_gc_ref, NULL, 3, s, v, (bool[]){true, true, true}, RTOL,
           ATOL);
    /* margins of +-1000 logits: beta * margin = +-100, logsigmoid saturated */
    for (int i = 0; i < DPO_B; i++)
        v[0][i] = i % 2 ? -1000 : 1000, v[1][i] = 0, v[2][i] = 0;
    run_gc("dpo loss saturated", dpo_gc_op, dpo_gc_ref, NULL, 3, s, v, (bool[]){true, true, true},
           RTOL, ATOL);
    for (int k = 0; k < 3; k++)
        free(v[k]);
}

/* ---- exact values at the extremes -------------------------------------- */

static TensorCtx *tc;

static float apply1(Tensor *(*op)(TensorCtx *, Tensor *), float x)
{
    Tensor *y = op(tc, tensor_scalar(tc, x));
    return y ? y->data[0] : NAN;
}

/* d op / dx at x, by backward */
static float grad1(Tensor *(*op)(TensorCtx *, Tensor *), float x)
{
    Tensor *t = tensor_scalar(tc, x);
    tensor_requires_grad(t);
    Tensor *y = op(tc, t);
    return y && ag_backward(tc, y, NULL) == 0 ? t->grad[0] : NAN;
}

static void logsigmoid_of_minus_100_is_minus_100_exactly(void)
{
    CHECK(apply1(ag_logsigmoid, -100.0f) == -100.0f);
    CHECK(grad1(ag_logsigmoid, -100.0f) == 1.0f);
    /* log(sigmoid(100)) = -e^-100 = -3.7e-44, a float denormal */
    CHECK_NEAR(apply1(ag_logsigmoid, 100.0f), -3.720076e-44, 1e-45);
    CHECK(apply1(ag_logsigmoid, -INFINITY) == -INFINITY);
}

static void softplus_of_100_is_100_exactly(void)
{
    CHECK(apply1(ag_softplus, 100.0f) == 100.0f);
    CHECK(grad1(ag_softplus, 100.0f) == 1.0f);
    CHECK_NEAR(apply1(ag_softplus, -100.0f), 3.720076e-44, 1e-45);
    CHECK(apply1(ag_softplus, INFINITY) == INFINITY);
}

static void sigmoid_is_stable_for_both_signs(void)
{
    CHECK(apply1(ag_sigmoid, 100.0f) == 1.0f);
    float lo = apply1(ag_sigmoid, -100.0f);
    CHECK(lo > 0 && isfinite(lo));
    CHECK_NEAR(lo, 3.720076e-44, 1e-45);
    CHECK(apply1(ag_sigmoid, -1000.0f) == 0.0f); /* not NaN from inf / inf */
    CHECK(apply1(ag_sigmoid, 1000.0f) == 1.0f);
    CHECK(grad1(ag_sigmoid, 1000.0f) == 0.0f);
}

static void exp_overflow_is_plus_inf(void)
{
    float y = apply1(ag_exp, 100.0f);
    CHECK(isinf(y) && y > 0);
    CHECK(isinf(apply1(ag_expm1, 100.0f)));
    CHECK(apply1(ag_exp, -INFINITY) == 0.0f);
    CHECK(apply1(ag_exp, 88.0f) == expf(88.0f) && isfinite(expf(88.0f)));
}

static void log_at_tiny_positive_values(void)
{
    CHECK_NEAR(apply1(ag_log, 1e-30f), log((double)1e-30f), 1e-5);
    CHECK_NEAR(grad1(ag_log, 1e-30f), 1.0 / (double)1e-30f, 1e24); /* relative 1e-6 */
    CHECK_NEAR(apply1(ag_log, 1e-45f), log((double)1e-45f), 1e-4); /* a denormal */
    CHECK(apply1(ag_log, 0.0f) == -INFINITY);
    CHECK(isnan(apply1(ag_log, -1.0f)));
    CHECK_NEAR(apply1(ag_log1p, 1e-10f), 1e-10, 1e-17); /* no 1 + x rounding */
    CHECK_NEAR(apply1(ag_expm1, 1e-10f), 1e-10, 1e-17);
}

static void gelu_saturates_to_zero_and_identity(void)
{
    CHECK(apply1(ag_gelu, -100.0f) == 0.0f);
    CHECK(apply1(ag_gelu, 100.0f) == 100.0f);
    CHECK(grad1(ag_gelu, 100.0f) == 1.0f);
    CHECK(grad1(ag_gelu, -100.0f) == 0.0f);
    /* GPT-2's constant: gelu(1) = 0.5 (1 + tanh(sqrt(2/pi) 1.044715)) = 0.8411920 */
    CHECK_NEAR(apply1(ag_gelu, 1.0f), 0.841191990, 1e-6);
}

/* ops.c runs GELU through clones of its loops for wider vector ISAs (AVX2,
 * AVX-512F), picked by the CPU at load time: every one must give the bits of
 * gelu_f and gelu_grad called one float at a time here (baseline build). The
 * inputs step through every exponent of both signs with a prime stride of
 * mantissas, plus the specials; the length is not a multiple of any vector
 * width, and large enough to be split over threads. */
static void gelu_vector_clones_match_the_scalar_path(void)
{
    TensorCtx *ctx = tensor_ctx_new(0);
    const int n = 1 << 20 | 13;
    float *v = malloc((size_t)n * sizeof *v), *seed = malloc((size_t)n * sizeof *seed);
    CHECK(v && seed);
    if (!v || !seed) {
        free(v);
        free(seed);
        tensor_ctx_free(ctx);
        return;
    }
    const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, 1e-45f, -1e-45f};
    int ns = (int)(sizeof special / sizeof special[0]);
    for (int i = 0; i < n; i++) {
        uint32_t u = (uint32_t)i * 4093u; /* odd: covers the bit patterns evenly */
        v[i] = i < ns ? special[i] : u2f(u);
        seed[i] = 1.0f + (float)(i % 7) * 0.25f;
    }
    Tensor *x = tensor_from_data(ctx, 1, (int[]){n}, v);
    tensor_requires_grad(x);
    Tensor *y = ag_gelu(ctx, x);
    CHECK(y && ag_backward(ctx, y, seed) == 0);
    int bad_y = 0, bad_g = 0;
    for (int i = 0; y && i < n; i++) {
        float want = gelu_f(v[i]), want_g = seed[i] * gelu_grad(v[i]);
        bool same = f2u(y->data[i]) == f2u(want) || (isnan(y->data[i]) && isnan(want));
        bool same_g = f2u(x->grad[i]) == f2u(0.0f + want_g) || (isnan(x->grad[i]) && isnan(want_g));
        if (!same && bad_y++ < 3)
            CHECKF(0, "gelu(%a) = %a, scalar %a", v[i], y->data[i], want);
        if (!same_g && bad_g++ < 3)
            CHECKF(0, "gelu'(%a) = %a, scalar %a", v[i], x->grad[i], want_g);
    }
    CHECK(bad_y == 0 && bad_g == 0);
    free(v);
    free(seed);
    tensor_ctx_free(ctx);
}

static void logsumexp_softmax_log_softmax_use_the_max_trick(void)
{
    int s2[1] = {2};
    Tensor *x = tensor_from_data(tc, 1, s2, (float[]){1000.0f, 0.0f});
    Tensor *lse = ag_logsumexp(tc, x, 0, false), *sm = ag_softmax(tc, x, 0);
    Tensor *ls = ag_log_softmax(tc, x, 0);
    CHECK(lse && lse->data[0] == 1000.0f);
    CHECK(sm && sm->data[0] == 1.0f && sm->data[1] == 0.0f);
    CHECK(ls && ls->data[0] == 0.0f && ls->data[1] == -1000.0f);
    Tensor *same = tensor_from_data(tc, 1, s2, (float[]){100.0f, 100.0f});
    Tensor *l2 = ag_logsumexp(tc, same, -1, false);
    CHECK(l2 && l2->data[0] == (float)(100.0 + log(2.0)));
    Tensor *ninf = tensor_full(tc, 1, s2, -INFINITY);
    Tensor *l3 = ag_logsumexp(tc, ninf, 0, false);
    CHECK(l3 && l3->data[0] == -INFINITY); /* log 0, not NaN from -inf - -inf */
}

/* ---- kinks: the documented choice of subgradient -------------------------- */

static float clamp01(float x)
{
    Tensor *t = tensor_scalar(tc, x);
    tensor_requires_grad(t);
    Tensor *y = ag_clamp(tc, t, 0.0f, 1.0f);
    return y && ag_backward(tc, y, NULL) == 0 ? t->grad[0] : NAN;
}

static void gradients_at_kinks_are_the_documented_ones(void)
{
    CHECK(grad1(ag_abs, 0.0f) == 0.0f);
    CHECK(grad1(ag_abs, -0.0f) == 0.0f);
    CHECK(grad1(ag_relu, 0.0f) == 0.0f);
    CHECK(grad1(ag_sign, 0.0f) == 0.0f);
    CHECK(grad1(ag_sign, 3.0f) == 0.0f);
    CHECK(isinf(grad1(ag_sqrt, 0.0f)));
    /* clamp passes gradient strictly inside [lo, hi], none at the bounds */
    CHECK(clamp01(0.5f) == 1.0f);
    CHECK(clamp01(0.0f) == 0.0f);
    CHECK(clamp01(1.0f) == 0.0f);
    CHECK(clamp01(-2.0f) == 0.0f);
    CHECK(clamp01(2.0f) == 0.0f);
    /* pow with exponent 0 is constant, even at 0 where x^-1 is inf */
    Tensor *z = tensor_scalar(tc, 0.0f);
    tensor_requires_grad(z);
    Tensor *p = ag_pow(tc, z, 0.0f);
    CHECK(p && p->data[0] == 1.0f && ag_backward(tc, p, NULL) == 0 && z->grad[0] == 0.0f);
}

static void minimum_and_maximum_ties_send_gradient_to_a(void)
{
    for (int m = 0; m < 2; m++) {
        Tensor *a = tensor_scalar(tc, 2.0f), *b = tensor_scalar(tc, 2.0f);
        tensor_requires_grad(a);
        tensor_requires_grad(b);
        Tensor *y = m ? ag_maximum(tc, a, b) : ag_minimum(tc, a, b);
        CHECK(y && ag_backward(tc, y, NULL) == 0);
        CHECK(a->grad[0] == 1.0f && b->grad[0] == 0.0f);
    }
}

/* ---- NaN stays visible ------------------------------------------------------ */

static void nan_propagates_through_every_kind_of_op(void)
{
    Tensor *n = tensor_scalar(tc, NAN), *one = tensor_scalar(tc, 1.0f);
    CHECK(isnan(ag_minimum(tc, n, one)->data[0]));
    CHECK(isnan(ag_minimum(tc, one, n)->data[0]));
    CHECK(isnan(ag_maximum(tc, n, one)->data[0]));
    CHECK(isnan(ag_maximum(tc, one, n)->data[0]));
    CHECK(isnan(ag_relu(tc, n)->data[0]));
    CHECK(isnan(ag_clamp(tc, n, 0, 1)->data[0]));
    CHECK(isnan(ag_sign(tc, n)->data[0]));
    CHECK(isnan(ag_logsigmoid(tc, n)->data[0]));
    CHECK(isnan(ag_softplus(tc, n)->data[0]));
    CHECK(isnan(ag_sigmoid(tc, n)->data[0]));
    int s3[1] = {3};
    Tensor *v = tensor_from_data(tc, 1, s3, (float[]){1.0f, NAN, INFINITY});
    CHECK(isnan(ag_sum(tc, v, AG_ALL, false)->data[0]));
    CHECK(isnan(ag_logsumexp(tc, v, 0, false)->data[0]));
    CHECK(isnan(ag_softmax(tc, v, 0)->data[0]));
}

/* ---- errors ---------------------------------------------------------------- */

static Tensor *vec(int n) { return tensor_full(tc, 1, (int[]){n}, 1.0f); }

static Tensor *mat(int r, int c) { return tensor_full(tc, 2, (int[]){r, c}, 1.0f); }

/* the op returned NULL and recorded exactly this message with this status */
#define CHECK_ERROR(expr, status_, msg)                                                            \
    do {                                                                                           \
        tensor_ctx_clear_error(tc);                                                                \
        Tensor *r_ = (expr);                                                                       \
        CHECKF(r_ == NULL, "%s succeeded", #expr);                                                 \
        CHECKF(tc->status == (status_), "%s: status %d", #expr, (int)tc->status);                  \
        CHECKF(strcmp(tensor_ctx_error(tc), msg) == 0, "%s: message \"%s\", expected \"%s\"",      \
               #expr, tensor_ctx_error(tc), msg);                                                  \
    } while (0)

static void shape_errors_name_the_op_and_both_shapes(void)
{
    CHECK_ERROR(ag_add(tc, vec(4), vec(8)), TENSOR_ERR_SHAPE,
                "add: shapes (4) and (8) do not broadcast");
    CHECK_ERROR(ag_sub(tc, mat(2, 3), mat(3, 2)), TENSOR_ERR_SHAPE,
                "sub: shapes (2, 3) and (3, 2) do not broadcast");
    CHECK_ERROR(ag_mul(tc, mat(2, 3), vec(2)), TENSOR_ERR_SHAPE,
                "mul: shapes (2, 3) and (2) do not broadcast");
    CHECK_ERROR(ag_div(tc, vec(3), vec(0)), TENSOR_ERR_SHAPE,
                "div: shapes (3) and (0) do not broadcast");
    CHECK_ERROR(ag_maximum(tc, vec(3), vec(2)), TENSOR_ERR_SHAPE,
                "maximum: shapes (3) and (2) do not broadcast");
    CHECK_ERROR(ag_where(tc, vec(3), mat(2, 3), vec(2)), TENSOR_ERR_SHAPE,
                "where: shapes (3) (cond), (2, 3) (a) and (2) (b) do not broadcast");
    CHECK_ERROR(ag_concat(tc, mat(2, 3), mat(3, 2), 0), TENSOR_ERR_SHAPE,
                "concat: shapes (2, 3) and (3, 2) differ outside dim 0");
    CHECK_ERROR(ag_concat(tc, mat(2, 3), vec(3), 0), TENSOR_ERR_SHAPE,
                "concat: shapes (2, 3) and (3) differ outside dim 0");
    CHECK_ERROR(ag_reshape(tc, mat(2, 3), 2, (int[]){4, -1}), TENSOR_ERR_SHAPE,
                "reshape: cannot view (2, 3) (6 elements) as (4, -1)");
    CHECK_ERROR(ag_reshape(tc, mat(2, 3), 2, (int[]){-1, -1}), TENSOR_ERR_SHAPE,
                "reshape: cannot view (2, 3) (6 elements) as (-1, -1)");
    CHECK_ERROR(ag_reshape(tc, mat(2, 3), 2, (int[]){7, 1}), TENSOR_ERR_SHAPE,
                "reshape: cannot view (2, 3) (6 elements) as (7, 1)");
}

/* the op on meta tensors (shapes only, as the loss checker runs them: no
 * data, so no byte cap) returns NULL with exactly this shape error */
#define CHECK_META_ERROR(m, expr, msg)                                                             \
    do {                                                                                           \
        tensor_ctx_clear_error(m);                                                                 \
        Tensor *r_ = (expr);                                                                       \
        CHECKF(r_ == NULL, "%s succeeded", #expr);                                                 \
        CHECKF((m)->status == TENSOR_ERR_SHAPE, "%s: status %d", #expr, (int)(m)->status);         \
        CHECKF(strcmp(tensor_ctx_error(m), msg) == 0, "%s: message \"%s\", expected \"%s\"",       \
               #expr, tensor_ctx_error(m), msg);                                                   \
    } while (0)

/* Shape arithmetic that would overflow int (a dim) or int64 (an element
 * count) is a shape error naming the op and the shapes; before, concat's dim
 * and reshape's product wrapped (UB, which the asan build's UBSan reports). */
static void shapes_that_overflow_are_errors_not_wraparound(void)
{
    TensorCtx *m = tensor_ctx_new(0);
    m->meta = true;
    Tensor *big = tensor_new(m, 1, (int[]){INT_MAX}), *half = tensor_new(m, 1, (int[]){1 << 30});
    Tensor *p = tensor_new(m, 4, (int[]){1 << 20, 1, 1 << 20, 1}); /* 2^40 elements each */
    Tensor *q = tensor_new(m, 4, (int[]){1, 1 << 20, 1, 1 << 20});
    CHECKF(big && half && p && q, "%s", tensor_ctx_error(m));
    if (!big || !half || !p || !q) {
        tensor_ctx_free(m);
        return;
    }
    /* concat: 2^31 - 1 + 2^30 is past INT_MAX; 2^30 + (2^30 - 1) = INT_MAX fits */
    CHECK_META_ERROR(m, ag_concat(m, big, half, 0),
                     "concat: shapes (2147483647) and (1073741824) along dim 0 give a dim of "
                     "3221225471, more than 2147483647");
    CHECK_META_ERROR(m, ag_concat(m, big, big, -1),
                     "concat: shapes (2147483647) and (2147483647) along dim 0 give a dim of "
                     "4294967294, more than 2147483647");
    tensor_ctx_clear_error(m);
    Tensor *c = ag_concat(m, half, tensor_new(m, 1, (int[]){(1 << 30) - 1}), 0);
    CHECKF(c && c->shape[0] == INT_MAX, "%s", tensor_ctx_error(m));
    /* broadcasting: two tensors of 2^40 elements whose result would hold 2^80 */
    CHECK_META_ERROR(m, ag_mul(m, p, q),
                     "mul: shapes (1048576, 1, 1048576, 1), (1, 1048576, 1, 1048576) broadcast to "
                     "(1048576, 1048576, 1048576, 1048576), more than the 1099511627776 elements a "
                     "tensor may hold");
    CHECK_META_ERROR(m, ag_where(m, p, q, tensor_new(m, 1, (int[]){1})),
                     "where: shapes (1048576, 1, 1048576, 1), (1, 1048576, 1, 1048576), (1) "
                     "broadcast to (1048576, 1048576, 1048576, 1048576), more than the "
                     "1099511627776 elements a tensor may hold");
    CHECK_META_ERROR(m, ag_where(m, p, q, big), /* a mismatch is named before the size */
                     "where: shapes (1048576, 1, 1048576, 1) (cond), (1, 1048576, 1, 1048576) "
                     "(a) and (2147483647) (b) do not broadcast");
    /* reshape: the asked dims multiply past int64 ((2^31 - 1)^4 ~ 2^124) */
    CHECK_META_ERROR(m, ag_reshape(m, big, 4, (int[]){INT_MAX, INT_MAX, INT_MAX, INT_MAX}),
                     "reshape: cannot view (2147483647) (2147483647 elements) as (2147483647, "
                     "2147483647, 2147483647, 2147483647)");
    CHECK_META_ERROR(m, ag_reshape(m, big, 4, (int[]){-1, INT_MAX, INT_MAX, INT_MAX}),
                     "reshape: cannot view (2147483647) (2147483647 elements) as (-1, "
                     "2147483647, 2147483647, 2147483647)");
    CHECK_META_ERROR(m,
                     ag_reshape(m, tensor_new(m, 1, (int[]){0}), 3, (int[]){0, INT_MAX, INT_MAX}),
                     "reshape: cannot view (0) (0 elements) as (0, 2147483647, 2147483647)");
    /* the largest tensors still go through the ops that keep or shrink them */
    tensor_ctx_clear_error(m);
    Tensor *r = ag_reshape(m, p, 2, (int[]){1 << 20, -1});
    Tensor *s = ag_sum(m, ag_transpose(m, r, 0, 1), 1, false);
    Tensor *t = ag_sort(m, ag_slice(m, ag_softmax(m, p, 2), 2, 1, 5), 2);
    CHECKF(r && r->shape[1] == 1 << 20 && s && s->size == 1 << 20 && t && t->shape[2] == 5 &&
               t->iparam[0] == 2,
           "%s", tensor_ctx_error(m));
    tensor_ctx_free(m);
}

static void argument_errors_name_the_op_and_the_argument(void)
{
    CHECK_ERROR(ag_sum(tc, mat(2, 3), 2, false), TENSOR_ERR_ARG,
                "sum: dim 2 out of range for shape (2, 3)");
    CHECK_ERROR(ag_softmax(tc, mat(2, 3), -3), TENSOR_ERR_ARG,
                "softmax: dim -3 out of range for shape (2, 3)");
    CHECK_ERROR(ag_logsumexp(tc, mat(2, 3), AG_ALL, false), TENSOR_ERR_ARG,
                "logsumexp: needs one dim; AG_ALL is for sum and mean");
    CHECK_ERROR(ag_transpose(tc, mat(2, 3), 0, 2), TENSOR_ERR_ARG,
                "transpose: dim 2 out of range for shape (2, 3)");
    CHECK_ERROR(ag_slice(tc, mat(2, 3), 1, 2, 2), TENSOR_ERR_ARG,
                "slice: start 2, length 2 out of range for dim 1 of (2, 3)");
    CHECK_ERROR(ag_slice(tc, mat(2, 3), 0, -1, 1), TENSOR_ERR_ARG,
                "slice: start -1, length 1 out of range for dim 0 of (2, 3)");
    CHECK_ERROR(ag_clamp(tc, vec(2), 1.0f, -1.0f), TENSOR_ERR_ARG,
                "clamp: bounds lo 1 and hi -1, need lo <= hi");
    CHECK_ERROR(ag_pow(tc, vec(2), NAN), TENSOR_ERR_ARG, "pow: exponent is NaN");
}

static void null_propagates_and_keeps_the_first_error(void)
{
    tensor_ctx_clear_error(tc);
    Tensor *bad = ag_add(tc, vec(4), vec(8));
    Tensor *y = ag_exp(tc, ag_mul(tc, bad, vec(4)));
    y = ag_sum(tc, ag_where(tc, y, vec(4), vec(4)), AG_ALL, false);
    y = ag_concat(tc, ag_reshape(tc, ag_slice(tc, y, 0, 0, 1), 1, (int[]){1}), vec(1), 0);
    CHECK(bad == NULL && y == NULL);
    CHECK(strcmp(tensor_ctx_error(tc), "add: shapes (4) and (8) do not broadcast") == 0);
    /* a later failure does not overwrite it, and a later success does not clear it */
    CHECK(ag_sub(tc, vec(2), vec(3)) == NULL);
    CHECK(ag_neg(tc, vec(2)) != NULL);
    CHECK(strcmp(tensor_ctx_error(tc), "add: shapes (4) and (8) do not broadcast") == 0);
    CHECK(ag_backward(tc, NULL, NULL) != 0);
    tensor_ctx_clear_error(tc);
}

/* ---- where, views, detach ------------------------------------------------ */

static void where_with_a_broadcasting_cond_picks_per_element(void)
{
    Tensor *cond = tensor_from_data(tc, 2, (int[]){2, 1}, (float[]){1.0f, 0.0f}); /* (2, 1) */
    Tensor *a = tensor_from_data(tc, 2, (int[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
    Tensor *b = tensor_scalar(tc, -1.0f);
    tensor_requires_grad(a);
    tensor_requires_grad(b);
    tensor_requires_grad(cond);
    Tensor *y = ag_where(tc, cond, a, b);
    CHECK(y && shape_is(y, S2(2, 3)));
    float want[6] = {1, 2, 3, -1, -1, -1};
    for (int i = 0; y && i < 6; i++)
        CHECK(y->data[i] == want[i]);
    CHECK(y && ag_backward(tc, ag_sum(tc, y, AG_ALL, false), NULL) == 0);
    float ga[6] = {1, 1, 1, 0, 0, 0};
    for (int i = 0; i < 6; i++)
        CHECK(a->grad[i] == ga[i]);
    CHECK(b->grad[0] == 3.0f);
    CHECK(cond->grad[0] == 0.0f && cond->grad[1] == 0.0f); /* no gradient to cond */
}

static void reshape_is_a_view_and_detach_stops_gradient(void)
{
    Tensor *x = tensor_from_data(tc, 2, (int[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
    tensor_requires_grad(x);
    Tensor *r = ag_reshape(tc, x, 1, (int[]){-1});
    CHECK(r && r->data == x->data && shape_is(r, S1(6)));
    Tensor *d = ag_detach(tc, x);
    CHECK(d && d->data == x->data && d->op == OP_NONE && !(d->flags & TENSOR_REQUIRES_GRAD));
    CHECK(d && !d->src[0] && shape_is(d, S2(2, 3)));
    /* y = sum(x * detach(x)): dy/dx = detach(x), not 2x */
    Tensor *y = ag_sum(tc, ag_mul(tc, x, d), AG_ALL, false);
    CHECK(y && ag_backward(tc, y, NULL) == 0);
    for (int i = 0; i < 6; i++)
        CHECK(x->grad[i] == x->data[i]);
}

static void empty_tensors_reduce_to_identities(void)
{
    Tensor *e = tensor_new(tc, 2, (int[]){0, 3});
    Tensor *s = ag_sum(tc, e, 0, false), *m = ag_mean(tc, e, AG_ALL, false);
    CHECK(s && shape_is(s, S1(3)) && s->data[0] == 0.0f);
    CHECK(m && isnan(m->data[0])); /* mean of nothing, as numpy */
    Tensor *l = ag_logsumexp(tc, e, 0, false);
    CHECK(l && l->data[2] == -INFINITY);
    CHECK(ag_add(tc, e, vec(3)) != NULL);
    CHECK(ag_add(tc, e, vec(1)) != NULL);
}

static void sum_accumulates_in_double(void)
{
    /* 1e6 copies of 0.1f: a float accumulator drifts by about 1%; in double
     * the sum is 1e6 * 0.1f = 100000.0015 before its one rounding */
    int n = 1000000;
    Tensor *x = tensor_full(tc, 1, &n, 0.1f);
    Tensor *s = ag_sum(tc, x, 0, false), *m = ag_mean(tc, x, AG_ALL, false);
    CHECK(s && s->data[0] == (float)(1e6 * (double)0.1f));
    CHECK(m && m->data[0] == 0.1f);
}

/* ---- large tensors: broadcast runs, chunks and threads ------------------- */

static void large_broadcasts_match_plain_loops(void)
{
    /* (3, 20000) with (1, 20000): runs longer than one chunk; (20000, 3) with (3):
     * many short runs; both above the threading threshold */
    const Shape as[2] = {S2(3, 20000), S2(20000, 3)}, bs[2] = {S2(1, 20000), S1(3)};
    for (int c = 0; c < 2; c++) {
        double *va = random_values(as[c], -2, 2, 900), *vb = random_values(bs[c], 0.5, 2, 901);
        int64_t na = numel(as[c]), nb = numel(bs[c]);
        Tensor *a = tensor_new(tc, as[c].ndim, as[c].d), *b = tensor_new(tc, bs[c].ndim, bs[c].d);
        for (int64_t i = 0; i < na; i++)
            a->data[i] = (float)va[i];
        for (int64_t i = 0; i < nb; i++)
            b->data[i] = (float)vb[i];
        tensor_requires_grad(a);
        tensor_requires_grad(b);
        Tensor *y = ag_div(tc, a, b);
        CHECK(y && ag_backward(tc, ag_sum(tc, y, AG_ALL, false), NULL) == 0);
        double *gb = calloc((size_t)nb, sizeof *gb), *gabs = calloc((size_t)nb, sizeof *gabs);
        int bad = 0;
        for (int64_t i = 0; y && i < na && !bad; i++) {
            int64_t j = c == 0 ? i % 20000 : i % 3;
            float want = a->data[i] / b->data[j];
            gb[j] += -(double)a->data[i] / ((double)b->data[j] * b->data[j]);
            gabs[j] += fabs((double)a->data[i] / ((double)b->data[j] * b->data[j]));
            bad = y->data[i] != want || a->grad[i] != 1.0f / b->data[j];
        }
        CHECKF(!bad, "case %d: forward or d/da differs from a plain loop", c);
        /* each term rounds twice in float (1.2e-7 relative), the sum once more */
        for (int64_t j = 0; j < nb; j++)
            CHECK_NEAR(b->grad[j], gb[j], 1e-6 * gabs[j]);
        free(gb);
        free(gabs);
        free(va);
        free(vb);
    }
}

/* a fixed graph over large tensors; its outputs and gradients as one buffer */
static float *run_graph_with_threads(int threads, int64_t *n_out)
{
    omp_set_num_threads(threads);
    TensorCtx *c = tensor_ctx_new(0);
    double *v = random_values(S2(64, 1024), -3, 3, 1000);
    Tensor *x = tensor_new(c, 2, (int[]){64, 1024}), *b = tensor_new(c, 1, (int[]){1024});
    for (int i = 0; i < 64 * 1024; i++)
        x->data[i] = (float)v[i];
    for (int i = 0; i < 1024; i++)
        b->data[i] = (float)v[i] * 0.5f;
    tensor_requires_grad(x);
    tensor_requires_grad(b);
    Tensor *h = ag_gelu(c, ag_mul(c, x, b));               /* (64, 1024) */
    Tensor *p = ag_log_softmax(c, ag_add(c, h, b), -1);    /* (64, 1024) */
    Tensor *q = ag_softmax(c, ag_tanh(c, x), 0);           /* (64, 1024) */
    Tensor *l = ag_logsumexp(c, ag_mul(c, p, q), 0, true); /* (1, 1024) */
    Tensor *y = ag_mean(c, ag_sub(c, ag_sum(c, p, 1, true), l), AG_ALL, false);
    int64_t n = 3 * 64 * 1024 + 1;
    float *out = malloc((size_t)n * sizeof *out);
    if (y && ag_backward(c, y, NULL) == 0) {
        memcpy(out, p->data, 64 * 1024 * sizeof *out);
        memcpy(out + 64 * 1024, x->grad, 64 * 1024 * sizeof *out);
        memcpy(out + 2 * 64 * 1024, q->data, 64 * 1024 * sizeof *out);
        out[n - 1] = y->data[0] + b->grad[7];
    } else {
        out[0] = NAN;
    }
    tensor_ctx_free(c);
    free(v);
    *n_out = n;
    return out;
}

static void results_do_not_depend_on_the_thread_count(void)
{
    int64_t n;
    float *one = run_graph_with_threads(1, &n), *four = run_graph_with_threads(4, &n);
    CHECK(!isnan(one[0]));
    CHECK(memcmp(one, four, (size_t)n * sizeof *one) == 0);
    free(one);
    free(four);
    omp_set_num_threads(2);
}

int main(void)
{
    tc = tensor_ctx_new(0);
    RUN(grad_neg_random_and_pm100);
    RUN(grad_exp_random_and_extremes_where_finite);
    RUN(grad_expm1_random_and_extremes_where_finite);
    RUN(grad_log_random_tiny_and_huge);
    RUN(grad_log1p_random_near_minus_one_and_huge);
    RUN(grad_sqrt_random_tiny_and_huge);
    RUN(grad_abs_random_and_pm100);
    RUN(grad_sign_is_zero_random_and_pm100);
    RUN(grad_sigmoid_random_and_pm100);
    RUN(grad_logsigmoid_random_and_pm100);
    RUN(grad_softplus_random_and_pm100);
    RUN(grad_tanh_random_and_pm100);
    RUN(grad_relu_random_and_pm100);
    RUN(grad_gelu_random_and_pm100);
    RUN(grad_pow_integer_fractional_negative_and_zero_exponents);
    RUN(grad_clamp_inside_outside_and_infinite_bounds);
    RUN(grad_add_broadcasts_and_pm100);
    RUN(grad_sub_broadcasts_and_pm100);
    RUN(grad_mul_broadcasts_and_pm100);
    RUN(grad_div_broadcasts_and_extremes);
    RUN(grad_minimum_broadcasts_and_pm100);
    RUN(grad_maximum_broadcasts_and_pm100);
    RUN(grad_where_with_broadcasting_cond);
    RUN(grad_sum_each_dim_all_and_keepdim);
    RUN(grad_mean_each_dim_all_and_keepdim);
    RUN(grad_long_reductions_keep_full_precision);
    RUN(grad_logsumexp_each_dim_keepdim_and_pm100);
    RUN(grad_softmax_each_dim_and_pm100);
    RUN(grad_log_softmax_each_dim_and_pm100);
    RUN(grad_reshape_with_and_without_minus_one);
    RUN(grad_transpose_every_pair);
    RUN(grad_slice_each_dim);
    RUN(grad_concat_each_dim);
    RUN(grad_sort_each_dim);
    RUN(sort_is_stable_with_nan_last);
    RUN(grad_dpo_loss_end_to_end_ordinary_and_saturated);
    RUN(logsigmoid_of_minus_100_is_minus_100_exactly);
    RUN(softplus_of_100_is_100_exactly);
    RUN(sigmoid_is_stable_for_both_signs);
    RUN(exp_overflow_is_plus_inf);
    RUN(log_at_tiny_positive_values);
    RUN(gelu_saturates_to_zero_and_identity);
    RUN(gelu_vector_clones_match_the_scalar_path);
    RUN(logsumexp_softmax_log_softmax_use_the_max_trick);
    RUN(gradients_at_kinks_are_the_documented_ones);
    RUN(minimum_and_maximum_ties_send_gradient_to_a);
    RUN(nan_propagates_through_every_kind_of_op);
    RUN(shape_errors_name_the_op_and_both_shapes);
    RUN(shapes_that_overflow_are_errors_not_wraparound);
    RUN(argument_errors_name_the_op_and_the_argument);
    RUN(null_propagates_and_keeps_the_first_error);
    RUN(where_with_a_broadcasting_cond_picks_per_element);
    RUN(reshape_is_a_view_and_detach_stops_gradient);
    RUN(empty_tensors_reduce_to_identities);
    RUN(sum_accumulates_in_double);
    RUN(large_broadcasts_match_plain_loops);
    RUN(results_do_not_depend_on_the_thread_count);
    tensor_ctx_free(tc);
    return tl_done();
}
