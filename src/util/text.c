/*
 * util/text.c — untrusted text for JSON, terminals and YAML (text.h).
 */
#include "util/text.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* Bytes of the valid character at s (n > 0 bytes left), or 0 where s holds
 * no valid character (a bad byte or a NUL). */
static size_t char_len(const char *s, size_t n, int32_t *cp)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &c);
    if (k <= 0 || c == 0)
        return 0;
    *cp = c;
    return (size_t)k;
}

bool text_utf8_valid(const char *s, size_t n)
{
    int32_t cp;
    for (size_t i = 0; i < n;) {
        size_t k = char_len(s + i, n - i, &cp);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

char *text_utf8_clean(const char *s, size_t n)
{
    if (n > (SIZE_MAX - 1) / 3)
        return NULL;
    char *out = malloc(3 * n + 1); /* a bad byte (1) becomes U+FFFD (3) */
    if (!out)
        return NULL;
    size_t o = 0;
    int32_t cp;
    for (size_t i = 0; i < n;) {
        size_t k = char_len(s + i, n - i, &cp);
        if (k == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        }
    }
    out[o] = 0;
    return out;
}

/* The escape for one character, or 0 bytes when it is shown as it is. */
static int escape_of(int32_t cp, size_t k, unsigned char first, char esc[12])
{
    if (k == 0)
        return snprintf(esc, 12, "\\x%02x", first);
    if (cp == '\n')
        return snprintf(esc, 12, "\\n");
    if (cp == '\r')
        return snprintf(esc, 12, "\\r");
    if (cp == '\t')
        return snprintf(esc, 12, "\\t");
    if (cp < 0x20 || cp == 0x7f)
        return snprintf(esc, 12, "\\x%02x", (unsigned)cp);
    if (cp >= 0x80 && cp < 0xa0)
        return snprintf(esc, 12, "\\u%04x", (unsigned)cp);
    /* bidirectional overrides and isolates reorder what follows on the line */
    if ((cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069))
        return snprintf(esc, 12, "\\u%04x", (unsigned)cp);
    return 0;
}

/* Writes the escaped s into out while it fits in room bytes (no NUL);
 * returns the bytes written and sets *whole when all of s went in. */
static size_t put_escaped(const char *s, char *out, size_t room, bool *whole)
{
    size_t n = strlen(s), o = 0, i = 0;
    int32_t cp = 0;
    while (i < n) {
        size_t k = char_len(s + i, n - i, &cp);
        char esc[12];
        int e = escape_of(cp, k, (unsigned char)s[i], esc);
        size_t plen = e ? (size_t)e : k;
        if (o + plen > room)
            break;
        memcpy(out + o, e ? esc : s + i, plen);
        o += plen;
        i += k ? k : 1;
    }
    *whole = i == n;
    return o;
}

const char *text_for_terminal(const char *s, char *out, size_t outlen)
{
    if (outlen < 8) {
        if (outlen)
            out[0] = 0;
        return out;
    }
    bool whole;
    size_t o = put_escaped(s ? s : "(null)", out, outlen - 1, &whole);
    if (!whole) { /* again, leaving room for the dots */
        o = put_escaped(s, out, outlen - 4, &whole);
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = 0;
    return out;
}

size_t text_yaml_char(const char *s, size_t n, char out[8])
{
    int32_t cp = 0;
    size_t k = char_len(s, n, &cp);
    if (k == 0) /* not a character: the byte's code point, so the file still loads */
        snprintf(out, 8, "\\x%02x", (unsigned char)s[0]);
    else if (cp == '"' || cp == '\\')
        snprintf(out, 8, "\\%c", (char)cp);
    else if (cp < 0x20 || (cp >= 0x7f && cp < 0xa0)) /* libyaml refuses them raw */
        snprintf(out, 8, "\\x%02x", (unsigned char)cp);
    else if (cp == 0x2028 || cp == 0x2029) /* line breaks: folded to a space raw */
        snprintf(out, 8, "\\%c", cp == 0x2028 ? 'L' : 'P');
    else if (cp == 0xfeff || cp == 0xfffe || cp == 0xffff)
        snprintf(out, 8, "\\u%04x", (unsigned short)cp);
    else {
        memcpy(out, s, k);
        out[k] = 0;
    }
    return k ? k : 1;
}
