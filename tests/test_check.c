/*
 * test_check.c — the checker's verdicts and diagnostics, its JSON, and the
 * loss-shape summary against DiscoPOP's closed form.
 *
 * DiscoPOP at beta = tau = 0.05, in rho = beta * logits units:
 *   f(rho) = (1 - s(rho/tau)) (-log s(rho)) + s(rho/tau) e^-rho,  s = sigmoid
 *   f(0)   = log(2)/2 + 1/2                      = 0.8465736  (issue: 0.846574)
 *   f'(0)  = 1/2 - 1/4 + (1/4)/tau (1 - log 2)    = 4.25 - 5 log 2 = 0.7842641
 *                                                  (issue: +0.78426)
 *   a local minimum at rho = -0.1185699 (f = 0.7859239) and a local maximum
 *   at rho = +0.0720061 (f = 0.8782896): roots of f' by bisection in double
 *   precision (the issue: near -0.119 and +0.072);
 *   f'(-10) = -0.9999546, f'(10) = -4.539993e-05.
 * Tolerances: values 1e-6 (float32 evaluation of an O(1) value), slopes 1e-5
 * (float32 gradient, then divided by beta), stationary points 1e-4 (the
 * root of a float32 slope: its noise of ~1e-7 over f'' ~ 10 moves the root
 * by ~1e-8; the tolerance is loose on purpose, the issue gives 3 digits).
 */
#include <jansson.h>

#include "lua/check.h"
#include "lossfix.h"

static const CheckDiag *find_diag(const CheckReport *rep, const char *code)
{
    for (int i = 0; i < rep->n_diags; i++)
        if (strcmp(rep->diags[i].code, code) == 0)
            return &rep->diags[i];
    return NULL;
}

static void print_diags(const CheckReport *rep)
{
    for (int i = 0; i < rep->n_diags; i++)
        printf("#     [%s] line %d: %s\n", rep->diags[i].code, rep->diags[i].line,
               rep->diags[i].message);
}

static CheckReport rep; /* large: static */

static void discopop_shape_summary(void)
{
    CheckOptions opt = {0};
    check_run(fx_path("tests/data/loss/discopop.lua"), &opt, &rep);
    CHECK(rep.ok);
    const ShapeSummary *s = &rep.shape;
    CHECK(s->valid);
    CHECK_NEAR(s->beta, 0.05, 0);
    CHECK_NEAR(s->f0, 0.5 * log(2) + 0.5, 1e-6);
    CHECK_NEAR(s->slope0, 4.25 - 5 * log(2), 1e-5);
    CHECKF(s->n_stationary == 2, "%d stationary points", s->n_stationary);
    CHECK(s->stationary[0].kind == SHAPE_MIN);
    CHECK_NEAR(s->stationary[0].rho, -0.1185699, 1e-4);
    CHECK_NEAR(s->stationary[0].value, 0.7859239, 1e-6);
    CHECK(s->stationary[1].kind == SHAPE_MAX);
    CHECK_NEAR(s->stationary[1].rho, 0.0720061, 1e-4);
    CHECK_NEAR(s->stationary[1].value, 0.8782896, 1e-6);
    CHECKF(strcmp(s->convexity, "mixed") == 0, "convexity %s", s->convexity);
    CHECK_NEAR(s->slope_left, -0.9999546, 1e-5);
    CHECK_NEAR(s->slope_right, -4.539993e-05, 1e-6);
    /* DiscoPOP raises its loss with the margin at 0: a warning, not an error */
    const CheckDiag *d = find_diag(&rep, "margin_increases_loss");
    CHECK(d && d->severity == CHECK_WARNING && d->line == 7);
    CHECKF(rep.n_diags == 1, "%d diagnostics", rep.n_diags);
}

/* DPO: -log sigmoid(rho); f(0) = log 2, f'(0) = -1/2, convex, monotone */
static void dpo_is_clean(void)
{
    CheckOptions opt = {0};
    check_run(fx_path("tests/data/loss/dpo.lua"), &opt, &rep);
    CHECK(rep.ok);
    CHECKF(rep.n_diags == 0, "%d diagnostics", rep.n_diags);
    print_diags(&rep);
    CHECK_NEAR(rep.shape.f0, log(2), 1e-6);
    CHECK_NEAR(rep.shape.slope0, -0.5, 1e-5);
    CHECK(rep.shape.n_stationary == 0);
    CHECKF(rep.shape.convexity && strcmp(rep.shape.convexity, "convex") == 0, "convexity %s",
           rep.shape.convexity);
    CHECK(rep.n_params == 1 && strcmp(rep.param_names[0], "beta") == 0);
    CHECK(!rep.shape.coupled);
}

/* AOT sorts the batch, so evaluated as one batch of all curve points it
 * would show the sorted grid, not a loss. Detected as batch-coupled, each
 * point is a batch of one pair, where sorting is the identity and AOT is
 * DPO: f(0) = log 2, f'(0) = -1/2, convex, monotone. */
static void batch_coupled_loss_curve_is_of_one_pair(void)
{
    CheckOptions opt = {0};
    check_run(fx_path("losses/aot.lua"), &opt, &rep);
    CHECK(rep.ok);
    CHECK(rep.shape.valid && rep.shape.coupled);
    CHECK_NEAR(rep.shape.f0, log(2), 1e-6);
    CHECK_NEAR(rep.shape.slope0, -0.5, 1e-5);
    CHECK(rep.shape.n_stationary == 0);
    CHECKF(rep.shape.convexity && strcmp(rep.shape.convexity, "convex") == 0, "convexity %s",
           rep.shape.convexity);
}

/* a token-level DPO (log-probs summed over masked tokens) checks like DPO:
 * the curve's one-token pairs carry the same margin */
static void token_level_loss_has_dpo_shape(void)
{
    const char *path =
        fx_write("return { name = 'tok', params = { beta = 0.1 }, loss = function(b, p)\n"
                 "  local pc = sum(b.policy_chosen_token_logps * b.chosen_mask, 2)\n"
                 "  local pr = sum(b.policy_rejected_token_logps * b.rejected_mask, 2)\n"
                 "  local rc = sum(b.reference_chosen_token_logps * b.chosen_mask, 2)\n"
                 "  local rr = sum(b.reference_rejected_token_logps * b.rejected_mask, 2)\n"
                 "  return -logsigmoid(p.beta * ((pc - pr) - (rc - rr)))\n"
                 "end }\n");
    CheckOptions opt = {0};
    check_run(path, &opt, &rep);
    CHECK(rep.ok && rep.n_diags == 0);
    print_diags(&rep);
    CHECK(rep.shape.valid);
    CHECK_NEAR(rep.shape.f0, log(2), 1e-6);
    CHECK_NEAR(rep.shape.slope0, -0.5, 1e-5);
    unlink(path);
}

typedef struct Verdict {
    const char *name;
    const char *text; /* the loss file; NULL: use file */
    const char *file; /* under the source tree */
    const char *set;  /* a --set, or NULL */
    bool ok;          /* the expected verdict */
    const char *code; /* a diagnostic that must be there */
    CheckSeverity severity;
    int line;         /* its line (0: unknown), -1: not checked */
    const char *says; /* a substring of its message */
} Verdict;

#define LOSS(body)                                                                                 \
    "return { name = 'x', params = { beta = 0.1 }, loss = function(b, p)\n"                        \
    "  local z = (b.policy_chosen_logps - b.policy_rejected_logps)"                                \
    " - (b.reference_chosen_logps - b.reference_rejected_logps)\n" body "\nend }\n"

static const Verdict verdicts[] = {
    {"syntax error", "return { name = 'x', loss = function(b) return b end\n", NULL, NULL, false,
     "syntax", CHECK_ERROR, 2, "expected"},
    {"no loss function", "return { name = 'x', params = {} }\n", NULL, NULL, false, "schema",
     CHECK_ERROR, 0, "field 'loss' must be a function"},
    {"string param", "return { name = 'x', params = { beta = '0.1' }, loss = function() end }\n",
     NULL, NULL, false, "schema", CHECK_ERROR, 0, "params.beta must be a finite number"},
    {"wrong shape", LOSS("  return cat(z, z)"), NULL, NULL, false, "shape", CHECK_ERROR, 1,
     "loss returned a tensor of shape (2); expected a tensor of shape (1)"},
    {"bad dim", LOSS("  return sum(z, 2)"), NULL, NULL, false, "shape", CHECK_ERROR, 3,
     "bad argument #2 to 'sum' (dim 2 out of range for shape (1)"},
    {"nan", NULL, "tests/data/hostile/nan_return.lua", NULL, false, "nonfinite_value", CHECK_ERROR,
     0, "the loss is nan for pair 1 of the random probe"},
    {"overflow at extreme logits", LOSS("  return exp(-z)"), NULL, NULL, false, "nonfinite_value",
     CHECK_ERROR, 0, "(logits = -100)"},
    {"infinite gradient at 0", LOSS("  return sqrt(z * z)"), NULL, NULL, false, "nonfinite_grad",
     CHECK_ERROR, 0, "is nan for pair 6 of the extreme probe (logits = 0)"},
    {"no signal", LOSS("  return zeros_like(z) + 1"), NULL, NULL, false, "no_signal", CHECK_ERROR,
     1, "is 0 for every pair"},
    {"detached", LOSS("  return -logsigmoid(detach(z))"), NULL, NULL, false, "no_signal",
     CHECK_ERROR, 1, "detached"},
    {"limit", NULL, "tests/data/hostile/loop_loss.lua", NULL, false, "limit", CHECK_ERROR, 7,
     "instruction budget exhausted (limit hit: 2000000 instructions per call)"},
    {"unknown param", NULL, "tests/data/loss/dpo.lua", "gamma=1", false, "unknown_param",
     CHECK_ERROR, 0, "unknown parameter 'gamma'"},
    {"missing file", NULL, "tests/data/loss/no_such_file.lua", NULL, false, "io", CHECK_ERROR, 0,
     "cannot read"},
    {"unknown field",
     "return { name = 'x', parms = {}, loss = function(b) return "
     "-logsigmoid(b.policy_chosen_logps - b.policy_rejected_logps) end }\n",
     NULL, NULL, true, "unknown_field", CHECK_WARNING, 0, "parms"},
    {"reads values", LOSS("  local m = mean(z):item()\n  return -logsigmoid(z - m)"), NULL, NULL,
     true, "reads_values", CHECK_INFO, -1, "checked with data"},
    {"wrong direction at 0", LOSS("  return logsigmoid(p.beta * z)"), NULL, NULL, true,
     "margin_increases_loss", CHECK_WARNING, 1, "at logits = 0"},
};

static void verdicts_and_diagnostics(void)
{
    for (size_t i = 0; i < sizeof verdicts / sizeof verdicts[0]; i++) {
        const Verdict *v = &verdicts[i];
        const char *path = v->text ? fx_write(v->text) : fx_path(v->file);
        CheckOptions opt = {.limits = {.instructions = 2000000}}; /* loops stop fast */
        char err[128];
        if (v->set)
            CHECK(check_parse_set(&opt, v->set, err, sizeof err) == 0);
        check_run(path, &opt, &rep);
        const CheckDiag *d = find_diag(&rep, v->code);
        CHECKF(rep.ok == v->ok, "%s: ok = %d", v->name, rep.ok);
        CHECKF(d != NULL, "%s: no diagnostic %s", v->name, v->code);
        if (d) {
            CHECKF(d->severity == v->severity, "%s: severity %d", v->name, d->severity);
            CHECKF(v->line < 0 || d->line == v->line, "%s: line %d, want %d", v->name, d->line,
                   v->line);
            CHECKF(strstr(d->message, v->says), "%s: \"%s\" does not say \"%s\"", v->name,
                   d->message, v->says);
        }
        if (tl_case_failed)
            print_diags(&rep);
        if (v->text)
            unlink(path);
    }
}

static void json_has_the_documented_shape(void)
{
    CheckOptions opt = {0};
    check_run(fx_path("tests/data/loss/discopop.lua"), &opt, &rep);
    char *text = check_report_json(&rep);
    json_error_t jerr;
    json_t *root = text ? json_loads(text, 0, &jerr) : NULL;
    CHECKF(root != NULL, "not JSON: %s", text ? jerr.text : "(null)");
    CHECK(json_is_true(json_object_get(root, "ok")));
    CHECK(json_is_string(json_object_get(root, "name")));
    CHECK_NEAR(json_number_value(json_object_get(json_object_get(root, "params"), "tau")), 0.05,
               1e-12);
    json_t *diags = json_object_get(root, "diagnostics");
    CHECK(json_is_array(diags) && json_array_size(diags) == 1);
    json_t *d = json_array_get(diags, 0);
    CHECK(json_is_string(json_object_get(d, "severity")) &&
          strcmp(json_string_value(json_object_get(d, "severity")), "warning") == 0);
    CHECK(json_is_string(json_object_get(d, "code")));
    CHECK(json_is_string(json_object_get(d, "message")));
    CHECK(json_is_integer(json_object_get(d, "line")));
    json_t *shape = json_object_get(root, "shape");
    CHECK(json_is_true(json_object_get(shape, "valid")));
    CHECK_NEAR(json_number_value(json_object_get(shape, "f0")), 0.5 * log(2) + 0.5, 1e-6);
    json_t *st = json_object_get(shape, "stationary");
    CHECK(json_is_array(st) && json_array_size(st) == 2);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(st, 0), "kind")), "min") == 0);
    json_decref(root);
    free(text);

    /* an invalid file: ok false, a line that is an integer or null */
    const char *path = fx_write("return {\n");
    check_run(path, &opt, &rep);
    text = check_report_json(&rep);
    root = text ? json_loads(text, 0, &jerr) : NULL;
    CHECK(root && json_is_false(json_object_get(root, "ok")));
    d = json_array_get(json_object_get(root, "diagnostics"), 0);
    CHECK(d && strcmp(json_string_value(json_object_get(d, "severity")), "error") == 0);
    CHECK(json_is_integer(json_object_get(d, "line")) || json_is_null(json_object_get(d, "line")));
    CHECK(json_is_false(json_object_get(json_object_get(root, "shape"), "valid")));
    json_decref(root);
    free(text);
    unlink(path);
}

int main(void)
{
    RUN(discopop_shape_summary);
    RUN(dpo_is_clean);
    RUN(batch_coupled_loss_curve_is_of_one_pair);
    RUN(token_level_loss_has_dpo_shape);
    RUN(verdicts_and_diagnostics);
    RUN(json_has_the_documented_shape);
    return tl_done();
}
