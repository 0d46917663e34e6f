/*
 * registry.c - named adapters: published versions and their refs, loading on
 * first use, the memory budget with LRU eviction, and path confinement.
 *
 * Two locks, always taken in this order. db_lock serializes every change
 * (load, reload, unload, pin, eviction) and the SQLite connection. lock
 * guards the entries, the refs handed out from them, LRU ticks and the
 * resident byte count; it is held only for lookups and pointer swaps, never
 * for I/O, allocation or freeing (STYLE.md E). A change loads its file with
 * no lock, then takes db_lock, plans under lock (the version, the adapters to
 * evict), writes its rows in one transaction, applies the plan under lock,
 * and drops both before unref'ing what it replaced. Since every change holds
 * db_lock, a plan stays valid until it is applied: only gets run in between,
 * and they only take refs, touch LRU ticks and add first-use placeholders.
 * Entries are unlinked and freed only by a change holding db_lock.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "adapters_int.h"

struct adapter {
    atomic_int refs;
    int64_t version;            /* set before it is published, then fixed */
    struct engine_lora *lora;
    struct adapters_info info;
    struct adapter *next_drop;  /* a change's list of registry refs to drop */
    char name[ADAPTERS_KEY_MAX + 1];
};

/* One registered name (or, while registered is false, a first-use load in progress). */
struct entry {
    struct entry *next;
    char name[ADAPTERS_KEY_MAX + 1];
    char *path;                 /* resolved; NULL in a placeholder */
    bool registered;
    int64_t version;
    struct adapters_info info;  /* of the version last loaded */
    struct adapter *cur;        /* the registry's ref; NULL unless loaded */
    uint64_t bytes;             /* engine_lora_bytes of cur; 0 without cur */
    enum adapters_status status;
    bool pinned;
    bool loading;               /* a get is loading it; others wait on cond */
    bool victim;                /* chosen for eviction by the change being planned */
    struct entry *next_victim;
    uint64_t gen;               /* new on every change of version: stale loads are dropped */
    uint64_t lru;               /* tick of the last get */
    uint64_t n_fail;            /* failed loads, so waiters can tell theirs failed */
    int err_rc;
    char error[256];
    bool used_dirty;            /* last_used_at not yet written */
    int64_t created_at, updated_at, last_used_at;
};

struct adapters {
    const struct engine_model *m;
    int max_rank;
    uint64_t max_memory;
    char **roots;               /* realpath'd */
    int n_roots;
    char *dir;                  /* realpath of adapter_dir, or NULL */
    struct adapters_db *db;
    pthread_mutex_t db_lock;
    pthread_mutex_t lock;
    pthread_cond_t cond;        /* a load finished (or was dropped) */
    struct entry *head;
    uint64_t resident;          /* sum of the entries' bytes */
    uint64_t loads, evictions;  /* versions made resident, and evicted, since open */
    uint64_t tick;
    uint64_t gen;
};

static int64_t
now(void)
{
    return (int64_t)time(NULL);
}

/* ---- Versions --------------------------------------------------------- */

void
adapter_ref(struct adapter *a)
{
    int old = atomic_fetch_add_explicit(&a->refs, 1, memory_order_relaxed);
    assert(old > 0);
    (void)old;
}

void
adapter_unref(struct adapter *a)
{
    if (a == NULL)
        return;
    int old = atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel);
    assert(old > 0);                /* underflow is a bug */
    if (old == 1) {
        engine_lora_unref(a->lora); /* touches only a's own memory */
        free(a);
    }
}

const char *
adapter_name(const struct adapter *a)
{
    return a->name;
}

int64_t
adapter_version(const struct adapter *a)
{
    return a->version;
}

struct engine_lora *
adapter_lora(const struct adapter *a)
{
    return a->lora;
}

const struct adapters_info *
adapter_info(const struct adapter *a)
{
    return &a->info;
}

/* Drops a change's list of registry refs, after the locks are released. */
static void
drop_all(struct adapter *list)
{
    while (list != NULL) {
        struct adapter *next = list->next_drop;
        adapter_unref(list);
        list = next;
    }
}

/* Loads path (already confined) into a new version of name. Caller owns *out. */
static int
build(struct adapters *r, const char *name, const char *path, struct adapter **out, char *err,
      size_t errlen)
{
    *out = NULL;
    struct engine_lora *l = NULL;
    struct adapters_info info;
    int rc = adapters_load_path(r->m, path, r->max_rank, &l, &info, err, errlen);
    if (rc < 0)
        return rc;
    struct adapter *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        engine_lora_unref(l);
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    atomic_init(&a->refs, 1);
    a->lora = l;
    a->info = info;
    snprintf(a->name, sizeof(a->name), "%s", name);
    *out = a;
    return 0;
}

/* ---- Names and paths -------------------------------------------------- */

bool
adapters_name_valid(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > ADAPTERS_NAME_MAX || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

bool
adapters_key_valid(const char *key)
{
    const char *slash = key ? strchr(key, '/') : NULL;
    if (slash == NULL)
        return adapters_name_valid(key);
    char owner[ADAPTERS_NAME_MAX + 1];
    size_t n = (size_t)(slash - key);
    if (n == 0 || n > ADAPTERS_NAME_MAX)
        return false;
    memcpy(owner, key, n);
    owner[n] = '\0';
    return adapters_name_valid(owner) && adapters_name_valid(slash + 1);
}

static bool
within_roots(const struct adapters *r, const char *path)
{
    for (int i = 0; i < r->n_roots; i++) {
        size_t n = strlen(r->roots[i]);
        if (strcmp(r->roots[i], "/") == 0 ||
            (strncmp(path, r->roots[i], n) == 0 && (path[n] == '\0' || path[n] == '/')))
            return true;
    }
    return false;
}

/* path made absolute with "." and ".." folded, without touching the file system. */
static bool
lexical(const char *path, char *out, size_t len)
{
    char buf[2 * PATH_MAX];
    if (path[0] == '/')
        snprintf(buf, sizeof(buf), "%s", path);
    else if (getcwd(buf, PATH_MAX) != NULL)
        snprintf(buf + strlen(buf), sizeof(buf) - strlen(buf), "/%s", path);
    else
        return false;
    size_t n = 0;
    for (char *save = NULL, *c = strtok_r(buf, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
        if (strcmp(c, ".") == 0)
            continue;
        if (strcmp(c, "..") == 0) {
            while (n > 0 && out[--n] != '/') {}
            continue;
        }
        if (n + strlen(c) + 2 > len)
            return false;
        n += (size_t)sprintf(out + n, "/%s", c);
    }
    if (n == 0)
        out[n++] = '/';
    out[n] = '\0';
    return true;
}

/* The file inside a PEFT directory must not lead out of the roots either. */
static int
confine_inner(const struct adapters *r, const char *dir, const char *file, char *err,
              size_t errlen)
{
    char path[PATH_MAX + 64], real[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    if (lstat(path, &st) != 0)
        return 0;   /* missing: the loader says so */
    if (realpath(path, real) == NULL || !within_roots(r, real)) {
        snprintf(err, errlen, "%s: leads outside the adapter roots", path);
        return -EACCES;
    }
    return 0;
}

/*
 * Resolves path (relative: to adapter_dir if set) into out (PATH_MAX) and
 * checks it is inside a root. A path that does not exist gives -ENOENT only
 * if it would be inside a root, so nothing outside can be probed.
 */
static int
confine(const struct adapters *r, const char *path, char *out, char *err, size_t errlen)
{
    char joined[PATH_MAX], lex[PATH_MAX];
    int n = path[0] != '/' && r->dir ? snprintf(joined, sizeof(joined), "%s/%s", r->dir, path)
                                     : snprintf(joined, sizeof(joined), "%s", path);
    if (n < 0 || (size_t)n >= sizeof(joined)) {
        snprintf(err, errlen, "%.64s...: path is too long", path);
        return -ENAMETOOLONG;
    }
    if (realpath(joined, out) == NULL) {
        bool inside = lexical(joined, lex, sizeof(lex)) && within_roots(r, lex);
        snprintf(err, errlen, "%s: %s", path, inside ? "no such file or directory"
                                                     : "outside the adapter roots");
        return inside ? -ENOENT : -EACCES;
    }
    if (!within_roots(r, out)) {
        snprintf(err, errlen, "%s: outside the adapter roots (--adapter-dir and --adapter "
                 "paths)", path);
        return -EACCES;
    }
    struct stat st;
    int rc = 0;
    if (stat(out, &st) == 0 && S_ISDIR(st.st_mode) &&
        (rc = confine_inner(r, out, "adapter_config.json", err, errlen)) == 0)
        rc = confine_inner(r, out, "adapter_model.safetensors", err, errlen);
    return rc;
}

/* DIR/NAME, else DIR/NAME.gguf, for a name met for the first time. */
static int
find_in_dir(const struct adapters *r, const char *name, char *out, char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s.gguf", name);
    int rc = strchr(name, '/') ? -ENOENT : confine(r, name, out, err, errlen);
    if (rc == -ENOENT && !strchr(name, '/'))
        rc = confine(r, path, out, err, errlen);
    if (rc == -ENOENT)
        snprintf(err, errlen, "%s: unknown adapter", name);
    return rc;
}

/* ---- Entries (under lock) --------------------------------------------- */

static struct entry *
find(const struct adapters *r, const char *name)
{
    for (struct entry *e = r->head; e != NULL; e = e->next)
        if (strcmp(e->name, name) == 0)
            return e;
    return NULL;
}

static void
unlink_entry(struct adapters *r, struct entry *e)
{
    for (struct entry **p = &r->head; *p != NULL; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            return;
        }
    }
}

static void
touch(struct adapters *r, struct entry *e)
{
    e->lru = ++r->tick;
    e->last_used_at = now();
    e->used_dirty = true;
}

static void
free_entry(struct entry *e)
{
    if (e == NULL)
        return;
    free(e->path);
    free(e);
}

/* ---- Memory budget (under lock) --------------------------------------- */

/* The least recently used loaded entry that may be evicted to make room for target. */
static struct entry *
lru_victim(struct adapters *r, const struct entry *target)
{
    struct entry *best = NULL;
    for (struct entry *e = r->head; e != NULL; e = e->next) {
        bool idle = e->cur != NULL && atomic_load(&e->cur->refs) == 1;
        if (e != target && idle && !e->pinned && !e->victim && (!best || e->lru < best->lru))
            best = e;
    }
    return best;
}

/*
 * Chooses the entries to evict so that need more bytes fit (target's own
 * current version is replaced, so it does not count). 0 with the list in
 * *victims, or -ENOMEM with a message.
 */
static int
plan_evict(struct adapters *r, const char *name, struct entry *target, uint64_t need,
           struct entry **victims, char *err, size_t errlen)
{
    *victims = NULL;
    if (r->max_memory == 0)
        return 0;
    uint64_t used = r->resident - (target ? target->bytes : 0);
    while (used + need > r->max_memory) {
        struct entry *v = lru_victim(r, target);
        if (v == NULL) {
            for (struct entry *e = *victims; e != NULL; e = e->next_victim)
                e->victim = false;
            *victims = NULL;
            snprintf(err, errlen, "%s: needs %llu bytes of adapter memory, but %llu of the "
                     "%llu bytes (--max-adapter-memory) are held by pinned or busy adapters",
                     name, (unsigned long long)need, (unsigned long long)used,
                     (unsigned long long)r->max_memory);
            return -ENOMEM;
        }
        v->victim = true;
        v->next_victim = *victims;
        *victims = v;
        used -= v->bytes;
    }
    return 0;
}

/* ---- Publishing a version --------------------------------------------- */

enum pub_kind {
    PUB_LOAD,       /* adapters_load: new name or replace, version + 1 */
    PUB_RELOAD,     /* an evicted or failed name loaded again by a get */
    PUB_FIRST,      /* a name met for the first time in adapter_dir */
};

struct pub {
    enum pub_kind kind;
    const char *name;
    char *path;             /* resolved; moves to the entry */
    bool pin;               /* PUB_LOAD only */
    uint64_t gen;           /* PUB_RELOAD / PUB_FIRST: the entry's generation at claim */
    struct adapter *a;      /* the new version; the registry's ref moves to the entry */
    struct entry *fresh;    /* an entry for a name not seen yet */
    struct adapter *drop;   /* refs to drop once unlocked */
    struct entry *victims;
};

static int64_t
next_version(const struct pub *p, const struct entry *e)
{
    if (e == NULL || !e->registered)
        return 1;
    if (strcmp(e->info.sha256, p->a->info.sha256) == 0)
        return e->version;  /* the same content again: the same version */
    return e->version + 1;
}

/* The row the change writes; e may be NULL or a placeholder. */
static void
plan_row(const struct pub *p, const struct entry *e, struct adapters_entry *row)
{
    int64_t t = now();
    bool known = e != NULL && e->registered;
    *row = (struct adapters_entry){
        .name = p->name, .path = p->path, .version = next_version(p, e),
        .status = ADAPTERS_LOADED, .error = "", .bytes = engine_lora_bytes(p->a->lora),
        .pinned = p->kind == PUB_LOAD ? p->pin : known && e->pinned, .info = p->a->info,
        .created_at = known ? e->created_at : t, .updated_at = t, .last_used_at = t,
    };
}

/* One transaction: the new row and every victim's status. */
static int
write_change(struct adapters *r, const struct adapters_entry *row, struct entry *victims,
             char *err, size_t errlen)
{
    int rc = adapters__db_begin(r->db, err, errlen);
    if (rc == 0)
        rc = adapters__db_put(r->db, row, err, errlen);
    for (struct entry *v = victims; v != NULL && rc == 0; v = v->next_victim)
        rc = adapters__db_set_status(r->db, v->name, ADAPTERS_EVICTED, "", row->updated_at,
                                     err, errlen);
    if (rc == 0)
        rc = adapters__db_commit(r->db, err, errlen);
    if (rc < 0)
        adapters__db_rollback(r->db);
    return rc;
}

/*
 * Drops the registry's ref on a victim. A get may have taken a ref since the
 * plan saw it idle: that is safe (the getter keeps its version alive), only
 * its memory then goes when the getter is done rather than now.
 */
static void
evict(struct adapters *r, struct pub *p, struct entry *v, int64_t t)
{
    v->victim = false;
    v->cur->next_drop = p->drop;
    p->drop = v->cur;
    v->cur = NULL;
    r->resident -= v->bytes;
    v->bytes = 0;
    v->status = ADAPTERS_EVICTED;
    v->updated_at = t;
    r->evictions++;
}

/* Makes the planned row true in memory (under lock). */
static void
apply(struct adapters *r, struct pub *p, const struct adapters_entry *row)
{
    struct entry *e = find(r, p->name);
    if (e == NULL) {
        e = p->fresh;
        p->fresh = NULL;
        snprintf(e->name, sizeof(e->name), "%s", p->name);
        e->next = r->head;
        r->head = e;
    }
    for (struct entry *v = p->victims; v != NULL; v = v->next_victim)
        evict(r, p, v, row->updated_at);
    if (e->cur != NULL) {
        e->cur->next_drop = p->drop;
        p->drop = e->cur;
    }
    char *old_path = e->path;
    e->path = p->path;
    p->path = old_path;     /* freed by the caller */
    p->a->version = row->version;
    r->loads++;
    e->cur = p->a;
    p->a = NULL;
    r->resident = r->resident - e->bytes + row->bytes;
    e->bytes = row->bytes;
    e->version = row->version;
    e->info = row->info;
    e->status = ADAPTERS_LOADED;
    e->error[0] = '\0';
    e->pinned = row->pinned;
    e->registered = true;
    e->loading = false;
    e->gen = ++r->gen;
    e->created_at = row->created_at;
    e->updated_at = row->updated_at;
    touch(r, e);
    pthread_cond_broadcast(&r->cond);
}

/*
 * Publishes p->a as the current version of p->name. Returns 0 (with a ref in
 * *out if out is not NULL), -EAGAIN if a reload or first use went stale (the
 * name changed meanwhile), -ENOMEM over budget, -EIO. Consumes p's
 * resources either way.
 */
static int
publish(struct adapters *r, struct pub *p, struct adapter **out, char *err, size_t errlen)
{
    struct adapters_entry row = { 0 };
    pthread_mutex_lock(&r->db_lock);
    pthread_mutex_lock(&r->lock);
    struct entry *e = find(r, p->name);
    int rc = 0;
    if (p->kind != PUB_LOAD && (e == NULL || e->gen != p->gen || !e->loading))
        rc = -EAGAIN;
    else
        rc = plan_evict(r, p->name, e, engine_lora_bytes(p->a->lora), &p->victims, err, errlen);
    if (rc == 0)
        plan_row(p, e, &row);
    pthread_mutex_unlock(&r->lock);
    if (rc == 0)
        rc = write_change(r, &row, p->victims, err, errlen);
    pthread_mutex_lock(&r->lock);
    if (rc == 0) {
        if (out != NULL)
            adapter_ref(*out = p->a);
        apply(r, p, &row);
    }
    for (struct entry *v = p->victims; rc < 0 && v != NULL; v = v->next_victim)
        v->victim = false;
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_unlock(&r->db_lock);
    drop_all(p->drop);
    adapter_unref(p->a);
    free(p->path);
    free_entry(p->fresh);
    return rc;
}

/*
 * A get's load failed: its waiters get the error, and a registered name is
 * marked failed (not for -ENOMEM or -EIO: the adapter itself is fine). A
 * placeholder goes away.
 */
static void
load_failed(struct adapters *r, const char *name, uint64_t gen, int rc, const char *msg)
{
    bool broken = rc != -ENOMEM && rc != -EIO, write = false;
    struct entry *gone = NULL;
    pthread_mutex_lock(&r->db_lock);
    pthread_mutex_lock(&r->lock);
    struct entry *e = find(r, name);
    if (e != NULL && e->gen == gen && e->loading) {
        e->loading = false;
        e->n_fail++;
        e->err_rc = rc;
        snprintf(e->error, sizeof(e->error), "%s", msg);
        if (!e->registered) {
            unlink_entry(r, e);
            gone = e;
        } else if (broken) {
            e->status = ADAPTERS_FAILED;
            e->updated_at = now();
            write = true;
        }
        pthread_cond_broadcast(&r->cond);
    }
    pthread_mutex_unlock(&r->lock);
    if (write)
        adapters__db_set_status(r->db, name, ADAPTERS_FAILED, msg, now(), NULL, 0);
    pthread_mutex_unlock(&r->db_lock);
    free_entry(gone);
}

/* ---- Getting a version ------------------------------------------------ */

/* What a get must load, claimed under lock. */
struct job {
    enum pub_kind kind;
    uint64_t gen;
    char path[PATH_MAX];    /* PUB_RELOAD: the registered path */
};

enum { CLAIMED = 1 };

/*
 * Under lock: a resident version (0 with a ref), a load to do (CLAIMED),
 * another get's failed load (its error), or -ENOENT. Waits while another get
 * loads the name.
 */
static int
claim(struct adapters *r, const char *name, struct entry **fresh, struct adapter **out,
      struct job *job, char *err, size_t errlen)
{
    struct entry *e = find(r, name);
    while (e != NULL && e->cur == NULL && e->loading) {
        uint64_t seen = e->n_fail, gen = e->gen;
        pthread_cond_wait(&r->cond, &r->lock);
        e = find(r, name);
        if (e != NULL && e->gen == gen && !e->loading && e->cur == NULL && e->n_fail != seen) {
            snprintf(err, errlen, "%s", e->error);
            return e->err_rc;
        }
    }
    if (e != NULL && e->cur != NULL) {
        adapter_ref(*out = e->cur);
        touch(r, e);
        return 0;
    }
    if (e == NULL && r->dir == NULL) {
        snprintf(err, errlen, "%s: unknown adapter", name);
        return -ENOENT;
    }
    if (e == NULL && *fresh == NULL)
        return -EAGAIN;     /* allocate a placeholder outside the lock and come back */
    if (e == NULL) {
        e = *fresh;
        *fresh = NULL;
        snprintf(e->name, sizeof(e->name), "%s", name);
        e->gen = ++r->gen;
        e->next = r->head;
        r->head = e;
    }
    e->loading = true;
    job->kind = e->registered ? PUB_RELOAD : PUB_FIRST;
    job->gen = e->gen;
    snprintf(job->path, sizeof(job->path), "%s", e->path ? e->path : "");
    return CLAIMED;
}

/* Loads what claim asked for and publishes it. */
static int
run_job(struct adapters *r, const char *name, const struct job *job, struct adapter **out,
        char *err, size_t errlen)
{
    char resolved[PATH_MAX];
    struct adapter *a = NULL;
    /* A registered path is confined again: the roots may have changed since. */
    int rc = job->kind == PUB_RELOAD ? confine(r, job->path, resolved, err, errlen)
                                     : find_in_dir(r, name, resolved, err, errlen);
    if (rc == 0)
        rc = build(r, name, resolved, &a, err, errlen);
    char *path = rc == 0 ? strdup(resolved) : NULL;
    if (rc == 0 && path == NULL) {
        adapter_unref(a);
        snprintf(err, errlen, "%s: out of memory", name);
        rc = -ENOMEM;
    }
    if (rc == 0) {
        struct pub p = { .kind = job->kind, .name = name, .path = path, .gen = job->gen,
                         .a = a };
        rc = publish(r, &p, out, err, errlen);
    }
    if (rc < 0 && rc != -EAGAIN)
        load_failed(r, name, job->gen, rc, err);
    return rc;
}

int
adapters_get(struct adapters *r, const char *name, struct adapter **out, char *err,
             size_t errlen)
{
    *out = NULL;
    if (!adapters_key_valid(name)) {
        snprintf(err, errlen, "%.64s: unknown adapter", name ? name : "");
        return -ENOENT;
    }
    struct entry *fresh = NULL;
    int rc = -EAGAIN;
    for (int tries = 0; tries < 16 && rc == -EAGAIN; tries++) {
        struct job job;
        pthread_mutex_lock(&r->lock);
        rc = claim(r, name, &fresh, out, &job, err, errlen);
        pthread_mutex_unlock(&r->lock);
        if (rc == -EAGAIN && fresh == NULL && (fresh = calloc(1, sizeof(*fresh))) == NULL) {
            snprintf(err, errlen, "%s: out of memory", name);
            rc = -ENOMEM;
        } else if (rc == CLAIMED) {
            rc = run_job(r, name, &job, out, err, errlen);
        }
    }
    free_entry(fresh);
    if (rc == -EAGAIN)
        snprintf(err, errlen, "%s: the adapter kept changing while it was loaded", name);
    return rc;
}

bool
adapters_has(struct adapters *r, const char *key)
{
    if (!adapters_key_valid(key))
        return false;
    pthread_mutex_lock(&r->lock);
    const struct entry *e = find(r, key);
    bool has = e != NULL && e->registered;
    pthread_mutex_unlock(&r->lock);
    return has;
}

int
adapters_try_get(struct adapters *r, const char *name, struct adapter **out)
{
    *out = NULL;
    if (!adapters_key_valid(name))
        return -ENOENT;
    pthread_mutex_lock(&r->lock);
    struct entry *e = find(r, name);
    int rc = e != NULL || (r->dir != NULL && !strchr(name, '/')) ? -EWOULDBLOCK : -ENOENT;
    if (e != NULL && e->cur != NULL) {
        adapter_ref(*out = e->cur);
        touch(r, e);
        rc = 0;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* ---- Changes ---------------------------------------------------------- */

int
adapters_load(struct adapters *r, const char *name, const char *path, bool pin,
              struct adapter **out, char *err, size_t errlen)
{
    if (out != NULL)
        *out = NULL;
    if (!adapters_key_valid(name)) {
        snprintf(err, errlen, "\"%.64s\": invalid adapter name (1 to %d of A-Z a-z 0-9 . _ "
                 ": -, not starting with '.')", name ? name : "", ADAPTERS_NAME_MAX);
        return -EINVAL;
    }
    if (path == NULL || path[0] == '\0') {
        snprintf(err, errlen, "%s: no path given", name);
        return -EINVAL;
    }
    char resolved[PATH_MAX];
    struct adapter *a = NULL;
    int rc = confine(r, path, resolved, err, errlen);
    if (rc == 0)
        rc = build(r, name, resolved, &a, err, errlen);
    if (rc < 0)
        return rc;
    struct pub p = { .kind = PUB_LOAD, .name = name, .path = strdup(resolved), .pin = pin,
                     .a = a, .fresh = calloc(1, sizeof(struct entry)) };
    if (p.path == NULL || p.fresh == NULL) {
        free(p.path);
        free(p.fresh);
        adapter_unref(a);
        snprintf(err, errlen, "%s: out of memory", name);
        return -ENOMEM;
    }
    return publish(r, &p, out, err, errlen);
}

/* Under both locks: the registered entry of name, or NULL with a message. */
static struct entry *
find_registered(struct adapters *r, const char *name, char *err, size_t errlen)
{
    struct entry *e = adapters_key_valid(name) ? find(r, name) : NULL;
    if (e == NULL || !e->registered) {
        snprintf(err, errlen, "%.64s: unknown adapter", name ? name : "");
        return NULL;
    }
    return e;
}

int
adapters_unload(struct adapters *r, const char *name, char *err, size_t errlen)
{
    pthread_mutex_lock(&r->db_lock);
    pthread_mutex_lock(&r->lock);
    struct entry *e = find_registered(r, name, err, errlen);
    pthread_mutex_unlock(&r->lock);
    int rc = e ? adapters__db_delete(r->db, name, err, errlen) : -ENOENT;
    struct adapter *old = NULL;
    pthread_mutex_lock(&r->lock);
    if (rc == 0) {
        unlink_entry(r, e);
        old = e->cur;
        r->resident -= e->bytes;
        pthread_cond_broadcast(&r->cond);   /* gets waiting on its load look again */
    }
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_unlock(&r->db_lock);
    adapter_unref(old);
    if (rc == 0)
        free_entry(e);
    return rc;
}

int
adapters_pin(struct adapters *r, const char *name, bool pin, char *err, size_t errlen)
{
    pthread_mutex_lock(&r->db_lock);
    pthread_mutex_lock(&r->lock);
    struct entry *e = find_registered(r, name, err, errlen);
    pthread_mutex_unlock(&r->lock);
    int64_t t = now();
    int rc = e ? adapters__db_set_pinned(r->db, name, pin, t, err, errlen) : -ENOENT;
    pthread_mutex_lock(&r->lock);
    if (rc == 0) {
        e->pinned = pin;
        e->updated_at = t;
    }
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_unlock(&r->db_lock);
    return rc;
}

/* ---- Listing ---------------------------------------------------------- */

const char *
adapters_status_name(enum adapters_status s)
{
    switch (s) {
    case ADAPTERS_LOADED: return "loaded";
    case ADAPTERS_EVICTED: return "evicted";
    default: return "failed";
    }
}

/* Bytes a snapshot needs (rows and strings), under lock. */
static size_t
list_size(const struct adapters *r, int *n)
{
    size_t bytes = 0;
    *n = 0;
    for (const struct entry *e = r->head; e != NULL; e = e->next) {
        if (!e->registered)
            continue;
        (*n)++;
        bytes += sizeof(struct adapters_entry) + strlen(e->name) + strlen(e->path) +
                 strlen(e->error) + 3;
    }
    return bytes;
}

static char *
put_str(char **pool, const char *s)
{
    char *at = *pool;
    size_t n = strlen(s) + 1;
    memcpy(at, s, n);
    *pool += n;
    return at;
}

static void
list_fill(const struct adapters *r, struct adapters_entry *rows)
{
    int i = 0;
    for (const struct entry *e = r->head; e != NULL; e = e->next)
        if (e->registered)
            i++;
    char *pool = (char *)(rows + i);
    i = 0;
    for (const struct entry *e = r->head; e != NULL; e = e->next) {
        if (!e->registered)
            continue;
        struct adapters_entry *row = &rows[i++];
        *row = (struct adapters_entry){
            .version = e->version, .status = e->status, .pinned = e->pinned,
            .users = e->cur ? atomic_load(&e->cur->refs) - 1 : 0, .bytes = e->bytes,
            .info = e->info, .created_at = e->created_at, .updated_at = e->updated_at,
            .last_used_at = e->last_used_at,
        };
        row->name = put_str(&pool, e->name);
        row->path = put_str(&pool, e->path);
        row->error = put_str(&pool, e->error);
    }
}

static int
cmp_row(const void *a, const void *b)
{
    return strcmp(((const struct adapters_entry *)a)->name,
                  ((const struct adapters_entry *)b)->name);
}

int
adapters_list(struct adapters *r, struct adapters_entry **out, int *n)
{
    *out = NULL;
    *n = 0;
    for (;;) {
        int rows = 0;
        pthread_mutex_lock(&r->lock);
        size_t want = list_size(r, &rows);
        pthread_mutex_unlock(&r->lock);
        /* Allocated without the lock; if the registry grew meanwhile, try again. */
        struct adapters_entry *list = malloc(want + 1);
        if (list == NULL)
            return -ENOMEM;
        pthread_mutex_lock(&r->lock);
        bool fits = list_size(r, &rows) <= want;
        if (fits)
            list_fill(r, list);
        pthread_mutex_unlock(&r->lock);
        if (fits) {
            qsort(list, (size_t)rows, sizeof(*list), cmp_row);
            *out = list;
            *n = rows;
            return 0;
        }
        free(list);
    }
}

void
adapters_list_free(struct adapters_entry *list)
{
    free(list);
}

void
adapters_memory(struct adapters *r, uint64_t *resident, uint64_t *max_memory)
{
    pthread_mutex_lock(&r->lock);
    *resident = r->resident;
    *max_memory = r->max_memory;
    pthread_mutex_unlock(&r->lock);
}

void
adapters_counters(struct adapters *r, uint64_t *loads, uint64_t *evictions)
{
    pthread_mutex_lock(&r->lock);
    *loads = r->loads;
    *evictions = r->evictions;
    pthread_mutex_unlock(&r->lock);
}

/* ---- Open and close --------------------------------------------------- */

static int
add_root(struct adapters *r, const char *path, char *err, size_t errlen)
{
    char real[PATH_MAX];
    if (realpath(path, real) == NULL) {
        snprintf(err, errlen, "%s: adapter root does not exist", path);
        return -ENOENT;
    }
    if ((r->roots[r->n_roots] = strdup(real)) == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    r->n_roots++;
    return 0;
}

/* One registered row from before: an entry that loads on first use. */
static int
restore_row(const struct adapters_entry *row, void *arg)
{
    struct adapters *r = arg;
    struct entry *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->path = strdup(row->path)) == NULL) {
        free(e);
        return -ENOMEM;
    }
    snprintf(e->name, sizeof(e->name), "%s", row->name);
    snprintf(e->error, sizeof(e->error), "%s", row->error);
    e->registered = true;
    e->version = row->version;
    e->info = row->info;
    e->status = row->status == ADAPTERS_FAILED ? ADAPTERS_FAILED : ADAPTERS_EVICTED;
    e->pinned = row->pinned;
    e->gen = ++r->gen;
    e->lru = (uint64_t)(row->last_used_at > 0 ? row->last_used_at : 0);
    r->tick = e->lru > r->tick ? e->lru : r->tick;
    e->created_at = row->created_at;
    e->updated_at = row->updated_at;
    e->last_used_at = row->last_used_at;
    e->next = r->head;
    r->head = e;
    return 0;
}

/* Every registered name, none resident yet: rows that said "loaded" now say "evicted". */
static int
restore(struct adapters *r, char *err, size_t errlen)
{
    int rc = adapters__db_reset_loaded(r->db, err, errlen);
    if (rc == 0 && (rc = adapters__db_scan(r->db, restore_row, r, err, errlen)) == -ENOMEM)
        snprintf(err, errlen, "adapters: out of memory");
    return rc;
}

int
adapters_open(const struct engine_model *m, const struct adapters_params *p,
              struct adapters **out, char *err, size_t errlen)
{
    *out = NULL;
    struct adapters *r = calloc(1, sizeof(*r));
    char **roots = calloc((size_t)(p->n_roots > 0 ? p->n_roots : 0) + 2, sizeof(char *));
    if (r == NULL || roots == NULL) {
        free(r), free(roots);
        snprintf(err, errlen, "adapters: out of memory");
        return -ENOMEM;
    }
    r->m = m;
    r->roots = roots;
    r->max_rank = p->max_rank > 0 ? p->max_rank : ADAPTERS_DEFAULT_MAX_RANK;
    r->max_memory = p->max_memory;
    pthread_mutex_init(&r->db_lock, NULL);
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    int rc = 0;
    for (int i = 0; i < p->n_roots && rc == 0; i++)
        rc = add_root(r, p->roots[i], err, errlen);
    if (rc == 0 && p->adapter_dir != NULL && (rc = add_root(r, p->adapter_dir, err, errlen)) == 0)
        r->dir = r->roots[r->n_roots - 1];
    if (rc == 0)
        rc = adapters__db_open(p->db_path, &r->db, err, errlen);
    if (rc == 0)
        rc = restore(r, err, errlen);
    if (rc < 0) {
        adapters_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* Writes the last-use times gets have changed since they were last written. */
static void
save_used(struct adapters *r)
{
    if (r->db == NULL || adapters__db_begin(r->db, NULL, 0) < 0)
        return;
    for (struct entry *e = r->head; e != NULL; e = e->next)
        if (e->registered && e->used_dirty)
            adapters__db_set_used(r->db, e->name, e->last_used_at, NULL, 0);
    if (adapters__db_commit(r->db, NULL, 0) < 0)
        adapters__db_rollback(r->db);
}

void
adapters_close(struct adapters *r)
{
    if (r == NULL)
        return;
    save_used(r);
    for (struct entry *e = r->head, *next = NULL; e != NULL; e = next) {
        next = e->next;
        adapter_unref(e->cur);
        free_entry(e);
    }
    adapters__db_close(r->db);
    for (int i = 0; i < r->n_roots; i++)
        free(r->roots[i]);
    free(r->roots);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->db_lock);
    free(r);
}
