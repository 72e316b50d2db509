"""BPF C sources of lbtui (lb.h, lb.c; decap.c for backends): package data, compiled at run time by BCC."""
