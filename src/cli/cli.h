/*
 * src/cli/ — the command line: main.c dispatches, one file per command,
 * and one option parser (options) they all use.
 * May include: every folder; nothing includes it.
 */
/*
 * cli/cli.h — the prefrun subcommands. Each takes the arguments after its own
 * name (argv[0] is the subcommand) and returns the process exit code:
 *
 *   0  success
 *   1  the job ran and failed (an invalid loss, a diverged run, a failed eval)
 *   2  usage error (unknown option, missing argument)
 *   3  bad input (a malformed file, config or data line; unreadable path)
 *   4  not available in this build yet
 *
 * Every command lists its options in a table for cli_parse (cli/options.h)
 * and prints its own --help.
 */
#ifndef PREFRUN_CLI_H
#define PREFRUN_CLI_H

#include <stddef.h>

enum {
    EXIT_OK = 0,
    EXIT_FAILED = 1,
    EXIT_USAGE = 2,
    EXIT_INPUT = 3,
    EXIT_UNAVAILABLE = 4,
};

int cmd_train(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_discover(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_frontier(int argc, char **argv);
int cmd_export(int argc, char **argv);

/* --set KEY=VALUE of a loss param into a CheckOptions, as a CLI_CALL of
 * options.h (cli/check.c; `check` and `grad` share it) */
int cli_check_set(void *check_options, const char *arg, char *err, size_t errlen);

#endif
