// SPDX-License-Identifier: Apache-2.0
// C API of the write path (liblogquant_kernels.so), for ctypes: logquant_trt/ops/kv_write.py.
// Each function returns 0 on success, else a logquant::capi::Status whose message is in logquant_last_error().
// Structs are passed by pointer; their ctypes mirrors are in logquant_trt/ops/_cache_view.py.
#pragma once

#include "logquant/capi/guard.h"
#include "logquant/kvCacheView.h"
#include "logquant/policyParams.h"

#include <cstdint>

//! logquant::kernel::launchQuantizePrefill. k, v: cache dtype [B, H, maxLength, D]; lengths: int32 [B] on the
//! device; stream: a cudaStream_t (0 = the legacy default stream).
LOGQUANT_CAPI int32_t logquant_quantize_prefill(logquant::KvCacheView const* cache, logquant::PolicyParams const* policy,
    void const* k, void const* v, int32_t const* lengths, int32_t maxLength, void* stream);

//! logquant::kernel::launchAppendDecode. kNew, vNew: cache dtype [B, H, 1, D].
LOGQUANT_CAPI int32_t logquant_append_decode(logquant::KvCacheView const* cache, logquant::PolicyParams const* policy,
    void const* kNew, void const* vNew, void* stream);
