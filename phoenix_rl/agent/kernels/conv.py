"""Numba kernels of the Mamba block's causal depthwise conv1d and the SiLU after it, fused (forward and backward):
the CPU path of `phoenix_rl.agent.mamba.causal_conv_silu`.

    forward   s_t = bias + sum_k w_k x_{t-K+1+k} (x = 0 before t = 0),   out_t = silu(s_t) = s_t sigmoid(s_t)
    backward  g_s = g sigmoid(s) (1 + s (1 - sigmoid(s))),  dx_j = sum_k w_k g_s(j+K-1-k),  dw_k = sum g_s x,
              dbias = sum g_s

Channels-last (batch, L, C): every inner loop runs over the contiguous channels. Unfused, the same block is K
torch multiply-adds, the SiLU and their autograd nodes: ~12 tensor passes over (batch, L, C) forward and backward
where this makes two. The backward recomputes s rather than have the forward store it. sigmoid(s) is
1 / (1 + e) for s >= 0 and e / (1 + e) below, with e = exp(-|s|) <= 1 from the scan kernels' vectorised exp2
(`phoenix_rl.agent.kernels.scan.exp2_row`; float64, the tests' reference precision, uses `math.exp2`).
"""

from __future__ import annotations

import numba as nb
import numpy as np

from phoenix_rl.agent.kernels.scan import LOG2_E, exp2_row

__all__ = ["conv_silu_backward", "conv_silu_forward"]


@nb.njit(fastmath=True, cache=True, inline="always")
def _conv_sigmoid(x, b, t, wt, bias, s, sig, bits, scale):  # type: ignore[no-untyped-def]
    """s = the conv's output at (b, t) (channels), sig = sigmoid(s); `sig` holds exp(-|s|) on the way."""
    k_size = wt.shape[0]
    for c in range(s.shape[0]):
        s[c] = bias[c]
    for k in range(k_size):
        src = t - k_size + 1 + k
        if src >= 0:
            for c in range(s.shape[0]):
                s[c] += wt[k, c] * x[b, src, c]
    for c in range(s.shape[0]):
        sig[c] = -abs(s[c]) * LOG2_E
    exp2_row(sig, sig, bits, scale)
    for c in range(s.shape[0]):
        e = sig[c]
        sig[c] = (1 if s[c] >= 0 else e) / (1 + e)


@nb.njit(cache=True, inline="always")
def _row_scratch(x):  # type: ignore[no-untyped-def]
    """`_conv_sigmoid`'s buffers for x's channels: s, sig, and the exp2's int32 bits with their float32 view."""
    chans = x.shape[-1]
    bits = np.empty(chans, np.int32)
    return np.empty(chans, x.dtype), np.empty(chans, x.dtype), bits, bits.view(np.float32)


@nb.njit(fastmath=True, cache=True, error_model="numpy")
def conv_silu_forward(x, wt, bias):  # type: ignore[no-untyped-def]
    """silu(causal depthwise conv of x): x (batch, L, C), wt the weights (K, C) (tap k reads x_{t-K+1+k}),
    bias (C,) (zeros for none)."""
    batch, length, chans = x.shape
    out = np.empty_like(x)
    s, sig, bits, scale = _row_scratch(x)
    for b in range(batch):
        for t in range(length):
            _conv_sigmoid(x, b, t, wt, bias, s, sig, bits, scale)
            for c in range(chans):
                out[b, t, c] = s[c] * sig[c]
    return out


@nb.njit(fastmath=True, cache=True, error_model="numpy")
def conv_silu_backward(x, wt, bias, g):  # type: ignore[no-untyped-def]
    """Gradients (gx, gwt, gbias) of `conv_silu_forward`'s output given g (batch, L, C); gwt is (K, C)."""
    batch, length, chans = x.shape
    k_size = wt.shape[0]
    gx = np.zeros_like(x)
    gwt = np.zeros_like(wt)
    gbias = np.zeros_like(bias)
    gs = np.empty(chans, x.dtype)
    s, sig, bits, scale = _row_scratch(x)
    for b in range(batch):
        for t in range(length):
            _conv_sigmoid(x, b, t, wt, bias, s, sig, bits, scale)
            for c in range(chans):
                gs[c] = g[b, t, c] * sig[c] * (1 + s[c] * (1 - sig[c]))
                gbias[c] += gs[c]
            for k in range(k_size):
                src = t - k_size + 1 + k
                if src >= 0:
                    for c in range(chans):
                        gx[b, src, c] += wt[k, c] * gs[c]
                        gwt[k, c] += gs[c] * x[b, src, c]
    return gx, gwt, gbias
