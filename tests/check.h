/*
 * check.h - the few macros every test program uses.
 *
 * CHECK(c) and CHECK_EQ(a, b) print file:line, the expression and the values
 * on failure and mark the current test failed; the test goes on. A program
 * lists its tests in a table and calls check_main(), which runs them all (or
 * only those named on the command line) and ends with "N passed, N failed".
 */
#ifndef LORASERVE_CHECK_H
#define LORASERVE_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failed_ = 0;

#define CHECK(c) do { \
        if (!(c)) { \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c); \
            check_failed_ = 1; \
        } \
    } while (0)

#define CHECK_EQ(a, b) do { \
        long long a_ = (long long)(a), b_ = (long long)(b); \
        if (a_ != b_) { \
            fprintf(stderr, "%s:%d: CHECK_EQ(%s, %s) failed: %lld != %lld\n", \
                    __FILE__, __LINE__, #a, #b, a_, b_); \
            check_failed_ = 1; \
        } \
    } while (0)

#define CHECK_STR(a, b) do { \
        const char *a_ = (a), *b_ = (b); \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) { \
            fprintf(stderr, "%s:%d: CHECK_STR(%s, %s) failed: \"%s\" != \"%s\"\n", \
                    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
            check_failed_ = 1; \
        } \
    } while (0)

struct check_test {
    const char *name;
    void (*fn)(void);
};

static int
check_main(const struct check_test *tests, int argc, char **argv)
{
    int passed = 0, failed = 0;
    for (const struct check_test *t = tests; t->name != NULL; t++) {
        int selected = argc < 2;
        for (int i = 1; i < argc; i++)
            selected |= strcmp(argv[i], t->name) == 0;
        if (!selected)
            continue;
        check_failed_ = 0;
        t->fn();
        printf("%s %s\n", check_failed_ ? "FAIL" : "ok  ", t->name);
        fflush(stdout);
        check_failed_ ? failed++ : passed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}

#endif
