/*
 * test_chat_template.c — the chat-template families (tokenizer/chat_template.h)
 * render conversations to the strings their Hugging Face templates give,
 * written out by hand here from each template's rule (quoted beside each
 * case); recognition of each family from short template snippets (written
 * for this test: they carry a family's markers, they are not the templates);
 * and the errors: a role outside a family, Gemma's system message, Mistral's
 * and Gemma's alternation, an unrecognised template.
 */
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "tokenizer/chat_template.h"

#define MSG(role, text)                                                                            \
    {                                                                                              \
        role, text, sizeof text - 1                                                                \
    }

static char err[512];

static const ChatMessage SYS = MSG("system", "Be brief.");
static const ChatMessage U1 = MSG("user", "What is 2+2?");
static const ChatMessage A1 = MSG("assistant", "4");
static const ChatMessage U2 = MSG("user", "And times 3?");
static const ChatMessage A2 = MSG("assistant", "12");

/* chat_render gives exactly want (compared as bytes, length included). */
static void render_is(const char *what, const ChatTemplate *t, const ChatMessage *m, int n,
                      bool gen, const char *want, size_t want_len)
{
    char *out;
    size_t len;
    int rc = chat_render(t, m, n, gen, &out, &len, err, sizeof err);
    CHECKF(rc == 0, "%s: %s", what, err);
    if (rc)
        return;
    CHECKF(len == want_len && memcmp(out, want, len) == 0, "%s: rendered\n%s\n# expected\n%s", what,
           out, want);
    free(out);
}
#define RENDER_IS(what, t, m, gen, want)                                                           \
    render_is(what, t, m, sizeof m / sizeof m[0], gen, want, sizeof want - 1)

/* chat_render fails with a message holding both fragments. */
static void render_fails(const char *what, const ChatTemplate *t, const ChatMessage *m, int n,
                         const char *frag1, const char *frag2)
{
    char *out = (char *)"unset";
    size_t len;
    int rc = chat_render(t, m, n, true, &out, &len, err, sizeof err);
    CHECKF(rc != 0 && out == NULL, "%s: rendered, expected an error with \"%s\"", what, frag1);
    CHECKF(strstr(err, frag1), "%s: error \"%s\" lacks \"%s\"", what, err, frag1);
    CHECKF(!frag2 || strstr(err, frag2), "%s: error \"%s\" lacks \"%s\"", what, err, frag2);
}

/* ChatML (SmolLM, Qwen2.5): for each message
 *   '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n'
 * then '<|im_start|>assistant\n' if add_generation_prompt; content as is. */
static void chatml_renders(void)
{
    ChatTemplate t = {CHAT_FORMAT_CHATML, NULL, NULL, NULL};
    const ChatMessage full[] = {SYS, U1, A1};
    RENDER_IS("system+user+assistant", &t, full, false,
              "<|im_start|>system\nBe brief.<|im_end|>\n"
              "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
              "<|im_start|>assistant\n4<|im_end|>\n");
    const ChatMessage turns[] = {U1, A1, U2};
    RENDER_IS("multi-turn, generation prompt", &t, turns, true,
              "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
              "<|im_start|>assistant\n4<|im_end|>\n"
              "<|im_start|>user\nAnd times 3?<|im_end|>\n"
              "<|im_start|>assistant\n");
    /* no trim in ChatML; a NUL byte is content like any other */
    const ChatMessage raw[] = {MSG("user", " a\0b \n")};
    RENDER_IS("untrimmed content with NUL", &t, raw, false,
              "<|im_start|>user\n a\0b \n<|im_end|>\n");
    /* a system message need not come first (Qwen2.5: role == "system" and not loop.first) */
    const ChatMessage late[] = {U1, SYS};
    RENDER_IS(
        "system later", &t, late, false,
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>system\nBe brief.<|im_end|>\n");
}

/* Qwen2.5: if messages[0]['role'] != 'system', first
 *   '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a
 *   helpful assistant.<|im_end|>\n' */
static void chatml_default_system(void)
{
    ChatTemplate t = {CHAT_FORMAT_CHATML, NULL, "<|im_end|>",
                      "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."};
    const ChatMessage q[] = {U1};
    RENDER_IS("default system added", &t, q, true,
              "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
              "assistant.<|im_end|>\n"
              "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
              "<|im_start|>assistant\n");
    const ChatMessage own[] = {SYS, U1};
    RENDER_IS(
        "own system kept, no default", &t, own, false,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n");
}

/* Llama 3 (Meta-Llama-3-8B-Instruct): for each message
 *   '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content | trim + '<|eot_id|>'
 * with bos_token before the first; then
 *   '<|start_header_id|>assistant<|end_header_id|>\n\n' if add_generation_prompt */
static void llama3_renders(void)
{
    ChatTemplate t = {CHAT_FORMAT_LLAMA3, "<|begin_of_text|>", "<|eot_id|>", NULL};
    const ChatMessage q[] = {SYS, U1};
    RENDER_IS("system+user, generation prompt", &t, q, true,
              "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n");
    /* trim is Python's strip(): U+3000 IDEOGRAPHIC SPACE and U+00A0 go too */
    const ChatMessage turns[] = {MSG("user", "  What is 2+2?\n"),
                                 MSG("assistant", "4\xc2\xa0\xe3\x80\x80 "), U2, A2};
    RENDER_IS("multi-turn, trimmed", &t, turns, false,
              "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
              "<|start_header_id|>user<|end_header_id|>\n\nAnd times 3?<|eot_id|>"
              "<|start_header_id|>assistant<|end_header_id|>\n\n12<|eot_id|>");
}

/* Zephyr (zephyr-7b-beta): for each message '<|' + role + '|>\n' + content +
 * eos_token, then the template's own line break (trim_blocks keeps the one
 * after }}); '<|assistant|>' + line break at loop.last if add_generation_prompt */
static void zephyr_renders(void)
{
    ChatTemplate t = {CHAT_FORMAT_ZEPHYR, "<s>", "</s>", NULL};
    const ChatMessage q[] = {SYS, U1};
    RENDER_IS("system+user, generation prompt", &t, q, true,
              "<|system|>\nBe brief.</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n");
    const ChatMessage turns[] = {U1, A1, U2, A2};
    RENDER_IS("multi-turn", &t, turns, false,
              "<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n4</s>\n"
              "<|user|>\nAnd times 3?</s>\n<|assistant|>\n12</s>\n");
    const ChatMessage none[1] = {U1};
    render_is("empty conversation: the prompt is inside the loop", &t, none, 0, true, "", 0);
}

/* Mistral-7B-Instruct v0.1/v0.2: bos_token; then per user turn
 *   ' [INST] ' + content + ' [/INST]'   (the first with system + '\n\n' before content)
 * and per assistant turn ' ' + content + eos_token; no generation prompt */
static void mistral_renders(void)
{
    ChatTemplate t = {CHAT_FORMAT_MISTRAL, "<s>", "</s>", NULL};
    const ChatMessage q[] = {U1};
    RENDER_IS("user, generation prompt", &t, q, true, "<s> [INST] What is 2+2? [/INST]");
    RENDER_IS("user, no generation prompt: the same", &t, q, false,
              "<s> [INST] What is 2+2? [/INST]");
    const ChatMessage turns[] = {SYS, U1, A1, U2, A2};
    RENDER_IS("system merged into the first user turn", &t, turns, false,
              "<s> [INST] Be brief.\n\nWhat is 2+2? [/INST] 4</s> [INST] And times 3? [/INST] "
              "12</s>");
}

/* Gemma: bos_token; for each message
 *   '<start_of_turn>' + role + '\n' + content | trim + '<end_of_turn>\n'
 * with 'assistant' written 'model'; '<start_of_turn>model\n' if add_generation_prompt */
static void gemma_renders(void)
{
    ChatTemplate t = {CHAT_FORMAT_GEMMA, "<bos>", "<eos>", NULL};
    const ChatMessage turns[] = {U1, MSG("assistant", "\n4 "), U2};
    RENDER_IS("multi-turn, generation prompt", &t, turns, true,
              "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
              "<start_of_turn>model\n4<end_of_turn>\n"
              "<start_of_turn>user\nAnd times 3?<end_of_turn>\n"
              "<start_of_turn>model\n");
    const ChatMessage pair[] = {U1, A1};
    RENDER_IS("user+assistant", &t, pair, false,
              "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
              "<start_of_turn>model\n4<end_of_turn>\n");
}

/* transformers' continue_final_message: cut after the final message's text */
static void continue_final_message(void)
{
    char *out;
    size_t len;
    ChatTemplate chatml = {CHAT_FORMAT_CHATML, NULL, NULL, NULL};
    const ChatMessage pre[] = {U1, MSG("assistant", "Sure, ")};
    CHECKF(!chat_render_continue(&chatml, pre, 2, &out, &len, err, sizeof err), "%s", err);
    /* kept verbatim, trailing space included */
    CHECK(strcmp(out, "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\nSure, ") ==
          0);
    free(out);
    ChatTemplate gemma = {CHAT_FORMAT_GEMMA, "<bos>", NULL, NULL};
    const ChatMessage padded[] = {U1, MSG("assistant", " Sure ")};
    CHECKF(!chat_render_continue(&gemma, padded, 2, &out, &len, err, sizeof err), "%s", err);
    /* the template trims it: cut after strip(content) */
    CHECK(strcmp(out, "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
                      "<start_of_turn>model\nSure") == 0);
    CHECK(len == strlen(out));
    free(out);
}

static void role_errors(void)
{
    ChatTemplate chatml = {CHAT_FORMAT_CHATML, NULL, NULL, NULL};
    const ChatMessage tool[] = {U1, MSG("tool", "42")};
    render_fails("tool in chatml", &chatml, tool, 2, "message 2 has role \"tool\"", "chatml");
    ChatTemplate llama3 = {CHAT_FORMAT_LLAMA3, "<|begin_of_text|>", NULL, NULL};
    const ChatMessage ipy[] = {MSG("ipython", "x")};
    render_fails("ipython in llama3", &llama3, ipy, 1, "\"ipython\"", "llama3");
    ChatTemplate gemma = {CHAT_FORMAT_GEMMA, "<bos>", NULL, NULL};
    const ChatMessage sys[] = {SYS, U1};
    render_fails("system in gemma", &gemma, sys, 2, "role \"system\"", "gemma");
    const ChatMessage first_a[] = {A1, U1};
    render_fails("gemma starts with user", &gemma, first_a, 2, "message 1 has role \"assistant\"",
                 "alternate");
    ChatTemplate mistral = {CHAT_FORMAT_MISTRAL, "<s>", "</s>", NULL};
    const ChatMessage uu[] = {U1, U2};
    render_fails("mistral alternates", &mistral, uu, 2, "message 2 has role \"user\"", "alternate");
    const ChatMessage late_sys[] = {U1, A1, SYS};
    render_fails("mistral system only first", &mistral, late_sys, 3,
                 "message 3 is a system message", "mistral");
}

static void format_names(void)
{
    for (int f = 0; f < CHAT_FORMAT_COUNT; f++) {
        ChatFormat back;
        CHECK(chat_format_parse(chat_format_name((ChatFormat)f), &back, err, sizeof err) == 0 &&
              back == (ChatFormat)f);
    }
    ChatFormat x;
    CHECK(chat_format_parse("ChatML", &x, err, sizeof err) != 0);
    CHECKF(strstr(err, "chat_format is \"ChatML\"") && strstr(err, CHAT_FORMAT_NAMES), "%s", err);
}

/* detection must find f (and, for chatml, the default system message sys) */
static void detects(const char *jinja, ChatFormat f, const char *sys)
{
    ChatFormat got = CHAT_FORMAT_COUNT;
    char *def = (char *)"unset";
    int rc = chat_format_detect(jinja, &got, &def, err, sizeof err);
    CHECKF(rc == 0 && got == f, "%.60s...: %s, expected %s", jinja,
           rc ? err : chat_format_name(got), chat_format_name(f));
    CHECKF(rc || (sys ? def && strcmp(def, sys) == 0 : def == NULL), "default system \"%s\"",
           def ? def : "(none)");
    if (!rc)
        free(def);
}

static void refuses(const char *jinja, const char *frag)
{
    ChatFormat got;
    char *def = NULL;
    int rc = chat_format_detect(jinja, &got, &def, err, sizeof err);
    CHECKF(rc != 0, "%.60s...: detected %s, expected an error", jinja ? jinja : "(null)",
           chat_format_name(got));
    CHECKF(strstr(err, "chat_format") && strstr(err, frag), "error \"%s\" lacks chat_format or %s",
           err, frag);
    free(def);
}

static void detection_by_markers(void)
{
    detects("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
            "'<|im_end|>\\n' }}{% endfor %}",
            CHAT_FORMAT_CHATML, NULL);
    /* a default system message, its newline an escape, an escaped quote inside */
    detects("{% if messages[0]['role'] == 'system' %}{{ '<|im_start|>system\\n' + "
            "messages[0]['content'] + '<|im_end|>\\n' }}{% else %}{{ '<|im_start|>system\\nYou "
            "are Tester, it\\'s a test.<|im_end|>\\n' }}{% endif %}",
            CHAT_FORMAT_CHATML, "You are Tester, it's a test.");
    /* ... or a real newline, in double quotes */
    detects("{% if loop.first %}{{ \"<|im_start|>system\nBe kind.<|im_end|>\n\" }}{% endif %}",
            CHAT_FORMAT_CHATML, "Be kind.");
    detects("{% set c = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + "
            "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set c = "
            "bos_token + c %}{% endif %}",
            CHAT_FORMAT_LLAMA3, NULL);
    detects("{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token "
            "}}{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + "
            "eos_token }}{% else %}{{ '<|assistant|>\n' + message['content'] + eos_token }}",
            CHAT_FORMAT_ZEPHYR, NULL);
    detects("{{- bos_token }}{{- ' [INST] ' + message['content'] + ' [/INST]' }}{{- ' ' + "
            "message['content'] + eos_token }}",
            CHAT_FORMAT_MISTRAL, NULL);
    detects("{{ bos_token }}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + "
            "'<end_of_turn>\n' }}",
            CHAT_FORMAT_GEMMA, NULL);
}

static void detection_refusals(void)
{
    refuses(NULL, "no chat_template");
    refuses("", "no chat_template");
    refuses("{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% endfor %}",
            "unrecognised chat template");
    refuses("{{ '<|im_start|>assistant\\n<think>\\n' }}", "<think>");
    refuses("{{ bos_token }}{{ '<|im_start|>' + m['role'] }}", "bos_token");
    refuses("{{ '<|start_header_id|>system<|end_header_id|>\\n\\n' }}{{ 'Cutting Knowledge Date: "
            "December 2023\\n' }}",
            "Llama 3.1");
    refuses("{{ bos_token + '[INST] ' + '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}", "Llama 2");
    refuses("{{ bos_token }}{{ '[INST] ' + message['content'] + ' [/INST]' }}", "space before");
    refuses("{{ '<|user|>\n' + message['content'] + '<|end|>\n<|assistant|>\n' }}{{ eos_token }}",
            "Phi-3");
    refuses("{{ '<|user|>\n' + message['content'] + '\n' }}{{ '<|assistant|>\n' + "
            "message['content'] + eos_token }}",
            "as Tulu's");
}

int main(void)
{
    RUN(chatml_renders);
    RUN(chatml_default_system);
    RUN(llama3_renders);
    RUN(zephyr_renders);
    RUN(mistral_renders);
    RUN(gemma_renders);
    RUN(continue_final_message);
    RUN(role_errors);
    RUN(format_names);
    RUN(detection_by_markers);
    RUN(detection_refusals);
    return tl_done();
}
