// SPDX-License-Identifier: Apache-2.0
// Fused split-K decode attention over the mixed 2-bit cache (docs/kv_format.md §6). Device code only; the host
// side is cpp/src/attention/decodeAttention.cu.
//
// Design (NOTE(k1)):
// - Work: one CTA of 4 or 12 warps per (sequence b, KV head h, query tile qt, split). A query tile is up to 8 query
//   rows (row = token * r + head-in-group), so one read of a KV head serves all r query heads of its group: the rows
//   are the N = 8 columns of every mma. Each warp owns a slice of the split's sealed blocks and, interleaved over
//   all warps of (b, h, qt), a few 16-token tiles of the full-precision segments (retained buffer, tail ring). The
//   assignment is fixed, so the summation order, and with it the result, does not depend on timing or the batch
//   (NOTE(k1): claiming tiles at run time made generation differ between batched and solo runs).
// - Sealed blocks stream through a per-warp cp.async pipeline (no CTA barrier in the hot loop). Scores are
//   computed transposed, S^T = K . Q^T (M = 16 tokens, N = 8 query rows), so the 2-bit key codes are the A
//   operand straight from ldmatrix.trans of the [D][G/4] code rows, and the per-channel key scale is folded into
//   the query: q'_d = q_d * scale_d per block, plus a per-block bias sum_d q_d * min_d (one mma chain). Values are
//   handled the same way transposed: O^T = V^T . P'^T with the per-token value scale folded into P' (one B
//   fragment per channel group) and sum_t p_t * min_t accumulated in fp32. movmatrix turns the score accumulator
//   into the B operand of the value product without shared memory. codeFragments.cuh turns codes into operands.
// - The full-precision segments use the same online softmax; their operands are plain ldmatrix of the tiles.
// - Merge: the partial results of a CTA (2 per warp) are merged in shared memory; with several splits, the wide
//   shape's CTAs of (b, h, qt) form a thread-block cluster when it fits (2 to 8 splits, one wave), and rank 0 merges
//   the others' partials from its shared memory (mergeSplitsInCluster). Otherwise each CTA writes (O, max, sum) to
//   the workspace and the last CTA of (b, h, qt) (atomic counter, which it resets) merges them into the output
//   (mergeSplits: one round trip to L2 for up to 8 splits). One launch, no host sync: lengths are read on the device.
// - CTA shape (decodeKernelParams.cuh): one CTA of 12 warps per SM when the split grid fills the SMs, its warps kept
//   level by a named barrier every few units; else three CTAs of 4 warps per SM with three stages, or four with two
//   stages when one split per (b, h, qt) already takes more than one wave.
//
// Token order inside a 64-token tile (fixed by the code packing): lane (g, i) owns tokens 8g .. 8g+7; row g of
// score m-tile mu is token 8g + mu, row g+8 is token 8g + mu + 4.
//
// Measured (H100 80GB HBM3, fp16, G = 64, channel-axis keys, Llama-3-8B heads; `logquant-trt bench kernels`,
// L2 flushed by a read before each call, copy = 3.03 TB/s read+write): B=8 L=32k 67.7-68.4 us = 5.2x torch SDPA
// (355 us), 82% of copy on the bytes read (LogQuant+OTT 68.8-69.2 us, 5.1x, 82%); B=8 L=128k 233-234 us = 5.9x,
// 95%; B=64 L=16k 247.5 us = 5.6x, 92%.
// Where B=8 L=32k spends its time in the wide shape (NOTE(k1): per-warp %globaltimer stamps, us after the first warp
// starts; the event-timed call is ~3.6 us longer, launch and completion):
// - All 128 CTAs start within 0.2 us; the first unit's data lands at 4.4-7.5 us (each warp's first unit alone; when
//   every warp asked for three units at once, at 2.9-9.7 us, and warps served late stayed late).
// - The last unit's data lands at 54-63 us (median 57.4: the stream runs at ~98% of copy); the loop ends ~2 us later
//   (the last unit's compute); the full-precision tiles, the CTA merge and the cluster merge bring the last CTA to
//   ~67 us.
// - So what keeps B=8 L=32k from 85% of copy is the spread of the stream's end (median to last ~5.7 us: 511 units of
//   a (b, h) over 24 warps leave 7 warps a 22nd unit, ~2.7 us, and the SMs differ by ~3 us, partly the same SMs from
//   call to call) and the ~4 us after the last unit. An SM computes a unit in ~2.5 us with no memory stalls against
//   ~2.7 us in the stream, which leaves a late SM little room to catch up.
// - Tried and slower: pacing CTAs against a global progress counter (an atomic a unit: +6 us); 13 warps a CTA (the
//   register cap falls to 128: +10 us); the code shift as IMAD.HI (+1 us); a barrier every 2 or 4 units, or two
//   stages (within +-0.5 us). Also no better: the long warps' last unit pulled into L2 4, 6 or 10 units ahead
//   (+0-0.5 us); the leftover units of a split halved over twice the warps (m-tiles 0-1 and 2-3: +0.7-2 us, +2-4 us
//   at L=128k); the full-precision tiles first, folded into the sealed state (LogQuant+OTT -0.5-1 us, KIVI +0.5 us,
//   L=128k +4 us); a warp's first full-precision tile copied into the two stages its loop frees at the end, the
//   sealed piece written after it (141 -> 158 registers: +0.6 us, L=128k +1.5-2 us; but SmolLM2 B=8 L=4k -0.9-1.5
//   us and B=64 L=16k KIVI -2.3 us).
// - What is left to take (NOTE(k1): variants of this kernel, A/B in one run, B=8 L=32k KIVI): no unit computed at
//   all 64.7 us (87% of copy), half of them computed 68.0 (no change); no full-precision tiles -0.5-1 us; no CTA or
//   cluster merge -0.7-1.5 us; none of the three (the prologue and the stream alone) 60.1 us (93%). A copy moving the
//   same 170 MB takes 57.9 us. So the bulk of the math is hidden; what shows is the last unit's compute after its
//   data lands and the epilogue behind it (full-precision round trip, CTA merge, cluster barrier).
// - Between B=8 L=32k and L=64k the time grows at 98% of copy; with the sealed copies removed (compute on stale
//   stages) the fixed part is the same (61 us at 32k, 107 at 64k), and halving the compute takes only 2 us off.
// Where B=8 L=32k spent its time with three CTAs of 4 warps per SM, before the wide shape (NOTE(k1): variants of
// this kernel timed the same way, per-CTA %globaltimer stamps, ncu):
// - It is bound by compute coupled to the stream, not by bandwidth. Copies removed (compute on stale stages):
//   58 us. Compute removed: 68 us. Both: 77 us. Computing only 3 of 4 (1 of 2) units: 74.5 (71.5) us, so every
//   quarter of the sealed-block compute adds ~3 us; the tail after the sealed blocks (full-precision tiles 0.8 us,
//   split-K publication and merge 2.4 us) ~3 us. The hot loop is ~930 instructions per 64 tokens (30% LOP3:
//   code expansion, 1 ALU op per 2 codes) and issues at ~0.54 IPC per scheduler with 12 warps/SM (stalls: fixed
//   latency, ALU throttle, issue contention). A variant with ~10% fewer instructions (GQA <= 4 rows on both column
//   halves of the mma) did not move it: the reduction has to be far larger to show.
// - The stream alone: the same bytes read by per-warp cp.async pipelines of 5 KB units with no compute take 62 us
//   (86% of copy), torch.sum over them 63 us (89%), a copy moving them 58 us. Pipeline depth (2 or 3 stages),
//   page order (random or sequential), CTA-to-head mapping and TMA bulk copies all measured within 1 us of that;
//   a dependent page-id load per unit costs 9 us (hence the page windows), grid-wide unit claiming 3-4 us.
// - With ~15 MB in flight the memory latency under load is ~6 us; static slices finished up to ~30 us apart (older
//   CTAs on an SM go first), and the SMs drained as their CTAs finished: the wide shape's one CTA of 12 warps in
//   lockstep took 4 us off (decodeKernelParams.cuh). A split-K merge through
//   thread-block clusters cannot run here (64 clusters of 6 CTAs do not fit: cudaOccupancyMaxActiveClusters = 62).
// - In the wide shape, cutting instructions did not move B=8 L=32k beyond the run-to-run spread (+-0.5 us): no
//   cross-lane max when no lane's tile max grows, p rounded to T once and scaled per group as pairs, one FFMA per
//   score, no register copies for the bias mma. 16 warps of two stages (128 registers) were 1.5-2 us slower.
#pragma once

#include "logquant/attention/codeFragments.cuh"
#include "logquant/attention/decodeKernelParams.cuh"
#include "logquant/attention/warpMma.cuh"
#include "logquant/kvCacheView.h"
#include "logquant/kvFormat.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace logquant::kernel::attention
{

constexpr float kNEG_INF = -__builtin_huge_valf();

//! Shared-memory layout and shapes of one instantiation; kSHAPE is the CTA shape (decodeKernelParams.cuh).
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS, CtaShape kSHAPE>
struct DecodeTraits
{
    static constexpr int32_t kWARPS = CtaShapeTraits<kSHAPE>::kWARPS;
    static constexpr int32_t kTHREADS = kWARPS * 32;
    static constexpr int32_t kLOCKSTEP = CtaShapeTraits<kSHAPE>::kLOCKSTEP;
    static constexpr bool kCHANNEL_KEYS = kAXIS == KeyAxis::kCHANNEL;
    static constexpr int32_t kBLOCKS_PER_UNIT = kG == 32 ? 2 : 1; //!< a pipeline unit covers >= 64 tokens
    static constexpr int32_t kUNIT_TOKENS = kG * kBLOCKS_PER_UNIT;
    static constexpr int32_t kSUB_TILES = kUNIT_TOKENS / kTILE_TOKENS;
    static constexpr int32_t kC = kG < kD ? kG : kD;     //!< channels per per-token group
    static constexpr int32_t kGROUPS = kD / kC;          //!< per-token groups per token
    static constexpr int32_t kCHUNKS = kD / 64;          //!< 16-byte chunks of a code row (64 channels each)
    static constexpr int32_t kKSTEPS = kD / 16;          //!< mma k-steps over the channels

    static constexpr int32_t kCODE_BYTES = kUNIT_TOKENS * kD / 4;
    static constexpr int32_t kKPARAM_BYTES
        = kCHANNEL_KEYS ? kBLOCKS_PER_UNIT * kD * 4 : kUNIT_TOKENS * kGROUPS * 4;
    static constexpr int32_t kVPARAM_BYTES = kUNIT_TOKENS * kGROUPS * 4;
    static constexpr int32_t kK_CODES = 0;
    static constexpr int32_t kV_CODES = kK_CODES + kCODE_BYTES;
    static constexpr int32_t kK_PARAMS = kV_CODES + kCODE_BYTES;
    static constexpr int32_t kV_PARAMS = kK_PARAMS + kKPARAM_BYTES;
    static constexpr int32_t kMASK = kV_PARAMS + kVPARAM_BYTES;
    //! Stages start on 128-byte lines: cp.async into a line-straddling destination sends each 512-byte row of
    //! codes to L2 as twice the sector requests (ncu: 30% excess sectors; NOTE(k1): aligning took B=64 L=16k from
    //! 259 to 249 us and B=1 L=32k from 21.0 to 20.2 us).
    static constexpr int32_t kSTAGE_BYTES = (kMASK + 16 + 127) / 128 * 128;
    static constexpr int32_t kSTAGES = (kSHAPE == CtaShape::kSHALLOW || kG == 128) ? 2 : 3;

    static constexpr int32_t kFP_ROW_UNITS = kD / 8; //!< 16-byte units of a full-precision row
    static constexpr int32_t kFP_TILE_BYTES = kFP_TILE_TOKENS * kD * 2; //!< one of K, V
    static constexpr int32_t kPIECE_BYTES = kQUERY_TILE * (kD + 2) * 4; //!< O [8][D] then (max, sum) [8][2]

    static constexpr int32_t maxOf(int32_t a, int32_t b)
    {
        return a > b ? a : b;
    }

    // Per warp: the quantized pipeline; later piece 0 (sealed blocks' result) + one full-precision stage (K, V);
    // at the end pieces 0 and 1.
    static constexpr int32_t kWARP_BYTES
        = (maxOf(kSTAGES * kSTAGE_BYTES, kPIECE_BYTES + 2 * kFP_TILE_BYTES) + 127) / 128 * 128;
    static constexpr int32_t kSMEM_BYTES = kWARPS * kWARP_BYTES;
    //! Most splits of one (b, h, qt) that merge through distributed shared memory, as one thread-block cluster
    //! (mergeSplitsInCluster): rank 0 then holds an inbox of one piece per other split after the warps' memory. Only
    //! the wide shape, whose CTA has an SM to itself; 8 is the portable cluster size.
    static constexpr int32_t kMAX_CLUSTER_SPLITS = kSHAPE == CtaShape::kWIDE ? 8 : 1;

    //! Dynamic shared memory of a launch whose splits merge in clusters of clusterSplits CTAs (1: no cluster).
    static constexpr int32_t smemBytes(int32_t clusterSplits)
    {
        return kSMEM_BYTES + (clusterSplits - 1) * kPIECE_BYTES;
    }
    //! The register cap follows: 168 at 12 warps per SM, 128 at 16.
    static constexpr int32_t kMIN_CTAS = CtaShapeTraits<kSHAPE>::kCTAS_PER_SM;

    static_assert(kSTAGE_BYTES % 16 == 0 && kPIECE_BYTES % 16 == 0, "16-byte aligned regions");
};

//! 16-byte unit of token row t, chunk c, in a swizzled code or value tile: rows read 8 at a time with a stride of
//! 8 tokens land in 8 different bank quads.
template <int32_t kCHUNKS>
__device__ __forceinline__ int32_t swizzledRowUnit(int32_t t, int32_t c)
{
    return (t * kCHUNKS + c) ^ ((t >> 3) & 7);
}

//! Same for full-precision tiles (16 rows of kUNITS 16-byte units, read 8 consecutive rows at a time).
template <int32_t kUNITS>
__device__ __forceinline__ int32_t fpUnit(int32_t row, int32_t unit)
{
    return row * kUNITS + (unit ^ (row & 7));
}

__device__ __forceinline__ float shflXor(float x, int32_t mask)
{
    return __shfl_xor_sync(0xffffffffu, x, mask);
}

//! Online softmax over kM score m-tiles (lane: rows g, g+8 x columns 2i, 2i+1 of each). Scores are in the exp2
//! domain and -inf where hidden; turns them into probabilities relative to the running max m and returns the
//! factor by which earlier accumulators must be rescaled. l is this lane's partial row sum.
template <int32_t kM>
__device__ __forceinline__ void onlineSoftmax(float (&s)[kM][4], float (&m)[2], float (&l)[2], float (&alpha)[2])
{
    float tileMax[2] = {kNEG_INF, kNEG_INF};
#pragma unroll
    for (int32_t mu = 0; mu < kM; ++mu)
    {
#pragma unroll
        for (int32_t e = 0; e < 4; ++e)
        {
            tileMax[e & 1] = fmaxf(tileMax[e & 1], s[mu][e]);
        }
    }
    float base[2];
#pragma unroll
    for (int32_t c = 0; c < 2; ++c)
    {
        // Lanes 4g + i with equal i hold the same column.
        tileMax[c] = fmaxf(tileMax[c], shflXor(tileMax[c], 4));
        tileMax[c] = fmaxf(tileMax[c], shflXor(tileMax[c], 8));
        tileMax[c] = fmaxf(tileMax[c], shflXor(tileMax[c], 16));
        float const mNew = fmaxf(m[c], tileMax[c]);
        // A column with nothing visible yet keeps max -inf; subtract 0 instead so that exp2 sees no (-inf) - (-inf).
        base[c] = mNew == kNEG_INF ? 0.0F : mNew;
        alpha[c] = fastExp2(m[c] - base[c]);
        m[c] = mNew;
        l[c] *= alpha[c];
    }
#pragma unroll
    for (int32_t mu = 0; mu < kM; ++mu)
    {
#pragma unroll
        for (int32_t e = 0; e < 4; ++e)
        {
            s[mu][e] = fastExp2(s[mu][e] - base[e & 1]);
            l[e & 1] += s[mu][e];
        }
    }
}

//! Float index of (row, channel) in a piece's O region ([8 rows][kD]). The 16-byte chunks of a row are XOR-swizzled
//! by row so that the pieces' writers (lane (g, i) writes rows 2i, 2i+1) and the merge's float4 reads of a row hit
//! distinct banks. NOTE(k1): with plain rows, the sealed piece's 64 stores per lane were 8-way bank conflicts that
//! all 12 warps of the wide shape issued at once: B=8 L=32k 70.3 -> 68.9 us, B=1 L=32k 20.5 -> 19.7 us.
template <int32_t kD>
__device__ __forceinline__ int32_t pieceIndex(int32_t row, int32_t channel)
{
    int32_t const swizzle = 3 * ((row >> 1) & 1) + 4 * ((row >> 2) & 1);
    return row * kD + 4 * ((channel >> 2) ^ swizzle) + (channel & 3);
}

//! Float index of row's (max, sum) in a piece, or in a cluster inbox slot: after the O region.
template <int32_t kD>
__device__ __forceinline__ int32_t statsIndex(int32_t row)
{
    return kQUERY_TILE * kD + 2 * row;
}

//! The per-warp running state of one piece (sealed blocks, or full-precision segments).
template <int32_t kOUT>
struct PieceState
{
    float o[kOUT][4]; //!< O^T accumulator m-tiles (channel order depends on the piece)
    float m[2];
    float l[2];

    __device__ __forceinline__ void reset()
    {
#pragma unroll
        for (int32_t t = 0; t < kOUT; ++t)
        {
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                o[t][e] = 0.0F;
            }
        }
        m[0] = m[1] = kNEG_INF;
        l[0] = l[1] = 0.0F;
    }

    __device__ __forceinline__ void rescale(float const (&alpha)[2])
    {
#pragma unroll
        for (int32_t t = 0; t < kOUT; ++t)
        {
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                o[t][e] *= alpha[e & 1];
            }
        }
    }

    //! Sums l over the 8 lanes of each column; call once, at the end.
    __device__ __forceinline__ void reduceSum()
    {
#pragma unroll
        for (int32_t c = 0; c < 2; ++c)
        {
            l[c] += shflXor(l[c], 4);
            l[c] += shflXor(l[c], 8);
            l[c] += shflXor(l[c], 16);
        }
    }
};

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS, CtaShape kSHAPE>
class DecodeWarp
{
public:
    using Traits = DecodeTraits<T, kD, kG, kAXIS, kSHAPE>;
    static constexpr int32_t kWARPS = Traits::kWARPS;
    static constexpr int32_t kCHUNKS = Traits::kCHUNKS;
    static constexpr int32_t kGROUPS = Traits::kGROUPS;
    static constexpr int32_t kKSTEPS = Traits::kKSTEPS;
    static constexpr int32_t kBPU = Traits::kBLOCKS_PER_UNIT;
    static constexpr int32_t kSTAGES = Traits::kSTAGES;

    __device__ __forceinline__ DecodeWarp(DecodeKernelParams const& p, uint8_t* smem)
        : mP(p)
        , mSmem(smem)
    {
        KvGeometry const& geo = p.cache.geometry;
        mLane = static_cast<int32_t>(threadIdx.x) & 31;
        mWarp = static_cast<int32_t>(threadIdx.x) >> 5;
        mG = mLane >> 2;
        mI = mLane & 3;
        mSplit = static_cast<int32_t>(blockIdx.x);
        mHead = static_cast<int32_t>(blockIdx.y) / p.queryTiles;
        mQueryTile = static_cast<int32_t>(blockIdx.y) % p.queryTiles;
        mBatch = static_cast<int32_t>(blockIdx.z);
        mSeqHead = mBatch * geo.numKvHeads + mHead;
        // Never trust lengths for addressing: clamp them to what the tensors can hold.
        mSeqLen = max(p.cache.seqLen[mBatch], 0);
        mNumSealed = min(max(p.cache.numSealed[mBatch], 0), geo.maxBlocksPerSeq);
        int32_t const sealedLen = mNumSealed * kG;
        mTailStart = max(sealedLen, mSeqLen - geo.tailCapacity);
        mTailLen = max(mSeqLen - mTailStart, 0);
        mRowsValid = min(kQUERY_TILE, p.groupRatio * p.numQueries - kQUERY_TILE * mQueryTile);
        loadQuery();
    }

    //! Runs both pieces and leaves them in this warp's shared memory (piece 0: sealed blocks, 1: the rest).
    __device__ __forceinline__ void run()
    {
        runSealed();
        runFullPrecision();
    }

private:
    // ---------------------------------------------------------------------------------------------- queries

    __device__ __forceinline__ void loadQuery()
    {
        int32_t const row = kQUERY_TILE * mQueryTile + mG; // this lane's B column
        bool const valid = mG < mRowsValid;
        int32_t const head = mHead * mP.groupRatio + (valid ? row % mP.groupRatio : 0);
        int32_t const token = valid ? row / mP.groupRatio : 0;
        auto const* q = static_cast<uint16_t const*>(mP.q)
            + ((static_cast<int64_t>(mBatch) * mP.numQueryHeads + head) * mP.numQueries + token) * kD;
        auto const* q32 = reinterpret_cast<uint32_t const*>(q);
#pragma unroll
        for (int32_t k = 0; k < kKSTEPS; ++k)
        {
#pragma unroll
            for (int32_t h = 0; h < 2; ++h)
            {
                // k-slots 2i, 2i+1 (+8) of k-step k are channels 16k + 2i, 2i+1 (+8).
                mQuery[k][h] = valid ? q32[(16 * k + 8 * h + 2 * mI) / 2] : 0u;
            }
        }
        if constexpr (!Traits::kCHANNEL_KEYS)
        {
            // Token-axis key codes pair channels (16i + s, 16i + 8 + s) of a 64-channel chunk.
#pragma unroll
            for (int32_t c = 0; c < kCHUNKS; ++c)
            {
#pragma unroll
                for (int32_t s = 0; s < 4; ++s)
                {
#pragma unroll
                    for (int32_t h = 0; h < 2; ++h)
                    {
                        int32_t const ch = 64 * c + 16 * mI + s + 4 * h;
                        uint32_t const lo = valid ? q[ch] : 0u;
                        uint32_t const hi = valid ? q[ch + 8] : 0u;
                        mQueryTok[c][s][h] = lo | (hi << 16);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------------------------- sealed blocks

    //! Block-table entry of block n of this sequence, unchecked (-1 from block `bound` on, bound <= the table's
    //! width); never reads out of bounds. The caller checks it with checkedPage only when it needs it, so the load's
    //! latency is not waited on.
    __device__ __forceinline__ int32_t blockTableEntry(int32_t n, int32_t bound) const
    {
        KvGeometry const& geo = mP.cache.geometry;
        return n < bound ? mP.cache.blockTable[static_cast<int64_t>(mBatch) * geo.maxBlocksPerSeq + n] : -1;
    }

    __device__ __forceinline__ int32_t checkedPage(int32_t page) const
    {
        return page >= 0 && page < mP.cache.geometry.numPages ? page : -1;
    }

    __device__ __forceinline__ void issueUnit(uint8_t* stage, int32_t const (&pages)[kBPU])
    {
        KvGeometry const& geo = mP.cache.geometry;
        auto const* kCodes = mP.cache.kCodes;
        auto const* vCodes = mP.cache.vCodes;
        auto const* kParams = static_cast<uint8_t const*>(mP.cache.kParams);
        auto const* vParams = static_cast<uint8_t const*>(mP.cache.vParams);
        auto const* dupMask = reinterpret_cast<uint8_t const*>(mP.cache.dupMask);
#pragma unroll
        for (int32_t j = 0; j < kBPU; ++j)
        {
            bool const valid = pages[j] >= 0;
            int64_t const pageHead = static_cast<int64_t>(valid ? pages[j] : 0) * geo.numKvHeads + mHead;
            int64_t const codeBase = pageHead * (kG * kD / 4);
            // Per-token rows (values; keys on the token axis): G rows of D/4 bytes, swizzled by token.
            auto copyTokenRows = [&](uint8_t* dst, uint8_t const* src) {
#pragma unroll
                for (int32_t q = mLane; q < kG * kCHUNKS; q += 32)
                {
                    int32_t const t = q / kCHUNKS;
                    int32_t const c = q % kCHUNKS;
                    cpAsync16(dst + 16 * swizzledRowUnit<kCHUNKS>(j * kG + t, c), src + codeBase + 16 * q, valid);
                }
            };
            copyTokenRows(stage + Traits::kV_CODES, vCodes);
            if constexpr (Traits::kCHANNEL_KEYS)
            {
                // Rows (h, d) of G/4 bytes = G tokens of channel d. Shared memory holds, per 64-token sub-tile,
                // D rows of 16 bytes; with G = 32 the two blocks of a unit fill the halves of each row.
                uint8_t* dst = stage + Traits::kK_CODES;
                if constexpr (kG == 32)
                {
#pragma unroll
                    for (int32_t d = mLane; d < kD; d += 32)
                    {
                        cpAsyncSmall<8>(dst + 16 * d + 8 * j, kCodes + codeBase + 8 * d, valid);
                    }
                }
                else
                {
#pragma unroll
                    for (int32_t q = mLane; q < kD * kG / 64; q += 32)
                    {
                        int32_t const d = q / (kG / 64);
                        int32_t const sub = q % (kG / 64);
                        cpAsync16(dst + sub * kD * 16 + 16 * d, kCodes + codeBase + 16 * q, valid);
                    }
                }
#pragma unroll
                for (int32_t q = mLane; q < kD / 4; q += 32)
                {
                    cpAsync16(stage + Traits::kK_PARAMS + j * kD * 4 + 16 * q, kParams + pageHead * kD * 4 + 16 * q,
                        valid);
                }
            }
            else
            {
                copyTokenRows(stage + Traits::kK_CODES, kCodes);
#pragma unroll
                for (int32_t q = mLane; q < kG * kGROUPS / 4; q += 32)
                {
                    cpAsync16(stage + Traits::kK_PARAMS + j * kG * kGROUPS * 4 + 16 * q,
                        kParams + pageHead * kG * kGROUPS * 4 + 16 * q, valid);
                }
            }
#pragma unroll
            for (int32_t q = mLane; q < kG * kGROUPS / 4; q += 32)
            {
                cpAsync16(stage + Traits::kV_PARAMS + j * kG * kGROUPS * 4 + 16 * q,
                    vParams + pageHead * kG * kGROUPS * 4 + 16 * q, valid);
            }
            // dup_mask: G/8 bytes. A block that does not exist is all masked, so it contributes nothing.
            uint8_t* maskDst = stage + Traits::kMASK + j * (kG / 8);
            if (mLane == 0)
            {
                uint8_t const* src = dupMask + pageHead * (kG / 8);
                if (!valid)
                {
#pragma unroll
                    for (int32_t w = 0; w < kG / 32; ++w)
                    {
                        reinterpret_cast<uint32_t*>(maskDst)[w] = 0xffffffffu;
                    }
                }
                else if constexpr (kG == 128)
                {
                    cpAsync16(maskDst, src, true);
                }
                else
                {
                    cpAsyncSmall<kG / 8>(maskDst, src, true);
                }
            }
        }
    }

    //! A warp with a full-precision tile pulls it into L2 this many units before its sealed loop ends, so that
    //! reading it after the loop is no DRAM round trip (earlier, and the stream evicts it again). NOTE(k1): B=8 L=32k
    //! 71.0 against 71.4 us a unit earlier or 72.3 without. Loops shorter than kFP_PREFETCH_MIN_UNITS (small L, many
    //! splits) do not prefetch: SmolLM2 B=8 L=4k lost 0.3 us to it.
    static constexpr int32_t kFP_PREFETCH_UNITS = 3;
    static constexpr int32_t kFP_PREFETCH_MIN_UNITS = 8;

    //! A loop of at least this many units requests its first unit alone and waits for it before requesting more.
    //! NOTE(k1): when every warp requests kSTAGES units at once (24 MB at B=8 L=32k), they queue for ~8 us and the
    //! warps served last stay behind to the end (per-warp %globaltimer stamps: first units landed at 2.9-9.7 us);
    //! one unit each at first: B=8 L=32k 69.0 -> 68.0 us, L=128k 234.5 -> 233.5 us. Short loops (SmolLM2 B=8 L=4k,
    //! 2-3 units a warp) lose the round trip instead (+0.1-0.3 us).
    static constexpr int32_t kALONE_MIN_UNITS = 8;

    __device__ __forceinline__ void runSealed()
    {
        PieceState<kCHUNKS * 4> st;
        st.reset();
        float pm[kGROUPS][2]; // sum_t p_t * min_t per value group and column
#pragma unroll
        for (int32_t gr = 0; gr < kGROUPS; ++gr)
        {
            pm[gr][0] = pm[gr][1] = 0.0F;
        }

        int32_t const numUnits = (mNumSealed + kBPU - 1) / kBPU;
        int32_t const begin = mSplit * mP.unitsPerSplit + mWarp;
        int32_t const end = min(numUnits, (mSplit + 1) * mP.unitsPerSplit);
        int32_t const count = begin < end ? (end - begin + kWARPS - 1) / kWARPS : 0;
        uint8_t* stages = mSmem;

        // Page ids come in windows of 32 units, one per lane, read by shuffle: one coalesced load per 32 units,
        // issued a window ahead, instead of a dependent load per unit (NOTE(k1): waiting on that load was 8% of
        // all warp stalls).
        int32_t window[kBPU];     // units 32w .. 32w + 31 of this warp, w = k / 32
        int32_t nextWindow[kBPU]; // the 32 after them
        // Bounded by the split, not by the sequence's length, so that the first load does not wait for the length
        // (one DRAM round trip less before the first unit is requested); pagesOf masks what lies past it.
        int32_t const splitBlocks = min(mP.cache.geometry.maxBlocksPerSeq, (mSplit + 1) * mP.unitsPerSplit * kBPU);
        auto loadWindow = [&](int32_t first, int32_t(&dst)[kBPU]) {
            int32_t const k = first + mLane;
#pragma unroll
            for (int32_t j = 0; j < kBPU; ++j)
            {
                dst[j] = blockTableEntry((begin + k * kWARPS) * kBPU + j, splitBlocks);
            }
        };
        auto pagesOf = [&](int32_t k, int32_t(&dst)[kBPU]) {
            if (k > 0 && k % 32 == 0) // k runs in order, so this happens once per window
            {
#pragma unroll
                for (int32_t j = 0; j < kBPU; ++j)
                {
                    window[j] = nextWindow[j];
                }
                loadWindow(k + 32, nextWindow);
            }
#pragma unroll
            for (int32_t j = 0; j < kBPU; ++j)
            {
                int32_t const page = checkedPage(__shfl_sync(0xffffffffu, window[j], k % 32));
                dst[j] = k < count && (begin + k * kWARPS) * kBPU + j < mNumSealed ? page : -1;
            }
        };
        loadWindow(0, window);
        loadWindow(32, nextWindow);
        int32_t pages[kBPU];
#pragma unroll
        for (int32_t k = 0; k < kSTAGES - 1; ++k)
        {
            if (k < count)
            {
                pagesOf(k, pages);
                issueUnit(stages + k * Traits::kSTAGE_BYTES, pages);
            }
            cpAsyncCommit();
            if (k == 0 && count >= kALONE_MIN_UNITS)
            {
                cpAsyncWait<0>(); // the first unit goes out alone
            }
        }
        // Every warp of the split has at least this many units; up to there the wide shape keeps them level.
        int32_t const levelled = max(end - mSplit * mP.unitsPerSplit, 0) / kWARPS;
        for (int32_t k = 0; k < count; ++k)
        {
            if constexpr (Traits::kLOCKSTEP > 0)
            {
                if (k < levelled && k % Traits::kLOCKSTEP == 0)
                {
                    namedBarrierSync<1, Traits::kTHREADS>();
                }
            }
            int32_t const ahead = k + kSTAGES - 1;
            if (ahead < count)
            {
                pagesOf(ahead, pages);
                issueUnit(stages + (ahead % kSTAGES) * Traits::kSTAGE_BYTES, pages);
            }
            cpAsyncCommit();
            cpAsyncWait<kSTAGES - 1>();
            __syncwarp();
            if (k == count - kFP_PREFETCH_UNITS && count >= kFP_PREFETCH_MIN_UNITS)
            {
                prefetchFullPrecision();
            }
            computeUnit(stages + (k % kSTAGES) * Traits::kSTAGE_BYTES, st, pm);
            __syncwarp(); // every lane is done with this stage before it is refilled
        }
        cpAsyncWait<0>();
        __syncwarp();

        // O = O^T accumulator / code unit + sum p * min, per channel; rows g and g+8 of m-tile (c, s) are channels
        // 64c + 8g + s and 64c + 8g + s + 4 (value-code positions s and s + 4).
        st.reduceSum();
#pragma unroll
        for (int32_t gr = 0; gr < kGROUPS; ++gr)
        {
#pragma unroll
            for (int32_t c = 0; c < 2; ++c)
            {
                pm[gr][c] += shflXor(pm[gr][c], 4);
                pm[gr][c] += shflXor(pm[gr][c], 8);
                pm[gr][c] += shflXor(pm[gr][c], 16);
            }
        }
        float* piece = reinterpret_cast<float*>(mSmem);
#pragma unroll
        for (int32_t c = 0; c < kCHUNKS; ++c)
        {
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                // Group of channels 64c + 8g + 4(e / 2) + 0..3, selected without a run-time register index.
                float const minSum = Traits::kC == 32
                    ? (mG >= 4 ? pm[(2 * c + 1) % kGROUPS][e & 1] : pm[(2 * c) % kGROUPS][e & 1])
                    : pm[c * 64 / Traits::kC][e & 1];
                float value[4];
#pragma unroll
                for (int32_t s = 0; s < 4; ++s)
                {
                    int32_t const pos = s + 4 * (e >> 1);
                    value[s] = st.o[4 * c + s][e] * (1.0F / CodeOperand<T>::unit(pos)) + minSum;
                }
                *reinterpret_cast<float4*>(piece + pieceIndex<kD>(2 * mI + (e & 1), 64 * c + 8 * mG + 4 * (e >> 1)))
                    = make_float4(value[0], value[1], value[2], value[3]);
            }
        }
        writeStats(piece, st.m, st.l);
    }

    //! Q' = q * key scale (pairs of T) and the exp2-domain bias scale * sum_d q_d * min_d of block j of a stage.
    __device__ __forceinline__ void foldKeyParams(uint8_t const* stage, int32_t j)
    {
        float acc[4] = {0.0F, 0.0F, 0.0F, 0.0F};
        uint8_t const* kp = stage + Traits::kK_PARAMS + j * kD * 4;
#pragma unroll
        for (int32_t k = 0; k < kKSTEPS; ++k)
        {
            uint32_t mins[2];
#pragma unroll
            for (int32_t h = 0; h < 2; ++h)
            {
                // (scale, min) of channels 2i and 2i+1 of the half k-step: 8 contiguous bytes.
                uint2 const w = *reinterpret_cast<uint2 const*>(kp + (16 * k + 8 * h + 2 * mI) * 4);
                mQueryScaled[j][k][h] = mulPair<T>(mQuery[k][h], prmt(w.x, w.y, 0x5410));
                mins[h] = prmt(w.x, w.y, 0x7632);
            }
            // Every row of A is the min vector, so every row of the product is the bias.
            uint32_t const a[4] = {mins[0], mins[0], mins[1], mins[1]};
            mma16816<T>(acc, a, mQuery[k][0], mQuery[k][1]);
        }
        mBias[j][0] = acc[0] * mP.scaleLog2;
        mBias[j][1] = acc[1] * mP.scaleLog2;
    }

    //! Scores S^T of one 64-token sub-tile with channel-axis keys: 4 m-tiles x (2 rows x 2 columns) per lane.
    __device__ __forceinline__ void scoresChannelKeys(uint8_t const* stage, int32_t sub, float (&s)[4][4])
    {
        float acc[kBPU][4][4];
#pragma unroll
        for (int32_t j = 0; j < kBPU; ++j)
        {
#pragma unroll
            for (int32_t mu = 0; mu < 4; ++mu)
            {
#pragma unroll
                for (int32_t e = 0; e < 4; ++e)
                {
                    acc[j][mu][e] = 0.0F;
                }
            }
        }
        uint32_t const rows = smemAddress(stage + Traits::kK_CODES + sub * kD * 16);
#pragma unroll
        for (int32_t kp = 0; kp < kD / 32; ++kp)
        {
            // Matrices: channels 32kp + 0..7, 8..15 (k-step 2kp), 16..23, 24..31 (k-step 2kp+1); lane = row.
            uint32_t codes[4];
            ldmatrixX4Trans(codes, rows + (32 * kp + mLane) * 16);
#pragma unroll
            for (int32_t kk = 0; kk < 2; ++kk)
            {
                uint32_t lo[8];
                uint32_t hi[8];
                CodeOperand<T>::expand(codes[2 * kk], lo);
                CodeOperand<T>::expand(codes[2 * kk + 1], hi);
#pragma unroll
                for (int32_t mu = 0; mu < 4; ++mu)
                {
                    uint32_t const a[4] = {lo[mu], lo[mu + 4], hi[mu], hi[mu + 4]};
#pragma unroll
                    for (int32_t j = 0; j < kBPU; ++j)
                    {
                        mma16816<T>(acc[j][mu], a, mQueryScaled[j][2 * kp + kk][0], mQueryScaled[j][2 * kp + kk][1]);
                    }
                }
            }
        }
        // With G = 32, tokens 0..31 of the tile (lanes g < 4) are block 0 and the rest block 1.
        bool const second = kBPU == 2 && mG >= 4;
#pragma unroll
        for (int32_t mu = 0; mu < 4; ++mu)
        {
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                float const raw = second ? acc[kBPU - 1][mu][e] : acc[0][mu][e];
                float const bias = second ? mBias[kBPU - 1][e & 1] : mBias[0][e & 1];
                // Undo the code unit of the row's position, then scale into the exp2 domain.
                s[mu][e] = fmaf(raw * (1.0F / CodeOperand<T>::unit(mu + 4 * (e >> 1))), mP.scaleLog2, bias);
            }
        }
    }

    //! Scores with token-axis keys: dequantized per the spec into A fragments, times the plain query.
    __device__ __forceinline__ void scoresTokenKeys(uint8_t const* stage, int32_t sub, float (&s)[4][4])
    {
        uint32_t const rows = smemAddress(stage + Traits::kK_CODES);
        uint8_t const* kp = stage + Traits::kK_PARAMS;
#pragma unroll
        for (int32_t mu = 0; mu < 4; ++mu)
        {
            float acc[4] = {0.0F, 0.0F, 0.0F, 0.0F};
            // Matrix m: tokens 8r + mu (+4 if m odd) of chunk m / 2; lane (g, i) gets codes of channels
            // 64c + 16i .. 16i+15 of tokens 8g + mu (A) and 8g + mu + 4 (B).
            uint32_t codes[4];
            int32_t const m = mLane >> 3;
            int32_t const token = kTILE_TOKENS * sub + 8 * (mLane & 7) + mu + 4 * (m & 1);
            uint32_t const address = rows + 16 * swizzledRowUnit<kCHUNKS>(token, (m >> 1) % kCHUNKS);
            if constexpr (kCHUNKS == 2)
            {
                ldmatrixX4(codes, address);
            }
            else
            {
                uint32_t two[2];
                ldmatrixX2(two, address);
                codes[0] = two[0];
                codes[1] = two[1];
            }
            int32_t const tokenA = kTILE_TOKENS * sub + 8 * mG + mu;
#pragma unroll
            for (int32_t c = 0; c < kCHUNKS; ++c)
            {
                int32_t const group = (64 * c + 16 * mI) / Traits::kC;
                uint32_t const wa = *reinterpret_cast<uint32_t const*>(kp + (tokenA * kGROUPS + group) * 4);
                uint32_t const wb = *reinterpret_cast<uint32_t const*>(kp + ((tokenA + 4) * kGROUPS + group) * 4);
                uint32_t const scA = prmt(wa, wa, 0x1010);
                uint32_t const mnA = prmt(wa, wa, 0x3232);
                uint32_t const scB = prmt(wb, wb, 0x1010);
                uint32_t const mnB = prmt(wb, wb, 0x3232);
#pragma unroll
                for (int32_t sg = 0; sg < 4; ++sg)
                {
                    uint32_t const a[4] = {dequantPair<T>(codes[2 * c], sg, scA, mnA),
                        dequantPair<T>(codes[2 * c + 1], sg, scB, mnB), dequantPair<T>(codes[2 * c], sg + 4, scA, mnA),
                        dequantPair<T>(codes[2 * c + 1], sg + 4, scB, mnB)};
                    mma16816<T>(acc, a, mQueryTok[c][sg][0], mQueryTok[c][sg][1]);
                }
            }
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                s[mu][e] = acc[e] * mP.scaleLog2;
            }
        }
    }

    __device__ __forceinline__ void computeUnit(uint8_t const* stage, PieceState<kCHUNKS * 4>& st,
        float (&pm)[kGROUPS][2])
    {
        if constexpr (Traits::kCHANNEL_KEYS)
        {
#pragma unroll
            for (int32_t j = 0; j < kBPU; ++j)
            {
                foldKeyParams(stage, j);
            }
        }
        uint32_t const* maskWords = reinterpret_cast<uint32_t const*>(stage + Traits::kMASK);
#pragma unroll
        for (int32_t sub = 0; sub < Traits::kSUB_TILES; ++sub)
        {
            float s[4][4];
            if constexpr (Traits::kCHANNEL_KEYS)
            {
                scoresChannelKeys(stage, sub, s);
            }
            else
            {
                scoresTokenKeys(stage, sub, s);
            }
            // dup_mask bits of this lane's tokens 8g .. 8g+7: one byte; bit mu is row g, bit mu + 4 row g + 8.
            uint32_t const maskByte = (maskWords[2 * sub + (mG >> 2)] >> (8 * (mG & 3))) & 0xffu;
            if (maskByte != 0) // dup bits are rare: most lanes skip the 16 selects
            {
#pragma unroll
                for (int32_t mu = 0; mu < 4; ++mu)
                {
#pragma unroll
                    for (int32_t e = 0; e < 4; ++e)
                    {
                        if ((maskByte >> (mu + 4 * (e >> 1))) & 1u)
                        {
                            s[mu][e] = kNEG_INF;
                        }
                    }
                }
            }
            float alpha[2];
            onlineSoftmax<4>(s, st.m, st.l, alpha);
            if (__any_sync(0xffffffffu, alpha[0] != 1.0F || alpha[1] != 1.0F)) // after the first tiles, rarely
            {
                st.rescale(alpha);
#pragma unroll
                for (int32_t gr = 0; gr < kGROUPS; ++gr)
                {
                    pm[gr][0] *= alpha[0];
                    pm[gr][1] *= alpha[1];
                }
            }
            accumulateValues(stage, sub, s, st, pm);
        }
    }

    //! O^T += V^T . P'^T for one 64-token sub-tile; P' = p * value scale per (token, group).
    __device__ __forceinline__ void accumulateValues(uint8_t const* stage, int32_t sub, float const (&p)[4][4],
        PieceState<kCHUNKS * 4>& st, float (&pm)[kGROUPS][2])
    {
        uint8_t const* vp = stage + Traits::kV_PARAMS;
        uint32_t const rows = smemAddress(stage + Traits::kV_CODES);
#pragma unroll
        for (int32_t mu = 0; mu < 4; ++mu)
        {
            int32_t const tokenA = kTILE_TOKENS * sub + 8 * mG + mu; // row g of m-tile mu; row g+8 is tokenA + 4
            uint32_t pb[kGROUPS][2];
#pragma unroll
            for (int32_t gr = 0; gr < kGROUPS; ++gr)
            {
                uint32_t const wa = *reinterpret_cast<uint32_t const*>(vp + (tokenA * kGROUPS + gr) * 4);
                uint32_t const wb = *reinterpret_cast<uint32_t const*>(vp + ((tokenA + 4) * kGROUPS + gr) * 4);
                float const scA = lowToFloat<T>(wa);
                float const scB = lowToFloat<T>(wb);
                float const mnA = highToFloat<T>(wa);
                float const mnB = highToFloat<T>(wb);
                pb[gr][0] = movmatrixTrans(packFloat2<T>(p[mu][0] * scA, p[mu][1] * scA));
                pb[gr][1] = movmatrixTrans(packFloat2<T>(p[mu][2] * scB, p[mu][3] * scB));
                pm[gr][0] += p[mu][0] * mnA + p[mu][2] * mnB;
                pm[gr][1] += p[mu][1] * mnA + p[mu][3] * mnB;
            }
            // Matrices: tokens 8r + mu (k-slots 0..7) and 8r + mu + 4 (k-slots 8..15), per 64-channel chunk.
            uint32_t codes[4];
            int32_t const m = mLane >> 3;
            int32_t const token = kTILE_TOKENS * sub + 8 * (mLane & 7) + mu + 4 * (m & 1);
            uint32_t const address = rows + 16 * swizzledRowUnit<kCHUNKS>(token, (m >> 1) % kCHUNKS);
            if constexpr (kCHUNKS == 2)
            {
                ldmatrixX4Trans(codes, address);
            }
            else
            {
                uint32_t two[2];
                ldmatrixX2Trans(two, address);
                codes[0] = two[0];
                codes[1] = two[1];
            }
#pragma unroll
            for (int32_t c = 0; c < kCHUNKS; ++c)
            {
                uint32_t lo[8];
                uint32_t hi[8];
                CodeOperand<T>::expand(codes[2 * c], lo);
                CodeOperand<T>::expand(codes[2 * c + 1], hi);
#pragma unroll
                for (int32_t s = 0; s < 4; ++s)
                {
                    uint32_t const a[4] = {lo[s], lo[s + 4], hi[s], hi[s + 4]};
                    if constexpr (Traits::kC >= 64)
                    {
                        constexpr int32_t kGROUP_OF_CHUNK = 64 / Traits::kC; // 1 (C = 64) or 0 (C = 128)
                        int32_t const gr = c * kGROUP_OF_CHUNK;
                        mma16816<T>(st.o[4 * c + s], a, pb[gr][0], pb[gr][1]);
                    }
                    else
                    {
                        // C = 32: rows of lanes g < 4 are group 2c, the others 2c + 1. Each pass keeps one half.
                        uint32_t const keep = mG < 4 ? 0xffffffffu : 0u;
                        uint32_t const a0[4] = {a[0] & keep, a[1] & keep, a[2] & keep, a[3] & keep};
                        uint32_t const a1[4] = {a[0] & ~keep, a[1] & ~keep, a[2] & ~keep, a[3] & ~keep};
                        mma16816<T>(st.o[4 * c + s], a0, pb[2 * c][0], pb[2 * c][1]);
                        mma16816<T>(st.o[4 * c + s], a1, pb[2 * c + 1][0], pb[2 * c + 1][1]);
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------------------------- full precision

    //! Copies 16 rows of K and V of full-precision tile j (one commit group) and returns the mask of rows that
    //! exist; a tile without any issues nothing and returns 0.
    __device__ __forceinline__ uint32_t issueFullPrecisionTile(uint8_t* tile, int32_t j) const
    {
        int32_t const retainedTiles = retainedTileCount();
        bool const retained = j < retainedTiles;
        int64_t const rowIndex = fullPrecisionRow(j, retainedTiles);
        // Empty (-1) and shadowed (<= -2) retained slots are skipped.
        bool const rowValid = rowIndex >= 0 && (!retained || mP.cache.retainedPos[rowIndex] >= 0);
        uint32_t const validRows = __ballot_sync(0xffffffffu, rowValid);
        if (validRows == 0)
        {
            return 0; // nothing to read (e.g. a KIVI retained buffer of empty slots): no copy, no group
        }
        uint8_t const* kBase = fullPrecisionSource(retained, false);
        uint8_t const* vBase = fullPrecisionSource(retained, true);
        constexpr int32_t kUNITS = Traits::kFP_ROW_UNITS;
#pragma unroll
        for (int32_t q = mLane; q < kFP_TILE_TOKENS * kUNITS; q += 32)
        {
            int32_t const row = q / kUNITS;
            int32_t const unit = q % kUNITS;
            int64_t const src = __shfl_sync(0xffffffffu, rowIndex, row) * kD * 2 + 16 * unit;
            bool const valid = (validRows >> row) & 1u;
            int32_t const dst = 16 * fpUnit<kUNITS>(row, unit);
            cpAsync16(tile + dst, kBase + (valid ? src : 0), valid);
            cpAsync16(tile + Traits::kFP_TILE_BYTES + dst, vBase + (valid ? src : 0), valid);
        }
        cpAsyncCommit();
        return validRows;
    }

    //! Online softmax over full-precision tile j (retained tiles first, then the tail), into st.
    __device__ __forceinline__ void accumulateFullPrecisionTile(int32_t j, int32_t retainedTiles,
        int32_t const (&lastVisible)[2], PieceState<kD / 16>& st)
    {
        constexpr int32_t kUNITS = Traits::kFP_ROW_UNITS;
        uint8_t* tile = mSmem + Traits::kPIECE_BYTES;
        uint32_t const validRows = issueFullPrecisionTile(tile, j);
        if (validRows == 0)
        {
            return;
        }
        cpAsyncWait<0>();
        __syncwarp();
        uint32_t const kTile = smemAddress(tile);
        uint32_t const vTile = kTile + Traits::kFP_TILE_BYTES;
        int32_t const m = mLane >> 3;
        int32_t const r = mLane & 7;
        float s[1][4] = {{0.0F, 0.0F, 0.0F, 0.0F}};
#pragma unroll
        for (int32_t k = 0; k < kKSTEPS; ++k)
        {
            // Matrices: rows 0-7 / 8-15 x channels 16k..16k+7, then the same rows x 16k+8..16k+15.
            uint32_t a[4];
            ldmatrixX4(a, kTile + 16 * fpUnit<kUNITS>(r + 8 * (m & 1), 2 * k + (m >> 1)));
            mma16816<T>(s[0], a, mQuery[k][0], mQuery[k][1]);
        }
        bool const tail = j >= retainedTiles;
        int32_t const firstPos = mTailStart + kFP_TILE_TOKENS * (j - retainedTiles);
#pragma unroll
        for (int32_t e = 0; e < 4; ++e)
        {
            int32_t const row = mG + 8 * (e >> 1);
            bool visible = (validRows >> row) & 1u;
            if (tail)
            {
                visible = visible && firstPos + row <= lastVisible[e & 1];
            }
            s[0][e] = visible ? s[0][e] * mP.scaleLog2 : kNEG_INF;
        }
        float alpha[2];
        onlineSoftmax<1>(s, st.m, st.l, alpha);
        st.rescale(alpha);
        uint32_t const b0 = movmatrixTrans(packFloat2<T>(s[0][0], s[0][1]));
        uint32_t const b1 = movmatrixTrans(packFloat2<T>(s[0][2], s[0][3]));
#pragma unroll
        for (int32_t mt = 0; mt < kD / 16; ++mt)
        {
            // Matrices: tokens 0-7 x channels 16mt.., 16mt+8.., then tokens 8-15 x the same.
            uint32_t a[4];
            ldmatrixX4Trans(a, vTile + 16 * fpUnit<kUNITS>(r + 8 * (m >> 1), 2 * mt + (m & 1)));
            mma16816<T>(st.o[mt], a, b0, b1);
        }
        __syncwarp(); // the tile is refilled by the next one
    }

    //! Full-precision tiles of the retained buffer (whole capacity); the tail ring's follow them.
    __device__ __forceinline__ int32_t retainedTileCount() const
    {
        return (mP.cache.geometry.retainedCapacity + kFP_TILE_TOKENS - 1) / kFP_TILE_TOKENS;
    }

    __device__ __forceinline__ int32_t fullPrecisionTileCount(int32_t retainedTiles) const
    {
        return retainedTiles + (mTailLen + kFP_TILE_TOKENS - 1) / kFP_TILE_TOKENS;
    }

    //! Where the K (or V) rows of a retained or a tail tile live.
    __device__ __forceinline__ uint8_t const* fullPrecisionSource(bool retained, bool values) const
    {
        void const* const k = retained ? mP.cache.retainedK : mP.cache.tailK;
        void const* const v = retained ? mP.cache.retainedV : mP.cache.tailV;
        return static_cast<uint8_t const*>(values ? v : k);
    }

    //! Row index (into the retained buffer or the tail ring) of row `lane` of full-precision tile j; -1 where the
    //! tile has no such row, and on lanes >= kFP_TILE_TOKENS. Whether a retained slot is in use is not checked.
    __device__ __forceinline__ int64_t fullPrecisionRow(int32_t j, int32_t retainedTiles) const
    {
        KvGeometry const& geo = mP.cache.geometry;
        if (mLane >= kFP_TILE_TOKENS)
        {
            return -1;
        }
        if (j < retainedTiles)
        {
            int32_t const slot = kFP_TILE_TOKENS * j + mLane;
            return slot < geo.retainedCapacity ? static_cast<int64_t>(mSeqHead) * geo.retainedCapacity + slot : -1;
        }
        int32_t const pos = mTailStart + kFP_TILE_TOKENS * (j - retainedTiles) + mLane;
        return pos < mSeqLen ? static_cast<int64_t>(mSeqHead) * geo.tailCapacity + pos % geo.tailCapacity : -1;
    }

    //! This warp's first full-precision tile; it takes every (numSplits * kWARPS)-th from there. Tiles are dealt to
    //! the warps with the fewest sealed units first: the short warps of each split (its first units % kWARPS warps
    //! hold one unit more), last split first, then the long ones. NOTE(k1): dealt by split and warp index alone,
    //! LogQuant+OTT's ~15 tiles at B=8 L=32k went to three warps that also held the extra unit.
    __device__ __forceinline__ int32_t fullPrecisionRank() const
    {
        int32_t const numUnits = (mNumSealed + kBPU - 1) / kBPU;
        int32_t const perSplit = mP.unitsPerSplit;
        int32_t const full = numUnits / perSplit; // splits holding perSplit units; split `full` holds the rest
        int32_t const rest = numUnits % perSplit;
        auto longAfter = [&](int32_t split) { // long warps of the splits after `split`
            int32_t const inFull = max(full - (split + 1), 0) * (perSplit % kWARPS);
            return inFull + (full > split && full < mP.numSplits ? rest % kWARPS : 0);
        };
        int32_t const longHere = mSplit < full ? perSplit % kWARPS : mSplit == full ? rest % kWARPS : 0;
        if (mWarp >= longHere)
        {
            return (mP.numSplits - 1 - mSplit) * kWARPS - longAfter(mSplit) + (kWARPS - 1 - mWarp);
        }
        int32_t const shortWarps = mP.numSplits * kWARPS - longAfter(-1);
        return shortWarps + longAfter(mSplit) + (longHere - 1 - mWarp);
    }

    //! Pulls the rows of this warp's full-precision tiles into L2 (whole retained tiles, empty slots included).
    __device__ __forceinline__ void prefetchFullPrecision() const
    {
        int32_t const retainedTiles = retainedTileCount();
        int32_t const numTiles = fullPrecisionTileCount(retainedTiles);
        int32_t const stride = mP.numSplits * kWARPS;
        for (int32_t j = fullPrecisionRank(); j < numTiles; j += stride)
        {
            int64_t const row = fullPrecisionRow(j, retainedTiles);
            if (row < 0)
            {
                continue;
            }
            bool const retained = j < retainedTiles;
            uint8_t const* k = fullPrecisionSource(retained, false);
            uint8_t const* v = fullPrecisionSource(retained, true);
#pragma unroll
            for (int32_t offset = 0; offset < kD * 2; offset += 128)
            {
                prefetchL2(k + row * kD * 2 + offset);
                prefetchL2(v + row * kD * 2 + offset);
            }
        }
    }

    __device__ __forceinline__ void runFullPrecision()
    {
        PieceState<kD / 16> st;
        st.reset();
        int32_t const retainedTiles = retainedTileCount();
        int32_t const numTiles = fullPrecisionTileCount(retainedTiles);
        // Column c of this lane is query row 8 qt + 2i + c, i.e. query token (row / r) at position L - n + token.
        int32_t lastVisible[2];
#pragma unroll
        for (int32_t c = 0; c < 2; ++c)
        {
            int32_t const row = kQUERY_TILE * mQueryTile + 2 * mI + c;
            lastVisible[c] = mSeqLen - mP.numQueries + min(row / mP.groupRatio, mP.numQueries - 1);
        }
        int32_t const stride = mP.numSplits * kWARPS;
        for (int32_t j = fullPrecisionRank(); j < numTiles; j += stride)
        {
            accumulateFullPrecisionTile(j, retainedTiles, lastVisible, st);
        }
        st.reduceSum();
        // Rows g and g+8 of m-tile mt are channels 16mt + g and 16mt + g + 8. Overwrites the (idle) tile.
        float* piece = reinterpret_cast<float*>(mSmem + Traits::kPIECE_BYTES);
#pragma unroll
        for (int32_t mt = 0; mt < kD / 16; ++mt)
        {
#pragma unroll
            for (int32_t e = 0; e < 4; ++e)
            {
                piece[pieceIndex<kD>(2 * mI + (e & 1), 16 * mt + mG + 8 * (e >> 1))] = st.o[mt][e];
            }
        }
        writeStats(piece, st.m, st.l);
    }

    __device__ __forceinline__ void writeStats(float* piece, float const (&m)[2], float const (&l)[2]) const
    {
        if (mG == 0)
        {
#pragma unroll
            for (int32_t c = 0; c < 2; ++c)
            {
                piece[statsIndex<kD>(2 * mI + c)] = m[c];
                piece[statsIndex<kD>(2 * mI + c) + 1] = l[c];
            }
        }
    }

public:
    __device__ __forceinline__ int32_t rowsValid() const
    {
        return mRowsValid;
    }

private:
    DecodeKernelParams const& mP;
    uint8_t* mSmem;
    int32_t mLane;
    int32_t mWarp;
    int32_t mG;
    int32_t mI;
    int32_t mSplit;
    int32_t mHead;
    int32_t mQueryTile;
    int32_t mBatch;
    int32_t mSeqHead;
    int32_t mSeqLen;
    int32_t mNumSealed;
    int32_t mTailStart;
    int32_t mTailLen;
    int32_t mRowsValid;
    uint32_t mQuery[kKSTEPS][2];                                     //!< B fragments of q (cache dtype)
    uint32_t mQueryTok[Traits::kCHANNEL_KEYS ? 1 : kCHUNKS][4][2];   //!< q in token-axis key order
    uint32_t mQueryScaled[Traits::kCHANNEL_KEYS ? kBPU : 1][kKSTEPS][2]; //!< q * key scale, per block of a unit
    float mBias[kBPU][2];
};

//! Softmax weights of a CTA's pieces (2 per warp) per query row, computed once per (row, piece) instead of once per
//! output element (NOTE(k1): 24 pieces in the wide shape).
template <int32_t kWARPS>
struct PieceWeights
{
    static constexpr int32_t kPIECES = 2 * kWARPS;
    static_assert(kPIECES <= 32, "one lane per piece");
    float weight[kQUERY_TILE][kPIECES];
    float max[kQUERY_TILE]; //!< of the pieces' maxes
    float sum[kQUERY_TILE]; //!< weighted sum of the pieces' sums
};

template <int32_t kWARP_BYTES, int32_t kPIECE_BYTES>
__device__ __forceinline__ float const* pieceOf(uint8_t const* smem, int32_t k)
{
    return reinterpret_cast<float const*>(smem + (k >> 1) * kWARP_BYTES + (k & 1) * kPIECE_BYTES);
}

//! Warp w weighs rows w, w + kWARPS, ...: lane k holds piece k.
template <int32_t kD, int32_t kWARPS, int32_t kWARP_BYTES, int32_t kPIECE_BYTES>
__device__ __forceinline__ void weighPieces(uint8_t const* smem, int32_t rowsValid, PieceWeights<kWARPS>& w)
{
    constexpr int32_t kPIECES = PieceWeights<kWARPS>::kPIECES;
    int32_t const warp = static_cast<int32_t>(threadIdx.x) >> 5;
    int32_t const lane = static_cast<int32_t>(threadIdx.x) & 31;
    for (int32_t row = warp; row < rowsValid; row += kWARPS)
    {
        float m = kNEG_INF;
        float l = 0.0F;
        if (lane < kPIECES)
        {
            float const* piece = pieceOf<kWARP_BYTES, kPIECE_BYTES>(smem, lane);
            m = piece[statsIndex<kD>(row)];
            l = piece[statsIndex<kD>(row) + 1];
        }
        float mMax = m;
#pragma unroll
        for (int32_t mask = 16; mask > 0; mask >>= 1)
        {
            mMax = fmaxf(mMax, shflXor(mMax, mask));
        }
        // A row that no piece saw keeps max -inf; subtract 0 instead so that exp2 sees no (-inf) - (-inf).
        float const weight = fastExp2(m - (mMax == kNEG_INF ? 0.0F : mMax));
        float sum = weight * l;
#pragma unroll
        for (int32_t mask = 16; mask > 0; mask >>= 1)
        {
            sum += shflXor(sum, mask);
        }
        if (lane < kPIECES)
        {
            w.weight[row][lane] = weight;
        }
        if (lane == 0)
        {
            w.max[row] = mMax;
            w.sum[row] = sum;
        }
    }
}

//! Channels 4 d4 .. 4 d4 + 3 of row's merged, unnormalized O.
template <int32_t kD, int32_t kWARPS, int32_t kWARP_BYTES, int32_t kPIECE_BYTES>
__device__ __forceinline__ float4 mergedChannels(
    uint8_t const* smem, PieceWeights<kWARPS> const& w, int32_t row, int32_t d4)
{
    float4 o = make_float4(0.0F, 0.0F, 0.0F, 0.0F);
#pragma unroll
    for (int32_t k = 0; k < PieceWeights<kWARPS>::kPIECES; ++k)
    {
        float const* piece = pieceOf<kWARP_BYTES, kPIECE_BYTES>(smem, k);
        float4 const v = *reinterpret_cast<float4 const*>(piece + pieceIndex<kD>(row, 4 * d4));
        float const c = w.weight[row][k];
        o.x = fmaf(c, v.x, o.x);
        o.y = fmaf(c, v.y, o.y);
        o.z = fmaf(c, v.z, o.z);
        o.w = fmaf(c, v.w, o.w);
    }
    return o;
}

//! Channels d .. d + 3 of query row `row` of tile queryTile: the merged, unnormalized O divided by its softmax sum l.
//! A row that sees nothing (l = 0) is written as 0.
template <typename T>
__device__ __forceinline__ void storeOutput(DecodeKernelParams const& p, int32_t batch, int32_t head,
    int32_t queryTile, int32_t row, int32_t d, float4 o, float l, int32_t headDim)
{
    int32_t const queryRow = kQUERY_TILE * queryTile + row;
    int32_t const qHead = head * p.groupRatio + queryRow % p.groupRatio;
    int32_t const token = queryRow / p.groupRatio;
    int64_t const index = ((static_cast<int64_t>(batch) * p.numQueryHeads + qHead) * p.numQueries + token) * headDim + d;
    float const inv = l > 0.0F ? 1.0F / l : 0.0F;
    float const v[4] = {o.x, o.y, o.z, o.w};
#pragma unroll
    for (int32_t c = 0; c < 4; ++c)
    {
        if constexpr (std::is_same_v<T, half>)
        {
            static_cast<half*>(p.out)[index + c] = __float2half_rn(v[c] * inv);
        }
        else
        {
            static_cast<__nv_bfloat16*>(p.out)[index + c] = __float2bfloat16_rn(v[c] * inv);
        }
    }
}

//! atomicAdd with acq_rel semantics at GPU scope: releases what happens before it, acquires what the previous
//! releasers published.
__device__ __forceinline__ int32_t atomicAddAcqRelGpu(int32_t* address, int32_t value)
{
    int32_t old;
    asm volatile("atom.add.acq_rel.gpu.global.s32 %0, [%1], %2;\n" : "=r"(old) : "l"(address), "r"(value) : "memory");
    return old;
}

//! The last CTA of (b, h, qt): merges the numSplits partials of the workspace into the output. Thread t owns row
//! t / 16 and 16-byte column chunks (t % 16) + 16 j of it; the partials of kMERGE_SPLITS splits at a time are loaded
//! together and merged with a running max, so six or eight splits cost one round trip to L2. NOTE(k1): the former
//! two-phase merge (maxes, then values) was 3-4.6 us of the B=8 L=32k tail.
template <typename T, int32_t kD>
__device__ __forceinline__ void mergeSplits(
    DecodeKernelParams const& p, int64_t slot, int32_t batch, int32_t head, int32_t queryTile, int32_t rowsValid)
{
    constexpr int32_t kLANES_PER_ROW = kMERGE_THREADS / kQUERY_TILE; // 16
    constexpr int32_t kCHUNKS = kD / (4 * kLANES_PER_ROW);        // float4 chunks per thread: 2 (D = 128) or 1
    constexpr int32_t kMERGE_SPLITS = 8;
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const row = tid / kLANES_PER_ROW;
    int32_t const lane = tid % kLANES_PER_ROW;
    if (tid >= kMERGE_THREADS || row >= rowsValid)
    {
        return;
    }
    auto const* ml = reinterpret_cast<float2 const*>(p.partialMl) + slot * p.numSplits * kQUERY_TILE + row;
    auto const* partialO = reinterpret_cast<float4 const*>(p.partialO + (slot * p.numSplits * kQUERY_TILE + row) * kD);
    constexpr int32_t kSPLIT_STRIDE = kQUERY_TILE * kD / 4; // float4s between two splits' tiles
    float mRun = kNEG_INF;
    float lRun = 0.0F;
    float4 acc[kCHUNKS];
#pragma unroll
    for (int32_t c = 0; c < kCHUNKS; ++c)
    {
        acc[c] = make_float4(0.0F, 0.0F, 0.0F, 0.0F);
    }
    for (int32_t first = 0; first < p.numSplits; first += kMERGE_SPLITS)
    {
        float2 stats[kMERGE_SPLITS];
        float4 values[kMERGE_SPLITS][kCHUNKS];
#pragma unroll
        for (int32_t i = 0; i < kMERGE_SPLITS; ++i)
        {
            int32_t const s = first + i;
            bool const valid = s < p.numSplits;
            stats[i] = valid ? __ldcg(ml + s * kQUERY_TILE) : make_float2(kNEG_INF, 0.0F);
#pragma unroll
            for (int32_t c = 0; c < kCHUNKS; ++c)
            {
                values[i][c] = valid ? __ldcg(partialO + s * kSPLIT_STRIDE + lane + kLANES_PER_ROW * c)
                                     : make_float4(0.0F, 0.0F, 0.0F, 0.0F);
            }
        }
        float mNew = mRun;
#pragma unroll
        for (int32_t i = 0; i < kMERGE_SPLITS; ++i)
        {
            mNew = fmaxf(mNew, stats[i].x);
        }
        // A row that no split saw keeps max -inf; subtract 0 instead so that exp2 sees no (-inf) - (-inf).
        float const base = mNew == kNEG_INF ? 0.0F : mNew;
        float const keep = fastExp2(mRun - base);
        lRun *= keep;
#pragma unroll
        for (int32_t c = 0; c < kCHUNKS; ++c)
        {
            acc[c] = make_float4(acc[c].x * keep, acc[c].y * keep, acc[c].z * keep, acc[c].w * keep);
        }
#pragma unroll
        for (int32_t i = 0; i < kMERGE_SPLITS; ++i)
        {
            float const w = fastExp2(stats[i].x - base);
            lRun += w * stats[i].y;
#pragma unroll
            for (int32_t c = 0; c < kCHUNKS; ++c)
            {
                acc[c].x += w * values[i][c].x;
                acc[c].y += w * values[i][c].y;
                acc[c].z += w * values[i][c].z;
                acc[c].w += w * values[i][c].w;
            }
        }
        mRun = mNew;
    }
#pragma unroll
    for (int32_t c = 0; c < kCHUNKS; ++c)
    {
        storeOutput<T>(p, batch, head, queryTile, row, 4 * (lane + kLANES_PER_ROW * c), acc[c], lRun, kD);
    }
}

//! Split-K merge through distributed shared memory: the numSplits CTAs of (b, h, qt) are one thread-block cluster
//! (rank = split). Every CTA but rank 0 stores its merged partial (its CTA's O, max and sum per row) into rank 0's
//! inbox, which rank 0 merges with its own into the output. NOTE(k1): this replaces mergeSplits' workspace round trip
//! (global stores, a GPU-scope release and atomic, L2 loads): B=8 L=32k 69.9 -> 68.9 us, SmolLM2 B=8 L=4k 12.8 ->
//! 12.5 us (the CTA merge before it and the wait for the cluster's slowest CTA remain).
template <typename T, int32_t kD, typename Traits>
__device__ __forceinline__ void mergeSplitsInCluster(DecodeKernelParams const& p, uint8_t* smem,
    PieceWeights<Traits::kWARPS> const& w, int32_t rowsValid, int32_t batch, int32_t head, int32_t queryTile)
{
    static_assert(Traits::kTHREADS >= kQUERY_TILE * kD / 4, "one float4 of the output per thread");
    constexpr int32_t kINBOX_FLOATS = Traits::kPIECE_BYTES / 4; // O [8][D] then (max, sum) [8][2], rows plain
    int32_t const tid = static_cast<int32_t>(threadIdx.x);
    int32_t const rank = static_cast<int32_t>(blockIdx.x);
    int32_t const row = tid / (kD / 4);
    int32_t const d4 = tid % (kD / 4);
    bool const owns = row < rowsValid;
    float4 const o = owns
        ? mergedChannels<kD, Traits::kWARPS, Traits::kWARP_BYTES, Traits::kPIECE_BYTES>(smem, w, row, d4)
        : make_float4(0.0F, 0.0F, 0.0F, 0.0F);
    float const* inbox = reinterpret_cast<float const*>(smem + Traits::kSMEM_BYTES); // [numSplits - 1]
    clusterWait(); // pairs the kernel-entry arrival: every CTA of the cluster runs, so rank 0's inbox exists
    if (rank > 0 && owns)
    {
        float const* slot = inbox + (rank - 1) * kINBOX_FLOATS;
        storeClusterShared(clusterSharedAddress(slot + row * kD + 4 * d4, 0), o);
        if (d4 == 0)
        {
            storeClusterShared(clusterSharedAddress(slot + statsIndex<kD>(row), 0),
                make_float2(w.max[row], w.sum[row]));
        }
    }
    clusterArrive();
    clusterWait();
    if (rank > 0 || !owns)
    {
        return;
    }
    float mMax = w.max[row];
    for (int32_t s = 1; s < p.numSplits; ++s)
    {
        mMax = fmaxf(mMax, inbox[(s - 1) * kINBOX_FLOATS + statsIndex<kD>(row)]);
    }
    // A row that no split saw keeps max -inf; subtract 0 instead so that exp2 sees no (-inf) - (-inf).
    float const base = mMax == kNEG_INF ? 0.0F : mMax;
    float const own = fastExp2(w.max[row] - base);
    float l = own * w.sum[row];
    float4 acc = make_float4(own * o.x, own * o.y, own * o.z, own * o.w);
    for (int32_t s = 1; s < p.numSplits; ++s)
    {
        float const* slot = inbox + (s - 1) * kINBOX_FLOATS;
        float2 const ml = *reinterpret_cast<float2 const*>(slot + statsIndex<kD>(row));
        float4 const v = *reinterpret_cast<float4 const*>(slot + row * kD + 4 * d4);
        float const c = fastExp2(ml.x - base);
        l += c * ml.y;
        acc = make_float4(fmaf(c, v.x, acc.x), fmaf(c, v.y, acc.y), fmaf(c, v.z, acc.z), fmaf(c, v.w, acc.w));
    }
    storeOutput<T>(p, batch, head, queryTile, row, 4 * d4, acc, l, kD);
}

template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS, CtaShape kSHAPE>
__global__ void __launch_bounds__(
    DecodeTraits<T, kD, kG, kAXIS, kSHAPE>::kTHREADS, DecodeTraits<T, kD, kG, kAXIS, kSHAPE>::kMIN_CTAS)
    decodeAttentionKernel(DecodeKernelParams const p)
{
    using Traits = DecodeTraits<T, kD, kG, kAXIS, kSHAPE>;
    constexpr int32_t kTHREADS = Traits::kTHREADS;
    extern __shared__ __align__(128) uint8_t smem[];
    if constexpr (Traits::kMAX_CLUSTER_SPLITS > 1)
    {
        if (p.clusterMerge)
        {
            clusterArriveRelaxed(); // waited on by mergeSplitsInCluster before it writes another CTA's memory
        }
    }
    int32_t const warp = static_cast<int32_t>(threadIdx.x) >> 5;
    int32_t rowsValid = 0;
    {
        DecodeWarp<T, kD, kG, kAXIS, kSHAPE> worker(p, smem + warp * Traits::kWARP_BYTES);
        worker.run();
        rowsValid = worker.rowsValid();
    }
    __syncthreads();

    int32_t const split = static_cast<int32_t>(blockIdx.x);
    int32_t const head = static_cast<int32_t>(blockIdx.y) / p.queryTiles;
    int32_t const queryTile = static_cast<int32_t>(blockIdx.y) % p.queryTiles;
    int32_t const batch = static_cast<int32_t>(blockIdx.z);
    int64_t const slot = static_cast<int64_t>(batch) * gridDim.y + blockIdx.y; // (b, h, qt)
    int32_t const tid = static_cast<int32_t>(threadIdx.x);

    __shared__ PieceWeights<Traits::kWARPS> weights;
    weighPieces<kD, Traits::kWARPS, Traits::kWARP_BYTES, Traits::kPIECE_BYTES>(smem, rowsValid, weights);
    __syncthreads();
    if constexpr (Traits::kMAX_CLUSTER_SPLITS > 1)
    {
        if (p.clusterMerge)
        {
            mergeSplitsInCluster<T, kD, Traits>(p, smem, weights, rowsValid, batch, head, queryTile);
            return;
        }
    }
    int64_t const partial = (slot * p.numSplits + split) * kQUERY_TILE;
    for (int32_t e = tid; e < rowsValid * kD / 4; e += kTHREADS)
    {
        int32_t const row = e / (kD / 4);
        int32_t const d4 = e % (kD / 4);
        float4 const o
            = mergedChannels<kD, Traits::kWARPS, Traits::kWARP_BYTES, Traits::kPIECE_BYTES>(smem, weights, row, d4);
        if (p.numSplits == 1)
        {
            storeOutput<T>(p, batch, head, queryTile, row, 4 * d4, o, weights.sum[row], kD);
        }
        else
        {
            reinterpret_cast<float4*>(p.partialO)[(partial + row) * (kD / 4) + d4] = o;
            if (d4 == 0)
            {
                reinterpret_cast<float2*>(p.partialMl)[partial + row] = make_float2(weights.max[row], weights.sum[row]);
            }
        }
    }
    if (p.numSplits == 1)
    {
        return;
    }
    // Last-block reduction: count this CTA in and let the last one merge. The barrier orders every thread's partials
    // before thread 0's acq_rel atomic, which releases them at GPU scope and, in the last CTA, acquires the others'
    // (the pattern of a CTA-wide semaphore; one thread fences instead of all 128).
    __syncthreads();
    __shared__ int32_t isLast;
    if (tid == 0)
    {
        isLast = atomicAddAcqRelGpu(p.counters + slot, 1) == p.numSplits - 1;
    }
    __syncthreads();
    if (!isLast)
    {
        return;
    }
    mergeSplits<T, kD>(p, slot, batch, head, queryTile, rowsValid);
    if (tid == 0)
    {
        p.counters[slot] = 0; // ready for the next launch
    }
}

} // namespace logquant::kernel::attention
