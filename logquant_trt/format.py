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

# A layer's cache tensors (§4), in the order of KvCacheView's pointers and of the cache arguments of the custom ops
# and the plugin. The first five are indexed by page (§4.1), the rest by sequence row.
PAGE_TENSOR_NAMES = ("k_codes", "k_params", "v_codes", "v_params", "dup_mask")
CACHE_TENSOR_NAMES = (*PAGE_TENSOR_NAMES, "block_table", "num_sealed", "seq_len", "tail_k", "tail_v", "retained_pos",
                      "retained_k", "retained_v")
