/*
 * src/lua/ — loss scripts: the sandbox for untrusted Lua (sandbox), the
 * tensor binding scripts compute with (lua_tensor), loading and evaluating a
 * loss file (loss, this header: the layer's interface) and the checker
 * (check: shapes, finiteness, gradient flow).
 * May include: util/, core/. It knows nothing of models or training.
 */
/*
 * lua/loss.h — a loss script: a Lua file loaded into its own sandbox, evaluated
 * on a batch of per-pair log-probs into a differentiable tensor.
 *
 * This is the interface the training loop, the checker and the discovery loop
 * use; the sandbox itself (limits, whitelist) is sandbox.h. A LossScript owns
 * one Lua state; tensors the script makes live in the TensorCtx passed to
 * loss_eval (the step's context), so backward runs through them with the
 * rest of the step and they are freed when the step's context is reset.
 *
 * Errors: functions return NULL or nonzero and write a message into err that
 * names the file, the line where Lua knows it, and what was expected.
 */
#ifndef PREFRUN_LOSS_H
#define PREFRUN_LOSS_H

#include <stddef.h>
#include <stdint.h>

#include "core/tensor.h"

/* What a loss sees as its first argument `b`. Every tensor is (B) unless
 * noted, float32, in the step's context. Token-level fields may be NULL when
 * the caller has none (then the script sees nil). */
typedef struct LossBatch {
    int B;
    Tensor *policy_chosen_logps;            /* (B) differentiable in training */
    Tensor *policy_rejected_logps;          /* (B) */
    Tensor *reference_chosen_logps;         /* (B) constant */
    Tensor *reference_rejected_logps;       /* (B) */
    Tensor *chosen_lengths;                 /* (B) response token counts */
    Tensor *rejected_lengths;               /* (B) */
    int T;                                  /* token positions of the fields below */
    Tensor *policy_chosen_token_logps;      /* (B, T) or NULL */
    Tensor *policy_rejected_token_logps;    /* (B, T) */
    Tensor *reference_chosen_token_logps;   /* (B, T) */
    Tensor *reference_rejected_token_logps; /* (B, T) */
    Tensor *chosen_mask;                    /* (B, T) 1 on response tokens */
    Tensor *rejected_mask;                  /* (B, T) */
    int64_t step;                           /* optimizer step, from 0 */
    double progress;                        /* fraction of training done, in [0, 1] */
} LossBatch;

/* Bounds on one script; zero fields take the documented defaults. */
typedef struct LossLimits {
    size_t lua_bytes;      /* Lua heap cap per script state */
    size_t tensor_bytes;   /* bytes of tensors one call may create */
    uint64_t instructions; /* VM instruction budget per call */
    double seconds;        /* wall-clock budget per call, C time included */
    int max_depth;         /* Lua call depth (C stack bound) */
} LossLimits;

typedef struct LossScript LossScript;

/* Loads and validates the schema (name, numeric params, loss function).
 * Library files for use("name") resolve in lib_dir (NULL: the built-in
 * losses/ directory). */
LossScript *loss_load(const char *path, const char *lib_dir, const LossLimits *limits, char *err,
                      size_t errlen);
void loss_free(LossScript *ls);

const char *loss_name(const LossScript *ls);
const char *loss_path(const LossScript *ls);
/* params: declared in the file, overridable (--set key=value) */
int loss_param_count(const LossScript *ls);
const char *loss_param_name(const LossScript *ls, int i);
double loss_param_value(const LossScript *ls, int i);
int loss_set_param(LossScript *ls, const char *key, double value, char *err, size_t errlen);
/* true when the file declares batch_level = true: the result is a scalar */
int loss_is_batch_level(const LossScript *ls);

/* Runs the loss on b. Returns a (B) tensor (or a 0-D scalar for a batch-level
 * loss) in ctx, differentiable back to b's tensors; NULL with err set on any
 * script error, limit hit, wrong shape or non-tensor return. */
Tensor *loss_eval(LossScript *ls, TensorCtx *ctx, const LossBatch *b, char *err, size_t errlen);

/* ---- beyond the first interface ---------------------------------------- */

/* Where use("name") looks when loss_load gets lib_dir NULL: $PREFRUN_LOSSES
 * when set, else the source tree's losses/. */
const char *loss_default_lib_dir(void);

/* The per-run state: the file's `state` table (at most 64 numbers), passed to
 * the loss as `s`. The loss may assign numbers (or one-element tensors, read
 * back as numbers) to its declared keys; the host keeps the values across
 * calls, committing them only when a call succeeds. */
int loss_state_count(const LossScript *ls);
const char *loss_state_name(const LossScript *ls, int i);
double loss_state_value(const LossScript *ls, int i);
/* restores a declared state value (a resumed run); an undeclared key or a
 * non-finite value is an error */
int loss_set_state(LossScript *ls, const char *key, double value, char *err, size_t errlen);

/* top-level fields of the file's table the contract does not know, as
 * "a, b" ("" when none): loading ignores them, the checker warns */
const char *loss_unknown_fields(const LossScript *ls);
/* the line where the file's loss function is defined */
int loss_line(const LossScript *ls);

/* A weighted combination of several scripts on one batch, as TRL's list
 * loss_type with loss_weights (RPO = DPO + alpha SFT, MPO): sum_i w_i L_i.
 * When every script is per-pair the result is (B); when any is batch-level it
 * is 0-D, and per-pair terms are averaged over the batch first (the host's
 * mean of a (B) result is then the same number). */
Tensor *loss_eval_weighted(LossScript *const *ls, const double *weights, int n, TensorCtx *ctx,
                           const LossBatch *b, char *err, size_t errlen);

#endif
