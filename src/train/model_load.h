/*
 * train/model_load.h — a frozen model from wherever a run keeps one: a run
 * directory (its latest checkpoint), a checkpoint directory or a
 * .safetensors file. The shape comes from the file's metadata or, for a
 * checkpoint whose model file holds none, from the config.yaml beside it
 * (which only this layer can read: model/model_file.h does the rest). A
 * LoRA run's checkpoint (adapters only, train_lora.c) loads as its base
 * model — the run's model folder, the model file it started from, or
 * prefrun's init of its seed — with the adapters merged into the weights.
 *
 *     Gpt *m;
 *     char file[1024];
 *     run_model_load("runs/dpo", &m, file, sizeof file, err, sizeof err);
 */
#ifndef PREFRUN_MODEL_LOAD_H
#define PREFRUN_MODEL_LOAD_H

#include <stddef.h>

#include "model/model.h"

/* The model file's path goes to `resolved` (may be NULL). 0, or -1 with err
 * set. */
int run_model_load(const char *path, Gpt **out, char *resolved, size_t rlen, char *err,
                   size_t errlen);

#endif
