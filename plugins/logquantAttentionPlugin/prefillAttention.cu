// SPDX-License-Identifier: Apache-2.0
#include "logquantAttentionPlugin/prefillAttention.h"

#include "logquant/common/checks.h"
#include "logquant/common/dispatch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace logquant::plugin
{
namespace
{

constexpr int32_t kWARP = 32;
constexpr int32_t kROWS_PER_CTA = 4; //!< one warp per query row; neighbouring rows share their keys in L1

__device__ float toFloat(half x)
{
    return __half2float(x);
}

__device__ float toFloat(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

template <typename T>
__device__ T fromFloat(float x);

template <>
__device__ half fromFloat<half>(float x)
{
    return __float2half_rn(x);
}

template <>
__device__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float x)
{
    return __float2bfloat16_rn(x);
}

//! Grid (ceil(n / kROWS_PER_CTA), Hq, B). Lane l owns channels [l·kE, (l+1)·kE) of its row.
template <typename T, int32_t kD>
__global__ void __launch_bounds__(kWARP * kROWS_PER_CTA) prefillAttentionKernel(PrefillAttentionParams p)
{
    constexpr int32_t kE = kD / kWARP;
    int32_t const lane = threadIdx.x % kWARP;
    int32_t const t = blockIdx.x * kROWS_PER_CTA + threadIdx.x / kWARP;
    int32_t const head = blockIdx.y;
    int32_t const b = blockIdx.z;
    if (t >= p.numTokens)
    {
        return;
    }
    int32_t const length = min(max(p.lengths[b], 0), p.numTokens);
    int32_t const kvHead = head / (p.numQueryHeads / p.numKvHeads);
    size_t const rowQ = (static_cast<size_t>(b) * p.numQueryHeads + head) * p.numTokens + t;
    size_t const rowKv0 = (static_cast<size_t>(b) * p.numKvHeads + kvHead) * p.numTokens;
    auto const* q = static_cast<T const*>(p.q) + rowQ * kD + lane * kE;
    auto const* k = static_cast<T const*>(p.k) + rowKv0 * kD + lane * kE;
    auto const* v = static_cast<T const*>(p.v) + rowKv0 * kD + lane * kE;

    float qs[kE];
    float o[kE];
    for (int32_t e = 0; e < kE; ++e)
    {
        qs[e] = toFloat(q[e]) * p.scale;
        o[e] = 0.0F;
    }
    // Online softmax: m = running max, l = running sum of exp(score - m).
    float m = -INFINITY;
    float l = 0.0F;
    int32_t const last = t < length ? t : -1;
    for (int32_t s = 0; s <= last; ++s)
    {
        float dot = 0.0F;
        for (int32_t e = 0; e < kE; ++e)
        {
            dot += qs[e] * toFloat(k[static_cast<size_t>(s) * kD + e]);
        }
        for (int32_t offset = kWARP / 2; offset > 0; offset /= 2)
        {
            dot += __shfl_xor_sync(0xFFFFFFFFU, dot, offset);
        }
        float const mNew = fmaxf(m, dot);
        float const correction = expf(m - mNew);
        float const weight = expf(dot - mNew);
        l = l * correction + weight;
        for (int32_t e = 0; e < kE; ++e)
        {
            o[e] = o[e] * correction + weight * toFloat(v[static_cast<size_t>(s) * kD + e]);
        }
        m = mNew;
    }
    T* out = static_cast<T*>(p.out) + rowQ * kD + lane * kE;
    float const norm = last >= 0 ? 1.0F / l : 0.0F;
    for (int32_t e = 0; e < kE; ++e)
    {
        out[e] = fromFloat<T>(o[e] * norm);
    }
}

} // namespace

void launchPrefillAttention(PrefillAttentionParams const& p, cudaStream_t stream)
{
    LOGQUANT_CHECK(p.q != nullptr && p.k != nullptr && p.v != nullptr && p.lengths != nullptr && p.out != nullptr,
        "prefill attention: null pointer");
    LOGQUANT_CHECK(p.batch >= 1 && p.batch <= 65535, "prefill attention: batch must be in [1, 65535], got ", p.batch);
    LOGQUANT_CHECK(p.numKvHeads >= 1 && p.numQueryHeads <= 65535 && p.numQueryHeads % p.numKvHeads == 0,
        "prefill attention: numQueryHeads must be a multiple of numKvHeads and <= 65535, got ", p.numQueryHeads, " and ",
        p.numKvHeads);
    LOGQUANT_CHECK(p.numTokens >= 1, "prefill attention: numTokens must be >= 1, got ", p.numTokens);
    LOGQUANT_CHECK(p.scale > 0.0F, "prefill attention: scale must be > 0, got ", p.scale);
    dim3 const grid((p.numTokens + kROWS_PER_CTA - 1) / kROWS_PER_CTA, p.numQueryHeads, p.batch);
    LOGQUANT_DISPATCH_DTYPE(p.dtype, T, {
        LOGQUANT_DISPATCH_HEAD_DIM(p.headDim, kD, {
            prefillAttentionKernel<T, kD><<<grid, kWARP * kROWS_PER_CTA, 0, stream>>>(p);
        });
    });
    LOGQUANT_CUDA_CHECK(cudaGetLastError());
}

} // namespace logquant::plugin
