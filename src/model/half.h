/*
 * model/half.h — IEEE binary16 (F16) and bfloat16 (BF16) to and from float32,
 * the dtypes Hugging Face checkpoints are stored in.
 *
 * To float32 is exact for every bit pattern: both formats are subsets of
 * float32 (F16 subnormals become normal floats; infinities stay infinities;
 * NaNs stay NaNs, with their sign and payload). From float32 rounds to
 * nearest, ties to even, as PyTorch's .half() and .bfloat16() do: values
 * beyond the largest finite become infinities, F16 subnormals are produced,
 * and a NaN stays a (quiet) NaN. So to-float32 then back is the identity on
 * every non-NaN pattern, which the round trip of an exported checkpoint
 * relies on.
 */
#ifndef PREFRUN_HALF_H
#define PREFRUN_HALF_H

#include <stdint.h>

float half_f16_to_f32(uint16_t h);
float half_bf16_to_f32(uint16_t h);
uint16_t half_f32_to_f16(float f);
uint16_t half_f32_to_bf16(float f);

/* n values stored little-endian at src (any alignment) into dst: the loops
 * of a checkpoint read, beside the conversions they inline */
void half_f16_load(float *dst, const unsigned char *src, int64_t n);
void half_bf16_load(float *dst, const unsigned char *src, int64_t n);

#endif
