/*
 * testlib.h — a minimal TAP test harness for prefrun's C tests.
 *
 * Each test is a function; RUN(fn) runs it and prints "ok N - fn" or
 * "not ok N - fn" (TAP), with the failed checks as "#" lines. A test file's
 * main ends with `return tl_done();`, which prints the plan and returns 1 if
 * any case failed. tests/run.sh sums the cases of every test executable.
 */
#ifndef PREFRUN_TESTLIB_H
#define PREFRUN_TESTLIB_H

#include <math.h>
#include <stdio.h>

static int tl_cases, tl_failed_cases, tl_case_failed;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("#   %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);                    \
            tl_case_failed = 1;                                                                    \
        }                                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            printf("#   %s:%d: ", __FILE__, __LINE__);                                             \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            tl_case_failed = 1;                                                                    \
        }                                                                                          \
    } while (0)

/* |got - want| <= tol, with NaN never equal; names both values on failure */
#define CHECK_NEAR(got, want, tol)                                                                 \
    do {                                                                                           \
        double tl_g = (double)(got), tl_w = (double)(want), tl_t = (double)(tol);                  \
        if (!(fabs(tl_g - tl_w) <= tl_t)) {                                                        \
            printf("#   %s:%d: %s = %.9g, expected %s = %.9g (tol %.3g)\n", __FILE__, __LINE__,    \
                   #got, tl_g, #want, tl_w, tl_t);                                                 \
            tl_case_failed = 1;                                                                    \
        }                                                                                          \
    } while (0)

static inline void tl_run(const char *name, void (*fn)(void))
{
    tl_case_failed = 0;
    fn();
    tl_cases++;
    if (tl_case_failed)
        tl_failed_cases++;
    printf("%s %d - %s\n", tl_case_failed ? "not ok" : "ok", tl_cases, name);
    fflush(stdout);
}

#define RUN(fn) tl_run(#fn, fn)

static inline int tl_done(void)
{
    printf("1..%d\n", tl_cases);
    return tl_failed_cases ? 1 : 0;
}

#endif
