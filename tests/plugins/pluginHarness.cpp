// SPDX-License-Identifier: Apache-2.0
// A stand-in for TensorRT, for testing plugin libraries where no libnvinfer exists (../shared/NOTES.md §2). It loads a
// plugin library the way IPluginRegistry::loadLibrary does (dlopen, setLoggerFinder, getCreators), captures what the
// plugin logs through an ILoggerFinder/ILogger, implements the expression builder of getOutputShapes (constant
// folding over nvinfer1::apiv::VExprBuilder / VDimensionExpr), and exposes every IPluginV3 call through a C API that
// tests/plugins/trt_harness.py drives with ctypes. It never links the plugin: a wrong export fails the load.
#include <NvInferRuntime.h>

#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

using namespace nvinfer1;

#define LQH_API extern "C" __attribute__((visibility("default")))

namespace
{

static_assert(sizeof(PluginField) == 24, "trt_harness.PluginField mirrors nvinfer1::PluginField");

//! One tensor as the tests describe it; trt_harness.Tensor mirrors it.
struct HarnessTensor
{
    int32_t type;
    int32_t format;
    int32_t nbDims;
    int32_t padding;
    int64_t dims[Dims64::MAX_DIMS]; //!< -1: unknown (a symbol in getOutputShapes, a wildcard in configurePlugin)
    int64_t min[Dims64::MAX_DIMS];
    int64_t opt[Dims64::MAX_DIMS];
    int64_t max[Dims64::MAX_DIMS];
};

// ---- Logging --------------------------------------------------------------------------------------------------------

class CapturingLogger : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        std::lock_guard<std::mutex> lock(mMutex);
        mText += std::to_string(static_cast<int32_t>(severity)) + "\t" + (msg == nullptr ? "(null)" : msg) + "\n";
    }

    std::string take()
    {
        std::lock_guard<std::mutex> lock(mMutex);
        std::string text;
        text.swap(mText);
        return text;
    }

private:
    std::mutex mMutex;
    std::string mText;
};

class HarnessLoggerFinder : public ILoggerFinder
{
public:
    ILogger* findLogger() override
    {
        return &mLogger;
    }

    CapturingLogger mLogger;
};

HarnessLoggerFinder gFinder;
IPluginCreatorV3One* gCreator{nullptr};

void harnessError(std::string const& message)
{
    gFinder.mLogger.log(ILogger::Severity::kINTERNAL_ERROR, ("harness: " + message).c_str());
}

// ---- Expression builder ---------------------------------------------------------------------------------------------

class HarnessExpr : public IDimensionExpr, public apiv::VDimensionExpr
{
public:
    HarnessExpr(bool constant, int64_t value, std::string text)
        : mConstant(constant)
        , mValue(value)
        , mText(std::move(text))
    {
        mImpl = this;
    }

    ~HarnessExpr() noexcept override = default;

    bool isConstant() const override
    {
        return mConstant;
    }

    int64_t getConstantValue() const override
    {
        return mConstant ? mValue : std::numeric_limits<int64_t>::min();
    }

    bool isSizeTensor() const override
    {
        return false;
    }

    std::string const& text() const
    {
        return mText;
    }

private:
    bool mConstant;
    int64_t mValue;
    std::string mText;
};

char const* operationName(DimensionOperation op)
{
    static char const* const kNAMES[] = {"sum", "prod", "max", "min", "sub", "eq", "less", "floordiv", "ceildiv"};
    auto const index = static_cast<int32_t>(op);
    return index >= 0 && index < 9 ? kNAMES[index] : nullptr;
}

//! Folds operations on constants; anything involving a symbol stays symbolic, named by its expression.
class HarnessExprBuilder : public IExprBuilder, public apiv::VExprBuilder
{
public:
    HarnessExprBuilder()
    {
        mImpl = this;
    }

    ~HarnessExprBuilder() noexcept override = default;

    IDimensionExpr const* constant(int64_t value) override
    {
        return make(true, value, std::to_string(value));
    }

    HarnessExpr const* symbol(std::string name)
    {
        return make(false, 0, std::move(name));
    }

    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& first, IDimensionExpr const& second) override
    {
        auto const& a = static_cast<HarnessExpr const&>(first);
        auto const& b = static_cast<HarnessExpr const&>(second);
        char const* name = operationName(op);
        if (name == nullptr)
        {
            return nullptr;
        }
        if (!a.isConstant() || !b.isConstant())
        {
            return make(false, 0, std::string(name) + "(" + a.text() + "," + b.text() + ")");
        }
        int64_t const x = a.getConstantValue();
        int64_t const y = b.getConstantValue();
        if ((op == DimensionOperation::kFLOOR_DIV || op == DimensionOperation::kCEIL_DIV) && y == 0)
        {
            return nullptr;
        }
        switch (op)
        {
        case DimensionOperation::kSUM: return constant(x + y);
        case DimensionOperation::kPROD: return constant(x * y);
        case DimensionOperation::kMAX: return constant(x > y ? x : y);
        case DimensionOperation::kMIN: return constant(x < y ? x : y);
        case DimensionOperation::kSUB: return constant(x - y);
        case DimensionOperation::kEQUAL: return constant(x == y ? 1 : 0);
        case DimensionOperation::kLESS: return constant(x < y ? 1 : 0);
        case DimensionOperation::kFLOOR_DIV: return constant(x / y - ((x % y != 0) && ((x < 0) != (y < 0)) ? 1 : 0));
        case DimensionOperation::kCEIL_DIV: return constant(x / y + ((x % y != 0) && ((x < 0) == (y < 0)) ? 1 : 0));
        }
        return nullptr;
    }

    IDimensionExpr const* declareSizeTensor(int32_t, IDimensionExpr const&, IDimensionExpr const&) override
    {
        return nullptr; // no size-tensor outputs in the plugins under test
    }

private:
    HarnessExpr const* make(bool isConstant, int64_t value, std::string text)
    {
        mExprs.push_back(std::make_unique<HarnessExpr>(isConstant, value, std::move(text)));
        return mExprs.back().get();
    }

    std::vector<std::unique_ptr<HarnessExpr>> mExprs;
};

// ---- Plugin access --------------------------------------------------------------------------------------------------

class HarnessResourceContext : public IPluginResourceContext
{
public:
    IGpuAllocator* getGpuAllocator() const noexcept override
    {
        return nullptr;
    }

    IErrorRecorder* getErrorRecorder() const noexcept override
    {
        return nullptr;
    }
};

//! The capability of `type`, checked by interface name and major version the way TensorRT identifies it.
template <typename Capability>
Capability* capability(void* handle, PluginCapabilityType type, char const* kind, int32_t major)
{
    IPluginCapability* cap = handle == nullptr ? nullptr : static_cast<IPluginV3*>(handle)->getCapabilityInterface(type);
    if (cap == nullptr)
    {
        harnessError(std::string("the plugin has no ") + kind + " capability");
        return nullptr;
    }
    InterfaceInfo const info = cap->getInterfaceInfo();
    if (std::strcmp(info.kind, kind) != 0 || info.major != major)
    {
        harnessError(std::string("capability ") + info.kind + " " + std::to_string(info.major) + " is not " + kind
            + " " + std::to_string(major));
        return nullptr;
    }
    return static_cast<Capability*>(cap);
}

IPluginV3OneCore* core(void* handle)
{
    return capability<IPluginV3OneCore>(handle, PluginCapabilityType::kCORE, "PLUGIN_V3ONE_CORE", 1);
}

IPluginV3OneBuildV2* build(void* handle)
{
    return capability<IPluginV3OneBuildV2>(handle, PluginCapabilityType::kBUILD, "PLUGIN_V3ONE_BUILD", 2);
}

IPluginV3OneRuntime* runtime(void* handle)
{
    return capability<IPluginV3OneRuntime>(handle, PluginCapabilityType::kRUNTIME, "PLUGIN_V3ONE_RUNTIME", 1);
}

Dims64 dimsOf(int32_t nbDims, int64_t const* values)
{
    Dims64 dims{};
    dims.nbDims = nbDims;
    for (int32_t i = 0; i < Dims64::MAX_DIMS; ++i)
    {
        dims.d[i] = values[i];
    }
    return dims;
}

std::vector<DynamicPluginTensorDesc> dynamicDescs(HarnessTensor const* tensors, int32_t count)
{
    std::vector<DynamicPluginTensorDesc> descs(count > 0 ? count : 0);
    for (int32_t i = 0; i < count; ++i)
    {
        HarnessTensor const& t = tensors[i];
        descs[i].desc.dims = dimsOf(t.nbDims, t.dims);
        descs[i].desc.type = static_cast<nvinfer1::DataType>(t.type);
        descs[i].desc.format = static_cast<TensorFormat>(t.format);
        descs[i].desc.scale = -1.0F;
        descs[i].min = dimsOf(t.nbDims, t.min);
        descs[i].opt = dimsOf(t.nbDims, t.opt);
        descs[i].max = dimsOf(t.nbDims, t.max);
    }
    return descs;
}

std::vector<PluginTensorDesc> staticDescs(HarnessTensor const* tensors, int32_t count)
{
    std::vector<PluginTensorDesc> descs;
    for (DynamicPluginTensorDesc const& d : dynamicDescs(tensors, count))
    {
        descs.push_back(d.desc);
    }
    return descs;
}

int32_t copyText(std::string const& text, char* buffer, int32_t capacity)
{
    if (buffer != nullptr && capacity > 0)
    {
        size_t const n = std::min(text.size(), static_cast<size_t>(capacity - 1));
        std::memcpy(buffer, text.data(), n);
        buffer[n] = '\0';
    }
    return static_cast<int32_t>(text.size());
}

} // namespace

// ---- C API ------------------------------------------------------------------------------------------------------------

//! dlopen + setLoggerFinder + getCreators, then picks the IPluginCreatorV3One `name`/`version`/`ns`. 0 on success.
LQH_API int32_t lqh_load(char const* path, char const* name, char const* version, char const* ns)
{
    void* library = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr)
    {
        harnessError(std::string("dlopen failed: ") + dlerror());
        return -1;
    }
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    auto setLoggerFinder = reinterpret_cast<SetLoggerFinder>(dlsym(library, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(library, "getCreators"));
    if (setLoggerFinder == nullptr || getCreators == nullptr)
    {
        harnessError("the library does not export setLoggerFinder and getCreators");
        return -1;
    }
    setLoggerFinder(&gFinder);
    int32_t count = 0;
    IPluginCreatorInterface* const* creators = getCreators(count);
    for (int32_t i = 0; i < count && creators != nullptr; ++i)
    {
        InterfaceInfo const info = creators[i]->getInterfaceInfo();
        if (std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") != 0 || info.major != 1)
        {
            continue;
        }
        auto* creator = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(creator->getPluginName(), name) == 0 && std::strcmp(creator->getPluginVersion(), version) == 0
            && std::strcmp(creator->getPluginNamespace(), ns) == 0)
        {
            gCreator = creator;
            return 0;
        }
    }
    harnessError("no IPluginCreatorV3One " + std::string(ns) + "::" + name + " version " + version);
    return -1;
}

//! The creator's field names and types, "name:type" per line.
LQH_API int32_t lqh_field_names(char* buffer, int32_t capacity)
{
    std::string text;
    PluginFieldCollection const* fields = gCreator == nullptr ? nullptr : gCreator->getFieldNames();
    for (int32_t i = 0; fields != nullptr && i < fields->nbFields; ++i)
    {
        text += std::string(fields->fields[i].name) + ":" + std::to_string(static_cast<int32_t>(fields->fields[i].type))
            + "\n";
    }
    return copyText(text, buffer, capacity);
}

//! Everything logged since the last call, "severity\tmessage" per line.
LQH_API int32_t lqh_take_log(char* buffer, int32_t capacity)
{
    return copyText(gFinder.mLogger.take(), buffer, capacity);
}

//! createPlugin; nbFields < 0 passes a null PluginFieldCollection. The caller owns the result (lqh_destroy).
LQH_API void* lqh_create(char const* name, PluginField const* fields, int32_t nbFields, int32_t phase)
{
    if (gCreator == nullptr)
    {
        harnessError("lqh_load first");
        return nullptr;
    }
    PluginFieldCollection collection{nbFields, fields};
    return gCreator->createPlugin(name, nbFields < 0 ? nullptr : &collection, static_cast<TensorRTPhase>(phase));
}

LQH_API void lqh_destroy(void* plugin)
{
    delete static_cast<IPluginV3*>(plugin);
}

LQH_API void* lqh_clone(void* plugin)
{
    return static_cast<IPluginV3*>(plugin)->clone();
}

LQH_API void* lqh_attach(void* plugin)
{
    static HarnessResourceContext context;
    IPluginV3OneRuntime* rt = runtime(plugin);
    return rt == nullptr ? nullptr : rt->attachToContext(&context);
}

//! "name\nversion\nnamespace\nmetadata".
LQH_API int32_t lqh_identity(void* plugin, char* buffer, int32_t capacity)
{
    IPluginV3OneCore* c = core(plugin);
    IPluginV3OneBuildV2* b = build(plugin);
    if (c == nullptr || b == nullptr)
    {
        return -1;
    }
    char const* metadata = b->getMetadataString();
    return copyText(std::string(c->getPluginName()) + "\n" + c->getPluginVersion() + "\n" + c->getPluginNamespace() + "\n"
            + (metadata == nullptr ? "" : metadata),
        buffer, capacity);
}

//! getFieldsToSerialize into `out` (at most `capacity`); returns the field count or -1. Data stays owned by the plugin.
LQH_API int32_t lqh_serialize(void* plugin, PluginField* out, int32_t capacity)
{
    IPluginV3OneRuntime* rt = runtime(plugin);
    PluginFieldCollection const* fields = rt == nullptr ? nullptr : rt->getFieldsToSerialize();
    if (fields == nullptr)
    {
        return -1;
    }
    for (int32_t i = 0; i < fields->nbFields && i < capacity; ++i)
    {
        out[i] = fields->fields[i];
    }
    return fields->nbFields;
}

LQH_API int32_t lqh_nb_outputs(void* plugin)
{
    IPluginV3OneBuildV2* b = build(plugin);
    return b == nullptr ? -1 : b->getNbOutputs();
}

LQH_API int32_t lqh_aliased_input(void* plugin, int32_t outputIndex)
{
    IPluginV3OneBuildV2* b = build(plugin);
    return b == nullptr ? -2 : b->getAliasedInput(outputIndex);
}

LQH_API int32_t lqh_output_types(
    void* plugin, int32_t const* inputTypes, int32_t nbInputs, int32_t* outputTypes, int32_t nbOutputs)
{
    IPluginV3OneBuildV2* b = build(plugin);
    return b == nullptr ? -2
                        : b->getOutputDataTypes(reinterpret_cast<nvinfer1::DataType*>(outputTypes), nbOutputs,
                            reinterpret_cast<nvinfer1::DataType const*>(inputTypes), nbInputs);
}

//! getOutputShapes. Input dims >= 0 become constants, -1 the symbol "i<input>d<dim>". Writes each output's dims as
//! text, "," between dims and ";" between outputs ("null" for an unset expression). Returns the plugin's status.
LQH_API int32_t lqh_output_shapes(void* plugin, HarnessTensor const* inputs, int32_t nbInputs, int32_t nbOutputs,
    char* buffer, int32_t capacity)
{
    IPluginV3OneBuildV2* b = build(plugin);
    if (b == nullptr || nbInputs < 0 || nbOutputs < 0)
    {
        return -2;
    }
    HarnessExprBuilder builder;
    std::vector<DimsExprs> in(nbInputs);
    for (int32_t i = 0; i < nbInputs; ++i)
    {
        in[i].nbDims = inputs[i].nbDims;
        for (int32_t j = 0; j < std::min(inputs[i].nbDims, Dims64::MAX_DIMS); ++j)
        {
            int64_t const d = inputs[i].dims[j];
            in[i].d[j] = d >= 0 ? builder.constant(d) : builder.symbol("i" + std::to_string(i) + "d" + std::to_string(j));
        }
    }
    std::vector<DimsExprs> out(nbOutputs);
    for (DimsExprs& dims : out)
    {
        dims.nbDims = 0;
        std::fill(std::begin(dims.d), std::end(dims.d), nullptr);
    }
    int32_t const status = b->getOutputShapes(in.data(), nbInputs, nullptr, 0, out.data(), nbOutputs, builder);
    std::string text;
    for (int32_t o = 0; o < nbOutputs; ++o)
    {
        text += o == 0 ? "" : ";";
        for (int32_t j = 0; j < std::min(out[o].nbDims, Dims64::MAX_DIMS); ++j)
        {
            auto const* expr = static_cast<HarnessExpr const*>(out[o].d[j]);
            text += (j == 0 ? "" : ",") + (expr == nullptr ? std::string("null") : expr->text());
        }
    }
    copyText(text, buffer, capacity);
    return status;
}

//! Folds `a <op> b` through the harness builder (a is the symbol "a" if aIsSymbol); writes the result's text,
//! "null" for an invalid operation such as a division by zero.
LQH_API int32_t lqh_fold(int32_t op, int64_t a, int64_t b, int32_t aIsSymbol, char* buffer, int32_t capacity)
{
    HarnessExprBuilder builder;
    IExprBuilder& api = builder;
    IDimensionExpr const* first = aIsSymbol != 0 ? builder.symbol("a") : api.constant(a);
    IDimensionExpr const* result = api.operation(static_cast<DimensionOperation>(op), *first, *api.constant(b));
    return copyText(result == nullptr ? "null" : static_cast<HarnessExpr const*>(result)->text(), buffer, capacity);
}

LQH_API int32_t lqh_supports(void* plugin, int32_t pos, HarnessTensor const* inOut, int32_t nbInputs, int32_t nbOutputs)
{
    IPluginV3OneBuildV2* b = build(plugin);
    std::vector<DynamicPluginTensorDesc> descs = dynamicDescs(inOut, nbInputs + nbOutputs);
    return b == nullptr ? -2 : b->supportsFormatCombination(pos, descs.data(), nbInputs, nbOutputs) ? 1 : 0;
}

LQH_API int32_t lqh_configure(
    void* plugin, HarnessTensor const* in, int32_t nbInputs, HarnessTensor const* out, int32_t nbOutputs)
{
    IPluginV3OneBuildV2* b = build(plugin);
    std::vector<DynamicPluginTensorDesc> inputs = dynamicDescs(in, nbInputs);
    std::vector<DynamicPluginTensorDesc> outputs = dynamicDescs(out, nbOutputs);
    return b == nullptr ? -2 : b->configurePlugin(inputs.data(), nbInputs, outputs.data(), nbOutputs);
}

LQH_API int64_t lqh_workspace_size(
    void* plugin, HarnessTensor const* in, int32_t nbInputs, HarnessTensor const* out, int32_t nbOutputs)
{
    IPluginV3OneBuildV2* b = build(plugin);
    std::vector<DynamicPluginTensorDesc> inputs = dynamicDescs(in, nbInputs);
    std::vector<DynamicPluginTensorDesc> outputs = dynamicDescs(out, nbOutputs);
    return b == nullptr ? -2
                        : static_cast<int64_t>(b->getWorkspaceSize(inputs.data(), nbInputs, outputs.data(), nbOutputs));
}

LQH_API int32_t lqh_on_shape_change(
    void* plugin, HarnessTensor const* in, int32_t nbInputs, HarnessTensor const* out, int32_t nbOutputs)
{
    IPluginV3OneRuntime* rt = runtime(plugin);
    std::vector<PluginTensorDesc> inputs = staticDescs(in, nbInputs);
    std::vector<PluginTensorDesc> outputs = staticDescs(out, nbOutputs);
    return rt == nullptr ? -2 : rt->onShapeChange(inputs.data(), nbInputs, outputs.data(), nbOutputs);
}

//! enqueue, preceded by onShapeChange (as an execution context does after new shapes) unless skipShapeChange.
//! `stream` is a cudaStream_t. Returns -2 if onShapeChange refused the shapes.
LQH_API int32_t lqh_enqueue(void* plugin, HarnessTensor const* in, int32_t nbInputs, HarnessTensor const* out,
    int32_t nbOutputs, void const* const* inputs, void* const* outputs, void* workspace, void* stream,
    int32_t skipShapeChange)
{
    IPluginV3OneRuntime* rt = runtime(plugin);
    std::vector<PluginTensorDesc> inDescs = staticDescs(in, nbInputs);
    std::vector<PluginTensorDesc> outDescs = staticDescs(out, nbOutputs);
    if (rt == nullptr
        || (skipShapeChange == 0 && rt->onShapeChange(inDescs.data(), nbInputs, outDescs.data(), nbOutputs) != 0))
    {
        return -2;
    }
    return rt->enqueue(inDescs.data(), outDescs.data(), inputs, outputs, workspace, static_cast<cudaStream_t>(stream));
}
