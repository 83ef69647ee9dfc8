/*
 * test_checkpoint.c — safetensors round trip, a file written by hand from the
 * spec, corrupted files (truncated at many offsets, every header byte
 * flipped), atomic writes under injected write failures, trainer_state.json,
 * and the checkpoint directory: latest pointer, pruning, and kill -9 at
 * random moments while checkpoints are being written.
 */
#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "model/checkpoint.h"
#include "util/fsutil.h"
#include "core/rng.h"
#include "testfs.h"
#include "testlib.h"

static char err[512];
static char tmp[64];

static void make_tmp(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/prefrun_ckptXXXXXX");
    if (!mkdtemp(tmp))
        tmp[0] = '\0';
}

static void drop_tmp(void) { fsutil_remove_tree(tmp, err, sizeof err); }

static const char *in_tmp(const char *name) { return tfs_join(tmp, name); }

static int write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, len, f);
    fclose(f);
    return w == len ? 0 : -1;
}

/* Three tensors of the shapes a model has: (2, 3), (4), and a 0-D scalar. */
static float wa[6] = {1, -2, 3.5f, 1e-30f, -0.0f, 7}, wb[4] = {0.1f, 0.2f, 0.3f, 0.4f},
             wc[1] = {42};

static void sample_entries(StEntry *e)
{
    e[0] = (StEntry){.name = "h.0.attn.weight", .ndim = 2, .shape = {2, 3}, .data = wa};
    e[1] = (StEntry){.name = "wpe", .ndim = 1, .shape = {4}, .data = wb};
    e[2] = (StEntry){.name = "scale", .ndim = 0, .data = wc};
}

static void safetensors_round_trip(void)
{
    make_tmp();
    StEntry e[3];
    sample_entries(e);
    const char *meta[] = {"format", "pt", "step", "12", NULL};
    const char *path = in_tmp("m.safetensors");
    CHECKF(st_save(path, e, 3, meta, err, sizeof err) == 0, "%s", err);
    StFile *f = st_open(path, err, sizeof err);
    CHECKF(f, "%s", err);
    if (!f) {
        drop_tmp();
        return;
    }
    CHECK(st_count(f) == 3 && strcmp(st_name(f, 0), "h.0.attn.weight") == 0);
    CHECK(strcmp(st_meta(f, "format"), "pt") == 0 && strcmp(st_meta(f, "step"), "12") == 0);
    CHECK(st_meta(f, "nothing") == NULL);
    const char *dtype;
    int ndim;
    int64_t shape[4];
    CHECK(st_info(f, "wpe", &dtype, &ndim, shape) == 0 && !strcmp(dtype, "F32") && ndim == 1 &&
          shape[0] == 4);
    float ra[6], rb[4], rc[1];
    StEntry r[3];
    sample_entries(r);
    r[0].data = ra;
    r[1].data = rb;
    r[2].data = rc;
    CHECKF(st_read_all(f, r, 3, true, err, sizeof err) == 0, "%s", err);
    CHECK(memcmp(ra, wa, sizeof wa) == 0 && memcmp(rb, wb, sizeof wb) == 0 && rc[0] == 42);
    /* layout per the spec: u64 LE header length, multiple of 8 (aligned data) */
    char *raw;
    size_t len;
    tfs_read(path, &raw, &len, err, sizeof err);
    uint64_t hlen;
    memcpy(&hlen, raw, 8);
    CHECK(hlen % 8 == 0 && raw[8] == '{' && len == 8 + hlen + sizeof wa + sizeof wb + sizeof wc);
    CHECK(memcmp(raw + 8 + hlen, wa, sizeof wa) == 0);
    free(raw);
    st_close(f);
    /* metadata must be text JSON can carry: a non-UTF-8 value is refused, nothing written */
    const char *bad_meta[] = {"k", "\xff", NULL};
    CHECK(st_save(in_tmp("b.safetensors"), e, 3, bad_meta, err, sizeof err) != 0 &&
          strstr(err, "b.safetensors") && !fsutil_exists(in_tmp("b.safetensors")));
    drop_tmp();
}

/* A file built by hand from the format description (unpadded header,
 * metadata first, tensors out of name order), as another writer might. */
static void safetensors_reads_foreign_file(void)
{
    make_tmp();
    const char header[] = "{\"__metadata__\":{\"format\":\"pt\"},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
                          "\"a\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[0,8]}}";
    uint64_t hlen = sizeof header - 1;
    float data[3] = {1.5f, -2.5f, 9.0f};
    char buf[512];
    memcpy(buf, &hlen, 8);
    memcpy(buf + 8, header, hlen);
    memcpy(buf + 8 + hlen, data, sizeof data); /* unaligned: 8 + 155 */
    const char *path = in_tmp("foreign.safetensors");
    CHECK(write_bytes(path, buf, 8 + hlen + sizeof data) == 0);
    StFile *f = st_open(path, err, sizeof err);
    CHECKF(f, "%s", err);
    if (f) {
        float a[2], b[1];
        StEntry ea = {.name = "a", .ndim = 2, .shape = {2, 1}, .data = a};
        StEntry eb = {.name = "b", .ndim = 1, .shape = {1}, .data = b};
        CHECK(st_read(f, &ea, err, sizeof err) == 0 && a[0] == 1.5f && a[1] == -2.5f);
        CHECK(st_read(f, &eb, err, sizeof err) == 0 && b[0] == 9.0f);
        CHECK(strcmp(st_name(f, 0), "a") == 0); /* data order */
        /* wrong shape and missing tensor are named */
        StEntry bad = {.name = "a", .ndim = 1, .shape = {2}, .data = a};
        CHECK(st_read(f, &bad, err, sizeof err) != 0 &&
              strstr(err, "tensor \"a\" has shape (2, 1), expected (2)"));
        StEntry none = {.name = "c", .ndim = 1, .shape = {1}, .data = a};
        CHECK(st_read(f, &none, err, sizeof err) != 0 && strstr(err, "no tensor \"c\""));
        CHECK(st_read_all(f, &ea, 1, true, err, sizeof err) != 0 && strstr(err, "\"b\""));
        CHECK(st_read_all(f, &ea, 1, false, err, sizeof err) == 0);
        st_close(f);
    }
    drop_tmp();
}

/* A hand-made file with the given header and data bytes must fail to open
 * with an error containing frag. */
static void expect_bad_header(const char *header, size_t data_len, const char *frag)
{
    char buf[1024] = {0};
    uint64_t hlen = strlen(header);
    memcpy(buf, &hlen, 8);
    memcpy(buf + 8, header, hlen);
    const char *path = in_tmp("bad.safetensors");
    write_bytes(path, buf, 8 + hlen + data_len);
    StFile *f = st_open(path, err, sizeof err);
    CHECKF(!f, "opened a file with header %s", header);
    CHECKF(strstr(err, frag) && strstr(err, "bad.safetensors"), "error \"%s\" lacks \"%s\"", err,
           frag);
    st_close(f);
}

static void safetensors_validation_errors(void)
{
    make_tmp();
    {
        /* F16 opens (a valid file), but reading it as F32 is refused by name */
        char buf[128];
        const char h[] = "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
        uint64_t hl = sizeof h - 1;
        memcpy(buf, &hl, 8);
        memcpy(buf + 8, h, hl);
        memset(buf + 8 + hl, 0, 4);
        write_bytes(in_tmp("f16.safetensors"), buf, 8 + hl + 4);
        StFile *f = st_open(in_tmp("f16.safetensors"), err, sizeof err);
        CHECKF(f, "%s", err);
        float x[2];
        StEntry e = {.name = "a", .ndim = 1, .shape = {2}, .data = x};
        CHECK(f && st_read(f, &e, err, sizeof err) != 0 &&
              strstr(err, "tensor \"a\" has dtype F16, expected F32"));
        st_close(f);
    }
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
                      "tensor \"a\": data_offsets [0, 8] out of range");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                      "span 8 bytes, its shape and dtype need 12");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
                      "a hole");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                      8, "overlapping");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
                      "4 bytes of data after the last tensor");
    expect_bad_header("{\"a\":{\"dtype\":\"X9\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
                      "unknown dtype");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
                      "shape entry 0 is invalid");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                      "at most 4 sizes");
    expect_bad_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets is not");
    expect_bad_header("{\"__metadata__\":{\"k\":1}}", 0, "metadata \"k\" is not a string");
    expect_bad_header("[1]", 0, "does not start with '{'");
    expect_bad_header("{\"a\":", 0, "invalid JSON");
    expect_bad_header("{\"a\":{},\"a\":{}}", 0, "invalid JSON");
    /* a header length that cannot be right */
    char buf[16];
    uint64_t huge = 1ull << 40;
    memcpy(buf, &huge, 8);
    memset(buf + 8, '{', 8);
    write_bytes(in_tmp("huge.safetensors"), buf, 16);
    CHECK(!st_open(in_tmp("huge.safetensors"), err, sizeof err) &&
          strstr(err, "bad header length"));
    CHECK(!st_open(in_tmp("missing.safetensors"), err, sizeof err) &&
          strstr(err, "missing.safetensors"));
    drop_tmp();
}

static void safetensors_truncated_anywhere_fails(void)
{
    make_tmp();
    StEntry e[3];
    sample_entries(e);
    const char *path = in_tmp("m.safetensors");
    st_save(path, e, 3, NULL, err, sizeof err);
    char *raw;
    size_t len;
    tfs_read(path, &raw, &len, err, sizeof err);
    uint64_t hlen;
    memcpy(&hlen, raw, 8);
    /* every prefix shorter than the file, covering the length, header and data */
    for (size_t cut = 0; cut < len; cut++) {
        write_bytes(in_tmp("cut.safetensors"), raw, cut);
        StFile *f = st_open(in_tmp("cut.safetensors"), err, sizeof err);
        CHECKF(!f, "a file cut at %zu of %zu bytes opened", cut, len);
        CHECKF(!f && strstr(err, "cut.safetensors"), "cut %zu: %s", cut, err);
        if (cut < 8 || cut < 8 + hlen)
            CHECKF(strstr(err, "truncated"), "cut %zu: %s", cut, err);
        st_close(f);
    }
    free(raw);
    drop_tmp();
}

static void safetensors_flipped_header_bytes_fail(void)
{
    make_tmp();
    StEntry e[3];
    sample_entries(e);
    const char *path = in_tmp("m.safetensors");
    st_save(path, e, 3, NULL, err, sizeof err);
    char *raw;
    size_t len;
    tfs_read(path, &raw, &len, err, sizeof err);
    uint64_t hlen;
    memcpy(&hlen, raw, 8);
    float ra[6], rb[4], rc[1];
    StEntry r[3];
    sample_entries(r);
    r[0].data = ra;
    r[1].data = rb;
    r[2].data = rc;
    const unsigned char masks[] = {0x01, 0x02, 0x10, 0x80};
    int survived = 0;
    /* every byte of the length and the header, four different bit flips each:
     * either the file is refused or the strict read of the expected tensors is */
    for (size_t i = 0; i < 8 + hlen; i++) {
        for (int m = 0; m < 4; m++) {
            raw[i] ^= (char)masks[m];
            write_bytes(in_tmp("flip.safetensors"), raw, len);
            raw[i] ^= (char)masks[m];
            StFile *f = st_open(in_tmp("flip.safetensors"), err, sizeof err);
            bool read_ok = f && st_read_all(f, r, 3, true, err, sizeof err) == 0;
            /* padding spaces flipped to another whitespace byte are harmless */
            bool harmless = read_ok && i >= 8 && (raw[i] == ' ') &&
                            memcmp(ra, wa, sizeof wa) == 0 && memcmp(rb, wb, sizeof wb) == 0;
            if (read_ok && !harmless)
                survived++;
            CHECKF(!read_ok || harmless, "flip 0x%02x at byte %zu was accepted", masks[m], i);
            st_close(f);
        }
    }
    CHECK(survived == 0);
    free(raw);
    drop_tmp();
}

/* Files in dir whose names contain frag. */
static int count_files(const char *dir, const char *frag)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        n += strstr(de->d_name, frag) != NULL;
    if (d)
        closedir(d);
    return n;
}

static void atomic_write_failure_keeps_old_file(void)
{
    make_tmp();
    const char *path = in_tmp("model.safetensors");
    StEntry e[3];
    sample_entries(e);
    CHECK(st_save(path, e, 3, NULL, err, sizeof err) == 0);
    char *before;
    size_t blen;
    tfs_read(path, &before, &blen, err, sizeof err);
    float big[4096] = {0};
    StEntry eb = {.name = "big", .ndim = 1, .shape = {4096}, .data = big};
    const int64_t fail_at[] = {0, 5, 8, 100, 4000};
    for (int k = 0; k < 5; k++) {
        fsutil_test_fail_after(fail_at[k]); /* a disk that fills up after N bytes */
        int rc = st_save(path, &eb, 1, NULL, err, sizeof err);
        fsutil_test_fail_after(-1);
        CHECKF(rc != 0 && strstr(err, "model.safetensors"), "fail after %lld: %s",
               (long long)fail_at[k], err);
        char *after;
        size_t alen;
        tfs_read(path, &after, &alen, err, sizeof err);
        CHECK(after && alen == blen && memcmp(before, after, blen) == 0); /* old file intact */
        free(after);
        CHECK(count_files(tmp, ".tmp.") == 0); /* no partial file left behind */
    }
    /* a directory that does not exist: an error naming the path, nothing written */
    CHECK(fsutil_write_atomic(in_tmp("no/such/dir/f"), "x", 1, err, sizeof err) != 0 &&
          strstr(err, "no/such/dir/f"));
    /* and a new file gets created cleanly when writes succeed */
    CHECK(fsutil_write_atomic(in_tmp("fresh"), "abc", 3, err, sizeof err) == 0);
    char *fresh;
    size_t flen;
    CHECK(tfs_read(in_tmp("fresh"), &fresh, &flen, err, sizeof err) == 0 && flen == 3 &&
          !strcmp(fresh, "abc"));
    free(fresh);
    free(before);
    drop_tmp();
}

static void fsutil_mkdirs_and_copy(void)
{
    make_tmp();
    CHECK(fsutil_mkdirs(in_tmp("a/b/c/"), err, sizeof err) == 0 && fsutil_is_dir(in_tmp("a/b/c")));
    CHECK(fsutil_mkdirs(in_tmp("a/b"), err, sizeof err) == 0); /* exists: fine */
    fsutil_write_atomic(in_tmp("a/f"), "hello", 5, err, sizeof err);
    CHECK(fsutil_mkdirs(in_tmp("a/f/g"), err, sizeof err) != 0 && strstr(err, "a/f"));
    const FsReadCap cap = {.bytes = 64, .kind = "a test file"};
    CHECK(fsutil_copy_atomic(in_tmp("a/f"), &cap, in_tmp("a/b/f2"), err, sizeof err) == 0);
    char *d;
    size_t n;
    CHECK(tfs_read(in_tmp("a/b/f2"), &d, &n, err, sizeof err) == 0 && n == 5);
    free(d);
    CHECK(fsutil_remove_tree(in_tmp("a"), err, sizeof err) == 0 && !fsutil_exists(in_tmp("a")));
    CHECK(fsutil_remove_tree(in_tmp("a"), err, sizeof err) == 0); /* missing: fine */
    drop_tmp();
}

static void trainer_state_round_trip(void)
{
    make_tmp();
    TrainerState s = {
        .step = 1234, .epoch = 2, .epoch_pos = 56, .tokens_seen = 1LL << 40, .skipped_batches = 3};
    s.rng[0] = UINT64_MAX;
    s.rng[1] = 0x8000000000000001ull;
    s.rng[2] = 0;
    s.rng[3] = 42;
    ckpt_state_set(&s, "loss_sum", 0.1 + 0.2);
    ckpt_state_set(&s, "bad", NAN);
    ckpt_state_set(&s, "big", -INFINITY);
    ckpt_state_set(&s, "tiny", 5e-324);
    const char *path = in_tmp("trainer_state.json");
    CHECKF(ckpt_state_save(path, &s, err, sizeof err) == 0, "%s", err);
    TrainerState t;
    CHECKF(ckpt_state_load(path, &t, err, sizeof err) == 0, "%s", err);
    CHECK(t.step == 1234 && t.epoch == 2 && t.epoch_pos == 56 && t.tokens_seen == 1LL << 40);
    CHECK(t.skipped_batches == 3 && memcmp(t.rng, s.rng, sizeof s.rng) == 0);
    CHECK(ckpt_state_get(&t, "loss_sum", 0) == 0.1 + 0.2 && isnan(ckpt_state_get(&t, "bad", 0)));
    CHECK(ckpt_state_get(&t, "big", 0) == -INFINITY && ckpt_state_get(&t, "tiny", 0) == 5e-324);
    CHECK(ckpt_state_get(&t, "absent", 7.0) == 7.0);
    write_bytes(path, "{\"step\": 1}", 11);
    CHECK(ckpt_state_load(path, &t, err, sizeof err) != 0 && strstr(err, "\"epoch\" is missing"));
    write_bytes(path, "{\"step\": ", 9);
    CHECK(ckpt_state_load(path, &t, err, sizeof err) != 0 && strstr(err, "invalid JSON"));
    drop_tmp();
}

/* Writes a checkpoint of `step` whose model tensor is n floats equal to step. */
static int write_checkpoint(const char *run, int64_t step, int n, int keep)
{
    char dir[512], p[600];
    if (ckpt_begin(run, step, dir, sizeof dir, err, sizeof err))
        return -1;
    float *w = malloc((size_t)n * sizeof *w);
    for (int i = 0; i < n; i++)
        w[i] = (float)step;
    StEntry e = {.name = "w", .ndim = 1, .shape = {n}, .data = w};
    snprintf(p, sizeof p, "%s/%s", dir, CKPT_MODEL_FILE);
    int rc = st_save(p, &e, 1, NULL, err, sizeof err);
    free(w);
    TrainerState s = {.step = step};
    snprintf(p, sizeof p, "%s/%s", dir, CKPT_STATE_FILE);
    rc = rc || ckpt_state_save(p, &s, err, sizeof err);
    return rc || ckpt_commit(run, step, keep, err, sizeof err);
}

/* The latest checkpoint loads and is self-consistent; returns its step. */
static int64_t verify_latest(const char *run, int n)
{
    char dir[512], p[600];
    int64_t step;
    int rc = ckpt_find_latest(run, dir, sizeof dir, &step, err, sizeof err);
    if (rc)
        return rc > 0 ? -1 : -2;
    snprintf(p, sizeof p, "%s/%s", dir, CKPT_MODEL_FILE);
    StFile *f = st_open(p, err, sizeof err);
    float *w = malloc((size_t)n * sizeof *w);
    StEntry e = {.name = "w", .ndim = 1, .shape = {n}, .data = w};
    bool ok = f && st_read_all(f, &e, 1, true, err, sizeof err) == 0;
    for (int i = 0; ok && i < n; i++)
        ok = w[i] == (float)step;
    free(w);
    st_close(f);
    TrainerState s;
    snprintf(p, sizeof p, "%s/%s", dir, CKPT_STATE_FILE);
    ok = ok && ckpt_state_load(p, &s, err, sizeof err) == 0 && s.step == step;
    return ok ? step : -3;
}

static void checkpoint_latest_and_pruning(void)
{
    make_tmp();
    const char *run = in_tmp("run");
    char dir[512];
    int64_t step;
    CHECK(ckpt_find_latest(run, dir, sizeof dir, &step, err, sizeof err) == 1); /* no run yet */
    for (int s = 10; s <= 40; s += 10)
        CHECKF(write_checkpoint(run, s, 16, 2) == 0, "%s", err);
    CHECK(verify_latest(run, 16) == 40);
    char p[600];
    ckpt_path(p, sizeof p, run, 30, NULL);
    CHECK(fsutil_is_dir(p));
    ckpt_path(p, sizeof p, run, 20, NULL);
    CHECK(!fsutil_exists(p)); /* keep_last = 2 */
    CHECK(count_files(run, ".checkpoint-") == 0);
    /* a crash after begin: the partial directory is ignored, then cleaned */
    CHECK(ckpt_begin(run, 50, dir, sizeof dir, err, sizeof err) == 0 && fsutil_is_dir(dir));
    CHECK(verify_latest(run, 16) == 40);
    CHECK(ckpt_commit(run, 50, 2, err, sizeof err) != 0 && strstr(err, "incomplete"));
    CHECK(verify_latest(run, 16) == 40);
    CHECK(ckpt_begin(run, 60, dir, sizeof dir, err, sizeof err) == 0);
    CHECK(count_files(run, ".checkpoint-50") == 0);
    /* latest lost: the newest complete checkpoint is found by scanning */
    snprintf(p, sizeof p, "%s/latest", run);
    unlink(p);
    CHECK(verify_latest(run, 16) == 40);
    /* latest naming a missing checkpoint: same fallback */
    fsutil_write_atomic(p, "checkpoint-99\n", 14, err, sizeof err);
    CHECK(verify_latest(run, 16) == 40);
    /* the same step saved again replaces it */
    CHECK(write_checkpoint(run, 40, 8, 2) == 0);
    CHECK(verify_latest(run, 8) == 40);
    /* keep 0 keeps everything */
    CHECK(write_checkpoint(run, 70, 8, 0) == 0 && write_checkpoint(run, 80, 8, 0) == 0);
    CHECK(count_files(run, "checkpoint-") == 4);
    CHECK(ckpt_prune(run, 1, err, sizeof err) == 0 && count_files(run, "checkpoint-") == 1);
    CHECK(verify_latest(run, 8) == 80);
    drop_tmp();
}

/* kill -9 at random moments while a child writes checkpoint after
 * checkpoint: every time, the last complete one must load. */
static void checkpoint_survives_kill9(void)
{
    make_tmp();
    const char *run = in_tmp("run");
    const int n = 1 << 18; /* 1 MiB model file: the kill lands mid-write often */
    Rng r;
    rng_seed(&r, 2024);
    int64_t last = 0;
    int kills = 0;
    for (int round = 0; round < 12; round++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            for (int64_t s = last + 1;; s++)
                if (write_checkpoint(run, s, n, 2))
                    _exit(3);
        }
        struct timespec ts = {0, (long)(5 + rng_below(&r, 80)) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        kills += WIFSIGNALED(status);
        int64_t s = verify_latest(run, n);
        CHECKF(s >= last || (s == -1 && last == 0), "round %d: latest %lld after %lld (%s)", round,
               (long long)s, (long long)last, err);
        if (s > 0)
            last = s;
    }
    CHECK(kills == 12 && last > 0);
    printf("# %d kills, last complete checkpoint %lld\n", kills, (long long)last);
    drop_tmp();
}

int main(void)
{
    RUN(safetensors_round_trip);
    RUN(safetensors_reads_foreign_file);
    RUN(safetensors_validation_errors);
    RUN(safetensors_truncated_anywhere_fails);
    RUN(safetensors_flipped_header_bytes_fail);
    RUN(atomic_write_failure_keeps_old_file);
    RUN(fsutil_mkdirs_and_copy);
    RUN(trainer_state_round_trip);
    RUN(checkpoint_latest_and_pruning);
    RUN(checkpoint_survives_kill9);
    return tl_done();
}
