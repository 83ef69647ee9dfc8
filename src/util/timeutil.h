/*
 * util/timeutil.h — the one monotonic clock reading every layer uses for
 * durations, deadlines and rates (header-only, so the core, the Lua layer
 * and the app can all use it without a link dependency).
 *
 *     double t0 = timeutil_now();
 *     ...
 *     double seconds = timeutil_now() - t0;
 *
 * CLOCK_MONOTONIC, not the wall clock: a clock step (NTP, a suspended
 * laptop) must not make a duration negative or fire a deadline early.
 */
#ifndef PREFRUN_TIMEUTIL_H
#define PREFRUN_TIMEUTIL_H

#include <time.h>

/* seconds since an arbitrary fixed point */
static inline double timeutil_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
