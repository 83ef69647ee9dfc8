/*
 * fuzz_hf_config — a Hugging Face config.json from memory (hf_config_parse),
 * then what loading a model folder does with it (hf_gpt2_config), and for a
 * GPT-2 config the round trip of an export: hf_config_save read back with
 * hf_config_load gives every field again, the epsilon bit for bit.
 *
 * Bar: no crash, no sanitizer report, nothing left allocated; the round
 * trip holds.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_common.h"
#include "model/hf_config.h"
#include "model/hf_gpt2.h"

static int same(const HfConfig *a, const HfConfig *b)
{
    return a->arch == b->arch && a->vocab == b->vocab && a->context == b->context &&
           a->hidden == b->hidden && a->layers == b->layers && a->heads == b->heads &&
           a->kv_heads == b->kv_heads && a->head_dim == b->head_dim && a->inner == b->inner &&
           !memcmp(&a->norm_eps, &b->norm_eps, sizeof a->norm_eps) &&
           a->tie_embeddings == b->tie_embeddings;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    HfConfig c, back;
    if (hf_config_parse((const char *)data, size, "config.json", &c, err, sizeof err) != 0)
        return 0;
    GptConfig g;
    (void)hf_gpt2_config(&c, "config.json", &g, err, sizeof err);
    if (c.arch != HF_ARCH_GPT2)
        return 0;
    const char *out = fuzz_path("config.json", 1);
    if (hf_config_save(out, &c, "float32", err, sizeof err) != 0)
        fuzz_fail("a parsed GPT-2 config does not save: %s", err);
    if (hf_config_load(out, &back, err, sizeof err) != 0)
        fuzz_fail("a saved config.json does not load back: %s", err);
    if (!same(&c, &back))
        fuzz_fail("a saved config.json reads back different");
    return 0;
}
