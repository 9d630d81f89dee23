# SPDX-License-Identifier: Apache-2.0
"""Accuracy evaluation of the retention policies on the embedded model."""
