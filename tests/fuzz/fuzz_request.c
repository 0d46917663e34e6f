/*
 * fuzz_request.c - a generation request's body on arbitrary bytes, through
 * what server__job_start() runs before it submits: server__parse_request() as
 * a completions and as a chat request, server__select_adapters(), the
 * retrieval context put in (server__request_inject), then
 * server__request_tokenize() with the kjv-tiny tokenizer, a chat template
 * family picked by the input's length, and a context of 256.
 *
 * What a failure must look like: a negative errno that maps to a 4xx status,
 * a message, and an error object that is valid JSON. What a success promises:
 * the documented ranges of every field, token ids inside the vocabulary, and
 * a prompt plus max_tokens that fit the context.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/server_int.h"
#include "fuzz.h"
#include "tokenizer.h"

#define N_CTX 256
#define BASE_ID "kjv-tiny-q8_0"

static void
check_error(int rc, const struct oai_err *e)
{
    int status = server__status_from_err(rc);
    if (getenv("FUZZ_VERBOSE") != NULL)
        fprintf(stderr, "%d: %s (%s)\n", status, e->msg, e->param);
    FUZZ_CHECK(rc < 0 && e->err == rc && e->msg[0] != '\0');
    FUZZ_CHECK(status == 400 || status == 404);
    char *json = server__error_json(e);
    cJSON *back = json ? cJSON_Parse(json) : NULL;
    FUZZ_CHECK(cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(back, "error")));
    cJSON_Delete(back);
    free(json);
}

static void
check_parsed(const struct oai_request *r, int n_vocab)
{
    FUZZ_CHECK(r->n >= 1 && r->n <= OAI_MAX_N);
    FUZZ_CHECK(r->n_stop >= 0 && r->n_stop <= OAI_MAX_STOP);
    for (int i = 0; i < r->n_stop; i++)
        FUZZ_CHECK(r->stop[i][0] != '\0' && strlen(r->stop[i]) <= OAI_MAX_STOP_LEN);
    FUZZ_CHECK(r->n_adapters >= 0 && r->n_adapters <= OAI_MAX_ADAPTERS);
    for (int i = 0; i < r->n_adapters; i++)
        FUZZ_CHECK(r->adapters[i].name != NULL && r->adapters[i].name[0] != '\0');
    FUZZ_CHECK(r->sampling.n_bias >= 0);
    for (int i = 0; i < r->sampling.n_bias; i++)
        FUZZ_CHECK(r->sampling.bias[i].token >= 0 && r->sampling.bias[i].token < n_vocab);
    FUZZ_CHECK(r->top_logprobs >= 0 && r->top_logprobs <= ENGINE_MAX_TOP_LOGPROBS);
    FUZZ_CHECK(r->max_tokens >= 0);
    if (r->kind == OAI_CHAT) {
        FUZZ_CHECK(r->n_msgs >= 1 && r->msgs != NULL);
        for (int i = 0; i < r->n_msgs; i++)
            FUZZ_CHECK(r->msgs[i].role != NULL);
    } else {
        FUZZ_CHECK(r->n_prompts >= 1 && r->n_prompts * r->n <= OAI_MAX_CHOICES);
        for (int i = 0; i < r->n_prompts; i++) {
            const struct oai_prompt *p = &r->prompts[i];
            FUZZ_CHECK((p->text != NULL) != (p->ids != NULL));
            for (int k = 0; k < p->n_ids; k++)
                FUZZ_CHECK(p->ids[k] >= 0 && p->ids[k] < n_vocab);
        }
    }
    if (r->has_retrieval) {
        FUZZ_CHECK(r->rtv.n_stores >= 1 && r->rtv.n_stores <= OAI_MAX_STORES);
        FUZZ_CHECK(r->rtv.top_k >= 1 && r->rtv.top_k <= 50);
        FUZZ_CHECK(server__request_query(r) != NULL);
    }
}

static void
check_tokenized(const struct oai_request *r, int n_vocab)
{
    int longest = 0;
    FUZZ_CHECK(r->n_prompts >= 1);
    for (int i = 0; i < r->n_prompts; i++) {
        const struct oai_prompt *p = &r->prompts[i];
        FUZZ_CHECK(p->n_ids >= 1 && p->ids != NULL);
        for (int k = 0; k < p->n_ids; k++)
            FUZZ_CHECK(p->ids[k] >= 0 && p->ids[k] < n_vocab);
        longest = p->n_ids > longest ? p->n_ids : longest;
    }
    FUZZ_CHECK(r->max_tokens >= 1 && (long long)longest + r->max_tokens <= N_CTX);
    FUZZ_CHECK(r->n_stop <= OAI_MAX_STOP + 1);
}

static void
one(enum oai_kind kind, const char *body, size_t len)
{
    const struct tokenizer *tok = engine_model_tokenizer(fuzz_model());
    int n_vocab = tokenizer_n_vocab(tok);
    struct oai_request r;
    struct oai_err e;
    memset(&e, 0, sizeof(e));
    int rc = server__parse_request(kind, body, len, n_vocab, &r, &e);
    if (rc < 0) {
        check_error(rc, &e);
        server__request_release(&r);
        return;
    }
    FUZZ_CHECK(r.kind == kind && cJSON_IsObject(r.root));
    check_parsed(&r, n_vocab);
    struct oai_adapter want[OAI_MAX_ADAPTERS];
    int n_want = -1;
    rc = server__select_adapters(&r, BASE_ID, want, &n_want, &e);
    if (rc < 0)
        check_error(rc, &e);
    else
        FUZZ_CHECK(n_want >= 0 && n_want <= OAI_MAX_ADAPTERS);
    if (r.has_retrieval)
        FUZZ_CHECK(server__request_inject(&r, "[1] In the beginning God created "
                                          "the heaven and the earth.") == 0);
    enum chat_family fam = (enum chat_family)(len % CHAT_FAMILY_COUNT);
    rc = server__request_tokenize(&r, tok, fam, N_CTX, &e);
    if (rc < 0)
        check_error(rc, &e);
    else
        check_tokenized(&r, n_vocab);
    server__request_release(&r);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_model();
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    one(OAI_COMPLETIONS, (const char *)data, size);
    one(OAI_CHAT, (const char *)data, size);
    return 0;
}
