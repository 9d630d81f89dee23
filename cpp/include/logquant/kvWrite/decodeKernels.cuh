// SPDX-License-Identifier: Apache-2.0
// Decode append: one token per sequence, then compaction on the device with no host sync (CUDA-graph capturable).
// One CTA per (head, sequence) reads seq_len/num_sealed and does its head's whole step; a second kernel (in
// src/kvWrite/appendDecode.cu) then advances seq_len and num_sealed, so no CTA ever reads a length another wrote.
// Mirrors LayerKVState.append of one token followed by _compact (docs/kv_format.md §5).
#pragma once

#include "logquant/kvWrite/common.cuh"
#include "logquant/kvWrite/outlierPool.cuh"
#include "logquant/kvWrite/quantizeBlock.cuh"

namespace logquant::kernel
{

constexpr int32_t kDECODE_THREADS = 128;

//! Dynamic shared ints of appendDecodeKernel: the pool state plus copies of the old pool and extra regions.
__host__ __device__ constexpr int32_t decodeSharedWords(PolicyParams const& policy)
{
    return policy.poolSize > 0 ? poolStateWords(policy) + policy.poolSlots + policy.extraPoolSize : 0;
}

//! kNew, vNew: cache dtype [B, H, 1, D].
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
__global__ void __launch_bounds__(kDECODE_THREADS) appendDecodeKernel(
    KvCacheView view, PolicyParams policy, T const* kNew, T const* vNew)
{
    __shared__ alignas(16) T tile[kAXIS == KeyAxis::kCHANNEL ? kG * kD : 8];
    __shared__ float blockScores[kG];
    __shared__ uint32_t retainedBits[kG / kMASK_WORD_BITS];
    __shared__ uint32_t excludedBits[kG / kMASK_WORD_BITS];
    extern __shared__ int32_t decodeWords[];
    int32_t const h = blockIdx.x;
    int32_t const b = blockIdx.y;
    int32_t const lane = threadIdx.x % kWARP_SIZE;
    int32_t const warp = threadIdx.x / kWARP_SIZE;
    int32_t const numWarps = blockDim.x / kWARP_SIZE;
    KvGeometry const& geo = view.geometry;
    int32_t const tailCap = geo.tailCapacity;
    int32_t const length = view.seqLen[b] + 1;
    int32_t const sealed = view.numSealed[b] * kG;
    HeadRows<T> const rows = headRows<T>(view, b, h);
    auto const ringK = [&](int32_t p) { return rows.tailK + static_cast<int64_t>(p % tailCap) * kD; };
    auto const ringV = [&](int32_t p) { return rows.tailV + static_cast<int64_t>(p % tailCap) * kD; };

    int64_t const newRow = (static_cast<int64_t>(b) * geo.numKvHeads + h) * kD;
    copyRow<T, kD>(ringK(length - 1), kNew + newRow);
    copyRow<T, kD>(ringV(length - 1), vNew + newRow);
    int32_t const sealCount = decodeSealCount(policy, length, sealed, kG);
    if (sealCount == 0)
    {
        return;
    }
    __syncthreads(); // with R = 0 the new token itself is sealed below
    int32_t const newSealed = sealed + sealCount * kG;
    RetainedRegions const regions = retainedRegions(policy);
    int32_t* const sparseSlots = rows.retainedPos + regions.sparse;

    // LogQuant thinning (§5.3): the full sparse list is (m entries < n, held by the sinks region) + the sparse
    // region's `used` entries; appending the W leaving positions and keeping every 2nd entry needs only m.
    bool const logWindow = usesLogWindow(policy.policy);
    int32_t const window = policy.window;
    int32_t prefix = 0;     // m
    int32_t firstKept = 0;  // index into (list + leaving) of the first kept entry >= n
    int32_t sparseCount = 0;
    if (logWindow)
    {
        int32_t used = 0;
        for (int32_t base = 0; base < window; base += blockDim.x)
        {
            int32_t const s = base + threadIdx.x;
            used += __syncthreads_count(s < window && sparseSlots[s] != kEMPTY_SLOT);
        }
        if (sealed == 0)
        {
            // First shift: the leaving [0, W) become the sparse set, unthinned.
            sparseCount = max(0, window - policy.sinkTokens);
        }
        else
        {
            prefix = window - used;
            int32_t const leavingBelowSinks = min(max(policy.sinkTokens - sealed, 0), window);
            firstKept = prefix + leavingBelowSinks;
            firstKept += firstKept & 1;
            sparseCount = window - firstKept / 2;
            for (int32_t r = threadIdx.x; r < used; r += blockDim.x)
            {
                int32_t const p = sparseSlots[r];
                if (((prefix + r) & 1) && p >= 0)
                {
                    // Dropped and not shadowed: its only full-precision copy goes, so its code becomes readable.
                    int32_t const page = pageOf(view, b, p / kG);
                    int32_t const i = p % kG;
                    if (page >= 0)
                    {
                        int64_t const word
                            = (static_cast<int64_t>(page) * geo.numKvHeads + h) * (kG / kMASK_WORD_BITS) + i / kMASK_WORD_BITS;
                        atomicAnd(reinterpret_cast<uint32_t*>(view.dupMask) + word, ~(1U << (i % kMASK_WORD_BITS)));
                    }
                }
            }
        }
        __syncthreads();
    }

    // OTT (§5.4): trace the pool through the blocks in position order, then rewrite the extra and pool regions.
    bool const tracing = policy.poolSize > 0;
    PoolState const pool = carvePoolState(decodeWords, policy);
    int32_t* const oldPool = decodeWords + poolStateWords(policy);
    int32_t* const oldExtra = oldPool + policy.poolSlots;
    int32_t oldPoolCount = 0;
    int32_t oldExtraCount = 0;
    if (tracing)
    {
        for (int32_t s = threadIdx.x; s < policy.poolSlots + policy.extraPoolSize; s += blockDim.x)
        {
            oldPool[s] = rows.retainedPos[regions.pool + s];
        }
        __syncthreads();
        while (oldPoolCount < policy.poolSlots && oldPool[oldPoolCount] != kEMPTY_SLOT)
        {
            ++oldPoolCount;
        }
        while (oldExtraCount < policy.extraPoolSize && oldExtra[oldExtraCount] != kEMPTY_SLOT)
        {
            ++oldExtraCount;
        }
        // Scores are not stored: recompute them from retained_k, with the function that scored them at their seal.
        for (int32_t q = warp; q < oldPoolCount; q += numWarps)
        {
            float const score = warpL1Norm<T, kD>(rows.retainedK + static_cast<int64_t>(regions.pool + q) * kD, lane);
            if (lane == 0)
            {
                pool.score[q] = score;
                pool.position[q] = oldPool[q];
            }
        }
        for (int32_t s = threadIdx.x; s < oldExtraCount; s += blockDim.x)
        {
            pool.extra[s] = oldExtra[s];
        }
        __syncthreads();
        if (threadIdx.x == 0)
        {
            pool.counts[0] = oldPoolCount;
            pool.counts[1] = oldExtraCount;
            pool.counts[2] = 0;
            for (int32_t i = 1; i < oldPoolCount; ++i) // insertion sort by (score, position)
            {
                float const score = pool.score[i];
                int32_t const position = pool.position[i];
                int32_t j = i - 1;
                for (; j >= 0 && scoreLess(score, position, pool.score[j], pool.position[j]); --j)
                {
                    pool.score[j + 1] = pool.score[j];
                    pool.position[j + 1] = pool.position[j];
                }
                pool.score[j + 1] = score;
                pool.position[j + 1] = position;
            }
        }
        for (int32_t start = sealed; start < newSealed; start += kG)
        {
            for (int32_t i = warp; i < kG; i += numWarps)
            {
                float const score = warpL1Norm<T, kD>(ringK(start + i), lane);
                if (lane == 0)
                {
                    blockScores[i] = score;
                }
            }
            __syncthreads();
            if (warp == 0)
            {
                poolSeal<kG>(pool, policy, blockScores, start);
            }
            __syncthreads();
        }
        if (pool.counts[2] != 0)
        {
            if (threadIdx.x == 0)
            {
                sortPositions(pool.position, pool.counts[0]);
                sortPositions(pool.extra, pool.counts[1]);
            }
            __syncthreads();
            int32_t const poolCount = pool.counts[0];
            int32_t const extraCount = pool.counts[1];
            // Source of a member older than this step: its old extra slot, else its old pool slot.
            auto const oldSlot = [&](int32_t p) {
                int32_t const e = findPosition(oldExtra, oldExtraCount, p);
                return e >= 0 ? regions.extra + e : regions.pool + findPosition(oldPool, oldPoolCount, p);
            };
            auto const source = [&](int32_t p, int32_t dst) {
                if (p >= sealed)
                {
                    return RowMove<T>{dst, p, ringK(p), ringV(p)};
                }
                int64_t const row = static_cast<int64_t>(oldSlot(p)) * kD;
                return RowMove<T>{dst, p, rows.retainedK + row, rows.retainedV + row};
            };
            // Extra first, in descending slots: old extra rows only move up; evicted rows still sit in the pool.
            moveRows<T, kD>(rows, extraCount, [&](int32_t j) {
                int32_t const s = extraCount - 1 - j;
                return source(pool.extra[s], regions.extra + s);
            });
            // Pool in ascending slots: surviving members only move down.
            moveRows<T, kD>(
                rows, poolCount, [&](int32_t j) { return source(pool.position[j], regions.pool + j); });
        }
    }

    if (logWindow)
    {
        int32_t const poolCount = tracing ? pool.counts[0] : 0;
        int32_t const extraCount = tracing ? pool.counts[1] : 0;
        // Ascending slots: kept old entries only move down. Entries also held by the pool or extra are shadowed.
        moveRows<T, kD>(rows, window, [&](int32_t j) {
            if (j >= sparseCount)
            {
                return RowMove<T>{regions.sparse + j, kEMPTY_SLOT, nullptr, nullptr};
            }
            int32_t p = 0;
            RowMove<T> move{regions.sparse + j, 0, nullptr, nullptr};
            int32_t const i = firstKept + 2 * j;
            if (sealed > 0 && i < window)
            {
                int32_t const oldSlotIndex = i - prefix;
                int32_t const raw = sparseSlots[oldSlotIndex];
                p = slotPosition(raw);
                if (raw >= 0)
                {
                    int64_t const row = static_cast<int64_t>(regions.sparse + oldSlotIndex) * kD;
                    move.srcK = rows.retainedK + row;
                    move.srcV = rows.retainedV + row;
                }
            }
            else
            {
                p = sealed > 0 ? sealed + i - window : policy.sinkTokens + j;
                move.srcK = ringK(p);
                move.srcV = ringV(p);
            }
            bool const shadowed = findPosition(pool.position, poolCount, p) >= 0
                || findPosition(pool.extra, extraCount, p) >= 0;
            move.value = shadowed ? shadowedSlot(p) : p;
            if (shadowed)
            {
                move.srcK = move.srcV = nullptr;
            }
            return move;
        });
    }

    // Sinks sealed now get their copies.
    int32_t const sinkEnd = min(newSealed, policy.sinkTokens);
    moveRows<T, kD>(rows, max(0, sinkEnd - sealed), [&](int32_t j) {
        int32_t const p = sealed + j;
        return RowMove<T>{regions.sinks + p, p, ringK(p), ringV(p)};
    });

    for (int32_t start = sealed; start < newSealed; start += kG)
    {
        int32_t const page = pageOf(view, b, start / kG);
        if (page < 0)
        {
            continue;
        }
        blockMasks<kG>(rows.retainedPos, regions, policy, start, retainedBits, excludedBits);
        sealBlock<T, kD, kG, kAXIS>(view, page, h, ringK(start), ringV(start), retainedBits, excludedBits, tile);
        __syncthreads();
    }
}

} // namespace logquant::kernel
