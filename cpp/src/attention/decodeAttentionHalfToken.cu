// SPDX-License-Identifier: Apache-2.0
// Explicit instantiations of decode attention for half caches with token-axis keys (every head dim and group size).
// One file per family keeps each translation unit's compile time bounded and lets them build in parallel.
#include "logquant/attention/decodeAttentionLauncher.cuh"

LOGQUANT_DECODE_FAMILY(LOGQUANT_DECODE_INSTANTIATE, half, ::logquant::KeyAxis::kTOKEN)
