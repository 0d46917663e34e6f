/*
 * test_registry.c - the adapter registry: versions and refs across replace,
 * persistence across a restart, path confinement, first use from
 * --adapter-dir, the memory budget (LRU eviction, pinning), and a swap stress
 * test for ASan and TSan.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "adapters.h"
#include "check.h"
#include "testutil.h"

static struct engine_model *model;
static char tmpdir[64];
static char lora_dir[512];      /* the shared models' lora folder */

/* ---- Helpers ---------------------------------------------------------- */

static void
tmp_open(void)
{
    CHECK_EQ(test_tmpdir_make(tmpdir, "reg"), 0);
}

static void
tmp_close(void)
{
    test_tmpdir_remove(tmpdir);
}

static void
copy_file(const char *from, const char *to)
{
    size_t len = 0;
    char *buf = test_read_file(from, &len);
    FILE *f = fopen(to, "wb");
    CHECK(buf != NULL && f != NULL);
    if (buf != NULL && f != NULL)
        CHECK_EQ(fwrite(buf, 1, len, f), len);
    if (f != NULL)
        fclose(f);
    free(buf);
}

/* DIR/sub made a copy of the shared PEFT adapter peft-NAME. */
static void
copy_peft(const char *name, const char *dir)
{
    char from[640], to[640];
    mkdir(dir, 0700);
    snprintf(from, sizeof(from), "%s/peft-%s/adapter_config.json", lora_dir, name);
    snprintf(to, sizeof(to), "%s/adapter_config.json", dir);
    copy_file(from, to);
    snprintf(from, sizeof(from), "%s/peft-%s/adapter_model.safetensors", lora_dir, name);
    snprintf(to, sizeof(to), "%s/adapter_model.safetensors", dir);
    copy_file(from, to);
}

static const char *
gguf_path(const char *name)
{
    static _Thread_local char path[640];
    snprintf(path, sizeof(path), "%s/kjv-tiny-lora-%s.gguf", lora_dir, name);
    return path;
}

static struct adapters *
open_reg(const char *db, const char *const *roots, int n_roots, const char *dir,
         uint64_t max_memory)
{
    struct adapters_params p = { db, roots, n_roots, dir, 64, max_memory };
    struct adapters *r = NULL;
    char err[512] = "";
    int rc = adapters_open(model, &p, &r, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "  %s\n", err);
    CHECK_EQ(rc, 0);
    return r;
}

static int
load(struct adapters *r, const char *name, const char *path, bool pin, const char *want_err)
{
    char err[512] = "";
    int rc = adapters_load(r, name, path, pin, NULL, err, sizeof(err));
    if ((want_err == NULL) != (rc == 0) || (want_err && !strstr(err, want_err)))
        fprintf(stderr, "  load %s %s: %d %s (want %s)\n", name, path, rc, err,
                want_err ? want_err : "success");
    CHECK((want_err == NULL) == (rc == 0) && (!want_err || strstr(err, want_err)));
    return rc;
}

static struct adapter *
get(struct adapters *r, const char *name)
{
    struct adapter *a = NULL;
    char err[512] = "";
    int rc = adapters_get(r, name, &a, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "  get %s: %d %s\n", name, rc, err);
    CHECK_EQ(rc, 0);
    return a;
}

/* The list row of name (from a snapshot the caller frees), or NULL. */
static const struct adapters_entry *
row_of(const struct adapters_entry *rows, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].name, name) == 0)
            return &rows[i];
    return NULL;
}

static enum adapters_status
status_of(struct adapters *r, const char *name)
{
    struct adapters_entry *rows = NULL;
    int n = 0;
    CHECK_EQ(adapters_list(r, &rows, &n), 0);
    const struct adapters_entry *e = row_of(rows, n, name);
    enum adapters_status s = e ? e->status : (enum adapters_status)-1;
    adapters_list_free(rows);
    return s;
}

/*
 * Runs the golden "short-genesis" prompt with a's weights and checks the
 * first position's top-5 logits against the golden file of config.
 */
static void
check_weights(struct adapter *a, const char *config)
{
    char path[640];
    snprintf(path, sizeof(path), "%s/fixtures/golden/%s__short-genesis.json",
             test_shared_dir(), config);
    char *text = test_read_file(path, NULL);
    cJSON *j = cJSON_Parse(text ? text : "");
    free(text);
    CHECK(j != NULL);
    int32_t tok[64], pos[64], seq[64];
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "prompt_ids")) {
        if (n < 64)
            tok[n] = e->valueint, pos[n] = n, seq[n] = 0, n++;
    }
    struct engine_lora_set set = { 1, { adapter_lora(a) }, { 1.0f } };
    const struct engine_lora_set *rows[64];
    for (int i = 0; i < n; i++)
        rows[i] = &set;
    struct engine_ctx *ctx = NULL;
    float *logits = malloc((size_t)n * 2048 * sizeof(float));
    CHECK_EQ(engine_ctx_new(model, 64, 1, 1, &ctx), 0);
    struct engine_batch b = { n, tok, pos, seq, NULL, rows };
    CHECK_EQ(engine_decode(ctx, &b, logits), 0);
    const float *last = logits + (size_t)(n - 1) * 2048;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "top5_first")) {
        int id = cJSON_GetObjectItemCaseSensitive(e, "id")->valueint;
        double want = cJSON_GetObjectItemCaseSensitive(e, "logit")->valuedouble;
        CHECK(fabs(last[id] - want) <= 1e-3);
    }
    engine_ctx_free(ctx);
    free(logits);
    cJSON_Delete(j);
}

/* ---- Tests ------------------------------------------------------------ */

static void
test_versions(void)
{
    const char *roots[] = { lora_dir };
    struct adapters *r = open_reg(NULL, roots, 1, NULL, 0);
    char err[512] = "";
    CHECK_EQ(load(r, "a", gguf_path("fortunes"), false, NULL), 0);
    struct adapter *v1 = get(r, "a");
    CHECK_EQ(adapter_version(v1), 1);
    CHECK_STR(adapter_name(v1), "a");
    CHECK_STR(adapter_info(v1)->format, "gguf");
    CHECK_EQ(load(r, "a", gguf_path("jargon"), false, NULL), 0);
    struct adapter *v2 = get(r, "a");
    CHECK_EQ(adapter_version(v2), 2);
    /* The same content again keeps its version (a new object, the same weights). */
    CHECK_EQ(load(r, "a", gguf_path("jargon"), false, NULL), 0);
    struct adapter *same = get(r, "a");
    CHECK(same != v2 && adapter_version(same) == 2);
    adapter_unref(same);
    CHECK(strcmp(adapter_info(v1)->sha256, adapter_info(v2)->sha256) != 0);
    /* A refused replace leaves version 2 serving. */
    CHECK_EQ(load(r, "a", lora_dir, false, "not a PEFT adapter directory"), -EINVAL);
    struct adapter *still = get(r, "a");
    CHECK(adapter_version(still) == 2 && adapter_lora(still) != adapter_lora(v2));
    adapter_unref(still);
    struct adapters_entry *rows = NULL;
    int n = 0;
    CHECK_EQ(adapters_list(r, &rows, &n), 0);
    CHECK_EQ(n, 1);
    CHECK(n == 1 && rows[0].version == 2 && rows[0].status == ADAPTERS_LOADED &&
          rows[0].users == 0 && rows[0].bytes == engine_lora_bytes(adapter_lora(v2)) &&
          strcmp(rows[0].info.sha256, adapter_info(v2)->sha256) == 0);
    adapters_list_free(rows);
    CHECK_EQ(load(r, "bad//name", gguf_path("jargon"), false, "invalid adapter name"), -EINVAL);
    CHECK_EQ(load(r, "a/b/c", gguf_path("jargon"), false, "invalid adapter name"), -EINVAL);
    CHECK_EQ(load(r, "/a", gguf_path("jargon"), false, "invalid adapter name"), -EINVAL);
    /* An owner's key is a name space of its own: "t1/a" is not "a". */
    CHECK_EQ(load(r, "t1/a", gguf_path("jargon"), false, NULL), 0);
    CHECK(adapters_has(r, "t1/a") && adapters_has(r, "a") && !adapters_has(r, "t2/a"));
    CHECK(adapters_key_valid("t1/a") && !adapters_key_valid("t1/") && !adapters_name_valid("t1/a"));
    CHECK_EQ(adapters_unload(r, "t1/a", err, sizeof(err)), 0);
    CHECK_EQ(load(r, "..", gguf_path("jargon"), false, "invalid adapter name"), -EINVAL);
    CHECK_EQ(adapters_load(r, "a", NULL, false, NULL, err, sizeof(err)), -EINVAL);
    CHECK_EQ(load(r, "a", "", false, "no path given"), -EINVAL);
    CHECK_EQ(adapters_unload(r, "a", err, sizeof(err)), 0);
    CHECK_EQ(adapters_unload(r, "a", err, sizeof(err)), -ENOENT);
    struct adapter *none = NULL;
    CHECK_EQ(adapters_get(r, "a", &none, err, sizeof(err)), -ENOENT);
    CHECK_EQ(adapters_try_get(r, "a", &none), -ENOENT);
    CHECK(none == NULL);
    uint64_t resident = 1, max = 1;
    adapters_memory(r, &resident, &max);
    CHECK_EQ(resident, 0);
    /* Versions held across the unload stay usable. */
    check_weights(v1, "lora-fortunes");
    check_weights(v2, "lora-jargon");
    adapter_unref(v1);
    adapter_unref(v2);
    adapters_close(r);
}

/* A ref held across a replace keeps the old weights; new gets see the new ones. */
static void
test_ref_across_replace(void)
{
    const char *roots[] = { lora_dir };
    struct adapters *r = open_reg(NULL, roots, 1, NULL, 0);
    CHECK_EQ(load(r, "x", gguf_path("fortunes"), false, NULL), 0);
    struct adapter *old = get(r, "x");
    struct engine_lora *old_lora = adapter_lora(old);
    char peft[640];
    snprintf(peft, sizeof(peft), "%s/peft-devil", lora_dir);
    CHECK_EQ(load(r, "x", peft, false, NULL), 0);
    struct adapter *cur = get(r, "x");
    CHECK(adapter_lora(cur) != old_lora);
    CHECK(engine_lora_id(adapter_lora(cur)) != engine_lora_id(old_lora));
    CHECK_EQ(adapter_version(cur), 2);
    CHECK_STR(adapter_info(cur)->format, "peft");
    check_weights(old, "lora-fortunes");
    check_weights(cur, "lora-devil");
    adapter_unref(old);     /* the old version's memory goes here (LSan would see a leak) */
    check_weights(cur, "lora-devil");
    adapter_unref(cur);
    adapters_close(r);
}

static void
test_restart(void)
{
    tmp_open();
    char db[128], dir[128], err[512] = "";
    snprintf(db, sizeof(db), "%s/loraserve.db", tmpdir);
    snprintf(dir, sizeof(dir), "%s/peft-f", tmpdir);
    copy_peft("fortunes", dir);
    const char *roots[] = { lora_dir, dir };
    struct adapters *r = open_reg(db, roots, 2, NULL, 0);
    CHECK_EQ(load(r, "f", dir, true, NULL), 0);
    CHECK_EQ(load(r, "j", gguf_path("jargon"), false, NULL), 0);
    CHECK_EQ(load(r, "j", gguf_path("devil"), false, NULL), 0);
    struct adapter *f = get(r, "f");
    char sha[65];
    snprintf(sha, sizeof(sha), "%s", adapter_info(f)->sha256);
    adapter_unref(f);
    adapters_close(r);

    r = open_reg(db, roots, 2, NULL, 0);
    struct adapters_entry *rows = NULL;
    int n = 0;
    CHECK_EQ(adapters_list(r, &rows, &n), 0);
    CHECK_EQ(n, 2);
    const struct adapters_entry *rf = row_of(rows, n, "f"), *rj = row_of(rows, n, "j");
    CHECK(rf && rf->version == 1 && rf->pinned && rf->status == ADAPTERS_EVICTED &&
          strcmp(rf->info.sha256, sha) == 0 && strcmp(rf->info.format, "peft") == 0 &&
          rf->info.rank == 8 && rf->info.targets == 0x7f && rf->created_at > 0);
    CHECK(rj && rj->version == 2 && !rj->pinned && strcmp(rj->path, gguf_path("devil")) == 0);
    adapters_list_free(rows);
    struct adapter *a = NULL;
    CHECK_EQ(adapters_try_get(r, "j", &a), -EWOULDBLOCK);
    a = get(r, "j");
    CHECK_EQ(adapter_version(a), 2);     /* same content: same version */
    check_weights(a, "lora-devil");
    adapter_unref(a);
    CHECK_EQ(status_of(r, "j"), ADAPTERS_LOADED);
    CHECK_EQ(adapters_try_get(r, "j", &a), 0);
    adapter_unref(a);
    adapters_close(r);

    /* Restarted without the root that held "f": it is refused, and marked failed. */
    r = open_reg(db, roots, 1, NULL, 0);
    CHECK_EQ(adapters_get(r, "f", &a, err, sizeof(err)), -EACCES);
    CHECK(strstr(err, "outside the adapter roots") != NULL);
    CHECK_EQ(status_of(r, "f"), ADAPTERS_FAILED);
    CHECK_EQ(adapters_unload(r, "f", err, sizeof(err)), 0);
    adapters_close(r);
    r = open_reg(db, roots, 2, NULL, 0);
    CHECK_EQ(adapters_get(r, "f", &a, err, sizeof(err)), -ENOENT);
    adapters_close(r);
    tmp_close();
}

static void
test_confinement(void)
{
    tmp_open();
    char root[128], path[640], link[640], err[512] = "";
    snprintf(root, sizeof(root), "%s/root", tmpdir);
    mkdir(root, 0700);
    snprintf(path, sizeof(path), "%s/f.gguf", root);
    copy_file(gguf_path("fortunes"), path);
    snprintf(path, sizeof(path), "%s/outside.gguf", tmpdir);
    copy_file(gguf_path("jargon"), path);
    snprintf(link, sizeof(link), "%s/link.gguf", root);
    CHECK_EQ(symlink(path, link), 0);
    /* A PEFT directory inside whose weights file leads outside. */
    snprintf(path, sizeof(path), "%s/p", root);
    copy_peft("fortunes", path);
    snprintf(path, sizeof(path), "%s/p/adapter_model.safetensors", root);
    remove(path);
    snprintf(link, sizeof(link), "%s/peft-fortunes/adapter_model.safetensors", lora_dir);
    CHECK_EQ(symlink(link, path), 0);
    snprintf(link, sizeof(link), "%s/dirlink", root);
    CHECK_EQ(symlink(lora_dir, link), 0);

    char single[640];
    snprintf(single, sizeof(single), "%s", gguf_path("devil"));
    const char *roots[] = { single };
    struct adapters *r = open_reg(NULL, roots, 1, root, 0);
    CHECK_EQ(load(r, "ok", "f.gguf", false, NULL), 0);                 /* relative to the dir */
    snprintf(path, sizeof(path), "%s/f.gguf", root);
    CHECK_EQ(load(r, "abs", path, false, NULL), 0);
    CHECK_EQ(load(r, "dots", "../outside.gguf", false, "outside the adapter roots"), -EACCES);
    snprintf(path, sizeof(path), "%s/../outside.gguf", root);
    CHECK_EQ(load(r, "dots2", path, false, "outside the adapter roots"), -EACCES);
    snprintf(path, sizeof(path), "%s/outside.gguf", tmpdir);
    CHECK_EQ(load(r, "abs2", path, false, "outside the adapter roots"), -EACCES);
    CHECK_EQ(load(r, "sym", "link.gguf", false, "outside the adapter roots"), -EACCES);
    CHECK_EQ(load(r, "symdir", "dirlink/peft-jargon", false, "outside"), -EACCES);
    CHECK_EQ(load(r, "inner", "p", false, "leads outside the adapter roots"), -EACCES);
    CHECK_EQ(load(r, "etc", "/etc/passwd", false, "outside the adapter roots"), -EACCES);
    /* Missing paths: -ENOENT inside the roots, -EACCES outside (nothing to probe). */
    CHECK_EQ(load(r, "missing", "nope.gguf", false, "no such file"), -ENOENT);
    CHECK_EQ(load(r, "missing2", "/nonexistent/x.gguf", false, "outside"), -EACCES);
    /* A single-file root admits that file and not its siblings. */
    CHECK_EQ(load(r, "single", single, false, NULL), 0);
    CHECK_EQ(load(r, "sibling", gguf_path("jargon"), false, "outside"), -EACCES);
    struct adapters_entry *rows = NULL;
    int n = 0;
    CHECK_EQ(adapters_list(r, &rows, &n), 0);
    CHECK_EQ(n, 3);
    adapters_list_free(rows);
    adapters_close(r);
    const char *missing[] = { "/nonexistent/root" };
    struct adapters_params p = { NULL, missing, 1, NULL, 64, 0 };
    CHECK_EQ(adapters_open(model, &p, &r, err, sizeof(err)), -ENOENT);
    CHECK(r == NULL && strstr(err, "adapter root does not exist") != NULL);
    tmp_close();
}

/* --adapter-dir: unknown names load DIR/NAME or DIR/NAME.gguf on first use. */
static void
test_first_use(void)
{
    tmp_open();
    char path[640], err[512] = "";
    snprintf(path, sizeof(path), "%s/fortunes.gguf", tmpdir);
    copy_file(gguf_path("fortunes"), path);
    snprintf(path, sizeof(path), "%s/jargon-peft", tmpdir);
    copy_peft("jargon", path);
    snprintf(path, sizeof(path), "%s/broken.gguf", tmpdir);
    FILE *f = fopen(path, "wb");
    fputs("GGUF broken", f);
    fclose(f);
    struct adapters *r = open_reg(NULL, NULL, 0, tmpdir, 0);
    struct adapter *a = NULL;
    CHECK_EQ(adapters_try_get(r, "fortunes", &a), -EWOULDBLOCK);
    a = get(r, "fortunes");
    check_weights(a, "lora-fortunes");
    adapter_unref(a);
    CHECK_EQ(adapters_try_get(r, "fortunes", &a), 0);
    adapter_unref(a);
    a = get(r, "jargon-peft");
    CHECK_STR(adapter_info(a)->format, "peft");
    adapter_unref(a);
    CHECK_EQ(adapters_get(r, "nope", &a, err, sizeof(err)), -ENOENT);
    CHECK(strstr(err, "nope: unknown adapter") != NULL);
    CHECK_EQ(adapters_get(r, "..", &a, err, sizeof(err)), -ENOENT);
    CHECK_EQ(adapters_get(r, "broken", &a, err, sizeof(err)), -EBADMSG);
    CHECK(a == NULL && strstr(err, "broken.gguf") != NULL);
    /* an owner's unknown key is never looked for in the directory */
    CHECK_EQ(adapters_try_get(r, "t1/fortunes", &a), -ENOENT);
    CHECK_EQ(adapters_get(r, "t1/fortunes", &a, err, sizeof(err)), -ENOENT);
    CHECK(a == NULL);
    struct adapters_entry *rows = NULL;
    int n = 0;
    CHECK_EQ(adapters_list(r, &rows, &n), 0);
    CHECK_EQ(n, 2);     /* the two that loaded; failed first uses are not registered */
    adapters_list_free(rows);
    adapters_close(r);
    tmp_close();
}

static void
test_budget(void)
{
    const char *roots[] = { lora_dir };
    struct adapters *r = open_reg(NULL, roots, 1, NULL, 0);
    CHECK_EQ(load(r, "probe", gguf_path("fortunes"), false, NULL), 0);
    uint64_t one = 0, max = 0;
    adapters_memory(r, &one, &max);
    CHECK(one > 0 && max == 0);
    adapters_close(r);

    char err[512] = "";
    r = open_reg(NULL, roots, 1, NULL, one * 2 + one / 2);
    CHECK_EQ(load(r, "a", gguf_path("fortunes"), true, NULL), 0);
    CHECK_EQ(load(r, "b", gguf_path("jargon"), false, NULL), 0);
    CHECK_EQ(load(r, "c", gguf_path("devil"), false, NULL), 0);    /* evicts b */
    CHECK_EQ(status_of(r, "a"), ADAPTERS_LOADED);
    CHECK_EQ(status_of(r, "b"), ADAPTERS_EVICTED);
    CHECK_EQ(status_of(r, "c"), ADAPTERS_LOADED);
    struct adapter *b = NULL;
    CHECK_EQ(adapters_try_get(r, "b", &b), -EWOULDBLOCK);
    b = get(r, "b");                                                 /* evicts c */
    CHECK_EQ(adapter_version(b), 1);
    CHECK_EQ(status_of(r, "c"), ADAPTERS_EVICTED);
    check_weights(b, "lora-jargon");
    /* a is pinned and b is in use: nothing can make room for c. */
    struct adapter *c = NULL;
    CHECK_EQ(adapters_get(r, "c", &c, err, sizeof(err)), -ENOMEM);
    CHECK(c == NULL && strstr(err, "held by pinned or busy adapters") != NULL);
    struct adapters_entry *rows = NULL;
    int n = 0;
    CHECK_EQ(adapters_list(r, &rows, &n), 0);
    const struct adapters_entry *rb = row_of(rows, n, "b"), *ra = row_of(rows, n, "a");
    CHECK(rb && rb->users == 1 && rb->bytes == one && ra && ra->pinned && ra->users == 0);
    adapters_list_free(rows);
    CHECK_EQ(status_of(r, "c"), ADAPTERS_EVICTED);
    CHECK_EQ(load(r, "d", gguf_path("devil"), false, "--max-adapter-memory"), -ENOMEM);
    adapter_unref(b);
    c = get(r, "c");                                                 /* b is idle now */
    CHECK_EQ(status_of(r, "b"), ADAPTERS_EVICTED);
    adapter_unref(c);
    /* Unpinned, a is the least recently used. */
    CHECK_EQ(adapters_pin(r, "a", false, err, sizeof(err)), 0);
    CHECK_EQ(adapters_pin(r, "zz", false, err, sizeof(err)), -ENOENT);
    b = get(r, "b");
    CHECK_EQ(status_of(r, "a"), ADAPTERS_EVICTED);
    CHECK_EQ(status_of(r, "c"), ADAPTERS_LOADED);
    adapter_unref(b);
    uint64_t resident = 0;
    adapters_memory(r, &resident, &max);
    CHECK(resident == 2 * one && max == one * 2 + one / 2);
    adapters_close(r);

    r = open_reg(NULL, roots, 1, NULL, one / 2);
    CHECK_EQ(load(r, "big", gguf_path("fortunes"), false, "needs"), -ENOMEM);
    adapters_close(r);
}

/* ---- Swap stress ------------------------------------------------------ */

struct stress {
    struct adapters *r;
    atomic_bool stop;
    atomic_int gets, misses, changes, bad;
    char sha[3][65];            /* of fortunes, jargon, devil */
};

static bool
known_sha(struct stress *s, const char *sha)
{
    for (int i = 0; i < 3; i++)
        if (strcmp(s->sha[i], sha) == 0)
            return true;
    return false;
}

static void *
reader(void *arg)
{
    struct stress *s = arg;
    static const char *names[] = { "s0", "s1", "s2" };
    unsigned seed = (unsigned)(uintptr_t)&seed;
    while (!atomic_load(&s->stop)) {
        const char *name = names[rand_r(&seed) % 3];
        struct adapter *a = NULL;
        char err[512] = "";
        int rc = adapters_try_get(s->r, name, &a);
        if (rc == -EWOULDBLOCK)
            rc = adapters_get(s->r, name, &a, err, sizeof(err));
        if (rc == 0) {
            /* "Use" it: its weights and info must stay consistent while held. */
            struct engine_lora *l = adapter_lora(a);
            size_t bytes = engine_lora_bytes(l);
            if (!known_sha(s, adapter_info(a)->sha256) || strcmp(adapter_name(a), name) != 0 ||
                adapter_version(a) < 1 || engine_lora_max_rank(l) != 8)
                atomic_fetch_add(&s->bad, 1);
            usleep(rand_r(&seed) % 300);
            if (engine_lora_bytes(l) != bytes)
                atomic_fetch_add(&s->bad, 1);
            adapter_unref(a);
            atomic_fetch_add(&s->gets, 1);
        } else if (rc == -ENOENT || rc == -ENOMEM) {
            atomic_fetch_add(&s->misses, 1);     /* unloaded meanwhile, or all busy */
        } else {
            fprintf(stderr, "  reader: %d %s\n", rc, err);
            atomic_fetch_add(&s->bad, 1);
        }
    }
    return NULL;
}

static void *
writer(void *arg)
{
    struct stress *s = arg;
    static const char *files[] = { "fortunes", "jargon", "devil" };
    char err[512];
    for (int i = 0; !atomic_load(&s->stop); i++) {
        int rc = 0;
        switch (i % 4) {
        case 0:
        case 2: rc = adapters_load(s->r, "s0", gguf_path(files[i % 3]), false, NULL, err,
                                   sizeof(err)); break;
        case 1: rc = adapters_unload(s->r, "s1", err, sizeof(err)); break;
        default: rc = adapters_load(s->r, "s1", gguf_path(files[(i + 1) % 3]), i % 8 == 3,
                                    NULL, err, sizeof(err)); break;
        }
        if (rc < 0 && rc != -ENOENT && rc != -ENOMEM) {
            fprintf(stderr, "  writer: %d %s\n", rc, err);
            atomic_fetch_add(&s->bad, 1);
        }
        atomic_fetch_add(&s->changes, 1);
        usleep(2000);
    }
    return NULL;
}

/*
 * Readers get, use and release s0..s2 while a writer replaces s0, unloads and
 * reloads s1 every few ms, under a budget of two adapters (so s2 is evicted
 * and reloaded all the time). No error but the expected ones, nothing leaks,
 * and memory returns to zero at the end.
 */
static void
test_swap_stress(void)
{
    const char *roots[] = { lora_dir };
    struct adapters *r = open_reg(NULL, roots, 1, NULL, 0);
    static const char *files[] = { "fortunes", "jargon", "devil" };
    struct stress s = { .r = NULL };
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(load(r, "probe", gguf_path(files[i]), false, NULL), 0);
        struct adapter *a = get(r, "probe");
        snprintf(s.sha[i], sizeof(s.sha[i]), "%s", adapter_info(a)->sha256);
        adapter_unref(a);
    }
    uint64_t one = 0, max = 0;
    adapters_memory(r, &one, &max);
    adapters_close(r);
    r = open_reg(NULL, roots, 1, NULL, one * 2 + one / 2);
    s.r = r;
    CHECK_EQ(load(r, "s0", gguf_path("fortunes"), false, NULL), 0);
    CHECK_EQ(load(r, "s1", gguf_path("jargon"), false, NULL), 0);
    CHECK_EQ(load(r, "s2", gguf_path("devil"), false, NULL), 0);
    pthread_t rd[4], wr;
    for (int i = 0; i < 4; i++)
        pthread_create(&rd[i], NULL, reader, &s);
    pthread_create(&wr, NULL, writer, &s);
    /* At least 1.5 s and 40 changes (sanitizer builds load slowly), at most 20 s. */
    for (int ms = 0; ms < 20000 && (ms < 1500 || atomic_load(&s.changes) < 40); ms += 10)
        usleep(10 * 1000);
    atomic_store(&s.stop, true);
    for (int i = 0; i < 4; i++)
        pthread_join(rd[i], NULL);
    pthread_join(wr, NULL);
    if (getenv("SHOW_STATS"))
        fprintf(stderr, "  gets %d misses %d changes %d\n", atomic_load(&s.gets),
                atomic_load(&s.misses), atomic_load(&s.changes));
    CHECK_EQ(atomic_load(&s.bad), 0);
    CHECK(atomic_load(&s.gets) > 100);
    CHECK(atomic_load(&s.changes) >= 40);
    struct adapters_entry *rows = NULL;
    int n = 0;
    CHECK_EQ(adapters_list(r, &rows, &n), 0);
    for (int i = 0; i < n; i++)
        CHECK_EQ(rows[i].users, 0);
    adapters_list_free(rows);
    char err[512];
    for (int i = 0; i < 3; i++) {
        char name[16];
        snprintf(name, sizeof(name), "s%d", i);
        adapters_unload(r, name, err, sizeof(err));
    }
    uint64_t resident = 1;
    adapters_memory(r, &resident, &max);
    CHECK_EQ(resident, 0);
    adapters_close(r);
}

int
main(int argc, char **argv)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/models/kjv-tiny-f32.gguf", test_shared_dir());
    if (engine_model_open(path, &model, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n0 passed, 1 failed\n", err);
        return 1;
    }
    snprintf(path, sizeof(path), "%s/models/lora", test_shared_dir());
    if (realpath(path, lora_dir) == NULL) {
        fprintf(stderr, "%s: not found\n0 passed, 1 failed\n", path);
        return 1;
    }
    static const struct check_test tests[] = {
        { "versions", test_versions },
        { "ref_across_replace", test_ref_across_replace },
        { "restart", test_restart },
        { "confinement", test_confinement },
        { "first_use", test_first_use },
        { "budget", test_budget },
        { "swap_stress", test_swap_stress },
        { NULL, NULL },
    };
    int rc = check_main(tests, argc, argv);
    engine_model_free(model);
    return rc;
}
