/*
 * model/half.c — F16 and BF16 conversions (half.h), on the bit patterns:
 * nothing here depends on the FPU's rounding mode or on libm.
 */
#include "model/half.h"

#include <string.h>

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float half_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) /* infinity or NaN: the payload moves up with the mantissa */
        return float_of(sign | 0x7f800000u | man << 13);
    if (exp != 0) /* normal: rebias 15 -> 127 */
        return float_of(sign | (exp + 112) << 23 | man << 13);
    /* zero or subnormal, man * 2^-24: exact in float32 (man < 2^10) */
    float v = (float)man * 0x1p-24f;
    return sign ? -v : v;
}

float half_bf16_to_f32(uint16_t h) { return float_of((uint32_t)h << 16); }

/* x >> shift rounded to nearest, ties to even (shift 1..31) */
static uint32_t shift_round(uint32_t x, int shift)
{
    uint32_t q = x >> shift, rest = x & ((1u << shift) - 1), half = 1u << (shift - 1);
    return q + (rest > half || (rest == half && (q & 1u)));
}

uint16_t half_f32_to_f16(float f)
{
    uint32_t u = bits_of(f), ax = u & 0x7fffffffu;
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    if (ax > 0x7f800000u) /* NaN: keep the top payload bits, set the quiet bit */
        return sign | 0x7e00u | (uint16_t)((ax >> 13) & 0x3ffu);
    if (ax >= 0x477ff000u) /* 65520 and up rounds past 65504: infinity */
        return sign | 0x7c00u;
    if (ax >= 0x38800000u) /* normal in F16 (>= 2^-14); a carry may bump the exponent */
        return sign | (uint16_t)shift_round(ax - (112u << 23), 13);
    if (ax < 0x33000000u) /* below 2^-25: rounds to zero */
        return sign;
    /* subnormal: the value in units of 2^-24, rounded; 0x400 is the smallest normal */
    uint32_t man = (ax & 0x7fffffu) | 0x800000u;
    int shift = 126 - (int)(ax >> 23);
    return sign | (uint16_t)shift_round(man, shift);
}

uint16_t half_f32_to_bf16(float f)
{
    uint32_t u = bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: truncate, but stay a NaN */
        return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

void half_f16_load(float *dst, const unsigned char *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = half_f16_to_f32(h);
    }
}

void half_bf16_load(float *dst, const unsigned char *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        dst[i] = half_bf16_to_f32(h);
    }
}
