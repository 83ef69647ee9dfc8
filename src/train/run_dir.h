/*
 * train/run_dir.h — what a run directory is, and where a run may live.
 *
 * A directory holds a run when a run has written there what only a run
 * writes: metrics.jsonl and config.yaml (setup writes both before the first
 * step), a `latest` pointer naming a checkpoint, or a complete
 * checkpoint-<step>/. A checkpoint directory is one that holds
 * trainer_state.json.
 *
 * Where a run may live, so that no run traps its user or another run:
 *   - a new run may start in a directory that holds no complete checkpoint,
 *     a run killed before its first one included: it starts over, its
 *     metrics and config replaced (train_run does that for a new run);
 *   - a directory with a checkpoint holds results: it is resumed, never
 *     started over;
 *   - no run lives in another run's tree, nor in or under a checkpoint
 *     directory: that run's checkpoints are replaced and pruned by renames
 *     that take whatever is inside along, and its config.yaml and `latest`
 *     would be this run's; for the same reason a new run does not start in
 *     a directory that already holds runs one level down.
 *
 *     if (run_dir_check("runs/rpo", false, err, sizeof err) != 0) ...
 */
#ifndef PREFRUN_RUN_DIR_H
#define PREFRUN_RUN_DIR_H

#include <stdbool.h>
#include <stddef.h>

bool run_dir_holds_run(const char *dir);

/* 0 when a run may live in dir: a new one (resume false) or the one there
 * (resume true); else -1 with err naming the run or checkpoint in the way
 * (the run first, when there is one). dir need not exist yet. */
int run_dir_check(const char *dir, bool resume, char *err, size_t errlen);

#endif
