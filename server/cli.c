/*
 * cli.c - flag parsing for the subcommands: "--name value", "--name=value",
 * short aliases, and boolean switches. Numbers are checked in full
 * ("12abc" is an error, not 12).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

int
cli_parse_bytes(const char *s, uint64_t *out)
{
    static const char units[] = "KMGT";
    char *end = NULL;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno != 0 || end == s || s[0] == '-' || s[0] == '+')
        return -EINVAL;
    int shift = 0;
    const char *u = *end ? strchr(units, toupper((unsigned char)*end)) : NULL;
    if (u != NULL) {
        shift = 10 * (int)(u - units + 1);
        end++;
        if (strcmp(end, "B") == 0 || strcmp(end, "b") == 0 || strcmp(end, "iB") == 0)
            end += strlen(end);
    }
    if (*end != '\0' || (shift > 0 && x > (UINT64_MAX >> shift)))
        return -EINVAL;
    *out = (uint64_t)x << shift;
    return 0;
}

static int
set_value(const char *cmd, const struct cli_flag *f, const char *v)
{
    char *end = NULL;
    errno = 0;
    switch (f->kind) {
    case CLI_STR:
        *(const char **)f->dst = v;
        return 0;
    case CLI_INT: {
        long x = strtol(v, &end, 10);
        if (errno == 0 && end != v && *end == '\0' && x >= -2147483647L && x <= 2147483647L) {
            *(int *)f->dst = (int)x;
            return 0;
        }
        break;
    }
    case CLI_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno == 0 && end != v && *end == '\0' && v[0] != '-') {
            *(uint64_t *)f->dst = x;
            return 0;
        }
        break;
    }
    case CLI_FLOAT: {
        float x = strtof(v, &end);
        if (errno == 0 && end != v && *end == '\0') {
            *(float *)f->dst = x;
            return 0;
        }
        break;
    }
    case CLI_BYTES:
        if (cli_parse_bytes(v, f->dst) == 0)
            return 0;
        break;
    case CLI_LIST: {
        struct cli_list *l = f->dst;
        if (l->n < CLI_LIST_MAX) {
            l->v[l->n++] = v;
            return 0;
        }
        fprintf(stderr, "loraserve %s: %s given more than %d times\n", cmd, f->name,
                CLI_LIST_MAX);
        return -1;
    }
    case CLI_BOOL:
        break;
    }
    fprintf(stderr, "loraserve %s: invalid value '%s' for %s\n", cmd, v, f->name);
    return -1;
}

static const struct cli_flag *
lookup(const struct cli_flag *flags, const char *arg, size_t len)
{
    for (const struct cli_flag *f = flags; f->name != NULL; f++) {
        if (strlen(f->name) == len && strncmp(f->name, arg, len) == 0)
            return f;
        if (f->alias != NULL && strlen(f->alias) == len && strncmp(f->alias, arg, len) == 0)
            return f;
    }
    return NULL;
}

int
cli_parse(const char *cmd, int argc, char **argv, const struct cli_flag *flags,
          const char **pos, int max_pos, int *n_pos)
{
    *n_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0') {
            if (*n_pos >= max_pos) {
                fprintf(stderr, "loraserve %s: unexpected argument '%s'\n", cmd, a);
                return -1;
            }
            pos[(*n_pos)++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        const struct cli_flag *f = lookup(flags, a, eq ? (size_t)(eq - a) : strlen(a));
        if (f == NULL) {
            fprintf(stderr, "loraserve %s: unknown option '%s' (see --help)\n", cmd, a);
            return -1;
        }
        if (f->kind == CLI_BOOL) {
            *(bool *)f->dst = true;
            continue;
        }
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (v == NULL) {
            fprintf(stderr, "loraserve %s: option %s needs a value\n", cmd, f->name);
            return -1;
        }
        if (set_value(cmd, f, v) < 0)
            return -1;
    }
    return 0;
}

void
cli_usage(const char *cmd, const char *synopsis, const struct cli_flag *flags)
{
    printf("usage: loraserve %s %s\n\noptions:\n", cmd, synopsis);
    for (const struct cli_flag *f = flags; f->name != NULL; f++) {
        char names[64];
        snprintf(names, sizeof(names), "%s%s%s", f->alias ? f->alias : "", f->alias ? ", " : "",
                 f->name);
        printf("  %-24s %s\n", names, f->help);
    }
}

int
cli_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > 256 ? 256 : (int)n);
}
