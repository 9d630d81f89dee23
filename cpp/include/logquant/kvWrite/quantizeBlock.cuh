// SPDX-License-Identifier: Apache-2.0
// Sealing one G-token block of one KV head into its page: 2-bit codes, (scale, min) params and dup_mask.
// Arithmetic of docs/kv_format.md §3, bit-exact with logquant_trt/reference/quantize.py.
#pragma once

#include "logquant/kvWrite/common.cuh"

namespace logquant::kernel
{

template <typename T>
struct GroupParams
{
    T scale;
    T min;
    float scale32;
    float min32;
};

//! (scale, min) of a group whose non-excluded min/max are mn, mx (exact values of T).
template <typename T>
__device__ __forceinline__ GroupParams<T> groupParams(float mn, float mx)
{
    // fp32 subtraction and IEEE division, then one rounding to the cache dtype (§3 step 2).
    T const scale = fromFloat<T>(__fdiv_rn(__fsub_rn(mx, mn), static_cast<float>(kLEVELS)));
    return GroupParams<T>{scale, fromFloat<T>(mn), toFloat(scale), mn};
}

//! clamp(rint((x - min) / scale), 0, 3), or 0 when scale == 0 (§3 step 3).
__device__ __forceinline__ uint32_t quantCode(float x, float min32, float scale32)
{
    if (!(scale32 > 0.0F))
    {
        return 0U;
    }
    float const q = rintf(__fdiv_rn(__fsub_rn(x, min32), scale32));
    return static_cast<uint32_t>(fminf(fmaxf(q, 0.0F), static_cast<float>(kLEVELS)));
}

//! (scale, min) adjacent: one 32-bit store (dst is 4-byte aligned).
template <typename T>
__device__ __forceinline__ void storeParams(T* dst, GroupParams<T> const& p)
{
    *reinterpret_cast<uint32_t*>(dst) = bitsOf(p.scale) | (bitsOf(p.min) << 16);
}

//! Per-token groups of C = min(G, D) channels (values; keys on the token axis). Never excludes.
//! src: [G, D] rows. codes: uint8 [G, D/4]. params: [G, D/C, 2]. One thread per 4 channels of a token, so a
//! group is C/4 adjacent lanes and its min/max is a shuffle reduction. Needs blockDim.x % 32 == 0.
template <typename T, int32_t kD, int32_t kG>
__device__ void quantizePerToken(T const* src, uint8_t* codes, T* params)
{
    constexpr int32_t kC = kG < kD ? kG : kD;
    constexpr int32_t kLANES_PER_TOKEN = kD / kCODES_PER_BYTE;
    constexpr int32_t kLANES_PER_GROUP = kC / kCODES_PER_BYTE;
    static_assert(kG * kLANES_PER_TOKEN % kWARP_SIZE == 0, "loop must stay warp-uniform");
    for (int32_t idx = threadIdx.x; idx < kG * kLANES_PER_TOKEN; idx += blockDim.x)
    {
        int32_t const t = idx / kLANES_PER_TOKEN;
        int32_t const q = idx % kLANES_PER_TOKEN;
        uint2 const raw = *reinterpret_cast<uint2 const*>(src + t * kD + kCODES_PER_BYTE * q);
        float const x[4] = {unpackFloat<T>(raw.x, 0), unpackFloat<T>(raw.x, 1), unpackFloat<T>(raw.y, 0),
            unpackFloat<T>(raw.y, 1)};
        float mn = fminf(fminf(x[0], x[1]), fminf(x[2], x[3]));
        float mx = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
#pragma unroll
        for (int32_t offset = kLANES_PER_GROUP / 2; offset > 0; offset /= 2)
        {
            mn = fminf(mn, __shfl_xor_sync(kFULL_WARP, mn, offset));
            mx = fmaxf(mx, __shfl_xor_sync(kFULL_WARP, mx, offset));
        }
        GroupParams<T> const p = groupParams<T>(mn, mx);
        uint32_t byte = 0;
#pragma unroll
        for (int32_t i = 0; i < 4; ++i)
        {
            byte |= quantCode(x[i], p.min32, p.scale32) << (kBITS * i);
        }
        codes[t * (kD / kCODES_PER_BYTE) + q] = static_cast<uint8_t>(byte);
        if (q % kLANES_PER_GROUP == 0)
        {
            storeParams(params + (t * (kD / kC) + q / kLANES_PER_GROUP) * kPARAMS_PER_GROUP, p);
        }
    }
}

//! Per-channel key groups over the block's G tokens, min/max over slots not in `excluded` (bit i = token i).
//! src: [G, D] rows. codes: uint8 [D, G/4]. params: [D, 2]. tile: shared [G * D]. One thread per channel.
template <typename T, int32_t kD, int32_t kG>
__device__ void quantizeKeyChannels(T const* src, uint32_t const* excluded, uint8_t* codes, T* params, T* tile)
{
    constexpr int32_t kVEC = kBYTES_PER_VEC / static_cast<int32_t>(sizeof(T));
    for (int32_t i = threadIdx.x; i < kG * kD / kVEC; i += blockDim.x)
    {
        reinterpret_cast<uint4*>(tile)[i] = reinterpret_cast<uint4 const*>(src)[i];
    }
    __syncthreads();
    for (int32_t d = threadIdx.x; d < kD; d += blockDim.x)
    {
        float mn = __int_as_float(0x7f800000);  // +inf
        float mx = __int_as_float(0xff800000);  // -inf
#pragma unroll 8
        for (int32_t i = 0; i < kG; ++i)
        {
            if (!((excluded[i / kMASK_WORD_BITS] >> (i % kMASK_WORD_BITS)) & 1U))
            {
                float const x = toFloat(tile[i * kD + d]);
                mn = fminf(mn, x);
                mx = fmaxf(mx, x);
            }
        }
        if (mn > mx)
        {
            mn = mx = 0.0F; // every slot excluded
        }
        GroupParams<T> const p = groupParams<T>(mn, mx);
        auto* row = reinterpret_cast<uint32_t*>(codes + d * (kG / kCODES_PER_BYTE));
#pragma unroll
        for (int32_t w = 0; w < kG / kCODES_PER_WORD; ++w)
        {
            uint32_t word = 0;
#pragma unroll
            for (int32_t i = 0; i < kCODES_PER_WORD; ++i)
            {
                float const x = toFloat(tile[(w * kCODES_PER_WORD + i) * kD + d]);
                word |= quantCode(x, p.min32, p.scale32) << (kBITS * i);
            }
            row[w] = word;
        }
        storeParams(params + d * kPARAMS_PER_GROUP, p);
    }
    __syncthreads(); // the caller may reuse the tile
}

//! Bits of block [start, start + G) of one head: `retained` = slots with a readable copy in the retained buffer,
//! `excluded` = pinned slots and slots in the pool or extra region (left out of per-channel key min/max).
//! Reads the head's retained_pos, so the regions must be final. Shared outputs, kG/32 words each.
template <int32_t kG>
__device__ void blockMasks(int32_t const* retainedPos, RetainedRegions const& regions, PolicyParams const& policy,
    int32_t start, uint32_t* retained, uint32_t* excluded)
{
    for (int32_t w = threadIdx.x; w < kG / kMASK_WORD_BITS; w += blockDim.x)
    {
        uint32_t pinned = 0;
        for (int32_t i = 0; i < kMASK_WORD_BITS; ++i)
        {
            pinned |= static_cast<uint32_t>(isPinned(policy, start + w * kMASK_WORD_BITS + i)) << i;
        }
        excluded[w] = pinned;
        retained[w] = 0;
    }
    __syncthreads();
    for (int32_t s = threadIdx.x; s < regions.end; s += blockDim.x)
    {
        int32_t const i = slotPosition(retainedPos[s]) - start;
        if (i >= 0 && i < kG) // empty slots decode to -1 < start
        {
            uint32_t const bit = 1U << (i % kMASK_WORD_BITS);
            atomicOr(&retained[i / kMASK_WORD_BITS], bit);
            if (s >= regions.pool)
            {
                atomicOr(&excluded[i / kMASK_WORD_BITS], bit);
            }
        }
    }
    __syncthreads();
}

//! Writes page `page`, head h: codes and params of keys and values, and the dup_mask words.
//! srcK, srcV: the block's G rows of D (contiguous). tile: shared [G * D], used on the channel axis only.
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
__device__ void sealBlock(KvCacheView const& view, int32_t page, int32_t h, T const* srcK, T const* srcV,
    uint32_t const* retained, uint32_t const* excluded, T* tile)
{
    constexpr int32_t kC = kG < kD ? kG : kD;
    int64_t const ph = static_cast<int64_t>(page) * view.geometry.numKvHeads + h;
    if constexpr (kAXIS == KeyAxis::kCHANNEL)
    {
        quantizeKeyChannels<T, kD, kG>(srcK, excluded, view.kCodes + ph * kD * (kG / kCODES_PER_BYTE),
            static_cast<T*>(view.kParams) + ph * kD * kPARAMS_PER_GROUP, tile);
    }
    else
    {
        quantizePerToken<T, kD, kG>(srcK, view.kCodes + ph * kG * (kD / kCODES_PER_BYTE),
            static_cast<T*>(view.kParams) + ph * kG * (kD / kC) * kPARAMS_PER_GROUP);
    }
    quantizePerToken<T, kD, kG>(srcV, view.vCodes + ph * kG * (kD / kCODES_PER_BYTE),
        static_cast<T*>(view.vParams) + ph * kG * (kD / kC) * kPARAMS_PER_GROUP);
    for (int32_t w = threadIdx.x; w < kG / kMASK_WORD_BITS; w += blockDim.x)
    {
        view.dupMask[ph * (kG / kMASK_WORD_BITS) + w] = static_cast<int32_t>(retained[w]);
    }
}

} // namespace logquant::kernel
