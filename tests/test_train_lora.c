/*
 * test_train_lora.c — training with use_peft (train/train_lora.c): LoRA
 * adapters on a frozen prefrun GPT, end to end through train_run.
 *
 * The checks, each against something outside the trainer:
 *   - step 1 is the base model: B starts at zero, so the policy's log-probs
 *     are the reference's and DPO's loss is -log sigmoid(0) = log 2 with
 *     rewards of exactly 0 (closed form); later steps move away from it;
 *   - the checkpoint holds the adapters in PEFT's layout and no model file,
 *     and AdamW's state is the size of the adapters: 16 r C per layer for
 *     GPT-2's all-linear (c_attn r (C + 3C), attn.c_proj r 2C, c_fc r 5C,
 *     mlp.c_proj r 5C), not the model's;
 *   - the trained model run_model_load returns is the untouched base (the
 *     same seed's init) plus scale B A for every targeted weight, computed
 *     here in double from the checkpoint's A and B: the base weights got no
 *     update;
 *   - --resume is exact: dropout on, accumulation 2, a checkpoint mid-run;
 *     the resumed run's metrics and adapter files equal the uninterrupted
 *     one's, byte for byte;
 *   - every loss in losses/ trains with adapters (finite metrics), and so
 *     do discover's training jobs (the interim fitness with use_peft);
 *   - export writes PEFT's folder (the checkpoint's two files) and, with
 *     merge, the merged model; a LoRA key without use_peft is refused.
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "model/lora.h"
#include "prefrun_config.h"
#include "testfs.h"
#include "testlib.h"
#include "task/fitness_interim.h"
#include "train/config.h"
#include "train/export.h"
#include "train/model_load.h"
#include "train/train.h"

#define C_ 32
#define L_ 2
#define R_ 4

static char root[] = "/tmp/prefrun_lora_XXXXXX";
static char err[1024];

static void lora_config(Config *c)
{
    config_defaults(c);
    c->context = 32;
    c->width = C_;
    c->layers = L_;
    c->heads = 2;
    c->toy_pairs = 200;
    c->per_device_train_batch_size = 8;
    c->per_device_eval_batch_size = 16;
    c->learning_rate = 3e-3;
    c->max_steps = 6;
    c->logging_steps = 1;
    c->eval_steps = 0;
    c->save_steps = 0;
    c->threads = 1;
    c->seed = 7;
    const char *set[] = {"use_peft=true", "lora_r=4", "target_modules=all-linear"};
    for (int i = 0; i < 3; i++)
        if (config_set(c, set[i], err, sizeof err) != 0)
            printf("# %s\n", err);
    if (config_finalize(c, err, sizeof err) != 0)
        printf("# config: %s\n", err);
}

static const char *loss_file(const char *name)
{
    static char path[4][600];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/losses/%s", PREFRUN_SOURCE_ROOT, name);
    return path[k];
}

static TrainStatus run(const Config *c, const char *loss, const char *dir, bool resume)
{
    TrainOptions o = {.cfg = *c,
                      .n_losses = 1,
                      .loss_paths = {loss},
                      .loss_weights = {1.0},
                      .run_dir = dir,
                      .resume = resume,
                      .quiet = true};
    TrainResult res;
    return train_run(&o, &res, err, sizeof err);
}

/* metric key of each training line (no eval_ lines), in order */
static int series(const char *dir, const char *key, double *out, int cap)
{
    char *text = tfs_metrics_text(dir);
    int n = 0;
    for (char *line = text; line && *line && n < cap;) {
        char *nl = strchr(line, '\n');
        json_t *j = json_loadb(line, nl ? (size_t)(nl - line) : strlen(line), 0, NULL);
        json_t *v = json_object_get(j, key);
        if (json_is_number(v))
            out[n++] = json_number_value(v);
        json_decref(j);
        line = nl ? nl + 1 : line + strlen(line);
    }
    free(text);
    return n;
}

static const char *run_dir(const char *name) { return tfs_join(root, name); }

static void step_one_is_the_base_model(void)
{
    Config c;
    lora_config(&c);
    char dir[400];
    snprintf(dir, sizeof dir, "%s", run_dir("base"));
    CHECKF(run(&c, loss_file("dpo.lua"), dir, false) == TRAIN_OK, "%s", err);
    double loss[8], chosen[8], rejected[8];
    CHECK(series(dir, "loss", loss, 8) == 6 && series(dir, "rewards/chosen", chosen, 8) == 6 &&
          series(dir, "rewards/rejected", rejected, 8) == 6);
    CHECKF(fabs(loss[0] - log(2.0)) < 1e-6, "step 1 loss %.9f, log 2 = %.9f", loss[0], log(2.0));
    CHECKF(chosen[0] == 0 && rejected[0] == 0, "step 1 rewards %g %g", chosen[0], rejected[0]);
    CHECKF(fabs(loss[5] - log(2.0)) > 1e-3, "step 6 loss %.6f: the adapters did not move", loss[5]);
}

static void checkpoint_holds_the_adapters_only(void)
{
    char ck[400];
    snprintf(ck, sizeof ck, "%s/checkpoint-6", run_dir("base"));
    CHECK(fsutil_exists(tfs_join(ck, CKPT_ADAPTER_FILE)));
    CHECK(fsutil_exists(tfs_join(ck, CKPT_ADAPTER_CONFIG_FILE)));
    CHECK(!fsutil_exists(tfs_join(ck, CKPT_MODEL_FILE)));
    StFile *f = st_open(tfs_join(ck, CKPT_OPTIMIZER_FILE), err, sizeof err);
    CHECKF(f != NULL, "%s", err);
    if (!f)
        return;
    int64_t want = (int64_t)L_ * 16 * R_ * C_; /* the header's closed form */
    const char *moments[] = {"exp_avg", "exp_avg_sq"};
    for (int i = 0; i < 2; i++) {
        const char *dtype;
        int ndim = 0;
        int64_t shape[TENSOR_MAX_DIMS], n = 1;
        int found = st_info(f, moments[i], &dtype, &ndim, shape);
        for (int k = 0; k < ndim; k++)
            n *= shape[k];
        CHECKF(found == 0 && n == want, "%s holds %lld values, the adapters %lld", moments[i],
               (long long)n, (long long)want);
    }
    st_close(f);
}

/* rows [col0, col0 + out) of w against base + scale B A in double: the
 * worst error relative to the magnitudes float32 rounds */
static double merged_error(const Tensor *w, const Tensor *base, const LoraAdapter *ad, float scale)
{
    double worst = 0;
    int in = (int)w->shape[1];
    for (int o = 0; o < ad->out; o++)
        for (int i = 0; i < in; i++) {
            double d = 0, mag = 0; /* mag: what float32 rounding is relative to */
            for (int k = 0; k < ad->A->shape[0]; k++) {
                double p = (double)ad->B->data[(int64_t)o * ad->B->shape[1] + k] *
                           ad->A->data[(int64_t)k * in + i];
                d += p;
                mag += fabs(p);
            }
            int64_t at = (int64_t)(ad->col0 + o) * in + i;
            double want = base->data[at] + scale * d, got = w->data[at];
            double e = fabs(got - want) / (fabs(base->data[at]) + scale * mag + 1e-12);
            worst = e > worst ? e : worst;
        }
    return worst;
}

static const Tensor *weight_of(const Gpt *m, int layer, LoraModule mod)
{
    const GptLayer *l = &m->h[layer];
    return mod == LORA_C_ATTN        ? l->qkvw
           : mod == LORA_ATTN_C_PROJ ? l->attprojw
           : mod == LORA_C_FC        ? l->fcw
                                     : l->fcprojw;
}

static void trained_model_is_base_plus_scaled_update(void)
{
    Config c;
    lora_config(&c);
    char ck[400];
    snprintf(ck, sizeof ck, "%s/checkpoint-6", run_dir("base"));
    Gpt *merged = NULL, *base = gpt_new(&(GptConfig){.vocab = c.vocab,
                                                     .context = c.context,
                                                     .width = c.width,
                                                     .layers = c.layers,
                                                     .heads = c.heads},
                                        false, err, sizeof err);
    CHECKF(base != NULL, "%s", err);
    if (!base)
        return;
    gpt_init(base, c.seed);
    GptLora *l = gpt_lora_load(base, ck, err, sizeof err);
    CHECKF(l != NULL, "%s", err);
    CHECKF(run_model_load(run_dir("base"), &merged, NULL, 0, err, sizeof err) == 0, "%s", err);
    if (!l || !merged)
        goto done;
    CHECKF(fabs(l->scale - 32.0f / R_) < 1e-6, "scale %g, alpha / r = 8", l->scale);
    const LoraModule mods[] = {LORA_C_ATTN, LORA_ATTN_C_PROJ, LORA_C_FC, LORA_MLP_C_PROJ};
    double worst = 0, moved = 0;
    for (int layer = 0; layer < L_; layer++)
        for (int k = 0; k < 4; k++) {
            const LoraAdapter *ad = &l->ad[layer * LORA_N_MODULES + mods[k]];
            CHECK(ad->A && ad->B);
            if (!ad->A || !ad->B)
                continue;
            double e = merged_error(weight_of(merged, layer, mods[k]),
                                    weight_of(base, layer, mods[k]), ad, l->scale);
            worst = e > worst ? e : worst;
            for (int64_t i = 0; i < ad->B->size; i++)
                moved = fabs(ad->B->data[i]) > moved ? fabs(ad->B->data[i]) : moved;
        }
    CHECKF(worst < 1e-5, "merged weights vs base + scale B A: relative error %.3g", worst);
    CHECKF(moved > 1e-4, "B is still zero after training (max |B| %g)", moved);
    /* untargeted tensors are the base's, to the bit */
    CHECK(memcmp(merged->wte->data, base->wte->data, (size_t)base->wte->size * 4) == 0);
    CHECK(memcmp(merged->h[1].ln1w->data, base->h[1].ln1w->data, (size_t)C_ * 4) == 0);
done:
    gpt_lora_free(l);
    gpt_free(base);
    gpt_free(merged);
}

static void resume_equals_uninterrupted(void)
{
    Config c;
    lora_config(&c);
    c.max_steps = 8;
    c.save_steps = 5;
    c.logging_steps = 3;
    c.gradient_accumulation_steps = 2;
    CHECK(c.lora_dropout == 0.05); /* on: the masks must be drawn again the same */
    char a[400], b[400];
    snprintf(a, sizeof a, "%s", run_dir("whole"));
    snprintf(b, sizeof b, "%s", run_dir("resumed"));
    CHECKF(run(&c, loss_file("dpo.lua"), a, false) == TRAIN_OK, "%s", err);
    CHECKF(run(&c, loss_file("dpo.lua"), b, false) == TRAIN_OK, "%s", err);
    CHECK(fsutil_remove_tree(tfs_join(b, "checkpoint-8"), err, sizeof err) == 0);
    CHECKF(run(&c, loss_file("dpo.lua"), b, true) == TRAIN_OK, "%s", err);
    char *ma = tfs_metrics_text(a), *mb = tfs_metrics_text(b);
    CHECKF(ma && mb && strcmp(ma, mb) == 0, "metrics differ:\n%s\nvs\n%s", ma ? ma : "",
           mb ? mb : "");
    free(ma);
    free(mb);
    const char *files[] = {CKPT_ADAPTER_FILE, CKPT_OPTIMIZER_FILE};
    for (int i = 0; i < 2; i++) {
        char pa[700], pb[700];
        snprintf(pa, sizeof pa, "%s/checkpoint-8/%s", a, files[i]);
        snprintf(pb, sizeof pb, "%s/checkpoint-8/%s", b, files[i]);
        CHECKF(same_file(pa, pb), "%s differs after --resume", files[i]);
    }
}

static void every_loss_trains_with_adapters(void)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/losses", PREFRUN_SOURCE_ROOT);
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".lua") != 0)
            continue;
        Config c;
        lora_config(&c);
        c.max_steps = 2;
        char name[300];
        snprintf(name, sizeof name, "loss-%s", e->d_name);
        char rd[400];
        snprintf(rd, sizeof rd, "%s", run_dir(name));
        TrainStatus st = run(&c, loss_file(e->d_name), rd, false);
        CHECKF(st == TRAIN_OK, "%s: %s", e->d_name, err);
        double loss[4];
        CHECKF(series(rd, "loss", loss, 4) == 2 && isfinite(loss[0]) && isfinite(loss[1]),
               "%s: no finite loss lines", e->d_name);
        n++;
    }
    if (d)
        closedir(d);
    CHECKF(n >= 25, "%d loss files", n);
}

static void export_writes_peft_or_merged(void)
{
    char rd[600], ck[700], peft[600], full[600], a[800], b[800];
    snprintf(rd, sizeof rd, "%s", run_dir("base"));
    snprintf(ck, sizeof ck, "%s/checkpoint-6", rd);
    snprintf(peft, sizeof peft, "%s", run_dir("peft"));
    snprintf(full, sizeof full, "%s", run_dir("merged"));
    CHECK(export_is_adapter_run(rd, err, sizeof err) == 1);
    ExportInfo info;
    CHECKF(export_adapter(rd, peft, &info, err, sizeof err) == 0, "%s", err);
    const char *files[] = {CKPT_ADAPTER_FILE, CKPT_ADAPTER_CONFIG_FILE};
    for (int i = 0; i < 2; i++) {
        snprintf(a, sizeof a, "%s/%s", peft, files[i]);
        snprintf(b, sizeof b, "%s/%s", ck, files[i]);
        CHECKF(same_file(a, b), "%s is not the checkpoint's", a);
    }
    CHECKF(export_run(rd, full, EXPORT_DTYPE_F32, &info, err, sizeof err) == 0, "%s", err);
    snprintf(a, sizeof a, "%s/model.safetensors", full);
    CHECK(fsutil_exists(a));
    /* an adapter export does not go into a model export's folder */
    CHECK(export_adapter(rd, full, &info, err, sizeof err) != 0 && strstr(err, "holds"));
    /* and a full fine-tuning run has no adapters to export */
    Config c;
    lora_config(&c);
    c.use_peft = false;
    c.max_steps = 1;
    snprintf(a, sizeof a, "%s", run_dir("full"));
    snprintf(b, sizeof b, "%s", run_dir("none"));
    CHECKF(run(&c, loss_file("dpo.lua"), a, false) == TRAIN_OK, "%s", err);
    CHECK(export_is_adapter_run(a, err, sizeof err) == 0);
    CHECK(export_adapter(a, b, &info, err, sizeof err) != 0 && strstr(err, "not a LoRA run"));
}

/* discover's training jobs take train:'s settings: the interim fitness with
 * use_peft trains adapters (a different, finite result from full
 * fine-tuning on the same seeds) */
static void fitness_jobs_train_adapters(void)
{
    Config c;
    lora_config(&c);
    char work[400];
    snprintf(work, sizeof work, "%s", run_dir("fitness"));
    FitnessOptions fo = {.cfg = c, .steps = 4, .n_seeds = 2, .seeds = {1, 2}, .work_dir = work};
    FitnessResult lo, full;
    CHECKF(fitness_interim(loss_file("dpo.lua"), &fo, &lo, err, sizeof err) == 0, "%s", err);
    fo.cfg.use_peft = false;
    CHECKF(fitness_interim(loss_file("dpo.lua"), &fo, &full, err, sizeof err) == 0, "%s", err);
    CHECK(isfinite(lo.per_seed[0]) && isfinite(lo.per_seed[1]) && isfinite(full.per_seed[0]));
    CHECKF(lo.per_seed[0] != full.per_seed[0] || lo.per_seed[1] != full.per_seed[1],
           "LoRA and full fine-tuning scored the same: %g %g", lo.per_seed[0], full.per_seed[0]);
}

static void bad_lora_settings_are_named(void)
{
    Config c;
    lora_config(&c);
    CHECK(config_set(&c, "target_modules=q_proj", err, sizeof err) == 0);
    CHECK(run(&c, loss_file("dpo.lua"), run_dir("bad"), false) != TRAIN_OK);
    CHECKF(strstr(err, "q_proj") && strstr(err, "c_attn"), "%s", err); /* names the valid ones */
}

int main(void)
{
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    RUN(step_one_is_the_base_model);
    RUN(checkpoint_holds_the_adapters_only);
    RUN(trained_model_is_base_plus_scaled_update);
    RUN(resume_equals_uninterrupted);
    RUN(every_loss_trains_with_adapters);
    RUN(export_writes_peft_or_merged);
    RUN(fitness_jobs_train_adapters);
    RUN(bad_lora_settings_are_named);
    fsutil_remove_tree(root, err, sizeof err);
    return tl_done();
}
