/*
 * task/fitness.h — the task fitness: the one scalar the discovery loop maximises
 * on the built-in task (registered as "task" in discover/fitness_kinds.c's table;
 * the FitnessFn contract is in task/fitness_api.h).
 *
 *     FitnessOptions fo = {.cfg = cfg, .steps = 0, .n_seeds = 2, .seeds = {1, 2},
 *                          .work_dir = "out/work/g3-1"};
 *     FitnessResult r;
 *     fitness_evaluate("out/losses/cand.lua", &fo, &r, err, sizeof err);
 *
 * THE FITNESS. For each seed, the candidate trains the policy from the
 * task's pretrained reference on the task's pairs (task_data.h's settings
 * but the rate, below; opt->steps optimizer steps when > 0, else the task
 * default) with the
 * loss param beta = FITNESS_BETA when the loss declares a beta, and the
 * trained policy is evaluated (eval.h: P = 64 held-out prompts x 4 samples,
 * the sampling seed = the training seed). The seed's score is
 *
 *     reward - FITNESS_LAMBDA * KL
 *
 * with reward the policy's mean task reward (in [-1, 1]) and KL the
 * sequence-level KL(policy || reference) in nats. The fitness is the mean
 * over seeds. It is the KL-regularised objective that DPO's policy
 * optimises in theory (E[r] - beta KL), with the coefficient fixed rather
 * than tied to each loss's own beta, so a loss cannot buy reward with
 * unbounded drift: 10 nats of KL cost 0.1 of reward (the reference scores
 * -0.03 at KL 0). A loss wins by reaching higher reward at the same KL, the
 * DiscoPOP paper's criterion, read off one point instead of a beta sweep
 * (`prefrun frontier` draws the sweep).
 *
 * The rate is FITNESS_LEARNING_RATE (2e-4), not the main job's 4e-4
 * (task_data.c): the main job's rate is chosen to show learning in one
 * run, the fitness's to tell losses apart, and at 4e-4 the seed-to-seed
 * spread of DPO's fitness doubles (sd 0.101 over seeds 1-8, the KL term
 * swinging by tens of nats) while its mean drops (0.127). With a model
 * (opt->cfg.model) the rate stays TRL's, as for any run of a model.
 *
 * Measured (`prefrun discover --noise-floor LOSS --fitness task`: default
 * task and budget, 200 steps, seeds 1-8; per seed reward - 0.01 KL):
 *     dpo       0.232 0.179 0.161 0.098 0.109 0.173 0.151 0.219
 *               mean 0.165  sd 0.047
 *     discopop -0.145 -0.135 -0.008 -0.054 -0.205 -0.012 -0.145 -0.142
 *               mean -0.106 sd 0.072
 * The pooled sd, 0.061, is the task kind's noise_sd (discover/
 * fitness_kinds.c): the discovery loop compares candidates seed by seed,
 * floored by it (discover/compare.h), so 3 seeds resolve differences above
 * 1.96 * 0.061 * sqrt(2/3) = 0.098. The result's se is the sd over its
 * seeds / sqrt(n). One seed (train + eval) takes ~15 s on 2 idle cores.
 *
 * Contract (task/fitness_api.h): runs in-process, seeds one after another,
 * no fork; writes only under opt->work_dir and removes what it wrote;
 * deterministic in (loss file, options). The training settings come from
 * the task (model, data, rate, steps); from opt->cfg it takes only threads,
 * the sandbox limits, nan_policy and the LoRA settings (use_peft, lora_*,
 * target_modules). The task must be prepared: a first
 * call builds it (minutes) unless `prefrun pretrain` or fitness_prepare
 * ran before.
 */
#ifndef PREFRUN_FITNESS_H
#define PREFRUN_FITNESS_H

#include <stdbool.h>
#include <stddef.h>

#include "task/fitness_api.h"

#define FITNESS_BETA 0.1
#define FITNESS_LAMBDA 0.01
#define FITNESS_LEARNING_RATE 2e-4
#define FITNESS_METRIC "reward-0.01*KL@beta0.1"

int fitness_evaluate(const char *loss_path, const FitnessOptions *opt, FitnessResult *out,
                     char *err, size_t errlen);

/* Builds (or finds) the task fitness_evaluate trains on: the reference and
 * its pairs, minutes the first time (says so unless quiet), then cached.
 * The discovery loop runs it once before generation 0, so its workers do not
 * all wait on the same build. */
int fitness_prepare(bool quiet, char *err, size_t errlen);

#endif
