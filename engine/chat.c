/*
 * chat.c - chat templates, as llama.cpp's built-in ones (src/llama-chat.cpp).
 *
 * A family is one row of a table: its name, the roles it takes, its
 * end-of-turn text and a renderer that appends the prompt to a growing
 * buffer. Roles are checked for the whole list before anything is rendered,
 * so a renderer meets only roles its family takes. The buffer latches its
 * first allocation failure and the renderers do not check it; chat_apply()
 * does once at the end. Detection is plain substring search over the Jinja
 * source, in llama.cpp's order.
 */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "engine_int.h"

/* ---- Output buffer ---------------------------------------------------- */

/* A NUL-terminated string that grows; failed is set on the first ENOMEM. */
struct buf {
    char *p;
    size_t len;
    size_t cap;
    bool failed;
};

static bool
buf_reserve(struct buf *b, size_t more)
{
    size_t need;
    if (__builtin_add_overflow(b->len, more, &need) || need == SIZE_MAX)
        return false;
    need++;                                  /* the NUL */
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

static void
buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (!buf_reserve(b, n)) {
        b->failed = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
buf_puts(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

static bool
is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Appends s without its leading and trailing ASCII whitespace. */
static void
buf_puts_trimmed(struct buf *b, const char *s)
{
    size_t n = strlen(s);
    while (n > 0 && is_space(*s))
        s++, n--;
    while (n > 0 && is_space(s[n - 1]))
        n--;
    buf_add(b, s, n);
}

/* ---- Roles ------------------------------------------------------------ */

enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL, ROLE_NONE };

#define ROLES_BASIC ((1u << ROLE_SYSTEM) | (1u << ROLE_USER) | (1u << ROLE_ASSISTANT))
#define ROLES_TOOL (ROLES_BASIC | (1u << ROLE_TOOL))

static const char *const role_names[] = {"system", "user", "assistant", "tool"};

static enum role
role_of(const char *s)
{
    for (int r = 0; r < ROLE_NONE; r++)
        if (s != NULL && strcmp(s, role_names[r]) == 0)
            return r;
    return ROLE_NONE;
}

/* ---- Renderers -------------------------------------------------------- */

struct render {
    struct buf out;
    enum chat_family f;
    const struct chat_msg *msgs;
    size_t n;
    bool add_assistant;
    const char *bos;   /* never NULL or "" here */
    const char *eos;
};

static const char *
content_of(const struct render *r, size_t i)
{
    return r->msgs[i].content ? r->msgs[i].content : "";
}

static void
put_content(struct render *r, size_t i, bool trim)
{
    if (trim)
        buf_puts_trimmed(&r->out, content_of(r, i));
    else
        buf_puts(&r->out, content_of(r, i));
}

/* "<|im_start|>role\ncontent<|im_end|>\n" per message. */
static void
render_chatml(struct render *r)
{
    for (size_t i = 0; i < r->n; i++) {
        buf_puts(&r->out, "<|im_start|>");
        buf_puts(&r->out, role_names[role_of(r->msgs[i].role)]);
        buf_puts(&r->out, "\n");
        buf_puts(&r->out, content_of(r, i));
        buf_puts(&r->out, "<|im_end|>\n");
    }
    if (r->add_assistant)
        buf_puts(&r->out, "<|im_start|>assistant\n");
}

/*
 * "[INST] user [/INST]answer</s>[INST] ..." The first "[INST] " is written
 * before any message, so a leading system message goes inside the first turn;
 * the BOS that would open it is the tokenizer's.
 */
static void
render_llama2(struct render *r)
{
    bool sys_tags = r->f != CHAT_LLAMA2;
    bool strip = r->f == CHAT_LLAMA2_SYS_STRIP;
    bool in_turn = true;
    buf_puts(&r->out, "[INST] ");
    for (size_t i = 0; i < r->n; i++) {
        enum role role = role_of(r->msgs[i].role);
        if (!in_turn) {
            if (r->f == CHAT_LLAMA2_SYS_BOS)
                buf_puts(&r->out, r->bos);
            buf_puts(&r->out, "[INST] ");
            in_turn = true;
        }
        if (role == ROLE_SYSTEM)
            buf_puts(&r->out, sys_tags ? "<<SYS>>\n" : "");
        put_content(r, i, strip);
        if (role == ROLE_SYSTEM) {
            buf_puts(&r->out, sys_tags ? "\n<</SYS>>\n\n" : "\n");
        } else if (role == ROLE_USER) {
            buf_puts(&r->out, " [/INST]");
        } else {
            buf_puts(&r->out, r->eos);
            in_turn = false;
        }
    }
}

/*
 * Mistral's v1, v3 and v3-tekken: "[INST]" opens a turn, a system message is
 * "system\n\n" inside it, the user's text closes it with "[/INST]". They
 * differ only in spaces: v1 puts one before both tags, v1 and v3 one after
 * "[INST]" and before the answer; v3 also trims answers.
 */
static void
render_mistral(struct render *r)
{
    const char *lead = r->f == CHAT_MISTRAL_V1 ? " " : "";
    const char *trail = r->f == CHAT_MISTRAL_V3_TEKKEN ? "" : " ";
    bool in_turn = false;
    for (size_t i = 0; i < r->n; i++) {
        enum role role = role_of(r->msgs[i].role);
        if (!in_turn) {
            buf_puts(&r->out, lead);
            buf_puts(&r->out, "[INST]");
            buf_puts(&r->out, trail);
            in_turn = true;
        }
        if (role == ROLE_SYSTEM) {
            buf_puts(&r->out, content_of(r, i));
            buf_puts(&r->out, "\n\n");
        } else if (role == ROLE_USER) {
            buf_puts(&r->out, content_of(r, i));
            buf_puts(&r->out, lead);
            buf_puts(&r->out, "[/INST]");
        } else {
            buf_puts(&r->out, trail);
            put_content(r, i, r->f == CHAT_MISTRAL_V3);
            buf_puts(&r->out, r->eos);
            in_turn = false;
        }
    }
}

/* Mistral v7: every message has its own tags; tekken drops the spaces. */
static void
render_mistral_v7(struct render *r)
{
    const char *sp = r->f == CHAT_MISTRAL_V7 ? " " : "";
    for (size_t i = 0; i < r->n; i++) {
        enum role role = role_of(r->msgs[i].role);
        if (role == ROLE_SYSTEM)
            buf_puts(&r->out, "[SYSTEM_PROMPT]");
        else if (role == ROLE_USER)
            buf_puts(&r->out, "[INST]");
        buf_puts(&r->out, sp);
        buf_puts(&r->out, content_of(r, i));
        if (role == ROLE_SYSTEM)
            buf_puts(&r->out, "[/SYSTEM_PROMPT]");
        else if (role == ROLE_USER)
            buf_puts(&r->out, "[/INST]");
        else
            buf_puts(&r->out, r->eos);
    }
}

/* "<|role|>\ncontent" + end + "\n": phi3 ends with <|end|>, zephyr with EOS. */
static void
render_pipes(struct render *r, const char *end)
{
    for (size_t i = 0; i < r->n; i++) {
        buf_puts(&r->out, "<|");
        buf_puts(&r->out, role_names[role_of(r->msgs[i].role)]);
        buf_puts(&r->out, "|>\n");
        buf_puts(&r->out, content_of(r, i));
        buf_puts(&r->out, end);
        buf_puts(&r->out, "\n");
    }
    if (r->add_assistant)
        buf_puts(&r->out, "<|assistant|>\n");
}

static void
render_phi3(struct render *r)
{
    render_pipes(r, "<|end|>");
}

static void
render_zephyr(struct render *r)
{
    render_pipes(r, r->eos);
}

/* Llama 3: trimmed contents; 3.1 calls tool results "ipython". */
static void
render_llama3(struct render *r)
{
    for (size_t i = 0; i < r->n; i++) {
        enum role role = role_of(r->msgs[i].role);
        buf_puts(&r->out, "<|start_header_id|>");
        buf_puts(&r->out, role == ROLE_TOOL ? "ipython" : role_names[role]);
        buf_puts(&r->out, "<|end_header_id|>\n\n");
        buf_puts_trimmed(&r->out, content_of(r, i));
        buf_puts(&r->out, "<|eot_id|>");
    }
    if (r->add_assistant)
        buf_puts(&r->out, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/*
 * Writes the trimmed system messages among msgs[from..to), joined with
 * nothing, and "\n\n" after them if that wrote anything (llama.cpp joins them
 * into one string and tests it for "").
 */
static void
gemma_system(struct render *r, size_t from, size_t to)
{
    size_t len0 = r->out.len;
    for (size_t j = from; j < to; j++)
        if (role_of(r->msgs[j].role) == ROLE_SYSTEM)
            buf_puts_trimmed(&r->out, content_of(r, j));
    if (r->out.len != len0)
        buf_puts(&r->out, "\n\n");
}

/*
 * Gemma has no system role: system messages wait for the next user turn and
 * open it. A system message with no user turn after it is dropped, as in
 * llama.cpp. The assistant is "model"; contents are trimmed.
 */
static void
render_gemma(struct render *r)
{
    size_t pending = 0;   /* system messages in [pending, i) are not written yet */
    for (size_t i = 0; i < r->n; i++) {
        enum role role = role_of(r->msgs[i].role);
        if (role == ROLE_SYSTEM)
            continue;
        buf_puts(&r->out, "<start_of_turn>");
        buf_puts(&r->out, role == ROLE_ASSISTANT ? "model" : "user");
        buf_puts(&r->out, "\n");
        if (role == ROLE_USER) {
            gemma_system(r, pending, i);
            pending = i + 1;
        }
        buf_puts_trimmed(&r->out, content_of(r, i));
        buf_puts(&r->out, "<end_of_turn>\n");
    }
    if (r->add_assistant)
        buf_puts(&r->out, "<start_of_turn>model\n");
}

/* ---- Families --------------------------------------------------------- */

static const struct family {
    const char *name;
    void (*render)(struct render *r);
    unsigned roles;        /* bit (1 << enum role) per role taken */
    const char *eot;       /* end-of-turn token text, NULL if EOS */
    const char *def_eos;   /* llama.cpp's literal EOS text */
} families[CHAT_FAMILY_COUNT] = {
    [CHAT_CHATML] = {"chatml", render_chatml, ROLES_TOOL, "<|im_end|>", "</s>"},
    [CHAT_LLAMA2] = {"llama2", render_llama2, ROLES_BASIC, NULL, "</s>"},
    [CHAT_LLAMA2_SYS] = {"llama2-sys", render_llama2, ROLES_BASIC, NULL, "</s>"},
    [CHAT_LLAMA2_SYS_BOS] = {"llama2-sys-bos", render_llama2, ROLES_BASIC, NULL, "</s>"},
    [CHAT_LLAMA2_SYS_STRIP] = {"llama2-sys-strip", render_llama2, ROLES_BASIC, NULL, "</s>"},
    [CHAT_LLAMA3] = {"llama3", render_llama3, ROLES_TOOL, "<|eot_id|>", "</s>"},
    [CHAT_MISTRAL_V1] = {"mistral-v1", render_mistral, ROLES_BASIC, NULL, "</s>"},
    [CHAT_MISTRAL_V3] = {"mistral-v3", render_mistral, ROLES_BASIC, NULL, "</s>"},
    [CHAT_MISTRAL_V3_TEKKEN] = {"mistral-v3-tekken", render_mistral, ROLES_BASIC, NULL, "</s>"},
    [CHAT_MISTRAL_V7] = {"mistral-v7", render_mistral_v7, ROLES_BASIC, NULL, "</s>"},
    [CHAT_MISTRAL_V7_TEKKEN] = {"mistral-v7-tekken", render_mistral_v7, ROLES_BASIC, NULL,
                                "</s>"},
    [CHAT_ZEPHYR] = {"zephyr", render_zephyr, ROLES_BASIC, NULL, "<|endoftext|>"},
    [CHAT_PHI3] = {"phi3", render_phi3, ROLES_BASIC, "<|end|>", "</s>"},
    [CHAT_GEMMA] = {"gemma", render_gemma, ROLES_BASIC, "<end_of_turn>", "</s>"},
};

static const struct family *
family(enum chat_family f)
{
    assert((unsigned)f < CHAT_FAMILY_COUNT);
    return &families[f];
}

int
chat_family_from_name(const char *name, enum chat_family *out)
{
    assert(name != NULL && out != NULL);
    for (int f = 0; f < CHAT_FAMILY_COUNT; f++) {
        if (strcmp(name, families[f].name) == 0) {
            *out = f;
            return 0;
        }
    }
    return -ENOENT;
}

const char *
chat_family_name(enum chat_family f)
{
    return family(f)->name;
}

const char *
chat_family_eot(enum chat_family f)
{
    return family(f)->eot;
}

/* ---- Detection -------------------------------------------------------- */

struct text {
    const char *p;
    size_t len;
};

static bool
has(const struct text *t, const char *s)
{
    return memmem(t->p, t->len, s, strlen(s)) != NULL;
}

/* Families llama.cpp knows and we do not render; they end the search. */
#define UNSUPPORTED (-1)

/* "<|im_start|>": chatml, unless phi-4's or SmolVLM's markers are there too. */
static int
detect_im_start(const struct text *t)
{
    if (has(t, "<|im_sep|>") || has(t, "<end_of_utterance>"))
        return UNSUPPORTED;
    return CHAT_CHATML;
}

/* "[INST]" (or a source starting with "mistral"): mistral or llama2. */
static int
detect_inst(const struct text *t)
{
    if (has(t, "[SYSTEM_PROMPT]"))
        return CHAT_MISTRAL_V7;
    if (has(t, "' [INST] ' + system_message") || has(t, "[AVAILABLE_TOOLS]")) {
        if (has(t, " [INST]"))
            return CHAT_MISTRAL_V1;
        if (has(t, "\"[INST]\""))
            return CHAT_MISTRAL_V3_TEKKEN;
        return CHAT_MISTRAL_V3;
    }
    if (has(t, "content.strip()"))
        return CHAT_LLAMA2_SYS_STRIP;
    if (has(t, "bos_token + '[INST]"))
        return CHAT_LLAMA2_SYS_BOS;
    if (has(t, "<<SYS>>"))
        return CHAT_LLAMA2_SYS;
    return CHAT_LLAMA2;
}

/*
 * "<|user|>" and "<|assistant|>": llama.cpp's Falcon 3 (with "</s>") or
 * GLM-Edge. Our addition: with eos_token and no "</s>" it is Zephyr's own
 * template (HuggingFaceH4/zephyr-7b-beta), which GLM-Edge's lacks.
 */
static int
detect_user_assistant(const struct text *t)
{
    if (!has(t, "</s>") && has(t, "eos_token"))
        return CHAT_ZEPHYR;
    return UNSUPPORTED;
}

/*
 * llama.cpp's checks after "<|im_start|>" and "[INST]", in its order, up to
 * the last one that can give one of our families. All markers of a rule must
 * occur; the first rule that matches decides.
 */
static const struct rule {
    const char *need[2];
    int family;                                /* or UNSUPPORTED */
    int (*refine)(const struct text *t);       /* decides instead, if set */
} rules[] = {
    {{"<|assistant|>", "<|end|>"}, CHAT_PHI3, NULL},
    {{"[gMASK]<sop>", NULL}, UNSUPPORTED, NULL},                 /* chatglm4 */
    {{"<|assistant|>", "<|user|>"}, UNSUPPORTED, detect_user_assistant},
    {{"<|{{ item['role'] }}|>", "<|begin_of_image|>"}, UNSUPPORTED, NULL},  /* glmedge */
    {{"<|user|>", "<|endoftext|>"}, CHAT_ZEPHYR, NULL},
    {{"bos_token + message['role']", NULL}, UNSUPPORTED, NULL},  /* monarch */
    {{"<start_of_turn>", NULL}, CHAT_GEMMA, NULL},
    {{"'\\n\\nAssistant: ' + eos_token", NULL}, UNSUPPORTED, NULL},  /* orion */
    {{"GPT4 Correct ", NULL}, UNSUPPORTED, NULL},                /* openchat */
    {{"USER: ", "ASSISTANT: "}, UNSUPPORTED, NULL},              /* vicuna */
    {{"### Instruction:", "<|EOT|>"}, UNSUPPORTED, NULL},        /* deepseek */
    {{"<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>"}, UNSUPPORTED, NULL},  /* command-r */
    {{"<|start_header_id|>", "<|end_header_id|>"}, CHAT_LLAMA3, NULL},
};

static bool
rule_matches(const struct rule *r, const struct text *t)
{
    for (size_t i = 0; i < sizeof(r->need) / sizeof(r->need[0]); i++)
        if (r->need[i] != NULL && !has(t, r->need[i]))
            return false;
    return true;
}

/* Our family for t, or UNSUPPORTED. */
static int
detect(const struct text *t)
{
    for (int f = 0; f < CHAT_FAMILY_COUNT; f++)
        if (strlen(families[f].name) == t->len && memcmp(families[f].name, t->p, t->len) == 0)
            return f;
    if (has(t, "<|im_start|>"))
        return detect_im_start(t);
    if ((t->len >= 7 && memcmp(t->p, "mistral", 7) == 0) || has(t, "[INST]"))
        return detect_inst(t);
    for (size_t i = 0; i < sizeof(rules) / sizeof(rules[0]); i++)
        if (rule_matches(&rules[i], t))
            return rules[i].refine ? rules[i].refine(t) : rules[i].family;
    return UNSUPPORTED;
}

enum chat_family
chat_family_detect(const char *jinja, size_t len, bool *recognised)
{
    struct text t = {jinja ? jinja : "", jinja ? len : 0};
    int f = detect(&t);
    if (recognised != NULL)
        *recognised = f != UNSUPPORTED;
    return f == UNSUPPORTED ? CHAT_CHATML : (enum chat_family)f;
}

/* ---- Rendering -------------------------------------------------------- */

static int
check_roles(const struct family *fam, const struct chat_msg *msgs, size_t n,
            char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        const char *name = msgs[i].role;
        enum role role = role_of(name);
        if (name == NULL) {
            engine__err(err, errlen, "messages[%zu].role: missing", i);
            return -EINVAL;
        }
        if (role == ROLE_NONE) {
            engine__err(err, errlen,
                        "messages[%zu].role: \"%.64s\" is not system, user, assistant or tool",
                        i, name);
            return -EINVAL;
        }
        if (!(fam->roles & (1u << role))) {
            engine__err(err, errlen,
                        "messages[%zu].role: \"%s\" is not taken by the %s template "
                        "(system, user or assistant)", i, name, fam->name);
            return -EINVAL;
        }
    }
    return 0;
}

int
chat_apply(enum chat_family f, const struct chat_msg *msgs, size_t n, bool add_assistant,
           const char *bos, const char *eos, char **out, char *err, size_t errlen)
{
    const struct family *fam = family(f);
    assert(out != NULL && (msgs != NULL || n == 0));
    *out = NULL;
    int rc = check_roles(fam, msgs, n, err, errlen);
    if (rc < 0)
        return rc;
    struct render r = {
        .f = f, .msgs = msgs, .n = n, .add_assistant = add_assistant,
        .bos = bos != NULL && *bos != '\0' ? bos : "<s>",
        .eos = eos != NULL && *eos != '\0' ? eos : fam->def_eos,
    };
    fam->render(&r);
    buf_add(&r.out, "", 0);                  /* "" when nothing was written */
    if (r.out.failed) {
        free(r.out.p);
        engine__err(err, errlen, "chat template %s: out of memory", fam->name);
        return -ENOMEM;
    }
    *out = r.out.p;
    return 0;
}
