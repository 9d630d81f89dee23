// SPDX-License-Identifier: Apache-2.0
#include "kvWriteLaunch.h"

#include "logquant/common/checks.h"

namespace logquant::kernel
{

void checkCacheAndPolicy(KvCacheView const& cache, PolicyParams const& policy)
{
    KvGeometry const& geo = cache.geometry;
    int32_t const g = geo.groupSize;
    LOGQUANT_CHECK(geo.batch >= 0 && geo.batch <= 65535, "batch must be in [0, 65535], got ", geo.batch);
    LOGQUANT_CHECK(geo.numKvHeads >= 1 && geo.numKvHeads <= 65535, "numKvHeads must be in [1, 65535], got ",
        geo.numKvHeads);
    LOGQUANT_CHECK(geo.headDim == 64 || geo.headDim == 128, "Unsupported head dim: ", geo.headDim);
    LOGQUANT_CHECK(g == 32 || g == 64 || g == 128, "Unsupported group size: ", g);
    LOGQUANT_CHECK(geo.dtype == DataType::kFLOAT16 || geo.dtype == DataType::kBFLOAT16,
        "Unsupported dtype: ", static_cast<int32_t>(geo.dtype));
    LOGQUANT_CHECK(geo.keyAxis == KeyAxis::kCHANNEL || geo.keyAxis == KeyAxis::kTOKEN,
        "Unsupported key axis: ", static_cast<int32_t>(geo.keyAxis));
    LOGQUANT_CHECK(geo.numPages >= 0 && geo.maxBlocksPerSeq >= 1, "numPages must be >= 0 and maxBlocksPerSeq >= 1, got ",
        geo.numPages, " and ", geo.maxBlocksPerSeq);

    auto const id = static_cast<int32_t>(policy.policy);
    LOGQUANT_CHECK(id >= static_cast<int32_t>(Policy::kFP16) && id <= static_cast<int32_t>(Policy::kLOGQUANT_OTT),
        "Unsupported policy: ", id);
    LOGQUANT_CHECK(policy.residual >= 0 && policy.sinkTokens >= 0, "residual and sinkTokens must be >= 0, got ",
        policy.residual, " and ", policy.sinkTokens);
    if (usesLogWindow(policy.policy))
    {
        // W % G == 0 keeps the window start on a block boundary (docs/kv_format.md §5.3); 2W ints of shared memory.
        LOGQUANT_CHECK(policy.window >= g && policy.window % g == 0 && policy.window <= 4096,
            "window must be a multiple of group size ", g, " in [", g, ", 4096], got ", policy.window);
    }
    if (usesOutlierPool(policy.policy))
    {
        LOGQUANT_CHECK(policy.poolSize >= 0 && policy.poolSize <= policy.poolSlots && policy.extraPoolSize >= 0,
            "need 0 <= poolSize <= poolSlots and extraPoolSize >= 0, got ", policy.poolSize, ", ", policy.poolSlots,
            ", ", policy.extraPoolSize);
        // Bounds of the pool state in shared memory (PoolState, decodeSharedWords).
        LOGQUANT_CHECK(policy.poolSlots <= 64 && policy.extraPoolSize <= 512,
            "need poolSlots <= 64 and extraPoolSize <= 512, got ", policy.poolSlots, " and ", policy.extraPoolSize);
    }
    else
    {
        LOGQUANT_CHECK(policy.poolSize == 0 && policy.poolSlots == 0 && policy.extraPoolSize == 0,
            "policy ", id, " has no outlier pool: poolSize, poolSlots and extraPoolSize must be 0");
    }
    int32_t const tail = tailCapacity(policy, g);
    LOGQUANT_CHECK(geo.tailCapacity % g == 0 && geo.tailCapacity >= tail, "tailCapacity must be a multiple of ", g,
        " and >= ", tail, " for this policy, got ", geo.tailCapacity);
    int32_t const slots = retainedRegions(policy).end;
    LOGQUANT_CHECK(geo.retainedCapacity >= slots, "retainedCapacity must be >= ", slots,
        " (sinks + sparse + pool + extra), got ", geo.retainedCapacity);

    void const* const pointers[] = {cache.kCodes, cache.kParams, cache.vCodes, cache.vParams, cache.dupMask,
        cache.blockTable, cache.numSealed, cache.seqLen, cache.tailK, cache.tailV, cache.retainedPos, cache.retainedK,
        cache.retainedV};
    for (void const* pointer : pointers)
    {
        LOGQUANT_CHECK(pointer != nullptr || geo.batch == 0, "every KvCacheView pointer must be set");
    }
}

} // namespace logquant::kernel
