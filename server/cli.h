/*
 * cli.h - the command-line subcommands of the loraserve binary (internal).
 *
 * Each command takes argc/argv after its name and returns the process exit
 * status: 0 on success, 1 on failure (one line on stderr), 2 on bad usage.
 */
#ifndef LORASERVE_SERVER_CLI_H
#define LORASERVE_SERVER_CLI_H

#include <stdbool.h>
#include <stdint.h>

int cli_generate(int argc, char **argv);
int cli_info(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_detokenize(int argc, char **argv);
int cli_quantize(int argc, char **argv);
int cli_mkmodel(int argc, char **argv);
int cli_mkadapter(int argc, char **argv);

/* ---- Flag parsing shared by the commands ---- */

/*
 * CLI_BYTES: a byte count with an optional K, M, G or T suffix (powers of
 * 1024; "KB" and "KiB" mean the same). CLI_LIST: a flag that may be repeated;
 * each value is appended to a struct cli_list.
 */
enum cli_kind { CLI_STR, CLI_INT, CLI_FLOAT, CLI_U64, CLI_BOOL, CLI_BYTES, CLI_LIST };

#define CLI_LIST_MAX 256

struct cli_list {
    const char *v[CLI_LIST_MAX];    /* borrowed from argv */
    int n;
};

struct cli_flag {
    const char *name;       /* "--model"; */
    const char *alias;      /* "-m" or NULL */
    enum cli_kind kind;
    void *dst;              /* const char **, int *, float *, uint64_t *, bool *, cli_list * */
    const char *help;
};

/*
 * Parses argv against flags; positional arguments go to pos[0..*n_pos)
 * (at most max_pos). Returns 0, or prints "loraserve CMD: ..." and returns -1.
 */
int cli_parse(const char *cmd, int argc, char **argv, const struct cli_flag *flags,
              const char **pos, int max_pos, int *n_pos);
/* "512M" -> 536870912. 0, or -EINVAL for anything but digits and one known suffix. */
int cli_parse_bytes(const char *s, uint64_t *out);
void cli_usage(const char *cmd, const char *synopsis, const struct cli_flag *flags);
int cli_default_threads(void);

#endif
