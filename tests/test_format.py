# SPDX-License-Identifier: Apache-2.0
"""The constants of docs/kv_format.md agree between their C++ owner (kvFormat.h) and logquant_trt/format.py."""

import re
from pathlib import Path

import pytest

from logquant_trt import format as fmt

HEADER = Path(__file__).resolve().parents[1] / "cpp" / "include" / "logquant" / "kvFormat.h"


def cpp_constants() -> dict[str, int]:
    return {name: int(value) for name, value in re.findall(r"constexpr int32_t k(\w+) = (-?\d+);", HEADER.read_text())}


def cpp_enum(name: str) -> dict[str, int]:
    body = re.search(rf"enum class {name} : int32_t\s*\{{(.*?)\}};", HEADER.read_text(), re.S).group(1)
    return {key: int(value) for key, value in re.findall(r"k(\w+) = (\d+)", body)}


@pytest.mark.parametrize("name", ["BITS", "LEVELS", "CODES_PER_BYTE", "CODES_PER_WORD", "MASK_WORD_BITS",
                                  "POSITION_BYTES", "EMPTY_SLOT", "PARAMS_PER_GROUP"])
def test_scalar_constants_agree(name: str) -> None:
    assert cpp_constants()[name] == getattr(fmt, name)


def test_every_header_constant_is_mirrored() -> None:
    assert set(cpp_constants()) <= set(vars(fmt))


def test_group_sizes_agree() -> None:
    values = re.search(r"kGROUP_SIZES\[\] = \{([^}]*)\}", HEADER.read_text()).group(1)
    assert tuple(int(v) for v in values.split(",")) == fmt.GROUP_SIZES


def test_enums_agree() -> None:
    assert {k.lower(): v for k, v in cpp_enum("Policy").items()} == fmt.POLICY_IDS
    assert {k.lower(): v for k, v in cpp_enum("KeyAxis").items()} == fmt.KEY_AXIS_IDS
