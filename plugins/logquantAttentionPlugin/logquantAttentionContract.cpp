// SPDX-License-Identifier: Apache-2.0
#include "logquantAttentionPlugin/logquantAttentionContract.h"

#include "common/pluginUtils.h"
#include "logquant/decodeAttention.h"

#include <algorithm>
#include <climits>
#include <iterator>
#include <sstream>
#include <vector>

using namespace nvinfer1;

namespace logquant::plugin
{
namespace
{

char const* const kINPUT_NAMES[kNB_INPUTS] = {"q", "k", "v", "k_codes", "k_params", "v_codes", "v_params", "dup_mask",
    "block_table", "num_sealed", "seq_len", "tail_k", "tail_v", "retained_pos", "retained_k", "retained_v",
    "context_lengths"};
char const* const kSYM_NAMES[] = {"B", "n", "P", "M", "T", "S"};

enum class Role : int32_t
{
    kACTIVATION, //!< the `dtype` field
    kCODES,      //!< kINT8 bytes
    kINDEX,      //!< kINT32
};

constexpr Role kINPUT_ROLES[kNB_INPUTS] = {Role::kACTIVATION, Role::kACTIVATION, Role::kACTIVATION, Role::kCODES,
    Role::kACTIVATION, Role::kCODES, Role::kACTIVATION, Role::kINDEX, Role::kINDEX, Role::kINDEX, Role::kINDEX,
    Role::kACTIVATION, Role::kACTIVATION, Role::kINDEX, Role::kACTIVATION, Role::kACTIVATION, Role::kINDEX};

//! Limits beyond logquant_trt/config.py: the kernels' (cpp/src/kvWrite/kvWriteChecks.cpp: W <= 4096, pool slots
//! <= 64, extra pool <= 512; launch grids: heads and batch <= 65535), and caps that keep int32 geometry exact.
constexpr int32_t kMAX_WINDOW = 4096;
constexpr int32_t kMAX_POOL_SIZE = 64;
constexpr int32_t kMAX_EXTRA_POOL_SIZE = 512;
constexpr int32_t kMAX_TOKENS_FIELD = 1 << 20;
constexpr int32_t kMAX_LAYERS = 1 << 16;
constexpr int32_t kMAX_HEADS = 65535;
constexpr int64_t kMAX_BATCH = 65535;

// Enum ids of logquant::Policy, KeyAxis and DataType index these (kvFormat.h, kvCacheView.h).
char const* const kPOLICY_NAMES[] = {"fp16", "kivi", "logquant", "ott", "logquant_ott"};
char const* const kKEY_AXIS_NAMES[] = {"channel", "token"};
char const* const kDTYPE_NAMES[] = {"float16", "bfloat16"};

std::vector<FieldSpec> const& fieldSpecs()
{
    static std::vector<FieldSpec> const specs = {{"policy", PluginFieldType::kCHAR},
        {"bits", PluginFieldType::kINT32}, {"group_size", PluginFieldType::kINT32}, {"residual", PluginFieldType::kINT32},
        {"window", PluginFieldType::kINT32}, {"sink_tokens", PluginFieldType::kINT32},
        {"pool_size", PluginFieldType::kINT32}, {"extra_pool_size", PluginFieldType::kINT32},
        {"pool_skip_layers", PluginFieldType::kINT32}, {"layer_idx", PluginFieldType::kINT32},
        {"key_axis", PluginFieldType::kCHAR}, {"dtype", PluginFieldType::kCHAR}, {"num_q_heads", PluginFieldType::kINT32},
        {"num_kv_heads", PluginFieldType::kINT32}, {"head_dim", PluginFieldType::kINT32}};
    return specs;
}

Role roleOf(int32_t pos)
{
    int32_t const input = pos < kNB_INPUTS ? pos : kALIASED_INPUT[pos - kNB_INPUTS];
    return input < 0 ? Role::kACTIVATION : kINPUT_ROLES[input];
}

std::string ioName(int32_t pos)
{
    if (pos < kNB_INPUTS)
    {
        return std::string("input ") + std::to_string(pos) + " '" + kINPUT_NAMES[pos] + "'";
    }
    int32_t const input = kALIASED_INPUT[pos - kNB_INPUTS];
    return std::string("output ") + std::to_string(pos - kNB_INPUTS) + " '"
        + (input < 0 ? "attention" : kINPUT_NAMES[input]) + "'";
}

struct Shape
{
    int32_t rank;
    std::array<int64_t, 5> d;
};

std::array<Shape, kNB_INPUTS> expectedShapes(LogQuantAttentionFields const& f)
{
    int64_t const hq = f.numQHeads;
    int64_t const h = f.numKvHeads;
    int64_t const d = f.headDim;
    int64_t const g = f.groupSize;
    int64_t const perToken = d / channelGroup(f.groupSize, f.headDim);
    bool const channel = f.keyAxis == KeyAxis::kCHANNEL;
    Shape const act{4, {kSYM_B, h, kSYM_N, d}};
    Shape const vector{1, {kSYM_B}};
    Shape const tail{4, {kSYM_B, h, kSYM_T, d}};
    Shape const retained{4, {kSYM_B, h, kSYM_S, d}};
    return {Shape{4, {kSYM_B, hq, kSYM_N, d}}, act, act,
        channel ? Shape{4, {kSYM_P, h, d, g / kCODES_PER_BYTE}} : Shape{4, {kSYM_P, h, g, d / kCODES_PER_BYTE}},
        channel ? Shape{4, {kSYM_P, h, d, kPARAMS_PER_GROUP}} : Shape{5, {kSYM_P, h, g, perToken, kPARAMS_PER_GROUP}},
        Shape{4, {kSYM_P, h, g, d / kCODES_PER_BYTE}}, Shape{5, {kSYM_P, h, g, perToken, kPARAMS_PER_GROUP}},
        Shape{3, {kSYM_P, h, g / kMASK_WORD_BITS}}, Shape{2, {kSYM_B, kSYM_M}}, vector, vector, tail, tail,
        Shape{3, {kSYM_B, h, kSYM_S}}, retained, retained, vector};
}

std::string describe(Shape const& shape)
{
    std::ostringstream out;
    for (int32_t i = 0; i < shape.rank; ++i)
    {
        out << (i == 0 ? "[" : ", ") << (shape.d[i] >= 0 ? std::to_string(shape.d[i]) : kSYM_NAMES[-shape.d[i] - 1]);
    }
    return out.str() + "]";
}

bool sameDims(Dims64 const& a, Dims64 const& b)
{
    return a.nbDims == b.nbDims && std::equal(a.d, a.d + std::min(std::max(a.nbDims, 0), Dims64::MAX_DIMS), b.d);
}

std::string typeProblem(LogQuantAttentionFields const& f, int32_t pos, PluginTensorDesc const& desc)
{
    if (desc.format == TensorFormat::kLINEAR && desc.type == expectedType(f, pos))
    {
        return "";
    }
    return ioName(pos) + " must be linear (format 0) with data type "
        + std::to_string(static_cast<int32_t>(expectedType(f, pos))) + ", got format "
        + std::to_string(static_cast<int32_t>(desc.format)) + " and data type "
        + std::to_string(static_cast<int32_t>(desc.type)) + " (activations follow 'dtype'; codes kINT8; metadata kINT32)";
}

} // namespace

// ---- Fields -----------------------------------------------------------------------------------------------------------

PluginFieldCollection const* fieldNames()
{
    static std::vector<PluginField> const fields = [] {
        std::vector<PluginField> list;
        for (FieldSpec const& spec : fieldSpecs())
        {
            list.emplace_back(spec.name, nullptr, spec.type, 1);
        }
        return list;
    }();
    static PluginFieldCollection const collection{static_cast<int32_t>(fields.size()), fields.data()};
    return &collection;
}

LogQuantAttentionFields parseFields(PluginFieldCollection const* fc)
{
    FieldParser const parser(fc, fieldSpecs());
    LogQuantAttentionFields f;
    f.policy = static_cast<Policy>(parser.getChoice("policy", {"fp16", "kivi", "logquant", "ott", "logquant_ott"}));
    f.bits = parser.getInt32("bits", kBITS, kBITS);
    f.groupSize = parser.getInt32("group_size", 1, 1 << 30);
    f.residual = parser.getInt32("residual", 0, kMAX_TOKENS_FIELD);
    f.window = parser.getInt32("window", 1, kMAX_WINDOW);
    f.sinkTokens = parser.getInt32("sink_tokens", 0, kMAX_TOKENS_FIELD);
    f.poolSize = parser.getInt32("pool_size", 0, kMAX_POOL_SIZE);
    f.extraPoolSize = parser.getInt32("extra_pool_size", 0, kMAX_EXTRA_POOL_SIZE);
    f.poolSkipLayers = parser.getInt32("pool_skip_layers", 0, kMAX_LAYERS);
    f.layerIdx = parser.getInt32("layer_idx", 0, kMAX_LAYERS);
    f.keyAxis = static_cast<KeyAxis>(parser.getChoice("key_axis", {"channel", "token"}));
    f.dtype = static_cast<DataType>(parser.getChoice("dtype", {"float16", "bfloat16"}));
    f.numQHeads = parser.getInt32("num_q_heads", 1, kMAX_HEADS);
    f.numKvHeads = parser.getInt32("num_kv_heads", 1, kMAX_HEADS);
    f.headDim = parser.getInt32("head_dim", 64, 128);

    if (std::find(std::begin(kGROUP_SIZES), std::end(kGROUP_SIZES), f.groupSize) == std::end(kGROUP_SIZES))
    {
        throw PluginError("field 'group_size' = " + std::to_string(f.groupSize) + " must be one of 32, 64, 128");
    }
    if (f.headDim != 64 && f.headDim != 128)
    {
        throw PluginError("field 'head_dim' = " + std::to_string(f.headDim) + " must be 64 or 128 (the kernels' sizes)");
    }
    if (f.numQHeads % f.numKvHeads != 0)
    {
        throw PluginError("field 'num_q_heads' = " + std::to_string(f.numQHeads)
            + " must be a multiple of 'num_kv_heads' = " + std::to_string(f.numKvHeads));
    }
    if (usesLogWindow(f.policy) && f.window % f.groupSize != 0)
    {
        // Keeps LogQuant's window start on a block boundary (docs/kv_format.md 5.3), as LogQuantConfig requires.
        throw PluginError("field 'window' = " + std::to_string(f.window) + " must be a multiple of 'group_size' = "
            + std::to_string(f.groupSize) + " for policy " + kPOLICY_NAMES[static_cast<int32_t>(f.policy)]);
    }
    PolicyParams const policy = policyParams(f);
    KvGeometry const probe = makeGeometry(f, 1, 1, 1, tailCapacity(policy, f.groupSize), retainedRegions(policy).end);
    char const* reason{nullptr};
    if (!kernel::canImplementDecodeAttention(probe, f.numQHeads, 1, &reason))
    {
        throw PluginError(std::string("decode attention does not support these head counts: ") + reason);
    }
    return f;
}

PolicyParams policyParams(LogQuantAttentionFields const& f)
{
    bool const pool = usesOutlierPool(f.policy) && f.poolSize > 0;
    PolicyParams p;
    p.policy = f.policy;
    p.residual = f.residual;
    p.window = f.window;
    p.sinkTokens = f.sinkTokens;
    p.poolSlots = pool ? f.poolSize : 0;
    p.extraPoolSize = pool ? f.extraPoolSize : 0;
    p.poolSize = pool && f.layerIdx >= f.poolSkipLayers ? f.poolSize : 0;
    return p;
}

std::array<PluginField, 15> serializeFields(LogQuantAttentionFields const& f)
{
    return {stringField("policy", kPOLICY_NAMES[static_cast<int32_t>(f.policy)]), int32Field("bits", &f.bits),
        int32Field("group_size", &f.groupSize), int32Field("residual", &f.residual), int32Field("window", &f.window),
        int32Field("sink_tokens", &f.sinkTokens), int32Field("pool_size", &f.poolSize),
        int32Field("extra_pool_size", &f.extraPoolSize), int32Field("pool_skip_layers", &f.poolSkipLayers),
        int32Field("layer_idx", &f.layerIdx), stringField("key_axis", kKEY_AXIS_NAMES[static_cast<int32_t>(f.keyAxis)]),
        stringField("dtype", kDTYPE_NAMES[static_cast<int32_t>(f.dtype)]), int32Field("num_q_heads", &f.numQHeads),
        int32Field("num_kv_heads", &f.numKvHeads), int32Field("head_dim", &f.headDim)};
}

std::string describeFields(LogQuantAttentionFields const& f)
{
    std::ostringstream out;
    for (PluginField const& field : serializeFields(f))
    {
        out << (field.name == std::string("policy") ? "" : " ") << field.name << "=";
        if (field.type == PluginFieldType::kCHAR)
        {
            out << static_cast<char const*>(field.data);
        }
        else
        {
            out << *static_cast<int32_t const*>(field.data);
        }
    }
    return out.str();
}

// ---- Checks -----------------------------------------------------------------------------------------------------------

std::string ioProblem(void const* in, void const* out, int32_t nbInputs, int32_t nbOutputs)
{
    if (in == nullptr || out == nullptr || nbInputs != kNB_INPUTS || nbOutputs != kNB_OUTPUTS)
    {
        return "expected " + std::to_string(kNB_INPUTS) + " inputs and " + std::to_string(kNB_OUTPUTS)
            + " outputs, got " + std::to_string(nbInputs) + " and " + std::to_string(nbOutputs)
            + (in == nullptr || out == nullptr ? " (or a null array)" : "");
    }
    return "";
}

nvinfer1::DataType expectedType(LogQuantAttentionFields const& f, int32_t pos)
{
    switch (roleOf(pos))
    {
    case Role::kCODES: return nvinfer1::DataType::kINT8;
    case Role::kINDEX: return nvinfer1::DataType::kINT32;
    case Role::kACTIVATION: break;
    }
    return f.dtype == DataType::kBFLOAT16 ? nvinfer1::DataType::kBF16 : nvinfer1::DataType::kHALF;
}

std::string findInputTypeProblem(LogQuantAttentionFields const& f, nvinfer1::DataType const* inputTypes)
{
    for (int32_t i = 0; i < kNB_INPUTS; ++i)
    {
        if (inputTypes[i] != expectedType(f, i))
        {
            return ioName(i) + " has data type " + std::to_string(static_cast<int32_t>(inputTypes[i])) + ", expected "
                + std::to_string(static_cast<int32_t>(expectedType(f, i)))
                + " (activations follow 'dtype'; codes kINT8; metadata kINT32)";
        }
    }
    return "";
}

int32_t shapeSourceOf(int32_t pos)
{
    int32_t const input = pos < kNB_INPUTS ? pos : kALIASED_INPUT[pos - kNB_INPUTS];
    return input < 0 ? kIN_Q_IDX : input;
}

std::string findShapeProblem(LogQuantAttentionFields const& f, PolicyParams const& policy, Dims64 const* dims,
    Binding& binding)
{
    std::array<Shape, kNB_INPUTS> const shapes = expectedShapes(f);
    for (int32_t i = 0; i < kNB_INPUTS; ++i)
    {
        Shape const& want = shapes[i];
        if (dims[i].nbDims != want.rank)
        {
            return ioName(i) + " must have rank " + std::to_string(want.rank) + " " + describe(want) + ", got rank "
                + std::to_string(dims[i].nbDims);
        }
        for (int32_t j = 0; j < want.rank; ++j)
        {
            int64_t const got = dims[i].d[j];
            bool const symbolic = want.d[j] < 0;
            int64_t& bound = binding.v[symbolic ? -want.d[j] - 1 : 0];
            if (got < 0 || (!symbolic && got == want.d[j]) || (symbolic && (bound < 0 || bound == got)))
            {
                bound = symbolic && got >= 0 ? got : bound;
                continue;
            }
            std::string const expected = symbolic ? std::string(kSYM_NAMES[-want.d[j] - 1]) + " = " + std::to_string(bound)
                                                  : std::to_string(want.d[j]);
            return ioName(i) + " must be " + describe(want) + ": dimension " + std::to_string(j) + " is "
                + std::to_string(got) + ", expected " + expected;
        }
    }
    int64_t const b = binding[kSYM_B];
    int64_t const n = binding[kSYM_N];
    int64_t const t = binding[kSYM_T];
    int64_t const s = binding[kSYM_S];
    int64_t const minTail = tailCapacity(policy, f.groupSize);
    int64_t const minSlots = std::max(1, retainedRegions(policy).end);
    bool const tooLarge = std::any_of(binding.v.begin(), binding.v.end(), [](int64_t x) { return x > INT32_MAX; });
    if (b == 0 || b > kMAX_BATCH || n == 0 || binding[kSYM_P] == 0 || binding[kSYM_M] == 0 || tooLarge)
    {
        return "B must be in [1, 65535], n, P (pages) and M (block_table columns) >= 1, and T, S < 2^31";
    }
    if (t >= 0 && (t % f.groupSize != 0 || t < minTail))
    {
        return "tail_k/tail_v: T = " + std::to_string(t) + " must be a multiple of group_size and >= "
            + std::to_string(minTail) + " (docs/kv_format.md 4.3 tail_capacity)";
    }
    if (s >= 0 && s < minSlots)
    {
        return "retained_*: S = " + std::to_string(s) + " must be >= " + std::to_string(minSlots)
            + " (max(1, retained_capacity), docs/kv_format.md 4.4)";
    }
    if (f.policy == Policy::kFP16 && n > 1 && t >= 0 && n > t)
    {
        return "the fp16 policy keeps every token in the tail: a prefill of n = " + std::to_string(n)
            + " tokens needs T >= n, got T = " + std::to_string(t);
    }
    return "";
}

Dims64 toDims(DimsExprs const& exprs)
{
    Dims64 dims{};
    dims.nbDims = std::min(std::max(exprs.nbDims, 0), Dims64::MAX_DIMS);
    for (int32_t i = 0; i < dims.nbDims; ++i)
    {
        dims.d[i] = exprs.d[i] != nullptr && exprs.d[i]->isConstant() ? exprs.d[i]->getConstantValue() : -1;
    }
    return dims;
}

std::string findBuildProblem(LogQuantAttentionFields const& f, PolicyParams const& policy,
    DynamicPluginTensorDesc const* in, DynamicPluginTensorDesc const* out)
{
    for (int32_t pos = 0; pos < kNB_INPUTS + kNB_OUTPUTS; ++pos)
    {
        std::string const problem = typeProblem(f, pos, pos < kNB_INPUTS ? in[pos].desc : out[pos - kNB_INPUTS].desc);
        if (!problem.empty())
        {
            return problem;
        }
    }
    std::array<std::array<Dims64, kNB_INPUTS>, 3> corners{}; // declared (with wildcards), min, max
    for (int32_t i = 0; i < kNB_INPUTS; ++i)
    {
        corners[0][i] = in[i].desc.dims;
        corners[1][i] = in[i].min;
        corners[2][i] = in[i].max;
    }
    std::array<Binding, 3> bindings;
    for (int32_t c = 0; c < 3; ++c)
    {
        std::string const problem = findShapeProblem(f, policy, corners[c].data(), bindings[c]);
        if (!problem.empty())
        {
            return problem;
        }
    }
    for (int32_t o = 0; o < kNB_OUTPUTS; ++o)
    {
        int32_t const source = shapeSourceOf(kNB_INPUTS + o);
        if (!sameDims(out[o].min, in[source].min) || !sameDims(out[o].max, in[source].max))
        {
            return ioName(kNB_INPUTS + o) + " must have the shape of " + ioName(source);
        }
    }
    Binding const& lo = bindings[1];
    Binding const& hi = bindings[2];
    int64_t const probes = (hi[kSYM_B] - lo[kSYM_B] + 1) * (hi[kSYM_M] - lo[kSYM_M] + 1);
    if (lo[kSYM_N] == 1 && (probes < 1 || probes > kMAX_WORKSPACE_PROBES))
    {
        return "a decode profile spanning " + std::to_string(probes)
            + " (batch, block_table width) pairs is too wide to bound the workspace exactly (limit "
            + std::to_string(kMAX_WORKSPACE_PROBES) + "); fix block_table's second dimension";
    }
    return "";
}

std::string findRuntimeProblem(LogQuantAttentionFields const& f, PolicyParams const& policy, PluginTensorDesc const* in,
    PluginTensorDesc const* out, Binding& binding)
{
    std::array<Dims64, kNB_INPUTS> dims{};
    for (int32_t i = 0; i < kNB_INPUTS; ++i)
    {
        dims[i] = in[i].dims;
    }
    std::string const problem = findShapeProblem(f, policy, dims.data(), binding);
    if (!problem.empty())
    {
        return problem;
    }
    for (int32_t pos = 0; pos < kNB_INPUTS + kNB_OUTPUTS; ++pos)
    {
        PluginTensorDesc const& desc = pos < kNB_INPUTS ? in[pos] : out[pos - kNB_INPUTS];
        std::string const typeIssue = typeProblem(f, pos, desc);
        if (!typeIssue.empty())
        {
            return typeIssue;
        }
        int32_t const source = shapeSourceOf(pos);
        if (!sameDims(desc.dims, in[source].dims)
            || std::any_of(desc.dims.d, desc.dims.d + desc.dims.nbDims, [](int64_t d) { return d < 0; }))
        {
            return ioName(pos) + " must have concrete dims, the shape of " + ioName(source);
        }
    }
    KvGeometry const g = makeGeometry(
        f, binding[kSYM_B], binding[kSYM_P], binding[kSYM_M], binding[kSYM_T], binding[kSYM_S]);
    char const* reason{nullptr};
    if (binding[kSYM_N] == 1 && !kernel::canImplementDecodeAttention(g, f.numQHeads, 1, &reason))
    {
        return std::string("decode attention cannot run these shapes: ") + reason;
    }
    return "";
}

KvGeometry makeGeometry(
    LogQuantAttentionFields const& f, int64_t batch, int64_t pages, int64_t blocks, int64_t tail, int64_t slots)
{
    KvGeometry g;
    g.batch = static_cast<int32_t>(batch);
    g.numKvHeads = f.numKvHeads;
    g.headDim = f.headDim;
    g.groupSize = f.groupSize;
    g.numPages = static_cast<int32_t>(pages);
    g.maxBlocksPerSeq = static_cast<int32_t>(blocks);
    g.tailCapacity = static_cast<int32_t>(tail);
    g.retainedCapacity = static_cast<int32_t>(slots);
    g.keyAxis = f.keyAxis;
    g.dtype = f.dtype;
    return g;
}

} // namespace logquant::plugin
