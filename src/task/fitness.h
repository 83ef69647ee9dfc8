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
 * task's pretrained reference on the task's pairs (task_data.h's settings,
 * opt->steps optimizer steps when > 0, else the task default) with the
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
 * Measured (default task and budget, 200 steps, seeds 1-3; per seed
 * reward - 0.01 KL):
 *     dpo       0.158  0.191  0.192   mean 0.181  sd 0.019
 *     discopop  0.029 -0.041 -0.089   mean -0.034 sd 0.059
 * so with n seeds the standard error is about sd / sqrt(n): 0.011 to 0.034
 * for 3 seeds; differences under ~0.05 are noise at 3 seeds. One seed
 * (train + eval) takes ~22 s on 2 idle cores.
 *
 * Contract (task/fitness_api.h): runs in-process, seeds one after another,
 * no fork; writes only under opt->work_dir and removes what it wrote;
 * deterministic in (loss file, options). The training settings come from
 * the task (model, data, rate, steps); from opt->cfg it takes only threads,
 * the sandbox limits and nan_policy. The task must be prepared: a first
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
#define FITNESS_METRIC "reward-0.01*KL@beta0.1"

int fitness_evaluate(const char *loss_path, const FitnessOptions *opt, FitnessResult *out,
                     char *err, size_t errlen);

/* Builds (or finds) the task fitness_evaluate trains on: the reference and
 * its pairs, minutes the first time (says so unless quiet), then cached.
 * The discovery loop runs it once before generation 0, so its workers do not
 * all wait on the same build. */
int fitness_prepare(bool quiet, char *err, size_t errlen);

#endif
