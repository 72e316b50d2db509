# SPDX-License-Identifier: Apache-2.0
"""DNS backends: the resolver's logic with a fake resolve function (no network).

tests/e2e/test_dns_resolver.py drives the same resolver against a real dnsmasq.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import dns.exception
import dns.resolver
import pytest

from lbtui.control.dns import (
    AnswerRefused,
    DnsBackendResolver,
    Resolution,
    ResolveError,
    ResolveFn,
    describe_error,
    jittered_interval,
)
from lbtui.control.dns_screen import is_local_address, screen_answers

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
DNSMASQ = "/usr/sbin/dnsmasq"


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeDns:
    """A resolve function whose answer per name is set by the test (a tuple, or an exception to raise)."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.calls: list[str] = []
        self.types: list[str] = []
        self.called = asyncio.Event()

    async def __call__(self, hostname: str, rdtype: str = "A") -> tuple[str, ...]:
        self.calls.append(hostname)
        self.types.append(rdtype)
        self.called.set()
        answer = self.answers.get(hostname, dns.resolver.NXDOMAIN())
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def wait_calls(self, count: int) -> None:
        while len(self.calls) < count:
            self.called.clear()
            await asyncio.wait_for(self.called.wait(), 5.0)


Change = tuple[str, str, tuple[str, ...], tuple[str, ...]]


def make_resolver(
    fake: ResolveFn, changes: list[Change] | None = None, **kwargs: Any
) -> tuple[DnsBackendResolver, FakeClock]:
    clock = FakeClock()

    def on_change(proxy: str, hostname: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
        if changes is not None:
            changes.append((proxy, hostname, old, new))

    resolver = DnsBackendResolver(
        on_change=on_change, clock=clock, rng=random.Random(7), resolve_fn=fake, **kwargs
    )
    return resolver, clock


# ---------------------------------------------------------------- pure functions


def test_jitter_stays_within_ten_percent_and_spreads():
    rng = random.Random(1)
    waits = [jittered_interval(30.0, rng) for _ in range(2000)]
    assert all(27.0 <= w <= 33.0 for w in waits)
    assert min(waits) < 27.5 and max(waits) > 32.5  # uses the whole ±10 % band
    assert 29.7 < sum(waits) / len(waits) < 30.3  # centred on the interval
    assert len(set(waits)) == len(waits)  # no two waits alike: names drift apart


def test_jitter_has_a_floor():
    assert jittered_interval(0.0, random.Random(1)) > 0


def test_usable_addresses_filters_and_sorts_numerically():
    answers = [
        "10.0.0.10",
        "not-an-ip",
        "::1",
        "300.1.1.1",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "10.0.0.9",
        "10.0.0.10",
        "",
        5,
        None,
        "10.0.0.9 ",
    ]
    assert screen_answers(answers, 64).addresses == ("10.0.0.9", "10.0.0.10")
    assert screen_answers([], 64).addresses == ()


def test_a_lying_server_cannot_name_an_address_no_backend_can_have():
    """Wrong family, loopback, link-local, multicast, unspecified, broadcast, reserved, one of our
    VIPs, one of the host's addresses: each refused and said, never a backend."""
    answers = [
        "10.0.0.7",
        "2001:db8::1",
        "127.0.0.1",
        "127.3.4.5",
        "169.254.169.254",
        "239.1.1.1",
        "0.0.0.0",
        "255.255.255.255",
        "250.1.1.1",
        "10.0.0.1",
        "10.9.9.9",
        "x" * 5000,
    ]
    ours = {"10.0.0.1": "a VIP of this load balancer", "10.9.9.9": "an address of this host"}
    screened = screen_answers(answers, 64, lambda a: ours.get(str(a)))
    assert screened.addresses == ("10.0.0.7",)
    assert screened.rejected == (
        "'2001:db8::1' (not an IPv4 address)",
        "127.0.0.1 (loopback)",
        "127.3.4.5 (loopback)",
        "169.254.169.254 (link-local)",
        "239.1.1.1 (multicast)",
        "0.0.0.0 (unspecified)",
        "255.255.255.255 (broadcast)",
        "250.1.1.1 (reserved)",
        f"'{'x' * 40}' (not an IPv4 address)",  # the server's text, shown short
        "10.0.0.1 (a VIP of this load balancer)",  # the caller's reasons come last
        "10.9.9.9 (an address of this host)",
    )
    problems = screened.problems(64)
    assert problems.startswith("rejected '2001:db8::1' (not an IPv4 address), 127.0.0.1 (loopback)")
    assert problems.endswith("and 3 more") and len(problems) < 400


def test_a_huge_answer_is_capped_to_the_first_addresses_in_numeric_order():
    answers = [f"10.1.{i // 256}.{i % 256}" for i in reversed(range(1, 5001))]
    screened = screen_answers(answers, 64)
    assert screened.addresses == tuple(f"10.1.0.{i}" for i in range(1, 65))
    assert screened.over_cap == 5000 - 64
    assert screened.problems(64) == (
        "4936 usable addresses beyond the first 64 ignored (settings.dns.max_records)"
    )
    asked: list[str] = []  # the caller's check (a syscall each) stops once the cap is reached
    refuse_odd = lambda a: asked.append(str(a)) or ("odd" if int(a) % 2 else None)  # noqa: E731
    screened = screen_answers(answers, 64, refuse_odd)
    assert len(screened.addresses) == 64 and len(asked) == 128
    assert screened.over_cap == 5000 - 128


def test_the_host_s_own_addresses_are_found_by_the_kernel():
    import ipaddress

    assert is_local_address(ipaddress.IPv4Address("127.0.0.1"))
    assert not is_local_address(ipaddress.IPv4Address("192.0.2.77"))  # TEST-NET-1: never configured


def test_what_was_refused_is_announced_once_per_change_and_status_keeps_the_good_part():
    async def main() -> None:
        fake = FakeDns()
        warnings: list[tuple[str, str, str]] = []
        resolver = DnsBackendResolver(
            resolve_fn=fake, max_records=2, on_warning=lambda p, h, text: warnings.append((p, h, text))
        )
        fake.answers["api"] = ("10.0.0.3", "127.0.0.1", "10.0.0.1", "10.0.0.2")
        for _ in range(3):
            res = await resolver.resolve_now("web", "api")
            assert res is not None and res.addresses == ("10.0.0.1", "10.0.0.2")
        assert warnings == [
            (
                "web",
                "api",
                "rejected 127.0.0.1 (loopback); 1 usable addresses beyond the first 2 ignored "
                "(settings.dns.max_records)",
            )
        ]
        fake.answers["api"] = ("127.0.0.1",)  # nothing usable: a failure, the last good set stays
        assert await resolver.resolve_now("web", "api") is None
        assert resolver.addresses("web", "api") == ("10.0.0.1", "10.0.0.2")
        assert resolver.status()[0].last_error == "no usable IPv4 address in the answer"
        assert warnings[-1][2] == "rejected 127.0.0.1 (loopback)"
        fake.answers["api"] = ("10.0.0.1",)
        await resolver.resolve_now("web", "api")
        assert len(warnings) == 2  # a clean answer is not news

    asyncio.run(main())


def test_an_answer_the_callback_refuses_keeps_the_last_good_set():
    async def main() -> None:
        fake = FakeDns()

        def on_change(proxy: str, hostname: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
            if len(new) > 1:
                raise AnswerRefused("2 backends do not fit")

        resolver = DnsBackendResolver(on_change=on_change, resolve_fn=fake)
        fake.answers["api"] = ("10.0.0.1",)
        assert await resolver.resolve_now("web", "api", notify=True) is not None
        fake.answers["api"] = ("10.0.0.1", "10.0.0.2")
        assert await resolver.resolve_now("web", "api", notify=True) is None
        assert resolver.addresses("web", "api") == ("10.0.0.1",)
        status = resolver.status()[0]
        assert (status.last_error, status.consecutive_failures) == (
            "answer not applied: 2 backends do not fit",
            1,
        )

    asyncio.run(main())


def test_describe_error_is_short_and_says_what_happened():
    assert "NXDOMAIN" in describe_error(dns.resolver.NXDOMAIN(), 2.0)
    assert describe_error(dns.resolver.NoAnswer(), 2.0) == "no A records"
    assert describe_error(dns.exception.Timeout(), 1.5) == "timeout after 1.5s"
    assert describe_error(TimeoutError(), 2.0) == "timeout after 2s"
    assert describe_error(ValueError("bad label"), 2.0) == "ValueError: bad label"
    assert describe_error(ResolveError("no usable IPv4 address"), 2.0) == "no usable IPv4 address"


# ---------------------------------------------------------------- resolver with a fake resolve function


def test_resolve_now_gives_sorted_set_and_status():
    async def main() -> None:
        fake = FakeDns()
        fake.answers["api"] = ("10.0.0.3", "10.0.0.1", "10.0.0.2", "10.0.0.1")
        changes: list[Change] = []
        resolver, clock = make_resolver(fake, changes)
        result = await resolver.resolve_now("web", "api")
        assert result == Resolution("api", ("10.0.0.1", "10.0.0.2", "10.0.0.3"))
        assert resolver.addresses("web", "api") == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
        (status,) = resolver.status()
        assert (status.proxy, status.hostname) == ("web", "api")
        assert status.addresses == result.addresses
        assert status.last_success == clock.t
        assert status.last_error is None and status.consecutive_failures == 0
        assert changes == []  # the caller of resolve_now has the answer; no callback by default
        await resolver.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "failure, error_part",
    [
        (dns.resolver.NXDOMAIN(), "NXDOMAIN"),
        (dns.resolver.NoAnswer(), "no A records"),
        (dns.exception.Timeout(), "timeout"),
        (dns.resolver.NoNameservers(), "no server answered"),
        ((), "no usable IPv4 address"),  # an empty answer
        (("garbage", "::1", "0.0.0.0"), "no usable IPv4 address"),
        (RuntimeError("server sent nonsense"), "RuntimeError: server sent nonsense"),
    ],
)
def test_failure_keeps_last_good_set(failure: Any, error_part: str):
    async def main() -> None:
        fake = FakeDns()
        fake.answers["api"] = ("10.0.0.1", "10.0.0.2")
        changes: list[Change] = []
        resolver, clock = make_resolver(fake, changes)
        await resolver.resolve_now("web", "api", notify=True)
        good_at = clock.t
        fake.answers["api"] = failure
        for attempt in (1, 2, 3):
            clock.t += 10
            assert await resolver.resolve_now("web", "api", notify=True) is None
            (status,) = resolver.status()
            assert status.addresses == ("10.0.0.1", "10.0.0.2")
            assert status.consecutive_failures == attempt
            assert status.last_error is not None and error_part in status.last_error
            assert status.last_success == good_at
        assert resolver.addresses("web", "api") == ("10.0.0.1", "10.0.0.2")
        assert changes == [("web", "api", (), ("10.0.0.1", "10.0.0.2"))]  # never an empty set

        fake.answers["api"] = ("10.0.0.2", "10.0.0.4")  # recovery with a new set
        clock.t += 10
        assert await resolver.resolve_now("web", "api", notify=True) == Resolution(
            "api", ("10.0.0.2", "10.0.0.4")
        )
        (status,) = resolver.status()
        assert status.consecutive_failures == 0 and status.last_error is None
        assert status.last_success == clock.t
        assert changes[-1] == ("web", "api", ("10.0.0.1", "10.0.0.2"), ("10.0.0.2", "10.0.0.4"))
        await resolver.close()

    asyncio.run(main())


def test_failure_before_any_success_has_no_addresses():
    async def main() -> None:
        fake = FakeDns()  # every name: NXDOMAIN
        resolver, _ = make_resolver(fake)
        assert await resolver.resolve_now("web", "missing") is None
        (status,) = resolver.status()
        assert status.addresses == () and status.last_success is None
        assert status.consecutive_failures == 1 and "NXDOMAIN" in (status.last_error or "")
        assert resolver.addresses("web", "missing") == ()
        assert resolver.addresses("web", "never-asked") == ()
        await resolver.close()

    asyncio.run(main())


def test_hanging_resolve_function_becomes_a_timeout():
    async def main() -> None:
        async def hang(hostname: str, rdtype: str = "A") -> tuple[str, ...]:
            await asyncio.sleep(3600)
            return ()

        resolver = DnsBackendResolver(timeout_s=0.01, resolve_fn=hang)
        assert await resolver.resolve_now("web", "api") is None
        (status,) = resolver.status()
        assert status.consecutive_failures == 1 and "timeout" in (status.last_error or "")
        await resolver.close()

    asyncio.run(main())


class RecordingRandom(random.Random):
    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.uniform_calls: list[tuple[float, float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        value = super().uniform(a, b)
        self.uniform_calls.append((a, b, value))
        return value


def test_refresh_tasks_are_jittered_and_not_in_lockstep():
    async def main() -> None:
        fake = FakeDns()
        names = {("web", f"n{i}"): 0.05 for i in range(10)}
        for _, host in names:
            fake.answers[host] = ("10.0.0.1",)
        rng = RecordingRandom(3)
        resolver = DnsBackendResolver(rng=rng, resolve_fn=fake)
        loop = asyncio.get_running_loop()
        started = loop.time()
        resolver.set_names(names)
        await fake.wait_calls(10)
        # The first refresh comes after a jittered interval, not at once (some slack for clocks).
        assert loop.time() - started >= 0.05 * 0.9 - 0.005
        await resolver.close()
        assert len(rng.uniform_calls) >= 10
        assert all((a, b) == (0.9, 1.1) for a, b, _ in rng.uniform_calls)
        factors = [value for _, _, value in rng.uniform_calls]
        assert len(set(factors)) == len(factors)  # every name got its own wait

    asyncio.run(main())


def test_periodic_refresh_reports_changes_but_never_an_empty_set():
    async def main() -> None:
        changes: list[Change] = []
        script: list[Any] = [
            ("10.0.0.1",),
            ("10.0.0.1",),  # same: no change
            TimeoutError(),
            (),
            ("10.0.0.1", "10.0.0.2"),
            dns.resolver.NXDOMAIN(),
            ("10.0.0.2",),
        ]
        done = asyncio.Event()

        async def scripted(hostname: str, rdtype: str = "A") -> tuple[str, ...]:
            answer = script.pop(0) if script else ("10.0.0.2",)
            if not script:
                done.set()
            if isinstance(answer, BaseException):
                raise answer
            return answer

        resolver, _ = make_resolver(scripted, changes)
        resolver.set_names({("web", "api"): 0.01})
        await asyncio.wait_for(done.wait(), 5.0)
        await resolver.close()
        assert changes == [
            ("web", "api", (), ("10.0.0.1",)),
            ("web", "api", ("10.0.0.1",), ("10.0.0.1", "10.0.0.2")),
            ("web", "api", ("10.0.0.1", "10.0.0.2"), ("10.0.0.2",)),
        ]
        assert resolver.addresses("web", "api") == ("10.0.0.2",)

    asyncio.run(main())


def test_callback_errors_do_not_stop_the_refresh():
    async def main() -> None:
        fake = FakeDns()
        seen: list[tuple[str, ...]] = []

        def on_change(proxy: str, hostname: str, old: tuple[str, ...], new: tuple[str, ...]) -> None:
            seen.append(new)
            raise RuntimeError("callback bug")

        resolver = DnsBackendResolver(on_change=on_change, resolve_fn=fake)
        fake.answers["api"] = ("10.0.0.1",)
        resolver.set_names({("web", "api"): 0.01})
        await fake.wait_calls(1)
        fake.answers["api"] = ("10.0.0.2",)
        await fake.wait_calls(len(fake.calls) + 2)
        await resolver.close()
        assert seen[:2] == [("10.0.0.1",), ("10.0.0.2",)]

    asyncio.run(main())


def test_set_names_starts_stops_and_keeps_state():
    async def main() -> None:
        fake = FakeDns()
        fake.answers.update(a=("10.0.0.1",), b=("10.0.0.2",))
        resolver, _ = make_resolver(fake)
        resolver.set_names({("web", "a"): 60.0, ("web", "b"): 60.0})
        await resolver.resolve_now("web", "a")
        await resolver.resolve_now("web", "b")
        assert [(s.proxy, s.hostname) for s in resolver.status()] == [("web", "a"), ("web", "b")]

        resolver.set_names({("web", "a"): 30.0, ("api", "c"): 60.0})  # a: new interval, b: gone
        assert [(s.proxy, s.hostname) for s in resolver.status()] == [("api", "c"), ("web", "a")]
        assert resolver.addresses("web", "a") == ("10.0.0.1",)  # kept across the interval change
        assert resolver.addresses("web", "b") == ()
        (c_status,) = [s for s in resolver.status() if s.hostname == "c"]
        assert c_status.addresses == () and c_status.last_error is None  # not resolved yet
        assert sorted(task.get_name() for task in resolver._tasks.values()) == ["dns api c", "dns web a"]

        await resolver.close()
        assert resolver._tasks == {}
        assert all(task.done() for task in asyncio.all_tasks() if task.get_name().startswith("dns "))

    asyncio.run(main())


def test_a_stop_that_meets_an_answer_still_ends_the_refresh() -> None:
    """The answer completes and the name is dropped in the same loop step: the refresh task must still
    end (Python 3.11's asyncio.wait_for returned the answer and lost the cancel; lbtui/deadline.py)."""

    async def main() -> None:
        asked, let_answer = asyncio.Event(), asyncio.Event()

        async def answer_when_let(hostname: str, rdtype: str = "A") -> tuple[str, ...]:
            asked.set()
            await let_answer.wait()
            return ("10.0.0.1",)

        resolver, _ = make_resolver(answer_when_let)
        resolver.set_names({("web", "api"): 0.001})
        await asked.wait()
        let_answer.set()  # the answer's task runs first in the next step...
        resolver.set_names({})  # ...and the refresh's cancel is delivered right after it
        async with asyncio.timeout(5):
            await resolver.close()

    asyncio.run(main())


def test_missing_system_resolver_config_is_a_failure_status(monkeypatch: pytest.MonkeyPatch):
    def no_config(*args: Any, **kwargs: Any) -> Any:
        raise dns.resolver.NoResolverConfiguration("no /etc/resolv.conf")

    async def main() -> None:
        resolver = DnsBackendResolver(timeout_s=0.5)
        monkeypatch.setattr(resolver, "_make_resolver", no_config)
        assert await resolver.resolve_now("web", "api.example") is None
        (status,) = resolver.status()
        assert status.consecutive_failures == 1 and status.last_error
        await resolver.close()

    asyncio.run(main())


def test_configured_nameservers_are_used_exclusively():
    resolver = DnsBackendResolver(nameservers=["10.9.8.7", "10.9.8.6"], timeout_s=0.7)
    made = resolver._make_resolver()
    assert made.nameservers == ["10.9.8.7", "10.9.8.6"]
    assert made.port == 53
    assert made.lifetime == 0.7
