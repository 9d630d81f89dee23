// SPDX-License-Identifier: Apache-2.0
#include "kvWriteLaunch.h"

#include "logquant/common/checks.h"
#include "logquant/common/dispatch.h"
#include "logquant/kvWrite/common.cuh"

namespace logquant::kernel
{
namespace
{

constexpr int32_t kPLAN_THREADS = 256;

//! Kernel 1 of the prefill, one CTA per sequence: seq_len, num_sealed, and every retained slot's position except
//! the pool and extra regions' (left empty for the pool kernel). Dynamic shared: 2W ints for LogQuant.
__global__ void __launch_bounds__(kPLAN_THREADS) prefillPlanKernel(
    KvCacheView view, PolicyParams policy, int32_t const* lengths, int32_t maxLength)
{
    extern __shared__ int32_t sparseLists[];
    int32_t const b = blockIdx.x;
    KvGeometry const& geo = view.geometry;
    int32_t const g = geo.groupSize;
    int32_t const length = min(max(lengths[b], 0), maxLength);
    int32_t const window = policy.window;
    int32_t sealed = 0;
    int32_t count = 0; // LogQuant's sparse list: list[0, count), ascending
    int32_t* list = sparseLists;
    if (usesLogWindow(policy.policy))
    {
        // LogSparseWindow.prefill (§5.3).
        if (length > window && length < 3 * window)
        {
            for (int32_t j = threadIdx.x; j < window; j += blockDim.x)
            {
                list[j] = j;
            }
            count = window;
            sealed = window;
        }
        else if (length >= 3 * window)
        {
            int32_t* next = sparseLists + window;
            int32_t start = 0;
            // While 3W or more remain, keep every 2nd of the oldest 2W of (list + [start, length)).
            while (count + length - start >= 3 * window)
            {
                for (int32_t j = threadIdx.x; j < window; j += blockDim.x)
                {
                    int32_t const i = 2 * j;
                    next[j] = count == 0 ? i : (i < window ? list[i] : start + i - window);
                }
                start += 2 * window - count;
                count = window;
                int32_t* const swap = list;
                list = next;
                next = swap;
                __syncthreads();
            }
            sealed = start;
        }
        __syncthreads();
    }
    else if (policy.policy != Policy::kFP16)
    {
        sealed = recentWindowSealed(policy, length, g);
    }
    if (threadIdx.x == 0)
    {
        view.seqLen[b] = length;
        view.numSealed[b] = sealed / g;
    }
    // The sparse region holds the list's entries >= n; the smaller ones are sinks.
    int32_t prefix = 0;
    for (int32_t hi = count; prefix < hi;)
    {
        int32_t const mid = (prefix + hi) / 2;
        if (list[mid] < policy.sinkTokens)
        {
            prefix = mid + 1;
        }
        else
        {
            hi = mid;
        }
    }
    RetainedRegions const regions = retainedRegions(policy);
    int32_t const slots = geo.retainedCapacity;
    int32_t* const positions = view.retainedPos + static_cast<int64_t>(b) * geo.numKvHeads * slots;
    for (int32_t idx = threadIdx.x; idx < geo.numKvHeads * slots; idx += blockDim.x)
    {
        int32_t const s = idx % slots;
        int32_t value = kEMPTY_SLOT;
        if (s < regions.sparse)
        {
            value = s < sealed ? s : kEMPTY_SLOT;
        }
        else if (s < regions.pool)
        {
            int32_t const j = prefix + s - regions.sparse;
            value = j < count ? list[j] : kEMPTY_SLOT;
        }
        positions[idx] = value;
    }
}

} // namespace

void launchQuantizePrefill(QuantizePrefillParams const& params, cudaStream_t stream)
{
    KvCacheView const& cache = params.cache;
    PolicyParams const& policy = params.policy;
    KvGeometry const& geo = cache.geometry;
    checkCacheAndPolicy(cache, policy);
    LOGQUANT_CHECK(params.maxLength >= 0, "maxLength must be >= 0, got ", params.maxLength);
    LOGQUANT_CHECK(params.lengths != nullptr || geo.batch == 0, "lengths must be set");
    LOGQUANT_CHECK((params.k != nullptr && params.v != nullptr) || params.maxLength == 0 || geo.batch == 0,
        "k and v must be set");
    LOGQUANT_CHECK(policy.policy != Policy::kFP16 || params.maxLength <= geo.tailCapacity,
        "the fp16 policy keeps every token in the tail: maxLength ", params.maxLength, " > tailCapacity ",
        geo.tailCapacity);
    if (geo.batch == 0)
    {
        return;
    }
    size_t const planShared = usesLogWindow(policy.policy) ? 2 * sizeof(int32_t) * policy.window : 0;
    prefillPlanKernel<<<geo.batch, kPLAN_THREADS, planShared, stream>>>(
        cache, policy, params.lengths, params.maxLength);
    LOGQUANT_CUDA_CHECK(cudaGetLastError());
    LOGQUANT_DISPATCH_DTYPE(geo.dtype, T,
        LOGQUANT_DISPATCH_HEAD_DIM(geo.headDim, kD,
            LOGQUANT_DISPATCH_GROUP_SIZE(geo.groupSize, kG,
                LOGQUANT_DISPATCH_KEY_AXIS(
                    geo.keyAxis, kAXIS, launchPrefillTyped<T, kD, kG, kAXIS>(params, stream)))));
}

} // namespace logquant::kernel
