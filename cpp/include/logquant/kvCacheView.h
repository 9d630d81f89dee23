// SPDX-License-Identifier: Apache-2.0
// Non-owning view of one layer's cache in the layout of docs/kv_format.md §4.
// Kernels and the plugin receive this; nothing here allocates.
#pragma once

#include "logquant/kvFormat.h"

#include <cstdint>

namespace logquant
{

enum class DataType : int32_t
{
    kFLOAT16 = 0,
    kBFLOAT16 = 1,
};

//! Geometry shared by every tensor of a layer's cache.
struct KvGeometry
{
    int32_t batch{0};            //!< B
    int32_t numKvHeads{0};       //!< H
    int32_t headDim{0};          //!< D: 64 or 128
    int32_t groupSize{0};        //!< G: 32, 64 or 128
    int32_t numPages{0};         //!< P
    int32_t maxBlocksPerSeq{0};  //!< columns of block_table
    int32_t tailCapacity{0};     //!< T, a multiple of G
    int32_t retainedCapacity{0}; //!< S
    KeyAxis keyAxis{KeyAxis::kCHANNEL};
    DataType dtype{DataType::kFLOAT16};
};

//! Device pointers; shapes and dtypes are those of docs/kv_format.md §4.
struct KvCacheView
{
    KvGeometry geometry;
    uint8_t* kCodes{nullptr};   //!< uint8 [P, H, D, G/4] (channel) or [P, H, G, D/4] (token)
    void* kParams{nullptr};     //!< cache dtype [P, H, D, 2] (channel) or [P, H, G, D/C, 2] (token)
    uint8_t* vCodes{nullptr};   //!< uint8 [P, H, G, D/4]
    void* vParams{nullptr};     //!< cache dtype [P, H, G, D/C, 2]
    int32_t* dupMask{nullptr};  //!< int32 [P, H, G/32]
    int32_t const* blockTable{nullptr}; //!< int32 [B, maxBlocksPerSeq]
    int32_t* numSealed{nullptr};        //!< int32 [B]
    int32_t* seqLen{nullptr};           //!< int32 [B]
    void* tailK{nullptr};               //!< cache dtype [B, H, T, D]; position p in slot p % T
    void* tailV{nullptr};
    int32_t* retainedPos{nullptr};      //!< int32 [B, H, S]; -1 empty, <= -2 shadowed
    void* retainedK{nullptr};           //!< cache dtype [B, H, S, D]
    void* retainedV{nullptr};
};

} // namespace logquant
