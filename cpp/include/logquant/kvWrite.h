// SPDX-License-Identifier: Apache-2.0
// The write path of the cache: bulk prefill and one-token decode append, in the layout of docs/kv_format.md.
// Both produce exactly the state that logquant_trt/reference (LayerKVState + to_paged) produces for the same
// tokens; tests/ops/test_kv_write.py checks it byte for byte.
#pragma once

#include "logquant/kvCacheView.h"
#include "logquant/policyParams.h"

#include <cuda_runtime_api.h>

#include <cstdint>

namespace logquant::kernel
{

//! Arguments of launchQuantizePrefill.
struct QuantizePrefillParams
{
    //! The layer's cache; every tensor is written except block_table, which the caller fills beforehand with a
    //! page for each block the prefill seals (block n of sequence b at blockTable[b, n]). dtype is the cache dtype.
    KvCacheView cache;
    PolicyParams policy;
    //! Post-RoPE keys and values, cache dtype, [B, H, maxLength, D] contiguous; rows at or past lengths[b] are
    //! not read.
    void const* k{nullptr};
    void const* v{nullptr};
    //! int32 [B], device memory: tokens of each sequence, each in [0, maxLength].
    int32_t const* lengths{nullptr};
    int32_t maxLength{0}; //!< dim 2 of k and v
};

//! Prefill of a fresh cache: writes seq_len = lengths, num_sealed, the sealed pages (codes, params, dup_mask) of
//! blocks 0..num_sealed-1, the tail ring and every retained slot (docs/kv_format.md §4-§5). The sealed prefix,
//! LogQuant's sparse set and OTT's pool are those of the reference's prefill rule (OTT traced over the blocks
//! in position order). Asynchronous on `stream`; no host synchronization.
//! @throws logquant::Error on an unsupported geometry (D not 64/128, G not 32/64/128, dtype), a policy that does
//!         not match the geometry (tail or retained capacity too small, W not a multiple of G), null pointers,
//!         maxLength beyond the tail capacity under the fp16 policy, or a CUDA launch failure.
void launchQuantizePrefill(QuantizePrefillParams const& params, cudaStream_t stream);

//! Arguments of launchAppendDecode.
struct AppendDecodeParams
{
    //! The layer's cache after a prefill or earlier appends; the pages of blocks this step may seal (block
    //! num_sealed[b] .. num_sealed[b] + W/G - 1) must already be in block_table.
    KvCacheView cache;
    PolicyParams policy;
    //! The new token's post-RoPE key and value, cache dtype, [B, H, 1, D] contiguous.
    void const* kNew{nullptr};
    void const* vNew{nullptr};
};

//! One decode step for every sequence: seq_len += 1, the token goes to ring slot (seq_len - 1) % T, then the cache
//! is compacted as the reference does: KIVI/OTT seal the block that left the window, LogQuant moves W tokens
//! out of its window (thinning the sparse set, clearing dup_mask bits of dropped positions, shadowing entries
//! held by the pool), OTT traces its pool at each seal. All decisions are made on the device from seq_len,
//! num_sealed and the retained regions: no host sync, capturable in a CUDA graph. Two kernels on `stream`.
//! The fp16 policy only writes the ring (it holds T tokens at most).
//! @throws logquant::Error on the same geometry/policy errors as launchQuantizePrefill, or a launch failure.
void launchAppendDecode(AppendDecodeParams const& params, cudaStream_t stream);

} // namespace logquant::kernel
