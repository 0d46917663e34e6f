/*
 * textout.c - the generated text a client may see, released token by token.
 *
 * Pushed bytes wait in hold until they are safe: a stop sequence that ends in
 * a later token must never reach the client, so the longest tail of hold that
 * is a prefix of some stop sequence stays back, and so do the bytes of a
 * UTF-8 character that is not complete yet. Invariant: released text never
 * contains the start of a stop sequence that could still match, so searching
 * hold alone finds every match.
 */
#include <errno.h>
#include <string.h>

#include "server_int.h"

void
server__textout_init(struct textout *t, const char *const *stop, int n_stop)
{
    *t = (struct textout){ stop, n_stop, SBUF_INIT, 0, 0, false };
}

void
server__textout_release(struct textout *t)
{
    server__buf_release(&t->hold);
}

/* Moves the first n bytes of hold to out. */
static int
release(struct textout *t, size_t n, struct sbuf *out)
{
    int rc = server__buf_add(out, t->hold.p, n);
    if (rc < 0)
        return rc;
    server__buf_consume(&t->hold, n);
    t->released += n;
    return 0;
}

/* Offset of the earliest stop match in hold, or SIZE_MAX. */
static size_t
first_match(const struct textout *t)
{
    size_t best = SIZE_MAX;
    for (int i = 0; i < t->n_stop; i++) {
        const char *m = memmem(t->hold.p, t->hold.len, t->stop[i], strlen(t->stop[i]));
        if (m != NULL && (size_t)(m - t->hold.p) < best)
            best = (size_t)(m - t->hold.p);
    }
    return best;
}

/* Length of the longest tail of hold that a stop sequence begins with. */
static size_t
stop_prefix_tail(const struct textout *t)
{
    size_t keep = 0;
    for (int i = 0; i < t->n_stop; i++) {
        size_t len = strlen(t->stop[i]);
        size_t k = len - 1 < t->hold.len ? len - 1 : t->hold.len;
        for (; k > keep; k--)
            if (memcmp(t->hold.p + t->hold.len - k, t->stop[i], k) == 0)
                break;
        keep = k > keep ? k : keep;
    }
    return keep;
}

int
server__textout_push(struct textout *t, const char *p, size_t n, struct sbuf *out)
{
    if (t->stopped)
        return 1;
    int rc = server__buf_add(&t->hold, p, n);
    if (rc < 0)
        return rc;
    t->pushed += n;
    if (t->hold.len == 0)
        return 0;
    size_t at = first_match(t);
    if (at != SIZE_MAX) {
        if ((rc = release(t, at, out)) < 0)
            return rc;
        t->hold.len = 0;
        t->stopped = true;
        return 1;
    }
    size_t keep = stop_prefix_tail(t);
    size_t incomplete = t->hold.len - tokenizer_utf8_complete(t->hold.p, t->hold.len);
    keep = incomplete > keep ? incomplete : keep;
    return release(t, t->hold.len - keep, out);
}

int
server__textout_flush(struct textout *t, struct sbuf *out)
{
    return t->stopped ? 0 : release(t, t->hold.len, out);
}
