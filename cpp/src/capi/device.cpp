// SPDX-License-Identifier: Apache-2.0
#include "logquant/capi/guard.h"

#include <cuda_runtime_api.h>

//! Makes `device` current for this thread in the library's own (static) CUDA runtime, whose current device is
//! independent of the caller's: call it before launching on tensors of a device other than 0.
LOGQUANT_CAPI int32_t logquant_set_device(int32_t device)
{
    return logquant::capi::guard([&] { LOGQUANT_CUDA_CHECK(cudaSetDevice(device)); });
}
