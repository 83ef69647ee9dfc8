/*
 * test_task.c — the built-in review task (task.h): deterministic generation,
 * the reward on hand-made sentences (expected values computed by hand from
 * task.h's definition), robustness to garbage, prompt splits, preference
 * pairs with and without Bradley-Terry noise, and the corpus' balance.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "train/data.h"
#include "util/fsutil.h"
#include "task/pretrain.h"
#include "task/task.h"
#include "testlib.h"
#include "testfs.h"

static double R(double s) { return tanh(s / TASK_REWARD_SCALE); }

static TaskScore score(const char *s) { return task_score(s, strlen(s)); }

static char tmpdir[64];

static void path_in_tmp(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

/* ------------------------------------------------------------ generation */

static void test_corpus_deterministic(void)
{
    char err[256], *a, *b, *c;
    size_t na, nb, nc;
    CHECK(task_corpus(7, 500, &a, &na, err, sizeof err) == 0);
    CHECK(task_corpus(7, 500, &b, &nb, err, sizeof err) == 0);
    CHECK(task_corpus(8, 500, &c, &nc, err, sizeof err) == 0);
    CHECK(na == nb && memcmp(a, b, na) == 0);
    CHECK(na != nc || memcmp(a, c, na) != 0);
    CHECK(a[na] == '\0');
    int docs = 0;
    for (size_t i = 0; i < na; i++)
        docs += a[i] == TASK_EOD;
    CHECKF(docs == 500, "%d documents, want 500", docs);
    free(a);
    free(b);
    free(c);
}

static void test_corpus_edge_counts(void)
{
    char err[256] = "", *t;
    size_t n;
    CHECK(task_corpus(1, 0, &t, &n, err, sizeof err) == 0);
    CHECK(n == 0 && t && t[0] == '\0');
    free(t);
    CHECK(task_corpus(1, -1, &t, &n, err, sizeof err) == -1);
    CHECK(t == NULL && strstr(err, "n_docs") != NULL);
}

/* Every document: one line of [a-z] words and "." "!" tokens, single spaces,
 * under TASK_DOC_MAX; a clause with a lexicon word never sums to 0 (each
 * template states its sentiment with a definite sign). */
static bool doc_well_formed(const char *d, size_t len)
{
    if (len < 2 || len + 1 >= TASK_DOC_MAX || d[len - 1] != '\n' || d[0] == ' ')
        return false;
    for (size_t i = 0; i + 1 < len; i++) {
        char c = d[i];
        if (!((c >= 'a' && c <= 'z') || c == ' ' || c == '.' || c == '!'))
            return false;
        if (c == ' ' && d[i + 1] == ' ')
            return false;
    }
    return d[len - 2] == '.' || d[len - 2] == '!';
}

static bool clauses_signed(const char *d, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (d[i] != '.' && d[i] != '!')
            continue;
        TaskScore s = task_score(d + start, i - start);
        if (s.sentiment > 0 && s.sum == 0)
            return false;
        start = i + 1;
    }
    return true;
}

static void test_documents_well_formed(void)
{
    Rng r;
    rng_seed(&r, 11);
    char doc[TASK_DOC_MAX];
    int bad_form = 0, bad_sign = 0;
    size_t longest = 0;
    for (int i = 0; i < 50000; i++) {
        size_t n = task_document(&r, doc);
        CHECK(strlen(doc) == n);
        bad_form += !doc_well_formed(doc, n);
        bad_sign += !clauses_signed(doc, n);
        if (n > longest)
            longest = n;
    }
    CHECKF(bad_form == 0, "%d malformed documents", bad_form);
    CHECKF(bad_sign == 0, "%d documents with a sentiment clause summing to 0", bad_sign);
    CHECKF(longest + 1 < TASK_DOC_MAX, "longest document %zu bytes", longest);
}

/* The corpus is roughly balanced and the negators matter. By the grammar's
 * symmetry P(S > 0) = P(S < 0); with 20000 documents the positive share's
 * standard error is about 0.004, so [0.47, 0.53] is a 7-sigma band. The
 * neutral share is 10% by construction plus the few documents whose
 * sentences cancel. */
static void test_corpus_balance(void)
{
    char err[256], *t;
    size_t n;
    CHECK(task_corpus(3, 20000, &t, &n, err, sizeof err) == 0);
    int pos = 0, neg = 0, zero = 0, flipped_by_negation = 0;
    for (char *d = t, *e; d < t + n; d = e + 1) {
        e = strchr(d, '\n');
        double s = task_score(d, (size_t)(e - d)).sum;
        pos += s > 0;
        neg += s < 0;
        zero += s == 0;
        /* the same document with its negators blanked out ("xxx") */
        char buf[TASK_DOC_MAX];
        size_t len = (size_t)(e - d);
        memcpy(buf, d, len);
        buf[len] = '\0';
        static const char *const negs[] = {"not ", "never ", "hardly "};
        for (int k = 0; k < 3; k++)
            for (char *p = buf; (p = strstr(p, negs[k])) != NULL; p++)
                if (p == buf || p[-1] == ' ')
                    memset(p, 'x', strlen(negs[k]) - 1);
        double s0 = task_score(buf, len).sum;
        flipped_by_negation += (s > 0) != (s0 > 0);
    }
    double share = (double)pos / (pos + neg), zshare = zero / 20000.0;
    double fshare = flipped_by_negation / 20000.0;
    CHECKF(share > 0.47 && share < 0.53, "positive share %.4f (pos %d, neg %d)", share, pos, neg);
    CHECKF(zshare > 0.08 && zshare < 0.2, "neutral share %.4f", zshare);
    /* "not trivial": reading a word alone gets a sizeable share wrong */
    CHECKF(fshare > 0.05 && fshare < 0.5, "negation decides %.4f of documents", fshare);
    free(t);
}

static void test_corpus_write_and_key(void)
{
    char err[256], path[128], *t, *f;
    size_t n, nf;
    path_in_tmp(path, sizeof path, "corpus.txt");
    CHECK(task_corpus_write(path, 5, 300, err, sizeof err) == 0);
    CHECK(task_corpus(5, 300, &t, &n, err, sizeof err) == 0);
    CHECK(tfs_read(path, &f, &nf, err, sizeof err) == 0);
    CHECK(n == nf && memcmp(t, f, n) == 0);
    free(t);
    free(f);
    char key[64];
    CHECK(task_cache_key(key, sizeof key, 42) == 0);
    char want[64];
    snprintf(want, sizeof want, "reviews-v%d-s42", TASK_VERSION);
    CHECK(strcmp(key, want) == 0);
    CHECK(task_cache_key(key, 4, 42) == -1);
}

/* The reference's cache directory changes with the code's numerics
 * version, so a cache built by older numbers is never found by newer code;
 * and with each option that changes the weights. */
static void test_cache_key_covers_numerics(void)
{
    char err[256], a[512], b[512];
    PretrainOptions o;
    pretrain_defaults(&o);
    CHECK(o.numerics == TASK_NUMERICS_VERSION);
    CHECK(pretrain_cache_dir(&o, "/c", a, sizeof a, err, sizeof err) == 0);
    o.numerics = TASK_NUMERICS_VERSION - 1;
    CHECK(pretrain_cache_dir(&o, "/c", b, sizeof b, err, sizeof err) == 0);
    CHECK(strcmp(a, b) != 0);
    pretrain_defaults(&o);
    o.lr *= 2;
    CHECK(pretrain_cache_dir(&o, "/c", b, sizeof b, err, sizeof err) == 0);
    CHECK(strcmp(a, b) != 0);
    pretrain_defaults(&o);
    CHECK(pretrain_cache_dir(&o, "/c", b, sizeof b, err, sizeof err) == 0);
    CHECK(strcmp(a, b) == 0);
}

/* ------------------------------------------------------------ reward */

static void test_reward_hand_computed(void)
{
    /* v(good) = 1: S = 1 */
    CHECK_NEAR(score("the movie was good .").sum, 1, 0);
    CHECK_NEAR(task_reward("the movie was good .", 20), R(1), 1e-15);
    /* negated positive: S = -1 */
    CHECK_NEAR(score("the movie was not good .").sum, -1, 0);
    /* intensified negative: v(bad) = -1, extremely x2: S = -2 */
    CHECK_NEAR(score("the plot was extremely bad .").sum, -2, 0);
    /* negated and intensified: -(1 x 1.5) */
    CHECK_NEAR(score("the plot was not very good").sum, -1.5, 0);
    CHECK_NEAR(score("the plot was not very good").reward, tanh(-0.5), 1e-15);
    /* two sentences: loved +2, then "not bad" = +1: S = 3, reward tanh(1) */
    TaskScore s = score("i loved it . the ending was not bad .");
    CHECK_NEAR(s.sum, 3, 0);
    CHECK_NEAR(s.reward, tanh(1.0), 1e-15);
    CHECK(s.words == 8 && s.sentiment == 2);
    /* "but" is only a word: -1 + (-2) ... good(+1) then awful(-2): S = -1 */
    CHECK_NEAR(score("the acting was good but the story was awful .").sum, -1, 0);
    /* verbs and nouns: "did not like" -1; "not a disaster" +2 */
    CHECK_NEAR(score("i did not like the cast .").sum, -1, 0);
    CHECK_NEAR(score("it was not a disaster .").sum, 2, 0);
    /* upper case folds: GREAT = great = +2 */
    CHECK_NEAR(score("GREAT Great").sum, 4, 0);
}

static void test_reward_negation_window(void)
{
    /* good 3 words after "not" is negated, 4 words after is not */
    CHECK_NEAR(score("not a b good").sum, -1, 0);
    CHECK_NEAR(score("not a b c good").sum, 1, 0);
    /* a clause end drops the negation */
    CHECK_NEAR(score("it was not . good").sum, 1, 0);
    CHECK_NEAR(score("not, good").sum, 1, 0);
    /* two negators in one window cancel */
    CHECK_NEAR(score("not never good").sum, 1, 0);
    /* a negator far from the first one starts afresh */
    CHECK_NEAR(score("not a b c never good").sum, -1, 0);
    /* the first lexicon word uses the negation up */
    CHECK_NEAR(score("not good great").sum, -1 + 2, 0);
    /* hardly is a negator; a negator alone scores nothing */
    CHECK_NEAR(score("hardly funny").sum, -1, 0);
    CHECK_NEAR(score("not never hardly").sum, 0, 0);
}

static void test_reward_intensifiers(void)
{
    /* do not stack: the largest pending factor applies */
    CHECK_NEAR(score("very extremely good").sum, 2, 0);
    CHECK_NEAR(score("extremely very good").sum, 2, 0);
    CHECK_NEAR(score("very really good").sum, 1.5, 0);
    /* same window as negation; used up by the first lexicon word */
    CHECK_NEAR(score("really a b good").sum, 1.5, 0);
    CHECK_NEAR(score("really a b c good").sum, 1, 0);
    CHECK_NEAR(score("very good good").sum, 2.5, 0);
    CHECK_NEAR(score("extremely . awful").sum, -2, 0);
}

static void test_reward_unknown_and_empty(void)
{
    TaskScore s = score("the zorblax was flimflam");
    CHECK(s.sum == 0 && s.reward == 0 && s.words == 4 && s.sentiment == 0);
    s = task_score("", 0);
    CHECK(s.sum == 0 && s.reward == 0 && s.words == 0);
    s = task_score(NULL, 0);
    CHECK(s.sum == 0 && s.reward == 0);
    /* whole words only: "goodness", "ungood" and long runs are unknown */
    CHECK_NEAR(score("goodness ungood goodgoodgoodgoodgood").sum, 0, 0);
    /* any non-letter separates words; the length, not NUL, ends the text */
    CHECK_NEAR(task_score("good\0good", 9).sum, 2, 0);
    CHECK_NEAR(score("good123bad\x01great\xff").sum, 1 - 1 + 2, 0);
    CHECK_NEAR(score("  ... !!! ,,, ").sum, 0, 0);
}

/* Model garbage: random bytes (with and without NUL) and adversarial
 * repetitions stay finite, in [-1, 1], and take linear time. */
static void test_reward_garbage(void)
{
    size_t n = 1 << 20;
    char *buf = malloc(n + 1);
    Rng r;
    rng_seed(&r, 99);
    clock_t t0 = clock();
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < n; i++) {
            unsigned b = (unsigned)rng_below(&r, 256);
            buf[i] = (char)(round == 0 && b == 0 ? 1 : b); /* round 0: NUL-free */
        }
        TaskScore s = task_score(buf, n);
        CHECK(isfinite(s.sum) && s.reward >= -1 && s.reward <= 1);
        CHECK(s.words > 0);
    }
    /* "very " 200000 times then good: factors do not stack, S = 1.5 */
    size_t k = 0;
    for (; k + 5 < n - 8; k += 5)
        memcpy(buf + k, "very ", 5);
    memcpy(buf + k, "good", 5);
    CHECK_NEAR(task_score(buf, k + 4).sum, 1.5, 0);
    /* "extremely great " repeated: S grows linearly, reward saturates at 1 */
    for (k = 0; k + 16 <= n; k += 16)
        memcpy(buf + k, "extremely great ", 16);
    TaskScore s = task_score(buf, k);
    CHECK_NEAR(s.sum, 4.0 * (double)(k / 16), 0);
    CHECK(s.reward == 1.0);
    /* bounded time: 5 MB scanned; seconds even under sanitizers */
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECKF(secs < 10, "garbage scoring took %.2f s", secs);
    free(buf);
}

/* ------------------------------------------------------------ prompts */

static bool prompt_well_formed(const char *p)
{
    size_t n = strlen(p);
    int spaces = 0;
    for (size_t i = 0; i < n; i++)
        spaces += p[i] == ' ';
    TaskScore s = task_score(p, n);
    /* a lexicon-free opening of >= 2 words, so the reward ignores it */
    return n > 0 && n <= TASK_PROMPT_MAX && p[n - 1] == ' ' && spaces >= 2 && s.sum == 0 &&
           s.sentiment == 0 && task_score(p, n).words >= 2;
}

static void test_prompts_split_disjoint(void)
{
    char err[256] = "";
    TaskPrompts ev, tr, ev2;
    CHECK(task_prompts_make(&ev, 42, TASK_SPLIT_EVAL, 150, err, sizeof err) == 0);
    CHECKF(ev.n == 150, "%s", err);
    CHECK(task_prompts_make(&tr, 42, TASK_SPLIT_TRAIN, 500, err, sizeof err) == 0);
    CHECKF(tr.n == 500, "%s", err);
    CHECK(task_prompts_make(&ev2, 42, TASK_SPLIT_EVAL, 150, err, sizeof err) == 0);
    int shared = 0, bad = 0, same = 0, dup = 0;
    for (int i = 0; i < ev.n; i++) {
        bad += !prompt_well_formed(ev.text[i]);
        bad += task_prompt_split(ev.text[i], strlen(ev.text[i])) != TASK_SPLIT_EVAL;
        same += ev2.n == ev.n && strcmp(ev.text[i], ev2.text[i]) == 0;
        for (int j = 0; j < tr.n; j++)
            shared += strcmp(ev.text[i], tr.text[j]) == 0;
        for (int j = 0; j < i; j++)
            dup += strcmp(ev.text[i], ev.text[j]) == 0;
    }
    for (int j = 0; j < tr.n; j++) {
        bad += !prompt_well_formed(tr.text[j]);
        bad += task_prompt_split(tr.text[j], strlen(tr.text[j])) != TASK_SPLIT_TRAIN;
    }
    CHECKF(shared == 0, "%d eval prompts are also train prompts", shared);
    CHECKF(bad == 0, "%d malformed or misfiled prompts", bad);
    CHECKF(same == ev.n, "same seed gave %d/%d identical prompts", same, ev.n);
    CHECKF(dup == 0, "%d duplicate eval prompts", dup);
    task_prompts_free(&ev);
    task_prompts_free(&tr);
    task_prompts_free(&ev2);
}

/* Prompt + completion is scored as the completion alone: the prompt holds
 * nothing the reward reads, so nothing carries over. */
static void test_prompt_does_not_change_reward(void)
{
    char err[256];
    TaskPrompts ev;
    CHECK(task_prompts_make(&ev, 1, TASK_SPLIT_EVAL, 50, err, sizeof err) == 0);
    static const char *const comp[] = {"not very good .", "great . i hated it .", "extremely awful",
                                       "zzz"};
    int diff = 0;
    for (int i = 0; i < ev.n; i++) {
        for (int c = 0; c < 4; c++) {
            char buf[256];
            int n = snprintf(buf, sizeof buf, "%s%s", ev.text[i], comp[c]);
            diff += task_reward(buf, (size_t)n) != task_reward(comp[c], strlen(comp[c]));
        }
    }
    CHECKF(diff == 0, "%d prompt+completion rewards differ from the completion's", diff);
    task_prompts_free(&ev);
}

static void test_prompts_errors(void)
{
    char err[256] = "";
    TaskPrompts p;
    /* the eval space is finite: asking for far more fails cleanly */
    CHECK(task_prompts_make(&p, 1, TASK_SPLIT_EVAL, 1000000, err, sizeof err) == -1);
    CHECK(p.n == 0 && p.text == NULL && strstr(err, "distinct") != NULL);
    CHECK(task_prompts_make(&p, 1, TASK_SPLIT_EVAL, -1, err, sizeof err) == -1);
    CHECK(task_prompts_make(&p, 1, (TaskSplit)7, 3, err, sizeof err) == -1);
    CHECK(task_prompts_make(&p, 1, TASK_SPLIT_TRAIN, 0, err, sizeof err) == 0 && p.n == 0);
    task_prompts_free(&p);
}

/* ------------------------------------------------------------ pairs */

static void test_pairs_no_noise(void)
{
    /* (P = 3, K = 3) */
    const double rw[] = {0.5, 0.5, -0.2, /* */ 0.1, 0.9, 0.1, /* */ 0.3, NAN, -0.3};
    TaskPair out[9];
    TaskPairStats st;
    CHECK(task_pairs_max(3, 3) == 9);
    int64_t n = task_pairs_form(rw, 3, 3, 0, NULL, out, &st);
    /* prompt 0: (0,1) tie, (0,2) 0>2, (1,2) 1>2; prompt 1: (0,1) 1>0,
     * (0,2) tie, (1,2) 1>2; prompt 2: NaN pairs invalid, (0,2) 0>2 */
    const TaskPair want[] = {
        {0, 0, 2, false}, {0, 1, 2, false}, {1, 1, 0, false}, {1, 1, 2, false}, {2, 0, 2, false}};
    CHECKF(n == 5, "%lld pairs", (long long)n);
    for (int i = 0; i < 5 && i < n; i++)
        CHECKF(out[i].prompt == want[i].prompt && out[i].chosen == want[i].chosen &&
                   out[i].rejected == want[i].rejected && !out[i].flipped,
               "pair %d: (%d, %d, %d)", i, out[i].prompt, out[i].chosen, out[i].rejected);
    CHECK(st.pairs == 5 && st.ties == 2 && st.flipped == 0 && st.invalid == 2);
    CHECK(task_pairs_max(3, 1) == 0 && task_pairs_form(rw, 3, 1, 0, NULL, out, NULL) == 0);
}

/* With Bradley-Terry noise the lower reward wins with probability
 * sigmoid(-|d| / t). Over 20000 pairs the rate's standard error is about
 * 0.003, so a tolerance of 0.015 is 5 sigma; the seed is fixed, so the test
 * is deterministic, and the margin guards against a changed Rng only. */
static void check_flip_rate(double d, double temp)
{
    enum { P = 20000 };
    double *rw = malloc(2 * P * sizeof *rw);
    TaskPair *out = malloc(P * sizeof *out);
    for (int p = 0; p < P; p++) {
        rw[2 * p] = p % 2 ? d : 0; /* the better one on either side */
        rw[2 * p + 1] = p % 2 ? 0 : d;
    }
    Rng r;
    rng_seed(&r, 2024);
    TaskPairStats st;
    int64_t n = task_pairs_form(rw, P, 2, temp, &r, out, &st);
    double want = 1.0 / (1.0 + exp(d / temp)), got = (double)st.flipped / (double)n;
    CHECK(n == P && st.ties == 0);
    CHECK_NEAR(got, want, 0.015);
    int agree = 0;
    for (int i = 0; i < n; i++)
        agree += out[i].flipped == (rw[2 * i + out[i].chosen] < rw[2 * i + out[i].rejected]);
    CHECK(agree == n);
    free(rw);
    free(out);
}

static void test_pairs_bt_noise(void)
{
    check_flip_rate(0.5, 0.5);  /* 1 / (1 + e) = 0.2689 */
    check_flip_rate(0.2, 0.1);  /* 1 / (1 + e^2) = 0.1192 */
    check_flip_rate(1.0, 5.0);  /* 0.4502: nearly a coin */
    check_flip_rate(1.0, 1e-3); /* exp overflows to inf: never flips */
}

static void write_and_read(const char *path, const char *const *prompts, int np,
                           const char *const *comps, int k, const TaskPair *pairs, int64_t n,
                           TaskPairStats *st, json_t **lines, int *nlines)
{
    char err[256] = "", *text;
    size_t len;
    *nlines = 0;
    CHECKF(task_pairs_write(path, prompts, np, comps, k, pairs, n, st, err, sizeof err) == 0, "%s",
           err);
    CHECK(tfs_read(path, &text, &len, err, sizeof err) == 0);
    for (char *l = text, *e; l < text + len; l = e + 1) {
        e = strchr(l, '\n');
        *e = '\0';
        json_error_t je;
        lines[(*nlines)++] = json_loads(l, 0, &je);
    }
    free(text);
}

static const char *jstr(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static void test_pairs_write(void)
{
    const char *prompts[] = {"the plot was ", "it was a "};
    const char *comps[] = {"good .", "awful .", "fine .", /* */ "gem .", "mess\xff", ""};
    const double rw[] = {R(1), R(-2), 0, /* */ R(2), R(-1), 0};
    TaskPair pairs[6];
    int64_t n = task_pairs_form(rw, 2, 3, 0, NULL, pairs, NULL);
    CHECK(n == 6);
    char path[128];
    path_in_tmp(path, sizeof path, "pairs.jsonl");
    TaskPairStats st;
    json_t *lines[8] = {0};
    int nl;
    write_and_read(path, prompts, 2, comps, 3, pairs, n, &st, lines, &nl);
    /* prompt 1: "mess\xff" is not UTF-8 and "" is empty (the loader refuses
     * both); each of its 3 pairs holds one of them, so all 3 are skipped */
    CHECKF(nl == 3 && st.pairs == 3 && st.invalid == 3, "%d lines, %lld invalid", nl,
           (long long)st.invalid);
    const char *want[3][2] = {{"good .", "awful ."}, {"good .", "fine ."}, {"fine .", "awful ."}};
    for (int i = 0; i < nl && i < 3; i++) {
        CHECK(json_object_size(lines[i]) == 3);
        CHECK(jstr(lines[i], "prompt") && strcmp(jstr(lines[i], "prompt"), prompts[0]) == 0);
        CHECK(jstr(lines[i], "chosen") && strcmp(jstr(lines[i], "chosen"), want[i][0]) == 0);
        CHECK(jstr(lines[i], "rejected") && strcmp(jstr(lines[i], "rejected"), want[i][1]) == 0);
        json_decref(lines[i]);
    }
    /* the loader of training data reads the file as written */
    DataOptions opt = {.max_length = 64, .max_prompt_length = 32};
    char err[256] = "";
    Dataset *ds = data_load_jsonl(path, &opt, err, sizeof err);
    CHECKF(ds && ds->n == 3, "data_load_jsonl: %s", err);
    data_free(ds);
}

static void test_pairs_write_errors(void)
{
    const char *prompts[] = {"a "};
    const char *comps[] = {"good", "bad"};
    TaskPair bad = {0, 0, 2, false}; /* K = 2: index 2 is out of range */
    char path[128], err[256] = "";
    path_in_tmp(path, sizeof path, "bad.jsonl");
    TaskPairStats st;
    CHECK(task_pairs_write(path, prompts, 1, comps, 2, &bad, 1, &st, err, sizeof err) == -1);
    CHECK(strstr(err, "out of range") != NULL && !fsutil_exists(path));
    bad = (TaskPair){1, 0, 1, false}; /* one prompt: index 1 out of range */
    CHECK(task_pairs_write(path, prompts, 1, comps, 2, &bad, 1, &st, err, sizeof err) == -1);
    /* a directory that does not exist: an error naming it, no crash */
    TaskPair ok = {0, 0, 1, false};
    CHECK(task_pairs_write("/nonexistent-dir/x.jsonl", prompts, 1, comps, 2, &ok, 1, &st, err,
                           sizeof err) == -1);
    CHECK(strstr(err, "nonexistent-dir") != NULL);
    /* zero pairs: an empty file */
    CHECK(task_pairs_write(path, prompts, 1, comps, 2, &ok, 0, &st, err, sizeof err) == 0);
    CHECK(fsutil_exists(path) && st.pairs == 0);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/prefrun-test-task-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp failed\n");
        return 1;
    }
    RUN(test_corpus_deterministic);
    RUN(test_corpus_edge_counts);
    RUN(test_documents_well_formed);
    RUN(test_corpus_balance);
    RUN(test_corpus_write_and_key);
    RUN(test_cache_key_covers_numerics);
    RUN(test_reward_hand_computed);
    RUN(test_reward_negation_window);
    RUN(test_reward_intensifiers);
    RUN(test_reward_unknown_and_empty);
    RUN(test_reward_garbage);
    RUN(test_prompts_split_disjoint);
    RUN(test_prompt_does_not_change_reward);
    RUN(test_prompts_errors);
    RUN(test_pairs_no_noise);
    RUN(test_pairs_bt_noise);
    RUN(test_pairs_write);
    RUN(test_pairs_write_errors);
    char err[256];
    fsutil_remove_tree(tmpdir, err, sizeof err);
    return tl_done();
}
