/*
 * cli/main.c — the prefrun command line: global options, then one subcommand.
 * Each subcommand lives in a file of its own in cli/; this file only dispatches,
 * so `prefrun --help` stays the one list of what exists.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "prefrun_config.h"

typedef struct Command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command commands[] = {
    {"train", cmd_train, "train a policy against a frozen reference with a Lua loss"},
    {"check", cmd_check, "validate a loss script (schema, shapes, numerics, signal)"},
    {"grad", cmd_grad, "loss values and gradients on given cases, or the loss curve"},
    {"eval", cmd_eval, "reward and KL to the reference of a trained policy"},
    {"sample", cmd_sample, "sample completions from a checkpoint (KV cache)"},
    {"pretrain", cmd_pretrain, "build the built-in task's cached reference and pairs"},
    {"frontier", cmd_frontier, "reward against KL of losses over a sweep of betas"},
    {"export", cmd_export, "write a run's policy as a Hugging Face model folder"},
    {"discover", cmd_discover, "propose, check, train and score new losses"},
    {"bench", cmd_bench, "time the training step against the sgemm peak"},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
    fprintf(out, "usage: prefrun [--help] [--version] COMMAND [ARGS...]\n\n"
                 "Preference-optimization losses as sandboxed Lua scripts, differentiated\n"
                 "and trained by a C autodiff core.\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`prefrun COMMAND --help` describes each command.\n\n"
                 "exit codes:\n"
                 "  0  success\n"
                 "  1  the job ran and failed (invalid loss, diverged run, ...)\n"
                 "  2  usage error\n"
                 "  3  bad input (malformed file, config or data line)\n"
                 "  4  command not available in this build yet\n\n"
                 "example:\n  prefrun train losses/discopop.lua\n");
}

/* libgomp reads OMP_WAIT_POLICY and GOMP_SPINCOUNT once, when it is loaded.
 * Its default spins each idle worker for ~300k iterations (about 3 ms) after
 * every parallel region, and on 2 cores those spinners starve OpenBLAS's own
 * threads in an sgemm that follows: the training step ran 5-15x slower than
 * with a passive policy (measured: 100 steps of the default run, 14.6 s vs
 * 0.95 s). Fully passive workers sleep at once, though, and a training step
 * runs hundreds of short regions back to back, each then paying a futex
 * wake-up: a short spin of 10k iterations (~0.1 ms) keeps the workers awake
 * between them and gave 6% on `prefrun bench` tiny (102.9 -> 96.3 ms a step,
 * the sgemm peak unchanged at 206 GFLOP/s) and 25% on 100 toy steps. So when
 * OMP_WAIT_POLICY is unset, set both and re-execute this program with the
 * same arguments so libgomp sees them, once, before any command runs (every
 * command that trains, samples or evaluates needs it, and `discover` and
 * `check` hand it to the children they fork). Returns only when that is not
 * needed or not possible; the run then just goes slower. */
static void reexec_passive(char **argv)
{
    if (getenv("OMP_WAIT_POLICY"))
        return;
    if (setenv("OMP_WAIT_POLICY", "passive", 1) == 0 &&
        (getenv("GOMP_SPINCOUNT") || setenv("GOMP_SPINCOUNT", "10000", 1) == 0)) {
        fflush(NULL);
        execv("/proc/self/exe", argv);
    }
}

int main(int argc, char **argv)
{
    reexec_passive(argv);
    bool version = false;
    const CliOpt opts[] = {CLI_FLAG("version", 'V', &version)};
    /* options end at the command's name: the rest belongs to the command */
    int n;
    const CliCommand self = {CLI_COMMAND(NULL, usage, opts), .n_operands = &n, .max_operands = -1,
                             .stop_at_operand = true};
    int rc = cli_parse(&self, argc, argv);
    if (rc != CLI_CONTINUE)
        return rc;
    char **sub = argv + argc - n; /* getopt_long leaves the operands last */
    if (version) {
        printf("prefrun %s\n", PREFRUN_VERSION);
        return EXIT_OK;
    }
    if (n == 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(sub[0], commands[i].name) == 0)
            return commands[i].run(n, sub);
    fprintf(stderr, "prefrun: unknown command '%s' (see prefrun --help)\n", sub[0]);
    return EXIT_USAGE;
}
