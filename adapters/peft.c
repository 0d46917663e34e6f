/*
 * peft.c - Hugging Face PEFT adapter directories (being written).
 */
#include <errno.h>
#include <stdio.h>

#include "adapters_int.h"

int
adapters__load_peft(const struct engine_model *m, const char *dir, int max_rank,
                    struct engine_lora **out, struct adapters_info *info, char *err,
                    size_t errlen)
{
    (void)m, (void)max_rank, (void)out, (void)info;
    snprintf(err, errlen, "%s: PEFT directories are not supported yet", dir);
    return -ENOTSUP;
}
