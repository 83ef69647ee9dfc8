/*
 * task/task_data.h — the built-in task made ready to train on: the pretrained
 * reference (pretrain.h), preference pairs sampled from it as the DPO paper
 * made its IMDb pairs, held-out prompts and pairs, and the training config
 * that goes with them.
 *
 *     TaskPrepareOptions o;
 *     task_prepare_defaults(&o);
 *     TaskAssets a;
 *     if (task_prepare(&o, &a, err, sizeof err) != 0) ...;
 *     // a.reference, a.train_file, a.eval_file, a.model
 *
 * Pairs. For each of n_train TRAIN prompts (task_prompts_make), the
 * reference samples K completions (temperature 1, no top-k: the reference's
 * own distribution, as the DPO paper sampled GPT-2-large's); task_reward
 * scores them and task_pairs_form makes every unordered pair with different
 * rewards a preference pair (Bradley-Terry noise at bt_temp > 0), written
 * by task_pairs_write as TRL JSONL: train.jsonl. The same for n_eval EVAL
 * prompts gives eval.jsonl, the held-out pairs; those EVAL prompts are also
 * the held-out prompt set that eval.h samples from (any n up to ~150 of the
 * split, regenerated from the seed, so nothing else is stored).
 *
 * Cache. Beside the reference (pretrain.h's directory):
 *     pairs-n<train>-e<eval>-k<K>-<hash>/train.jsonl, eval.jsonl, task.json
 * The hash covers every option that changes the pairs. task.json names the
 * reference, the seed and the model, so a training run's config.yaml (whose
 * train_file points here) leads back to its reference (task_assets_find).
 * Built under the directory's flock, every file atomically; the same
 * options give the same bytes (sampling is deterministic by seed for any
 * thread count, sample.h).
 *
 * Training defaults. config.c's defaults suit the toy data; the built-in
 * task's are task_train_defaults (applied over config_defaults, before a
 * user's config file and --set). See task_data.c for the values and why.
 *
 * Errors are values: 0 on success, -1 with a message in err.
 */
#ifndef PREFRUN_TASK_DATA_H
#define PREFRUN_TASK_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "train/config.h"
#include "model/model.h"
#include "task/pretrain.h"
#include "task/task.h"

#define TASK_PATH_LEN CONFIG_PATH_LEN /* the paths go into a Config */
#define TASK_TRAIN_FILE "train.jsonl"
#define TASK_EVAL_FILE "eval.jsonl"
#define TASK_MANIFEST "task.json"

typedef struct TaskPrepareOptions {
    const char *cache_dir;    /* NULL or "": pretrain_cache_root's default */
    PretrainOptions pretrain; /* the reference, and the task seed (pretrain.seed) */
    int n_train;              /* TRAIN prompts for pairs */
    int n_eval;               /* EVAL prompts for held-out pairs */
    int k;                    /* completions per prompt */
    double bt_temp;           /* Bradley-Terry noise temperature; 0: none */
    bool force;               /* rebuild the pairs even when cached */
    bool quiet;
    FILE *progress; /* NULL: stderr */
} TaskPrepareOptions;

typedef struct TaskAssets {
    char dir[TASK_PATH_LEN];       /* the pairs' directory */
    char reference[TASK_PATH_LEN]; /* the reference's safetensors */
    char train_file[TASK_PATH_LEN];
    char eval_file[TASK_PATH_LEN];
    GptConfig model;
    uint64_t seed;       /* the task seed */
    int n_eval;          /* held-out prompts the eval pairs came from */
    TaskPairStats train; /* pairs written (zero when found cached) */
    TaskPairStats eval;
    bool cached; /* everything was already built */
} TaskAssets;

/* 512 TRAIN prompts, 64 EVAL prompts, K = 4, no noise, the default reference. */
void task_prepare_defaults(TaskPrepareOptions *o);

/* Builds (or finds) the reference and the pairs; fills out. */
int task_prepare(const TaskPrepareOptions *opt, TaskAssets *out, char *err, size_t errlen);

/* The assets whose train.jsonl is train_file (a run's config names it):
 * 0 and out filled, 1 when train_file is not a built-in task file (no
 * task.json beside it), -1 on error. */
int task_assets_find(const char *train_file, TaskAssets *out, char *err, size_t errlen);

/* The built-in task's training settings over cfg (call right after
 * config_defaults): the reference's model shape, lengths, batch, rate,
 * steps. */
void task_train_defaults(Config *cfg);

/* Points cfg at the assets: train_file, eval_file, and the model keys
 * (which must be the reference's). */
void task_train_config(Config *cfg, const TaskAssets *a);

/* For `prefrun train` on the built-in task: task_prepare for cfg's model
 * shape (default reference options otherwise), then task_train_config and
 * config_finalize. out->reference is where the policy starts. */
int task_train_setup(Config *cfg, bool quiet, TaskAssets *out, char *err, size_t errlen);

/* The reference's GptConfig from a config's model keys. */
GptConfig task_model_of(const Config *cfg);

#endif
