/*
 * routes.c - which route a method and URL name: the one table the server
 * (http.c) and the API fuzzer (tests/fuzz/fuzz_api.c) both route by.
 */
#include <stdio.h>
#include <string.h>

#include "server_int.h"

static const struct {
    const char *method;
    const char *path;           /* a trailing '*' matches any rest */
    enum route route;
} routes[] = {
    { "GET", "/health", ROUTE_HEALTH },
    { "GET", "/metrics", ROUTE_METRICS },
    { "POST", "/drain", ROUTE_DRAIN },
    { "DELETE", "/drain", ROUTE_DRAIN },
    { "GET", "/v1/models", ROUTE_MODELS },
    { "GET", "/v1/models/*", ROUTE_MODEL },
    { "POST", "/v1/completions", ROUTE_COMPLETIONS },
    { "POST", "/v1/chat/completions", ROUTE_CHAT },
    { "GET", "/v1/adapters", ROUTE_ADAPTERS },
    { "POST", "/v1/adapters", ROUTE_ADAPTER_LOAD },
    { "GET", "/v1/adapters/*", ROUTE_ADAPTER },
    { "DELETE", "/v1/adapters/*", ROUTE_ADAPTER_DELETE },
    { "POST", "/v1/load_lora_adapter", ROUTE_VLLM_LOAD },
    { "POST", "/v1/unload_lora_adapter", ROUTE_VLLM_UNLOAD },
    { "POST", "/v1/embeddings", ROUTE_EMBEDDINGS },
    { "GET", "/v1/vector_stores", ROUTE_VECTOR_STORES },
    { "POST", "/v1/vector_stores", ROUTE_VECTOR_STORES },
    { "GET", "/v1/vector_stores/*", ROUTE_VECTOR_STORES },
    { "POST", "/v1/vector_stores/*", ROUTE_VECTOR_STORES },
    { "DELETE", "/v1/vector_stores/*", ROUTE_VECTOR_STORES },
    { "GET", "/v1/tenants", ROUTE_TENANTS },
    { "POST", "/v1/tenants", ROUTE_TENANTS },
    { "GET", "/v1/tenants/*", ROUTE_TENANTS },
    { "POST", "/v1/tenants/*", ROUTE_TENANTS },
    { "PATCH", "/v1/tenants/*", ROUTE_TENANTS },
    { "DELETE", "/v1/tenants/*", ROUTE_TENANTS },
    { "GET", "/v1/experiments", ROUTE_EXPERIMENTS },
    { "POST", "/v1/experiments", ROUTE_EXPERIMENTS },
    { "GET", "/v1/experiments/*", ROUTE_EXPERIMENTS },
    { "PATCH", "/v1/experiments/*", ROUTE_EXPERIMENTS },
    { "DELETE", "/v1/experiments/*", ROUTE_EXPERIMENTS },
    { "POST", "/v1/feedback", ROUTE_EXPERIMENTS },
};

static bool
path_matches(const char *pattern, const char *url)
{
    size_t n = strlen(pattern);
    if (pattern[n - 1] == '*')
        return strncmp(pattern, url, n - 1) == 0 && url[n - 1] != '\0';
    return strcmp(pattern, url) == 0;
}

enum route
server__route(const char *method, const char *url, char *allow, size_t allow_size)
{
    if (strcmp(method, "HEAD") == 0)
        method = "GET";
    allow[0] = '\0';
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (!path_matches(routes[i].path, url))
            continue;
        if (strcmp(routes[i].method, method) == 0)
            return routes[i].route;
        size_t n = strlen(allow);
        snprintf(allow + n, allow_size - n, "%s%s", n ? ", " : "", routes[i].method);
    }
    return ROUTE_NONE;
}
