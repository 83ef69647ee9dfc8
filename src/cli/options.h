/*
 * cli/options.h — the one option parser of every prefrun command. A command
 * lists its options in a table of CliOpt (built with the CLI_* macros below,
 * each pointing at where its value goes) and calls cli_parse, which owns
 * getopt_long's state, the `struct option` array and the optstring, the
 * parsing and range checks of numbers, --help, the count of operands, and
 * every usage message, in one style:
 *
 *   prefrun CMD: --OPT: expected an integer in [1, 64], got 'x'
 *   prefrun CMD: --OPT: unknown option (see prefrun CMD --help)
 *
 * A number is the whole argument or an error (no "10x" read as 10); a
 * double is also finite. Checks that need more than one option (--betas
 * and --out required, a mode among several) stay with the command.
 */
#ifndef PREFRUN_CLI_OPTIONS_H
#define PREFRUN_CLI_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum CliKind {
    CLI_KIND_FLAG,    /* bool: set to true; no argument */
    CLI_KIND_INT,     /* int in [lo, hi] */
    CLI_KIND_INT64,   /* int64_t in [lo, hi] */
    CLI_KIND_U64,     /* uint64_t, any */
    CLI_KIND_DOUBLE,  /* double in [lo, hi] ((lo, hi] with lo_open) */
    CLI_KIND_DOUBLES, /* comma-separated doubles as DOUBLE, at most max, *count of them */
    CLI_KIND_STRING,  /* const char *: a path or a name; the last one given wins */
    CLI_KIND_STRINGS, /* const char *[max]: each one given, in order, *count of them */
    CLI_KIND_CALL,    /* call(dest, arg, err): 0, or -1 with err naming the option */
} CliKind;

typedef struct CliOpt {
    const char *name; /* the long name without "--"; NULL: the short letter only */
    char letter;      /* the short option; 0: none */
    CliKind kind;
    void *dest;
    double lo, hi; /* ranges of the numbers (exact for the integers they bound) */
    bool lo_open;
    int max, *count; /* DOUBLES and STRINGS: capacity of dest, and how many were given */
    int (*call)(void *dest, const char *arg, char *err, size_t errlen);
} CliOpt;

/* One macro per kind; each checks the type its destination points to. */
#define CLI_N(arr) (int)(sizeof(arr) / sizeof((arr)[0]))
#define CLI_OPT_(n, l, k, T, p) .name = n, .letter = l, .kind = k, .dest = (1 ? (p) : (T *)0)
// clang-format off
#define CLI_RANGED_(n, l, k, T, p, lo_, hi_) {CLI_OPT_(n, l, k, T, p), .lo = lo_, .hi = hi_}
#define CLI_FLAG(n, l, p) {CLI_OPT_(n, l, CLI_KIND_FLAG, bool, p)}
#define CLI_INT(n, l, p, lo, hi) CLI_RANGED_(n, l, CLI_KIND_INT, int, p, lo, hi)
#define CLI_INT64(n, l, p, lo, hi) CLI_RANGED_(n, l, CLI_KIND_INT64, int64_t, p, lo, hi)
#define CLI_U64(n, l, p) {CLI_OPT_(n, l, CLI_KIND_U64, uint64_t, p)}
#define CLI_DOUBLE(n, l, p, lo, hi) CLI_RANGED_(n, l, CLI_KIND_DOUBLE, double, p, lo, hi)
/* open: (lo, hi], for "positive" without a made-up smallest value */
#define CLI_DOUBLES(n, l, arr, cnt, lo_, hi_, open)                                                \
    {CLI_OPT_(n, l, CLI_KIND_DOUBLES, double, arr), .lo = lo_, .hi = hi_, .lo_open = open,         \
     .max = CLI_N(arr), .count = cnt}
#define CLI_STRING(n, l, p) {CLI_OPT_(n, l, CLI_KIND_STRING, const char *, p)}
#define CLI_STRINGS(n, l, arr, cnt)                                                                \
    {CLI_OPT_(n, l, CLI_KIND_STRINGS, const char *, arr), .max = CLI_N(arr), .count = cnt}
#define CLI_CALL(n, l, fn, p) {CLI_OPT_(n, l, CLI_KIND_CALL, void, p), .call = fn}
// clang-format on

/* A command: its options, and its operands (the arguments that are not
 * options), which getopt_long moves to the end of argv. */
typedef struct CliCommand {
    const char *name;       /* "train" in messages; NULL: prefrun's own options */
    void (*usage)(FILE *f); /* the --help text (-h, --help are always there) */
    const CliOpt *opts;
    int n_opts;
    const char *operand;            /* what an operand is, for messages: "LOSS.lua" */
    const char **operands;          /* where they go (room for max_operands); NULL: nowhere */
    int *n_operands;                /* how many there are; NULL: not needed */
    int min_operands, max_operands; /* max -1: any number (operands NULL) */
    bool stop_at_operand;           /* options end at the first operand (prefrun's own) */
} CliCommand;
#define CLI_COMMAND(n, u, o) .name = n, .usage = u, .opts = o, .n_opts = CLI_N(o)

#define CLI_MAX_OPTS 32   /* the most options of a command (pretrain has 17) */
#define CLI_CONTINUE (-1) /* cli_parse: the options are parsed, run the command */

/* Parses argv[1..] (argv[0] names the command) into the destinations of
 * cmd's options and operands. Returns CLI_CONTINUE; EXIT_OK after printing
 * --help; or EXIT_USAGE after one message on stderr. */
int cli_parse(const CliCommand *cmd, int argc, char **argv);

/* One usage message, "prefrun CMD: ..." (cmd NULL: "prefrun: ..."), and
 * EXIT_USAGE, for the checks a command makes after cli_parse. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "prefrun CMD: MSG" on stderr, MSG escaped for the terminal (it may hold a
 * script's error or a file's bytes); returns code. */
int cli_error(const char *cmd, int code, const char *msg);

#endif
