// SPDX-License-Identifier: Apache-2.0
// The contract of the LogQuantAttention plugin, written once: its fields, its inputs and outputs (order, data types,
// shapes in terms of the fields) and the checks each TensorRT call runs against them. docs/plugin.md documents it;
// tests/plugins/test_logquant_attention_plugin.py mirrors the tables and checks that they agree.
#pragma once

#include "logquant/kvCacheView.h"
#include "logquant/kvFormat.h"
#include "logquant/policyParams.h"

#include <NvInferRuntime.h>

#include <array>
#include <cstdint>
#include <string>

namespace logquant::plugin
{

//! The creation state of one plugin: every field, validated. The plugin field of each member is its snake_case
//! name (policy, bits, group_size, ...), identical to the LogQuantConfig field and the ONNX attribute.
struct LogQuantAttentionFields
{
    Policy policy{Policy::kKIVI};
    int32_t bits{kBITS};
    int32_t groupSize{0};
    int32_t residual{0};
    int32_t window{0};
    int32_t sinkTokens{0};
    int32_t poolSize{0};
    int32_t extraPoolSize{0};
    int32_t poolSkipLayers{0};
    int32_t layerIdx{0};
    KeyAxis keyAxis{KeyAxis::kCHANNEL};
    DataType dtype{DataType::kFLOAT16};
    int32_t numQHeads{0};
    int32_t numKvHeads{0};
    int32_t headDim{0};
};

// ---- Inputs and outputs ---------------------------------------------------------------------------------------------
// B sequences, n new tokens per sequence, Hq = num_q_heads, H = num_kv_heads, D = head_dim, G = group_size,
// C = min(G, D), P pages, M blocks per sequence, T tail slots, S retained slots. "act" = the `dtype` field (kHALF or
// kBF16). Codes travel as kINT8: TensorRT plugins take no kUINT8 tensors (PluginTensorDesc: "kBOOL and kUINT8 are
// not supported"), and the bytes are the same; nothing reads them as signed. All formats are kLINEAR.
constexpr int32_t kIN_Q_IDX = 0;                // act [B, Hq, n, D], post-RoPE
constexpr int32_t kIN_K_IDX = 1;                // act [B, H, n, D], post-RoPE
constexpr int32_t kIN_V_IDX = 2;                // act [B, H, n, D]
constexpr int32_t kIN_K_CODES_IDX = 3;          // int8 [P, H, D, G/4] (channel) | [P, H, G, D/4] (token)
constexpr int32_t kIN_K_PARAMS_IDX = 4;         // act [P, H, D, 2] (channel) | [P, H, G, D/C, 2] (token)
constexpr int32_t kIN_V_CODES_IDX = 5;          // int8 [P, H, G, D/4]
constexpr int32_t kIN_V_PARAMS_IDX = 6;         // act [P, H, G, D/C, 2]
constexpr int32_t kIN_DUP_MASK_IDX = 7;         // int32 [P, H, G/32]
constexpr int32_t kIN_BLOCK_TABLE_IDX = 8;      // int32 [B, M]; read only, filled by the caller
constexpr int32_t kIN_NUM_SEALED_IDX = 9;       // int32 [B]
constexpr int32_t kIN_SEQ_LEN_IDX = 10;         // int32 [B]
constexpr int32_t kIN_TAIL_K_IDX = 11;          // act [B, H, T, D]
constexpr int32_t kIN_TAIL_V_IDX = 12;          // act [B, H, T, D]
constexpr int32_t kIN_RETAINED_POS_IDX = 13;    // int32 [B, H, S]
constexpr int32_t kIN_RETAINED_K_IDX = 14;      // act [B, H, S, D]
constexpr int32_t kIN_RETAINED_V_IDX = 15;      // act [B, H, S, D]
constexpr int32_t kIN_CONTEXT_LENGTHS_IDX = 16; // int32 [B]: prompt tokens of each sequence (prefill); unread in decode
constexpr int32_t kNB_INPUTS = 17;

constexpr int32_t kOUT_ATTENTION_IDX = 0; // act [B, Hq, n, D]
constexpr int32_t kNB_OUTPUTS = 13;
//! The input each output aliases (IPluginV3OneBuildV2::getAliasedInput); outputs 1.. are the updated cache, in the
//! order of the inputs (block_table is only read, so it has no output).
constexpr int32_t kALIASED_INPUT[kNB_OUTPUTS] = {-1, kIN_K_CODES_IDX, kIN_K_PARAMS_IDX, kIN_V_CODES_IDX,
    kIN_V_PARAMS_IDX, kIN_DUP_MASK_IDX, kIN_NUM_SEALED_IDX, kIN_SEQ_LEN_IDX, kIN_TAIL_K_IDX, kIN_TAIL_V_IDX,
    kIN_RETAINED_POS_IDX, kIN_RETAINED_K_IDX, kIN_RETAINED_V_IDX};

//! The output that aliases cache input `input`; -1 for q, k, v, block_table and context_lengths.
constexpr int32_t aliasingOutputOf(int32_t input)
{
    for (int32_t o = 0; o < kNB_OUTPUTS; ++o)
    {
        if (kALIASED_INPUT[o] == input)
        {
            return o;
        }
    }
    return -1;
}

//! Symbolic dimensions of the contract (B, n, P, M, T, S above); shape tables hold constants as values >= 0.
constexpr int64_t kSYM_B = -1;
constexpr int64_t kSYM_N = -2;
constexpr int64_t kSYM_P = -3;
constexpr int64_t kSYM_M = -4;
constexpr int64_t kSYM_T = -5;
constexpr int64_t kSYM_S = -6;

//! Values of the symbolic dimensions, bound from the tensors at hand; -1 while unbound.
struct Binding
{
    std::array<int64_t, 6> v{-1, -1, -1, -1, -1, -1};

    int64_t operator[](int64_t sym) const
    {
        return v[-sym - 1];
    }
};

// ---- Fields -----------------------------------------------------------------------------------------------------------

//! The creator's field list: name and the only accepted type of each.
nvinfer1::PluginFieldCollection const* fieldNames();

//! Reads and validates every field (logquant_trt/config.py's rules plus the kernels' limits).
//! @throws PluginError naming the field and what it may hold.
LogQuantAttentionFields parseFields(nvinfer1::PluginFieldCollection const* fc);

//! This layer's PolicyParams, derived as logquant_trt/ops/_cache_view.py:policy_params does.
PolicyParams policyParams(LogQuantAttentionFields const& f);

//! The fields as getFieldsToSerialize returns them, pointing into `f` (which must outlive the collection).
std::array<nvinfer1::PluginField, 15> serializeFields(LogQuantAttentionFields const& f);

//! "policy=... head_dim=..." (getMetadataString).
std::string describeFields(LogQuantAttentionFields const& f);

// ---- Checks -----------------------------------------------------------------------------------------------------------
// Each returns "" or the first problem, naming the tensor (by TensorRT position and name) and what it must be.

//! Both arrays present and the plugin's counts.
std::string ioProblem(void const* in, void const* out, int32_t nbInputs, int32_t nbOutputs);

//! The data type of TensorRT position `pos` (inputs first, then outputs).
nvinfer1::DataType expectedType(LogQuantAttentionFields const& f, int32_t pos);

//! getOutputDataTypes: each input of its expected type.
std::string findInputTypeProblem(LogQuantAttentionFields const& f, nvinfer1::DataType const* inputTypes);

//! The input whose shape (and type) position `pos` has: itself for inputs, the aliased input or q for outputs.
int32_t shapeSourceOf(int32_t pos);

//! Input dims against the contract; binds the symbols. Dimensions < 0 are unknown (build-time wildcards).
std::string findShapeProblem(
    LogQuantAttentionFields const& f, PolicyParams const& policy, nvinfer1::Dims64 const* dims, Binding& binding);

//! Constant dims of getOutputShapes' expressions; -1 where an expression is not a build-time constant.
nvinfer1::Dims64 toDims(nvinfer1::DimsExprs const& exprs);

//! configurePlugin / getWorkspaceSize: linear tensors of their types; declared dims and both profile corners within
//! the contract; outputs shaped as their sources; a decode profile narrow enough to bound the workspace exactly.
std::string findBuildProblem(LogQuantAttentionFields const& f, PolicyParams const& policy,
    nvinfer1::DynamicPluginTensorDesc const* in, nvinfer1::DynamicPluginTensorDesc const* out);

//! onShapeChange / enqueue: concrete shapes within the contract, linear tensors of their types, outputs shaped as
//! their sources, and shapes decode attention supports (when n == 1). Binds the symbols.
std::string findRuntimeProblem(LogQuantAttentionFields const& f, PolicyParams const& policy,
    nvinfer1::PluginTensorDesc const* in, nvinfer1::PluginTensorDesc const* out, Binding& binding);

//! The kernels' KvGeometry for these fields and bound sizes.
KvGeometry makeGeometry(
    LogQuantAttentionFields const& f, int64_t batch, int64_t pages, int64_t blocks, int64_t tail, int64_t slots);

//! TensorRT's decode workspace is bounded by evaluating every (batch, block_table width) of a profile.
constexpr int64_t kMAX_WORKSPACE_PROBES = 1 << 16;

} // namespace logquant::plugin
