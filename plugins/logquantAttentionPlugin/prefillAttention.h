// SPDX-License-Identifier: Apache-2.0
// Causal attention of a prefill over its own full-precision keys and values (docs/kv_format.md §5: "a prefill
// attends over its unquantized K/V, then compacts once"). The kernel library has decode attention only, whose
// queries must sit in the tail of a compacted cache, so the plugin carries this small reference kernel.
// NOTE(plugin, #4): correct, not tuned: one warp per query row, keys read through L1/L2. Replace with a tiled
// (flash-attention style) kernel from cpp/ when prefill time matters.
#pragma once

#include "logquant/kvCacheView.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace logquant::plugin
{

struct PrefillAttentionParams
{
    void const* q{nullptr};              //!< dtype [batch, numQueryHeads, numTokens, headDim], contiguous
    void const* k{nullptr};              //!< dtype [batch, numKvHeads, numTokens, headDim], contiguous
    void const* v{nullptr};              //!< dtype [batch, numKvHeads, numTokens, headDim], contiguous
    int32_t const* lengths{nullptr};     //!< int32 [batch], device: valid tokens of each sequence, clamped to [0, numTokens]
    void* out{nullptr};                  //!< dtype [batch, numQueryHeads, numTokens, headDim]; rows >= lengths[b] are 0
    int32_t batch{0};                    //!< in [1, 65535]
    int32_t numQueryHeads{0};            //!< in [1, 65535], a multiple of numKvHeads; head j reads KV head j / (Hq / H)
    int32_t numKvHeads{0};
    int32_t numTokens{0};                //!< n >= 1
    int32_t headDim{0};                  //!< 64 or 128
    float scale{0.0F};                   //!< softmax scale, > 0
    DataType dtype{DataType::kFLOAT16};
};

//! softmax(scale · q kᵀ) v over positions s <= t < lengths[b] for query t, in fp32, rounded once to dtype.
//! @throws logquant::Error on an unsupported shape or dtype, a null pointer, or a CUDA launch error.
void launchPrefillAttention(PrefillAttentionParams const& params, cudaStream_t stream);

} // namespace logquant::plugin
