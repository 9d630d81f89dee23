// SPDX-License-Identifier: Apache-2.0
// 2-bit codes (docs/kv_format.md §2) -> tensor-core operands, one LOP per pair of codes.
//
// A register loaded by ldmatrix from a code row holds, in each 16-bit half, 8 codes: code p at bits [2p, 2p+1]
// ("position" p). Masking position p of both halves yields a pair of 16-bit values whose integer part is
// code * 4^p'. The mma multiplies that by the other operand exactly, so the factor 4^p' (and the fp16 unit
// below) is divided out once per accumulator element instead of once per code (NOTE(k1): this is what lets the
// fast path spend ~1 ALU instruction per two codes; see docs in decodeAttentionKernel.cuh).
//
//   half: the masked bits are an fp16 *subnormal*, code * 4^p' * 2^-24, exact; tensor cores take subnormal
//         inputs at full precision, so no offset has to be removed. p' = p for p <= 4 (mantissa bits 0..9),
//         positions 5..7 come from the word shifted right by 10.
//   bf16: bf16 subnormals would underflow the fp32 products, so the classic magic number is used instead:
//         (bits | 0x4300) is the bf16 value 128 + code * 4^p', and subtracting 128 is exact. p' <= 2
//         (7 mantissa bits); positions 3..5 and 6..7 come from the word shifted by 6 and 12.
#pragma once

#include "logquant/attention/warpMma.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace logquant::kernel::attention
{

template <typename T>
struct CodeOperand;

template <>
struct CodeOperand<half>
{
    //! Value of a masked code c at position p: c * unit(p).
    static constexpr float unit(int32_t p)
    {
        return static_cast<float>(1u << (2 * (p <= 4 ? p : p - 5))) * (1.0f / 16777216.0f);
    }

    //! All 8 positions of a code register as mma operands (pairs of T).
    static __device__ __forceinline__ void expand(uint32_t y, uint32_t (&out)[8])
    {
        uint32_t const y10 = y >> 10;
#pragma unroll
        for (int32_t p = 0; p < 8; ++p)
        {
            out[p] = p <= 4 ? (y & (0x00030003u << (2 * p))) : (y10 & (0x00030003u << (2 * (p - 5))));
        }
    }
};

template <>
struct CodeOperand<__nv_bfloat16>
{
    static constexpr uint32_t kMAGIC = 0x43004300u; //!< bf16 128.0 in both halves

    static constexpr float unit(int32_t p)
    {
        return static_cast<float>(1u << (2 * (p % 3)));
    }

    static __device__ __forceinline__ void expand(uint32_t y, uint32_t (&out)[8])
    {
        uint32_t const shifted[3] = {y, y >> 6, y >> 12};
#pragma unroll
        for (int32_t p = 0; p < 8; ++p)
        {
            uint32_t const bits = shifted[p / 3] & (0x00030003u << (2 * (p % 3)));
            out[p] = subPair<__nv_bfloat16>(bits | kMAGIC, kMAGIC);
        }
    }
};

//! Codes s and 8+s of a 16-code word (one per half) dequantized exactly as the spec does:
//! code * scale + min, one rounding to T (docs/kv_format.md §3.4). For the token-axis key path.
template <typename T>
__device__ __forceinline__ uint32_t dequantPair(uint32_t word, int32_t s, uint32_t scale2, uint32_t min2)
{
    // 1024 + code (fp16) or 128 + code (bf16): the magic number makes the integer the mantissa.
    constexpr uint32_t kMAGIC = std::is_same_v<T, half> ? 0x64006400u : 0x43004300u;
    uint32_t const biased = ((word >> (2 * s)) & 0x00030003u) | kMAGIC;
    return fmaPair<T>(subPair<T>(biased, kMAGIC), scale2, min2);
}

} // namespace logquant::kernel::attention
