/*
 * chat.h - chat templates: a list of {role, content} messages -> the prompt
 * text a chat model was trained on.
 *
 * The families and their exact strings are those of llama.cpp's built-in
 * templates (src/llama-chat.cpp); the Jinja source a GGUF file carries in
 * tokenizer.chat_template is not run, only recognised by the markers llama.cpp
 * looks for. The prompt is meant to be tokenized with parse_special = true, so
 * that "<|im_start|>" and friends become their control tokens, and with
 * add_special as the vocabulary says: the prompt never begins with BOS (the
 * tokenizer adds it), as llama.cpp's server does.
 *
 * Lifetimes: the module has no state. Every function may be called from any
 * thread at once; strings returned as const char * are static.
 */
#ifndef LORASERVE_CHAT_H
#define LORASERVE_CHAT_H

#include <stdbool.h>
#include <stddef.h>

/* A template family; chat_family_name() gives llama.cpp's name of each. */
enum chat_family {
    CHAT_CHATML,            /* "chatml": <|im_start|>role\n...<|im_end|>\n */
    CHAT_LLAMA2,            /* "llama2": [INST] ... [/INST], system as plain text */
    CHAT_LLAMA2_SYS,        /* "llama2-sys": system in <<SYS>>\n...\n<</SYS>>\n\n */
    CHAT_LLAMA2_SYS_BOS,    /* "llama2-sys-bos": and BOS before each later [INST] */
    CHAT_LLAMA2_SYS_STRIP,  /* "llama2-sys-strip": and contents trimmed */
    CHAT_LLAMA3,            /* "llama3": <|start_header_id|>...<|eot_id|> */
    CHAT_MISTRAL_V1,        /* "mistral-v1": " [INST] ... [/INST] answer</s>" */
    CHAT_MISTRAL_V3,        /* "mistral-v3": "[INST] ...[/INST] answer</s>" */
    CHAT_MISTRAL_V3_TEKKEN, /* "mistral-v3-tekken": "[INST]...[/INST]answer</s>" */
    CHAT_MISTRAL_V7,        /* "mistral-v7": [SYSTEM_PROMPT] ...[/SYSTEM_PROMPT] */
    CHAT_MISTRAL_V7_TEKKEN, /* "mistral-v7-tekken": v7 without the spaces */
    CHAT_ZEPHYR,            /* "zephyr": <|role|>\n...EOS\n */
    CHAT_PHI3,              /* "phi3": <|role|>\n...<|end|>\n */
    CHAT_GEMMA,             /* "gemma": <start_of_turn>user|model\n...<end_of_turn>\n */
    CHAT_FAMILY_COUNT
};

/* One message. content may be NULL (an OpenAI null content): it renders as "". */
struct chat_msg {
    const char *role;       /* "system", "user", "assistant" or "tool" */
    const char *content;
};

/*
 * Looks up a family by llama.cpp's name for it (what --chat-template takes:
 * "chatml", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip",
 * "llama3", "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7",
 * "mistral-v7-tekken", "zephyr", "phi3", "gemma"). Returns 0 and sets *out,
 * or -ENOENT for any other name (*out untouched).
 */
int chat_family_from_name(const char *name, enum chat_family *out);

/* llama.cpp's name of f, as above. Static; never NULL. */
const char *chat_family_name(enum chat_family f);

/*
 * Recognises the family of a template from its Jinja source jinja[0..len)
 * (need not be NUL-terminated), with llama.cpp's heuristics in their order: a
 * family name is taken as is, then markers such as "<|im_start|>", "[INST]"
 * (with "<<SYS>>", "[SYSTEM_PROMPT]", ...), "<|assistant|>" + "<|end|>",
 * "<start_of_turn>", "<|start_header_id|>". One addition: a template with
 * "<|user|>", "<|assistant|>" and eos_token (HuggingFaceH4/zephyr-7b-beta),
 * which llama.cpp takes for GLM-Edge, is zephyr here.
 * jinja may be NULL (len is then ignored). A source that matches none of our
 * families, including one llama.cpp would take for a family we do not render
 * (phi-4, command-r, vicuna, ...), gives CHAT_CHATML with *recognised = false,
 * as llama.cpp's server falls back to chatml. recognised may be NULL.
 */
enum chat_family chat_family_detect(const char *jinja, size_t len, bool *recognised);

/*
 * The text of the token that ends a turn in family f, which generation should
 * stop on as well as on the vocabulary's end-of-generation tokens:
 * "<|im_end|>", "<|eot_id|>", "<|end|>" or "<end_of_turn>". NULL for the
 * families whose turns end with the vocabulary's EOS (llama2, mistral, zephyr).
 * Static.
 */
const char *chat_family_eot(enum chat_family f);

/*
 * Renders msgs[0..n) in family f. With add_assistant the prompt ends with the
 * assistant's header ("<|im_start|>assistant\n", ...); the [INST] families
 * ignore it, their user turn already ends the prompt (as llama.cpp).
 *
 * bos and eos are the vocabulary's BOS and EOS texts, used where a family
 * writes them between turns: EOS after each assistant answer in llama2,
 * mistral and zephyr; BOS before each later "[INST]" in llama2-sys-bos. NULL or
 * "" means llama.cpp's literal: "<s>", "</s>" ("<|endoftext|>" for zephyr).
 * Contents are copied unchanged (special-token text in them included), except
 * that llama3, gemma, llama2-sys-strip and mistral-v3 (assistant answers only)
 * trim leading and trailing ASCII whitespace as llama.cpp does. gemma folds
 * system messages into the next user turn ("system\n\nuser") and names the
 * assistant "model"; llama3 names the tool role "ipython" (Llama 3.1).
 *
 * Roles: system, user and assistant in every family; tool in chatml and
 * llama3 only. Returns 0 and sets *out to a NUL-terminated string that the
 * caller owns and releases with free() (never NULL, "" for nothing); or
 * -EINVAL for a missing or unknown role, or one the family does not take, or
 * -ENOMEM; on error *out is NULL and err holds one line naming the message,
 * e.g. messages[2].role: "bot" is not system, user, assistant or tool.
 * msgs may be NULL when n is 0. err may be NULL.
 */
int chat_apply(enum chat_family f, const struct chat_msg *msgs, size_t n, bool add_assistant,
               const char *bos, const char *eos, char **out, char *err, size_t errlen);

#endif
