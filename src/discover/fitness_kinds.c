/*
 * discover/fitness_kinds.c — the registry of fitness functions
 * (discover/fitness_kinds.h). The fitnesses themselves are in task/: the task
 * fitness is task/fitness.c, the interim one task/fitness_interim.c; this
 * file only registers them.
 */
#include "discover/fitness_kinds.h"

#include <stdio.h>
#include <string.h>

#include "util/errmsg.h"
#include "task/fitness.h"
#include "task/fitness_interim.h"

/* The default is discover/config.c's; "task" first, as --help lists it.
 *
 * task's hurdle: 60 steps (one seed) at the task's settings. Measured there
 * (seed 1, `prefrun discover` generation 0): DPO 0.28, robust 0.27, hinge
 * 0.22, DiscoPOP -0.11 (it drifts further in 60 steps, and KL costs 0.01 a
 * nat); the untrained reference scores about -0.03. The cut, -0.25, lies
 * below every sound loss seen, DiscoPOP included (a hurdle that rejected the
 * paper's own loss would steer the search away from its region), so it stops
 * only broken losses: ones that push reward down (a sign error) or buy it
 * with runaway KL (tens of nats in 60 steps).
 *
 * interim's: 60 steps reach ~0.8 with DPO; 0.55 is just better than chance.
 *
 * noise_sd, the floor of every comparison (discover/compare.h): the sd over
 * seeds of ONE seed's fitness for one loss, at the loop's default settings
 * (discover_defaults), measured with `prefrun discover --noise-floor LOSS
 * --fitness KIND` (seeds 1..8 unless said):
 *   task     DPO sd 0.047 (mean 0.165), DiscoPOP sd 0.072 (mean -0.106),
 *            8 seeds each (per seed values in task/fitness.h); 0.061 is
 *            their pooled sd, sqrt((0.047^2 + 0.072^2) / 2). 200 steps,
 *            ~15 s a seed on 2 cores. 3 seeds tie anything within
 *            1.96 * 0.061 * sqrt(2/3) = 0.098;
 *   interim  DPO 0.848780 0.887805 0.860976 0.873171 0.912195 0.914634
 *            0.895122 0.890244: mean 0.8854, sd 0.0232 (16 seeds: 0.0181;
 *            hinge, 8 seeds: 0.0275); 400 steps, ~1.8 s a seed on one core.
 *            0.023: ~9 of the ~410 held-out pairs, so 3 seeds tie anything
 *            within 1.96 * 0.023 * sqrt(2/3) = 0.037 of each other. */
static const FitnessKind fitness_kinds[] = {
    {.name = "task",
     .fn = fitness_evaluate,
     .prepare = fitness_prepare,
     .summary = "reward - 0.01*KL to the reference of the policy trained with the loss "
                "(beta 0.1) on the built-in task; higher is better",
     .hurdle_steps = 60,
     .hurdle_min = -0.25,
     .noise_sd = 0.061},
    {.name = "interim",
     .fn = fitness_interim,
     .summary = "held-out preference accuracy (eval_rewards/accuracies) after a short run "
                "on the training config's data; cheap, for tests",
     .hurdle_steps = 60,
     .hurdle_min = 0.55,
     .noise_sd = 0.023},
};
#define N_KINDS (int)(sizeof fitness_kinds / sizeof fitness_kinds[0])

int fitness_kind_count(void) { return N_KINDS; }
const FitnessKind *fitness_kind(int i) { return i >= 0 && i < N_KINDS ? &fitness_kinds[i] : NULL; }

const FitnessKind *fitness_find(const char *name, char *err, size_t errlen)
{
    for (int i = 0; i < N_KINDS; i++) {
        if (strcmp(fitness_kinds[i].name, name) != 0)
            continue;
        if (fitness_kinds[i].fn)
            return &fitness_kinds[i];
        err_fail(err, errlen, "fitness '%s' is reserved but not built yet (%s)", name,
                 fitness_kinds[i].summary);
        return NULL;
    }
    char known[256] = "";
    for (int i = 0; i < N_KINDS; i++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                 fitness_kinds[i].name);
    err_fail(err, errlen, "unknown fitness '%s' (known: %s)", name, known);
    return NULL;
}
