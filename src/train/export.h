/*
 * train/export.h — a run's trained policy as a Hugging Face model folder,
 * for `prefrun export`: from_pretrained(DIR) loads it.
 *
 *     ExportDtype d;
 *     export_dtype_parse("auto", &d, err, sizeof err);
 *     ExportInfo info;
 *     if (export_run("runs/dpo", "out/dpo-hf", d, &info, err, sizeof err)) ...;
 *
 * What DIR gets. The run's latest checkpoint (or the checkpoint directory
 * or model file given; run_model_load) through hf_model_save: config.json
 * and model.safetensors with Hugging Face's tensor names and layout, in the
 * chosen dtype. A run trained from a Hugging Face model (RUN/hf/, run_hf.h)
 * then gets that model's own config.json back, with only torch_dtype (and
 * the newer key dtype, where the file has it) set to the dtype written,
 * and a copy of each of its tokenizer files (every other file of RUN/hf/,
 * byte for byte). A run of prefrun's own byte model exports as a GPT-2
 * folder without tokenizer files: its tokenizer is prefrun's bytes (token
 * b is byte b, 256 is end-of-text).
 *
 * dtype auto is the original config.json's torch_dtype when that is
 * float32, bfloat16 or float16, else float32 (and float32 for a byte-model
 * run). Weights read from a bf16 or f16 folder and trained in float32
 * round to nearest even on the way out; untrained ones come back exactly
 * as they were read.
 *
 * Safety. A DIR that exists and holds any file other than the ones export
 * writes (config.json, model.safetensors, the run's tokenizer file names)
 * is refused before anything is written, naming the file, so an export
 * never mixes with another model's files; every file is written
 * atomically (a temporary beside it, renamed).
 *
 * Errors are values: 0, or -1 with a message naming the file.
 */
#ifndef PREFRUN_EXPORT_H
#define PREFRUN_EXPORT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include "model/safetensors.h"

typedef enum ExportDtype {
    EXPORT_DTYPE_AUTO,
    EXPORT_DTYPE_F32,
    EXPORT_DTYPE_BF16,
    EXPORT_DTYPE_F16,
} ExportDtype;

/* "auto", "float32", "bfloat16" or "float16"; -1 with err naming them. */
int export_dtype_parse(const char *name, ExportDtype *out, char *err, size_t errlen);

typedef struct ExportInfo {
    char model_file[PATH_MAX]; /* the checkpoint's model file that was exported */
    StDtype dtype;             /* the dtype written */
    bool hf;                   /* the run had RUN/hf/: its config and tokenizer went along */
    int n_tokenizer_files;
} ExportInfo;

/* Exports the run, checkpoint directory or model file at path into
 * out_dir (created if missing). info may be NULL. */
int export_run(const char *path, const char *out_dir, ExportDtype dtype, ExportInfo *info,
               char *err, size_t errlen);

/* A LoRA run (use_peft; train/model_load.h) exports two ways: export_run
 * writes the base with the adapters merged in, a full model folder as
 * above; export_adapter writes the PEFT adapter folder —
 * adapter_config.json and adapter_model.safetensors as the checkpoint holds
 * them (PEFT's names, float32), plus the run's tokenizer files — which
 * peft's PeftModel.from_pretrained(base, DIR) loads onto the base model.
 * The same refusal of a folder holding other files applies. */
int export_adapter(const char *path, const char *out_dir, ExportInfo *info, char *err,
                   size_t errlen);
/* 1 when path's checkpoint holds LoRA adapters, 0 when a model, -1 on error */
int export_is_adapter_run(const char *path, char *err, size_t errlen);

#endif
