# SPDX-License-Identifier: Apache-2.0
"""BPF C sources of lbtui (lb.h, lb.c), shipped as package data; compiled at run time by BCC."""
