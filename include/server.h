/*
 * server.h - the OpenAI-compatible HTTP front end of loraserve.
 *
 * server_run() loads the model, starts the engine's scheduler thread and runs
 * one libuv loop on the calling thread. That loop owns every socket and drives
 * libmicrohttpd in external-event-loop mode; generated tokens come back from
 * the scheduler through a uv_async_t doorbell. The call returns when SIGTERM
 * or SIGINT has drained the running requests (or their deadline has passed),
 * after freeing everything it made.
 *
 * Lifetimes: the configuration is borrowed for the whole call; the module has
 * no global state apart from the process's signal dispositions.
 */
#ifndef LORASERVE_SERVER_H
#define LORASERVE_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What `loraserve serve` takes; every field has a flag and a LORASERVE_*
 * environment variable (see `loraserve serve --help`).
 */
struct server_config {
    const char *model_path;     /* GGUF file (required) */
    const char *host;           /* address to bind, numeric or a name */
    int port;                   /* 0: any free port (printed at start) */
    int threads;                /* math threads */
    int ctx;                    /* positions per slot; 0: the model's, at most 4096 */
    int parallel;               /* slots: sequences generated at once */
    int queue;                  /* requests waiting beyond the slots; more => 429 */
    int batch;                  /* rows per forward pass (prefill chunk budget) */
    const char *data_dir;       /* created if missing */
    long long max_body;         /* bytes of one request body; more => 413 */
    const char *chat_template;  /* family name, or NULL: from the GGUF file */
    const char *model_id;       /* id in /v1/models; NULL: file name without .gguf */
    int shutdown_timeout;       /* seconds running requests get after SIGTERM */
    /* LoRA adapters (see adapters.h) */
    const char *const *adapters;    /* (n_adapters) "NAME=PATH", loaded at start */
    int n_adapters;
    const char *adapter_dir;    /* unknown names X load DIR/X on first use; NULL: none */
    int max_lora_rank;          /* larger ranks are refused */
    uint64_t max_adapter_memory;    /* bytes of resident adapters; 0: no limit */
    const char *kv_type;        /* KV cache: "auto", "f16" or "f32" (engine.h) */
    int embedding_dim;          /* the hash embedder's default dimension (retrieval.h) */
    const char *pooling;        /* the served model's embeddings: "mean", "cls" or "last" */
    const char *embedding_model;    /* a BERT GGUF file for /v1/embeddings, or NULL */
    const char *embedding_pooling;  /* its pooling: "mean", "cls", "last"; NULL: the file's */
    const char *admin_key;      /* NULL: open mode (no tenants, no keys checked) */
    int request_timeout;        /* seconds for a whole request (headers and body) to arrive */
    int max_connections;        /* open connections at once; more are refused */
    int max_connections_per_ip; /* 0: no per-address limit */
    int drain;                  /* seconds after SIGTERM still serving, /health 503, then stop */
};

#define SERVER_CONFIG_INIT \
    { NULL, "127.0.0.1", 8080, 0, 0, 4, 64, 512, "./loraserve-data", 1 << 20, NULL, NULL, 30, \
      NULL, 0, NULL, 64, 0, "auto", 384, "mean", NULL, NULL, NULL, 60, 1024, 0, 0 }

/*
 * Serves until SIGTERM or SIGINT (and drain seconds after it, with /health
 * 503), then stops accepting, lets running requests finish for up to
 * shutdown_timeout seconds and returns 0. Returns a negative
 * errno (one line on stderr) if the model, the scheduler or the listening
 * socket cannot be set up. Call from the main thread, once at a time.
 */
int server_run(const struct server_config *cfg);

/* `loraserve serve [flags]`: flags and LORASERVE_* variables -> server_run(). Exit status. */
int server_main(int argc, char **argv);

#endif
