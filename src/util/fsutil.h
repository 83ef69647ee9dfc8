/*
 * src/util/ — the smallest layer: the file system (fsutil: atomic writes,
 * capped reads, locks, trees), untrusted text made safe (text), error
 * values (errmsg) and clocks (timeutil).
 * May include: nothing of prefrun's. Everything else may include it.
 */
/*
 * util/fsutil.h — the one place prefrun touches the file system for writing:
 * atomic file replacement, mkdir -p, whole-file reads, tree removal.
 *
 * Atomic write. Every file prefrun writes that a later run reads (checkpoints,
 * configs, the `latest` pointer, generated data) goes through
 * fsutil_atomic_*: the bytes go to a temporary file in the destination's own
 * directory (so the rename cannot cross file systems), which is flushed and
 * fsync'ed, renamed over the destination, and then the directory is fsync'ed
 * so the rename itself is durable. A crash or kill -9 at any moment leaves
 * either the old file or the new one, never a mix; at worst a stray
 * ".NAME.tmp.XXXXXX" file is left beside it.
 *
 *     FsAtomic *f = fsutil_atomic_open("run/config.yaml", err, sizeof err);
 *     if (!f) ...;
 *     fsutil_atomic_write(f, buf, n);                 // errors are sticky
 *     if (fsutil_atomic_commit(f, err, sizeof err))   // frees f either way
 *         ...;                                        // old file untouched
 *
 * Errors are values: functions return 0 (or a pointer) on success and -1 (or
 * NULL) with a message naming the path and the system error in err.
 */
#ifndef PREFRUN_FSUTIL_H
#define PREFRUN_FSUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct FsAtomic FsAtomic;

/* Starts an atomic replacement of path (its directory must exist). */
FsAtomic *fsutil_atomic_open(const char *path, char *err, size_t errlen);
/* Appends bytes; a failure is remembered and reported by commit. 0 or -1. */
int fsutil_atomic_write(FsAtomic *f, const void *data, size_t len);
/* printf into the file; same error rule as fsutil_atomic_write. */
int fsutil_atomic_printf(FsAtomic *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* fsync, rename over the destination, fsync the directory; frees f. On any
 * failure the temporary file is removed and the destination is untouched. */
int fsutil_atomic_commit(FsAtomic *f, char *err, size_t errlen);
/* Drops the temporary file; the destination is untouched; frees f. */
void fsutil_atomic_abort(FsAtomic *f);

/* The whole of an atomic write in one call. */
int fsutil_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);
/* What a read may cost: every file prefrun reads has a cap that fits its
 * kind, checked while reading (a regular file's size before), so /dev/zero
 * or a file that grows costs at most the cap. `special`: FIFOs and devices
 * are read (to the cap) rather than refused, for inputs a shell may hand over
 * as <(zcat data.gz). The message names the file, the cap and the kind. */
typedef struct FsReadCap {
    size_t bytes;
    const char *kind; /* "a loss script", for the message */
    bool special;
} FsReadCap;

/* Copies src (read under cap) to dst atomically (dst's directory must
 * exist). */
int fsutil_copy_atomic(const char *src, const FsReadCap *cap, const char *dst, char *err,
                       size_t errlen);

int fsutil_read_capped(const char *path, const FsReadCap *cap, char **data, size_t *len, char *err,
                       size_t errlen);

/* Takes an exclusive flock on DIR/.lock, waiting for it (one build of a
 * cache directory at a time): the lock's fd, to close when done, or -1 with
 * err set. */
int fsutil_lock_dir(const char *dir, char *err, size_t errlen);

/* mkdir -p with mode 0755; an existing directory is success. */
int fsutil_mkdirs(const char *path, char *err, size_t errlen);
/* rm -r of path (a file or a directory); a missing path is success. */
int fsutil_remove_tree(const char *path, char *err, size_t errlen);
/* fsync a directory, making renames and creations in it durable. */
int fsutil_fsync_dir(const char *dir, char *err, size_t errlen);
/* writes all n bytes to fd (a pipe, say), retrying short writes and EINTR;
 * 0, or -1 with errno set */
int fsutil_write_fd(int fd, const void *data, size_t n);
/* Appends one whole line (a record of an append-only log such as
 * metrics.jsonl) to fd, opened with O_APPEND and written by this process
 * only, retrying short writes and EINTR. When any part fails (a full disk),
 * the file is cut back to its length before the line, so it never holds a
 * torn line. 0, or -1 with err naming path and the system error. */
int fsutil_append_line(int fd, const char *path, const void *data, size_t len, char *err,
                       size_t errlen);
bool fsutil_exists(const char *path);
bool fsutil_is_dir(const char *path);

/* Fault injection for tests: after `bytes` more bytes have been written by
 * fsutil_atomic_write and fsutil_append_line together, every write of
 * theirs fails with ENOSPC, as a full disk would (a write that crosses the
 * limit is short first).
 * A negative value turns injection off (the default). */
void fsutil_test_fail_after(int64_t bytes);

#endif
