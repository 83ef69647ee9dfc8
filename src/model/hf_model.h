/*
 * model/hf_model.h — Hugging Face model folders (config.json plus
 * safetensors weights) as prefrun models: the one entry point that reads
 * the config and hands the folder to its architecture's importer.
 *
 *     Gpt *ref;
 *     HfConfig cfg;
 *     if (hf_model_load("models/gpt2", false, &ref, &cfg, err, sizeof err)) ...;
 *     hf_model_save(ref, "out/gpt2-bf16", ST_BF16, err, sizeof err);
 *
 * By architecture: GPT2LMHeadModel (model/hf_gpt2.h); the Llama family,
 * LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM
 * (model/hf_llama.h). Saving picks by the model's GptConfig.arch: a GPT-2
 * is written as GPT2LMHeadModel, a Llama-family model as Qwen2ForCausalLM
 * or LlamaForCausalLM (hf_llama_config_of).
 */
#ifndef PREFRUN_HF_MODEL_H
#define PREFRUN_HF_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "model/hf_config.h"
#include "model/hf_gpt2.h"
#include "model/hf_llama.h"
#include "model/model.h"
#include "model/safetensors.h"

/* Whether path is a folder with a config.json (a Hugging Face model, or
 * meant to be one: hf_model_load says what is wrong with it). */
bool hf_model_is_folder(const char *path);

/* The model of DIR: trainable (a policy) or frozen (a reference); its
 * parsed config to *cfg when cfg is not NULL. */
int hf_model_load(const char *dir, bool trainable, Gpt **out, HfConfig *cfg, char *err,
                  size_t errlen);

/* Writes m as a Hugging Face folder of its architecture (config.json and
 * model.safetensors with Hugging Face's tensor names and layout) in dtype;
 * the saver of m's architecture says what it refuses. */
int hf_model_save(const Gpt *m, const char *dir, StDtype dtype, char *err, size_t errlen);

#endif
