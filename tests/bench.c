/*
 * bench.c - "make bench": speed of the engine on the 110M synthetic model,
 * as ratios measured in this one run.
 *
 * 1. Memory bandwidth of this machine now: a STREAM-style triad
 *    (a = b + s*c) and a plain read (sum of a 512 MiB buffer), 2 threads.
 * 2. The 110M model (n_embd 768, 12 layers, n_ff 2048, 32000-token vocab)
 *    made with "loraserve mkmodel" and quantized to f16, q8_0, q4_0, q4_k_m.
 * 3. For each: prefill of a 128-token prompt and decode of 64 tokens, best of
 *    a few runs; decode bandwidth = file bytes x tok/s, as a fraction of the
 *    measured triad and read bandwidth.
 * Usage: bench LORASERVE_BIN [--threads N] [--dir DIR]
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"

#define N_PROMPT 128
#define N_DECODE 64
#define BW_BYTES ((size_t)512 << 20)

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- Memory bandwidth ------------------------------------------------- */

struct bw_job {
    double *a, *b, *c;
    size_t lo, hi;
    int triad;
    double sum;
};

static void *
bw_worker(void *arg)
{
    struct bw_job *j = arg;
    if (j->triad) {
        for (size_t i = j->lo; i < j->hi; i++)
            j->a[i] = j->b[i] + 3.0 * j->c[i];
    } else {
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        for (size_t i = j->lo; i + 3 < j->hi; i += 4) {
            s0 += j->a[i];
            s1 += j->a[i + 1];
            s2 += j->a[i + 2];
            s3 += j->a[i + 3];
        }
        j->sum = s0 + s1 + s2 + s3;
    }
    return NULL;
}

/* Best GB/s over 5 runs of the triad (triad=1) or the read (triad=0). */
static double
bandwidth(double *a, double *b, double *c, size_t n, int threads, int triad)
{
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        pthread_t th[64];
        struct bw_job jobs[64];
        double t0 = now_s();
        for (int t = 0; t < threads; t++) {
            jobs[t] = (struct bw_job){ a, b, c, n * t / threads, n * (t + 1) / threads, triad, 0 };
            pthread_create(&th[t], NULL, bw_worker, &jobs[t]);
        }
        for (int t = 0; t < threads; t++)
            pthread_join(th[t], NULL);
        double dt = now_s() - t0, bytes = (double)n * sizeof(double) * (triad ? 3 : 1);
        if (bytes / dt / 1e9 > best)
            best = bytes / dt / 1e9;
    }
    return best;
}

/* ---- Models ----------------------------------------------------------- */

static int
run(const char *const *argv)
{
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

static bool
exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && st.st_size > 0;
}

static int
make_models(const char *bin, const char *dir, const char *shared)
{
    char f32[512], vocab[512];
    snprintf(f32, sizeof(f32), "%s/synth-110m-f32.gguf", dir);
    snprintf(vocab, sizeof(vocab), "%s/fixtures/tokenizer/ggml-vocab-llama-spm.gguf", shared);
    if (!exists(f32)) {
        const char *argv[] = { bin, "mkmodel", f32, "--vocab", vocab, NULL };
        if (run(argv) != 0)
            return -1;
    }
    const char *types[] = { "f16", "q8_0", "q4_0", "q4_k_m" };
    for (int i = 0; i < 4; i++) {
        char out[600];
        snprintf(out, sizeof(out), "%s/synth-110m-%s.gguf", dir, types[i]);
        const char *argv[] = { bin, "quantize", f32, out, types[i], NULL };
        if (!exists(out) && run(argv) != 0)
            return -1;
    }
    return 0;
}

struct speed {
    double pp, tg;
    size_t bytes;
};

static int
measure(const char *path, int threads, struct speed *sp)
{
    char err[512];
    struct engine_model *m = NULL;
    struct engine_ctx *ctx = NULL;
    if (engine_model_open(path, &m, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench: %s\n", err);
        return -1;
    }
    const struct engine_hparams *hp = engine_model_hparams(m);
    float *logits = malloc((size_t)hp->n_vocab * N_PROMPT * sizeof(float));
    int rc = engine_ctx_new(m, N_PROMPT + N_DECODE + 1, 1, threads, &ctx);
    int32_t toks[N_PROMPT], pos[N_PROMPT], seq[N_PROMPT];
    bool want[N_PROMPT];
    for (int i = 0; i < N_PROMPT; i++)
        toks[i] = 1 + (int32_t)((i * 7919u + 13) % (unsigned)(hp->n_vocab - 1)), pos[i] = i,
        seq[i] = 0, want[i] = i == N_PROMPT - 1;
    sp->pp = sp->tg = 0;
    sp->bytes = engine_model_bytes(m);
    for (int rep = 0; rc == 0 && rep < 4; rep++) {
        engine_seq_truncate(ctx, 0, 0);
        struct engine_batch b = { N_PROMPT, toks, pos, seq, want, NULL };
        double t0 = now_s();
        rc = engine_decode(ctx, &b, logits);
        double t1 = now_s();
        int32_t id = 1, p = N_PROMPT, s = 0;
        for (int i = 0; rc == 0 && i < N_DECODE; i++, p++) {
            struct engine_batch d = { 1, &id, &p, &s, NULL, NULL };
            rc = engine_decode(ctx, &d, logits);
            id = 1 + (int32_t)(i * 31 % 1000);
        }
        double t2 = now_s();
        if (rep > 0 && N_PROMPT / (t1 - t0) > sp->pp)
            sp->pp = N_PROMPT / (t1 - t0);
        if (rep > 0 && N_DECODE / (t2 - t1) > sp->tg)
            sp->tg = N_DECODE / (t2 - t1);
    }
    engine_ctx_free(ctx);
    free(logits);
    engine_model_free(m);
    return rc;
}

int
main(int argc, char **argv)
{
    const char *bin = argc > 1 ? argv[1] : "build/loraserve";
    const char *dir = getenv("LORASERVE_BENCH_DIR") ? getenv("LORASERVE_BENCH_DIR") : "build/bench";
    const char *shared = getenv("LORASERVE_SHARED") ? getenv("LORASERVE_SHARED") : "../shared";
    int threads = getenv("LORASERVE_THREADS") ? atoi(getenv("LORASERVE_THREADS")) : 2;
    mkdir(dir, 0755);
    if (make_models(bin, dir, shared) < 0) {
        fprintf(stderr, "bench: cannot build the synthetic models in %s\n", dir);
        return 1;
    }
    size_t n = BW_BYTES / sizeof(double);
    double *a = malloc(BW_BYTES), *b = malloc(BW_BYTES), *c = malloc(BW_BYTES);
    for (size_t i = 0; i < n; i++)
        a[i] = 1.0, b[i] = 2.0, c[i] = 0.5;
    double triad = bandwidth(a, b, c, n, threads, 1), readbw = bandwidth(a, b, c, n, threads, 0);
    free(a), free(b), free(c);

    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%d", gmtime(&now));
    printf("loraserve bench, %s, %d threads\n", date, threads);
    printf("memory bandwidth: triad %.1f GB/s, read %.1f GB/s\n\n", triad, readbw);
    printf("| model (110M) | file MB | prompt tok/s (pp%d) | decode tok/s (tg%d) | "
           "decode GB/s | / triad | / read |\n", N_PROMPT, N_DECODE);
    printf("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    const char *types[] = { "f16", "q8_0", "q4_0", "q4_k_m" };
    int status = 0;
    char jpath[600]; /* the figures again, for bench_summary.mjs */
    snprintf(jpath, sizeof(jpath), "%s/results-engine.json", dir);
    FILE *json = fopen(jpath, "w");
    if (json != NULL)
        fprintf(json, "{\"date\": \"%s\", \"threads\": %d, \"triad\": %.2f, \"read\": %.2f, "
                "\"models\": {", date, threads, triad, readbw);
    for (int i = 0; i < 4; i++) {
        char path[600];
        snprintf(path, sizeof(path), "%s/synth-110m-%s.gguf", dir, types[i]);
        struct speed s;
        if (measure(path, threads, &s) < 0) {
            status = 1;
            continue;
        }
        double gbs = (double)s.bytes * s.tg / 1e9;
        printf("| %s | %.0f | %.0f | %.1f | %.1f | %.2f | %.2f |\n", types[i], s.bytes / 1e6,
               s.pp, s.tg, gbs, gbs / triad, gbs / readbw);
        fflush(stdout);
        if (json != NULL)
            fprintf(json, "%s\"%s\": {\"pp\": %.1f, \"tg\": %.2f, \"bytes\": %zu}",
                    i ? ", " : "", types[i], s.pp, s.tg, s.bytes);
    }
    if (json != NULL) {
        fprintf(json, "}}\n");
        fclose(json);
    }
    return status;
}
