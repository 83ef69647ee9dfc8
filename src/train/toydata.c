/*
 * train/toydata.c — the generated default preference data (see toydata.h for the
 * four sequence rules and examples).
 *
 * Why these rules: each continuation is fixed by a rule a 2-layer model can
 * pick up in a few hundred steps (a successor bigram, a step read off the
 * previous symbols, a copy from a few positions back), and the rejected
 * response breaks it at exactly one place, so the preference is learnable and
 * held-out pairs can be judged by the rule, not by memory.
 */
#include "train/toydata.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"
#include "core/rng.h"

enum { TOY_UP, TOY_DOWN, TOY_STEP, TOY_REPEAT, TOY_KINDS };

static const char letters[] = "abcdefghijklmnopqrstuvwxyz";
static const char digits[] = "0123456789";

static int between(Rng *r, int lo, int hi)
{
    return lo + (int)rng_below(r, (uint32_t)(hi - lo + 1));
}

/* Writes the whole sequence (prompt then chosen) into seq; returns its alphabet. */
static const char *make_sequence(Rng *r, int kind, char *seq, int len)
{
    if (kind == TOY_STEP) {
        int s = between(r, 0, 9), k = between(r, 1, 3);
        for (int i = 0; i < len; i++)
            seq[i] = digits[(s + k * i) % 10];
        return digits;
    }
    if (kind == TOY_REPEAT) {
        int w = between(r, 2, 3);
        char word[3];
        for (int i = 0; i < w; i++)
            word[i] = letters[rng_below(r, 26)];
        for (int i = 0; i < len; i++)
            seq[i] = word[i % w];
        return letters;
    }
    int s = between(r, 0, 25), dir = kind == TOY_UP ? 1 : 25; /* +25 = -1 mod 26 */
    for (int i = 0; i < len; i++)
        seq[i] = letters[(s + dir * i) % 26];
    return letters;
}

static void make_pair(Rng *r, ToyPair *p)
{
    int kind = (int)rng_below(r, TOY_KINDS);
    int plen = between(r, 4, 6), clen = between(r, 3, 6);
    char seq[TOYDATA_MAX_TEXT];
    const char *alpha = make_sequence(r, kind, seq, plen + clen);
    memcpy(p->prompt, seq, (size_t)plen);
    p->prompt[plen] = '\0';
    memcpy(p->chosen, seq + plen, (size_t)clen);
    p->chosen[clen] = '\0';
    memcpy(p->rejected, p->chosen, (size_t)clen + 1);
    /* one symbol replaced by a different one of the same alphabet */
    int n = (int)strlen(alpha), at = (int)rng_below(r, (uint32_t)clen);
    int cur = (int)(strchr(alpha, p->chosen[at]) - alpha);
    p->rejected[at] = alpha[(cur + 1 + (int)rng_below(r, (uint32_t)(n - 1))) % n];
}

void toydata_generate(uint64_t seed, int n, ToyPair *out)
{
    Rng r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++)
        make_pair(&r, &out[i]);
}

char *toydata_jsonl(uint64_t seed, int n)
{
    ToyPair *pairs = malloc((size_t)(n > 0 ? n : 1) * sizeof *pairs);
    /* each line is under 100 bytes: three short strings of [a-z0-9] and the keys */
    size_t cap = (size_t)(n > 0 ? n : 0) * 100 + 1, len = 0;
    char *text = malloc(cap);
    if (!pairs || !text) {
        free(pairs);
        free(text);
        return NULL;
    }
    toydata_generate(seed, n, pairs);
    text[0] = '\0';
    for (int i = 0; i < n && text; i++) {
        json_t *obj = json_pack("{s:s, s:s, s:s}", "prompt", pairs[i].prompt, "chosen",
                                pairs[i].chosen, "rejected", pairs[i].rejected);
        char *line = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        size_t ll = line ? strlen(line) : 0;
        if (line && len + ll + 2 <= cap) {
            memcpy(text + len, line, ll);
            len += ll;
            text[len++] = '\n';
            text[len] = '\0';
        } else {
            free(text);
            text = NULL;
        }
        free(line);
        json_decref(obj);
    }
    free(pairs);
    return text;
}

int toydata_write_jsonl(const char *path, uint64_t seed, int n, char *err, size_t errlen)
{
    char *text = toydata_jsonl(seed, n);
    if (!text) {
        snprintf(err, errlen, "cannot write %s: out of memory", path);
        return -1;
    }
    int rc = fsutil_write_atomic(path, text, strlen(text), err, errlen);
    free(text);
    return rc;
}

Dataset *toydata_dataset(uint64_t seed, int n, const DataOptions *opt, char *err, size_t errlen)
{
    if (n < 1) {
        snprintf(err, errlen, "toy data of %d pairs, expected at least 1", n);
        return NULL;
    }
    char source[64];
    snprintf(source, sizeof source, "toy data (seed %llu, %d pairs)", (unsigned long long)seed, n);
    Dataset *ds = data_new(opt, source, err, errlen);
    ToyPair *pairs = malloc((size_t)n * sizeof *pairs);
    if (!ds || !pairs) {
        if (ds)
            snprintf(err, errlen, "%s: out of memory", source);
        data_free(ds);
        free(pairs);
        return NULL;
    }
    toydata_generate(seed, n, pairs);
    for (int i = 0; i < n; i++) {
        const ToyPair *p = &pairs[i];
        char where[96];
        snprintf(where, sizeof where, "%s, pair %d", source, i + 1);
        if (data_add_pair(ds, p->prompt, strlen(p->prompt), p->chosen, strlen(p->chosen),
                          p->rejected, strlen(p->rejected), 0, where, err, errlen)) {
            data_free(ds);
            ds = NULL;
            break;
        }
    }
    free(pairs);
    return ds;
}
