"""The block Krylov basis of the LFMM fit's randomized SVD and its convergence check
(:mod:`polgen.lfmm.fit`): the growing orthonormal basis with its products kept up to date pass
by pass, the Nyström estimate and the fit's result from its small products, the next block, and
the stopping rule."""

from __future__ import annotations

import numpy as np
import scipy.linalg as sla

from polgen.errors import InputError


class _Krylov:
    """The growing orthonormal Krylov basis ``Q`` (n x m), ``acc = Yc Yc' M Q`` and ``H = M acc =
    A A' Q`` in preallocated buffers, with the small products ``Q' H`` and ``H' H`` kept up to date
    block by block (O(n m l) per pass), so that the per-pass convergence check costs O(n m K + m^3)
    instead of the O(n m^2) of a full Nyström step."""

    def __init__(self, n: int, cap: int) -> None:
        cap = min(cap, n)
        # column-major: a pass's block is a contiguous slab, and the thin products with Q (the
        # next block's sweep, on the fit's critical path between passes) read it with unit stride
        self._Q = np.empty((n, cap), order="F")
        self._acc = np.empty((n, cap), order="F")
        self._H = np.empty((n, cap), order="F")
        self._QH = np.empty((cap, cap))
        self._HH = np.empty((cap, cap))
        self._top: tuple[np.ndarray, np.ndarray, float] | None = None
        self.m = 0
        self.passes = 0
        self._pending: list[tuple[int, int, np.ndarray]] = []

    @property
    def Q(self) -> np.ndarray:
        return self._Q[:, : self.m]

    @property
    def acc(self) -> np.ndarray:
        return self._acc[:, : self.m]

    @property
    def H(self) -> np.ndarray:
        return self._H[:, : self.m]

    def add(self, G: np.ndarray, acc: np.ndarray, H: np.ndarray) -> None:
        """Append a pass's block; its small products are computed by the next :meth:`estimate`
        (after the next pass has been started: they are not on its critical path)."""
        a, b = self.m, self.m + G.shape[1]
        self._Q[:, a:b], self._acc[:, a:b], self._H[:, a:b] = G, acc, H
        self._pending.append((a, b, H))
        self.m = b
        self.passes += 1

    def _products(self) -> None:
        for a, b, H in self._pending:
            Q, Hb = self._Q[:, :b], self._H[:, :b]
            qh = Q.T @ H  # (b, l): Q' A A' G = (G' A A' Q)'
            self._QH[:b, a:b] = qh
            self._QH[a:b, :b] = qh.T
            hh = Hb.T @ H
            self._HH[:b, a:b] = hh
            self._HH[a:b, :b] = hh.T
        self._pending.clear()

    def estimate(self, K: int, keep: int | None = None, rough: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(U1, sigma)`` of the stabilised Nyström approximation on span(Q), from the small
        products: ``F = Hn C^-T`` (``Hn = H + nu Q``, ``C C' = Q' Hn``) is never formed, only
        ``F'F = C^-1 (H'H + 2 nu B + nu^2 I) C^-T`` (m x m), whose top eigenpairs are those of
        ``F F'`` (the squared singular values and right vectors of F).  Only the top
        ``max(K, keep)`` eigenpairs are computed (LAPACK's evr on an index range); what
        :meth:`final` needs is kept.  ``U1`` is orthonormalised (F'F squares F's condition, not
        the accuracy of the well separated top pairs: the eigenvector error is ~eps s_1^2 /
        (s_K^2 - s_{K+1}^2)) and each column's largest entry is positive.  When ``Q' Hn`` is not
        positive definite, ``nu`` grows by 1e-10 of its trace, and with ``rough`` (products with
        float32 rounding in the basis) up to 1e-4 of it (the estimate then carries an error of
        that order)."""
        self._products()
        m = self.m
        B = 0.5 * (self._QH[:m, :m] + self._QH[:m, :m].T)
        HH = 0.5 * (self._HH[:m, :m] + self._HH[:m, :m].T)
        nu = np.finfo(np.float64).eps * max(np.sqrt(max(np.trace(HH), 0.0)), 1e-300)
        eye = np.eye(m)
        base, tr = nu, max(np.trace(B), 1e-300)
        for grow in (0.0, 1e-10, 1e-8, 1e-6, 1e-4) if rough else (0.0, 1e-10):
            nu = base + grow * tr
            try:
                C = np.linalg.cholesky(B + nu * eye)
                break
            except np.linalg.LinAlgError:
                if grow == (1e-4 if rough else 1e-10):
                    raise
        # F = Hn C^-T with Hn = H + nu Q: F'F = C^-1 (H'H + 2 nu B + nu^2 I) C^-T
        T = sla.solve_triangular(C, HH + 2.0 * nu * B + nu * nu * eye, lower=True, check_finite=False)
        FF = sla.solve_triangular(C, T.T, lower=True, check_finite=False)
        k = min(K, m)
        kk = min(max(k, keep or 0), m)
        w, V = sla.eigh(0.5 * (FF + FF.T), subset_by_index=(m - kk, m - 1), check_finite=False)
        w, V = w[::-1], V[:, ::-1]
        Sf = np.sqrt(np.maximum(w[:k], 1e-300))
        W = sla.solve_triangular(C.T, V[:, :k], lower=False, check_finite=False)  # C^-T V
        U1 = (self.H @ W + nu * (self.Q @ W)) / Sf
        U1, R = np.linalg.qr(U1)  # orthonormal to rounding; R ~ diag(+-1)
        big = np.abs(U1).argmax(axis=0)
        flip = np.where(U1[big, np.arange(k)] < 0.0, -1.0, 1.0)
        U1 *= flip
        W = W * (np.sign(np.diag(R)) * flip)  # the same signs for U
        self._last = (W, Sf, nu, np.maximum(w - nu, 0.0))
        self._top = (C, V, nu)  # for restart()
        return U1, np.sqrt(np.maximum(w[:k] - nu, 0.0))

    def ritz(self, K: int, keep: int) -> tuple[np.ndarray, np.ndarray]:
        """``(U1, sigma)`` of the Rayleigh-Ritz step on span(Q) (the top ``max(K, keep)``
        eigenpairs of ``Q' H``; their vectors kept for :meth:`restart`): for the float32 passes
        when their rounding leaves ``Q' H`` too far from positive definite for :meth:`estimate`."""
        self._products()
        m = self.m
        B = 0.5 * (self._QH[:m, :m] + self._QH[:m, :m].T)
        k = min(K, m)
        kk = min(max(k, keep), m)
        w, V = sla.eigh(B, subset_by_index=(m - kk, m - 1), check_finite=False)
        self._top = (np.eye(m), V[:, ::-1], 0.0)
        return self.Q @ V[:, ::-1][:, :k], np.sqrt(np.maximum(w[::-1][:k], 0.0))

    def restart(self, width: int) -> np.ndarray:
        """An orthonormal basis of the top ``width`` approximate eigenvectors of the last
        :meth:`estimate` (``Hn C^-T V``, the left singular vectors of F) or :meth:`ritz` (``Q V``):
        the first block of a new basis."""
        assert self._top is not None
        C, V, nu = self._top
        W = sla.solve_triangular(C.T, V[:, :width], lower=False, check_finite=False)
        Y, _ = np.linalg.qr(self.H @ W + nu * (self.Q @ W) if nu > 0.0 else self.Q @ W)
        return np.ascontiguousarray(Y)

    def final(self, est: tuple[np.ndarray, np.ndarray], Minv, K: int):
        """The fit's result from the last :meth:`estimate` (``est``, on the whole basis): ``(U1,
        sigma, U, eigenvalues)`` with ``U = M^-1 U1 diag(sigma) = (acc + nu M^-1 Q) C^-T V
        diag(sigma / Sf)`` built from the unshrunk accumulators (the huge ``1/d`` factors of M^-1
        never amplify sketch error) and the top ``keep`` eigenvalues of ``A A'``."""
        W, Sf, nu, eig = self._last
        U1, sigma = est
        if sigma.size < K or sigma[-1] <= 1e-10 * max(sigma[0], 1e-300):
            raise InputError(f"the genotypes have rank < K={K} after removing X; use a smaller K")
        U = (self.acc + nu * Minv(self.Q)) @ (W * (sigma / Sf))
        return np.ascontiguousarray(U1), sigma, np.ascontiguousarray(U), eig


def _gap_text(eig: np.ndarray, K: int) -> str:
    if eig.size <= K:
        return "unknown"
    return f"{np.sqrt(eig[K - 1]):.6g} and {np.sqrt(eig[K]):.6g}"


def _remaining_error(history: list[tuple[float, float]]) -> float:
    """Estimated distance of the current estimate from the converged one (the stopping rule).

    For each measure (relative singular-value change, subspace sine) with the last two changes
    ``d_{j-1}, d_j``: ``d_j rho / (1 - rho)`` with ``rho = d_j / d_{j-1}`` (the tail of a geometric
    series: what is left if the error keeps shrinking by rho per pass; block Krylov errors shrink
    faster and faster, so this overestimates), infinite when ``rho >= 1``; after two passes (one
    change) the change itself.  Returns the larger of the two measures' estimates."""
    if not history:
        return float("inf")
    out = 0.0
    for m in range(2):
        d = history[-1][m]
        if len(history) >= 2 and d > 0.0:
            rho = d / history[-2][m] if history[-2][m] > 0.0 else float("inf")
            d = d * rho / (1.0 - rho) if rho < 1.0 else float("inf")
        out = max(out, d)
    return out


def _likely_last(history: list[tuple[float, float]], tol: float) -> bool:
    """Whether the pass just made will probably end the adaptive iteration: the estimated
    remaining error before it, shrunk by the last ratio of changes, is within ``2 tol``.  Then the
    next pass is not started ahead of the convergence check (it would be cancelled, and would take
    the cores from the check and the final Nyström step); the results are the same either way."""
    if len(history) < 2:
        return False
    rho = max(history[-1][m] / history[-2][m] if history[-2][m] > 0.0 else 1.0 for m in range(2))
    return _remaining_error(history) * min(rho, 1.0) <= 2.0 * tol


def _changes(prev, est) -> tuple[float, float]:
    """The convergence measures between two successive estimates ``(U1, sigma, ...)``: the largest
    relative change of the top-K singular values and the sine of the largest principal angle
    between the two K-dimensional left singular subspaces (``||(I - U1 U1') U1_prev||_2``)."""
    U1p, sp = prev[0], prev[1]
    U1, s = est[0], est[1]
    sv = float(np.max(np.abs(s - sp) / np.maximum(s, 1e-300)))
    E = U1p - U1 @ (U1.T @ U1p)  # n x K: its 2-norm from the K x K E'E (no SVD of E)
    sub = float(np.sqrt(max(np.linalg.eigvalsh(E.T @ E)[-1], 0.0)))
    return sv, min(sub, 1.0)


def _next_block(Qk: np.ndarray, Z: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis of the part of ``Z`` (= A A' times the last block) outside span(Qk):
    a block Gram-Schmidt sweep, then the left singular vectors of what is left.  Directions that
    are (numerically) already in span(Qk) are dropped; ``None`` when nothing is left, i.e.
    span(Qk) is invariant under A A' and holds the exact eigenvectors.  One sweep leaves the kept
    vectors orthogonal to Qk to ~eps |Z| / s for their singular value s (the bench's blocks: s
    >= 0.03 |Z|, 1e-14): only when some kept ``s < 1e-2 |Z|`` are they swept once more and
    re-orthonormalised (full reorthogonalisation keeps the Krylov basis orthonormal to rounding,
    so the Nyström step never divides by tiny singular values of a skewed basis; this step is on
    the fit's critical path between two passes)."""
    scale = np.linalg.norm(Z)
    if scale == 0.0:
        return None
    Z = Z - Qk @ (Qk.T @ Z)
    W, S, _ = np.linalg.svd(Z, full_matrices=False)
    keep = S > 1e-11 * scale
    if not keep.any():
        return None
    room = Qk.shape[0] - Qk.shape[1]
    G = W[:, keep][:, :room]
    if S[keep][: G.shape[1]].min() < 1e-2 * scale:
        G = G - Qk @ (Qk.T @ G)
        G, _ = np.linalg.qr(G)
    return np.ascontiguousarray(G)


def _at_floor(history: list[tuple[float, float]]) -> bool:
    """Whether the float32 passes' subspace changes have stopped shrinking: below 1e-3 and more
    than 0.7 times the previous one (their rounding floor, or slow convergence: either way, the
    float64 passes take over)."""
    if len(history) < 2:
        return False
    d, before = history[-1][1], history[-2][1]
    return d < 1e-3 and d > 0.7 * before
