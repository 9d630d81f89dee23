// SPDX-License-Identifier: Apache-2.0
#include "kvWriteLaunch.h"

#include "logquant/common/checks.h"
#include "logquant/common/dispatch.h"
#include "logquant/kvWrite/common.cuh"

namespace logquant::kernel
{
namespace
{

constexpr int32_t kFINALIZE_THREADS = 128;

//! Runs after appendDecodeKernel: advances seq_len and num_sealed with the rule the per-head CTAs applied.
__global__ void appendDecodeFinalizeKernel(KvCacheView view, PolicyParams policy)
{
    int32_t const b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= view.geometry.batch)
    {
        return;
    }
    int32_t const g = view.geometry.groupSize;
    int32_t const length = view.seqLen[b] + 1;
    view.numSealed[b] += decodeSealCount(policy, length, view.numSealed[b] * g, g);
    view.seqLen[b] = length;
}

} // namespace

void launchAppendDecode(AppendDecodeParams const& params, cudaStream_t stream)
{
    KvCacheView const& cache = params.cache;
    KvGeometry const& geo = cache.geometry;
    checkCacheAndPolicy(cache, params.policy);
    LOGQUANT_CHECK((params.kNew != nullptr && params.vNew != nullptr) || geo.batch == 0, "kNew and vNew must be set");
    if (geo.batch == 0)
    {
        return;
    }
    LOGQUANT_DISPATCH_DTYPE(geo.dtype, T,
        LOGQUANT_DISPATCH_HEAD_DIM(geo.headDim, kD,
            LOGQUANT_DISPATCH_GROUP_SIZE(geo.groupSize, kG,
                LOGQUANT_DISPATCH_KEY_AXIS(
                    geo.keyAxis, kAXIS, launchDecodeTyped<T, kD, kG, kAXIS>(params, stream)))));
    int32_t const blocks = (geo.batch + kFINALIZE_THREADS - 1) / kFINALIZE_THREADS;
    appendDecodeFinalizeKernel<<<blocks, kFINALIZE_THREADS, 0, stream>>>(cache, params.policy);
    LOGQUANT_CUDA_CHECK(cudaGetLastError());
}

} // namespace logquant::kernel
