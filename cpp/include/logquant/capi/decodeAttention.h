// SPDX-License-Identifier: Apache-2.0
// extern "C" face of logquant::kernel::launchDecodeAttention (cpp/include/logquant/decodeAttention.h), loaded from
// Python through ctypes (logquant_trt/ops/decode_attention.py). Every function returns a logquant::capi::Status;
// the message of a nonzero one is in logquant_last_error().
#pragma once

#include "logquant/capi/guard.h"
#include "logquant/kvCacheView.h"

#include <cstdint>

//! *bytes = getDecodeAttentionWorkspaceSize(*geometry, numQueryHeads, numQueries) on the current device.
LOGQUANT_CAPI int32_t logquant_decode_attention_workspace_size(
    logquant::KvGeometry const* geometry, int32_t numQueryHeads, int32_t numQueries, uint64_t* bytes);

//! Enqueues decode attention on `stream` (a cudaStream_t). q and out: cache dtype [B, Hq, n, D], contiguous;
//! workspace: workspaceBytes bytes, zeroed before its first use (launches leave it zeroed). See
//! logquant::kernel::DecodeAttentionParams for every argument.
LOGQUANT_CAPI int32_t logquant_decode_attention(logquant::KvCacheView const* cache, void const* q, void* out,
    int32_t numQueryHeads, int32_t numQueries, float scale, void* workspace, uint64_t workspaceBytes, void* stream);
