/*
 * train/run_hf.h — the Hugging Face files of a run trained from `--model DIR`
 * (config `model: DIR`): a run keeps its own copy of them, so that eval,
 * sample and export work on the run alone, even after DIR moves.
 *
 *     run_hf_save("runs/dpo", "models/gpt2", err, sizeof err);  // at setup
 *     Tokenizer *tok;
 *     run_hf_tokenizer("runs/dpo/checkpoint-200", &tok, err, sizeof err);
 *     // tok == NULL and 0 returned: a run of prefrun's own byte model
 *
 * Layout: RUN/hf/ holds copies of DIR's config.json and of those of its
 * tokenizer files that exist (tokenizer.json, tokenizer_config.json,
 * special_tokens_map.json, vocab.json, merges.txt, generation_config.json,
 * chat_template.jinja, and GPT-2's original encoder.json and vocab.bpe,
 * which tokenizer_load reads too), each copied atomically under a size
 * cap; never the weights, which the checkpoints hold (the reference's stay
 * in DIR). config.json is written last, so an hf/ without it is an
 * interrupted copy, an error for run_hf_dir.
 *
 * Errors are values: 0, or -1 with a message naming the file.
 */
#ifndef PREFRUN_RUN_HF_H
#define PREFRUN_RUN_HF_H

#include <stddef.h>

#include "tokenizer/tokenizer.h"

#define RUN_HF_DIR "hf"

/* Copies model_dir's config and tokenizer files into run_dir/hf/
 * (replacing an earlier copy). */
int run_hf_save(const char *run_dir, const char *model_dir, char *err, size_t errlen);

/* The hf/ folder of the run that path is (a run directory), or that holds
 * path (a checkpoint directory or a file inside one): 1 with its path in
 * out, 0 when that run has none (or path is in no run), -1 on error. */
int run_hf_dir(const char *path, char *out, size_t len, char *err, size_t errlen);

/* The tokenizer of the run of path (run_hf_dir): *out is NULL, with 0
 * returned, when the run has no hf/ folder (prefrun's byte tokenizer). */
int run_hf_tokenizer(const char *path, Tokenizer **out, char *err, size_t errlen);

#endif
