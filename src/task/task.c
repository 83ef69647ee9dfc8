/*
 * task/task.c — the built-in review task: one lexicon shared by the grammar and
 * the reward, the seeded grammar, prompts cut from its documents, the reward,
 * and the preference-pair writer. task.h documents the language and defines
 * the reward in words; this file is the only implementation of both.
 *
 * Invariants: the generator draws every sentiment-bearing word from LEXICON,
 * the table the reward reads, so the two cannot drift apart; all other words
 * it emits are absent from LEXICON (a leak would show in the tests'
 * neutral share and clause signs). Generation reads only the Rng it is
 * given, so a seed fixes every byte.
 */
#include "util/errmsg.h"
#include "task/task.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "util/fsutil.h"

/* ---------------------------------------------------------------- lexicon */

typedef enum LexKind { LEX_SENTIMENT, LEX_NEGATOR, LEX_INTENSIFIER } LexKind;
/* the grammatical slot a sentiment word fills, so the grammar can pick it */
typedef enum LexRole { ROLE_ADJ, ROLE_VERB_PAST, ROLE_VERB_BASE, ROLE_NOUN, ROLE_OTHER } LexRole;

typedef struct Lex {
    const char *word;
    LexKind kind;
    LexRole role;
    double value; /* sentiment: base value v(w); intensifier: its factor */
} Lex;

static const Lex LEXICON[] = {
    {"not", LEX_NEGATOR, ROLE_OTHER, 0},
    {"never", LEX_NEGATOR, ROLE_OTHER, 0},
    {"hardly", LEX_NEGATOR, ROLE_OTHER, 0},
    {"very", LEX_INTENSIFIER, ROLE_OTHER, 1.5},
    {"really", LEX_INTENSIFIER, ROLE_OTHER, 1.5},
    {"extremely", LEX_INTENSIFIER, ROLE_OTHER, 2.0},
    /* adjectives; every (role, value) bucket the grammar uses is non-empty
     * and the table is sign-symmetric per bucket, which balances the corpus */
    {"good", LEX_SENTIMENT, ROLE_ADJ, 1},
    {"nice", LEX_SENTIMENT, ROLE_ADJ, 1},
    {"fun", LEX_SENTIMENT, ROLE_ADJ, 1},
    {"funny", LEX_SENTIMENT, ROLE_ADJ, 1},
    {"clever", LEX_SENTIMENT, ROLE_ADJ, 1},
    {"charming", LEX_SENTIMENT, ROLE_ADJ, 1},
    {"great", LEX_SENTIMENT, ROLE_ADJ, 2},
    {"excellent", LEX_SENTIMENT, ROLE_ADJ, 2},
    {"wonderful", LEX_SENTIMENT, ROLE_ADJ, 2},
    {"brilliant", LEX_SENTIMENT, ROLE_ADJ, 2},
    {"amazing", LEX_SENTIMENT, ROLE_ADJ, 2},
    {"bad", LEX_SENTIMENT, ROLE_ADJ, -1},
    {"weak", LEX_SENTIMENT, ROLE_ADJ, -1},
    {"dull", LEX_SENTIMENT, ROLE_ADJ, -1},
    {"boring", LEX_SENTIMENT, ROLE_ADJ, -1},
    {"silly", LEX_SENTIMENT, ROLE_ADJ, -1},
    {"messy", LEX_SENTIMENT, ROLE_ADJ, -1},
    {"terrible", LEX_SENTIMENT, ROLE_ADJ, -2},
    {"awful", LEX_SENTIMENT, ROLE_ADJ, -2},
    {"horrible", LEX_SENTIMENT, ROLE_ADJ, -2},
    {"dreadful", LEX_SENTIMENT, ROLE_ADJ, -2},
    {"painful", LEX_SENTIMENT, ROLE_ADJ, -2},
    {"loved", LEX_SENTIMENT, ROLE_VERB_PAST, 2},
    {"liked", LEX_SENTIMENT, ROLE_VERB_PAST, 1},
    {"enjoyed", LEX_SENTIMENT, ROLE_VERB_PAST, 1},
    {"hated", LEX_SENTIMENT, ROLE_VERB_PAST, -2},
    {"disliked", LEX_SENTIMENT, ROLE_VERB_PAST, -1},
    {"love", LEX_SENTIMENT, ROLE_VERB_BASE, 2},
    {"like", LEX_SENTIMENT, ROLE_VERB_BASE, 1},
    {"enjoy", LEX_SENTIMENT, ROLE_VERB_BASE, 1},
    {"hate", LEX_SENTIMENT, ROLE_VERB_BASE, -2},
    {"dislike", LEX_SENTIMENT, ROLE_VERB_BASE, -1},
    {"masterpiece", LEX_SENTIMENT, ROLE_NOUN, 2},
    {"gem", LEX_SENTIMENT, ROLE_NOUN, 2},
    {"treat", LEX_SENTIMENT, ROLE_NOUN, 1},
    {"joy", LEX_SENTIMENT, ROLE_NOUN, 1},
    {"mess", LEX_SENTIMENT, ROLE_NOUN, -1},
    {"letdown", LEX_SENTIMENT, ROLE_NOUN, -1},
    {"disaster", LEX_SENTIMENT, ROLE_NOUN, -2},
    {"failure", LEX_SENTIMENT, ROLE_NOUN, -2},
    {"recommend", LEX_SENTIMENT, ROLE_OTHER, 1},
    {"bored", LEX_SENTIMENT, ROLE_OTHER, -1},
};
#define LEXICON_N ((int)(sizeof LEXICON / sizeof LEXICON[0]))
#define LEX_WORD_MAX 16 /* longer than any lexicon word: such words are unknown */

/* The entry for the word w[0..n) (already lower case), or NULL. */
static const Lex *lex_find(const char *w, size_t n)
{
    if (n >= LEX_WORD_MAX)
        return NULL;
    for (int i = 0; i < LEXICON_N; i++)
        if (strlen(LEXICON[i].word) == n && memcmp(LEXICON[i].word, w, n) == 0)
            return &LEXICON[i];
    return NULL;
}

/* ---------------------------------------------------------------- words */

/* One step of the tokenizer the reward and the prompt cutter share. */
typedef struct Token {
    size_t start, len;      /* the word's bytes in the text */
    char low[LEX_WORD_MAX]; /* the word in lower case; only read when len < LEX_WORD_MAX */
    bool clause_end;        /* a clause-ending byte came before this word */
} Token;

static bool is_letter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static bool is_clause_end(unsigned char c)
{
    return c == '.' || c == '!' || c == '?' || c == ',' || c == ';' || c == ':' || c == '\n';
}

/* Advances *pos past the next word; false at the end of the text. */
static bool next_word(const char *text, size_t len, size_t *pos, Token *t)
{
    size_t i = *pos;
    t->clause_end = false;
    while (i < len && !is_letter((unsigned char)text[i]))
        t->clause_end |= is_clause_end((unsigned char)text[i++]);
    *pos = i;
    if (i == len)
        return false;
    t->start = i;
    while (i < len && is_letter((unsigned char)text[i])) {
        if (i - t->start < LEX_WORD_MAX)
            t->low[i - t->start] = (char)(text[i] | 0x20); /* ASCII fold to lower */
        i++;
    }
    t->len = i - t->start;
    *pos = i;
    return true;
}

static const Lex *token_lex(const Token *t) { return lex_find(t->low, t->len); }

/* ---------------------------------------------------------------- reward */

/* Pending negation and intensification, as task.h defines them. */
typedef struct Pending {
    int neg_left;  /* words the negation still reaches; 0 = none */
    bool flip;     /* parity of negators in the window */
    int int_left;  /* same for the intensifier */
    double factor; /* largest pending intensifier */
} Pending;

static void pending_age(Pending *p)
{
    if (p->neg_left > 0)
        p->neg_left--;
    if (p->int_left > 0)
        p->int_left--;
}

/* The signed, scaled value a word adds to S; updates the pending state. */
static double pending_apply(Pending *p, const Lex *lx)
{
    double v = 0;
    if (!lx) {
        pending_age(p);
    } else if (lx->kind == LEX_NEGATOR) {
        bool flip = p->neg_left > 0 ? !p->flip : true;
        pending_age(p);
        p->flip = flip;
        p->neg_left = TASK_WINDOW;
    } else if (lx->kind == LEX_INTENSIFIER) {
        double f = p->int_left > 0 && p->factor > lx->value ? p->factor : lx->value;
        pending_age(p);
        p->factor = f;
        p->int_left = TASK_WINDOW;
    } else {
        v = lx->value;
        if (p->int_left > 0)
            v *= p->factor;
        if (p->neg_left > 0 && p->flip)
            v = -v;
        *p = (Pending){0};
    }
    return v;
}

TaskScore task_score(const char *text, size_t len)
{
    TaskScore s = {0};
    Pending p = {0};
    Token t;
    size_t pos = 0;
    while (text && next_word(text, len, &pos, &t)) {
        if (t.clause_end)
            p = (Pending){0};
        const Lex *lx = token_lex(&t);
        s.sum += pending_apply(&p, lx);
        s.words++;
        s.sentiment += lx && lx->kind == LEX_SENTIMENT;
    }
    s.reward = tanh(s.sum / TASK_REWARD_SCALE);
    return s;
}

double task_reward(const char *text, size_t len) { return task_score(text, len).reward; }

/* ---------------------------------------------------------------- grammar */

/* A document under construction: words joined by single spaces. */
typedef struct Doc {
    char *p; /* (TASK_DOC_MAX) */
    size_t len;
} Doc;

static void put(Doc *d, const char *w)
{
    size_t n = strlen(w), sep = d->len > 0;
    /* the templates' longest document is far below the cap (a test checks);
     * the clamp only keeps a release build in bounds if that ever changes */
    assert(d->len + sep + n + 2 <= TASK_DOC_MAX);
    if (d->len + sep + n + 2 > TASK_DOC_MAX)
        return;
    if (sep)
        d->p[d->len++] = ' ';
    memcpy(d->p + d->len, w, n);
    d->len += n;
    d->p[d->len] = '\0';
}

static bool chance(Rng *r, double p) { return rng_uniform(r) < p; }

#define PICK(r, arr) ((arr)[rng_below((r), (uint32_t)(sizeof(arr) / sizeof((arr)[0])))])

/* A uniformly chosen lexicon word with this kind, role and value. */
static const char *lex_pick(Rng *r, LexKind kind, LexRole role, double value)
{
    int n = 0;
    for (int i = 0; i < LEXICON_N; i++)
        n += LEXICON[i].kind == kind && LEXICON[i].role == role && LEXICON[i].value == value;
    assert(n > 0);
    int k = (int)rng_below(r, (uint32_t)n);
    for (int i = 0; i < LEXICON_N; i++)
        if (LEXICON[i].kind == kind && LEXICON[i].role == role && LEXICON[i].value == value &&
            k-- == 0)
            return LEXICON[i].word;
    return "";
}

static const char *pick_intensifier(Rng *r)
{
    static const char *const w[] = {"very", "really", "extremely"};
    return PICK(r, w);
}

static const char *pick_negator(Rng *r)
{
    static const char *const w[] = {"not", "never", "hardly"};
    return PICK(r, w);
}

/* A sentiment value of sign q and strength 1 or 2. */
static double pick_value(Rng *r, int q) { return q * (1.0 + rng_below(r, 2)); }

static const char *an(const char *next) { return next[0] && strchr("aeiou", next[0]) ? "an" : "a"; }

static const char *const SUBJECTS[] = {
    "the movie",  "the film",       "the acting",     "the plot",    "the story",
    "the ending", "the music",      "the cast",       "the script",  "the dialogue",
    "the pacing", "the soundtrack", "the lead actor", "the villain", "the camera work",
    "the humor",  "the first half", "the last scene",
};
static const char *const MOVIE[] = {"movie", "film"};
static const char *const NEUTRAL_ADJ[] = {"long",   "short",   "quiet",    "loud", "dark",
                                          "simple", "serious", "colorful", "old",  "strange"};

/* ---- neutral sentences: no lexicon word */

static void neutral_sentence(Rng *r, Doc *d)
{
    static const char *const when[] = {"last week",   "on a sunday", "with my sister",
                                       "with my dad", "at home",     "in a small theater",
                                       "twice",       "last night",  "on a plane"};
    static const char *const topic[] = {
        "a family",    "a dog",       "two brothers",   "a small town", "a long trip",
        "a lost ship", "an old king", "a young singer", "a war",        "a robot"};
    static const char *const place[] = {"paris",      "a big city",      "the desert", "a school",
                                        "the future", "a small village", "space"};
    static const char *const who[] = {"my friend", "my sister", "my wife", "my dad"};
    switch (rng_below(r, 6)) {
    case 0:
        put(d, "i saw it");
        put(d, PICK(r, when));
        break;
    case 1:
        put(d, "the");
        put(d, PICK(r, MOVIE));
        put(d, "is about");
        put(d, PICK(r, topic));
        break;
    case 2:
        put(d, "it was");
        put(d, chance(r, 0.5) ? "two" : "three");
        put(d, "hours long");
        break;
    case 3:
        put(d, PICK(r, SUBJECTS));
        put(d, "was");
        put(d, PICK(r, NEUTRAL_ADJ));
        break;
    case 4:
        put(d, "the");
        put(d, PICK(r, MOVIE));
        put(d, "is set in");
        put(d, PICK(r, place));
        break;
    default:
        put(d, PICK(r, who));
        put(d, "picked it");
        break;
    }
    put(d, ".");
}

/* ---- sentiment sentences of sign q (+1 or -1) as the reward reads them */

/* [negator] [intensifier] adjective, with the sign the reward gives q */
static void put_adjp(Rng *r, Doc *d, int q)
{
    double v = pick_value(r, q);
    if (chance(r, 0.25)) {
        put(d, pick_negator(r));
        if (chance(r, 0.15))
            put(d, pick_intensifier(r));
        put(d, lex_pick(r, LEX_SENTIMENT, ROLE_ADJ, -v));
        return;
    }
    if (chance(r, 0.35))
        put(d, pick_intensifier(r));
    put(d, lex_pick(r, LEX_SENTIMENT, ROLE_ADJ, v));
}

/* "the plot was not very good" */
static void s_was_adj(Rng *r, Doc *d, int q)
{
    put(d, PICK(r, SUBJECTS));
    put(d, "was");
    put_adjp(r, d, q);
}

/* "i really loved the music", "i did not like it", "i never enjoyed the cast" */
static void s_i_verb(Rng *r, Doc *d, int q)
{
    double v = pick_value(r, q);
    put(d, "i");
    if (chance(r, 0.25)) {
        bool did = chance(r, 0.5);
        put(d, did ? "did not" : "never");
        put(d, lex_pick(r, LEX_SENTIMENT, did ? ROLE_VERB_BASE : ROLE_VERB_PAST, -v));
    } else {
        if (chance(r, 0.3))
            put(d, "really");
        put(d, lex_pick(r, LEX_SENTIMENT, ROLE_VERB_PAST, v));
    }
    put(d, chance(r, 0.3) ? "it" : PICK(r, SUBJECTS));
}

/* "the story was funny and clever" */
static void s_adj_and_adj(Rng *r, Doc *d, int q)
{
    put(d, PICK(r, SUBJECTS));
    put(d, "was");
    const char *a = lex_pick(r, LEX_SENTIMENT, ROLE_ADJ, pick_value(r, q)), *b = a;
    while (b == a)
        b = lex_pick(r, LEX_SENTIMENT, ROLE_ADJ, pick_value(r, q));
    put(d, a);
    put(d, "and");
    put(d, b);
}

/* "it was an extremely good film", "it was not a bad movie" */
static void s_a_adj_movie(Rng *r, Doc *d, int q)
{
    double v = pick_value(r, q);
    put(d, "it was");
    bool neg = chance(r, 0.25);
    const char *adj = lex_pick(r, LEX_SENTIMENT, ROLE_ADJ, neg ? -v : v);
    const char *in = !neg && chance(r, 0.35) ? pick_intensifier(r) : NULL;
    if (neg)
        put(d, "not");
    put(d, an(in ? in : adj));
    if (in)
        put(d, in);
    put(d, adj);
    put(d, PICK(r, MOVIE));
}

/* "it was a masterpiece", "it was not a disaster" */
static void s_a_noun(Rng *r, Doc *d, int q)
{
    double v = pick_value(r, q);
    put(d, "it was");
    bool neg = chance(r, 0.25);
    if (neg)
        put(d, "not");
    put(d, "a");
    put(d, lex_pick(r, LEX_SENTIMENT, ROLE_NOUN, neg ? -v : v));
}

/* "the acting was good but the plot was awful": the second clause is
 * stronger, so the sentence's sum has the sign q */
static void s_but(Rng *r, Doc *d, int q)
{
    put(d, PICK(r, SUBJECTS));
    put(d, "was");
    put(d, lex_pick(r, LEX_SENTIMENT, ROLE_ADJ, -q));
    put(d, "but");
    put(d, PICK(r, SUBJECTS));
    put(d, "was");
    put(d, lex_pick(r, LEX_SENTIMENT, ROLE_ADJ, 2.0 * q));
}

/* "i would really recommend it", "i would never recommend it" */
static void s_recommend(Rng *r, Doc *d, int q)
{
    put(d, "i would");
    if (q < 0)
        put(d, pick_negator(r));
    else if (chance(r, 0.4))
        put(d, "really");
    put(d, "recommend it");
}

/* "i was never bored", "i was extremely bored" */
static void s_bored(Rng *r, Doc *d, int q)
{
    put(d, "i was");
    if (q > 0)
        put(d, chance(r, 0.5) ? "never" : "not");
    else if (chance(r, 0.5))
        put(d, pick_intensifier(r));
    put(d, "bored");
}

static void sentiment_sentence(Rng *r, Doc *d, int q)
{
    /* "the X was ..." is the commonest shape, as in real reviews */
    static void (*const tmpl[])(Rng *, Doc *, int) = {
        s_was_adj,     s_was_adj, s_was_adj, s_i_verb,    s_i_verb, s_adj_and_adj,
        s_a_adj_movie, s_a_noun,  s_but,     s_recommend, s_bored,
    };
    bool exclaim = false;
    if (chance(r, 0.08)) { /* "what a great film !" */
        const char *adj = lex_pick(r, LEX_SENTIMENT, ROLE_ADJ, pick_value(r, q));
        put(d, "what");
        put(d, an(adj));
        put(d, adj);
        put(d, PICK(r, MOVIE));
        exclaim = true;
    } else {
        PICK(r, tmpl)(r, d, q);
    }
    put(d, exclaim ? "!" : ".");
}

size_t task_document(Rng *r, char buf[TASK_DOC_MAX])
{
    Doc d = {buf, 0};
    buf[0] = '\0';
    double u = rng_uniform(r);
    int p = u < 0.45 ? 1 : u < 0.9 ? -1 : 0; /* the document's polarity */
    double v = rng_uniform(r);
    int n = v < 0.3 ? 1 : v < 0.75 ? 2 : 3;
    int anchor = (int)rng_below(r, (uint32_t)n); /* one sentence surely carries p */
    for (int i = 0; i < n; i++) {
        if (p == 0 || (i != anchor && chance(r, 0.3)))
            neutral_sentence(r, &d);
        else
            sentiment_sentence(r, &d, i == anchor || chance(r, 0.85) ? p : -p);
    }
    buf[d.len++] = TASK_EOD;
    buf[d.len] = '\0';
    return d.len;
}

/* ---------------------------------------------------------------- seeds */

/* Independent streams of one task seed: corpus and the two prompt sets. */
enum { STREAM_CORPUS = 1, STREAM_PROMPTS_TRAIN = 2, STREAM_PROMPTS_EVAL = 3 };

static void stream_seed(Rng *r, uint64_t seed, uint64_t stream)
{
    Rng base;
    rng_seed(&base, seed);
    rng_seed(r, rng_u64(&base) ^ (stream * 0x9E3779B97F4A7C15ull));
}

int task_cache_key(char *buf, size_t len, uint64_t seed)
{
    int n = snprintf(buf, len, "%s-v%d-s%llu", TASK_NAME, TASK_VERSION, (unsigned long long)seed);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* ---------------------------------------------------------------- corpus */

int task_corpus(uint64_t seed, int64_t n_docs, char **text, size_t *len, char *err, size_t errlen)
{
    *text = NULL;
    *len = 0;
    if (n_docs < 0)
        return err_fail(err, errlen, "task_corpus: n_docs = %lld, want >= 0", (long long)n_docs);
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return err_fail(err, errlen, "task_corpus: out of memory");
    Rng r;
    stream_seed(&r, seed, STREAM_CORPUS);
    for (int64_t i = 0; i < n_docs; i++) {
        if (cap - n < TASK_DOC_MAX) {
            char *nb = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                return err_fail(err, errlen, "task_corpus: out of memory at %zu bytes", n);
            }
            buf = nb;
            cap *= 2;
        }
        n += task_document(&r, buf + n);
    }
    buf[n] = '\0';
    *text = buf;
    *len = n;
    return 0;
}

int task_corpus_write(const char *path, uint64_t seed, int64_t n_docs, char *err, size_t errlen)
{
    char *text;
    size_t len;
    if (task_corpus(seed, n_docs, &text, &len, err, errlen))
        return -1;
    int rc = fsutil_write_atomic(path, text, len, err, errlen);
    free(text);
    return rc;
}

/* ---------------------------------------------------------------- prompts */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

TaskSplit task_prompt_split(const char *prompt, size_t len)
{
    return fnv1a(prompt, len) % TASK_EVAL_MOD == 0 ? TASK_SPLIT_EVAL : TASK_SPLIT_TRAIN;
}

/* The length of doc's prompt (its opening before the first sentiment-bearing
 * word), or 0 if it has none that task.h allows. */
static size_t prompt_cut(const char *doc, size_t len)
{
    Token t;
    size_t pos = 0;
    int words = 0;
    while (next_word(doc, len, &pos, &t)) {
        if (token_lex(&t))
            return words >= 2 && t.start <= TASK_PROMPT_MAX ? t.start : 0;
        words++;
    }
    return 0;
}

/* Open-addressing set of prompt strings, for distinctness. */
typedef struct PromptSet {
    int32_t *slot; /* (cap) index into text, -1 = empty */
    size_t cap;
} PromptSet;

/* true if s was new (and is now text[idx]'s entry) */
static bool set_insert(PromptSet *set, char *const *text, const char *s, int32_t idx)
{
    size_t n = strlen(s), i = fnv1a(s, n) & (set->cap - 1);
    for (; set->slot[i] >= 0; i = (i + 1) & (set->cap - 1))
        if (strcmp(text[set->slot[i]], s) == 0)
            return false;
    set->slot[i] = idx;
    return true;
}

void task_prompts_free(TaskPrompts *p)
{
    for (int i = 0; p->text && i < p->n; i++)
        free(p->text[i]);
    free(p->text);
    p->text = NULL;
    p->n = 0;
}

#define PROMPT_STALE_MAX 100000
#define PROMPTS_MAX (1 << 20)

/* Draws documents until n distinct prompts of the split are in p->text. */
static int prompts_fill(TaskPrompts *p, PromptSet *set, Rng *r, TaskSplit split, int n, char *err,
                        size_t errlen)
{
    char doc[TASK_DOC_MAX];
    /* The prompt space is finite (a few thousand strings), so asking for more
     * than it holds must end: give up after PROMPT_STALE_MAX draws in a row
     * that found nothing new (under a second: a draw is well under a microsecond). */
    int64_t stale = 0;
    while (p->n < n && stale++ < PROMPT_STALE_MAX) {
        size_t len = task_document(r, doc);
        size_t cut = prompt_cut(doc, len);
        if (cut == 0 || task_prompt_split(doc, cut) != split)
            continue;
        doc[cut] = '\0';
        char *s = strdup(doc);
        if (!s)
            return err_fail(err, errlen, "task_prompts_make: out of memory");
        p->text[p->n] = s;
        if (set_insert(set, p->text, s, p->n)) {
            p->n++;
            stale = 0;
        } else
            free(s);
    }
    if (p->n < n)
        return err_fail(err, errlen,
                        "task_prompts_make: only %d distinct %s prompts found, want %d", p->n,
                        split == TASK_SPLIT_EVAL ? "eval" : "train", n);
    return 0;
}

int task_prompts_make(TaskPrompts *p, uint64_t seed, TaskSplit split, int n, char *err,
                      size_t errlen)
{
    *p = (TaskPrompts){0};
    if (n < 0 || n > PROMPTS_MAX)
        return err_fail(err, errlen, "task_prompts_make: n = %d, want 0..%d", n, PROMPTS_MAX);
    if (split != TASK_SPLIT_TRAIN && split != TASK_SPLIT_EVAL)
        return err_fail(err, errlen, "task_prompts_make: unknown split %d", (int)split);
    PromptSet set = {NULL, 16};
    while (set.cap < 2 * (size_t)n)
        set.cap *= 2;
    set.slot = malloc(set.cap * sizeof *set.slot);
    p->text = calloc((size_t)n + 1, sizeof *p->text);
    if (!set.slot || !p->text) {
        free(set.slot);
        task_prompts_free(p);
        return err_fail(err, errlen, "task_prompts_make: out of memory");
    }
    memset(set.slot, 0xff, set.cap * sizeof *set.slot); /* all -1 */
    Rng r;
    stream_seed(&r, seed, split == TASK_SPLIT_EVAL ? STREAM_PROMPTS_EVAL : STREAM_PROMPTS_TRAIN);
    int rc = prompts_fill(p, &set, &r, split, n, err, errlen);
    free(set.slot);
    if (rc)
        task_prompts_free(p);
    return rc;
}

/* ---------------------------------------------------------------- pairs */

int64_t task_pairs_max(int n_prompts, int k)
{
    if (n_prompts <= 0 || k < 2)
        return 0;
    return (int64_t)n_prompts * k * (k - 1) / 2;
}

/* Decides one non-tied pair (i, j) of a prompt into *out. */
static void pair_decide(TaskPair *out, int prompt, int i, int j, double ri, double rj,
                        double bt_temp, Rng *rng)
{
    bool i_wins = ri > rj;
    if (bt_temp > 0) {
        double p_i = 1.0 / (1.0 + exp(-(ri - rj) / bt_temp)); /* sigmoid */
        i_wins = rng_uniform(rng) < p_i;
    }
    *out = (TaskPair){prompt, i_wins ? i : j, i_wins ? j : i, i_wins != (ri > rj)};
}

int64_t task_pairs_form(const double *rewards, int n_prompts, int k, double bt_temp, Rng *rng,
                        TaskPair *out, TaskPairStats *stats)
{
    TaskPairStats st = {0};
    int64_t n = 0;
    for (int p = 0; p < n_prompts && k >= 2; p++) {
        const double *rw = rewards + (int64_t)p * k; /* (K) */
        for (int i = 0; i < k; i++) {
            for (int j = i + 1; j < k; j++) {
                if (!isfinite(rw[i]) || !isfinite(rw[j])) {
                    st.invalid++;
                } else if (rw[i] == rw[j]) {
                    st.ties++;
                } else {
                    pair_decide(&out[n], p, i, j, rw[i], rw[j], bt_temp, rng);
                    st.flipped += out[n++].flipped;
                }
            }
        }
    }
    st.pairs = n;
    if (stats)
        *stats = st;
    return n;
}

/* One JSONL line for a pair, malloc'ed; NULL if a text is not valid UTF-8
 * or a completion is empty (data.h refuses both), or memory ran out. */
static char *pair_line(const char *prompt, const char *chosen, const char *rejected)
{
    if (!chosen[0] || !rejected[0])
        return NULL;
    json_t *o = json_object();
    if (!o)
        return NULL;
    char *line = NULL;
    /* json_string refuses invalid UTF-8, returning NULL, and _new of NULL fails */
    if (json_object_set_new(o, "prompt", json_string(prompt)) == 0 &&
        json_object_set_new(o, "chosen", json_string(chosen)) == 0 &&
        json_object_set_new(o, "rejected", json_string(rejected)) == 0)
        line = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return line;
}

static int pairs_check(const TaskPair *pairs, int64_t n, int n_prompts, int k, char *err,
                       size_t errlen)
{
    for (int64_t i = 0; i < n; i++) {
        const TaskPair *q = &pairs[i];
        if (q->prompt < 0 || q->prompt >= n_prompts || q->chosen < 0 || q->chosen >= k ||
            q->rejected < 0 || q->rejected >= k)
            return err_fail(
                err, errlen,
                "task_pairs_write: pair %lld (prompt %d, chosen %d, rejected %d) out of "
                "range for %d prompts, K = %d",
                (long long)i, q->prompt, q->chosen, q->rejected, n_prompts, k);
    }
    return 0;
}

int task_pairs_write(const char *path, const char *const *prompts, int n_prompts,
                     const char *const *completions, int k, const TaskPair *pairs, int64_t n,
                     TaskPairStats *stats, char *err, size_t errlen)
{
    TaskPairStats st = {0};
    if (stats)
        *stats = st;
    if (pairs_check(pairs, n, n_prompts, k, err, errlen))
        return -1;
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    if (!f)
        return -1;
    for (int64_t i = 0; i < n; i++) {
        const TaskPair *q = &pairs[i];
        const char *const *c = completions + (int64_t)q->prompt * k; /* (K) */
        char *line = pair_line(prompts[q->prompt], c[q->chosen], c[q->rejected]);
        if (!line) {
            st.invalid++;
            continue;
        }
        fsutil_atomic_write(f, line, strlen(line)); /* errors are sticky: commit reports */
        fsutil_atomic_write(f, "\n", 1);
        free(line);
        st.pairs++;
    }
    if (fsutil_atomic_commit(f, err, errlen))
        return -1;
    if (stats)
        *stats = st;
    return 0;
}
