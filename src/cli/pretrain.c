/*
 * cli/pretrain.c — `prefrun pretrain`: builds (or finds) the built-in
 * task's cached reference model and its preference pairs, and prints the
 * reference's path on stdout (progress and a summary go to stderr).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "task/pretrain.h"
#include "task/task_data.h"

static void usage(FILE *f)
{
    TaskPrepareOptions t;
    task_prepare_defaults(&t);
    const PretrainOptions d = t.pretrain;
    fprintf(
        f,
        "usage: prefrun pretrain [--cache DIR] [--force] [--seed S] [--steps N] [options]\n\n"
        "Pretrains the built-in task's reference model (cross-entropy on the task's\n"
        "reviews), samples its preference pairs, caches both, and prints the\n"
        "reference's path. Later runs (and `prefrun train` without --data) reuse the\n"
        "cache, keyed by task version, seed, model and budget.\n"
        "Cache: --cache, else $PREFRUN_CACHE, else $XDG_CACHE_HOME/prefrun, else\n"
        "~/.cache/prefrun.\n\n"
        "options:\n"
        "  --cache DIR      cache root\n"
        "  --force          rebuild the reference and pairs even when cached\n"
        "  --seed S         task seed: corpus, prompts, pairs (default %llu)\n"
        "  --steps N        optimizer steps (default %lld)\n"
        "  --docs N         corpus documents (default %lld)\n"
        "  --batch B        documents per step (default %d)\n"
        "  --lr LR          peak learning rate (default %g)\n"
        "  --width C --layers L --heads H --context T\n"
        "                   model shape (default %d, %d, %d, %d)\n"
        "  --threads N      threads (default: all cores)\n"
        "  --k K            reference completions per prompt (default %d)\n"
        "  --train-prompts N, --eval-prompts N\n"
        "                   prompts the pairs come from (default %d, %d)\n"
        "  --bt-temp T      Bradley-Terry label noise: the higher-reward completion is\n"
        "                   chosen with probability sigmoid(dr / T) (default 0: always)\n"
        "  --quiet          no progress output\n"
        "  -h, --help       this text\n\n"
        "examples:\n"
        "  prefrun pretrain\n"
        "  prefrun pretrain --cache /tmp/prefrun-cache --steps 200 --width 32 --layers 1\n"
        "  prefrun pretrain --bt-temp 0.5   # noisy labels, in a pairs directory of their own\n",
        (unsigned long long)d.seed, (long long)d.steps, (long long)d.docs, d.batch, d.lr,
        d.model.width, d.model.layers, d.model.heads, d.model.context, t.k, t.n_train, t.n_eval);
}

typedef struct PretrainArgs {
    TaskPrepareOptions t;
    bool force;
} PretrainArgs;

static int parse_shape(int c, PretrainArgs *a)
{
    GptConfig *g = &a->t.pretrain.model;
    switch (c) {
    case 'W':
        return cli_opt_int("pretrain", "--width", optarg, 1, 1 << 14, &g->width);
    case 'L':
        return cli_opt_int("pretrain", "--layers", optarg, 1, 256, &g->layers);
    case 'H':
        return cli_opt_int("pretrain", "--heads", optarg, 1, 1 << 10, &g->heads);
    case 'T':
        return cli_opt_int("pretrain", "--context", optarg, 2, 1 << 14, &g->context);
    case 'k':
        return cli_opt_int("pretrain", "--k", optarg, 2, 64, &a->t.k);
    case 'p':
        return cli_opt_int("pretrain", "--train-prompts", optarg, 1, 1 << 16, &a->t.n_train);
    case 'e':
        return cli_opt_int("pretrain", "--eval-prompts", optarg, 1, 1 << 16, &a->t.n_eval);
    default:
        return cli_opt_double("pretrain", "--bt-temp", optarg, 0, 1e6, &a->t.bt_temp);
    }
}

static int parse_option(int c, PretrainArgs *a)
{
    PretrainOptions *p = &a->t.pretrain;
    int v;
    switch (c) {
    case 'c':
        a->t.cache_dir = optarg;
        return 0;
    case 'f':
        a->force = true;
        return 0;
    case 'q':
        a->t.quiet = true;
        return 0;
    case 's':
        return cli_opt_u64("pretrain", "--seed", optarg, &p->seed);
    case 'n':
        v = cli_opt_int("pretrain", "--steps", optarg, 1, 1 << 30, &c);
        p->steps = c;
        return v;
    case 'd':
        v = cli_opt_int("pretrain", "--docs", optarg, 1, 1 << 30, &c);
        p->docs = c;
        return v;
    case 'b':
        return cli_opt_int("pretrain", "--batch", optarg, 1, 1 << 16, &p->batch);
    case 'r':
        return cli_opt_double("pretrain", "--lr", optarg, 1e-12, 10, &p->lr);
    case 't':
        return cli_opt_int("pretrain", "--threads", optarg, 0, 1 << 10, &p->threads);
    default:
        return parse_shape(c, a);
    }
}

static int parse(int argc, char **argv, PretrainArgs *a)
{
    static const struct option opts[] = {
        {"cache", required_argument, NULL, 'c'},
        {"force", no_argument, NULL, 'f'},
        {"seed", required_argument, NULL, 's'},
        {"steps", required_argument, NULL, 'n'},
        {"docs", required_argument, NULL, 'd'},
        {"batch", required_argument, NULL, 'b'},
        {"lr", required_argument, NULL, 'r'},
        {"width", required_argument, NULL, 'W'},
        {"layers", required_argument, NULL, 'L'},
        {"heads", required_argument, NULL, 'H'},
        {"context", required_argument, NULL, 'T'},
        {"threads", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},
        {"k", required_argument, NULL, 'k'},
        {"train-prompts", required_argument, NULL, 'p'},
        {"eval-prompts", required_argument, NULL, 'e'},
        {"bt-temp", required_argument, NULL, 'B'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c, rc = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return -1;
        }
        if (c == '?') {
            fprintf(stderr, "(see prefrun pretrain --help)\n");
            return EXIT_USAGE;
        }
        rc = parse_option(c, a);
    }
    if (rc == 0 && optind != argc) {
        fprintf(stderr, "prefrun pretrain: unexpected argument '%s'\n", argv[optind]);
        return EXIT_USAGE;
    }
    return rc;
}

static int run(PretrainArgs *a)
{
    char err[2048], path[TASK_PATH_LEN + 64];
    PretrainResult r = {0};
    PretrainOptions *p = &a->t.pretrain;
    p->quiet = a->t.quiet;
    int rc =
        pretrain_reference(p, a->t.cache_dir, a->force, path, sizeof path, &r, err, sizeof err);
    TaskAssets assets;
    a->t.force = a->force;
    if (rc == 0)
        rc = task_prepare(&a->t, &assets, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "prefrun pretrain: %s\n", err);
        return EXIT_FAILED;
    }
    if (!a->t.quiet)
        fprintf(stderr,
                "prefrun pretrain: reference %s (%lld steps in %.0f s, validation loss %.4f "
                "nats/token)\nprefrun pretrain: pairs %s\nprefrun pretrain: held-out pairs %s\n",
                r.cached ? "found in the cache" : "built", (long long)r.steps, r.seconds,
                r.val_loss, assets.train_file, assets.eval_file);
    printf("%s\n", assets.reference);
    return EXIT_OK;
}

int cmd_pretrain(int argc, char **argv)
{
    PretrainArgs a = {0};
    task_prepare_defaults(&a.t);
    int rc = parse(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? EXIT_OK : rc;
    return run(&a);
}
