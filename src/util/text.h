/*
 * util/text.h — untrusted text made safe for where it goes. Text from a loss
 * script, a data file, a config or a proposer's reply may hold any bytes; a
 * JSON encoder refuses invalid UTF-8 (jansson returns NULL, which callers
 * could mistake for out of memory), and a terminal obeys escape sequences
 * (a forged "valid" line, a retitled window).
 *
 *     char *clean = text_utf8_clean(s, strlen(s));    // for JSON: U+FFFD for bad bytes
 *     char shown[256];
 *     printf("%s\n", text_for_terminal(s, shown, sizeof shown)); // escapes controls
 *
 * text_yaml_char writes what the YAML files prefrun saves (a run's config.yaml,
 * discover's settings) hold, so that they read back as they were.
 *
 * UTF-8 is decoded by utf8proc (utf8proc_iterate: overlong forms, surrogates
 * and code points past U+10FFFF are invalid, as RFC 3629 says).
 */
#ifndef PREFRUN_TEXT_H
#define PREFRUN_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Whether s[0..n) is valid UTF-8 without NUL bytes. */
bool text_utf8_valid(const char *s, size_t n);

/* A malloc'ed, NUL-terminated copy of s[0..n) in which every byte that does
 * not start a valid UTF-8 sequence, and every NUL, is replaced by U+FFFD
 * (one replacement per bad byte, so a cut sequence shows its length). NULL only when
 * out of memory. */
char *text_utf8_clean(const char *s, size_t n);

/* s written into out (of outlen >= 8 bytes) so that a terminal shows it on
 * one line and obeys none of it: C0 and C1 controls and DEL as \n, \r, \t or
 * \xNN (\u0085 style for C1), bytes of invalid UTF-8 as \xNN, the rest as it
 * is. Too long for out: cut at a character boundary and ended with "...".
 * NULL s reads as "(null)". Returns out. */
const char *text_for_terminal(const char *s, char *out, size_t outlen);

/* The first character of s[0..n) (n > 0) as it goes inside a YAML
 * double-quoted scalar that reads back as the same text, into out: " and \
 * escaped, C0 and C1 controls and DEL as \xNN, the line breaks YAML would
 * fold to a space (U+2028, U+2029; U+0085 is C1) as \L and \P, U+FEFF,
 * U+FFFE and U+FFFF as \uXXXX, any other character as it is. A byte that
 * starts no valid UTF-8 character is written \xNN too, which reads back as
 * U+00NN: YAML text holds characters, not bytes. Returns the bytes of s
 * used (>= 1); out is NUL-terminated.
 *     put('"'); for (k = 0; n; s += k, n -= k) { k = text_yaml_char(s, n, q); put(q); } put('"');
 */
size_t text_yaml_char(const char *s, size_t n, char out[8]);

#endif
