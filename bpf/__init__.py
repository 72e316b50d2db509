# SPDX-License-Identifier: Apache-2.0
"""BPF C sources of lbtui (lb.h, lb.c; decap.c for backends): package data, compiled at run time by BCC."""
