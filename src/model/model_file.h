/*
 * model/model_file.h — a Gpt's weights as one safetensors file: written with
 * the model's shape in "__metadata__", read back into a model of that shape,
 * and found from a run directory or a checkpoint (checkpoint.h's layout).
 *
 *     model_file_save(m, "ref.safetensors", NULL, err, sizeof err);
 *     char file[1024];
 *     model_file_resolve("runs/dpo", file, sizeof file, err, sizeof err); // latest checkpoint
 *     Gpt *m;
 *     model_file_load(file, NULL, &m, err, sizeof err);
 *
 * A checkpoint's model file may carry no shape (the run's config.yaml holds
 * it); reading that YAML is the training layer's (train/model_load.h), so
 * model_file_load takes the shape to fall back on from its caller.
 *
 * Errors are values: 0 on success, -1 with a message in err.
 */
#ifndef PREFRUN_MODEL_FILE_H
#define PREFRUN_MODEL_FILE_H

#include <stdbool.h>
#include <stddef.h>

#include "model/model.h"

/* Saves m's weights under their tensor names with the model config in
 * "__metadata__" ("vocab", "context", "width", "layers", "heads"), plus the
 * NULL-terminated key, value list `meta` (may be NULL). Atomic. */
int model_file_save(const Gpt *m, const char *path, const char *const *meta, char *err,
                    size_t errlen);

/* Refuses weights that are not finite (a diverged run's checkpoint), which
 * would give a model whose every output is NaN: an error naming the file
 * (or folder), the tensor and the element. Every loader calls it. */
int model_file_finite(const Gpt *m, const char *file, char *err, size_t errlen);

/* Reads a model file's weights into m, whose shape they must have (the
 * training loop starts a policy from the task's reference this way). */
int model_file_read(Gpt *m, const char *file, char *err, size_t errlen);

/* The model file of path: path itself when it is not a directory, else the
 * checkpoint's model file, else the model file of the run's latest
 * checkpoint. A LoRA run's checkpoint gives its adapter file instead
 * (checkpoint.h's CKPT_ADAPTER_FILE; train/model_load.h merges it). */
int model_file_resolve(const char *path, char *file, size_t len, char *err, size_t errlen);

/* Whether the file's metadata holds a model shape: 1 (into *g), 0 (it holds
 * none), -1 (unreadable, err set). */
int model_file_config(const char *file, GptConfig *g, char *err, size_t errlen);

/* A frozen model from the file, shaped by its metadata or, where that holds
 * no shape, by *fallback (NULL: an error naming the file). */
int model_file_load(const char *file, const GptConfig *fallback, Gpt **out, char *err,
                    size_t errlen);

#endif
