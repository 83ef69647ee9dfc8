/*
 * tokenizer/strmap.c — a map from byte strings to int32 (TokStrMap): the
 * vocabulary's strings and the added tokens' contents. Open addressing with
 * linear probing at a load of at most 1/2; keys are copied into one buffer,
 * so a map of 150k tokens is three allocations.
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

struct TokStrEntry {
    size_t off;
    uint32_t len;
    uint32_t hash;
    int32_t val;
};

/* FNV-1a: short keys, no adversary that profits from collisions here beyond
 * a slower load. */
static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static int rehash(TokStrMap *m, size_t cap)
{
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < m->n; i++) {
        size_t j = m->entries[i].hash & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = (uint32_t)i + 1;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

int tok_strmap_reserve(TokStrMap *m, size_t n)
{
    if (n > TOK_MAX_IDS * (size_t)2)
        return -1;
    if (n > m->entries_cap) {
        struct TokStrEntry *e = realloc(m->entries, n * sizeof *e);
        if (!e)
            return -1;
        m->entries = e;
        m->entries_cap = n;
    }
    size_t cap = m->cap ? m->cap : 16;
    while (cap < 2 * n)
        cap *= 2;
    return cap == m->cap ? 0 : rehash(m, cap);
}

static size_t find_slot(const TokStrMap *m, const char *key, size_t len, uint32_t h)
{
    size_t j = h & (m->cap - 1);
    while (m->slots[j]) {
        const struct TokStrEntry *e = &m->entries[m->slots[j] - 1];
        if (e->hash == h && e->len == len && !memcmp(m->keys.v + e->off, key, len))
            return j;
        j = (j + 1) & (m->cap - 1);
    }
    return j;
}

int tok_strmap_put(TokStrMap *m, const char *key, size_t len, int32_t val, int32_t *old)
{
    if (len > UINT32_MAX)
        return -1;
    if (m->n == m->entries_cap && tok_strmap_reserve(m, m->n ? 2 * m->n : 16))
        return -1;
    uint32_t h = hash_bytes(key, len);
    size_t j = find_slot(m, key, len, h);
    if (m->slots[j]) {
        if (old)
            *old = m->entries[m->slots[j] - 1].val;
        return 1;
    }
    size_t off = m->keys.n;
    if (tok_buf_append(&m->keys, key, len))
        return -1;
    m->entries[m->n] =
        (struct TokStrEntry){.off = off, .len = (uint32_t)len, .hash = h, .val = val};
    m->slots[j] = (uint32_t)++m->n;
    return 0;
}

int32_t tok_strmap_get(const TokStrMap *m, const char *key, size_t len)
{
    if (!m->cap)
        return -1;
    size_t j = find_slot(m, key, len, hash_bytes(key, len));
    return m->slots[j] ? m->entries[m->slots[j] - 1].val : -1;
}

void tok_strmap_free(TokStrMap *m)
{
    free(m->entries);
    free(m->slots);
    free(m->keys.v);
    memset(m, 0, sizeof *m);
}
