# SPDX-License-Identifier: Apache-2.0
"""tests/plugins: makes trt_harness (the ctypes driver of the TensorRT-role harness) importable.

--import-mode=importlib (pyproject.toml) leaves sys.path alone, so sibling helper modules need this.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
