// SPDX-License-Identifier: Apache-2.0
// What the host dispatcher (cpp/src/attention/decodeAttention.cu) needs to know about the decode-attention kernels
// without seeing them: the launch constants, the kernel's parameter block, and the per-instantiation launcher,
// declared here and defined (and explicitly instantiated) only in decodeAttention{Half,Bf16}{Channel,Token}.cu.
// NOTE(k1): keeping the definitions out of the dispatcher's translation unit matters: an inline launcher there
// instantiated a second copy of the kernel, and cudaFuncSetAttribute then configured the copy that was not launched.
#pragma once

#include "logquant/kvCacheView.h"
#include "logquant/kvFormat.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace logquant::kernel::attention
{

constexpr int32_t kWARPS = 4;
constexpr int32_t kTHREADS = kWARPS * 32;

constexpr int32_t kQUERY_TILE = 8;        //!< query rows per CTA: the mma N dimension
constexpr int32_t kTILE_TOKENS = 64;      //!< tokens per quantized compute tile (4 score m-tiles)
constexpr int32_t kFP_TILE_TOKENS = 16;   //!< tokens per full-precision tile (1 score m-tile)
constexpr int32_t kMAX_SPLITS = 256;      //!< caps the splits per (b, h, qt) (workspace size)

// CTA shapes. Deep: three CTAs per SM, three pipeline stages (two at G = 128), 168 registers; the default. Shallow:
// four CTAs per SM, two stages, 128 registers (some spill in the hot loop); only for grids of one split per
// (b, h, qt) that take more than one wave of deep CTAs. NOTE(k1): H100, Llama-3-8B heads, B=64 L=16k (512 CTAs,
// 396 deep slots): shallow 260 us against deep 295 us; shallow everywhere would cost B=8 L=32k 80.4 against
// 79.2 us and B=1 L=32k 31.9 against 28.4 us.
constexpr int32_t kDEEP_CTAS_PER_SM = 3;
constexpr int32_t kSHALLOW_CTAS_PER_SM = 4;

//! Everything the kernel reads; built and checked by the host launcher.
struct DecodeKernelParams
{
    KvCacheView cache;
    void const* q;           //!< [B, Hq, n, D]
    void* out;               //!< [B, Hq, n, D]
    int32_t numQueryHeads;   //!< Hq
    int32_t numQueries;      //!< n
    int32_t groupRatio;      //!< r = Hq / H
    int32_t queryTiles;      //!< ceil(r * n / 8)
    int32_t numSplits;       //!< CTAs per (b, h, qt)
    int32_t unitsPerSplit;   //!< pipeline units (1 block, or 2 when G = 32) per split
    float scaleLog2;         //!< softmax scale * log2(e): scores live in the exp2 domain
    int32_t* counters;       //!< [B * H * queryTiles], zero between launches
    float* partialMl;        //!< [B * H * queryTiles, numSplits, 8, 2] (max, sum)
    float* partialO;         //!< [B * H * queryTiles, numSplits, 8, D] unnormalized
};

//! Host side of one instantiation (dtype T, head dim kD, group size kG, key axis kAXIS).
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
struct DecodeLauncher
{
    //! CTAs of the kernel of shape ctasPerSmShape (kDEEP_CTAS_PER_SM or kSHALLOW_CTAS_PER_SM) that fit on one SM of
    //! the current device (raises its shared-memory limit first); 0 when the shape is not built for this
    //! instantiation (its shared memory cannot fit four CTAs).
    static int32_t ctasPerSm(int32_t ctasPerSmShape);
    //! Sealed blocks per pipeline unit (2 when G = 32, else 1).
    static int32_t blocksPerUnit();
    static void launch(DecodeKernelParams const& params, int32_t ctasPerSmShape, dim3 grid, cudaStream_t stream);
};

} // namespace logquant::kernel::attention
