/*
 * src/task/ — the built-in task and what is measured on it: the task's
 * language and reward (task), its pretrained reference and pairs (pretrain,
 * task_data), sampling with a KV cache (sample), evaluation (eval), the
 * beta sweep (frontier), and the fitnesses a discovery run maximises (fitness,
 * fitness_interim) with their contract (fitness_api).
 * May include: util/, core/, lua/, model/, train/.
 */
/*
 * task/task.h — prefrun's built-in task: a small language of movie-review-like
 * sentences, its prompts, its ground-truth sentiment reward, and the writer
 * of DPO preference pairs. It plays the part IMDb plays in the DPO and
 * DiscoPOP papers, generated here from a seed so that nothing is downloaded.
 *
 *     char *text; size_t n;
 *     task_corpus(seed, 20000, &text, &n, err, sizeof err);   // pretraining data
 *     TaskPrompts ev;
 *     task_prompts_make(&ev, seed, TASK_SPLIT_EVAL, 64, err, sizeof err);
 *     double r = task_reward(completion, strlen(completion)); // in [-1, 1]
 *
 * THE LANGUAGE. A document is one line: 1 to 3 sentences of lower-case ASCII
 * words and the punctuation tokens "." and "!", separated by single spaces,
 * ended by '\n' (TASK_EOD). Each document has an overall polarity (positive
 * 45%, negative 45%, neutral 10%); its sentiment sentences mostly agree with
 * it (85%), some disagree, and neutral sentences ("i saw it last week .")
 * are mixed in. Sentiment is carried by positive and negative words of two
 * strengths, flipped by negators ("not", "never", "hardly") and scaled by
 * intensifiers ("very", "really", "extremely") in several templates
 * ("the plot was not very good .", "i did not like the cast .", "the acting
 * was good but the story was awful .", "it was a masterpiece ."), so a model
 * must read a few words of context to tell the sign. Neutral adjectives
 * ("long", "dark") fill the same slots as sentiment ones.
 *
 * PROMPTS are a document's opening up to (not including) its first
 * sentiment-bearing word (a lexicon word, negator or intensifier), e.g.
 * "the acting was " or "i saw it twice . it was a ": at least two words,
 * at most TASK_PROMPT_MAX bytes, always ending in one space, and containing
 * nothing the reward counts — so the reward of a completion does not depend
 * on its prompt, and prompt + completion is a document of the language.
 * A prompt belongs to exactly one split, decided by a hash of its bytes
 * (task_prompt_split), so held-out (EVAL) prompts are disjoint from TRAIN
 * prompts by construction, not by chance; the two sets are also drawn from
 * different seed streams. The space is small: version 1 has about 980
 * distinct TRAIN and 220 distinct EVAL prompts, so ask for at most ~150
 * eval prompts (collecting the rarest ones takes many draws). The
 * pretraining corpus is the whole language and so contains documents that
 * begin with eval prompts, as IMDb's reference model was trained on reviews
 * like its test reviews.
 *
 * THE REWARD (defined here and in task.c only). The text is cut into words:
 * maximal runs of ASCII letters, upper case folded to lower. The bytes
 * . ! ? , ; : and newline end a clause; every other byte only separates
 * words. Walking the words left to right:
 *   - a lexicon word w has a base value v(w) in {-2, -1, +1, +2}
 *     ("good" +1, "great" +2, "bad" -1, "awful" -2, "loved" +2, ...);
 *   - a negator makes the first lexicon word that follows it within
 *     TASK_WINDOW = 3 words (at most 2 words between) in the same clause
 *     count with the opposite sign; two negators in one window cancel;
 *   - an intensifier within the same window scales that word by its factor
 *     ("very" and "really" 1.5, "extremely" 2); intensifiers do not stack,
 *     the largest pending one applies;
 *   - a lexicon word uses up the pending negation and intensifier, and a
 *     clause end drops them.
 * S is the sum of the lexicon words' signed, scaled values, and
 *     reward = tanh(S / TASK_REWARD_SCALE),  TASK_REWARD_SCALE = 3,
 * so reward is in [-1, 1] (exactly +-1 only where tanh rounds, |S| > 57),
 * 0 for text without lexicon words, odd in S, and saturates smoothly (one
 * "great": tanh(2/3) = 0.583; "not very good": tanh(-0.5) = -0.462). Any
 * bytes are valid input: unknown words count 0, NUL bytes are ordinary
 * separators, and the time is linear in the length.
 *
 * PAIRS follow the DPO paper's IMDb recipe: for each prompt, K completions
 * sampled from the reference are scored by the reward, and every unordered
 * pair of them with different rewards becomes a preference pair (ties are
 * skipped). Without noise the higher reward is chosen; with Bradley-Terry
 * noise at temperature t > 0 completion i is chosen over j with probability
 * sigmoid((r_i - r_j) / t). Pairs are written as TRL-format JSONL lines
 * {"prompt": ..., "chosen": ..., "rejected": ...} (chosen and rejected are
 * completions without the prompt), atomically.
 *
 * Errors are values: 0 on success, -1 with a message in err.
 */
#ifndef PREFRUN_TASK_H
#define PREFRUN_TASK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/rng.h"

/* Bump on any change to the grammar, the prompts or the reward: caches of
 * corpora, reference models and pairs are keyed by it (task_cache_key). */
#define TASK_VERSION 1
/* Bump on any change to code that alters the numbers the task's cache
 * holds while no option changes: the model's forward and backward (model/,
 * core/ ops), AdamW, pretraining, sampling. The reference's cache key
 * covers it (PretrainOptions.numerics), and the pairs live under their
 * reference and hash it too, so an old cache is never silently reused. */
#define TASK_NUMERICS_VERSION 3
#define TASK_NAME "reviews"

#define TASK_EOD '\n'         /* ends every document */
#define TASK_DOC_MAX 256      /* a document's bytes, with '\n' and NUL, fit in this */
#define TASK_PROMPT_MAX 32    /* a prompt's bytes, without its NUL, are at most this */
#define TASK_WINDOW 3         /* negator/intensifier reach, in words */
#define TASK_REWARD_SCALE 3.0 /* reward = tanh(S / TASK_REWARD_SCALE) */
#define TASK_EVAL_MOD 5       /* one prompt string in 5 is held out (EVAL) */

typedef enum TaskSplit { TASK_SPLIT_TRAIN = 0, TASK_SPLIT_EVAL = 1 } TaskSplit;

/* "reviews-v1-s42": names the task version and seed, for cache paths. */
int task_cache_key(char *buf, size_t len, uint64_t seed);

/* --- generation --- */

/* Writes one document (ending in TASK_EOD, NUL-terminated) into buf and
 * returns its length without the NUL. Uses only r. */
size_t task_document(Rng *r, char buf[TASK_DOC_MAX]);

/* n_docs documents from seed's corpus stream, concatenated, into a malloc'ed
 * NUL-terminated buffer (*len excludes the NUL). Same seed, same bytes. */
int task_corpus(uint64_t seed, int64_t n_docs, char **text, size_t *len, char *err, size_t errlen);
/* The same bytes written atomically to path. */
int task_corpus_write(const char *path, uint64_t seed, int64_t n_docs, char *err, size_t errlen);

/* n distinct prompts of one split; text[i] is malloc'ed and NUL-terminated. */
typedef struct TaskPrompts {
    int n;
    char **text; /* (n) */
} TaskPrompts;

/* Fails (with p left empty) if the split has fewer than n distinct prompts
 * reachable in a bounded number of draws. */
int task_prompts_make(TaskPrompts *p, uint64_t seed, TaskSplit split, int n, char *err,
                      size_t errlen);
void task_prompts_free(TaskPrompts *p);
/* The split a prompt string belongs to: a fixed hash (FNV-1a) of its bytes. */
TaskSplit task_prompt_split(const char *prompt, size_t len);

/* --- reward --- */

typedef struct TaskScore {
    double sum;        /* S: signed, scaled lexicon values */
    double reward;     /* tanh(S / TASK_REWARD_SCALE), in [-1, 1] */
    int64_t words;     /* all words, known or not */
    int64_t sentiment; /* lexicon words among them */
} TaskScore;

TaskScore task_score(const char *text, size_t len);
double task_reward(const char *text, size_t len);

/* --- preference pairs --- */

typedef struct TaskPair {
    int32_t prompt;   /* index of the prompt */
    int32_t chosen;   /* completion index in [0, K) */
    int32_t rejected; /* completion index in [0, K) */
    bool flipped;     /* noise chose the lower reward */
} TaskPair;

typedef struct TaskPairStats {
    int64_t pairs;   /* pairs formed (or written) */
    int64_t ties;    /* pairs skipped: equal rewards */
    int64_t flipped; /* pairs whose chosen has the lower reward (noise) */
    int64_t invalid; /* pairs skipped: a non-finite reward, or text data.h refuses */
} TaskPairStats;

/* The most pairs task_pairs_form can return: n_prompts * K * (K - 1) / 2. */
int64_t task_pairs_max(int n_prompts, int k);

/* Forms the pairs of every prompt from rewards (n_prompts, K) row-major, in
 * order (prompt, i < j). bt_temp <= 0: no noise (rng unused); otherwise one
 * rng_uniform per non-tied pair decides it. out holds task_pairs_max pairs.
 * Returns the number formed; stats (may be NULL) counts them. */
int64_t task_pairs_form(const double *rewards, int n_prompts, int k, double bt_temp, Rng *rng,
                        TaskPair *out, TaskPairStats *stats);

/* Writes pairs as TRL JSONL to path atomically, one line per pair in order.
 * prompts is (n_prompts), completions (n_prompts, K) row-major, both
 * NUL-terminated strings. A pair whose text is not valid UTF-8 (a byte model
 * can emit any byte) or whose chosen or rejected is empty is skipped, as
 * data.h's loader would refuse it. stats (may be NULL) is reset, then
 * pairs = lines written, invalid = pairs skipped. An index out of range is
 * an error and nothing is written. */
int task_pairs_write(const char *path, const char *const *prompts, int n_prompts,
                     const char *const *completions, int k, const TaskPair *pairs, int64_t n,
                     TaskPairStats *stats, char *err, size_t errlen);

#endif
