/*
 * discover/propose.h — where new candidate losses come from: one interface, three
 * proposers, the prompt and the parsing of replies.
 *
 *     Proposer *p = proposer_new(&cfg, err, sizeof err);
 *     Proposal out;
 *     if (proposer_propose(p, &ctx, &out, err, sizeof err) != 0) ...; // fatal: stop the loop
 *     if (!out.code) ...;            // a reply without usable code: out.error says why
 *     proposal_free(&out);
 *     proposer_free(p);
 *
 * The proposers (ProposeKind):
 *   evolve   offline, the default: mutation and crossover of expression
 *            trees of the loss in rho = beta * logits (propose_evolve.c);
 *            seeded by ctx->seed, so the same archive gives the same
 *            candidates.
 *   llm      an OpenAI-compatible chat-completions endpoint through libcurl
 *            (propose_llm.c): timeouts, retries with back-off on 429, 5xx and
 *            transport errors, the key from an environment variable.
 *   command  any executable: the prompt on its stdin, the reply from its
 *            stdout, under a timeout (propose_command.c); no shell.
 * llm and command share the prompt (propose_render, from a template file
 * such as lua/discover_prompt.md) and the reply parser (propose_parse_reply).
 *
 * Errors. proposer_propose returns -1 only when the proposer cannot go on
 * (the endpoint refuses the key, the command does not exist, retries ran
 * out): the loop stops, and a rerun resumes. A reply that is merely unusable
 * (malformed JSON, a refusal, no code) returns 0 with code NULL and the
 * reason in error; the loop archives it as a failed candidate and shows the
 * reason to the proposer in the next generation's prompt.
 */
#ifndef PREFRUN_PROPOSE_H
#define PREFRUN_PROPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROPOSE_MAX_PARENTS 4
#define PROPOSE_MAX_FAILURES 8
#define PROPOSE_MAX_LEADERS 8
#define PROPOSE_MAX_ARGV 16
#define PROPOSE_STR_LEN 512

typedef enum ProposeKind { PROPOSE_EVOLVE = 0, PROPOSE_LLM, PROPOSE_COMMAND } ProposeKind;

const char *propose_kind_name(ProposeKind k);
/* 0, or -1 when name is not evolve, llm or command */
int propose_kind_parse(const char *name, ProposeKind *out);

typedef struct ProposeConfig {
    ProposeKind kind;
    char prompt_path[PROPOSE_STR_LEN]; /* the template (llm, command) */
    /* llm */
    char url[PROPOSE_STR_LEN]; /* base URL (".../v1") or the full .../chat/completions */
    char model[128];
    char key_env[128]; /* environment variable holding the API key */
    double temperature;
    int max_tokens;         /* 0: not sent */
    double connect_timeout; /* seconds */
    double timeout;         /* seconds, the whole request */
    int retries;            /* further attempts after the first */
    double backoff;         /* seconds before the first retry; doubles each time */
    /* command */
    int argc;
    char argv[PROPOSE_MAX_ARGV][PROPOSE_STR_LEN];
    double command_timeout; /* seconds */
    /* evolve */
    int max_nodes; /* expression size cap */
} ProposeConfig;

void propose_config_defaults(ProposeConfig *c);

/* One archived candidate, as a proposer sees it. Strings may be NULL. */
typedef struct ProposeEntry {
    const char *name;
    int generation;
    const char *status; /* "valid", "invalid", ... */
    double fitness;     /* NAN when none */
    double interval;    /* its 95% half-width (discover/compare.h); 0 or NAN: not shown */
    const char *code;
    const char *thought;     /* the proposer's idea, as it said it */
    const char *genome;      /* evolve's expression, when it has one */
    const char *shape;       /* the shape summary, one line */
    const char *curve;       /* the training curve, one line */
    const char *diagnostics; /* one per line */
} ProposeEntry;

/* What a proposer gets for one candidate, built by the loop from the archive. */
typedef struct ProposeContext {
    int generation, index;
    uint64_t seed;              /* for this candidate: from the run's seed, generation, index */
    const char *fitness_metric; /* what fitness measures, for the prompt */
    int n_parents;
    ProposeEntry parents[PROPOSE_MAX_PARENTS];
    int n_failures; /* recent failures, newest first */
    ProposeEntry failures[PROPOSE_MAX_FAILURES];
    int n_leaders; /* the best so far, best first */
    ProposeEntry leaders[PROPOSE_MAX_LEADERS];
    int n_evaluated; /* candidates archived so far */
} ProposeContext;

typedef struct Proposal {
    char name[64];    /* as proposed (the loop sanitises it) */
    char *thought;    /* malloc'ed; may be NULL */
    char *code;       /* malloc'ed Lua; NULL when the reply had none */
    char *genome;     /* malloc'ed; evolve only */
    char *raw;        /* malloc'ed raw reply (llm, command), for the archive */
    char error[1024]; /* why code is NULL */
    int n_parents;
    char parents[PROPOSE_MAX_PARENTS][64]; /* names of the parents it came from */
} Proposal;

void proposal_free(Proposal *p);

typedef struct Proposer Proposer;

/* The operations of one kind: a small table, one per proposer file. */
typedef struct ProposerOps {
    const char *name;
    bool needs_genome; /* parents must carry an expression genome */
    void *(*create)(const ProposeConfig *cfg, char *err, size_t errlen);
    int (*propose)(void *state, const ProposeContext *ctx, Proposal *out, char *err, size_t errlen);
    void (*destroy)(void *state);
} ProposerOps;

extern const ProposerOps propose_evolve_ops;
extern const ProposerOps propose_llm_ops;
extern const ProposerOps propose_command_ops;

/* evolve's genome of a library loss (losses/NAME.lua) when it has an exact
 * one ("dpo", "hinge", "robust", "discopop", ...), else NULL: lets library
 * seeds be parents of mutations */
const char *propose_evolve_seed_genome(const char *name);

Proposer *proposer_new(const ProposeConfig *cfg, char *err, size_t errlen);
int proposer_propose(Proposer *p, const ProposeContext *ctx, Proposal *out, char *err,
                     size_t errlen);
bool proposer_needs_genome(const Proposer *p);
void proposer_free(Proposer *p);

/* ---- shared by llm and command --------------------------------------------- */

/* The template at path filled from ctx: *system gets the text before the
 * line "<!-- user -->" (may be empty), *user the rest, both malloc'ed.
 * Placeholders: {{GENERATION}} {{FITNESS_METRIC}} {{PARENTS}} {{FAILURES}}
 * {{LEADERBOARD}} {{N_EVALUATED}}; an unknown {{NAME}} is an error. */
int propose_render(const char *template_path, const ProposeContext *ctx, char **system, char **user,
                   char *err, size_t errlen);

/* Reads a reply: a JSON object {"thought", "name", "code"} (possibly in a
 * ``` fence, possibly among other text), else a ```lua fenced block with the
 * reply's first line as the thought. Fills out (code NULL and error set when
 * there is no code). */
void propose_parse_reply(const char *reply, Proposal *out);

/* a malloc'ed copy of s (NULL for NULL) */
char *propose_strdup(const char *s);

#endif
