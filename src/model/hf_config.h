/*
 * model/hf_config.h — a Hugging Face model's config.json: which architecture
 * it is and every field that changes its maths, parsed and checked.
 *
 *     HfConfig c;
 *     if (hf_config_load("gpt2/config.json", &c, err, sizeof err)) ...;
 *     c.arch == HF_ARCH_GPT2; c.hidden == 768; c.inner == 3072;
 *
 * The architecture comes from "architectures" (one entry) or, without it,
 * from "model_type"; when both are there they must agree. Supported:
 * GPT2LMHeadModel (gpt2) and the Llama family: LlamaForCausalLM (llama),
 * MistralForCausalLM (mistral), Qwen2ForCausalLM (qwen2). Anything else is
 * an error naming it.
 *
 * Sizes are required (a missing one is an error naming the field); fields
 * with a Hugging Face default take it when absent (GPT-2: n_inner null ->
 * 4 n_embd, layer_norm_epsilon 1e-5, tie_word_embeddings true; Llama
 * family: num_key_value_heads = heads, head_dim = hidden / heads,
 * rms_norm_eps 1e-6, rope_theta 10000, tie_word_embeddings false). A field
 * that changes the maths to something prefrun does not compute is an error
 * naming the field and its value (activation_function other than gelu_new,
 * scale_attn_weights false, scale_attn_by_inverse_layer_idx,
 * reorder_and_upcast_attn, add_cross_attention, hidden_act other than silu,
 * mlp_bias, rope scaling other than linear or llama3, a sliding window
 * shorter than the context, quantization_config). Other fields (dropout,
 * token ids, generation settings, torch_dtype) are ignored: prefrun trains
 * without dropout and reads each tensor's dtype from the weights.
 *
 * Writing (hf_config_save) gives every field that parse reads, explicitly,
 * so that the written file parses back to the same HfConfig.
 *
 * Errors are values: 0, or -1 with a message naming the file and the field.
 */
#ifndef PREFRUN_HF_CONFIG_H
#define PREFRUN_HF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define HF_CONFIG_FILE "config.json"
#define HF_CONFIG_MAX_BYTES ((size_t)1 << 20)
#define HF_MAX_SIZE (1 << 24) /* the largest size field accepted */

typedef enum HfArch { HF_ARCH_GPT2, HF_ARCH_LLAMA, HF_ARCH_MISTRAL, HF_ARCH_QWEN2 } HfArch;

/* RoPE frequency scaling (rope_scaling, or rope_parameters in newer files) */
typedef enum HfRopeType { HF_ROPE_DEFAULT, HF_ROPE_LINEAR, HF_ROPE_LLAMA3 } HfRopeType;

typedef struct HfRope {
    double theta; /* rope_theta */
    HfRopeType type;
    double factor;                        /* linear and llama3 */
    double low_freq_factor;               /* llama3 */
    double high_freq_factor;              /* llama3 */
    int original_max_position_embeddings; /* llama3 */
} HfRope;

typedef struct HfConfig {
    HfArch arch;
    int vocab;           /* vocab_size */
    int context;         /* n_positions (n_ctx) / max_position_embeddings */
    int hidden;          /* n_embd / hidden_size */
    int layers;          /* n_layer / num_hidden_layers */
    int heads;           /* n_head / num_attention_heads */
    int kv_heads;        /* num_key_value_heads; GPT-2: heads */
    int head_dim;        /* head_dim; default hidden / heads */
    int inner;           /* n_inner (null: 4 hidden) / intermediate_size */
    double norm_eps;     /* layer_norm_epsilon / rms_norm_eps */
    bool tie_embeddings; /* tie_word_embeddings */
    /* the Llama family only */
    HfRope rope;
    bool qkv_bias;      /* biases on q, k, v: Llama attention_bias; Qwen2 always */
    bool o_bias;        /* bias on the output projection: Llama attention_bias */
    int sliding_window; /* 0: none; else at least context (a shorter one is refused) */
} HfConfig;

/* "GPT2LMHeadModel", "LlamaForCausalLM", ... */
const char *hf_arch_name(HfArch a);
/* "gpt2", "llama", ... */
const char *hf_arch_model_type(HfArch a);

/* Reads (capped at HF_CONFIG_MAX_BYTES) and parses a config.json. */
int hf_config_load(const char *path, HfConfig *c, char *err, size_t errlen);
/* The same on text already in memory; path is only for messages. */
int hf_config_parse(const char *text, size_t len, const char *path, HfConfig *c, char *err,
                    size_t errlen);
/* Writes c as a config.json of its architecture atomically, with
 * torch_dtype ("float32", "bfloat16", "float16"). A combination the
 * architecture cannot say (Llama's one attention_bias for q, k, v and o;
 * biases on Mistral; a bias on Qwen2's o_proj), a sliding window on Llama,
 * or a number that is not finite is an error naming the field. */
int hf_config_save(const char *path, const HfConfig *c, const char *torch_dtype, char *err,
                   size_t errlen);
/* The shortest decimal that reads back as the float x, as a double: what a
 * config.json holds for a float32 epsilon (1e-05, not 9.99999975e-06). */
double hf_config_decimal_of(float x);

#endif
