// SPDX-License-Identifier: Apache-2.0
// Public entry points of decode attention: argument checks, the split-K plan and the dispatch to the explicitly
// instantiated kernels (decodeAttention{Half,Bf16}{Channel,Token}.cu).
#include "logquant/attention/decodeKernelParams.cuh"
#include "logquant/common/dispatch.h"
#include "logquant/decodeAttention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <optional>
#include <string_view>

namespace logquant::kernel
{
namespace
{

using attention::kMAX_SPLITS;
using attention::kQUERY_TILE;
using attention::CtaShape;

//! A sealed-block slice shorter than this many pipeline units per warp spends more on its prologue and merge than
//! it gains in parallelism.
constexpr int32_t kMIN_UNITS_PER_WARP = 2;
//! The wide CTA shape is taken while its grid fills at least this fraction of what the deep grid fills: its
//! levelled warps make up for a few idle SMs (decodeKernelParams.cuh).
constexpr double kWIDE_MIN_RELATIVE_FILL = 0.9;
constexpr size_t kALIGN = 256;

size_t alignUp(size_t bytes)
{
    return (bytes + kALIGN - 1) / kALIGN * kALIGN;
}

//! LOGQUANT_DECODE_CTA_SHAPE=deep|shallow|wide forces a CTA shape (tests, benchmarks); unset or empty, the planner
//! picks one. Read on every plan, so that a process can switch.
std::optional<CtaShape> forcedCtaShape()
{
    char const* value = std::getenv("LOGQUANT_DECODE_CTA_SHAPE");
    if (value == nullptr || *value == '\0')
    {
        return std::nullopt;
    }
    std::string_view const name(value);
    for (CtaShape const shape : attention::kCTA_SHAPES)
    {
        if (name == attention::nameOf(shape))
        {
            return shape;
        }
    }
    LOGQUANT_CHECK(false, "LOGQUANT_DECODE_CTA_SHAPE must be deep, shallow or wide, got '", name, "'");
    return std::nullopt;
}

//! How one launch is cut into CTAs, and the workspace that needs.
struct DecodePlan
{
    int32_t groupRatio{1};
    int32_t queryTiles{1};
    CtaShape shape{CtaShape::kDEEP};
    int32_t numSplits{1};
    int32_t unitsPerSplit{1};
    bool clusterMerge{false}; //!< the splits merge through distributed shared memory, not the workspace
    size_t countersBytes{0};
    size_t mlBytes{0};
    size_t partialBytes{0};

    //! (splits, KV heads x query tiles, batch)
    dim3 grid(KvGeometry const& g) const
    {
        return dim3(static_cast<uint32_t>(numSplits), static_cast<uint32_t>(g.numKvHeads * queryTiles),
            static_cast<uint32_t>(g.batch));
    }

    size_t workspaceBytes() const
    {
        // Sized for the workspace merge even when the splits merge in a cluster: a plan made where the cluster fits
        // may run where it does not (MPS, another device of the same kind).
        return numSplits == 1 ? 0 : countersBytes + mlBytes + partialBytes;
    }
};

template <typename Fn>
void dispatchInstantiation(KvGeometry const& geometry, Fn&& fn)
{
    LOGQUANT_DISPATCH_DTYPE(geometry.dtype, T, {
        LOGQUANT_DISPATCH_HEAD_DIM(geometry.headDim, kD, {
            LOGQUANT_DISPATCH_GROUP_SIZE(geometry.groupSize, kG, {
                LOGQUANT_DISPATCH_KEY_AXIS(
                    geometry.keyAxis, kAXIS, { fn(attention::DecodeLauncher<T, kD, kG, kAXIS>{}); });
            });
        });
    });
}

char const* findProblem(KvGeometry const& g, int32_t numQueryHeads, int32_t numQueries)
{
    if (g.dtype != DataType::kFLOAT16 && g.dtype != DataType::kBFLOAT16)
        return "dtype must be float16 or bfloat16";
    if (g.keyAxis != KeyAxis::kCHANNEL && g.keyAxis != KeyAxis::kTOKEN)
        return "keyAxis must be channel or token";
    if (g.headDim != 64 && g.headDim != 128)
        return "headDim must be 64 or 128";
    if (g.groupSize != 32 && g.groupSize != 64 && g.groupSize != 128)
        return "groupSize must be 32, 64 or 128";
    if (g.batch < 1 || g.batch > 65535)
        return "batch must be in [1, 65535]";
    if (g.numKvHeads < 1)
        return "numKvHeads must be >= 1";
    if (g.numPages < 0 || g.maxBlocksPerSeq < 0 || g.retainedCapacity < 0)
        return "numPages, maxBlocksPerSeq and retainedCapacity must be >= 0";
    if (g.tailCapacity < g.groupSize || g.tailCapacity % g.groupSize != 0)
        return "tailCapacity must be a positive multiple of groupSize (docs/kv_format.md 4.3)";
    if (numQueryHeads < g.numKvHeads || numQueryHeads % g.numKvHeads != 0)
        return "numQueryHeads must be a positive multiple of numKvHeads";
    if (numQueries < 1 || numQueries > DecodeAttentionParams::kMAX_QUERIES)
        return "numQueries must be in [1, DecodeAttentionParams::kMAX_QUERIES]";
    int64_t const rows = static_cast<int64_t>(numQueryHeads / g.numKvHeads) * numQueries;
    if (static_cast<int64_t>(g.numKvHeads) * ((rows + kQUERY_TILE - 1) / kQUERY_TILE) > 65535)
        return "numKvHeads * ceil(numQueryHeads / numKvHeads * numQueries / 8) must be <= 65535";
    return nullptr;
}

DecodePlan makePlan(KvGeometry const& g, int32_t numQueryHeads, int32_t numQueries)
{
    char const* problem = findProblem(g, numQueryHeads, numQueries);
    LOGQUANT_CHECK(problem == nullptr, "decode attention: ", problem);
    int32_t device = 0;
    int32_t smCount = 0;
    LOGQUANT_CUDA_CHECK(cudaGetDevice(&device));
    LOGQUANT_CUDA_CHECK(cudaDeviceGetAttribute(&smCount, cudaDevAttrMultiProcessorCount, device));
    int32_t ctasPerSm[std::size(attention::kCTA_SHAPES)]{}; // by shape; 0 where not built or not fitting
    int32_t blocksPerUnit = 1;
    dispatchInstantiation(g, [&](auto launcher) {
        for (CtaShape const shape : attention::kCTA_SHAPES)
        {
            ctasPerSm[static_cast<int32_t>(shape)] = launcher.ctasPerSm(shape);
        }
        blocksPerUnit = launcher.blocksPerUnit();
    });
    int32_t const deepCtas = ctasPerSm[static_cast<int32_t>(CtaShape::kDEEP)];
    int32_t const shallowCtas = ctasPerSm[static_cast<int32_t>(CtaShape::kSHALLOW)];
    int32_t const wideCtas = ctasPerSm[static_cast<int32_t>(CtaShape::kWIDE)];

    DecodePlan plan;
    plan.groupRatio = numQueryHeads / g.numKvHeads;
    plan.queryTiles = (plan.groupRatio * numQueries + kQUERY_TILE - 1) / kQUERY_TILE;
    int64_t const slots = static_cast<int64_t>(g.batch) * g.numKvHeads * plan.queryTiles;
    int32_t const units = (g.maxBlocksPerSeq + blocksPerUnit - 1) / blocksPerUnit;
    // One wave: as many splits per (b, h, qt) as there are free CTA slots, but never so many that a warp gets
    // fewer than kMIN_UNITS_PER_WARP units of the longest possible sequence.
    auto splitsFor = [&](int32_t ctas, CtaShape shape) {
        int64_t splits = std::max<int64_t>(1, static_cast<int64_t>(smCount) * ctas / slots);
        splits = std::min<int64_t>(splits, std::max(1, units / (attention::warpsOf(shape) * kMIN_UNITS_PER_WARP)));
        return std::min<int64_t>(splits, kMAX_SPLITS);
    };
    auto waveFill = [&](int64_t splits, int32_t ctas) {
        return static_cast<double>(slots * splits) / (static_cast<double>(smCount) * ctas);
    };
    int64_t splits = 1;
    if (std::optional<CtaShape> const forced = forcedCtaShape())
    {
        int32_t const ctas = ctasPerSm[static_cast<int32_t>(*forced)];
        LOGQUANT_CHECK(ctas > 0, "LOGQUANT_DECODE_CTA_SHAPE=", attention::nameOf(*forced),
            ": that CTA shape is not built for this cache (dtype, head dim, group size, key axis) or does not fit on "
            "this device");
        plan.shape = *forced;
        splits = splitsFor(ctas, *forced);
    }
    else if (slots > static_cast<int64_t>(smCount) * deepCtas && shallowCtas > deepCtas)
    {
        // More (b, h, qt) than one wave of deep CTAs: every CTA is a whole slot, and the shallow shape runs more of
        // them at once (decodeKernelParams.cuh).
        plan.shape = CtaShape::kSHALLOW;
    }
    else
    {
        splits = splitsFor(deepCtas, CtaShape::kDEEP);
        if (wideCtas > 0 && slots <= static_cast<int64_t>(smCount) * wideCtas)
        {
            int64_t const wideSplits = splitsFor(wideCtas, CtaShape::kWIDE);
            if (waveFill(wideSplits, wideCtas) >= kWIDE_MIN_RELATIVE_FILL * std::min(1.0, waveFill(splits, deepCtas)))
            {
                plan.shape = CtaShape::kWIDE;
                splits = wideSplits;
            }
        }
    }
    plan.unitsPerSplit = std::max<int32_t>(1, (units + static_cast<int32_t>(splits) - 1) / static_cast<int32_t>(splits));
    plan.numSplits = units > 0 ? (units + plan.unitsPerSplit - 1) / plan.unitsPerSplit : 1;
    dim3 const grid = plan.grid(g);
    dispatchInstantiation(g, [&](auto launcher) { plan.clusterMerge = launcher.clusterMergeFits(plan.shape, grid); });
    plan.countersBytes = alignUp(static_cast<size_t>(slots) * sizeof(int32_t));
    plan.mlBytes = alignUp(static_cast<size_t>(slots) * plan.numSplits * kQUERY_TILE * 2 * sizeof(float));
    plan.partialBytes = alignUp(static_cast<size_t>(slots) * plan.numSplits * kQUERY_TILE * g.headDim * sizeof(float));
    return plan;
}

bool aligned(void const* ptr, uintptr_t alignment)
{
    return reinterpret_cast<uintptr_t>(ptr) % alignment == 0;
}

void checkTensor(void const* ptr, char const* name, bool required)
{
    if (!required)
    {
        return;
    }
    LOGQUANT_CHECK(ptr != nullptr, "decode attention: cache.", name, " is null");
    LOGQUANT_CHECK(aligned(ptr, 16), "decode attention: cache.", name, " must be 16-byte aligned");
}

} // namespace

bool canImplementDecodeAttention(
    KvGeometry const& geometry, int32_t numQueryHeads, int32_t numQueries, char const** reason) noexcept
{
    char const* problem = findProblem(geometry, numQueryHeads, numQueries);
    if (reason != nullptr)
    {
        *reason = problem;
    }
    return problem == nullptr;
}

size_t getDecodeAttentionWorkspaceSize(KvGeometry const& geometry, int32_t numQueryHeads, int32_t numQueries)
{
    return makePlan(geometry, numQueryHeads, numQueries).workspaceBytes();
}

void launchDecodeAttention(DecodeAttentionParams const& params, cudaStream_t stream)
{
    KvCacheView const& cache = params.cache;
    KvGeometry const& g = cache.geometry;
    DecodePlan const plan = makePlan(g, params.numQueryHeads, params.numQueries);
    bool const sealed = g.maxBlocksPerSeq > 0 && g.numPages > 0;
    checkTensor(cache.kCodes, "kCodes", sealed);
    checkTensor(cache.kParams, "kParams", sealed);
    checkTensor(cache.vCodes, "vCodes", sealed);
    checkTensor(cache.vParams, "vParams", sealed);
    checkTensor(cache.dupMask, "dupMask", sealed);
    checkTensor(cache.blockTable, "blockTable", g.maxBlocksPerSeq > 0);
    checkTensor(cache.numSealed, "numSealed", true);
    checkTensor(cache.seqLen, "seqLen", true);
    checkTensor(cache.tailK, "tailK", true);
    checkTensor(cache.tailV, "tailV", true);
    checkTensor(cache.retainedPos, "retainedPos", g.retainedCapacity > 0);
    checkTensor(cache.retainedK, "retainedK", g.retainedCapacity > 0);
    checkTensor(cache.retainedV, "retainedV", g.retainedCapacity > 0);
    LOGQUANT_CHECK(params.q != nullptr && aligned(params.q, 4), "decode attention: q must be non-null and 4-byte aligned");
    LOGQUANT_CHECK(
        params.out != nullptr && aligned(params.out, 2), "decode attention: out must be non-null and 2-byte aligned");
    LOGQUANT_CHECK(std::isfinite(params.scale) && params.scale > 0.0F, "decode attention: scale must be finite and > 0, got ",
        params.scale);
    size_t const needed = plan.workspaceBytes();
    LOGQUANT_CHECK(params.workspaceBytes >= needed, "decode attention: workspaceBytes=", params.workspaceBytes,
        " < getDecodeAttentionWorkspaceSize()=", needed);
    LOGQUANT_CHECK(needed == 0 || (params.workspace != nullptr && aligned(params.workspace, 16)),
        "decode attention: workspace must be non-null and 16-byte aligned");

    attention::DecodeKernelParams kp{};
    kp.cache = cache;
    kp.q = params.q;
    kp.out = params.out;
    kp.numQueryHeads = params.numQueryHeads;
    kp.numQueries = params.numQueries;
    kp.groupRatio = plan.groupRatio;
    kp.queryTiles = plan.queryTiles;
    kp.numSplits = plan.numSplits;
    kp.unitsPerSplit = plan.unitsPerSplit;
    kp.clusterMerge = plan.clusterMerge ? 1 : 0;
    kp.scaleLog2 = params.scale * 1.4426950408889634F;
    auto* ws = static_cast<uint8_t*>(params.workspace);
    if (needed > 0)
    {
        kp.counters = reinterpret_cast<int32_t*>(ws);
        kp.partialMl = reinterpret_cast<float*>(ws + plan.countersBytes);
        kp.partialO = reinterpret_cast<float*>(ws + plan.countersBytes + plan.mlBytes);
    }
    dispatchInstantiation(g, [&](auto launcher) { launcher.launch(kp, plan.shape, plan.grid(g), stream); });
}

} // namespace logquant::kernel
