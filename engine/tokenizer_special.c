/*
 * tokenizer_special.c - special tokens: which ids end generation, which
 * texts are matched in a prompt, and splitting a prompt at them.
 *
 * llama.cpp finds EOT/EOM/FIM tokens by their text when the file names no
 * id, marks such tokens CONTROL (so they print as "" unless asked for), and
 * builds its end-of-generation set from EOS/EOT/EOM, the FIM pad/repo/sep
 * tokens and a list of well-known texts. Where several tokens fit one role,
 * llama.cpp takes whichever its hash map yields first; we take the lowest id.
 * Control, user-defined and unknown tokens are matched in text longest
 * first; equal lengths go by id, which llama.cpp leaves unspecified.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "tokenizer_int.h"

#define FW_BAR "\xef\xbd\x9c" /* U+FF5C, in DeepSeek's control tokens */
#define SPACE "\xe2\x96\x81"  /* U+2581 */

static const char *const eot_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<" FW_BAR "end" SPACE "of" SPACE "sentence" FW_BAR ">",
    "<end_of_utterance>", NULL};
static const char *const eom_texts[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_texts[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<" FW_BAR "fim" SPACE "begin" FW_BAR ">",
    "<PRE>", SPACE "<PRE>", "<|code_prefix|>", "<|prefix|>", NULL};
static const char *const fim_suf_texts[] = {
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<" FW_BAR "fim" SPACE "hole" FW_BAR ">",
    "<SUF>", SPACE "<SUF>", "<|code_suffix|>", "<|suffix|>", NULL};
static const char *const fim_mid_texts[] = {
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<" FW_BAR "fim" SPACE "end" FW_BAR ">",
    "<MID>", SPACE "<MID>", "<|code_middle|>", "<|middle|>", NULL};
static const char *const fim_pad_texts[] = {
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL};
static const char *const fim_rep_texts[] = {
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL};
static const char *const fim_sep_texts[] = {"<|file_sep|>", NULL};
static const char *const eog_texts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<" FW_BAR "end" SPACE "of" SPACE "sentence" FW_BAR ">", "[e~[", NULL};

static int32_t
find_str(const struct tokenizer *t, const char *s)
{
    return tokenizer__find(t, s, strlen(s));
}

/* ---- Roles found by text ---------------------------------------------------- */

/* If *id is unset, the lowest id whose text is in texts, marked CONTROL. */
static void
detect(struct tokenizer *t, int32_t *id, const char *const *texts)
{
    if (*id >= 0)
        return;
    for (size_t i = 0; texts[i] != NULL; i++) {
        int32_t found = find_str(t, texts[i]);
        if (found >= 0 && (*id < 0 || found < *id))
            *id = found;
    }
    if (*id >= 0)
        t->attr[*id] |= TOK_ATTR_CONTROL;
}

static bool
eog_has(const struct tokenizer *t, const char *text, int32_t *id)
{
    *id = find_str(t, text);
    return *id >= 0 && t->eog[*id];
}

/*
 * llama.cpp's exceptions: with <|return|>/<|call|> (gpt-oss) or <|calls|>/
 * <|flush|> (solar-open), <|end|> is not EOG; with <|tool_response> (gemma4),
 * </s> is not.
 */
static void
eog_exceptions(struct tokenizer *t)
{
    int32_t ret, call, calls, flush, end, tool, s;
    bool has_call = eog_has(t, "<|call|>", &call) || eog_has(t, "<|calls|>", &calls);
    bool has_return = eog_has(t, "<|return|>", &ret), has_flush = eog_has(t, "<|flush|>", &flush);
    if (eog_has(t, "<|end|>", &end) && has_call && (has_return || has_flush)) {
        t->eog[end] = 0;
        t->attr[end] = TOK_ATTR_USER_DEFINED;
    }
    if (eog_has(t, "<|tool_response>", &tool) && eog_has(t, "</s>", &s)) {
        t->eog[s] = 0;
        t->attr[s] = TOK_ATTR_NORMAL;
    }
}

static void
build_eog(struct tokenizer *t)
{
    int32_t fims[] = {t->fim_pad, t->fim_rep, t->fim_sep};
    for (size_t i = 0; i < 3; i++) {
        if (fims[i] >= 0)
            t->eog[fims[i]] = 1;
    }
    for (size_t i = 0; eog_texts[i] != NULL; i++) {
        int32_t id = find_str(t, eog_texts[i]);
        if (id >= 0) {
            t->eog[id] = 1;
            t->attr[id] |= TOK_ATTR_CONTROL;
        }
    }
    /* gpt-oss: always render these. */
    const char *const render[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};
    for (size_t i = 0; i < 4; i++) {
        int32_t id = find_str(t, render[i]);
        if (id >= 0)
            t->attr[id] = TOK_ATTR_USER_DEFINED;
    }
    int32_t ends[] = {t->eos, t->eot, t->eom};
    for (size_t i = 0; i < 3; i++) {
        if (ends[i] >= 0)
            t->eog[ends[i]] = 1;
    }
    eog_exceptions(t);
}

/* ---- The list of special tokens ---------------------------------------------- */

struct len_id {
    uint32_t len;
    int32_t id;
};

static int
longest_first(const void *a, const void *b)
{
    const struct len_id *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int
build_special(struct tokenizer *t)
{
    const uint32_t mask = TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN;
    size_t n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++)
        n += (t->attr[i] & mask) != 0;
    struct len_id *v = malloc((n ? n : 1) * sizeof(*v));
    t->special = malloc((n ? n : 1) * sizeof(*t->special));
    if (v == NULL || t->special == NULL) {
        free(v);
        return -ENOMEM;
    }
    n = 0;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        if (t->attr[i] & mask)
            v[n++] = (struct len_id){t->text_len[i], i};
    }
    qsort(v, n, sizeof(*v), longest_first);
    for (size_t i = 0; i < n; i++)
        t->special[i] = v[i].id;
    t->n_special = n;
    free(v);
    return 0;
}

/* ---- Per-model strip rules (llama.cpp sets them by name) --------------------- */

static void
get_lower(const struct gguf *g, const char *key, char *buf, size_t len)
{
    struct gguf_str s;
    buf[0] = '\0';
    if (gguf_get_str(g, key, &s) != 0)
        return;
    size_t n = s.len < len - 1 ? s.len : len - 1;
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)tolower((unsigned char)s.ptr[i]);
    buf[n] = '\0';
}

static void
set_attr(struct tokenizer *t, const char *text, uint32_t bit, bool on)
{
    int32_t id = find_str(t, text);
    if (id >= 0)
        t->attr[id] = on ? t->attr[id] | bit : t->attr[id] & ~bit;
}

static void
strip_rules(struct tokenizer *t, const struct gguf *g)
{
    char name[256], pre[256], arch[256];
    get_lower(g, "general.name", name, sizeof(name));
    get_lower(g, "tokenizer.ggml.pre", pre, sizeof(pre));
    get_lower(g, "general.architecture", arch, sizeof(arch));
    if (strstr(pre, "jina-v2-de") || strstr(pre, "jina-v2-es") || strstr(pre, "jina-v2-code") ||
        strstr(arch, "nomic-bert-moe") || strstr(arch, "jina-bert-v3")) {
        set_attr(t, "<mask>", TOK_ATTR_LSTRIP, true);
    } else if (strstr(name, "phi-3") || strstr(name, "phi3")) {
        for (size_t i = 0; i < t->n_special; i++)
            t->attr[t->special[i]] |= TOK_ATTR_RSTRIP;
        set_attr(t, "</s>", TOK_ATTR_RSTRIP, true);
        set_attr(t, "<unk>", TOK_ATTR_RSTRIP, false);
        set_attr(t, "<s>", TOK_ATTR_RSTRIP, false);
        set_attr(t, "<|endoftext|>", TOK_ATTR_RSTRIP, false);
    } else if (strstr(name, "modern-bert")) {
        set_attr(t, "[MASK]", TOK_ATTR_LSTRIP, true);
    }
}

int
tokenizer__special_init(struct tokenizer *t, const struct gguf *g)
{
    detect(t, &t->eot, eot_texts);
    detect(t, &t->eom, eom_texts);
    detect(t, &t->fim_pre, fim_pre_texts);
    detect(t, &t->fim_suf, fim_suf_texts);
    detect(t, &t->fim_mid, fim_mid_texts);
    detect(t, &t->fim_pad, fim_pad_texts);
    detect(t, &t->fim_rep, fim_rep_texts);
    detect(t, &t->fim_sep, fim_sep_texts);
    build_eog(t);
    int rc = build_special(t);
    if (rc == 0)
        strip_rules(t, g);
    return rc;
}

/* ---- Partition --------------------------------------------------------------- */

static int
frag_push(struct tok_frags *f, size_t off, size_t len, int32_t id)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        struct tok_frag *v = realloc(f->v, cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = (struct tok_frag){off, len, id};
    return 0;
}

/* Splits text fragment fr at every occurrence of token id (with its strip rules). */
static int
split_frag(const struct tokenizer *t, const char *text, struct tok_frag fr, int32_t id,
           struct tok_frags *out)
{
    const char *s = t->text + t->text_off[id];
    size_t n = t->text_len[id], off = fr.off, len = fr.len;
    uint32_t attr = t->attr[id];
    while (len > 0) {
        const char *m = memmem(text + off, len, s, n);
        if (m == NULL)
            return frag_push(out, off, len, -1);
        size_t at = (size_t)(m - text), left = at - off;
        while ((attr & TOK_ATTR_LSTRIP) && left > 0 &&
               isspace((unsigned char)text[off + left - 1]))
            left--;
        int rc = left > 0 ? frag_push(out, off, left, -1) : 0;
        if (rc == 0)
            rc = frag_push(out, 0, 0, id);
        if (rc != 0)
            return rc;
        len = off + len - (at + n);
        off = at + n;
        while ((attr & TOK_ATTR_RSTRIP) && len > 0 && isspace((unsigned char)text[off]))
            off++, len--;
    }
    return 0;
}

static bool
occurs(const struct tokenizer *t, const char *text, const struct tok_frags *f, int32_t id)
{
    for (size_t i = 0; i < f->n; i++) {
        if (f->v[i].id < 0 && memmem(text + f->v[i].off, f->v[i].len,
                                     t->text + t->text_off[id], t->text_len[id]) != NULL)
            return true;
    }
    return false;
}

static int
split_all(const struct tokenizer *t, const char *text, struct tok_frags *cur, int32_t id,
          struct tok_frags *tmp)
{
    tmp->n = 0;
    int rc = 0;
    for (size_t i = 0; i < cur->n && rc == 0; i++) {
        const struct tok_frag *fr = &cur->v[i];
        rc = fr->id >= 0 ? frag_push(tmp, fr->off, fr->len, fr->id)
                         : split_frag(t, text, *fr, id, tmp);
    }
    struct tok_frags swap = *cur;
    *cur = *tmp;
    *tmp = swap;
    return rc;
}

int
tokenizer__partition(const struct tokenizer *t, const char *text, size_t len,
                     bool parse_special, struct tok_frags *out)
{
    struct tok_frags tmp = {0};
    int rc = len > 0 ? frag_push(out, 0, len, -1) : 0;
    for (size_t k = 0; k < t->n_special && rc == 0; k++) {
        int32_t id = t->special[k];
        if (!parse_special && (t->attr[id] & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN)))
            continue; /* user-defined tokens are split out even then, as in HF tokenizers */
        if (occurs(t, text, out, id))
            rc = split_all(t, text, out, id, &tmp);
    }
    free(tmp.v);
    return rc;
}
