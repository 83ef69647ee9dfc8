/*
 * cli/check.c — `prefrun check FILE.lua [--json] [--set k=v]...`.
 *
 * The checks run in a forked child under setrlimit(RLIMIT_AS, RLIMIT_CPU) and
 * alarm(): the sandbox's own limits are the first line of defence, this is
 * the second, for whatever slips past them (a bug of ours, a pathological
 * case inside a C function). The child writes the finished output (JSON or
 * text) into a pipe and exits 0 (valid) or 1 (invalid); the parent relays it.
 * A child killed by a signal, or one that writes nothing, becomes an error
 * diagnostic in the usual format — never a crash of the host.
 *
 * Fault injection for tests: PREFRUN_CHECK_FAULT=kill makes the child kill
 * itself with SIGKILL before it reports, as the kernel would on a limit.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/fsutil.h"
#include "lua/check.h"
#include "cli/cli.h"
#include "cli/options.h"

#define CHILD_CPU_SECONDS 30 /* all checks of a loss take well under 1 s */
#define CHILD_WALL_SECONDS 60
#define CHILD_EXTRA_AS ((rlim_t)4 << 30) /* address space on top of what the process has */

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun check LOSS.lua [--json] [--set KEY=VALUE]... [--losses DIR]\n\n"
               "Validates a loss script before any training:\n"
               "  1. schema    the file returns {name, params, loss = function(b, p, s)}\n"
               "  2. shapes    on shape-only tensors at B = 1, 7, 64 it returns (B)\n"
               "  3. numerics  values and gradients finite on random and extreme probes\n"
               "               (|logits| up to 100)\n"
               "  4. signal    the gradient w.r.t. the policy log-probs is not all zero;\n"
               "               a warning when at logits = 0 the chosen margin raises the loss\n"
               "and summarises the loss shape (value and slope at 0, stationary points,\n"
               "convexity, slopes at the ends) in rho = beta * logits units.\n\n"
               "options:\n"
               "  --json             print {\"ok\", \"diagnostics\": [{\"severity\", \"code\",\n"
               "                     \"message\", \"line\"}], \"shape\": {...}}\n"
               "  --set KEY=VALUE    override a loss param (repeatable)\n"
               "  --losses DIR       where use(\"name\") finds library losses\n"
               "                     (default: $PREFRUN_LOSSES, else the source tree's losses/)\n"
               "  --in-process       run the checks in this process, not a limited child\n"
               "  -h, --help         this text\n\n"
               "exit status: 0 valid, 1 invalid, 2 usage error\n\n"
               "example:\n"
               "  prefrun check losses/discopop.lua --json --set tau=0.1\n");
}

typedef struct CheckArgs {
    const char *path;
    bool json, in_process;
    CheckOptions opt;
} CheckArgs;

int cli_check_set(void *check_options, const char *arg, char *err, size_t errlen)
{
    return check_parse_set(check_options, arg, err, errlen);
}

static int parse(int argc, char **argv, CheckArgs *a)
{
    const CliOpt opts[] = {
        CLI_FLAG("json", 0, &a->json),
        CLI_CALL("set", 0, cli_check_set, &a->opt),
        CLI_STRING("losses", 0, &a->opt.lib_dir),
        CLI_FLAG("in-process", 0, &a->in_process),
    };
    const CliCommand cmd = {CLI_COMMAND("check", usage, opts), .operand = "LOSS.lua",
                            .operands = &a->path, .min_operands = 1, .max_operands = 1};
    return cli_parse(&cmd, argc, argv);
}

/* 0, or -1 when the report could not be encoded: then a fixed error
 * report is printed instead, and the check has failed whatever it found. */
static int print_report(FILE *f, const CheckReport *rep, bool json)
{
    if (!json) {
        check_print_text(f, rep);
        return 0;
    }
    char *text = check_report_json(rep);
    if (!text) {
        fprintf(f, "{\"ok\": false, \"diagnostics\": [{\"severity\": \"error\", \"code\": "
                   "\"internal\", \"message\": \"the report could not be encoded as JSON (out "
                   "of memory)\", \"line\": null}]}\n");
        return -1;
    }
    fprintf(f, "%s\n", text);
    free(text);
    return 0;
}

/* the child's limits: address space, CPU seconds, wall clock */
static void limit_child(void)
{
    struct rlimit cpu = {CHILD_CPU_SECONDS, CHILD_CPU_SECONDS + 5};
    setrlimit(RLIMIT_CPU, &cpu);
#ifndef UNDER_ASAN /* ASan reserves terabytes of shadow memory up front */
    long pages = 0;
    FILE *statm = fopen("/proc/self/statm", "r");
    if (statm) {
        if (fscanf(statm, "%ld", &pages) != 1)
            pages = 0;
        fclose(statm);
    }
    rlim_t as = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + CHILD_EXTRA_AS;
    struct rlimit mem = {as, as};
    setrlimit(RLIMIT_AS, &mem);
#endif
    alarm(CHILD_WALL_SECONDS);
}

static void run_child(int fd, const CheckArgs *a)
{
    limit_child();
    const char *fault = getenv("PREFRUN_CHECK_FAULT");
    if (fault && strcmp(fault, "kill") == 0)
        raise(SIGKILL);
    CheckReport *rep = malloc(sizeof *rep);
    char *out = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&out, &len);
    if (!rep || !mem)
        _exit(3);
    check_run(a->path, &a->opt, rep);
    bool encoded = print_report(mem, rep, a->json) == 0;
    fclose(mem);
    int rc = fsutil_write_fd(fd, out, len) == 0 ? (rep->ok && encoded ? 0 : 1) : 3;
    _exit(rc); /* no atexit handlers, no stdio flush of the parent's buffers */
}

static char *read_all(int fd, size_t *len)
{
    size_t cap = 8192;
    char *buf = malloc(cap);
    *len = 0;
    while (buf) {
        if (*len + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + *len, cap - *len - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            buf[*len] = '\0';
            return buf;
        }
        *len += (size_t)r;
    }
    free(buf);
    return NULL;
}

/* the report of a child that did not finish */
static int child_failed(const CheckArgs *a, const char *why)
{
    CheckReport *rep = calloc(1, sizeof *rep);
    if (!rep)
        return EXIT_FAILED;
    snprintf(rep->path, sizeof rep->path, "%s", a->path);
    snprintf(rep->shape.why, sizeof rep->shape.why, "the check did not finish");
    rep->n_diags = 1;
    rep->diags[0].severity = CHECK_ERROR;
    snprintf(rep->diags[0].code, sizeof rep->diags[0].code, "crashed");
    snprintf(rep->diags[0].message, sizeof rep->diags[0].message, "%s", why);
    print_report(stdout, rep, a->json);
    free(rep);
    return EXIT_FAILED;
}

static int run_forked(const CheckArgs *a)
{
    int fd[2];
    if (pipe(fd) != 0)
        return child_failed(a, "cannot make a pipe for the checker process");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return child_failed(a, "cannot fork the checker process");
    }
    if (pid == 0) {
        close(fd[0]);
        run_child(fd[1], a);
    }
    close(fd[1]);
    size_t len;
    char *out = read_all(fd[0], &len);
    close(fd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    char why[256];
    int rc = -1;
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        snprintf(why, sizeof why,
                 "the checker process was killed by signal %d (%s)%s; the loss ran past the "
                 "process limits (%d s CPU, %d s wall clock, address space)",
                 sig, strsignal(sig),
                 sig == SIGALRM   ? ": wall clock"
                 : sig == SIGXCPU ? ": CPU time"
                                  : "",
                 CHILD_CPU_SECONDS, CHILD_WALL_SECONDS);
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) > 1 || !out || len == 0) {
        snprintf(why, sizeof why, "the checker process failed (exit status %d) without a report",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    } else {
        fwrite(out, 1, len, stdout);
        rc = WEXITSTATUS(status) == 0 ? EXIT_OK : EXIT_FAILED;
    }
    free(out);
    return rc >= 0 ? rc : child_failed(a, why);
}

int cmd_check(int argc, char **argv)
{
    CheckArgs a = {0};
    int rc = parse(argc, argv, &a);
    if (rc != CLI_CONTINUE)
        return rc;
    if (!a.in_process)
        return run_forked(&a);
    CheckReport *rep = malloc(sizeof *rep);
    if (!rep)
        return EXIT_FAILED;
    check_run(a.path, &a.opt, rep);
    rc = print_report(stdout, rep, a.json) == 0 && rep->ok ? EXIT_OK : EXIT_FAILED;
    free(rep);
    return rc;
}
