// SPDX-License-Identifier: Apache-2.0
// NOTE(plugin, #4): a thin wrapper. Cache writes and decode attention are the cpp/ kernels (kvWrite.h,
// decodeAttention.h); prefill attention is prefillAttention.cu; the fields, I/O tables and shape checks are
// logquantAttentionContract.h. This file sizes the workspace, implements the V3 calls and routes enqueue.
#include "logquantAttentionPlugin/logquantAttentionPlugin.h"

#include "common/pluginUtils.h"
#include "logquant/common/checks.h"
#include "logquant/decodeAttention.h"
#include "logquant/kvWrite.h"
#include "logquantAttentionPlugin/logquantAttentionContract.h"
#include "logquantAttentionPlugin/prefillAttention.h"

#include <NvInferVersion.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>

static_assert(NV_TENSORRT_MAJOR > 10 || (NV_TENSORRT_MAJOR == 10 && NV_TENSORRT_MINOR >= 3),
    "IPluginV3OneBuildV2 (aliased I/O) needs TensorRT 10.3 or later");

using namespace nvinfer1;

namespace logquant::plugin
{
namespace
{

char const* const kPLUGIN_NAME = "LogQuantAttention";
char const* const kPLUGIN_VERSION = "1";
char const* const kPLUGIN_NAMESPACE = "logquant";

// ---- Workspace ----------------------------------------------------------------------------------------------------
// | region | bytes                                                   | used by                                    |
// |--------|---------------------------------------------------------|--------------------------------------------|
// | 0      | getDecodeAttentionWorkspaceSize(): split-K partials and  | decode (n == 1); zeroed by the plugin      |
// |        | counters, maximized over the profile's batch x M box     | before each launch (the kernel needs zeros)|
// Prefill needs none. Offsets are WorkspaceLayout-aligned (256 bytes).

//! The range of shapes one workspace must serve; min == max in enqueue.
struct WorkspaceShapes
{
    bool decode{false}; //!< the profile allows n == 1
    int64_t batchMin{1};
    int64_t batchMax{1};
    int64_t blocksMin{1};
    int64_t blocksMax{1};
    int64_t pages{1};
    int64_t tail{0};
    int64_t slots{1};
};

struct Workspace
{
    size_t decodeOffset{0};
    size_t decodeBytes{0};
    size_t totalBytes{0};
};

//! @throws logquant::Error if there is no CUDA device (decode's split depends on the SM count) or the shapes are
//!         unsupported.
Workspace computeWorkspace(LogQuantAttentionFields const& f, WorkspaceShapes const& s)
{
    Workspace ws;
    if (s.decode)
    {
        // The split-K plan is not monotone in batch or in M, so every point of the box is evaluated; TensorRT's
        // contract is a size that serves "the given size or any smaller problem".
        for (int64_t b = s.batchMin; b <= s.batchMax; ++b)
        {
            for (int64_t m = s.blocksMin; m <= s.blocksMax; ++m)
            {
                KvGeometry const g = makeGeometry(f, b, s.pages, m, s.tail, s.slots);
                ws.decodeBytes = std::max(ws.decodeBytes, kernel::getDecodeAttentionWorkspaceSize(g, f.numQHeads, 1));
            }
        }
    }
    WorkspaceLayout layout;
    ws.decodeOffset = layout.add(ws.decodeBytes);
    ws.totalBytes = layout.totalBytes();
    return ws;
}

WorkspaceShapes profileShapes(DynamicPluginTensorDesc const* in)
{
    WorkspaceShapes s;
    s.decode = in[kIN_Q_IDX].min.d[2] == 1;
    s.batchMin = in[kIN_Q_IDX].min.d[0];
    s.batchMax = in[kIN_Q_IDX].max.d[0];
    s.blocksMin = in[kIN_BLOCK_TABLE_IDX].min.d[1];
    s.blocksMax = in[kIN_BLOCK_TABLE_IDX].max.d[1];
    s.pages = in[kIN_K_CODES_IDX].max.d[0];
    s.tail = in[kIN_TAIL_K_IDX].max.d[2];
    s.slots = in[kIN_RETAINED_POS_IDX].max.d[2];
    return s;
}

size_t elementBytes(nvinfer1::DataType type)
{
    return type == nvinfer1::DataType::kINT8 ? 1 : type == nvinfer1::DataType::kINT32 ? 4 : 2;
}

size_t tensorBytes(PluginTensorDesc const& desc)
{
    size_t volume = elementBytes(desc.type);
    for (int32_t i = 0; i < desc.dims.nbDims; ++i)
    {
        volume *= static_cast<size_t>(desc.dims.d[i]);
    }
    return volume;
}

} // namespace

// =====================================================================================================================
// IPluginV3
// =====================================================================================================================

LogQuantAttentionPlugin::LogQuantAttentionPlugin(std::string layerName, LogQuantAttentionFields const& fields)
    : mLayerName(std::move(layerName))
    , mFields(fields)
    , mPolicy(policyParams(fields))
    , mMetadata(describeFields(fields))
{
}

IPluginCapability* LogQuantAttentionPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuildV2*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

IPluginV3* LogQuantAttentionPlugin::clone() noexcept
{
    try
    {
        return new LogQuantAttentionPlugin(mLayerName, mFields);
    }
    catch (std::exception const& e)
    {
        reportError(std::string("clone failed: ") + e.what());
    }
    return nullptr;
}

void LogQuantAttentionPlugin::reportError(std::string const& message) const noexcept
{
    logError(std::string(kPLUGIN_NAME) + " '" + mLayerName + "': " + message);
}

int32_t LogQuantAttentionPlugin::verdict(char const* call, std::string const& problem) const noexcept
{
    if (problem.empty())
    {
        return 0;
    }
    reportError(std::string(call) + ": " + problem);
    return -1;
}

// =====================================================================================================================
// IPluginV3OneCore
// =====================================================================================================================

char const* LogQuantAttentionPlugin::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* LogQuantAttentionPlugin::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* LogQuantAttentionPlugin::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

// =====================================================================================================================
// IPluginV3OneBuildV2
// =====================================================================================================================

int32_t LogQuantAttentionPlugin::getNbOutputs() const noexcept
{
    return kNB_OUTPUTS;
}

int32_t LogQuantAttentionPlugin::getAliasedInput(int32_t outputIndex) noexcept
{
    return outputIndex >= 0 && outputIndex < kNB_OUTPUTS ? kALIASED_INPUT[outputIndex] : -1;
}

int32_t LogQuantAttentionPlugin::getOutputDataTypes(
    nvinfer1::DataType* outputTypes, int32_t nbOutputs, nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    try
    {
        std::string problem = ioProblem(inputTypes, outputTypes, nbInputs, nbOutputs);
        problem = problem.empty() ? findInputTypeProblem(mFields, inputTypes) : problem;
        for (int32_t o = 0; o < kNB_OUTPUTS && problem.empty(); ++o)
        {
            outputTypes[o] = inputTypes[shapeSourceOf(kNB_INPUTS + o)];
        }
        return verdict("getOutputDataTypes", problem);
    }
    catch (std::exception const& e)
    {
        return verdict("getOutputDataTypes", e.what());
    }
}

int32_t LogQuantAttentionPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /* shapeInputs */, int32_t /* nbShapeInputs */, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& /* exprBuilder */) noexcept
{
    try
    {
        std::string problem = ioProblem(inputs, outputs, nbInputs, nbOutputs);
        if (problem.empty())
        {
            std::array<Dims64, kNB_INPUTS> dims{};
            std::transform(inputs, inputs + kNB_INPUTS, dims.begin(), toDims);
            Binding binding;
            problem = findShapeProblem(mFields, mPolicy, dims.data(), binding);
        }
        // Every output has the shape of the input it aliases (the attention output: q's), as the same expressions.
        for (int32_t o = 0; o < kNB_OUTPUTS && problem.empty(); ++o)
        {
            outputs[o] = inputs[shapeSourceOf(kNB_INPUTS + o)];
        }
        return verdict("getOutputShapes", problem);
    }
    catch (std::exception const& e)
    {
        return verdict("getOutputShapes", e.what());
    }
}

bool LogQuantAttentionPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    std::string const problem = ioProblem(inOut, inOut, nbInputs, nbOutputs);
    if (!problem.empty() || pos < 0 || pos >= kNB_INPUTS + kNB_OUTPUTS)
    {
        verdict("supportsFormatCombination",
            problem.empty() ? "pos = " + std::to_string(pos) + " is outside [0, " + std::to_string(kNB_INPUTS + kNB_OUTPUTS) + ")"
                            : problem);
        return false;
    }
    // Unsupported types are TensorRT asking, not errors: no log. Every tensor is linear and its type is fixed by its
    // role, so aliased outputs match their inputs without looking at inOut[0..pos).
    PluginTensorDesc const& desc = inOut[pos].desc;
    return desc.format == TensorFormat::kLINEAR && desc.type == expectedType(mFields, pos);
}

int32_t LogQuantAttentionPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        std::string const problem = ioProblem(in, out, nbInputs, nbOutputs);
        return verdict("configurePlugin", problem.empty() ? findBuildProblem(mFields, mPolicy, in, out) : problem);
    }
    catch (std::exception const& e)
    {
        return verdict("configurePlugin", e.what());
    }
}

size_t LogQuantAttentionPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
    DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept
{
    try
    {
        // Validated first: computeWorkspace loops over the profile's ranges.
        std::string problem = ioProblem(inputs, outputs, nbInputs, nbOutputs);
        problem = problem.empty() ? findBuildProblem(mFields, mPolicy, inputs, outputs) : problem;
        if (verdict("getWorkspaceSize", problem) == 0)
        {
            return computeWorkspace(mFields, profileShapes(inputs)).totalBytes;
        }
    }
    catch (std::exception const& e)
    {
        verdict("getWorkspaceSize", e.what());
    }
    return 0;
}

char const* LogQuantAttentionPlugin::getMetadataString() noexcept
{
    return mMetadata.c_str();
}

// =====================================================================================================================
// IPluginV3OneRuntime
// =====================================================================================================================

int32_t LogQuantAttentionPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        std::string const problem = ioProblem(in, out, nbInputs, nbOutputs);
        Binding binding;
        return verdict("onShapeChange", problem.empty() ? findRuntimeProblem(mFields, mPolicy, in, out, binding) : problem);
    }
    catch (std::exception const& e)
    {
        return verdict("onShapeChange", e.what());
    }
}

int32_t LogQuantAttentionPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    try
    {
        enqueueImpl(inputDesc, outputDesc, inputs, outputs, workspace, stream);
        return 0;
    }
    catch (std::exception const& e)
    {
        reportError(std::string("enqueue: ") + e.what());
    }
    return -1;
}

void LogQuantAttentionPlugin::enqueueImpl(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream)
{
    if (inputDesc == nullptr || outputDesc == nullptr || inputs == nullptr || outputs == nullptr)
    {
        throw PluginError("null descriptors or pointers");
    }
    Binding bound;
    std::string const problem = findRuntimeProblem(mFields, mPolicy, inputDesc, outputDesc, bound);
    if (!problem.empty())
    {
        throw PluginError(problem + "; nothing was launched");
    }
    int64_t const batch = bound[kSYM_B];
    int64_t const n = bound[kSYM_N];

    // Outputs 1.. alias their inputs when the engine was built with PreviewFeature::kALIASED_PLUGIN_IO_10_03; without
    // it TensorRT hands separate output buffers, and the op is out of place: copy the cache first (correct, but a full
    // copy of the cache per call).
    for (int32_t o = 1; o < kNB_OUTPUTS; ++o)
    {
        int32_t const source = shapeSourceOf(kNB_INPUTS + o);
        if (outputs[o] != inputs[source])
        {
            if (!mWarnedUnaliased)
            {
                mWarnedUnaliased = true;
                logWarning(std::string(kPLUGIN_NAME) + " '" + mLayerName
                    + "': cache outputs are not aliased to their inputs; copying the cache on every call. Build with "
                      "PreviewFeature::kALIASED_PLUGIN_IO_10_03 to update it in place.");
            }
            LOGQUANT_CUDA_CHECK(cudaMemcpyAsync(
                outputs[o], inputs[source], tensorBytes(inputDesc[source]), cudaMemcpyDeviceToDevice, stream));
        }
    }

    // The cache is updated through the outputs, the memory TensorRT designates for the result.
    auto cacheOutput = [outputs](int32_t input) { return outputs[aliasingOutputOf(input)]; };
    KvCacheView view;
    view.geometry = makeGeometry(mFields, batch, bound[kSYM_P], bound[kSYM_M], bound[kSYM_T], bound[kSYM_S]);
    view.kCodes = static_cast<uint8_t*>(cacheOutput(kIN_K_CODES_IDX));
    view.kParams = cacheOutput(kIN_K_PARAMS_IDX);
    view.vCodes = static_cast<uint8_t*>(cacheOutput(kIN_V_CODES_IDX));
    view.vParams = cacheOutput(kIN_V_PARAMS_IDX);
    view.dupMask = static_cast<int32_t*>(cacheOutput(kIN_DUP_MASK_IDX));
    view.blockTable = static_cast<int32_t const*>(inputs[kIN_BLOCK_TABLE_IDX]);
    view.numSealed = static_cast<int32_t*>(cacheOutput(kIN_NUM_SEALED_IDX));
    view.seqLen = static_cast<int32_t*>(cacheOutput(kIN_SEQ_LEN_IDX));
    view.tailK = cacheOutput(kIN_TAIL_K_IDX);
    view.tailV = cacheOutput(kIN_TAIL_V_IDX);
    view.retainedPos = static_cast<int32_t*>(cacheOutput(kIN_RETAINED_POS_IDX));
    view.retainedK = cacheOutput(kIN_RETAINED_K_IDX);
    view.retainedV = cacheOutput(kIN_RETAINED_V_IDX);
    float const scale = 1.0F / std::sqrt(static_cast<float>(mFields.headDim));

    if (n > 1)
    {
        // Prefill of an empty cache: attention over the prompt's own full-precision K/V, then one compaction
        // (docs/kv_format.md §5). Both read only the inputs, so their order does not matter.
        PrefillAttentionParams attention;
        attention.q = inputs[kIN_Q_IDX];
        attention.k = inputs[kIN_K_IDX];
        attention.v = inputs[kIN_V_IDX];
        attention.lengths = static_cast<int32_t const*>(inputs[kIN_CONTEXT_LENGTHS_IDX]);
        attention.out = outputs[kOUT_ATTENTION_IDX];
        attention.batch = static_cast<int32_t>(batch);
        attention.numQueryHeads = mFields.numQHeads;
        attention.numKvHeads = mFields.numKvHeads;
        attention.numTokens = static_cast<int32_t>(n);
        attention.headDim = mFields.headDim;
        attention.scale = scale;
        attention.dtype = mFields.dtype;
        launchPrefillAttention(attention, stream);

        kernel::QuantizePrefillParams write;
        write.cache = view;
        write.policy = mPolicy;
        write.k = inputs[kIN_K_IDX];
        write.v = inputs[kIN_V_IDX];
        write.lengths = static_cast<int32_t const*>(inputs[kIN_CONTEXT_LENGTHS_IDX]);
        write.maxLength = static_cast<int32_t>(n);
        kernel::launchQuantizePrefill(write, stream);
        return;
    }

    // Decode: append -> compact -> attend (docs/kv_format.md §5); the new token is in the tail when attention runs.
    kernel::AppendDecodeParams append;
    append.cache = view;
    append.policy = mPolicy;
    append.kNew = inputs[kIN_K_IDX];
    append.vNew = inputs[kIN_V_IDX];
    kernel::launchAppendDecode(append, stream);

    WorkspaceShapes exact;
    exact.decode = true;
    exact.batchMin = exact.batchMax = batch;
    exact.blocksMin = exact.blocksMax = bound[kSYM_M];
    exact.pages = bound[kSYM_P];
    exact.tail = bound[kSYM_T];
    exact.slots = bound[kSYM_S];
    Workspace const ws = computeWorkspace(mFields, exact);
    void* scratch{nullptr};
    if (ws.decodeBytes > 0)
    {
        if (workspace == nullptr)
        {
            throw PluginError("decode attention needs " + std::to_string(ws.decodeBytes) + " bytes of workspace, got none");
        }
        // TensorRT's workspace is shared scratch, so the kernel's "zeroed before the first launch" holds only if
        // the plugin zeroes it each time.
        scratch = static_cast<uint8_t*>(workspace) + ws.decodeOffset;
        LOGQUANT_CUDA_CHECK(cudaMemsetAsync(scratch, 0, ws.decodeBytes, stream));
    }
    kernel::DecodeAttentionParams attention;
    attention.cache = view;
    attention.q = inputs[kIN_Q_IDX];
    attention.out = outputs[kOUT_ATTENTION_IDX];
    attention.numQueryHeads = mFields.numQHeads;
    attention.numQueries = 1;
    attention.scale = scale;
    attention.workspace = scratch;
    attention.workspaceBytes = ws.decodeBytes;
    kernel::launchDecodeAttention(attention, stream);
}

IPluginV3* LogQuantAttentionPlugin::attachToContext(IPluginResourceContext* /* context */) noexcept
{
    // No per-context resources: scratch comes from TensorRT's workspace.
    return clone();
}

PluginFieldCollection const* LogQuantAttentionPlugin::getFieldsToSerialize() noexcept
{
    mSerialFields = serializeFields(mFields);
    mSerialCollection.nbFields = static_cast<int32_t>(mSerialFields.size());
    mSerialCollection.fields = mSerialFields.data();
    return &mSerialCollection;
}

// =====================================================================================================================
// Creator
// =====================================================================================================================

char const* LogQuantAttentionPluginCreator::getPluginName() const noexcept
{
    return kPLUGIN_NAME;
}

char const* LogQuantAttentionPluginCreator::getPluginVersion() const noexcept
{
    return kPLUGIN_VERSION;
}

char const* LogQuantAttentionPluginCreator::getPluginNamespace() const noexcept
{
    return kPLUGIN_NAMESPACE;
}

PluginFieldCollection const* LogQuantAttentionPluginCreator::getFieldNames() noexcept
{
    return fieldNames();
}

IPluginV3* LogQuantAttentionPluginCreator::createPlugin(
    char const* name, PluginFieldCollection const* fc, TensorRTPhase phase) noexcept
{
    // Build (fields from the network or ONNX attributes) and runtime (fields from getFieldsToSerialize) take the
    // same path: a deserialized plugin is validated as strictly as a new one.
    std::string const layer = name == nullptr ? "" : std::string(name, strnlen(name, 1024));
    try
    {
        return new LogQuantAttentionPlugin(layer, parseFields(fc));
    }
    catch (std::exception const& e)
    {
        logError(std::string(kPLUGIN_NAME) + " '" + layer + "': cannot create the plugin ("
            + (phase == TensorRTPhase::kRUNTIME ? "runtime" : "build") + " phase): " + e.what());
    }
    return nullptr;
}

} // namespace logquant::plugin

// NOTE(plugin, #4): no REGISTER_TENSORRT_PLUGIN: its static registrar calls getPluginRegistry() from libnvinfer at
// load time. TensorRT's loaders (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, polygraphy --plugins) find
// the creators through this entry point instead; setLoggerFinder is in common/pluginUtils.cpp.
extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) noexcept
{
    static logquant::plugin::LogQuantAttentionPluginCreator creator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
    nbCreators = 1;
    return creators;
}
