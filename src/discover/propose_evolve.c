/*
 * discover/propose_evolve.c — the offline proposer: losses as expression trees in
 * rho = beta * logits, varied by mutation and crossover, written out as
 * readable Lua loss files (propose.h).
 *
 * A GENOME is "beta=B EXPR", EXPR an S-expression over
 *   leaves    rho, mean_rho (the batch mean of rho: batch coupling), numbers
 *   unary     neg logsigmoid softplus exp tanh sigmoid relu square abs
 *   binary    add sub mul
 *   gate      (gate TAU A B) = sigmoid(rho/TAU) A + sigmoid(-rho/TAU) B, the
 *             DiscoPOP paper's sigmoid-gated mixture of two losses
 * e.g. DPO is "beta=0.1 (neg (logsigmoid rho))". The genome is archived with
 * the candidate (and written into its file as a comment), so any evaluated
 * genome can be a parent later; candidates without one (LLM-written) are not.
 *
 * VARIATION, one operator per candidate, drawn from the candidate's seed:
 *   swap      a unary primitive becomes another (logsigmoid -> softplus, ...)
 *   perturb   a constant, a gate's tau or beta is scaled by exp(0.5 N(0,1))
 *   mix       two parents: w A + (1 - w) B
 *   gate      two parents: the sigmoid-gated mixture above
 *   graft     a random subtree of A is replaced by one of B
 *   grow      a subtree x becomes x + c f(rho), or is wrapped in a unary
 *   prune     a unary node is replaced by its operand
 * A result that is too big (max_nodes) or no longer reads rho is redrawn.
 * Numbers are rounded to 3 significant digits so files stay readable.
 *
 * All nodes of one proposal come from one fixed pool freed with it: nothing
 * is allocated per node, nothing outlives the call.
 */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "discover/propose.h"
#include "core/rng.h"

#define POOL_NODES 1024
#define MAX_DEPTH 24
#define REDRAWS 16
#define BETA_MIN 0.005
#define BETA_MAX 2.0

typedef enum NodeKind {
    N_RHO,
    N_MEAN_RHO,
    N_CONST,
    N_NEG,
    N_LOGSIGMOID,
    N_SOFTPLUS,
    N_EXP,
    N_TANH,
    N_SIGMOID,
    N_RELU,
    N_SQUARE,
    N_ABS,
    N_ADD,
    N_SUB,
    N_MUL,
    N_GATE,
    N_KIND_COUNT
} NodeKind;

#define FIRST_UNARY N_NEG
#define LAST_UNARY N_ABS

static const char *const node_names[] = {
    "rho",     "mean_rho", "const",  "neg", "logsigmoid", "softplus", "exp", "tanh",
    "sigmoid", "relu",     "square", "abs", "add",        "sub",      "mul", "gate",
};
_Static_assert(sizeof node_names / sizeof node_names[0] == N_KIND_COUNT, "a name per node kind");

typedef struct Node {
    NodeKind kind;
    double c; /* N_CONST: the value; N_GATE: tau */
    struct Node *a, *b;
} Node;

typedef struct Pool {
    Node nodes[POOL_NODES];
    int used;
} Pool;

typedef struct Genome {
    double beta;
    Node *root;
} Genome;

typedef struct Evolve {
    int max_nodes;
} Evolve;

static bool is_unary(NodeKind k) { return k >= FIRST_UNARY && k <= LAST_UNARY; }

static Node *node(Pool *p, NodeKind k, double c, Node *a, Node *b)
{
    if (p->used == POOL_NODES)
        return NULL;
    Node *n = &p->nodes[p->used++];
    *n = (Node){k, c, a, b};
    return n;
}

/* ---- the built-in seeds: library losses as genomes ----------------------------- */

typedef struct Seed {
    const char *name, *genome, *note;
} Seed;

static const Seed seeds[] = {
    {"dpo", "beta=0.1 (neg (logsigmoid rho))", "DPO (Rafailov et al. 2023)"},
    {"sigmoid", "beta=0.1 (neg (logsigmoid rho))", "TRL sigmoid = DPO"},
    {"hinge", "beta=0.1 (relu (sub 1 rho))", "SLiC hinge"},
    {"robust",
     "beta=0.1 (add (mul 1.125 (neg (logsigmoid rho))) (mul 0.125 (logsigmoid (neg rho))))",
     "robust DPO, label_smoothing 0.1"},
    {"discopop", "beta=0.05 (gate 0.05 (exp (neg rho)) (neg (logsigmoid rho)))",
     "DiscoPOP / LRML (Lu et al. 2024)"},
    {"exp", "beta=0.1 (exp (neg rho))", "exponential loss"},
    {"savage", "beta=0.1 (sigmoid (neg rho))", "sigmoid (Savage) loss"},
};
#define N_SEEDS (int)(sizeof seeds / sizeof seeds[0])

const char *propose_evolve_seed_genome(const char *name)
{
    for (int i = 0; i < N_SEEDS; i++)
        if (strcmp(seeds[i].name, name) == 0)
            return seeds[i].genome;
    return NULL;
}

/* ---- parsing a genome ------------------------------------------------------------ */

typedef struct Parser {
    const char *p;
    Pool *pool;
} Parser;

static void skip_ws(Parser *ps)
{
    while (isspace((unsigned char)*ps->p))
        ps->p++;
}

static int word(Parser *ps, char *out, size_t n)
{
    skip_ws(ps);
    size_t k = 0;
    while (*ps->p && !isspace((unsigned char)*ps->p) && *ps->p != '(' && *ps->p != ')') {
        if (k + 1 < n)
            out[k++] = *ps->p;
        ps->p++;
    }
    out[k] = '\0';
    return k > 0 ? 0 : -1;
}

static Node *parse_expr(Parser *ps, int depth);

static Node *parse_call(Parser *ps, int depth)
{
    char w[32];
    if (word(ps, w, sizeof w) != 0)
        return NULL;
    NodeKind k = N_KIND_COUNT;
    for (int i = FIRST_UNARY; i < N_KIND_COUNT; i++)
        if (strcmp(w, node_names[i]) == 0)
            k = (NodeKind)i;
    double c = 0;
    if (k == N_GATE) {
        char num[32], *end = num;
        if (word(ps, num, sizeof num) == 0)
            c = strtod(num, &end);
        if (end == num || *end || !(c > 0))
            return NULL;
    }
    Node *a = k == N_KIND_COUNT ? NULL : parse_expr(ps, depth + 1);
    Node *b = a && !is_unary(k) ? parse_expr(ps, depth + 1) : NULL;
    skip_ws(ps);
    if (!a || (!is_unary(k) && !b) || *ps->p != ')')
        return NULL;
    ps->p++;
    return node(ps->pool, k, c, a, b);
}

static Node *parse_expr(Parser *ps, int depth)
{
    skip_ws(ps);
    if (depth > MAX_DEPTH)
        return NULL;
    if (*ps->p == '(') {
        ps->p++;
        return parse_call(ps, depth);
    }
    char w[32], *end;
    if (word(ps, w, sizeof w) != 0)
        return NULL;
    if (strcmp(w, "rho") == 0)
        return node(ps->pool, N_RHO, 0, NULL, NULL);
    if (strcmp(w, "mean_rho") == 0)
        return node(ps->pool, N_MEAN_RHO, 0, NULL, NULL);
    double c = strtod(w, &end);
    return *end || !isfinite(c) ? NULL : node(ps->pool, N_CONST, c, NULL, NULL);
}

static int parse_genome(const char *text, Pool *pool, Genome *g)
{
    char *end;
    if (strncmp(text, "beta=", 5) != 0)
        return -1;
    g->beta = strtod(text + 5, &end);
    if (end == text + 5 || !(g->beta > 0))
        return -1;
    Parser ps = {end, pool};
    g->root = parse_expr(&ps, 0);
    skip_ws(&ps);
    return g->root && !*ps.p ? 0 : -1;
}

/* ---- writing a genome and its Lua ----------------------------------------------- */

static double round3(double x)
{
    if (x == 0 || !isfinite(x))
        return x;
    double e = pow(10.0, floor(log10(fabs(x))) - 2);
    return round(x / e) * e;
}

static void write_sexpr(FILE *f, const Node *n)
{
    if (n->kind == N_RHO || n->kind == N_MEAN_RHO) {
        fputs(node_names[n->kind], f);
    } else if (n->kind == N_CONST) {
        fprintf(f, "%.4g", n->c);
    } else {
        fprintf(f, "(%s ", node_names[n->kind]);
        if (n->kind == N_GATE)
            fprintf(f, "%.4g ", n->c);
        write_sexpr(f, n->a);
        if (n->b) {
            fputc(' ', f);
            write_sexpr(f, n->b);
        }
        fputc(')', f);
    }
}

/* Lua precedence levels: + - 1, * 2, unary minus 3, ^ 4, atoms and calls 5 */
static int prec(const Node *n)
{
    switch (n->kind) {
    case N_ADD:
    case N_SUB:
    case N_GATE:
        return 1;
    case N_MUL:
        return 2;
    case N_NEG:
        return 3;
    case N_SQUARE:
        return 4;
    case N_CONST:
        return n->c < 0 ? 3 : 5;
    default:
        return 5;
    }
}

static void write_lua(FILE *f, const Node *n, int need);

static void write_wrapped(FILE *f, const Node *n, int need)
{
    bool paren = prec(n) < need;
    if (paren)
        fputc('(', f);
    write_lua(f, n, paren ? 0 : need);
    if (paren)
        fputc(')', f);
}

static void write_lua(FILE *f, const Node *n, int need)
{
    (void)need;
    switch (n->kind) {
    case N_RHO:
        fputs("rho", f);
        return;
    case N_MEAN_RHO:
        fputs("mean(rho)", f);
        return;
    case N_CONST:
        fprintf(f, "%.4g", n->c);
        return;
    case N_NEG: /* never "--": that would start a Lua comment */
        fputc('-', f);
        write_wrapped(f, n->a, n->a->kind == N_NEG || prec(n->a) == 3 ? 5 : 3);
        return;
    case N_SQUARE:
        write_wrapped(f, n->a, 5);
        fputs(" ^ 2", f);
        return;
    case N_ADD:
    case N_SUB:
        write_wrapped(f, n->a, 1);
        fputs(n->kind == N_ADD ? " + " : " - ", f);
        write_wrapped(f, n->b, 2); /* a - (b + c) keeps its parentheses */
        return;
    case N_MUL:
        write_wrapped(f, n->a, 2);
        fputs(" * ", f);
        write_wrapped(f, n->b, 3);
        return;
    case N_GATE:
        fprintf(f, "sigmoid(rho / %.4g) * ", n->c);
        write_wrapped(f, n->a, 3);
        fprintf(f, " + sigmoid(-rho / %.4g) * ", n->c);
        write_wrapped(f, n->b, 3);
        return;
    default:
        fprintf(f, "%s(", node_names[n->kind]);
        write_lua(f, n->a, 0);
        fputc(')', f);
    }
}

static char *genome_text(const Genome *g)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    fprintf(f, "beta=%.4g ", g->beta);
    write_sexpr(f, g->root);
    fclose(f);
    return out;
}

static char *lua_text(const Genome *g, const char *name, const char *genome, const char *thought,
                      int generation)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    fprintf(f, "-- %s: generated by `prefrun discover` (evolve), generation %d.\n", name,
            generation);
    fprintf(f, "-- %s\n-- genome: %s\n", thought, genome);
    fprintf(f, "return {\n  name = \"%s\",\n  params = { beta = %.4g },\n", name, g->beta);
    fputs("  loss = function(b, p)\n"
          "    local logits = (b.policy_chosen_logps - b.policy_rejected_logps)\n"
          "                 - (b.reference_chosen_logps - b.reference_rejected_logps)\n"
          "    local rho = p.beta * logits\n"
          "    return ",
          f);
    write_lua(f, g->root, 0);
    fputs("\n  end,\n}\n", f);
    fclose(f);
    return out;
}

/* ---- variation ---------------------------------------------------------------------- */

static int count(const Node *n) { return n ? 1 + count(n->a) + count(n->b) : 0; }

static bool reads_rho(const Node *n)
{
    return n && (n->kind == N_RHO || n->kind == N_MEAN_RHO || reads_rho(n->a) || reads_rho(n->b));
}

static Node *copy(Pool *p, const Node *n)
{
    if (!n)
        return NULL;
    Node *a = copy(p, n->a), *b = copy(p, n->b);
    if ((n->a && !a) || (n->b && !b))
        return NULL;
    return node(p, n->kind, n->c, a, b);
}

/* the k-th node in pre-order, and the slot that points at it */
static Node **nth_slot(Node **slot, int *k)
{
    if (!*slot)
        return NULL;
    if ((*k)-- == 0)
        return slot;
    Node **r = nth_slot(&(*slot)->a, k);
    return r ? r : nth_slot(&(*slot)->b, k);
}

static Node **random_slot(Node **root, Rng *r)
{
    int k = (int)rng_below(r, (uint32_t)count(*root));
    return nth_slot(root, &k);
}

/* a random slot whose node satisfies pred; NULL when none does */
static Node **find_slot(Node **root, Rng *r, bool (*pred)(const Node *))
{
    int n = count(*root), start = (int)rng_below(r, (uint32_t)n);
    for (int i = 0; i < n; i++) {
        int k = (start + i) % n;
        Node **s = nth_slot(root, &k);
        if (s && pred(*s))
            return s;
    }
    return NULL;
}

static bool unary_node(const Node *n) { return is_unary(n->kind); }
static bool tunable_node(const Node *n) { return n->kind == N_CONST || n->kind == N_GATE; }

static NodeKind random_unary(Rng *r, NodeKind not )
{
    NodeKind k;
    do
        k = (NodeKind)(FIRST_UNARY + rng_below(r, LAST_UNARY - FIRST_UNARY + 1));
    while (k == not );
    return k;
}

static double scaled(Rng *r, double x) { return round3(x * exp(0.5 * (double)rng_normal(r))); }

typedef struct Variation {
    Pool *pool;
    Rng *r;
    Genome a, b; /* b.root NULL: one parent */
    const char *a_name, *b_name;
    bool used_b; /* a crossover took material from b */
    char what[256];
} Variation;

static int op_swap(Variation *v, Genome *g)
{
    Node **s = find_slot(&g->root, v->r, unary_node);
    if (!s)
        return -1;
    NodeKind old = (*s)->kind;
    (*s)->kind = random_unary(v->r, old);
    snprintf(v->what, sizeof v->what, "swap %s -> %s in %s", node_names[old],
             node_names[(*s)->kind], v->a_name);
    return 0;
}

static int op_perturb(Variation *v, Genome *g)
{
    Node **s = find_slot(&g->root, v->r, tunable_node);
    if (!s || rng_below(v->r, 4) == 0) {
        double old = g->beta;
        g->beta = fmin(BETA_MAX, fmax(BETA_MIN, scaled(v->r, g->beta)));
        snprintf(v->what, sizeof v->what, "beta %.4g -> %.4g in %s", old, g->beta, v->a_name);
        return 0;
    }
    double old = (*s)->c;
    (*s)->c = scaled(v->r, old);
    if ((*s)->kind == N_CONST && rng_below(v->r, 5) == 0)
        (*s)->c = -(*s)->c; /* a sign flip now and then: constants can cross zero */
    snprintf(v->what, sizeof v->what, "%s %.4g -> %.4g in %s",
             (*s)->kind == N_GATE ? "tau" : "constant", old, (*s)->c, v->a_name);
    return 0;
}

static int op_mix(Variation *v, Genome *g)
{
    if (!v->b.root)
        return -1;
    double w = round3(0.1 + 0.8 * rng_uniform(v->r));
    Node *p = copy(v->pool, v->b.root);
    Node *l = node(v->pool, N_MUL, 0, node(v->pool, N_CONST, w, NULL, NULL), g->root);
    Node *rr = node(v->pool, N_MUL, 0, node(v->pool, N_CONST, round3(1 - w), NULL, NULL), p);
    if (!p || !l || !rr || !(g->root = node(v->pool, N_ADD, 0, l, rr)))
        return -1;
    v->used_b = true;
    snprintf(v->what, sizeof v->what, "mix %.4g %s + %.4g %s", w, v->a_name, round3(1 - w),
             v->b_name);
    return 0;
}

static int op_gate(Variation *v, Genome *g)
{
    if (!v->b.root)
        return -1;
    double tau = round3(exp(log(0.02) + rng_uniform(v->r) * (log(1.0) - log(0.02))));
    Node *p = copy(v->pool, v->b.root);
    if (!p || !(g->root = node(v->pool, N_GATE, tau, p, g->root)))
        return -1;
    v->used_b = true;
    snprintf(v->what, sizeof v->what,
             "sigmoid-gated mixture (tau %.4g): %s where rho > 0, %s where rho < 0", tau, v->b_name,
             v->a_name);
    return 0;
}

static int op_graft(Variation *v, Genome *g)
{
    if (!v->b.root)
        return -1;
    Node *from = v->b.root;
    Node **donor = random_slot(&from, v->r);
    Node **slot = random_slot(&g->root, v->r);
    Node *piece = donor ? copy(v->pool, *donor) : NULL;
    if (!slot || !piece)
        return -1;
    *slot = piece;
    v->used_b = true;
    snprintf(v->what, sizeof v->what, "graft a subtree of %s into %s", v->b_name, v->a_name);
    return 0;
}

static int op_grow(Variation *v, Genome *g)
{
    Node **slot = random_slot(&g->root, v->r);
    if (!slot)
        return -1;
    NodeKind f = random_unary(v->r, N_KIND_COUNT);
    if (rng_below(v->r, 2) == 0) {
        *slot = node(v->pool, f, 0, *slot, NULL);
        snprintf(v->what, sizeof v->what, "wrap a subtree of %s in %s", v->a_name, node_names[f]);
        return *slot ? 0 : -1;
    }
    double c = round3(0.05 + 0.5 * rng_uniform(v->r));
    Node *rho = node(v->pool, N_RHO, 0, NULL, NULL);
    Node *term = node(v->pool, N_MUL, 0, node(v->pool, N_CONST, c, NULL, NULL),
                      node(v->pool, f, 0, rho, NULL));
    *slot = node(v->pool, N_ADD, 0, *slot, term);
    snprintf(v->what, sizeof v->what, "add %.4g %s(rho) to a subtree of %s", c, node_names[f],
             v->a_name);
    return *slot && term ? 0 : -1;
}

static int op_prune(Variation *v, Genome *g)
{
    Node **s = find_slot(&g->root, v->r, unary_node);
    if (!s)
        return -1;
    snprintf(v->what, sizeof v->what, "drop %s in %s", node_names[(*s)->kind], v->a_name);
    *s = (*s)->a;
    return 0;
}

typedef int (*Operator)(Variation *, Genome *);
/* drawn with these weights (percent) */
static const struct {
    Operator op;
    int weight;
} operators[] = {
    {op_swap, 22},  {op_perturb, 22}, {op_mix, 14},  {op_gate, 10},
    {op_graft, 10}, {op_grow, 14},    {op_prune, 8},
};
#define N_OPS (int)(sizeof operators / sizeof operators[0])

static Operator draw_operator(Rng *r)
{
    int x = (int)rng_below(r, 100);
    for (int i = 0; i < N_OPS; i++) {
        if (x < operators[i].weight)
            return operators[i].op;
        x -= operators[i].weight;
    }
    return op_perturb;
}

/* one variation of v->a into g; when no operator gives a fitting child in
 * REDRAWS draws, a copy of a with beta perturbed (always possible) */
static int vary(Variation *v, int max_nodes, Genome *g)
{
    for (int t = 0; t < REDRAWS; t++) {
        int mark = v->pool->used;
        v->used_b = false;
        *g = (Genome){v->a.beta, copy(v->pool, v->a.root)};
        if (g->root && draw_operator(v->r)(v, g) == 0 && g->root && count(g->root) <= max_nodes &&
            reads_rho(g->root))
            return 0;
        v->pool->used = mark; /* the nodes of a rejected draw are reused */
    }
    v->used_b = false;
    *g = (Genome){v->a.beta, copy(v->pool, v->a.root)};
    g->beta = fmin(BETA_MAX, fmax(BETA_MIN, scaled(v->r, g->beta)));
    snprintf(v->what, sizeof v->what, "beta %.4g -> %.4g in %s (no other variation fit)", v->a.beta,
             g->beta, v->a_name);
    return g->root ? 0 : -1;
}

/* ---- the proposer ---------------------------------------------------------------------- */

static void *evolve_create(const ProposeConfig *cfg, char *err, size_t errlen)
{
    Evolve *e = calloc(1, sizeof *e);
    if (!e)
        snprintf(err, errlen, "evolve: out of memory");
    else
        e->max_nodes = cfg->max_nodes > 4 ? cfg->max_nodes : 40;
    return e;
}

static void evolve_destroy(void *state) { free(state); }

/* parent i of ctx (with a genome), else a built-in seed */
static int pick(const ProposeContext *ctx, Rng *r, int i, Pool *pool, Genome *g, const char **name)
{
    int with = 0;
    for (int k = 0; k < ctx->n_parents; k++)
        if (ctx->parents[k].genome && with++ == i &&
            parse_genome(ctx->parents[k].genome, pool, g) == 0) {
            *name = ctx->parents[k].name;
            return 0;
        }
    const Seed *s = &seeds[rng_below(r, N_SEEDS)];
    *name = s->name;
    return parse_genome(s->genome, pool, g);
}

static int finish(const Genome *g, const Variation *v, const ProposeContext *ctx, Proposal *out)
{
    snprintf(out->name, sizeof out->name, "evo_g%d_%d", ctx->generation, ctx->index);
    out->genome = genome_text(g);
    out->thought = propose_strdup(v->what);
    out->code = out->genome && out->thought
                    ? lua_text(g, out->name, out->genome, out->thought, ctx->generation)
                    : NULL;
    snprintf(out->parents[out->n_parents++], sizeof out->parents[0], "%s", v->a_name);
    if (v->used_b)
        snprintf(out->parents[out->n_parents++], sizeof out->parents[0], "%s", v->b_name);
    return out->code ? 0 : -1;
}

static int evolve_propose(void *state, const ProposeContext *ctx, Proposal *out, char *err,
                          size_t errlen)
{
    const Evolve *e = state;
    Pool *pool = malloc(sizeof *pool);
    Rng r;
    rng_seed(&r, ctx->seed);
    if (!pool) {
        snprintf(err, errlen, "evolve: out of memory");
        return -1;
    }
    pool->used = 0;
    Variation v = {.pool = pool, .r = &r};
    Genome child;
    int rc = pick(ctx, &r, 0, pool, &v.a, &v.a_name);
    if (rc == 0 && pick(ctx, &r, 1, pool, &v.b, &v.b_name) != 0)
        v.b.root = NULL;
    if (rc == 0 && v.b.root && strcmp(v.a_name, v.b_name) == 0 && ctx->n_parents < 2)
        v.b.root = NULL; /* two draws of the same seed: nothing to cross */
    if (rc != 0 || vary(&v, e->max_nodes, &child) != 0 || finish(&child, &v, ctx, out) != 0) {
        snprintf(err, errlen, "evolve: no variation of the parents could be made");
        rc = -1;
    }
    free(pool);
    return rc;
}

const ProposerOps propose_evolve_ops = {
    .name = "evolve",
    .needs_genome = true,
    .create = evolve_create,
    .propose = evolve_propose,
    .destroy = evolve_destroy,
};
