/*
 * cli/sample.c — `prefrun sample`: completions from any checkpoint, or from
 * a Hugging Face model folder as it is, with their task reward.
 *
 * Output: one line per completion, "REWARD<TAB>PROMPT+COMPLETION", the
 * completion's bytes as sampled (a run of a Hugging Face model: its
 * tokens decoded by the run's tokenizer, RUN/hf/); a byte the model should
 * not emit, like a newline, is printed as \n or \xHH so each sample stays
 * one line. The reward is the task's, defined on any text.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "model/hf_model.h"
#include "task/sample.h"
#include "task/task.h"
#include "tokenizer/tokenizer.h"
#include "train/model_load.h"
#include "train/run_hf.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun sample CHECKPOINT [--prompt TEXT] [-n N] [--temperature T]\n"
               "                      [--top-k K] [--seed S] [--max-new-tokens M]\n"
               "       prefrun sample --model DIR [options]\n\n"
               "Samples completions of TEXT from a model with a KV cache and prints one\n"
               "line per sample: its task reward, a tab, then prompt + completion.\n"
               "CHECKPOINT is a run directory (its latest checkpoint), a checkpoint\n"
               "directory, or a .safetensors file (e.g. the reference `prefrun pretrain`\n"
               "prints). A run trained with --model samples tokens of that model's\n"
               "tokenizer (its copy in RUN/hf/) and prints them decoded; prefrun's own\n"
               "model samples bytes. A completion ends where the model emits end-of-text\n"
               "(the tokenizer's EOS, or an eos_token_id of generation_config.json), or\n"
               "when the context is full.\n\n"
               "options:\n"
               "  --model DIR          sample a Hugging Face model folder (config.json,\n"
               "                       safetensors weights, tokenizer files) as it is, e.g.\n"
               "                       a folder `prefrun export` wrote\n"
               "  --prompt TEXT        the prompt (default: none, whole reviews; a\n"
               "                       tokenizer without a BOS token needs one)\n"
               "  -n N                 samples (default 5)\n"
               "  --temperature T      0 is greedy (default 1)\n"
               "  --top-k K            sample among the K likeliest tokens (default 0: all)\n"
               "  --seed S             sampling seed (default 1)\n"
               "  --max-new-tokens M   at most M tokens per completion (bytes for prefrun's\n"
               "                       own model; default: until the context is full)\n"
               "  -h, --help           this text\n\n"
               "examples:\n"
               "  prefrun sample runs/dpo --prompt 'the plot was ' -n 3\n"
               "  prefrun sample \"$(prefrun pretrain --quiet)\" --temperature 0.7 --top-k 20\n");
}

typedef struct SampleArgs {
    const char *path, *model, *prompt;
    int n;
    SampleOptions o;
} SampleArgs;

static int parse(int argc, char **argv, SampleArgs *a)
{
    const CliOpt opts[] = {
        CLI_STRING("model", 0, &a->model),
        CLI_STRING("prompt", 0, &a->prompt),
        CLI_INT(NULL, 'n', &a->n, 1, 1 << 20),
        CLI_DOUBLE("temperature", 0, &a->o.temperature, 0, 1e6),
        CLI_INT("top-k", 0, &a->o.top_k, 0, 1 << 20),
        CLI_U64("seed", 0, &a->o.seed),
        CLI_INT("max-new-tokens", 0, &a->o.max_new_tokens, 1, 1 << 20),
    };
    const CliCommand cmd = {CLI_COMMAND("sample", usage, opts), .operand = "CHECKPOINT",
                            .operands = &a->path, .min_operands = 0, .max_operands = 1};
    int rc = cli_parse(&cmd, argc, argv);
    if (rc == CLI_CONTINUE && !a->path == !a->model)
        return cli_usage_error("sample", "give a CHECKPOINT or --model DIR, not %s",
                               a->path ? "both" : "neither");
    return rc;
}

/* bytes of s, with the ones that would break the line escaped */
static void put_text(const char *s, int n)
{
    for (int i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\n')
            fputs("\\n", stdout);
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\x%02x", ch);
        else
            putchar(ch);
    }
}

/* The model to sample and its tokenizer (NULL: bytes), with the stop ids
 * of its generation_config.json in o: a Hugging Face folder (--model), or
 * a checkpoint and, for a run of such a model, the run's copy of its
 * files. */
static int load(const SampleArgs *a, Gpt **m, Tokenizer **tok, SampleOptions *o, char *err,
                size_t errlen)
{
    char hf[PATH_MAX];
    *tok = NULL;
    if (a->model) {
        snprintf(hf, sizeof hf, "%s", a->model);
        if (hf_model_load(a->model, false, m, NULL, err, errlen) != 0)
            return -1;
    } else {
        int has = run_model_load(a->path, m, NULL, 0, err, errlen) == 0
                      ? run_hf_dir(a->path, hf, sizeof hf, err, errlen)
                      : -1;
        if (has <= 0)
            return has;
    }
    *tok = tokenizer_load(hf, err, errlen);
    if (!*tok)
        return -1;
    return sample_stop_ids_load(hf, o, err, errlen);
}

static int print_samples(const SampleArgs *a, const Gpt *m, const SampleOptions *o, char *err,
                         size_t errlen)
{
    const char **prompts = malloc((size_t)a->n * sizeof *prompts);
    SampleResult *res = calloc((size_t)a->n, sizeof *res);
    int rc = prompts && res ? 0 : -1;
    if (rc != 0)
        snprintf(err, errlen, "out of memory");
    for (int i = 0; rc == 0 && i < a->n; i++)
        prompts[i] = a->prompt ? a->prompt : "";
    if (rc == 0)
        rc = sample_generate(m, prompts, a->n, o, res, err, errlen);
    for (int i = 0; rc == 0 && i < a->n; i++) {
        printf("%+.3f\t", task_reward(res[i].text, (size_t)res[i].len));
        put_text(prompts[i], (int)strlen(prompts[i]));
        put_text(res[i].text, res[i].len);
        putchar('\n');
    }
    sample_results_free(res, rc == 0 ? a->n : 0);
    free(res);
    free(prompts);
    return rc;
}

static int run(const SampleArgs *a)
{
    char err[1024];
    Gpt *m = NULL;
    Tokenizer *tok = NULL;
    SampleOptions o = a->o;
    if (load(a, &m, &tok, &o, err, sizeof err) != 0) {
        cli_error("sample", 0, err);
        gpt_free(m);
        tokenizer_free(tok);
        return EXIT_INPUT;
    }
    o.tokenizer = tok;
    int rc = print_samples(a, m, &o, err, sizeof err);
    if (rc != 0)
        cli_error("sample", 0, err);
    gpt_free(m);
    tokenizer_free(tok);
    return rc == 0 ? EXIT_OK : EXIT_INPUT;
}

int cmd_sample(int argc, char **argv)
{
    SampleArgs a = {.n = 5, .o = {.temperature = 1.0, .seed = 1}};
    int rc = parse(argc, argv, &a);
    return rc == CLI_CONTINUE ? run(&a) : rc;
}
