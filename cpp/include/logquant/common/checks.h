// SPDX-License-Identifier: Apache-2.0
// Error reporting for host code: every failed check throws logquant::Error carrying file:line and a message.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace logquant
{

//! The one exception type the kernels' host code throws. The C API turns it into a status code.
class Error : public std::runtime_error
{
public:
    Error(char const* file, int32_t line, std::string const& message)
        : std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + message)
    {
    }
};

namespace detail
{

//! Streams every argument into one string; an empty pack gives "".
template <typename... Args>
std::string concatMessage(Args const&... args)
{
    std::ostringstream stream;
    (stream << ... << args);
    return stream.str();
}

} // namespace detail

} // namespace logquant

//! Throws logquant::Error("file:line: Check failed: <cond> <message...>") when cond is false.
#define LOGQUANT_CHECK(cond, ...)                                                                                      \
    do                                                                                                                 \
    {                                                                                                                  \
        if (!(cond))                                                                                                   \
        {                                                                                                              \
            throw ::logquant::Error(__FILE__, __LINE__,                                                                \
                ::logquant::detail::concatMessage("Check failed: " #cond " ", ##__VA_ARGS__));                         \
        }                                                                                                              \
    } while (0)

//! Throws logquant::Error naming the CUDA error when expr does not return cudaSuccess.
#define LOGQUANT_CUDA_CHECK(expr)                                                                                      \
    do                                                                                                                 \
    {                                                                                                                  \
        cudaError_t const logquantStatus_ = (expr);                                                                    \
        if (logquantStatus_ != cudaSuccess)                                                                            \
        {                                                                                                              \
            throw ::logquant::Error(__FILE__, __LINE__,                                                                \
                ::logquant::detail::concatMessage("CUDA error ", cudaGetErrorName(logquantStatus_), " (",            \
                    cudaGetErrorString(logquantStatus_), ") from " #expr));                                            \
        }                                                                                                              \
    } while (0)
