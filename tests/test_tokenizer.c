/*
 * test_tokenizer.c - the tokenizer against llama.cpp's vocabulary test
 * vectors (shared/fixtures/tokenizer), the golden prompts of kjv-tiny, the
 * WordPiece goldens of bert-tiny-random (shared/models/embed/golden), and
 * vocabularies built in memory with the GGUF writer: well-formed ones to pin
 * down merge, pre-tokenizer and special-token rules, and one malformed
 * vocabulary per way of failing, each with its expected error line.
 *
 * The shared folder comes from LORASERVE_SHARED (default "../shared").
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <glob.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "testutil.h"
#include "gguf.h"
#include "tokenizer.h"

/* ---- Helpers ---------------------------------------------------------------- */

static struct tokenizer *
load_path(const char *path)
{
    struct gguf *g = NULL;
    struct tokenizer *t = NULL;
    char err[256] = "";
    int rc = gguf_open(path, &g, err, sizeof(err));
    if (rc == 0)
        rc = tokenizer_new(g, &t, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", path, err);
    gguf_free(g); /* the tokenizer keeps its own copies */
    CHECK(rc == 0);
    return t;
}

static struct tokenizer *
load_shared(const char *rel)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", test_shared_dir(), rel);
    return load_path(path);
}

/* Encodes s (NUL-terminated); returns the ids (caller frees) or NULL. */
static int32_t *
enc(const struct tokenizer *t, const char *s, bool add_special, bool parse_special, size_t *n)
{
    int32_t *ids = NULL;
    int rc = tokenizer_encode(t, s, strlen(s), add_special, parse_special, &ids, n);
    CHECK_EQ(rc, 0);
    return ids;
}

static bool
ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof(*a)) == 0);
}

/* Decodes ids into a malloc'd NUL-terminated string. */
static char *
dec(const struct tokenizer *t, const int32_t *ids, size_t n, bool special, bool strip)
{
    int len = tokenizer_decode(t, ids, n, special, strip, NULL, 0);
    CHECK(len >= 0);
    char *s = malloc(len > 0 ? (size_t)len + 1 : 1);
    int again = tokenizer_decode(t, ids, n, special, strip, s, (size_t)(len > 0 ? len : 0));
    CHECK_EQ(again, len);
    s[len > 0 ? len : 0] = '\0';
    return s;
}

/* Encodes s and compares with want[0..n). */
static void
check_ids(const struct tokenizer *t, const char *s, bool add_special, bool parse_special,
          const int32_t *want, size_t n)
{
    size_t got_n = 0;
    int32_t *got = enc(t, s, add_special, parse_special, &got_n);
    if (!ids_equal(got, got_n, want, n)) {
        fprintf(stderr, "  encode('%s'):", s);
        for (size_t i = 0; i < got_n; i++)
            fprintf(stderr, " %d", got[i]);
        fprintf(stderr, "\n");
    }
    CHECK(ids_equal(got, got_n, want, n));
    free(got);
}

/* ---- llama.cpp's vocabulary test vectors ------------------------------------- */

static size_t
parse_ids(const char *line, int32_t *ids, size_t max)
{
    size_t n = 0;
    char *end = NULL;
    for (const char *p = line; n < max; p = end) {
        long v = strtol(p, &end, 10);
        if (end == p)
            break;
        ids[n++] = (int32_t)v;
    }
    return n;
}

/* Checks one case: the ids, then decoding them back to the input. */
static void
vocab_case(const struct tokenizer *t, const char *inp, size_t inp_len, const char *line,
           int *ok_ids, int *ok_text)
{
    static int32_t want[4096];
    size_t n_want = parse_ids(line, want, 4096), n = 0;
    int32_t *ids = NULL;
    int rc = tokenizer_encode(t, inp, inp_len, false, false, &ids, &n);
    bool same = rc == 0 && ids_equal(ids, n, want, n_want);
    CHECK(same);
    if (!same)
        fprintf(stderr, "  ids differ for '%.*s'\n", (int)inp_len, inp);
    bool spm = strcmp(tokenizer_model_name(t), "llama") == 0;
    char *back = dec(t, want, n_want, true, spm);
    bool round = strlen(back) == inp_len && memcmp(back, inp, inp_len) == 0;
    CHECK(round);
    if (!round)
        fprintf(stderr, "  decoded '%s' instead of '%.*s'\n", back, (int)inp_len, inp);
    *ok_ids += same;
    *ok_text += round;
    free(back);
    free(ids);
}

static void
vocab_file(const char *gguf_path)
{
    char path[1200];
    size_t inp_len = 0, out_len = 0;
    snprintf(path, sizeof(path), "%s.inp", gguf_path);
    char *inp = test_read_file(path, &inp_len);
    snprintf(path, sizeof(path), "%s.out", gguf_path);
    char *out = test_read_file(path, &out_len);
    struct tokenizer *t = load_path(gguf_path);
    CHECK(inp != NULL && out != NULL && t != NULL);
    const char *sep = "\n__ggml_vocab_test__\n";
    int cases = 0, ok_ids = 0, ok_text = 0;
    char *p = inp, *line = out;
    while (t && inp && out && *p != '\0' && *line != '\0') {
        char *end = strstr(p, sep), *nl = strchr(line, '\n');
        CHECK(end != NULL);
        if (end == NULL)
            break;
        if (nl)
            *nl = '\0';
        vocab_case(t, p, (size_t)(end - p), line, &ok_ids, &ok_text);
        cases++;
        p = end + strlen(sep);
        line = nl ? nl + 1 : line + strlen(line);
    }
    CHECK(cases > 0);
    printf("  %s: %d cases, ids %d/%d, round trip %d/%d\n", strrchr(gguf_path, '/') + 1, cases,
           ok_ids, cases, ok_text, cases);
    tokenizer_free(t);
    free(inp);
    free(out);
}

static void
test_vocab_files(void)
{
    char pattern[1024];
    snprintf(pattern, sizeof(pattern), "%s/fixtures/tokenizer/*.gguf", test_shared_dir());
    glob_t gl;
    CHECK_EQ(glob(pattern, 0, NULL, &gl), 0);
    for (size_t i = 0; i < gl.gl_pathc; i++)
        vocab_file(gl.gl_pathv[i]);
    CHECK(gl.gl_pathc >= 3);
    globfree(&gl);
}

/* ---- kjv-tiny golden prompts ------------------------------------------------- */

static size_t
json_ids(const cJSON *arr, int32_t *ids, size_t max)
{
    size_t n = 0;
    const cJSON *it = NULL;
    cJSON_ArrayForEach(it, arr) {
        if (n < max)
            ids[n++] = (int32_t)it->valuedouble;
    }
    return n;
}

static void
golden_case(const struct tokenizer *t, const char *path)
{
    static int32_t want[4096], gen[4096];
    size_t len = 0;
    char *text = test_read_file(path, &len);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    CHECK(j != NULL);
    const char *prompt = cJSON_GetStringValue(cJSON_GetObjectItem(j, "prompt"));
    const char *gen_text = cJSON_GetStringValue(cJSON_GetObjectItem(j, "generated_text"));
    CHECK(prompt != NULL && gen_text != NULL);
    if (prompt && gen_text) {
        size_t nw = json_ids(cJSON_GetObjectItem(j, "prompt_ids"), want, 4096);
        check_ids(t, prompt, true, false, want, nw);
        size_t ng = json_ids(cJSON_GetObjectItem(j, "generated_ids"), gen, 4096);
        char *s = dec(t, gen, ng, false, false);
        CHECK_STR(s, gen_text);
        free(s);
    }
    cJSON_Delete(j);
    free(text);
}

static void
test_golden_prompts(void)
{
    struct tokenizer *t = load_shared("models/kjv-tiny-f32.gguf");
    char pattern[1024];
    snprintf(pattern, sizeof(pattern), "%s/fixtures/golden/*__*.json", test_shared_dir());
    glob_t gl;
    CHECK_EQ(glob(pattern, 0, NULL, &gl), 0);
    for (size_t i = 0; t && i < gl.gl_pathc; i++)
        golden_case(t, gl.gl_pathv[i]);
    CHECK_EQ(gl.gl_pathc, 30);
    globfree(&gl);
    tokenizer_free(t);
}

/* ---- Special tokens, BOS/EOS, EOG --------------------------------------------- */

static void
test_kjv_special(void)
{
    struct tokenizer *t = load_shared("models/kjv-tiny-f32.gguf");
    if (t == NULL)
        return;
    CHECK_STR(tokenizer_model_name(t), "llama");
    CHECK_EQ(tokenizer_bos(t), 1);
    CHECK_EQ(tokenizer_eos(t), 2);
    CHECK(tokenizer_add_bos(t));
    CHECK(tokenizer_is_eog(t, 2));
    CHECK(!tokenizer_is_eog(t, 1));
    CHECK_EQ(tokenizer_token_type(t, 1), TOKENIZER_CONTROL);
    CHECK_EQ(tokenizer_token_type(t, 3), TOKENIZER_BYTE);
    const int32_t plain[] = {1043, 261, 1791, 1243}; /* " In the beginning" */
    check_ids(t, "In the beginning", false, false, plain, 4);
    const int32_t bos[] = {1, 1043, 261, 1791, 1243};
    check_ids(t, "In the beginning", true, false, bos, 5);
    /* A special token counts as the start of a text: a space goes before what follows. */
    check_ids(t, "<s>In the beginning", false, true, bos, 5);
    const int32_t two_bos[] = {1, 1, 1043, 261, 1791, 1243};
    check_ids(t, "<s>In the beginning", true, true, two_bos, 6);
    /* Without parse_special, "<s>" is just text. */
    size_t n = 0;
    int32_t *ids = enc(t, "<s>In the beginning", false, false, &n);
    for (size_t i = 0; ids && i < n; i++)
        CHECK(ids[i] != 1);
    char *s = dec(t, ids, n, false, true);
    CHECK_STR(s, "<s>In the beginning");
    free(s);
    free(ids);
    tokenizer_free(t);
}

static void
test_decode_pieces(void)
{
    struct tokenizer *t = load_shared("models/kjv-tiny-f32.gguf");
    if (t == NULL)
        return;
    char buf[16];
    CHECK_EQ(tokenizer_piece(t, 1, false, buf, sizeof(buf)), 0); /* control: "" */
    CHECK_EQ(tokenizer_piece(t, 1, true, buf, sizeof(buf)), 3);
    CHECK(memcmp(buf, "<s>", 3) == 0);
    CHECK_EQ(tokenizer_piece(t, 3 + 0x0a, false, buf, sizeof(buf)), 1); /* <0x0A> */
    CHECK_EQ(buf[0], '\n');
    CHECK_EQ(tokenizer_piece(t, 261, false, buf, sizeof(buf)), 4); /* "▁the" */
    CHECK(memcmp(buf, " the", 4) == 0);
    CHECK_EQ(tokenizer_piece(t, 261, false, buf, 2), 4); /* too small: nothing written */
    CHECK_EQ(tokenizer_piece(t, -1, false, buf, sizeof(buf)), -EINVAL);
    CHECK_EQ(tokenizer_piece(t, tokenizer_n_vocab(t), false, buf, sizeof(buf)), -EINVAL);
    const int32_t ids[] = {1, 1043, 261};
    char *s = dec(t, ids, 3, false, true); /* the BOS takes the strip */
    CHECK_STR(s, " In the");
    free(s);
    s = dec(t, ids + 1, 2, false, true);
    CHECK_STR(s, "In the");
    free(s);
    s = dec(t, ids, 3, true, false);
    CHECK_STR(s, "<s> In the");
    free(s);
    CHECK_EQ(tokenizer_decode(t, ids, 3, false, false, buf, 3), 7); /* a prefix fits */
    CHECK(memcmp(buf, " In", 3) == 0);
    const int32_t bad[] = {5, 99999};
    CHECK_EQ(tokenizer_decode(t, bad, 2, false, false, buf, sizeof(buf)), -EINVAL);
    tokenizer_free(t);
}

static void
test_gpt2_special(void)
{
    struct tokenizer *t = load_shared("fixtures/tokenizer/ggml-vocab-gpt-2.gguf");
    if (t == NULL)
        return;
    CHECK_STR(tokenizer_pre_name(t), "gpt-2");
    CHECK(!tokenizer_add_bos(t)); /* gpt2 adds no BOS unless the file says so */
    CHECK(tokenizer_is_eog(t, 50256));
    CHECK_EQ(tokenizer_token_type(t, 50256), TOKENIZER_CONTROL);
    const int32_t with[] = {15496, 50256, 995};
    check_ids(t, "Hello<|endoftext|> world", true, true, with, 3);
    size_t n = 0;
    int32_t *ids = enc(t, "Hello<|endoftext|> world", true, false, &n);
    CHECK(n > 3);
    for (size_t i = 0; ids && i < n; i++)
        CHECK(ids[i] != 50256);
    free(ids);
    tokenizer_free(t);
}

static void
test_invalid_utf8(void)
{
    struct tokenizer *t = load_shared("fixtures/tokenizer/ggml-vocab-gpt-2.gguf");
    const char *bad[] = {"\xff", "a\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80"};
    for (size_t i = 0; t && i < sizeof(bad) / sizeof(bad[0]); i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 7;
        CHECK_EQ(tokenizer_encode(t, bad[i], strlen(bad[i]), true, true, &ids, &n), -EINVAL);
        CHECK(ids == NULL && n == 0);
    }
    int32_t *ids = NULL;
    size_t n = 1;
    CHECK_EQ(tokenizer_encode(t, "", 0, false, false, &ids, &n), 0);
    CHECK(ids != NULL && n == 0);
    free(ids);
    tokenizer_free(t);
}

/* ---- Streaming: tokenizer_utf8_complete ------------------------------------- */

static void
test_utf8_complete(void)
{
    CHECK_EQ(tokenizer_utf8_complete("", 0), 0);
    CHECK_EQ(tokenizer_utf8_complete("ab", 2), 2);
    CHECK_EQ(tokenizer_utf8_complete("a\xc3", 2), 1);
    CHECK_EQ(tokenizer_utf8_complete("a\xc3\xa9", 3), 3);
    CHECK_EQ(tokenizer_utf8_complete("\xe2\x82", 2), 0);
    CHECK_EQ(tokenizer_utf8_complete("x\xf0\x9f\x98", 4), 1);
    CHECK_EQ(tokenizer_utf8_complete("\xf0\x9f\x98\x80", 4), 4);
    CHECK_EQ(tokenizer_utf8_complete("\x80\x80", 2), 2); /* stray bytes are not held */

    /* Feed byte-fallback tokens one at a time and emit only complete characters. */
    struct tokenizer *t = load_shared("models/kjv-tiny-f32.gguf");
    const char *text = "caf\xc3\xa9 \xe2\x82\xac 5 \xf0\x9f\x98\x80!";
    size_t n = 0;
    int32_t *ids = t ? enc(t, text, false, false, &n) : NULL;
    char pending[64], out[64];
    size_t np = 0, no = 0;
    bool split = false;
    for (size_t i = 0; ids && i < n; i++) {
        int k = tokenizer_piece(t, ids[i], false, pending + np, sizeof(pending) - np);
        CHECK(k >= 0 && (size_t)k <= sizeof(pending) - np);
        np += (size_t)k;
        size_t done = tokenizer_utf8_complete(pending, np);
        split |= done < np;
        memcpy(out + no, pending, done);
        no += done;
        memmove(pending, pending + done, np - done);
        np -= done;
    }
    CHECK(split); /* the test holds something back at least once */
    CHECK_EQ(np, 0);
    out[no] = '\0';
    CHECK_STR(out, " caf\xc3\xa9 \xe2\x82\xac 5 \xf0\x9f\x98\x80!");
    free(ids);
    tokenizer_free(t);
}

/* ---- Vocabularies built in memory ------------------------------------------- */

/* Writes w to a temporary file, parses it and builds a tokenizer. Consumes w. */
static int
load_writer(struct gguf_writer *w, struct tokenizer **out, char *err, size_t errlen)
{
    char path[] = "/tmp/test_tokenizer_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    struct gguf *g = NULL;
    char e[256] = "";
    int rc = gguf_writer_write(w, path, e, sizeof(e));
    if (rc == 0)
        rc = gguf_open(path, &g, e, sizeof(e));
    CHECK_EQ(rc, 0);
    unlink(path);
    gguf_writer_free(w);
    *out = NULL;
    err[0] = '\0';
    rc = g ? tokenizer_new(g, out, err, errlen) : -EIO;
    gguf_free(g);
    return rc;
}

static void
set_tokens(struct gguf_writer *w, const char *const *tokens, size_t n)
{
    struct gguf_str strs[600];
    for (size_t i = 0; i < n; i++)
        strs[i] = (struct gguf_str){tokens[i], strlen(tokens[i])};
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", strs, n);
}

/* A small SPM vocabulary: <unk> <s> </s>, then tokens[] with scores and types. */
static struct gguf_writer *
spm_writer(const char *const *tokens, const float *scores, const int32_t *types, size_t n)
{
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    set_tokens(w, tokens, n);
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, scores, n);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, types, n);
    return w;
}

static const char *const tiny_tokens[] = {"<unk>", "<s>", "</s>", "<0x41>", "\xe2\x96\x81",
                                          "a", "b", "ab", "\xe2\x96\x81" "a", "<|im_end|>",
                                          "<tool>"};
static const float tiny_scores[] = {0, 0, 0, 0, -1, -2, -3, -5, -4, 0, 0};
static const int32_t tiny_types[] = {2, 3, 3, 6, 1, 1, 1, 1, 1, 4, 4};
#define TINY_N 11

static void
expect_error(struct gguf_writer *w, const char *want)
{
    struct tokenizer *t = (struct tokenizer *)1;
    char err[256];
    int rc = load_writer(w, &t, err, sizeof(err));
    CHECK_EQ(rc, -EINVAL);
    CHECK(t == NULL);
    if (strstr(err, want) == NULL)
        fprintf(stderr, "  error '%s' lacks '%s'\n", err, want);
    CHECK(strstr(err, want) != NULL);
    CHECK(strchr(err, '\n') == NULL);
}

static void
test_bad_byte_tokens(void)
{
    const char *toks[] = {"<unk>", "<s>", "</s>", "<0xZZ>"};
    const float sc[4] = {0};
    const int32_t ty[] = {2, 3, 3, 6};
    expect_error(spm_writer(toks, sc, ty, 4), "token 3 '<0xZZ>'");
    toks[3] = "<0x1>";
    expect_error(spm_writer(toks, sc, ty, 4), "token 3 '<0x1>'");
    toks[3] = "<0x0A>x";
    expect_error(spm_writer(toks, sc, ty, 4), "token 3 '<0x0A>x'");
    toks[3] = "<0x0A\n"; /* the message stays on one line (fuzz_gguf) */
    expect_error(spm_writer(toks, sc, ty, 4), "token 3 '<0x0A?'");
    toks[3] = "<0x0a>"; /* lower-case hex is fine */
    struct tokenizer *t = NULL;
    char err[256];
    CHECK_EQ(load_writer(spm_writer(toks, sc, ty, 4), &t, err, sizeof(err)), 0);
    tokenizer_free(t);
}

static void
test_bad_counts(void)
{
    struct gguf_writer *w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_VT_FLOAT32, tiny_scores, TINY_N - 1);
    expect_error(w, "tokenizer.ggml.scores: 10 entries, expected 11");
    w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, tiny_types, 3);
    expect_error(w, "tokenizer.ggml.token_type: 3 entries, expected 11");
    w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_str(w, "tokenizer.ggml.scores", "nope");
    expect_error(w, "tokenizer.ggml.scores: expected an array");
    const char *dup[] = {"<unk>", "<s>", "</s>", "a", "a"};
    expect_error(spm_writer(dup, tiny_scores, tiny_types, 5), "duplicate token 'a' (ids 3 and 4)");
    w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    expect_error(w, "tokenizer.ggml.tokens: missing");
}

static void
test_bad_model_and_pre(void)
{
    struct gguf_writer *w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "foo");
    expect_error(w, "unknown tokenizer model 'foo'");
    w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "bert"); /* default [CLS] 101 > n_vocab */
    expect_error(w, "tokenizer.ggml.bos_token_id is not set, but a 'bert' vocabulary");
    w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "nope");
    expect_error(w, "unknown pre-tokenizer 'nope'");
    w = gguf_writer_new();
    expect_error(w, "tokenizer.ggml.model: missing");
}

static void
test_bad_ids(void)
{
    struct gguf_writer *w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 99);
    expect_error(w, "tokenizer.ggml.bos_token_id: 99 is out of range (vocabulary has 11 tokens)");
    w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_i32(w, "tokenizer.ggml.eos_token_id", -5);
    expect_error(w, "tokenizer.ggml.eos_token_id: -5 is out of range");
    /* An auxiliary id out of range (padding = n_vocab, seen in real files) means none. */
    w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_u32(w, "tokenizer.ggml.padding_token_id", TINY_N);
    struct tokenizer *aux = NULL;
    char aux_err[256];
    CHECK_EQ(load_writer(w, &aux, aux_err, sizeof(aux_err)), 0);
    CHECK(aux != NULL);
    tokenizer_free(aux);
    w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_str(w, "tokenizer.ggml.eot_token_id", "x");
    expect_error(w, "tokenizer.ggml.eot_token_id: expected an integer");
    w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_i32(w, "tokenizer.ggml.bos_token_id", -1); /* none... */
    expect_error(w, "add_bos_token is true, but tokenizer.ggml.bos_token_id is not set");
    w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_i32(w, "tokenizer.ggml.bos_token_id", -1);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false); /* ...is fine unused */
    struct tokenizer *t = NULL;
    char err[256];
    CHECK_EQ(load_writer(w, &t, err, sizeof(err)), 0);
    CHECK_EQ(tokenizer_bos(t), -1);
    tokenizer_free(t);
}

/* Merges, best score first (leftmost on ties), byte fallback and <unk>. */
static void
test_spm_merges(void)
{
    struct tokenizer *t = NULL;
    char err[256];
    int rc = load_writer(spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N), &t, err,
                         sizeof(err));
    CHECK_EQ(rc, 0);
    if (t == NULL)
        return;
    /* "▁ab": "▁a" (-4) beats "ab" (-5), then "b" stays alone. */
    const int32_t ab[] = {8, 6};
    check_ids(t, "ab", false, false, ab, 2);
    /* "A" has only a byte token, "C" has none: <unk>. */
    const int32_t ac[] = {4, 3, 0};
    check_ids(t, "AC", false, false, ac, 3);
    /* A user-defined token is split out even without parse_special; a space follows it. */
    const int32_t ud[] = {8, 10, 8};
    check_ids(t, "a<tool>a", false, false, ud, 3);
    CHECK_EQ(tokenizer_token_type(t, 10), TOKENIZER_USER_DEFINED);
    /* An EOG text becomes a control token, matched only with parse_special. */
    CHECK(tokenizer_is_eog(t, 9));
    CHECK(!tokenizer_is_eog(t, 10));
    CHECK_EQ(tokenizer_token_type(t, 9), TOKENIZER_CONTROL);
    const int32_t eog[] = {8, 9, 8};
    check_ids(t, "a<|im_end|>a", false, true, eog, 3);
    size_t n = 0;
    int32_t *ids = enc(t, "a<|im_end|>a", false, false, &n);
    CHECK(n > 3 && ids[1] == 0); /* as text: "<" has no token nor byte token: <unk> */
    free(ids);
    tokenizer_free(t);
}

/* BOS/EOS as the flags say; "<unk>" is matched in text only with parse_special. */
static void
test_add_flags(void)
{
    struct gguf_writer *w = spm_writer(tiny_tokens, tiny_scores, tiny_types, TINY_N);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", true);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", false);
    struct tokenizer *t = NULL;
    char err[256];
    CHECK_EQ(load_writer(w, &t, err, sizeof(err)), 0);
    if (t == NULL)
        return;
    CHECK(!tokenizer_add_bos(t));
    const int32_t eos[] = {7, 2}; /* no space prefix: "ab" */
    check_ids(t, "ab", true, false, eos, 2);
    check_ids(t, "ab", false, false, eos, 1);
    const int32_t unk[] = {5, 0, 6};
    check_ids(t, "a<unk>b", false, true, unk, 3);
    char *s = dec(t, unk, 3, true, true); /* no space prefix, so nothing to strip */
    CHECK_STR(s, "a<unk>b");
    free(s);
    tokenizer_free(t);
}

/* llama.cpp's per-model strip rules: phi-3 rstrips after special tokens, jina lstrips <mask>. */
static void
test_strip_rules(void)
{
    const char *toks[TINY_N + 1];
    float sc[TINY_N + 1] = {0};
    int32_t ty[TINY_N + 1];
    memcpy(toks, tiny_tokens, sizeof(tiny_tokens));
    memcpy(sc, tiny_scores, sizeof(tiny_scores));
    memcpy(ty, tiny_types, sizeof(tiny_types));
    toks[TINY_N] = "<mask>";
    ty[TINY_N] = TOKENIZER_USER_DEFINED;
    const struct {
        const char *key, *value, *text;
        int32_t want[4];
        size_t n;
    } cases[] = {
        {"general.name", "kjv", "<tool>  a", {10, 4, 4, 8}, 4},
        {"general.name", "Phi-3-mini", "<tool>  a", {10, 8}, 2},
        {"general.name", "kjv", "a <mask>", {8, 4, 11}, 3},
        {"general.architecture", "jina-bert-v3", "a <mask>", {8, 11}, 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gguf_writer *w = spm_writer(toks, sc, ty, TINY_N + 1);
        gguf_writer_set_str(w, cases[i].key, cases[i].value);
        struct tokenizer *t = NULL;
        char err[256];
        CHECK_EQ(load_writer(w, &t, err, sizeof(err)), 0);
        if (t != NULL)
            check_ids(t, cases[i].text, false, true, cases[i].want, cases[i].n);
        tokenizer_free(t);
    }
}

/* ---- Byte-level BPE vocabularies built in memory ---------------------------- */

/* GPT-2's bytes_to_unicode: the code point standing for byte b. */
static unsigned
byte_cp(unsigned b)
{
    unsigned n = 0;
    for (unsigned c = 0; c < 256; c++) {
        bool printable = (c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || c >= 0xae;
        if (c == b)
            return printable ? c : 256 + n;
        n += !printable;
    }
    return 0;
}

static void
put_cp(unsigned cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = '\0';
    } else {
        out[0] = (char)(0xc0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3f)), out[2] = '\0';
    }
}

/*
 * 256 byte tokens (id = byte), then extra tokens; merges as given. pre names
 * the pre-tokenizer.
 */
static struct gguf_writer *
bpe_writer(const char *pre, const char *const *extra, size_t n_extra, const char *const *merges,
           size_t n_merges)
{
    static char bytes[256][3];
    const char *toks[600];
    for (unsigned b = 0; b < 256; b++) {
        put_cp(byte_cp(b), bytes[b]);
        toks[b] = bytes[b];
    }
    for (size_t i = 0; i < n_extra; i++)
        toks[256 + i] = extra[i];
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    set_tokens(w, toks, 256 + n_extra);
    struct gguf_str m[16];
    for (size_t i = 0; i < n_merges; i++)
        m[i] = (struct gguf_str){merges[i], strlen(merges[i])};
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", m, n_merges);
    return w;
}

#define G "\xc4\xa0" /* "Ġ", the mark of a space */
#define C "\xc4\x8a" /* "Ċ", the mark of "\n" */
static const char *const bpe_extra[] = {G G, G "b", "ab", "abc", C C, "<|endoftext|>"};
static const char *const bpe_merges[] = {G " " G, G " b", "a b", C " " C};

static struct tokenizer *
bpe_tokenizer(const char *pre)
{
    struct tokenizer *t = NULL;
    char err[256];
    int rc = load_writer(bpe_writer(pre, bpe_extra, 6, bpe_merges, 4), &t, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "  pre '%s': %s\n", pre, err);
    CHECK_EQ(rc, 0);
    return t;
}

static void
test_bpe_rules(void)
{
    struct tokenizer *t = bpe_tokenizer("gpt-2");
    if (t == NULL)
        return;
    /*
     * "\s+(?!\S)" leaves the last space to the word: "a", " ", " b" (ids: a byte's
     * token is the byte), where one word "  b" would have merged "ĠĠ".
     */
    const int32_t spaces[] = {'a', ' ', 257};
    check_ids(t, "a  b", false, false, spaces, 3);
    /* Whole runs of spaces at the end merge: "  " -> "ĠĠ". */
    const int32_t tail[] = {'a', 256};
    check_ids(t, "a  ", false, false, tail, 2);
    /* Merges by rank: "ab" then no "abc" merge exists, so "ab" + "c". */
    const int32_t abc[] = {258, 'c'};
    check_ids(t, "abc", false, false, abc, 2);
    char *s = dec(t, abc, 2, false, false);
    CHECK_STR(s, "abc");
    free(s);
    tokenizer_free(t);
}

static void
test_bpe_ignore_merges(void)
{
    /* llama-bpe takes a word that is a token whole, merges or not. */
    struct tokenizer *t = bpe_tokenizer("llama-bpe");
    if (t == NULL)
        return;
    CHECK(tokenizer_add_bos(t) == false || tokenizer_bos(t) >= 0);
    const int32_t abc[] = {259};
    check_ids(t, "abc", false, false, abc, 1);
    /* llama3's "\s*[\r\n]+" keeps newlines together. */
    const int32_t nl[] = {'a', 260};
    check_ids(t, "a\n\n", false, false, nl, 2);
    tokenizer_free(t);
}

static void
test_pre_names(void)
{
    static const char *const names[] = {
        "default", "gpt-2", "llama-bpe", "llama3", "llama-v3", "qwen2", "deepseek-llm",
        "deepseek-coder", "falcon", "mpt", "starcoder", "refact", "command-r", "dbrx",
        "smaug-bpe", "olmo", "jais", "stablelm2", "phi-2", "jina-es", "jina-de", "jina-v2-es",
        "jina-v2-de", "jina-v1-en", "jina-v2-code", "codeshell", "poro-chat", "viking",
        "tekken", "smollm", "bloom", "chatglm-bpe", "exaone", "minerva-7b", "gpt3-finnish",
        "deepseek-v3", "gpt-4o", "chameleon", "bailingmoe", "seed-coder", "laguna",
        "exaone-moe", "minicpm5", "qwen35", "granite-embed-multi-97m", "jais-2", "spark2_5"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        struct tokenizer *t = bpe_tokenizer(names[i]);
        if (t == NULL)
            continue;
        CHECK_STR(tokenizer_pre_name(t), names[i]);
        size_t n = 0;
        const char *text = "Hello, y'all!  3333 \xe6\x88\x91\xe6\x83\xb3 \xf0\x9f\x98\x81\n\n x";
        int32_t *ids = enc(t, text, false, false, &n);
        char *s = dec(t, ids, n, false, false);
        CHECK_STR(s, text); /* every byte has a token here, so text round-trips */
        free(s);
        free(ids);
        tokenizer_free(t);
    }
}

static void
test_bad_merges(void)
{
    const char *const bad[] = {"ab"};
    expect_error(bpe_writer("gpt-2", bpe_extra, 6, bad, 1), "merge 0 'ab' is not two");
    const char *const empty_right[] = {"a b", "a "};
    expect_error(bpe_writer("gpt-2", bpe_extra, 6, empty_right, 2), "merge 1 'a '");
    const char *const lead_space[] = {" a"};
    expect_error(bpe_writer("gpt-2", bpe_extra, 6, lead_space, 1), "merge 0 ' a'");
    struct gguf_writer *w = bpe_writer("gpt-2", bpe_extra, 6, bpe_merges, 4);
    gguf_writer_set_u32(w, "tokenizer.ggml.merges", 3);
    expect_error(w, "tokenizer.ggml.merges: expected an array of strings");
}

/* ---- bert (WordPiece) --------------------------------------------------------- */

#define BERT_MODEL "models/embed/bert-tiny-random-f16.gguf"
#define BERT_UNK 100
#define BERT_CLS 101
#define BERT_SEP 102

/* The id whose vocabulary text is s, or -1 (a linear scan: tests only). */
static int32_t
id_of_text(const struct tokenizer *t, const char *s)
{
    for (int32_t i = 0; i < tokenizer_n_vocab(t); i++) {
        if (strcmp(tokenizer_token_text(t, i), s) == 0)
            return i;
    }
    return -1;
}

/* Compares the pieces (special = true) of ids[0..n) with the JSON array pieces. */
static bool
pieces_match(const struct tokenizer *t, const int32_t *ids, size_t n, const cJSON *pieces)
{
    if (cJSON_GetArraySize(pieces) != (int)n)
        return false;
    bool same = true;
    for (size_t i = 0; i < n; i++) {
        const char *want = cJSON_GetStringValue(cJSON_GetArrayItem(pieces, (int)i));
        char buf[64];
        int k = tokenizer_piece(t, ids[i], true, buf, sizeof(buf));
        bool ok = want != NULL && k >= 0 && (size_t)k < sizeof(buf) &&
                  strlen(want) == (size_t)k && memcmp(buf, want, (size_t)k) == 0;
        if (!ok)
            fprintf(stderr, "  piece %zu (id %d): '%.*s' instead of '%s'\n", i, ids[i],
                    k > 0 && (size_t)k < sizeof(buf) ? k : 0, buf, want ? want : "(null)");
        same &= ok;
    }
    return same;
}

/* One golden file: ids with add_special and parse_special, then their pieces. */
static void
bert_golden_case(const struct tokenizer *t, const char *id, int *ok_ids, int *ok_pieces)
{
    static int32_t want[4096];
    char path[1024];
    snprintf(path, sizeof(path), "%s/models/embed/golden/%s.json", test_shared_dir(), id);
    char *text = test_read_file(path, NULL);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    CHECK(j != NULL);
    const char *input = cJSON_GetStringValue(cJSON_GetObjectItem(j, "text"));
    const cJSON *pieces = cJSON_GetObjectItem(j, "pieces");
    CHECK(input != NULL && cJSON_IsArray(pieces));
    if (input != NULL && cJSON_IsArray(pieces)) {
        size_t nw = json_ids(cJSON_GetObjectItem(j, "tokens"), want, 4096), n = 0;
        CHECK(nw >= 2);
        int32_t *got = enc(t, input, true, true, &n);
        bool same = ids_equal(got, n, want, nw);
        if (!same)
            fprintf(stderr, "  %s: ids differ (%zu tokens, expected %zu)\n", id, n, nw);
        CHECK(same);
        bool pieces_ok = pieces_match(t, want, nw, pieces);
        CHECK(pieces_ok);
        *ok_ids += same;
        *ok_pieces += pieces_ok;
        free(got);
    }
    cJSON_Delete(j);
    free(text);
}

/* Every input that golden/index.json lists (13), never the holdout set. */
static void
test_bert_golden(void)
{
    struct tokenizer *t = load_shared(BERT_MODEL);
    char path[1024];
    snprintf(path, sizeof(path), "%s/models/embed/golden/index.json", test_shared_dir());
    char *text = test_read_file(path, NULL);
    cJSON *index = text ? cJSON_Parse(text) : NULL;
    CHECK(cJSON_IsArray(index));
    int cases = 0, ok_ids = 0, ok_pieces = 0;
    const cJSON *it = NULL, *list = t ? index : NULL;
    cJSON_ArrayForEach(it, list) {
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(it, "id"));
        CHECK(id != NULL);
        if (id == NULL)
            continue;
        bert_golden_case(t, id, &ok_ids, &ok_pieces);
        cases++;
    }
    CHECK_EQ(cases, 13);
    printf("  %s: %d golden inputs, ids %d/%d, pieces %d/%d\n", strrchr(BERT_MODEL, '/') + 1,
           cases, ok_ids, cases, ok_pieces, cases);
    cJSON_Delete(index);
    free(text);
    tokenizer_free(t);
}

/* n bytes of 'x' as one word: "▁xx" and then "xx" pieces. */
static void
bert_long_word(const struct tokenizer *t, size_t n)
{
    char *s = malloc(n + 1);
    memset(s, 'x', n);
    s[n] = '\0';
    int32_t first = id_of_text(t, "\xe2\x96\x81xx"), xx = id_of_text(t, "xx");
    CHECK(first >= 0 && xx >= 0);
    size_t got_n = 0;
    int32_t *got = enc(t, s, true, true, &got_n);
    CHECK_EQ(got_n, 2 + 1 + (n - 2) / 2);
    bool same = got != NULL && got_n == 2 + 1 + (n - 2) / 2 && got[0] == BERT_CLS &&
                got[1] == first && got[got_n - 1] == BERT_SEP;
    for (size_t i = 2; same && i + 1 < got_n; i++)
        same = got[i] == xx;
    CHECK(same);
    free(got);
    free(s);
}

static void
test_bert_rules(void)
{
    struct tokenizer *t = load_shared(BERT_MODEL);
    if (t == NULL)
        return;
    CHECK_STR(tokenizer_model_name(t), "bert");
    CHECK_EQ(tokenizer_bos(t), BERT_CLS);
    CHECK_EQ(tokenizer_eos(t), BERT_SEP); /* the file's eos_token_id */
    CHECK(tokenizer_add_bos(t));
    CHECK_EQ(tokenizer_token_type(t, BERT_SEP), TOKENIZER_CONTROL);
    /* No 100-character limit as in HF: 150 'x' is "▁xx" + 74 x "xx"; 1 MB works too. */
    bert_long_word(t, 150);
    bert_long_word(t, (size_t)1 << 20);
    const int32_t empty[] = {BERT_CLS, BERT_SEP};
    check_ids(t, "", true, true, empty, 2);
    check_ids(t, " \t\n ", true, true, empty, 2);
    const int32_t plain[] = {7592, 2088}; /* " hello", " world" */
    check_ids(t, "Hello, world", false, true, (int32_t[]){7592, 1010, 2088}, 3);
    check_ids(t, "hello world", false, false, plain, 2);
    char *s = dec(t, plain, 2, false, false);
    CHECK_STR(s, " hello world");
    free(s);
    /* Without parse_special, "[SEP]" is text: '[', 'sep', ']' words. */
    const int32_t sep_text[] = {BERT_CLS, id_of_text(t, "\xe2\x96\x81["),
                                id_of_text(t, "\xe2\x96\x81sep"), id_of_text(t, "\xe2\x96\x81]"),
                                BERT_SEP};
    CHECK(sep_text[1] >= 0 && sep_text[2] >= 0 && sep_text[3] >= 0);
    check_ids(t, "[SEP]", true, false, sep_text, 5);
    const int32_t sep_special[] = {BERT_CLS, BERT_SEP, BERT_SEP};
    check_ids(t, "[SEP]", true, true, sep_special, 3);
    /* A code point no token has makes its whole word one [UNK], and only that word. */
    const int32_t unk[] = {BERT_CLS, id_of_text(t, "\xe2\x96\x81" "a"), BERT_UNK,
                           id_of_text(t, "\xe2\x96\x81" "b"), BERT_SEP};
    CHECK(unk[1] >= 0 && unk[3] >= 0);
    check_ids(t, "a xx\xf0\x9f\xa6\x99xx b", true, true, unk, 5);
    tokenizer_free(t);
}

/* A small WordPiece vocabulary: the five BERT specials, then words. */
static const char *const wpm_tokens[] = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "\xe2\x96\x81" "a", "b",
    "\xe2\x96\x81" "Ab", "\xe2\x96\x81" "ab", "\xe2\x96\x81" "e", "\xe2\x96\x81\xc3\xa9"};
static const int32_t wpm_types[] = {3, 3, 3, 3, 3, 1, 1, 1, 1, 1, 1};
#define WPM_N 11

/* The vocabulary with model "bert"; ids says whether to name CLS/SEP/UNK. */
static struct gguf_writer *
wpm_writer(bool ids)
{
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "bert");
    set_tokens(w, wpm_tokens, WPM_N);
    gguf_writer_set_arr(w, "tokenizer.ggml.token_type", GGUF_VT_INT32, wpm_types, WPM_N);
    if (ids) {
        gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 2);
        gguf_writer_set_u32(w, "tokenizer.ggml.seperator_token_id", 3);
        gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 1);
    }
    return w;
}

/* Loads w and checks the ids of "Ab " U+00E9 (add_special on). Consumes w. */
static void
wpm_case(struct gguf_writer *w, const int32_t *want, size_t n)
{
    struct tokenizer *t = NULL;
    char err[256];
    int rc = load_writer(w, &t, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "  wpm vocabulary: %s\n", err);
    CHECK_EQ(rc, 0);
    if (t != NULL)
        check_ids(t, "Ab \xc3\xa9", true, true, want, n);
    tokenizer_free(t);
}

static void
test_bert_vocab(void)
{
    /* Missing ids: the defaults (101, 102, 100) are out of range for 11 tokens. */
    expect_error(wpm_writer(false), "tokenizer.ggml.bos_token_id is not set, but a 'bert' "
                                    "vocabulary puts it ([CLS]) first in every input");
    struct gguf_writer *w = wpm_writer(false);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 2);
    expect_error(w, "tokenizer.ggml.seperator_token_id is not set");
    w = wpm_writer(false);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 2);
    gguf_writer_set_u32(w, "tokenizer.ggml.seperator_token_id", 3);
    expect_error(w, "tokenizer.ggml.unknown_token_id is not set");
    w = wpm_writer(true);
    gguf_writer_set_u32(w, "tokenizer.ggml.seperator_token_id", 99);
    expect_error(w, "tokenizer.ggml.seperator_token_id: 99 is out of range");
    w = wpm_writer(true);
    gguf_writer_set_str(w, "tokenizer.ggml.normalizer.lowercase", "yes");
    expect_error(w, "tokenizer.ggml.normalizer.lowercase: expected a bool");

    /* Lowercase and strip accents by default; add_*_token change nothing. */
    w = wpm_writer(true);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", true); /* and no eos id */
    wpm_case(w, (const int32_t[]){2, 8, 9, 3}, 4);
    /* Cased: no lowercasing, and strip_accents follows lowercase. */
    w = wpm_writer(true);
    gguf_writer_set_bool(w, "tokenizer.ggml.normalizer.lowercase", false);
    wpm_case(w, (const int32_t[]){2, 7, 10, 3}, 4);
    w = wpm_writer(true);
    gguf_writer_set_bool(w, "tokenizer.ggml.normalizer.strip_accents", false);
    wpm_case(w, (const int32_t[]){2, 8, 10, 3}, 4);
    /* "a b": "▁b" is no token, so that word is [UNK]. */
    struct tokenizer *t = NULL;
    char err[256];
    CHECK_EQ(load_writer(wpm_writer(true), &t, err, sizeof(err)), 0);
    if (t != NULL) {
        check_ids(t, "a b ab", false, false, (const int32_t[]){5, 1, 8}, 3);
        check_ids(t, "a[MASK]b", true, true, (const int32_t[]){2, 5, 4, 1, 3}, 5);
    }
    tokenizer_free(t);
}

/* ---- Speed and threads ------------------------------------------------------- */

static char *
long_text(size_t min_len)
{
    char path[1024];
    size_t len = 0;
    snprintf(path, sizeof(path), "%s/fixtures/tokenizer/ggml-vocab-gpt-2.gguf.inp", test_shared_dir());
    char *base = test_read_file(path, &len);
    if (base == NULL)
        return NULL;
    char *s = malloc(min_len + len + 1);
    size_t n = 0;
    while (n < min_len) {
        memcpy(s + n, base, len);
        n += len;
    }
    s[n] = '\0';
    free(base);
    return s;
}

static double
now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void
speed_one(const char *rel, const char *text)
{
    struct tokenizer *t = load_shared(rel);
    if (t == NULL)
        return;
    size_t n = 0;
    double t0 = now();
    int32_t *ids = enc(t, text, true, true, &n);
    double ms = 1e3 * (now() - t0);
    printf("  %s: %zu bytes -> %zu tokens in %.2f ms\n", strrchr(rel, '/') + 1, strlen(text), n,
           ms);
    CHECK(n >= 4000);
    CHECK(ms < 500); /* milliseconds, even under sanitizers */
    free(ids);
    tokenizer_free(t);
}

static void
test_encode_speed(void)
{
    char *text = long_text(12000);
    CHECK(text != NULL);
    if (text == NULL)
        return;
    speed_one("fixtures/tokenizer/ggml-vocab-llama-spm.gguf", text);
    speed_one("fixtures/tokenizer/ggml-vocab-gpt-2.gguf", text);
    speed_one("fixtures/tokenizer/ggml-vocab-deepseek-llm.gguf", text);
    speed_one("models/kjv-tiny-f32.gguf", text);
    free(text);
}

struct job {
    const struct tokenizer *t;
    const char *text;
    int32_t *ids;
    size_t n;
};

static void *
run_job(void *arg)
{
    struct job *j = arg;
    for (int i = 0; i < 3; i++) {
        free(j->ids);
        tokenizer_encode(j->t, j->text, strlen(j->text), true, true, &j->ids, &j->n);
    }
    return NULL;
}

static void
test_threads(void)
{
    struct tokenizer *t = load_shared("fixtures/tokenizer/ggml-vocab-deepseek-llm.gguf");
    char *text = long_text(4000);
    if (t == NULL || text == NULL) {
        tokenizer_free(t);
        free(text);
        return;
    }
    size_t n = 0;
    int32_t *want = enc(t, text, true, true, &n);
    struct job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (struct job){t, text, NULL, 0};
        CHECK_EQ(pthread_create(&th[i], NULL, run_job, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK(ids_equal(jobs[i].ids, jobs[i].n, want, n));
        free(jobs[i].ids);
    }
    free(want);
    free(text);
    tokenizer_free(t);
}

int
main(int argc, char **argv)
{
    static const struct check_test tests[] = {
        {"vocab_files", test_vocab_files},
        {"golden_prompts", test_golden_prompts},
        {"kjv_special", test_kjv_special},
        {"decode_pieces", test_decode_pieces},
        {"gpt2_special", test_gpt2_special},
        {"invalid_utf8", test_invalid_utf8},
        {"utf8_complete", test_utf8_complete},
        {"bad_byte_tokens", test_bad_byte_tokens},
        {"bad_counts", test_bad_counts},
        {"bad_model_and_pre", test_bad_model_and_pre},
        {"bad_ids", test_bad_ids},
        {"bad_merges", test_bad_merges},
        {"spm_merges", test_spm_merges},
        {"add_flags", test_add_flags},
        {"strip_rules", test_strip_rules},
        {"bpe_rules", test_bpe_rules},
        {"bpe_ignore_merges", test_bpe_ignore_merges},
        {"pre_names", test_pre_names},
        {"bert_golden", test_bert_golden},
        {"bert_rules", test_bert_rules},
        {"bert_vocab", test_bert_vocab},
        {"encode_speed", test_encode_speed},
        {"threads", test_threads},
        {NULL, NULL},
    };
    return check_main(tests, argc, argv);
}
