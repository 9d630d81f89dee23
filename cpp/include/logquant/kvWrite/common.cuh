// SPDX-License-Identifier: Apache-2.0
// Device helpers shared by the write-path kernels: dtype conversion, index math of docs/kv_format.md §4,
// and the retention rules of §5 that depend only on positions and lengths.
#pragma once

#include "logquant/kvCacheView.h"
#include "logquant/kvFormat.h"
#include "logquant/policyParams.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace logquant::kernel
{

constexpr int32_t kWARP_SIZE = 32;
constexpr uint32_t kFULL_WARP = 0xffffffffu;
constexpr int32_t kNO_POSITION = 0x7fffffff; //!< orders after every position
constexpr int32_t kBYTES_PER_VEC = 16;        //!< row copies move uint4

template <typename T>
__device__ __forceinline__ float toFloat(T x);
template <>
__device__ __forceinline__ float toFloat<half>(half x)
{
    return __half2float(x);
}
template <>
__device__ __forceinline__ float toFloat<__nv_bfloat16>(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

//! Round to nearest even, once: the only rounding §3 allows when storing a scale.
template <typename T>
__device__ __forceinline__ T fromFloat(float x);
template <>
__device__ __forceinline__ half fromFloat<half>(float x)
{
    return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

template <typename T>
__device__ __forceinline__ uint32_t bitsOf(T x);
template <>
__device__ __forceinline__ uint32_t bitsOf<half>(half x)
{
    return __half_as_ushort(x);
}
template <>
__device__ __forceinline__ uint32_t bitsOf<__nv_bfloat16>(__nv_bfloat16 x)
{
    return __bfloat16_as_ushort(x);
}

//! Value of the 16-bit half `index` (0 = low) of a little-endian word.
template <typename T>
__device__ __forceinline__ float unpackFloat(uint32_t word, int32_t index);
template <>
__device__ __forceinline__ float unpackFloat<half>(uint32_t word, int32_t index)
{
    return __half2float(__ushort_as_half(static_cast<unsigned short>(word >> (16 * index))));
}
template <>
__device__ __forceinline__ float unpackFloat<__nv_bfloat16>(uint32_t word, int32_t index)
{
    return __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(word >> (16 * index))));
}

//! The position held by a retained slot: p >= 0 readable, -p-2 shadowed, -1 empty (docs/kv_format.md §4.4).
__device__ __forceinline__ int32_t slotPosition(int32_t raw)
{
    return raw >= kEMPTY_SLOT ? raw : -raw - 2;
}

__device__ __forceinline__ int32_t shadowedSlot(int32_t position)
{
    return -position - 2;
}

//! Pinned positions: kept in full precision forever and left out of their block's key statistics (§5).
__host__ __device__ __forceinline__ bool isPinned(PolicyParams const& policy, int32_t position)
{
    return position < policy.sinkTokens || (usesLogWindow(policy.policy) && position == 0);
}

//! Q of KIVI/OTT after compaction: window_start = max(0, L - R) rounded down to a block (§5.2).
__host__ __device__ __forceinline__ int32_t recentWindowSealed(PolicyParams const& policy, int32_t length, int32_t g)
{
    int32_t const windowStart = length > policy.residual ? length - policy.residual : 0;
    return windowStart / g * g;
}

//! Blocks a decode step seals once the sequence holds `length` tokens and `sealed` positions are sealed.
__host__ __device__ __forceinline__ int32_t decodeSealCount(
    PolicyParams const& policy, int32_t length, int32_t sealed, int32_t g)
{
    if (policy.policy == Policy::kFP16)
    {
        return 0;
    }
    if (usesLogWindow(policy.policy))
    {
        // Window start is Q; past 2W tokens the oldest W leave it (§5.3).
        return length - sealed > 2 * policy.window ? policy.window / g : 0;
    }
    int32_t const target = recentWindowSealed(policy, length, g);
    return target > sealed ? (target - sealed) / g : 0;
}

//! (score, position) lexicographic order: OTT's ties go to the older position (§5.4).
__device__ __forceinline__ bool scoreLess(float sa, int32_t pa, float sb, int32_t pb)
{
    return sa < sb || (sa == sb && pa < pb);
}

//! Rows of one (sequence, KV head).
template <typename T>
struct HeadRows
{
    T* tailK;        //!< [T, D]; position p at row p % T
    T* tailV;
    T* retainedK;    //!< [S, D]
    T* retainedV;
    int32_t* retainedPos; //!< [S]
};

template <typename T>
__device__ __forceinline__ HeadRows<T> headRows(KvCacheView const& view, int32_t b, int32_t h)
{
    KvGeometry const& geo = view.geometry;
    int64_t const head = static_cast<int64_t>(b) * geo.numKvHeads + h;
    int64_t const tailRow = head * geo.tailCapacity * geo.headDim;
    int64_t const retainedRow = head * geo.retainedCapacity * geo.headDim;
    return HeadRows<T>{static_cast<T*>(view.tailK) + tailRow, static_cast<T*>(view.tailV) + tailRow,
        static_cast<T*>(view.retainedK) + retainedRow, static_cast<T*>(view.retainedV) + retainedRow,
        view.retainedPos + head * geo.retainedCapacity};
}

//! Page of block n of sequence b, or -1 when the block table has none (a caller error: the block is skipped).
__device__ __forceinline__ int32_t pageOf(KvCacheView const& view, int32_t b, int32_t n)
{
    KvGeometry const& geo = view.geometry;
    if (n < 0 || n >= geo.maxBlocksPerSeq)
    {
        return -1;
    }
    int32_t const page = view.blockTable[static_cast<int64_t>(b) * geo.maxBlocksPerSeq + n];
    return page >= 0 && page < geo.numPages ? page : -1;
}

//! One row move of moveRows: slot `dst` gets position value `value` and, unless srcK is null, the K/V rows.
template <typename T>
struct RowMove
{
    int32_t dst;
    int32_t value;
    T const* srcK;
    T const* srcV;
};

//! Moves `count` retained rows described by plan(j) -> RowMove<T>, j = 0..count-1, with the whole CTA.
//! Each pass reads all its sources before writing, so a list may move rows within the region it writes as long as
//! no row is read after an earlier pass wrote it (ascending compaction, descending expansion). Call uniformly.
template <typename T, int32_t kD, typename Plan>
__device__ void moveRows(HeadRows<T> const& rows, int32_t count, Plan const& plan)
{
    constexpr int32_t kVECS = kD * static_cast<int32_t>(sizeof(T)) / kBYTES_PER_VEC;
    int32_t const rowsPerPass = blockDim.x / kVECS;
    int32_t const c = threadIdx.x % kVECS;
    for (int32_t base = 0; base < count; base += rowsPerPass)
    {
        int32_t const j = base + static_cast<int32_t>(threadIdx.x) / kVECS;
        bool const active = j < count && static_cast<int32_t>(threadIdx.x) < rowsPerPass * kVECS;
        RowMove<T> move{};
        uint4 k{};
        uint4 v{};
        if (active)
        {
            move = plan(j);
            if (move.srcK != nullptr)
            {
                k = reinterpret_cast<uint4 const*>(move.srcK)[c];
                v = reinterpret_cast<uint4 const*>(move.srcV)[c];
            }
        }
        __syncthreads();
        if (active)
        {
            if (c == 0)
            {
                rows.retainedPos[move.dst] = move.value;
            }
            if (move.srcK != nullptr)
            {
                reinterpret_cast<uint4*>(rows.retainedK + static_cast<int64_t>(move.dst) * kD)[c] = k;
                reinterpret_cast<uint4*>(rows.retainedV + static_cast<int64_t>(move.dst) * kD)[c] = v;
            }
        }
        __syncthreads();
    }
}

//! Copies one D-row with the threads [0, kD * sizeof(T) / 16) of the CTA.
template <typename T, int32_t kD>
__device__ __forceinline__ void copyRow(T* dst, T const* src)
{
    constexpr int32_t kVECS = kD * static_cast<int32_t>(sizeof(T)) / kBYTES_PER_VEC;
    if (threadIdx.x < kVECS)
    {
        reinterpret_cast<uint4*>(dst)[threadIdx.x] = reinterpret_cast<uint4 const*>(src)[threadIdx.x];
    }
}

} // namespace logquant::kernel
