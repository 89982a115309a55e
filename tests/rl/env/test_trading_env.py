"""MnqTradingEnv: hand-checked PnL and costs, next-open fills, forced flat, truncation, seeding, API checks."""

from __future__ import annotations

import datetime as dt
import math
import warnings

import numpy as np
import polars as pl
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

from phoenix_rl.env.trading_env import EnvConfig, MnqTradingEnv
from phoenix_rl.testing import synthetic_features

COST_SIDE = 0.62 + 0.25 * 2.0 * 1.0  # commission + 1 tick of slippage ($0.50) per contract per side


def tiny_frame(
    opens: list[float],
    closes: list[float],
    *,
    minutes: list[int] | None = None,
    trade_dates: list[dt.date] | None = None,
    feature: list[float | None] | None = None,
    warm: list[bool] | None = None,
    t0: dt.datetime = dt.datetime(2024, 3, 12, 14, 0, tzinfo=dt.UTC),  # 09:00 CDT, mid-session
) -> pl.DataFrame:
    n = len(opens)
    minutes = list(range(n)) if minutes is None else minutes
    return pl.DataFrame(
        {
            "ts": [t0 + dt.timedelta(minutes=m) for m in minutes],
            "trade_date": trade_dates or [dt.date(2024, 3, 12)] * n,
            "instrument_id": [1] * n,
            "open": opens,
            "close": closes,
            "f": feature or [0.0] * n,
            "warm": warm or [True] * n,
        },
        schema_overrides={"f": pl.Float64},
    )


def cfg(**kw) -> EnvConfig:
    base = {"feature_columns": ("f",), "lookback": 3, "episode_mode": "whole", "max_steps": None, "reward_scale": 1.0}
    return EnvConfig(**{**base, **kw})


def run(env: MnqTradingEnv, actions: list[float]) -> list[dict]:
    env.reset(seed=0)
    infos = []
    for a in actions:
        _, r, term, trunc, info = env.step(np.array([a], dtype=np.float32))
        infos.append({**info, "reward": r, "terminated": term, "truncated": trunc})
        if term or trunc:
            break
    return infos


def test_scripted_round_trip_pnl_and_costs_by_hand() -> None:
    # buy 1 at bar 1's open 100.00, hold, sell at bar 3's open 101.25
    f = tiny_frame(opens=[99.0, 100.0, 100.5, 101.25, 101.0], closes=[99.5, 100.25, 101.0, 101.5, 100.75])
    infos = run(MnqTradingEnv(f, cfg()), [1.0, 1.0, 0.0, 0.0])
    assert [i["position"] for i in infos] == [1.0, 1.0, 0.0, 0.0]
    assert infos[0]["fill_price"] == 100.0 and infos[2]["fill_price"] == 101.25
    gross = (101.25 - 100.00) * 2.0  # $2.50
    costs = 2 * (0.62 + 0.25 * 2.0 * 1)  # $2.24
    assert sum(i["pnl"] for i in infos) == pytest.approx(gross)
    assert sum(i["cost"] for i in infos) == pytest.approx(costs)
    assert sum(i["reward"] for i in infos) == pytest.approx(gross - costs)  # reward_scale 1: $0.26
    # mark to close each bar: bar 1 (100.00 -> 100.25), bar 2 (close 100.25 -> open 100.5 -> close 101.0)
    assert infos[0]["pnl"] == pytest.approx(0.25 * 2)
    assert infos[1]["pnl"] == pytest.approx(0.75 * 2)
    assert infos[2]["pnl"] == pytest.approx(0.25 * 2) and infos[2]["cost"] == pytest.approx(COST_SIDE)


def test_fill_is_next_open_never_the_decision_bars_close() -> None:
    # close of bar 1 = 100, open of bar 2 = 105: a decision at bar 1 must fill at 105
    f = tiny_frame(opens=[100.0, 100.0, 105.0, 106.0, 106.0], closes=[100.0, 100.0, 106.0, 106.0, 106.0])
    infos = run(MnqTradingEnv(f, cfg()), [0.0, 1.0, 0.0, 0.0])
    assert infos[1]["fill_price"] == 105.0 and infos[1]["bar"] == 2
    assert infos[1]["pnl"] == pytest.approx((106.0 - 105.0) * 2.0)  # not (106 - 100) * 2
    total = sum(i["pnl"] - i["cost"] for i in infos)
    assert total == pytest.approx((106.0 - 105.0) * 2.0 - 2 * COST_SIDE)


def test_forced_flat_before_the_halt_and_at_the_data_end() -> None:
    d1, d2 = dt.date(2024, 3, 12), dt.date(2024, 3, 13)
    # session 1: 15:56..15:59 CDT; halt (16:00-17:00 CT); session 2: 17:00..17:03 CDT
    f = tiny_frame(
        opens=[100.0, 101.0, 102.0, 103.0, 110.0, 111.0, 112.0, 113.0],
        closes=[100.5, 101.5, 102.5, 103.5, 110.5, 111.5, 112.5, 113.5],
        minutes=[0, 1, 2, 3, 64, 65, 66, 67],
        trade_dates=[d1] * 4 + [d2] * 4,
        t0=dt.datetime(2024, 3, 12, 20, 56, tzinfo=dt.UTC),
    )
    env = MnqTradingEnv(f, cfg())
    infos = run(env, [1.0] * 10)
    pos = {i["bar"]: i["position"] for i in infos}
    assert pos == {1: 1.0, 2: 1.0, 3: 0.0, 4: 0.0, 5: 1.0, 6: 1.0, 7: 0.0}
    assert infos[-1]["truncated"] and infos[-1]["bar"] == 7
    # the flattenings pay costs like any fill: 2 round trips
    assert sum(i["cost"] for i in infos) == pytest.approx(4 * COST_SIDE)
    assert sum(i["pnl"] for i in infos) == pytest.approx((103.0 - 101.0) * 2 + (113.0 - 111.0) * 2)
    assert not any(i["terminated"] for i in infos)


def test_a_data_hole_is_not_known_before_it_happens() -> None:
    """Issue 11 hole B: only scheduled halts/rolls may be known in advance. A position open when the data
    stop is held through the hole and marked across it; the decision after the hole is forced flat."""
    opens = [100.0, 100.0, 100.0, 100.0, 110.0, 110.0, 110.0, 110.0]
    holed = tiny_frame(opens=opens, closes=opens, minutes=[0, 1, 2, 3, 20, 21, 22, 23])
    infos = run(MnqTradingEnv(holed, cfg(max_gap_minutes=5)), [1.0] * 10)
    pos = {i["bar"]: i["position"] for i in infos}
    assert pos == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 0.0, 6: 1.0, 7: 0.0}  # no flat before the hole
    assert infos[3]["pnl_carry"] == pytest.approx((110.0 - 100.0) * 2.0)  # the gap across the hole, marked
    # perturb the future: the same first bars without the hole give the same decisions up to the hole
    smooth = tiny_frame(opens=opens, closes=opens, minutes=list(range(8)))
    same = {i["bar"]: i["position"] for i in run(MnqTradingEnv(smooth, cfg(max_gap_minutes=5)), [1.0] * 10)}
    assert [same[b] for b in (1, 2, 3, 4)] == [pos[b] for b in (1, 2, 3, 4)]
    assert MnqTradingEnv(holed, cfg()).after_hole.tolist() == [False] * 4 + [True] + [False] * 3


def test_forced_flat_before_a_calendar_roll() -> None:
    """The roll calendar (third Friday: 2024-03-15) ends contract 1 with the roll eve 03-14's session; contract 2
    trades from the roll date's first bar. The env flattens from the calendar, not from the data."""
    d1, d2 = dt.date(2024, 3, 14), dt.date(2024, 3, 15)
    f = tiny_frame(
        opens=[100.0, 101.0, 102.0, 103.0, 280.0, 281.0, 282.0, 283.0],
        closes=[100.5, 101.5, 102.5, 103.5, 280.5, 281.5, 282.5, 283.5],
        minutes=[0, 1, 2, 3, 64, 65, 66, 67],
        trade_dates=[d1] * 4 + [d2] * 4,
        t0=dt.datetime(2024, 3, 14, 20, 56, tzinfo=dt.UTC),
    )
    rolled = f.with_columns(instrument_id=pl.Series([1, 1, 1, 1, 2, 2, 2, 2]))
    infos = run(MnqTradingEnv(rolled, cfg()), [1.0] * 10)
    pos = {i["bar"]: i["position"] for i in infos}
    assert pos == {1: 1.0, 2: 1.0, 3: 0.0, 4: 0.0, 5: 1.0, 6: 1.0, 7: 0.0}
    # no PnL across the two contracts' 180-point gap: (103 - 101) + (283 - 281) points
    assert sum(i["pnl"] for i in infos) == pytest.approx((103.0 - 101.0) * 2 + (283.0 - 281.0) * 2)


def test_a_contract_change_off_the_calendar_is_seen_only_once_it_happened() -> None:
    """Mid-session (no roll on the calendar): the env cannot flatten ahead; the old contract's position exits at
    its last close (costs, no gap between contracts), and the first decision on the new contract is flat."""
    f = tiny_frame(opens=[100.0] * 4 + [280.0] * 4, closes=[100.0] * 4 + [280.0] * 4)
    rolled = f.with_columns(instrument_id=pl.Series([1, 1, 1, 1, 2, 2, 2, 2]))
    infos = run(MnqTradingEnv(rolled, cfg()), [1.0] * 10)
    pos = {i["bar"]: i["position"] for i in infos}
    assert pos == {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.0, 5: 0.0, 6: 1.0, 7: 0.0}
    assert infos[3]["fill_price"] == 100.0 and infos[3]["pnl"] == 0.0 and infos[3]["cost"] == pytest.approx(COST_SIDE)
    assert sum(i["pnl"] for i in infos) == pytest.approx(0.0)


def test_a_hole_that_swallows_the_close_carries_over_the_halt() -> None:
    # session 1 data stop at 15:40 CDT (a hole, not the schedule); session 2 opens 17:00
    d1, d2 = dt.date(2024, 3, 12), dt.date(2024, 3, 13)
    f = tiny_frame(
        opens=[100.0, 100.0, 100.0, 90.0, 90.0, 90.0],
        closes=[100.0, 100.0, 100.0, 90.0, 90.0, 90.0],
        minutes=[0, 1, 2, 80, 81, 82],
        trade_dates=[d1] * 3 + [d2] * 3,
        t0=dt.datetime(2024, 3, 12, 20, 38, tzinfo=dt.UTC),
    )
    infos = run(MnqTradingEnv(f, cfg()), [1.0] * 10)
    pos = {i["bar"]: i["position"] for i in infos}
    assert pos == {1: 1.0, 2: 1.0, 3: 1.0, 4: 0.0, 5: 0.0}  # held into the next session, flat after the hole
    assert infos[2]["pnl_carry"] == pytest.approx((90.0 - 100.0) * 2.0)


def test_truncated_not_terminated_at_end_and_at_max_steps() -> None:
    f = synthetic_features(("f",), n_sessions=1, bars_per_session=50)
    env = MnqTradingEnv(f, cfg(episode_mode="random", max_steps=10))
    env.reset(seed=3, options={"start": 5})
    flags = [env.step(np.array([1.0], dtype=np.float32))[2:4] for _ in range(10)]
    assert flags[-1] == (False, True) and all(f_ == (False, False) for f_ in flags[:-1])
    env.reset(options={"start": 45})
    for _ in range(4):
        _, _, term, trunc, info = env.step(np.array([0.5], dtype=np.float32))
    assert trunc and not term and info["end_of_data"] and info["position"] == 0.0
    with pytest.raises(RuntimeError, match="end of the data"):
        env.step(np.array([0.0], dtype=np.float32))


def test_reset_is_deterministic_and_complete() -> None:
    f = synthetic_features(("f", "g"), n_sessions=2, bars_per_session=200)
    env = MnqTradingEnv(f, EnvConfig(("f", "g"), lookback=8, max_steps=50))
    o1, _ = env.reset(seed=42)
    for _ in range(20):
        env.step(np.array([0.9], dtype=np.float32))
    o2, _ = env.reset(seed=42)
    assert all(np.array_equal(o1[k], o2[k]) for k in o1)
    assert np.array_equal(o2["agent"], np.zeros(3, dtype=np.float32))
    starts = {env.reset(seed=s)[1]["bar"] for s in range(10)}
    assert len(starts) > 1  # the seed does move the start
    env2 = MnqTradingEnv(f, EnvConfig(("f", "g"), lookback=8, max_steps=50))
    assert env2.reset(seed=7)[1] == env.reset(seed=7)[1]


def test_observation_window_mask_and_agent_state() -> None:
    f = tiny_frame(
        opens=[100.0, 100.0, 101.0, 102.0, 103.0],
        closes=[100.0, 101.0, 102.0, 103.0, 104.0],
        feature=[None, float("nan"), 2.0, 50.0, 1.0],
        warm=[False, False, True, True, True],
    )
    env = MnqTradingEnv(f, cfg(lookback=3, obs_clip=10.0))
    obs, _ = env.reset()
    assert obs["window"].dtype == np.float32 and obs["window"].shape == (3, 2)
    assert obs["window"].tolist() == [[0, 0], [0, 0], [0, 0]]  # 2 padding rows + bar 0 (null -> 0, not warm)
    env.reset(options={"start": 2})
    obs, *_ = env.step(np.array([1.0], dtype=np.float32))  # decision at bar 2 (warm), fill at open 102
    assert obs["window"].tolist() == [[0.0, 0.0], [2.0, 1.0], [10.0, 1.0]]  # NaN -> 0, 50 clipped to 10
    upnl_units = (103.0 - 102.0) * 2.0 / (2.0 * 1 * 10.0)
    assert obs["agent"].tolist() == pytest.approx([1.0, upnl_units, 1 / 60])
    # a decision at a non-warm bar is forced flat
    infos = run(MnqTradingEnv(f, cfg()), [1.0, 1.0])
    assert infos[0]["position"] == 0.0 and infos[1]["position"] == 0.0


def test_action_modes() -> None:
    f = tiny_frame(opens=[100.0] * 4, closes=[100.0] * 4)
    dead = MnqTradingEnv(f, cfg(max_contracts=3, deadband=0.25))
    assert [dead.target_contracts(a) for a in (0.0, 0.2, -0.25, 0.26, 0.5, 1.0, -1.0)] == [
        0.0,
        0.0,
        -1.0,
        1.0,
        1.0 * math.ceil(0.25 / 0.75 * 3),
        3.0,
        -3.0,
    ]
    cont = MnqTradingEnv(f, cfg(max_contracts=2, action_mode="continuous"))
    assert cont.target_contracts(0.3) == pytest.approx(0.6)
    info = run(cont, [0.5])[0]
    assert info["cost"] == pytest.approx(1.0 * COST_SIDE)


def test_bad_frames_are_rejected_with_a_reason() -> None:
    f = tiny_frame(opens=[100.0] * 3, closes=[100.0] * 3)
    with pytest.raises(ValueError, match="lacks columns"):
        MnqTradingEnv(f.drop("f"), cfg())
    with pytest.raises(ValueError, match="strictly increasing"):
        MnqTradingEnv(pl.concat([f, f]), cfg())


def test_gymnasium_and_sb3_checkers_and_dummy_vec_env() -> None:
    f = synthetic_features(("ofi_1min_zscore", "g"), n_sessions=2, bars_per_session=60)
    conf = EnvConfig(("ofi_1min_zscore", "g"), lookback=8, max_steps=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # render-mode / 2-D observation notes, not failures
        gym_check_env(MnqTradingEnv(f, conf))
        sb3_check_env(MnqTradingEnv(f, conf), warn=False)
    venv = DummyVecEnv([lambda: MnqTradingEnv(f, conf), lambda: MnqTradingEnv(f, conf)])
    venv.seed(0)
    obs = venv.reset()
    assert obs["window"].shape == (2, 8, 3)
    for _ in range(40):  # crosses an auto-reset
        obs, rew, done, _ = venv.step(np.zeros((2, 1), dtype=np.float32))
    assert rew.shape == (2,) and done.shape == (2,)


# --- reward shaping wired into the env (issue 11) ---------------------------------------------------------

ROUND_TRIP = {"opens": [99.0, 100.0, 100.5, 101.25, 101.0], "closes": [99.5, 100.25, 101.0, 101.5, 100.75]}


def test_default_shaping_is_the_plain_reward() -> None:
    f = synthetic_features(("f",), n_sessions=2, bars_per_session=60, seed=4)
    actions = list(np.random.default_rng(0).uniform(-1, 1, 118))
    plain = run(MnqTradingEnv(f, cfg()), actions)
    assert all(i["reward"] == pytest.approx(i["pnl"] - i["cost"], abs=1e-12) for i in plain)


def test_win_bonus_and_hold_penalty_by_hand() -> None:
    # the scripted round trip: buy at 100.00 (bar 1), hold bar 2, sell at 101.25 (bar 3): +$2.50 - $2.24 = +$0.26
    f = tiny_frame(**ROUND_TRIP)
    shaped = run(
        MnqTradingEnv(f, cfg(win_bonus=0.5, loss_penalty=9.0, hold_penalty=0.1, hold_bars=1)), [1.0, 1.0, 0.0, 0.0]
    )
    plain = run(MnqTradingEnv(f, cfg()), [1.0, 1.0, 0.0, 0.0])
    assert shaped[2]["closed_trade_pnl"] == pytest.approx(0.26)  # closed at bar 3's open, net of both sides
    extra = [s["reward"] - p["reward"] for s, p in zip(shaped, plain, strict=True)]
    # bar 1: held 1 bar (not beyond hold_bars 1); bar 2: held 2 > 1 -> -0.1; bar 3: closed a winner -> +0.5
    assert extra == pytest.approx([0.0, -0.1, 0.5, 0.0])
    losing = tiny_frame(opens=[99.0, 100.0, 99.5, 99.0, 99.0], closes=[99.5, 99.75, 99.25, 99.0, 99.0])
    infos = run(MnqTradingEnv(losing, cfg(loss_penalty=0.7)), [1.0, 1.0, 0.0, 0.0])
    assert infos[2]["closed_trade_pnl"] == pytest.approx((99.0 - 100.0) * 2 - 2 * COST_SIDE)
    assert infos[2]["reward"] == pytest.approx(infos[2]["pnl"] - infos[2]["cost"] - 0.7)


def test_differential_sharpe_reward_follows_the_reference_recursion() -> None:
    from phoenix_rl.env.rewards import differential_sharpe

    f = synthetic_features(("f",), n_sessions=1, bars_per_session=80, seed=2)
    actions = list(np.random.default_rng(1).uniform(-1, 1, 79))
    plain = run(MnqTradingEnv(f, cfg(reward_scale=0.01)), actions)
    shaped = run(MnqTradingEnv(f, cfg(reward_scale=0.01, differential_reward="sharpe", differential_eta=0.1)), actions)
    a = b = 0.0
    for p, s in zip(plain, shaped, strict=True):  # slow, obvious reference: the recursion over the plain rewards
        d, a, b = differential_sharpe(p["reward"], a, b, 0.1)
        assert s["reward"] == pytest.approx(d, abs=1e-12)
    assert any(s["reward"] != 0.0 for s in shaped)
    with pytest.raises(ValueError, match="eta"):
        cfg(differential_reward="sharpe", differential_eta=0.0)
