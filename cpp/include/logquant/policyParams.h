// SPDX-License-Identifier: Apache-2.0
// One layer's retention policy as the write kernels see it (docs/kv_format.md §4.3-§5), and the geometry it implies.
// logquant_trt/ops/_cache_view.py builds it from a LogQuantConfig (policy_params).
#pragma once

#include "logquant/kvFormat.h"

#include <cstdint>

namespace logquant
{

//! Plain values, no pointers: passed by value to kernels and mirrored by ctypes.
struct PolicyParams
{
    Policy policy{Policy::kKIVI};
    int32_t residual{0};      //!< R: KIVI/OTT window (unused by LogQuant policies)
    int32_t window{0};        //!< W: LogQuant window, a multiple of G (unused by KIVI/OTT)
    int32_t sinkTokens{0};    //!< n: positions [0, n) pinned for every policy
    int32_t poolSize{0};      //!< k of THIS layer: 0 when the layer is below pool_skip_layers or has no pool
    int32_t poolSlots{0};     //!< slots of the pool region: config.pool_size for OTT policies on every layer, else 0
    int32_t extraPoolSize{0}; //!< E: slots of the extra region and the extra pool's capacity (OTT policies), else 0
};

//! First slot of each region of the retained buffer (docs/kv_format.md §4.4); end = slots used by the regions.
struct RetainedRegions
{
    int32_t sinks{0};
    int32_t sparse{0};
    int32_t pool{0};
    int32_t extra{0};
    int32_t end{0};
};

constexpr bool usesLogWindow(Policy policy)
{
    return policy == Policy::kLOGQUANT || policy == Policy::kLOGQUANT_OTT;
}

constexpr bool usesOutlierPool(Policy policy)
{
    return policy == Policy::kOTT || policy == Policy::kLOGQUANT_OTT;
}

constexpr RetainedRegions retainedRegions(PolicyParams const& p)
{
    RetainedRegions r{};
    r.sinks = 0;
    r.sparse = p.sinkTokens;
    r.pool = r.sparse + (usesLogWindow(p.policy) ? p.window : 0);
    r.extra = r.pool + p.poolSlots;
    r.end = r.extra + p.extraPoolSize;
    return r;
}

//! T = ceil((window_max + G) / G) * G, window_max = 2W (LogQuant) or R (KIVI/OTT). docs/kv_format.md §4.3.
constexpr int32_t tailCapacity(PolicyParams const& p, int32_t groupSize)
{
    int32_t const windowMax = usesLogWindow(p.policy) ? 2 * p.window : p.residual;
    return (windowMax + groupSize + groupSize - 1) / groupSize * groupSize;
}

} // namespace logquant
