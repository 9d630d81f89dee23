// SPDX-License-Identifier: Apache-2.0
// Thin wrappers over the PTX the decode-attention kernel is built from: cp.async, ldmatrix, movmatrix,
// mma.sync m16n8k16, named barriers and thread-block clusters. Fragment layouts are the PTX ISA's; in the comments,
// lane = 4 * g + i (g = lane / 4 "group", i = lane % 4), as in the ISA's "groupID" / "threadID_in_group".
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace logquant::kernel::attention
{

//! 16-byte copy global -> shared that bypasses L1 (each byte of the cache is read once). srcBytes 0 writes zeros
//! and reads nothing, which is how pages that do not exist become harmless all-masked tiles.
__device__ __forceinline__ void cpAsync16(void* smemDst, void const* gmemSrc, bool valid)
{
    uint32_t const dst = static_cast<uint32_t>(__cvta_generic_to_shared(smemDst));
    int32_t const srcBytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmemSrc), "r"(srcBytes));
}

//! Pulls the 128-byte line holding gmem into L2 without waiting for it.
__device__ __forceinline__ void prefetchL2(void const* gmem)
{
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(gmem));
}

//! kBYTES in {4, 8} (cp.async.cg only takes 16); same zero-fill contract as cpAsync16.
template <int32_t kBYTES>
__device__ __forceinline__ void cpAsyncSmall(void* smemDst, void const* gmemSrc, bool valid)
{
    static_assert(kBYTES == 4 || kBYTES == 8, "cp.async.ca copies 4, 8 or 16 bytes");
    uint32_t const dst = static_cast<uint32_t>(__cvta_generic_to_shared(smemDst));
    int32_t const srcBytes = valid ? kBYTES : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(gmemSrc), "n"(kBYTES),
        "r"(srcBytes));
}

__device__ __forceinline__ void cpAsyncCommit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}

//! Waits until at most kPENDING of this thread's committed groups are still in flight.
template <int32_t kPENDING>
__device__ __forceinline__ void cpAsyncWait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPENDING));
}

//! Barrier kID (not 0, which __syncthreads uses) over kTHREADS threads of the CTA.
template <int32_t kID, int32_t kTHREADS>
__device__ __forceinline__ void namedBarrierSync()
{
    static_assert(kID > 0 && kID < 16 && kTHREADS % 32 == 0, "named barriers 1..15, whole warps");
    asm volatile("bar.sync %0, %1;\n" ::"n"(kID), "n"(kTHREADS) : "memory");
}

__device__ __forceinline__ uint32_t smemAddress(void const* ptr)
{
    return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

// Thread-block clusters (sm_90): the split-K merge of the wide shape runs through distributed shared memory.
// barrier.cluster arrive/wait come in pairs per thread; .aligned: every thread of the warp executes them together.

//! Arrives at the cluster barrier without ordering memory (the kernel-entry arrival that lets a later wait prove that
//! every CTA of the cluster is running, so that its shared memory may be written).
__device__ __forceinline__ void clusterArriveRelaxed()
{
#if __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.relaxed.aligned;\n" ::: "memory");
#endif
}

//! Arrives at the cluster barrier, releasing this thread's earlier writes (shared::cluster included).
__device__ __forceinline__ void clusterArrive()
{
#if __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.arrive.aligned;\n" ::: "memory");
#endif
}

//! Waits until every thread of the cluster has arrived; acquires what they released.
__device__ __forceinline__ void clusterWait()
{
#if __CUDA_ARCH__ >= 900
    asm volatile("barrier.cluster.wait.aligned;\n" ::: "memory");
#endif
}

//! The shared::cluster address of `ptr` (a shared-memory address of this CTA) in the CTA of cluster rank `rank`.
__device__ __forceinline__ uint32_t clusterSharedAddress(void const* ptr, uint32_t rank)
{
    uint32_t remote = 0;
#if __CUDA_ARCH__ >= 900
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(remote) : "r"(smemAddress(ptr)), "r"(rank));
#endif
    return remote;
}

__device__ __forceinline__ void storeClusterShared(uint32_t address, float4 v)
{
#if __CUDA_ARCH__ >= 900
    asm volatile("st.shared::cluster.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(address), "f"(v.x), "f"(v.y), "f"(v.z),
        "f"(v.w)
                 : "memory");
#endif
}

__device__ __forceinline__ void storeClusterShared(uint32_t address, float2 v)
{
#if __CUDA_ARCH__ >= 900
    asm volatile("st.shared::cluster.v2.f32 [%0], {%1, %2};\n" ::"r"(address), "f"(v.x), "f"(v.y) : "memory");
#endif
}

//! Four 8x8 b16 matrices; lanes 8m..8m+7 give the row addresses of matrix m. Lane (g, i) receives, of each
//! matrix, row g, b16 columns 2i and 2i+1 (bytes 4i..4i+3 of the 16-byte row).
__device__ __forceinline__ void ldmatrixX4(uint32_t (&r)[4], uint32_t rowAddress)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(rowAddress));
}

//! Transposing form: lane (g, i) receives b16 column g (bytes 2g, 2g+1) of rows 2i (low half) and 2i+1 (high half).
__device__ __forceinline__ void ldmatrixX4Trans(uint32_t (&r)[4], uint32_t rowAddress)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(rowAddress));
}

//! Two matrices; lanes 0..15 give the row addresses (the others' are ignored but must be valid shared addresses).
__device__ __forceinline__ void ldmatrixX2(uint32_t (&r)[2], uint32_t rowAddress)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(rowAddress));
}

__device__ __forceinline__ void ldmatrixX2Trans(uint32_t (&r)[2], uint32_t rowAddress)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(rowAddress));
}

//! Transposes an 8x8 b16 matrix held one row-pair per lane (lane (g, i): row g, columns 2i, 2i+1).
//! NOTE(k1): this is how the score accumulator (tokens x queries) becomes the B operand (tokens along k) of P.V
//! without a trip through shared memory.
__device__ __forceinline__ uint32_t movmatrixTrans(uint32_t x)
{
    uint32_t y;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
    return y;
}

//! D = A.B + D, m16n8k16, fp32 accumulators. A: {row g k 2i..2i+1, row g+8 k 2i.., row g k 2i+8.., row g+8 k
//! 2i+8..}; B: {k 2i..2i+1 col g, k 2i+8.. col g}; D: {row g col 2i, 2i+1, row g+8 col 2i, 2i+1}.
template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], uint32_t const (&a)[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma16816<half>(float (&d)[4], uint32_t const (&a)[4], uint32_t b0, uint32_t b1)
{
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(
    float (&d)[4], uint32_t const (&a)[4], uint32_t b0, uint32_t b1)
{
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

//! Byte permute: result byte k = byte (selector nibble k) of the 8-byte value {hi, lo}.
__device__ __forceinline__ uint32_t prmt(uint32_t lo, uint32_t hi, uint32_t selector)
{
    uint32_t r;
    asm("prmt.b32 %0, %1, %2, %3;\n" : "=r"(r) : "r"(lo), "r"(hi), "r"(selector));
    return r;
}

//! 2^x on the SFU; flushes subnormal results, which only ever weight a vanishing probability.
__device__ __forceinline__ float fastExp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

//! Two floats -> one 32-bit register of T (x in the low half), round to nearest.
template <typename T>
__device__ __forceinline__ uint32_t packFloat2(float x, float y);

template <>
__device__ __forceinline__ uint32_t packFloat2<half>(float x, float y)
{
    __half2 const h = __floats2half2_rn(x, y);
    return *reinterpret_cast<uint32_t const*>(&h);
}

template <>
__device__ __forceinline__ uint32_t packFloat2<__nv_bfloat16>(float x, float y)
{
    __nv_bfloat162 const h = __floats2bfloat162_rn(x, y);
    return *reinterpret_cast<uint32_t const*>(&h);
}

//! Low / high 16-bit element of a packed pair of T, as float.
template <typename T>
__device__ __forceinline__ float lowToFloat(uint32_t x);
template <typename T>
__device__ __forceinline__ float highToFloat(uint32_t x);

template <>
__device__ __forceinline__ float lowToFloat<half>(uint32_t x)
{
    return __half2float(__ushort_as_half(static_cast<unsigned short>(x & 0xFFFFu)));
}

template <>
__device__ __forceinline__ float highToFloat<half>(uint32_t x)
{
    return __half2float(__ushort_as_half(static_cast<unsigned short>(x >> 16)));
}

template <>
__device__ __forceinline__ float lowToFloat<__nv_bfloat16>(uint32_t x)
{
    return __uint_as_float(x << 16);
}

template <>
__device__ __forceinline__ float highToFloat<__nv_bfloat16>(uint32_t x)
{
    return __uint_as_float(x & 0xFFFF0000u);
}

//! Element-wise product of two packed pairs of T, rounded once to T.
template <typename T>
__device__ __forceinline__ uint32_t mulPair(uint32_t x, uint32_t y);

template <>
__device__ __forceinline__ uint32_t mulPair<half>(uint32_t x, uint32_t y)
{
    __half2 const r = __hmul2(*reinterpret_cast<__half2 const*>(&x), *reinterpret_cast<__half2 const*>(&y));
    return *reinterpret_cast<uint32_t const*>(&r);
}

template <>
__device__ __forceinline__ uint32_t mulPair<__nv_bfloat16>(uint32_t x, uint32_t y)
{
    __nv_bfloat162 const r
        = __hmul2(*reinterpret_cast<__nv_bfloat162 const*>(&x), *reinterpret_cast<__nv_bfloat162 const*>(&y));
    return *reinterpret_cast<uint32_t const*>(&r);
}

//! x - y element-wise on packed pairs of T (exact for the small integers it is used on).
template <typename T>
__device__ __forceinline__ uint32_t subPair(uint32_t x, uint32_t y);

template <>
__device__ __forceinline__ uint32_t subPair<half>(uint32_t x, uint32_t y)
{
    __half2 const r = __hsub2(*reinterpret_cast<__half2 const*>(&x), *reinterpret_cast<__half2 const*>(&y));
    return *reinterpret_cast<uint32_t const*>(&r);
}

template <>
__device__ __forceinline__ uint32_t subPair<__nv_bfloat16>(uint32_t x, uint32_t y)
{
    __nv_bfloat162 const r
        = __hsub2(*reinterpret_cast<__nv_bfloat162 const*>(&x), *reinterpret_cast<__nv_bfloat162 const*>(&y));
    return *reinterpret_cast<uint32_t const*>(&r);
}

//! x * y + z element-wise on packed pairs of T, one rounding (the spec's dequantization, docs/kv_format.md §3.4).
template <typename T>
__device__ __forceinline__ uint32_t fmaPair(uint32_t x, uint32_t y, uint32_t z);

template <>
__device__ __forceinline__ uint32_t fmaPair<half>(uint32_t x, uint32_t y, uint32_t z)
{
    __half2 const r = __hfma2(*reinterpret_cast<__half2 const*>(&x), *reinterpret_cast<__half2 const*>(&y),
        *reinterpret_cast<__half2 const*>(&z));
    return *reinterpret_cast<uint32_t const*>(&r);
}

template <>
__device__ __forceinline__ uint32_t fmaPair<__nv_bfloat16>(uint32_t x, uint32_t y, uint32_t z)
{
    __nv_bfloat162 const r = __hfma2(*reinterpret_cast<__nv_bfloat162 const*>(&x),
        *reinterpret_cast<__nv_bfloat162 const*>(&y), *reinterpret_cast<__nv_bfloat162 const*>(&z));
    return *reinterpret_cast<uint32_t const*>(&r);
}

} // namespace logquant::kernel::attention
