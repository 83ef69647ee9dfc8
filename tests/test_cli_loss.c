/*
 * test_cli_loss.c — `prefrun check` and `prefrun grad` as a user runs them:
 * exit codes, the JSON they print, and grad's numbers against DPO's closed
 * form:
 *   loss_i = -log sigmoid(beta logits_i),  logits = (pc - pc_ref) - (pr - pr_ref)
 *   d mean loss / d pc_i = -beta sigmoid(-beta logits_i) / B = -d mean / d pr_i
 * The executable is $PREFRUN_EXE (set by meson), else ./prefrun next to this
 * test.
 */
#include <jansson.h>
#include <libgen.h>
#include <sys/wait.h>

#include "lossfix.h"

static char exe[1024];

/* runs `prefrun ARGS` (stderr dropped unless keep_err); returns its exit
 * status and its output in *out (malloc'ed) */
static int run(const char *env, const char *args, bool keep_err, char **out)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s %s %s %s", env ? env : "", exe, args,
             keep_err ? "2>&1" : "2>/dev/null");
    FILE *p = popen(cmd, "r");
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    size_t r;
    while (p && buf && (r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (n + 1 == cap)
            buf = realloc(buf, cap *= 2);
    }
    if (buf)
        buf[n] = '\0';
    int status = p ? pclose(p) : -1;
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static char *args_with(const char *fmt, const char *rel)
{
    static char buf[2048];
    snprintf(buf, sizeof buf, fmt, fx_path(rel));
    return buf;
}

static void check_exit_codes(void)
{
    char *out;
    CHECK(run(NULL, args_with("check %s", "tests/data/loss/dpo.lua"), false, &out) == 0);
    CHECKF(strstr(out, "valid (loss 'dpo'"), "%s", out);
    free(out);
    CHECK(run(NULL, args_with("check %s", "tests/data/hostile/nan_return.lua"), false, &out) == 1);
    CHECKF(strstr(out, "INVALID") && strstr(out, "nonfinite_value"), "%s", out);
    free(out);
    CHECK(run(NULL, "check", false, &out) == 2);
    free(out);
    CHECK(run(NULL, args_with("check %s --no-such-option", "tests/data/loss/dpo.lua"), false,
              &out) == 2);
    free(out);
    CHECK(run(NULL, args_with("check %s --set beta", "tests/data/loss/dpo.lua"), false, &out) == 2);
    free(out);
    CHECK(run(NULL, "check --help", false, &out) == 0);
    CHECK(strstr(out, "example:") && strstr(out, "prefrun check losses/"));
    free(out);
}

static void check_json_output(void)
{
    char *out;
    int rc = run(NULL, args_with("check %s --json --set tau=0.05", "tests/data/loss/discopop.lua"),
                 false, &out);
    CHECK(rc == 0);
    json_error_t jerr;
    json_t *root = json_loads(out, 0, &jerr);
    CHECKF(root != NULL, "not JSON (%s): %s", jerr.text, out);
    CHECK(json_is_true(json_object_get(root, "ok")));
    json_t *shape = json_object_get(root, "shape");
    CHECK_NEAR(json_number_value(json_object_get(shape, "f0")), 0.5 * log(2) + 0.5, 1e-6);
    CHECK_NEAR(json_number_value(json_object_get(shape, "slope0")), 4.25 - 5 * log(2), 1e-5);
    json_decref(root);
    free(out);
}

/* untrusted text (a name with escapes and a newline, bytes that are not
 * UTF-8) reaches neither the terminal raw nor breaks the JSON report */
static void check_escapes_hostile_text(void)
{
    char *out;
    const char *file = "tests/data/hostile/escape_text.lua";
    CHECK(run(NULL, args_with("check %s", file), false, &out) == 1);
    CHECKF(!strchr(out, '\x1b') && !strchr(out, '\x07') && !strchr(out, '\xff'), "%s", out);
    CHECKF(!strstr(out, "\nprefrun: valid"), "a forged line: %s", out);
    int lines = 0;
    for (const char *c = out; *c; c++)
        lines += *c == '\n';
    CHECKF(lines == 2, "expected the verdict and one diagnostic, got %d lines: %s", lines, out);
    CHECKF(strstr(out, "x\\x1b]0;pwned\\x07\\nprefrun: valid \\xff"), "%s", out);
    free(out);
    CHECK(run(NULL, args_with("check %s --json", file), false, &out) == 1);
    json_error_t jerr;
    json_t *root = json_loads(out, 0, &jerr);
    CHECKF(root != NULL, "not JSON (%s): %s", jerr.text, out);
    CHECK(json_is_false(json_object_get(root, "ok")));
    const char *name = json_string_value(json_object_get(root, "name"));
    CHECKF(name && strstr(name, "valid \xef\xbf\xbd"), "name: %s", name ? name : "(none)");
    json_t *d = json_array_get(json_object_get(root, "diagnostics"), 0);
    const char *msg = json_string_value(json_object_get(d, "message"));
    CHECKF(msg && strstr(msg, "bad \xef\xbf\xbd byte"), "%s", out);
    json_decref(root);
    free(out);
    /* a command's error message carries the script's words: escaped too */
    CHECK(run(NULL, args_with("grad %s --bench", file), true, &out) != 0);
    CHECKF(!strchr(out, '\x1b') && strstr(out, "\\x1b[2J"), "%s", out);
    free(out);
}

/* a hostile loss is a diagnostic of the child, and the parent answers */
static void check_survives_hostile_and_killed_children(void)
{
    char *out;
    json_error_t jerr;
    int rc =
        run(NULL, args_with("check %s --json", "tests/data/hostile/loop_loss.lua"), false, &out);
    CHECK(rc == 1);
    json_t *root = json_loads(out, 0, &jerr);
    json_t *d = json_array_get(json_object_get(root, "diagnostics"), 0);
    CHECKF(d && strcmp(json_string_value(json_object_get(d, "code")), "limit") == 0, "%s", out);
    CHECK(json_integer_value(json_object_get(d, "line")) == 7);
    json_decref(root);
    free(out);
    rc = run("PREFRUN_CHECK_FAULT=kill", args_with("check %s --json", "tests/data/loss/dpo.lua"),
             false, &out);
    CHECK(rc == 1);
    root = json_loads(out, 0, &jerr);
    d = json_array_get(json_object_get(root, "diagnostics"), 0);
    CHECKF(d && strcmp(json_string_value(json_object_get(d, "code")), "crashed") == 0, "%s", out);
    CHECKF(d && strstr(json_string_value(json_object_get(d, "message")), "signal 9"), "%s", out);
    json_decref(root);
    free(out);
}

static const double pc[2][3] = {{-10, -12, -3}, {-50, -40, -45}};
static const double pr[2][3] = {{-11, -11, -9}, {-55, -39, -45}};
static const double rc_[2][3] = {{-10, -10, -4}, {-52, -41, -44}};
static const double rr[2][3] = {{-10, -10, -8}, {-53, -38, -46}};

static void grad_matches_dpo(void)
{
    const char *cases = fx_write(
        "{\"cases\": ["
        "{\"policy_chosen_logps\": [-10, -12, -3], \"policy_rejected_logps\": [-11, -11, -9],"
        " \"reference_chosen_logps\": [-10, -10, -4], \"reference_rejected_logps\": [-10, -10, "
        "-8]},"
        "{\"params\": {\"beta\": 0.5},"
        " \"policy_chosen_logps\": [-50, -40, -45], \"policy_rejected_logps\": [-55, -39, -45],"
        " \"reference_chosen_logps\": [-52, -41, -44], \"reference_rejected_logps\": [-53, -38, "
        "-46],"
        " \"chosen_lengths\": [10, 20, 30], \"rejected_lengths\": [12, 22, 32]}]}");
    char args[2048], *out;
    snprintf(args, sizeof args, "grad %s --cases %s --set beta=0.2",
             fx_path("tests/data/loss/dpo.lua"), cases);
    CHECK(run(NULL, args, false, &out) == 0);
    json_error_t jerr;
    json_t *root = json_loads(out, 0, &jerr);
    CHECKF(root != NULL, "not JSON (%s): %s", jerr.text, out);
    json_t *results = json_object_get(root, "results");
    CHECK(json_array_size(results) == 2);
    const double betas[2] = {0.2, 0.5}; /* --set, then the second case's own params */
    for (int k = 0; k < 2; k++) {
        json_t *r = json_array_get(results, (size_t)k);
        double mean = 0;
        for (int i = 0; i < 3; i++) {
            double logits = (pc[k][i] - rc_[k][i]) - (pr[k][i] - rr[k][i]), beta = betas[k];
            double l = fx_dpo(beta, logits), g = -beta / (1 + exp(beta * logits)) / 3;
            mean += l / 3;
            /* float32 inputs and ops: 1e-6 relative on O(1) values */
            CHECK_NEAR(json_number_value(json_array_get(json_object_get(r, "losses"), i)), l, 2e-6);
            CHECK_NEAR(json_number_value(
                           json_array_get(json_object_get(r, "grad_policy_chosen_logps"), i)),
                       g, 1e-7);
            CHECK_NEAR(json_number_value(
                           json_array_get(json_object_get(r, "grad_policy_rejected_logps"), i)),
                       -g, 1e-7);
        }
        CHECK_NEAR(json_number_value(json_object_get(r, "loss")), mean, 2e-6);
    }
    json_decref(root);
    free(out);
    unlink(cases);
}

static void grad_usage_and_input_errors(void)
{
    char *out;
    CHECK(run(NULL, args_with("grad %s", "tests/data/loss/dpo.lua"), false, &out) == 2);
    free(out);
    const char *bad = fx_write("{\"cases\": [");
    char args[2048];
    snprintf(args, sizeof args, "grad %s --cases %s", fx_path("tests/data/loss/dpo.lua"), bad);
    CHECK(run(NULL, args, false, &out) == 3);
    free(out);
    unlink(bad);
    /* a number with trailing junk is a usage error naming the option, not 10 */
    snprintf(args, sizeof args, "grad %s --curve --points 10x", fx_path("tests/data/loss/dpo.lua"));
    CHECK(run(NULL, args, true, &out) == 2);
    CHECK(out && strstr(out, "--points"));
    free(out);
    CHECK(run(NULL, "grad --help", false, &out) == 0);
    CHECK(strstr(out, "examples:") && strstr(out, "--curve"));
    free(out);
}

static void grad_curve_writes_csv_and_svg(void)
{
    char prefix[] = "/tmp/prefrun-curve-XXXXXX", args[2048], *out, path[256], line[256];
    int fd = mkstemp(prefix);
    close(fd);
    unlink(prefix);
    snprintf(args, sizeof args, "grad %s --curve --out %s", fx_path("tests/data/loss/discopop.lua"),
             prefix);
    CHECK(run(NULL, args, false, &out) == 0);
    CHECKF(strstr(out, "f(0) = 0.846574, f'(0) = +0.78426"), "%s", out);
    CHECKF(strstr(out, "local minimum at rho = -0.1186"), "%s", out);
    CHECKF(strstr(out, "local maximum at rho = +0.0720"), "%s", out);
    free(out);
    snprintf(path, sizeof path, "%s.csv", prefix);
    FILE *f = fopen(path, "r");
    int lines = 0;
    CHECK(f && fgets(line, sizeof line, f) && strcmp(line, "rho,logits,loss,dloss_drho\n") == 0);
    while (f && fgets(line, sizeof line, f))
        lines++;
    CHECKF(lines == 2001, "%d curve points", lines);
    if (f)
        fclose(f);
    unlink(path);
    snprintf(path, sizeof path, "%s.svg", prefix);
    f = fopen(path, "r");
    CHECK(f && fgets(line, sizeof line, f) && strncmp(line, "<svg", 4) == 0);
    if (f)
        fclose(f);
    unlink(path);
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *env = getenv("PREFRUN_EXE");
    char self[1024];
    snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(exe, sizeof exe, "%s", env ? env : self);
    if (!env)
        snprintf(exe, sizeof exe, "%s/prefrun", dirname(self));
    RUN(check_exit_codes);
    RUN(check_json_output);
    RUN(check_survives_hostile_and_killed_children);
    RUN(check_escapes_hostile_text);
    RUN(grad_matches_dpo);
    RUN(grad_usage_and_input_errors);
    RUN(grad_curve_writes_csv_and_svg);
    return tl_done();
}
