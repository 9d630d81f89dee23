# SPDX-License-Identifier: Apache-2.0
"""The LogQuantAttention plugin driven the way TensorRT drives it, through tests/plugins' harness (no libnvinfer).

CPU: library exports, creator, create/clone/attach, serialization round trips, getOutputShapes through the harness's
expression builder, supportsFormatCombination for every (position, type, format), configurePlugin, getWorkspaceSize,
onShapeChange, and bad input of every kind (plus a seeded fuzz of field parsing checked against a Python oracle).
GPU: enqueue of a prefill and decode steps against logquant_trt.reference (LayerKVState + to_paged +
paged_attention / dense_attention), with the cache compared byte for byte.
"""

from __future__ import annotations

import dataclasses
import math
import random
import shutil
import subprocess
import zlib

import pytest
import torch

from logquant_trt.config import ConfigError, LogQuantConfig
from logquant_trt.format import MASK_WORD_BITS
from logquant_trt.ops._cache_view import CACHE_TENSOR_NAMES
from logquant_trt.ops.logquant_attention import PLUGIN_INPUTS
from logquant_trt.reference.attention import dense_attention
from logquant_trt.reference.layer_state import LayerKVState
from logquant_trt.reference.paged import PagedLayer, paged_attention, to_paged

from trt_harness import PLUGIN_LIBRARY, DataType, Field, FieldType, Harness, Plugin, Tensor, TensorFormat, tensor

# Must match the I/O tables of plugins/logquantAttentionPlugin/logquantAttentionPlugin.cpp (kINPUT_NAMES,
# kALIASED_INPUT) and docs/plugin.md. The inputs are logquant_trt's own PLUGIN_INPUTS, so these tests check the
# list that the op, the ONNX schema and the exporter use against the plugin.
INPUT_NAMES = PLUGIN_INPUTS
OUTPUT_NAMES = ("attention", *(n for n in CACHE_TENSOR_NAMES if n != "block_table"))
FIELD_TYPES = {"policy": FieldType.CHAR, "bits": FieldType.INT32, "group_size": FieldType.INT32,
               "residual": FieldType.INT32, "window": FieldType.INT32, "sink_tokens": FieldType.INT32,
               "pool_size": FieldType.INT32, "extra_pool_size": FieldType.INT32, "pool_skip_layers": FieldType.INT32,
               "layer_idx": FieldType.INT32, "key_axis": FieldType.CHAR, "dtype": FieldType.CHAR,
               "num_q_heads": FieldType.INT32, "num_kv_heads": FieldType.INT32, "head_dim": FieldType.INT32}
ACTIVATION = {"float16": DataType.HALF, "bfloat16": DataType.BF16}
CODES = ("k_codes", "v_codes")
INDEX = ("dup_mask", "block_table", "num_sealed", "seq_len", "retained_pos", "context_lengths")


@dataclasses.dataclass(frozen=True)
class Params:
    """One plugin configuration: its fields (LogQuantConfig's plus layer and head geometry)."""

    policy: str = "logquant_ott"
    group_size: int = 32
    residual: int = 32
    window: int = 32
    sink_tokens: int = 0
    pool_size: int = 3
    extra_pool_size: int = 6
    pool_skip_layers: int = 2
    layer_idx: int = 2
    key_axis: str = "channel"
    dtype: str = "float16"
    num_q_heads: int = 8
    num_kv_heads: int = 2
    head_dim: int = 64
    bits: int = 2

    @property
    def tag(self) -> str:
        return "-".join(f"{k}={v}" for k, v in dataclasses.asdict(self).items())

    def config(self) -> LogQuantConfig:
        names = {f.name for f in dataclasses.fields(LogQuantConfig)}
        return LogQuantConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})

    def fields(self) -> list[Field]:
        return [Field.string(k, v) if isinstance(v, str) else Field.int32(k, v)
                for k, v in dataclasses.asdict(self).items()]


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Runtime sizes: B sequences, n new tokens, P pages, M blocks per sequence (-1: unknown)."""

    batch: int = 2
    n: int = 1
    pages: int = 16
    blocks: int = 8


def expected_type(p: Params, name: str) -> DataType:
    if name in CODES:
        return DataType.INT8  # TensorRT plugins take no kUINT8 tensors; same bytes
    return DataType.INT32 if name in INDEX else ACTIVATION[p.dtype]


def expected_shape(p: Params, name: str, geo: Geometry) -> list[int]:
    """The contract of docs/plugin.md, written independently of the C++ table."""
    cfg = p.config()
    b, n, pages, blocks = geo.batch, geo.n, geo.pages, geo.blocks
    h, d, g, c = p.num_kv_heads, p.head_dim, p.group_size, cfg.channel_group(p.head_dim)
    t, s = cfg.tail_capacity(), cfg.retained_slots()
    channel = p.key_axis == "channel"
    return {"q": [b, p.num_q_heads, n, d], "attention": [b, p.num_q_heads, n, d], "k": [b, h, n, d],
            "v": [b, h, n, d], "k_codes": [pages, h, d, g // 4] if channel else [pages, h, g, d // 4],
            "k_params": [pages, h, d, 2] if channel else [pages, h, g, d // c, 2], "v_codes": [pages, h, g, d // 4],
            "v_params": [pages, h, g, d // c, 2], "dup_mask": [pages, h, g // MASK_WORD_BITS],
            "block_table": [b, blocks], "num_sealed": [b], "seq_len": [b], "tail_k": [b, h, t, d],
            "tail_v": [b, h, t, d], "retained_pos": [b, h, s], "retained_k": [b, h, s, d], "retained_v": [b, h, s, d],
            "context_lengths": [b]}[name]


def io(p: Params, geo: Geometry = Geometry(), lo: Geometry | None = None,
       hi: Geometry | None = None) -> tuple[list[Tensor], list[Tensor]]:
    """Descriptors of every input and output; lo/hi give the profile corners (default: geo)."""
    def make(name: str) -> Tensor:
        return tensor(expected_type(p, name), expected_shape(p, name, geo),
                      lo=expected_shape(p, name, lo or geo), hi=expected_shape(p, name, hi or geo))
    return [make(n) for n in INPUT_NAMES], [make(n) for n in OUTPUT_NAMES]


VALID = [
    Params(),
    Params(policy="kivi", key_axis="token", dtype="bfloat16", group_size=64, residual=64, head_dim=128),
    Params(policy="ott", group_size=128, residual=128, num_q_heads=32, num_kv_heads=8, head_dim=128, layer_idx=0),
    Params(policy="logquant", key_axis="token", group_size=32, window=96, sink_tokens=4, num_q_heads=4,
           num_kv_heads=4),
    Params(policy="fp16", residual=100, dtype="bfloat16"),
    Params(policy="logquant_ott", window=4096, pool_size=64, extra_pool_size=512, num_q_heads=64, num_kv_heads=1),
]


@pytest.fixture(scope="module")
def harness() -> Harness:
    h = Harness()
    h.take_log()
    return h


def create(harness: Harness, p: Params) -> Plugin:
    plugin = harness.create(p.fields())
    assert plugin is not None, f"{p.tag}: {harness.errors()}"
    assert harness.errors() == [], p.tag
    return plugin


def values(fields: list[Field]) -> dict[str, object]:
    return {f.name: f.data.decode() if f.type == FieldType.CHAR else int.from_bytes(f.data, "little", signed=True)
            for f in fields}


# ---- Library and creator ----------------------------------------------------------------------------------------------

def test_library_exports_only_the_entry_points_and_needs_no_tensorrt() -> None:
    nm, readelf = shutil.which("nm"), shutil.which("readelf")
    assert nm and readelf, "binutils (nm, readelf) are needed to inspect the plugin library"
    defined = subprocess.run([nm, "-D", "--defined-only", str(PLUGIN_LIBRARY)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(defined[2::3]) == ["getCreators", "setLoggerFinder"]
    undefined = subprocess.run([nm, "-D", "--undefined-only", str(PLUGIN_LIBRARY)], capture_output=True, text=True,
                               check=True).stdout
    assert "nvinfer" not in undefined and "cuda" not in undefined.lower()
    needed = subprocess.run([readelf, "-d", str(PLUGIN_LIBRARY)], capture_output=True, text=True, check=True).stdout
    assert "nvinfer" not in needed and "libcudart" not in needed and "libcuda" not in needed


def test_creator_lists_every_field_with_its_type(harness: Harness) -> None:
    assert harness.field_names() == {k: int(v) for k, v in FIELD_TYPES.items()}
    assert set(FIELD_TYPES) == {f.name for f in dataclasses.fields(Params)}
    assert set(f.name for f in dataclasses.fields(LogQuantConfig)) < set(FIELD_TYPES)


@pytest.mark.parametrize("p", VALID, ids=lambda p: p.tag)
def test_create_clone_attach_and_serialization_round_trip(harness: Harness, p: Params) -> None:
    plugin = create(harness, p)
    name, version, namespace, metadata = plugin.identity()
    assert (name, version, namespace) == ("LogQuantAttention", "1", "logquant")
    assert f"policy={p.policy} " in metadata and f"head_dim={p.head_dim}" in metadata
    fields = plugin.serialize()
    assert values(fields) == dataclasses.asdict(p), p.tag
    assert [(f.name, f.type) for f in fields] == list(FIELD_TYPES.items())
    for copy in (plugin.clone(), plugin.attach(), harness.create(fields, phase=1)):
        assert copy is not None, f"{p.tag}: {harness.errors()}"
        assert copy.serialize() == fields, p.tag
        assert copy.identity() == plugin.identity()
    assert plugin.nb_outputs() == len(OUTPUT_NAMES)
    assert harness.errors() == []


def test_string_fields_may_carry_a_terminating_nul(harness: Harness) -> None:
    fields = [Field(f.name, f.type, f.data + b"\0", f.length + 1) if f.type == FieldType.CHAR else f
              for f in Params().fields()]
    plugin = harness.create(fields)
    assert plugin is not None and values(plugin.serialize()) == dataclasses.asdict(Params()), harness.errors()


# ---- Build-time calls ---------------------------------------------------------------------------------------------------

def test_outputs_alias_their_cache_inputs(harness: Harness) -> None:
    plugin = create(harness, Params())
    got = [plugin.aliased_input(o) for o in range(len(OUTPUT_NAMES))]
    assert got == [-1, *(INPUT_NAMES.index(n) for n in OUTPUT_NAMES[1:])]
    assert plugin.aliased_input(len(OUTPUT_NAMES)) == -1 and plugin.aliased_input(-1) == -1


@pytest.mark.parametrize("p", VALID[:3], ids=lambda p: p.tag)
def test_output_types_follow_the_inputs(harness: Harness, p: Params) -> None:
    plugin = create(harness, p)
    inputs = [expected_type(p, n) for n in INPUT_NAMES]
    status, outputs = plugin.output_types(inputs, len(OUTPUT_NAMES))
    assert status == 0 and outputs == [expected_type(p, "q" if n == "attention" else n) for n in OUTPUT_NAMES]
    for bad in (DataType.FLOAT, DataType.UINT8, DataType.INT64):
        for i in (0, INPUT_NAMES.index("k_codes"), INPUT_NAMES.index("seq_len")):
            wrong = list(inputs)
            wrong[i] = bad
            assert plugin.output_types(wrong, len(OUTPUT_NAMES))[0] != 0
            assert any(INPUT_NAMES[i] in e for e in harness.errors())
    assert plugin.output_types(inputs[:-1], len(OUTPUT_NAMES))[0] != 0 and harness.errors()


@pytest.mark.parametrize("p", VALID[:4], ids=lambda p: p.tag)
def test_output_shapes_through_the_expression_builder(harness: Harness, p: Params) -> None:
    plugin = create(harness, p)
    geo = Geometry(batch=3, n=17, pages=9, blocks=4)
    inputs, _ = io(p, geo)
    status, shapes = plugin.output_shapes(inputs, len(OUTPUT_NAMES))
    assert status == 0, harness.errors()
    want = [[str(d) for d in expected_shape(p, "q" if n == "attention" else n, geo)] for n in OUTPUT_NAMES]
    assert shapes == want
    # Runtime dimensions stay symbolic: each output dimension is the very expression of its source input.
    symbolic, _ = io(p, Geometry(batch=-1, n=-1, pages=-1, blocks=-1))
    status, shapes = plugin.output_shapes(symbolic, len(OUTPUT_NAMES))
    assert status == 0, harness.errors()
    for o, name in enumerate(OUTPUT_NAMES):
        source = INPUT_NAMES.index("q" if name == "attention" else name)
        for j, (dim, value) in enumerate(zip(shapes[o], symbolic[source].dims)):
            assert dim == (f"i{source}d{j}" if value < 0 else str(value)), (name, j)


def test_expression_builder_folds_constants(harness: Harness) -> None:
    ops = {0: ("7", "sum"), 1: ("12", "prod"), 2: ("4", "max"), 3: ("3", "min"), 4: ("1", "sub"), 5: ("0", "eq"),
           6: ("0", "less"), 7: ("1", "floordiv"), 8: ("2", "ceildiv")}
    for op, (value, name) in ops.items():
        assert harness.fold(op, 4, 3) == value
        assert harness.fold(op, 4, 3, a_is_symbol=True) == f"{name}(a,3)"
    assert harness.fold(7, -7, 2) == "-4" and harness.fold(8, -7, 2) == "-3" and harness.fold(7, 1, 0) == "null"


def test_supports_format_combination_for_every_position_type_and_format(harness: Harness) -> None:
    for p in VALID[:2]:
        plugin = create(harness, p)
        inputs, outputs = io(p)
        in_out = inputs + outputs
        names = list(INPUT_NAMES) + ["q" if n == "attention" else n for n in OUTPUT_NAMES]
        for pos, name in enumerate(names):
            for dtype in DataType:
                for fmt in TensorFormat:
                    probe = list(in_out)
                    probe[pos] = tensor(dtype, expected_shape(p, name, Geometry()), fmt)
                    want = fmt == TensorFormat.LINEAR and dtype == expected_type(p, name)
                    assert plugin.supports(pos, probe, len(inputs)) == int(want), (p.tag, pos, dtype, fmt)
        assert harness.errors() == []  # TensorRT asking about unsupported types is not an error
        for pos, count in ((len(in_out), len(inputs)), (-1, len(inputs)), (0, len(inputs) - 1)):
            assert plugin.supports(pos, in_out, count) == 0 and harness.errors()


def test_configure_on_shape_change_and_workspace_accept_the_contract(harness: Harness) -> None:
    for p in VALID:
        plugin = create(harness, p)
        longest = min(512, p.config().tail_capacity()) if p.policy == "fp16" else 512  # fp16 keeps all in the tail
        prefill, prefill_out = io(p, Geometry(n=8), lo=Geometry(batch=1, n=2), hi=Geometry(batch=4, n=longest))
        assert plugin.configure(prefill, prefill_out) == 0, harness.errors()
        assert plugin.workspace_size(prefill, prefill_out) == 0  # prefill needs no scratch
        assert plugin.on_shape_change(*io(p, Geometry(n=300 if p.policy != "fp16" else 100))) == 0, harness.errors()
        decode, decode_out = io(p, Geometry(batch=-1, n=-1), lo=Geometry(batch=1, n=1), hi=Geometry(batch=8, n=64))
        assert plugin.configure(decode, decode_out) == 0, harness.errors()
        assert plugin.on_shape_change(*io(p, Geometry(batch=5))) == 0, harness.errors()
        size = plugin.workspace_size(decode, decode_out)
        if torch.cuda.is_available():
            assert size >= 0 and harness.errors() == [], p.tag
        else:
            # Decode attention sizes its split-K scratch from the device's SM count: without a GPU the plugin says
            # so instead of guessing.
            assert size == 0 and any("CUDA" in e for e in harness.errors()), p.tag
        harness.take_log()


def shape_breakers(p: Params) -> list[tuple[str, str, object]]:
    """(case, expected message part, mutation of the descriptors) for configurePlugin and onShapeChange."""
    def set_dim(names: str, dim: int, value: int):
        """Sets dimension `dim` of the named inputs (space-separated) and of the outputs aliasing them."""
        def mutate(inputs: list[Tensor], outputs: list[Tensor]) -> None:
            for name in names.split():
                targets = [inputs[INPUT_NAMES.index(name)]]
                targets += [outputs[OUTPUT_NAMES.index(name)]] if name in OUTPUT_NAMES else []
                for t in targets:
                    t.dims[dim] = t.min[dim] = t.opt[dim] = t.max[dim] = value
        return mutate

    def set_type(pos: int, dtype: int, fmt: int = TensorFormat.LINEAR):
        def mutate(inputs: list[Tensor], outputs: list[Tensor]) -> None:
            t = (inputs + outputs)[pos]
            t.type, t.format = int(dtype), int(fmt)
        return mutate

    def drop_rank(name: str):
        def mutate(inputs: list[Tensor], outputs: list[Tensor]) -> None:
            inputs[INPUT_NAMES.index(name)].nbDims -= 1
        return mutate

    t = p.config().tail_capacity()
    return [
        ("head_dim", "'q'", set_dim("q", 3, p.head_dim * 2)),
        ("kv heads", "'k'", set_dim("k", 1, p.num_kv_heads + 1)),
        ("batch of v", "'v'", set_dim("v", 0, 3)),
        ("tokens of k", "'k'", set_dim("k", 2, 5)),
        ("pages", "'v_codes'", set_dim("v_codes", 0, 17)),
        ("tail not a multiple of G", "T = ", set_dim("tail_k tail_v", 2, t + 1)),
        ("tail too small", "T = ", set_dim("tail_k tail_v", 2, t - p.group_size)),
        ("tail_v differs", "'tail_v'", set_dim("tail_v", 2, t + p.group_size)),
        ("retained slots", "'retained_k'", set_dim("retained_k", 2, 99)),
        ("rank", "rank", drop_rank("dup_mask")),
        ("batch 0", "B must be", set_dim(" ".join(n for n in INPUT_NAMES if "codes" not in n and "params" not in n
                                                  and n != "dup_mask"), 0, 0)),
        ("q dtype", "'q'", set_type(0, DataType.FLOAT)),
        ("codes as uint8", "'k_codes'", set_type(INPUT_NAMES.index("k_codes"), DataType.UINT8)),
        ("metadata dtype", "'seq_len'", set_type(INPUT_NAMES.index("seq_len"), DataType.INT64)),
        ("format", "'retained_k'", set_type(INPUT_NAMES.index("retained_k"), ACTIVATION[p.dtype], TensorFormat.CHW32)),
        ("output dtype", "output 8 'tail_k'", set_type(len(INPUT_NAMES) + 8, DataType.FLOAT)),
    ]


@pytest.mark.parametrize("p", VALID[:3], ids=lambda p: p.tag)
def test_configure_and_on_shape_change_reject_broken_shapes(harness: Harness, p: Params) -> None:
    plugin = create(harness, p)
    for case, message, mutate in shape_breakers(p):
        for call in ("configure", "on_shape_change"):
            inputs, outputs = io(p, Geometry(batch=2, n=1))
            mutate(inputs, outputs)
            assert getattr(plugin, call)(inputs, outputs) == -1, (case, call)
            errors = harness.errors()
            assert errors and message in errors[0], (case, call, errors)
    # An output that does not have the shape of the input it aliases.
    inputs, outputs = io(p)
    outputs[3].dims[0] = outputs[3].min[0] = outputs[3].max[0] = 99
    assert plugin.configure(inputs, outputs) == -1 and "must have the shape of" in harness.errors()[0]
    # A decode profile too wide to bound the workspace exactly, and the wrong number of tensors.
    inputs, outputs = io(p, lo=Geometry(batch=1, n=1, blocks=1), hi=Geometry(batch=1000, n=1, blocks=1000))
    assert plugin.configure(inputs, outputs) == -1 and "too wide" in harness.errors()[0]
    inputs, outputs = io(p)
    for call in ("configure", "on_shape_change", "workspace_size"):
        assert getattr(plugin, call)(inputs[:-1], outputs) in (-1, 0) and "expected 17 inputs" in harness.errors()[0]
    assert plugin.output_shapes(inputs[:-1], len(OUTPUT_NAMES))[0] == -1 and harness.errors()
    assert plugin.output_shapes(inputs, len(OUTPUT_NAMES) - 1)[0] == -1 and harness.errors()
    wrong, _ = io(p)
    wrong[1].dims[3] = p.head_dim + 4
    assert plugin.output_shapes(wrong, len(OUTPUT_NAMES))[0] == -1 and "'k'" in harness.errors()[0]


def test_enqueue_checks_shapes_before_launching(harness: Harness) -> None:
    p = Params()
    plugin = create(harness, p)
    inputs, outputs = io(p)
    inputs[0].dims[3] = 32
    bogus = [0x1000] * len(INPUT_NAMES)
    assert plugin.enqueue(inputs, outputs, bogus, [0x1000] * len(OUTPUT_NAMES), 0, 0, shape_change=False) == -1
    assert "nothing was launched" in harness.errors()[0]
    assert plugin.enqueue(*io(p), None, None, 0, 0, shape_change=False) == -1  # null pointer arrays
    assert "null" in harness.errors()[0]


# ---- Bad fields -------------------------------------------------------------------------------------------------------

def replace(fields: list[Field], name: str, new: Field | None) -> list[Field]:
    out = [f for f in fields if f.name != name]
    return out + [new] if new is not None else out


def bad_field_cases() -> list[tuple[str, list[Field] | None, str]]:
    """(case, fields, expected message part): each must make createPlugin log an error and return nullptr."""
    base = Params().fields()
    cases: list[tuple[str, list[Field] | None, str]] = [("null collection", None, "null or malformed")]
    cases += [(f"missing {f.name}", replace(base, f.name, None), f"'{f.name}' is missing") for f in base]
    cases += [
        ("unknown", base + [Field.int32("rope_theta", 1)], "unknown field 'rope_theta'"),
        ("duplicate", base + [Field.int32("bits", 2)], "given twice"),
        ("int as string", replace(base, "bits", Field.string("bits", "2")), "'bits' must have type kINT32"),
        ("string as int", replace(base, "policy", Field.int32("policy", 1)), "'policy' must have type kCHAR"),
        ("float field", replace(base, "window", Field("window", FieldType.FLOAT32, b"\0\0\0B", 1)), "kINT32"),
        ("int length 2", replace(base, "window", Field("window", FieldType.INT32, b"\x20\0\0\0\x20\0\0\0", 2)),
         "must hold 1 value"),
        ("int length 0", replace(base, "window", Field("window", FieldType.INT32, b"", 0)), "must hold 1 value"),
        ("null data", replace(base, "residual", Field("residual", FieldType.INT32, None, 1)), "has no data"),
        ("empty string", replace(base, "dtype", Field.string("dtype", "")), "'dtype' must be a string"),
        ("embedded NUL", replace(base, "dtype", Field("dtype", FieldType.CHAR, b"float\x0016", 8)), "without NUL"),
        ("long string", replace(base, "policy", Field.string("policy", "k" * 65)), "'policy' must be a string"),
        ("truncated string", replace(base, "policy", Field("policy", FieldType.CHAR, b"logquant_ott", 11)),
         "'logquant_ot' must be one of"),
    ]
    for name, value, message in [
        ("bits", 3, "'bits' = 3 is out of range"), ("bits", 4, "out of range"),
        ("group_size", 48, "must be one of 32, 64, 128"), ("group_size", 0, "out of range"),
        ("group_size", 256, "must be one of"), ("residual", -1, "out of range"), ("residual", 2**20 + 1, "out of range"),
        ("window", 0, "out of range"), ("window", 48, "multiple of 'group_size'"), ("window", 4097, "out of range"),
        ("sink_tokens", -1, "out of range"), ("pool_size", -1, "out of range"), ("pool_size", 65, "out of range"),
        ("extra_pool_size", 513, "out of range"), ("pool_skip_layers", -3, "out of range"),
        ("layer_idx", -1, "out of range"), ("layer_idx", 2**16 + 1, "out of range"),
        ("num_q_heads", 0, "out of range"), ("num_q_heads", 7, "multiple of 'num_kv_heads'"),
        ("num_q_heads", 65536, "out of range"), ("num_kv_heads", 0, "out of range"), ("head_dim", 96, "64 or 128"),
        ("head_dim", 256, "out of range"), ("head_dim", -64, "out of range"),
        ("policy", "LOGQUANT", "must be one of: fp16, kivi"), ("policy", "h2o", "must be one of"),
        ("key_axis", "rows", "must be one of: channel, token"), ("dtype", "float32", "must be one of: float16"),
        ("dtype", "fp16", "must be one of"),
    ]:
        field = Field.string(name, value) if isinstance(value, str) else Field.int32(name, value)
        cases.append((f"{name}={value}", replace(base, name, field), message))
    return cases


@pytest.mark.parametrize("case, fields, message", bad_field_cases(), ids=[c[0] for c in bad_field_cases()])
def test_bad_fields_fail_creation_with_a_logged_error(harness: Harness, case: str, fields: list[Field] | None,
                                                      message: str) -> None:
    for phase in (0, 1):
        assert harness.create(fields, phase=phase) is None, case
        errors = harness.errors()
        assert len(errors) == 1 and "cannot create the plugin" in errors[0] and message in errors[0], (case, errors)


def test_truncated_or_corrupted_serialization_fails_cleanly(harness: Harness) -> None:
    serialized = create(harness, Params()).serialize()
    for cut in range(len(serialized)):
        assert harness.create(serialized[:cut], phase=1) is None and harness.errors()
    for i, f in enumerate(serialized):
        shorter = Field(f.name, f.type, f.data, f.length - 1)
        assert harness.create(serialized[:i] + [shorter] + serialized[i + 1:], phase=1) is None, f.name
        assert harness.errors()


# ---- Fuzz -------------------------------------------------------------------------------------------------------------

PLUGIN_LIMITS = {"residual": 2**20, "sink_tokens": 2**20, "window": 4096, "pool_size": 64, "extra_pool_size": 512,
                 "pool_skip_layers": 2**16, "layer_idx": 2**16, "num_q_heads": 65535, "num_kv_heads": 65535}


def oracle(fields: list[Field]) -> dict[str, object] | None:
    """The values a correct plugin accepts for these fields, or None: LogQuantConfig's rules plus the plugin's."""
    names = [f.name for f in fields]
    if len(names) != len(set(names)) or set(names) != set(FIELD_TYPES):
        return None
    out: dict[str, object] = {}
    for f in fields:
        if f.type != FIELD_TYPES[f.name] or f.data is None:
            return None
        if f.type == FieldType.INT32:
            if f.length != 1 or len(f.data) < 4:
                return None
            out[f.name] = int.from_bytes(f.data[:4], "little", signed=True)
        else:
            raw = f.data[:f.length] if 0 < f.length <= len(f.data) else None
            if raw is None:
                return None
            raw = raw[:-1] if raw.endswith(b"\0") and f.length <= 65 else raw
            if not 1 <= len(raw) <= 64 or b"\0" in raw:
                return None
            out[f.name] = raw.decode("latin-1")
    cfg_names = {x.name for x in dataclasses.fields(LogQuantConfig)}
    try:
        cfg = LogQuantConfig(**{k: v for k, v in out.items() if k in cfg_names})
        cfg.check_head_dim(int(out["head_dim"]))
    except (ConfigError, ValueError, TypeError):
        return None
    q, h = int(out["num_q_heads"]), int(out["num_kv_heads"])
    ok = (out["dtype"] in ACTIVATION and out["head_dim"] in (64, 128) and q >= 1 and h >= 1 and q % h == 0
          and all(0 <= int(out[k]) <= v for k, v in PLUGIN_LIMITS.items())
          and h * math.ceil(q // h / 8) <= 65535)
    return out if ok else None


INTERESTING_INTS = [-2**31, -65, -1, 0, 1, 2, 3, 4, 7, 8, 31, 32, 33, 48, 64, 96, 128, 129, 256, 4096, 4097, 65535,
                    65536, 2**20, 2**20 + 1, 2**31 - 1]
INTERESTING_STRINGS = ["fp16", "kivi", "logquant", "ott", "logquant_ott", "channel", "token", "float16", "bfloat16",
                       "float32", "", "KIVI", "logquant_ott\0", "ott\0x", "x" * 64, "x" * 65, "channel ", "\xff"]


def random_valid(rng: random.Random) -> Params:
    g = rng.choice((32, 64, 128))
    h = rng.choice((1, 2, 4, 8))
    return Params(policy=rng.choice(("fp16", "kivi", "logquant", "ott", "logquant_ott")), group_size=g,
                  residual=rng.randrange(0, 300), window=g * rng.randrange(1, 5), sink_tokens=rng.randrange(0, 5),
                  pool_size=rng.randrange(0, 8), extra_pool_size=rng.randrange(0, 40), layer_idx=rng.randrange(0, 4),
                  key_axis=rng.choice(("channel", "token")), dtype=rng.choice(("float16", "bfloat16")),
                  num_q_heads=h * rng.choice((1, 2, 4, 8)), num_kv_heads=h, head_dim=rng.choice((64, 128)))


def mutate(fields: list[Field], rng: random.Random) -> list[Field]:
    fields = list(fields)
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        i = rng.randrange(len(fields))
        f = fields[i]
        kind = rng.randrange(9)
        if kind == 0:
            del fields[i]
        elif kind == 1:
            fields.insert(rng.randrange(len(fields) + 1), f)
        elif kind == 2:
            fields.append(Field.int32(rng.choice(("rope_theta", "Policy", "bits ", "")), 1))
        elif kind == 3:
            fields[i] = Field(f.name, rng.choice(list(FieldType)), f.data, f.length)
        elif kind == 4:
            fields[i] = Field(f.name, f.type, f.data, rng.choice((-1, 0, 1, 2, f.length - 1, f.length + 1, 65, 66)))
        elif kind == 5:
            fields[i] = Field(f.name, f.type, None, f.length)
        elif kind == 6:
            fields[i] = Field.int32(f.name, rng.choice(INTERESTING_INTS + [rng.randrange(-2**31, 2**31)]))
        elif kind == 7:
            raw = rng.choice(INTERESTING_STRINGS).encode("latin-1")
            fields[i] = Field(f.name, FieldType.CHAR, raw, len(raw))
        elif f.data:
            data = bytearray(f.data)
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            fields[i] = Field(f.name, f.type, bytes(data), f.length)
    # Keep every pointer valid for its declared length: the plugin may read `length` elements of `data`.
    safe = []
    for f in fields:
        size = f.length * (4 if f.type == FieldType.INT32 else 1)
        if f.data is not None and 0 < f.length and len(f.data) < size:
            f = Field(f.name, f.type, f.data + bytes(size - len(f.data)), f.length)
        safe.append(f)
    return safe


def test_fuzz_field_parsing_against_the_oracle(harness: Harness) -> None:
    rng = random.Random(20261123)
    accepted = 0
    for i in range(3000):
        fields = mutate(random_valid(rng).fields(), rng)
        want = oracle(fields)
        plugin = harness.create(fields, phase=i % 2)
        errors = harness.errors()
        assert (plugin is not None) == (want is not None), (i, fields, errors)
        if plugin is None:
            assert len(errors) == 1 and "cannot create the plugin" in errors[0], (i, errors)
            continue
        accepted += 1
        assert errors == [] and values(plugin.serialize()) == want, (i, fields)
    assert 300 < accepted < 2700  # both outcomes are exercised


# ---- GPU: enqueue against the reference ----------------------------------------------------------------------------------

# Prefill: the plugin's kernel and dense_attention both compute in fp32 and round once, so they differ by at most one
# unit in the last place of the output dtype (2^-10 fp16, 2^-7 bf16 relative; |v| <= 4 here).
PREFILL_TOLERANCE = {"float16": dict(atol=2e-3, rtol=2e-3), "bfloat16": dict(atol=1.6e-2, rtol=1.6e-2)}
# Decode: the kernel's error model of tests/ops/test_decode_attention.py (q·scale, p·scale and the output each rounded
# once to the cache dtype); ~4 units in the last place bound the worst element.
DECODE_TOLERANCE = {"float16": dict(atol=5e-3, rtol=5e-3), "bfloat16": dict(atol=4e-2, rtol=4e-2)}


@dataclasses.dataclass(frozen=True)
class GpuCase:
    params: Params
    lengths: tuple[int, ...]
    steps: int

    @property
    def tag(self) -> str:
        return f"{self.params.tag}-lengths={self.lengths}-steps={self.steps}"


GPU_CASES = [
    GpuCase(Params(), (45, 100), 80),
    GpuCase(Params(policy="kivi", key_axis="token", dtype="bfloat16", group_size=64, residual=64, head_dim=128,
                   num_q_heads=8, num_kv_heads=4, sink_tokens=1), (70, 129), 70),
    GpuCase(Params(policy="ott", group_size=32, residual=32, head_dim=128, num_q_heads=4, num_kv_heads=4,
                   extra_pool_size=2), (33, 96), 60),
    GpuCase(Params(policy="logquant", key_axis="token", window=32, num_q_heads=16, num_kv_heads=2), (20, 150, 7), 100),
    GpuCase(Params(policy="fp16", residual=128, dtype="bfloat16"), (30, 60), 20),
]


def grid_values(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    """Multiples of 2^-8 in [-4, 4]: every fp32 L1 norm of a key is exact, so OTT's pool cannot depend on the
    summation order (the spec fixes none) and GPU and reference pick the same tokens."""
    return (torch.randn(shape, generator=gen) * 256).round().div(256).clamp(-4, 4).to(dtype)


def empty_cache(p: Params, batch: int, max_blocks: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The §4 tensors filled with garbage (the prefill must overwrite what it uses), block table shuffled."""
    geo = Geometry(batch=batch, pages=batch * max_blocks, blocks=max_blocks)
    cache = {}
    for name in CACHE_TENSOR_NAMES:
        shape = expected_shape(p, name, geo)
        if name in CODES:
            cache[name] = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
        elif name in INDEX:
            cache[name] = torch.randint(-100, 100, shape, generator=gen, dtype=torch.int32)
        else:
            cache[name] = torch.full(shape, float("nan"), dtype=getattr(torch, p.dtype))
    cache["block_table"] = torch.randperm(geo.pages, generator=gen).to(torch.int32).reshape(batch, max_blocks)
    return {k: v.cuda() for k, v in cache.items()}


class PluginRunner:
    """Runs one plugin like an execution context: TensorRT tensors are torch CUDA tensors, codes viewed as int8."""

    def __init__(self, plugin: Plugin, p: Params, cache: dict[str, torch.Tensor]) -> None:
        self.plugin, self.p, self.cache = plugin, p, cache
        self.workspace = torch.empty(0, dtype=torch.uint8, device="cuda")

    def descriptors(self, tensors: list[torch.Tensor]) -> list[Tensor]:
        return [tensor(expected_type(self.p, n), list(t.shape)) for n, t in zip(INPUT_NAMES, tensors)]

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: torch.Tensor,
                 aliased: bool = True) -> torch.Tensor:
        inputs = [q, k, v, *(self.cache[n] for n in CACHE_TENSOR_NAMES), lengths]
        out = torch.full_like(q, float("nan"))
        cache_out = [self.cache[n] if aliased else torch.empty_like(self.cache[n]) for n in OUTPUT_NAMES[1:]]
        in_desc = self.descriptors(inputs)
        out_desc = [in_desc[0]] + [in_desc[INPUT_NAMES.index(n)] for n in OUTPUT_NAMES[1:]]
        size = self.plugin.workspace_size(in_desc, out_desc)
        if size > self.workspace.numel():
            self.workspace = torch.empty(size, dtype=torch.uint8, device="cuda")
        self.workspace.fill_(0xAB)  # TensorRT's workspace is shared scratch: never zero
        status = self.plugin.enqueue(in_desc, out_desc, [t.data_ptr() for t in inputs],
                                     [t.data_ptr() for t in [out, *cache_out]], self.workspace.data_ptr(),
                                     torch.cuda.current_stream().cuda_stream)
        assert status == 0, self.plugin.harness.errors()
        torch.cuda.synchronize()
        if not aliased:
            self.cache.update({n: t for n, t in zip(OUTPUT_NAMES[1:], cache_out)})
        return out.cpu()


def assert_same_cache(p: Params, got: dict[str, torch.Tensor], want: PagedLayer, when: str) -> None:
    """Block by block through each side's own block table, valid tail slots, every retained slot."""
    got = {k: v.cpu() for k, v in got.items()}
    assert torch.equal(got["seq_len"], want.seq_len), when
    assert torch.equal(got["num_sealed"], want.num_sealed), when
    for b in range(len(want.seq_len)):
        for n in range(int(want.num_sealed[b])):
            mine, theirs = int(got["block_table"][b, n]), int(want.block_table[b, n])
            for name in ("k_codes", "k_params", "v_codes", "v_params", "dup_mask"):
                assert torch.equal(got[name][mine], getattr(want, name)[theirs]), f"{when}: {name} block {n} seq {b}"
        slots = torch.arange(int(want.num_sealed[b]) * p.group_size, int(want.seq_len[b])) % want.tail_k.shape[2]
        for name in ("tail_k", "tail_v"):
            assert torch.equal(got[name][b][:, slots], getattr(want, name)[b][:, slots]), f"{when}: {name} seq {b}"
    assert torch.equal(got["retained_pos"], want.retained_pos), when
    readable = want.retained_pos >= 0
    for name in ("retained_k", "retained_v"):
        assert torch.equal(got[name][readable], getattr(want, name)[readable]), f"{when}: {name}"


@pytest.mark.gpu
@pytest.mark.parametrize("case", GPU_CASES, ids=lambda c: c.tag)
def test_enqueue_prefill_then_decode_matches_the_reference(harness: Harness, case: GpuCase) -> None:
    p, lengths = case.params, case.lengths
    gen = torch.Generator().manual_seed(zlib.crc32(case.tag.encode()))
    dtype, batch, n = getattr(torch, p.dtype), len(lengths), max(lengths)
    max_blocks = (n + case.steps) // p.group_size + 2
    runner = PluginRunner(create(harness, p), p, empty_cache(p, batch, max_blocks, gen))

    def tokens(count: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (grid_values((batch, p.num_q_heads, count, p.head_dim), dtype, gen),
                grid_values((batch, p.num_kv_heads, count, p.head_dim), dtype, gen),
                grid_values((batch, p.num_kv_heads, count, p.head_dim), dtype, gen))

    q, k, v = tokens(n)
    out = runner(q.cuda(), k.cuda(), v.cuda(), torch.tensor(lengths, dtype=torch.int32).cuda())
    states = []
    for b, length in enumerate(lengths):
        want = dense_attention(q[b:b + 1, :, :length], k[b:b + 1, :, :length], v[b:b + 1, :, :length])
        torch.testing.assert_close(out[b:b + 1, :, :length], want, **PREFILL_TOLERANCE[p.dtype],
                                   msg=lambda m: f"{case.tag} prefill seq {b}: {m}")
        assert torch.equal(out[b, :, length:], torch.zeros_like(out[b, :, length:])), f"{case.tag}: padding rows"
        state = LayerKVState(p.config(), p.layer_idx)
        state.append(k[b:b + 1, :, :length], v[b:b + 1, :, :length])
        states.append(state)
    assert_same_cache(p, runner.cache, to_paged(states), f"{case.tag} after prefill")

    ones = torch.ones(batch, dtype=torch.int32).cuda()
    for step in range(case.steps):
        q, k, v = tokens(1)
        # One step with unaliased outputs: the out-of-place path copies the cache first and must agree.
        out = runner(q.cuda(), k.cuda(), v.cuda(), ones, aliased=step != case.steps // 2)
        for b, state in enumerate(states):
            state.append(k[b:b + 1], v[b:b + 1])
        want = paged_attention(q, to_paged(states))
        assert torch.isfinite(out).all(), f"{case.tag} step {step}"
        torch.testing.assert_close(out, want, **DECODE_TOLERANCE[p.dtype],
                                   msg=lambda m: f"{case.tag} decode step {step}: {m}")
    assert_same_cache(p, runner.cache, to_paged(states), f"{case.tag} after {case.steps} decode steps")
    assert harness.errors() == []
