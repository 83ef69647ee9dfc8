/*
 * cli/pretrain.c — `prefrun pretrain`: builds (or finds) the built-in
 * task's cached reference model and its preference pairs, and prints the
 * reference's path on stdout (progress and a summary go to stderr).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/options.h"
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
        "  prefrun pretrain --cache /tmp/prefrun-cache --steps 300 --width 32 --layers 2\n"
        "  prefrun pretrain --bt-temp 0.5   # noisy labels, in a pairs directory of their own\n",
        (unsigned long long)d.seed, (long long)d.steps, (long long)d.docs, d.batch, d.lr,
        d.model.width, d.model.layers, d.model.heads, d.model.context, t.k, t.n_train, t.n_eval);
}

typedef struct PretrainArgs {
    TaskPrepareOptions t;
    bool force;
} PretrainArgs;

static int parse(int argc, char **argv, PretrainArgs *a)
{
    PretrainOptions *p = &a->t.pretrain;
    GptConfig *g = &p->model;
    const CliOpt opts[] = {
        CLI_STRING("cache", 0, &a->t.cache_dir),
        CLI_FLAG("force", 0, &a->force),
        CLI_U64("seed", 0, &p->seed),
        CLI_INT64("steps", 0, &p->steps, 1, 1 << 30),
        CLI_INT64("docs", 0, &p->docs, 1, 1 << 30),
        CLI_INT("batch", 0, &p->batch, 1, 1 << 16),
        CLI_DOUBLE("lr", 0, &p->lr, 1e-12, 10),
        CLI_INT("width", 0, &g->width, 1, 1 << 14),
        CLI_INT("layers", 0, &g->layers, 1, 256),
        CLI_INT("heads", 0, &g->heads, 1, 1 << 10),
        CLI_INT("context", 0, &g->context, 2, 1 << 14),
        CLI_INT("threads", 0, &p->threads, 0, 1 << 10),
        CLI_FLAG("quiet", 0, &a->t.quiet),
        CLI_INT("k", 0, &a->t.k, 2, 64),
        CLI_INT("train-prompts", 0, &a->t.n_train, 1, 1 << 16),
        CLI_INT("eval-prompts", 0, &a->t.n_eval, 1, 1 << 16),
        CLI_DOUBLE("bt-temp", 0, &a->t.bt_temp, 0, 1e6),
    };
    const CliCommand cmd = {CLI_COMMAND("pretrain", usage, opts)};
    return cli_parse(&cmd, argc, argv);
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
        cli_error("pretrain", 0, err);
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
    return rc == CLI_CONTINUE ? run(&a) : rc;
}
