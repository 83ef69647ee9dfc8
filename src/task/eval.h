/*
 * task/eval.h — what a trained policy does on the built-in task: reward, KL to
 * the reference, win rate against the reference, and preference accuracy
 * on held-out pairs (the DPO paper's IMDb evaluation, on our task).
 *
 *     EvalOptions o;
 *     eval_defaults(&o);
 *     EvalResult r;
 *     eval_path("runs/dpo", &o, &r, err, sizeof err);   // a run, checkpoint or model file
 *     printf("reward %.3f +- %.3f, KL %.2f\n", r.reward, r.reward_ci, r.kl);
 *
 * The numbers, over P held-out (EVAL) prompts x N samples each:
 *   reward      mean task_reward of the policy's completions (temperature 1),
 *               with a 95% normal interval 1.96 sd / sqrt(PN);
 *   kl          the sequence-level KL(policy || reference) estimated from the
 *               policy's own samples, as the DPO paper does:
 *               mean over samples y ~ policy of log p_pol(y|x) - log p_ref(y|x),
 *               summed over the completion's tokens (its EOT included when it
 *               ended); both log-probs come from sample_score, so a model
 *               evaluated against a copy of itself gives exactly 0;
 *   win_rate    the share of samples whose reward beats the reference's
 *               sample for the same prompt and index (ties count half); both
 *               models draw with the same per-sample seeds (common random
 *               numbers), so the reference against itself gives exactly 0.5;
 *   accuracy    the share of held-out pairs whose implicit reward margin
 *               (log pi/ref of chosen - of rejected) is > 0, TRL's
 *               rewards/accuracies (a tie, e.g. the reference itself, is 0).
 * Everything is a function of the models, the options and the seed.
 *
 * Which reference and pairs. eval_path finds them from the run: the
 * config.yaml beside the model names train_file, and task.json beside that
 * names the task's reference and held-out pairs (task_data.h). A model file
 * without a run config (e.g. the reference itself) is evaluated on the
 * default built-in task for its model shape (task_prepare, so it is built
 * if missing). EvalOptions.reference / pairs_file override either.
 *
 * A run of a Hugging Face model (config.yaml's `model`): the reference is
 * that folder's model (hf_model_load; the run's own RUN/hf/ holds no
 * weights), the tokenizer the run's copy (run_hf_tokenizer), whose
 * generation_config.json adds stop ids; the prompts are the built-in
 * task's held-out prompts all the same (the reward is defined on text),
 * sampled as tokens and scored on the ids drawn (sample.h), and the
 * held-out pairs (the task's eval.jsonl when the run trained on the task's
 * pairs, else the run's eval_file, if any) are tokenized by the same
 * tokenizer (data.h). eval_model_dir evaluates a bare Hugging Face folder
 * the same way, against itself unless EvalOptions.reference names another
 * model (a folder, a run or a model file). mean_length stays in bytes of
 * the decoded text.
 *
 * Errors are values: 0 on success, -1 with a message in err.
 */
#ifndef PREFRUN_EVAL_H
#define PREFRUN_EVAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "task/sample.h"
#include "tokenizer/tokenizer.h"

typedef struct EvalOptions {
    int n_prompts;          /* held-out prompts P (at most ~150 exist) */
    int samples;            /* completions per prompt N */
    uint64_t seed;          /* sampling seed */
    int max_pairs;          /* held-out pairs scored; 0: all */
    const char *reference;  /* NULL: the run's task reference */
    const char *pairs_file; /* NULL: the task's eval.jsonl; "" skips accuracy */
    const char *cache_dir;  /* where the default task lives (NULL: default) */
    bool quiet;             /* no progress output when a task must be built */
    /* eval_models only (eval_path and eval_model_dir find their own): the
     * models' tokenizer, NULL for prefrun's byte model, borrowed; and the
     * ids besides its EOS that end a completion (sample_stop_ids_load) */
    const Tokenizer *tokenizer;
    /* how held-out pairs are cut: a run's max_length and max_prompt_length
     * (eval_path sets them from the run's config); 0: the model's context
     * and the task's longest prompt */
    int max_length, max_prompt_length;
    int32_t stop_ids[SAMPLE_MAX_STOP];
    int n_stop;
} EvalOptions;

typedef struct EvalResult {
    int64_t samples;          /* P x N */
    double reward, reward_ci; /* the policy's mean reward, 95% half-width */
    double ref_reward, ref_reward_ci;
    /* policy minus reference, paired sample by sample (the same prompt and
     * sampling seed), and its 95% half-width: the interval that says whether
     * the policy's reward is above the reference's */
    double gain, gain_ci;
    double kl, kl_ci;   /* nats per sequence */
    double win_rate;    /* in [0, 1] */
    double accuracy;    /* NAN when no pairs were scored */
    int64_t pairs;      /* held-out pairs scored */
    double mean_length; /* completion bytes */
    double ended;       /* share of completions that produced EOT */
    double seconds;
    char model[1024]; /* the files used */
    char reference[1024];
} EvalResult;

/* P = 64, N = 4, seed 1, at most 256 pairs. */
void eval_defaults(EvalOptions *o);

/* policy against ref on the task of task_seed; pairs_file NULL or "" skips
 * the accuracy. The two models must have the same shape. */
int eval_models(const Gpt *policy, const Gpt *ref, uint64_t task_seed, const char *pairs_file,
                const EvalOptions *o, EvalResult *r, char *err, size_t errlen);

/* A run directory, checkpoint directory or model file, with its reference
 * and pairs found as above. */
int eval_path(const char *path, const EvalOptions *o, EvalResult *r, char *err, size_t errlen);

/* A Hugging Face model folder as the policy (its own tokenizer), against
 * itself or o->reference, on the default task's prompts and, unless
 * o->pairs_file says otherwise, its held-out pairs (task_prepare). */
int eval_model_dir(const char *dir, const EvalOptions *o, EvalResult *r, char *err, size_t errlen);

/* The model at path: a Hugging Face folder (hf_model_load), else a run,
 * checkpoint directory or model file (run_model_load); its file or folder
 * to resolved. */
int eval_load_model(const char *path, Gpt **out, char *resolved, size_t rlen, char *err,
                    size_t errlen);

/* The result as a JSON object (new reference), the names of the fields above. */
json_t *eval_result_json(const EvalResult *r);
/* The inverse (a JSON null is NAN); -1 when j is not such an object. */
int eval_result_from_json(const json_t *j, EvalResult *r);

#endif
