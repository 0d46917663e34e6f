/*
 * tokenizer_pre.c - byte-level BPE pre-tokenizers: the regex lists llama.cpp
 * selects by tokenizer.ggml.pre (llm_tokenizer_bpe), run with PCRE2.
 *
 * Each regex of a list is applied in turn to every piece the previous one
 * left; both the matches and the gaps between them become pieces, as in
 * llama.cpp's unicode_regex_split. A piece is the whole subject of a match,
 * so lookarounds and "$" never see past it. The patterns are llama.cpp's,
 * with non-ASCII characters written as \x{...}; they are compiled once, with
 * PCRE2_UTF | PCRE2_UCP (real Unicode categories for \p, \s) and
 * PCRE2_DOLLAR_ENDONLY (ECMAScript's "$"), and JIT-compiled when PCRE2 can.
 * Match data is allocated per call, so splitting is thread-safe.
 *
 * llama.cpp emulates some patterns (\s+(?!\S), non-ASCII by category); PCRE2
 * gives the semantics those emulations aim at. Pre-tokenizers whose llama.cpp
 * behaviour is custom code or depends on ECMAScript-only quirks (kimi-k2,
 * afmoe, superbpe, tiny_aya, youtu, gemma4, whitespace) are not offered.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_int.h"

/* ---- The regexes ---------------------------------------------------------- */

#define RE_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3 RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" \
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_CJK "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"
#define RE_HAN_KANA "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+"
#define RE_ASCII_PUNCT "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~]"
#define RE_PORO " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{0964}\\x{06D4}\\x{060C})]+"
/* Letters with case (Lu, Ll, Lt) as DeepSeek's tokenizer.json lists them. */
#define RE_DEEPSEEK_LETTERS "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}" \
    "\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}" \
    "\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}" \
    "\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}" \
    "\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}" \
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}" \
    "\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}" \
    "\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}" \
    "\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}" \
    "\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}" \
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}" \
    "\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}" \
    "\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}" \
    "\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}" \
    "\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}" \
    "\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}" \
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}" \
    "\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+"
/* Upper-then-lower letter runs, written with lookaheads as llama.cpp adapts them. */
#define RE_UPPER(L) "((?=[" L "])([^a-z]))"
#define RE_LOWER(L) "((?=[" L "])([^A-Z]))"
#define RE_CASED_WORDS(L, SUFFIX) \
    "[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER(L) "*" RE_LOWER(L) "+" SUFFIX \
    "|[^\\r\\n\\p{L}\\p{N}]?" RE_UPPER(L) "+" RE_LOWER(L) "*" SUFFIX

static const char *const set_default[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL};
static const char *const set_gpt2[] = {RE_GPT2, NULL};
static const char *const set_llama3[] = {RE_LLAMA3, NULL};
static const char *const set_jais2[] = {
    RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s{512}(?!\\S)|\\s{256}(?!\\S)|\\s{128}(?!\\S)|\\s{64}(?!\\S)"
    "|\\s{32}(?!\\S)|\\s{16}(?!\\S)|\\s{8}(?!\\S)|\\s{4}(?!\\S)|\\s{1,2}(?!\\S)|\\s{1}",
    NULL};
static const char *const set_deepseek_llm[] = {
    "[\r\n]", RE_DEEPSEEK_LETTERS,
    "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
    "\\s+$", RE_CJK, "\\p{N}+", NULL};
static const char *const set_deepseek_coder[] = {
    "[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}", NULL};
static const char *const set_deepseek3[] = {
    "\\p{N}{1,3}", RE_HAN_KANA,
    RE_ASCII_PUNCT "[A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
    NULL};
static const char *const set_spark2_5[] = {
    "\\p{N}{1,3}", RE_HAN_KANA,
    RE_ASCII_PUNCT "[A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
    "| ?[\\p{P}\\p{S}]+|[\r\n]|\\s+(?!\\S)|\\s+",
    "\\p{N}", NULL};
static const char *const set_falcon[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]", NULL};
static const char *const set_starcoder[] = {"\\p{N}", RE_GPT2, NULL};
static const char *const set_qwen2[] = {RE_QWEN2, NULL};
static const char *const set_qwen35[] = {
    RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    NULL};
static const char *const set_poro[] = {RE_PORO, NULL};
static const char *const set_viking[] = {RE_PORO, "\\p{N}", NULL};
static const char *const set_tekken[] = {
    RE_CASED_WORDS("\\p{L}", "") "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)|\\s+",
    NULL};
static const char *const set_chameleon[] = {
    "<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )",
    "\\p{N}", "[\\p{P}!-/:-@\\[-`{-~]", RE_GPT2, NULL};
static const char *const set_gpt4o[] = {
    RE_CASED_WORDS("\\p{L}", RE_CONTRACTIONS "?") "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    NULL};
static const char *const set_granite_multi[] = {
    RE_CASED_WORDS("\\p{L}\\p{M}", RE_CONTRACTIONS "?") "|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    NULL};
static const char *const set_bailingmoe[] = {
    "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
    NULL};
static const char *const set_seed_coder[] = {
    RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\\r\\n]+"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    NULL};
static const char *const set_ufakzeka[] = {
    "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
    "|\\s+(?!\\S)|\\s+",
    NULL};
static const char *const set_laguna[] = {"[^\\n]+|[\\n]+", RE_QWEN2, NULL};
static const char *const set_exaone_moe[] = {
    RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?(?:\\p{L}\\p{M}*(?: \\p{L}\\p{M}*)*)+|\\p{N}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]?|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
    NULL};
static const char *const set_minicpm5[] = {
    "\\p{N}{1,3}",
    RE_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}+| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    NULL};

/* ---- Names, as llama.cpp's llama_vocab::impl::load() maps them ----------- */

struct pre_def {
    const char *name;
    const char *const *set;
    unsigned flags;
};

#define LLAMA3_FLAGS (TOK_PRE_IGNORE_MERGES | TOK_PRE_ADD_BOS)

static const struct pre_def pre_defs[] = {
    {"default", set_default, 0},
    {"llama3", set_llama3, LLAMA3_FLAGS},
    {"llama-v3", set_llama3, LLAMA3_FLAGS},
    {"llama-bpe", set_llama3, LLAMA3_FLAGS},
    {"falcon3", set_llama3, LLAMA3_FLAGS},
    {"falcon-h1", set_llama3, LLAMA3_FLAGS},
    {"pixtral", set_llama3, LLAMA3_FLAGS},
    {"midm-2.0", set_llama3, LLAMA3_FLAGS},
    {"lfm2", set_llama3, LLAMA3_FLAGS},
    {"jina-v5-nano", set_llama3, LLAMA3_FLAGS},
    {"dbrx", set_llama3, 0},
    {"smaug-bpe", set_llama3, 0},
    {"glm4", set_llama3, TOK_PRE_NO_BOS},
    {"chatglm-bpe", set_llama3, TOK_PRE_NO_BOS},
    {"jais-2", set_jais2, 0},
    {"deepseek-llm", set_deepseek_llm, 0},
    {"deepseek-coder", set_deepseek_coder, 0},
    {"deepseek-v3", set_deepseek3, 0},
    {"hunyuan-dense", set_deepseek3, 0},
    {"hy_v4", set_deepseek3, 0},
    {"joyai-llm", set_deepseek3, 0},
    {"spark2_5", set_spark2_5, 0},
    {"falcon", set_falcon, 0},
    {"gpt-2", set_gpt2, 0},
    {"phi-2", set_gpt2, 0},
    {"jina-es", set_gpt2, 0},
    {"jina-de", set_gpt2, 0},
    {"gigachat", set_gpt2, 0},
    {"jina-v2-es", set_gpt2, 0},
    {"jina-v2-de", set_gpt2, 0},
    {"a.x-4.0", set_gpt2, 0},
    {"mellum", set_gpt2, 0},
    {"modern-bert", set_gpt2, 0},
    {"jina-v1-en", set_gpt2, 0},
    {"jina-v2-code", set_gpt2, 0},
    {"roberta-bpe", set_gpt2, 0},
    {"mpt", set_gpt2, 0},
    {"olmo", set_gpt2, 0},
    {"jais", set_gpt2, 0},
    {"exaone4", set_gpt2, 0},
    {"trillion", set_gpt2, 0},
    {"granite-docling", set_gpt2, 0},
    {"starcoder", set_starcoder, 0},
    {"refact", set_starcoder, 0},
    {"command-r", set_starcoder, 0},
    {"smollm", set_starcoder, 0},
    {"codeshell", set_starcoder, 0},
    {"exaone", set_starcoder, 0},
    {"minerva-7b", set_starcoder, 0},
    {"mellum2", set_starcoder, 0},
    {"qwen2", set_qwen2, 0},
    {"deepseek-r1-qwen", set_qwen2, 0},
    {"kormo", set_qwen2, 0},
    {"f2llmv2", set_qwen2, 0},
    {"stablelm2", set_qwen2, 0},
    {"megrez", set_qwen2, 0},
    {"hunyuan", set_qwen2, 0},
    {"solar-open", set_qwen2, 0},
    {"grok-2", set_qwen2, 0},
    {"qwen35", set_qwen35, 0},
    {"poro-chat", set_poro, 0},
    {"bloom", set_poro, 0},
    {"gpt3-finnish", set_poro, 0},
    {"viking", set_viking, 0},
    {"tekken", set_tekken, LLAMA3_FLAGS},
    {"chameleon", set_chameleon, TOK_PRE_ADD_BOS},
    {"gpt-4o", set_gpt4o, 0},
    {"llama4", set_gpt4o, 0},
    {"kanana2", set_gpt4o, 0},
    {"talkie", set_gpt4o, 0},
    {"minimax-m2", set_gpt4o, 0},
    {"granite-embed-multi-97m", set_granite_multi, TOK_PRE_IGNORE_MERGES},
    {"bailingmoe", set_bailingmoe, 0},
    {"bailingmoe2", set_bailingmoe, 0},
    {"llada-moe", set_bailingmoe, 0},
    {"seed-coder", set_seed_coder, 0},
    {"ufakzeka", set_ufakzeka, 0},
    {"laguna", set_laguna, 0},
    {"exaone-moe", set_exaone_moe, 0},
    {"minicpm5", set_minicpm5, TOK_PRE_IGNORE_MERGES},
};

/* ---- Compiling ------------------------------------------------------------ */

struct tok_pre {
    const struct pre_def *def;
    size_t n_re;
    pcre2_code *re[];
};

static const struct pre_def *
find_def(const char *name)
{
    for (size_t i = 0; i < sizeof(pre_defs) / sizeof(pre_defs[0]); i++) {
        if (strcmp(pre_defs[i].name, name) == 0)
            return &pre_defs[i];
    }
    return NULL;
}

void
tokenizer__pre_free(struct tok_pre *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n_re; i++)
        pcre2_code_free(p->re[i]);
    free(p);
}

static int
compile_one(const char *pattern, pcre2_code **out, char *err, size_t errlen)
{
    int code = 0;
    PCRE2_SIZE at = 0;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &code, &at,
                                   NULL);
    if (re == NULL) {
        PCRE2_UCHAR msg[120];
        pcre2_get_error_message(code, msg, sizeof(msg));
        tokenizer__err(err, errlen, "tokenizer.ggml.pre: regex /%s/ at %zu: %s", pattern,
                       (size_t)at, (const char *)msg);
        return code == PCRE2_ERROR_NOMEMORY ? -ENOMEM : -EINVAL;
    }
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    *out = re;
    return 0;
}

int
tokenizer__pre_new(const char *name, struct tok_pre **out, char *err, size_t errlen)
{
    *out = NULL;
    const struct pre_def *def = find_def(name);
    if (def == NULL) {
        tokenizer__err(err, errlen, "tokenizer.ggml.pre: unknown pre-tokenizer '%s'", name);
        return -EINVAL;
    }
    size_t n = 0;
    while (def->set[n] != NULL)
        n++;
    struct tok_pre *p = calloc(1, sizeof(*p) + n * sizeof(p->re[0]));
    if (p == NULL)
        return -ENOMEM;
    p->def = def;
    for (size_t i = 0; i < n; i++) {
        int rc = compile_one(def->set[i], &p->re[i], err, errlen);
        if (rc != 0) {
            tokenizer__pre_free(p);
            return rc;
        }
        p->n_re++;
    }
    *out = p;
    return 0;
}

unsigned
tokenizer__pre_flags(const struct tok_pre *p)
{
    return p->def->flags;
}

/* ---- Splitting ------------------------------------------------------------ */

/* Finds the next match in s[0..n) from pos: 1 and [*ms, *me), 0 if none, or -errno. */
static int
next_match(const pcre2_code *re, const char *s, size_t n, size_t pos, pcre2_match_data *md,
           size_t *ms, size_t *me)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0)
        return rc == PCRE2_ERROR_NOMEMORY || rc == PCRE2_ERROR_HEAPLIMIT ? -ENOMEM : -EINVAL;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

/* Splits piece [off, off + len) of text with re into matches and gaps. */
static int
split_piece(const pcre2_code *re, const char *text, struct tok_span piece, pcre2_match_data *md,
            struct tok_spans *out)
{
    const char *s = text + piece.off;
    size_t pos = 0, prev = 0, ms = 0, me = 0;
    int rc = 0;
    while (pos < piece.len && (rc = next_match(re, s, piece.len, pos, md, &ms, &me)) > 0) {
        if (me == ms) { /* an empty match splits nothing: step over one character */
            pos = ms + 1;
            while (pos < piece.len && ((unsigned char)s[pos] & 0xc0) == 0x80)
                pos++;
            continue;
        }
        int err = ms > prev ? tokenizer__span_push(out, piece.off + prev, ms - prev) : 0;
        if (err == 0)
            err = tokenizer__span_push(out, piece.off + ms, me - ms);
        if (err != 0)
            return err;
        prev = pos = me;
    }
    if (rc < 0)
        return rc;
    return prev < piece.len ? tokenizer__span_push(out, piece.off + prev, piece.len - prev) : 0;
}

int
tokenizer__pre_split(const struct tok_pre *p, const char *text, size_t len,
                     struct tok_spans *words)
{
    struct tok_spans a = {0}, b = {0};
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc = md ? 0 : -ENOMEM;
    if (rc == 0 && len > 0)
        rc = tokenizer__span_push(&a, 0, len);
    for (size_t r = 0; r < p->n_re && rc == 0; r++) {
        b.n = 0;
        for (size_t i = 0; i < a.n && rc == 0; i++)
            rc = split_piece(p->re[r], text, a.v[i], md, &b);
        struct tok_spans tmp = a;
        a = b;
        b = tmp;
    }
    for (size_t i = 0; i < a.n && rc == 0; i++)
        rc = tokenizer__span_push(words, a.v[i].off, a.v[i].len);
    pcre2_match_data_free(md);
    free(a.v);
    free(b.v);
    return rc;
}
