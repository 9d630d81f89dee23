// SPDX-License-Identifier: Apache-2.0
// OTT outlier pool (docs/kv_format.md §5.4): key L1 scores and the sequential k-smallest choice at each seal.
// Mirrors logquant_trt/reference/outlier_pool.py; the pool is kept sorted by (score, position), which is the
// order the reference's stable sort produces.
#pragma once

#include "logquant/kvWrite/common.cuh"

namespace logquant::kernel
{

//! L1 norm of a key row in fp32, computed by one full warp. Every kernel scores with this one function, in this
//! one summation order, so a pool member's score recomputed from retained_k equals its score at its seal.
template <typename T, int32_t kD>
__device__ __forceinline__ float warpL1Norm(T const* row, int32_t lane)
{
    constexpr int32_t kPER_LANE = kD / kWARP_SIZE;
    static_assert(kPER_LANE == 2 || kPER_LANE == 4, "head dim 64 or 128");
    float sum = 0.0F;
    if constexpr (kPER_LANE == 4)
    {
        uint2 const raw = reinterpret_cast<uint2 const*>(row)[lane];
        sum = __fadd_rn(__fadd_rn(fabsf(unpackFloat<T>(raw.x, 0)), fabsf(unpackFloat<T>(raw.x, 1))),
            __fadd_rn(fabsf(unpackFloat<T>(raw.y, 0)), fabsf(unpackFloat<T>(raw.y, 1))));
    }
    else
    {
        uint32_t const raw = reinterpret_cast<uint32_t const*>(row)[lane];
        sum = __fadd_rn(fabsf(unpackFloat<T>(raw, 0)), fabsf(unpackFloat<T>(raw, 1)));
    }
#pragma unroll
    for (int32_t offset = kWARP_SIZE / 2; offset > 0; offset /= 2)
    {
        sum = __fadd_rn(sum, __shfl_xor_sync(kFULL_WARP, sum, offset));
    }
    return sum;
}

//! One head's pool while a kernel traces seals, in shared memory.
struct PoolState
{
    float* score;       //!< [k] sorted by (score, position)
    int32_t* position;  //!< [k]
    int32_t* extra;     //!< [E] in eviction order
    float* takenScore;  //!< [k] scratch: block tokens entering the pool at one seal
    int32_t* takenPosition; //!< [k]
    int32_t* counts;    //!< {pool size, extra size, changed flag}
};

//! Shared floats/ints PoolState needs (for the launcher's dynamic shared memory).
__host__ __device__ constexpr int32_t poolStateWords(PolicyParams const& policy)
{
    return 4 * policy.poolSize + policy.extraPoolSize + 3;
}

__device__ __forceinline__ PoolState carvePoolState(int32_t* words, PolicyParams const& policy)
{
    int32_t const k = policy.poolSize;
    return PoolState{reinterpret_cast<float*>(words), words + k, words + 2 * k,
        reinterpret_cast<float*>(words + 2 * k + policy.extraPoolSize), words + 3 * k + policy.extraPoolSize,
        words + 4 * k + policy.extraPoolSize};
}

//! The OTT seal of block [start, start + G) of one head, run by ONE full warp. scores[i]: block token i.
//! Candidates are the block's unpinned tokens plus the pool; the k smallest form the new pool, unless the pool
//! members they push out do not fit in the extra pool (then nothing changes).
template <int32_t kG>
__device__ void poolSeal(PoolState const& pool, PolicyParams const& policy, float const* scores, int32_t start)
{
    constexpr int32_t kPER_LANE = kG / kWARP_SIZE;
    int32_t const lane = threadIdx.x % kWARP_SIZE;
    int32_t const k = policy.poolSize;
    int32_t const poolCount = pool.counts[0];
    float score[kPER_LANE];
    int32_t position[kPER_LANE];
#pragma unroll
    for (int32_t j = 0; j < kPER_LANE; ++j)
    {
        int32_t const i = lane + j * kWARP_SIZE;
        score[j] = scores[i];
        position[j] = isPinned(policy, start + i) ? kNO_POSITION : start + i;
    }
    // Take block candidates in (score, position) order while they rank among the k smallest of pool + taken.
    int32_t taken = 0;
    while (taken < k)
    {
        float bestScore = __int_as_float(0x7f800000);
        int32_t bestPosition = kNO_POSITION;
#pragma unroll
        for (int32_t j = 0; j < kPER_LANE; ++j)
        {
            if (position[j] != kNO_POSITION && scoreLess(score[j], position[j], bestScore, bestPosition))
            {
                bestScore = score[j];
                bestPosition = position[j];
            }
        }
#pragma unroll
        for (int32_t offset = kWARP_SIZE / 2; offset > 0; offset /= 2)
        {
            float const otherScore = __shfl_xor_sync(kFULL_WARP, bestScore, offset);
            int32_t const otherPosition = __shfl_xor_sync(kFULL_WARP, bestPosition, offset);
            if (scoreLess(otherScore, otherPosition, bestScore, bestPosition))
            {
                bestScore = otherScore;
                bestPosition = otherPosition;
            }
        }
        if (bestPosition == kNO_POSITION)
        {
            break;
        }
        int32_t rank = taken;
        for (int32_t q = 0; q < poolCount; ++q)
        {
            rank += scoreLess(pool.score[q], pool.position[q], bestScore, bestPosition);
        }
        if (rank >= k)
        {
            break;
        }
#pragma unroll
        for (int32_t j = 0; j < kPER_LANE; ++j)
        {
            position[j] = position[j] == bestPosition ? kNO_POSITION : position[j];
        }
        if (lane == 0)
        {
            pool.takenScore[taken] = bestScore;
            pool.takenPosition[taken] = bestPosition;
        }
        ++taken;
    }
    __syncwarp();
    if (lane == 0 && taken > 0)
    {
        // Every taken token ranks below k, so the members pushed out are the pool's largest.
        int32_t const evicted = max(0, poolCount + taken - k);
        int32_t extraCount = pool.counts[1];
        if (extraCount + evicted <= policy.extraPoolSize)
        {
            for (int32_t q = poolCount - evicted; q < poolCount; ++q)
            {
                pool.extra[extraCount++] = pool.position[q];
            }
            // Merge the kept members with the taken tokens from the back, in place.
            int32_t a = poolCount - evicted - 1;
            int32_t t = taken - 1;
            for (int32_t out = poolCount - evicted + taken - 1; t >= 0; --out)
            {
                bool const fromPool
                    = a >= 0 && scoreLess(pool.takenScore[t], pool.takenPosition[t], pool.score[a], pool.position[a]);
                pool.score[out] = fromPool ? pool.score[a] : pool.takenScore[t];
                pool.position[out] = fromPool ? pool.position[a] : pool.takenPosition[t];
                a -= fromPool ? 1 : 0;
                t -= fromPool ? 0 : 1;
            }
            pool.counts[0] = poolCount - evicted + taken;
            pool.counts[1] = extraCount;
            pool.counts[2] = 1;
        }
    }
    __syncwarp();
}

//! Sorts `count` positions ascending, by one thread (count <= k + E, small).
__device__ __forceinline__ void sortPositions(int32_t* positions, int32_t count)
{
    for (int32_t i = 1; i < count; ++i)
    {
        int32_t const p = positions[i];
        int32_t j = i - 1;
        for (; j >= 0 && positions[j] > p; --j)
        {
            positions[j + 1] = positions[j];
        }
        positions[j + 1] = p;
    }
}

//! Index of `position` in positions[0, count), or -1.
__device__ __forceinline__ int32_t findPosition(int32_t const* positions, int32_t count, int32_t position)
{
    for (int32_t i = 0; i < count; ++i)
    {
        if (positions[i] == position)
        {
            return i;
        }
    }
    return -1;
}

} // namespace logquant::kernel
