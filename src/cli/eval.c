/*
 * cli/eval.c — `prefrun eval`: reward, KL to the reference, win rate and
 * held-out preference accuracy of a trained policy, or of a Hugging Face
 * model folder as it is (eval.h), as text or JSON.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "task/eval.h"
#include "train/train.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun eval RUN_OR_CHECKPOINT [--json] [--samples N] [--prompts N]\n"
               "                    [--seed S] [--ref MODEL] [--pairs FILE] [--cache DIR]\n"
               "       prefrun eval --model DIR [options]\n\n"
               "Samples N completions (temperature 1) for each of P held-out prompts of the\n"
               "built-in task from the policy and from its reference, and reports:\n"
               "  reward     the policy's mean task reward, with a 95%% interval\n"
               "  kl         KL(policy || reference) per sequence, estimated from the\n"
               "             policy's samples: mean of log p_policy(y|x) - log p_ref(y|x)\n"
               "  win rate   share of samples whose reward beats the reference's sample\n"
               "             for the same prompt (ties count half)\n"
               "  accuracy   share of held-out pairs with implicit reward margin > 0\n"
               "The reference and held-out pairs are the ones the run trained with (found\n"
               "from its config.yaml); a bare model file is evaluated on the default task.\n"
               "A run trained with --model DIR has DIR's model as its reference and the\n"
               "run's copy of DIR's tokenizer (RUN/hf/) for sampling and the pairs; the\n"
               "prompts are the task's held-out prompts all the same (the reward is defined\n"
               "on text). --model DIR evaluates a Hugging Face folder as it is: against\n"
               "itself (KL 0, win rate 0.5), or against --ref.\n\n"
               "options:\n"
               "  --model DIR     the policy is the Hugging Face model folder DIR\n"
               "  --json          one JSON object on stdout\n"
               "  --samples N     completions per prompt (default 4)\n"
               "  --prompts P     held-out prompts (default 64, at most ~150)\n"
               "  --seed S        sampling seed (default 1)\n"
               "  --ref MODEL     the reference to compare with (a run, checkpoint, model\n"
               "                  file or Hugging Face folder)\n"
               "  --pairs FILE    held-out TRL pairs for the accuracy ('' to skip)\n"
               "  --cache DIR     the task cache (see prefrun pretrain)\n"
               "  --threads N     threads (default: all cores)\n"
               "  -h, --help      this text\n\n"
               "examples:\n"
               "  prefrun train losses/dpo.lua --out runs/dpo && prefrun eval runs/dpo\n"
               "  prefrun eval \"$(prefrun pretrain --quiet)\" --json   # the reference: KL 0\n");
}

typedef struct EvalArgs {
    const char *path, *model;
    bool json;
    int threads;
    EvalOptions o;
} EvalArgs;

static int parse(int argc, char **argv, EvalArgs *a)
{
    const CliOpt opts[] = {
        CLI_STRING("model", 0, &a->model),
        CLI_FLAG("json", 0, &a->json),
        CLI_INT("samples", 0, &a->o.samples, 1, 1 << 16),
        CLI_INT("prompts", 0, &a->o.n_prompts, 1, 1 << 16),
        CLI_U64("seed", 0, &a->o.seed),
        CLI_STRING("ref", 0, &a->o.reference),
        CLI_STRING("pairs", 0, &a->o.pairs_file),
        CLI_STRING("cache", 0, &a->o.cache_dir),
        CLI_INT("threads", 0, &a->threads, 0, 1 << 10),
    };
    const CliCommand cmd = {CLI_COMMAND("eval", usage, opts), .operand = "RUN_OR_CHECKPOINT",
                            .operands = &a->path, .min_operands = 0, .max_operands = 1};
    int rc = cli_parse(&cmd, argc, argv);
    if (rc == CLI_CONTINUE && !a->path == !a->model)
        return cli_usage_error("eval", "give a RUN_OR_CHECKPOINT or --model DIR, not %s",
                               a->path ? "both" : "neither");
    return rc;
}

static void print_text(const EvalResult *r)
{
    printf("model       %s\nreference   %s\n", r->model, r->reference);
    printf("samples     %lld (mean length %.1f bytes, %.0f%% ended)\n", (long long)r->samples,
           r->mean_length, 100 * r->ended);
    printf("reward      %+.4f +- %.4f  (reference %+.4f +- %.4f)\n", r->reward, r->reward_ci,
           r->ref_reward, r->ref_reward_ci);
    printf("gain        %+.4f +- %.4f  (policy - reference, paired by prompt and seed)\n", r->gain,
           r->gain_ci);
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
    if (rc != CLI_CONTINUE)
        return rc;
    train_set_threads(a.threads);
    char err[2048];
    EvalResult r;
    a.o.quiet = a.json;
    rc = a.model ? eval_model_dir(a.model, &a.o, &r, err, sizeof err)
                 : eval_path(a.path, &a.o, &r, err, sizeof err);
    if (rc != 0) {
        cli_error("eval", 0, err);
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
