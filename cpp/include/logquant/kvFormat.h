// SPDX-License-Identifier: Apache-2.0
// The owner of every constant and layout of docs/kv_format.md in C++.
// logquant_trt/format.py mirrors the constants; tests/test_format.py checks they agree.
#pragma once

#include <cstdint>

namespace logquant
{

constexpr int32_t kBITS = 2;
constexpr int32_t kLEVELS = 3;          //!< 2^kBITS - 1
constexpr int32_t kCODES_PER_BYTE = 4;  //!< code i of a byte in bits [2i, 2i+1]
constexpr int32_t kCODES_PER_WORD = 16; //!< little-endian uint32 view of 4 bytes
constexpr int32_t kMASK_WORD_BITS = 32; //!< dup_mask: bit i of int32 word w = slot 32w + i
constexpr int32_t kPOSITION_BYTES = 4;  //!< retained_pos, int32
constexpr int32_t kEMPTY_SLOT = -1;     //!< retained_pos / block_table value of an unused slot
constexpr int32_t kPARAMS_PER_GROUP = 2; //!< (scale, min), adjacent

//! Supported G (tokens per block). docs/kv_format.md §4.
constexpr int32_t kGROUP_SIZES[] = {32, 64, 128};

enum class Policy : int32_t
{
    kFP16 = 0,
    kKIVI = 1,
    kLOGQUANT = 2,
    kOTT = 3,
    kLOGQUANT_OTT = 4,
};

enum class KeyAxis : int32_t
{
    kCHANNEL = 0, //!< k_codes [P, H, D, G/4], k_params [P, H, D, 2]
    kTOKEN = 1,   //!< k_codes [P, H, G, D/4], k_params [P, H, G, D/C, 2]
};

//! C = min(G, D): channels per per-token group.
constexpr int32_t channelGroup(int32_t groupSize, int32_t headDim)
{
    return groupSize < headDim ? groupSize : headDim;
}

} // namespace logquant
