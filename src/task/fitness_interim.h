/*
 * task/fitness_interim.h — the interim fitness: a cheap stand-in for the task
 * fitness (task/fitness.h), still used by the tests; registered as "interim"
 * in discover/fitness_kinds.c's table. A FitnessFn (task/fitness_api.h).
 *
 *     FitnessOptions fo = {.cfg = cfg, .steps = 300, .n_seeds = 2, .seeds = {1, 2},
 *                          .work_dir = "out/work/g3-1"};
 *     FitnessResult r;
 *     fitness_interim("out/losses/cand.lua", &fo, &r, err, sizeof err);
 *
 * THE INTERIM FITNESS ("interim") trains the candidate from scratch for
 * `steps` optimizer steps per seed with train_run (train.h) on the training
 * config's data (the built-in preference data unless train_file is set)
 * (0 steps: INTERIM_STEPS), and returns the held-out preference accuracy of
 * the implicit reward, eval_rewards/accuracies = mean over eval pairs of [log pi/pi_ref(chosen) >
 * log pi/pi_ref(rejected)], averaged over the seeds. It does not depend on
 * the loss's beta (a sign test), so losses with different scales compare
 * fairly; the eval margin and loss are kept for the archive. It is
 * superseded by "task" (fitness.h), which scores what the DiscoPOP paper
 * scores (reward of sampled completions against KL to the reference) but
 * needs the task's pretrained reference; interim needs nothing built and
 * runs in seconds on a tiny model, so the loop's tests use it.
 */
#ifndef PREFRUN_TASK_FITNESS_INTERIM_H
#define PREFRUN_TASK_FITNESS_INTERIM_H

#include <stddef.h>

#include "task/fitness_api.h"

#define INTERIM_STEPS 400 /* the interim fitness's steps per seed when asked for 0 */

/* The interim fitness described above. */
int fitness_interim(const char *loss_path, const FitnessOptions *opt, FitnessResult *out, char *err,
                    size_t errlen);

#endif
