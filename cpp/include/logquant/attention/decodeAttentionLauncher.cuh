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

//! Raises the dynamic shared-memory limit (above 48 KB) of the kernel on the current device; idempotent.
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
void configureDecodeKernel()
{
    LOGQUANT_CUDA_CHECK(cudaFuncSetAttribute(decodeAttentionKernel<T, kD, kG, kAXIS>,
        cudaFuncAttributeMaxDynamicSharedMemorySize, DecodeTraits<T, kD, kG, kAXIS>::kSMEM_BYTES));
}

} // namespace detail

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
int32_t DecodeLauncher<T, kD, kG, kAXIS>::ctasPerSm()
{
    // Per device: the attribute call and the occupancy query cost microseconds of host time on every launch
    // otherwise (TensorRT enqueue, decode loops). 0 = not yet configured on that device.
    constexpr int32_t kMAX_DEVICES = 64;
    static std::atomic<int32_t> cached[kMAX_DEVICES]{};
    int32_t device = 0;
    LOGQUANT_CUDA_CHECK(cudaGetDevice(&device));
    LOGQUANT_CHECK(device >= 0 && device < kMAX_DEVICES, "decode attention supports device ids below ", kMAX_DEVICES);
    int32_t ctas = cached[device].load(std::memory_order_relaxed);
    if (ctas > 0)
    {
        return ctas;
    }
    detail::configureDecodeKernel<T, kD, kG, kAXIS>();
    int32_t const smem = DecodeTraits<T, kD, kG, kAXIS>::kSMEM_BYTES;
    LOGQUANT_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
        &ctas, decodeAttentionKernel<T, kD, kG, kAXIS>, kTHREADS, smem));
    LOGQUANT_CHECK(ctas > 0, "decode attention kernel does not fit on this device (", smem,
        " bytes of shared memory per CTA)");
    cached[device].store(ctas, std::memory_order_relaxed);
    return ctas;
}

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
int32_t DecodeLauncher<T, kD, kG, kAXIS>::blocksPerUnit()
{
    return DecodeTraits<T, kD, kG, kAXIS>::kBLOCKS_PER_UNIT;
}

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
void DecodeLauncher<T, kD, kG, kAXIS>::launch(DecodeKernelParams const& params, dim3 grid, cudaStream_t stream)
{
    int32_t const smem = DecodeTraits<T, kD, kG, kAXIS>::kSMEM_BYTES;
    ctasPerSm(); // configures the kernel on this device once
    decodeAttentionKernel<T, kD, kG, kAXIS><<<grid, kTHREADS, smem, stream>>>(params);
    cudaError_t const status = cudaGetLastError();
    if (status != cudaSuccess)
    {
        cudaFuncAttributes attributes{};
        cudaFuncGetAttributes(&attributes, decodeAttentionKernel<T, kD, kG, kAXIS>);
        LOGQUANT_CHECK(false, "decode attention launch failed: ", cudaGetErrorName(status), " (grid ", grid.x, "x",
            grid.y, "x", grid.z, ", ", kTHREADS, " threads, ", smem, " B of dynamic shared memory; the kernel: ",
            attributes.numRegs, " registers, ", attributes.maxThreadsPerBlock, " threads max, ",
            attributes.maxDynamicSharedSizeBytes, " B of dynamic shared memory max, ", attributes.localSizeBytes,
            " B of local memory)");
    }
}

} // namespace logquant::kernel::attention

//! Applies macro(T, D, G, axis) to every supported combination of one (T, axis) family.
#define LOGQUANT_DECODE_FAMILY(macro, T, axis)                                                                         \
    macro(T, 64, 32, axis) macro(T, 64, 64, axis) macro(T, 64, 128, axis) macro(T, 128, 32, axis)                      \
        macro(T, 128, 64, axis) macro(T, 128, 128, axis)

#define LOGQUANT_DECODE_INSTANTIATE(T, D, G, axis)                                                                     \
    template struct ::logquant::kernel::attention::DecodeLauncher<T, D, G, axis>;
