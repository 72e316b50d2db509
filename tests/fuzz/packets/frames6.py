# SPDX-License-Identifier: Apache-2.0
"""Seeded IPv6 frames (frames.py's families for the IPv6 half of the data path, lb_ipv6.h).

Traffic to the IPv6 VIP and replies from the IPv6 backends, TCP and UDP, behind chains of hop-by-hop,
routing and destination options headers in any order and length (chains longer than lb_ipv6.h walks
too: those must pass untouched and be counted), first and later fragments (of replies too: a first
fragment, then later ones with its identification), truncation anywhere, neighbour discovery, echo,
ICMPv6 errors (about tracked flows in both directions, which lb_icmp6.h translates, with quotes of
every length, of first and later fragments, and broken ones), non-VIP traffic and broken headers.
`Frames6` borrows its generator's random.Random and value helpers, so one seed still determines
every byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tests.fuzz.packets import fastpath
from tests.fuzz.packets.topology import BACKENDS, ROUTE6_CIDR, SERVICE_BY_KEY, SERVICES, VIP6_B
from tests.fuzz.packets.wire import (
    DSTOPTS,
    ETH_IPV6,
    FRAGMENT6,
    HOPOPTS,
    ICMP6,
    NO_NEXT,
    ROUTING,
    TCP,
    UDP,
    Built,
    addr,
    assemble,
    ethernet,
    fix_checksums6,
    icmp6_fix,
    ipv6_ext,
    ipv6_header,
    put16,
    tcp_segment,
    udp_datagram,
)

if TYPE_CHECKING:
    from tests.fuzz.packets.frames import Flow, FrameGenerator

Ext = tuple[int, bytes]  # (next-header kind, body after its two first bytes)

XDP6_FAMILIES: dict[str, int] = {
    "v6_tcp_syn": 8,
    "v6_tcp_flags": 3,
    "v6_tcp_followup": 8,
    "v6_udp_vip": 6,
    "v6_udp_followup": 3,
    "v6_cross_service": 1,
    "v6_ext_headers": 6,
    "v6_ext_too_many": 2,
    "v6_fragment": 4,
    "v6_truncated": 8,
    "v6_nd": 2,
    "v6_echo": 1,
    "v6_other_next": 1,
    "v6_icmp_error": 2,
    "v6_non_vip_addr": 2,
    "v6_non_vip_port": 2,
    "v6_vlan": 2,
    "v6_byte_flip": 5,
    "v6_bad_version": 1,
    "v6_bad_payload_len": 3,
    "v6_tcp_bad_doff": 1,
    "v6_udp_bad_len": 2,
    "v6_udp_no_checksum": 1,
}
# with the fast path compiled in (fastpath6.py): hop limits about to expire, lengths at the lab's MTUs
FAST_PATH6_FAMILIES: dict[str, int] = {"fp6_hop_limit": 3, "fp6_length": 3}
FAST_PATH6_TC_FAMILIES: dict[str, int] = {"fp6_reply": 4}  # replies with those hop limits and lengths
TC6_FAMILIES: dict[str, int] = {
    "tc6_reply": 8,
    "tc6_reply_mutated": 5,
    "tc6_unknown": 2,
    "tc6_icmp_error": 2,
    "tc6_reply_fragments": 3,
}
EXT_KINDS = (HOPOPTS, ROUTING, DSTOPTS)
EXT_MAX = 4  # lb_ipv6.h LB_V6_EXT_MAX
OTHER_HOST_MAC6 = bytes.fromhex("020000000099")  # a unicast MAC no lab interface has
ND_TYPES = (133, 134, 135, 136, 137)  # router/neighbour solicitation and advertisement, redirect
ICMP6_ERRORS = ((2, 0), (2, 0), (1, 4), (1, 0), (3, 0), (4, 0))  # packet too big first


class Frames6:
    """IPv6 frames for a FrameGenerator (its rng, ports, payloads, VLAN tags, sequence numbers)."""

    def __init__(self, gen: FrameGenerator) -> None:
        self.gen = gen
        self.rng = gen.rng
        self.first_fragments: list[tuple[Flow, int]] = []  # replies sent as first fragments, their ids

    # -- values --------------------------------------------------------------------------------

    def client_ip(self) -> bytes:
        rng = self.rng
        r = rng.random()
        if r < 0.4:
            return addr("fd00:fe::")[:6] + bytes(2) + rng.randbytes(8)
        if r < 0.6:  # the source route's clients
            return addr(ROUTE6_CIDR.split("/")[0])[:4] + rng.randbytes(12)
        if r < 0.75:  # a few hosts of one /64
            return addr("fd00:fe:0:1::")[:8] + bytes(7) + bytes((rng.randrange(1, 8),))
        return rng.randbytes(16)

    def ext_chain(self, count: int) -> list[Ext]:
        """`count` hop-by-hop, routing and destination options headers in any order, 8 to 48 bytes."""
        out = []
        for _ in range(count):
            kind = self.rng.choice(EXT_KINDS)
            units = self.rng.choice((1, 1, 1, 2, 3, self.rng.randrange(1, 7)))
            body = self.rng.randbytes(units * 8 - 2) if self.rng.random() < 0.5 else bytes(units * 8 - 2)
            out.append((kind, body))
        return out

    def fragment_header(self, first: bool) -> Ext:
        offset = 0 if first else self.rng.randrange(1, 8192)
        more = 1 if first or self.rng.random() < 0.5 else 0
        return FRAGMENT6, (offset << 3 | more).to_bytes(2, "big") + self.rng.randbytes(4)

    # -- frames --------------------------------------------------------------------------------

    def l4_frame(self, src: bytes, dst: bytes, proto: int, sport: int, dport: int, **kw: Any) -> Built:
        """FrameGenerator.l4_frame with IPv6 addresses."""
        return self.gen.l4_frame(src, dst, proto, sport, dport, **kw)

    def packet(
        self,
        src: bytes,
        dst: bytes,
        proto: int,
        l4: bytes | bytearray,
        *,
        ext: Sequence[Ext] = (),
        vlans: Sequence[tuple[int, int]] = (),
        hop_limit: int = 64,
    ) -> Built:
        """`l4` (of next header `proto`) behind the fixed header and the extension headers `ext`."""
        chain, nh = b"", proto
        for kind, ext_body in reversed(ext):
            chain = ipv6_ext(kind, nh, ext_body) + chain
            nh = kind
        flow = self.rng.randrange(1 << 20)
        ip = ipv6_header(src, dst, nh, len(chain) + len(l4), hop_limit=hop_limit, flow=flow) + chain
        return assemble(ethernet(ETH_IPV6, vlans), ip, l4, proto)

    def to_vip(self, proto: int | None = None, **kw: Any) -> Built:
        services = [s for s in SERVICES if s.vip == VIP6_B and (proto is None or s.proto == proto)]
        svc = self.rng.choice(services)
        if svc.proto == TCP and "flags" not in kw:
            kw["flags"] = 0x02
        return self.l4_frame(self.client_ip(), VIP6_B, svc.proto, self.gen.port(), svc.port, **kw)

    def any_valid(self, flows: Sequence[Flow], **kw: Any) -> Built:
        r = self.rng.random()
        if r < 0.3 and flows:
            return self.gen.followup(self.rng.choice(flows), **kw)
        if r < 0.45:
            return self.to_vip(TCP, flags=self.rng.randrange(256), **kw)
        return self.to_vip(**kw)

    def icmp(self, src: bytes, dst: bytes, body: bytes, **kw: Any) -> Built:
        return self.l4_frame(src, dst, ICMP6, 0, 0, payload=icmp6_fix(src, dst, body), **kw)

    def icmp_error_about(self, flow: Flow | None) -> bytearray:
        """An ICMPv6 error quoting a reply of `flow` (VIP:port -> client:port; None: a made-up one),
        from a router on the client's side or from the client."""
        rng = self.rng
        client = flow.client_ip if flow else self.client_ip()
        vport, cport = (flow.vip_port, flow.client_port) if flow else (80, self.gen.port())
        proto = flow.proto if flow else rng.choice((TCP, UDP))
        quoted = self.quote(VIP6_B, client, proto, vport, cport)
        return self.error(rng.choice((addr("fd00:f9::1"), client)), VIP6_B, quoted)

    def icmp_error_from_backend_side(self, flow: Flow) -> bytearray:
        """An ICMPv6 error to a client about its packet to a backend (client:port -> backend:port),
        from the backend or a router on its side."""
        quoted = self.quote(flow.client_ip, flow.backend_ip, flow.proto, flow.client_port, flow.backend_port)
        return self.error(self.rng.choice((flow.backend_ip, addr("fd00:fb::fe"))), flow.client_ip, quoted)

    def quote(self, src: bytes, dst: bytes, proto: int, sport: int, dport: int) -> bytes:
        """The quoted packet of an error: its IPv6 header, sometimes a fragment header (mostly of a
        first fragment) or another extension header, and 8 bytes of its TCP/UDP header, all of the
        segment, or a cut anywhere; now and then from another source than the error goes to."""
        rng = self.rng
        if rng.random() < 0.05:
            src = rng.choice((self.client_ip(), VIP6_B, dst))
        if proto == TCP:
            l4 = tcp_segment(src, dst, sport, dport, 0x10, rng.randbytes(rng.choice((0, 0, 12, 200))))
        else:
            l4 = udp_datagram(
                src, dst, sport, dport, rng.randbytes(rng.randrange(64)), zero_checksum=rng.random() < 0.1
            )
        r, ext = rng.random(), b""
        if r < 0.15:
            offset = 0 if rng.random() < 0.8 else rng.randrange(1, 8192)
            ext = ipv6_ext(FRAGMENT6, proto, (offset << 3 | 1).to_bytes(2, "big") + rng.randbytes(4))
        elif r < 0.2:
            ext = ipv6_ext(DSTOPTS, proto, bytes(6))
        nh = (FRAGMENT6 if r < 0.15 else DSTOPTS) if ext else proto
        cut = rng.choice((8, 8, len(l4), len(l4), rng.randrange(len(l4) + 1)))
        return bytes(ipv6_header(src, dst, nh, len(ext) + len(l4)) + ext + l4[:cut])

    def error(self, src: bytes, dst: bytes, quoted: bytes) -> bytearray:
        """An ICMPv6 error (mostly Packet Too Big, destination unreachable, time exceeded; sometimes
        parameter problem) with `quoted`, sometimes behind extension headers or broken after its
        checksum was computed: a flipped byte, a payload length that lies, a cut."""
        rng = self.rng
        icmp_type, code = rng.choice(ICMP6_ERRORS)
        extra = (rng.choice((1280, 1400, 1500))).to_bytes(4, "big") if icmp_type == 2 else bytes(4)
        ext = self.ext_chain(1) if rng.random() < 0.1 else []
        built = self.icmp(src, dst, bytes((icmp_type, code, 0, 0)) + extra + quoted, ext=ext)
        r = rng.random()
        if r < 0.05:
            built.data[rng.randrange(built.l4, len(built.data))] ^= rng.randrange(1, 256)
        elif r < 0.1:
            plen = int.from_bytes(built.data[built.l3 + 4 : built.l3 + 6], "big")
            put16(built.data, built.l3 + 4, max(0, plen - rng.randrange(1, 60)))
        elif r < 0.13:
            return built.data[: rng.randrange(built.l4, len(built.data))]
        return built.data

    def reply_fragment(self, flows: Sequence[Flow]) -> bytearray:
        """A fragment of a backend's reply: a first one (the ports; mostly with more to follow; now and
        then cut short), or a later one with the identification of a first one sent before (sometimes
        another's)."""
        rng = self.rng
        if self.first_fragments and rng.random() < 0.55:
            flow, ident = rng.choice(self.first_fragments[-4:])
            if rng.random() < 0.1:
                ident ^= 1 << rng.randrange(32)
            return self.later_fragment(flow, ident)
        flow = rng.choice(flows)
        ident = rng.randrange(2**32)
        if rng.random() < 0.1:
            return self.later_fragment(flow, ident)
        more = 1 if rng.random() < 0.85 else 0
        header = (FRAGMENT6, more.to_bytes(2, "big") + ident.to_bytes(4, "big"))
        self.first_fragments = [*self.first_fragments[-63:], (flow, ident)]
        ext = self.ext_chain(rng.choice((0, 0, 0, 1)))
        frame = self.gen.reply(flow, ext=[*ext, header], udp_zero=False).data
        return frame[: rng.randrange(54, len(frame))] if rng.random() < 0.05 else frame

    def later_fragment(self, flow: Flow, ident: int) -> bytearray:
        offset = self.rng.randrange(1, 8192)
        more = self.rng.randrange(2)
        header = (FRAGMENT6, (offset << 3 | more).to_bytes(2, "big") + ident.to_bytes(4, "big"))
        data = self.rng.randbytes(self.rng.randrange(8, 200))
        return self.packet(flow.backend_ip, flow.client_ip, flow.proto, data, ext=[header]).data

    def nd(self) -> bytearray:
        """Neighbour discovery: solicitations and advertisements for the VIP, router messages."""
        rng = self.rng
        icmp_type = rng.choice(ND_TYPES)
        target = rng.choice((VIP6_B, self.client_ip()))
        body = bytes((icmp_type, 0, 0, 0)) + bytes(4)
        if icmp_type in (135, 136, 137):
            body += target
        if rng.random() < 0.7:  # a link-layer address option
            body += bytes((1 if icmp_type != 136 else 2, 1)) + rng.randbytes(6)
        src = rng.choice((addr("fe80::1"), addr("::"), self.client_ip()))
        dst = rng.choice((addr("ff02::1:ff00:1"), addr("ff02::1"), addr("ff02::2"), VIP6_B))
        return self.icmp(src, dst, body, vlans=rng.choice(((), self.gen.vlans()))).data

    # -- families ------------------------------------------------------------------------------

    def xdp_family(self, family: str, flows: Sequence[Flow]) -> bytearray:
        rng, gen = self.rng, self.gen
        tcp_flows = [f for f in flows[-64:] if f.proto == TCP]
        udp_flows = [f for f in flows[-64:] if f.proto == UDP]
        if family == "v6_tcp_syn":
            return self.to_vip(TCP, flags=rng.choice((0x02, 0x02, 0x02, 0x03, 0x06, 0x0A, 0xC2))).data
        if family == "v6_tcp_flags":
            return self.to_vip(TCP, flags=rng.randrange(256)).data
        if family == "v6_tcp_followup":
            return gen.followup(rng.choice(tcp_flows)).data if tcp_flows else self.to_vip(TCP).data
        if family == "v6_udp_vip":
            return self.to_vip(UDP).data
        if family == "v6_udp_followup":
            return gen.followup(rng.choice(udp_flows)).data if udp_flows else self.to_vip(UDP).data
        if family == "v6_cross_service":
            if not tcp_flows:
                return self.to_vip(TCP).data
            flow = rng.choice(tcp_flows)
            other = 81 if flow.vip_port == 80 else 80
            return self.l4_frame(flow.client_ip, VIP6_B, TCP, flow.client_port, other, payload=b"").data
        if family == "v6_ext_headers":
            return self.any_valid(flows, ext=self.ext_chain(rng.randrange(1, EXT_MAX + 1))).data
        if family == "v6_ext_too_many":
            return self.any_valid(flows, ext=self.ext_chain(rng.randrange(EXT_MAX + 1, EXT_MAX + 4))).data
        if family == "v6_fragment":
            ext = self.ext_chain(rng.choice((0, 0, 1, 2, rng.randrange(0, EXT_MAX + 2))))
            ext.insert(rng.randrange(len(ext) + 1), self.fragment_header(rng.random() < 0.5))
            return self.any_valid(flows, ext=ext).data
        if family == "v6_truncated":
            ext = self.ext_chain(rng.choice((0, 0, 1, rng.randrange(1, EXT_MAX + 2))))
            frame = self.any_valid(flows, ext=ext, vlans=rng.choice(((), (), gen.vlans()))).data
            return frame[: rng.randrange(14, len(frame))]
        if family == "v6_nd":
            return self.nd()
        if family == "v6_echo":
            body = bytes((128, 0, 0, 0)) + rng.randbytes(rng.randrange(4, 60))
            return self.icmp(self.client_ip(), VIP6_B, body).data
        if family == "v6_other_next":  # no next header, ESP, AH, SCTP, IPv6-in-IPv6, ...
            proto = rng.choice((NO_NEXT, 50, 51, 132, 41, 255, rng.randrange(256)))
            if proto in (TCP, UDP, *EXT_KINDS, FRAGMENT6):
                proto = NO_NEXT
            return self.l4_frame(self.client_ip(), VIP6_B, proto, 0, 0).data
        if family == "v6_icmp_error":
            return self.icmp_error_about(rng.choice(flows[-64:]) if flows and rng.random() < 0.7 else None)
        if family == "v6_non_vip_addr":
            dst = rng.choice((addr("fd00:fa::2"), rng.randbytes(16), addr(BACKENDS[4][0]), addr("ff02::1")))
            proto = rng.choice((TCP, UDP))
            dport = rng.choice((80, 53, 81, 5353, gen.port()))
            return self.l4_frame(self.client_ip(), dst, proto, gen.port(), dport).data
        if family == "v6_non_vip_port":
            proto = rng.choice((TCP, UDP))
            dport = rng.choice((53, 5353, 443, gen.port())) if proto == TCP else rng.choice((80, 81, 123))
            if (VIP6_B, dport, proto) in SERVICE_BY_KEY:
                dport = 443
            return self.l4_frame(self.client_ip(), VIP6_B, proto, gen.port(), dport).data
        if family == "v6_vlan":
            tags = gen.vlans() + (gen.vlans() if rng.random() < 0.2 else [])
            return self.any_valid(flows, vlans=tags).data
        if family == "v6_byte_flip":
            return self.flip(self.any_valid(flows, ext=self.ext_chain(rng.choice((0, 0, 1, 2)))))
        if family == "v6_bad_version":
            built = self.any_valid(flows)
            built.data[built.l3] = (rng.choice((0, 4, 5, 7, 15)) << 4) | (built.data[built.l3] & 15)
            return built.data
        if family == "v6_bad_payload_len":
            return self.bad_payload_len(self.any_valid(flows, ext=self.ext_chain(rng.choice((0, 1)))))
        if family == "v6_tcp_bad_doff":
            built = self.to_vip(TCP, flags=rng.choice((0x02, 0x10)))
            built.data[built.l4 + 12] = (rng.choice((0, 1, 4, rng.randrange(5, 16), 15)) << 4) | 0
            return self.maybe_fix(built)
        if family == "v6_udp_bad_len":
            built = self.to_vip(UDP, payload=rng.randbytes(rng.randrange(0, 40)), udp_zero=False)
            ulen = int.from_bytes(built.data[built.l4 + 4 : built.l4 + 6], "big")
            value = rng.choice(
                (0, 7, 8, ulen - 1, ulen + 1, ulen + rng.randrange(1, 100), rng.randrange(65536))
            )
            put16(built.data, built.l4 + 4, max(0, min(value, 65535)))
            return self.maybe_fix(built)
        if family == "v6_udp_no_checksum":  # mandatory in IPv6: malformed, passed for the kernel to drop
            if udp_flows and rng.random() < 0.5:
                return gen.followup(rng.choice(udp_flows), udp_zero=True).data
            return self.to_vip(UDP, udp_zero=True).data
        raise ValueError(f"unknown family {family}")

    def tc_family(self, family: str, flows: Sequence[Flow]) -> bytearray:
        rng, gen = self.rng, self.gen
        recent = flows[-64:]
        if family == "tc6_reply" and recent:
            kw: dict[str, Any] = {}
            if rng.random() < 0.15:
                kw["vlans"] = gen.vlans()
            if rng.random() < 0.2:
                kw["ext"] = self.ext_chain(rng.randrange(1, EXT_MAX + 1))
            return gen.reply(rng.choice(recent), **kw).data
        if family == "tc6_reply_mutated" and recent:
            flow = rng.choice(recent)
            how = rng.randrange(6)
            if how == 0:
                frame = gen.reply(flow, ext=self.ext_chain(rng.choice((0, 1)))).data
                return frame[: rng.randrange(14, len(frame))]
            if how == 1:
                return self.flip(gen.reply(flow))
            if how == 2:
                return self.bad_payload_len(gen.reply(flow))
            if how == 3:  # a fragment of a reply, any identification
                ext = [self.fragment_header(rng.random() < 0.5)]
                return gen.reply(flow, ext=self.ext_chain(rng.choice((0, 1))) + ext).data
            if how == 4:
                return gen.reply(flow, ext=self.ext_chain(rng.randrange(EXT_MAX + 1, EXT_MAX + 3))).data
            return gen.reply(flow).data + bytearray(rng.randbytes(rng.randrange(1, 30)))
        if family == "tc6_icmp_error" and recent:
            return self.icmp_error_from_backend_side(rng.choice(recent))
        if family == "tc6_reply_fragments" and recent:
            return self.reply_fragment(recent)
        # tc6_unknown (and the others before any flow exists): from a backend, no entry
        ip, port = BACKENDS[rng.randrange(4, 8)]
        proto = rng.choice((TCP, UDP))
        return self.l4_frame(addr(ip), self.client_ip(), proto, port, gen.port(), flags=0x12).data

    def fast_path_family(self, family: str, flows: Sequence[Flow]) -> bytearray:
        """Frames at the IPv6 fast path's limits: a hop limit about to expire (or not), a length at an
        MTU of the lab; from a client (fp6_hop_limit, fp6_length) or a backend (fp6_reply)."""
        rng, gen = self.rng, self.gen
        recent = flows[-64:]
        if family == "fp6_reply":
            if not recent:
                return self.tc_family("tc6_unknown", recent)
            flow = rng.choice(recent)
            kw: dict[str, Any] = {"ttl": rng.choice((0, 1, 2, 64, 255))}
            if rng.random() < 0.5:  # the client routes' MTUs (fastpath6.py)
                mtu = rng.choice((fastpath.SMALL_MTU, fastpath.DEVICE_MTU[fastpath.INGRESS]))
                kw["payload"] = rng.randbytes(
                    mtu + rng.choice((-1, 0, 1)) - 40 - (20 if flow.proto == TCP else 8)
                )
            frame = gen.reply(flow, **kw).data
            if rng.random() < 0.1:  # not addressed to the host: not its to route
                frame[0:6] = rng.choice((OTHER_HOST_MAC6, b"\xff" * 6, bytes.fromhex("333300000001")))
            return frame
        if family == "fp6_hop_limit":
            ttl = rng.choice((0, 1, 1, 2, 2, 255))
            if recent and rng.random() < 0.4:
                return gen.followup(rng.choice(recent), ttl=ttl).data
            return self.to_vip(ttl=ttl).data
        # fp6_length: an IPv6 length (40 + payload length) of an MTU of the lab, or one byte either side
        ip_len = rng.choice((fastpath.SMALL_MTU, fastpath.DEVICE_MTU[fastpath.MANAGED])) + rng.choice(
            (-1, 0, 1)
        )
        if recent and rng.random() < 0.4:
            flow = rng.choice(recent)
            return gen.followup(
                flow, payload=rng.randbytes(ip_len - 40 - (20 if flow.proto == TCP else 8))
            ).data
        proto = rng.choice((TCP, UDP))
        return self.to_vip(proto, payload=rng.randbytes(ip_len - 40 - (20 if proto == TCP else 8))).data

    # -- mutations -----------------------------------------------------------------------------

    def maybe_fix(self, built: Built) -> bytearray:
        """Half of the mutated frames get an L4 checksum that fits their new header fields."""
        if self.rng.random() < 0.5:
            fix_checksums6(built.data, built.l3)
        return built.data

    def flip(self, built: Built) -> bytearray:
        end = min(len(built.data), built.l4 + 20)
        for _ in range(self.rng.randrange(1, 5)):
            built.data[self.rng.randrange(0, end)] ^= self.rng.randrange(1, 256)
        return self.maybe_fix(built)

    def bad_payload_len(self, built: Built) -> bytearray:
        plen = int.from_bytes(built.data[built.l3 + 4 : built.l3 + 6], "big")
        avail = len(built.data) - built.l3 - 40
        value = self.rng.choice(
            (
                0,
                plen - 1,
                plen + 1,
                built.l4 - built.l3 - 40,
                avail + self.rng.randrange(1, 100),
                self.rng.randrange(65536),
            )
        )
        put16(built.data, built.l3 + 4, max(0, min(value, 65535)))
        return self.maybe_fix(built)


__all__ = ["FAST_PATH6_FAMILIES", "FAST_PATH6_TC_FAMILIES", "TC6_FAMILIES", "XDP6_FAMILIES", "Frames6"]
