/*
 * test_hardening.c — the defect classes of issue 15, each with inputs of
 * its own: reads without a bound (caps checked while reading, special
 * files), metadata trusted before validation (a model header that lies
 * about its shape), and slow parsers on hostile structure (deeply nested
 * YAML). Expected outcomes are the documented caps, not prefrun's output.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lua/loss.h"
#include "lua/sandbox.h"
#include "model/checkpoint.h"
#include "model/model_file.h"
#include "train/config.h"
#include "util/fsutil.h"

#include "lossfix.h"
#include "testfs.h"
#include "testlib.h"

static char dir[] = "/tmp/prefrun_hardening_XXXXXX";

static const char *path_of(const char *name) { return tfs_join(dir, name); }

static void write_bytes(const char *path, const char *fill, size_t n)
{
    FILE *f = fopen(path, "wb");
    for (size_t i = 0; f && i < n; i++)
        fputc(fill[i % strlen(fill)], f);
    if (f)
        fclose(f);
}

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void a_read_stops_at_its_cap(void)
{
    FsReadCap cap = {.bytes = 1000, .kind = "a test file"};
    char *d, err[512];
    size_t n;
    write_bytes(path_of("exact"), "x", 1000);
    CHECK(fsutil_read_capped(path_of("exact"), &cap, &d, &n, err, sizeof err) == 0 && n == 1000);
    free(d);
    write_bytes(path_of("over"), "x", 1001);
    CHECK(fsutil_read_capped(path_of("over"), &cap, &d, &n, err, sizeof err) == -1);
    CHECKF(strstr(err, path_of("over")) && strstr(err, "1000 bytes") && strstr(err, "a test file"),
           "message: %s", err);
}

static void special_files_are_refused_or_bounded(void)
{
    FsReadCap strict = {.bytes = 1 << 20, .kind = "a loss script"};
    FsReadCap lenient = {.bytes = 1 << 20, .kind = "a data file", .special = true};
    char *d = NULL, err[512];
    size_t n;
    CHECK(fsutil_read_capped("/dev/zero", &strict, &d, &n, err, sizeof err) == -1);
    CHECKF(strstr(err, "character device"), "message: %s", err);
    /* /dev/zero never ends: read to the cap and no further */
    CHECK(fsutil_read_capped("/dev/zero", &lenient, &d, &n, err, sizeof err) == -1);
    CHECKF(strstr(err, "larger than 1048576 bytes"), "message: %s", err);
    CHECK(fsutil_read_capped(dir, &lenient, &d, &n, err, sizeof err) == -1);
    CHECKF(strstr(err, "a directory"), "message: %s", err);
    /* a FIFO with no writer: refused at once, not a hang in open() */
    CHECK(mkfifo(path_of("fifo"), 0600) == 0);
    double t0 = seconds();
    CHECK(fsutil_read_capped(path_of("fifo"), &strict, &d, &n, err, sizeof err) == -1);
    CHECKF(strstr(err, "a FIFO"), "message: %s", err);
    CHECK(seconds() - t0 < 5);
    /* a symlink to a device is the device */
    CHECK(symlink("/dev/zero", path_of("model.safetensors")) == 0);
    CHECK(model_file_read(NULL, path_of("model.safetensors"), err, sizeof err) == -1);
    CHECKF(strstr(err, "character device"), "message: %s", err);
}

static void a_loss_script_over_the_cap_is_refused_while_read(void)
{
    write_bytes(path_of("big.lua"), "-- padding\n", SANDBOX_MAX_SOURCE_BYTES + 1);
    char err[512];
    LossScript *ls = loss_load(path_of("big.lua"), NULL, NULL, err, sizeof err);
    CHECK(!ls);
    CHECKF(strstr(err, "larger than 1048576 bytes"), "message: %s", err);
    loss_free(ls);
    ls = loss_load("/dev/zero", NULL, NULL, err, sizeof err);
    CHECK(!ls);
    CHECKF(strstr(err, "expected a regular file"), "message: %s", err);
    loss_free(ls);
}

/* A safetensors file of ~500 KB whose metadata claims a 16M vocabulary. */
static void a_model_header_is_checked_against_the_file(void)
{
    const char *meta = "{\"__metadata__\":{\"vocab\":\"16000000\",\"context\":\"64\","
                       "\"width\":\"32\",\"layers\":\"1\",\"heads\":\"1\"},"
                       "\"x\":{\"dtype\":\"F32\",\"shape\":[125000],"
                       "\"data_offsets\":[0,500000]}}";
    uint64_t hlen = strlen(meta);
    FILE *f = fopen(path_of("liar.safetensors"), "wb");
    CHECK(f != NULL);
    if (!f)
        return;
    fwrite(&hlen, 8, 1, f); /* little-endian on the machines prefrun runs on */
    fwrite(meta, 1, hlen, f);
    for (int i = 0; i < 500000; i++)
        fputc(0, f);
    fclose(f);
    Gpt *m = (Gpt *)1;
    char err[512];
    CHECK(model_file_load(path_of("liar.safetensors"), NULL, &m, err, sizeof err) == -1);
    CHECK(m == NULL);
    CHECKF(strstr(err, "parameters") && strstr(err, "125000 values"), "message: %s", err);
}

/* Lua's formatter knows no %g: the message must survive a non-finite state */
static void a_non_finite_state_is_named_not_lost(void)
{
    const char *path = fx_write("return { name = 'nanstate', params = { beta = 0.1 },\n"
                                "  state = { x = 0 },\n"
                                "  loss = function(b, p, s) s.x = 0/0\n"
                                "    return -logsigmoid(p.beta * b.policy_chosen_logps) end }\n");
    char err[512] = "";
    LossScript *ls = path ? loss_load(path, NULL, NULL, err, sizeof err) : NULL;
    CHECKF(ls != NULL, "load: %s", err);
    if (ls) {
        TensorCtx *ctx = tensor_ctx_new(0);
        FxBatch fb;
        fx_batch(&fb, ctx, 4);
        CHECK(loss_eval(ls, ctx, &fb.b, err, sizeof err) == NULL);
        CHECKF(strstr(err, "state.x became") && strstr(err, "nan") &&
                   strstr(err, "expected a finite number") && !strstr(err, "invalid option"),
               "message: %s", err);
        tensor_ctx_free(ctx);
        CHECK(loss_state_value(ls, 0) == 0); /* the failed call committed nothing */
        loss_free(ls);
    }
    if (path)
        unlink(path);
}

static int load_state_text(const char *json, char *err, size_t errlen)
{
    char text[1024];
    snprintf(text, sizeof text, "{%s, \"rng\": [\"1\", \"2\", \"3\", \"4\"], \"values\": {}}",
             json);
    write_bytes(path_of("trainer_state.json"), text, strlen(text));
    TrainerState st;
    return ckpt_state_load(path_of("trainer_state.json"), &st, err, errlen);
}

#define STATE_FIELDS(step, adam)                                                                   \
    "\"format\": \"prefrun-trainer-state-1\", \"step\": " step ", \"epoch\": 0, "                  \
    "\"epoch_pos\": 3, \"tokens_seen\": 100, \"skipped_batches\": " adam

static void a_trainer_state_is_checked_field_by_field(void)
{
    char err[512];
    CHECKF(load_state_text(STATE_FIELDS("10", "0"), err, sizeof err) == 0, "%s", err);
    CHECK(load_state_text(STATE_FIELDS("-1", "0"), err, sizeof err) == -1);
    CHECKF(strstr(err, "field \"step\" is -1"), "message: %s", err);
    CHECK(load_state_text(STATE_FIELDS("9223372036854775807", "0"), err, sizeof err) == -1);
    CHECKF(strstr(err, "field \"step\" is 9223372036854775807"), "message: %s", err);
    CHECK(load_state_text(STATE_FIELDS("10", "-5"), err, sizeof err) == -1);
    CHECKF(strstr(err, "skipped_batches"), "message: %s", err);
    CHECK(load_state_text("\"format\": \"prefrun-trainer-state-2\", \"step\": 1, \"epoch\": 0, "
                          "\"epoch_pos\": 0, \"tokens_seen\": 0, \"skipped_batches\": 0",
                          err, sizeof err) == -1);
    CHECKF(strstr(err, "expected \"prefrun-trainer-state-1\""), "message: %s", err);
    CHECK(load_state_text("\"step\": 1, \"epoch\": 0, \"epoch_pos\": 0, \"tokens_seen\": 0, "
                          "\"skipped_batches\": 0",
                          err, sizeof err) == -1);
    CHECKF(strstr(err, "format is missing"), "message: %s", err);
    /* the state of checkpoint-12 that claims step 10 */
    CHECK(load_state_text(STATE_FIELDS("10", "0"), err, sizeof err) == 0);
    TrainerState st;
    CHECK(ckpt_state_load_at(dir, 12, &st, err, sizeof err) == -1);
    CHECKF(strstr(err, "step is 10, but the checkpoint is of step 12"), "message: %s", err);
    CHECK(ckpt_state_load_at(dir, 10, &st, err, sizeof err) == 0 && st.step == 10);
}

/* a diverged run's weights are refused where they enter, not evaluated */
static void non_finite_weights_are_refused_on_load(void)
{
    char err[512];
    GptConfig g = {.vocab = 257, .context = 16, .width = 16, .layers = 1, .heads = 2};
    Gpt *m = gpt_new(&g, false, err, sizeof err);
    CHECKF(m != NULL, "%s", err);
    if (!m)
        return;
    gpt_init(m, 7);
    CHECK(model_file_save(m, path_of("good.safetensors"), NULL, err, sizeof err) == 0);
    Gpt *back = NULL;
    CHECKF(model_file_load(path_of("good.safetensors"), NULL, &back, err, sizeof err) == 0, "%s",
           err);
    gpt_free(back);
    m->tensors[m->n_tensors - 1]->data[3] = NAN;
    CHECK(model_file_save(m, path_of("nan.safetensors"), NULL, err, sizeof err) == 0);
    back = (Gpt *)1;
    CHECK(model_file_load(path_of("nan.safetensors"), NULL, &back, err, sizeof err) == -1);
    CHECK(back == NULL);
    CHECKF(strstr(err, "holds NaN at element 3") && strstr(err, "not finite"), "message: %s", err);
    CHECK(model_file_read(m, path_of("nan.safetensors"), err, sizeof err) == -1);
    m->tensors[0]->data[0] = -INFINITY;
    CHECK(model_file_save(m, path_of("inf.safetensors"), NULL, err, sizeof err) == 0);
    CHECK(model_file_load(path_of("inf.safetensors"), NULL, &back, err, sizeof err) == -1);
    CHECKF(strstr(err, "an infinity"), "message: %s", err);
    gpt_free(m);
}

static char *nested(int depth)
{
    char *s = malloc((size_t)depth * 2 + 8);
    int k = sprintf(s, "a: ");
    for (int i = 0; i < depth; i++)
        s[k++] = '[';
    for (int i = 0; i < depth; i++)
        s[k++] = ']';
    s[k++] = '\n';
    s[k] = 0;
    return s;
}

static void deep_yaml_is_refused_before_it_is_built(void)
{
    char err[512];
    char *ok = nested(CONFIG_YAML_MAX_DEPTH - 1), *bad = nested(CONFIG_YAML_MAX_DEPTH);
    /* the mapping itself is one level */
    CHECK(config_yaml_depth_check(ok, strlen(ok), "ok.yaml", err, sizeof err) == 0);
    CHECK(config_yaml_depth_check(bad, strlen(bad), "bad.yaml", err, sizeof err) == -1);
    CHECKF(strstr(err, "bad.yaml:1: nested more than 32 deep"), "message: %s", err);
    free(ok);
    free(bad);
    char *hostile = nested(100000);
    write_bytes(path_of("deep.yaml"), hostile, strlen(hostile));
    Config c;
    config_defaults(&c);
    double t0 = seconds();
    CHECK(config_load_yaml(&c, path_of("deep.yaml"), err, sizeof err) == -1);
    CHECK(seconds() - t0 < 5); /* 18 s before the cap; milliseconds now */
    CHECKF(strstr(err, "nested more than 32 deep"), "message: %s", err);
    free(hostile);
    write_bytes(path_of("huge.yaml"), "# comment\n", CONFIG_YAML_MAX_BYTES + 1);
    CHECK(config_load_yaml(&c, path_of("huge.yaml"), err, sizeof err) == -1);
    CHECKF(strstr(err, "the cap for a YAML file"), "message: %s", err);
    CHECK(config_load_yaml(&c, "/dev/zero", err, sizeof err) == -1);
    CHECKF(strstr(err, "the cap for a YAML file"), "message: %s", err);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    RUN(a_read_stops_at_its_cap);
    RUN(special_files_are_refused_or_bounded);
    RUN(a_loss_script_over_the_cap_is_refused_while_read);
    RUN(a_model_header_is_checked_against_the_file);
    RUN(a_non_finite_state_is_named_not_lost);
    RUN(a_trainer_state_is_checked_field_by_field);
    RUN(non_finite_weights_are_refused_on_load);
    RUN(deep_yaml_is_refused_before_it_is_built);
    char err[256];
    fsutil_remove_tree(dir, err, sizeof err);
    return tl_done();
}
