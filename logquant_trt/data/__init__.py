# SPDX-License-Identifier: Apache-2.0
"""Evaluation text that ships with every Python install (no third-party datasets)."""
