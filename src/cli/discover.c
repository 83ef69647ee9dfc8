/*
 * cli/discover.c — `prefrun discover`: options, the settings layers, the
 * leaderboard (`--report DIR`) and the noise-floor measurement
 * (`--noise-floor LOSS.lua`, discover/compare.h). The loop itself is
 * discover/loop.c.
 *
 * Settings layers, later ones win: the defaults; OUT/discover.yaml when OUT
 * holds an earlier run (so a plain rerun resumes with the same settings);
 * --config FILE; the flags. --noise-floor reads no OUT: the defaults,
 * --config and the flags (full_steps and train: set what it trains).
 *
 * Under mpirun (a build with MPI, util/mpi_comm.h): rank 0 is this command
 * as in one process; every other rank is an evaluator
 * (discover/mpi_eval.h) that reads no flags and no files: its settings come
 * from rank 0, which tells it to stop whatever way the command ends.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "discover/compare.h"
#include "discover/discover.h"
#include "discover/mpi_eval.h"
#include "util/fsutil.h"
#include "util/mpi_comm.h"

#define NOISE_DEFAULT_SEEDS 8 /* the issue: the noise floor is measured on >= 8 seeds */

/* the options that set one settings key each, by the key they set */
static const struct {
    const char *option, *key;
} keyed[] = {
    {"generations", "generations"},
    {"candidates", "candidates"},
    {"proposer", "proposer"},
    {"llm-url", "llm.url"},
    {"llm-model", "llm.model"},
    {"llm-key-env", "llm.key_env"},
    {"temperature", "llm.temperature"},
    {"workers", "workers"},
    {"seed", "seed"},
    {"fitness", "fitness"},
    {"model", "train.model"},
};
#define N_KEYED CLI_N(keyed)

typedef struct DiscoverArgs {
    const char *config, *out, *report, *noise_floor;
    const char *values[N_KEYED]; /* of keyed[i]; NULL: not given */
    bool quiet;
    int seeds; /* --noise-floor's */
} DiscoverArgs;

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun discover [--config discover.yaml] --out DIR [options]\n"
               "       prefrun discover --report DIR\n"
               "       prefrun discover --noise-floor LOSS.lua [--fitness NAME] [--seeds N]\n\n"
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
               "  --model DIR          a Hugging Face model folder every training run starts\n"
               "                       from (train: model: DIR): the task fitness trains it\n"
               "                       on the task's pair texts through its tokenizer and\n"
               "                       scores it against DIR's model as the reference\n"
               "  --quiet              no per-candidate progress lines\n"
               "  --report DIR         print DIR's leaderboard (each fitness with its 95%%\n"
               "                       interval, and whether it is resolved from the best),\n"
               "                       write DIR/leaderboard.svg\n"
               "  --noise-floor LOSS   score LOSS on seeds 1..N, one after another, and print\n"
               "                       each seed's fitness, the mean, sd and se: the sd is the\n"
               "                       noise_sd setting (the floor under which two candidates\n"
               "                       tie); --config's full_steps and train: apply\n"
               "  --seeds N            --noise-floor's seeds, 8 to 64 (default 8)\n"
               "  -h, --help           this text\n\n"
               "Under `mpirun -np N prefrun discover ...` (a build with MPI) rank 0 runs\n"
               "the loop and owns DIR; every rank trains up to --workers candidates at a\n"
               "time; a rank lost mid-job loses only that job, which is re-queued\n"
               "(README, \"More than one machine\").\n\n"
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
               "  prefrun discover --noise-floor losses/dpo.lua --fitness interim\n"
               "  prefrun discover --noise-floor losses/dpo.lua --fitness task --seeds 8\n"
               "  prefrun train runs/disc/losses/dpo.lua\n");
}

static int parse(int argc, char **argv, DiscoverArgs *a)
{
    CliOpt opts[N_KEYED + 6] = {
        CLI_STRING("config", 0, &a->config),
        CLI_STRING("out", 0, &a->out),
        CLI_STRING("report", 0, &a->report),
        CLI_FLAG("quiet", 0, &a->quiet),
        CLI_STRING("noise-floor", 0, &a->noise_floor),
        CLI_INT("seeds", 0, &a->seeds, NOISE_DEFAULT_SEEDS, NOISE_MAX_SEEDS),
    };
    for (int i = 0; i < N_KEYED; i++)
        opts[6 + i] = (CliOpt)CLI_STRING(keyed[i].option, 0, &a->values[i]);
    const CliCommand cmd = {CLI_COMMAND("discover", usage, opts)};
    a->seeds = NOISE_DEFAULT_SEEDS;
    int rc = cli_parse(&cmd, argc, argv);
    if (rc == CLI_CONTINUE && a->report && a->noise_floor)
        return cli_usage_error("discover", "--report and --noise-floor are separate commands");
    if (rc == CLI_CONTINUE && !a->report && !a->noise_floor && !a->out)
        return cli_usage_error("discover", "--out DIR is required (see prefrun discover --help)");
    return rc;
}

/* the flags over the files: a settings key given as an option */
static int set_flags(const DiscoverArgs *a, DiscoverOptions *o, char *err, size_t errlen)
{
    for (int i = 0; i < N_KEYED; i++)
        if (a->values[i] && discover_set(o, keyed[i].key, a->values[i], err, errlen) != 0)
            return -1;
    return a->quiet ? discover_set(o, "quiet", "true", err, errlen) : 0;
}

/* the settings layers; an exit code on failure, -1 to go on */
static int settings(const DiscoverArgs *a, DiscoverOptions *o)
{
    char err[1024], saved[1100];
    discover_defaults(o);
    snprintf(saved, sizeof saved, "%s/discover.yaml", a->out);
    if (a->out && fsutil_exists(saved) && discover_load_yaml(o, saved, err, sizeof err) != 0) {
        cli_error("discover", 0, err);
        return EXIT_INPUT;
    }
    if (a->config && discover_load_yaml(o, a->config, err, sizeof err) != 0) {
        cli_error("discover", 0, err);
        return EXIT_INPUT;
    }
    if (set_flags(a, o, err, sizeof err) != 0) {
        cli_error("discover", 0, err);
        return EXIT_USAGE;
    }
    if (strlen(a->out) >= sizeof o->out_dir) {
        fprintf(stderr, "prefrun discover: --out path too long\n");
        return EXIT_USAGE;
    }
    snprintf(o->out_dir, sizeof o->out_dir, "%s", a->out);
    if (discover_finalize(o, err, sizeof err) != 0) {
        cli_error("discover", 0, err);
        return EXIT_INPUT;
    }
    return -1;
}

/* ---- --noise-floor ---------------------------------------------------------------------- */

static void print_floor(const DiscoverOptions *o, const NoiseFloor *nf)
{
    printf("mean %.6f  sd %.6f  se %.6f  (%d seeds, %.1f s)\n", nf->mean, nf->sd, nf->se, nf->n,
           nf->seconds);
    printf("suggested noise_sd: %.4g (the sd of one seed's fitness: the noise_sd setting, or\n"
           "  the noise_sd of fitness %s in discover/fitness_kinds.c)\n",
           nf->sd, o->fitness);
    int n = o->n_fitness_seeds;
    printf("with it, %d seed%s resolve%s a difference above %.4g (1.96 * sd * sqrt(2 / %d))\n", n,
           n == 1 ? "" : "s", n == 1 ? "s" : "", FITNESS_Z975 * nf->sd * sqrt(2.0 / n), n);
}

/* the settings (OUT is a scratch directory here), the runs, the summary */
static int noise_floor(DiscoverArgs *a, DiscoverOptions *o)
{
    char work[] = "/tmp/prefrun-noise-XXXXXX", err[1024];
    if (!fsutil_exists(a->noise_floor)) {
        fprintf(stderr, "prefrun discover: --noise-floor %s: no such file\n", a->noise_floor);
        return EXIT_INPUT;
    }
    if (!mkdtemp(work)) {
        perror("prefrun discover: a scratch directory in /tmp");
        return EXIT_FAILED;
    }
    a->out = work;
    int rc = settings(a, o);
    const FitnessKind *k = rc < 0 ? fitness_find(o->fitness, err, sizeof err) : NULL;
    if (rc < 0 && !k) {
        cli_error("discover", 0, err);
        rc = EXIT_INPUT;
    } else if (k) {
        printf("noise floor of %s: fitness %s, seeds 1-%d\n", a->noise_floor, k->name, a->seeds);
        fflush(stdout);
        NoiseFloor nf;
        rc = fitness_noise_floor(k, &o->train, o->full_steps, a->noise_floor, a->seeds, work,
                                 stdout, &nf, err, sizeof err) == 0
                 ? EXIT_OK
                 : EXIT_FAILED;
        if (rc == EXIT_OK)
            print_floor(o, &nf);
        else
            cli_error("discover", 0, err);
    }
    fsutil_remove_tree(work, err, sizeof err);
    return rc;
}

static int discover_main(int argc, char **argv)
{
    DiscoverArgs a = {0};
    int rc = parse(argc, argv, &a);
    if (rc != CLI_CONTINUE)
        return rc;
    char err[1024];
    if (a.report) {
        if (discover_report(stdout, a.report, err, sizeof err) == 0)
            return EXIT_OK;
        cli_error("discover", 0, err);
        return EXIT_INPUT;
    }
    DiscoverOptions *o = malloc(sizeof *o);
    if (!o)
        return EXIT_FAILED;
    if (a.noise_floor) {
        rc = noise_floor(&a, o);
        free(o);
        return rc;
    }
    rc = settings(&a, o);
    if (rc < 0) {
        rc = discover_run(o, err, sizeof err) == 0 ? EXIT_OK : EXIT_FAILED;
        if (rc != EXIT_OK) {
            char msg[sizeof err + 48];
            snprintf(msg, sizeof msg, "%s (rerun the same command to resume)", err);
            cli_error("discover", 0, msg);
        }
    }
    free(o);
    return rc;
}

/* an evaluator rank under mpirun */
static int evaluator(void)
{
    char err[1024];
    int rc = mpi_eval_serve(err, sizeof err) == 0 ? EXIT_OK : EXIT_FAILED;
    if (rc != EXIT_OK) {
        char msg[sizeof err + 48];
        snprintf(msg, sizeof msg, "rank %d (%s): %s", comm_rank(), comm_host(), err);
        cli_error("discover", 0, msg);
    }
    comm_finalize(false);
    return rc;
}

int cmd_discover(int argc, char **argv)
{
    char err[1024];
    if (comm_init(err, sizeof err) != 0) {
        cli_error("discover", 0, err);
        return EXIT_FAILED;
    }
    if (comm_rank() > 0)
        return evaluator();
    int rc = discover_main(argc, argv);
    bool lost = mpi_eval_dismiss();
    if (lost)
        fprintf(stderr, "discover: rank 0 is done; an evaluator rank was given up, so MPI is not "
                        "finalized (that would wait on it): the launcher may report rank 0 as "
                        "ending abnormally\n");
    comm_finalize(lost);
    return rc;
}
