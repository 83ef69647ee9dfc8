/*
 * cli/options.c — cli_parse (options.h): a command's table of CliOpt turned
 * into getopt_long's arguments, each argument parsed into its destination,
 * and every usage message. getopt's own messages are off (opterr = 0, ':'
 * leading the optstring): they would name argv[0], the subcommand alone.
 */
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "util/text.h"

#define VAL_LONG_ONLY 256 /* getopt_long's value of a long-only option: this + its index */

typedef struct Getopt {
    struct option longs[CLI_MAX_OPTS + 2]; /* the table's, --help, the terminator */
    char shorts[2 * CLI_MAX_OPTS + 8];     /* "+:h", then "x" or "x:" per letter */
} Getopt;

static void build_getopt(const CliCommand *c, Getopt *g)
{
    assert(c->n_opts <= CLI_MAX_OPTS && (c->max_operands >= 0 || !c->operands));
    int k = 0, m = 0;
    if (c->stop_at_operand)
        g->shorts[m++] = '+';
    g->shorts[m++] = ':';
    g->shorts[m++] = 'h';
    for (int i = 0; i < c->n_opts; i++) {
        const CliOpt *o = &c->opts[i];
        int arg = o->kind == CLI_KIND_FLAG ? no_argument : required_argument;
        assert(o->letter != 'h' && (o->name || o->letter));
        if (o->name)
            g->longs[k++] =
                (struct option){o->name, arg, NULL, o->letter ? o->letter : VAL_LONG_ONLY + i};
        if (o->letter)
            g->shorts[m++] = o->letter;
        if (o->letter && arg == required_argument)
            g->shorts[m++] = ':';
    }
    g->longs[k++] = (struct option){"help", no_argument, NULL, 'h'};
    g->longs[k] = (struct option){NULL, 0, NULL, 0};
    g->shorts[m] = '\0';
}

static const CliOpt *find(const CliCommand *c, int val)
{
    if (val >= VAL_LONG_ONLY && val < VAL_LONG_ONLY + c->n_opts)
        return &c->opts[val - VAL_LONG_ONLY];
    for (int i = 0; val > 0 && i < c->n_opts; i++)
        if (c->opts[i].letter == val)
            return &c->opts[i];
    return NULL;
}

int cli_error(const char *cmd, int code, const char *msg)
{
    /* messages carry arguments, file names and script errors: untrusted
     * bytes, escaped on their way to the terminal (util/text.h) */
    char shown[4096];
    fprintf(stderr, "prefrun%s%s: %s\n", cmd ? " " : "", cmd ? cmd : "",
            text_for_terminal(msg, shown, sizeof shown));
    return code;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return cli_error(cmd, EXIT_USAGE, msg);
}

/* "prefrun CMD: --OPT: ..." */
__attribute__((format(printf, 3, 4))) static int opt_error(const CliCommand *c, const CliOpt *o,
                                                           const char *fmt, ...)
{
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (o->name)
        return cli_usage_error(c->name, "--%s: %s", o->name, what);
    return cli_usage_error(c->name, "-%c: %s", o->letter, what);
}

/* where to look: "prefrun train --help" */
static const char *see(const CliCommand *c, char *buf, size_t len)
{
    snprintf(buf, len, "prefrun%s%s --help", c->name ? " " : "", c->name ? c->name : "");
    return buf;
}

/* getopt_long's '?' (an unknown option, or a value given to a flag) and ':'
 * (a value missing). A short option's letter is in optopt; a long option
 * has already been stepped over, so it is argv[optind - 1]. */
static int getopt_error(const CliCommand *c, int ch, char **argv)
{
    char hint[64];
    const CliOpt *o = find(c, optopt);
    see(c, hint, sizeof hint);
    if (ch == ':' && o)
        return opt_error(c, o, "expected a value (see %s)", hint);
    if (optopt > 0 && optopt < VAL_LONG_ONLY && !o && optopt != 'h')
        return cli_usage_error(c->name, "-%c: unknown option (see %s)", optopt, hint);
    const char *arg = argv[optind - 1];
    int len = (int)strcspn(arg, "=");
    if (optopt)
        return cli_usage_error(c->name, "%.*s: takes no value (see %s)", len, arg, hint);
    return cli_usage_error(c->name, "%.*s: unknown option (see %s)", len, arg, hint);
}

/* strtoll and strtod read a prefix; a number here is the whole argument */
static bool integer_ok(const CliOpt *o, const char *s, long long *v)
{
    char *end;
    errno = 0;
    *v = strtoll(s, &end, 10);
    return end != s && !*end && errno != ERANGE && *v >= o->lo && *v <= o->hi;
}

static bool double_ok(const CliOpt *o, const char *s, char **end, double *v)
{
    *v = strtod(s, end);
    return *end != s && isfinite(*v) && (o->lo_open ? *v > o->lo : *v >= o->lo) && *v <= o->hi;
}

/* strtoull reads "-1" as 2^64 - 1: a sign is refused, not wrapped */
static bool u64_ok(const char *s, uint64_t *v)
{
    char *end;
    errno = 0;
    *v = strtoull(s, &end, 10);
    return end != s && !*end && errno != ERANGE && !strchr(s, '-');
}

/* "[1, 64]", "(0, inf)": the brackets say whether an end is allowed */
static const char *range(const CliOpt *o, char *buf, size_t len)
{
    if (o->kind == CLI_KIND_INT || o->kind == CLI_KIND_INT64)
        snprintf(buf, len, "[%lld, %lld]", (long long)o->lo, (long long)o->hi);
    else
        snprintf(buf, len, "%c%g, %g%c", o->lo_open || isinf(o->lo) ? '(' : '[', o->lo, o->hi,
                 isinf(o->hi) ? ')' : ']');
    return buf;
}

static int take_doubles(const CliCommand *c, const CliOpt *o, const char *arg)
{
    double *v = o->dest;
    char *end, r[96];
    for (const char *p = arg;; p = end + 1) {
        if (*o->count == o->max)
            return opt_error(c, o, "at most %d values, got '%s'", o->max, arg);
        if (!double_ok(o, p, &end, &v[*o->count]) || (*end && *end != ','))
            return opt_error(c, o, "expected numbers in %s separated by commas, got '%s'",
                             range(o, r, sizeof r), arg);
        ++*o->count;
        if (!*end)
            return 0;
    }
}

/* U64, DOUBLE, INT and INT64; the destination is left alone on an error */
static int take_number(const CliCommand *c, const CliOpt *o, const char *arg)
{
    char *end, r[96];
    long long i;
    double d;
    uint64_t u;
    switch (o->kind) {
    case CLI_KIND_U64:
        if (!u64_ok(arg, &u))
            return opt_error(c, o, "expected a non-negative integer, got '%s'", arg);
        *(uint64_t *)o->dest = u;
        return 0;
    case CLI_KIND_DOUBLE:
        if (!double_ok(o, arg, &end, &d) || *end)
            return opt_error(c, o, "expected a number in %s, got '%s'", range(o, r, sizeof r), arg);
        *(double *)o->dest = d;
        return 0;
    default:
        if (!integer_ok(o, arg, &i))
            return opt_error(c, o, "expected an integer in %s, got '%s'", range(o, r, sizeof r),
                             arg);
        if (o->kind == CLI_KIND_INT)
            *(int *)o->dest = (int)i;
        else
            *(int64_t *)o->dest = i;
        return 0;
    }
}

/* one option's argument into its destination: 0, or EXIT_USAGE */
static int take(const CliCommand *c, const CliOpt *o, const char *arg)
{
    char err[512];
    switch (o->kind) {
    case CLI_KIND_FLAG:
        *(bool *)o->dest = true;
        return 0;
    case CLI_KIND_STRING:
        *(const char **)o->dest = arg;
        return 0;
    case CLI_KIND_STRINGS:
        if (*o->count == o->max)
            return opt_error(c, o, "given more than %d times", o->max);
        ((const char **)o->dest)[(*o->count)++] = arg;
        return 0;
    case CLI_KIND_DOUBLES:
        return take_doubles(c, o, arg);
    case CLI_KIND_CALL:
        if (o->call(o->dest, arg, err, sizeof err) != 0)
            return cli_usage_error(c->name, "%s", err);
        return 0;
    default:
        return take_number(c, o, arg);
    }
}

static int check_operands(const CliCommand *c, char **v, int n)
{
    char hint[64];
    int max = c->max_operands < 0 ? INT_MAX : c->max_operands;
    see(c, hint, sizeof hint);
    if (n > 0 && max == 0)
        return cli_usage_error(c->name, "unexpected argument '%s' (see %s)", v[0], hint);
    if (c->min_operands == 1 && max == 1 && n != 1)
        return cli_usage_error(c->name, "expected one %s (see %s)", c->operand, hint);
    if (n > max)
        return cli_usage_error(c->name, "expected at most %d %s, got %d (see %s)", max, c->operand,
                               n, hint);
    if (n < c->min_operands)
        return cli_usage_error(c->name, "expected at least %d %s (see %s)", c->min_operands,
                               c->operand, hint);
    return CLI_CONTINUE;
}

int cli_parse(const CliCommand *c, int argc, char **argv)
{
    Getopt g;
    build_getopt(c, &g);
    optind = 0; /* glibc: 0 re-initialises getopt, for a subcommand after prefrun's options */
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, g.shorts, g.longs, NULL)) != -1) {
        if (ch == 'h') {
            c->usage(stdout);
            return EXIT_OK;
        }
        const CliOpt *o = find(c, ch);
        if (!o)
            return getopt_error(c, ch, argv);
        int rc = take(c, o, optarg);
        if (rc != 0)
            return rc;
    }
    int n = argc - optind, rc = check_operands(c, argv + optind, n);
    if (c->n_operands)
        *c->n_operands = n;
    for (int i = 0; rc == CLI_CONTINUE && c->operands && i < n; i++)
        c->operands[i] = argv[optind + i];
    return rc;
}
