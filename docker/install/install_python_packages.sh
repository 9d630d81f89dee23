#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `make venv` (pins: requirements/cpu.txt), then let .venv see the container's `tensorrt` module.
set -euo pipefail
cd /src
make venv
sed -i 's/^include-system-site-packages = false/include-system-site-packages = true/' .venv/pyvenv.cfg
.venv/bin/python -c "import tensorrt; print('TensorRT', tensorrt.__version__)"
