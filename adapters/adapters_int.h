/*
 * adapters_int.h - shared inside adapters/ only.
 */
#ifndef LORASERVE_ADAPTERS_INT_H
#define LORASERVE_ADAPTERS_INT_H

#include "adapters.h"
#include "gguf.h"

/* Loaders, by format. Same contract as adapters_load_path. */
int adapters__load_gguf(const struct engine_model *m, const char *path, int max_rank,
                        struct engine_lora **out, struct adapters_info *info, char *err,
                        size_t errlen);
int adapters__load_peft(const struct engine_model *m, const char *dir, int max_rank,
                        struct engine_lora **out, struct adapters_info *info, char *err,
                        size_t errlen);

/* "blk.N.attn_q" style base names -> layer and target; false if not an adaptable weight. */
bool adapters__parse_target(const char *name, size_t len, int *layer,
                            enum engine_lora_target *t);

/* sha256 of buf[0..len) as lowercase hex (65 bytes with the NUL). */
void adapters__sha256_hex(const void *buf, size_t len, char hex[65]);

#endif
