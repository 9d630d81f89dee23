// SPDX-License-Identifier: Apache-2.0
// Definitions of DecodeLauncher (declared in decodeKernelParams.cuh). Only the instantiation files
// cpp/src/attention/decodeAttention{Half,Bf16}{Channel,Token}.cu include this, one per (dtype, key axis) family.
#pragma once

#include "logquant/attention/decodeAttentionKernel.cuh"
#include "logquant/common/checks.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <iterator>

namespace logquant::kernel::attention
{

namespace detail
{

//! Shared memory per SM of sm_90, of which the runtime reserves 1 KB per CTA. It only decides which shallow and wide
//! shapes are compiled; whether one runs on a device is the opt-in limit's and the occupancy query's answer (sm_80's
//! 164 KB holds fewer CTAs, and no wide one).
constexpr int32_t kSMEM_PER_SM = 228 * 1024;

//! Device ids the per-device caches of the launcher cover.
constexpr int32_t kMAX_DEVICES = 64;

//! Whether the shallow shape is built for an instantiation: only if four of its CTAs fit in shared memory, and not
//! for G = 32, whose two-block units spill ~120 B per thread under the 128-register cap.
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
constexpr bool kHAS_SHALLOW = kG >= 64
    && CtaShapeTraits<CtaShape::kSHALLOW>::kCTAS_PER_SM
            * (DecodeTraits<T, kD, kG, kAXIS, CtaShape::kSHALLOW>::kSMEM_BYTES + 1024)
        <= kSMEM_PER_SM;

//! Whether the wide shape is built: only if its one CTA fits in shared memory (not D = 128 with G = 128).
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
constexpr bool kHAS_WIDE = DecodeTraits<T, kD, kG, kAXIS, CtaShape::kWIDE>::kSMEM_BYTES + 1024 <= kSMEM_PER_SM;

//! Calls fn(std::integral_constant<CtaShape, shape>) for a run-time shape; returns false if it is not built.
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS, typename Fn>
bool withShape(CtaShape shape, Fn&& fn)
{
    switch (shape)
    {
    case CtaShape::kDEEP: fn(std::integral_constant<CtaShape, CtaShape::kDEEP>{}); return true;
    case CtaShape::kSHALLOW:
        if constexpr (kHAS_SHALLOW<T, kD, kG, kAXIS>)
        {
            fn(std::integral_constant<CtaShape, CtaShape::kSHALLOW>{});
            return true;
        }
        return false;
    case CtaShape::kWIDE:
        if constexpr (kHAS_WIDE<T, kD, kG, kAXIS>)
        {
            fn(std::integral_constant<CtaShape, CtaShape::kWIDE>{});
            return true;
        }
        return false;
    }
    return false;
}

//! A launch of `grid` whose splits (grid.x) form one thread-block cluster; `attribute` backs the config's pointer.
inline cudaLaunchConfig_t clusterLaunch(
    dim3 grid, int32_t threads, int32_t smem, cudaStream_t stream, cudaLaunchAttribute& attribute)
{
    attribute = cudaLaunchAttribute{};
    attribute.id = cudaLaunchAttributeClusterDimension;
    attribute.val.clusterDim.x = grid.x;
    attribute.val.clusterDim.y = 1;
    attribute.val.clusterDim.z = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = grid;
    config.blockDim = dim3(static_cast<uint32_t>(threads));
    config.dynamicSmemBytes = static_cast<size_t>(smem);
    config.stream = stream;
    config.attrs = &attribute;
    config.numAttrs = 1;
    return config;
}

} // namespace detail

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
int32_t DecodeLauncher<T, kD, kG, kAXIS>::ctasPerSm(CtaShape shape)
{
    // Per device and shape: the attribute call and the occupancy query cost microseconds of host time on every
    // launch otherwise (TensorRT enqueue, decode loops). 0 = not yet configured on that device, -1 = does not fit.
    static std::atomic<int32_t> cached[detail::kMAX_DEVICES][std::size(kCTA_SHAPES)]{};
    int32_t device = 0;
    LOGQUANT_CUDA_CHECK(cudaGetDevice(&device));
    LOGQUANT_CHECK(device >= 0 && device < detail::kMAX_DEVICES, "decode attention supports device ids below ",
        detail::kMAX_DEVICES);
    std::atomic<int32_t>& slot = cached[device][static_cast<int32_t>(shape)];
    int32_t ctas = slot.load(std::memory_order_relaxed);
    if (ctas != 0)
    {
        return std::max(ctas, 0);
    }
    int32_t smemOptin = 0;
    LOGQUANT_CUDA_CHECK(cudaDeviceGetAttribute(&smemOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    bool const built = detail::withShape<T, kD, kG, kAXIS>(shape, [&](auto constant) {
        constexpr CtaShape kSHAPE = decltype(constant)::value;
        using Traits = DecodeTraits<T, kD, kG, kAXIS, kSHAPE>;
        auto* kernel = decodeAttentionKernel<T, kD, kG, kAXIS, kSHAPE>;
        if (Traits::kSMEM_BYTES > smemOptin)
        {
            return; // e.g. the wide shape on sm_80's 163 KB
        }
        LOGQUANT_CUDA_CHECK(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Traits::kSMEM_BYTES));
        LOGQUANT_CUDA_CHECK(
            cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel, Traits::kTHREADS, Traits::kSMEM_BYTES));
    });
    LOGQUANT_CHECK(!built || shape != CtaShape::kDEEP || ctas > 0,
        "decode attention kernel does not fit on this device (",
        DecodeTraits<T, kD, kG, kAXIS, CtaShape::kDEEP>::kSMEM_BYTES, " bytes of shared memory per CTA)");
    slot.store(ctas > 0 ? ctas : -1, std::memory_order_relaxed);
    return std::max(ctas, 0);
}

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
int32_t DecodeLauncher<T, kD, kG, kAXIS>::blocksPerUnit()
{
    return DecodeTraits<T, kD, kG, kAXIS, CtaShape::kDEEP>::kBLOCKS_PER_UNIT;
}

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
bool DecodeLauncher<T, kD, kG, kAXIS>::clusterMergeFits(CtaShape shape, dim3 grid)
{
    // ctasPerSm also checks the device id and configures the kernel's shared-memory limit.
    if (grid.x < 2 || ctasPerSm(shape) == 0)
    {
        return false;
    }
    // Per device and cluster size: the most clusters that run at once; 0 = not yet asked, -1 = none.
    constexpr int32_t kMAX_CLUSTER = 8;
    static std::atomic<int32_t> cached[detail::kMAX_DEVICES][kMAX_CLUSTER + 1]{};
    int32_t device = 0;
    LOGQUANT_CUDA_CHECK(cudaGetDevice(&device));
    int32_t clusters = 0;
    detail::withShape<T, kD, kG, kAXIS>(shape, [&](auto constant) {
        constexpr CtaShape kSHAPE = decltype(constant)::value;
        using Traits = DecodeTraits<T, kD, kG, kAXIS, kSHAPE>;
        static_assert(Traits::kMAX_CLUSTER_SPLITS <= kMAX_CLUSTER, "cache sized for portable clusters");
        if (static_cast<int32_t>(grid.x) > Traits::kMAX_CLUSTER_SPLITS)
        {
            return;
        }
        std::atomic<int32_t>& slot = cached[device][grid.x];
        clusters = slot.load(std::memory_order_relaxed);
        if (clusters != 0)
        {
            return;
        }
        auto* kernel = decodeAttentionKernel<T, kD, kG, kAXIS, kSHAPE>;
        int32_t clusterLaunch = 0;
        int32_t smemOptin = 0;
        cudaFuncAttributes attributes{};
        LOGQUANT_CUDA_CHECK(cudaDeviceGetAttribute(&clusterLaunch, cudaDevAttrClusterLaunch, device));
        LOGQUANT_CUDA_CHECK(cudaDeviceGetAttribute(&smemOptin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
        LOGQUANT_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
        // The opt-in limit covers static and dynamic shared memory together.
        int32_t const dynamicLimit = smemOptin - static_cast<int32_t>(attributes.sharedSizeBytes);
        int32_t const smem = Traits::smemBytes(static_cast<int32_t>(grid.x));
        clusters = -1;
        if (clusterLaunch != 0 && smem <= dynamicLimit)
        {
            LOGQUANT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                std::min(Traits::smemBytes(Traits::kMAX_CLUSTER_SPLITS), dynamicLimit)));
            cudaLaunchAttribute attribute{};
            cudaLaunchConfig_t const config = detail::clusterLaunch(grid, Traits::kTHREADS, smem, nullptr, attribute);
            int32_t count = 0;
            LOGQUANT_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&count, kernel, &config));
            clusters = count > 0 ? count : -1;
        }
        slot.store(clusters, std::memory_order_relaxed);
    });
    return clusters > 0 && static_cast<int64_t>(clusters) >= static_cast<int64_t>(grid.y) * grid.z;
}

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
void DecodeLauncher<T, kD, kG, kAXIS>::launch(
    DecodeKernelParams const& params, CtaShape shape, dim3 grid, cudaStream_t stream)
{
    LOGQUANT_CHECK(ctasPerSm(shape) > 0, "decode attention: the ", nameOf(shape),
        " CTA shape is not built for this instantiation or does not fit on this device"); // configures it once
    detail::withShape<T, kD, kG, kAXIS>(shape, [&](auto constant) {
        constexpr CtaShape kSHAPE = decltype(constant)::value;
        using Traits = DecodeTraits<T, kD, kG, kAXIS, kSHAPE>;
        auto* kernel = decodeAttentionKernel<T, kD, kG, kAXIS, kSHAPE>;
        bool const cluster = params.clusterMerge != 0;
        int32_t const smem = Traits::smemBytes(cluster ? static_cast<int32_t>(grid.x) : 1);
        if (cluster)
        {
            LOGQUANT_CHECK(static_cast<int32_t>(grid.x) <= Traits::kMAX_CLUSTER_SPLITS && grid.x == params.numSplits,
                "decode attention: a cluster merge of ", grid.x, " splits is not built for the ", nameOf(shape),
                " CTA shape");
            cudaLaunchAttribute attribute{};
            cudaLaunchConfig_t const config = detail::clusterLaunch(grid, Traits::kTHREADS, smem, stream, attribute);
            cudaLaunchKernelEx(&config, kernel, params); // its error, like <<<>>>'s, is read by cudaGetLastError
        }
        else
        {
            kernel<<<grid, Traits::kTHREADS, smem, stream>>>(params);
        }
        cudaError_t const status = cudaGetLastError();
        if (status != cudaSuccess)
        {
            cudaFuncAttributes attributes{};
            cudaFuncGetAttributes(&attributes, kernel);
            LOGQUANT_CHECK(false, "decode attention launch failed: ", cudaGetErrorName(status), " (grid ", grid.x,
                "x", grid.y, "x", grid.z, cluster ? " in clusters of the splits" : "", ", ", Traits::kTHREADS,
                " threads, ", smem, " B of dynamic shared memory; the kernel: ", attributes.numRegs, " registers, ",
                attributes.maxThreadsPerBlock, " threads max, ", attributes.maxDynamicSharedSizeBytes,
                " B of dynamic shared memory max, ", attributes.localSizeBytes, " B of local memory)");
        }
    });
}

} // namespace logquant::kernel::attention

//! Applies macro(T, D, G, axis) to every supported combination of one (T, axis) family.
#define LOGQUANT_DECODE_FAMILY(macro, T, axis)                                                                         \
    macro(T, 64, 32, axis) macro(T, 64, 64, axis) macro(T, 64, 128, axis) macro(T, 128, 32, axis)                      \
        macro(T, 128, 64, axis) macro(T, 128, 128, axis)

#define LOGQUANT_DECODE_INSTANTIATE(T, D, G, axis)                                                                     \
    template struct ::logquant::kernel::attention::DecodeLauncher<T, D, G, axis>;
