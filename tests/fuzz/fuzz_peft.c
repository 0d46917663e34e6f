/*
 * fuzz_peft.c - a Hugging Face PEFT adapter on arbitrary bytes: the input is
 * adapter_config.json, a NUL byte, then adapter_model.safetensors (no NUL: the
 * config alone, with empty weights). adapters__load_peft_bytes() runs what
 * adapters__load_peft runs once it has mapped the two files: the config's
 * checks (unsupported options, r, lora_alpha, target_modules as a list,
 * "all-linear" or a regular expression, rank_pattern and alpha_pattern),
 * then each weight's name, partner, shapes and scale against the kjv-tiny
 * base, and the adapter is built.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../adapters/adapters_int.h"
#include "fuzz.h"

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
    const uint8_t *nul = memchr(data, '\0', size);
    size_t cfg_len = nul ? (size_t)(nul - data) : size;
    size_t st_len = nul ? size - cfg_len - 1 : 0;
    /* Separate exact-size copies, so a read past either end is caught. */
    char *cfg = fuzz_dup(data, cfg_len), *st = fuzz_dup(data + size - st_len, st_len);
    char err[256] = "";
    struct engine_lora *l = (struct engine_lora *)1;
    struct adapters_info info;
    int rc = adapters__load_peft_bytes(fuzz_model(), "fuzz", cfg, cfg_len, st, st_len, 64, &l,
                                       &info, err, sizeof(err));
    if (rc < 0) {
        FUZZ_CHECK(l == NULL && fuzz_one_line(err));
        FUZZ_CHECK(rc == -EINVAL || rc == -EBADMSG || rc == -ENOMEM);
    } else {
        FUZZ_CHECK(l != NULL && info.rank >= 1 && info.rank <= 64 && info.targets != 0);
        FUZZ_CHECK(strcmp(info.format, "peft") == 0 && info.file_bytes == cfg_len + st_len);
        engine_lora_unref(l);
    }
    free(cfg);
    free(st);
    return 0;
}
