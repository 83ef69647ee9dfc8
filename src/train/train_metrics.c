/*
 * train/train_metrics.c — what a run reports: RUN_DIR/metrics.jsonl (opened
 * fresh, or cut back to the resumed step), the sums of a logging interval
 * and the lines written from them, and the progress output.
 *
 * A metrics line is a function of the sums, the counters and the data order's
 * position only (tokens_per_sec aside), so a resumed run, whose checkpoint
 * restores all three, writes the same lines as an uninterrupted one.
 *
 * Every line is one checked append of the whole line: on a full disk the
 * file is cut back to its last whole line and the run fails naming it, so
 * metrics.jsonl never holds a torn line, nor ends early in a run that
 * reports success.
 */
#include "train/train_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util/fsutil.h"
#include "util/timeutil.h"

/* Keeps the metrics lines of steps <= step (a run killed after its last
 * checkpoint may have logged past it), rewritten atomically. */
static int truncate_metrics(const char *path, int64_t step, char *err, size_t errlen)
{
    char *text;
    size_t len;
    if (!fsutil_exists(path))
        return 0;
    static const FsReadCap cap = {.bytes = (size_t)256 << 20, .kind = "a run's metrics"};
    if (fsutil_read_capped(path, &cap, &text, &len, err, errlen) != 0)
        return -1;
    FsAtomic *f = fsutil_atomic_open(path, err, errlen);
    if (!f) {
        free(text);
        return -1;
    }
    for (char *line = text, *next; line && *line; line = next) {
        char *nl = strchr(line, '\n');
        next = nl ? nl + 1 : NULL;
        if (!nl)
            break; /* a torn last line: the kill came mid-write */
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, NULL);
        json_t *s = j ? json_object_get(j, "step") : NULL;
        if (s && json_is_integer(s) && json_integer_value(s) <= step)
            fsutil_atomic_write(f, line, (size_t)(next - line));
        json_decref(j);
    }
    free(text);
    return fsutil_atomic_commit(f, err, errlen);
}
int trainer_open_metrics(Trainer *tr, char *err, size_t errlen)
{
    snprintf(tr->metrics_path, sizeof tr->metrics_path, "%s/metrics.jsonl", tr->run_dir);
    const char *path = tr->metrics_path;
    if (tr->opt->resume) {
        if (truncate_metrics(path, tr->step, err, errlen) != 0)
            return -1;
    } else if (fsutil_exists(path) && remove(path) != 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    /* O_APPEND: each line lands at the end, where fsutil_append_line can cut it off again */
    tr->metrics_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (tr->metrics_fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static double epoch_now(const Trainer *tr)
{
    return (double)tr->order.epoch + (double)tr->order.pos / (double)tr->order.n;
}
/* One metrics line, formatted whole before it is written: a write either
 * appends all of it or nothing (fsutil_append_line). */
#define LINE_CAP 2048 /* a line is about 400 bytes */
typedef struct Line {
    char s[LINE_CAP];
    size_t len;
    bool overflow;
} Line;

static void put(Line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(Line *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = l->overflow ? -1 : vsnprintf(l->s + l->len, LINE_CAP - l->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= LINE_CAP - l->len)
        l->overflow = true;
    else
        l->len += (size_t)n;
}
/* ", "KEY": value" with %.10g (exact to float precision, and the same text
 * for the same number); JSON has no NaN or Inf, so those are written null. */
static void json_num(Line *l, const char *prefix, const char *key, double v)
{
    if (isfinite(v))
        put(l, ", \"%s%s\": %.10g", prefix, key, v);
    else
        put(l, ", \"%s%s\": null", prefix, key);
}
/* One JSON object per line, keys in a fixed order (TRL's names). A failed
 * write ends the run: a metrics file with lines missing is not a result. */
int trainer_write_metrics(Trainer *tr, const char *prefix, const MetricSums *m, bool train,
                          double tok_per_sec, char *err, size_t errlen)
{
    if (tr->rank > 0) /* rank 0 writes the run's metrics */
        return 0;
    double w = m->weight > 0 ? m->weight : 1;
    Line l = {.len = 0};
    put(&l, "{\"epoch\": %.6g", epoch_now(tr));
    json_num(&l, prefix, "loss", m->loss / w);
    if (train) {
        json_num(&l, "", "grad_norm", m->grad_norm);
        json_num(&l, "", "learning_rate", m->lr);
    }
    json_num(&l, prefix, "rewards/chosen", m->chosen / w);
    json_num(&l, prefix, "rewards/rejected", m->rejected / w);
    json_num(&l, prefix, "rewards/accuracies", m->accuracy / w);
    json_num(&l, prefix, "rewards/margins", m->margin / w);
    json_num(&l, prefix, "logps/chosen", m->logp_chosen / w);
    json_num(&l, prefix, "logps/rejected", m->logp_rejected / w);
    if (train && tr->skipped > 0)
        put(&l, ", \"skipped_batches\": %lld", (long long)tr->skipped);
    put(&l, ", \"tokens_per_sec\": %.1f, \"step\": %lld}\n", tok_per_sec, (long long)tr->step);
    if (l.overflow) {
        snprintf(err, errlen, "%s: a metrics line of step %lld is longer than %d bytes",
                 tr->metrics_path, (long long)tr->step, LINE_CAP);
        return -1;
    }
    char why[MSG_LEN];
    if (fsutil_append_line(tr->metrics_fd, tr->metrics_path, l.s, l.len, why, sizeof why) != 0) {
        snprintf(err, errlen, "metrics of step %lld: %s", (long long)tr->step, why);
        return -1;
    }
    return 0;
}
/* TRL's reward metrics of one micro-batch, added to m with weight w. */
void metric_sums_add(MetricSums *m, double beta, const GptPairLogps *pol, const RefLogps *ref,
                     int B, double loss, double w)
{
    double ch = 0, rj = 0, acc = 0, lc = 0, lr = 0;
    for (int b = 0; b < B; b++) {
        double rc = beta * ((double)pol->chosen->data[b] - ref->chosen->data[b]);
        double rr = beta * ((double)pol->rejected->data[b] - ref->rejected->data[b]);
        ch += rc;
        rj += rr;
        acc += rc > rr;
        lc += pol->chosen->data[b];
        lr += pol->rejected->data[b];
    }
    m->loss += w * loss;
    m->chosen += w * ch / B;
    m->rejected += w * rj / B;
    m->accuracy += w * acc / B;
    m->margin += w * (ch - rj) / B;
    m->logp_chosen += w * lc / B;
    m->logp_rejected += w * lr / B;
    m->weight += w;
}
/* A training micro-batch into the interval's sums and the run's counters. */
void trainer_count_micro_batch(Trainer *tr, const StepBatch *s, const GptPairLogps *pol,
                               const RefLogps *ref, double loss)
{
    metric_sums_add(&tr->sums, tr->beta, pol, ref, s->B, loss, 1.0);
    tr->sums.tokens += (double)s->tokens;
    tr->interval_tokens += (double)s->tokens;
    tr->tokens_seen += s->tokens;
}

static void format_eta(double seconds, char *out, size_t len)
{
    long s = seconds > 0 && seconds < 1e7 ? (long)(seconds + 0.5) : 0;
    snprintf(out, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
}
static void show_progress(Trainer *tr, const MetricSums *m, bool logged)
{
    if (tr->quiet)
        return;
    double w = m->weight > 0 ? m->weight : 1, el = timeutil_now() - tr->t_start;
    int64_t done = tr->step - tr->step_at_start;
    char eta[32];
    format_eta(done > 0 ? el / (double)done * (double)(tr->total_steps - tr->step) : 0, eta,
               sizeof eta);
    if (tr->tty) {
        int width = 24, fill = (int)(width * tr->step / tr->total_steps);
        fprintf(tr->progress, "\r[%.*s%*s] step %lld/%lld  loss %.4f  acc %.3f  ETA %s ", fill,
                "========================", width - fill, "", (long long)tr->step,
                (long long)tr->total_steps, m->loss / w, m->accuracy / w, eta);
        if (tr->step == tr->total_steps)
            fputc('\n', tr->progress);
    } else if (logged) {
        fprintf(tr->progress, "step %lld/%lld  loss %.4f  acc %.3f  lr %.3g  ETA %s\n",
                (long long)tr->step, (long long)tr->total_steps, m->loss / w, m->accuracy / w,
                m->lr, eta);
    }
    fflush(tr->progress);
}
int trainer_log_step(Trainer *tr, TrainResult *res, char *err, size_t errlen)
{
    bool due = tr->step % tr->cfg.logging_steps == 0 || tr->step == tr->total_steps;
    show_progress(tr, &tr->sums, due);
    if (!due || tr->sums.weight == 0)
        return 0;
    double el = timeutil_now() - tr->t_interval;
    if (trainer_write_metrics(tr, "", &tr->sums, true, el > 0 ? tr->interval_tokens / el : 0, err,
                              errlen) != 0)
        return -1;
    double w = tr->sums.weight;
    res->last_loss = tr->sums.loss / w;
    res->last_accuracy = tr->sums.accuracy / w;
    tr->sums = (MetricSums){0};
    tr->interval_tokens = 0;
    tr->t_interval = timeutil_now();
    return 0;
}
