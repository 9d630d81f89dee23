# SPDX-License-Identifier: Apache-2.0
"""Constants of docs/kv_format.md.

Must match cpp/include/logquant/kvFormat.h; tests/test_format.py checks that they do.
"""

BITS = 2
LEVELS = 3
CODES_PER_BYTE = 4
CODES_PER_WORD = 16
MASK_WORD_BITS = 32
POSITION_BYTES = 4
EMPTY_SLOT = -1
PARAMS_PER_GROUP = 2
GROUP_SIZES = (32, 64, 128)

# Enum values shared with C++ (logquant::Policy, logquant::KeyAxis) and the plugin fields.
POLICY_IDS = {"fp16": 0, "kivi": 1, "logquant": 2, "ott": 3, "logquant_ott": 4}
KEY_AXIS_IDS = {"channel": 0, "token": 1}
