/*
 * tokenizer/chat_template.h — conversations ({"role", "content"} messages) to
 * the text a chat model was trained on, for the common chat-template families,
 * rendered natively: Jinja has no C library in Debian, so instead of running
 * tokenizer_config.json's chat_template, prefrun recognises its family and
 * renders that family's rules, byte for byte what Hugging Face's
 * apply_chat_template gives for the reference template named below.
 *
 *     ChatFormat f;
 *     char *sys = NULL, err[256];
 *     if (chat_format_detect(jinja_text, &f, &sys, err, sizeof err)) ...; // names chat_format
 *     ChatTemplate t = {f, "<s>", "</s>", sys};          // bos, eos, default system
 *     ChatMessage m[] = {{"user", "Hi", 2}};
 *     char *text;
 *     size_t len;
 *     chat_render(&t, m, 1, true, &text, &len, err, sizeof err); // prompt + generation prompt
 *     free(text), free(sys);
 *
 * The families (Jinja's `content | trim` is Python's str.strip(): Unicode
 * whitespace off both ends; "bos" and "eos" are the tokenizer's bos_token and
 * eos_token texts; "gen" is the generation prompt, added when asked):
 *
 *   chatml   Qwen2.5-Instruct, SmolLM/SmolLM2-Instruct, any plain ChatML.
 *            [system default] + per message "<|im_start|>" role "\n" content
 *            "<|im_end|>\n"; gen "<|im_start|>assistant\n". Roles system, user,
 *            assistant, anywhere. When the conversation does not start with a
 *            system message, Qwen2.5's template adds "You are Qwen, created by
 *            Alibaba Cloud. You are a helpful assistant." and SmolLM2's "You
 *            are a helpful AI assistant named SmolLM, ..." as a system turn:
 *            chat_format_detect reads that default out of the template text
 *            (so every such template gets its own), the bare chatml format
 *            has none. Qwen3-Instruct-2507 renders as plain ChatML here too.
 *   llama3   Meta-Llama-3-8B-Instruct. bos before the first message; per
 *            message "<|start_header_id|>" role "<|end_header_id|>\n\n"
 *            trim(content) "<|eot_id|>"; gen the same header for assistant,
 *            "<|start_header_id|>assistant<|end_header_id|>\n\n". Roles
 *            system, user, assistant.
 *            Not Llama 3.1/3.2/3.3, whose templates always open with a system
 *            turn holding "Cutting Knowledge Date: December 2023\nToday Date:
 *            ..." (3.2: today's date): detection refuses those.
 *   zephyr   HuggingFaceH4/zephyr-7b-beta (also TinyLlama-Chat). Per message
 *            "<|" role "|>\n" content eos "\n"; gen "<|assistant|>\n" after the
 *            last message (none for an empty conversation). Roles system,
 *            user, assistant.
 *   mistral  Mistral-7B-Instruct-v0.1/v0.2 as their tokenizer_config.json has
 *            it since 2024 (the rewrite that matches mistral-common). bos, then
 *            per user turn " [INST] " content " [/INST]" and per assistant
 *            turn " " content eos; an optional first system message goes
 *            before the first user turn's content, followed by "\n\n". After
 *            it, turns alternate user/assistant starting with user; no gen
 *            (" [/INST]" already is one). Not the 2023 original ("[INST] "
 *            without the leading space) nor v0.3 ("[INST] ...[/INST]"):
 *            detection refuses those, and Llama 2's <<SYS>> format.
 *   gemma    google/gemma-*-it (Gemma 1 and 2; Gemma 3 renders the same
 *            without a system message). bos, then per message
 *            "<start_of_turn>" role "\n" trim(content) "<end_of_turn>\n" with
 *            assistant written "model"; gen "<start_of_turn>model\n". Turns
 *            alternate user/assistant starting with user; a system message is
 *            an error (Gemma 1/2's template raises "System role not supported";
 *            Gemma 3's prepends it to the first user turn, which this format
 *            leaves to the data: put the system text there).
 *
 * Where the rules come from: the templates as TRL keeps copies of them
 * (trl/chat_templates/: qwen2_5, llama3, llama3_1, gemma, gemma3);
 * zephyr-7b-beta's and SmolLM2-Instruct's tokenizer_config.json templates
 * as other projects' tests quote them (swift-jinja's, for zephyr);
 * Mistral-7B-Instruct-v0.2's as guidance's chat-template cache quotes it
 * (May 2024), which matches mistral-common's rendering; transformers'
 * apply_chat_template (trim_blocks and lstrip_blocks on, and its
 * continue_final_message). Each family's renders were compared with
 * Jinja2's on those templates.
 *
 * Where a template would skip a message of another role silently or render
 * it with that role's name, a role outside the family's set is an error
 * naming the role, the message and the family.
 */
#ifndef PREFRUN_CHAT_TEMPLATE_H
#define PREFRUN_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

typedef enum ChatFormat {
    CHAT_FORMAT_CHATML,
    CHAT_FORMAT_LLAMA3,
    CHAT_FORMAT_ZEPHYR,
    CHAT_FORMAT_MISTRAL,
    CHAT_FORMAT_GEMMA,
    CHAT_FORMAT_COUNT
} ChatFormat;

/* "chatml, llama3, zephyr, mistral, gemma": the values of the setting */
#define CHAT_FORMAT_NAMES "chatml, llama3, zephyr, mistral, gemma"

typedef struct ChatMessage {
    const char *role;    /* NUL-terminated */
    const char *content; /* content_len bytes, any bytes (NUL included) */
    size_t content_len;
} ChatMessage;

/* One family with the tokenizer's texts it interpolates. */
typedef struct ChatTemplate {
    ChatFormat format;
    const char *bos;            /* bos_token text; NULL or "" when the tokenizer has none */
    const char *eos;            /* eos_token text; NULL or "" when none */
    const char *default_system; /* chatml: system turn added when the conversation
                                   has none (Qwen2.5, SmolLM2); NULL: none */
} ChatTemplate;

/* The setting's name of f ("chatml"...). */
const char *chat_format_name(ChatFormat f);

/* The format named `name` (a chat_format value); an unknown name is an error
 * naming the setting and its values. */
int chat_format_parse(const char *name, ChatFormat *out, char *err, size_t errlen);

/* The family of tokenizer_config.json's chat_template (its Jinja text), by
 * the family's markers: <|im_start|> chatml, <|start_header_id|> llama3,
 * <start_of_turn> gemma, " [INST] " mistral, <|user|> + <|assistant|> +
 * eos_token zephyr. A template of a family's variant that renders otherwise
 * (listed above, and ChatML ones that add bos_token or eos_token or a <think>
 * block), or one with none of the markers, or NULL, is an error naming the
 * chat_format setting. For chatml, *default_system (when default_system is
 * not NULL) gets a malloc'ed copy of the template's default system message,
 * or NULL when it has none. */
int chat_format_detect(const char *jinja, ChatFormat *out, char **default_system, char *err,
                       size_t errlen);

/* msgs[0..n) rendered by t's family, with the generation prompt when
 * add_generation_prompt. *out: malloc'ed, NUL-terminated, *out_len bytes
 * (content may hold NUL). A role outside the family's set, or an order the
 * family's template refuses, is an error naming the message (1-based) and
 * the family; *out is then NULL. */
int chat_render(const ChatTemplate *t, const ChatMessage *msgs, int n, bool add_generation_prompt,
                char **out, size_t *out_len, char *err, size_t errlen);

/* Hugging Face's continue_final_message: msgs rendered without the
 * generation prompt and cut right after the last message's content, so
 * that the model continues that message. As transformers does it: find the
 * last occurrence of strip(content) in the render; keep up to the end of
 * lstrip(content) where the render holds content there verbatim, else up to
 * the end of strip(content). The content must appear in the render (a
 * template that trims it inside does not always keep it); n >= 1. */
int chat_render_continue(const ChatTemplate *t, const ChatMessage *msgs, int n, char **out,
                         size_t *out_len, char *err, size_t errlen);

#endif
