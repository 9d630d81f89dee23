// SPDX-License-Identifier: Apache-2.0
// Plumbing for the extern "C" API (loaded from Python through ctypes): no exception crosses it. Every entry point
// runs its body through capi::guard, which returns a status and keeps the message for logquant_last_error().
#pragma once

#include "logquant/common/checks.h"

#include <cstdint>
#include <exception>
#include <string>

//! Marks a C API entry point. Everything else in liblogquant_kernels.so is hidden.
#define LOGQUANT_CAPI extern "C" __attribute__((visibility("default")))

namespace logquant::capi
{

//! Status codes of every logquant_* function; the message of a nonzero one is in logquant_last_error().
enum class Status : int32_t
{
    kSUCCESS = 0,
    kERROR = 1,         //!< a logquant::Error: bad argument or CUDA failure
    kSTD_EXCEPTION = 2, //!< any other std::exception (e.g. std::bad_alloc)
    kUNKNOWN = 3,       //!< anything else thrown
};

//! This thread's message of the last failed call (defined in src/capi/errors.cpp).
std::string& lastErrorMessage();

//! Runs body(); returns its status as int32_t and records the message of anything it throws.
template <typename Body>
int32_t guard(Body&& body) noexcept
{
    Status status = Status::kSUCCESS;
    try
    {
        body();
        return static_cast<int32_t>(status);
    }
    catch (Error const& e)
    {
        status = Status::kERROR;
        lastErrorMessage() = e.what();
    }
    catch (std::exception const& e)
    {
        status = Status::kSTD_EXCEPTION;
        lastErrorMessage() = e.what();
    }
    catch (...)
    {
        status = Status::kUNKNOWN;
        lastErrorMessage() = "unknown exception";
    }
    return static_cast<int32_t>(status);
}

} // namespace logquant::capi
