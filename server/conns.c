/*
 * conns.c - a deadline for every connection's request, against slow clients.
 *
 * libmicrohttpd's own timeout counts inactivity, so a client that sends a
 * byte now and then ("slowloris", or a body dribbled out) would hold its
 * connection for ever. Here each connection has a clock: from the moment it
 * opens (or its previous answer is done) its next request must be in whole,
 * headers and body, within --request-timeout seconds; a timer looks every
 * second and shuts the socket of a connection past it, which libmicrohttpd
 * then closes. While a request is being answered (a long generation, a
 * stream) the clock is stopped. A connection opened beyond --max-connections
 * is answered 503 and closed (libmicrohttpd itself stops accepting a little
 * further on, leaving the rest in the listen backlog). Everything here runs
 * on the loop thread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <microhttpd.h>

#include "server_int.h"

struct tconn {
    struct tconn *prev, *next;
    struct MHD_Connection *c;
    int fd;
    double t0;                      /* when the wait for its next request began */
    bool busy;                      /* a request is in and being answered */
    bool over;                      /* opened beyond --max-connections: answered 503 */
};

static void
opened(struct server *s, struct MHD_Connection *c, void **ctx)
{
    struct tconn *t = server__xcalloc(1, sizeof(*t));
    const union MHD_ConnectionInfo *fi = MHD_get_connection_info(c,
                                                                 MHD_CONNECTION_INFO_CONNECTION_FD);
    t->c = c;
    t->fd = fi ? fi->connect_fd : -1;
    t->t0 = server__mono_s();
    t->over = ++s->n_conns > s->cfg->max_connections;
    t->next = s->tconns;
    if (s->tconns != NULL)
        s->tconns->prev = t;
    s->tconns = t;
    *ctx = t;
}

static void
closed(struct server *s, struct tconn *t)
{
    s->n_conns--;
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        s->tconns = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    free(t);
}

void
server__conns_notify(void *cls, struct MHD_Connection *c, void **ctx,
                     enum MHD_ConnectionNotificationCode code)
{
    struct server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED)
        opened(s, c, ctx);
    else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *ctx != NULL)
        closed(s, *ctx);
}

static struct tconn *
of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *i = MHD_get_connection_info(c,
                                                                MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return i ? i->socket_context : NULL;
}

bool
server__conn_over(struct MHD_Connection *c)
{
    const struct tconn *t = of(c);
    return t != NULL && t->over;
}

void
server__conn_busy(struct MHD_Connection *c, bool busy)
{
    struct tconn *t = of(c);
    if (t == NULL)
        return;
    t->busy = busy;
    t->t0 = server__mono_s(); /* idle from now on, once not busy */
}

void
server__conns_sweep(uv_timer_t *timer)
{
    struct server *s = timer->data;
    double now = server__mono_s(), limit = s->cfg->request_timeout;
    for (struct tconn *t = s->tconns; t != NULL; t = t->next) {
        if (t->busy || t->fd < 0 || now - t->t0 <= limit)
            continue;
        shutdown(t->fd, SHUT_RDWR);     /* libmicrohttpd sees it and closes the connection */
        t->fd = -1;
        s->n_timeouts++;
    }
    if (s->n_timeouts != s->n_timeouts_said) {
        fprintf(stderr, "loraserve: closed %llu connections that sent no whole request within "
                "%d s (--request-timeout)\n", s->n_timeouts - s->n_timeouts_said,
                s->cfg->request_timeout);
        s->n_timeouts_said = s->n_timeouts;
    }
    server__http_kick(s);
}
