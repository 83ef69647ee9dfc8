/*
 * tokenizer/bytelevel.c — GPT-2's byte-level alphabet (bytes_to_unicode in
 * openai/gpt-2's encoder.py, ByteLevel in Hugging Face's tokenizers): each
 * of the 256 bytes is spelled by one printable character, so a vocabulary of
 * strings can hold any byte sequence. Bytes that print (33..126, 161..172,
 * 174..255) stand for themselves; the other 68, in increasing order, take
 * U+0100 onwards: 0..32 -> U+0100..U+0120, 127..160 -> U+0121..U+0142,
 * 173 -> U+0143.
 */
#include "tokenizer/tokenizer_internal.h"

#include <string.h>
#include <utf8proc.h>

uint32_t tok_bytelevel_char(uint8_t b)
{
    if (b <= 32)
        return 256u + b;
    if (b >= 127 && b <= 160)
        return 256u + 33 + (b - 127u);
    if (b == 173)
        return 256u + 67;
    return b;
}

int tok_bytelevel_byte(uint32_t cp)
{
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 255 && cp != 173))
        return (int)cp;
    if (cp >= 256 && cp <= 256 + 32)
        return (int)(cp - 256);
    if (cp >= 256 + 33 && cp <= 256 + 66)
        return (int)(cp - 256 - 33 + 127);
    if (cp == 256 + 67)
        return 173;
    return -1;
}

int tok_bytelevel_spell(const char *bytes, size_t n, TokBuf *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t cp = tok_bytelevel_char((uint8_t)bytes[i]);
        char u[2];
        size_t k = 1;
        if (cp < 0x80)
            u[0] = (char)cp;
        else { /* every character of the alphabet is below U+0800: two bytes */
            u[0] = (char)(0xC0 | (cp >> 6));
            u[1] = (char)(0x80 | (cp & 0x3F));
            k = 2;
        }
        if (tok_buf_append(out, u, k))
            return -1;
    }
    return 0;
}

int tok_bytelevel_unspell(const char *s, size_t n, TokBuf *out)
{
    size_t start = out->n;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k =
            utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        int b = k > 0 ? tok_bytelevel_byte((uint32_t)cp) : -1;
        if (b < 0) { /* not a byte-level token: its own bytes */
            out->n = start;
            return tok_buf_append(out, s, n);
        }
        char c = (char)b;
        if (tok_buf_append(out, &c, 1))
            return -1;
        i += (size_t)k;
    }
    return 0;
}
