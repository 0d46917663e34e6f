/*
 * bench_retrieval.c - "make bench", the vector store: ingest speed with the
 * hash embedder, and search latency and recall at 100k chunks.
 *
 * 100,000 synthetic documents of 24 words (a 4,000-word made-up vocabulary,
 * one chunk each) go into a store in a temporary SQLite file in batches of
 * 1,000 (each one transaction): chunks/s, tokenizing, embedding and writing
 * included. Then 200 five-word queries: p50/p99 latency of vector search
 * (k = 10) and of hybrid search, and recall@10 of vector search against a
 * double-precision scan of the same vectors (1.0 means the scan found
 * exactly the true top 10). Prints a table, writes results-retrieval.json
 * beside the model. Target: p50 <= 5 ms at recall@10 >= 0.95.
 * With EMBED.gguf (a BERT embedding model, --embedding-model): its speed,
 * tokens/s over 64 texts of 128 tokens and the time of one 512-token text.
 * Usage: bench_retrieval MODEL.gguf OUT_DIR [EMBED.gguf]
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "retrieval.h"
#include "tokenizer.h"

#define BATCH 1000
#define WORDS 24
#define VOCAB 4000
#define N_QUERIES 200
#define K 10

static char vocab[VOCAB][12];
static int n_docs = 100000;   /* LORASERVE_BENCH_DOCS overrides (quick runs) */

static double
now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;

static uint64_t
next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Made-up words of 3 to 9 letters, consonant-vowel, so the tokenizer splits them. */
static void
make_vocab(void)
{
    static const char c[] = "bcdfghklmnprstvz", v[] = "aeiou";
    for (int i = 0; i < VOCAB; i++) {
        int len = 3 + (int)(next() % 7);
        for (int k = 0; k < len; k++)
            vocab[i][k] = k % 2 ? v[next() % 5] : c[next() % 16];
        vocab[i][len] = '\0';
    }
}

/* n words, Zipf-ish (squared uniform favours the first words), into buf. */
static void
words(char *buf, size_t cap, int n)
{
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        double u = (double)(next() % 1000000) / 1e6;
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", i ? " " : "",
                                vocab[(int)(u * u * VOCAB) % VOCAB]);
    }
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double
pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return v[(int)fmin(n - 1, ceil(p / 100 * n) - 1)];
}

/* The true top K of q over every document's vector, by a double-precision scan. */
static void
exact_top(const float *all, const float *q, int dim, long long *top)
{
    double best[K];
    for (int i = 0; i < K; i++)
        best[i] = -1e30, top[i] = -1;
    for (long long r = 0; r < n_docs; r++) {
        double s = 0;
        for (int d = 0; d < dim; d++)
            s += (double)all[r * dim + d] * q[d];
        if (s <= best[K - 1])
            continue;
        int i = K - 1;
        for (; i > 0 && best[i - 1] < s; i--)
            best[i] = best[i - 1], top[i] = top[i - 1];
        best[i] = s, top[i] = r;
    }
}

static int
ingest(struct retrieval_stores *st, const char *id, const struct retrieval_embedder *e,
       float *all, double *secs)
{
    static char text[BATCH][WORDS * 12];
    static char ids[BATCH][16];
    struct retrieval_doc docs[BATCH];
    struct retrieval_doc_added added[BATCH];
    char err[256];
    int dim = retrieval_embedder_dim(e);
    double t = 0;
    for (int b = 0; b < n_docs / BATCH; b++) {
        for (int i = 0; i < BATCH; i++) {
            words(text[i], sizeof(text[i]), WORDS);
            snprintf(ids[i], sizeof(ids[i]), "d%d", b * BATCH + i);
            docs[i] = (struct retrieval_doc){ ids[i], text[i], strlen(text[i]), NULL };
            retrieval_embed(e, text[i], strlen(text[i]), all + (size_t)(b * BATCH + i) * dim,
                            NULL);
        }
        double t0 = now();
        if (retrieval_store_add(st, id, docs, BATCH, added, err, sizeof(err)) < 0) {
            fprintf(stderr, "bench_retrieval: %s\n", err);
            return -1;
        }
        t += now() - t0;
    }
    *secs = t;
    return 0;
}

/* Latencies of N_QUERIES searches in mode; recall@K against the exact scan for vector. */
static double
queries(struct retrieval_stores *st, const char *id, const struct retrieval_embedder *e,
        const float *all, enum retrieval_mode mode, double *lat)
{
    int dim = retrieval_embedder_dim(e), found = 0;
    float *qv = malloc((size_t)dim * sizeof(float));
    char text[128], err[256];
    for (int i = 0; i < N_QUERIES; i++) {
        words(text, sizeof(text), 5);
        struct retrieval_query q = { text, NULL, 0, K, mode, 0, NULL };
        struct retrieval_hit *h = NULL;
        int n = 0;
        double t0 = now();
        retrieval_search(st, id, &q, &h, &n, err, sizeof(err));
        lat[i] = (now() - t0) * 1e3;
        if (mode == RETRIEVAL_VECTOR) {
            long long top[K];
            retrieval_embed(e, text, strlen(text), qv, NULL);
            exact_top(all, qv, dim, top);
            for (int a = 0; a < n; a++)
                for (int b = 0; b < K; b++)
                    found += top[b] >= 0 && atoll(h[a].document + 1) == top[b];
        }
        retrieval_hits_free(h, n);
    }
    free(qv);
    return (double)found / (N_QUERIES * K);
}

/* Seconds per embedding of n tokens (ordinary word ids between [CLS] and [SEP]), best of reps. */
static double
encoder_time(struct engine_encoder *enc, int n, int reps)
{
    int32_t *ids = malloc((size_t)n * sizeof(*ids));
    float *v = malloc((size_t)engine_encoder_dim(enc) * sizeof(float));
    for (int i = 0; i < n; i++)
        ids[i] = 2000 + (int32_t)(next() % 20000);
    ids[0] = tokenizer_bos(engine_encoder_tokenizer(enc));
    ids[n - 1] = 102;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t = now();
        engine_encoder_embed(enc, ids, n, ENGINE_POOL_MEAN, v);
        best = fmin(best, now() - t);
    }
    free(ids);
    free(v);
    return best;
}

static void
bench_encoder(const char *path, const char *out_dir)
{
    struct engine_encoder *enc = NULL;
    char err[512];
    if (engine_encoder_open(path, 2, &enc, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_retrieval: %s\n", err);
        return;
    }
    encoder_time(enc, 128, 2); /* warm-up */
    double t128 = 0;
    for (int i = 0; i < 64; i++)
        t128 += encoder_time(enc, 128, 1);
    double t512 = encoder_time(enc, engine_encoder_n_ctx(enc), 5);
    printf("\nEmbedding model %s (%lld parameters, dimension %d, 2 threads)\n\n"
           "| 128-token texts: tokens/s | one %d-token text: ms |\n| ---: | ---: |\n"
           "| %.0f | %.1f |\n", path, (long long)engine_encoder_n_params(enc),
           engine_encoder_dim(enc), engine_encoder_n_ctx(enc), 64 * 128 / t128, t512 * 1e3);
    char out[512];
    snprintf(out, sizeof(out), "%s/results-encoder.json", out_dir);
    FILE *f = fopen(out, "w");
    if (f != NULL) {
        fprintf(f, "{\"tok_per_s\":%.1f,\"ms_512\":%.2f}\n", 64 * 128 / t128, t512 * 1e3);
        fclose(f);
    }
    engine_encoder_free(enc);
}

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_retrieval MODEL.gguf OUT_DIR\n");
        return 2;
    }
    struct engine_model *m = NULL;
    struct retrieval_embedder *e = NULL;
    struct retrieval_stores *st = NULL;
    struct retrieval_store_info info;
    char err[512], db[512];
    snprintf(db, sizeof(db), "%s/bench-retrieval.db", argv[2]);
    unlink(db);
    if (engine_model_open(argv[1], &m, err, sizeof(err)) < 0 ||
        retrieval_hash_new(RETRIEVAL_HASH_DIM, &e) < 0 ||
        retrieval_stores_open(db, engine_model_tokenizer(m), e, &st, err, sizeof(err)) < 0 ||
        retrieval_store_create(st, NULL, "bench", NULL, NULL, NULL, 0, 0, &info, err, sizeof(err)) < 0) {
        fprintf(stderr, "bench_retrieval: %s\n", err);
        return 1;
    }
    if (getenv("LORASERVE_BENCH_DOCS") != NULL)
        n_docs = atoi(getenv("LORASERVE_BENCH_DOCS")) / BATCH * BATCH;
    if (n_docs < BATCH)
        n_docs = BATCH;
    make_vocab();
    float *all = malloc((size_t)n_docs * RETRIEVAL_HASH_DIM * sizeof(float));
    double secs = 0, vlat[N_QUERIES], hlat[N_QUERIES];
    if (all == NULL || ingest(st, info.id, e, all, &secs) < 0)
        return 1;
    double recall = queries(st, info.id, e, all, RETRIEVAL_VECTOR, vlat);
    queries(st, info.id, e, all, RETRIEVAL_HYBRID, hlat);
    double vp50 = pct(vlat, N_QUERIES, 50), vp99 = pct(vlat, N_QUERIES, 99);
    double hp50 = pct(hlat, N_QUERIES, 50), hp99 = pct(hlat, N_QUERIES, 99);
    printf("\nVector store: %d chunks of %d words, dimension %d (hash embedder), exact scan\n\n",
           n_docs, WORDS, RETRIEVAL_HASH_DIM);
    printf("| ingest chunks/s | vector p50 ms | vector p99 ms | recall@10 | hybrid p50 ms | "
           "hybrid p99 ms |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n");
    printf("| %.0f | %.2f | %.2f | %.3f | %.2f | %.2f |\n", n_docs / secs, vp50, vp99, recall,
           hp50, hp99);
    printf("\nsearch p50 %.2f ms at recall@10 %.3f (target: p50 <= 5 ms at recall >= 0.95)\n",
           vp50, recall);
    char out[512];
    snprintf(out, sizeof(out), "%s/results-retrieval.json", argv[2]);
    FILE *f = fopen(out, "w");
    if (f != NULL) {
        fprintf(f, "{\"chunks\":%d,\"ingest\":%.1f,\"p50\":%.3f,\"p99\":%.3f,\"recall\":%.4f,"
                "\"hybrid_p50\":%.3f,\"hybrid_p99\":%.3f}\n", n_docs, n_docs / secs, vp50, vp99,
                recall, hp50, hp99);
        fclose(f);
    }
    if (argc > 3)
        bench_encoder(argv[3], argv[2]);
    retrieval_store_info_release(&info);
    retrieval_stores_close(st);
    unlink(db);
    free(all);
    retrieval_embedder_free(e);
    engine_model_free(m);
    return 0;
}
