/*
 * discover/propose.c — the proposer interface's dispatch, the prompt template and the
 * reply parser (propose.h). The proposers themselves are propose_evolve.c,
 * propose_llm.c and propose_command.c.
 *
 * The reply parser never trusts the reply's shape: LLMs wrap JSON in fences,
 * put prose around it, escape code badly, or answer with only a code block.
 * It tries, in order, each fenced block that holds a JSON object, the whole
 * reply, and the span from the first '{' to the last '}'; then a ```lua
 * block. What it returns is only text: the code is run by no one until the
 * checker loads it into a sandbox.
 */
#include "discover/propose.h"

#include <ctype.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"
#include "util/text.h"

#define CODE_LINES_SHOWN 80 /* of a failed candidate's code in the prompt */

struct Proposer {
    const ProposerOps *ops;
    void *state;
};

static const char *const kind_names[] = {"evolve", "llm", "command"};

const char *propose_kind_name(ProposeKind k)
{
    return k <= PROPOSE_COMMAND ? kind_names[k] : "unknown";
}

int propose_kind_parse(const char *name, ProposeKind *out)
{
    for (int k = 0; k <= PROPOSE_COMMAND; k++)
        if (strcmp(name, kind_names[k]) == 0) {
            *out = (ProposeKind)k;
            return 0;
        }
    return -1;
}

void propose_config_defaults(ProposeConfig *c)
{
    memset(c, 0, sizeof *c);
    c->kind = PROPOSE_EVOLVE;
    snprintf(c->url, sizeof c->url, "https://api.openai.com/v1");
    snprintf(c->model, sizeof c->model, "gpt-4o");
    snprintf(c->key_env, sizeof c->key_env, "OPENAI_API_KEY");
    c->temperature = 0.7;
    c->max_tokens = 2048;
    c->connect_timeout = 10;
    c->timeout = 180;
    c->retries = 4;
    c->backoff = 2.0;
    c->command_timeout = 300;
    c->max_nodes = 40;
}

char *propose_strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void proposal_free(Proposal *p)
{
    free(p->thought);
    free(p->code);
    free(p->genome);
    free(p->raw);
    memset(p, 0, sizeof *p);
}

/* ---- dispatch ---------------------------------------------------------------- */

static const ProposerOps *ops_of(ProposeKind k)
{
    switch (k) {
    case PROPOSE_LLM:
        return &propose_llm_ops;
    case PROPOSE_COMMAND:
        return &propose_command_ops;
    default:
        return &propose_evolve_ops;
    }
}

Proposer *proposer_new(const ProposeConfig *cfg, char *err, size_t errlen)
{
    Proposer *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "proposer: out of memory");
        return NULL;
    }
    p->ops = ops_of(cfg->kind);
    p->state = p->ops->create(cfg, err, errlen);
    if (!p->state) {
        free(p);
        return NULL;
    }
    return p;
}

/* s replaced by its UTF-8-clean copy; false when out of memory */
static bool clean_text(char **s)
{
    if (!*s || text_utf8_valid(*s, strlen(*s)))
        return true;
    char *c = text_utf8_clean(*s, strlen(*s));
    free(*s);
    *s = c;
    return c != NULL;
}

static void clean_array(char *s, size_t cap)
{
    if (text_utf8_valid(s, strlen(s)))
        return;
    char *c = text_utf8_clean(s, strlen(s));
    size_t n = c ? strlen(c) : 0;
    if (n >= cap)
        n = cap - 1;
    if (c)
        memcpy(s, c, n);
    s[n] = 0;
    free(c);
    /* a cut may have split a character: drop its start bytes */
    while (n && !text_utf8_valid(s, n))
        s[--n] = 0;
}

/* A proposer's reply is untrusted text bound for the archive's JSON (which
 * refuses invalid UTF-8) and for prompts: code that is not UTF-8 is no code
 * (it is not Lua a reader could trust either), the rest is cleaned. */
static int make_safe(Proposal *out, char *err, size_t errlen)
{
    if (out->code && !text_utf8_valid(out->code, strlen(out->code))) {
        free(out->code);
        out->code = NULL;
        snprintf(out->error, sizeof out->error,
                 "the reply's code is not valid UTF-8 (a loss file is UTF-8 text)");
    }
    if (!clean_text(&out->thought) || !clean_text(&out->raw) || !clean_text(&out->genome)) {
        snprintf(err, errlen, "proposer: out of memory");
        return -1;
    }
    clean_array(out->name, sizeof out->name);
    clean_array(out->error, sizeof out->error);
    return 0;
}

int proposer_propose(Proposer *p, const ProposeContext *ctx, Proposal *out, char *err,
                     size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (p->ops->propose(p->state, ctx, out, err, errlen) != 0)
        return -1;
    return make_safe(out, err, errlen);
}

bool proposer_needs_genome(const Proposer *p) { return p->ops->needs_genome; }

void proposer_free(Proposer *p)
{
    if (!p)
        return;
    p->ops->destroy(p->state);
    free(p);
}

/* ---- the prompt ------------------------------------------------------------------ */

static void put_code(FILE *f, const char *code, int max_lines)
{
    fputs("```lua\n", f);
    int lines = 0;
    const char *p = code;
    for (; *p && lines < max_lines; p++) {
        fputc(*p, f);
        lines += *p == '\n';
    }
    if (p > code && p[-1] != '\n')
        fputc('\n', f);
    if (*p)
        fputs("-- ... (cut)\n", f);
    fputs("```\n", f);
}

/* "fitness 0.8123 ± 0.0150": differences inside the interval are noise,
 * and the proposer should not chase them */
static void put_fitness(FILE *f, double fitness, double interval, const char *metric)
{
    if (isnan(fitness)) {
        fputs("no fitness", f);
        return;
    }
    fprintf(f, "fitness %.4f", fitness);
    if (interval > 0)
        fprintf(f, " ± %.4f", interval);
    if (metric)
        fprintf(f, " (%s)", metric);
}

static void put_parents(FILE *f, const ProposeContext *ctx)
{
    if (ctx->n_parents == 0)
        fputs("(no evaluated losses yet: start from the contract's example)\n", f);
    for (int i = 0; i < ctx->n_parents; i++) {
        const ProposeEntry *e = &ctx->parents[i];
        fprintf(f, "### Parent %d: `%s` (generation %d), ", i + 1, e->name, e->generation);
        put_fitness(f, e->fitness, e->interval, NULL);
        fputc('\n', f);
        if (e->thought)
            fprintf(f, "Idea: %s\n", e->thought);
        if (e->shape)
            fprintf(f, "Shape: %s\n", e->shape);
        if (e->curve)
            fprintf(f, "Training: %s\n", e->curve);
        if (e->code)
            put_code(f, e->code, CODE_LINES_SHOWN);
        fputc('\n', f);
    }
}

static void put_failures(FILE *f, const ProposeContext *ctx)
{
    if (ctx->n_failures == 0)
        fputs("(none so far)\n", f);
    for (int i = 0; i < ctx->n_failures; i++) {
        const ProposeEntry *e = &ctx->failures[i];
        fprintf(f, "### `%s` (generation %d): %s\n", e->name, e->generation, e->status);
        fprintf(f, "Diagnostics:\n%s\n", e->diagnostics ? e->diagnostics : "- (none recorded)");
        if (e->code)
            put_code(f, e->code, CODE_LINES_SHOWN / 2);
        else
            fputs("(the reply had no usable code)\n", f);
        fputc('\n', f);
    }
}

static void put_leaders(FILE *f, const ProposeContext *ctx)
{
    if (ctx->n_leaders == 0)
        fputs("(empty)\n", f);
    for (int i = 0; i < ctx->n_leaders; i++) {
        const ProposeEntry *e = &ctx->leaders[i];
        fprintf(f, "%d. `%s` (generation %d): ", i + 1, e->name, e->generation);
        put_fitness(f, e->fitness, e->interval, NULL);
        fprintf(f, "%s%s\n", e->shape ? "; " : "", e->shape ? e->shape : "");
    }
    if (ctx->n_leaders > 1)
        fputs("(± is a 95% interval over the training seeds: a gap inside it is noise)\n", f);
}

/* writes placeholder `name` of the template; -1 when there is no such one */
static int put_placeholder(FILE *f, const char *name, size_t n, const ProposeContext *ctx)
{
#define IS(s) (n == strlen(s) && strncmp(name, s, n) == 0)
    if (IS("GENERATION"))
        fprintf(f, "%d", ctx->generation);
    else if (IS("FITNESS_METRIC"))
        fputs(ctx->fitness_metric ? ctx->fitness_metric : "fitness", f);
    else if (IS("N_EVALUATED"))
        fprintf(f, "%d", ctx->n_evaluated);
    else if (IS("PARENTS"))
        put_parents(f, ctx);
    else if (IS("FAILURES"))
        put_failures(f, ctx);
    else if (IS("LEADERBOARD"))
        put_leaders(f, ctx);
    else
        return -1;
    return 0;
#undef IS
}

static int fill(const char *path, const char *tpl, const ProposeContext *ctx, FILE *f, char *err,
                size_t errlen)
{
    int line = 1;
    for (const char *p = tpl; *p; p++) {
        line += *p == '\n';
        const char *end = p[0] == '{' && p[1] == '{' ? strstr(p + 2, "}}") : NULL;
        if (!end) {
            fputc(*p, f);
            continue;
        }
        if (put_placeholder(f, p + 2, (size_t)(end - p - 2), ctx) != 0) {
            snprintf(err, errlen,
                     "%s:%d: unknown placeholder {{%.*s}} (known: GENERATION, "
                     "FITNESS_METRIC, N_EVALUATED, PARENTS, FAILURES, LEADERBOARD)",
                     path, line, (int)(end - p - 2 < 40 ? end - p - 2 : 40), p + 2);
            return -1;
        }
        p = end + 1;
    }
    return 0;
}

int propose_render(const char *template_path, const ProposeContext *ctx, char **system, char **user,
                   char *err, size_t errlen)
{
    *system = *user = NULL;
    char *tpl, *out = NULL;
    size_t len, olen = 0;
    static const FsReadCap cap = {.bytes = (size_t)1 << 20, .kind = "a prompt template"};
    if (fsutil_read_capped(template_path, &cap, &tpl, &len, err, errlen) != 0)
        return -1;
    FILE *f = open_memstream(&out, &olen);
    int rc = f ? fill(template_path, tpl, ctx, f, err, errlen) : -1;
    if (f)
        fclose(f);
    free(tpl);
    if (rc != 0 || !out) {
        if (!f)
            snprintf(err, errlen, "prompt: out of memory");
        free(out);
        return -1;
    }
    static const char marker[] = "<!-- user -->";
    char *cut = strstr(out, marker);
    *system = propose_strdup(cut ? (*cut = '\0', out) : "");
    *user = propose_strdup(cut ? cut + sizeof marker - 1 : out);
    free(out);
    if (!*system || !*user) {
        free(*system);
        free(*user);
        *system = *user = NULL;
        snprintf(err, errlen, "prompt: out of memory");
        return -1;
    }
    return 0;
}

/* ---- the reply ----------------------------------------------------------------- */

/* The name = "..." field of Lua code, or "" */
static void name_from_code(const char *code, char *out, size_t n)
{
    out[0] = '\0';
    for (const char *p = strstr(code, "name"); p; p = strstr(p + 4, "name")) {
        const char *q = p + 4;
        while (*q == ' ' || *q == '\t')
            q++;
        if (*q++ != '=')
            continue;
        while (*q == ' ' || *q == '\t')
            q++;
        if (*q != '"' && *q != '\'')
            continue;
        const char *e = strchr(q + 1, *q);
        if (e)
            snprintf(out, n, "%.*s", (int)(e - q - 1), q + 1);
        return;
    }
}

/* code without a ``` fence around it (JSON "code" fields often carry one) */
static char *unfence(const char *code)
{
    const char *open = strstr(code, "```");
    if (!open)
        return propose_strdup(code);
    const char *body = strchr(open, '\n');
    const char *close = body ? strstr(body + 1, "```") : NULL;
    if (!body || !close)
        return propose_strdup(code);
    char *c = malloc((size_t)(close - body));
    if (c) {
        memcpy(c, body + 1, (size_t)(close - body - 1));
        c[close - body - 1] = '\0';
    }
    return c;
}

/* fills out from a JSON object with a "code" string; 0 when it had one */
static int from_json(json_t *j, Proposal *out)
{
    const char *code = json_string_value(json_object_get(j, "code"));
    if (!json_is_object(j) || !code || !*code)
        return -1;
    out->code = unfence(code);
    out->thought = propose_strdup(json_string_value(json_object_get(j, "thought")));
    const char *name = json_string_value(json_object_get(j, "name"));
    if (name)
        snprintf(out->name, sizeof out->name, "%s", name);
    else if (out->code)
        name_from_code(out->code, out->name, sizeof out->name);
    return out->code ? 0 : -1;
}

/* tries text[0..n) as a JSON object; remembers the first parse error */
static int try_json(const char *text, size_t n, Proposal *out, char *why, size_t whylen)
{
    json_error_t e;
    json_t *j = json_loadb(text, n, 0, &e);
    int rc = j ? from_json(j, out) : -1;
    if (!j && !why[0])
        snprintf(why, whylen, "malformed JSON (line %d, column %d: %s)", e.line, e.column, e.text);
    else if (j && rc != 0 && !why[0])
        snprintf(why, whylen, "the JSON object has no \"code\" string");
    json_decref(j);
    return rc;
}

typedef struct Fence {
    const char *tag, *body; /* tag up to the newline */
    size_t tag_len, body_len;
} Fence;

/* the next ``` fenced block at or after p; 0 when there is none */
static int next_fence(const char *p, Fence *f, const char **after)
{
    const char *open = strstr(p, "```");
    const char *nl = open ? strchr(open + 3, '\n') : NULL;
    const char *close = nl ? strstr(nl + 1, "```") : NULL;
    if (!close)
        return 0;
    *f = (Fence){open + 3, nl + 1, (size_t)(nl - open - 3), (size_t)(close - nl - 1)};
    *after = close + 3;
    return 1;
}

static bool tag_is(const Fence *f, const char *tag)
{
    size_t n = strlen(tag);
    return f->tag_len >= n && strncasecmp(f->tag, tag, n) == 0;
}

static int json_anywhere(const char *reply, Proposal *out, char *why, size_t whylen)
{
    Fence f;
    const char *after;
    for (const char *p = reply; next_fence(p, &f, &after); p = after) {
        const char *b = f.body;
        while (b < f.body + f.body_len && isspace((unsigned char)*b))
            b++;
        if ((tag_is(&f, "json") || *b == '{') &&
            try_json(f.body, f.body_len, out, why, whylen) == 0)
            return 0;
    }
    const char *first = strchr(reply, '{'), *last = strrchr(reply, '}');
    if (first && last > first && try_json(first, (size_t)(last - first + 1), out, why, whylen) == 0)
        return 0;
    const char *lead = reply + strspn(reply, " \t\r\n");
    if (*lead == '{' && !(last > lead)) /* a truncated object: say so */
        try_json(lead, strlen(lead), out, why, whylen);
    return -1;
}

/* the first non-empty line of the reply that is not a fence */
static char *first_line(const char *reply)
{
    for (const char *p = reply; *p;) {
        while (*p == '\n' || *p == '\r' || *p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, "\r\n");
        if (n > 0 && strncmp(p, "```", 3) != 0) {
            char *t = malloc(n + 1);
            if (t)
                snprintf(t, n + 1, "%s", p);
            return t;
        }
        p += n;
    }
    return NULL;
}

static int lua_fence(const char *reply, Proposal *out)
{
    Fence f;
    const char *after;
    for (const char *p = reply; next_fence(p, &f, &after); p = after) {
        bool lua = tag_is(&f, "lua") || (f.tag_len == 0 && strstr(f.body, "return"));
        if (!lua || f.body_len == 0)
            continue;
        out->code = malloc(f.body_len + 1);
        if (!out->code)
            return -1;
        memcpy(out->code, f.body, f.body_len);
        out->code[f.body_len] = '\0';
        out->thought = first_line(reply);
        name_from_code(out->code, out->name, sizeof out->name);
        return 0;
    }
    return -1;
}

void propose_parse_reply(const char *reply, Proposal *out)
{
    char why[512] = "";
    if (!reply || !*reply) {
        snprintf(out->error, sizeof out->error, "the reply was empty");
        return;
    }
    if (json_anywhere(reply, out, why, sizeof why) == 0 || lua_fence(reply, out) == 0)
        return;
    free(out->code);
    free(out->thought);
    out->code = out->thought = NULL;
    char *head = first_line(reply);
    snprintf(out->error, sizeof out->error,
             "the reply contains no code%s%s: expected a JSON object {\"thought\", \"name\", "
             "\"code\"} or a ```lua fenced block; it began: \"%.160s\"",
             why[0] ? " — " : "", why, head ? head : "");
    free(head);
}
