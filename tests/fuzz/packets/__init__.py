# SPDX-License-Identifier: Apache-2.0
"""Packet fuzzing of the BPF data path: a seeded frame generator and an exact oracle.

One implementation for bench/fuzz_packets.py (soaks of many seeds) and tests/bpf/test_fuzz_packets.py
(a sample with a fresh seed, and the recorded regression cases). The generator builds frames byte by
byte (scapy builds ~1 ms per packet, too slow for a million; it only supplies a pool of templates for
the exotic families). The oracle predicts, from the input frame and a mirror of the conntrack map,
what lb.c must do (docs/datapath.md#what-the-programs-do).

    wire.py       checksums and frames built byte by byte
    topology.py   the VIPs, services, backends and selection tables the harness loads (both families)
    frames.py     the seeded generator: families of frames, valid and odd
    frames6.py    its IPv6 families (extension header chains, fragments, ND, ICMPv6, truncation)
    mutations.py  header mutations and scapy-built templates
    parse.py      lb.c's parsers as the oracle reads a frame
    pick.py       the backends a new flow may get
    conntrack.py  the mirror of both conntrack tables and the rules that change them
    rewrite.py    what a correct NAT rewrite (or an untouched frame) looks like
    oracle.py     the decisions, one place each, for XDP and TC
    fastpath.py   the fast path's lab namespace (routes, neighbours) and its rules (--fast-path)
    harness.py    frames through BPF_PROG_TEST_RUN, conntrack syncs, evictions, recorded segments
    cases.py      recorded segments as replayable JSON files
    replay.py     replay and shrink a case

A run depends on its seed and options, plus the kernel's weighted-random backend draws, which the
oracle models as the set of allowed backends and a failure's case file records for an exact replay.
"""
