/*
 * task/pretrain.h — the built-in task's reference model: cross-entropy
 * pretraining of a GPT on the task's corpus (task.h), and its cache.
 *
 *     PretrainOptions o;
 *     pretrain_defaults(&o);                       // the task's model and budget
 *     char path[1024];
 *     pretrain_reference(&o, NULL, false, path, sizeof path, NULL, err, sizeof err);
 *     // path: .../prefrun/reviews-v1-s42/ref-<model>-<hash>/reference.safetensors
 *
 * The model (PRETRAIN_* below; config.c's defaults are for the toy data and
 * stay as they are): vocabulary 257 (bytes + EOT), context 128 (the longest
 * document, 152 bytes, is cut; 99% are under 112), width 64, 2 layers,
 * 4 heads — 120k parameters. It learns the language well enough that its
 * samples are grammatical reviews with the corpus's mix of sentiment, and it
 * is small enough that a DPO run plus an evaluation takes well under a
 * minute on 2 cores.
 *
 * Data. Each document (a line of task_corpus) becomes one row
 * [EOT] + its bytes without the final '\n' + [EOT]: EOT plays BOS and EOS
 * as in data.h's pairs, so the reference ends a review with EOT exactly
 * where a DPO response ends (sample.h). Every token after the first is a
 * target. Rows of a batch are drawn in a seeded shuffled order, epoch after
 * epoch, and trimmed to the batch's longest row.
 *
 * Optimisation. AdamW (optim.h) with linear warmup then cosine decay,
 * global-norm clipping at 1, weight decay on matrices only (as train.c).
 * A held-out set of documents from another seed stream gives the final
 * validation loss (nats per token).
 *
 * Cache. ROOT/<task_cache_key>/ref-L<l>-C<c>-H<h>-T<t>-<hash>/ with
 * reference.safetensors (model config and pretraining options in its
 * metadata) and reference.json (the same, plus losses and time). ROOT is
 * the cache_root argument, else $PREFRUN_CACHE, else $XDG_CACHE_HOME/prefrun,
 * else ~/.cache/prefrun. The hash covers every option that changes the
 * weights (corpus size, steps, batch, rates, seed) and the version of the
 * code's numerics (TASK_NUMERICS_VERSION), so a change builds a new
 * reference beside the old one. A build holds an flock on the
 * directory's .lock, so concurrent processes wait for one build instead of
 * racing; every file is written atomically.
 *
 * Errors are values: 0 on success, -1 with a message in err.
 */
#ifndef PREFRUN_PRETRAIN_H
#define PREFRUN_PRETRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "model/model.h"

#define PRETRAIN_CONTEXT 128
#define PRETRAIN_WIDTH 64
#define PRETRAIN_LAYERS 2
#define PRETRAIN_HEADS 4
#define PRETRAIN_FILE "reference.safetensors"

typedef struct PretrainOptions {
    GptConfig model;     /* vocab >= DATA_VOCAB */
    uint64_t seed;       /* the task seed: corpus stream and init */
    int64_t docs;        /* corpus documents */
    int64_t steps;       /* optimizer steps */
    int batch;           /* documents per step */
    double lr;           /* peak learning rate */
    double weight_decay; /* on matrices */
    int warmup_steps;    /* linear warmup */
    int numerics;        /* TASK_NUMERICS_VERSION: the code's numbers, in the cache key */
    int threads;         /* OpenMP/OpenBLAS threads; 0: all cores */
    bool quiet;          /* no progress output */
    FILE *progress;      /* NULL: stderr; a bar when it is a TTY */
} PretrainOptions;

typedef struct PretrainResult {
    int64_t steps;
    double train_loss; /* mean of the last 10% of steps, nats per token */
    double val_loss;   /* held-out documents, nats per token */
    double seconds;
    bool cached; /* pretrain_reference found it built */
} PretrainResult;

/* The built-in task's reference: PRETRAIN_* model, seed 42, 1500 steps of
 * 32 documents (held-out loss 0.308 nats/byte; 2.5 to 3 minutes on 2 shared
 * cores, ~0.11 s a step). */
void pretrain_defaults(PretrainOptions *o);

/* Trains a fresh model (gpt_init from the seed) and hands it over in *out
 * (trainable; the caller frees it). */
int pretrain_run(const PretrainOptions *o, Gpt **out, PretrainResult *res, char *err,
                 size_t errlen);

/* The cache root (see above); override may be NULL or "". */
int pretrain_cache_root(const char *override, char *out, size_t len, char *err, size_t errlen);
/* The reference's directory under root for o. */
int pretrain_cache_dir(const PretrainOptions *o, const char *root, char *out, size_t len, char *err,
                       size_t errlen);

/* The cached reference file for o, built first if it is missing (or when
 * force). root: NULL for pretrain_cache_root(NULL). res may be NULL. */
int pretrain_reference(const PretrainOptions *o, const char *root, bool force, char *path,
                       size_t plen, PretrainResult *res, char *err, size_t errlen);

/* A progress line "LABEL [#####.....] i/n  TEXT  elapsed, eta" on a TTY
 * (redrawn with \r; a newline when i == n), or one plain line at each
 * tenth of the way otherwise. Shared by pretraining and task preparation. */
void pretrain_progress(FILE *f, const char *label, int64_t i, int64_t n, double elapsed,
                       const char *text);

#endif
