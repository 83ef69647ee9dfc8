/*
 * util/fsutil.c — atomic file replacement and the few file-system helpers every
 * writer in prefrun shares (see fsutil.h for the crash-safety argument).
 *
 * Invariant: a destination path is only ever changed by rename(2) of a fully
 * written, fsync'ed temporary file in the same directory.
 */
#include "util/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

struct FsAtomic {
    int fd;
    int err_no;     /* first write error, 0 if none */
    char *path;     /* destination */
    char *tmp_path; /* the temporary file beside it */
};

static int64_t fail_after = -1; /* test fault injection; <0 = off */

void fsutil_test_fail_after(int64_t bytes) { fail_after = bytes; }

/* How many of len bytes the fault hook lets the next write(2) take: all,
 * fewer (a short write, as a disk filling up mid-write gives), or 0 (full). */
static size_t hook_allow(size_t len)
{
    return fail_after >= 0 && (int64_t)len > fail_after ? (size_t)fail_after : len;
}

static void hook_spent(ssize_t w)
{
    if (fail_after >= 0)
        fail_after -= w;
}

static int fail(char *err, size_t errlen, const char *what, const char *path, int e)
{
    if (err && errlen)
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
    return -1;
}

/* dirname without modifying the argument; "." for a bare file name */
static void dir_of(const char *path, char *out, size_t cap)
{
    snprintf(out, cap, "%s", path);
    char *slash = strrchr(out, '/');
    if (!slash)
        snprintf(out, cap, ".");
    else if (slash == out)
        out[1] = '\0'; /* "/file" lives in "/" */
    else
        *slash = '\0';
}

FsAtomic *fsutil_atomic_open(const char *path, char *err, size_t errlen)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    FsAtomic *f = calloc(1, sizeof *f);
    size_t tlen = strlen(dir) + strlen(base) + 32;
    if (f) {
        f->path = strdup(path);
        f->tmp_path = malloc(tlen);
    }
    if (!f || !f->path || !f->tmp_path) {
        if (f) {
            free(f->path);
            free(f->tmp_path);
        }
        free(f);
        fail(err, errlen, "cannot write", path, ENOMEM);
        return NULL;
    }
    /* hidden, so a directory listing of finished files never shows it */
    snprintf(f->tmp_path, tlen, "%s/.%s.tmp.XXXXXX", dir, base);
    f->fd = mkstemp(f->tmp_path);
    if (f->fd < 0) {
        fail(err, errlen, "cannot create a temporary file for", path, errno);
        free(f->path);
        free(f->tmp_path);
        free(f);
        return NULL;
    }
    fchmod(f->fd, 0644); /* mkstemp makes 0600; these are ordinary output files */
    return f;
}

int fsutil_atomic_write(FsAtomic *f, const void *data, size_t len)
{
    if (f->err_no)
        return -1;
    const char *p = data;
    while (len > 0) {
        size_t chunk = hook_allow(len);
        if (chunk == 0) {
            f->err_no = ENOSPC;
            return -1;
        }
        ssize_t w = write(f->fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            f->err_no = errno;
            return -1;
        }
        hook_spent(w);
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int fsutil_atomic_printf(FsAtomic *f, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        f->err_no = EINVAL;
        return -1;
    }
    if ((size_t)n < sizeof small)
        return fsutil_atomic_write(f, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) {
        f->err_no = ENOMEM;
        return -1;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = fsutil_atomic_write(f, big, (size_t)n);
    free(big);
    return rc;
}

static void atomic_free(FsAtomic *f)
{
    free(f->path);
    free(f->tmp_path);
    free(f);
}

void fsutil_atomic_abort(FsAtomic *f)
{
    if (!f)
        return;
    close(f->fd);
    unlink(f->tmp_path);
    atomic_free(f);
}

int fsutil_atomic_commit(FsAtomic *f, char *err, size_t errlen)
{
    int e = f->err_no;
    if (!e && fsync(f->fd) != 0)
        e = errno;
    if (close(f->fd) != 0 && !e)
        e = errno;
    if (!e && rename(f->tmp_path, f->path) != 0)
        e = errno;
    if (e) {
        unlink(f->tmp_path);
        fail(err, errlen, "cannot write", f->path, e);
        atomic_free(f);
        return -1;
    }
    char dir[PATH_MAX];
    dir_of(f->path, dir, sizeof dir);
    int rc = fsutil_fsync_dir(dir, err, errlen);
    atomic_free(f);
    return rc;
}

int fsutil_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    if (!f)
        return -1;
    fsutil_atomic_write(f, data, len);
    return fsutil_atomic_commit(f, err, errlen);
}

int fsutil_copy_atomic(const char *src, const FsReadCap *cap, const char *dst, char *err,
                       size_t errlen)
{
    char *data;
    size_t len;
    if (fsutil_read_capped(src, cap, &data, &len, err, errlen))
        return -1;
    int rc = fsutil_write_atomic(dst, data, len, err, errlen);
    free(data);
    return rc;
}

static const char *kind_of(mode_t m)
{
    return S_ISDIR(m)    ? "a directory"
           : S_ISFIFO(m) ? "a FIFO"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISSOCK(m) ? "a socket"
                         : "not a regular file";
}

static int too_big(char *err, size_t errlen, const char *path, const char *kind, size_t cap)
{
    if (err && errlen)
        snprintf(err, errlen, "%s: larger than %zu bytes, the cap for %s", path, cap, kind);
    return -1;
}

/* Reads until EOF into a buffer that grows to at most cap + 1 bytes: the
 * cap is checked while reading, so a file that never ends (a device, a
 * growing file) costs at most cap. */
static int read_to_cap(int fd, const char *path, size_t hint, const FsReadCap *c, char **data,
                       size_t *len, char *err, size_t errlen)
{
    size_t room = (hint ? hint : 4096) + 1, n = 0;
    if (room > c->bytes + 1)
        room = c->bytes + 1;
    char *buf = malloc(room + 1);
    while (buf) {
        if (n == room) {
            if (room > c->bytes) {
                free(buf);
                return too_big(err, errlen, path, c->kind, c->bytes);
            }
            size_t grown = room > c->bytes / 2 ? c->bytes + 1 : 2 * room;
            char *nb = realloc(buf, grown + 1);
            if (!nb)
                break;
            buf = nb;
            room = grown;
        }
        ssize_t r = read(fd, buf + n, room - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            return fail(err, errlen, "cannot read", path, e);
        }
        if (r == 0) {
            buf[n] = '\0';
            *data = buf;
            *len = n;
            return 0;
        }
        n += (size_t)r;
        if (n > c->bytes) {
            free(buf);
            return too_big(err, errlen, path, c->kind, c->bytes);
        }
    }
    free(buf);
    return fail(err, errlen, "cannot read", path, ENOMEM);
}

int fsutil_read_capped(const char *path, const FsReadCap *cap, char **data, size_t *len, char *err,
                       size_t errlen)
{
    *data = NULL;
    *len = 0;
    /* O_NONBLOCK: opening a FIFO with no writer would otherwise hang here */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, "cannot read", path, errno);
    struct stat st;
    int rc = -1;
    if (fstat(fd, &st) != 0)
        rc = fail(err, errlen, "cannot read", path, errno);
    else if (!S_ISREG(st.st_mode) && (S_ISDIR(st.st_mode) || !cap->special)) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s, expected a regular file (%s)", path, kind_of(st.st_mode),
                     cap->kind);
    } else if (S_ISREG(st.st_mode) && (uint64_t)st.st_size > cap->bytes)
        rc = too_big(err, errlen, path, cap->kind, cap->bytes);
    else if (fcntl(fd, F_SETFL, 0) != 0)
        rc = fail(err, errlen, "cannot read", path, errno);
    else {
        size_t hint = S_ISREG(st.st_mode) ? (size_t)st.st_size : 0;
        rc = read_to_cap(fd, path, hint, cap, data, len, err, errlen);
    }
    close(fd);
    return rc;
}

int fsutil_lock_dir(const char *dir, char *err, size_t errlen)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/.lock", dir) >= (int)sizeof path)
        return fail(err, errlen, "cannot lock", dir, ENAMETOOLONG);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(err, errlen, "cannot lock", path, errno);
    while (flock(fd, LOCK_EX) != 0) {
        if (errno != EINTR) {
            int e = errno;
            close(fd);
            return fail(err, errlen, "cannot lock", path, e);
        }
    }
    return fd;
}

int fsutil_mkdirs(const char *path, char *err, size_t errlen)
{
    char buf[PATH_MAX];
    if (!*path)
        return fail(err, errlen, "cannot create directory", "\"\"", ENOENT);
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return fail(err, errlen, "cannot create directory", path, ENAMETOOLONG);
    /* create each prefix in turn; EEXIST on a directory is fine */
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(buf, 0755) != 0) {
            if (errno != EEXIST)
                return fail(err, errlen, "cannot create directory", buf, errno);
            if (!fsutil_is_dir(buf))
                return fail(err, errlen, "cannot create directory", buf, ENOTDIR);
        }
        *p = c;
        if (c == '\0')
            break;
    }
    return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

int fsutil_remove_tree(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : fail(err, errlen, "cannot remove", path, errno);
    /* depth-first, not following links: a link to elsewhere is removed, not its target */
    if (nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return fail(err, errlen, "cannot remove", path, errno);
    return 0;
}

int fsutil_fsync_dir(const char *dir, char *err, size_t errlen)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return fail(err, errlen, "cannot open directory", dir, errno);
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* some file systems refuse fsync on directories; nothing more can be done there */
    if (rc != 0 && e != EINVAL && e != ENOTSUP)
        return fail(err, errlen, "cannot fsync directory", dir, e);
    return 0;
}

bool fsutil_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

bool fsutil_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int fsutil_write_fd(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int fsutil_append_line(int fd, const char *path, const void *data, size_t len, char *err,
                       size_t errlen)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return fail(err, errlen, "cannot append to", path, errno);
    const char *p = data;
    size_t done = 0;
    int e = 0;
    while (done < len && !e) {
        size_t chunk = hook_allow(len - done);
        ssize_t w = chunk ? write(fd, p + done, chunk) : (errno = ENOSPC, -1);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            e = w < 0 ? errno : EIO;
        } else { /* a short write is retried: the next one says why it was short */
            hook_spent(w);
            done += (size_t)w;
        }
    }
    if (!e)
        return 0;
    /* O_APPEND put the line's start at the old end of file: cut back to it,
     * so no torn line remains for a reader to trust */
    if (done > 0 && ftruncate(fd, st.st_size) != 0) {
        int te = errno;
        if (err && errlen)
            snprintf(err, errlen, "cannot write %s: %s; the partial line is still there: %s", path,
                     strerror(e), strerror(te));
        return -1;
    }
    return fail(err, errlen, "cannot write", path, e);
}
