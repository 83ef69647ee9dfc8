/*
 * test_text.c — util/text.c: UTF-8 validity and cleaning on RFC 3629's
 * cases (overlong forms, surrogates, past U+10FFFF, cut sequences), and the
 * terminal escape of hostile names (OSC title sequences, CSI, newlines,
 * C1 controls, bidirectional overrides), and the YAML double-quoted form
 * of every kind of character (what fuzz_config and fuzz_discover found
 * written raw: control bytes refused on reading, line breaks folded).
 */
#include <stdlib.h>
#include <string.h>

#include "util/text.h"

#include "testlib.h"

static bool valid(const char *s) { return text_utf8_valid(s, strlen(s)); }

static void rfc3629_valid_and_invalid_sequences(void)
{
    CHECK(valid(""));
    CHECK(valid("plain ascii"));
    CHECK(valid("\xc3\xa9"));         /* U+00E9 */
    CHECK(valid("\xe2\x82\xac"));     /* U+20AC */
    CHECK(valid("\xf0\x9f\x98\x80")); /* U+1F600 */
    CHECK(valid("\xf4\x8f\xbf\xbf")); /* U+10FFFF, the last code point */
    CHECK(valid("\xef\xbf\xbd"));     /* U+FFFD itself */
    CHECK(!valid("\xff"));
    CHECK(!valid("\x80"));              /* a lone continuation byte */
    CHECK(!valid("\xc0\xaf"));          /* overlong '/' */
    CHECK(!valid("\xe0\x80\xaf"));      /* overlong '/' in three bytes */
    CHECK(!valid("\xed\xa0\x80"));      /* U+D800, a surrogate */
    CHECK(!valid("\xf4\x90\x80\x80"));  /* U+110000 */
    CHECK(!valid("\xe2\x82"));          /* cut short */
    CHECK(!text_utf8_valid("a\0b", 3)); /* NUL cannot live in a C string */
}

static void clean_replaces_each_bad_byte_with_u_fffd(void)
{
    const char *in = "a\xff"
                     "b\xc0\xaf"
                     "c\xe2\x82";
    char *out = text_utf8_clean(in, strlen(in));
    CHECK(out && !strcmp(out, "a\xef\xbf\xbd"
                              "b\xef\xbf\xbd\xef\xbf\xbd"
                              "c\xef\xbf\xbd\xef\xbf\xbd"));
    CHECK(out && valid(out));
    free(out);
    char *nul = text_utf8_clean("x\0y", 3);
    CHECK(nul && !strcmp(nul, "x\xef\xbf\xbdy"));
    free(nul);
    const char *good = "caf\xc3\xa9 \xf0\x9f\x98\x80";
    char *same = text_utf8_clean(good, strlen(good));
    CHECK(same && !strcmp(same, good));
    free(same);
}

static void terminal_sees_no_control_sequence(void)
{
    char out[256];
    /* OSC 0 retitles the window; the newline would forge a verdict line */
    text_for_terminal("x\x1b]0;pwned\x07\nvalid: ok", out, sizeof out);
    CHECK(!strcmp(out, "x\\x1b]0;pwned\\x07\\nvalid: ok"));
    text_for_terminal("\x1b[2J\r\t\x7f", out, sizeof out);
    CHECK(!strcmp(out, "\\x1b[2J\\r\\t\\x7f"));
    text_for_terminal("\xc2\x9b"
                      "31m",
                      out, sizeof out); /* U+009B, the 8-bit CSI */
    CHECK(!strcmp(out, "\\u009b31m"));
    text_for_terminal("abc\xe2\x80\xae"
                      "fed",
                      out, sizeof out); /* U+202E */
    CHECK(!strcmp(out, "abc\\u202efed"));
    text_for_terminal("bad \xff byte, caf\xc3\xa9", out, sizeof out);
    CHECK(!strcmp(out, "bad \\xff byte, caf\xc3\xa9"));
    text_for_terminal(NULL, out, sizeof out);
    CHECK(!strcmp(out, "(null)"));
}

static void terminal_cuts_long_text_at_a_character(void)
{
    char out[12];
    text_for_terminal("abcdefghijklmnop", out, sizeof out);
    CHECK(!strcmp(out, "abcdefgh..."));
    text_for_terminal("abcdefghij\xc3\xa9", out, sizeof out); /* no room for the 2-byte char */
    CHECK(!strcmp(out, "abcdefgh..."));
    text_for_terminal("abcdefghij", out, sizeof out); /* fits exactly: no dots */
    CHECK(!strcmp(out, "abcdefghij"));
    text_for_terminal("\n\n\n\n\n\n", out, sizeof out); /* escapes are never split */
    CHECK(!strcmp(out, "\\n\\n\\n\\n..."));
    char tiny[4] = "zzz";
    text_for_terminal("anything", tiny, sizeof tiny);
    CHECK(tiny[0] == 0);
}

/* s written character by character as text_yaml_char writes it */
static const char *yaml_of(const char *s)
{
    static char buf[256];
    size_t o = 0;
    char q[8];
    for (size_t n = strlen(s), k; n > 0; s += k, n -= k) {
        k = text_yaml_char(s, n, q);
        CHECK(k >= 1 && k <= n && strlen(q) < sizeof q);
        o += (size_t)snprintf(buf + o, sizeof buf - o, "%s", q);
    }
    return buf;
}

static void yaml_escapes_what_would_not_read_back(void)
{
    CHECK(!strcmp(yaml_of("runs/dpo"), "runs/dpo"));
    CHECK(!strcmp(yaml_of("a\"b\\c"), "a\\\"b\\\\c"));
    CHECK(!strcmp(yaml_of("\r\n\t\x01\x7f"), "\\x0d\\x0a\\x09\\x01\\x7f"));
    /* NEL and another C1 control escaped, NBSP as it is */
    CHECK(!strcmp(yaml_of("\xc2\x85|\xc2\x81|\xc2\xa0"), "\\x85|\\x81|\xc2\xa0"));
    CHECK(!strcmp(yaml_of("\xe2\x80\xa8|\xe2\x80\xa9"), "\\L|\\P"));
    CHECK(!strcmp(yaml_of("\xef\xbb\xbf|\xef\xbf\xbe"), "\\ufeff|\\ufffe"));
    CHECK(!strcmp(yaml_of("caf\xc3\xa9 \xf0\x9f\x98\x80"), "caf\xc3\xa9 \xf0\x9f\x98\x80"));
    CHECK(!strcmp(yaml_of("\xff\xc3"), "\\xff\\xc3")); /* bytes of no character */
}

int main(void)
{
    RUN(rfc3629_valid_and_invalid_sequences);
    RUN(clean_replaces_each_bad_byte_with_u_fffd);
    RUN(terminal_sees_no_control_sequence);
    RUN(terminal_cuts_long_text_at_a_character);
    RUN(yaml_escapes_what_would_not_read_back);
    return tl_done();
}
