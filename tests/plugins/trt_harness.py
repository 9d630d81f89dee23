# SPDX-License-Identifier: Apache-2.0
"""ctypes driver of build/plugins/liblogquant_plugin_harness.so, the stand-in for TensorRT (pluginHarness.cpp).

Mirrors (must match, field for field): PluginField <-> nvinfer1::PluginField; Tensor <-> HarnessTensor in
pluginHarness.cpp; DataType/TensorFormat/PluginFieldType values <-> NvInferRuntimeBase.h / NvInferRuntime.h /
NvInferPluginBase.h of TensorRT 10.14.1.
"""

from __future__ import annotations

import ctypes
import dataclasses
import enum
import os
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(os.environ.get("LOGQUANT_PLUGIN_BUILD_DIR", REPO / "build" / "plugins"))
PLUGIN_LIBRARY = BUILD_DIR / "liblogquant_trt_plugin.so"
HARNESS_LIBRARY = BUILD_DIR / "liblogquant_plugin_harness.so"
MAX_DIMS = 8


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9
    FP4 = 10
    E8M0 = 11


class TensorFormat(enum.IntEnum):
    LINEAR = 0
    CHW2 = 1
    HWC8 = 2
    CHW4 = 3
    CHW16 = 4
    CHW32 = 5
    DHWC8 = 6
    CDHW32 = 7
    HWC = 8
    DLA_LINEAR = 9
    DLA_HWC4 = 10
    HWC16 = 11
    DHWC = 12


class FieldType(enum.IntEnum):
    FLOAT16 = 0
    FLOAT32 = 1
    FLOAT64 = 2
    INT8 = 3
    INT16 = 4
    INT32 = 5
    CHAR = 6
    DIMS = 7
    UNKNOWN = 8
    BF16 = 9
    INT64 = 10
    FP8 = 11
    INT4 = 12
    FP4 = 13


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class PluginField(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("data", ctypes.c_void_p), ("type", ctypes.c_int32),
                ("length", ctypes.c_int32)]


class Tensor(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int32), ("format", ctypes.c_int32), ("nbDims", ctypes.c_int32),
                ("padding", ctypes.c_int32), ("dims", ctypes.c_int64 * MAX_DIMS), ("min", ctypes.c_int64 * MAX_DIMS),
                ("opt", ctypes.c_int64 * MAX_DIMS), ("max", ctypes.c_int64 * MAX_DIMS)]


@dataclasses.dataclass(frozen=True)
class Field:
    """One plugin field as bytes; `length` is PluginField.length (elements), not len(data)."""

    name: str
    type: int
    data: bytes | None
    length: int

    @staticmethod
    def int32(name: str, value: int) -> "Field":
        return Field(name, FieldType.INT32, int(value).to_bytes(4, "little", signed=True), 1)

    @staticmethod
    def string(name: str, value: str) -> "Field":
        raw = value.encode()
        return Field(name, FieldType.CHAR, raw, len(raw))


def tensor(dtype: int, shape: Sequence[int], fmt: int = TensorFormat.LINEAR, lo: Sequence[int] | None = None,
           hi: Sequence[int] | None = None) -> Tensor:
    """A descriptor; `shape` may hold -1 (a wildcard/symbol); lo/hi default to `shape` (the profile's min/max)."""
    t = Tensor(type=int(dtype), format=int(fmt), nbDims=len(shape))
    for name, values in (("dims", shape), ("min", lo or shape), ("opt", hi or shape), ("max", hi or shape)):
        getattr(t, name)[:len(values)] = list(values)
    return t


def _array(tensors: Sequence[Tensor]) -> ctypes.Array:
    return (Tensor * max(len(tensors), 1))(*tensors)


class Harness:
    """The harness library with the plugin library loaded through it (dlopen, setLoggerFinder, getCreators)."""

    def __init__(self, plugin_library: Path = PLUGIN_LIBRARY, harness_library: Path = HARNESS_LIBRARY,
                 name: str = "LogQuantAttention", version: str = "1", namespace: str = "logquant") -> None:
        for path in (plugin_library, harness_library):
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: run `make plugin`")
        lib = ctypes.CDLL(str(harness_library))
        vp, i32, i64, cp = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_char_p
        tp = ctypes.POINTER(Tensor)
        signatures = {
            "lqh_load": (i32, [cp, cp, cp, cp]),
            "lqh_field_names": (i32, [cp, i32]),
            "lqh_take_log": (i32, [cp, i32]),
            "lqh_create": (vp, [cp, ctypes.POINTER(PluginField), i32, i32]),
            "lqh_destroy": (None, [vp]),
            "lqh_clone": (vp, [vp]),
            "lqh_attach": (vp, [vp]),
            "lqh_identity": (i32, [vp, cp, i32]),
            "lqh_serialize": (i32, [vp, ctypes.POINTER(PluginField), i32]),
            "lqh_nb_outputs": (i32, [vp]),
            "lqh_aliased_input": (i32, [vp, i32]),
            "lqh_output_types": (i32, [vp, ctypes.POINTER(i32), i32, ctypes.POINTER(i32), i32]),
            "lqh_output_shapes": (i32, [vp, tp, i32, i32, cp, i32]),
            "lqh_fold": (i32, [i32, i64, i64, i32, cp, i32]),
            "lqh_supports": (i32, [vp, i32, tp, i32, i32]),
            "lqh_configure": (i32, [vp, tp, i32, tp, i32]),
            "lqh_workspace_size": (i64, [vp, tp, i32, tp, i32]),
            "lqh_on_shape_change": (i32, [vp, tp, i32, tp, i32]),
            "lqh_enqueue": (i32, [vp, tp, i32, tp, i32, ctypes.POINTER(vp), ctypes.POINTER(vp), vp, vp, i32]),
        }
        for fn, (restype, argtypes) in signatures.items():
            getattr(lib, fn).restype = restype
            getattr(lib, fn).argtypes = argtypes
        self.lib = lib
        if lib.lqh_load(str(plugin_library).encode(), name.encode(), version.encode(), namespace.encode()) != 0:
            raise RuntimeError(f"the harness could not load {plugin_library}: {self.take_log()}")

    def text(self, fn: str, *args: object) -> str:
        size = 1 << 16
        buffer = ctypes.create_string_buffer(size)
        needed = getattr(self.lib, fn)(*args, buffer, size)
        if needed >= size:
            buffer = ctypes.create_string_buffer(needed + 1)
            getattr(self.lib, fn)(*args, buffer, needed + 1)
        return buffer.value.decode()

    def take_log(self) -> list[tuple[int, str]]:
        lines = self.text("lqh_take_log").splitlines()
        return [(int(s), m) for s, m in (line.split("\t", 1) for line in lines)]

    def errors(self) -> list[str]:
        return [m for s, m in self.take_log() if s <= Severity.ERROR]

    def field_names(self) -> dict[str, int]:
        return {name: int(t) for name, t in (line.split(":") for line in self.text("lqh_field_names").splitlines())}

    def fold(self, op: int, a: int, b: int, a_is_symbol: bool = False) -> str:
        return self.text("lqh_fold", op, a, b, int(a_is_symbol))

    def create(self, fields: Sequence[Field] | None, phase: int = 0, name: str = "layer0") -> "Plugin | None":
        """createPlugin with these fields (None: a null PluginFieldCollection); None if it returned nullptr."""
        keep = [f.data for f in fields or ()]
        array = (PluginField * max(len(fields or ()), 1))(*[
            PluginField(f.name.encode(), ctypes.cast(ctypes.c_char_p(f.data), ctypes.c_void_p) if f.data is not None
                        else None, f.type, f.length) for f in fields or ()])
        handle = self.lib.lqh_create(name.encode(), array, -1 if fields is None else len(fields), phase)
        del keep
        return Plugin(self, handle) if handle else None


class Plugin:
    """One IPluginV3 object; destroyed with the wrapper (TensorRT owns and deletes the plugins it creates)."""

    def __init__(self, harness: Harness, handle: int) -> None:
        self.harness, self.lib, self.handle = harness, harness.lib, handle

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self.lib.lqh_destroy(self.handle)
            self.handle = None

    def _wrap(self, handle: int | None) -> "Plugin | None":
        return Plugin(self.harness, handle) if handle else None

    def clone(self) -> "Plugin | None":
        return self._wrap(self.lib.lqh_clone(self.handle))

    def attach(self) -> "Plugin | None":
        return self._wrap(self.lib.lqh_attach(self.handle))

    def identity(self) -> list[str]:
        return self.harness.text("lqh_identity", self.handle).split("\n")

    def serialize(self) -> list[Field]:
        """getFieldsToSerialize, copied out of the plugin."""
        out = (PluginField * 64)()
        count = self.lib.lqh_serialize(self.handle, out, 64)
        assert 0 <= count <= 64
        fields = []
        for f in out[:count]:
            size = f.length * {FieldType.INT32: 4, FieldType.CHAR: 1}[f.type]
            fields.append(Field(f.name.decode(), f.type, ctypes.string_at(f.data, size), f.length))
        return fields

    def nb_outputs(self) -> int:
        return self.lib.lqh_nb_outputs(self.handle)

    def aliased_input(self, output: int) -> int:
        return self.lib.lqh_aliased_input(self.handle, output)

    def output_types(self, input_types: Sequence[int], nb_outputs: int) -> tuple[int, list[int]]:
        inputs = (ctypes.c_int32 * max(len(input_types), 1))(*input_types)
        outputs = (ctypes.c_int32 * max(nb_outputs, 1))()
        status = self.lib.lqh_output_types(self.handle, inputs, len(input_types), outputs, nb_outputs)
        return status, list(outputs[:nb_outputs])

    def output_shapes(self, inputs: Sequence[Tensor], nb_outputs: int) -> tuple[int, list[list[str]]]:
        """Each output's dims as text: a number for a constant, the symbol "i<input>d<dim>" or an expression."""
        size = 1 << 16
        buffer = ctypes.create_string_buffer(size)
        status = self.lib.lqh_output_shapes(self.handle, _array(inputs), len(inputs), nb_outputs, buffer, size)
        text = buffer.value.decode()
        return status, [dims.split(",") if dims else [] for dims in text.split(";")] if nb_outputs else []

    def supports(self, pos: int, in_out: Sequence[Tensor], nb_inputs: int) -> int:
        return self.lib.lqh_supports(self.handle, pos, _array(in_out), nb_inputs, len(in_out) - nb_inputs)

    def configure(self, inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> int:
        return self.lib.lqh_configure(self.handle, _array(inputs), len(inputs), _array(outputs), len(outputs))

    def workspace_size(self, inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> int:
        return self.lib.lqh_workspace_size(self.handle, _array(inputs), len(inputs), _array(outputs), len(outputs))

    def on_shape_change(self, inputs: Sequence[Tensor], outputs: Sequence[Tensor]) -> int:
        return self.lib.lqh_on_shape_change(self.handle, _array(inputs), len(inputs), _array(outputs), len(outputs))

    def enqueue(self, inputs: Sequence[Tensor], outputs: Sequence[Tensor], input_ptrs: Sequence[int] | None,
                output_ptrs: Sequence[int] | None, workspace: int, stream: int, shape_change: bool = True) -> int:
        """onShapeChange (unless not shape_change), then enqueue with these device pointers (None: a null array);
        -2 if onShapeChange refused."""
        vp = ctypes.c_void_p
        ins = None if input_ptrs is None else (vp * len(input_ptrs))(*input_ptrs)
        outs = None if output_ptrs is None else (vp * len(output_ptrs))(*output_ptrs)
        return self.lib.lqh_enqueue(self.handle, _array(inputs), len(inputs), _array(outputs), len(outputs), ins, outs,
                                    workspace or None, stream or None, int(not shape_change))
