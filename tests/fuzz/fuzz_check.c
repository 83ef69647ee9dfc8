/*
 * fuzz_check — a loss script through the checker (`prefrun check`): every
 * check (schema, shapes, numerics, signal) and the shape summary, then the
 * report as JSON and as text.
 *
 * Bar: any text gets a report; no crash, no sanitizer report, nothing left
 * allocated; the JSON report is never NULL (every message the checker makes
 * from untrusted text must still encode). Limits: FUZZ_LOSS_LIMITS.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "lua/check.h"

static FILE *devnull;
static CheckReport rep; /* ~25 KiB: not on the stack */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!devnull && !(devnull = fopen("/dev/null", "w")))
        abort();
    const char *path = fuzz_write_file("check.lua", data, size);
    CheckOptions opt = {.limits = FUZZ_LOSS_LIMITS, .seed = 7};
    check_run(path, &opt, &rep);
    char *json = check_report_json(&rep);
    if (!json)
        fuzz_fail("check_report_json gave NULL (ok=%d, %d diagnostics)", rep.ok, rep.n_diags);
    free(json);
    check_print_text(devnull, &rep);
    return 0;
}
