/*
 * fuzz_model_file — a model file (a safetensors file with the model shape in
 * its metadata) through model_file_config and model_file_load, with a small
 * fallback shape for files that carry none.
 *
 * Bar: no crash, no sanitizer report, nothing left allocated, and no model
 * allocated that the file cannot fill (a metadata shape of a billion
 * weights in a small file is refused before gpt_new; libFuzzer's
 * -malloc_limit_mb in run.sh catches one that is not).
 */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "model/model.h"
#include "model/model_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[1024];
    const char *path = fuzz_write_file("model.safetensors", data, size);
    GptConfig g;
    (void)model_file_config(path, &g, err, sizeof err);
    static const GptConfig fallback = {
        .vocab = 8, .context = 4, .width = 4, .layers = 1, .heads = 1};
    Gpt *m = NULL;
    if (model_file_load(path, &fallback, &m, err, sizeof err) == 0)
        gpt_free(m);
    return 0;
}
