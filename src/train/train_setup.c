/*
 * train/train_setup.c — everything a run holds before its first step: the
 * loss scripts and their params, the data and its split, the step plan and
 * learning-rate schedule, the policy, its frozen reference and AdamW, the
 * batch buffers and contexts, the run directory; and freeing all of it.
 *
 * Setup order matters: a resumed run loads its checkpoint after the models
 * exist and before the run directory is opened, which keeps only the
 * metrics lines of the steps the checkpoint has.
 *
 * With `model` (a Hugging Face folder): the tokenizer is the folder's for a
 * new run, which gets its own copy of it in RUN/hf/ (run_hf.h), and that
 * copy for a resumed run, so a run tokenizes as it began; the policy is the
 * folder's weights and the reference a frozen copy of them (a resumed
 * run's policy then takes the checkpoint's weights, its reference is
 * DIR's again).
 */
#include "train/train_internal.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "model/hf_model.h"
#include "model/model_file.h"
#include "train/run_hf.h"
#include "train/toydata.h"
#include "util/errmsg.h"
#include "util/fsutil.h"

#define DEFAULT_BETA 0.1 /* TRL's DPOConfig.beta, for the reward metrics */

int train_set_threads(int n)
{
    if (n <= 0)
        n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    return n;
}

static bool loss_declares(const LossScript *ls, const char *name)
{
    for (int i = 0; i < loss_param_count(ls); i++)
        if (strcmp(loss_param_name(ls, i), name) == 0)
            return true;
    return false;
}

/* Each config loss param goes to every script that declares it; one that no
 * script declares is an error naming it (a typo must not pass silently). */
static int apply_loss_params(Trainer *tr, char *err, size_t errlen)
{
    for (int p = 0; p < tr->cfg.n_loss_params; p++) {
        const ConfigLossParam *cp = &tr->cfg.loss_params[p];
        int takers = 0;
        for (int i = 0; i < tr->n_loss; i++) {
            if (!loss_declares(tr->loss[i], cp->name))
                continue;
            if (loss_set_param(tr->loss[i], cp->name, cp->value, err, errlen) != 0)
                return -1;
            takers++;
        }
        if (takers == 0) {
            snprintf(err, errlen, "loss param '%s' is not declared by %s%s", cp->name,
                     tr->n_loss > 1 ? "any of the losses, e.g. " : "", loss_path(tr->loss[0]));
            return -1;
        }
    }
    return 0;
}

static double loss_beta(const Trainer *tr)
{
    for (int i = 0; i < tr->n_loss; i++)
        for (int p = 0; p < loss_param_count(tr->loss[i]); p++)
            if (strcmp(loss_param_name(tr->loss[i], p), "beta") == 0)
                return loss_param_value(tr->loss[i], p);
    return DEFAULT_BETA;
}

int train_check_loss_weight(double w, const char *loss_path, char *err, size_t errlen)
{
    if (isfinite(w) && fabs(w) <= TRAIN_MAX_LOSS_WEIGHT)
        return 0;
    snprintf(err, errlen, "the weight of %s is %g, expected a finite number in [-%g, %g]",
             loss_path, w, TRAIN_MAX_LOSS_WEIGHT, TRAIN_MAX_LOSS_WEIGHT);
    return -1;
}

int trainer_load_losses(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    LossLimits lim = {.lua_bytes = (size_t)c->sandbox_lua_bytes,
                      .tensor_bytes = (size_t)c->sandbox_tensor_bytes,
                      .instructions = (uint64_t)c->sandbox_instructions,
                      .seconds = c->sandbox_seconds,
                      .max_depth = c->sandbox_max_depth};
    if (tr->opt->n_losses < 1 || tr->opt->n_losses > TRAIN_MAX_LOSSES) {
        snprintf(err, errlen, "train: 1 to %d loss scripts, got %d", TRAIN_MAX_LOSSES,
                 tr->opt->n_losses);
        return -1;
    }
    for (int i = 0; i < tr->opt->n_losses; i++) {
        double w = tr->opt->loss_weights[i];
        if (train_check_loss_weight(w, tr->opt->loss_paths[i], err, errlen) != 0)
            return -1;
        tr->loss[i] = loss_load(tr->opt->loss_paths[i], NULL, &lim, err, errlen);
        if (!tr->loss[i])
            return -1;
        tr->weight[i] = w;
        tr->n_loss = i + 1;
    }
    if (apply_loss_params(tr, err, errlen) != 0)
        return -1;
    tr->beta = loss_beta(tr);
    return 0;
}

/* The model's tokenizer (a run with `model`): a new run's from the model
 * folder, a resumed run's from its own copy. */
static int load_tokenizer(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    if (!c->model[0])
        return 0;
    if (!tr->opt->resume) {
        tr->tok = tokenizer_load(c->model, err, errlen);
        return tr->tok ? 0 : -1;
    }
    if (run_hf_tokenizer(tr->run_dir, &tr->tok, err, errlen) != 0)
        return -1;
    if (!tr->tok)
        return err_fail(err, errlen,
                        "--resume %s: the run trains %s but has no copy of its tokenizer "
                        "(%s/%s/)",
                        tr->run_dir, c->model, tr->run_dir, RUN_HF_DIR);
    return 0;
}

static int load_data(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    DataOptions dopt = {.max_length = c->max_length,
                        .max_prompt_length = c->max_prompt_length,
                        .skip_invalid = c->skip_invalid,
                        .chat_format = c->chat_format,
                        .tokenizer = tr->tok,
                        .vocab = tr->tok ? c->vocab : 0};
    Dataset *all = c->train_file[0] ? data_load_jsonl(c->train_file, &dopt, err, errlen)
                                    : toydata_dataset(c->seed, c->toy_pairs, &dopt, err, errlen);
    if (!all)
        return -1;
    if (c->eval_file[0]) {
        tr->train = all;
        tr->eval = data_load_jsonl(c->eval_file, &dopt, err, errlen);
        return tr->eval ? 0 : -1;
    }
    if (c->eval_fraction <= 0 || all->n < 2) {
        tr->train = all;
        return 0;
    }
    int rc = data_split(all, c->eval_fraction, c->seed, &tr->train, &tr->eval, err, errlen);
    data_free(all);
    return rc;
}

/* HF Trainer's plan: update steps per epoch = floor(batches / accumulation)
 * (at least 1); max_steps > 0 wins over epochs. */
static int plan_steps(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    if (data_order_init(&tr->order, tr->train->n, c->per_device_train_batch_size,
                        c->dataloader_drop_last, true, c->seed, err, errlen) != 0)
        return -1;
    int64_t per_epoch = data_order_batches_per_epoch(&tr->order) / c->gradient_accumulation_steps;
    if (per_epoch < 1)
        per_epoch = 1;
    double planned =
        c->max_steps > 0 ? c->max_steps : ceil(c->num_train_epochs * (double)per_epoch);
    if (planned > (double)CKPT_MAX_COUNT) { /* a checkpoint could not record the step */
        snprintf(err, errlen, "train: %g steps planned (num_train_epochs %g), more than %lld",
                 planned, c->num_train_epochs, (long long)CKPT_MAX_COUNT);
        return -1;
    }
    tr->total_steps = (int64_t)planned;
    if (tr->total_steps < 1) {
        snprintf(err, errlen, "train: the run has no steps (num_train_epochs %g, max_steps %d)",
                 c->num_train_epochs, c->max_steps);
        return -1;
    }
    LrScheduleKind kinds[] = {[CONFIG_SCHEDULE_LINEAR] = LR_LINEAR,
                              [CONFIG_SCHEDULE_COSINE] = LR_COSINE,
                              [CONFIG_SCHEDULE_CONSTANT] = LR_CONSTANT};
    tr->sched = (LrSchedule){
        .kind = kinds[c->lr_scheduler_type],
        .peak = c->learning_rate,
        .warmup_steps = c->warmup_steps > 0
                            ? c->warmup_steps
                            : (int64_t)ceil(c->warmup_ratio * (double)tr->total_steps),
        .total_steps = tr->total_steps,
    };
    return 0;
}

/* The policy with `model`: the folder's weights, trainable; its shape is
 * the one config_finalize read from the same config.json. */
static int load_hf_policy(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    if (tr->opt->init_model)
        return err_fail(err, errlen,
                        "train: both model (%s) and an initial model file (%s) name where the "
                        "policy starts",
                        c->model, tr->opt->init_model);
    if (hf_model_load(c->model, true, &tr->policy, NULL, err, errlen) != 0)
        return -1;
    const GptConfig *g = &tr->policy->cfg;
    if (g->vocab != c->vocab || g->context < c->context)
        return err_fail(err, errlen,
                        "%s: the model has vocab %d and %d positions, the config vocab %d and "
                        "context %d (did its config.json change during setup?)",
                        c->model, g->vocab, g->context, c->vocab, c->context);
    return 0;
}

int trainer_build_model(Trainer *tr, char *err, size_t errlen)
{
    const Config *c = &tr->cfg;
    if (c->use_peft)
        return trainer_build_lora(tr, err, errlen);
    if (c->model[0]) {
        if (load_hf_policy(tr, err, errlen) != 0)
            return -1;
    } else {
        GptConfig g = {.vocab = c->vocab,
                       .context = c->context,
                       .width = c->width,
                       .layers = c->layers,
                       .heads = c->heads};
        tr->policy = gpt_new(&g, true, err, errlen);
        if (!tr->policy)
            return -1;
        gpt_init(tr->policy, c->seed);
        if (tr->opt->init_model && model_file_read(tr->policy, tr->opt->init_model, err, errlen))
            return -1;
    }
    /* the reference is the initial policy: a frozen copy made before step 1 */
    tr->ref = gpt_clone_frozen(tr->policy, err, errlen);
    if (!tr->ref)
        return -1;
    OptimSegment *seg = malloc((size_t)tr->policy->n_tensors * sizeof *seg);
    if (!seg) {
        snprintf(err, errlen, "train: out of memory");
        return -1;
    }
    int64_t off = 0;
    for (int i = 0; i < tr->policy->n_tensors; i++) {
        seg[i] =
            (OptimSegment){off, tr->policy->tensors[i]->size, gpt_tensor_decays(tr->policy, i)};
        off += seg[i].size;
    }
    AdamWConfig ac = {c->adam_beta1, c->adam_beta2, c->adam_epsilon, c->weight_decay};
    tr->adam = adamw_new(off, seg, tr->policy->n_tensors, &ac, err, errlen);
    free(seg);
    return tr->adam ? 0 : -1;
}

int trainer_alloc_buffers(Trainer *tr, char *err, size_t errlen)
{
    int B = tr->cfg.per_device_train_batch_size, E = tr->cfg.per_device_eval_batch_size;
    int cap = B > E ? B : E, T = tr->cfg.context;
    size_t rows = 2 * (size_t)cap;
    tr->batch = data_batch_new(cap, T);
    tr->sb.ids = malloc(rows * T * sizeof(int32_t));
    tr->sb.targets = malloc(rows * T * sizeof(int32_t));
    tr->sb.mask = malloc(rows * T * sizeof(float));
    tr->sb.resp_len = malloc(rows * sizeof(float));
    tr->step_ctx = tensor_ctx_new(0);
    tr->ref_ctx = tensor_ctx_new(0);
    if (!tr->batch || !tr->sb.ids || !tr->sb.targets || !tr->sb.mask || !tr->sb.resp_len ||
        !tr->step_ctx || !tr->ref_ctx) {
        snprintf(err, errlen, "train: out of memory for batch buffers");
        return -1;
    }
    tr->ref_ctx->no_grad = true;
    return 0;
}

/* RUN_DIR itself, its metrics.jsonl (train_metrics.c) and config.yaml;
 * for a new run of a model folder, RUN_DIR/hf/ too (a resumed run keeps
 * the copy it began with). */
static int open_run_dir(Trainer *tr, char *err, size_t errlen)
{
    char path[PATH_LEN + 32];
    if (fsutil_mkdirs(tr->run_dir, err, errlen) != 0 || trainer_open_metrics(tr, err, errlen) != 0)
        return -1;
    if (tr->cfg.model[0] && !tr->opt->resume &&
        run_hf_save(tr->run_dir, tr->cfg.model, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/config.yaml", tr->run_dir);
    return config_save_yaml(&tr->cfg, path, err, errlen);
}

TrainStatus trainer_setup(Trainer *tr, char *err, size_t errlen)
{
    snprintf(tr->run_dir, sizeof tr->run_dir, "%s", tr->opt->run_dir);
    if (trainer_dp_setup(tr, err, errlen) != 0)
        return TRAIN_FAILED;
    train_set_threads(tr->cfg.threads);
    tr->progress = tr->opt->progress ? tr->opt->progress : stderr;
    tr->tty = isatty(fileno(tr->progress));
    if (!tr->cfg.model[0] && tr->cfg.vocab < DATA_VOCAB) {
        snprintf(err, errlen, "train: vocab %d is smaller than the tokenizer's %d tokens",
                 tr->cfg.vocab, DATA_VOCAB);
        return TRAIN_BAD_INPUT;
    }
    if (trainer_load_losses(tr, err, errlen) != 0 || load_tokenizer(tr, err, errlen) != 0 ||
        load_data(tr, err, errlen) != 0 || plan_steps(tr, err, errlen) != 0 ||
        trainer_build_model(tr, err, errlen) != 0 || trainer_alloc_buffers(tr, err, errlen) != 0)
        return TRAIN_BAD_INPUT;
    if (tr->opt->resume && trainer_resume(tr, err, errlen) != 0)
        return TRAIN_BAD_INPUT;
    if (tr->rank == 0 && open_run_dir(tr, err, errlen) != 0)
        return TRAIN_BAD_INPUT;
    if (!tr->cfg.precompute_ref_log_probs)
        return TRAIN_OK;
    if (trainer_precompute_ref(tr, tr->train, &tr->train_ref, err, errlen) != 0 ||
        (tr->eval && trainer_precompute_ref(tr, tr->eval, &tr->eval_ref, err, errlen) != 0))
        return TRAIN_FAILED;
    /* every step and evaluation now reads the caches: the frozen copy, as
     * large as the policy, is not kept */
    gpt_free(tr->ref);
    tr->ref = NULL;
    return TRAIN_OK;
}

void trainer_free(Trainer *tr)
{
    for (int i = 0; i < tr->n_loss; i++)
        loss_free(tr->loss[i]);
    gpt_free(tr->policy);
    gpt_lora_free(tr->lora);
    tr->lora = NULL;
    gpt_free(tr->ref);
    tr->policy = tr->ref = NULL;
    adamw_free(tr->adam);
    data_free(tr->train);
    data_free(tr->eval);
    tokenizer_free(tr->tok); /* after the data sets, which borrow it */
    tr->tok = NULL;
    data_order_free(&tr->order);
    data_batch_free(tr->batch);
    free(tr->sb.ids);
    free(tr->sb.targets);
    free(tr->sb.mask);
    free(tr->sb.resp_len);
    trainer_dp_free(tr);
    if (tr->step_ctx)
        tensor_ctx_free(tr->step_ctx);
    if (tr->ref_ctx)
        tensor_ctx_free(tr->ref_ctx);
    RefCache *caches[2] = {&tr->train_ref, &tr->eval_ref};
    for (int i = 0; i < 2; i++) {
        free(caches[i]->seq);
        free(caches[i]->tok);
    }
    if (tr->metrics_fd >= 0)
        close(tr->metrics_fd);
    tr->metrics_fd = -1;
}
