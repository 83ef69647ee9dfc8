/*
 * test_data.c — TRL JSONL loading (good and malformed lines), the byte
 * tokenizer, truncation against hand-computed token lists, batches, the
 * per-epoch order, the held-out split, and the generated toy data.
 *
 * Then the same with a model's tokenizer, on the real GPT-2 and Qwen3 files
 * that tests/fetch_tokenizers.sh fetches (the cases skip, saying so, when
 * they are absent). Their expected ids are not prefrun's: each pair is made
 * of texts of tests/data/tokenizer_cases.json, whose ids the tokenizers' own
 * JavaScript implementations computed (tests/tokenizer_expect.js), and the
 * pair's ids follow from those by TRL's tokenize_row rule (data.h): each
 * text encoded alone, EOS appended to a response that does not end with it.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/data.h"
#include "util/fsutil.h"
#include "prefrun_config.h"
#include "testlib.h"
#include "train/toydata.h"
#include "testfs.h"

#define E DATA_TOK_EOT

static char err[512];
static const DataOptions opt64 = {.max_length = 64, .max_prompt_length = 32};

static const char *fixture(const char *name)
{
    static char path[1024];
    const char *root = getenv("PREFRUN_ROOT");
    snprintf(path, sizeof path, "%s/tests/data/%s", root ? root : PREFRUN_SOURCE_ROOT, name);
    return path;
}

static Dataset *load_text(const char *text, const DataOptions *opt)
{
    return data_load_jsonl_text(text, strlen(text), "t.jsonl", opt, err, sizeof err);
}

/* The ids of pair i's chosen (or rejected) sequence equal want[0..n-1]. */
static int seq_is(const Dataset *ds, int64_t i, bool rejected, const int32_t *want, int n)
{
    int32_t got[256];
    int len = data_pair_sequence(ds, i, rejected, got, 256);
    if (len != n) {
        printf("#   sequence length %d, expected %d\n", len, n);
        return 0;
    }
    for (int t = 0; t < n; t++) {
        if (got[t] != want[t]) {
            printf("#   token %d is %d, expected %d\n", t, got[t], want[t]);
            return 0;
        }
    }
    return 1;
}

static void tokenizer_is_bytewise(void)
{
    const char s[] = "h\xc3\xa9\xff"; /* é in UTF-8, then a byte that is not UTF-8 */
    int32_t ids[4];
    data_tokenize(s, 4, ids);
    CHECK(ids[0] == 'h' && ids[1] == 0xc3 && ids[2] == 0xa9 && ids[3] == 0xff);
    int32_t with_eot[3] = {'a', E, 'b'};
    char out[32];
    size_t n = data_detokenize(with_eot, 3, out, sizeof out);
    CHECK(strcmp(out, "a<|endoftext|>b") == 0 && n == strlen(out));
    CHECK(data_detokenize(with_eot, 3, out, 4) == n && strcmp(out, "a<|") == 0); /* snprintf rule */
}

static void jsonl_good_file(void)
{
    Dataset *ds = data_load_jsonl(fixture("pairs_ok.jsonl"), &opt64, err, sizeof err);
    CHECKF(ds, "%s", err);
    if (!ds)
        return;
    CHECK(ds->n == 3);
    CHECK(ds->n_blank == 2 && ds->n_skipped == 0 && ds->n_truncated == 0);
    CHECK(ds->pairs[0].line == 1 && ds->pairs[1].line == 4 && ds->pairs[2].line == 5);
    /* "Q: 2+2?" + " 4": [EOT] prompt bytes, response bytes, [EOT] */
    int32_t c0[] = {E, 'Q', ':', ' ', '2', '+', '2', '?', ' ', '4', E};
    CHECK(seq_is(ds, 0, false, c0, 11));
    CHECK(ds->pairs[0].prompt_len == 8 && ds->pairs[0].chosen_len == 3);
    /* escapes decode to UTF-8 bytes; \u0000 is a byte like any other */
    int32_t c1[] = {E, 'h', 0xc3, 0xa9, 'c', 'a', 'f', 0xc3, 0xa9, ' ', 0xe2, 0x9c, 0x93, E};
    CHECK(seq_is(ds, 1, false, c1, 14));
    int32_t r1[] = {E, 'h', 0xc3, 0xa9, 'a', 0, 'b', E};
    CHECK(seq_is(ds, 1, true, r1, 8));
    /* an empty prompt is allowed: the leading EOT predicts the first response token */
    int32_t c2[] = {E, 'x', E};
    CHECK(seq_is(ds, 2, false, c2, 3));
    data_free(ds);
}

static void jsonl_raw_utf8_is_bytes(void)
{
    Dataset *ds =
        load_text("{\"prompt\":\"\xe6\x97\xa5\",\"chosen\":\"a\",\"rejected\":\"b\"}\n", &opt64);
    CHECKF(ds, "%s", err);
    int32_t want[] = {E, 0xe6, 0x97, 0xa5, 'a', E};
    if (ds)
        CHECK(seq_is(ds, 0, false, want, 6));
    data_free(ds);
}

/* Loading text must fail with a message containing each of the fragments. */
static void expect_error(const char *text, const char *frag1, const char *frag2)
{
    Dataset *ds = load_text(text, &opt64);
    CHECKF(!ds, "loaded, expected an error with \"%s\"", frag1);
    CHECKF(strstr(err, frag1), "error \"%s\" lacks \"%s\"", err, frag1);
    if (frag2)
        CHECKF(strstr(err, frag2), "error \"%s\" lacks \"%s\"", err, frag2);
    data_free(ds);
}

static void jsonl_malformed_lines(void)
{
    const char *ok = "{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\"}\n";
    char buf[512];
    snprintf(buf, sizeof buf, "%s{\"prompt\": \"p\", \"chosen\": \"c\"\n", ok);
    expect_error(buf, "t.jsonl:2: invalid JSON", NULL);
    snprintf(buf, sizeof buf, "%s%s{\"prompt\":\"p\",\"chosen\":\"c\"}\n", ok, ok);
    expect_error(buf, "t.jsonl:3: missing field \"rejected\"", NULL);
    expect_error("{\"prompt\":\"p\",\"chosen\":[\"c\"],\"rejected\":\"r\"}",
                 "t.jsonl:1: field \"chosen\" is a list, expected a string", NULL);
    expect_error("{\"prompt\":7,\"chosen\":\"c\",\"rejected\":\"r\"}",
                 "t.jsonl:1: field \"prompt\" is an integer, expected a string", NULL);
    expect_error("{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":null}", "\"rejected\" is null",
                 NULL);
    expect_error("{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"\"}",
                 "t.jsonl:1: field \"rejected\" is empty, expected a non-empty response", NULL);
    expect_error("[\"p\",\"c\",\"r\"]", "t.jsonl:1: line is a list, expected a JSON object", NULL);
    expect_error("{\"prompt\":\"p\",\"chosen\":\"c\",\"chosen\":\"d\",\"rejected\":\"r\"}",
                 "t.jsonl:1: invalid JSON", "duplicate");
    /* two objects on one line is not JSONL */
    snprintf(buf, sizeof buf, "%s", ok);
    buf[strlen(buf) - 1] = ' ';
    strcat(buf, ok);
    expect_error(buf, "t.jsonl:1: invalid JSON", NULL);
    /* JSON text must be UTF-8: a stray byte is named by its line */
    snprintf(buf, sizeof buf, "%s{\"prompt\":\"\xff\",\"chosen\":\"c\",\"rejected\":\"r\"}\n", ok);
    expect_error(buf, "t.jsonl:2: invalid JSON", NULL);
    expect_error("", "t.jsonl: no preference pairs", NULL);
    expect_error("\n  \n", "t.jsonl: no preference pairs", NULL);
}

static void jsonl_missing_file(void)
{
    Dataset *ds = data_load_jsonl("/nonexistent/x.jsonl", &opt64, err, sizeof err);
    CHECK(!ds);
    CHECKF(strstr(err, "/nonexistent/x.jsonl"), "%s", err);
}

static void jsonl_skip_invalid_counts(void)
{
    DataOptions opt = opt64;
    Dataset *strict = data_load_jsonl(fixture("pairs_mixed.jsonl"), &opt, err, sizeof err);
    CHECK(!strict && strstr(err, "pairs_mixed.jsonl:2: invalid JSON"));
    opt.skip_invalid = true;
    Dataset *ds = data_load_jsonl(fixture("pairs_mixed.jsonl"), &opt, err, sizeof err);
    CHECKF(ds, "%s", err);
    if (ds) {
        CHECK(ds->n == 2 && ds->n_skipped == 2);
        CHECK(ds->pairs[0].line == 1 && ds->pairs[1].line == 4);
        CHECKF(strstr(ds->first_skip, "pairs_mixed.jsonl:2:"), "%s", ds->first_skip);
    }
    data_free(ds);
    Dataset *none = load_text("{\n[\n", &opt);
    CHECK(!none && strstr(err, "no valid preference pair (2 malformed lines skipped"));
}

/* Truncation by hand: L = max_length, P = max_prompt_length; a prompt
 * "abcdefgh" is 9 tokens with its EOT, a response "xyz" is 4 with its EOT. */
static void truncation_keeps_whole_pair_when_it_fits(void)
{
    DataOptions opt = {.max_length = 8, .max_prompt_length = 2};
    Dataset *ds = data_new(&opt, "t", err, sizeof err);
    CHECK(data_add_pair(ds, "abc", 3, "de", 2, "f", 1, 1, "t:1", err, sizeof err) == 0);
    int32_t c[] = {E, 'a', 'b', 'c', 'd', 'e', E}, r[] = {E, 'a', 'b', 'c', 'f', E};
    CHECK(seq_is(ds, 0, false, c, 7) && seq_is(ds, 0, true, r, 6));
    CHECK(!ds->pairs[0].truncated && ds->n_truncated == 0); /* 4 + 3 <= 8: P does not apply */
    data_free(ds);
}

static void truncation_cuts_prompt_from_the_left(void)
{
    DataOptions opt = {.max_length = 10, .max_prompt_length = 4};
    Dataset *ds = data_new(&opt, "t", err, sizeof err);
    /* 9 + 4 > 10: the prompt keeps its last 4 tokens; 4 + 4 fits */
    CHECK(data_add_pair(ds, "abcdefgh", 8, "xyz", 3, "uv", 2, 1, "t:1", err, sizeof err) == 0);
    int32_t c[] = {'e', 'f', 'g', 'h', 'x', 'y', 'z', E}, r[] = {'e', 'f', 'g', 'h', 'u', 'v', E};
    CHECK(seq_is(ds, 0, false, c, 8) && seq_is(ds, 0, true, r, 7));
    CHECK(ds->pairs[0].truncated && ds->n_truncated == 1 && ds->max_seq_len == 8);
    data_free(ds);
}

static void truncation_then_cuts_responses_from_the_right(void)
{
    DataOptions opt = {.max_length = 8, .max_prompt_length = 4};
    Dataset *ds = data_new(&opt, "t", err, sizeof err);
    /* prompt -> last 4; 4 + 7 > 8 still: responses keep their first 8 - 4 = 4 tokens,
     * so the chosen one loses its EOT and the short rejected one is untouched */
    CHECK(data_add_pair(ds, "abcdefgh", 8, "123456", 6, "12", 2, 1, "t:1", err, sizeof err) == 0);
    int32_t c[] = {'e', 'f', 'g', 'h', '1', '2', '3', '4'}, r[] = {'e', 'f', 'g', 'h', '1', '2', E};
    CHECK(seq_is(ds, 0, false, c, 8) && seq_is(ds, 0, true, r, 7));
    CHECK(ds->pairs[0].chosen_len == 4 && ds->pairs[0].rejected_len == 3);
    data_free(ds);
}

static void truncation_short_prompt_keeps_what_fits(void)
{
    DataOptions opt = {.max_length = 8, .max_prompt_length = 6};
    Dataset *ds = data_new(&opt, "t", err, sizeof err);
    /* the prompt (3) is under P: kept whole; the response keeps 8 - 3 = 5 tokens
     * (TRL <= 0.11 would keep L - P = 2; see data.h) */
    CHECK(data_add_pair(ds, "ab", 2, "1234567", 7, "9", 1, 1, "t:1", err, sizeof err) == 0);
    int32_t c[] = {E, 'a', 'b', '1', '2', '3', '4', '5'}, r[] = {E, 'a', 'b', '9', E};
    CHECK(seq_is(ds, 0, false, c, 8) && seq_is(ds, 0, true, r, 5));
    data_free(ds);
}

static void truncation_options_checked(void)
{
    DataOptions bad = {.max_length = 8, .max_prompt_length = 8};
    CHECK(data_new(&bad, "t", err, sizeof err) == NULL && strstr(err, "max_prompt_length"));
    bad.max_prompt_length = 0;
    CHECK(data_options_check(&bad, err, sizeof err) != 0);
}

static void batch_layout_by_hand(void)
{
    DataOptions opt = {.max_length = 8, .max_prompt_length = 4};
    Dataset *ds = data_new(&opt, "t", err, sizeof err);
    data_add_pair(ds, "ab", 2, "c", 1, "de", 2, 1, "t:1", err, sizeof err);
    data_add_pair(ds, "", 0, "x", 1, "yz", 2, 2, "t:2", err, sizeof err);
    DataBatch *b = data_batch_new(4, 8);
    int64_t idx[2] = {1, 0};
    CHECKF(data_batch_fill(ds, idx, 2, b, err, sizeof err) == 0, "%s", err);
    CHECK(b->B == 2 && b->index[0] == 1 && b->index[1] == 0);
    /* rows: 0 = chosen of pair 1, 1 = chosen of pair 0, 2 = rejected of pair 1, 3 = rejected of
     * pair 0 */
    int32_t ids1[8] = {E, 'a', 'b', 'c', E, E, E, E};
    int32_t tg1[8] = {-1, -1, 'c', E, -1, -1, -1, -1}; /* position t predicts token t + 1 */
    int32_t ids2[8] = {E, 'y', 'z', E, E, E, E, E};
    int32_t tg2[8] = {'y', 'z', E, -1, -1, -1, -1, -1};
    int32_t tg3[8] = {-1, -1, 'd', 'e', E, -1, -1, -1};
    for (int t = 0; t < 8; t++) {
        CHECK(b->ids[1 * 8 + t] == ids1[t] && b->targets[1 * 8 + t] == tg1[t]);
        CHECK(b->ids[2 * 8 + t] == ids2[t] && b->targets[2 * 8 + t] == tg2[t]);
        CHECK(b->targets[3 * 8 + t] == tg3[t]);
        for (int row = 0; row < 4; row++)
            CHECK(b->mask[row * 8 + t] == (b->targets[row * 8 + t] >= 0 ? 1.0f : 0.0f));
    }
    CHECK(b->resp_len[0] == 2 && b->resp_len[1] == 2 && b->resp_len[2] == 3 && b->resp_len[3] == 3);
    CHECK(b->seq_len[0] == 3 && b->seq_len[1] == 5 && b->seq_len[2] == 4 && b->seq_len[3] == 6);
    /* a batch narrower than a sequence is an error, not a silent cut */
    DataBatch *narrow = data_batch_new(2, 4);
    CHECK(data_batch_fill(ds, idx, 2, narrow, err, sizeof err) != 0 && strstr(err, "T = 4"));
    int64_t bad[1] = {5};
    CHECK(data_batch_fill(ds, bad, 1, b, err, sizeof err) != 0 && strstr(err, "out of range"));
    data_batch_free(narrow);
    data_batch_free(b);
    data_free(ds);
}

/* Records the index sequence of `batches` batches. */
static void draw(DataOrder *o, int batches, int64_t *out, int *sizes)
{
    for (int k = 0; k < batches; k++)
        sizes[k] = data_order_next(o, out + (int64_t)k * o->batch_size);
}

static void order_is_a_permutation_per_epoch(void)
{
    DataOrder o;
    CHECK(data_order_init(&o, 10, 4, false, true, 123, err, sizeof err) == 0);
    CHECK(data_order_batches_per_epoch(&o) == 3);
    int64_t idx[4 * 6];
    int sizes[6];
    draw(&o, 6, idx, sizes);
    CHECK(sizes[0] == 4 && sizes[1] == 4 && sizes[2] == 2 && sizes[3] == 4 && sizes[5] == 2);
    CHECK(o.epoch == 1 && o.pos == 10);
    for (int e = 0; e < 2; e++) { /* each epoch visits every pair once */
        int seen[10] = {0};
        for (int k = 3 * e; k < 3 * e + 3; k++)
            for (int i = 0; i < sizes[k]; i++)
                seen[idx[k * 4 + i]]++;
        for (int i = 0; i < 10; i++)
            CHECK(seen[i] == 1);
    }
    bool differ = false; /* epochs get their own order (10! orders: equal by chance ~3e-7) */
    for (int i = 0; i < 4; i++)
        differ |= idx[i] != idx[12 + i];
    CHECK(differ);
    data_order_free(&o);
}

static void order_is_deterministic_and_resumable(void)
{
    DataOrder a, b, c;
    data_order_init(&a, 37, 5, true, true, 9, err, sizeof err);
    data_order_init(&b, 37, 5, true, true, 9, err, sizeof err);
    data_order_init(&c, 37, 5, true, true, 10, err, sizeof err);
    CHECK(data_order_batches_per_epoch(&a) == 7); /* drop_last: 35 of 37 */
    int64_t ia[5 * 20], ib[5 * 20], ic[5 * 20];
    int sa[20], sb[20], sc[20];
    draw(&a, 9, ia, sa); /* into the second epoch */
    /* resume: a fresh order put at a's position continues identically */
    DataOrder r;
    data_order_init(&r, 37, 5, true, true, 9, err, sizeof err);
    CHECK(data_order_seek(&r, a.epoch, a.pos, err, sizeof err) == 0);
    draw(&a, 11, ia + 45, sa + 9);
    draw(&r, 11, ib + 45, sb + 9);
    CHECK(memcmp(ia + 45, ib + 45, 55 * sizeof(int64_t)) == 0);
    draw(&b, 20, ib, sb);
    draw(&c, 20, ic, sc);
    CHECK(memcmp(ia, ib, sizeof ia) == 0);
    CHECK(memcmp(ia, ic, sizeof ia) != 0);
    for (int k = 0; k < 20; k++)
        CHECK(sa[k] == 5); /* drop_last: never a short batch */
    CHECK(data_order_seek(&r, 0, 38, err, sizeof err) != 0);
    data_order_free(&a);
    data_order_free(&b);
    data_order_free(&c);
    data_order_free(&r);
    CHECK(data_order_init(&a, 3, 5, true, true, 9, err, sizeof err) != 0 && strstr(err, "fewer"));
}

static void order_without_shuffle_is_file_order(void)
{
    DataOrder o;
    data_order_init(&o, 5, 2, false, false, 1, err, sizeof err);
    int64_t idx[2 * 4];
    int sizes[4];
    draw(&o, 4, idx, sizes);
    int64_t want[] = {0, 1, 2, 3, 4, -1, 0, 1};
    CHECK(sizes[2] == 1);
    for (int i = 0; i < 8; i++)
        CHECK(i == 5 || idx[i] == want[i]);
    data_order_free(&o);
}

static void next_batch_fills_from_order(void)
{
    Dataset *ds = toydata_dataset(3, 12, &opt64, err, sizeof err);
    DataOrder o;
    data_order_init(&o, ds->n, 5, false, true, 4, err, sizeof err);
    DataBatch *b = data_batch_new(5, 64);
    int total = 0;
    for (int k = 0; k < 3; k++) {
        CHECKF(data_next_batch(ds, &o, b, err, sizeof err) == 0, "%s", err);
        total += b->B;
    }
    CHECK(total == 12 && b->B == 2);
    data_batch_free(b);
    data_order_free(&o);
    data_free(ds);
}

static void split_is_disjoint_and_deterministic(void)
{
    Dataset *ds = toydata_dataset(5, 20, &opt64, err, sizeof err);
    Dataset *tr, *ev, *tr2, *ev2;
    CHECK(data_split(ds, 0.25, 77, &tr, &ev, err, sizeof err) == 0);
    CHECK(data_split(ds, 0.25, 77, &tr2, &ev2, err, sizeof err) == 0);
    CHECK(tr->n == 15 && ev->n == 5);
    CHECK(tr->n_tokens + ev->n_tokens == ds->n_tokens);
    CHECK(ev->n == ev2->n && memcmp(ev->pool, ev2->pool, (size_t)ev->n_tokens * 4) == 0);
    /* toy pairs carry line 0, so identify pairs by their tokens */
    int used[20] = {0};
    const Dataset *parts[2] = {tr, ev};
    for (int s = 0; s < 2; s++)
        for (int64_t i = 0; i < parts[s]->n; i++) {
            int32_t a[64], b2[64];
            int la = data_pair_sequence(parts[s], i, true, a, 64);
            for (int j = 0; j < 20; j++) {
                int lb = data_pair_sequence(ds, j, true, b2, 64);
                if (!used[j] && la == lb && !memcmp(a, b2, (size_t)la * 4)) {
                    used[j] = 1;
                    break;
                }
            }
        }
    int all = 1;
    for (int j = 0; j < 20; j++)
        all &= used[j];
    CHECK(all);
    data_free(tr2);
    data_free(ev2);
    data_free(tr);
    data_free(ev);
    /* tiny fractions still hold out one pair; fraction 0 holds out none */
    CHECK(data_split(ds, 0.001, 1, &tr, &ev, err, sizeof err) == 0 && ev->n == 1 && tr->n == 19);
    data_free(tr);
    data_free(ev);
    CHECK(data_split(ds, 0.0, 1, &tr, &ev, err, sizeof err) == 0 && ev->n == 0 && tr->n == 20);
    data_free(tr);
    data_free(ev);
    CHECK(data_split(ds, 1.0, 1, &tr, &ev, err, sizeof err) != 0);
    data_free(ds);
}

/* Which of the toy rules the sequence s obeys (bit mask; 0 = none). */
static int toy_rules(const char *s)
{
    int n = (int)strlen(s), up = 1, down = 1, step = 1, rep2 = 1, rep3 = 1;
    for (int i = 1; i < n; i++) {
        up &= s[i] >= 'a' && s[i - 1] >= 'a' && (s[i] - 'a') == (s[i - 1] - 'a' + 1) % 26;
        down &= s[i] >= 'a' && s[i - 1] >= 'a' && (s[i - 1] - 'a') == (s[i] - 'a' + 1) % 26;
        step &= s[i] <= '9' && (s[i] - s[i - 1] + 10) % 10 == (s[1] - s[0] + 10) % 10;
        rep2 &= i < 2 || s[i] == s[i - 2];
        rep3 &= i < 3 || s[i] == s[i - 3];
    }
    return up | down << 1 | step << 2 | rep2 << 3 | rep3 << 4;
}

static void toydata_follows_its_rules(void)
{
    ToyPair p[400];
    toydata_generate(11, 400, p);
    int kinds = 0;
    for (int i = 0; i < 400; i++) {
        char good[40], bad[40];
        snprintf(good, sizeof good, "%s%s", p[i].prompt, p[i].chosen);
        snprintf(bad, sizeof bad, "%s%s", p[i].prompt, p[i].rejected);
        int diffs = 0;
        for (int j = 0; p[i].chosen[j]; j++)
            diffs += p[i].chosen[j] != p[i].rejected[j];
        CHECKF(toy_rules(good) != 0, "pair %d: chosen %s breaks every rule", i, good);
        CHECKF(toy_rules(bad) == 0, "pair %d: rejected %s obeys a rule", i, bad);
        CHECK(diffs == 1 && strlen(p[i].chosen) == strlen(p[i].rejected));
        kinds |= toy_rules(good);
    }
    CHECK(kinds == 31); /* every rule occurs */
}

/* FNV-1a, to pin the generated bytes */
static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void toydata_same_seed_same_bytes(void)
{
    char *a = toydata_jsonl(42, 200), *b = toydata_jsonl(42, 200), *c = toydata_jsonl(43, 200);
    CHECK(a && b && c && strcmp(a, b) == 0 && strcmp(a, c) != 0);
    char dir[] = "/tmp/prefrun_toyXXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/toy.jsonl", dir);
    CHECKF(toydata_write_jsonl(path, 42, 200, err, sizeof err) == 0, "%s", err);
    char *file;
    size_t len;
    CHECK(tfs_read(path, &file, &len, err, sizeof err) == 0);
    CHECK(file && len == strlen(a) && memcmp(file, a, len) == 0);
    /* the file is valid TRL JSONL and tokenizes exactly like the in-memory set */
    Dataset *fromfile = data_load_jsonl(path, &opt64, err, sizeof err);
    Dataset *direct = toydata_dataset(42, 200, &opt64, err, sizeof err);
    CHECK(fromfile && direct && fromfile->n == 200 && direct->n == 200);
    if (fromfile && direct)
        CHECK(fromfile->n_tokens == direct->n_tokens &&
              memcmp(fromfile->pool, direct->pool, (size_t)direct->n_tokens * 4) == 0);
    CHECK(direct && direct->max_seq_len <= 14 && direct->n_truncated == 0);
    printf("# toy seed 42: fnv %016llx, first line %.*s\n", (unsigned long long)fnv(a),
           (int)strcspn(a, "\n"), a);
    data_free(fromfile);
    data_free(direct);
    free(file);
    free(a);
    free(b);
    free(c);
    fsutil_remove_tree(dir, err, sizeof err);
}

/* ---- implicit prompts and conversational lines ---- */

static const DataOptions opt_chat = {.max_length = 1024, .max_prompt_length = 512};

/* Pair i holds [EOT] + prompt, then chosen (rejected) + [EOT], as bytes. */
static int pair_is(const Dataset *ds, int64_t i, const char *prompt, const char *chosen,
                   const char *rejected)
{
    int ok = ds->pairs[i].prompt_len == (int)strlen(prompt) + 1;
    if (!ok)
        printf("#   pair %lld: prompt of %d tokens, expected %zu\n", (long long)i,
               ds->pairs[i].prompt_len, strlen(prompt) + 1);
    for (int side = 0; side < 2; side++) {
        const char *resp = side ? rejected : chosen;
        int32_t want[1024], got[1024];
        int n = 0;
        want[n++] = E;
        for (const char *s = prompt; *s; s++)
            want[n++] = (unsigned char)*s;
        for (const char *s = resp; *s; s++)
            want[n++] = (unsigned char)*s;
        want[n++] = E;
        int len = data_pair_sequence(ds, i, side, got, 1024);
        bool same = len == n && memcmp(got, want, (size_t)n * sizeof *got) == 0;
        if (!same) {
            char text[2048];
            data_detokenize(got, len > 0 ? len : 0, text, sizeof text);
            printf("#   pair %lld %s: got \"%s\"\n#   expected <|endoftext|>%s%s<|endoftext|>\n",
                   (long long)i, side ? "rejected" : "chosen", text, prompt, resp);
        }
        ok &= same;
    }
    return ok;
}

static Dataset *load_chat(const char *text, const char *format, const char *bos, const char *eos)
{
    DataOptions o = opt_chat;
    o.chat_format = format;
    o.bos_token = bos;
    o.eos_token = eos;
    return load_text(text, &o);
}

/* TRL's extract_prompt on strings: the prompt ends before the first
 * difference, moved back over one space; a shared whole keeps its last
 * character in the responses; a UTF-8 character is never split. */
static void implicit_prompt_strings(void)
{
    Dataset *ds = load_text("{\"chosen\": \"Q: 2+2? A: 4\", \"rejected\": \"Q: 2+2? A: 5\"}\n"
                            "{\"chosen\": \"abc\", \"rejected\": \"abcd\"}\n"
                            "{\"chosen\": \"caf\\u00e9\", \"rejected\": \"caf\\u00e8!\"}\n"
                            "{\"chosen\": \"x\", \"rejected\": \"y\"}\n"
                            "{\"chosen\": \"same\", \"rejected\": \"same\", \"score\": 3}\n",
                            &opt_chat);
    CHECKF(ds && ds->n == 5, "%s", err);
    if (!ds)
        return;
    CHECK(pair_is(ds, 0, "Q: 2+2? A:", " 4", " 5"));
    CHECK(pair_is(ds, 1, "ab", "c", "cd"));
    CHECK(pair_is(ds, 2, "caf", "\xc3\xa9", "\xc3\xa8!"));
    CHECK(pair_is(ds, 3, "", "x", "y"));
    CHECK(pair_is(ds, 4, "sam", "e", "e"));
    data_free(ds);
    expect_error("{\"chosen\": \"a\", \"rejected\": \"\"}",
                 "t.jsonl:1: field \"rejected\" is empty, expected a non-empty response", NULL);
    expect_error("{\"chosen\": \"a\", \"rejected\": [{\"role\": \"user\", \"content\": \"a\"}]}",
                 "t.jsonl:1: field \"rejected\" is a list, expected a string like chosen", NULL);
    expect_error("{\"chosen\": 3, \"rejected\": \"a\"}",
                 "t.jsonl:1: field \"chosen\" is an integer, expected a string or a list", NULL);
    expect_error("{\"rejected\": \"a\"}", "t.jsonl:1: missing field \"chosen\"", NULL);
}

#define CHATML_Q "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"

/* The fixture holds the same pair in all five shapes; through chatml the
 * three conversational ones give the same bytes. */
static void formats_fixture(void)
{
    DataOptions o = opt_chat;
    o.chat_format = "chatml";
    Dataset *ds = data_load_jsonl(fixture("pairs_formats.jsonl"), &o, err, sizeof err);
    CHECKF(ds && ds->n == 5 && ds->n_skipped == 0, "%s", err);
    if (!ds)
        return;
    CHECK(pair_is(ds, 0, "Q: 2+2?", " 4", " 5"));
    CHECK(pair_is(ds, 1, "Q: 2+2? A:", " 4", " 5"));
    for (int i = 2; i < 5; i++) /* explicit, implicit, implicit with a string prompt ignored */
        CHECKF(pair_is(ds, i, CHATML_Q, "4<|im_end|>\n", "5<|im_end|>\n"), "line %d", i + 1);
    CHECK(ds->opt.chat_format == NULL); /* the caller's strings are not kept */
    data_free(ds);
    /* with no chat format the first conversational line stops the load, skip_invalid or not */
    o.chat_format = NULL;
    o.skip_invalid = true;
    ds = data_load_jsonl(fixture("pairs_formats.jsonl"), &o, err, sizeof err);
    CHECK(!ds);
    CHECKF(strstr(err, "pairs_formats.jsonl:3: a conversational line needs a chat format: set "
                       "chat_format"),
           "%s", err);
}

/* Each family through a data line: the prompt rendered with the generation
 * prompt, each response the rest of render(prompt + response); a leading
 * bos text and a trailing eos text give way to the EOT tokens. */
static void conversational_by_family(void)
{
    const char *line =
        "{\"prompt\": [{\"role\": \"user\", \"content\": \"2+2?\"}], \"chosen\": [{\"role\": "
        "\"assistant\", \"content\": \"4\"}], \"rejected\": [{\"role\": \"assistant\", "
        "\"content\": \"5\"}]}\n";
    struct {
        const char *format, *bos, *eos, *prompt, *chosen, *rejected;
    } fam[] = {
        {"chatml", NULL, "<|im_end|>", CHATML_Q, "4<|im_end|>\n", "5<|im_end|>\n"},
        /* "<|begin_of_text|>" + header... : bos goes; "4<|eot_id|>": eos goes */
        {"llama3", "<|begin_of_text|>", "<|eot_id|>",
         "<|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
         "<|start_header_id|>assistant<|end_header_id|>\n\n",
         "4", "5"},
        /* the turn ends with eos + "\n": not at the very end, kept */
        {"zephyr", "<s>", "</s>", "<|user|>\n2+2?</s>\n<|assistant|>\n", "4</s>\n", "5</s>\n"},
        {"mistral", "<s>", "</s>", " [INST] 2+2? [/INST]", " 4", " 5"},
        {"gemma", "<bos>", "<eos>",
         "<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n", "4<end_of_turn>\n",
         "5<end_of_turn>\n"},
    };
    for (size_t k = 0; k < sizeof fam / sizeof fam[0]; k++) {
        Dataset *ds = load_chat(line, fam[k].format, fam[k].bos, fam[k].eos);
        CHECKF(ds, "%s: %s", fam[k].format, err);
        if (ds)
            CHECKF(pair_is(ds, 0, fam[k].prompt, fam[k].chosen, fam[k].rejected), "%s",
                   fam[k].format);
        data_free(ds);
    }
}

/* Multi-turn prompts, a prompt that ends with the assistant (continued, as
 * TRL's continue_final_message), and the template's default system message
 * when the format comes from tokenizer_config.json's chat_template. */
static void conversational_prompts(void)
{
    Dataset *ds = load_chat(
        "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
        "\"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}, {\"role\": "
        "\"user\", \"content\": \"times 3?\"}], \"chosen\": [{\"role\": \"assistant\", "
        "\"content\": \"12\"}], \"rejected\": [{\"role\": \"assistant\", \"content\": \"7\"}]}\n",
        "mistral", "<s>", "</s>");
    CHECKF(ds && ds->n == 1, "%s", err);
    if (ds)
        CHECK(pair_is(ds, 0, " [INST] Be brief.\n\n2+2? [/INST] 4</s> [INST] times 3? [/INST]",
                      " 12", " 7"));
    data_free(ds);
    /* the prompt is cut right after "It is"; render(prompt + chosen) closes that turn
     * and opens the reply's: TRL's texts exactly */
    const char *prefill =
        "{\"prompt\": [{\"role\": \"user\", \"content\": \"2+2?\"}, {\"role\": \"assistant\", "
        "\"content\": \"It is\"}], \"chosen\": [{\"role\": \"assistant\", \"content\": \" 4\"}], "
        "\"rejected\": [{\"role\": \"assistant\", \"content\": \" 5\"}]}\n";
    ds = load_chat(prefill, "chatml", NULL, "<|im_end|>");
    CHECKF(ds, "%s", err);
    if (ds)
        CHECK(pair_is(ds, 0, "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\nIt is",
                      "<|im_end|>\n<|im_start|>assistant\n 4<|im_end|>\n",
                      "<|im_end|>\n<|im_start|>assistant\n 5<|im_end|>\n"));
    data_free(ds);
    /* Mistral's turns alternate: two assistant turns in a row are refused */
    ds = load_chat(prefill, "mistral", "<s>", "</s>");
    CHECK(!ds && strstr(err, "t.jsonl:1: prompt + chosen: message 3 has role \"assistant\""));
    DataOptions o = opt_chat;
    o.chat_template = "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are "
                      "a test.<|im_end|>\\n' }}{% endif %}{{ '<|im_start|>' + m['role'] }}";
    ds = load_text("{\"prompt\": [{\"role\": \"user\", \"content\": \"2+2?\"}], \"chosen\": "
                   "[{\"role\": \"assistant\", \"content\": \"4\"}], \"rejected\": [{\"role\": "
                   "\"assistant\", \"content\": \"5\"}]}\n",
                   &o);
    CHECKF(ds, "%s", err);
    if (ds)
        CHECK(pair_is(ds, 0, "<|im_start|>system\nYou are a test.<|im_end|>\n" CHATML_Q,
                      "4<|im_end|>\n", "5<|im_end|>\n"));
    data_free(ds);
    o.chat_template = "{{ messages }}";
    ds = load_text("{\"prompt\": [{\"role\": \"user\", \"content\": \"q\"}], \"chosen\": "
                   "[{\"role\": \"assistant\", \"content\": \"4\"}], \"rejected\": [{\"role\": "
                   "\"assistant\", \"content\": \"5\"}]}\n",
                   &o);
    CHECK(!ds && strstr(err, "t.jsonl:1: unrecognised chat template") &&
          strstr(err, "chat_format"));
}

/* Conversational line text, and its error with skip_invalid off. */
static void expect_chat_error(const char *text, const char *format, const char *frag1,
                              const char *frag2)
{
    Dataset *ds = load_chat(text, format, "<bos>", "<eos>");
    CHECKF(!ds, "loaded, expected an error with \"%s\"", frag1);
    CHECKF(strstr(err, frag1), "error \"%s\" lacks \"%s\"", err, frag1);
    CHECKF(!frag2 || strstr(err, frag2), "error \"%s\" lacks \"%s\"", err, frag2);
    data_free(ds);
}

#define U "{\"role\": \"user\", \"content\": \"q\"}"
#define A "{\"role\": \"assistant\", \"content\": \"a\"}"

static void conversational_malformed_lines(void)
{
    expect_chat_error("{\"prompt\": [{\"content\": \"q\"}], \"chosen\": [" A "], \"rejected\": [" A
                      "]}",
                      "chatml", "t.jsonl:1: field \"prompt\" message 1 has no \"role\"", NULL);
    expect_chat_error("{\"prompt\": [" U "], \"chosen\": [{\"role\": \"assistant\"}], "
                      "\"rejected\": [" A "]}",
                      "chatml", "t.jsonl:1: field \"chosen\" message 1 has no \"content\"", NULL);
    expect_chat_error("{\"prompt\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\"}]}], "
                      "\"chosen\": [" A "], \"rejected\": [" A "]}",
                      "chatml",
                      "t.jsonl:1: field \"prompt\" message 1: \"content\" is a list, expected a "
                      "string",
                      NULL);
    expect_chat_error("{\"prompt\": [" U "], \"chosen\": [], \"rejected\": [" A "]}", "chatml",
                      "t.jsonl:1: field \"chosen\" is an empty list, expected at least one", NULL);
    expect_chat_error("{\"prompt\": [" U ", \"x\"], \"chosen\": [" A "], \"rejected\": [" A "]}",
                      "chatml",
                      "t.jsonl:1: field \"prompt\" message 2 is a string, expected an "
                      "object",
                      NULL);
    expect_chat_error("{\"prompt\": [" U "], \"chosen\": \"a\", \"rejected\": [" A "]}", "chatml",
                      "t.jsonl:1: field \"chosen\" is a string, expected a list of", NULL);
    expect_chat_error("{\"prompt\": [" U "], \"chosen\": [" A "]}", "chatml",
                      "t.jsonl:1: missing field \"rejected\"", NULL);
    expect_chat_error("{\"prompt\": [" U "], \"chosen\": [{\"role\": \"tool\", \"content\": "
                      "\"42\"}], \"rejected\": [" A "]}",
                      "chatml", "t.jsonl:1: prompt + chosen: message 2 has role \"tool\"",
                      "chatml");
    expect_chat_error("{\"prompt\": [{\"role\": \"system\", \"content\": \"s\"}], \"chosen\": [" A
                      "], \"rejected\": [" A "]}",
                      "chatml",
                      "t.jsonl:1: prompt: the prompt's last message (message 1) has "
                      "role \"system\"",
                      NULL);
    expect_chat_error("{\"prompt\": [{\"role\": \"system\", \"content\": \"s\"}, " U "], "
                      "\"chosen\": [" A "], \"rejected\": [" A "]}",
                      "gemma", "t.jsonl:1: prompt: message 1 has role \"system\"", "gemma");
    expect_chat_error("{\"chosen\": [" U ", " A "], \"rejected\": [{\"role\": \"user\", "
                      "\"content\": \"other\"}, " A "]}",
                      "chatml", "t.jsonl:1: chosen and rejected differ from their first message",
                      NULL);
    /* a malformed conversational line is skipped like any other */
    DataOptions o = opt_chat;
    o.chat_format = "zephyr";
    o.skip_invalid = true;
    Dataset *ds = load_text("{\"prompt\": [" U "], \"chosen\": [" A "], \"rejected\": [" A "]}\n"
                            "{\"prompt\": [" U "], \"chosen\": [], \"rejected\": [" A "]}\n"
                            "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}\n",
                            &o);
    CHECKF(ds && ds->n == 2 && ds->n_skipped == 1, "%s", err);
    if (ds)
        CHECKF(strstr(ds->first_skip, "t.jsonl:2: field \"chosen\" is an empty list"), "%s",
               ds->first_skip);
    data_free(ds);
    DataOptions bogus = opt_chat;
    bogus.chat_format = "chatml2";
    CHECK(data_options_check(&bogus, err, sizeof err) != 0 &&
          strstr(err, "chat_format is \"chatml2\", expected one of chatml"));
}

#undef U
#undef A

/* ---- the model's tokenizer: real GPT-2 and Qwen3 files ---- */

static Tokenizer *gpt2_tok, *qwen3_tok;
static json_t *tok_cases;

#define GPT2_EOT 50256     /* <|endoftext|>: GPT-2's BOS, EOS and (no pad) padding */
#define QWEN_IM_END 151645 /* <|im_end|>: Qwen3's eos_token */
#define QWEN_PAD 151643    /* <|endoftext|>: its pad_token */
#define QWEN_NL 198        /* "\n", as the chat case's ids show after each <|im_end|> */

static const char *tokenizer_dir(const char *sub)
{
    static char path[2][600];
    static int k;
    const char *d = getenv("PREFRUN_TOKENIZER_DATA");
    k = !k;
    snprintf(path[k], sizeof path[k], "%s/%s", d ? d : PREFRUN_SOURCE_ROOT "/.deps/tokenizers",
             sub);
    return path[k];
}

static void load_tokenizers(void)
{
    if (fsutil_is_dir(tokenizer_dir("gpt2")) &&
        !(gpt2_tok = tokenizer_load(tokenizer_dir("gpt2"), err, sizeof err)))
        printf("# gpt2: %s\n", err);
    if (fsutil_is_dir(tokenizer_dir("qwen3")) &&
        !(qwen3_tok = tokenizer_load(tokenizer_dir("qwen3"), err, sizeof err)))
        printf("# qwen3: %s\n", err);
    json_error_t je;
    tok_cases = json_load_file(fixture("tokenizer_cases.json"), JSON_ALLOW_NUL, &je);
    if (!tok_cases)
        printf("# tokenizer_cases.json:%d: %s\n", je.line, je.text);
}

/* Whether the real files are there; a SKIP line for case `name` if not. */
static bool have_tokenizers(const char *name)
{
    if (gpt2_tok && qwen3_tok && tok_cases)
        return true;
    tl_cases++;
    printf("ok %d - %s # SKIP no tokenizer files (bash tests/fetch_tokenizers.sh)\n", tl_cases,
           name);
    return false;
}
#define RUN_TOK(fn) (have_tokenizers(#fn) ? RUN(fn) : (void)0)

static json_t *tok_case(const char *name)
{
    size_t i;
    json_t *c;
    json_array_foreach(
        json_object_get(tok_cases, "cases"), i,
        c) if (!strcmp(json_string_value(json_object_get(c, "name")), name)) return c;
    printf("# no case %s in tokenizer_cases.json\n", name);
    return NULL;
}

static const char *case_text(const char *name)
{
    return json_string_value(json_object_get(tok_case(name), "text"));
}

/* Appends the ids of case `name` for tokenizer tk ("gpt2", "qwen3"), with
 * special tokens recognised, to want[*n..]. */
static void case_ids(const char *name, const char *tk, int32_t *want, int *n)
{
    json_t *ids = json_object_get(json_object_get(tok_case(name), tk), "special");
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) want[(*n)++] = (int32_t)json_integer_value(v);
}

/* A JSONL line of the three fields (texts escaped by jansson). */
static char *pair_line(const char *prompt, const char *chosen, const char *rejected)
{
    json_t *o = prompt ? json_pack("{s:s, s:s, s:s}", "prompt", prompt, "chosen", chosen,
                                   "rejected", rejected)
                       : json_pack("{s:s, s:s}", "chosen", chosen, "rejected", rejected);
    char *line = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return line;
}

/* Pair i's chosen (rejected) sequence is want, its prompt the first np. */
static int tok_pair_is(const Dataset *ds, int64_t i, bool rejected, int np, const int32_t *want,
                       int n)
{
    int ok = ds->pairs[i].prompt_len == np;
    if (!ok)
        printf("#   pair %lld: prompt of %d tokens, expected %d\n", (long long)i,
               ds->pairs[i].prompt_len, np);
    return ok & seq_is(ds, i, rejected, want, n);
}

static Dataset *load_tok(const char *text, const Tokenizer *tok, int L, int P)
{
    DataOptions o = {.max_length = L, .max_prompt_length = P, .tokenizer = tok};
    return load_text(text, &o);
}

/* Standard format: prompt, chosen and rejected encoded alone; EOS after a
 * response unless it already ends with one; no BOS before a prompt. */
static void tokenizer_standard_format(void)
{
    char *line = pair_line(case_text("golden"), case_text("one_letter"),
                           case_text("endoftext_inline")); /* ends with <|endoftext|> */
    Dataset *ds = load_tok(line, gpt2_tok, 256, 128);
    CHECKF(ds && ds->n == 1, "%s", err);
    if (ds) {
        int32_t c[64], r[64];
        int nc = 0, nr = 0, np;
        case_ids("golden", "gpt2", c, &nc);
        np = nc;
        memcpy(r, c, sizeof c);
        nr = nc;
        case_ids("one_letter", "gpt2", c, &nc);
        c[nc++] = GPT2_EOT;
        case_ids("endoftext_inline", "gpt2", r, &nr); /* its own final 50256 is the EOS */
        CHECK(np == 10 && c[10] == 64 && r[nr - 1] == GPT2_EOT && r[nr - 2] != GPT2_EOT);
        CHECK(tok_pair_is(ds, 0, false, np, c, nc) && tok_pair_is(ds, 0, true, np, r, nr));
        CHECK(ds->pairs[0].chosen_len == 2 && !ds->pairs[0].truncated);
    }
    data_free(ds);
    free(line);
    /* Qwen3: its eos_token <|im_end|> inside a response is no end */
    line = pair_line(case_text("golden"), case_text("special_in_word"), case_text("one_letter"));
    ds = load_tok(line, qwen3_tok, 256, 128);
    CHECKF(ds && ds->n == 1, "%s", err);
    if (ds) {
        int32_t c[64], r[64];
        int nc = 0, nr = 0, np;
        case_ids("golden", "qwen3", c, &nc);
        np = nr = nc;
        memcpy(r, c, sizeof c);
        case_ids("special_in_word", "qwen3", c, &nc);
        c[nc++] = QWEN_IM_END;
        case_ids("one_letter", "qwen3", r, &nr);
        r[nr++] = QWEN_IM_END;
        CHECK(tok_pair_is(ds, 0, false, np, c, nc) && tok_pair_is(ds, 0, true, np, r, nr));
    }
    data_free(ds);
    free(line);
}

/* Implicit prompt: the shared start is the prompt, cut as TRL's
 * extract_prompt cuts the text; an empty prompt becomes [BOS], and with no
 * BOS (Qwen3) is a line error. */
static void tokenizer_implicit_prompt(void)
{
    char c_text[256], r_text[256];
    snprintf(c_text, sizeof c_text, "%s%s", case_text("golden"), case_text("one_letter"));
    snprintf(r_text, sizeof r_text, "%s%s", case_text("golden"), case_text("leading_spaces"));
    char *l1 = pair_line(NULL, c_text, r_text),
         *l2 = pair_line(NULL, "a", case_text("only_spaces"));
    char text[1024];
    snprintf(text, sizeof text, "%s\n%s\n", l1, l2);
    Dataset *ds = load_tok(text, gpt2_tok, 256, 128);
    CHECKF(ds && ds->n == 2, "%s", err);
    if (ds) {
        int32_t c[64], r[64];
        int nc = 0, nr = 0, np;
        case_ids("golden", "gpt2", c, &nc); /* "...GPT-2." then "a" / "   leading spaces" */
        np = nr = nc;
        memcpy(r, c, sizeof c);
        case_ids("one_letter", "gpt2", c, &nc);
        c[nc++] = GPT2_EOT;
        case_ids("leading_spaces", "gpt2", r, &nr);
        r[nr++] = GPT2_EOT;
        CHECK(tok_pair_is(ds, 0, false, np, c, nc) && tok_pair_is(ds, 0, true, np, r, nr));
        /* "a" vs "     ": no shared start, the prompt is [BOS] */
        nc = nr = 0;
        c[nc++] = r[nr++] = GPT2_EOT;
        case_ids("one_letter", "gpt2", c, &nc);
        c[nc++] = GPT2_EOT;
        case_ids("only_spaces", "gpt2", r, &nr);
        r[nr++] = GPT2_EOT;
        CHECK(tok_pair_is(ds, 1, false, 1, c, nc) && tok_pair_is(ds, 1, true, 1, r, nr));
    }
    data_free(ds);
    ds = load_tok(text, qwen3_tok, 256, 128);
    CHECK(!ds && strstr(err, "t.jsonl:2: the prompt is empty and the tokenizer has no BOS"));
    free(l1);
    free(l2);
}

#define CHAT_ROW                                                                                   \
    "{\"prompt\": [{\"role\": \"system\", \"content\": \"You are helpful.\"}, {\"role\": "         \
    "\"user\", \"content\": \"Hi there!\"}], \"chosen\": [{\"role\": \"assistant\", "              \
    "\"content\": \"Hello world, this is GPT-2.\"}], \"rejected\": [{\"role\": \"assistant\", "    \
    "\"content\": \"a\"}]}\n"

/* Conversational through Qwen3's ChatML: the rendered prompt is exactly the
 * "chat" case's text, each response "<content><|im_end|>\n", encoded with
 * the special tokens recognised, then EOS (the text ends in "\n"). Without
 * chat_format the tokenizer's own chat_template is read: Qwen3's, with its
 * <think> block, is refused by name. */
static void tokenizer_conversational_qwen3(void)
{
    DataOptions o = {.max_length = 256,
                     .max_prompt_length = 128,
                     .tokenizer = qwen3_tok,
                     .chat_format = "chatml"};
    Dataset *ds = load_text(CHAT_ROW, &o);
    CHECKF(ds && ds->n == 1, "%s", err);
    if (ds) {
        int32_t c[64], r[64];
        int nc = 0, nr = 0, np;
        case_ids("chat", "qwen3", c, &nc);
        np = nr = nc;
        memcpy(r, c, sizeof c);
        case_ids("golden", "qwen3", c, &nc);
        c[nc++] = QWEN_IM_END;
        c[nc++] = QWEN_NL;
        c[nc++] = QWEN_IM_END;
        case_ids("one_letter", "qwen3", r, &nr);
        r[nr++] = QWEN_IM_END;
        r[nr++] = QWEN_NL;
        r[nr++] = QWEN_IM_END;
        CHECK(np == 20);
        CHECK(tok_pair_is(ds, 0, false, np, c, nc) && tok_pair_is(ds, 0, true, np, r, nr));
    }
    data_free(ds);
    o.chat_format = NULL;
    ds = load_text(CHAT_ROW, &o);
    CHECK(!ds && strstr(err, "t.jsonl:1:") && strstr(err, "<think>") && strstr(err, "chat_format"));
    /* GPT-2 has no chat template at all */
    o.tokenizer = gpt2_tok;
    ds = load_text(CHAT_ROW, &o);
    CHECK(!ds && strstr(err, "t.jsonl:1: a conversational line needs a chat format"));
}

/* Truncation counts tokens: golden (10) + the longer response, golden +
 * EOS (11), exceed L = 12, so the prompt keeps its last P = 4 tokens; 4 +
 * 11 still exceeds 12, so each response keeps its first 8. */
static void tokenizer_truncation_in_tokens(void)
{
    char *line = pair_line(case_text("golden"), "a", case_text("golden"));
    Dataset *ds = load_tok(line, gpt2_tok, 12, 4);
    CHECKF(ds && ds->n == 1, "%s", err);
    if (ds) {
        int32_t g[16];
        int ng = 0;
        case_ids("golden", "gpt2", g, &ng);
        int32_t c[] = {g[6], g[7], g[8], g[9], 64, GPT2_EOT};
        int32_t r[] = {g[6], g[7], g[8], g[9], g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
        CHECK(ng == 10 && tok_pair_is(ds, 0, false, 4, c, 6) && tok_pair_is(ds, 0, true, 4, r, 12));
        CHECK(ds->pairs[0].truncated && ds->n_truncated == 1 && ds->max_seq_len == 12);
    }
    data_free(ds);
    free(line);
}

/* Padding holds the pad token (GPT-2: none, so its EOS; Qwen3: pad_token),
 * masked; an id beyond the model's vocabulary is a line error; a tokenizer
 * without an EOS is refused before any line. */
static void tokenizer_padding_and_errors(void)
{
    const char *text = "{\"prompt\": \"Hello\", \"chosen\": \" world\", \"rejected\": \"a\"}\n";
    const Tokenizer *toks[2] = {gpt2_tok, qwen3_tok};
    const int32_t pads[2] = {GPT2_EOT, QWEN_PAD};
    for (int k = 0; k < 2; k++) {
        Dataset *ds = load_tok(text, toks[k], 16, 8);
        CHECKF(ds, "%s", err);
        DataBatch *b = data_batch_new(1, 8);
        int64_t idx = 0;
        if (ds && b && data_batch_fill(ds, &idx, 1, b, err, sizeof err) == 0) {
            int n = b->seq_len[1]; /* rejected: "Hello" + "a" + EOS, 3 tokens */
            CHECK(n == 3 && ds->pad_id == pads[k]);
            for (int t = n; t < 8; t++)
                CHECK(b->ids[8 + t] == pads[k] && b->targets[8 + t] == -1 && b->mask[8 + t] == 0);
        }
        data_batch_free(b);
        data_free(ds);
    }
    /* a model that ends before Qwen3's <|im_end|> (151645), past its pad
     * (151643): the EOS every response gets is beyond it, a line error */
    DataOptions o = {
        .max_length = 16, .max_prompt_length = 8, .tokenizer = qwen3_tok, .vocab = QWEN_PAD + 1};
    Dataset *ds = load_text("\n{\"prompt\": \"a\", \"chosen\": \"a\", \"rejected\": \"a\"}\n", &o);
    CHECK(!ds && strstr(err, "t.jsonl:2: field \"chosen\": token id 151645 is outside the "
                             "model's vocabulary of 151644"));
    /* GPT-2 pads with its EOS, 50256: a model one short cannot embed it */
    o.tokenizer = gpt2_tok;
    o.vocab = GPT2_EOT;
    ds = load_text("{\"prompt\": \"a\", \"chosen\": \"a\", \"rejected\": \"a\"}\n", &o);
    CHECK(!ds && strstr(err, "pad token (id 50256) is outside the model's vocabulary of 50256"));
    /* Qwen3's tokenizer.json without its tokenizer_config.json: no eos_token */
    char json[700];
    snprintf(json, sizeof json, "%s/tokenizer.json", tokenizer_dir("qwen3"));
    TokenizerFiles f = {.tokenizer_json = json};
    Tokenizer *bare = tokenizer_load_files(&f, err, sizeof err);
    CHECKF(bare && tokenizer_eos_id(bare) < 0, "%s", err);
    if (bare) {
        ds = load_tok(text, bare, 16, 8);
        CHECK(!ds && strstr(err, "the tokenizer has no EOS token (tokenizer_config.json names "
                                 "no eos_token)"));
    }
    tokenizer_free(bare);
}

int main(void)
{
    RUN(tokenizer_is_bytewise);
    RUN(jsonl_good_file);
    RUN(jsonl_raw_utf8_is_bytes);
    RUN(jsonl_malformed_lines);
    RUN(jsonl_missing_file);
    RUN(jsonl_skip_invalid_counts);
    RUN(truncation_keeps_whole_pair_when_it_fits);
    RUN(truncation_cuts_prompt_from_the_left);
    RUN(truncation_then_cuts_responses_from_the_right);
    RUN(truncation_short_prompt_keeps_what_fits);
    RUN(truncation_options_checked);
    RUN(batch_layout_by_hand);
    RUN(order_is_a_permutation_per_epoch);
    RUN(order_is_deterministic_and_resumable);
    RUN(order_without_shuffle_is_file_order);
    RUN(next_batch_fills_from_order);
    RUN(split_is_disjoint_and_deterministic);
    RUN(toydata_follows_its_rules);
    RUN(toydata_same_seed_same_bytes);
    RUN(implicit_prompt_strings);
    RUN(formats_fixture);
    RUN(conversational_by_family);
    RUN(conversational_prompts);
    RUN(conversational_malformed_lines);
    load_tokenizers();
    RUN_TOK(tokenizer_standard_format);
    RUN_TOK(tokenizer_implicit_prompt);
    RUN_TOK(tokenizer_conversational_qwen3);
    RUN_TOK(tokenizer_truncation_in_tokens);
    RUN_TOK(tokenizer_padding_and_errors);
    tokenizer_free(gpt2_tok);
    tokenizer_free(qwen3_tok);
    json_decref(tok_cases);
    return tl_done();
}
