#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Print a TENSORRT_ROOT whose include/ holds NvInferRuntime.h: the container keeps its headers in the
# multiarch include folder, so link them under one root for plugins/CMakeLists.txt.
set -euo pipefail
header=$(find /usr/include /usr/local /opt -name NvInferRuntime.h -print -quit 2>/dev/null)
if [[ -z "${header}" ]]; then
    echo "tensorrt_root.sh: NvInferRuntime.h not found in the image" >&2
    exit 1
fi
root=/opt/logquant-tensorrt
mkdir -p "${root}"
ln -sfn "$(dirname "${header}")" "${root}/include"
echo "${root}"
