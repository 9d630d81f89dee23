// SPDX-License-Identifier: Apache-2.0
// Definitions of DecodeLauncher (declared in decodeKernelParams.cuh). Only the instantiation files
// cpp/src/attention/decodeAttention{Half,Bf16}{Channel,Token}.cu include this, one per (dtype, key axis) family.
#pragma once

#include "logquant/attention/decodeAttentionKernel.cuh"
#include "logquant/common/checks.h"

#include <cuda_runtime_api.h>

#include <atomic>

namespace logquant::kernel::attention
{

namespace detail
{

//! Shared memory per SM of sm_90, of which the runtime reserves 1 KB per CTA. It only decides which shallow shapes
//! are compiled; whether one runs on a device is the occupancy query's answer (sm_80's 164 KB holds fewer CTAs).
constexpr int32_t kSMEM_PER_SM = 228 * 1024;

//! Whether the shallow shape is built for an instantiation: only if four of its CTAs fit in shared memory, and not
//! for G = 32, whose two-block units spill ~120 B per thread under the 128-register cap.
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
constexpr bool kHAS_SHALLOW = kG >= 64
    && kSHALLOW_CTAS_PER_SM * (DecodeTraits<T, kD, kG, kAXIS, kSHALLOW_CTAS_PER_SM>::kSMEM_BYTES + 1024) <= kSMEM_PER_SM;

//! Calls fn(std::integral_constant<int32_t, shape>) for a run-time shape that is built.
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS, typename Fn>
void withShape(int32_t ctasPerSmShape, Fn&& fn)
{
    if (ctasPerSmShape == kSHALLOW_CTAS_PER_SM)
    {
        if constexpr (kHAS_SHALLOW<T, kD, kG, kAXIS>)
        {
            fn(std::integral_constant<int32_t, kSHALLOW_CTAS_PER_SM>{});
            return;
        }
    }
    else if (ctasPerSmShape == kDEEP_CTAS_PER_SM)
    {
        fn(std::integral_constant<int32_t, kDEEP_CTAS_PER_SM>{});
        return;
    }
    LOGQUANT_CHECK(false, "decode attention: no CTA shape of ", ctasPerSmShape, " CTAs per SM for this instantiation");
}

} // namespace detail

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
int32_t DecodeLauncher<T, kD, kG, kAXIS>::ctasPerSm(int32_t ctasPerSmShape)
{
    if (ctasPerSmShape == kSHALLOW_CTAS_PER_SM && !detail::kHAS_SHALLOW<T, kD, kG, kAXIS>)
    {
        return 0;
    }
    // Per device and shape: the attribute call and the occupancy query cost microseconds of host time on every
    // launch otherwise (TensorRT enqueue, decode loops). 0 = not yet configured on that device.
    constexpr int32_t kMAX_DEVICES = 64;
    static std::atomic<int32_t> cached[kMAX_DEVICES][2]{};
    int32_t device = 0;
    LOGQUANT_CUDA_CHECK(cudaGetDevice(&device));
    LOGQUANT_CHECK(device >= 0 && device < kMAX_DEVICES, "decode attention supports device ids below ", kMAX_DEVICES);
    std::atomic<int32_t>& slot = cached[device][ctasPerSmShape == kSHALLOW_CTAS_PER_SM ? 1 : 0];
    int32_t ctas = slot.load(std::memory_order_relaxed);
    if (ctas > 0)
    {
        return ctas;
    }
    detail::withShape<T, kD, kG, kAXIS>(ctasPerSmShape, [&](auto shape) {
        constexpr int32_t kSHAPE = decltype(shape)::value;
        auto* kernel = decodeAttentionKernel<T, kD, kG, kAXIS, kSHAPE>;
        int32_t const smem = DecodeTraits<T, kD, kG, kAXIS, kSHAPE>::kSMEM_BYTES;
        LOGQUANT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
        LOGQUANT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, kernel, kTHREADS, smem));
        LOGQUANT_CHECK(ctas > 0, "decode attention kernel does not fit on this device (", smem,
            " bytes of shared memory per CTA)");
    });
    slot.store(ctas, std::memory_order_relaxed);
    return ctas;
}

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
int32_t DecodeLauncher<T, kD, kG, kAXIS>::blocksPerUnit()
{
    return DecodeTraits<T, kD, kG, kAXIS, kDEEP_CTAS_PER_SM>::kBLOCKS_PER_UNIT;
}

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
void DecodeLauncher<T, kD, kG, kAXIS>::launch(
    DecodeKernelParams const& params, int32_t ctasPerSmShape, dim3 grid, cudaStream_t stream)
{
    ctasPerSm(ctasPerSmShape); // configures the kernel on this device once
    detail::withShape<T, kD, kG, kAXIS>(ctasPerSmShape, [&](auto shape) {
        constexpr int32_t kSHAPE = decltype(shape)::value;
        auto* kernel = decodeAttentionKernel<T, kD, kG, kAXIS, kSHAPE>;
        int32_t const smem = DecodeTraits<T, kD, kG, kAXIS, kSHAPE>::kSMEM_BYTES;
        kernel<<<grid, kTHREADS, smem, stream>>>(params);
        cudaError_t const status = cudaGetLastError();
        if (status != cudaSuccess)
        {
            cudaFuncAttributes attributes{};
            cudaFuncGetAttributes(&attributes, kernel);
            LOGQUANT_CHECK(false, "decode attention launch failed: ", cudaGetErrorName(status), " (grid ", grid.x,
                "x", grid.y, "x", grid.z, ", ", kTHREADS, " threads, ", smem,
                " B of dynamic shared memory; the kernel: ", attributes.numRegs, " registers, ",
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
