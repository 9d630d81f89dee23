// SPDX-License-Identifier: Apache-2.0
// Decode kernels for the __nv_bfloat16 cache dtype: every D x G x key-axis combination (one unit per family keeps
// the 2-core CI build parallel and incremental).
#include "kvWriteLaunch.cuh"

namespace logquant::kernel
{

#define LOGQUANT_INSTANTIATE(T, kD, kG, kAXIS)                                                                         \
    template void launchDecodeTyped<T, kD, kG, kAXIS>(                                                                 \
        AppendDecodeParams const&, cudaStream_t);
LOGQUANT_KV_WRITE_COMBINATIONS(LOGQUANT_INSTANTIATE, __nv_bfloat16)
#undef LOGQUANT_INSTANTIATE

} // namespace logquant::kernel
