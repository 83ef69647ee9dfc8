/*
 * test_train_hardening.c — issue 15's defect classes in `prefrun train`, as a
 * user meets them: the exit code and the message of the prefrun executable
 * ($PREFRUN_EXE, else ./prefrun beside this test), and what it leaves in the
 * run directory.
 *   - writes whose failure is ignored: metrics lines on a disk that fills
 *     up (fsutil's fault hook, and a real file-size limit: RLIMIT_FSIZE,
 *     which needs no root) are whole lines or none, and the run fails;
 *   - results that look like success: a run that skipped most steps, or a
 *     resumed run's weights that are not finite or absurd;
 *   - run directories that trap: a run without a checkpoint can be started
 *     over; a run inside another run's tree or a checkpoint is refused;
 *   - a trainer state that disagrees with its checkpoint.
 * Each run is a tiny model on toy pairs (tiny.yaml), a fraction of a second.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/fsutil.h"

#include "testfs.h"
#include "testlib.h"

static char tmp[] = "/tmp/prefrun_train_hardening_XXXXXX";
static char exe[1024];

static const char *in_tmp(const char *name) { return tfs_join(tmp, name); }

/* A run directory's path, in the caller's buffer (so tfs_join can take it). */
static void dir_in_tmp(char out[256], const char *name) { snprintf(out, 256, "%s/%s", tmp, name); }

static char *slurp(const char *path)
{
    char *text, err[256];
    size_t len;
    return tfs_read(path, &text, &len, err, sizeof err) == 0 ? text : NULL;
}

static void write_text(const char *path, const char *text)
{
    char err[256];
    if (fsutil_write_atomic(path, text, strlen(text), err, sizeof err) != 0)
        printf("# %s\n", err);
}

/* Replaces the first `from` in the file with `to`; false when absent. */
static bool edit(const char *path, const char *from, const char *to)
{
    char *text = slurp(path), *at = text ? strstr(text, from) : NULL;
    if (at) {
        size_t n = strlen(text) + strlen(to) + 1;
        char *out = malloc(n);
        snprintf(out, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
        write_text(path, out);
        free(out);
    }
    free(text);
    return at != NULL;
}

/* Runs `prefrun ARGS...` (NULL-terminated), stdout and stderr into *out
 * (malloc'ed). fsize > 0: every file the process writes is capped at fsize
 * bytes (RLIMIT_FSIZE; with SIGXFSZ ignored a write past it is short, then
 * fails with EFBIG, as on a full disk). Returns the exit status, -1 when it
 * did not exit. */
static int prefrun(long fsize, char **out, ...)
{
    const char *argv[64] = {"prefrun"};
    int argc = 1;
    va_list ap;
    va_start(ap, out);
    for (const char *a; argc < 63 && (a = va_arg(ap, const char *));)
        argv[argc++] = a;
    va_end(ap);
    argv[argc] = NULL;
    char log[600];
    snprintf(log, sizeof log, "%s", in_tmp("out.txt"));
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            _exit(126);
        struct rlimit rl = {(rlim_t)fsize, (rlim_t)fsize};
        if (fsize > 0 && (signal(SIGXFSZ, SIG_IGN) == SIG_ERR || setrlimit(RLIMIT_FSIZE, &rl)))
            _exit(126);
        execv(exe, (char *const *)argv);
        _exit(127);
    }
    int status = -1;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    *out = slurp(log);
    if (!*out)
        *out = strdup("");
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static const char *dpo(void)
{
    static char path[1024];
    const char *root = getenv("PREFRUN_ROOT");
    snprintf(path, sizeof path, "%s/losses/sigmoid.lua", root ? root : ".");
    return path;
}

/* `prefrun train LOSS --out DIR` on the tiny config, with up to 3 --set. */
static int train(long fsize, char **out, const char *loss, const char *dir, const char *s1,
                 const char *s2, const char *s3)
{
    const char *tiny = in_tmp("tiny.yaml");
    return prefrun(fsize, out, "train", loss, "--task", "toy", "--config", tiny, "--out", dir,
                   "--quiet", "--set", s1 ? s1 : "seed=7", "--set", s2 ? s2 : "seed=7", "--set",
                   s3 ? s3 : "seed=7", (char *)NULL);
}

static int resume(char **out, const char *dir, const char *set)
{
    return prefrun(0, out, "train", "--resume", dir, "--quiet", "--set", set ? set : "seed=7",
                   (char *)NULL);
}

/* Every line of path parses as JSON and ends with '\n'; their count. */
static int whole_json_lines(const char *path, bool *torn)
{
    char *text = slurp(path);
    int n = 0;
    *torn = !text;
    for (char *l = text, *nl; l && *l; l = nl + 1, n++) {
        nl = strchr(l, '\n');
        json_t *j = nl ? json_loadb(l, (size_t)(nl - l), 0, NULL) : NULL;
        *torn |= !j;
        json_decref(j);
        if (!nl)
            break;
    }
    free(text);
    return n;
}

/* ---- 5: writes whose failure is ignored ---------------------------------- */

/* fsutil_append_line under the fault hook: a short write is cut back, no
 * room writes nothing, and the hook off again appends normally. */
static void append_line_cuts_a_torn_line_back(void)
{
    const char *path = in_tmp("append.jsonl");
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
    char err[512] = "";
    CHECK(fd >= 0 && fsutil_append_line(fd, path, "one\n", 4, err, sizeof err) == 0 &&
          fsutil_append_line(fd, path, "two\n", 4, err, sizeof err) == 0);
    fsutil_test_fail_after(3); /* "thr" fits, the rest does not */
    CHECK(fsutil_append_line(fd, path, "three-three\n", 12, err, sizeof err) == -1);
    CHECKF(strstr(err, path) && strstr(err, "No space left on device"), "%s", err);
    fsutil_test_fail_after(0);
    CHECK(fsutil_append_line(fd, path, "three\n", 6, err, sizeof err) == -1);
    char *text = slurp(path);
    CHECKF(text && strcmp(text, "one\ntwo\n") == 0, "%s", text ? text : "(none)");
    free(text);
    fsutil_test_fail_after(-1);
    CHECK(fsutil_append_line(fd, path, "four\n", 5, err, sizeof err) == 0);
    text = slurp(path);
    CHECKF(text && strcmp(text, "one\ntwo\nfour\n") == 0, "%s", text ? text : "(none)");
    free(text);
    close(fd);
    /* a real full device: ENOSPC, nothing written, nothing to cut */
    fd = open("/dev/full", O_WRONLY | O_APPEND);
    if (fd >= 0) {
        CHECK(fsutil_append_line(fd, "/dev/full", "x\n", 2, err, sizeof err) == -1);
        CHECKF(strstr(err, "/dev/full: No space left on device") && !strstr(err, "partial"), "%s",
               err);
        close(fd);
    }
}

/* The same on a real limit: in a child capped at 1000 bytes a file takes 16
 * lines of 60 bytes; the 17th is short (40 bytes) and then EFBIG, and is cut
 * back. */
static void append_line_under_a_real_file_size_limit(void)
{
    const char *path = in_tmp("limited.jsonl");
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit rl = {1000, 1000};
        int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_TRUNC, 0644);
        if (fd < 0 || signal(SIGXFSZ, SIG_IGN) == SIG_ERR || setrlimit(RLIMIT_FSIZE, &rl))
            _exit(2);
        char line[61], err[512] = "";
        memset(line, 'x', 59);
        line[59] = '\n';
        int n = 0;
        while (n < 100 && fsutil_append_line(fd, path, line, 60, err, sizeof err) == 0)
            n++;
        _exit(n == 16 && strstr(err, "File too large") ? 0 : 1);
    }
    int status = -1;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    char *text = slurp(path);
    CHECKF(text && strlen(text) == 960 && text[959] == '\n', "%zu bytes", text ? strlen(text) : 0);
    free(text);
}

/* `prefrun train` on a "disk" that fills at 4 KiB: exit 1 naming
 * metrics.jsonl and EFBIG, every line left whole, none torn. */
static void train_exits_nonzero_when_metrics_cannot_be_written(void)
{
    char *out, *cfg;
    char dir[256];
    dir_in_tmp(dir, "fsize-run");
    int rc = train(4096, &out, dpo(), dir, "logging_steps=1", "max_steps=40", "eval_steps=0");
    CHECKF(rc == 1, "exit %d: %s", rc, out);
    CHECKF(strstr(out, "metrics.jsonl: File too large") && strstr(out, "metrics of step"), "%s",
           out);
    free(out);
    bool torn;
    char metrics[600];
    snprintf(metrics, sizeof metrics, "%s", tfs_join(dir, "metrics.jsonl"));
    int n = whole_json_lines(metrics, &torn);
    char *text = slurp(metrics);
    size_t len = text ? strlen(text) : 0;
    CHECKF(!torn && n >= 2 && n < 40 && len <= 4096 && len > 0 && text[len - 1] == '\n',
           "%d lines, %zu bytes, torn %d", n, len, torn);
    free(text);
    cfg = slurp(tfs_join(dir, "config.yaml"));
    CHECK(cfg && strlen(cfg) < 4096); /* the run got as far as its metrics */
    free(cfg);
}

/* ---- 6: results that look like success ----------------------------------- */

static void train_fails_when_every_batch_is_skipped(void)
{
    const char *loss = in_tmp("always_nan.lua");
    write_text(loss, "return {\n"
                     "  name = \"always_nan\",\n"
                     "  params = {},\n"
                     "  loss = function(b)\n"
                     "    return -logsigmoid(b.policy_chosen_logps - b.policy_rejected_logps) * "
                     "(0 / 0)\n"
                     "  end,\n"
                     "}\n");
    char *out;
    int rc = train(0, &out, loss, in_tmp("all-skipped"), "nan_policy=skip", "max_steps=4", NULL);
    CHECKF(rc == 1 && strstr(out, "nan_policy = skip: 3 of the run's 4 steps skipped"),
           "exit %d: %s", rc, out);
    free(out);
}

/* A resumed run's weights (trainer_state.json's loss_weight.0) are checked
 * as --loss-weights are: a NaN is not taken for "absent", 1e39 is refused. */
static void resume_refuses_absurd_saved_weights(void)
{
    char dir[256];
    dir_in_tmp(dir, "saved-weights");
    char *out, state[600], *orig;
    int rc =
        prefrun(0, &out, "train", dpo(), "--task", "toy", "--config", in_tmp("tiny.yaml"), "--out",
                dir, "--quiet", "--loss-weights", "0.5", "--set", "max_steps=4", (char *)NULL);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    free(out);
    snprintf(state, sizeof state, "%s", tfs_join(dir, "checkpoint-4/trainer_state.json"));
    orig = slurp(state);
    const char *bad[] = {"\"nan\"", "1e39", "-2000000"};
    for (int i = 0; i < 3; i++) {
        char to[64];
        snprintf(to, sizeof to, "\"loss_weight.0\": %s", bad[i]);
        CHECK(edit(state, "\"loss_weight.0\": 0.5", to));
        rc = resume(&out, dir, "max_steps=6");
        CHECKF(rc == 3 && strstr(out, "the weight of loss 1 in") &&
                   strstr(out, "(value \"loss_weight.0\")") && strstr(out, "expected a finite"),
               "%s: exit %d: %s", bad[i], rc, out);
        free(out);
        write_text(state, orig);
    }
    free(orig);
    rc = prefrun(0, &out, "train", dpo(), "--loss-weights", "nan", (char *)NULL);
    CHECK(rc == 2); /* the flag itself, as before */
    free(out);
}

/* ---- 7: run directories that trap ---------------------------------------- */

/* A run killed (here: failed) before its first checkpoint cannot be
 * resumed, so it can be started over, replacing its metrics and config;
 * once it has a checkpoint it must be resumed. */
static void run_without_checkpoint_can_be_started_over(void)
{
    char dir[256];
    dir_in_tmp(dir, "restart");
    const char *boom = in_tmp("boom_at_3.lua");
    write_text(boom, "return {\n"
                     "  name = \"boom\",\n"
                     "  params = {},\n"
                     "  loss = function(b)\n"
                     "    if b.step == 2 then error(\"boom\") end\n"
                     "    return -logsigmoid(b.policy_chosen_logps - b.policy_rejected_logps)\n"
                     "  end,\n"
                     "}\n");
    char *out;
    int rc = train(0, &out, boom, dir, "logging_steps=1", "max_steps=6", NULL);
    CHECKF(rc == 1 && strstr(out, "boom"), "exit %d: %s", rc, out);
    free(out);
    bool torn;
    CHECK(whole_json_lines(tfs_join(dir, "metrics.jsonl"), &torn) == 2);
    rc = resume(&out, dir, NULL);
    CHECKF(rc == 3 && strstr(out, "no checkpoint"), "exit %d: %s", rc, out);
    free(out);
    rc = train(0, &out, dpo(), dir, "logging_steps=1", "max_steps=4", NULL);
    CHECKF(rc == 0, "restart: exit %d: %s", rc, out);
    free(out);
    int n = whole_json_lines(tfs_join(dir, "metrics.jsonl"), &torn);
    CHECKF(n == 5 && !torn, "%d lines", n); /* steps 1-4 and the final eval, nothing older */
    char *cfg = slurp(tfs_join(dir, "config.yaml"));
    CHECK(cfg && strstr(cfg, "max_steps: 4\n"));
    free(cfg);
    rc = train(0, &out, dpo(), dir, "max_steps=4", NULL, NULL);
    CHECKF(rc == 2 && strstr(out, "already holds a run with checkpoints") &&
               strstr(out, "--resume"),
           "exit %d: %s", rc, out);
    free(out);
}

/* Refused, exit 2, with the run or checkpoint in the way named: --out in a
 * run's checkpoint, below it, reached through `..` or a symlink, or given as
 * output_dir; a copied checkpoint directory and what is below it; a
 * directory that holds a run one level down. A sibling is fine. The run's
 * checkpoint is untouched. */
static void out_inside_another_run_is_refused(void)
{
    char run[256], real[PATH_MAX], ck_cfg[700], *out;
    dir_in_tmp(run, "outer");
    int rc = train(0, &out, dpo(), run, "max_steps=4", NULL, NULL);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    free(out);
    CHECK(realpath(run, real) != NULL);
    snprintf(ck_cfg, sizeof ck_cfg, "%s/checkpoint-4/config.yaml", run);
    char *before = slurp(ck_cfg);
    char link[256], copied[256], parent[256];
    dir_in_tmp(link, "link-to-ckpt");
    CHECK(symlink(tfs_join(run, "checkpoint-4"), link) == 0);
    /* below the run's checkpoint: itself, a new directory in it, through
     * `..` back into the run, through a symlink */
    const char *below[] = {"checkpoint-4", "checkpoint-4/sub", "checkpoint-4/../fresh", NULL};
    for (int i = 0; i < 4; i++) {
        char where[400];
        if (below[i])
            snprintf(where, sizeof where, "%s/%s", run, below[i]);
        else
            snprintf(where, sizeof where, "%s/x", link);
        rc = train(0, &out, dpo(), where, "max_steps=2", NULL, NULL);
        CHECKF(rc == 2 && strstr(out, "is inside the run") && strstr(out, real), "%s: exit %d: %s",
               where, rc, out);
        free(out);
    }
    char set[700];
    snprintf(set, sizeof set, "output_dir=%s", tfs_join(run, "nested"));
    rc = prefrun(0, &out, "train", dpo(), "--task", "toy", "--config", in_tmp("tiny.yaml"),
                 "--quiet", "--set", set, (char *)NULL);
    CHECKF(rc == 2 && strstr(out, "is inside the run"), "output_dir: exit %d: %s", rc, out);
    free(out);
    dir_in_tmp(copied, "copied-ckpt");
    char err[256];
    const FsReadCap cap = {.bytes = 1 << 20, .kind = "a trainer state"};
    CHECK(fsutil_mkdirs(copied, err, sizeof err) == 0 &&
          fsutil_copy_atomic(tfs_join(run, "checkpoint-4/trainer_state.json"), &cap,
                             tfs_join(copied, "trainer_state.json"), err, sizeof err) == 0);
    rc = train(0, &out, dpo(), copied, "max_steps=2", NULL, NULL);
    CHECKF(rc == 2 && strstr(out, "is a checkpoint directory"), "exit %d: %s", rc, out);
    free(out);
    rc = train(0, &out, dpo(), tfs_join(copied, "below"), "max_steps=2", NULL, NULL);
    CHECKF(rc == 2 && strstr(out, "is inside the checkpoint directory"), "exit %d: %s", rc, out);
    free(out);
    dir_in_tmp(parent, "parent");
    CHECK(fsutil_mkdirs(tfs_join(parent, "inner"), err, sizeof err) == 0);
    write_text(tfs_join(parent, "inner/config.yaml"), "seed: 1\n");
    write_text(tfs_join(parent, "inner/metrics.jsonl"), "");
    rc = train(0, &out, dpo(), parent, "max_steps=2", NULL, NULL);
    CHECKF(rc == 2 && strstr(out, "holds the run") && strstr(out, "inner"), "exit %d: %s", rc, out);
    free(out);
    rc = train(0, &out, dpo(), tfs_join(parent, "sibling"), "max_steps=2", NULL, NULL);
    CHECKF(rc == 0, "sibling: exit %d: %s", rc, out);
    free(out);
    char *after = slurp(ck_cfg);
    CHECK(before && after && strcmp(before, after) == 0);
    CHECK(!fsutil_exists(tfs_join(run, "checkpoint-4/metrics.jsonl")));
    free(before);
    free(after);
}

/* ---- 2: the trainer state against its checkpoint ------------------------- */

/* A state that claims another step than its checkpoint, one at the largest
 * count with max_steps at INT_MAX (no overflow: refused as finished), and a
 * resume to a max_steps behind the checkpoint are all refused, exit 3. */
static void resume_checks_the_state_against_its_checkpoint(void)
{
    char dir[256];
    dir_in_tmp(dir, "state");
    char *out, state[600], *orig;
    int rc = train(0, &out, dpo(), dir, "max_steps=4", NULL, NULL);
    CHECKF(rc == 0, "exit %d: %s", rc, out);
    free(out);
    snprintf(state, sizeof state, "%s", tfs_join(dir, "checkpoint-4/trainer_state.json"));
    orig = slurp(state);
    CHECK(edit(state, "\"step\": 4,", "\"step\": 2,"));
    rc = resume(&out, dir, "max_steps=6");
    CHECKF(rc == 3 && strstr(out, "step is 2, but the checkpoint is of step 4"), "exit %d: %s", rc,
           out);
    free(out);
    CHECK(edit(state, "\"step\": 2,", "\"step\": 9223372036854775807,"));
    rc = resume(&out, dir, "max_steps=6");
    CHECKF(rc == 3 && strstr(out, "field \"step\"") && !strstr(out, "runtime error"), "exit %d: %s",
           rc, out);
    free(out);
    write_text(state, orig);
    rc = resume(&out, dir, "max_steps=3");
    CHECKF(rc == 3 && strstr(out, "nothing left to train"), "exit %d: %s", rc, out);
    free(out);
    /* the largest step a state may hold, in a checkpoint of that name */
    const char *big = "9007199254740992";
    char from[300], to[300], text[64];
    snprintf(from, sizeof from, "%s", tfs_join(dir, "checkpoint-4"));
    snprintf(to, sizeof to, "%s/checkpoint-%s", dir, big);
    CHECK(rename(from, to) == 0);
    snprintf(state, sizeof state, "%s", tfs_join(to, "trainer_state.json"));
    snprintf(text, sizeof text, "\"step\": %s,", big);
    CHECK(edit(state, "\"step\": 4,", text));
    snprintf(text, sizeof text, "\"adam_t\": %s", big);
    CHECK(edit(state, "\"adam_t\": 4", text));
    snprintf(text, sizeof text, "checkpoint-%s\n", big);
    write_text(tfs_join(dir, "latest"), text);
    rc = resume(&out, dir, "max_steps=2147483647");
    CHECKF(rc == 3 && strstr(out, "nothing left to train") && !strstr(out, "runtime error"),
           "exit %d: %s", rc, out);
    free(out);
    free(orig);
}

int main(int argc, char **argv)
{
    (void)argc;
    const char *env = getenv("PREFRUN_EXE");
    char self[1024];
    snprintf(self, sizeof self, "%s", argv[0]);
    if (env)
        snprintf(exe, sizeof exe, "%s", env);
    else
        snprintf(exe, sizeof exe, "%s/prefrun", dirname(self));
    if (!mkdtemp(tmp)) {
        printf("Bail out! mkdtemp failed\n");
        return 1;
    }
    write_text(in_tmp("tiny.yaml"), "context: 32\nwidth: 32\nlayers: 1\nheads: 2\n"
                                    "toy_pairs: 200\nlearning_rate: 0.003\nmax_steps: 12\n"
                                    "logging_steps: 3\neval_steps: 10\nsave_steps: 0\n"
                                    "threads: 1\nseed: 7\n");
    RUN(append_line_cuts_a_torn_line_back);
    RUN(append_line_under_a_real_file_size_limit);
    RUN(train_exits_nonzero_when_metrics_cannot_be_written);
    RUN(train_fails_when_every_batch_is_skipped);
    RUN(resume_refuses_absurd_saved_weights);
    RUN(run_without_checkpoint_can_be_started_over);
    RUN(out_inside_another_run_is_refused);
    RUN(resume_checks_the_state_against_its_checkpoint);
    char err[256];
    fsutil_remove_tree(tmp, err, sizeof err);
    return tl_done();
}
