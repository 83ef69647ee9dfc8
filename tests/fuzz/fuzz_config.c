/*
 * fuzz_config — a `prefrun train` YAML config from memory
 * (config_load_yaml_text), then config_finalize, and for a config that
 * passes both, the round trip the checkpoint relies on: config_to_yaml read
 * back gives the same configuration (the same YAML text again).
 *
 * Bar: no crash, no sanitizer report, nothing left allocated; the round
 * trip holds (a resumed run reads its config.yaml this way).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"
#include "train/config.h"

static Config cfg, back; /* a few KiB each: not on the stack */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    config_defaults(&cfg);
    if (config_load_yaml_text(&cfg, (const char *)data, size, "fuzz.yaml", err, sizeof err) != 0 ||
        config_finalize(&cfg, err, sizeof err) != 0)
        return 0;
    char *y = config_to_yaml(&cfg);
    if (!y)
        abort();
    config_defaults(&back);
    if (config_load_yaml_text(&back, y, strlen(y), "saved.yaml", err, sizeof err) != 0 ||
        config_finalize(&back, err, sizeof err) != 0)
        fuzz_fail("a saved config does not load back: %s\n%s", err, y);
    char *y2 = config_to_yaml(&back);
    if (!y2)
        abort();
    if (strcmp(y, y2) != 0)
        fuzz_fail("a saved config reads back different:\n%s\n---\n%s", y, y2);
    free(y2);
    free(y);
    return 0;
}
