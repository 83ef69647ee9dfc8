/*
 * test_lua_tensor.c — the loss DSL through the binding: its semantics
 * (asserted in Lua by tests/data/loss/dsl_checks.lua), its error messages,
 * shape-only contexts, gradients through composite functions, use() and the
 * weighted combination of scripts.
 */
#include "lossfix.h"

/* runs text as a loss on the fixture batch of 4 pairs; returns the error
 * message (static), or NULL when the call succeeded */
static const char *run_text(const char *text, bool meta)
{
    static char err[1024];
    const char *path = fx_write(text);
    LossScript *ls = path ? loss_load(path, NULL, NULL, err, sizeof err) : NULL;
    bool failed = !ls;
    if (ls) {
        TensorCtx *ctx = tensor_ctx_new(0);
        ctx->meta = meta;
        FxBatch fb;
        fx_batch(&fb, ctx, 4);
        failed = loss_eval(ls, ctx, &fb.b, err, sizeof err) == NULL;
        tensor_ctx_free(ctx);
    }
    loss_free(ls);
    if (path)
        unlink(path);
    return failed ? err : NULL;
}

static const char *loss_with(const char *body)
{
    static char text[2048];
    snprintf(text, sizeof text,
             "return { name = 't', params = {}, loss = function(b)\n"
             "  local x = b.policy_chosen_logps\n"
             "  %s\n"
             "  return x\n"
             "end }\n",
             body);
    return text;
}

static void semantics_hold(void)
{
    char err[1024];
    LossScript *ls =
        loss_load(fx_path("tests/data/loss/dsl_checks.lua"), NULL, NULL, err, sizeof err);
    CHECKF(ls != NULL, "%s", err);
    if (!ls)
        return;
    TensorCtx *ctx = tensor_ctx_new(0);
    FxBatch fb;
    fx_batch(&fb, ctx, 4);
    Tensor *l = loss_eval(ls, ctx, &fb.b, err, sizeof err);
    CHECKF(l != NULL, "%s", err);
    tensor_ctx_free(ctx);
    loss_free(ls);
}

typedef struct BadCall {
    const char *body;   /* Lua inside the loss, x = policy_chosen_logps (4) */
    const char *expect; /* a substring of the error */
} BadCall;

static const BadCall bad_calls[] = {
    {"exp({})", "bad argument #1 to 'exp' (tensor or number expected, got table)"},
    {"sum(x, 3)", "bad argument #2 to 'sum' (dim 3 out of range for shape (4); dims are 1-based"},
    {"sum(x, 0)", "bad argument #2 to 'sum' (dim 0 out of range"},
    {"sum(x, 1.5)", "bad argument #2 to 'sum' (integer dim expected, got number)"},
    {"x = x + tensor({1, 2, 3})", "add: shapes (4) and (3) do not broadcast"},
    {"x = gt(x, tensor({1, 2, 3}))", "gt: shapes (4) and (3) do not broadcast"},
    {"pow(x, x)", "bad argument #2 to 'pow' (number exponent"},
    {"x:item()", "item: tensor has shape (4); item() needs exactly one element"},
    {"x:nosuch()", "attempt to call a nil value (method 'nosuch')"},
    {"clamp(x, 1, 0)", "bad argument #3 to 'clamp' (need lo <= hi)"},
    {"tensor({{1, 2}, {3}})", "not rectangular"},
    {"tensor({1, 'a'})", "entries must be numbers"},
    {"local y = x < x", "attempt to compare two tensor values"},
    {"x = x + '1'", "bad argument #2 to 'add' (tensor or number expected, got string)"},
    {"logsumexp(tensor(1))", "a 0-D tensor has no dim"},
    {"local n = #tensor(1)", "#: a 0-D tensor has no length"},
    {"sum(x, 1, 'yes')", "bad argument #3 to 'sum' (boolean keepdim expected, got string)"},
};

/* every misuse names the function, the argument and the shapes, with the
 * line of the call */
static void misuse_is_named(void)
{
    for (size_t i = 0; i < sizeof bad_calls / sizeof bad_calls[0]; i++) {
        const char *err = run_text(loss_with(bad_calls[i].body), false);
        CHECKF(err && strstr(err, bad_calls[i].expect), "%s: got \"%s\", want \"%s\"",
               bad_calls[i].body, err ? err : "(no error)", bad_calls[i].expect);
        CHECKF(err && strstr(err, ".lua:3: "), "%s: no line 3 in \"%s\"", bad_calls[i].body,
               err ? err : "");
    }
}

/* shape-only contexts run the whole binding; reading values is an error */
static void meta_contexts_work(void)
{
    const char *err =
        run_text(loss_with("local y = var(x) + std(x, 1) + logsumexp(x) + sum(softmax(x))\n"
                           "  assert(#(x + y) == 4 and cat(x, x):size(1) == 8, 'shapes')\n"
                           "  assert(gt(x, 0):shape()[1] == 4, 'comparison shapes')\n"
                           "  assert(tostring(x) == 'tensor(shape (4), shape-only)', tostring(x))\n"
                           "  x = where(gt(x, 0), x, -x) * ones_like(x)"),
                 true);
    CHECKF(err == NULL, "%s", err);
    err = run_text(loss_with("local v = mean(x):item()"), true);
    CHECKF(err && strstr(err, "item: a shape-only (meta) tensor has no values"), "%s",
           err ? err : "(no error)");
}

static void tensors_only_inside_a_call(void)
{
    const char *err = run_text("local t = tensor(1)\nreturn { name = 't', loss = function(b) "
                               "return b.policy_chosen_logps end }",
                               false);
    CHECKF(err && strstr(err, ":1: tensors exist only during a loss call"), "%s",
           err ? err : "(no error)");
}

/* d/dx_i of mean_i (x_i - mean(x))^2 = var(x) is 2 (x_i - m) / B; the per-pair
 * loss uses the batch mean, so every pair's term depends on every x */
static void gradients_flow_through_batch_statistics(void)
{
    const char *path = fx_write("return { name = 'v', params = {}, loss = function(b)\n"
                                "  local x = b.policy_chosen_logps\n"
                                "  return (x - mean(x)) ^ 2 + 0 * var(x) + 0 * std(x)\n"
                                "end }\n");
    char err[512];
    LossScript *ls = loss_load(path, NULL, NULL, err, sizeof err);
    CHECKF(ls != NULL, "%s", err);
    TensorCtx *ctx = tensor_ctx_new(0);
    FxBatch fb;
    fx_batch(&fb, ctx, 4);
    Tensor *l = ls ? loss_eval(ls, ctx, &fb.b, err, sizeof err) : NULL;
    CHECKF(l != NULL, "%s", err);
    Tensor *m = l ? ag_mean(ctx, l, AG_ALL, false) : NULL;
    CHECK(m && ag_backward(ctx, m, NULL) == 0);
    double mean = (-10 - 11 - 12 - 13) / 4.0;     /* pc = -10 - i */
    CHECK_NEAR(m ? m->data[0] : NAN, 1.25, 1e-5); /* population variance of 4 steps of 1 */
    for (int i = 0; m && i < 4; i++)
        CHECK_NEAR(fb.b.policy_chosen_logps->grad[i], 2 * (fx_pc(i) - mean) / 4, 1e-6);
    tensor_ctx_free(ctx);
    loss_free(ls);
    unlink(path);
}

/* use("dpo") loads the library file once and composes with it */
static void use_composes_library_losses(void)
{
    const char *path = fx_write("local dpo = use('dpo')\n"
                                "assert(use('dpo') == dpo, 'cached')\n"
                                "return { name = 'twice', params = { beta = 0.1 },\n"
                                "  loss = function(b, p) return 2 * dpo.loss(b, p) end }\n");
    char err[512];
    LossScript *ls = loss_load(path, fx_path("tests/data/loss/lib"), NULL, err, sizeof err);
    CHECKF(ls != NULL, "%s", err);
    TensorCtx *ctx = tensor_ctx_new(0);
    FxBatch fb;
    fx_batch(&fb, ctx, 4);
    Tensor *l = ls ? loss_eval(ls, ctx, &fb.b, err, sizeof err) : NULL;
    CHECKF(l != NULL, "%s", err);
    for (int i = 0; l && i < 4; i++)
        CHECK_NEAR(l->data[i], 2 * fx_dpo(0.1, fx_logits(i)), 2e-6);
    tensor_ctx_free(ctx);
    loss_free(ls);
    unlink(path);
}

/* sum_i w_i L_i: (B) when every script is per-pair; 0-D with per-pair terms
 * averaged when one is batch-level */
static void weighted_combination(void)
{
    char err[512];
    const char *sq = fx_write("return { name = 'sq', batch_level = true, loss = function(b)\n"
                              "  return mean(b.policy_chosen_logps) ^ 2 end }\n");
    LossScript *dpo = loss_load(fx_path("tests/data/loss/dpo.lua"), NULL, NULL, err, sizeof err);
    LossScript *bl = loss_load(sq, NULL, NULL, err, sizeof err);
    CHECKF(dpo && bl, "%s", err);
    if (!dpo || !bl)
        goto done;
    TensorCtx *ctx = tensor_ctx_new(0);
    FxBatch fb;
    fx_batch(&fb, ctx, 4);
    LossScript *two[2] = {dpo, dpo}, *mixed[2] = {dpo, bl};
    double w[2] = {1.0, 0.5};
    Tensor *l = loss_eval_weighted(two, w, 2, ctx, &fb.b, err, sizeof err);
    CHECKF(l && l->ndim == 1 && l->shape[0] == 4, "%s", err);
    for (int i = 0; l && i < 4; i++)
        CHECK_NEAR(l->data[i], 1.5 * fx_dpo(0.1, fx_logits(i)), 2e-6);
    l = loss_eval_weighted(mixed, w, 2, ctx, &fb.b, err, sizeof err);
    CHECKF(l && l->ndim == 0, "%s", err);
    double mean_dpo = 0;
    for (int i = 0; i < 4; i++)
        mean_dpo += fx_dpo(0.1, fx_logits(i)) / 4;
    CHECK_NEAR(l ? l->data[0] : NAN, mean_dpo + 0.5 * 11.5 * 11.5, 1e-4); /* mean pc = -11.5 */
    tensor_ctx_free(ctx);
done:
    loss_free(dpo);
    loss_free(bl);
    unlink(sq);
}

int main(void)
{
    RUN(semantics_hold);
    RUN(misuse_is_named);
    RUN(meta_contexts_work);
    RUN(tensors_only_inside_a_call);
    RUN(gradients_flow_through_batch_statistics);
    RUN(use_composes_library_losses);
    RUN(weighted_combination);
    return tl_done();
}
