/*
 * task/pretrain.c — cross-entropy pretraining of the task's reference model and
 * its cache (see pretrain.h for the model, the data layout and the key).
 *
 * One step: a batch of B document rows -> gpt_token_logps (every token
 * after the first is a target) -> mean negative log-likelihood -> backward
 * -> clip -> AdamW at the scheduled rate. Activations live in one context
 * reset every step; parameters and moments in the model's and optimizer's
 * own. Everything is a function of the options: corpus, init and order come
 * from the seed, and the kernels reduce in a fixed order.
 *
 * Letters: B rows per batch, T positions (the batch's longest row - 1),
 * n documents.
 */
#include "task/pretrain.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "train/data.h"
#include "util/jsonfile.h"
#include "util/errmsg.h"
#include "util/fsutil.h"
#include "core/ops.h"
#include "model/optim.h"
#include "core/rng.h"
#include "task/task.h"
#include "util/timeutil.h"
#include "train/train.h"
#include "model/model_file.h"

#define PATH_LEN 1400 /* a cache directory plus a file name */
#define DIR_LEN 1280
#define VAL_DOCS 512
#define VAL_STREAM 0x76616c696461746eULL /* "validatn": held-out documents' seed */
#define ORDER_STREAM 0x6f72646572ULL     /* "order": the batch order's seed */
#define MAX_GRAD_NORM 1.0

void pretrain_defaults(PretrainOptions *o)
{
    *o = (PretrainOptions){
        .model = {.vocab = DATA_VOCAB,
                  .context = PRETRAIN_CONTEXT,
                  .width = PRETRAIN_WIDTH,
                  .layers = PRETRAIN_LAYERS,
                  .heads = PRETRAIN_HEADS},
        .seed = 42,
        .docs = 40000,
        .steps = 1500,
        .batch = 32,
        .lr = 3e-3,
        .weight_decay = 0.01,
        .warmup_steps = 50,
        .numerics = TASK_NUMERICS_VERSION,
    };
}

/* ---- progress ------------------------------------------------------------ */

void pretrain_progress(FILE *f, const char *label, int64_t i, int64_t n, double elapsed,
                       const char *text)
{
    enum { WIDTH = 24 };
    if (!f || n <= 0)
        return;
    double eta = i > 0 ? elapsed * (double)(n - i) / (double)i : 0;
    if (isatty(fileno(f))) {
        char bar[WIDTH + 1];
        int full = (int)(WIDTH * i / n);
        for (int k = 0; k < WIDTH; k++)
            bar[k] = k < full ? '#' : '.';
        bar[WIDTH] = '\0';
        fprintf(f, "\r%s [%s] %lld/%lld  %s  %.0fs, eta %.0fs\033[K%s", label, bar, (long long)i,
                (long long)n, text, elapsed, eta, i == n ? "\n" : "");
    } else if (i == n || (n >= 10 && i % (n / 10) == 0 && i > 0)) {
        fprintf(f, "%s: %lld/%lld  %s  %.0fs\n", label, (long long)i, (long long)n, text, elapsed);
    }
    fflush(f);
}

/* ---- corpus rows ---------------------------------------------------------- */

typedef struct Rows {
    int64_t n;
    int32_t *tok; // (total) every row back to back
    int64_t *off; // (n)
    int *len;     // (n) tokens, <= context + 1
} Rows;

static void rows_free(Rows *r)
{
    free(r->tok);
    free(r->off);
    free(r->len);
    *r = (Rows){0};
}

/* [EOT] doc-without-'\n' [EOT] per document, cut to maxlen tokens. */
static int rows_from_text(const char *text, size_t len, int maxlen, Rows *r, char *err,
                          size_t errlen)
{
    int64_t docs = 0;
    for (size_t i = 0; i < len; i++)
        docs += text[i] == TASK_EOD;
    r->tok = malloc((len + 2 * (size_t)docs + 1) * sizeof *r->tok);
    r->off = malloc(((size_t)docs + 1) * sizeof *r->off);
    r->len = malloc(((size_t)docs + 1) * sizeof *r->len);
    if (!r->tok || !r->off || !r->len)
        return err_fail(err, errlen, "pretrain: out of memory for %lld documents", (long long)docs);
    int64_t at = 0;
    for (size_t s = 0, i = 0; i < len; i++) {
        if (text[i] != TASK_EOD)
            continue;
        int n = (int)(i - s) + 2;
        n = n > maxlen ? maxlen : n;
        r->off[r->n] = at;
        r->len[r->n++] = n;
        r->tok[at] = DATA_TOK_EOT;
        data_tokenize(text + s, (size_t)(n - 1), r->tok + at + 1);
        r->tok[at + n - 1] = DATA_TOK_EOT; /* a cut document loses its tail, keeps its end */
        at += n;
        s = i + 1;
    }
    return 0;
}

static int rows_make(uint64_t seed, int64_t docs, int maxlen, Rows *r, char *err, size_t errlen)
{
    char *text;
    size_t len;
    *r = (Rows){0};
    if (task_corpus(seed, docs, &text, &len, err, errlen) != 0)
        return -1;
    int rc = rows_from_text(text, len, maxlen, r, err, errlen);
    free(text);
    if (rc != 0)
        rows_free(r);
    return rc;
}

/* ids and targets (B, T) of rows idx[0..B-1]; returns the target count. */
static int64_t fill_batch(const Rows *r, const int32_t *idx, int B, int32_t *ids, int32_t *tg,
                          int *T_out)
{
    int T = 1;
    for (int b = 0; b < B; b++)
        T = r->len[idx[b]] - 1 > T ? r->len[idx[b]] - 1 : T;
    int64_t count = 0;
    for (int b = 0; b < B; b++) {
        const int32_t *s = r->tok + r->off[idx[b]];
        int n = r->len[idx[b]];
        for (int t = 0; t < T; t++) {
            ids[b * T + t] = t < n ? s[t] : DATA_TOK_EOT;
            tg[b * T + t] = t + 1 < n ? s[t + 1] : -1;
            count += t + 1 < n;
        }
    }
    *T_out = T;
    return count;
}

/* ---- training ------------------------------------------------------------ */

typedef struct Pre {
    const PretrainOptions *o;
    Gpt *m;
    AdamW *adam;
    TensorCtx *ctx;
    Rows train, val;
    int32_t *order; // (train.n) this epoch's permutation
    int64_t pos;
    Rng rng;
    int32_t *idx, *ids, *tg; // (B), (B, maxT), (B, maxT)
    LrSchedule sched;
} Pre;

static int make_optimizer(Pre *p, char *err, size_t errlen)
{
    Gpt *m = p->m;
    OptimSegment *seg = malloc((size_t)m->n_tensors * sizeof *seg);
    if (!seg)
        return err_fail(err, errlen, "pretrain: out of memory");
    int64_t off = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        seg[i] = (OptimSegment){off, m->tensors[i]->size, gpt_tensor_decays(m, i)};
        off += seg[i].size;
    }
    AdamWConfig ac = {0.9, 0.999, 1e-8, p->o->weight_decay};
    p->adam = adamw_new(off, seg, m->n_tensors, &ac, err, errlen);
    free(seg);
    return p->adam ? 0 : -1;
}

static int check_options(const PretrainOptions *o, char *err, size_t errlen)
{
    if (gpt_config_check(&o->model, err, errlen) != 0)
        return -1;
    if (o->model.vocab < DATA_VOCAB)
        return err_fail(err, errlen, "pretrain: vocab %d is below the tokenizer's %d",
                        o->model.vocab, DATA_VOCAB);
    if (o->model.context < 2 || o->docs < 1 || o->steps < 1 || o->batch < 1 || !(o->lr > 0) ||
        o->weight_decay < 0 || o->warmup_steps < 0)
        return err_fail(err, errlen,
                        "pretrain: context >= 2, docs, steps, batch >= 1 and lr > 0 "
                        "are required");
    return 0;
}

static int pre_setup(Pre *p, const PretrainOptions *o, char *err, size_t errlen)
{
    *p = (Pre){.o = o};
    if (check_options(o, err, errlen) != 0)
        return -1;
    int maxlen = o->model.context + 1, B = o->batch;
    if (rows_make(o->seed, o->docs, maxlen, &p->train, err, errlen) != 0 ||
        rows_make(o->seed ^ VAL_STREAM, VAL_DOCS, maxlen, &p->val, err, errlen) != 0)
        return -1;
    if (!(p->m = gpt_new(&o->model, true, err, errlen)))
        return -1;
    gpt_init(p->m, o->seed);
    if (make_optimizer(p, err, errlen) != 0)
        return -1;
    p->ctx = tensor_ctx_new(0);
    p->order = malloc((size_t)p->train.n * sizeof *p->order);
    p->idx = malloc((size_t)B * sizeof *p->idx);
    p->ids = malloc((size_t)B * maxlen * sizeof *p->ids);
    p->tg = malloc((size_t)B * maxlen * sizeof *p->tg);
    if (!p->ctx || !p->order || !p->idx || !p->ids || !p->tg)
        return err_fail(err, errlen, "pretrain: out of memory");
    rng_seed(&p->rng, o->seed ^ ORDER_STREAM);
    p->pos = p->train.n; /* the first batch shuffles */
    p->sched = (LrSchedule){LR_COSINE, o->lr, o->warmup_steps, o->steps};
    return 0;
}

static void pre_free(Pre *p)
{
    adamw_free(p->adam);
    tensor_ctx_free(p->ctx);
    rows_free(&p->train);
    rows_free(&p->val);
    free(p->order);
    free(p->idx);
    free(p->ids);
    free(p->tg);
    gpt_free(p->m);
}

static void next_indices(Pre *p)
{
    for (int b = 0; b < p->o->batch; b++) {
        if (p->pos == p->train.n) {
            for (int64_t i = 0; i < p->train.n; i++)
                p->order[i] = (int32_t)i;
            rng_shuffle(&p->rng, p->order, p->train.n);
            p->pos = 0;
        }
        p->idx[b] = p->order[p->pos++];
    }
}

/* Mean NLL of rows idx (B) as a scalar node, or NULL with ctx's error. */
static Tensor *batch_nll(Pre *p, const Rows *r, int B)
{
    int T;
    int64_t count = fill_batch(r, p->idx, B, p->ids, p->tg, &T);
    Tensor *lp = gpt_token_logps(p->m, p->ctx, p->ids, p->tg, B, T); // (B, T)
    Tensor *sum = ag_sum(p->ctx, lp, AG_ALL, false);
    return ag_mul(p->ctx, sum, tensor_scalar(p->ctx, -1.0f / (float)count));
}

static int pre_step(Pre *p, int64_t step, double *loss, char *err, size_t errlen)
{
    tensor_ctx_reset(p->ctx);
    gpt_zero_grad(p->m);
    next_indices(p);
    Tensor *nll = batch_nll(p, &p->train, p->o->batch);
    if (!nll || ag_backward(p->ctx, nll, NULL) != 0)
        return err_fail(err, errlen, "pretrain: step %lld: %s", (long long)step + 1,
                        tensor_ctx_error(p->ctx));
    *loss = nll->data[0];
    if (!isfinite(*loss))
        return err_fail(err, errlen, "pretrain: step %lld: the loss is %g", (long long)step + 1,
                        *loss);
    float *params = p->m->all->data, *grads = p->m->all->grad;
    optim_clip_grad_norm(grads, p->m->all->size, MAX_GRAD_NORM);
    adamw_step(p->adam, params, grads, lr_at(&p->sched, step));
    return 0;
}

/* Mean NLL per token over the held-out rows, in no_grad batches. */
static double val_loss(Pre *p)
{
    double total = 0, count = 0;
    p->ctx->no_grad = true;
    for (int64_t i0 = 0; i0 < p->val.n; i0 += p->o->batch) {
        int B = (int)(p->val.n - i0 < p->o->batch ? p->val.n - i0 : p->o->batch), T;
        for (int b = 0; b < B; b++)
            p->idx[b] = (int32_t)(i0 + b);
        int64_t c = fill_batch(&p->val, p->idx, B, p->ids, p->tg, &T);
        tensor_ctx_reset(p->ctx);
        Tensor *lp = gpt_token_logps(p->m, p->ctx, p->ids, p->tg, B, T);
        for (int64_t k = 0; lp && k < lp->size; k++)
            total -= lp->data[k];
        count += (double)c;
    }
    p->ctx->no_grad = false;
    tensor_ctx_reset(p->ctx);
    return count > 0 ? total / count : NAN;
}

static int pre_loop(Pre *p, PretrainResult *res, char *err, size_t errlen)
{
    const PretrainOptions *o = p->o;
    FILE *f = o->quiet ? NULL : o->progress ? o->progress : stderr;
    double t0 = timeutil_now(), tail = 0, ema = 0;
    int64_t tail_from = o->steps - (o->steps + 9) / 10, tail_n = 0;
    for (int64_t s = 0; s < o->steps; s++) {
        double loss = 0;
        if (pre_step(p, s, &loss, err, errlen) != 0)
            return -1;
        ema = s == 0 ? loss : 0.95 * ema + 0.05 * loss;
        if (s >= tail_from) {
            tail += loss;
            tail_n++;
        }
        char text[64];
        snprintf(text, sizeof text, "loss %.3f", ema);
        pretrain_progress(f, "pretrain", s + 1, o->steps, timeutil_now() - t0, text);
    }
    res->steps = o->steps;
    res->train_loss = tail / (double)(tail_n ? tail_n : 1);
    res->val_loss = val_loss(p);
    res->seconds = timeutil_now() - t0;
    return 0;
}

int pretrain_run(const PretrainOptions *o, Gpt **out, PretrainResult *res, char *err, size_t errlen)
{
    Pre p;
    PretrainResult r = {0};
    *out = NULL;
    if (o->threads >= 0)
        train_set_threads(o->threads);
    int rc = pre_setup(&p, o, err, errlen);
    if (rc == 0)
        rc = pre_loop(&p, &r, err, errlen);
    if (rc == 0) {
        *out = p.m;
        p.m = NULL;
    }
    pre_free(&p);
    if (res)
        *res = r;
    return rc;
}

/* ---- cache ---------------------------------------------------------------- */

int pretrain_cache_root(const char *override, char *out, size_t len, char *err, size_t errlen)
{
    const char *env = getenv("PREFRUN_CACHE"), *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    int n;
    if (override && *override)
        n = snprintf(out, len, "%s", override);
    else if (env && *env)
        n = snprintf(out, len, "%s", env);
    else if (xdg && *xdg)
        n = snprintf(out, len, "%s/prefrun", xdg);
    else if (home && *home)
        n = snprintf(out, len, "%s/.cache/prefrun", home);
    else
        return err_fail(err, errlen, "pretrain: no cache directory: set PREFRUN_CACHE or HOME");
    if (n < 0 || (size_t)n >= len)
        return err_fail(err, errlen, "pretrain: cache path too long");
    return 0;
}

/* Every option that changes the weights, as text: the hash's input and the
 * manifest's "options". */
static void options_text(const PretrainOptions *o, char *buf, size_t len)
{
    const GptConfig *g = &o->model;
    snprintf(buf, len,
             "task=%d seed=%llu vocab=%d context=%d width=%d layers=%d heads=%d docs=%lld "
             "steps=%lld batch=%d lr=%.17g wd=%.17g warmup=%d numerics=%d",
             TASK_VERSION, (unsigned long long)o->seed, g->vocab, g->context, g->width, g->layers,
             g->heads, (long long)o->docs, (long long)o->steps, o->batch, o->lr, o->weight_decay,
             o->warmup_steps, o->numerics);
}

static uint32_t fnv1a32(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

int pretrain_cache_dir(const PretrainOptions *o, const char *root, char *out, size_t len, char *err,
                       size_t errlen)
{
    char key[128], text[512];
    task_cache_key(key, sizeof key, o->seed);
    options_text(o, text, sizeof text);
    const GptConfig *g = &o->model;
    int n = snprintf(out, len, "%s/%s/ref-L%d-C%d-H%d-T%d-%08x", root, key, g->layers, g->width,
                     g->heads, g->context, fnv1a32(text));
    if (n < 0 || (size_t)n >= len)
        return err_fail(err, errlen, "pretrain: cache path too long");
    return 0;
}

static int write_manifest(const char *dir, const PretrainOptions *o, const PretrainResult *r,
                          char *err, size_t errlen)
{
    char text[512], path[PATH_LEN + 32];
    options_text(o, text, sizeof text);
    json_t *j =
        json_pack("{s:s, s:I, s:f, s:f, s:f}", "options", text, "steps", (json_int_t)r->steps,
                  "train_loss", r->train_loss, "val_loss", r->val_loss, "seconds", r->seconds);
    char *s = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (!s)
        return err_fail(err, errlen, "pretrain: out of memory");
    snprintf(path, sizeof path, "%s/reference.json", dir);
    size_t n = strlen(s);
    s[n] = '\n'; /* json_dumps leaves room: its NUL becomes the final newline */
    int rc = fsutil_write_atomic(path, s, n + 1, err, errlen);
    free(s);
    return rc;
}

static int build_reference(const PretrainOptions *o, const char *dir, const char *path,
                           PretrainResult *res, char *err, size_t errlen)
{
    Gpt *m;
    if (pretrain_run(o, &m, res, err, errlen) != 0)
        return -1;
    char text[512], val[32];
    options_text(o, text, sizeof text);
    snprintf(val, sizeof val, "%.4f", res->val_loss);
    const char *meta[] = {"producer", "prefrun pretrain", "pretrain", text, "val_loss", val, NULL};
    int rc = model_file_save(m, path, meta, err, errlen);
    gpt_free(m);
    return rc == 0 ? write_manifest(dir, o, res, err, errlen) : -1;
}

/* What a cached build reported (best effort: the weights are what count). */
static void read_manifest(const char *dir, PretrainResult *res)
{
    char path[PATH_LEN + 32];
    snprintf(path, sizeof path, "%s/reference.json", dir);
    json_t *j = jsonfile_load(
        path, (&(const FsReadCap){.bytes = (size_t)1 << 20, .kind = "a reference manifest"}), NULL,
        0);
    res->cached = true;
    res->steps = json_integer_value(json_object_get(j, "steps"));
    res->train_loss = json_number_value(json_object_get(j, "train_loss"));
    res->val_loss = json_number_value(json_object_get(j, "val_loss"));
    res->seconds = json_number_value(json_object_get(j, "seconds"));
    json_decref(j);
}

int pretrain_reference(const PretrainOptions *o, const char *root, bool force, char *path,
                       size_t plen, PretrainResult *res, char *err, size_t errlen)
{
    char r[1024], dir[DIR_LEN];
    PretrainResult local = {0};
    res = res ? res : &local;
    *res = (PretrainResult){0};
    if (check_options(o, err, errlen) != 0 ||
        pretrain_cache_root(root, r, sizeof r, err, errlen) != 0 ||
        pretrain_cache_dir(o, r, dir, sizeof dir, err, errlen) != 0 ||
        fsutil_mkdirs(dir, err, errlen) != 0)
        return -1;
    if ((size_t)snprintf(path, plen, "%s/%s", dir, PRETRAIN_FILE) >= plen)
        return err_fail(err, errlen, "pretrain: cache path too long");
    int fd = fsutil_lock_dir(dir, err, errlen);
    if (fd < 0)
        return -1;
    int rc = 0;
    if (force || !fsutil_exists(path))
        rc = build_reference(o, dir, path, res, err, errlen);
    else
        read_manifest(dir, res);
    close(fd); /* releases the lock */
    return rc;
}
