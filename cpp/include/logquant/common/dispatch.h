// SPDX-License-Identifier: Apache-2.0
// Runtime value -> template argument. Each macro binds a constexpr name (or type alias) and runs the trailing
// code once for the matching case; any other value throws logquant::Error("Unsupported <what>: <value>").
// Usage: LOGQUANT_DISPATCH_HEAD_DIM(geometry.headDim, kD, { launch<kD>(params, stream); });
#pragma once

#include "logquant/common/checks.h"
#include "logquant/kvCacheView.h"
#include "logquant/kvFormat.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define LOGQUANT_DISPATCH_UNSUPPORTED_(what, value)                                                                    \
    throw ::logquant::Error(__FILE__, __LINE__,                                                                        \
        ::logquant::detail::concatMessage("Unsupported " what ": ", static_cast<int64_t>(value)))

#define LOGQUANT_DISPATCH_CASE_(value, name, ...)                                                                      \
    case value:                                                                                                        \
    {                                                                                                                  \
        constexpr int32_t name = value;                                                                                \
        __VA_ARGS__;                                                                                                   \
        break;                                                                                                         \
    }

//! D in {64, 128}.
#define LOGQUANT_DISPATCH_HEAD_DIM(headDim, kD, ...)                                                                   \
    switch (static_cast<int32_t>(headDim))                                                                             \
    {                                                                                                                  \
        LOGQUANT_DISPATCH_CASE_(64, kD, __VA_ARGS__)                                                                   \
        LOGQUANT_DISPATCH_CASE_(128, kD, __VA_ARGS__)                                                                  \
    default: LOGQUANT_DISPATCH_UNSUPPORTED_("head dim", headDim);                                                      \
    }

//! G in {32, 64, 128} (logquant::kGROUP_SIZES).
#define LOGQUANT_DISPATCH_GROUP_SIZE(groupSize, kG, ...)                                                               \
    switch (static_cast<int32_t>(groupSize))                                                                           \
    {                                                                                                                  \
        LOGQUANT_DISPATCH_CASE_(32, kG, __VA_ARGS__)                                                                   \
        LOGQUANT_DISPATCH_CASE_(64, kG, __VA_ARGS__)                                                                   \
        LOGQUANT_DISPATCH_CASE_(128, kG, __VA_ARGS__)                                                                  \
    default: LOGQUANT_DISPATCH_UNSUPPORTED_("group size", groupSize);                                                  \
    }

//! logquant::DataType -> T in {half, __nv_bfloat16}.
#define LOGQUANT_DISPATCH_DTYPE(dtype, T, ...)                                                                         \
    switch (dtype)                                                                                                     \
    {                                                                                                                  \
    case ::logquant::DataType::kFLOAT16:                                                                               \
    {                                                                                                                  \
        using T = half;                                                                                                \
        __VA_ARGS__;                                                                                                   \
        break;                                                                                                         \
    }                                                                                                                  \
    case ::logquant::DataType::kBFLOAT16:                                                                              \
    {                                                                                                                  \
        using T = __nv_bfloat16;                                                                                       \
        __VA_ARGS__;                                                                                                   \
        break;                                                                                                         \
    }                                                                                                                  \
    default: LOGQUANT_DISPATCH_UNSUPPORTED_("dtype", dtype);                                                           \
    }

//! logquant::KeyAxis -> constexpr logquant::KeyAxis kAxis.
#define LOGQUANT_DISPATCH_KEY_AXIS(keyAxis, kAxis, ...)                                                                \
    switch (keyAxis)                                                                                                   \
    {                                                                                                                  \
    case ::logquant::KeyAxis::kCHANNEL:                                                                                \
    {                                                                                                                  \
        constexpr ::logquant::KeyAxis kAxis = ::logquant::KeyAxis::kCHANNEL;                                           \
        __VA_ARGS__;                                                                                                   \
        break;                                                                                                         \
    }                                                                                                                  \
    case ::logquant::KeyAxis::kTOKEN:                                                                                  \
    {                                                                                                                  \
        constexpr ::logquant::KeyAxis kAxis = ::logquant::KeyAxis::kTOKEN;                                             \
        __VA_ARGS__;                                                                                                   \
        break;                                                                                                         \
    }                                                                                                                  \
    default: LOGQUANT_DISPATCH_UNSUPPORTED_("key axis", keyAxis);                                                      \
    }
