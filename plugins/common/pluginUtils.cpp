// SPDX-License-Identifier: Apache-2.0
#include "common/pluginUtils.h"

#include <cstdio>
#include <cstring>
#include <mutex>
#include <sstream>

namespace logquant::plugin
{
namespace
{

std::mutex gLoggerMutex;
nvinfer1::ILoggerFinder* gLoggerFinder{nullptr};

char const* typeName(nvinfer1::PluginFieldType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginFieldType::kINT32: return "kINT32";
    case nvinfer1::PluginFieldType::kCHAR: return "kCHAR";
    default: return "another type";
    }
}

//! Bytes from a field as log text: non-printable ones as \xNN, so that corrupted data cannot garble the log.
std::string printable(std::string const& bytes)
{
    std::string text;
    for (unsigned char c : bytes)
    {
        char escaped[5];
        std::snprintf(escaped, sizeof(escaped), "\\x%02x", c);
        text += c >= 0x20 && c < 0x7F ? std::string(1, static_cast<char>(c)) : std::string(escaped);
    }
    return text;
}

//! The value of a validated kCHAR field, without its optional terminating NUL.
std::string stringValue(nvinfer1::PluginField const& field)
{
    auto const* bytes = static_cast<char const*>(field.data);
    size_t length = static_cast<size_t>(field.length);
    return std::string(bytes, length > 0 && bytes[length - 1] == '\0' ? length - 1 : length);
}

} // namespace

void logMessage(nvinfer1::ILogger::Severity severity, std::string const& message) noexcept
{
    nvinfer1::ILogger* logger{nullptr};
    {
        std::lock_guard<std::mutex> lock(gLoggerMutex);
        if (gLoggerFinder != nullptr)
        {
            logger = gLoggerFinder->findLogger();
        }
    }
    if (logger != nullptr)
    {
        logger->log(severity, message.c_str());
    }
    else if (severity <= nvinfer1::ILogger::Severity::kWARNING)
    {
        std::fprintf(stderr, "[logquant_trt_plugin] %s\n", message.c_str());
    }
}

FieldParser::FieldParser(nvinfer1::PluginFieldCollection const* fields, std::vector<FieldSpec> const& specs)
{
    if (fields == nullptr || fields->nbFields < 0 || fields->nbFields > kMAX_FIELDS
        || (fields->nbFields > 0 && fields->fields == nullptr))
    {
        throw PluginError("the PluginFieldCollection is null or malformed (nbFields < 0, > 1024, or no field array)");
    }
    for (int32_t i = 0; i < fields->nbFields; ++i)
    {
        nvinfer1::PluginField const& field = fields->fields[i];
        if (field.name == nullptr)
        {
            throw PluginError("field " + std::to_string(i) + " has no name");
        }
        std::string const name = printable(std::string(field.name, strnlen(field.name, kMAX_STRING_FIELD_BYTES + 1)));
        FieldSpec const* spec{nullptr};
        for (FieldSpec const& candidate : specs)
        {
            spec = name == candidate.name ? &candidate : spec;
        }
        if (spec == nullptr)
        {
            std::ostringstream known;
            for (FieldSpec const& candidate : specs)
            {
                known << (&candidate == specs.data() ? "" : ", ") << candidate.name;
            }
            throw PluginError("unknown field '" + name + "'; the fields are: " + known.str());
        }
        for (nvinfer1::PluginField const& seen : mFields)
        {
            if (name == seen.name)
            {
                throw PluginError("field '" + name + "' is given twice");
            }
        }
        if (field.type != spec->type)
        {
            throw PluginError("field '" + name + "' must have type " + typeName(spec->type) + ", got "
                + typeName(field.type) + " (" + std::to_string(static_cast<int32_t>(field.type)) + ")");
        }
        if (field.data == nullptr)
        {
            throw PluginError("field '" + name + "' has no data");
        }
        if (spec->type == nvinfer1::PluginFieldType::kINT32 && field.length != 1)
        {
            throw PluginError("field '" + name + "' must hold 1 value, got length " + std::to_string(field.length));
        }
        if (spec->type == nvinfer1::PluginFieldType::kCHAR)
        {
            // Callers differ on whether length counts a terminating NUL (the ONNX parser does not); accept both,
            // but nothing else: an interior NUL means the length does not describe the string.
            auto const* bytes = static_cast<char const*>(field.data);
            int32_t const maxBytes = kMAX_STRING_FIELD_BYTES + 1;
            bool const terminated = field.length > 0 && field.length <= maxBytes && bytes[field.length - 1] == '\0';
            int32_t const chars = terminated ? field.length - 1 : field.length;
            if (chars < 1 || chars > kMAX_STRING_FIELD_BYTES
                || std::memchr(bytes, '\0', static_cast<size_t>(chars)) != nullptr)
            {
                throw PluginError("field '" + name + "' must be a string of 1.." + std::to_string(kMAX_STRING_FIELD_BYTES)
                    + " characters without NUL, got length " + std::to_string(field.length));
            }
        }
        mFields.push_back(field);
        mFields.back().name = spec->name; // outlives the caller's collection
    }
    for (FieldSpec const& spec : specs)
    {
        find(spec.name);
    }
}

nvinfer1::PluginField const& FieldParser::find(char const* name) const
{
    for (nvinfer1::PluginField const& field : mFields)
    {
        if (std::strcmp(field.name, name) == 0)
        {
            return field;
        }
    }
    throw PluginError(std::string("field '") + name + "' is missing");
}

int32_t FieldParser::getInt32(char const* name, int32_t min, int32_t max) const
{
    int32_t value{0};
    std::memcpy(&value, find(name).data, sizeof(value)); // PluginField data carries no alignment guarantee
    if (value < min || value > max)
    {
        throw PluginError(std::string("field '") + name + "' = " + std::to_string(value) + " is out of range ["
            + std::to_string(min) + ", " + std::to_string(max) + "]");
    }
    return value;
}

int32_t FieldParser::getChoice(char const* name, std::initializer_list<char const*> choices) const
{
    std::string const value = stringValue(find(name));
    std::ostringstream valid;
    int32_t index = 0;
    for (char const* choice : choices)
    {
        if (value == choice)
        {
            return index;
        }
        valid << (index++ == 0 ? "" : ", ") << choice;
    }
    throw PluginError(
        std::string("field '") + name + "' = '" + printable(value) + "' must be one of: " + valid.str());
}

nvinfer1::PluginField int32Field(char const* name, int32_t const* value) noexcept
{
    return nvinfer1::PluginField(name, value, nvinfer1::PluginFieldType::kINT32, 1);
}

nvinfer1::PluginField stringField(char const* name, char const* value) noexcept
{
    return nvinfer1::PluginField(
        name, value, nvinfer1::PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(value)));
}

size_t WorkspaceLayout::add(size_t bytes) noexcept
{
    size_t const offset = (mTotal + kWORKSPACE_ALIGNMENT - 1) / kWORKSPACE_ALIGNMENT * kWORKSPACE_ALIGNMENT;
    mTotal = offset + bytes;
    return offset;
}

} // namespace logquant::plugin

//! TensorRT's loader calls this once, before any creator is used; the finder stays valid while the library is loaded.
extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    std::lock_guard<std::mutex> lock(logquant::plugin::gLoggerMutex);
    logquant::plugin::gLoggerFinder = finder;
}
