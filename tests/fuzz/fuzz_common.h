/*
 * tests/fuzz/fuzz_common.h — what every libFuzzer harness of tests/fuzz/
 * shares: a private temporary directory for the loaders that take a path,
 * the input written there as a file, and the sandbox limits that keep one
 * loss script input to milliseconds.
 *
 * The directory is made once per process under $TMPDIR (default /tmp) as
 * prefrun-fuzz-XXXXXX and removed at exit with whatever the harness wrote
 * in it; tests/fuzz/run.sh points TMPDIR at a directory of its own (in
 * /dev/shm: one file write per input) and removes that at the end, so a
 * crashed harness, which skips atexit, leaves nothing behind either. A
 * harness writes nowhere else.
 *
 * A property a harness checks beyond "no crash, no sanitizer report" (a
 * saved file reads back the same, a sanitised name is safe) fails through
 * fuzz_fail, which aborts: libFuzzer reports it as a crash and keeps the
 * input.
 */
#ifndef PREFRUN_FUZZ_COMMON_H
#define PREFRUN_FUZZ_COMMON_H

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lua/loss.h"

/* One loss input stays small: a few MiB of Lua heap and tensors, 200k VM
 * instructions (about a millisecond of Lua), a quarter second of wall clock
 * per call. The defaults (64 MiB, 256 MiB, 50 M, 2 s) are what the limits
 * tests cover; here they would only make each execution slower. */
static const LossLimits FUZZ_LOSS_LIMITS = {.lua_bytes = (size_t)8 << 20,
                                            .tensor_bytes = (size_t)8 << 20,
                                            .instructions = 200000,
                                            .seconds = 0.25,
                                            .max_depth = 64};

static char fuzz_dir_path[512];

static void fuzz_dir_remove(void)
{
    if (!fuzz_dir_path[0])
        return;
    DIR *d = opendir(fuzz_dir_path);
    if (d) {
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(p, sizeof p, "%s/%s", fuzz_dir_path, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(fuzz_dir_path);
    fuzz_dir_path[0] = 0;
}

/* This process's directory, made on first use. */
static inline const char *fuzz_dir(void)
{
    if (fuzz_dir_path[0])
        return fuzz_dir_path;
    const char *base = getenv("TMPDIR");
    snprintf(fuzz_dir_path, sizeof fuzz_dir_path, "%s/prefrun-fuzz-XXXXXX",
             base && *base ? base : "/tmp");
    if (!mkdtemp(fuzz_dir_path)) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(fuzz_dir_remove);
    return fuzz_dir_path;
}

/* The path of `name` in the directory (one static buffer per slot). */
static inline const char *fuzz_path(const char *name, int slot)
{
    static char buf[4][1024];
    snprintf(buf[slot & 3], sizeof buf[0], "%s/%s", fuzz_dir(), name);
    return buf[slot & 3];
}

/* Writes data to the directory's file `name` (replacing it); its path. */
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t size)
{
    const char *p = fuzz_path(name, 0);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror("fuzz: open");
        abort();
    }
    for (size_t off = 0; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            perror("fuzz: write");
            abort();
        }
        off += (size_t)w;
    }
    close(fd);
    return p;
}

/* A malloc'ed NUL-terminated copy of the input, for APIs that take a C string. */
static inline char *fuzz_cstring(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    memcpy(s, data, size);
    s[size] = 0;
    return s;
}

#define fuzz_fail(...)                                                                             \
    do {                                                                                           \
        fprintf(stderr, "fuzz property failed: " __VA_ARGS__);                                     \
        fputc('\n', stderr);                                                                       \
        abort();                                                                                   \
    } while (0)

#endif
