"""Reward shaping: each term by hand, the differential ratios against a finite-difference reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from phoenix_rl.config import RewardConfig
from phoenix_rl.env.rewards import RewardShaper, differential_downside_ratio, differential_sharpe


def test_default_config_returns_plain_pnl_exactly():
    rng = np.random.default_rng(0)
    shaper = RewardShaper()
    for _ in range(500):
        pnl = float(rng.normal(0, 10))
        closed = float(rng.normal()) if rng.random() < 0.2 else None
        position = float(rng.choice([-1, 0, 1]))
        assert shaper.step(pnl, closed, position, int(rng.integers(0, 1000))) == pnl


def test_win_bonus_and_loss_penalty_hand():
    shaper = RewardShaper(RewardConfig(win_bonus=2.0, loss_penalty=3.0))
    assert shaper.step(1.0, 5.0, 0.0, 0) == 3.0  # 1 + 2
    assert shaper.step(-1.0, -4.0, 0.0, 0) == -4.0  # -1 - 3
    assert shaper.step(0.5, 0.0, 0.0, 0) == 0.5  # a flat trade is neither
    assert shaper.step(0.5, None, 1.0, 7) == 0.5  # no trade closed


def test_hold_penalty_hand():
    shaper = RewardShaper(RewardConfig(hold_penalty=0.5, hold_bars=3))
    assert shaper.step(1.0, None, 1.0, 3) == 1.0  # at the limit: no penalty
    assert shaper.step(1.0, None, 1.0, 4) == 0.5  # beyond it
    assert shaper.step(1.0, None, -2.0, 9) == 0.5  # shorts too
    assert shaper.step(1.0, None, 0.0, 9) == 1.0  # flat: nothing held


def test_differential_sharpe_hand():
    # eta = .5, R = 1, 3, -1. t=1: A0=B0=0 -> variance 0 -> D=0; A1 = B1 = .5.
    # t=2: dA = 2.5, dB = 8.5, var = .25 -> D = (.5*2.5 - .5*.5*8.5)/.125 = -7; A2 = 1.75, B2 = 4.75.
    # t=3: dA = -2.75, dB = -3.75, var = 1.6875 -> D = (4.75*-2.75 + .5*1.75*3.75)/1.6875^1.5.
    shaper = RewardShaper(RewardConfig(differential="sharpe", eta=0.5))
    got = [shaper.step(r, None, 0.0, 0) for r in (1.0, 3.0, -1.0)]
    assert got == pytest.approx([0.0, -7.0, -9.78125 / 1.6875**1.5])
    assert (shaper.a, shaper.b) == pytest.approx((0.375, 2.875))
    shaper.reset()
    assert [shaper.step(r, None, 0.0, 0) for r in (1.0, 3.0, -1.0)] == got


def test_differential_downside_ratio_hand():
    # eta = .5, R = -2, 1, -1. t=1: DD2_0 = 0 -> D=0; A1 = -1, DD2_1 = 2.
    # t=2 (R>0): D = (1 + .5)/sqrt(2); A2 = -1 + .5*2 = 0, DD2_2 = 1.  t=3 (R<=0): D = 1*(-1 - 0) - 0 = -1.
    # t=4 (R<=0): A3 = -.5, DD2_3 = 1 -> D = 1*(-1 + .25) - .5*(-.5)*1 = -.5.
    shaper = RewardShaper(RewardConfig(differential="sortino", eta=0.5))
    got = [shaper.step(r, None, 0.0, 0) for r in (-2.0, 1.0, -1.0, -1.0)]
    assert got == pytest.approx([0.0, 1.5 / math.sqrt(2), -1.0, -0.5])


def test_differential_ratios_are_the_eta_derivative_of_the_ema_ratio():
    """Moody & Saffell define D_t = dS_t/d(eta) at eta = 0; check by finite differences of S = A/sqrt(B - A^2)
    and of DDR = A/DD, recomputed from the EMA updates written out."""
    rng = np.random.default_rng(1)
    h = 1e-7
    for _ in range(200):
        a, r = float(rng.normal()), float(rng.normal(0, 2))
        b = a * a + float(rng.uniform(0.1, 3))
        dd2 = float(rng.uniform(0.1, 3))

        def sharpe(eta: float, a=a, b=b, r=r) -> float:
            a_t, b_t = a + eta * (r - a), b + eta * (r * r - b)
            return a_t / math.sqrt(b_t - a_t * a_t)

        def ddr(eta: float, a=a, dd2=dd2, r=r) -> float:
            return (a + eta * (r - a)) / math.sqrt(dd2 + eta * (min(r, 0.0) ** 2 - dd2))

        fd_sharpe = (sharpe(h) - sharpe(-h)) / (2 * h)
        fd_ddr = (ddr(h) - ddr(-h)) / (2 * h)
        assert differential_sharpe(r, a, b, 0.01)[0] == pytest.approx(fd_sharpe, rel=1e-5, abs=1e-6)
        assert differential_downside_ratio(r, a, dd2, 0.01)[0] == pytest.approx(fd_ddr, rel=1e-5, abs=1e-6)


def test_terms_add_on_top_of_differential():
    shaper = RewardShaper(RewardConfig(differential="sharpe", win_bonus=1.0, hold_penalty=0.25, eta=0.5))
    assert shaper.step(1.0, 2.0, 1.0, 5) == pytest.approx(0.0 + 1.0 - 0.25)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"win_bonus": -1.0}, "win_bonus"),
        ({"hold_bars": -1}, "hold_bars"),
        ({"differential": "calmar"}, "differential"),
        ({"eta": 0.0}, "eta"),
    ],
)
def test_config_validation(kwargs: dict, match: str):
    with pytest.raises(ValueError, match=match):
        RewardConfig(**kwargs)
