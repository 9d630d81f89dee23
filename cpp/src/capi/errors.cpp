// SPDX-License-Identifier: Apache-2.0
#include "logquant/capi/guard.h"

namespace logquant::capi
{

std::string& lastErrorMessage()
{
    // thread_local: concurrent callers (e.g. one Python thread per device) never see each other's errors.
    thread_local std::string message;
    return message;
}

} // namespace logquant::capi

//! The message of this thread's last failed logquant_* call; "" if none failed yet. Valid until the next failure.
LOGQUANT_CAPI char const* logquant_last_error()
{
    return logquant::capi::lastErrorMessage().c_str();
}
