/*
 * tokenizer/bpe.c — byte-pair encoding: the table of merges and the merge
 * loop of one pre-token.
 *
 * A merge (left id, right id) has a rank (its line in the merges list) and
 * the id of the token it makes. A piece starts as one symbol per byte and
 * repeatedly merges the adjacent pair of lowest rank, the leftmost among
 * equals, until no adjacent pair is a merge: Hugging Face's Word::merge_all,
 * a binary heap of candidate merges (rank, position) with stale entries
 * skipped when popped, O(n log n) in the piece's length. An entry is stale
 * when its left symbol was merged away or the pair at its position no longer
 * makes the same token (HF's test, which this copies so that odd files with
 * two merges making one token behave alike).
 */
#include "tokenizer/tokenizer_internal.h"

#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"
#include "util/text.h"

#define EMPTY_KEY UINT64_MAX

struct TokMergeSlot {
    uint64_t key; /* left << 32 | right */
    uint32_t rank;
    int32_t new_id;
};

struct TokSymbol {
    int32_t id;
    int32_t prev, next; /* neighbours in the piece, -1 at its ends */
    bool dead;          /* merged into its left neighbour */
};

struct TokMerge {
    uint32_t rank, pos;
    int32_t new_id;
};

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static size_t slot_of(const TokMerges *m, uint64_t key)
{
    size_t j = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & (m->cap - 1);
    while (m->slots[j].key != EMPTY_KEY && m->slots[j].key != key)
        j = (j + 1) & (m->cap - 1);
    return j;
}

static int rehash(TokMerges *m, size_t cap)
{
    struct TokMergeSlot *old = m->slots;
    size_t old_cap = m->cap;
    m->slots = malloc(cap * sizeof *m->slots);
    if (!m->slots) {
        m->slots = old;
        return -1;
    }
    for (size_t i = 0; i < cap; i++)
        m->slots[i].key = EMPTY_KEY;
    m->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].key != EMPTY_KEY)
            m->slots[slot_of(m, old[i].key)] = old[i];
    free(old);
    return 0;
}

int tok_merges_reserve(TokMerges *m, size_t n)
{
    if (n > TOK_MAX_MERGES)
        return -1;
    size_t cap = m->cap ? m->cap : 64;
    while (cap < 2 * n)
        cap *= 2;
    return cap == m->cap ? 0 : rehash(m, cap);
}

static const struct TokMergeSlot *merge_get(const TokMerges *m, int32_t a, int32_t b)
{
    if (!m->cap)
        return NULL;
    const struct TokMergeSlot *s = &m->slots[slot_of(m, pair_key(a, b))];
    return s->key == EMPTY_KEY ? NULL : s;
}

static int not_in_vocab(char *err, size_t errlen, const char *what, const char *s, size_t n)
{
    char tmp[128], shown[160];
    size_t k = n < sizeof tmp - 1 ? n : sizeof tmp - 1;
    memcpy(tmp, s, k);
    tmp[k] = '\0';
    return err_fail(err, errlen, "%s \"%s\" is not in the vocabulary", what,
                    text_for_terminal(tmp, shown, sizeof shown));
}

int tok_merges_add(TokMerges *m, const TokVocab *v, const char *a, size_t alen, const char *b,
                   size_t blen, uint32_t rank, char *err, size_t errlen)
{
    int32_t ia = tok_strmap_get(&v->model, a, alen), ib = tok_strmap_get(&v->model, b, blen);
    if (ia < 0)
        return not_in_vocab(err, errlen, "the left part", a, alen);
    if (ib < 0)
        return not_in_vocab(err, errlen, "the right part", b, blen);
    TokBuf ab = {0};
    if (tok_buf_append(&ab, a, alen) || tok_buf_append(&ab, b, blen)) {
        free(ab.v);
        return err_fail(err, errlen, "out of memory");
    }
    int32_t ic = tok_strmap_get(&v->model, ab.v, ab.n);
    if (ic < 0) {
        int rc = not_in_vocab(err, errlen, "the merged token", ab.v, ab.n);
        free(ab.v);
        return rc;
    }
    free(ab.v);
    if (m->n + 1 > m->cap / 2 && tok_merges_reserve(m, m->n ? 2 * m->n : 64))
        return err_fail(err, errlen, "out of memory (or more than %d merges)", TOK_MAX_MERGES);
    uint64_t key = pair_key(ia, ib);
    struct TokMergeSlot *s = &m->slots[slot_of(m, key)];
    if (s->key == EMPTY_KEY)
        m->n++;
    *s = (struct TokMergeSlot){.key = key, .rank = rank, .new_id = ic};
    return 0;
}

void tok_merges_free(TokMerges *m)
{
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* ---- the heap of candidate merges: lowest rank first, then leftmost ---- */

static bool before(const struct TokMerge *x, const struct TokMerge *y)
{
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void heap_push(struct TokMerge *h, size_t *n, struct TokMerge e)
{
    size_t i = (*n)++;
    while (i > 0 && before(&e, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = e;
}

static struct TokMerge heap_pop(struct TokMerge *h, size_t *n)
{
    struct TokMerge top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && before(&h[c + 1], &h[c]))
            c++;
        if (!before(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

/* Pushes the merge of the pair starting at symbol `pos`, if there is one. */
static void candidate(const TokMerges *m, const struct TokSymbol *sym, int32_t pos,
                      struct TokMerge *heap, size_t *n)
{
    if (pos < 0 || sym[pos].next < 0)
        return;
    int32_t next = sym[pos].next;
    const struct TokMergeSlot *s = merge_get(m, sym[pos].id, sym[next].id);
    if (s)
        heap_push(heap, n,
                  (struct TokMerge){.rank = s->rank, .pos = (uint32_t)pos, .new_id = s->new_id});
}

static int scratch_fit(TokBpeScratch *s, size_t len)
{
    if (len > s->sym_cap) {
        free(s->sym);
        free(s->heap);
        s->sym_cap = s->heap_cap = 0;
        /* every merge pushes at most two candidates: 3 len bounds the heap */
        if (len > SIZE_MAX / 3 / sizeof *s->heap)
            return -1;
        s->sym = malloc(len * sizeof *s->sym);
        s->heap = malloc(3 * len * sizeof *s->heap);
        if (!s->sym || !s->heap)
            return -1;
        s->sym_cap = len;
        s->heap_cap = 3 * len;
    }
    return 0;
}

/* The merge loop proper, on sym[0..len). */
static void merge_all(const TokMerges *m, struct TokSymbol *sym, size_t len, struct TokMerge *heap)
{
    size_t n = 0;
    for (size_t i = 0; i + 1 < len; i++)
        candidate(m, sym, (int32_t)i, heap, &n);
    while (n) {
        struct TokMerge top = heap_pop(heap, &n);
        struct TokSymbol *left = &sym[top.pos];
        if (left->dead || left->next < 0)
            continue;
        const struct TokMergeSlot *s = merge_get(m, left->id, sym[left->next].id);
        if (!s || s->new_id != top.new_id)
            continue; /* stale: the pair here changed since it was pushed */
        struct TokSymbol *right = &sym[left->next];
        left->id = top.new_id;
        right->dead = true;
        left->next = right->next;
        if (right->next >= 0)
            sym[right->next].prev = (int32_t)top.pos;
        candidate(m, sym, left->prev, heap, &n);
        candidate(m, sym, (int32_t)top.pos, heap, &n);
    }
}

int tok_bpe_encode(const TokVocab *v, const TokMerges *m, bool ignore_merges, const char *piece,
                   size_t len, TokBpeScratch *s, TokIds *out)
{
    if (len == 0)
        return 0;
    if (len > INT32_MAX)
        return -1;       /* symbol positions are int32 */
    if (ignore_merges) { /* a piece that is a token is taken whole (HF's ignore_merges) */
        s->spell.n = 0;
        if (tok_bytelevel_spell(piece, len, &s->spell))
            return -1;
        int32_t id = tok_strmap_get(&v->model, s->spell.v, s->spell.n);
        if (id >= 0)
            return tok_ids_push(out, id);
    }
    if (scratch_fit(s, len))
        return -1;
    for (size_t i = 0; i < len; i++) {
        int32_t id = v->byte_id[(uint8_t)piece[i]];
        if (id < 0)
            return -1; /* only bytes that no valid UTF-8 holds lack a token */
        s->sym[i] = (struct TokSymbol){
            .id = id, .prev = (int32_t)i - 1, .next = i + 1 < len ? (int32_t)i + 1 : -1};
    }
    merge_all(m, s->sym, len, s->heap);
    for (int32_t i = 0; i >= 0; i = s->sym[i].next)
        if (tok_ids_push(out, s->sym[i].id))
            return -1;
    return 0;
}

void tok_bpe_scratch_free(TokBpeScratch *s)
{
    free(s->sym);
    free(s->heap);
    free(s->spell.v);
    memset(s, 0, sizeof *s);
}
