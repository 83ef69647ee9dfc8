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
 * Options are parsed with getopt_long; every command prints its own --help.
 */
#ifndef PREFRUN_CLI_H
#define PREFRUN_CLI_H

#include <stdint.h>

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

/* Option parsers of the task's commands (cli/sample.c): 0, or EXIT_USAGE
 * after a message naming the command, the option and the range. */
int cli_opt_int(const char *cmd, const char *opt, const char *s, long lo, long hi, int *out);
int cli_opt_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);
int cli_opt_double(const char *cmd, const char *opt, const char *s, double lo, double hi,
                   double *out);

#endif
