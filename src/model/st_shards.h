/*
 * model/st_shards.h — the weights of a Hugging Face model folder as one set
 * of tensors, whether they are in one safetensors file or sharded over many.
 *
 *     DIR/model.safetensors                  one file, or
 *     DIR/model.safetensors.index.json       {"metadata": {...},
 *                                             "weight_map": {tensor: shard file}}
 *     DIR/model-00001-of-00002.safetensors   the shards it names
 *
 * The index is read capped; every shard it names is opened and validated
 * (safetensors.h) before any tensor is read, and the shards must agree with
 * the index exactly: a tensor the index maps to a shard that does not hold
 * it, a tensor in two shards, or a tensor in a shard but not in the index
 * is an error naming the tensor and the files. Shard names are plain file
 * names in DIR (no directory part), so an index cannot point outside it.
 *
 *     StShards *s = st_shards_open("gpt2/", err, sizeof err);
 *     StEntry e = {.name = "wte.weight", .ndim = 2, .shape = {V, C}, .data = wte,
 *                  .any_float = true};
 *     st_shards_read(s, &e, err, sizeof err);
 *     st_shards_close(s);
 */
#ifndef PREFRUN_ST_SHARDS_H
#define PREFRUN_ST_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#include "model/safetensors.h"

#define ST_SINGLE_FILE "model.safetensors"
#define ST_INDEX_FILE "model.safetensors.index.json"
#define ST_MAX_INDEX_BYTES ((size_t)64 << 20) /* a 70B model's index is ~100 KB */
#define ST_MAX_SHARDS 4096

typedef struct StShards StShards;

/* DIR's index and its shards when DIR/model.safetensors.index.json exists,
 * else DIR/model.safetensors. */
StShards *st_shards_open(const char *dir, char *err, size_t errlen);
void st_shards_close(StShards *s);
/* The index, or the single file: what a message about the whole set names. */
const char *st_shards_path(const StShards *s);
int st_shards_count(const StShards *s);
const char *st_shards_name(const StShards *s, int i); /* sorted by name */
/* dtype, shape and file of a tensor; -1 when absent (any output may be NULL) */
int st_shards_info(const StShards *s, const char *name, const char **dtype, int *ndim,
                   int64_t shape[TENSOR_MAX_DIMS], const char **file);
/* st_read from the shard that holds e->name. */
int st_shards_read(const StShards *s, const StEntry *e, char *err, size_t errlen);
/* The folder holds tensor name with a float dtype (F32, F16, BF16) and this
 * shape; errors name the tensor and its file. The importers' layout check. */
int st_shards_check_float(const StShards *s, const char *name, int ndim, const int64_t *shape,
                          char *err, size_t errlen);

#endif
