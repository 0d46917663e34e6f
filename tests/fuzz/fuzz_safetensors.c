/*
 * fuzz_safetensors.c - the safetensors reader (adapters/safetensors.c) on
 * arbitrary bytes: adapters__st_parse(), then every tensor it returned is
 * looked up by name and converted to f32, as the PEFT loader does.
 *
 * adapters_int.h promises that the tensors are sorted by name, unique, lie
 * inside the data section and tile it exactly, and that each one's byte size
 * is its shape's product times its dtype's size.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../adapters/adapters_int.h"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256] = "";
    struct adapters_st *st = (struct adapters_st *)1;
    int rc = adapters__st_parse(data, size, "fuzz.safetensors", &st, err, sizeof(err));
    if (rc < 0) {
        FUZZ_CHECK((rc == -EBADMSG || rc == -ENOMEM) && st == NULL && fuzz_one_line(err));
        return 0;
    }
    const char *lo = (const char *)data, *hi = lo + size;
    int n = adapters__st_n_tensors(st);
    uint64_t total = 0;
    const char *first = hi, *last = lo;
    for (int i = 0; i < n; i++) {
        const struct adapters_st_tensor *t = adapters__st_tensor(st, i);
        FUZZ_CHECK(t->name != NULL && adapters__st_find(st, t->name) == t);
        FUZZ_CHECK(i == 0 || strcmp(adapters__st_tensor(st, i - 1)->name, t->name) < 0);
        FUZZ_CHECK(t->type == GGUF_T_F32 || t->type == GGUF_T_F16 || t->type == GGUF_T_BF16);
        FUZZ_CHECK(t->n_dims >= 0 && t->n_dims <= ADAPTERS_ST_MAX_DIMS);
        uint64_t elems = 1;
        for (int k = 0; k < t->n_dims; k++) {
            FUZZ_CHECK(t->shape[k] >= 0);
            elems *= (uint64_t)t->shape[k];
        }
        FUZZ_CHECK(t->nbytes == elems * (t->type == GGUF_T_F32 ? 4 : 2));
        FUZZ_CHECK(t->end - t->begin == t->nbytes);
        const char *p = t->data;
        FUZZ_CHECK(p >= lo && p <= hi && t->nbytes <= (size_t)(hi - p));
        total += t->nbytes;
        first = p < first ? p : first;
        last = p + t->nbytes > last ? p + t->nbytes : last;
        float *f = adapters__st_to_f32(t);
        FUZZ_CHECK(f != NULL);
        free(f);
    }
    /* The tensors tile the data section, which ends where the input ends. */
    FUZZ_CHECK(n == 0 || (last == hi && total == (uint64_t)(hi - first)));
    adapters__st_free(st);
    return 0;
}
