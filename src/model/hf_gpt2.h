/*
 * model/hf_gpt2.h — a Hugging Face GPT-2 (GPT2LMHeadModel) as prefrun's Gpt,
 * and back.
 *
 * prefrun's Gpt is GPT-2 itself, and its tensor names are HF's without the
 * "transformer." prefix (model.c). HF's GPT-2 differs in layout only: its
 * four projections are Conv1D modules, whose weight is stored [in, out]
 * (y = x W + b), where prefrun's linear, like nn.Linear, holds [out, in].
 * Those four weights are transposed on the way in and back on the way out:
 *
 *     HF (file)                                  prefrun Gpt
 *     [transformer.]wte.weight       (V, C)      wte.weight         (V, C)
 *     [transformer.]wpe.weight       (P, C)      wpe.weight         (P, C)
 *     [transformer.]h.{i}.ln_1.{weight,bias}     h.{i}.ln_1.*       (C)
 *     [transformer.]h.{i}.attn.c_attn.weight (C, 3C)   ... qkvw     (3C, C)
 *     [transformer.]h.{i}.attn.c_proj.weight (C, C)    ... attprojw (C, C)
 *     [transformer.]h.{i}.mlp.c_fc.weight    (C, F)    ... fcw      (F, C)
 *     [transformer.]h.{i}.mlp.c_proj.weight  (F, C)    ... fcprojw  (C, F)
 *     (biases and ln_2, ln_f as they are)
 *     lm_head.weight                 (V, C)      tied to wte: absent, or equal to it
 *
 * Loading accepts names with or without "transformer." (GPT2LMHeadModel and
 * GPT2Model save one or the other), ignores the causal-mask buffers older
 * versions saved (h.{i}.attn.bias, h.{i}.attn.masked_bias), and reads F32,
 * BF16 or F16 weights, sharded or not (st_shards.h). Every expected tensor
 * is checked (present, a float dtype, the right shape) and every tensor of
 * the folder accounted for before the model is allocated; a missing,
 * misshapen or extra tensor is an error naming it and the file. Weights that
 * are not finite are refused (model_file.h). n_inner (F, default 4 n_embd)
 * and layer_norm_epsilon (default 1e-5) go to GptConfig.inner and
 * .norm_eps. The LM head is tied to the token embedding: an lm_head.weight
 * that differs from wte is refused with an error naming it.
 *
 * Saving writes DIR/config.json and DIR/model.safetensors (names prefixed
 * "transformer.", no lm_head.weight: HF ties it on load, as its own
 * save_pretrained does; metadata {"format": "pt"}), each atomically, in
 * F32, BF16 or F16. An F32 round trip is bit for bit both ways. A GPT-2
 * with a head of its own (GptConfig.untied_head) is refused: this layout
 * has no place for it.
 */
#ifndef PREFRUN_HF_GPT2_H
#define PREFRUN_HF_GPT2_H

#include <stdbool.h>
#include <stddef.h>

#include "model/hf_config.h"
#include "model/model.h"
#include "model/safetensors.h"

/* The GptConfig of a GPT-2 config read from path (for messages); a value
 * prefrun's GPT does not compute is an error naming the field. */
int hf_gpt2_config(const HfConfig *c, const char *path, GptConfig *g, char *err, size_t errlen);
/* The HF config that describes a Gpt. */
HfConfig hf_gpt2_config_of(const GptConfig *g);

/* A model from DIR's weights, shaped by c (DIR's config.json, parsed):
 * trainable (a policy) or frozen (a reference). */
int hf_gpt2_load(const char *dir, const HfConfig *c, bool trainable, Gpt **out, char *err,
                 size_t errlen);
/* Writes m as a GPT2LMHeadModel folder (created if missing; one holding a
 * sharded index is refused, since the index would shadow the new file). */
int hf_gpt2_save(const Gpt *m, const char *dir, StDtype dtype, char *err, size_t errlen);

#endif
