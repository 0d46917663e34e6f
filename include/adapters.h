/*
 * adapters.h - LoRA adapters: loading them from the files users have, and
 * (registry) naming, versioning and sharing them while requests run.
 *
 * Loading turns a llama.cpp GGUF-LoRA file or a Hugging Face PEFT directory
 * (adapter_config.json + adapter_model.safetensors) into an engine_lora,
 * checking every shape, name and value against the base model first: an
 * adapter that does not fit is refused with one line saying why, never served
 * as the base model. Loading reads files and may take a while: call it off
 * the loop and scheduler threads.
 *
 * The registry (struct adapters) maps names to published versions (struct
 * adapter). A version is immutable and refcounted: a request takes a ref when
 * it is admitted and drops it when it ends, so replacing or unloading a name
 * never disturbs running requests, and a version's memory goes with its last
 * ref, on whichever thread that happens. The registry persists what it knows
 * in SQLite so names survive a restart.
 */
#ifndef LORASERVE_ADAPTERS_H
#define LORASERVE_ADAPTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

/* What a loaded adapter is, as the registry and /v1/adapters show it. */
struct adapters_info {
    char format[8];         /* "gguf" or "peft" */
    int rank;               /* the largest rank of any projection */
    float alpha;
    bool rslora;
    unsigned targets;       /* bit t set: engine_lora_target t is adapted somewhere */
    /*
     * Content hash, lowercase hex: of the .gguf file, or for PEFT of
     * adapter_config.json's bytes followed by adapter_model.safetensors' bytes.
     * With the scale, it is the adapter's identity wherever a cache (prefix /
     * KV cache) could confuse two adapters; never the name or version.
     */
    char sha256[65];
    uint64_t file_bytes;
};

/*
 * Loads the adapter at path for model m: a directory is read as PEFT, a file
 * as GGUF-LoRA. Ranks above max_rank are refused. Returns 0 with the caller
 * owning *out (release with engine_lora_unref) and *info filled, or a negative
 * errno (-ENOENT missing, -EINVAL does not fit, -EBADMSG corrupt, -ENOMEM)
 * with one line "PATH: what is wrong" in err.
 */
int adapters_load_path(const struct engine_model *m, const char *path, int max_rank,
                       struct engine_lora **out, struct adapters_info *info, char *err,
                       size_t errlen);

/* ---- Registry -------------------------------------------------------- */

#define ADAPTERS_NAME_MAX 128
#define ADAPTERS_DEFAULT_MAX_RANK 64

struct adapters;        /* the registry of named adapters */
struct adapter;         /* one published version of a named adapter */

struct adapters_params {
    /* SQLite database (WAL; table "adapters"); NULL keeps the registry in memory only. */
    const char *db_path;
    /*
     * Directories and single files an adapter path may be in (realpath'd at
     * open; each must exist). A path outside all of them, also through ".."
     * or a symlink, is refused with -EACCES. The server passes --adapter-dir
     * and the path of every --adapter flag.
     */
    const char *const *roots;
    int n_roots;
    /*
     * --adapter-dir, or NULL. It is a root too; a relative path given to
     * adapters_load is taken relative to it; and adapters_get of an unknown
     * NAME loads DIR/NAME (a PEFT directory or a GGUF file) or DIR/NAME.gguf
     * on first use and registers it.
     */
    const char *adapter_dir;
    int max_rank;           /* --max-lora-rank (<= 0: ADAPTERS_DEFAULT_MAX_RANK) */
    /*
     * --max-adapter-memory: bytes of adapters the registry keeps resident
     * (engine_lora_bytes of each name's current version); 0 for no limit.
     * Beyond it, unpinned adapters no request is using are evicted, least
     * recently used first, and reloaded on next use. A replaced version that
     * requests still hold is not counted; its memory goes when they finish.
     */
    uint64_t max_memory;
};

/*
 * Opens the registry for model m (which must outlive it and every adapter
 * ref): checks the roots, opens or creates the database, and lists every
 * adapter registered before. Those are loaded lazily, on first use (their
 * status reads "evicted" until then). Returns 0 with the caller owning *out
 * (release with adapters_close), or -ENOENT (a root does not exist), -EIO
 * (database), -EINVAL, -ENOMEM with one line in err.
 */
int adapters_open(const struct engine_model *m, const struct adapters_params *p,
                  struct adapters **out, char *err, size_t errlen);
/*
 * Drops the registry's refs (versions still held by requests stay valid until
 * their last unref) and closes the database. No other call may be running on
 * r. Accepts NULL.
 */
void adapters_close(struct adapters *r);

/* Whether name is a valid adapter name: 1..128 of [A-Za-z0-9._:-], not starting with '.'. */
bool adapters_name_valid(const char *name);
/*
 * The registry's functions take a key: a name, or "OWNER/NAME" (both valid
 * names) for an adapter that belongs to OWNER (a tenant): owners' names are
 * separate namespaces. An unknown owned key is never looked for in the
 * adapter_dir. Whether key is registered (in any status), without loading:
 */
#define ADAPTERS_KEY_MAX (2 * ADAPTERS_NAME_MAX + 1)
bool adapters_key_valid(const char *key);
bool adapters_has(struct adapters *r, const char *key);

/*
 * The current version of name, with a ref the caller owns (release with
 * adapter_unref). If the name is registered but evicted (or failed before),
 * it is loaded again; if it is unknown and an adapter_dir is set, DIR/NAME is
 * loaded and registered. Either reads files: call from a thread that may
 * block (the libuv pool), never the loop or scheduler. Returns 0, -ENOENT
 * (unknown name), a load error (-EINVAL, -EBADMSG, -EACCES, -ENOMEM, -EIO), or
 * -EAGAIN if the name was replaced or unloaded during 16 loads in a row, with
 * one line in err. Concurrent gets of a name being loaded wait for that one
 * load, and share its error if it fails. Any thread.
 */
int adapters_get(struct adapters *r, const char *name, struct adapter **out, char *err,
                 size_t errlen);
/*
 * adapters_get without blocking: 0 with a ref if the name is resident,
 * -EWOULDBLOCK if a load would be needed (go to the pool and call
 * adapters_get), -ENOENT if the name is unknown and there is no adapter_dir.
 * Takes only a short lock: safe on the loop thread.
 */
int adapters_try_get(struct adapters *r, const char *name, struct adapter **out);

/*
 * Loads the adapter at path (confined to the roots) and publishes it as
 * name's new version: version 1 for a new name, else the current version + 1
 * (or the same version if the content, sha256, is the same as before; so
 * --adapter flags loaded again at every start keep their versions).
 * Validation and loading run on the caller's thread with no lock held; the
 * swap is atomic: later gets see the new version, holders of the old one keep
 * it. pin: never evict it (a replace sets the pin anew). If out is not NULL,
 * *out gets a ref to the new version. On any error (-EINVAL bad name, no
 * path or an adapter that does not fit, -EBADMSG corrupt, -ENOENT no such
 * path, -EACCES outside the roots, -ENAMETOOLONG, -ENOMEM over max_memory
 * with nothing evictable, -EIO database), with one line in err, the
 * registry is unchanged and the old version keeps serving. Blocks: pool
 * thread. Any thread.
 */
int adapters_load(struct adapters *r, const char *name, const char *path, bool pin,
                  struct adapter **out, char *err, size_t errlen);

/*
 * Forgets name: later gets fail with -ENOENT (or, with an adapter_dir, load
 * DIR/NAME again), while requests holding a version finish on it. Returns 0,
 * -ENOENT (not registered) or -EIO, with one line in err. Any thread; blocks
 * on the database.
 */
int adapters_unload(struct adapters *r, const char *name, char *err, size_t errlen);

/* Pins (never evicted) or unpins name. 0, -ENOENT, -EIO. Any thread; blocks on the database. */
int adapters_pin(struct adapters *r, const char *name, bool pin, char *err, size_t errlen);

enum adapters_status {
    ADAPTERS_LOADED,        /* resident: gets are served at once */
    ADAPTERS_EVICTED,       /* registered, not resident: the next get loads it */
    ADAPTERS_FAILED,        /* its last load failed (error says why); the next get retries */
};
const char *adapters_status_name(enum adapters_status s);   /* "loaded", ... */

/* One registered adapter, as /v1/adapters and /v1/models show it. */
struct adapters_entry {
    const char *name;
    const char *path;       /* resolved */
    int64_t version;
    enum adapters_status status;
    const char *error;      /* the last load error when failed, else "" */
    bool pinned;
    int users;              /* refs held by requests on the current version */
    uint64_t bytes;         /* resident bytes of the current version (0 if not resident) */
    struct adapters_info info;  /* of the version last loaded */
    int64_t created_at;     /* unix seconds: first registered */
    int64_t updated_at;     /* last change (new version, status, pin) */
    int64_t last_used_at;   /* last get */
};

/*
 * A snapshot of every registered adapter, sorted by name. Returns 0 with
 * *out (one allocation; strings inside it) owned by the caller and released
 * with adapters_list_free, and *n rows; or -ENOMEM. Any thread; does not block.
 */
int adapters_list(struct adapters *r, struct adapters_entry **out, int *n);
void adapters_list_free(struct adapters_entry *list);

/* Resident bytes and the budget (0: none), for /metrics. */
void adapters_memory(struct adapters *r, uint64_t *resident, uint64_t *max_memory);
/* Versions loaded (made resident) and evicted since open, for /metrics. Any thread. */
void adapters_counters(struct adapters *r, uint64_t *loads, uint64_t *evictions);

/* ---- One version (refcounted; any thread) ----------------------------- */

void adapter_ref(struct adapter *a);
void adapter_unref(struct adapter *a);      /* accepts NULL; the last one frees */
/* Borrowed: valid while the caller holds its ref on a. */
const char *adapter_name(const struct adapter *a);
int64_t adapter_version(const struct adapter *a);
/*
 * The weights, borrowed like the rest: to keep them past the ref on a (e.g.
 * in an engine request), take engine_lora_ref.
 */
struct engine_lora *adapter_lora(const struct adapter *a);
const struct adapters_info *adapter_info(const struct adapter *a);

#endif
