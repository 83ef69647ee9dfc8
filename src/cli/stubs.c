/*
 * cli/stubs.c — subcommands that are not built yet. Each says so plainly and
 * exits with EXIT_UNAVAILABLE, so scripts can tell "missing" from "failed".
 * A command moves out of this file into its own cli_<name>.c when it lands.
 */
#include <stdio.h>

#include "cli/cli.h"

/* kept for the next command that lands in parts; unused while none is missing */
__attribute__((unused)) static int unavailable(const char *name, const char *issue)
{
    fprintf(stderr, "prefrun %s: not available in this build yet (%s)\n", name, issue);
    return EXIT_UNAVAILABLE;
}
