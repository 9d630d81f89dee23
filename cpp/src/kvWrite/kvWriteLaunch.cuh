// SPDX-License-Identifier: Apache-2.0
// Definitions of the typed launchers declared in kvWriteLaunch.h; included only by the inst*.cu files.
#pragma once

#include "kvWriteLaunch.h"

#include "logquant/common/checks.h"
#include "logquant/kvWrite/decodeKernels.cuh"
#include "logquant/kvWrite/prefillKernels.cuh"

namespace logquant::kernel
{

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
void launchPrefillTyped(QuantizePrefillParams const& params, cudaStream_t stream)
{
    KvCacheView const& cache = params.cache;
    PolicyParams const& policy = params.policy;
    KvGeometry const& geo = cache.geometry;
    auto const* k = static_cast<T const*>(params.k);
    auto const* v = static_cast<T const*>(params.v);
    dim3 const perHead(geo.numKvHeads, geo.batch);
    if (policy.poolSize > 0)
    {
        size_t const shared = sizeof(int32_t) * poolStateWords(policy);
        prefillPoolKernel<T, kD, kG><<<perHead, kPOOL_THREADS, shared, stream>>>(cache, policy, k, params.maxLength);
        LOGQUANT_CUDA_CHECK(cudaGetLastError());
    }
    RetainedRegions const regions = retainedRegions(policy);
    size_t const copyShared = sizeof(int32_t) * (regions.end - regions.pool);
    prefillCopyKernel<T, kD><<<perHead, kWRITE_THREADS, copyShared, stream>>>(cache, policy, k, v, params.maxLength);
    LOGQUANT_CUDA_CHECK(cudaGetLastError());
    int32_t const maxBlocks = params.maxLength / kG;
    if (policy.policy != Policy::kFP16 && maxBlocks > 0)
    {
        dim3 const grid(maxBlocks, geo.numKvHeads, geo.batch);
        prefillQuantizeKernel<T, kD, kG, kAXIS>
            <<<grid, kWRITE_THREADS, 0, stream>>>(cache, policy, k, v, params.maxLength);
        LOGQUANT_CUDA_CHECK(cudaGetLastError());
    }
}

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
void launchDecodeTyped(AppendDecodeParams const& params, cudaStream_t stream)
{
    KvGeometry const& geo = params.cache.geometry;
    size_t const shared = sizeof(int32_t) * decodeSharedWords(params.policy);
    appendDecodeKernel<T, kD, kG, kAXIS><<<dim3(geo.numKvHeads, geo.batch), kDECODE_THREADS, shared, stream>>>(
        params.cache, params.policy, static_cast<T const*>(params.kNew), static_cast<T const*>(params.vNew));
    LOGQUANT_CUDA_CHECK(cudaGetLastError());
}

} // namespace logquant::kernel
