/*
 * tokenizer/chat_template.c — the chat-template families of chat_template.h
 * rendered in C, and their recognition from a template's Jinja text.
 *
 * Each family is one row of FAMILIES: its name, its roles and a render
 * function that appends to a growable buffer; a _Static_assert keeps the
 * table as long as the enum. Roles are checked against the row before a
 * render runs, so a render function sees only its own roles. Nothing here
 * is global and mutable.
 */
#include "tokenizer/chat_template.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/errmsg.h"

/* ---- output buffer: appends, remembers running out of memory ---- */

typedef struct Buf {
    char *p;
    size_t len, cap;
    bool oom;
} Buf;

static void put(Buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void put_str(Buf *b, const char *s) { put(b, s ? s : "", s ? strlen(s) : 0); }

static void put_content(Buf *b, const ChatMessage *m)
{
    put(b, m->content ? m->content : "", m->content ? m->content_len : 0);
}

/* ---- Jinja's trim: Python's str.strip() ---- */

/* Python's str.isspace(): bidirectional class WS, B or S, or category Zs */
static bool py_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

/* The code point at s (n > 0 bytes left) and its length in *k; a byte that
 * starts no valid UTF-8 character reads as one non-space character. */
static uint32_t utf8_at(const unsigned char *s, size_t n, size_t *k)
{
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000}; /* no overlong forms */
    unsigned c = s[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    *k = 1;
    if (len == 0 || len > n)
        return UINT32_MAX;
    uint32_t cp = len == 1 ? c : c & (0x7Fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return UINT32_MAX;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < least[len])
        return UINT32_MAX;
    *k = len;
    return cp;
}

/* s[*a, *z) is s[0, n) without whitespace at either end; all whitespace
 * gives *a = *z = n. */
static void py_strip(const char *s, size_t n, size_t *a, size_t *z)
{
    *a = *z = n;
    size_t end = 0;
    for (size_t i = 0, k; i < n; i += k) {
        if (py_space(utf8_at((const unsigned char *)s + i, n - i, &k)))
            continue;
        if (*a == n)
            *a = i;
        end = i + k;
    }
    if (*a < n)
        *z = end;
}

static void put_trimmed(Buf *b, const ChatMessage *m)
{
    size_t a, z;
    const char *s = m->content ? m->content : "";
    py_strip(s, m->content ? m->content_len : 0, &a, &z);
    put(b, s + a, z - a);
}

static bool is_role(const ChatMessage *m, const char *role) { return strcmp(m->role, role) == 0; }

/* ---- the families ---- */

typedef int (*RenderFn)(const ChatTemplate *t, const ChatMessage *m, int n, bool gen, Buf *b,
                        char *err, size_t errlen);

/* <|im_start|>role\ncontent<|im_end|>\n per message */
static int render_chatml(const ChatTemplate *t, const ChatMessage *m, int n, bool gen, Buf *b,
                         char *err, size_t errlen)
{
    (void)err, (void)errlen;
    if (n > 0 && t->default_system && !is_role(&m[0], "system")) {
        put_str(b, "<|im_start|>system\n");
        put_str(b, t->default_system);
        put_str(b, "<|im_end|>\n");
    }
    for (int i = 0; i < n; i++) {
        put_str(b, "<|im_start|>");
        put_str(b, m[i].role);
        put_str(b, "\n");
        put_content(b, &m[i]);
        put_str(b, "<|im_end|>\n");
    }
    if (gen)
        put_str(b, "<|im_start|>assistant\n");
    return 0;
}

/* bos, then <|start_header_id|>role<|end_header_id|>\n\ntrim(content)<|eot_id|> */
static int render_llama3(const ChatTemplate *t, const ChatMessage *m, int n, bool gen, Buf *b,
                         char *err, size_t errlen)
{
    (void)err, (void)errlen;
    for (int i = 0; i < n; i++) {
        if (i == 0) /* the template adds bos with the first message only */
            put_str(b, t->bos);
        put_str(b, "<|start_header_id|>");
        put_str(b, m[i].role);
        put_str(b, "<|end_header_id|>\n\n");
        put_trimmed(b, &m[i]);
        put_str(b, "<|eot_id|>");
    }
    if (gen)
        put_str(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

/* <|role|>\ncontent eos\n per message (the \n is the template's own line
 * break, kept by trim_blocks) */
static int render_zephyr(const ChatTemplate *t, const ChatMessage *m, int n, bool gen, Buf *b,
                         char *err, size_t errlen)
{
    (void)err, (void)errlen;
    for (int i = 0; i < n; i++) {
        put_str(b, "<|");
        put_str(b, m[i].role);
        put_str(b, "|>\n");
        put_content(b, &m[i]);
        put_str(b, t->eos);
        put_str(b, "\n");
    }
    if (gen && n > 0) /* the template adds it inside its loop, at loop.last */
        put_str(b, "<|assistant|>\n");
    return 0;
}

/* bos, then " [INST] " [system "\n\n"] user " [/INST]" and " " assistant eos */
static int render_mistral(const ChatTemplate *t, const ChatMessage *m, int n, bool gen, Buf *b,
                          char *err, size_t errlen)
{
    (void)gen; /* " [/INST]" is the generation prompt already */
    int first = n > 0 && is_role(&m[0], "system") ? 1 : 0;
    put_str(b, t->bos);
    for (int i = first; i < n; i++) {
        int turn = i - first;
        if (is_role(&m[i], "system"))
            return err_fail(err, errlen,
                            "message %d is a system message, which the mistral chat format takes "
                            "only as the first message",
                            i + 1);
        if (is_role(&m[i], "user") != (turn % 2 == 0))
            return err_fail(
                err, errlen,
                "message %d has role \"%s\", expected \"%s\" (after the optional system "
                "message, the mistral chat format's turns alternate user/assistant)",
                i + 1, m[i].role, turn % 2 == 0 ? "user" : "assistant");
        if (turn % 2 == 0) {
            put_str(b, " [INST] ");
            if (turn == 0 && first) { /* the system text opens the first user turn */
                put_content(b, &m[0]);
                put_str(b, "\n\n");
            }
            put_content(b, &m[i]);
            put_str(b, " [/INST]");
        } else {
            put_str(b, " ");
            put_content(b, &m[i]);
            put_str(b, t->eos);
        }
    }
    return 0;
}

/* bos, then <start_of_turn>user|model\ntrim(content)<end_of_turn>\n */
static int render_gemma(const ChatTemplate *t, const ChatMessage *m, int n, bool gen, Buf *b,
                        char *err, size_t errlen)
{
    put_str(b, t->bos);
    for (int i = 0; i < n; i++) {
        bool user = is_role(&m[i], "user");
        if (user != (i % 2 == 0))
            return err_fail(err, errlen,
                            "message %d has role \"%s\", expected \"%s\" (the gemma chat format's "
                            "turns alternate user/assistant, starting with user)",
                            i + 1, m[i].role, i % 2 == 0 ? "user" : "assistant");
        put_str(b, "<start_of_turn>");
        put_str(b, user ? "user" : "model");
        put_str(b, "\n");
        put_trimmed(b, &m[i]);
        put_str(b, "<end_of_turn>\n");
    }
    if (gen)
        put_str(b, "<start_of_turn>model\n");
    return 0;
}

typedef struct Family {
    const char *name;
    const char *roles[4];    /* NULL-terminated */
    const char *role_list;   /* the same, for messages */
    const char *system_note; /* why there is no system role, NULL where there is one */
    RenderFn render;
} Family;

static const Family FAMILIES[] = {
    [CHAT_FORMAT_CHATML] =
        {"chatml", {"system", "user", "assistant"}, "system, user, assistant", NULL, render_chatml},
    [CHAT_FORMAT_LLAMA3] =
        {"llama3", {"system", "user", "assistant"}, "system, user, assistant", NULL, render_llama3},
    [CHAT_FORMAT_ZEPHYR] =
        {"zephyr", {"system", "user", "assistant"}, "system, user, assistant", NULL, render_zephyr},
    [CHAT_FORMAT_MISTRAL] = {"mistral",
                             {"system", "user", "assistant"},
                             "system (first only), user, assistant",
                             NULL,
                             render_mistral},
    [CHAT_FORMAT_GEMMA] = {"gemma",
                           {"user", "assistant"},
                           "user, assistant",
                           "Gemma 1 and 2's template raises \"System role not supported\", Gemma "
                           "3's merges it into the first user turn; put the system text there",
                           render_gemma},
};
_Static_assert(sizeof FAMILIES / sizeof FAMILIES[0] == CHAT_FORMAT_COUNT,
               "one FAMILIES row per ChatFormat");

const char *chat_format_name(ChatFormat f)
{
    return (unsigned)f < CHAT_FORMAT_COUNT ? FAMILIES[f].name : "(unknown)";
}

int chat_format_parse(const char *name, ChatFormat *out, char *err, size_t errlen)
{
    for (int f = 0; f < CHAT_FORMAT_COUNT; f++) {
        if (name && strcmp(name, FAMILIES[f].name) == 0) {
            *out = (ChatFormat)f;
            return 0;
        }
    }
    return err_fail(err, errlen, "chat_format is \"%s\", expected one of " CHAT_FORMAT_NAMES,
                    name ? name : "(null)");
}

static int check_roles(const Family *f, const ChatMessage *m, int n, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        if (!m[i].role)
            return err_fail(err, errlen, "message %d has no role", i + 1);
        bool known = false;
        for (const char *const *r = f->roles; *r && !known; r++)
            known = strcmp(m[i].role, *r) == 0;
        if (known)
            continue;
        if (f->system_note && strcmp(m[i].role, "system") == 0)
            return err_fail(err, errlen,
                            "message %d has role \"system\", which the %s chat format "
                            "does not have (%s)",
                            i + 1, f->name, f->system_note);
        return err_fail(err, errlen,
                        "message %d has role \"%s\", which the %s chat format does not have "
                        "(expected %s)",
                        i + 1, m[i].role, f->name, f->role_list);
    }
    return 0;
}

int chat_render(const ChatTemplate *t, const ChatMessage *msgs, int n, bool add_generation_prompt,
                char **out, size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    if ((unsigned)t->format >= CHAT_FORMAT_COUNT)
        return err_fail(err, errlen, "chat format %d, expected one of " CHAT_FORMAT_NAMES,
                        (int)t->format);
    if (n < 0 || (n > 0 && !msgs))
        return err_fail(err, errlen, "a conversation of %d messages, expected n >= 0", n);
    const Family *f = &FAMILIES[t->format];
    if (check_roles(f, msgs, n, err, errlen))
        return -1;
    Buf b = {0};
    put(&b, "", 0); /* an empty render is "" too, never NULL */
    if (f->render(t, msgs, n, add_generation_prompt, &b, err, errlen)) {
        free(b.p);
        return -1;
    }
    if (b.oom) {
        free(b.p);
        return err_fail(err, errlen, "out of memory rendering a conversation (%s chat format)",
                        f->name);
    }
    *out = b.p;
    *out_len = b.len;
    return 0;
}

/* Start of the last occurrence of needle[0, m) in s[0, n); n for m = 0,
 * as Python's rindex. */
static bool last_index(const char *s, size_t n, const char *needle, size_t m, size_t *at)
{
    if (m > n)
        return false;
    for (size_t i = n - m + 1; i-- > 0;) {
        if (memcmp(s + i, needle, m) == 0) {
            *at = i;
            return true;
        }
    }
    return false;
}

int chat_render_continue(const ChatTemplate *t, const ChatMessage *msgs, int n, char **out,
                         size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    if (n < 1)
        return err_fail(err, errlen, "continuing the final message needs at least one message");
    char *r;
    size_t rlen;
    if (chat_render(t, msgs, n, false, &r, &rlen, err, errlen))
        return -1;
    const ChatMessage *last = &msgs[n - 1];
    const char *c = last->content ? last->content : "";
    size_t clen = last->content ? last->content_len : 0, a, z, at;
    py_strip(c, clen, &a, &z);
    if (!last_index(r, rlen, c + a, z - a, &at)) {
        free(r);
        return err_fail(err, errlen,
                        "message %d cannot be continued: the %s chat format does not keep its "
                        "content in the rendered text",
                        n, chat_format_name(t->format));
    }
    /* verbatim with no leading space: keep its trailing space; else strip(content) */
    bool verbatim = a == 0 && at + clen <= rlen && memcmp(r + at, c, clen) == 0;
    size_t keep = at + (verbatim ? clen : z - a);
    r[keep] = '\0';
    *out = r;
    *out_len = keep;
    return 0;
}

/* ---- recognising a family from the template's Jinja text ---- */

static bool has(const char *s, const char *marker) { return strstr(s, marker) != NULL; }

static int count(const char *s, const char *marker)
{
    int k = 0;
    for (const char *p = strstr(s, marker); p; p = strstr(p + 1, marker))
        k++;
    return k;
}

/* In a Jinja string literal opened by quote q at s: where `end` starts, or
 * NULL when the literal closes (or the text ends) first. */
static const char *literal_until(const char *s, char q, const char *end)
{
    size_t n = strlen(end);
    for (; *s; s++) {
        if (strncmp(s, end, n) == 0)
            return s;
        if (*s == q)
            return NULL;
        if (*s == '\\' && s[1])
            s++;
    }
    return NULL;
}

/* s[0, n) of a Jinja string literal with its escapes \n \t \r \\ \' \"
 * decoded (any other backslash is kept as it is); malloc'ed. */
static char *unescape(const char *s, size_t n)
{
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        char c = s[i], e = i + 1 < n ? s[i + 1] : 0;
        const char *from = "ntr\\'\"", *to = "\n\t\r\\'\"", *hit = e ? strchr(from, e) : NULL;
        if (c == '\\' && hit) {
            *o++ = to[hit - from];
            i++;
        } else {
            *o++ = c;
        }
    }
    *o = '\0';
    return out;
}

/* A ChatML template's default system message: the text of a string literal
 * '<|im_start|>system\n...<|im_end|>' (the newline written as an escape or
 * as itself). Qwen2.5's and SmolLM2's write one for conversations without a
 * system message; a literal that ends right after "system\n" is the opening
 * of a rendered system message, not a default. 0 with *out NULL if none. */
static int chatml_default_system(const char *j, char **out)
{
    static const char open[] = "<|im_start|>system";
    *out = NULL;
    for (const char *p = strstr(j, open); p; p = strstr(p + 1, open)) {
        if (p == j || (p[-1] != '\'' && p[-1] != '"'))
            continue;
        const char *s = p + strlen(open);
        if (s[0] == '\n')
            s += 1;
        else if (s[0] == '\\' && s[1] == 'n')
            s += 2;
        else
            continue;
        const char *e = literal_until(s, p[-1], "<|im_end|>");
        if (!e || e == s)
            continue;
        *out = unescape(s, (size_t)(e - s));
        return *out ? 0 : -1;
    }
    return 0;
}

/* The family whose markers j has, or -1; *why names a variant of that
 * family which renders otherwise (then the family is not used). */
static int detect_family(const char *j, const char **why)
{
    *why = NULL;
    if (has(j, "<|im_start|>")) {
        if (has(j, "<think>"))
            *why = "a ChatML template with a <think> reasoning block (Qwen3, SmolLM3, QwQ)";
        else if (has(j, "bos_token") || has(j, "eos_token"))
            *why = "a ChatML template that adds bos_token or eos_token";
        return CHAT_FORMAT_CHATML;
    }
    if (has(j, "<|start_header_id|>")) {
        if (has(j, "Cutting Knowledge Date"))
            *why = "a Llama 3.1/3.2/3.3 template (a system turn with \"Cutting Knowledge Date\" "
                   "and today's date)";
        return CHAT_FORMAT_LLAMA3;
    }
    if (has(j, "<start_of_turn>"))
        return CHAT_FORMAT_GEMMA;
    if (has(j, "[INST]")) {
        if (has(j, "<<SYS>>"))
            *why = "a Llama 2 template ([INST] with <<SYS>>)";
        else if (!has(j, " [INST] "))
            *why = "a Mistral template without the space before [INST] (the 2023 original of "
                   "v0.1, or v0.3 and later)";
        return CHAT_FORMAT_MISTRAL;
    }
    if (has(j, "<|user|>") && has(j, "<|assistant|>")) {
        /* zephyr closes all three roles' turns with eos; Tulu only the assistant's */
        if (has(j, "<|end|>") || (count(j, "eos_token") < 3 && count(j, "</s>") < 3))
            *why = "a <|user|>/<|assistant|> template whose turns do not all end with eos_token "
                   "(as Tulu's, Phi-3's, GLM-4's)";
        return CHAT_FORMAT_ZEPHYR;
    }
    return -1;
}

int chat_format_detect(const char *jinja, ChatFormat *out, char **default_system, char *err,
                       size_t errlen)
{
    if (default_system)
        *default_system = NULL;
    if (!jinja || !*jinja)
        return err_fail(err, errlen,
                        "the model's tokenizer_config.json has no chat_template: set chat_format "
                        "to one of " CHAT_FORMAT_NAMES " to render conversations");
    const char *why;
    int f = detect_family(jinja, &why);
    if (f < 0)
        return err_fail(
            err, errlen,
            "unrecognised chat template (none of the markers <|im_start|> of chatml, "
            "<|start_header_id|> of llama3, <|user|> + eos_token of zephyr, [INST] of "
            "mistral, <start_of_turn> of gemma): set chat_format to one of " CHAT_FORMAT_NAMES
            " to choose the format explicitly");
    if (why)
        return err_fail(err, errlen,
                        "chat template not recognised: %s renders differently from the %s chat "
                        "format; set chat_format to one of " CHAT_FORMAT_NAMES
                        " to choose a format explicitly",
                        why, FAMILIES[f].name);
    if (f == CHAT_FORMAT_CHATML && default_system && chatml_default_system(jinja, default_system))
        return err_fail(err, errlen, "out of memory reading the chat template");
    *out = (ChatFormat)f;
    return 0;
}
