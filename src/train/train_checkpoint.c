/*
 * train/train_checkpoint.c — checkpoint-<step>/ of a run: saving one
 * (model, AdamW moments, trainer state, config, loss scripts) and resuming
 * from the latest. The directory layout and the commit protocol are
 * model/checkpoint.h's; this file decides what a run puts in it.
 *
 * trainer_state.json carries the partial sums of the current logging
 * interval and every stateful loss's state, so that a resumed run writes
 * the metrics the uninterrupted run would have.
 */
#include "train/train_internal.h"

#include <math.h>
#include <stdlib.h>

#include "model/checkpoint.h"
#include "model/model_file.h"
#include "util/errmsg.h"
#include "lua/sandbox.h"
#include "util/fsutil.h"

static const char *const sum_names[] = {"sum_loss",          "sum_chosen", "sum_rejected",
                                        "sum_accuracy",      "sum_margin", "sum_logp_chosen",
                                        "sum_logp_rejected", "sum_weight", "last_grad_norm",
                                        "last_lr",           "sum_tokens"};
#define N_SUMS (int)(sizeof sum_names / sizeof sum_names[0])

/* What each sum may hold, checked on resume: an interval's sums are of
 * finite losses and log-probs (a non-finite step adds nothing), its weight
 * and tokens are counts, the last step's rate and norm are >= 0. */
typedef enum SumKind { SUM_FINITE, SUM_COUNT, SUM_NONNEG } SumKind;
static const SumKind sum_kinds[] = {SUM_FINITE, SUM_FINITE, SUM_FINITE, SUM_NONNEG,
                                    SUM_FINITE, SUM_FINITE, SUM_FINITE, SUM_COUNT,
                                    SUM_NONNEG, SUM_NONNEG, SUM_COUNT};
_Static_assert(sizeof sum_kinds / sizeof *sum_kinds == N_SUMS, "a sum without its kind");

static double *sum_field(MetricSums *m, int i)
{
    double *f[N_SUMS] = {&m->loss,      &m->chosen,      &m->rejected,      &m->accuracy,
                         &m->margin,    &m->logp_chosen, &m->logp_rejected, &m->weight,
                         &m->grad_norm, &m->lr,          &m->tokens};
    return f[i];
}

/* The policy with its shape in the file's metadata (model_file.h), so a
 * checkpoint of any architecture loads without its config.yaml. */
static int save_model(const Gpt *m, const char *path, char *err, size_t errlen)
{
    const char *meta[] = {"producer", "prefrun", NULL};
    return model_file_save(m, path, meta, err, errlen);
}

static int save_state(Trainer *tr, const char *dir, char *err, size_t errlen)
{
    TrainerState s = {.step = tr->step,
                      .epoch = tr->order.epoch,
                      .epoch_pos = tr->order.pos,
                      .tokens_seen = tr->tokens_seen,
                      .skipped_batches = tr->skipped};
    for (int i = 0; i < N_SUMS; i++)
        ckpt_state_set(&s, sum_names[i], *sum_field(&tr->sums, i));
    ckpt_state_set(&s, "adam_t", (double)tr->adam->t);
    for (int i = 0; i < tr->n_loss; i++) { /* --resume without --loss-weights reuses them */
        char name[CKPT_VALUE_NAME_LEN];
        snprintf(name, sizeof name, "loss_weight.%d", i);
        ckpt_state_set(&s, name, tr->weight[i]);
    }
    for (int i = 0; i < tr->n_loss; i++) /* restored by load_checkpoint */
        for (int k = 0; k < loss_state_count(tr->loss[i]); k++) {
            char name[CKPT_VALUE_NAME_LEN];
            snprintf(name, sizeof name, "loss%d.state.%s", i, loss_state_name(tr->loss[i], k));
            ckpt_state_set(&s, name, loss_state_value(tr->loss[i], k));
        }
    char path[PATH_LEN + 64];
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_STATE_FILE);
    return ckpt_state_save(path, &s, err, errlen);
}

int trainer_save_checkpoint(Trainer *tr, char *err, size_t errlen)
{
    char dir[PATH_LEN], path[PATH_LEN + 64];
    if (tr->rank > 0) /* rank 0 writes; every rank holds the same state */
        return 0;
    if (ckpt_begin(tr->run_dir, tr->step, dir, sizeof dir, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_MODEL_FILE);
    if (tr->lora ? trainer_save_adapters(tr, dir, err, errlen) != 0
                 : save_model(tr->policy, path, err, errlen) != 0)
        return -1;
    StEntry opt[2] = {st_entry("exp_avg", tr->adam->m), st_entry("exp_avg_sq", tr->adam->v)};
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_OPTIMIZER_FILE);
    if (st_save(path, opt, 2, NULL, err, errlen) != 0 || save_state(tr, dir, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_CONFIG_FILE);
    if (config_save_yaml(&tr->cfg, path, err, errlen) != 0)
        return -1;
    for (int i = 0; i < tr->n_loss; i++) {
        if (i == 0)
            snprintf(path, sizeof path, "%s/%s", dir, CKPT_LOSS_FILE);
        else
            snprintf(path, sizeof path, "%s/loss-%d.lua", dir, i + 1);
        if (fsutil_copy_atomic(loss_path(tr->loss[i]), SANDBOX_SOURCE_CAP, path, err, errlen) != 0)
            return -1;
    }
    if (ckpt_commit(tr->run_dir, tr->step, tr->cfg.save_total_limit, err, errlen) != 0)
        return -1;
    ckpt_path(tr->last_ckpt, sizeof tr->last_ckpt, tr->run_dir, tr->step, NULL);
    return 0;
}

static int load_tensors(const char *path, const StEntry *e, int n, char *err, size_t errlen)
{
    StFile *f = st_open(path, err, errlen);
    if (!f)
        return -1;
    int rc = st_read_all(f, e, n, true, err, errlen);
    st_close(f);
    return rc;
}

static bool sum_ok(SumKind k, double v)
{
    bool count = v == floor(v) && v <= (double)CKPT_MAX_COUNT;
    return isfinite(v) && (k == SUM_FINITE || (v >= 0 && (k == SUM_NONNEG || count)));
}

/* The values a resume uses, each against its meaning. The counters
 * themselves ckpt_state_load_at has checked: in [0, 2^53], and the step
 * the checkpoint's own. */
static int check_state(const TrainerState *s, const char *path, char *err, size_t errlen)
{
    static const char *const what[] = {"a finite number", "a count (an integer >= 0)",
                                       "a finite number >= 0"};
    if (s->skipped_batches > s->step)
        return err_fail(err, errlen, "%s: skipped_batches is %lld, more than the step (%lld)", path,
                        (long long)s->skipped_batches, (long long)s->step);
    /* every step not skipped is one AdamW update: the bias correction's t */
    int64_t updates = s->step - s->skipped_batches;
    double t = ckpt_state_get(s, "adam_t", (double)updates);
    if (t != (double)updates)
        return err_fail(err, errlen,
                        "%s: value \"adam_t\" is %g, expected step - skipped_batches = %lld "
                        "(one AdamW update per step not skipped)",
                        path, t, (long long)updates);
    for (int i = 0; i < N_SUMS; i++) {
        double v = ckpt_state_get(s, sum_names[i], 0);
        if (!sum_ok(sum_kinds[i], v))
            return err_fail(err, errlen, "%s: value \"%s\" is %g, expected %s", path, sum_names[i],
                            v, what[sum_kinds[i]]);
    }
    double acc = ckpt_state_get(s, "sum_accuracy", 0), w = ckpt_state_get(s, "sum_weight", 0);
    if (acc > w * (1 + 1e-9)) /* each micro-batch adds an accuracy in [0, 1] and 1 to the weight */
        return err_fail(err, errlen, "%s: value \"sum_accuracy\" is %g, more than sum_weight (%g)",
                        path, acc, w);
    return 0;
}

/* Every stateful loss (bco_pair's running mean) continues where it stopped. */
static int restore_loss_state(Trainer *tr, const TrainerState *s, const char *path, char *err,
                              size_t errlen)
{
    for (int i = 0; i < tr->n_loss; i++)
        for (int k = 0; k < loss_state_count(tr->loss[i]); k++) {
            char name[CKPT_VALUE_NAME_LEN], why[MSG_LEN];
            const char *key = loss_state_name(tr->loss[i], k);
            snprintf(name, sizeof name, "loss%d.state.%s", i, key);
            double v = ckpt_state_get(s, name, loss_state_value(tr->loss[i], k));
            if (loss_set_state(tr->loss[i], key, v, why, sizeof why) != 0) {
                snprintf(err, errlen, "%s: value \"%s\": %s", path, name, why);
                return -1;
            }
        }
    return 0;
}

static int load_weights(Trainer *tr, const char *dir, char *err, size_t errlen)
{
    char path[PATH_LEN + 64];
    Gpt *m = tr->policy;
    if (tr->lora) {
        StEntry opt[2] = {st_entry("exp_avg", tr->adam->m), st_entry("exp_avg_sq", tr->adam->v)};
        snprintf(path, sizeof path, "%s/%s", dir, CKPT_OPTIMIZER_FILE);
        return trainer_load_adapters(tr, dir, err, errlen) != 0
                   ? -1
                   : load_tensors(path, opt, 2, err, errlen);
    }
    StEntry *e = malloc((size_t)m->n_tensors * sizeof *e);
    if (!e) {
        snprintf(err, errlen, "checkpoint: out of memory");
        return -1;
    }
    for (int i = 0; i < m->n_tensors; i++)
        e[i] = st_entry(m->tensors[i]->name, m->tensors[i]);
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_MODEL_FILE);
    int rc = load_tensors(path, e, m->n_tensors, err, errlen);
    free(e);
    StEntry opt[2] = {st_entry("exp_avg", tr->adam->m), st_entry("exp_avg_sq", tr->adam->v)};
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_OPTIMIZER_FILE);
    return rc != 0 ? -1 : load_tensors(path, opt, 2, err, errlen);
}

/* checkpoint-<step>/ into the trainer; its state checked before any of it is used. */
static int load_checkpoint(Trainer *tr, const char *dir, int64_t step, char *err, size_t errlen)
{
    char path[PATH_LEN + 64];
    TrainerState s;
    snprintf(path, sizeof path, "%s/%s", dir, CKPT_STATE_FILE);
    if (ckpt_state_load_at(dir, step, &s, err, errlen) != 0 ||
        check_state(&s, path, err, errlen) != 0 || load_weights(tr, dir, err, errlen) != 0 ||
        data_order_seek(&tr->order, s.epoch, s.epoch_pos, err, errlen) != 0 ||
        restore_loss_state(tr, &s, path, err, errlen) != 0)
        return -1;
    tr->step = s.step;
    tr->tokens_seen = s.tokens_seen;
    tr->skipped = s.skipped_batches;
    for (int i = 0; i < N_SUMS; i++)
        *sum_field(&tr->sums, i) = ckpt_state_get(&s, sum_names[i], 0);
    tr->adam->t = s.step - s.skipped_batches;
    snprintf(tr->last_ckpt, sizeof tr->last_ckpt, "%s", dir);
    return 0;
}

int trainer_resume(Trainer *tr, char *err, size_t errlen)
{
    char dir[PATH_LEN];
    int64_t step;
    int rc = ckpt_find_latest(tr->run_dir, dir, sizeof dir, &step, err, errlen);
    if (rc == 1)
        snprintf(err, errlen, "--resume %s: the run has no checkpoint to resume from", tr->run_dir);
    if (rc != 0 || load_checkpoint(tr, dir, step, err, errlen) != 0)
        return -1;
    /* a run at or past its end has nothing to do: exiting 0 would look like a run */
    if (tr->step >= tr->total_steps)
        return err_fail(err, errlen,
                        "--resume %s: its checkpoint is of step %lld and the run has %lld steps: "
                        "nothing left to train (max_steps above %lld continues it)",
                        tr->run_dir, (long long)tr->step, (long long)tr->total_steps,
                        (long long)tr->step);
    return 0;
}
