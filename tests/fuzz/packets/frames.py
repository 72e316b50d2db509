# SPDX-License-Identifier: Apache-2.0
"""Seeded frames: well-formed traffic to the VIP, replies from backends, and every kind of oddity.

Each family has a weight; `FrameGenerator.next(flows)` draws one, using flows the data path is
tracking (the oracle's list) for follow-ups and replies. A seed determines every frame given the
flows, and the flows differ between runs only by the kernel's weighted-random backend picks (see
harness.py: a failing run's frames are recorded, picks included, for an exact replay). The IPv6
families live in frames6.py; `families` chooses both halves (the default), "ipv4" or "ipv6".
With `fast_path` the XDP families get FAST_PATH_FAMILIES too (TTLs about to expire, lengths at the
lab's MTUs) and each XDP frame an ingress interface of the lab (fastpath.py): mostly the one that
forwards, sometimes the one with forwarding off; a few XDP frames are addressed to a MAC that is not
the ingress interface's (NOT_OURS_MACS: the kernel would not forward them, nor may the fast path).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.fuzz.packets import fastpath, mutations
from tests.fuzz.packets.frames6 import (
    FAST_PATH6_FAMILIES,
    FAST_PATH6_TC_FAMILIES,
    TC6_FAMILIES,
    XDP6_FAMILIES,
    Ext,
    Frames6,
)
from tests.fuzz.packets.topology import BACKENDS, SERVICE_BY_KEY, SERVICES, VIP_B
from tests.fuzz.packets.wire import (
    ETH_IP,
    ETH_SRC,
    ICMP,
    TCP,
    TPID_8021AD,
    TPID_8021Q,
    UDP,
    Built,
    addr,
    assemble,
    ethernet,
    icmp_fix,
    ipv4_header,
    tcp_segment,
    udp_datagram,
)


@dataclass(frozen=True)
class Frame:
    family: str
    hook: str  # "xdp" | "tc"
    data: bytes
    ingress: str = ""  # fast path: the lab interface an XDP frame arrives on (fastpath.py)


@dataclass(frozen=True)
class Flow:
    """A tracked flow as the generator needs it: who talks to which VIP port through which backend."""

    client_ip: bytes
    client_port: int
    vip_port: int
    proto: int
    backend_ip: bytes
    backend_port: int
    vip: bytes = VIP_B

    @property
    def v6(self) -> bool:
        return len(self.vip) == 16


XDP_FAMILIES: dict[str, int] = {
    "tcp_syn": 8,
    "tcp_flags": 6,
    "tcp_followup": 10,
    "udp_vip": 8,
    "udp_followup": 4,
    "cross_service": 1,
    "non_vip_addr": 3,
    "non_vip_port": 3,
    "vlan": 5,
    "qinq": 1,
    "ip_options": 5,
    "tcp_options": 2,
    "fragment": 4,
    "df_reserved": 2,
    "icmp": 1,
    "icmp_error": 2,
    "arp": 1,
    "ipv6": 1,
    "other_ethertype": 1,
    "other_ipproto": 2,
    "truncated": 8,
    "byte_flip": 8,
    "bad_ihl": 3,
    "bad_version": 1,
    "bad_tot_len": 4,
    "padded": 2,
    "tcp_bad_doff": 3,
    "udp_bad_len": 3,
    "random_bytes": 2,
    "scapy": 2,
}
TC_FAMILIES: dict[str, int] = {
    "tc_reply": 8,
    "tc_reply_mutated": 6,
    "tc_unknown": 2,
    "tc_client_frame": 2,
}
# with the fast path compiled in: frames at its limits (TTL, the lab's MTUs)
FAST_PATH_FAMILIES: dict[str, int] = {"fp_ttl": 4, "fp_length": 4}
FAST_PATH_TC_FAMILIES: dict[str, int] = {"fp_reply": 4}  # replies with those TTLs and lengths
FAST_PATH_NO_FORWARDING_SHARE = 0.03  # XDP frames arriving on the lab interface with forwarding off
OTHER_HOST_MAC = bytes.fromhex("020000000099")  # a unicast MAC no lab interface has
# XDP frames addressed to a MAC not the ingress interface's (fast path: other_host): another host's
# unicast MAC, broadcast, IPv4 and IPv6 multicast
FAST_PATH_OTHER_HOST_SHARE = 0.05
NOT_OURS_MACS = (OTHER_HOST_MAC, b"\xff" * 6, bytes.fromhex("01005e000001"), bytes.fromhex("333300000001"))
FAMILIES = {**XDP_FAMILIES, **TC_FAMILIES, **XDP6_FAMILIES, **TC6_FAMILIES}
IPV6_FAMILIES = frozenset({**XDP6_FAMILIES, **TC6_FAMILIES, **FAST_PATH6_FAMILIES, **FAST_PATH6_TC_FAMILIES})
FAMILY_SETS = {
    "all": ({**XDP_FAMILIES, **XDP6_FAMILIES}, {**TC_FAMILIES, **TC6_FAMILIES}),
    "ipv4": (XDP_FAMILIES, TC_FAMILIES),
    "ipv6": (XDP6_FAMILIES, TC6_FAMILIES),
}
TCP_FOLLOWUP_FLAGS = (0x10, 0x18, 0x11, 0x04, 0x14, 0x02, 0x19, 0x12, 0x01)
TCP_REPLY_FLAGS = (0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x19, 0x01, 0x02)


class FrameGenerator:
    """Seeded frames from the families above. `next(flows)` uses flows the data path is tracking."""

    def __init__(
        self, seed: int, *, scapy_pool: int = 48, families: str = "all", fast_path: bool = False
    ) -> None:
        self.rng = random.Random(seed)
        self.six = Frames6(self)
        self.fast_path = fast_path
        xdp_families, tc_families = FAMILY_SETS[families]
        if fast_path and families != "ipv6":
            xdp_families = {**xdp_families, **FAST_PATH_FAMILIES}
            tc_families = {**tc_families, **FAST_PATH_TC_FAMILIES}
        if fast_path and families != "ipv4":
            xdp_families = {**xdp_families, **FAST_PATH6_FAMILIES}
            tc_families = {**tc_families, **FAST_PATH6_TC_FAMILIES}
        # (flow, from the backend) -> (the next sequence number of that side, of the other side),
        # None where unknown: set by the harness from the oracle's mirror
        self.seq_hint: Callable[[Flow, bool], tuple[int | None, int | None]] | None = None
        self._xdp_names = list(xdp_families)
        self._xdp_weights = list(xdp_families.values())
        self._xdp4_names = [f for f in self._xdp_names if f in XDP_FAMILIES]
        self._tc_names = list(tc_families)
        self._tc_weights = list(tc_families.values())
        self._tc_share = sum(self._tc_weights) / (sum(self._tc_weights) + sum(self._xdp_weights))
        self._pool = mutations.build_scapy_pool(self.rng.randrange(2**32), scapy_pool) if scapy_pool else []

    # -- random values -------------------------------------------------------------------------

    def client_ip(self) -> bytes:
        r = self.rng.random()
        if r < 0.4:
            return bytes((172, 16 + self.rng.randrange(16), self.rng.randrange(256), self.rng.randrange(256)))
        if r < 0.6:
            return bytes((192, 168, self.rng.randrange(256), self.rng.randrange(256)))
        if r < 0.8:
            return bytes((10, 1, self.rng.randrange(256), self.rng.randrange(256)))
        return self.rng.randbytes(4)

    def port(self) -> int:
        r = self.rng.random()
        if r < 0.05:
            return self.rng.choice((0, 1, 53, 80, 81, 5353, 65535))
        return self.rng.randrange(1024, 65536)

    def payload(self) -> bytes:
        r = self.rng.random()
        if r < 0.3:
            return b""
        if r < 0.95:
            return self.rng.randbytes(self.rng.randrange(1, 80))
        return self.rng.randbytes(self.rng.randrange(80, 1400))

    def ip_options(self) -> bytes:
        words = self.rng.randrange(1, 11)
        kind = self.rng.random()
        if kind < 0.3:
            return b"\x01" * (words * 4)  # NOPs
        if kind < 0.5:
            return b"\x94\x04\x00\x00" + b"\x00" * (words * 4 - 4)  # router alert, then EOL
        return self.rng.randbytes(words * 4)

    def vlans(self) -> list[tuple[int, int]]:
        return [(self.rng.choice((TPID_8021Q, TPID_8021AD)), self.rng.randrange(65536))]

    # -- valid frames --------------------------------------------------------------------------

    def l4_frame(
        self,
        src: bytes,
        dst: bytes,
        proto: int,
        sport: int,
        dport: int,
        *,
        flags: int = 0x02,
        payload: bytes | None = None,
        ip_options: bytes = b"",
        tcp_options: bytes = b"",
        vlans: Sequence[tuple[int, int]] = (),
        udp_zero: bool | None = None,
        frag: int | None = None,
        seq: int | None = None,
        ack: int | None = None,
        ext: Sequence[Ext] = (),
        ttl: int = 64,
    ) -> Built:
        """A frame from `src` to `dst`: IPv4 (`ip_options`, `frag`) or, for 16-byte addresses, IPv6
        (the extension headers `ext`; absent UDP checksums are rarer: IPv6 makes them malformed)."""
        v6 = len(src) == 16
        l4 = self.l4_body(
            src,
            dst,
            proto,
            sport,
            dport,
            flags=flags,
            payload=payload,
            tcp_options=tcp_options,
            udp_zero=udp_zero,
            udp_zero_share=0.02 if v6 else 0.25,
            seq=seq,
            ack=ack,
        )
        if v6:
            return self.six.packet(src, dst, proto, l4, ext=ext, vlans=vlans, hop_limit=ttl)
        rng = self.rng
        if frag is None:
            frag = 0x4000 if rng.random() < 0.5 else 0  # DF is common on the wire
        ip = ipv4_header(
            src, dst, proto, len(l4), options=ip_options, ident=rng.randrange(65536), frag=frag, ttl=ttl
        )
        return assemble(ethernet(ETH_IP, vlans), ip, l4, proto)

    def l4_body(
        self,
        src: bytes,
        dst: bytes,
        proto: int,
        sport: int,
        dport: int,
        *,
        flags: int,
        payload: bytes | None,
        tcp_options: bytes,
        udp_zero: bool | None,
        udp_zero_share: float,
        seq: int | None,
        ack: int | None,
    ) -> bytes | bytearray:
        """A TCP segment or UDP datagram with its checksum (the pseudo header of either family), or
        the bare payload of another protocol."""
        rng = self.rng
        body = self.payload() if payload is None else payload
        if proto == TCP:
            return tcp_segment(
                src,
                dst,
                sport,
                dport,
                flags,
                body,
                seq=rng.randrange(2**32) if seq is None else seq,
                ack=(rng.randrange(2**32) if ack is None else ack) if flags & 0x10 else 0,
                options=tcp_options,
            )
        if proto == UDP:
            zero = rng.random() < udp_zero_share if udp_zero is None else udp_zero
            return udp_datagram(src, dst, sport, dport, body, zero_checksum=zero)
        return body

    def to_vip(self, proto: int | None = None, **kw: Any) -> Built:
        """A well-formed frame to a configured VIP:port of the given (or a random) protocol."""
        services = [s for s in SERVICES if proto is None or s.proto == proto]
        svc = self.rng.choice(services)
        if svc.proto == TCP and "flags" not in kw:
            kw["flags"] = 0x02
        return self.l4_frame(self.client_ip(), VIP_B, svc.proto, self.port(), svc.port, **kw)

    def followup(self, flow: Flow, exact: bool = False, **kw: Any) -> Built:
        """A segment of the client's side of a flow; TCP sequence numbers as sequence_numbers()."""
        if flow.proto == TCP:
            if "flags" not in kw:
                kw["flags"] = self.rng.choice(TCP_FOLLOWUP_FLAGS)
            kw = self.sequence_numbers(flow, False, exact, kw)
        return self.l4_frame(flow.client_ip, flow.vip, flow.proto, flow.client_port, flow.vip_port, **kw)

    def reply(self, flow: Flow, exact: bool = False, **kw: Any) -> Built:
        """A segment of the backend's side of a flow; TCP sequence numbers as sequence_numbers()."""
        if flow.proto == TCP:
            if "flags" not in kw:
                kw["flags"] = self.rng.choice(TCP_REPLY_FLAGS)
            kw = self.sequence_numbers(flow, True, exact, kw)
        return self.l4_frame(
            flow.backend_ip, flow.client_ip, flow.proto, flow.backend_port, flow.client_port, **kw
        )

    def sequence_numbers(
        self, flow: Flow, from_backend: bool, exact: bool, kw: dict[str, Any]
    ) -> dict[str, Any]:
        """seq and ack for a segment of a tracked flow: mostly where the data path expects them
        (`seq_hint`: the mirror's next sequence number of each side), sometimes inside the window
        but off, sometimes anywhere (a blind segment); `exact`: always where expected."""
        if "seq" in kw or self.seq_hint is None:
            return kw
        seq, ack = self.seq_hint(flow, from_backend)
        r = 0.0 if exact else self.rng.random()
        if seq is None or r >= 0.85:
            return kw  # random: the data path's window checks decide
        if r >= 0.65:
            seq = (seq + self.rng.choice((-1, 1)) * self.rng.randrange(1, 70000)) & 0xFFFFFFFF
        out = dict(kw)
        out["seq"] = seq
        if ack is not None:
            out["ack"] = ack
        return out

    def any_valid(self, flows: Sequence[Flow]) -> Built:
        r = self.rng.random()
        kw: dict[str, Any] = {}
        if self.rng.random() < 0.2:
            kw["vlans"] = self.vlans()
        if self.rng.random() < 0.2:
            kw["ip_options"] = self.ip_options()
        if r < 0.3 and flows:
            return self.followup(self.rng.choice(flows), **kw)
        if r < 0.5:
            return self.to_vip(TCP, flags=self.rng.randrange(256), **kw)
        return self.to_vip(**kw)

    # -- families ------------------------------------------------------------------------------

    def next(self, flows: Sequence[Flow]) -> Frame:
        recent = flows[-128:]
        if self.rng.random() < self._tc_share:
            family = self.rng.choices(self._tc_names, self._tc_weights)[0]
            if family in FAST_PATH6_TC_FAMILIES:
                return Frame(
                    family, "tc", bytes(self.six.fast_path_family(family, [f for f in recent if f.v6]))
                )
            if family in IPV6_FAMILIES:
                return Frame(family, "tc", bytes(self.six.tc_family(family, [f for f in recent if f.v6])))
            flows4 = [f for f in recent if not f.v6]
            if family in FAST_PATH_TC_FAMILIES:
                return Frame(family, "tc", bytes(self._fast_path_family(family, flows4)))
            return Frame(family, "tc", bytes(self._tc_family(family, flows4)))
        family = self.rng.choices(self._xdp_names, self._xdp_weights)[0]
        ingress = ""
        if self.fast_path and self.rng.random() < FAST_PATH_NO_FORWARDING_SHARE:
            ingress = fastpath.INGRESS_NO_FORWARDING
        if family in FAST_PATH6_FAMILIES:
            data = bytes(self.six.fast_path_family(family, [f for f in recent if f.v6]))
        elif family in IPV6_FAMILIES:
            data = bytes(self.six.xdp_family(family, [f for f in recent if f.v6]))
        elif family in FAST_PATH_FAMILIES:
            data = bytes(self._fast_path_family(family, [f for f in recent if not f.v6]))
        else:
            data = bytes(self._xdp_family(family, [f for f in recent if not f.v6]))
        if self.fast_path and len(data) >= 14 and self.rng.random() < FAST_PATH_OTHER_HOST_SHARE:
            data = self.rng.choice(NOT_OURS_MACS) + data[6:]
        return Frame(family, "xdp", data, ingress)

    def _fast_path_family(self, family: str, flows: Sequence[Flow]) -> bytearray:
        """Frames at the fast path's limits: a TTL about to expire (or not), a length at an MTU; from
        a client (fp_ttl, fp_length) or a backend (fp_reply)."""
        rng = self.rng
        if family == "fp_reply":
            if not flows:
                return self._tc_family("tc_unknown", flows)
            flow = rng.choice(flows[-64:])
            kw: dict[str, Any] = {"ttl": rng.choice((0, 1, 2, 64, 255))}
            if rng.random() < 0.5:
                mtu = rng.choice((fastpath.SMALL_MTU, fastpath.DEVICE_MTU[fastpath.INGRESS]))
                header = 20 + (20 if flow.proto == TCP else 8)
                kw["payload"] = rng.randbytes(mtu + rng.choice((-1, 0, 1)) - header)
            frame = self.reply(flow, **kw).data
            if rng.random() < 0.1:  # not addressed to the host (overheard, broadcast): not its to route
                frame[0:6] = rng.choice((OTHER_HOST_MAC, b"\xff" * 6, bytes.fromhex("01005e000001")))
            return frame
        if family == "fp_ttl":
            ttl = rng.choice((0, 1, 1, 2, 2, 255))
            if flows and rng.random() < 0.4:
                return self.followup(rng.choice(flows[-64:]), ttl=ttl).data
            return self.to_vip(ttl=ttl).data
        # fp_length: an IP length of an MTU of the lab, or one byte either side
        mtu = rng.choice((fastpath.SMALL_MTU, fastpath.DEVICE_MTU[fastpath.MANAGED]))
        ip_len = mtu + rng.choice((-1, 0, 1))
        if flows and rng.random() < 0.4:
            flow = rng.choice(flows[-64:])
            header = 20 + (20 if flow.proto == TCP else 8)
            return self.followup(flow, payload=rng.randbytes(ip_len - header)).data
        proto = rng.choice((TCP, UDP))
        header = 20 + (20 if proto == TCP else 8)
        return self.to_vip(proto, payload=rng.randbytes(ip_len - header)).data

    def _xdp_family(self, family: str, flows: Sequence[Flow]) -> bytearray:
        rng = self.rng
        tcp_flows = [f for f in flows[-64:] if f.proto == TCP]
        udp_flows = [f for f in flows[-64:] if f.proto == UDP]
        if family == "tcp_syn":
            return self.to_vip(TCP, flags=rng.choice((0x02, 0x02, 0x02, 0x03, 0x06, 0x0A, 0xC2))).data
        if family == "tcp_flags":
            return self.to_vip(TCP, flags=rng.randrange(256)).data
        if family == "tcp_followup":
            if not tcp_flows:
                return self.to_vip(TCP).data
            return self.followup(rng.choice(tcp_flows)).data
        if family == "udp_vip":
            return self.to_vip(UDP).data
        if family == "udp_followup":
            if not udp_flows:
                return self.to_vip(UDP).data
            return self.followup(rng.choice(udp_flows)).data
        if family == "cross_service":
            # the same client address:port on another TCP service: reverse entries may collide
            if not tcp_flows:
                return self.to_vip(TCP).data
            flow = rng.choice(tcp_flows)
            other = 81 if flow.vip_port == 80 else 80
            return self.l4_frame(flow.client_ip, VIP_B, TCP, flow.client_port, other, flags=0x02).data
        if family == "non_vip_addr":
            dst = rng.choice((addr("10.0.0.2"), addr("10.0.0.99"), rng.randbytes(4), addr(BACKENDS[0][0])))
            proto = rng.choice((TCP, UDP))
            dport = rng.choice((80, 53, 81, 5353, self.port()))
            return self.l4_frame(self.client_ip(), dst, proto, self.port(), dport).data
        if family == "non_vip_port":
            proto = rng.choice((TCP, UDP))
            dport = (
                rng.choice((53, 5353, 8080, 443, self.port())) if proto == TCP else rng.choice((80, 81, 123))
            )
            if (VIP_B, dport, proto) in SERVICE_BY_KEY:
                dport = 443
            return self.l4_frame(self.client_ip(), VIP_B, proto, self.port(), dport).data
        if family == "vlan":
            return self.any_valid_with(flows, vlans=self.vlans())
        if family == "qinq":
            return self.any_valid_with(flows, vlans=self.vlans() + self.vlans())
        if family == "ip_options":
            return self.any_valid_with(flows, ip_options=self.ip_options())
        if family == "tcp_options":
            words = rng.randrange(1, 11)
            return self.to_vip(TCP, tcp_options=rng.randbytes(words * 4)).data
        if family == "fragment":
            offset = rng.choice((0, rng.randrange(1, 8192)))
            mf = 0x2000 if offset == 0 or rng.random() < 0.5 else 0
            return self.to_vip(frag=offset | mf | rng.choice((0, 0x4000))).data
        if family == "df_reserved":
            return self.to_vip(frag=rng.choice((0x4000, 0x8000, 0xC000))).data
        if family == "icmp":
            body = bytes((8, 0, 0, 0)) + rng.randbytes(rng.randrange(4, 60))
            return self.l4_frame(self.client_ip(), VIP_B, ICMP, 0, 0, payload=icmp_fix(body)).data
        if family == "icmp_error":
            if flows and rng.random() < 0.6:
                return self.icmp_error_about(rng.choice(flows[-64:]))
            return self.icmp_error()
        if family == "arp":
            arp = bytes.fromhex("0001080006040001") + ETH_SRC + self.client_ip() + bytes(6) + VIP_B
            return bytearray(ethernet(0x0806, rng.choice(((), self.vlans()))) + arp)
        if family == "ipv6":
            return bytearray(ethernet(0x86DD) + bytes((0x60,)) + rng.randbytes(rng.randrange(39, 100)))
        if family == "other_ethertype":
            ethertype = rng.choice((0x0806, 0x86DD, 0x8847, 0x88CC, 0x0000, rng.randrange(65536)))
            return bytearray(ethernet(ethertype) + rng.randbytes(rng.randrange(0, 80)))
        if family == "other_ipproto":
            proto = rng.choice((0, 2, 4, 41, 47, 50, 132, 136, 255, rng.randrange(256)))
            return self.l4_frame(self.client_ip(), VIP_B, proto, 0, 0).data
        if family == "truncated":
            frame = self.any_valid(flows).data
            return frame[: rng.randrange(14, len(frame))]
        if family == "byte_flip":
            return mutations.flip(rng, self.any_valid(flows))
        if family == "bad_ihl":
            return mutations.bad_ihl(rng, self.any_valid(flows))
        if family == "bad_version":
            built = self.any_valid(flows)
            built.data[built.l3] = (rng.choice((0, 1, 5, 6, 7, 15)) << 4) | (built.data[built.l3] & 15)
            return built.data
        if family == "bad_tot_len":
            return mutations.bad_tot_len(rng, self.any_valid(flows))
        if family == "padded":
            # Ethernet padding after the IP packet: legal, the packet must still be served
            return self.any_valid(flows).data + bytearray(rng.randbytes(rng.randrange(1, 40)))
        if family == "tcp_bad_doff":
            return mutations.bad_doff(
                rng, self.to_vip(TCP, flags=rng.choice((0x02, 0x10)), vlans=rng.choice(((), self.vlans())))
            )
        if family == "udp_bad_len":
            return mutations.bad_udp_len(
                rng, self.to_vip(UDP, payload=self.rng.randbytes(self.rng.randrange(0, 40)))
            )
        if family == "random_bytes":
            frame = bytearray(rng.randbytes(rng.randrange(14, 120)))
            if rng.random() < 0.7:
                frame[12:14] = b"\x08\x00"
                if rng.random() < 0.5 and len(frame) > 14:
                    frame[14] = 0x45
            return frame
        if family == "scapy":
            if not self._pool:
                return self.to_vip().data
            frame = bytearray(rng.choice(self._pool))
            if rng.random() < 0.5:
                frame[rng.randrange(14, len(frame))] ^= rng.randrange(1, 256)
            return frame
        raise ValueError(f"unknown family {family}")

    def _tc_family(self, family: str, flows: Sequence[Flow]) -> bytearray:
        rng = self.rng
        recent = flows[-64:]
        if family == "tc_reply" and recent:
            kw: dict[str, Any] = {}
            if rng.random() < 0.15:
                kw["vlans"] = self.vlans()
            if rng.random() < 0.15:
                kw["ip_options"] = self.ip_options()
            return self.reply(rng.choice(recent), **kw).data
        if family == "tc_reply_mutated" and recent:
            built = self.reply(rng.choice(recent), vlans=rng.choice(((), self.vlans())))
            how = rng.randrange(6)
            if how == 0:
                return built.data[: rng.randrange(14, len(built.data))]
            if how == 1:
                return mutations.flip(rng, built)
            if how == 2:
                return mutations.bad_ihl(rng, built)
            if how == 3:
                return mutations.bad_tot_len(rng, built)
            if how == 4:
                frag = rng.choice((0x2000, rng.randrange(1, 8192), 0x4000, 0x8000))
                built.data[built.l3 + 6 : built.l3 + 8] = frag.to_bytes(2, "big")
                return built.data
            return built.data + bytearray(rng.randbytes(rng.randrange(1, 30)))
        if family == "tc_client_frame":
            return self._xdp_family(rng.choice(self._xdp4_names or list(XDP_FAMILIES)), flows)
        # tc_unknown (and replies before any flow exists): from a backend to a client with no entry
        ip, port = BACKENDS[rng.randrange(len(BACKENDS))]
        proto = rng.choice((TCP, UDP))
        return self.l4_frame(addr(ip), self.client_ip(), proto, port, self.port(), flags=0x12).data

    def any_valid_with(self, flows: Sequence[Flow], **kw: Any) -> bytearray:
        if flows and self.rng.random() < 0.3:
            return self.followup(self.rng.choice(flows[-64:]), **kw).data
        return self.to_vip(**kw).data

    # -- mutations -----------------------------------------------------------------------------
    def icmp_error_about(self, flow: Flow) -> bytearray:
        """An error a router on the client side sends to the VIP about a reply of a tracked flow
        (VIP:port -> client:port): the quote is 8 bytes of its L4 header or all of it."""
        rng = self.rng
        if flow.proto == TCP:
            l4 = tcp_segment(VIP_B, flow.client_ip, flow.vip_port, flow.client_port, 0x10, b"")
        else:
            l4 = udp_datagram(VIP_B, flow.client_ip, flow.vip_port, flow.client_port, rng.randbytes(4))
        quoted = ipv4_header(VIP_B, flow.client_ip, flow.proto, len(l4)) + l4[: rng.choice((8, len(l4)))]
        icmp_type, code = rng.choice(((3, 4), (3, 4), (3, 3), (3, 1), (11, 0)))
        body = icmp_fix(bytes((icmp_type, code, 0, 0)) + b"\x00\x00\x05\x00" + quoted)
        src = rng.choice((addr("10.0.9.1"), flow.client_ip))
        return self.l4_frame(src, VIP_B, ICMP, 0, 0, payload=body).data

    def icmp_error(self) -> bytearray:
        """Destination unreachable / time exceeded quoting a TCP header to or from the VIP."""
        rng = self.rng
        client = self.client_ip()
        quoted_to_vip = rng.random() < 0.5
        qsrc, qdst = (client, VIP_B) if quoted_to_vip else (VIP_B, client)
        sport, dport = (self.port(), 80) if quoted_to_vip else (80, self.port())
        quoted_tcp = tcp_segment(qsrc, qdst, sport, dport, 0x12, b"")
        quoted = ipv4_header(qsrc, qdst, TCP, len(quoted_tcp)) + quoted_tcp[:8]
        icmp_type, code = rng.choice(((3, 4), (3, 3), (3, 1), (11, 0), (12, 0)))
        body = icmp_fix(bytes((icmp_type, code, 0, 0)) + b"\x00\x00\x05\xdc" + quoted)
        src = rng.choice((addr("10.0.9.1"), client))
        return self.l4_frame(src, VIP_B, ICMP, 0, 0, payload=body).data
