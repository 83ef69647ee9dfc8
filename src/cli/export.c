/*
 * cli/export.c — `prefrun export`: a run's policy as a Hugging Face model
 * folder (train/export.h), and the exit code.
 */
#include <stdbool.h>
#include <stdio.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "train/export.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: prefrun export RUN_OR_CHECKPOINT --out DIR\n"
               "                      [--dtype auto|float32|bfloat16|float16]\n\n"
               "Writes the policy of a run (its latest checkpoint), of a checkpoint directory\n"
               "or of a model file as a Hugging Face model folder, which transformers'\n"
               "AutoModelForCausalLM.from_pretrained(DIR) loads: DIR/config.json and\n"
               "DIR/model.safetensors, with Hugging Face's tensor names and layout.\n"
               "A run trained with --model gets that model's own config.json back (only\n"
               "torch_dtype changed to the dtype written) and a copy of its tokenizer files\n"
               "(from RUN/hf/), so AutoTokenizer.from_pretrained(DIR) works too. A run of\n"
               "prefrun's own byte model exports as a GPT-2 folder with no tokenizer files:\n"
               "its tokenizer is prefrun's bytes (token b is byte b, 256 is end-of-text).\n"
               "A LoRA run (use_peft) exports its adapters as a PEFT folder:\n"
               "DIR/adapter_config.json and DIR/adapter_model.safetensors (PEFT's names),\n"
               "and the tokenizer files, which PeftModel.from_pretrained(base, DIR) loads;\n"
               "with --merge, the base with the adapters merged in, as a full model folder.\n"
               "DIR may be new, empty, or an earlier export's; a DIR holding any other file\n"
               "is refused, naming the file. Every file is written atomically.\n\n"
               "options:\n"
               "  --out DIR        the folder to write (required)\n"
               "  --dtype D        the weights' dtype: auto (default: the original\n"
               "                   config.json's torch_dtype when it is one of the three,\n"
               "                   else float32), float32, bfloat16 or float16; a PEFT\n"
               "                   adapter folder is float32\n"
               "  --merge          a LoRA run: write the merged model, not the adapters\n"
               "  -h, --help       this text\n\n"
               "examples:\n"
               "  prefrun export runs/dpo --out runs/dpo-hf\n"
               "  prefrun export runs/dpo --out runs/dpo-hf --dtype bfloat16\n"
               "  prefrun export runs/dpo-lora --out runs/dpo-lora-adapter\n"
               "  prefrun export runs/dpo-lora --out runs/dpo-lora-merged --merge\n");
}

typedef struct ExportArgs {
    const char *path, *out, *dtype;
    bool merge;
} ExportArgs;

static int parse(int argc, char **argv, ExportArgs *a)
{
    const CliOpt opts[] = {
        CLI_STRING("out", 0, &a->out),
        CLI_STRING("dtype", 0, &a->dtype),
        CLI_FLAG("merge", 0, &a->merge),
    };
    const CliCommand cmd = {CLI_COMMAND("export", usage, opts), .operand = "RUN_OR_CHECKPOINT",
                            .operands = &a->path, .min_operands = 1, .max_operands = 1};
    int rc = cli_parse(&cmd, argc, argv);
    if (rc == CLI_CONTINUE && !a->out)
        return cli_usage_error("export", "--out DIR is required (see prefrun export --help)");
    return rc;
}

int cmd_export(int argc, char **argv)
{
    ExportArgs a = {.dtype = "auto"};
    int rc = parse(argc, argv, &a);
    if (rc != CLI_CONTINUE)
        return rc;
    char err[2048];
    ExportDtype d;
    if (export_dtype_parse(a.dtype, &d, err, sizeof err) != 0)
        return cli_usage_error("export", "%s", err);
    ExportInfo info;
    int lora = export_is_adapter_run(a.path, err, sizeof err);
    if (lora < 0)
        return cli_error("export", EXIT_INPUT, err);
    if (!lora && a.merge)
        return cli_usage_error("export", "--merge: %s is not a LoRA run (use_peft)", a.path);
    if (lora && !a.merge) {
        if (d != EXPORT_DTYPE_AUTO && d != EXPORT_DTYPE_F32)
            return cli_usage_error("export",
                                   "--dtype %s: a PEFT adapter folder is float32 "
                                   "(--merge writes the merged model in any dtype)",
                                   a.dtype);
        if (export_adapter(a.path, a.out, &info, err, sizeof err) != 0)
            return cli_error("export", EXIT_INPUT, err);
        fprintf(stderr, "export: %s -> %s (a PEFT adapter folder, float32, %d tokenizer file%s)\n",
                info.model_file, a.out, info.n_tokenizer_files,
                info.n_tokenizer_files == 1 ? "" : "s");
        return EXIT_OK;
    }
    if (export_run(a.path, a.out, d, &info, err, sizeof err) != 0)
        return cli_error("export", EXIT_INPUT, err);
    fprintf(stderr, "export: %s -> %s (%s", info.model_file, a.out, st_dtype_name(info.dtype));
    if (info.hf)
        fprintf(stderr, ", the run's config.json and %d tokenizer file%s)\n",
                info.n_tokenizer_files, info.n_tokenizer_files == 1 ? "" : "s");
    else
        fprintf(stderr, ", a GPT-2 folder; tokenizer: prefrun's bytes)\n");
    return EXIT_OK;
}
