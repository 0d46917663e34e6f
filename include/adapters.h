/*
 * adapters.h - LoRA adapters: loading them from the files users have, and
 * (registry) naming, versioning and sharing them while requests run.
 *
 * Loading turns a llama.cpp GGUF-LoRA file or a Hugging Face PEFT directory
 * (adapter_config.json + adapter_model.safetensors) into an engine_lora,
 * checking every shape, name and value against the base model first: an
 * adapter that does not fit is refused with one line saying why, never served
 * as the base model. Loading reads files and may take a while: call it off
 * the loop and scheduler threads.
 */
#ifndef LORASERVE_ADAPTERS_H
#define LORASERVE_ADAPTERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

/* What a loaded adapter is, as the registry and /v1/adapters show it. */
struct adapters_info {
    char format[8];         /* "gguf" or "peft" */
    int rank;               /* the largest rank of any projection */
    float alpha;
    bool rslora;
    unsigned targets;       /* bit t set: engine_lora_target t is adapted somewhere */
    char sha256[65];        /* of the file(s), lowercase hex */
    uint64_t file_bytes;
};

/*
 * Loads the adapter at path for model m: a directory is read as PEFT, a file
 * as GGUF-LoRA. Ranks above max_rank are refused. Returns 0 with the caller
 * owning *out (release with engine_lora_unref) and *info filled, or a negative
 * errno (-ENOENT missing, -EINVAL does not fit, -EBADMSG corrupt, -ENOMEM)
 * with one line "PATH: what is wrong" in err.
 */
int adapters_load_path(const struct engine_model *m, const char *path, int max_rank,
                       struct engine_lora **out, struct adapters_info *info, char *err,
                       size_t errlen);

#endif
