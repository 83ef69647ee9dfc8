/*
 * fuzz_discover — a discover.yaml (discover_load_yaml, from a file), then
 * discover_finalize, and for options that pass both, the round trip
 * `prefrun discover` relies on when it resumes: discover_to_yaml read back
 * gives the same options (the same YAML text again).
 *
 * Bar: no crash, no sanitizer report, nothing left allocated; the round
 * trip holds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "discover/discover.h"
#include "fuzz_common.h"

static DiscoverOptions opt, back; /* large (a Config inside): not on the stack */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    const char *path = fuzz_write_file("discover.yaml", data, size);
    discover_defaults(&opt);
    if (discover_load_yaml(&opt, path, err, sizeof err) != 0)
        return 0;
    if (!opt.out_dir[0])
        snprintf(opt.out_dir, sizeof opt.out_dir, "runs/fuzz");
    if (discover_finalize(&opt, err, sizeof err) != 0)
        return 0;
    char *y = discover_to_yaml(&opt);
    if (!y)
        abort();
    const char *saved = fuzz_write_file("saved.yaml", (const uint8_t *)y, strlen(y));
    discover_defaults(&back);
    if (discover_load_yaml(&back, saved, err, sizeof err) != 0)
        fuzz_fail("saved discover options do not load back: %s\n%s", err, y);
    if (!back.out_dir[0])
        snprintf(back.out_dir, sizeof back.out_dir, "%s", opt.out_dir);
    if (discover_finalize(&back, err, sizeof err) != 0)
        fuzz_fail("saved discover options do not finalize: %s\n%s", err, y);
    char *y2 = discover_to_yaml(&back);
    if (!y2)
        abort();
    if (strcmp(y, y2) != 0)
        fuzz_fail("saved discover options read back different:\n%s\n---\n%s", y, y2);
    free(y2);
    free(y);
    return 0;
}
