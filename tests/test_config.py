# SPDX-License-Identifier: Apache-2.0
import pytest

from logquant_trt.config import ConfigError, LogQuantConfig, Policy


@pytest.mark.parametrize("field, value", [
    ("policy", "kivi4"), ("bits", 4), ("group_size", 48), ("residual", -1), ("window", 0),
    ("sink_tokens", -2), ("pool_size", -1), ("extra_pool_size", -5), ("pool_skip_layers", -1),
    ("key_axis", "row"), ("dtype", "int8"), ("group_size", "64"), ("window", 3.0),
])
def test_bad_values_name_the_field_and_value(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        LogQuantConfig(**{field: value})
    assert f"LogQuantConfig.{field}={value!r}" in str(info.value)
    assert info.value.field == field


def test_logquant_window_must_align_with_blocks() -> None:
    with pytest.raises(ConfigError, match=r"window=42 .*multiple of group_size=64"):
        LogQuantConfig(policy="logquant", window=42, group_size=64)
    LogQuantConfig(policy="kivi", window=42, group_size=64)  # KIVI ignores W


def test_head_dim_checks() -> None:
    with pytest.raises(ConfigError, match="head_dim=30"):
        LogQuantConfig().check_head_dim(30)
    LogQuantConfig(policy="kivi", group_size=128).check_head_dim(64)  # C = min(G, D) = 64


def test_dict_round_trip_and_unknown_fields() -> None:
    config = LogQuantConfig(policy="ott", residual=32, group_size=128)
    assert LogQuantConfig.from_dict(config.to_dict()) == config
    assert config.policy is Policy.OTT
    with pytest.raises(ConfigError, match="windw"):
        LogQuantConfig.from_dict({"windw": 3})


def test_capacities() -> None:
    config = LogQuantConfig(policy="logquant_ott", window=64, group_size=64, pool_size=3,
                            extra_pool_size=32, sink_tokens=0)
    assert config.tail_capacity() == 192  # 2W + G rounded up to G
    assert config.retained_regions() == {"sinks": 0, "sparse": 64, "pool": 3, "extra": 32}
    assert LogQuantConfig(policy="kivi", residual=32, group_size=32).tail_capacity() == 64
