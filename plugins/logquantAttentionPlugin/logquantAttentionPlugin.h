// SPDX-License-Identifier: Apache-2.0
// LogQuantAttention (namespace "logquant", version "1"): fused attention that owns one layer's 2-bit KV cache in the
// layout of docs/kv_format.md §4. A call with n > 1 new tokens per sequence is a prefill of an empty cache; n == 1 is
// a decode step. Inputs, outputs and fields: docs/plugin.md, and the tables at the top of
// logquantAttentionPlugin.cpp, which own them.
#pragma once

#include "logquant/policyParams.h"
#include "logquantAttentionPlugin/logquantAttentionContract.h"

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <string>

namespace logquant::plugin
{

class LogQuantAttentionPlugin : public nvinfer1::IPluginV3,
                                public nvinfer1::IPluginV3OneCore,
                                public nvinfer1::IPluginV3OneBuildV2,
                                public nvinfer1::IPluginV3OneRuntime
{
public:
    //! `fields` come from parseFields (validated).
    LogQuantAttentionPlugin(std::string layerName, LogQuantAttentionFields const& fields);
    LogQuantAttentionPlugin(LogQuantAttentionPlugin const&) = delete;
    LogQuantAttentionPlugin& operator=(LogQuantAttentionPlugin const&) = delete;
    ~LogQuantAttentionPlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuildV2
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    char const* getMetadataString() noexcept override;
    int32_t getAliasedInput(int32_t outputIndex) noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    void enqueueImpl(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream);
    //! Logs "LogQuantAttention '<layer>': <message>" as an error.
    void reportError(std::string const& message) const noexcept;
    //! 0 if `problem` is empty; otherwise logs "<call>: <problem>" and returns -1.
    int32_t verdict(char const* call, std::string const& problem) const noexcept;

    std::string mLayerName;
    LogQuantAttentionFields mFields;
    PolicyParams mPolicy; //!< derived from mFields for this layer (pool size 0 below pool_skip_layers)
    std::string mMetadata;
    std::array<nvinfer1::PluginField, 15> mSerialFields;
    nvinfer1::PluginFieldCollection mSerialCollection{};
    bool mWarnedUnaliased{false};
};

class LogQuantAttentionPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    //! Returns nullptr, with the reason logged as an error, if any field is missing, unknown, mistyped or invalid.
    nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
        nvinfer1::TensorRTPhase phase) noexcept override;
};

} // namespace logquant::plugin
