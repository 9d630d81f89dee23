# SPDX-License-Identifier: Apache-2.0
"""The fp16 baseline cache off CUDA: masked SDPA over each row's own length, in every layer of every step."""

import torch
import torch.nn.functional as F

from logquant_trt.runtime.cache.dense import DenseKVCache
from logquant_trt.runtime.model import DecoderShape

ROWS, LAYERS, Q_HEADS, KV_HEADS, HEAD_DIM, MAX_LEN = 5, 3, 4, 2, 16, 40
# Per step: which rows are busy (an idle row restarts with one token).
ACTIVE = [[1, 1, 1, 0, 1], [1, 0, 1, 1, 1]]


def test_cpu_decode_attends_over_each_rows_length(small_config) -> None:
    shape = DecoderShape(num_layers=LAYERS, hidden_size=64, num_q_heads=Q_HEADS, num_kv_heads=KV_HEADS,
                         head_dim=HEAD_DIM, intermediate_size=64, vocab_size=10, max_positions=MAX_LEN)
    cache = DenseKVCache(small_config("fp16"), shape, ROWS, MAX_LEN, 0, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    cache.k.normal_(generator=gen)
    cache.v.normal_(generator=gen)
    cache.lengths.copy_(torch.tensor([0, 7, 37, 12, 20], dtype=torch.int32))
    for step, busy in enumerate(ACTIVE):
        active = torch.tensor(busy, dtype=torch.int32)
        visible = (cache.lengths * active + 1).tolist()
        cache.begin_decode(active, [row for row, a in enumerate(busy) if a])
        for layer in range(LAYERS):
            q = torch.randn(ROWS, Q_HEADS, 1, HEAD_DIM, generator=gen)
            k = torch.randn(ROWS, KV_HEADS, 1, HEAD_DIM, generator=gen)
            v = torch.randn(ROWS, KV_HEADS, 1, HEAD_DIM, generator=gen)
            out = cache.decode(layer, q, k, v)
            for row, n in enumerate(visible):
                tag = f"step {step} layer {layer} row {row}"
                assert torch.equal(cache.k[layer, row, :, n - 1], k[row, :, 0]), f"{tag}: write slot"
                expected = F.scaled_dot_product_attention(q[row:row + 1], cache.k[layer, row:row + 1, :, :n],
                                                          cache.v[layer, row:row + 1, :, :n], enable_gqa=True)
                # fp32, the same terms: a softmax masked to n of max_seq_len keys vs one over the first n keys
                # differ by rounding only.
                torch.testing.assert_close(out[row:row + 1], expected, atol=1e-6, rtol=1e-5,
                                           msg=lambda m: f"{tag}: {m}")
