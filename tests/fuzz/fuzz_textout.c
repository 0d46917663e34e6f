/*
 * fuzz_textout.c - the text released to a streaming client (server/textout.c:
 * stop sequences and UTF-8 holdback; tokenizer_utf8_complete), fed in pieces
 * cut where the input says, then framed as SSE chunks (server__sse_chunk).
 *
 * Input: byte 0 gives the number of stop sequences (0..4) and the response
 * kind; each stop is a length byte (0..31; empty ones are skipped, as
 * server__parse_request skips them) and its bytes; then a count byte and that
 * many piece lengths (0..15, used in turn); the rest is the generated text.
 *
 * What a client relies on, checked after every piece:
 *   - a push reports a stop exactly when the text pushed so far holds a
 *     complete match; everything released, joined, is then the text before
 *     the earliest such match (all of it when none matched), so no stop
 *     sequence ever reaches the client;
 *   - what is held back is at most the longest stop sequence less one byte, or
 *     3 bytes of a character not yet complete;
 *   - when the text and the stops are valid UTF-8, each released piece is;
 *   - each SSE event is "data: " + one line of JSON + a blank line, and its
 *     text is the released piece (invalid bytes as U+FFFD).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/server_int.h"
#include "fuzz.h"
#include "tokenizer.h"

/*
 * Where the earliest match of any stop that lies inside text[0..at) starts, or
 * SIZE_MAX if none does. The server looks for stops after each piece, so the
 * first piece boundary with a match decides the text released.
 */
static size_t
oracle(const char *text, size_t at, const char *const *stop, int n_stop)
{
    size_t best = SIZE_MAX;
    for (int i = 0; i < n_stop; i++) {
        const char *m = memmem(text, at, stop[i], strlen(stop[i]));
        if (m != NULL && (size_t)(m - text) < best)
            best = (size_t)(m - text);
    }
    return best;
}

/* Bytes in the UTF-8 sequence that lead byte c starts (1 for anything else). */
static size_t
seq_len(unsigned char c)
{
    return c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
}

/*
 * tokenizer_utf8_complete on text[0..at), a prefix of len bytes: it holds back
 * at most 3 bytes, and when the text is valid UTF-8, exactly the bytes of a
 * character that is not complete yet.
 */
static void
check_complete(const char *text, size_t at, size_t len, bool valid)
{
    const unsigned char *u = (const unsigned char *)text;
    size_t k = tokenizer_utf8_complete(text, at);
    FUZZ_CHECK(k <= at && at - k <= 3);
    if (!valid)
        return;
    if (k < at)
        FUZZ_CHECK((u[k] & 0xC0) != 0x80 && seq_len(u[k]) > at - k);
    else if (at < len)
        FUZZ_CHECK((u[at] & 0xC0) != 0x80);
}

/* The SSE event of a released piece: its framing and its text. */
static void
check_sse(enum oai_kind kind, const char *piece, size_t n)
{
    struct oai_meta m = { .kind = kind, .id = "cmpl-fuzz", .model = "kjv-tiny-q8_0",
                          .created = 1 };
    struct choice c = { 0 };
    c.text.p = (char *)piece;
    c.text.len = n;
    struct sbuf out = SBUF_INIT, want = SBUF_INIT;
    FUZZ_CHECK(server__sse_chunk(&out, &m, &c, OAI_CHUNK_TEXT, 0, NULL) == 0);
    FUZZ_CHECK(out.len > 8 && memcmp(out.p, "data: ", 6) == 0);
    FUZZ_CHECK(memcmp(out.p + out.len - 2, "\n\n", 2) == 0);
    FUZZ_CHECK(memchr(out.p, '\n', out.len - 2) == NULL);
    out.p[out.len - 2] = '\0';
    cJSON *o = cJSON_Parse(out.p + 6);
    cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "choices"), 0);
    const cJSON *t = kind == OAI_CHAT
        ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(ch, "delta"),
                                           "content")
        : cJSON_GetObjectItemCaseSensitive(ch, "text");
    FUZZ_CHECK(server__utf8_sanitize(&want, piece, n) == 0);
    /*
     * The text may hold NULs (\u0000 in the JSON), which cJSON decodes but
     * strlen stops at: compare the decoded bytes, then the end.
     */
    FUZZ_CHECK(cJSON_IsString(t) && strlen(t->valuestring) <= want.len);
    FUZZ_CHECK(memcmp(t->valuestring, want.p ? want.p : "", want.len) == 0);
    FUZZ_CHECK(t->valuestring[want.len] == '\0');
    cJSON_Delete(o);
    server__buf_release(&out);
    server__buf_release(&want);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data, *end = data + size;
    if (p == end)
        return 0;
    int n_want = *p % 5;
    enum oai_kind kind = *p++ & 0x80 ? OAI_CHAT : OAI_COMPLETIONS;
    char *stops[OAI_MAX_STOP];
    const char *stop[OAI_MAX_STOP];
    int n_stop = 0, n_made = 0;
    size_t max_stop = 0;
    bool stops_valid = true;
    for (int i = 0; i < n_want && p < end; i++) {
        size_t n = *p++ % 32;
        n = n < (size_t)(end - p) ? n : (size_t)(end - p);
        stops[n_made] = malloc(n + 1);
        FUZZ_CHECK(stops[n_made] != NULL);
        memcpy(stops[n_made], p, n);
        stops[n_made][n] = '\0';
        p += n;
        size_t sl = strlen(stops[n_made]);  /* a NUL ends a C string: as the JSON gives it */
        if (sl > 0) {
            stop[n_stop++] = stops[n_made];
            max_stop = sl > max_stop ? sl : max_stop;
            stops_valid = stops_valid && server__utf8_valid(stops[n_made], sl);
        }
        n_made++;
    }
    uint8_t cuts[256];
    size_t n_cuts = p < end ? *p++ : 0;
    n_cuts = n_cuts < (size_t)(end - p) ? n_cuts : (size_t)(end - p);
    memcpy(cuts, p, n_cuts);
    p += n_cuts;
    size_t len = (size_t)(end - p);
    char *text = fuzz_dup(p, len);
    bool valid = server__utf8_valid(text, len);

    struct textout tx;
    struct sbuf all = SBUF_INIT;
    server__textout_init(&tx, stop, n_stop);
    size_t at = 0, want_len = len;
    int rc = 0;
    bool last_empty = false;
    for (size_t k = 0; at < len && rc == 0; k++) {
        size_t n = n_cuts ? cuts[k % n_cuts] % 16 : 1;
        n = n < len - at ? n : len - at;
        if (n == 0 && last_empty) /* an empty piece (a token that prints nothing), not two */
            n = 1;
        last_empty = n == 0;
        FUZZ_CHECK(tokenizer_utf8_complete(text + at, n) <= n);
        struct sbuf out = SBUF_INIT;
        rc = server__textout_push(&tx, text + at, n, &out);
        FUZZ_CHECK(rc == 0 || rc == 1);
        at += n;
        size_t match = oracle(text, at, stop, n_stop);
        FUZZ_CHECK((rc == 1) == (match != SIZE_MAX));
        if (rc == 1)
            want_len = match;
        if (rc == 0) {
            FUZZ_CHECK(tx.hold.len <= (max_stop > 4 ? max_stop - 1 : 3));
            FUZZ_CHECK(tx.released + tx.hold.len == tx.pushed && tx.pushed == at);
            check_complete(text, at, len, valid);
        }
        if (valid && stops_valid)
            FUZZ_CHECK(server__utf8_valid(out.p, out.len));
        if (out.len > 0)
            check_sse(kind, out.p, out.len);
        FUZZ_CHECK(server__buf_add(&all, out.p, out.len) == 0);
        server__buf_release(&out);
    }
    if (rc == 0) {
        struct sbuf out = SBUF_INIT;
        FUZZ_CHECK(server__textout_flush(&tx, &out) == 0);
        FUZZ_CHECK(server__buf_add(&all, out.p, out.len) == 0);
        server__buf_release(&out);
    }
    /* Released: the text before the stop, never any of a stop. */
    FUZZ_CHECK(all.len == want_len && memcmp(all.p ? all.p : "", text, want_len) == 0);
    FUZZ_CHECK(oracle(all.p ? all.p : "", all.len, stop, n_stop) == SIZE_MAX);
    server__textout_release(&tx);
    server__buf_release(&all);
    for (int i = 0; i < n_made; i++)
        free(stops[i]);
    free(text);
    return 0;
}
