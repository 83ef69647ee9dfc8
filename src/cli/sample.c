/*
 * cli/sample.c — `prefrun sample`: completions from any checkpoint, with
 * their task reward.
 *
 * Output: one line per completion, "REWARD<TAB>PROMPT+COMPLETION", the
 * completion's bytes as sampled (a byte the model should not emit, like a
 * newline, is printed as \n or \xHH so each sample stays one line).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "task/sample.h"
#include "task/task.h"
#include "train/model_load.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun sample CHECKPOINT [--prompt TEXT] [-n N] [--temperature T]\n"
               "                      [--top-k K] [--seed S] [--max-new-tokens M]\n\n"
               "Samples completions of TEXT from a model with a KV cache and prints one\n"
               "line per sample: its task reward, a tab, then prompt + completion.\n"
               "CHECKPOINT is a run directory (its latest checkpoint), a checkpoint\n"
               "directory, or a .safetensors file (e.g. the reference `prefrun pretrain`\n"
               "prints). A completion ends where the model emits end-of-text, or when\n"
               "the context is full.\n\n"
               "options:\n"
               "  --prompt TEXT        the prompt (default: none, whole reviews)\n"
               "  -n N                 samples (default 5)\n"
               "  --temperature T      0 is greedy (default 1)\n"
               "  --top-k K            sample among the K likeliest tokens (default 0: all)\n"
               "  --seed S             sampling seed (default 1)\n"
               "  --max-new-tokens M   at most M bytes per completion (default: the context)\n"
               "  -h, --help           this text\n\n"
               "examples:\n"
               "  prefrun sample runs/dpo --prompt 'the plot was ' -n 3\n"
               "  prefrun sample \"$(prefrun pretrain --quiet)\" --temperature 0.7 --top-k 20\n");
}

typedef struct SampleArgs {
    const char *path, *prompt;
    int n;
    SampleOptions o;
} SampleArgs;

static int parse(int argc, char **argv, SampleArgs *a)
{
    const CliOpt opts[] = {
        CLI_STRING("prompt", 0, &a->prompt),
        CLI_INT(NULL, 'n', &a->n, 1, 1 << 20),
        CLI_DOUBLE("temperature", 0, &a->o.temperature, 0, 1e6),
        CLI_INT("top-k", 0, &a->o.top_k, 0, 1 << 20),
        CLI_U64("seed", 0, &a->o.seed),
        CLI_INT("max-new-tokens", 0, &a->o.max_new_tokens, 1, 1 << 20),
    };
    const CliCommand cmd = {CLI_COMMAND("sample", usage, opts), .operand = "CHECKPOINT",
                            .operands = &a->path, .min_operands = 1, .max_operands = 1};
    return cli_parse(&cmd, argc, argv);
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

static int run(const SampleArgs *a)
{
    char err[1024];
    Gpt *m;
    if (run_model_load(a->path, &m, NULL, 0, err, sizeof err) != 0) {
        cli_error("sample", 0, err);
        return EXIT_INPUT;
    }
    const char **prompts = malloc((size_t)a->n * sizeof *prompts);
    SampleResult *res = calloc((size_t)a->n, sizeof *res);
    int rc = prompts && res ? 0 : -1;
    snprintf(err, sizeof err, "out of memory");
    for (int i = 0; rc == 0 && i < a->n; i++)
        prompts[i] = a->prompt ? a->prompt : "";
    if (rc == 0)
        rc = sample_generate(m, prompts, a->n, &a->o, res, err, sizeof err);
    for (int i = 0; rc == 0 && i < a->n; i++) {
        printf("%+.3f\t", task_reward(res[i].text, (size_t)res[i].len));
        put_text(prompts[i], (int)strlen(prompts[i]));
        put_text(res[i].text, res[i].len);
        putchar('\n');
    }
    if (rc != 0)
        cli_error("sample", 0, err);
    sample_results_free(res, rc == 0 ? a->n : 0);
    free(res);
    free(prompts);
    gpt_free(m);
    return rc == 0 ? EXIT_OK : EXIT_INPUT;
}

int cmd_sample(int argc, char **argv)
{
    SampleArgs a = {.n = 5, .o = {.temperature = 1.0, .seed = 1}};
    int rc = parse(argc, argv, &a);
    return rc == CLI_CONTINUE ? run(&a) : rc;
}
