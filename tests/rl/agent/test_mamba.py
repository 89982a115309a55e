"""Mamba block: the fused numba scan (full and last step, float64 and float32) and the Blelloch scan == the
sequential loop (values and gradients); the extractor == a plain re-implementation on the loop; state_dicts move
to and from mambapy; SB3 extractor + SAC."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from stable_baselines3 import SAC

import phoenix_rl.agent.mamba as mamba_module
from phoenix_rl.agent.extractor import MambaFeaturesExtractor
from phoenix_rl.agent.kernels.scan import exp2_f32_of, softplus_f32_of
from phoenix_rl.agent.mamba import (
    MambaBlock,
    MambaLayer,
    causal_conv_silu,
    causal_depthwise_conv,
    make_mamba_block,
    parallel_linear_scan,
    selective_scan,
    selective_scan_last,
    selective_scan_reference,
)
from phoenix_rl.env.trading_env import EnvConfig, MnqTradingEnv
from phoenix_rl.testing import synthetic_features
from phoenix_rl.train.trainer import silent_logger

mambapy_mamba = pytest.importorskip("mambapy.mamba")

MAMBA_SSM_KEYS = {
    "in_proj.weight": (64, 16),
    "conv1d.weight": (32, 1, 4),
    "conv1d.bias": (32,),
    "x_proj.weight": (1 + 2 * 8, 32),
    "dt_proj.weight": (32, 1),
    "dt_proj.bias": (32,),
    "A_log": (32, 8),
    "D": (32,),
    "out_proj.weight": (16, 32),
}


def _scan_inputs(batch: int, length: int, d_inner: int, d_state: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    kw = {"dtype": torch.float64, "generator": g}
    u = torch.randn(batch, length, d_inner, **kw)
    delta = torch.nn.functional.softplus(torch.randn(batch, length, d_inner, **kw))
    A = -torch.rand(d_inner, d_state, **kw) * 4
    B = torch.randn(batch, length, d_state, **kw)
    C = torch.randn(batch, length, d_state, **kw)
    D = torch.randn(d_inner, **kw)
    return u, delta, A, B, C, D


@pytest.fixture(params=["fused_kernel", "blelloch"])
def scan_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through each of `selective_scan`'s two paths (the CPU numba kernel / the Blelloch scan)."""
    if request.param == "blelloch":
        monkeypatch.setattr(mamba_module, "FUSED_CPU_KERNEL", False)
    return request.param


@pytest.mark.parametrize("length", [1, 2, 7, 32, 33, 100])
def test_vectorised_scan_equals_sequential_reference(length: int, scan_path: str) -> None:
    args = _scan_inputs(3, length, 6, 5, seed=length)
    torch.testing.assert_close(selective_scan(*args), selective_scan_reference(*args), atol=1e-10, rtol=1e-10)
    no_d = args[:5]
    torch.testing.assert_close(selective_scan(*no_d), selective_scan_reference(*no_d), atol=1e-10, rtol=1e-10)


def test_float32_kernel_equals_the_float64_loop_and_its_exp2_is_accurate() -> None:
    """float32 runs the vectorised exp2 (`scan_kernel`): outputs and gradients within float32 rounding of the
    float64 loop, decays from exp(0) down to underflow included; the exp2 itself < 2e-7 relative."""
    x = np.concatenate([-np.linspace(0, 126, 100_001), [-0.0, -0.5, -1e-7, -125.9, -130.0, -1e4]]).astype(np.float32)
    bits = np.empty(x.shape, np.int32)
    got = exp2_f32_of(x, bits)
    want = np.exp2(x.astype(np.float64))
    normal = x > -125.5
    assert np.abs(got[normal] / want[normal] - 1).max() < 2e-7
    assert np.all(got[~normal] <= 2.0**-125)
    args64 = list(_scan_inputs(4, 40, 6, 5, seed=7))
    args64[1] = args64[1] * 30  # delta A down to about -400: decays that underflow in float32
    args32 = [t.float().requires_grad_(True) for t in args64]
    args64 = [t.requires_grad_(True) for t in args64]
    y32, y64 = selective_scan(*args32), selective_scan_reference(*args64)
    torch.testing.assert_close(y32.double(), y64, atol=1e-4, rtol=1e-5)
    y32.pow(2).sum().backward()
    y64.pow(2).sum().backward()
    for a, b in zip(args32, args64, strict=True):
        torch.testing.assert_close(a.grad.double(), b.grad, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("length", [1, 9, 32])
def test_delta_softplus_in_the_scan_equals_softplus_then_the_loop(length: int, scan_path: str) -> None:
    """`delta_softplus` (the block's path: the kernel applies softplus per row) == F.softplus, then the loop;
    values and the gradient of the pre-activation, full and last-step outputs, pre-activations past torch's
    threshold of 20 included."""
    u, delta, A, B, C, D = _scan_inputs(3, length, 5, 4, seed=length)
    pre = torch.logit(1 - torch.exp(-delta)) * 4  # pre-activations of both signs, |pre| up to ~30
    pre[0, 0, 0] = 25.0
    for scan, take in ((selective_scan, slice(None)), (selective_scan_last, -1)):
        ours_pre, ref_pre = pre.clone().requires_grad_(True), pre.clone().requires_grad_(True)
        ours = scan(u, ours_pre, A, B, C, D, delta_softplus=True)
        ref = selective_scan_reference(u, F.softplus(ref_pre), A, B, C, D)[:, take]
        torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-10)
        ours.pow(2).sum().backward()
        ref.pow(2).sum().backward()
        torch.testing.assert_close(ours_pre.grad, ref_pre.grad, atol=1e-9, rtol=1e-9)


def test_float32_softplus_of_the_kernel_is_accurate() -> None:
    """The kernels' float32 softplus and sigmoid (exp2 + Cephes log1p) against float64: relative error within
    2e-7 + 1e-7 |x| (the float32 rounding of x log2 e grows with |x|), softplus(x) = x above 20 as torch's, the
    tiny values of very negative x not flushed to 0 by 1 + e rounding."""
    x = np.concatenate([np.linspace(-80, 80, 160_001), np.linspace(-1, 1, 20_001), [0.0, 20.0, 20.5, -30.0]])
    x = x.astype(np.float32)
    out, sig = softplus_f32_of(x, np.empty(x.shape, np.int32))
    x64 = torch.from_numpy(x).double()
    bound = 2e-7 + 1e-7 * np.abs(x)
    assert np.all(np.abs(out / F.softplus(x64).numpy() - 1) < bound)
    assert np.all(np.abs(sig / torch.sigmoid(x64).numpy() - 1) < bound)
    assert out[x == 20.5][0] == np.float32(20.5) and out[x == -30.0][0] > 0


def test_no_grad_and_grad_forwards_and_the_last_step_agree(scan_path: str) -> None:
    args = _scan_inputs(3, 12, 5, 4, seed=3)
    with torch.no_grad():
        full, last = selective_scan(*args), selective_scan_last(*args)
    with_grad = selective_scan(*[t.clone().requires_grad_(True) for t in args])
    torch.testing.assert_close(full, selective_scan_reference(*args), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(with_grad.detach(), full, atol=0, rtol=0)
    torch.testing.assert_close(last, full[:, -1], atol=1e-12, rtol=1e-12)


def test_scan_gradient_matches_autograd_through_the_loop(scan_path: str) -> None:
    a = torch.rand(2, 11, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 11, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(parallel_linear_scan, (a, b))
    args = [t.clone().requires_grad_(True) for t in _scan_inputs(2, 9, 4, 3)]
    assert torch.autograd.gradcheck(selective_scan, args)
    ref_args = [t.detach().clone().requires_grad_(True) for t in args]
    selective_scan(*args).pow(2).sum().backward()
    selective_scan_reference(*ref_args).pow(2).sum().backward()
    for x, y in zip(args, ref_args, strict=True):
        torch.testing.assert_close(x.grad, y.grad, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("length", [1, 2, 9, 32])
def test_last_step_equals_the_loops_last_output(length: int, scan_path: str) -> None:
    args = [t.requires_grad_(True) for t in _scan_inputs(3, length, 5, 4, seed=length)]
    ref_args = [t.detach().clone().requires_grad_(True) for t in args]
    last, ref = selective_scan_last(*args), selective_scan_reference(*ref_args)[:, -1]
    torch.testing.assert_close(last, ref, atol=1e-10, rtol=1e-10)
    last.pow(2).sum().backward()
    ref.pow(2).sum().backward()
    for x, y in zip(args, ref_args, strict=True):
        torch.testing.assert_close(x.grad, y.grad, atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("bias", [True, False])
def test_causal_conv_equals_torchs_conv1d(bias: bool) -> None:
    """The shifted multiply-adds == nn.Conv1d(groups=C, padding=K-1) cut to the first L outputs (the mamba_ssm
    formulation), values and gradients; and output t never reads input after t."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3, bias=bias).double()
    x = torch.randn(3, 10, 6, dtype=torch.float64, requires_grad=True)
    ours = causal_depthwise_conv(x, conv.weight, conv.bias)
    ref = conv(x.transpose(1, 2))[..., :10].transpose(1, 2)
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)
    grads = torch.autograd.grad(ours.pow(2).sum(), [x, *conv.parameters()])
    ref_grads = torch.autograd.grad(ref.pow(2).sum(), [x, *conv.parameters()])
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    changed = x.detach().clone()
    changed[:, 6:] += 1.0
    torch.testing.assert_close(causal_depthwise_conv(changed, conv.weight, conv.bias)[:, :6], ours[:, :6].detach())


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("length", [1, 3, 17])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 2e-6)])
def test_fused_conv_silu_equals_the_torch_ops(bias: bool, length: int, dtype: torch.dtype, tol: float) -> None:
    """The numba conv + SiLU kernel == F.silu(causal_depthwise_conv) (the other devices' path), values and the
    gradients of x, weight and bias, windows shorter than the kernel included; output t never reads input
    after t."""
    torch.manual_seed(1)
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3, bias=bias).to(dtype)
    x = (3 * torch.randn(2, length, 6, dtype=dtype)).requires_grad_(True)  # pre-activations on both sides of 0
    ours = causal_conv_silu(x, conv.weight, conv.bias)
    ref = F.silu(causal_depthwise_conv(x, conv.weight, conv.bias))
    torch.testing.assert_close(ours, ref, atol=tol, rtol=tol)
    g = torch.randn_like(ref)
    params = [x, *conv.parameters()]
    for a, b in zip(torch.autograd.grad(ours, params, g), torch.autograd.grad(ref, params, g), strict=True):
        torch.testing.assert_close(a, b, atol=10 * tol, rtol=10 * tol)
    changed = x.detach().clone()
    changed[:, length // 2 + 1 :] += 1.0
    head = causal_conv_silu(changed, conv.weight, conv.bias)[:, : length // 2 + 1]
    torch.testing.assert_close(head, ours[:, : length // 2 + 1].detach(), atol=0, rtol=0)


def test_layer_last_only_is_the_full_outputs_last_step() -> None:
    torch.manual_seed(0)
    layer = MambaLayer(16, 8, 4, 2).double()
    x = torch.randn(3, 24, 16, dtype=torch.float64)
    torch.testing.assert_close(layer(x, last_only=True), layer(x)[:, -1:], atol=1e-12, rtol=1e-12)


def test_parameter_names_and_shapes_are_mamba_ssms() -> None:
    block = MambaBlock(d_model=16, d_state=8, d_conv=4, expand=2)
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == MAMBA_SSM_KEYS
    assert isinstance(make_mamba_block(16, 8), MambaBlock)  # CPU: never mamba_ssm


def test_state_dict_round_trip_with_mambapy_gives_the_same_output() -> None:
    torch.manual_seed(0)
    config = mambapy_mamba.MambaConfig(d_model=16, n_layers=1, d_state=8, expand_factor=2, d_conv=4)
    ref = mambapy_mamba.MambaBlock(config).double()
    ours = MambaBlock(16, d_state=8, d_conv=4, expand=2).double()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 24, 16, dtype=torch.float64)
    # mambapy casts A_log/D through float32 (`.float()`), hence ~1e-9 and not 1e-15
    torch.testing.assert_close(ours(x), ref(x), atol=1e-7, rtol=1e-7)
    ref_layer = mambapy_mamba.ResidualBlock(config).double()
    layer = MambaLayer(16, 8, 4, 2).double()
    layer.load_state_dict(ref_layer.state_dict(), strict=True)
    torch.testing.assert_close(layer(x), ref_layer(x), atol=1e-7, rtol=1e-7)
    back = mambapy_mamba.MambaBlock(config).double()  # and the other way round
    back.load_state_dict(ours.state_dict(), strict=True)
    torch.testing.assert_close(back(x), ours(x), atol=1e-7, rtol=1e-7)


def _env(lookback: int = 8) -> MnqTradingEnv:
    cols = ("ofi_1min_zscore", "g", "h")
    f = synthetic_features(cols, n_sessions=2, bars_per_session=150)
    return MnqTradingEnv(f, EnvConfig(cols, lookback=lookback, max_steps=100))


def test_extractor_output_shape_and_causality() -> None:
    env = _env(lookback=8)
    ext = MambaFeaturesExtractor(env.observation_space, d_model=12, d_state=4, n_layers=2)
    assert ext.features_dim == 12 + 3
    obs = {k: torch.as_tensor(np.stack([env.reset(seed=s)[0][k] for s in range(5)])) for k in ("window", "agent")}
    out = ext(obs)
    assert out.shape == (5, 15) and torch.isfinite(out).all()
    assert torch.equal(out[:, 12:], obs["agent"])
    # the output is the last step's hidden state: it depends on the earliest window row too
    changed = {k: v.clone() for k, v in obs.items()}
    changed["window"][:, 0] += 1.0
    assert not torch.allclose(ext(changed)[:, :12], out[:, :12])


def _reference_extractor(ext: MambaFeaturesExtractor, obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The extractor written out plainly: every layer over the whole window, the per-step loop scan."""
    h = ext.embed(obs["window"])
    for layer in ext.layers:
        m, length = layer.mixer, h.shape[1]
        x, z = m.in_proj(layer.norm(h)).chunk(2, dim=-1)
        x = torch.nn.functional.silu(m.conv1d(x.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, B, C = torch.split(m.x_proj(x), [m.dt_rank, m.d_state, m.d_state], dim=-1)
        delta = torch.nn.functional.softplus(m.dt_proj(dt))
        y = selective_scan_reference(x, delta, -torch.exp(m.A_log), B, C, m.D)
        h = h + m.out_proj(y * torch.nn.functional.silu(z))
    return torch.cat([ext.norm_f(h[:, -1]), obs["agent"]], dim=1)


def test_extractor_equals_the_plain_reference_in_float32() -> None:
    """The asset's default shape (L=32, d_model 32, d_state 16, 2 layers): outputs and parameter gradients."""
    torch.manual_seed(3)
    env = _env(lookback=32)
    ext = MambaFeaturesExtractor(env.observation_space, d_model=32, d_state=16, n_layers=2)
    g = torch.Generator().manual_seed(1)
    obs = {
        "window": torch.randn(6, 32, env.observation_space["window"].shape[1], generator=g),
        "agent": torch.randn(6, 3, generator=g),
    }
    out = ext(obs)
    ref = _reference_extractor(ext, obs)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.pow(2).sum(), list(ext.parameters()))
    ref_grads = torch.autograd.grad(ref.pow(2).sum(), list(ext.parameters()))
    for name_param, x, y in zip(ext.named_parameters(), grads, ref_grads, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=lambda m, n=name_param[0]: f"{n}: {m}")


def test_sb3_sac_runs_with_the_mamba_extractor() -> None:
    env = _env(lookback=8)
    model = SAC(
        "MultiInputPolicy",
        env,
        learning_starts=50,
        batch_size=16,
        buffer_size=1_000,
        seed=0,
        policy_kwargs={
            "features_extractor_class": MambaFeaturesExtractor,
            "features_extractor_kwargs": {"d_model": 8, "d_state": 4, "n_layers": 1},
            "net_arch": [16, 16],
        },
    )
    model.set_logger(silent_logger())
    model.learn(total_timesteps=300)
    assert model.num_timesteps == 300
    assert isinstance(model.actor.features_extractor, MambaFeaturesExtractor)
    action, _ = model.predict(env.reset(seed=1)[0], deterministic=True)
    assert action.shape == (1,) and -1.0 <= float(action[0]) <= 1.0
