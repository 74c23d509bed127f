"""Solve symmetric block-Toeplitz systems with the block Levinson recursion.

BSS-eval projects an estimate onto all delayed copies (lags ``0..L-1``) of the references. The
normal equations of that least-squares problem have a Gram matrix whose ``(i, j)`` block is
the ``K x K`` cross-correlation of the ``K`` reference channels at lag ``j - i``: it is block
Toeplitz. A dense solve costs ``O((L K)^3)`` (museval: a 4096 x 4096 LU per source); the
Levinson recursion (Whittle / Wiggins-Robinson) costs ``O(L^2 K^3)`` and solves for every
right-hand side (every estimated channel) in the same pass.

The recursion is ``L`` sequential steps of a dozen small matrix products, so its speed is
per-operation overhead: the steps run in NumPy (float64, CPU), whose overhead per call is a
fraction of torch's; tensors go in and come out.
"""

from __future__ import annotations

import numpy as np
import torch


def solve_block_toeplitz(blocks: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``T x = rhs`` where ``T[i, j] = blocks[j - i]`` and ``blocks[-m] = blocks[m]^T``.

    ``blocks``: ``(..., L, K, K)`` (lags ``0..L-1``; ``T`` must be symmetric positive definite),
    ``rhs``: ``(..., L, K, R)``. Returns float64 ``x`` shaped like ``rhs``, on ``rhs.device``.
    Leading dimensions are batched.
    """
    solution = _levinson(blocks.detach().cpu().double().numpy(), rhs.detach().cpu().double().numpy())
    return torch.from_numpy(solution).to(rhs.device)


def _levinson(blocks: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    *batch, length, k, _ = blocks.shape
    r = rhs.shape[-1]
    # Row n of T left of the diagonal is [Q_n^T, ..., Q_1^T]: keep every transposed block in
    # reverse lag order so each step's row is one contiguous slice. Row 0 right of the
    # diagonal is [Q_1, ..., Q_{L-1}].
    reverse_t = np.swapaxes(np.swapaxes(blocks[..., ::-1, :, :], -1, -2), -3, -2)
    reverse_t = np.ascontiguousarray(reverse_t).reshape(*batch, k, length * k)
    forward = np.ascontiguousarray(np.swapaxes(blocks[..., 1:, :, :], -3, -2)).reshape(*batch, k, (length - 1) * k)
    y = rhs.reshape(*batch, length * k, r)
    top = length * k
    # Forward predictor f (f_0 = I) grows at the end, rows [0, n k); it shares a buffer with
    # the solution x (columns k:), so one product gives both T[n, :n] f and T[n, :n] x. The
    # backward predictor g (last block I) grows at the front, so it is kept right-aligned,
    # rows [(L - n) k, L k): extending either one is free (the new block is already zero).
    fwd_sol = np.zeros((*batch, top, k + r))
    bwd = np.zeros((*batch, top, k))
    fwd_sol[..., :k, :k] = np.eye(k)
    bwd[..., top - k:, :] = np.eye(k)
    # errors = [U_n, V_n] with T_n g = [0, ..., 0, U_n] and T_n f = [V_n, 0, ..., 0].
    errors = np.broadcast_to(blocks[..., 0, None, :, :], (*batch, 2, k, k))
    inverses = np.linalg.inv(errors)
    fwd_sol[..., :k, k:] = inverses[..., 0, :, :] @ y[..., :k, :]
    for n in range(1, length):
        nk = n * k
        g = bwd[..., top - nk:, :]
        mismatch = reverse_t[..., top - k - nk:top - k] @ fwd_sol[..., :nk, :]  # T[n, :n] [f x]
        delta_f, eps = mismatch[..., :k], mismatch[..., k:]
        delta_g = forward[..., :nk] @ g                                        # T[0, 1:n+1] g
        deltas = np.stack([delta_f, delta_g], axis=-3)
        coefs = inverses @ deltas            # [U^-1 delta_f, V^-1 delta_g] = -[alpha, beta]
        g_alpha = g @ coefs[..., 0, :, :]
        f_beta = fwd_sol[..., :nk, :k] @ coefs[..., 1, :, :]
        fwd_sol[..., k:nk + k, :k] -= g_alpha              # f' = [f; 0] + [0; g] alpha
        bwd[..., top - nk - k:top - k, :] -= f_beta        # g' = [0; g] + [f; 0] beta
        errors = errors - deltas @ coefs[..., ::-1, :, :]  # U' = U + dF beta, V' = V + dG alpha
        inverses = np.linalg.inv(errors)
        # x' = [x; 0] + g' U'^-1 (y_n - T[n, :n] x)
        fwd_sol[..., :nk + k, k:] += bwd[..., top - nk - k:, :] @ (
            inverses[..., 0, :, :] @ (y[..., nk:nk + k, :] - eps))
    return fwd_sol[..., k:].reshape(rhs.shape)


def dense_block_toeplitz(blocks: torch.Tensor) -> torch.Tensor:
    """The full ``(L K, L K)`` matrix of :func:`solve_block_toeplitz` (for tests and small cases)."""
    *batch, length, k, _ = blocks.shape
    lags = torch.arange(length)
    diff = lags[None, :] - lags[:, None]  # j - i
    full = torch.where((diff >= 0)[..., None, None], blocks[..., diff.abs(), :, :],
                       blocks[..., diff.abs(), :, :].transpose(-1, -2))
    return full.movedim(-3, -2).reshape(*batch, length * k, length * k)
