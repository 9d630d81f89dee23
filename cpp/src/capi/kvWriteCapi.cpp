// SPDX-License-Identifier: Apache-2.0
#include "logquant/capi/kvWrite.h"

#include "logquant/common/checks.h"
#include "logquant/kvWrite.h"

LOGQUANT_CAPI int32_t logquant_quantize_prefill(logquant::KvCacheView const* cache, logquant::PolicyParams const* policy,
    void const* k, void const* v, int32_t const* lengths, int32_t maxLength, void* stream)
{
    return logquant::capi::guard([&] {
        LOGQUANT_CHECK(cache != nullptr && policy != nullptr, "cache and policy must not be null");
        logquant::kernel::QuantizePrefillParams params;
        params.cache = *cache;
        params.policy = *policy;
        params.k = k;
        params.v = v;
        params.lengths = lengths;
        params.maxLength = maxLength;
        logquant::kernel::launchQuantizePrefill(params, static_cast<cudaStream_t>(stream));
    });
}

LOGQUANT_CAPI int32_t logquant_append_decode(logquant::KvCacheView const* cache, logquant::PolicyParams const* policy,
    void const* kNew, void const* vNew, void* stream)
{
    return logquant::capi::guard([&] {
        LOGQUANT_CHECK(cache != nullptr && policy != nullptr, "cache and policy must not be null");
        logquant::kernel::AppendDecodeParams params;
        params.cache = *cache;
        params.policy = *policy;
        params.kNew = kNew;
        params.vNew = vNew;
        logquant::kernel::launchAppendDecode(params, static_cast<cudaStream_t>(stream));
    });
}
