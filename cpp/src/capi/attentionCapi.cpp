// SPDX-License-Identifier: Apache-2.0
#include "logquant/capi/decodeAttention.h"
#include "logquant/decodeAttention.h"

LOGQUANT_CAPI int32_t logquant_decode_attention_workspace_size(
    logquant::KvGeometry const* geometry, int32_t numQueryHeads, int32_t numQueries, uint64_t* bytes)
{
    return logquant::capi::guard([&] {
        LOGQUANT_CHECK(geometry != nullptr && bytes != nullptr, "geometry and bytes must not be null");
        *bytes = logquant::kernel::getDecodeAttentionWorkspaceSize(*geometry, numQueryHeads, numQueries);
    });
}

LOGQUANT_CAPI int32_t logquant_decode_attention(logquant::KvCacheView const* cache, void const* q, void* out,
    int32_t numQueryHeads, int32_t numQueries, float scale, void* workspace, uint64_t workspaceBytes, void* stream)
{
    return logquant::capi::guard([&] {
        LOGQUANT_CHECK(cache != nullptr, "cache must not be null");
        logquant::kernel::DecodeAttentionParams params;
        params.cache = *cache;
        params.q = q;
        params.out = out;
        params.numQueryHeads = numQueryHeads;
        params.numQueries = numQueries;
        params.scale = scale;
        params.workspace = workspace;
        params.workspaceBytes = workspaceBytes;
        logquant::kernel::launchDecodeAttention(params, static_cast<cudaStream_t>(stream));
    });
}
