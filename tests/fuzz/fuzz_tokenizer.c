/*
 * fuzz_tokenizer.c - encode and decode of arbitrary text with the real
 * vocabularies: kjv-tiny's and llama's SentencePiece ("llama"), GPT-2's and
 * DeepSeek LLM's byte-level BPE ("gpt2", two pre-tokenizers) and the BERT
 * embedding model's WordPiece ("bert"), each loaded once.
 *
 * For each: the input is encoded without and with special tokens; valid
 * UTF-8 must encode and invalid UTF-8 be refused with -EINVAL; every id is in
 * the vocabulary; the ids decode, and for the byte-level BPE vocabularies
 * they decode back to the text exactly. Then the input's bytes are read as
 * token ids (16-bit, and 32-bit with any value), which tokenizer_decode and
 * tokenizer_piece must decode, or refuse with -EINVAL if one is out of range.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/server_int.h"
#include "fuzz.h"
#include "gguf.h"
#include "tokenizer.h"

#define N_TOK 5

static struct tokenizer *toks[N_TOK];
static bool byte_level[N_TOK];          /* decode(encode(text)) == text */

static void
open_vocab(int i, const char *rel, bool exact)
{
    char path[1024], err[256] = "";
    struct gguf *g = NULL;
    fuzz_path(path, sizeof(path), rel);
    fuzz_need(gguf_open(path, &g, err, sizeof(err)), path, err);
    fuzz_need(tokenizer_new(g, &toks[i], err, sizeof(err)), path, err);
    gguf_free(g);
    byte_level[i] = exact;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    open_vocab(0, "models/kjv-tiny-q8_0.gguf", false);
    open_vocab(1, "fixtures/tokenizer/ggml-vocab-llama-spm.gguf", false);
    open_vocab(2, "fixtures/tokenizer/ggml-vocab-gpt-2.gguf", true);
    open_vocab(3, "fixtures/tokenizer/ggml-vocab-deepseek-llm.gguf", true);
    open_vocab(4, "models/embed/bert-tiny-random-f16.gguf", false);
    return 0;
}

/* Decodes ids[0..n) and checks that asking twice, with and without room, agrees. */
static char *
decode(const struct tokenizer *t, const int32_t *ids, size_t n, bool special, bool strip,
       int *len)
{
    *len = tokenizer_decode(t, ids, n, special, strip, NULL, 0);
    if (*len < 0)
        return NULL;
    char *buf = malloc((size_t)*len + 1);
    FUZZ_CHECK(buf != NULL);
    FUZZ_CHECK(tokenizer_decode(t, ids, n, special, strip, buf, (size_t)*len) == *len);
    if (*len > 0)   /* too little room: the same length, and a prefix */
        FUZZ_CHECK(tokenizer_decode(t, ids, n, special, strip, buf, (size_t)*len - 1) == *len);
    buf[*len] = '\0';
    return buf;
}

static void
encode_decode(int k, const char *text, size_t len, bool valid)
{
    const struct tokenizer *t = toks[k];
    int32_t nv = tokenizer_n_vocab(t);
    for (int mode = 0; mode < 2; mode++) {
        bool special = mode == 1;
        int32_t *ids = NULL;
        size_t n = 0;
        int rc = tokenizer_encode(t, text, len, special, special, &ids, &n);
        FUZZ_CHECK(valid ? rc == 0 : rc == -EINVAL);
        if (rc < 0)
            continue;
        FUZZ_CHECK(ids != NULL);
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv);
        int out_len = 0;
        char *out = decode(t, ids, n, special, true, &out_len);
        FUZZ_CHECK(out != NULL);
        if (!special && byte_level[k])
            FUZZ_CHECK((size_t)out_len == len && memcmp(out, text, len) == 0);
        free(out);
        free(ids);
    }
}

/* The input's bytes as token ids: each must decode, or the whole be refused. */
static void
decode_ids(int k, const uint8_t *data, size_t size)
{
    const struct tokenizer *t = toks[k];
    int32_t nv = tokenizer_n_vocab(t);
    size_t n16 = size / 2, n32 = size / 4;
    int32_t *ids = malloc((n16 ? n16 : 1) * sizeof(int32_t));
    FUZZ_CHECK(ids != NULL);
    for (int wide = 0; wide < 2; wide++) {
        size_t n = wide ? n32 : n16;
        bool in_range = true;
        for (size_t i = 0; i < n; i++) {
            if (wide)
                memcpy(&ids[i], data + 4 * i, 4);
            else
                ids[i] = (int16_t)(data[2 * i] | data[2 * i + 1] << 8);
            in_range = in_range && ids[i] >= 0 && ids[i] < nv;
        }
        for (int special = 0; special < 2; special++) {
            int len = 0;
            char *out = decode(t, ids, n, special, special, &len);
            FUZZ_CHECK(in_range ? out != NULL : len == -EINVAL);
            if (out != NULL)
                FUZZ_CHECK(tokenizer_utf8_complete(out, (size_t)len) <= (size_t)len);
            free(out);
        }
        for (size_t i = 0; i < n && i < 64; i++) {
            char piece[256];
            int rc = tokenizer_piece(t, ids[i], i % 2, piece, sizeof(piece));
            FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv ? rc >= 0 : rc == -EINVAL);
            FUZZ_CHECK((tokenizer_token_text(t, ids[i]) != NULL) == (ids[i] >= 0 && ids[i] < nv));
            tokenizer_is_eog(t, ids[i]);
        }
    }
    free(ids);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_dup(data, size);
    bool valid = server__utf8_valid(text, size);
    for (int k = 0; k < N_TOK; k++) {
        encode_decode(k, text, size, valid);
        decode_ids(k, data, size);
    }
    free(text);
    return 0;
}
