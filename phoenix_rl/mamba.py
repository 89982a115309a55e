"""Pure-PyTorch Mamba (selective state-space) block, state_dict-compatible with `mamba_ssm.Mamba`.

Model: Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces" (arXiv:2312.00752),
Algorithm 2 and section 3.5 (block = in_proj -> causal depthwise conv1d -> SiLU -> selective SSM, gated by
SiLU(z) -> out_proj). Discretisation as in the reference `selective_scan_ref` of state-spaces/mamba:
    dA_t = exp(delta_t * A)            (zero-order hold for A)
    dB_t x_t = delta_t * B_t * x_t     (Euler step for B, as the reference kernel does)
    h_t = dA_t * h_{t-1} + dB_t x_t,   y_t = <C_t, h_t> + D * x_t
with delta_t = softplus(dt_proj(x_proj(x)_dt)) and B_t, C_t from x_proj: delta, B and C depend on the input.

The scan is the linear recurrence h_t = a_t h_{t-1} + b_t. Windows up to `SEQUENTIAL_SCAN_MAX_LENGTH` (the
trading windows: L = 16-64) run `_SelectiveScan`, the whole SSM as one autograd node: a time-major loop of L
in-place steps over (batch, d_inner, d_state) slices and a hand-written backward (the adjoint recurrence run in
reverse, Martin & Cundy 2018, "Parallelizing Linear Recurrent Neural Nets Over Sequence Length", ICLR, section
3). Longer windows run a Blelloch (work-efficient) parallel scan (Blelloch 1990, "Prefix sums and their
applications"): 2 log2(L) vectorised steps over the whole (batch, L, d_inner, d_state) tensor with the
associative operator (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2), its backward the same scan reversed. Products of
decays in (0, 1] never overflow, unlike the closed form exp(S_t) * cumsum(exp(-S_s) b_s) with S the cumulative
log-decay. A layer whose only consumer is the last step (the extractor's last layer) needs h_{L-1} alone:
`selective_scan_last` computes it as one weighted sum, exp(A sum_{r>s} delta_r) <= 1 again (no scan).
Measured on this 2-core CPU (benchmarks/bench_training.py): the default extractor (L 32, d_model 32, d_state 16,
2 layers) at batch 64, forward ~11 ms and forward+backward ~34 ms, against ~26 / ~110 ms with the Blelloch scan
on every layer. `selective_scan_reference` is the plain per-step loop, used only by the tests.

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

__all__ = [
    "SEQUENTIAL_SCAN_MAX_LENGTH",
    "MambaBlock",
    "MambaLayer",
    "RMSNorm",
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


# exp(x) as exp2(x log2 e): torch's float32 exp2 kernel is ~3x faster than its exp on this CPU (AVX-512, torch
# 2.13; 0.6 vs 1.9 ms for 2M values) at an absolute error below 1e-7 for the x <= 0 of the decays, and the
# discretisation's exponentials are the largest single cost of the block
LOG2_E = 1.4426950408889634

# Windows up to this length take the fused sequential scan (`_SelectiveScan`), longer ones the Blelloch scan:
# for short windows L vectorised steps over (batch, d_inner, d_state) slices that stay in cache beat
# 2 log2(L) strided steps plus the copies around them (benchmarks/bench_training.py).
SEQUENTIAL_SCAN_MAX_LENGTH = 128


class _SelectiveScan(torch.autograd.Function):
    """The whole selective SSM (discretisation, recurrence, read-out) as one autograd node, time-major.

    Forward: dA = exp(delta A), dBu = delta u B, h_t = dA_t h_{t-1} + dBu_t by a loop over t on contiguous
    (batch, d_inner, d_state) slices, y_t = <h_t, C_t> + D u_t. Backward: the adjoint recurrence
    lambda_t = dL/dh_t|direct + dA_{t+1} lambda_{t+1} (Martin & Cundy 2018, section 3) run in place, then the
    chain rule through the discretisation by hand (Gu & Dao 2023, eq. 4): about half the tensor passes of
    autograd through the same formulas. Same order of floating-point operations as
    `selective_scan_reference` in the recurrence.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D):  # type: ignore[override]
        ut, dt = u.transpose(0, 1).contiguous(), delta.transpose(0, 1).contiguous()  # (L, batch, d_inner)
        Bt, Ct = B.transpose(0, 1).contiguous(), C.transpose(0, 1).contiguous()  # (L, batch, d_state)
        dA = torch.exp2(dt.unsqueeze(-1) * (A * LOG2_E))  # exp(delta A), (L, batch, d_inner, d_state)
        h = (dt * ut).unsqueeze(-1) * Bt.unsqueeze(2)  # dBu, overwritten by the states in place
        for t in range(1, h.shape[0]):
            h[t].addcmul_(dA[t], h[t - 1])
        y = torch.matmul(h, Ct.unsqueeze(-1)).squeeze(-1)  # (L, batch, d_inner)
        if D is not None:
            y = y + ut * D
        ctx.save_for_backward(ut, dt, A, Bt, Ct, D, dA, h)
        return y.transpose(0, 1)

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        ut, dt, A, Bt, Ct, D, dA, h = ctx.saved_tensors
        need_u, need_delta, need_A, need_B, need_C, need_D = ctx.needs_input_grad
        gyt = gy.transpose(0, 1).contiguous()  # (L, batch, d_inner)
        gC = torch.matmul(gyt.unsqueeze(2), h).squeeze(2).transpose(0, 1) if need_C else None
        gD = (gyt * ut).sum((0, 1)) if need_D else None
        lam = gyt.unsqueeze(-1) * Ct.unsqueeze(2)  # dL/dh_t from y_t, then the adjoint state in place
        for t in range(lam.shape[0] - 2, -1, -1):
            lam[t].addcmul_(dA[t + 1], lam[t + 1])
        # dL/dBu = lambda; dL/d(delta A) = lambda_t h_{t-1} dA_t (dA = exp(delta A))
        g_lin = torch.empty_like(lam)
        g_lin[0].zero_()
        torch.mul(lam[1:], h[:-1], out=g_lin[1:])
        g_lin.mul_(dA)
        g_du = (lam * Bt.unsqueeze(2)).sum(-1)  # (L, batch, d_inner): dL/d(delta u)
        gB = torch.matmul((dt * ut).unsqueeze(2), lam).squeeze(2).transpose(0, 1) if need_B else None
        gA = (g_lin * dt.unsqueeze(-1)).sum((0, 1)) if need_A else None  # not einsum: ~20x slower here
        g_delta = ((g_lin * A).sum(-1) + g_du * ut).transpose(0, 1) if need_delta else None
        gu = None
        if need_u:
            gu = g_du * dt if D is None else g_du * dt + gyt * D
            gu = gu.transpose(0, 1)
        return gu, g_delta, gA, gB, gC, gD


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """Selective SSM output y (batch, L, d_inner), vectorised over the sequence (module doc).

    u, delta: (batch, L, d_inner); A: (d_inner, d_state) (negative); B, C: (batch, L, d_state); D: (d_inner,).
    delta is already softplus-ed and biased. Windows up to `SEQUENTIAL_SCAN_MAX_LENGTH` run the fused
    sequential scan, longer ones the Blelloch scan; both equal `selective_scan_reference` (tests).
    """
    if u.shape[1] <= SEQUENTIAL_SCAN_MAX_LENGTH:
        return _SelectiveScan.apply(u, delta, A, B, C, D)
    dA, dBu = _discretise(u, delta, A, B)
    h = parallel_linear_scan(dA, dBu, dim=1)
    y = torch.einsum("bldn,bln->bld", h, C)
    return y if D is None else y + u * D


class _SelectiveScanLast(torch.autograd.Function):
    """`selective_scan_last` as one autograd node: the weighted sum of the module doc forward, its chain rule by
    hand backward (contiguous multiply-sums, no broadcast-heavy autograd graph)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D):  # type: ignore[override]
        du = delta * u  # (batch, L, d_inner)
        rest = delta.flip(1).cumsum(1).flip(1)[:, 1:].contiguous()  # sum_{r > s} delta_r, s < L-1
        w = torch.exp2(rest.unsqueeze(-1) * (A * LOG2_E))  # exp(rest A), (batch, L-1, d_inner, d_state)
        weighted = du.unsqueeze(-1) * B.unsqueeze(2)  # dBu_s, then weighted in place; step L-1 has weight 1
        weighted[:, :-1].mul_(w)
        h = weighted.sum(1)  # (batch, d_inner, d_state): the state after the last step
        c_last = C[:, -1]
        y = (h * c_last.unsqueeze(1)).sum(-1)
        if D is not None:
            y = y + u[:, -1] * D
        ctx.save_for_backward(u, delta, A, B, c_last, D, du, rest, w, h)
        return y

    @staticmethod
    def backward(ctx, gy):  # type: ignore[override]
        u, delta, A, B, c_last, D, du, rest, w, h = ctx.saved_tensors
        length = u.shape[1]
        gy = gy.contiguous()
        g_h = gy.unsqueeze(-1) * c_last.unsqueeze(1)  # (batch, d_inner, d_state)
        gC = None
        if ctx.needs_input_grad[4]:
            gC = torch.zeros(u.shape[0], length, c_last.shape[-1], dtype=h.dtype, device=h.device)
            gC[:, -1] = (h * gy.unsqueeze(-1)).sum(1)
        gD = (gy * u[:, -1]).sum(0) if D is not None and ctx.needs_input_grad[5] else None
        # P_s = dL/d(dBu_s) = w_s g_h (s < L-1), g_h at s = L-1
        P = w * g_h.unsqueeze(1)  # (batch, L-1, d_inner, d_state)
        g_du = torch.empty_like(du)
        g_du[:, :-1] = (P * B[:, :-1].unsqueeze(2)).sum(-1)
        g_du[:, -1] = (g_h * B[:, -1].unsqueeze(1)).sum(-1)
        M = P.mul_(du[:, :-1].unsqueeze(-1))  # P_s du_s, in place (P is not needed any more)
        gB = torch.empty_like(B)
        gB[:, :-1] = M.sum(2)
        gB[:, -1] = (g_h * du[:, -1].unsqueeze(-1)).sum(1)
        g_lin = M.mul_(B[:, :-1].unsqueeze(2))  # dL/d(rest A) = dL/dw * w = P_s dBu_s
        gA = (g_lin * rest.unsqueeze(-1)).sum((0, 1)) if ctx.needs_input_grad[2] else None
        g_rest = (g_lin * A).sum(-1)  # (batch, L-1, d_inner)
        # rest_s = sum_{r > s} delta_r, so dL/ddelta_r = sum_{s < r} dL/drest_s (an exclusive prefix sum)
        g_delta = g_du * u
        g_delta[:, 1:] += g_rest.cumsum(1)
        g_u = g_du * delta
        if D is not None:
            g_u[:, -1] += gy * D
        return g_u, g_delta, gA, gB, gC, gD


def selective_scan_last(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """y at the LAST time step only, (batch, d_inner): what a layer whose only consumer is the final step needs.

    The recurrence unrolled: h_{L-1} = sum_s (prod_{r>s} dA_r) dBu_s and prod_{r>s} exp(delta_r A) =
    exp(A sum_{r>s} delta_r), so the state at the end is one weighted sum over the window (no scan); the
    exponent is <= 0 (A < 0, delta > 0), so nothing overflows. Same contract as `selective_scan` otherwise.
    """
    return _SelectiveScanLast.apply(u, delta, A, B, C, D)


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """The slow, obvious sequential loop over time steps (tests only); same contract as `selective_scan`."""
    dA, dBu = _discretise(u, delta, A, B)
    h = torch.zeros_like(dBu[:, 0])
    ys = []
    for t in range(u.shape[1]):
        h = dA[:, t] * h + dBu[:, t]
        ys.append((h * C[:, t].unsqueeze(1)).sum(-1))
    y = torch.stack(ys, dim=1)
    return y if D is None else y + u * D


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
        length = hidden_states.shape[1]
        x, z = self.in_proj(hidden_states).chunk(2, dim=-1)
        # causal depthwise conv: pad d_conv-1 on both sides, keep the first L outputs
        x = F.silu(self.conv1d(x.transpose(1, 2))[..., :length].transpose(1, 2))
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt))
        A = -torch.exp(self.A_log)
        if last_only:
            y = selective_scan_last(x, delta, A, B, C, self.D)
            return self.out_proj(y * F.silu(z[:, -1])).unsqueeze(1)
        y = selective_scan(x, delta, A, B, C, self.D)
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
