/*
 * model/hf_llama.h — a Hugging Face Llama-family model (LlamaForCausalLM,
 * MistralForCausalLM, Qwen2ForCausalLM) as prefrun's Gpt, and back.
 *
 * The maths of the three is one (model.h); the files differ from the Gpt in
 * layout only. HF keeps q, k and v (and gate and up) as separate nn.Linear
 * modules, prefrun stacks each group by rows into one weight, so the parts
 * are read into and written from row ranges of the fused tensor:
 *
 *     HF (file)                                          prefrun Gpt
 *     model.embed_tokens.weight               (V, C)     wte
 *     model.layers.{i}.input_layernorm.weight (C)        h[i].ln1w
 *     model.layers.{i}.self_attn.q_proj.weight (NH HD, C)  qkvw rows [0, NH HD)
 *     model.layers.{i}.self_attn.k_proj.weight (NKV HD, C) qkvw rows [NH HD, (NH + NKV) HD)
 *     model.layers.{i}.self_attn.v_proj.weight (NKV HD, C) qkvw rows [(NH + NKV) HD, Q)
 *     model.layers.{i}.self_attn.{q,k,v}_proj.bias         qkvb, the same ranges (qkv_bias)
 *     model.layers.{i}.self_attn.o_proj.weight (C, NH HD)  attprojw
 *     model.layers.{i}.self_attn.o_proj.bias   (C)         attprojb (o_bias)
 *     model.layers.{i}.post_attention_layernorm.weight (C) h[i].ln2w
 *     model.layers.{i}.mlp.gate_proj.weight   (F, C)     fcw rows [0, F)
 *     model.layers.{i}.mlp.up_proj.weight     (F, C)     fcw rows [F, 2F)
 *     model.layers.{i}.mlp.down_proj.weight   (C, F)     fcprojw
 *     model.norm.weight                       (C)        lnfw
 *     lm_head.weight                          (V, C)     head (untied); tied: absent or = wte
 *
 * Loading reads F32, BF16 or F16, sharded or not (st_shards.h). Every
 * expected tensor is checked (present, a float dtype, the right shape) and
 * every tensor of the folder accounted for before the model is allocated;
 * the rotary inv_freq buffers older versions saved (*.rotary_emb.inv_freq)
 * are ignored, since prefrun computes them from the config. A missing,
 * misshapen or extra tensor is an error naming it and its file. With
 * tie_word_embeddings, lm_head.weight is absent or equal to the embedding;
 * without, it is required. Weights that are not finite are refused.
 *
 * Saving writes DIR/config.json (hf_config_save; the architecture from
 * hf_llama_config_of) and DIR/model.safetensors (the names above, no
 * lm_head.weight when tied, metadata {"format": "pt"}) in F32, BF16 or F16.
 * An F32 round trip is bit for bit both ways.
 *
 * Letters: V vocabulary, C width, L layers, NH query heads, NKV key/value
 * heads, HD head width, Q = (NH + 2 NKV) HD, F the MLP's width.
 */
#ifndef PREFRUN_HF_LLAMA_H
#define PREFRUN_HF_LLAMA_H

#include <stdbool.h>
#include <stddef.h>

#include "model/hf_config.h"
#include "model/model.h"
#include "model/safetensors.h"

/* The GptConfig of a Llama-family config read from path (for messages);
 * sizes the model refuses are an error naming path. */
int hf_llama_config(const HfConfig *c, const char *path, GptConfig *g, char *err, size_t errlen);
/* The HF config that describes a Llama Gpt: Qwen2ForCausalLM when it has
 * q, k, v biases and no o_proj bias, else LlamaForCausalLM (attention_bias
 * = qkv_bias; a Gpt with an o_proj bias alone has no HF architecture, and
 * hf_config_save refuses it). */
HfConfig hf_llama_config_of(const GptConfig *g);

/* A model from DIR's weights, shaped by c (DIR's config.json, parsed):
 * trainable (a policy) or frozen (a reference). */
int hf_llama_load(const char *dir, const HfConfig *c, bool trainable, Gpt **out, char *err,
                  size_t errlen);
/* Writes m as a folder of its HF architecture (created if missing; one
 * holding a sharded index is refused, since the index would shadow the new
 * file). */
int hf_llama_save(const Gpt *m, const char *dir, StDtype dtype, char *err, size_t errlen);

#endif
