/*
 * main.c - the loraserve binary: dispatches to a subcommand.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "server.h"

#define LORASERVE_VERSION "0.1.0"

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} commands[] = {
    { "serve", server_main, "serve the model over an OpenAI-compatible HTTP API" },
    { "generate", cli_generate, "generate text from a prompt (streams to stdout)" },
    { "info", cli_info, "describe a GGUF file: architecture, sizes, tensor types" },
    { "tokenize", cli_tokenize, "text on stdin -> token ids" },
    { "detokenize", cli_detokenize, "token ids on stdin -> text" },
    { "quantize", cli_quantize, "convert a model's weights to f16, q8_0, q4_0 or q4_k_m" },
    { "mkmodel", cli_mkmodel, "write a synthetic LLaMA model for benchmarks" },
    { "mkadapter", cli_mkadapter, "write a GGUF-LoRA adapter with seeded random weights" },
};

static void
usage(FILE *f)
{
    fprintf(f, "usage: loraserve COMMAND [options]   (loraserve COMMAND --help for more)\n"
               "       loraserve --model M.gguf [options]   (short for loraserve serve ...)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
}

int
main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("loraserve %s\n", LORASERVE_VERSION);
        return 0;
    }
    if (strncmp(argv[1], "--model", 7) == 0 || strcmp(argv[1], "-m") == 0)
        return server_main(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 2, argv + 2);
    fprintf(stderr, "loraserve: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
