// SPDX-License-Identifier: Apache-2.0
// Fused decode attention over the mixed cache of docs/kv_format.md (§6): the newest n query tokens of every
// sequence attend over its sealed 2-bit blocks (dup_mask-ed slots skipped), its retained buffer (slots with
// retained_pos >= 0) and its tail ring, in one fp32 online softmax.
//
// Lengths (seq_len, num_sealed, block_table) are read on the device only: a launch needs no host sync and can be
// captured in a CUDA graph. Invalid lengths and page ids are clamped or skipped on the device, never dereferenced.
//
// Numerics: softmax and accumulation in fp32. With channel-axis keys the per-block key scale is folded into the
// query (q * scale rounded once to the cache dtype; |q * scale| must stay below 65504 for float16) and the
// per-token value scale into the probabilities (p * scale rounded once), so results match the spec's single
// softmax within the cache dtype's rounding (tests/ops/test_decode_attention.py). Design notes and measured numbers: cpp/include/logquant/attention/decodeAttentionKernel.cuh.
#pragma once

#include "logquant/kvCacheView.h"

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace logquant::kernel
{

//! Everything one launch reads and writes. Pointers are device pointers; nothing here owns memory.
struct DecodeAttentionParams
{
    //! One layer's cache, layout and dtypes of docs/kv_format.md §4. Supported: headDim 64 or 128, groupSize 32,
    //! 64 or 128, both key axes, float16 or bfloat16. retainedPos/retainedK/retainedV may be null only when
    //! retainedCapacity == 0. Every pointer must be 16-byte aligned.
    KvCacheView cache;
    //! Queries, cache dtype, [batch, numQueryHeads, numQueries, headDim], contiguous, post-RoPE. Query token t of
    //! sequence b is position seq_len[b] - numQueries + t; it must be in the tail.
    void const* q{nullptr};
    //! Output, cache dtype, [batch, numQueryHeads, numQueries, headDim], contiguous. Every element is written.
    void* out{nullptr};
    int32_t numQueryHeads{0}; //!< Hq, a multiple of cache.geometry.numKvHeads; head j reads KV head j / (Hq / H)
    int32_t numQueries{1};    //!< n in [1, kMAX_QUERIES], causal among the newest tail positions
    float scale{0.0F};        //!< softmax scale, > 0 (1/sqrt(headDim) for standard attention)
    //! Scratch of getDecodeAttentionWorkspaceSize() bytes, 16-byte aligned, on the launch's device. Must be all
    //! zeros before its first launch; every completed launch leaves it zeroed again (split-K counters).
    void* workspace{nullptr};
    size_t workspaceBytes{0};

    static constexpr int32_t kMAX_QUERIES = 8;
};

//! Bytes of workspace a launch with these shapes needs on the current device (depends on its SM count).
//! @throws logquant::Error if the shapes are unsupported (see canImplementDecodeAttention).
size_t getDecodeAttentionWorkspaceSize(KvGeometry const& geometry, int32_t numQueryHeads, int32_t numQueries);

//! Whether launchDecodeAttention supports these shapes and types (pointers aside). noexcept; on false, `reason`
//! (if not null) receives a static description of the first problem found.
bool canImplementDecodeAttention(
    KvGeometry const& geometry, int32_t numQueryHeads, int32_t numQueries, char const** reason = nullptr) noexcept;

//! Enqueues the attention on `stream`; no host synchronization, safe to capture in a CUDA graph.
//! @throws logquant::Error naming the argument when a shape, dtype, pointer, alignment, the scale or the workspace
//!         size is invalid, and on a CUDA launch error.
void launchDecodeAttention(DecodeAttentionParams const& params, cudaStream_t stream);

} // namespace logquant::kernel
