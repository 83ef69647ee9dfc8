/*
 * discover/propose_command.c — the `command` proposer: any executable (argv from the
 * config, run with execvp, no shell) gets the prompt on its stdin and prints
 * its reply on stdout, parsed like an LLM's (propose_parse_reply).
 *
 * The parent writes the prompt and reads the reply at the same time (poll on
 * both pipes): a command that prints before it has read everything cannot
 * deadlock against a full pipe. The command runs in its own process group,
 * killed as a whole at the timeout, and dies with the loop
 * (PR_SET_PDEATHSIG). SIGPIPE is ignored while the prompt is written, so a
 * command that exits without reading is a reply error, not a dead loop.
 *
 * Fatal (the loop stops): the command cannot be started (exit status 127
 * from a failed exec, as shells report it). Not fatal (an archived no_code
 * candidate): a timeout, a nonzero exit, a reply without code.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/fsutil.h"
#include "discover/propose.h"
#include "util/timeutil.h"

#define MAX_REPLY ((size_t)4 << 20)
#define EXEC_FAILED 127

typedef struct Command {
    ProposeConfig cfg;
} Command;

typedef struct Exchange {
    const char *in; /* the prompt */
    size_t in_len, in_off;
    char *out; /* the reply */
    size_t out_len, out_cap;
    bool too_big;
} Exchange;

static void *command_create(const ProposeConfig *cfg, char *err, size_t errlen)
{
    if (cfg->argc < 1) {
        snprintf(err, errlen, "command proposer: no command given (the config's command: list)");
        return NULL;
    }
    if (!fsutil_exists(cfg->prompt_path)) {
        snprintf(err, errlen, "command proposer: prompt template %s not found", cfg->prompt_path);
        return NULL;
    }
    Command *c = calloc(1, sizeof *c);
    if (!c)
        snprintf(err, errlen, "command proposer: out of memory");
    else
        c->cfg = *cfg;
    return c;
}

static void command_destroy(void *state) { free(state); }

static void child(const ProposeConfig *cfg, int in, int out, pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(EXEC_FAILED);
    setpgid(0, 0);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0)
        _exit(EXEC_FAILED);
    close_range(3, ~0u, 0);
    signal(SIGPIPE, SIG_DFL);
    char *argv[PROPOSE_MAX_ARGV + 1];
    for (int i = 0; i < cfg->argc; i++)
        argv[i] = (char *)cfg->argv[i];
    argv[cfg->argc] = NULL;
    execvp(argv[0], argv);
    _exit(EXEC_FAILED);
}

static int grow(Exchange *x, size_t need)
{
    if (need <= x->out_cap)
        return 0;
    size_t cap = x->out_cap ? x->out_cap : 8192;
    while (cap < need)
        cap *= 2;
    char *nb = realloc(x->out, cap);
    if (!nb)
        return -1;
    x->out = nb;
    x->out_cap = cap;
    return 0;
}

/* one poll round; returns 1 when the reply's end was read */
static int pump(Exchange *x, int *in, int out, int ms)
{
    struct pollfd p[2] = {{.fd = out, .events = POLLIN}, {.fd = *in, .events = POLLOUT}};
    int n = poll(p, *in >= 0 ? 2 : 1, ms);
    if (n <= 0)
        return 0;
    if (*in >= 0 && p[1].revents) {
        ssize_t w = write(*in, x->in + x->in_off, x->in_len - x->in_off);
        if (w > 0)
            x->in_off += (size_t)w;
        if ((w < 0 && errno != EAGAIN && errno != EINTR) || x->in_off == x->in_len) {
            close(*in); /* all written (or the command stopped reading): end of its stdin */
            *in = -1;
        }
    }
    if (!p[0].revents)
        return 0;
    if (grow(x, x->out_len + 65536) != 0)
        return 1;
    ssize_t r = read(out, x->out + x->out_len, x->out_cap - x->out_len - 1);
    if (r > 0 && x->out_len + (size_t)r < MAX_REPLY)
        x->out_len += (size_t)r;
    else if (r > 0)
        x->too_big = true;
    x->out[x->out_len] = '\0';
    return r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR);
}

/* runs the command on prompt; *status as from waitpid; -1 when it timed out */
static int run(const ProposeConfig *cfg, const char *prompt, Exchange *x, int *status)
{
    int in[2], out[2];
    if (pipe(in) != 0)
        return -2;
    if (pipe(out) != 0) {
        close(in[0]);
        close(in[1]);
        return -2;
    }
    pid_t parent = getpid(), pid = fork();
    if (pid == 0)
        child(cfg, in[0], out[1], parent);
    close(in[0]);
    close(out[1]);
    if (pid < 0) {
        close(in[1]);
        close(out[0]);
        return -2;
    }
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    *x = (Exchange){.in = prompt, .in_len = strlen(prompt)};
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigaction(SIGPIPE, &ign, &old);
    double deadline = timeutil_now() + cfg->command_timeout;
    int w = in[1], done = 0;
    while (!done && timeutil_now() < deadline)
        done = pump(x, &w, out[0], (int)fmax(1, (deadline - timeutil_now()) * 1000));
    if (w >= 0)
        close(w);
    close(out[0]);
    if (!done) { /* its group (what it started), and itself should setpgid not have run yet */
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
    }
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
    sigaction(SIGPIPE, &old, NULL);
    return done ? 0 : -1;
}

static int command_propose(void *state, const ProposeContext *ctx, Proposal *out, char *err,
                           size_t errlen)
{
    const Command *c = state;
    char *system, *user, *prompt = NULL;
    if (propose_render(c->cfg.prompt_path, ctx, &system, &user, err, errlen) != 0)
        return -1;
    size_t n = strlen(system) + strlen(user) + 3;
    if ((prompt = malloc(n)))
        snprintf(prompt, n, "%s%s%s", system, system[0] ? "\n\n" : "", user);
    free(system);
    free(user);
    Exchange x;
    int status = 0, rc = prompt ? run(&c->cfg, prompt, &x, &status) : -2;
    free(prompt);
    if (rc == -2) {
        snprintf(err, errlen, "command proposer: cannot start %s: %s", c->cfg.argv[0],
                 strerror(errno));
        return -1;
    }
    out->raw = x.out;
    if (rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == EXEC_FAILED && x.out_len == 0) {
        snprintf(err, errlen, "command proposer: cannot run '%s' (not found or not executable)",
                 c->cfg.argv[0]);
        return -1;
    }
    if (rc != 0)
        snprintf(out->error, sizeof out->error, "the command '%s' did not answer within %.0f s",
                 c->cfg.argv[0], c->cfg.command_timeout);
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        snprintf(out->error, sizeof out->error, "the command '%s' failed (%s %d)", c->cfg.argv[0],
                 WIFEXITED(status) ? "exit status" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    else if (x.too_big)
        snprintf(out->error, sizeof out->error, "the command's reply exceeded %zu MiB",
                 MAX_REPLY >> 20);
    else
        propose_parse_reply(x.out ? x.out : "", out);
    return 0;
}

const ProposerOps propose_command_ops = {
    .name = "command",
    .needs_genome = false,
    .create = command_create,
    .propose = command_propose,
    .destroy = command_destroy,
};
