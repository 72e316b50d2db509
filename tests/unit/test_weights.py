# SPDX-License-Identifier: Apache-2.0
from lbtui.control.weights import BackendState, compose, effective_weight


def up(key: str, weight: int, **kw) -> BackendState:
    return BackendState(key=key, configured=weight, health=1.0, drained=False, circuit=1.0, **kw)


def test_all_healthy_keeps_configured_weights():
    result = compose([up("a", 3), up("b", 1)])
    assert result.weights == {"a": 3, "b": 1}
    assert not result.panic
    assert result.reasons == {"a": "ok", "b": "ok"}


def test_health_down_is_zero():
    result = compose([BackendState("a", 3, 0.0, False, 1.0), up("b", 1)])
    assert result.weights == {"a": 0, "b": 1}
    assert result.reasons["a"] == "health down"
    assert not result.panic


def test_draining_is_zero():
    result = compose([BackendState("a", 3, 1.0, True, 1.0), up("b", 1)])
    assert result.weights["a"] == 0
    assert result.reasons["a"] == "draining"


def test_circuit_open_and_half_open():
    result = compose([BackendState("a", 10, 1.0, False, 0.0), BackendState("b", 100, 1.0, False, 0.05)])
    assert result.weights == {"a": 0, "b": 5}
    assert result.reasons == {"a": "circuit open", "b": "circuit half-open"}


def test_floor_of_one_keeps_a_trickle():
    # 1 x 0.05 = 0.05 would round to 0: a half-open backend must still see some traffic.
    assert effective_weight(BackendState("a", 1, 1.0, False, 0.05)) == 1
    assert effective_weight(BackendState("a", 3, 0.1, False, 1.0)) == 1


def test_slow_start_ramp():
    result = compose([BackendState("a", 100, 0.4, False, 1.0), up("b", 100)])
    assert result.weights["a"] == 40
    assert result.reasons["a"] == "slow start 40%"


def test_algorithm_factor():
    result = compose([up("a", 100, algorithm=0.25), up("b", 100)])
    assert result.weights["a"] == 25
    assert "least connections 25%" in result.reasons["a"]


def test_factors_multiply_and_round():
    state = BackendState("a", 7, 0.5, False, 0.5, algorithm=0.5)
    assert effective_weight(state) == round(7 * 0.125)


def test_several_reasons_joined():
    result = compose([BackendState("a", 3, 0.0, False, 0.0), up("b", 1)])
    assert result.reasons["a"] == "health down, circuit open"


def test_panic_uses_configured_weights_of_non_drained():
    group = [
        BackendState("a", 3, 0.0, False, 1.0),
        BackendState("b", 2, 1.0, False, 0.0),
        BackendState("c", 5, 1.0, True, 1.0),
    ]
    result = compose(group)
    assert result.panic
    assert result.weights == {"a": 3, "b": 2, "c": 0}
    assert result.reasons["a"].startswith("panic: all backends down")
    assert result.reasons["c"] == "draining"


def test_all_drained_is_not_panic():
    group = [BackendState("a", 3, 1.0, True, 1.0), BackendState("b", 1, 0.0, True, 1.0)]
    result = compose(group)
    assert not result.panic
    assert result.weights == {"a": 0, "b": 0}


def test_all_weight_zero_by_operator_is_not_panic():
    result = compose([up("a", 0), up("b", 0)])
    assert not result.panic
    assert result.weights == {"a": 0, "b": 0}
    assert result.reasons["a"] == "weight 0"


def test_one_trickle_prevents_panic():
    group = [BackendState("a", 3, 0.0, False, 1.0), BackendState("b", 1, 1.0, False, 0.05)]
    result = compose(group)
    assert not result.panic
    assert result.weights == {"a": 0, "b": 1}


def test_empty_group():
    result = compose([])
    assert result.weights == {} and not result.panic and result.reasons == {}
