/*
 * cli/eval.c — `prefrun eval`: reward, KL to the reference, win rate and
 * held-out preference accuracy of a trained policy (eval.h), as text or
 * JSON.
 */
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>

#include "cli/cli.h"
#include "task/eval.h"
#include "train/train.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun eval RUN_OR_CHECKPOINT [--json] [--samples N] [--prompts N]\n"
               "                    [--seed S] [--ref MODEL] [--pairs FILE] [--cache DIR]\n\n"
               "Samples N completions (temperature 1) for each of P held-out prompts of the\n"
               "built-in task from the policy and from its reference, and reports:\n"
               "  reward     the policy's mean task reward, with a 95%% interval\n"
               "  kl         KL(policy || reference) per sequence, estimated from the\n"
               "             policy's samples: mean of log p_policy(y|x) - log p_ref(y|x)\n"
               "  win rate   share of samples whose reward beats the reference's sample\n"
               "             for the same prompt (ties count half)\n"
               "  accuracy   share of held-out pairs with implicit reward margin > 0\n"
               "The reference and held-out pairs are the ones the run trained with (found\n"
               "from its config.yaml); a bare model file is evaluated on the default task.\n\n"
               "options:\n"
               "  --json          one JSON object on stdout\n"
               "  --samples N     completions per prompt (default 4)\n"
               "  --prompts P     held-out prompts (default 64, at most ~150)\n"
               "  --seed S        sampling seed (default 1)\n"
               "  --ref MODEL     the reference to compare with\n"
               "  --pairs FILE    held-out TRL pairs for the accuracy ('' to skip)\n"
               "  --cache DIR     the task cache (see prefrun pretrain)\n"
               "  --threads N     threads (default: all cores)\n"
               "  -h, --help      this text\n\n"
               "examples:\n"
               "  prefrun train losses/dpo.lua --out runs/dpo && prefrun eval runs/dpo\n"
               "  prefrun eval \"$(prefrun pretrain --quiet)\" --json   # the reference: KL 0\n");
}

typedef struct EvalArgs {
    const char *path;
    bool json;
    int threads;
    EvalOptions o;
} EvalArgs;

static int parse_option(int c, EvalArgs *a)
{
    switch (c) {
    case 'j':
        a->json = true;
        return 0;
    case 'n':
        return cli_opt_int("eval", "--samples", optarg, 1, 1 << 16, &a->o.samples);
    case 'p':
        return cli_opt_int("eval", "--prompts", optarg, 1, 1 << 16, &a->o.n_prompts);
    case 's':
        return cli_opt_u64("eval", "--seed", optarg, &a->o.seed);
    case 'r':
        a->o.reference = optarg;
        return 0;
    case 'P':
        a->o.pairs_file = optarg;
        return 0;
    case 'c':
        a->o.cache_dir = optarg;
        return 0;
    case 't':
        return cli_opt_int("eval", "--threads", optarg, 0, 1 << 10, &a->threads);
    default:
        fprintf(stderr, "(see prefrun eval --help)\n");
        return EXIT_USAGE;
    }
}

static int parse(int argc, char **argv, EvalArgs *a)
{
    static const struct option opts[] = {
        {"json", no_argument, NULL, 'j'},          {"samples", required_argument, NULL, 'n'},
        {"prompts", required_argument, NULL, 'p'}, {"seed", required_argument, NULL, 's'},
        {"ref", required_argument, NULL, 'r'},     {"pairs", required_argument, NULL, 'P'},
        {"cache", required_argument, NULL, 'c'},   {"threads", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    int c, rc = 0;
    while (rc == 0 && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return -1;
        }
        rc = parse_option(c, a);
    }
    if (rc == 0 && optind != argc - 1) {
        fprintf(stderr, "prefrun eval: expected one RUN_OR_CHECKPOINT (see --help)\n");
        return EXIT_USAGE;
    }
    a->path = argv[optind];
    return rc;
}

static void print_text(const EvalResult *r)
{
    printf("model       %s\nreference   %s\n", r->model, r->reference);
    printf("samples     %lld (mean length %.1f bytes, %.0f%% ended)\n", (long long)r->samples,
           r->mean_length, 100 * r->ended);
    printf("reward      %+.4f +- %.4f  (reference %+.4f +- %.4f)\n", r->reward, r->reward_ci,
           r->ref_reward, r->ref_reward_ci);
    printf("kl          %.4f +- %.4f nats per sequence\n", r->kl, r->kl_ci);
    printf("win rate    %.4f\n", r->win_rate);
    if (isnan(r->accuracy))
        printf("accuracy    - (no held-out pairs)\n");
    else
        printf("accuracy    %.4f on %lld held-out pairs\n", r->accuracy, (long long)r->pairs);
    printf("time        %.1f s\n", r->seconds);
}

int cmd_eval(int argc, char **argv)
{
    EvalArgs a = {0};
    eval_defaults(&a.o);
    int rc = parse(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? EXIT_OK : rc;
    train_set_threads(a.threads);
    char err[2048];
    EvalResult r;
    a.o.quiet = a.json;
    if (eval_path(a.path, &a.o, &r, err, sizeof err) != 0) {
        fprintf(stderr, "prefrun eval: %s\n", err);
        return EXIT_INPUT;
    }
    if (a.json) {
        json_t *j = eval_result_json(&r);
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
        putchar('\n');
        json_decref(j);
    } else {
        print_text(&r);
    }
    return EXIT_OK;
}
