"""The fitted LFMM2 model: a few thin n-row matrices, saved to one small .npz file atomically."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polgen.errors import InputError

FORMAT = "polgen.lfmm.model/1"


class LfmmConvergenceWarning(UserWarning):
    """The randomized SVD of :func:`polgen.lfmm.fit` reached ``max_power_iter`` before ``tol``."""


@dataclass(frozen=True)
class LfmmConvergence:
    """How the randomized SVD of :func:`polgen.lfmm.fit` ended (``model.convergence``).

    Attributes
    ----------
    passes : streamed passes over the estimation SNPs (``power_iter + 1`` for a fixed count).
    converged : the last changes are ``<= tol``, or the Krylov space became invariant (exact).
    stop : ``"tol"`` (changes below tol), ``"invariant"`` (the Krylov space stopped growing: the
        estimate is exact), ``"cap"`` (``max_power_iter`` reached, not converged) or ``"fixed"``
        (an explicit ``power_iter`` was given).
    tol, max_power_iter : the settings.
    sv_change : largest relative change of the top-K singular values between the last two passes.
    subspace_change : sine of the largest principal angle between the last two K-dimensional left
        singular subspaces.  Both are None after a single pass.
    history : ``(sv_change, subspace_change)`` after passes 2, 3, ...
    error_estimate : the stopping rule's estimate of the remaining error (see ``fit``'s ``tol``).
    """

    passes: int
    converged: bool
    stop: str
    tol: float
    max_power_iter: int
    sv_change: float | None = None
    subspace_change: float | None = None
    history: tuple[tuple[float, float], ...] = ()
    error_estimate: float | None = None

    def describe(self) -> str:
        if self.sv_change is None or self.subspace_change is None:
            last = "no change measured (one pass)"
        else:
            last = f"last changes: singular values {self.sv_change:.2g}, subspace {self.subspace_change:.2g}"
            if self.error_estimate is not None:
                last += f", estimated remaining error {self.error_estimate:.2g}"
        state = {"tol": "converged", "invariant": "exact (invariant Krylov space)", "cap": "NOT converged"}
        return f"{state.get(self.stop, 'fixed passes')}, {last}, tol={self.tol:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "converged": self.converged,
            "stop": self.stop,
            "tol": self.tol,
            "max_power_iter": self.max_power_iter,
            "sv_change": self.sv_change,
            "subspace_change": self.subspace_change,
            "history": [list(h) for h in self.history],
            "error_estimate": None
            if self.error_estimate is None or not np.isfinite(self.error_estimate)
            else self.error_estimate,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LfmmConvergence:
        return cls(
            passes=int(d["passes"]),
            converged=bool(d["converged"]),
            stop=str(d["stop"]),
            tol=float(d["tol"]),
            max_power_iter=int(d["max_power_iter"]),
            sv_change=None if d.get("sv_change") is None else float(d["sv_change"]),
            subspace_change=None if d.get("subspace_change") is None else float(d["subspace_change"]),
            history=tuple((float(a), float(b)) for a, b in d.get("history", [])),
            error_estimate=None if d.get("error_estimate") is None else float(d["error_estimate"]),
        )


@dataclass
class LfmmModel:
    """Result of :func:`polgen.lfmm.fit`.

    Attributes
    ----------
    U : (n, K) latent factors, R LEA's ``object@U`` (``Q D^-1 u_K Sigma_K``, i.e. ``Y_c V_K``).
    singular_values : (K,) leading singular values of ``D_lambda Q' Y_c``.
    U1 : (n, K) orthonormal left singular vectors of ``Q D_lambda Q' Y_c``.
    d_lambda : (d,) the shrinkage factors of the X directions (``lea``: sqrt(lam/(lam+sigma_j)),
        ``exact``: sqrt(lam/(lam+sigma_j^2))).
    Q_d : (n, d) left singular vectors of the centred X; ``sigma_x`` its singular values.
    X : (n, d) the covariates used for fitting (genotype-sample order); ``x_names`` their names.
    sample_ids : the genotype sample ids (IID) in order, or None for array input.
    params : K, lam, dlambda, scale, power_iter, tol, max_power_iter, oversampling, seed,
        n_est_snps, ..., and ``convergence`` (the dict behind :attr:`convergence`).
    """

    U: np.ndarray
    singular_values: np.ndarray
    U1: np.ndarray
    d_lambda: np.ndarray
    Q_d: np.ndarray
    sigma_x: np.ndarray
    X: np.ndarray
    x_names: list[str]
    sample_ids: list[str] | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def K(self) -> int:
        return int(self.U.shape[1])

    @property
    def convergence(self) -> LfmmConvergence | None:
        """Passes used and convergence of the randomized SVD (None for a model saved before
        polgen recorded it)."""
        c = self.params.get("convergence")
        return LfmmConvergence.from_dict(c) if isinstance(c, dict) else None

    @property
    def n_samples(self) -> int:
        return int(self.U.shape[0])

    @property
    def d(self) -> int:
        return int(self.X.shape[1])

    @property
    def D_lambda(self) -> np.ndarray:
        """The diagonal of D_lambda restricted to the d X directions (the rest are 1)."""
        return self.d_lambda

    def apply_M(self, Z: np.ndarray) -> np.ndarray:
        """``Q D Q' Z = Z - Q_d diag(1 - d) Q_d' Z`` without any n x n matrix."""
        return Z - self.Q_d @ ((1.0 - self.d_lambda)[:, None] * (self.Q_d.T @ Z))

    def apply_M_inv(self, Z: np.ndarray) -> np.ndarray:
        """``Q D^-1 Q' Z = Z + Q_d diag(1/d - 1) Q_d' Z``."""
        return Z + self.Q_d @ ((1.0 / self.d_lambda - 1.0)[:, None] * (self.Q_d.T @ Z))

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the model to ``path`` (.npz) atomically; returns the path."""
        path = Path(path)
        meta = {"format": FORMAT, "x_names": self.x_names, "sample_ids": self.sample_ids, "params": self.params}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    U=self.U,
                    singular_values=self.singular_values,
                    U1=self.U1,
                    d_lambda=self.d_lambda,
                    Q_d=self.Q_d,
                    sigma_x=self.sigma_x,
                    X=self.X,
                    meta=np.array(json.dumps(meta)),
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LfmmModel:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read LFMM model: {exc}", path=path) from exc
        try:
            meta = json.loads(str(arrays.pop("meta")))
        except (KeyError, ValueError) as exc:
            raise InputError("not a polgen LFMM model file (no metadata)", path=path) from exc
        if meta.get("format") != FORMAT:
            raise InputError(f"unsupported LFMM model format {meta.get('format')!r}", path=path)
        return cls(
            x_names=list(meta["x_names"]),
            sample_ids=meta["sample_ids"],
            params=meta["params"],
            **{k: np.ascontiguousarray(v) for k, v in arrays.items()},
        )


def load_model(path: str | os.PathLike) -> LfmmModel:
    """Read a model written by :meth:`LfmmModel.save`."""
    return LfmmModel.load(path)
