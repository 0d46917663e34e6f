/*
 * util.c - byte buffers, UTF-8 checks and the clock for the server.
 *
 * A struct sbuf grows by doubling and keeps a NUL after its bytes, so a
 * buffer of text can be handed to functions that want a C string. Sizes come
 * from clients, so growth is checked and fails with -ENOMEM, never aborts.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server_int.h"

double
server__mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- Byte buffers ----------------------------------------------------- */

int
server__buf_add(struct sbuf *b, const void *p, size_t n)
{
    if (n > SIZE_MAX - b->len - 1)
        return -ENOMEM;
    size_t need = b->len + n + 1;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        char *q = realloc(b->p, cap);
        if (q == NULL)
            return -ENOMEM;
        b->p = q;
        b->cap = cap;
    }
    if (n > 0)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int
server__buf_adds(struct sbuf *b, const char *s)
{
    return server__buf_add(b, s, strlen(s));
}

void
server__buf_consume(struct sbuf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->p, b->p + n, b->len - n);
        b->len -= n;
    }
    if (b->p != NULL)
        b->p[b->len] = '\0';
}

void
server__buf_release(struct sbuf *b)
{
    free(b->p);
    *b = (struct sbuf)SBUF_INIT;
}

void *
server__xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        fprintf(stderr, "loraserve: out of memory (%zu x %zu bytes)\n", n, size);
        abort();
    }
    return p;
}

/* ---- UTF-8 ------------------------------------------------------------ */

/* Length of the valid sequence at s[0..n), or 0 if it is invalid or cut short. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t len = s[0] >= 0xF0 ? 4 : s[0] >= 0xE0 ? 3 : 2;
    if (s[0] < 0xC2 || s[0] > 0xF4 || n < len)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if (len == 3 && s[0] == 0xE0 && s[1] < 0xA0)
        return 0;   /* overlong */
    if (len == 3 && s[0] == 0xED && s[1] >= 0xA0)
        return 0;   /* surrogate */
    if (len == 4 && s[0] == 0xF0 && s[1] < 0x90)
        return 0;   /* overlong */
    if (len == 4 && s[0] == 0xF4 && s[1] >= 0x90)
        return 0;   /* past U+10FFFF */
    return len;
}

bool
server__utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_seq(u + i, n - i);
        if (k == 0)
            return false;
        i += k;
    }
    return true;
}

int
server__utf8_sanitize(struct sbuf *out, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t start = 0, i = 0;
    while (i < n) {
        size_t k = utf8_seq(u + i, n - i);
        if (k > 0) {
            i += k;
            continue;
        }
        int rc = server__buf_add(out, s + start, i - start);
        if (rc == 0)
            rc = server__buf_add(out, "\xEF\xBF\xBD", 3);
        if (rc < 0)
            return rc;
        start = ++i;
    }
    return server__buf_add(out, s + start, n - start);
}
