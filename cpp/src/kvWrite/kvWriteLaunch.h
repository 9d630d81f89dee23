// SPDX-License-Identifier: Apache-2.0
// Private to src/kvWrite: the launchers of one (dtype, D, G, key axis) combination. Defined in kvWriteLaunch.cuh and
// instantiated once per combination family by the inst*.cu files, so each family compiles in its own unit.
#pragma once

#include "logquant/kvWrite.h"

namespace logquant::kernel
{

//! Every combination the dispatch can reach: D x G x key axis, per dtype.
#define LOGQUANT_KV_WRITE_COMBINATIONS(X, T)                                                                           \
    X(T, 64, 32, ::logquant::KeyAxis::kCHANNEL)                                                                        \
    X(T, 64, 64, ::logquant::KeyAxis::kCHANNEL)                                                                        \
    X(T, 64, 128, ::logquant::KeyAxis::kCHANNEL)                                                                       \
    X(T, 128, 32, ::logquant::KeyAxis::kCHANNEL)                                                                       \
    X(T, 128, 64, ::logquant::KeyAxis::kCHANNEL)                                                                       \
    X(T, 128, 128, ::logquant::KeyAxis::kCHANNEL)                                                                      \
    X(T, 64, 32, ::logquant::KeyAxis::kTOKEN)                                                                          \
    X(T, 64, 64, ::logquant::KeyAxis::kTOKEN)                                                                          \
    X(T, 64, 128, ::logquant::KeyAxis::kTOKEN)                                                                         \
    X(T, 128, 32, ::logquant::KeyAxis::kTOKEN)                                                                         \
    X(T, 128, 64, ::logquant::KeyAxis::kTOKEN)                                                                         \
    X(T, 128, 128, ::logquant::KeyAxis::kTOKEN)

//! Kernels 2-4 of the prefill (after the plan kernel); params already validated.
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
void launchPrefillTyped(QuantizePrefillParams const& params, cudaStream_t stream);

//! The per-head decode kernel; params already validated.
template <typename T, int32_t kD, int32_t kG, KeyAxis kAXIS>
void launchDecodeTyped(AppendDecodeParams const& params, cudaStream_t stream);

//! Checks shared by both launchers: geometry supported, policy consistent with it, pointers set.
void checkCacheAndPolicy(KvCacheView const& cache, PolicyParams const& policy);

} // namespace logquant::kernel
