/*
 * discover/propose_llm.c — the `llm` proposer: an OpenAI-compatible chat-completions
 * endpoint (OpenAI, vLLM, llama.cpp's server, Ollama) through libcurl.
 *
 * One candidate is one request: POST {url}/chat/completions (or the URL
 * itself when it already ends so) with {"model", "messages": [system, user],
 * "temperature", "max_tokens"}; the reply is choices[0].message.content.
 *
 * Failures, and what the loop does with them:
 *   - 429, 5xx, timeouts, refused or dropped connections: retried `retries`
 *     times, waiting backoff, 2 backoff, 4 backoff, ... seconds (a
 *     Retry-After header, capped at a minute, wins when longer); then fatal;
 *   - other HTTP errors (401, 404, 400 ...): fatal at once, with the
 *     status, the server's message and, for 401/403, the key variable;
 *   - a 200 whose body is not a completion, a refusal (message.refusal, or
 *     finish_reason "content_filter"), or content without code: not fatal —
 *     the candidate is archived as no_code with that reason.
 * The API key comes from the environment variable named by key_env; when it
 * is unset no Authorization header is sent (local servers need none).
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "util/fsutil.h"
#include "discover/propose.h"

#define MAX_BODY ((size_t)8 << 20)
#define MAX_RETRY_AFTER 60.0

typedef struct Llm {
    ProposeConfig cfg;
    char endpoint[PROPOSE_STR_LEN + 32];
} Llm;

typedef struct Response {
    char *body;
    size_t len;
    bool too_big;
    double retry_after; /* seconds; 0: no header */
} Response;

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    Response *r = ud;
    size_t k = size * n;
    if (r->len + k + 1 > MAX_BODY) {
        r->too_big = true;
        return 0; /* aborts the transfer */
    }
    char *nb = realloc(r->body, r->len + k + 1);
    if (!nb)
        return 0;
    memcpy(nb + r->len, data, k);
    r->body = nb;
    r->len += k;
    r->body[r->len] = '\0';
    return k;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    Response *r = ud;
    size_t k = size * n;
    if (k > 12 && strncasecmp(data, "retry-after:", 12) == 0)
        r->retry_after = atof(data + 12); /* seconds form; an HTTP date reads as 0 */
    return k;
}

static void *llm_create(const ProposeConfig *cfg, char *err, size_t errlen)
{
    static bool curl_ready;
    if (!curl_ready && curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        snprintf(err, errlen, "llm: libcurl failed to initialise");
        return NULL;
    }
    curl_ready = true; /* once per process: curl_global_init is not reentrant */
    if (!fsutil_exists(cfg->prompt_path)) {
        snprintf(err, errlen, "llm: prompt template %s not found", cfg->prompt_path);
        return NULL;
    }
    Llm *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "llm: out of memory");
        return NULL;
    }
    l->cfg = *cfg;
    size_t n = strlen(cfg->url);
    while (n > 0 && cfg->url[n - 1] == '/')
        n--;
    const char *tail = "/chat/completions";
    bool full = n >= strlen(tail) && strncmp(cfg->url + n - strlen(tail), tail, strlen(tail)) == 0;
    snprintf(l->endpoint, sizeof l->endpoint, "%.*s%s", (int)n, cfg->url, full ? "" : tail);
    return l;
}

static void llm_destroy(void *state) { free(state); }

static char *request_body(const Llm *l, const char *system, const char *user)
{
    json_t *msgs = json_array();
    if (system[strspn(system, " \t\r\n")])
        json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", system));
    json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "user", "content", user));
    json_t *req = json_pack("{s:s, s:o, s:f}", "model", l->cfg.model, "messages", msgs,
                            "temperature", l->cfg.temperature);
    if (req && l->cfg.max_tokens > 0)
        json_object_set_new(req, "max_tokens", json_integer(l->cfg.max_tokens));
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    return text;
}

/* one POST; the curl code, with *status the HTTP status (0 without one) */
static CURLcode post(const Llm *l, const char *body, Response *r, long *status, char *cerr)
{
    CURL *c = curl_easy_init();
    if (!c)
        return CURLE_FAILED_INIT;
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    const char *key = getenv(l->cfg.key_env);
    char auth[4096];
    if (key && *key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, l->endpoint);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)(l->cfg.connect_timeout * 1000));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(l->cfg.timeout * 1000));
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM for DNS timeouts */
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "prefrun-discover");
    cerr[0] = '\0';
    CURLcode rc = curl_easy_perform(c);
    *status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return rc;
}

static bool transient(CURLcode rc, long status)
{
    if (rc == CURLE_OK)
        return status == 429 || status >= 500;
    return rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_COULDNT_CONNECT ||
           rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR ||
           rc == CURLE_PARTIAL_FILE || rc == CURLE_COULDNT_RESOLVE_HOST;
}

static void sleep_seconds(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* the server's own message: error.message of an OpenAI error body, or the start of the body */
static void server_message(const Response *r, char *out, size_t n)
{
    json_t *j = r->body ? json_loads(r->body, 0, NULL) : NULL;
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    snprintf(out, n, "%.300s", m ? m : r->body ? r->body : "");
    json_decref(j);
}

static void describe_failure(const Llm *l, CURLcode rc, long status, const Response *r,
                             const char *cerr, int attempts, char *err, size_t errlen)
{
    const char *tries = attempts == 1 ? "attempt" : "attempts";
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "llm: %s: %s%s%s (after %d %s)", l->endpoint, curl_easy_strerror(rc),
                 cerr[0] ? ": " : "", cerr, attempts, tries);
        return;
    }
    char msg[320], key[200] = "";
    server_message(r, msg, sizeof msg);
    if (status == 401 || status == 403) /* name the variable the key is read from */
        snprintf(key, sizeof key, "; check the API key in $%s (%s)", l->cfg.key_env,
                 getenv(l->cfg.key_env) ? "set" : "unset");
    snprintf(err, errlen, "llm: %s: HTTP %ld%s%s%s (after %d %s)", l->endpoint, status,
             msg[0] ? ": " : "", msg, key, attempts, tries);
}

/* POSTs with retries; 0 with the 200 body in r, or -1 with err set */
static int post_retrying(const Llm *l, const char *body, Response *r, char *err, size_t errlen)
{
    for (int attempt = 0;; attempt++) {
        char cerr[CURL_ERROR_SIZE];
        long status;
        free(r->body);
        *r = (Response){0};
        CURLcode rc = post(l, body, r, &status, cerr);
        if (rc == CURLE_OK && status >= 200 && status < 300)
            return 0;
        if (!transient(rc, status) || attempt >= l->cfg.retries) {
            describe_failure(l, rc, status, r, cerr, attempt + 1, err, errlen);
            return -1;
        }
        double wait = l->cfg.backoff * pow(2.0, attempt);
        if (r->retry_after > wait)
            wait = fmin(r->retry_after, MAX_RETRY_AFTER);
        fprintf(stderr, "discover: llm: %s; retrying in %.1f s (%d of %d)\n",
                rc != CURLE_OK  ? curl_easy_strerror(rc)
                : status == 429 ? "HTTP 429"
                                : "HTTP 5xx",
                wait, attempt + 1, l->cfg.retries);
        sleep_seconds(wait);
    }
}

/* the completion's content into out, or out->error saying why there is none */
static void read_completion(const Response *r, Proposal *out)
{
    json_t *j = json_loads(r->body ? r->body : "", 0, NULL);
    json_t *choice = json_array_get(json_object_get(j, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    const char *content = json_string_value(json_object_get(msg, "content"));
    const char *refusal = json_string_value(json_object_get(msg, "refusal"));
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    out->raw = propose_strdup(content ? content : r->body);
    if (!j || !msg)
        snprintf(out->error, sizeof out->error,
                 "the server's reply is not a chat completion (no choices[0].message): %.200s",
                 r->body ? r->body : "");
    else if (refusal)
        snprintf(out->error, sizeof out->error, "the model refused: %.400s", refusal);
    else if (finish && strcmp(finish, "content_filter") == 0)
        snprintf(out->error, sizeof out->error, "the reply was withheld by a content filter");
    else
        propose_parse_reply(content, out);
    json_decref(j);
}

static int llm_propose(void *state, const ProposeContext *ctx, Proposal *out, char *err,
                       size_t errlen)
{
    const Llm *l = state;
    char *system, *user;
    if (propose_render(l->cfg.prompt_path, ctx, &system, &user, err, errlen) != 0)
        return -1;
    char *body = request_body(l, system, user);
    free(system);
    free(user);
    if (!body) {
        snprintf(err, errlen, "llm: out of memory");
        return -1;
    }
    Response r = {0};
    int rc = post_retrying(l, body, &r, err, errlen);
    if (rc == 0)
        read_completion(&r, out);
    free(r.body);
    free(body);
    return rc;
}

const ProposerOps propose_llm_ops = {
    .name = "llm",
    .needs_genome = false,
    .create = llm_create,
    .propose = llm_propose,
    .destroy = llm_destroy,
};
