"""Pure-PyTorch Mamba (selective state-space) block, state_dict-compatible with `mamba_ssm.Mamba`.

Model: Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (arXiv:2312.00752),
Algorithm 2 and section 3.5 (block = in_proj -> causal depthwise conv1d -> SiLU -> selective SSM, gated by
SiLU(z) -> out_proj). Discretisation as in the reference `selective_scan_ref` of state-spaces/mamba:
    dA_t = exp(delta_t * A)            (zero-order hold for A)
    dB_t x_t = delta_t * B_t * x_t     (Euler step for B, as the reference kernel does)
    h_t = dA_t * h_{t-1} + dB_t x_t,   y_t = <C_t, h_t> + D * x_t
with delta_t = softplus(dt_proj(x_proj(x)_dt)) and B_t, C_t from x_proj: delta, B and C depend on the input.

The scan is the linear recurrence h_t = a_t h_{t-1} + b_t. On the CPU (float32/float64) it runs `_FusedScan`, the
whole SSM as one autograd node over the numba kernels of `phoenix_rl.agent.kernels.scan`: a time loop over a (d_state,
d_inner) state held in cache, nothing stored for the backward, and a hand-written backward (each batch row's states
recomputed into cache, then the adjoint recurrence run in reverse: Martin & Cundy 2018, "Parallelizing Linear
Recurrent Neural Nets Over Sequence Length", ICLR, section 3). Other devices (the pure block on a GPU without
mamba_ssm) run a Blelloch (work-efficient) parallel scan (Blelloch 1990, "Prefix sums and their applications"): 2
log2(L) vectorised steps over the whole (batch, L, d_inner, d_state) tensor with the associative operator (a1, b1) o
(a2, b2) = (a1 a2, a2 b1 + b2), its backward the same scan reversed. Products of decays in (0, 1] never overflow,
unlike the closed form exp(S_t) * cumsum(exp(-S_s) b_s) with S the cumulative log-decay. A layer whose only consumer
is the last step (the extractor's last layer) asks for y_{L-1} alone (`selective_scan_last`). The step's softplus
runs inside the kernel (`delta_softplus`, as mamba_ssm's `selective_scan_fn`), and the conv + SiLU before the scan
is one numba node as well (`causal_conv_silu`, `phoenix_rl.agent.kernels.conv`). Measured on the 2-core CPU
(1 thread, medians; docs/rl-and-training.md, issue 12): the default extractor (L 32, d_model 32, d_state 16,
2 layers) at batch 64, forward 6.2-6.7 ms and forward+backward 19-20 ms, against 24 / 77 ms with the Blelloch
scan. `selective_scan_reference` is
the plain per-step loop, used only by the tests.

Parameter names and shapes equal `mamba_ssm.Mamba` (and `mambapy.mamba.MambaBlock`): in_proj.weight,
conv1d.weight, conv1d.bias, x_proj.weight, dt_proj.weight, dt_proj.bias, A_log, D, out_proj.weight; so
checkpoints move between the three with `load_state_dict(strict=True)`. `MambaLayer` (pre-norm residual:
x + mixer(RMSNorm(x))) matches mambapy's `ResidualBlock` names (`mixer.*`, `norm.weight`).

`make_mamba_block` returns the CUDA `mamba_ssm.Mamba` only when CUDA and mamba_ssm are importable; the
import is inside the function (mamba_ssm's import fails on CPU machines, see ENVIRONMENT.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from phoenix_rl.agent.kernels import conv as conv_kernel
from phoenix_rl.agent.kernels import scan as scan_kernel

__all__ = [
    "FUSED_CPU_KERNEL",
    "MambaBlock",
    "MambaLayer",
    "RMSNorm",
    "causal_conv_silu",
    "causal_depthwise_conv",
    "cuda_mamba_available",
    "make_mamba_block",
    "parallel_linear_scan",
    "selective_scan",
    "selective_scan_last",
    "selective_scan_reference",
]


def _blelloch_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Inclusive scan of h_t = a_t h_{t-1} + b_t along dim 1, no autograd (see `parallel_linear_scan`).

    Work-efficient up-sweep / down-sweep (Blelloch 1990, section 1.3) on strided views of copies of the
    inputs, 2 log2(L) vectorised steps; L is zero-padded at the end to a power of 2 (a padded tail does not
    change earlier prefixes).
    """
    length = a.shape[1]
    n = 1 << max(length - 1, 0).bit_length()
    pad = [0, 0] * (a.dim() - 2) + [0, n - length]
    a = F.pad(a, pad).contiguous() if n != length else a.clone()
    b = F.pad(b, pad).contiguous() if n != length else b.clone()
    batch, rest = a.shape[0], a.shape[2:]
    s = 2
    while s <= n:  # up-sweep: the last element of each block of s holds the block's aggregate
        av, bv = a.view(batch, n // s, s, *rest), b.view(batch, n // s, s, *rest)
        bv[:, :, -1].addcmul_(av[:, :, -1], bv[:, :, s // 2 - 1])
        av[:, :, -1].mul_(av[:, :, s // 2 - 1])
        s *= 2
    s = n // 2
    while s >= 2:  # down-sweep: each block's middle element gets the full prefix of the block before it
        av, bv = a.view(batch, n // s, s, *rest), b.view(batch, n // s, s, *rest)
        bv[:, 1:, s // 2 - 1].addcmul_(av[:, 1:, s // 2 - 1], bv[:, :-1, -1])
        s //= 2
    return b[:, :length]


class _LinearScan(torch.autograd.Function):
    """Forward: the parallel scan. Backward: the adjoint recurrence, itself a reversed linear scan
    lambda_t = g_t + a_{t+1} lambda_{t+1}; dL/db_t = lambda_t, dL/da_t = lambda_t h_{t-1} (backpropagation
    through a linear recurrence, Martin & Cundy 2018, section 3). Cheaper than autograd through the scan."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        h = _blelloch_scan(a, b)
        ctx.save_for_backward(a, h)
        return h

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        a, h = ctx.saved_tensors
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)
        lam = _blelloch_scan(a_next.flip(1), g.flip(1)).flip(1)
        h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
        return lam * h_prev, lam


def parallel_linear_scan(a: torch.Tensor, b: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """h_t = a_t * h_{t-1} + b_t along `dim` with h_{-1} = 0, for every t, in ceil(log2 L) vectorised steps.

    Blelloch scan with the associative operator of a first-order linear recurrence (Blelloch 1990,
    "Prefix sums and their applications", section 1.4), with a hand-written backward.
    """
    h = _LinearScan.apply(a.movedim(dim, 1).contiguous(), b.movedim(dim, 1).contiguous())
    return h.movedim(1, dim)


def _discretise(
    u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """dA = exp(delta A), dBu = delta B u: each (batch, L, d_inner, d_state) (Gu & Dao 2023, eq. 4)."""
    dA = torch.exp(delta.unsqueeze(-1) * A)
    dBu = (delta * u).unsqueeze(-1) * B.unsqueeze(2)
    return dA, dBu


# The fused numba kernels (`phoenix_rl.agent.kernels.scan`, `phoenix_rl.agent.kernels.conv`) run every
# float32/float64 CPU scan and conv + SiLU; False sends them to the Blelloch scan and the torch ops, as on other
# devices (tests and benchmarks/bench_training.py's "before" row flip it)
FUSED_CPU_KERNEL = True


class _FusedScan(torch.autograd.Function):
    """The whole selective SSM (discretisation, recurrence, read-out) as one autograd node over the numba kernels
    of `phoenix_rl.agent.kernels.scan`: only the inputs are saved, the backward (by hand: the adjoint recurrence,
    Martin & Cundy 2018, section 3) recomputes the states."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, last_only, delta_softplus):  # type: ignore[override]
        y = scan_kernel.scan_forward(*_numpy_inputs(u, delta, A, B, C, D), last_only, delta_softplus)
        ctx.last_only, ctx.has_d, ctx.delta_softplus = last_only, D is not None, delta_softplus
        ctx.save_for_backward(u, delta, A, B, C, D)
        return torch.from_numpy(y)

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        u, delta, A, B, C, D = ctx.saved_tensors
        if ctx.last_only:  # only y_{L-1} left the node: dL/dy_t = 0 before it
            gy = torch.cat([gy.new_zeros(u.shape[0], u.shape[1] - 1, u.shape[2]), gy], dim=1)
        arrays = _numpy_inputs(u, delta, A, B, C, D)
        grads = scan_kernel.scan_backward(*arrays, _array(gy), ctx.delta_softplus)
        gu, g_delta, gAt, gB, gC, gD = (torch.from_numpy(g) for g in grads)
        return gu, g_delta, gAt.t(), gB, gC, gD if ctx.has_d else None, None, None


def _numpy_inputs(u, delta, A, B, C, D) -> tuple:  # type: ignore[no-untyped-def]
    """The kernels' arguments: contiguous arrays, A as base-2 exponents (A log2 e) transposed to (d_state,
    d_inner), D empty when absent."""
    d = D if D is not None else u.new_empty(0)
    tensors = (u, delta, (A * scan_kernel.LOG2_E).t(), B, C, d)
    return tuple(_array(t) for t in tensors)


def _array(t: torch.Tensor):  # type: ignore[no-untyped-def]
    """A kernel argument: the tensor's data as a contiguous numpy array, outside autograd."""
    return t.detach().contiguous().numpy()


def _fused_kernel_runs(u: torch.Tensor) -> bool:
    return FUSED_CPU_KERNEL and u.device.type == "cpu" and u.dtype in (torch.float32, torch.float64)


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """Selective SSM output y (batch, L, d_inner) (module doc).

    u, delta: (batch, L, d_inner); A: (d_inner, d_state) (negative); B, C: (batch, L, d_state); D: (d_inner,).
    delta is biased; the step is softplus(delta) with `delta_softplus` (mamba_ssm's `selective_scan_fn` flag: the
    fused kernel applies it per row), else delta itself. CPU float tensors run the fused numba kernel, others the
    Blelloch scan; both equal `selective_scan_reference` (tests).
    """
    if _fused_kernel_runs(u):
        return _FusedScan.apply(u, delta, A, B, C, D, False, delta_softplus)
    if delta_softplus:
        delta = F.softplus(delta)
    dA, dBu = _discretise(u, delta, A, B)
    h = parallel_linear_scan(dA, dBu, dim=1)
    y = torch.einsum("bldn,bln->bld", h, C)
    return y if D is None else y + u * D


def selective_scan_last(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """y at the LAST time step only, (batch, d_inner): what a layer whose only consumer is the final step needs.

    The fused kernel runs the recurrence without writing the earlier outputs. Same contract as `selective_scan`
    otherwise.
    """
    if _fused_kernel_runs(u):
        return _FusedScan.apply(u, delta, A, B, C, D, True, delta_softplus)[:, 0]
    return selective_scan(u, delta, A, B, C, D, delta_softplus)[:, -1]


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    delta_softplus: bool = False,
) -> torch.Tensor:
    """The slow, obvious sequential loop over time steps (tests only); same contract as `selective_scan`."""
    if delta_softplus:
        delta = F.softplus(delta)
    dA, dBu = _discretise(u, delta, A, B)
    h = torch.zeros_like(dBu[:, 0])
    ys = []
    for t in range(u.shape[1]):
        h = dA[:, t] * h + dBu[:, t]
        ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
    y = torch.stack(ys, dim=1)
    return y if D is None else y + u * D


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The block's causal depthwise conv1d (weight (C, 1, K) as `nn.Conv1d`'s) on channels-last x (batch, L, C):
    out_t = bias + sum_k weight[:, 0, k] x_{t-K+1+k}, x zero before t = 0. As K shifted multiply-adds: no
    transposes, and about half the time of the mkldnn depthwise conv's forward+backward at the trading shapes
    (benchmarks/bench_training.py)."""
    k_size, length = weight.shape[-1], x.shape[1]
    padded = F.pad(x, (0, 0, k_size - 1, 0))
    w = weight[:, 0]
    out = padded[:, :length] * w[:, 0] if bias is None else torch.addcmul(bias, padded[:, :length], w[:, 0])
    for k in range(1, k_size):
        out = torch.addcmul(out, padded[:, k : k + length], w[:, k])
    return out


class _FusedConvSilu(torch.autograd.Function):
    """silu(causal depthwise conv) as one autograd node over the numba kernels of `phoenix_rl.agent.kernels.conv`."""

    @staticmethod
    def forward(ctx, x, weight, bias):  # type: ignore[override]
        arrays = _conv_inputs(x, weight, bias)
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight, bias)
        return torch.from_numpy(conv_kernel.conv_silu_forward(*arrays))

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        x, weight, bias = ctx.saved_tensors
        gx, gwt, gbias = conv_kernel.conv_silu_backward(*_conv_inputs(x, weight, bias), _array(g))
        return (
            torch.from_numpy(gx),
            torch.from_numpy(gwt).t().unsqueeze(1),
            torch.from_numpy(gbias) if ctx.has_bias else None,
        )


def _conv_inputs(x, weight, bias) -> tuple:  # type: ignore[no-untyped-def]
    """The conv kernels' arguments: contiguous arrays, the weights (C, 1, K) as (K, C), zeros for no bias."""
    b = bias if bias is not None else x.new_zeros(x.shape[-1])
    return tuple(_array(t) for t in (x, weight[:, 0].t(), b))


def causal_conv_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """silu(causal_depthwise_conv(x, weight, bias)), the block's conv and activation: on CPU float tensors the
    fused numba kernel (forward and backward, `phoenix_rl.agent.kernels.conv`), elsewhere the torch ops; equal
    (tests)."""
    if _fused_kernel_runs(x):
        return _FusedConvSilu.apply(x, weight, bias)
    return F.silu(causal_depthwise_conv(x, weight, bias))


class MambaBlock(nn.Module):
    """Mamba mixer (batch, L, d_model) -> (batch, L, d_model); init as `mamba_ssm.Mamba` (mamba_simple.py)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner, padding=d_conv - 1, bias=conv_bias
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        std = self.dt_rank**-0.5 * dt_scale
        if dt_init == "constant":
            nn.init.constant_(self.dt_proj.weight, std)
        elif dt_init == "random":
            nn.init.uniform_(self.dt_proj.weight, -std, std)
        else:
            raise ValueError(f"MambaBlock: dt_init must be 'random' or 'constant' (got {dt_init!r})")
        # delta bias = softplus^-1(dt), dt log-uniform in [dt_min, dt_max] (mamba_simple.py)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        # S4D-real initialisation A = -(1..N) (Gu et al. 2022, "On the Parameterization and Initialization of
        # Diagonal State Space Models"), stored as log so A stays negative
        a = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(a))
        self.A_log._no_weight_decay = True  # type: ignore[attr-defined]
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True  # type: ignore[attr-defined]
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, hidden_states: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(batch, L, d_model) -> (batch, L, d_model); with `last_only`, the last step alone (batch, 1, d_model)
        from `selective_scan_last` (same numbers, a fraction of the work)."""
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        x = causal_conv_silu(x, self.conv1d.weight, self.conv1d.bias)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = self.dt_proj(dt)  # the step is softplus(delta), applied inside the scan
        A = -torch.exp(self.A_log)
        if last_only:
            y = selective_scan_last(x, delta, A, B, C, self.D, delta_softplus=True)
            return self.out_proj(y * F.silu(z[:, -1])).unsqueeze(1)
        y = selective_scan(x, delta, A, B, C, self.D, delta_softplus=True)
        return self.out_proj(y * F.silu(z))


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019); parameter name as in mambapy/mamba_ssm."""

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def cuda_mamba_available() -> bool:
    """True when CUDA is present and `mamba_ssm` imports (never true on the CPU machines)."""
    if not torch.cuda.is_available():
        return False
    try:
        from mamba_ssm import Mamba  # noqa: F401
    except Exception:
        return False
    return True


def make_mamba_block(
    d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, *, use_cuda_kernel: bool | None = None
) -> nn.Module:
    """`mamba_ssm.Mamba` (fused CUDA scan) when asked for or, with None, when available; else `MambaBlock`.

    Both have the same state_dict, so a model trained on one loads into the other.
    """
    if use_cuda_kernel is None:
        use_cuda_kernel = cuda_mamba_available()
    if use_cuda_kernel:
        from mamba_ssm import Mamba

        return Mamba(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
    return MambaBlock(d_model, d_state=d_state, d_conv=d_conv, expand=expand)


class MambaLayer(nn.Module):
    """Pre-norm residual layer x + mixer(RMSNorm(x)) (Gu & Dao 2023, section 3.4; mambapy `ResidualBlock`)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        *,
        eps: float = 1e-5,
        use_cuda_kernel: bool | None = None,
    ) -> None:
        super().__init__()
        self.mixer = make_mamba_block(d_model, d_state, d_conv, expand, use_cuda_kernel=use_cuda_kernel)
        self.norm = RMSNorm(d_model, eps)

    def forward(self, x: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(batch, L, d_model) -> (batch, L, d_model), or the last step alone (batch, 1, d_model)."""
        if not last_only:
            return x + self.mixer(self.norm(x))
        if isinstance(self.mixer, MambaBlock):
            return x[:, -1:] + self.mixer(self.norm(x), last_only=True)
        return (x + self.mixer(self.norm(x)))[:, -1:]  # mamba_ssm.Mamba has no last-step mode
