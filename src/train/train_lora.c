/*
 * train/train_lora.c — a run with use_peft: the model frozen, LoRA adapters
 * on it (model/lora.h) the only thing AdamW updates, the reference the same
 * weights with the adapters switched off, and checkpoints that hold the
 * adapters alone, in PEFT's layout.
 *
 * What changes against full fine-tuning, and why:
 *   - the base is loaded frozen (no gradient block, no AdamW state): the
 *     memory of weights + gradients + two moments + a reference copy
 *     becomes weights + the adapters' few;
 *   - there is no tr->ref: the reference's log-probs come from the policy's
 *     own forward with lora->enabled = false, which model.c computes bit for
 *     bit as the base model's (or from the precomputed cache, as always);
 *   - the trainable vector is lora->all (trainer_params), so clipping, the
 *     gradient norm and AdamW see only the adapters;
 *   - dropout masks come from (seed, step, micro-batch), so a resumed run
 *     draws the ones the uninterrupted run drew;
 *   - a checkpoint holds adapter_config.json + adapter_model.safetensors
 *     (the files PEFT's save_pretrained writes) in place of model.safetensors;
 *     the base is named by adapter_config.json's base_model_name_or_path (the
 *     model folder, or the model file the run started from) and is read
 *     again on --resume and by run_model_load.
 */
#include "train/train_internal.h"

#include <stdlib.h>
#include <string.h>

#include "model/checkpoint.h"
#include "model/hf_model.h"
#include "model/model_file.h"
#include "util/errmsg.h"

#define PEFT_KEY_LEN 160

Tensor *trainer_params(const Trainer *tr) { return tr->lora ? tr->lora->all : tr->policy->all; }

void trainer_zero_grad(Trainer *tr)
{
    if (tr->lora)
        gpt_lora_zero_grad(tr->lora);
    else
        gpt_zero_grad(tr->policy);
}

/* splitmix64's finaliser: well-mixed seeds from (seed, step, k) */
static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void trainer_lora_seed(Trainer *tr, int micro)
{
    /* under mpirun each rank's rows draw their own masks (indices are the
     * rank's rows), so the rank is mixed in: N ranks draw masks of the same
     * distribution as one process, not the same masks */
    uint64_t rank = tr->world > 1 ? mix((uint64_t)tr->rank + 1) : 0;
    if (tr->lora)
        tr->lora->dropout_seed =
            mix(tr->cfg.seed ^ rank ^
                mix((uint64_t)tr->step * 0x9E3779B97F4A7C15ull + (uint64_t)micro));
}

/* The frozen base: the model folder's weights, or prefrun's GPT from its
 * init and the run's initial model file. */
static int load_base(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    if (c->model[0])
        return hf_model_load(c->model, false, &tr->policy, NULL, err, errlen);
    GptConfig g = {.vocab = c->vocab,
                   .context = c->context,
                   .width = c->width,
                   .layers = c->layers,
                   .heads = c->heads};
    tr->policy = gpt_new(&g, false, err, errlen);
    if (!tr->policy)
        return -1;
    gpt_init(tr->policy, c->seed);
    return tr->opt->init_model ? model_file_read(tr->policy, tr->opt->init_model, err, errlen) : 0;
}

int trainer_build_lora(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    if (c->model[0] && tr->opt->init_model)
        return err_fail(err, errlen,
                        "train: both model (%s) and an initial model file (%s) name where the "
                        "policy starts",
                        c->model, tr->opt->init_model);
    if (load_base(tr, err, errlen) != 0)
        return -1;
    LoraConfig lc = {.r = c->lora_r,
                     .alpha = (float)c->lora_alpha,
                     .use_rslora = c->use_rslora,
                     .dropout = (float)c->lora_dropout,
                     .target_modules = c->target_modules[0] ? c->target_modules : NULL};
    char why[MSG_LEN];
    tr->lora = gpt_lora_new(tr->policy, &lc, c->seed, why, sizeof why);
    if (!tr->lora)
        return err_fail(err, errlen, "target_modules / lora settings: %s", why);
    const char *base = c->model[0] ? c->model : tr->opt->init_model ? tr->opt->init_model : "";
    snprintf(tr->lora->base_model, sizeof tr->lora->base_model, "%s", base);
    if (gpt_lora_attach(tr->policy, tr->lora, err, errlen) != 0)
        return -1;
    int n = tr->lora->n_tensors;
    OptimSegment *seg = malloc((size_t)n * sizeof *seg);
    if (!seg)
        return err_fail(err, errlen, "train: out of memory");
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        seg[i] = (OptimSegment){off, tr->lora->tensors[i]->size, gpt_lora_decays(tr->lora, i)};
        off += seg[i].size;
    }
    AdamWConfig ac = {c->adam_beta1, c->adam_beta2, c->adam_epsilon, c->weight_decay};
    tr->adam = adamw_new(off, seg, n, &ac, err, errlen);
    free(seg);
    return tr->adam ? 0 : -1;
}

const Gpt *trainer_ref_model(Trainer *tr)
{
    if (!tr->lora)
        return tr->ref;
    tr->lora->enabled = false; /* trainer_ref_done switches them back on */
    return tr->policy;
}

void trainer_ref_done(Trainer *tr)
{
    if (tr->lora)
        tr->lora->enabled = true;
}

int trainer_save_adapters(const Trainer *tr, const char *dir, char *err, size_t errlen)
{
    return gpt_lora_save(tr->lora, dir, err, errlen);
}

/* The adapters of checkpoint dir into the run's own tensors (exactly: they
 * were written in float32), by PEFT's keys. */
int trainer_load_adapters(Trainer *tr, const char *dir, char *err, size_t errlen)
{
    const GptLora *l = tr->lora;
    StEntry *e = malloc((size_t)l->n_tensors * sizeof *e);
    char(*keys)[PEFT_KEY_LEN] = malloc((size_t)l->n_tensors * sizeof *keys);
    int rc = -1;
    if (!e || !keys) {
        err_fail(err, errlen, "checkpoint: out of memory");
        goto done;
    }
    for (int i = 0; i < l->n_tensors; i++) {
        gpt_lora_peft_key(l, i, keys[i], sizeof keys[i]);
        e[i] = st_entry(keys[i], l->tensors[i]);
    }
    char path[PATH_LEN + 64];
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_ADAPTER_FILE);
    StFile *f = st_open(path, err, errlen);
    if (f) {
        rc = st_read_all(f, e, l->n_tensors, true, err, errlen);
        st_close(f);
    }
done:
    free(e);
    free(keys);
    return rc;
}
