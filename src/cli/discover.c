/*
 * cli/discover.c — `prefrun discover`: options, the settings layers, and the
 * leaderboard (`--report DIR`). The loop itself is discover/loop.c.
 *
 * Settings layers, later ones win: the defaults; OUT/discover.yaml when OUT
 * holds an earlier run (so a plain rerun resumes with the same settings);
 * --config FILE; the flags.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "discover/discover.h"
#include "util/fsutil.h"

typedef struct Flag {
    const char *key; /* the settings key it sets */
    const char *value;
} Flag;

#define MAX_FLAGS 32

typedef struct DiscoverArgs {
    const char *config, *out, *report;
    Flag flags[MAX_FLAGS];
    int n_flags;
} DiscoverArgs;

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun discover [--config discover.yaml] --out DIR [options]\n"
               "       prefrun discover --report DIR\n\n"
               "Discovers preference-optimization losses (the DiscoPOP method): a proposer\n"
               "writes new Lua loss files, each is checked in the sandbox (prefrun check),\n"
               "screened for duplicate behaviour, trained briefly (the hurdle), then scored\n"
               "(the fitness), in bounded worker processes; every candidate is archived in\n"
               "DIR/archive.jsonl and every checked one saved as DIR/losses/NAME.lua. Killed\n"
               "and rerun with the same --out, it resumes where it stopped.\n\n"
               "options:\n"
               "  --config FILE        settings (keys below); DIR/discover.yaml of an earlier\n"
               "                       run is read first, so a rerun resumes with its settings\n"
               "  --out DIR            the run directory (required); nothing else is written\n"
               "  --generations N      generations after the seed losses (generation 0)\n"
               "  --candidates N       proposals per generation\n"
               "  --proposer P         evolve (offline, default) | llm | command\n"
               "  --llm-url URL        OpenAI-compatible endpoint (.../v1)\n"
               "  --llm-model M        model name\n"
               "  --llm-key-env VAR    environment variable with the API key\n"
               "  --temperature T      sampling temperature of the llm proposer\n"
               "  --workers N          worker processes (default: one per core)\n"
               "  --seed S             seed of the proposer's choices\n"
               "  --fitness NAME       task (default: reward - 0.01 KL on the built-in task;\n"
               "                       its reference is built once, minutes on first use,\n"
               "                       then cached) | interim (a cheap stand-in for tests)\n"
               "  --quiet              no per-candidate progress lines\n"
               "  --report DIR         print DIR's leaderboard, write DIR/leaderboard.svg\n"
               "  -h, --help           this text\n\n"
               "settings (--config):\n");
    discover_print_keys(f);
    fprintf(f, "\nfitness functions:\n");
    for (int i = 0; i < fitness_kind_count(); i++)
        fprintf(f, "  %-10s %s%s\n", fitness_kind(i)->name, fitness_kind(i)->summary,
                fitness_kind(i)->fn ? "" : " [not built yet]");
    fprintf(f, "\nexamples:\n"
               "  prefrun discover --out runs/disc --generations 3 --candidates 4\n"
               "  prefrun discover --out runs/quick --generations 1 --candidates 2 \\\n"
               "      --fitness interim\n"
               "  prefrun discover --config examples/discover.yaml --out runs/disc\n"
               "  OPENAI_API_KEY=sk-... prefrun discover --out runs/llm --proposer llm \\\n"
               "      --llm-url https://api.openai.com/v1 --llm-model gpt-4o\n"
               "  prefrun discover --report runs/disc\n"
               "  prefrun train runs/disc/losses/dpo.lua\n");
}

static int add_flag(DiscoverArgs *a, const char *key, const char *value)
{
    if (a->n_flags == MAX_FLAGS) {
        fprintf(stderr, "prefrun discover: too many options\n");
        return -1;
    }
    a->flags[a->n_flags++] = (Flag){key, value};
    return 0;
}

static int parse(int argc, char **argv, DiscoverArgs *a)
{
    enum { O_CONFIG = 256, O_OUT, O_REPORT, O_QUIET };
    static const struct option opts[] = {
        {"config", required_argument, NULL, O_CONFIG},
        {"out", required_argument, NULL, O_OUT},
        {"report", required_argument, NULL, O_REPORT},
        {"generations", required_argument, NULL, 'g'},
        {"candidates", required_argument, NULL, 'c'},
        {"proposer", required_argument, NULL, 'p'},
        {"llm-url", required_argument, NULL, 'u'},
        {"llm-model", required_argument, NULL, 'm'},
        {"llm-key-env", required_argument, NULL, 'k'},
        {"temperature", required_argument, NULL, 't'},
        {"workers", required_argument, NULL, 'w'},
        {"seed", required_argument, NULL, 's'},
        {"fitness", required_argument, NULL, 'f'},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static const struct {
        int c;
        const char *key;
    } keyed[] = {
        {'g', "generations"}, {'c', "candidates"},  {'p', "proposer"},        {'u', "llm.url"},
        {'m', "llm.model"},   {'k', "llm.key_env"}, {'t', "llm.temperature"}, {'w', "workers"},
        {'s', "seed"},        {'f', "fitness"},
    };
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int done = 0;
        for (size_t i = 0; i < sizeof keyed / sizeof keyed[0]; i++)
            if (keyed[i].c == c) {
                if (add_flag(a, keyed[i].key, optarg) != 0)
                    return EXIT_USAGE;
                done = 1;
            }
        if (done)
            continue;
        switch (c) {
        case O_CONFIG:
            a->config = optarg;
            break;
        case O_OUT:
            a->out = optarg;
            break;
        case O_REPORT:
            a->report = optarg;
            break;
        case O_QUIET:
            if (add_flag(a, "quiet", "true") != 0)
                return EXIT_USAGE;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "prefrun discover: unexpected argument '%s' (see --help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (!a->report && !a->out) {
        fprintf(stderr, "prefrun discover: --out DIR is required (see --help)\n");
        return EXIT_USAGE;
    }
    return -1; /* go on */
}

/* the settings layers; an exit code on failure, -1 to go on */
static int settings(const DiscoverArgs *a, DiscoverOptions *o)
{
    char err[1024], saved[1100];
    discover_defaults(o);
    snprintf(saved, sizeof saved, "%s/discover.yaml", a->out);
    if (fsutil_exists(saved) && discover_load_yaml(o, saved, err, sizeof err) != 0) {
        fprintf(stderr, "prefrun discover: %s\n", err);
        return EXIT_INPUT;
    }
    if (a->config && discover_load_yaml(o, a->config, err, sizeof err) != 0) {
        fprintf(stderr, "prefrun discover: %s\n", err);
        return EXIT_INPUT;
    }
    for (int i = 0; i < a->n_flags; i++)
        if (discover_set(o, a->flags[i].key, a->flags[i].value, err, sizeof err) != 0) {
            fprintf(stderr, "prefrun discover: %s\n", err);
            return EXIT_USAGE;
        }
    if (strlen(a->out) >= sizeof o->out_dir) {
        fprintf(stderr, "prefrun discover: --out path too long\n");
        return EXIT_USAGE;
    }
    snprintf(o->out_dir, sizeof o->out_dir, "%s", a->out);
    if (discover_finalize(o, err, sizeof err) != 0) {
        fprintf(stderr, "prefrun discover: %s\n", err);
        return EXIT_INPUT;
    }
    return -1;
}

int cmd_discover(int argc, char **argv)
{
    DiscoverArgs a = {0};
    int rc = parse(argc, argv, &a);
    if (rc >= 0)
        return rc;
    char err[1024];
    if (a.report) {
        if (discover_report(stdout, a.report, err, sizeof err) == 0)
            return EXIT_OK;
        fprintf(stderr, "prefrun discover: %s\n", err);
        return EXIT_INPUT;
    }
    DiscoverOptions *o = malloc(sizeof *o);
    if (!o)
        return EXIT_FAILED;
    rc = settings(&a, o);
    if (rc < 0) {
        rc = discover_run(o, err, sizeof err) == 0 ? EXIT_OK : EXIT_FAILED;
        if (rc != EXIT_OK)
            fprintf(stderr, "prefrun discover: %s (rerun the same command to resume)\n", err);
    }
    free(o);
    return rc;
}
