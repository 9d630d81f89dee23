// SPDX-License-Identifier: Apache-2.0
// Bulk prefill: the state LayerKVState reaches after one append of L tokens (docs/kv_format.md §5), in four kernels
// on one stream (the plan kernel, untemplated, lives in src/kvWrite/quantizePrefill.cu):
//   plan      <<<B>>>        seq_len, num_sealed, sink and sparse regions (LogQuant's prefill rule)
//   pool      <<<(H, B)>>>   OTT: key L1 norms in parallel, then the sequential seals in position order
//   copy      <<<(H, B)>>>   retained rows (shadowing sparse entries held by the pool), tail ring
//   quantize  <<<(n, H, B)>>> every sealed block in parallel, excluding pinned and pooled tokens
// k, v: cache dtype [B, H, maxLength, D]; position p of sequence b, head h at row (b * H + h) * maxLength + p.
#pragma once

#include "logquant/kvWrite/common.cuh"
#include "logquant/kvWrite/outlierPool.cuh"
#include "logquant/kvWrite/quantizeBlock.cuh"

namespace logquant::kernel
{

constexpr int32_t kPOOL_THREADS = 256;
constexpr int32_t kWRITE_THREADS = 128;
constexpr int32_t kSCORE_CHUNK = 1024; //!< tokens scored per pass of the pool kernel (a multiple of every G)

//! OTT over every block of the prefill, one CTA per (head, sequence). Dynamic shared: poolStateWords ints.
template <typename T, int32_t kD, int32_t kG>
__global__ void __launch_bounds__(kPOOL_THREADS) prefillPoolKernel(
    KvCacheView view, PolicyParams policy, T const* k, int32_t maxLength)
{
    __shared__ float scores[kSCORE_CHUNK];
    extern __shared__ int32_t poolWords[];
    PoolState const pool = carvePoolState(poolWords, policy);
    int32_t const h = blockIdx.x;
    int32_t const b = blockIdx.y;
    int32_t const lane = threadIdx.x % kWARP_SIZE;
    int32_t const warp = threadIdx.x / kWARP_SIZE;
    int32_t const numWarps = blockDim.x / kWARP_SIZE;
    int32_t const sealed = view.numSealed[b] * kG;
    T const* keys = k + (static_cast<int64_t>(b) * view.geometry.numKvHeads + h) * maxLength * kD;
    if (threadIdx.x < 3)
    {
        pool.counts[threadIdx.x] = 0;
    }
    __syncthreads();
    for (int32_t chunk = 0; chunk < sealed; chunk += kSCORE_CHUNK)
    {
        int32_t const count = min(kSCORE_CHUNK, sealed - chunk);
        for (int32_t i = warp; i < count; i += numWarps)
        {
            float const score = warpL1Norm<T, kD>(keys + static_cast<int64_t>(chunk + i) * kD, lane);
            if (lane == 0)
            {
                scores[i] = score;
            }
        }
        __syncthreads();
        if (warp == 0)
        {
            for (int32_t block = 0; block < count; block += kG)
            {
                poolSeal<kG>(pool, policy, scores + block, chunk + block);
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0)
    {
        sortPositions(pool.position, pool.counts[0]);
        sortPositions(pool.extra, pool.counts[1]);
    }
    __syncthreads();
    RetainedRegions const regions = retainedRegions(policy);
    HeadRows<T> const rows = headRows<T>(view, b, h);
    for (int32_t s = threadIdx.x; s < policy.poolSlots; s += blockDim.x)
    {
        rows.retainedPos[regions.pool + s] = s < pool.counts[0] ? pool.position[s] : kEMPTY_SLOT;
    }
    for (int32_t s = threadIdx.x; s < policy.extraPoolSize; s += blockDim.x)
    {
        rows.retainedPos[regions.extra + s] = s < pool.counts[1] ? pool.extra[s] : kEMPTY_SLOT;
    }
}

//! Retained rows and the tail ring, one CTA per (head, sequence). Dynamic shared: poolSlots + E ints.
template <typename T, int32_t kD>
__global__ void __launch_bounds__(kWRITE_THREADS) prefillCopyKernel(
    KvCacheView view, PolicyParams policy, T const* k, T const* v, int32_t maxLength)
{
    constexpr int32_t kVECS = kD * static_cast<int32_t>(sizeof(T)) / kBYTES_PER_VEC;
    extern __shared__ int32_t pooled[];
    int32_t const h = blockIdx.x;
    int32_t const b = blockIdx.y;
    KvGeometry const& geo = view.geometry;
    RetainedRegions const regions = retainedRegions(policy);
    HeadRows<T> const rows = headRows<T>(view, b, h);
    int64_t const headRow = (static_cast<int64_t>(b) * geo.numKvHeads + h) * maxLength;
    T const* inK = k + headRow * kD;
    T const* inV = v + headRow * kD;
    int32_t const pooledCount = regions.end - regions.pool;
    for (int32_t s = threadIdx.x; s < pooledCount; s += blockDim.x)
    {
        pooled[s] = rows.retainedPos[regions.pool + s];
    }
    __syncthreads();
    moveRows<T, kD>(rows, regions.end, [&](int32_t s) {
        int32_t const p = rows.retainedPos[s];
        bool const inSparse = s >= regions.sparse && s < regions.pool;
        if (p < 0 || (inSparse && findPosition(pooled, pooledCount, p) >= 0))
        {
            // Empty, or a sparse entry whose copy lives in the pool or extra region.
            return RowMove<T>{s, p < 0 ? p : shadowedSlot(p), nullptr, nullptr};
        }
        return RowMove<T>{s, p, inK + static_cast<int64_t>(p) * kD, inV + static_cast<int64_t>(p) * kD};
    });
    int32_t const length = view.seqLen[b];
    int32_t const sealed = view.numSealed[b] * geo.groupSize;
    for (int32_t idx = threadIdx.x; idx < (length - sealed) * kVECS; idx += blockDim.x)
    {
        int32_t const p = sealed + idx / kVECS;
        int32_t const c = idx % kVECS;
        int64_t const slot = static_cast<int64_t>(p % geo.tailCapacity) * kD;
        reinterpret_cast<uint4*>(rows.tailK + slot)[c] = reinterpret_cast<uint4 const*>(inK + int64_t{p} * kD)[c];
        reinterpret_cast<uint4*>(rows.tailV + slot)[c] = reinterpret_cast<uint4 const*>(inV + int64_t{p} * kD)[c];
    }
}

//! Block n of head h of sequence b (blockIdx x, y, z), if sealed. Regions must be final.
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
__global__ void __launch_bounds__(kWRITE_THREADS) prefillQuantizeKernel(
    KvCacheView view, PolicyParams policy, T const* k, T const* v, int32_t maxLength)
{
    __shared__ alignas(16) T tile[kAXIS == KeyAxis::kCHANNEL ? kG * kD : 8];
    __shared__ uint32_t retained[kG / kMASK_WORD_BITS];
    __shared__ uint32_t excluded[kG / kMASK_WORD_BITS];
    int32_t const n = blockIdx.x;
    int32_t const h = blockIdx.y;
    int32_t const b = blockIdx.z;
    if (n >= view.numSealed[b])
    {
        return;
    }
    int32_t const page = pageOf(view, b, n);
    if (page < 0)
    {
        return;
    }
    HeadRows<T> const rows = headRows<T>(view, b, h);
    blockMasks<kG>(rows.retainedPos, retainedRegions(policy), policy, n * kG, retained, excluded);
    int64_t const offset = ((static_cast<int64_t>(b) * view.geometry.numKvHeads + h) * maxLength + n * kG) * kD;
    sealBlock<T, kD, kG, kAXIS>(view, page, h, k + offset, v + offset, retained, excluded, tile);
}

} // namespace logquant::kernel
