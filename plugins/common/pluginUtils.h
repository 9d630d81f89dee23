// SPDX-License-Identifier: Apache-2.0
// Shared by the plugins of liblogquant_trt_plugin.so: logging through the logger TensorRT hands over with
// setLoggerFinder, plugin-field parsing that validates every field, and workspace layout accumulation.
#pragma once

#include <NvInferRuntime.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace logquant::plugin
{

//! A field, shape or configuration that a plugin cannot accept. Construction throws it; createPlugin turns it into
//! a logged error and nullptr. The message names the offending field and what would be accepted.
class PluginError : public std::runtime_error
{
public:
    using std::runtime_error::runtime_error;
};

//! Logs through the logger of the TensorRT object that called into the plugin (ILoggerFinder::findLogger must run
//! on the calling thread), or to stderr while no ILoggerFinder was set. Never throws.
void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept;

inline void logError(std::string const& message) noexcept
{
    logMessage(nvinfer1::ILogger::Severity::kERROR, message);
}

inline void logWarning(std::string const& message) noexcept
{
    logMessage(nvinfer1::ILogger::Severity::kWARNING, message);
}

//! One field a creator accepts: its name and its only accepted type. kINT32 fields hold exactly one value; kCHAR
//! fields hold 1..kMAX_STRING_FIELD_BYTES characters, optionally followed by one NUL.
struct FieldSpec
{
    char const* name;
    nvinfer1::PluginFieldType type;
};

constexpr int32_t kMAX_STRING_FIELD_BYTES = 64;
//! Bounds the work done on a corrupted collection before it is rejected.
constexpr int32_t kMAX_FIELDS = 1024;

//! A PluginFieldCollection checked against a list of FieldSpec: every spec present exactly once, nothing else, each
//! with its type, length and non-null data. Values are read through typed, range-checked getters.
class FieldParser
{
public:
    //! @throws PluginError on a null collection or field array, a field with a null name or null data, an unknown,
    //!         duplicated or missing name, a wrong type, a wrong length, or an embedded NUL in a string.
    FieldParser(nvinfer1::PluginFieldCollection const* fields, std::vector<FieldSpec> const& specs);

    //! @throws PluginError if the value is outside [min, max].
    int32_t getInt32(char const* name, int32_t min, int32_t max) const;

    //! Index of the string value in `choices`. @throws PluginError naming the choices if it is none of them.
    int32_t getChoice(char const* name, std::initializer_list<char const*> choices) const;

private:
    nvinfer1::PluginField const& find(char const* name) const;

    std::vector<nvinfer1::PluginField> mFields;
};

//! A PluginField pointing at a plugin member, for getFieldsToSerialize.
nvinfer1::PluginField int32Field(char const* name, int32_t const* value) noexcept;
//! A kCHAR PluginField over a NUL-terminated string that outlives the collection (length excludes the NUL).
nvinfer1::PluginField stringField(char const* name, char const* value) noexcept;

//! Offsets of the regions of one workspace, each aligned to kWORKSPACE_ALIGNMENT bytes. The same accumulation
//! runs in getWorkspaceSize (for the largest shapes of a profile) and in enqueue (for the shapes at hand).
class WorkspaceLayout
{
public:
    static constexpr size_t kWORKSPACE_ALIGNMENT = 256;

    //! Reserves `bytes` (0 allowed) at the next aligned offset and returns that offset.
    size_t add(size_t bytes) noexcept;

    size_t totalBytes() const noexcept
    {
        return mTotal;
    }

private:
    size_t mTotal{0};
};

} // namespace logquant::plugin
