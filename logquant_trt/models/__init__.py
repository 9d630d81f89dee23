# SPDX-License-Identifier: Apache-2.0
"""Model helpers. Import submodules directly (e.g. ``logquant_trt.models.embedded``);
this package imports nothing so that ``import logquant_trt.models`` stays cheap."""
