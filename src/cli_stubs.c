/*
 * cli_stubs.c — subcommands that are not built yet. Each says so plainly and
 * exits with EXIT_UNAVAILABLE, so scripts can tell "missing" from "failed".
 * A command moves out of this file into its own cli_<name>.c when it lands.
 */
#include <stdio.h>

#include "cli.h"

static int unavailable(const char *name, const char *issue)
{
    fprintf(stderr, "prefrun %s: not available in this build yet (%s)\n", name, issue);
    return EXIT_UNAVAILABLE;
}

int cmd_eval(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return unavailable("eval", "the built-in task and evaluation are not built");
}

int cmd_discover(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return unavailable("discover", "the discovery loop is not built");
}
