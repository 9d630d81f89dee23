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

constexpr int32_t kQUERY_TILE = 8;        //!< query rows per CTA: the mma N dimension
constexpr int32_t kTILE_TOKENS = 64;      //!< tokens per quantized compute tile (4 score m-tiles)
constexpr int32_t kFP_TILE_TOKENS = 16;   //!< tokens per full-precision tile (1 score m-tile)
constexpr int32_t kMAX_SPLITS = 256;      //!< caps the splits per (b, h, qt) (workspace size)

// CTA shapes (NOTE(k1): H100, Llama-3-8B heads, kivi, G = 64, `logquant-trt bench kernels`).
// - Deep: three CTAs of 4 warps per SM, three pipeline stages (two at G = 128), 168 registers.
// - Shallow: four CTAs of 4 warps per SM, two stages, 128 registers (some spill in the hot loop); only for grids of
//   one split per (b, h, qt) that take more than one wave of deep CTAs. B=64 L=16k (512 CTAs, 396 deep slots):
//   shallow 260 us against deep 295 us.
// - Wide: one CTA of 12 warps per SM, three stages, 168 registers, warps in lockstep every kLOCKSTEP units; for
//   split grids whose slots fill the SMs. The warp schedulers favour the oldest CTA of an SM, so with three CTAs per
//   SM the first finished its slice up to 30 us before the last, and the SM drained. One CTA lets a named barrier
//   keep its warps level. A barrier every 3 units: B=8 L=32k 72.0 us against deep 76.9 us, B=16 L=32k 128 against
//   139 us, B=8 L=128k 243 against 258 us. Every 1, 2, 4, 5, 6, 8 units: 75.6, 73.3, 72.6, 73.2, 74.9, 75.4 us at
//   B=8 L=32k; two CTAs of 6 warps per SM 75.6 us. A wide grid that leaves SMs idle loses: B=12 (96 slots on 132
//   SMs) 121 us against deep 109 us.
enum class CtaShape : int32_t
{
    kDEEP,
    kSHALLOW,
    kWIDE,
};

template <CtaShape kSHAPE>
struct CtaShapeTraits;

template <>
struct CtaShapeTraits<CtaShape::kDEEP>
{
    static constexpr int32_t kWARPS = 4;
    static constexpr int32_t kCTAS_PER_SM = 3;
    static constexpr int32_t kLOCKSTEP = 0; //!< units between the warps' barriers; 0: none
};

template <>
struct CtaShapeTraits<CtaShape::kSHALLOW>
{
    static constexpr int32_t kWARPS = 4;
    static constexpr int32_t kCTAS_PER_SM = 4;
    static constexpr int32_t kLOCKSTEP = 0;
};

template <>
struct CtaShapeTraits<CtaShape::kWIDE>
{
    static constexpr int32_t kWARPS = 12;
    static constexpr int32_t kCTAS_PER_SM = 1;
    static constexpr int32_t kLOCKSTEP = 3;
};

constexpr CtaShape kCTA_SHAPES[] = {CtaShape::kDEEP, CtaShape::kSHALLOW, CtaShape::kWIDE};

//! The shape's name, as LOGQUANT_DECODE_CTA_SHAPE spells it.
constexpr char const* nameOf(CtaShape shape)
{
    return shape == CtaShape::kDEEP ? "deep" : shape == CtaShape::kSHALLOW ? "shallow" : "wide";
}

//! Warps per CTA of a shape known only at run time.
constexpr int32_t warpsOf(CtaShape shape)
{
    switch (shape)
    {
    case CtaShape::kDEEP: return CtaShapeTraits<CtaShape::kDEEP>::kWARPS;
    case CtaShape::kSHALLOW: return CtaShapeTraits<CtaShape::kSHALLOW>::kWARPS;
    case CtaShape::kWIDE: return CtaShapeTraits<CtaShape::kWIDE>::kWARPS;
    }
    return 0;
}

constexpr int32_t kMERGE_THREADS = 128; //!< threads of the last CTA that merge the split partials

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
    int32_t clusterMerge;    //!< 1: the splits of (b, h, qt) are one cluster and merge in shared memory
    float scaleLog2;         //!< softmax scale * log2(e): scores live in the exp2 domain
    int32_t* counters;       //!< [B * H * queryTiles], zero between launches
    float* partialMl;        //!< [B * H * queryTiles, numSplits, 8, 2] (max, sum)
    float* partialO;         //!< [B * H * queryTiles, numSplits, 8, D] unnormalized
};

//! Host side of one instantiation (dtype T, head dim kD, group size kG, key axis kAXIS).
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
struct DecodeLauncher
{
    //! CTAs of the given shape that fit on one SM of the current device (raises the kernel's shared-memory limit
    //! first); 0 when the shape is not built for this instantiation (its shared memory does not fit).
    static int32_t ctasPerSm(CtaShape shape);
    //! Sealed blocks per pipeline unit (2 when G = 32, else 1).
    static int32_t blocksPerUnit();
    //! Whether the grid's splits can merge through distributed shared memory: the shape merges in clusters of
    //! grid.x CTAs (2 to kMAX_CLUSTER_SPLITS), the device launches clusters, and all grid.y * grid.z of them fit at
    //! once (a second wave would double the time).
    static bool clusterMergeFits(CtaShape shape, dim3 grid);
    static void launch(DecodeKernelParams const& params, CtaShape shape, dim3 grid, cudaStream_t stream);
};

} // namespace logquant::kernel::attention
