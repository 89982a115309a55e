"""Numba kernels of the selective scan (forward and backward), fused so the (batch, L, d_inner, d_state) states are
never built as a chain of broadcast tensors: the CPU path of `phoenix_rl.agent.mamba.selective_scan`.

Per batch row b and time step t, over a (d_state, d_inner) state that stays in L1 cache:

    forward   dA = exp(delta_t A), h_t = dA * h_{t-1} + delta_t u_t B_t, y_t = <h_t, C_t> + D u_t
    backward  lam_t = gy_t C_t + dA_{t+1} * lam_{t+1}  (the adjoint recurrence, Martin & Cundy 2018, section 3),
              g(delta A)_t = lam_t h_{t-1} dA_t, then the chain rule through the discretisation by hand

The state is state-major, (d_state, d_inner), so every inner loop runs over d_inner (contiguous, vectorised) and
the sums over d_state are vertical adds into per-channel vectors, not a horizontal sum per channel (the
(d_inner, d_state) layout's backward was 5.6 ms against 3.4 at the default shape). The forward stores nothing: the
backward runs each batch row's recurrence again into an L2-resident row buffer (states and decays) and the adjoint
over it, one fused loop per state row (forward + backward at the default shape 1.5 + 3.0 ms, against 2.3 + 3.2 ms
when the forward wrote every state for the backward to read back: 8 MiB a layer, through main memory).
In float32 the exponential is `exp2_row`'s exp2: Cephes exp2f's polynomial on [-1/2, 1/2] and the power of two
written into the exponent bits, relative error < 2e-7 (tested), a loop LLVM vectorises, which `math.exp` is not
without Intel's SVML (2M values: 1-1.5 ms against 11 ms here); float64 (the tests' reference precision) uses
`math.exp2`. With `softplus` the kernels take the step's pre-activation and apply softplus per row, its derivative
(the sigmoid) in the backward (`softplus_row`: the same exp2 and Cephes logf's log1p polynomial in float32), as
mamba_ssm's CUDA kernel does with `delta_softplus`.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba.extending import overload

__all__ = ["exp2_f32_of", "exp2_row", "scan_backward", "scan_forward", "softplus_f32_of", "softplus_row"]

LOG2_E = 1.4426950408889634
# Cephes exp2f: 2^f ~ 1 + f P(f) on |f| <= 1/2
_P0, _P1, _P2, _P3, _P4, _P5 = (
    1.535336188319500e-4,
    1.339887440266574e-3,
    9.618437357674640e-3,
    5.550332471162809e-2,
    2.402264791363012e-1,
    6.931472028550421e-1,
)


def exp2_row(x: np.ndarray, out: np.ndarray, bits: np.ndarray, scale: np.ndarray) -> None:
    """out[n] = 2^x[n] (= exp(a) for x = a log2 e) for x <= 0; `bits` is int32 scratch of out's length (the
    power of two's exponent bits) and `scale` its float32 view. Called from Python it is numpy's exp2; inside the
    numba kernels `_exp2_row_impl` replaces it, per dtype."""
    np.exp2(x, out=out)


@overload(exp2_row, fastmath=True, inline="always")
def _exp2_row_impl(x, out, bits, scale):  # type: ignore[no-untyped-def]
    if out.dtype == nb.float64:

        def exp_f64(x, out, bits, scale):  # type: ignore[no-untyped-def]
            for n in range(x.shape[0]):
                out[n] = math.exp2(x[n])

        return exp_f64

    def exp2_f32(x, out, bits, scale):  # type: ignore[no-untyped-def]
        for n in range(x.shape[0]):
            v = max(x[n], np.float32(-126.0))  # below 2^-126 the decay is 0 for every purpose
            k = np.int32(v - np.float32(0.5))  # round(v) for v <= 0 (truncation; math.floor does not vectorise)
            f = v - np.float32(k)  # in [-1/2, 1/2]
            p = np.float32(_P0)
            p = p * f + np.float32(_P1)
            p = p * f + np.float32(_P2)
            p = p * f + np.float32(_P3)
            p = p * f + np.float32(_P4)
            p = p * f + np.float32(_P5)
            out[n] = p * f + np.float32(1.0)
            bits[n] = (k + np.int32(127)) << np.int32(23)
        for n in range(x.shape[0]):
            out[n] *= scale[n]

    return exp2_f32


@nb.njit(fastmath=True, cache=True)
def exp2_f32_of(x: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """2^x of a float32 array by the kernels' exp2 (tests); `bits` int32 scratch of x's length."""
    out = np.empty_like(x)
    exp2_row(x, out, bits, bits.view(np.float32))
    return out


# Cephes logf: log(1 + x) ~ x - x^2 / 2 + x^3 Q(x) on sqrt(1/2) - 1 <= x <= sqrt(2) - 1
_Q = (
    7.0376836292e-2,
    -1.1514610310e-1,
    1.1676998740e-1,
    -1.2420140846e-1,
    1.4249322787e-1,
    -1.6668057665e-1,
    2.0000714765e-1,
    -2.4999993993e-1,
    3.3333331174e-1,
)
_SQRT2_M1 = 0.41421356237309503
_LN2 = 0.6931471805599453


def softplus_row(pre: np.ndarray, out: np.ndarray, sig: np.ndarray, bits: np.ndarray, scale: np.ndarray) -> None:
    """out = softplus(pre) (torch's: pre itself above 20), sig = sigmoid(pre) (its derivative), per element;
    `bits`/`scale` as `exp2_row`'s. Inside the numba kernels `_softplus_row_impl` runs, per dtype: float32 as
    max(pre, 0) + log1p(e) and sigmoid from e = exp(-|pre|) <= 1 (`exp2_row`'s exp2, Cephes logf's polynomial for
    log1p, never 1 + e rounded for small e), float64 with `math`. From Python: numpy (tests)."""
    e = np.exp(-np.abs(pre))
    out[:] = np.where(pre > 20, pre, np.maximum(pre, 0) + np.log1p(e))
    sig[:] = np.where(pre >= 0, 1, e) / (1 + e)


@overload(softplus_row, fastmath=True, inline="always")
def _softplus_row_impl(pre, out, sig, bits, scale):  # type: ignore[no-untyped-def]
    if out.dtype == nb.float64:

        def softplus_f64(pre, out, sig, bits, scale):  # type: ignore[no-untyped-def]
            for n in range(pre.shape[0]):
                x = pre[n]
                e = math.exp(-abs(x))
                out[n] = x if x > 20 else max(x, 0.0) + math.log1p(e)
                sig[n] = (1.0 if x >= 0 else e) / (1.0 + e)

        return softplus_f64

    def softplus_f32(pre, out, sig, bits, scale):  # type: ignore[no-untyped-def]
        for n in range(pre.shape[0]):
            sig[n] = -abs(pre[n]) * np.float32(LOG2_E)
        exp2_row(sig, sig, bits, scale)  # sig = e = exp(-|pre|) for now
        for n in range(pre.shape[0]):
            x, e = pre[n], sig[n]
            big = e > np.float32(_SQRT2_M1)  # log1p(e) = ln 2 + log((1 + e) / 2), the argument near 1
            v = e * np.float32(0.5) - np.float32(0.5) if big else e
            z = v * v
            q = np.float32(_Q[0])
            for c in _Q[1:]:
                q = q * v + np.float32(c)
            log1p_e = v + (v * z * q - np.float32(0.5) * z) + (np.float32(_LN2) if big else np.float32(0))
            out[n] = x if x > np.float32(20) else max(x, np.float32(0)) + log1p_e
            sig[n] = (np.float32(1) if x >= 0 else e) / (np.float32(1) + e)

    return softplus_f32


@nb.njit(fastmath=True, cache=True)
def softplus_f32_of(pre: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(softplus, sigmoid) of a float32 array by the kernels' `softplus_row` (tests); `bits` as `exp2_f32_of`'s."""
    out, sig = np.empty_like(pre), np.empty_like(pre)
    softplus_row(pre, out, sig, bits, bits.view(np.float32))
    return out, sig


@nb.njit(fastmath=True, cache=True, inline="always")
def _decays(dt, A2t, x, dA, bits, scale):  # type: ignore[no-untyped-def]
    """dA[n, d] = exp(dt[d] A[n, d]) = 2^(dt[d] A2t[n, d]) for one time step, through the scratch x (the forward
    computes the decays, the backward recomputes them)."""
    for n in range(A2t.shape[0]):
        for d in range(A2t.shape[1]):
            x[n, d] = dt[d] * A2t[n, d]
    exp2_row(x.reshape(-1), dA.reshape(-1), bits, scale)


@nb.njit(fastmath=True, cache=True, error_model="numpy")
def scan_forward(u, delta, A2t, B, C, D, last_only, softplus):  # type: ignore[no-untyped-def]
    """y (batch, L, d_inner), or (batch, 1, d_inner) with `last_only`. A2t = (A log2 e) transposed, (d_state,
    d_inner); D may be empty; with `softplus`, delta is the pre-activation and softplus(delta) the step (as
    mamba_ssm's `delta_softplus`). Nothing is stored for the backward: `scan_backward` recomputes the states."""
    batch, length, d_inner = u.shape
    d_state = A2t.shape[0]
    dtype = u.dtype
    y = np.empty((batch, 1 if last_only else length, d_inner), dtype)
    h = np.empty((d_state, d_inner), dtype)
    x = np.empty((d_state, d_inner), dtype)
    dA = np.empty((d_state, d_inner), dtype)
    du = np.empty(d_inner, dtype)
    acc = np.empty(d_inner, dtype)
    dt_row, sig = np.empty(d_inner, dtype), np.empty(d_inner, dtype)
    bits = np.empty(d_state * d_inner, np.int32)
    scale = bits.view(np.float32)
    has_d = D.shape[0] > 0
    for b in range(batch):
        h[:] = 0
        for t in range(length):
            ut = u[b, t]
            if softplus:
                softplus_row(delta[b, t], dt_row, sig, bits, scale)
                dt = dt_row
            else:
                dt = delta[b, t]
            _decays(dt, A2t, x, dA, bits, scale)
            for d in range(d_inner):
                du[d] = dt[d] * ut[d]
                acc[d] = D[d] * ut[d] if has_d else 0
            for n in range(d_state):
                bn, cn = B[b, t, n], C[b, t, n]
                for d in range(d_inner):
                    hn = dA[n, d] * h[n, d] + du[d] * bn
                    h[n, d] = hn
                    acc[d] += hn * cn
            if t == length - 1 or not last_only:
                y[b, 0 if last_only else t] = acc
    return y


@nb.njit(fastmath=True, cache=True, error_model="numpy")
def scan_backward(u, delta, A2t, B, C, D, gy, softplus):  # type: ignore[no-untyped-def]
    """Gradients (gu, g_delta, gAt, gB, gC, gD) of `scan_forward`'s y given gy (batch, L, d_inner) (zeros
    before the last step for a last-only output); gAt = dL/dA transposed (d_state, d_inner); with `softplus`,
    g_delta is the gradient of the pre-activation (through sigmoid(delta), softplus' derivative).

    Per batch row, the forward recurrence is run again first, its states and decays kept in two (L + 1,
    d_state, d_inner) row buffers (256 KiB at the default shape: L2-resident), then the adjoint runs over them
    in reverse. Cheaper than the forward writing every row's states (8 MiB a layer at the default shape) for
    the backward to read back from memory."""
    batch, length, d_inner = u.shape
    d_state = A2t.shape[0]
    dtype = u.dtype
    gu = np.empty_like(u)
    g_delta = np.empty_like(delta)
    gAt = np.zeros(A2t.shape, dtype)
    gB = np.empty_like(B)
    gC = np.empty_like(C)
    gD = np.zeros(D.shape[0], dtype)
    has_d = D.shape[0] > 0
    ln2 = dtype.type(1.0 / LOG2_E)
    hs = np.empty((length + 1, d_state, d_inner), dtype)  # hs[t + 1] = h_t; hs[0] = h_{-1} = 0
    dAs = np.empty((length + 1, d_state, d_inner), dtype)  # dAs[t] = dA_t; dAs[L] = 0 (no step after the last)
    dts = np.empty((length, d_inner), dtype)  # the steps (softplus(delta) with `softplus`)
    sigs = np.empty((length, d_inner), dtype)  # d step / d delta: sigmoid(delta) with `softplus`
    hs[0] = 0
    dAs[length] = 0
    lam = np.empty((d_state, d_inner), dtype)
    x = np.empty((d_state, d_inner), dtype)
    du = np.empty(d_inner, dtype)
    g_du = np.empty(d_inner, dtype)  # dL/d(delta_t u_t)
    g_dA = np.empty(d_inner, dtype)  # sum_n dL/d(delta_t A) A2: dL/d(delta_t) through dA_t, over ln 2
    bits = np.empty(d_state * d_inner, np.int32)
    scale = bits.view(np.float32)
    for b in range(batch):
        for t in range(length):  # the forward again: steps, states and decays of this row
            ut, dt = u[b, t], dts[t]
            if softplus:
                softplus_row(delta[b, t], dt, sigs[t], bits, scale)
            else:
                dt[:] = delta[b, t]
            dA, h_prev, h = dAs[t], hs[t], hs[t + 1]
            _decays(dt, A2t, x, dA, bits, scale)
            for d in range(d_inner):
                du[d] = dt[d] * ut[d]
            for n in range(d_state):
                bn = B[b, t, n]
                for d in range(d_inner):
                    h[n, d] = dA[n, d] * h_prev[n, d] + du[d] * bn
        lam[:] = 0
        for t in range(length - 1, -1, -1):
            dt, ut, g = dts[t], u[b, t], gy[b, t]
            dA, dA_next, h_prev, h_t = dAs[t], dAs[t + 1], hs[t], hs[t + 1]
            for d in range(d_inner):
                du[d] = dt[d] * ut[d]
                g_du[d] = 0
                g_dA[d] = 0
            for n in range(d_state):
                bn, cn = B[b, t, n], C[b, t, n]
                gb = dtype.type(0)
                gc = dtype.type(0)
                for d in range(d_inner):
                    lam_n = g[d] * cn + dA_next[n, d] * lam[n, d]
                    lam[n, d] = lam_n
                    gl = lam_n * h_prev[n, d] * dA[n, d]  # dL/d(delta_t A) (dA = exp(delta_t A))
                    gAt[n, d] += gl * dt[d]
                    g_dA[d] += gl * A2t[n, d]
                    g_du[d] += lam_n * bn
                    gb += lam_n * du[d]
                    gc += g[d] * h_t[n, d]
                gB[b, t, n] = gb
                gC[b, t, n] = gc
            for d in range(d_inner):
                g_step = g_dA[d] * ln2 + g_du[d] * ut[d]
                g_delta[b, t, d] = g_step * sigs[t, d] if softplus else g_step
                gu[b, t, d] = g_du[d] * dt[d] + (g[d] * D[d] if has_d else 0)
                if has_d:
                    gD[d] += g[d] * ut[d]
    return gu, g_delta, gAt, gB, gC, gD
