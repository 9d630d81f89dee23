#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Build tools the plugin and the venv need on top of the TensorRT container.
set -euo pipefail
apt-get update
apt-get install -y --no-install-recommends cmake ninja-build python3-venv git
rm -rf /var/lib/apt/lists/*
