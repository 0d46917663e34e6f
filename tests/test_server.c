/*
 * test_server.c - the server's parts that need no socket: request parsing and
 * validation (each bad input -> its status and param), the error mapping,
 * prompt tokenization and the context check, stop sequences held back across
 * token boundaries, UTF-8 holdback and sanitizing, the exact bytes of
 * responses and SSE chunks, the rules that pick a request's adapters, and
 * byte-size flags.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../server/cli.h"
#include "../server/server_int.h"
#include "check.h"
#include "testutil.h"

/* ---- Helpers ---------------------------------------------------------- */

static int
parse(enum oai_kind kind, const char *body, struct oai_request *r, struct oai_err *e)
{
    memset(e, 0, sizeof(*e));
    return server__parse_request(kind, body, strlen(body), 2048, r, e);
}

/* Parses body and expects a failure with this status and param ("" = null). */
static void
expect_bad(enum oai_kind kind, const char *body, int status, const char *param)
{
    struct oai_request r;
    struct oai_err e;
    int rc = parse(kind, body, &r, &e);
    if (rc == 0 || server__status_from_err(rc) != status || strcmp(e.param, param) != 0)
        fprintf(stderr, "  body %s: rc %d status %d param '%s' msg '%s'\n", body, rc,
                server__status_from_err(rc), e.param, e.msg);
    CHECK(rc < 0);
    CHECK_EQ(server__status_from_err(rc), status);
    CHECK_STR(e.param, param);
    CHECK(e.msg[0] != '\0');
    server__request_release(&r);
}

static struct engine_model *
kjv(void)
{
    static struct engine_model *m;
    if (m == NULL) {
        char path[512], err[256];
        snprintf(path, sizeof(path), "%s/models/kjv-tiny-f32.gguf", test_shared_dir());
        if (engine_model_open(path, &m, err, sizeof(err)) < 0)
            fprintf(stderr, "%s\n", err);
    }
    return m;
}

/* Pushes pieces one by one and returns everything released (caller frees). */
static char *
run_textout(const char *const *stop, int n_stop, const char *const *pieces, int n, int *stopped)
{
    struct textout t;
    struct sbuf out = SBUF_INIT;
    server__textout_init(&t, stop, n_stop);
    *stopped = 0;
    for (int i = 0; i < n && *stopped == 0; i++)
        *stopped = server__textout_push(&t, pieces[i], strlen(pieces[i]), &out);
    if (*stopped == 0)
        server__textout_flush(&t, &out);
    server__textout_release(&t);
    char *s = strdup(out.p ? out.p : "");
    server__buf_release(&out);
    return s;
}

/* ---- Parsing ---------------------------------------------------------- */

static void
test_parse_bad_completions(void)
{
    static const struct { const char *body; int status; const char *param; } cases[] = {
        { "{\"prompt\":\"a\xff\"}", 400, "" },
        { "{\"prompt\":\"\xed\xa0\x80\"}", 400, "" },
        { "{\"prompt\":", 400, "" },
        { "", 400, "" },
        { "[1,2]", 400, "" },
        { "{}", 400, "prompt" },
        { "{\"prompt\":5}", 400, "prompt" },
        { "{\"prompt\":[]}", 400, "prompt" },
        { "{\"prompt\":[1,\"a\"]}", 400, "prompt" },
        { "{\"prompt\":[99999]}", 400, "prompt" },
        { "{\"prompt\":[-1]}", 400, "prompt" },
        { "{\"prompt\":[1.5]}", 400, "prompt" },
        { "{\"prompt\":[[1,2],[]]}", 400, "prompt" },
        { "{\"prompt\":[\"a\",{}]}", 400, "prompt" },
        { "{\"prompt\":\"a\",\"max_tokens\":\"16\"}", 400, "max_tokens" },
        { "{\"prompt\":\"a\",\"max_tokens\":0}", 400, "max_tokens" },
        { "{\"prompt\":\"a\",\"max_tokens\":1.5}", 400, "max_tokens" },
        { "{\"prompt\":\"a\",\"temperature\":\"hot\"}", 400, "temperature" },
        { "{\"prompt\":\"a\",\"temperature\":3}", 400, "temperature" },
        { "{\"prompt\":\"a\",\"top_p\":1.5}", 400, "top_p" },
        { "{\"prompt\":\"a\",\"top_k\":\"a\"}", 400, "top_k" },
        { "{\"prompt\":\"a\",\"min_p\":-1}", 400, "min_p" },
        { "{\"prompt\":\"a\",\"seed\":\"x\"}", 400, "seed" },
        { "{\"prompt\":\"a\",\"seed\":1.5}", 400, "seed" },
        { "{\"prompt\":\"a\",\"stop\":5}", 400, "stop" },
        { "{\"prompt\":\"a\",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", 400, "stop" },
        { "{\"prompt\":\"a\",\"stop\":[1]}", 400, "stop" },
        { "{\"prompt\":\"a\",\"presence_penalty\":3}", 400, "presence_penalty" },
        { "{\"prompt\":\"a\",\"frequency_penalty\":\"a\"}", 400, "frequency_penalty" },
        { "{\"prompt\":\"a\",\"repetition_penalty\":0}", 400, "repetition_penalty" },
        { "{\"prompt\":\"a\",\"logit_bias\":[]}", 400, "logit_bias" },
        { "{\"prompt\":\"a\",\"logit_bias\":{\"abc\":1}}", 400, "logit_bias" },
        { "{\"prompt\":\"a\",\"logit_bias\":{\"5\":200}}", 400, "logit_bias" },
        { "{\"prompt\":\"a\",\"logit_bias\":{\"99999\":1}}", 400, "logit_bias" },
        { "{\"prompt\":\"a\",\"logprobs\":\"x\"}", 400, "logprobs" },
        { "{\"prompt\":\"a\",\"logprobs\":21}", 400, "logprobs" },
        { "{\"prompt\":\"a\",\"n\":0}", 400, "n" },
        { "{\"prompt\":\"a\",\"n\":9}", 400, "n" },
        { "{\"prompt\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"],"
          "\"n\":8}", 400, "n" },
        { "{\"prompt\":\"a\",\"stream\":\"yes\"}", 400, "stream" },
        { "{\"prompt\":\"a\",\"stream\":true,\"stream_options\":1}", 400, "stream_options" },
        { "{\"prompt\":\"a\",\"stream_options\":{\"include_usage\":1}}", 400,
          "stream_options.include_usage" },
        { "{\"prompt\":\"a\",\"echo\":true}", 400, "echo" },
        { "{\"prompt\":\"a\",\"ignore_eos\":1}", 400, "ignore_eos" },
        { "{\"prompt\":\"a\",\"model\":5}", 400, "model" },
        { "{\"prompt\":\"a\",\"user\":5}", 400, "user" },
        { "{\"prompt\":\"a\",\"lora_scale\":\"x\"}", 400, "lora_scale" },
        { "{\"prompt\":\"a\",\"lora_scale\":11}", 400, "lora_scale" },
        { "{\"prompt\":\"a\",\"adapters\":{}}", 400, "adapters" },
        { "{\"prompt\":\"a\",\"adapters\":[1]}", 400, "adapters" },
        { "{\"prompt\":\"a\",\"adapters\":[\"\"]}", 400, "adapters" },
        { "{\"prompt\":\"a\",\"adapters\":[{\"scale\":1}]}", 400, "adapters" },
        { "{\"prompt\":\"a\",\"adapters\":[{\"name\":\"x\",\"scale\":\"1\"}]}", 400,
          "adapters" },
        { "{\"prompt\":\"a\",\"adapters\":[{\"name\":\"x\",\"scale\":-11}]}", 400,
          "adapters" },
        { "{\"prompt\":\"a\",\"adapters\":[\"x\",{\"name\":\"x\"}]}", 400, "adapters" },
        { "{\"prompt\":\"a\",\"adapters\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\","
          "\"i\"]}", 400, "adapters" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_bad(OAI_COMPLETIONS, cases[i].body, cases[i].status, cases[i].param);
}

static void
test_parse_bad_chat(void)
{
    static const struct { const char *body; const char *param; } cases[] = {
        { "{}", "messages" },
        { "{\"messages\":[]}", "messages" },
        { "{\"messages\":{}}", "messages" },
        { "{\"messages\":[\"hi\"]}", "messages[0]" },
        { "{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"user\",\"content\":"
          "[{\"type\":\"image_url\",\"image_url\":{}}]}]}", "messages[1].content" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"logprobs\":1}", "logprobs" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"top_logprobs\":5}",
          "top_logprobs" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"top_logprobs\":21,"
          "\"logprobs\":true}", "top_logprobs" },
        { "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"max_completion_tokens\":\"x\"}",
          "max_completion_tokens" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_bad(OAI_CHAT, cases[i].body, 400, cases[i].param);
}

static void
test_parse_fields(void)
{
    struct oai_request r;
    struct oai_err e;
    const char *body =
        "{\"model\":\"m\",\"prompt\":\"hi\",\"max_tokens\":7,\"temperature\":0.5,\"top_p\":0.9,"
        "\"top_k\":5,\"min_p\":0.1,\"seed\":-1,\"stop\":[\"a\",\"\",\"bc\"],\"n\":2,"
        "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"repetition_penalty\":1.1,"
        "\"logit_bias\":{\"7\":-100,\"9\":2.5},\"logprobs\":3,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"ignore_eos\":true,\"user\":\"u\","
        "\"unknown_field\":{\"x\":[1]},\"echo\":false}";
    CHECK_EQ(parse(OAI_COMPLETIONS, body, &r, &e), 0);
    CHECK_STR(r.model, "m");
    CHECK_EQ(r.n_prompts, 1);
    CHECK_STR(r.prompts[0].text, "hi");
    CHECK_EQ(r.max_tokens, 7);
    CHECK(r.sampling.temperature == 0.5f && r.sampling.top_p == 0.9f);
    CHECK_EQ(r.sampling.top_k, 5);
    CHECK(fabsf(r.sampling.min_p - 0.1f) < 1e-6f);
    CHECK(r.has_seed && r.sampling.seed == UINT64_MAX);
    CHECK_EQ(r.n_stop, 2);
    CHECK_STR(r.stop[0], "a");
    CHECK_STR(r.stop[1], "bc");
    CHECK_EQ(r.n, 2);
    CHECK(r.sampling.presence_penalty == 0.5f && r.sampling.frequency_penalty == -0.5f);
    CHECK(fabsf(r.sampling.repeat_penalty - 1.1f) < 1e-6f);
    CHECK_EQ(r.sampling.n_bias, 2);
    CHECK(r.sampling.bias[0].token == 7 && isinf(r.sampling.bias[0].bias));
    CHECK(r.sampling.bias[1].token == 9 && r.sampling.bias[1].bias == 2.5f);
    CHECK(r.logprobs && r.top_logprobs == 3);
    CHECK(r.stream && r.include_usage && r.ignore_eos);
    server__request_release(&r);

    /* Defaults: OpenAI's sampling; max_tokens decided later; nulls mean "not given". */
    CHECK_EQ(parse(OAI_COMPLETIONS, "{\"prompt\":\"x\",\"stop\":null,\"n\":null}", &r, &e), 0);
    CHECK(r.sampling.temperature == 1.0f && r.sampling.top_p == 1.0f);
    CHECK(r.sampling.top_k == 0 && r.sampling.min_p == 0.0f && !r.has_seed);
    CHECK(r.max_tokens == 0 && r.n == 1 && r.n_stop == 0 && !r.stream && !r.logprobs);
    server__request_release(&r);
}

static void
test_parse_prompt_forms(void)
{
    struct oai_request r;
    struct oai_err e;
    CHECK_EQ(parse(OAI_COMPLETIONS, "{\"prompt\":[\"a\",\"b\"]}", &r, &e), 0);
    CHECK_EQ(r.n_prompts, 2);
    CHECK_STR(r.prompts[1].text, "b");
    server__request_release(&r);
    CHECK_EQ(parse(OAI_COMPLETIONS, "{\"prompt\":[1,1043,261]}", &r, &e), 0);
    CHECK(r.n_prompts == 1 && r.prompts[0].text == NULL && r.prompts[0].n_ids == 3);
    CHECK_EQ(r.prompts[0].ids[1], 1043);
    server__request_release(&r);
    CHECK_EQ(parse(OAI_COMPLETIONS, "{\"prompt\":[[1,2],[3]]}", &r, &e), 0);
    CHECK(r.n_prompts == 2 && r.prompts[0].n_ids == 2 && r.prompts[1].n_ids == 1);
    CHECK_EQ(r.prompts[1].ids[0], 3);
    server__request_release(&r);
}

static void
test_parse_chat_parts(void)
{
    struct oai_request r;
    struct oai_err e;
    const char *body = "{\"messages\":[{\"role\":\"system\",\"content\":null},"
                       "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                       "{\"type\":\"text\",\"text\":\"b\"}]}],\"logprobs\":true,"
                       "\"top_logprobs\":2,\"max_completion_tokens\":9}";
    CHECK_EQ(parse(OAI_CHAT, body, &r, &e), 0);
    CHECK_EQ(r.n_msgs, 2);
    CHECK(r.msgs[0].content == NULL);
    CHECK_STR(r.msgs[1].role, "user");
    CHECK_STR(r.msgs[1].content, "a\nb");
    CHECK(r.logprobs && r.top_logprobs == 2 && r.max_tokens == 9);
    server__request_release(&r);
}

/* ---- Adapters a request asks for -------------------------------------- */

/* Parses body and selects its adapters against the base "base"; returns select's rc. */
static int
select_from(const char *body, struct oai_adapter *out, int *n, struct oai_err *e)
{
    struct oai_request r;
    int rc = parse(OAI_COMPLETIONS, body, &r, e);
    CHECK_EQ(rc, 0);
    if (rc == 0)
        rc = server__select_adapters(&r, "base", out, n, e);
    /* Names are borrowed from the request: copy them out before it goes. */
    static char names[OAI_MAX_ADAPTERS][32];
    for (int i = 0; rc == 0 && i < *n; i++) {
        snprintf(names[i], sizeof(names[i]), "%s", out[i].name);
        out[i].name = names[i];
    }
    server__request_release(&r);
    return rc;
}

static void
test_select_adapters(void)
{
    struct oai_adapter a[OAI_MAX_ADAPTERS];
    struct oai_err e;
    int n = -1;
    /* The base: no model, or the base id; lora_scale alone changes nothing. */
    CHECK_EQ(select_from("{\"prompt\":\"x\"}", a, &n, &e), 0);
    CHECK_EQ(n, 0);
    CHECK_EQ(select_from("{\"prompt\":\"x\",\"model\":\"base\",\"lora_scale\":0.5}", a, &n,
                         &e), 0);
    CHECK_EQ(n, 0);
    /* model = an adapter's name, at lora_scale (default 1). */
    CHECK_EQ(select_from("{\"prompt\":\"x\",\"model\":\"f\"}", a, &n, &e), 0);
    CHECK(n == 1 && strcmp(a[0].name, "f") == 0 && a[0].scale == 1.0f);
    CHECK_EQ(select_from("{\"prompt\":\"x\",\"model\":\"f\",\"lora_scale\":0.5}", a, &n, &e),
             0);
    CHECK(n == 1 && a[0].scale == 0.5f);
    /* "adapters": names or objects, default scale 1; model is the base or one of them. */
    const char *both = "{\"prompt\":\"x\",\"model\":\"j\",\"adapters\":[{\"name\":\"f\","
                       "\"scale\":1.0},{\"name\":\"j\",\"scale\":0.5},\"k\"]}";
    CHECK_EQ(select_from(both, a, &n, &e), 0);
    CHECK(n == 3 && strcmp(a[0].name, "f") == 0 && strcmp(a[1].name, "j") == 0);
    CHECK(a[0].scale == 1.0f && a[1].scale == 0.5f && a[2].scale == 1.0f);
    CHECK_EQ(select_from("{\"prompt\":\"x\",\"adapters\":[\"f\"]}", a, &n, &e), 0);
    CHECK_EQ(n, 1);
    CHECK_EQ(select_from("{\"prompt\":\"x\",\"model\":\"f\",\"adapters\":[]}", a, &n, &e),
             -EINVAL);
    CHECK_STR(e.param, "model");
    CHECK_EQ(select_from("{\"prompt\":\"x\",\"model\":\"z\",\"adapters\":[\"f\"]}", a, &n,
                         &e), -EINVAL);
    CHECK_STR(e.param, "model");
    CHECK_EQ(select_from("{\"prompt\":\"x\",\"lora_scale\":1,\"adapters\":[\"f\"]}", a, &n,
                         &e), -EINVAL);
    CHECK_STR(e.param, "lora_scale");
}

static void
test_parse_bytes(void)
{
    static const struct { const char *s; uint64_t v; } good[] = {
        { "0", 0 }, { "123", 123 }, { "4K", 4096 }, { "4kb", 4096 }, { "4KiB", 4096 },
        { "512M", 512ull << 20 }, { "2G", 2ull << 30 }, { "1T", 1ull << 40 },
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint64_t v = 7;
        CHECK_EQ(cli_parse_bytes(good[i].s, &v), 0);
        CHECK(v == good[i].v);
    }
    static const char *const bad[] = { "", "-1", "+1", "1X", "1MM", "M", "1.5G", "1 G",
                                       "99999999999999999999", "16777216T" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t v = 7;
        CHECK_EQ(cli_parse_bytes(bad[i], &v), -EINVAL);
        CHECK(v == 7);
    }
}

/* The other endpoints' bodies: a JSON object, else 400 with no tree left over. */
static void
test_parse_object(void)
{
    static const char *const bad[] = { "", "[1]", "\"x\"", "{\"a\":", "{\"a\":\"\xff\"}" };
    static const int rc[] = { -EBADMSG, -EINVAL, -EINVAL, -EBADMSG, -EILSEQ };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cJSON *o = (cJSON *)1;
        struct oai_err e;
        CHECK_EQ(server__parse_object(bad[i], strlen(bad[i]), &o, &e), rc[i]);
        CHECK(o == NULL && e.err == rc[i] && server__status_from_err(rc[i]) == 400);
    }
    cJSON *o = NULL;
    struct oai_err e;
    CHECK_EQ(server__parse_object("{\"a\":1}", 7, &o, &e), 0);
    CHECK(cJSON_IsObject(o));
    cJSON_Delete(o);
}

/* POST /v1/embeddings' "dimensions": an integer 1..8192, never cast to int before that. */
static void
test_embeddings_dimensions(void)
{
    struct server s;
    memset(&s, 0, sizeof(s));
    snprintf(s.model_id, sizeof(s.model_id), "kjv");
    CHECK_EQ(retrieval_hash_new(384, &s.embedder), 0);
    static const char *const bad[] = { "0", "-1", "1.5", "8193", "1e300", "-1e300", "\"8\"" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"input\":\"x\",\"dimensions\":%s}", bad[i]);
        struct oai_err e;
        CHECK_EQ(server__embeddings_check(&s, body, strlen(body), &e), -EINVAL);
        CHECK_STR(e.param, "dimensions");
    }
    struct oai_err e;
    const char *good = "{\"input\":[\"x\",\"y\"],\"dimensions\":8192}";
    CHECK_EQ(server__embeddings_check(&s, good, strlen(good), &e), 0);
    retrieval_embedder_free(s.embedder);
}

/* ---- Errors ----------------------------------------------------------- */

static void
test_error_mapping(void)
{
    CHECK_EQ(server__status_from_err(-EINVAL), 400);
    CHECK_EQ(server__status_from_err(-EBADMSG), 400);
    CHECK_EQ(server__status_from_err(-EILSEQ), 400);
    CHECK_EQ(server__status_from_err(-ENOENT), 404);
    CHECK_EQ(server__status_from_err(-EOPNOTSUPP), 405);
    CHECK_EQ(server__status_from_err(-EMSGSIZE), 413);
    CHECK_EQ(server__status_from_err(-EAGAIN), 429);
    CHECK_EQ(server__status_from_err(-ECANCELED), 503);
    CHECK_EQ(server__status_from_err(-ENOSPC), 503);
    CHECK_EQ(server__status_from_err(-EBUSY), 503);
    CHECK_EQ(server__status_from_err(-ENOMEM), 500);

    struct oai_err e;
    server__fail(&e, -ENOENT, "model", "model_not_found", "the model '%s' does not exist", "x");
    char *s = server__error_json(&e);
    CHECK_STR(s, "{\"error\":{\"message\":\"the model 'x' does not exist\","
                 "\"type\":\"invalid_request_error\",\"param\":\"model\","
                 "\"code\":\"model_not_found\"}}");
    free(s);
    server__fail(&e, -EAGAIN, NULL, NULL, "busy");
    s = server__error_json(&e);
    CHECK_STR(s, "{\"error\":{\"message\":\"busy\",\"type\":\"rate_limit_error\","
                 "\"param\":null,\"code\":null}}");
    free(s);
}

/* ---- Tokens and the context ------------------------------------------- */

static void
test_tokenize_and_context(void)
{
    struct engine_model *m = kjv();
    CHECK(m != NULL);
    if (m == NULL)
        return;
    const struct tokenizer *tok = engine_model_tokenizer(m);
    struct oai_request r;
    struct oai_err e;
    CHECK_EQ(parse(OAI_COMPLETIONS, "{\"prompt\":\"In the beginning\"}", &r, &e), 0);
    CHECK_EQ(server__request_tokenize(&r, tok, CHAT_CHATML, 256, &e), 0);
    static const int32_t golden[] = { 1, 1043, 261, 1791, 1243 };
    CHECK_EQ(r.prompts[0].n_ids, 5);
    for (int i = 0; i < 5 && i < r.prompts[0].n_ids; i++)
        CHECK_EQ(r.prompts[0].ids[i], golden[i]);
    CHECK_EQ(r.max_tokens, 16);     /* OpenAI's default for completions */
    server__request_release(&r);

    /* 250 prompt tokens + 16 > 256: the message carries the numbers. */
    struct sbuf b = SBUF_INIT;
    server__buf_adds(&b, "{\"max_tokens\":16,\"prompt\":[1");
    for (int i = 1; i < 250; i++)
        server__buf_adds(&b, ",261");
    server__buf_adds(&b, "]}");
    CHECK_EQ(parse(OAI_COMPLETIONS, b.p, &r, &e), 0);
    CHECK_EQ(server__request_tokenize(&r, tok, CHAT_CHATML, 256, &e), -EINVAL);
    CHECK_STR(e.msg, "this model's context is 256 tokens; the prompt has 250 and max_tokens "
                     "asks for 16");
    CHECK_STR(e.param, "prompt");
    CHECK_STR(e.code, "context_length_exceeded");
    server__request_release(&r);
    server__buf_release(&b);

    /* Chat: the template's end of turn becomes a stop; max_tokens fills the context. */
    CHECK_EQ(parse(OAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}", &r, &e),
             0);
    CHECK_EQ(server__request_tokenize(&r, tok, CHAT_CHATML, 256, &e), 0);
    CHECK(r.prompts[0].n_ids > 5 && r.prompts[0].ids[0] == 1);
    CHECK_EQ(r.max_tokens, 256 - r.prompts[0].n_ids);
    CHECK_EQ(r.n_stop, 1);
    CHECK_STR(r.stop[0], "<|im_end|>");
    server__request_release(&r);

    CHECK_EQ(parse(OAI_CHAT, "{\"messages\":[{\"role\":\"bot\",\"content\":\"Hi\"}]}", &r, &e), 0);
    CHECK_EQ(server__request_tokenize(&r, tok, CHAT_CHATML, 256, &e), -EINVAL);
    CHECK_STR(e.param, "messages");
    server__request_release(&r);
}

/* ---- Released text ---------------------------------------------------- */

static void
test_stop_across_tokens(void)
{
    static const char *const stop[] = { "the end", "xyz" };
    static const char *const p1[] = { "in the", " e", "nd of", " days" };
    int stopped = 0;
    char *s = run_textout(stop, 2, p1, 4, &stopped);
    CHECK_EQ(stopped, 1);
    CHECK_STR(s, "in ");
    free(s);

    /* A prefix that does not go on is released in full. */
    static const char *const p2[] = { "to the", " beginning", " x", "y" };
    s = run_textout(stop, 2, p2, 4, &stopped);
    CHECK_EQ(stopped, 0);
    CHECK_STR(s, "to the beginning xy");
    free(s);

    /* The earliest match wins; text inside one token is cut too. */
    static const char *const stop2[] = { "b", "abc" };
    static const char *const p3[] = { "zab", "c" };
    s = run_textout(stop2, 2, p3, 2, &stopped);
    CHECK_EQ(stopped, 1);
    CHECK_STR(s, "za");
    free(s);
}

static void
test_stop_holdback(void)
{
    static const char *const stop[] = { "\n\n" };
    struct textout t;
    struct sbuf out = SBUF_INIT;
    server__textout_init(&t, stop, 1);
    CHECK_EQ(server__textout_push(&t, "line\n", 5, &out), 0);
    CHECK_STR(out.p, "line");           /* "\n" may begin the stop */
    CHECK_EQ(server__textout_push(&t, "more", 4, &out), 0);
    CHECK_STR(out.p, "line\nmore");
    CHECK_EQ(server__textout_push(&t, "\n", 1, &out), 0);
    CHECK_EQ(server__textout_push(&t, "\nrest", 5, &out), 1);
    CHECK_STR(out.p, "line\nmore");
    CHECK_EQ(t.released, 9u);
    CHECK(t.stopped);
    server__textout_release(&t);
    server__buf_release(&out);
}

static void
test_utf8_holdback(void)
{
    struct textout t;
    struct sbuf out = SBUF_INIT;
    server__textout_init(&t, NULL, 0);
    CHECK_EQ(server__textout_push(&t, "a\xe2\x82", 3, &out), 0);
    CHECK_STR(out.p, "a");
    CHECK_EQ(server__textout_push(&t, "\xac", 1, &out), 0);
    CHECK_STR(out.p, "a\xe2\x82\xac");
    CHECK_EQ(server__textout_push(&t, "\xf0\x9f", 2, &out), 0);
    CHECK_EQ(out.len, 4u);
    CHECK_EQ(server__textout_flush(&t, &out), 0);   /* the end: whatever is left */
    CHECK_EQ(out.len, 6u);
    server__textout_release(&t);
    server__buf_release(&out);
}

static void
test_utf8_checks(void)
{
    CHECK(server__utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
    CHECK(!server__utf8_valid("\xc0\xaf", 2));          /* overlong */
    CHECK(!server__utf8_valid("\xed\xa0\x80", 3));      /* surrogate */
    CHECK(!server__utf8_valid("\xf4\x90\x80\x80", 4));  /* past U+10FFFF */
    CHECK(!server__utf8_valid("\xe2\x82", 2));          /* cut short */
    CHECK(!server__utf8_valid("\x80", 1));
    struct sbuf b = SBUF_INIT;
    CHECK_EQ(server__utf8_sanitize(&b, "a\xffz\xe2\x82", 5), 0);
    CHECK_STR(b.p, "a\xef\xbf\xbdz\xef\xbf\xbd\xef\xbf\xbd");
    server__buf_release(&b);
}

/* ---- Responses -------------------------------------------------------- */

static struct oai_meta
meta(enum oai_kind kind, bool usage)
{
    struct oai_meta m = { kind, "", "kjv", 1700000000, false, 0, usage, NULL };
    snprintf(m.id, sizeof(m.id), "%s", kind == OAI_CHAT ? "chatcmpl-1" : "cmpl-1");
    return m;
}

static void
test_sse_chunks(void)
{
    struct choice c = { 0 };
    struct sbuf out = SBUF_INIT;
    struct oai_meta m = meta(OAI_CHAT, true);
    server__buf_adds(&c.text, "hi \xff");
    CHECK_EQ(server__sse_chunk(&out, &m, &c, OAI_CHUNK_ROLE, 0, NULL), 0);
    CHECK_EQ(server__sse_chunk(&out, &m, &c, OAI_CHUNK_TEXT, 0, NULL), 0);
    c.finish = "stop";
    CHECK_EQ(server__sse_chunk(&out, &m, &c, OAI_CHUNK_FINAL, 0, NULL), 0);
    struct oai_usage u = { 5, 3 };
    CHECK_EQ(server__sse_usage(&out, &m, &u), 0);
    CHECK_EQ(server__sse_done(&out), 0);
    const char *head = "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\","
                       "\"created\":1700000000,\"model\":\"kjv\",\"system_fingerprint\":\""
                       SERVER_FINGERPRINT "\",\"choices\":";
    char want[4096];
    snprintf(want, sizeof(want),
             "data: %s[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
             "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
             "data: %s[{\"index\":0,\"delta\":{\"content\":\"hi \xef\xbf\xbd\"},"
             "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n"
             "data: %s[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
             "\"usage\":null}\n\n"
             "data: %s[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,"
             "\"total_tokens\":8}}\n\n"
             "data: [DONE]\n\n", head, head, head, head);
    CHECK_STR(out.p, want);
    server__buf_release(&out);

    /* Completions: "text", no role chunk, no usage field without include_usage. */
    m = meta(OAI_COMPLETIONS, false);
    c.finish = NULL;
    CHECK_EQ(server__sse_chunk(&out, &m, &c, OAI_CHUNK_TEXT, 0, NULL), 0);
    CHECK(strstr(out.p, "\"object\":\"text_completion\"") != NULL);
    CHECK(strstr(out.p, "\"choices\":[{\"index\":0,\"text\":\"hi \xef\xbf\xbd\",\"logprobs\""
                        ":null,\"finish_reason\":null}]}\n\n") != NULL);
    CHECK(strstr(out.p, "usage") == NULL);
    server__buf_release(&out);
    server__buf_release(&c.text);

    /* A NUL in the text (a <0x00> token) is \u0000: the text after it is kept (fuzz_textout). */
    server__buf_add(&c.text, "a\0b\"\0", 5);
    CHECK_EQ(server__sse_chunk(&out, &m, &c, OAI_CHUNK_TEXT, 0, NULL), 0);
    CHECK(strstr(out.p, "\"text\":\"a\\u0000b\\\"\\u0000\",\"logprobs\"") != NULL);
    server__buf_release(&out);
    server__buf_release(&c.text);
}

static void
test_response_bodies(void)
{
    struct choice c[2] = { { 0 }, { 0 } };
    c[1].index = 1;
    server__buf_adds(&c[0].text, " of the");
    c[0].finish = "length";
    c[1].finish = "stop";
    struct oai_usage u = { 5, 4 };
    struct oai_meta m = meta(OAI_COMPLETIONS, false);
    char *s = server__response_json(&m, c, 2, &u, NULL);
    CHECK_STR(s, "{\"id\":\"cmpl-1\",\"object\":\"text_completion\",\"created\":1700000000,"
                 "\"model\":\"kjv\",\"system_fingerprint\":\"" SERVER_FINGERPRINT "\","
                 "\"choices\":[{\"index\":0,\"text\":\" of the\",\"logprobs\":null,"
                 "\"finish_reason\":\"length\"},{\"index\":1,\"text\":\"\",\"logprobs\":null,"
                 "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,"
                 "\"completion_tokens\":4,\"total_tokens\":9}}");
    free(s);
    m = meta(OAI_CHAT, false);
    s = server__response_json(&m, c, 1, &u, NULL);
    CHECK(strstr(s, "\"object\":\"chat.completion\"") != NULL);
    CHECK(strstr(s, "\"message\":{\"role\":\"assistant\",\"content\":\" of the\"}") != NULL);
    free(s);
    server__buf_release(&c[0].text);
}

static void
test_logprobs(void)
{
    struct engine_model *mdl = kjv();
    if (mdl == NULL)
        return;
    const struct tokenizer *tok = engine_model_tokenizer(mdl);
    /* " of" " the" " earth", with a stop on " the": only " of" is reported. */
    static const char *const stop[] = { " the" };
    struct choice c = { 0 };
    struct tok_rec recs[3] = { { { 271, -0.5f, 1, { 271 }, { -0.5f } }, 0 },
                               { { 261, -0.25f, 0, { 0 }, { 0 } }, 3 },
                               { { 624, -1.0f, 0, { 0 }, { 0 } }, 7 } };
    c.toks = recs;
    c.n_toks = 3;
    server__textout_init(&c.tx, stop, 1);
    server__textout_push(&c.tx, " of", 3, &c.text);
    CHECK_EQ(server__textout_push(&c.tx, " the", 4, &c.text), 1);
    c.finish = "stop";
    CHECK_EQ(server__choice_n_released(&c), 1);
    struct oai_usage u = { 5, 2 };
    struct oai_meta m = meta(OAI_CHAT, false);
    m.logprobs = true;
    char *s = server__response_json(&m, &c, 1, &u, tok);
    CHECK(strstr(s, "\"logprobs\":{\"content\":[{\"token\":\" of\",\"bytes\":[32,111,102],"
                    "\"logprob\":-0.5,\"top_logprobs\":[{\"token\":\" of\",\"bytes\":"
                    "[32,111,102],\"logprob\":-0.5}]}],\"refusal\":null}") != NULL);
    free(s);
    m = meta(OAI_COMPLETIONS, false);
    m.logprobs = true;
    m.top_logprobs = 1;
    s = server__response_json(&m, &c, 1, &u, tok);
    CHECK(strstr(s, "\"logprobs\":{\"tokens\":[\" of\"],\"token_logprobs\":[-0.5],"
                    "\"top_logprobs\":[{\" of\":-0.5}],\"text_offset\":[0]}") != NULL);
    free(s);
    server__textout_release(&c.tx);
    server__buf_release(&c.text);
}

int
main(int argc, char **argv)
{
    static const struct check_test tests[] = {
        { "parse_bad_completions", test_parse_bad_completions },
        { "parse_bad_chat", test_parse_bad_chat },
        { "parse_fields", test_parse_fields },
        { "parse_prompt_forms", test_parse_prompt_forms },
        { "parse_chat_parts", test_parse_chat_parts },
        { "select_adapters", test_select_adapters },
        { "parse_bytes", test_parse_bytes },
        { "parse_object", test_parse_object },
        { "embeddings_dimensions", test_embeddings_dimensions },
        { "error_mapping", test_error_mapping },
        { "tokenize_and_context", test_tokenize_and_context },
        { "stop_across_tokens", test_stop_across_tokens },
        { "stop_holdback", test_stop_holdback },
        { "utf8_holdback", test_utf8_holdback },
        { "utf8_checks", test_utf8_checks },
        { "sse_chunks", test_sse_chunks },
        { "response_bodies", test_response_bodies },
        { "logprobs", test_logprobs },
        { NULL, NULL },
    };
    int rc = check_main(tests, argc, argv);
    engine_model_free(kjv());
    return rc;
}
