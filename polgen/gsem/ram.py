"""A :class:`~polgen.gsem.syntax.ParTable` compiled to RAM matrices with integer index maps.

Formulation (RAM, McArdle & McDonald): all ``m`` variables (observed first, in lavaan's order,
then latent) are stacked; ``A`` (m x m) holds directed paths (``A[i, j]`` is the effect of ``j`` on
``i``: loadings ``F =~ x`` give ``A[x, F]``, regressions ``y ~ x`` give ``A[y, x]``) and ``S``
(m x m, symmetric) holds (residual) variances and covariances.  With ``B = (I - A)^-1``::

    C      = B S B'                (covariance of all variables)
    Sigma  = C[:p, :p]             (model-implied covariance of the p observed variables)
    d Sigma / d A[i, j]      = B[:, i] C[j, :] + (B[:, i] C[j, :])'     (restricted to observed)
    d Sigma / d S[i, j]      = B[:, i] B[:, j]' + B[:, j] B[:, i]'      (i != j)
    d Sigma / d S[i, i]      = B[:, i] B[:, i]'

This gives the same implied covariance as lavaan's LISREL matrices.  The Jacobian is returned for
``vech(Sigma)`` (lower triangle column by column, lavaan's order), one column per free parameter,
in the order of the ``free`` index of the parameter table.

Raw arrays for per-SNP work (:class:`CompiledModel` is picklable; compile once):

* ``par_kind[k]`` (0 = A, 1 = S), ``par_row[k]``, ``par_col[k]`` for free parameter ``k``;
* ``A0``, ``S0``: matrices holding the fixed values (free cells zero);
* ``exo_row``, ``exo_col``: cells of ``S0`` that are fixed.x covariate (co)variances, filled from the
  sample covariance by :meth:`CompiledModel.base_matrices` (for a GWAS: the SNP variance);
* ``vech_row``, ``vech_col``: the observed-matrix cells of each ``vech`` element.

:meth:`CompiledModel.entries` lays the model out for the RAM kernel of :mod:`polgen.kernels.ram`
(the one implied-covariance kernel of the project: the SEM fit and the per-SNP GWAS fits use it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from polgen.errors import ModelError
from polgen.gsem.matrix import vech_indices
from polgen.gsem.syntax import ParTable, parse_model

__all__ = ["CompiledModel", "KernelLayout", "Numbering", "compile_model", "kernel_layout", "vech_index"]


@dataclass
class CompiledModel:
    """RAM matrices + index maps of a parameter table (see the module docstring)."""

    table: ParTable
    observed: list[str]
    latent: list[str]
    par_kind: np.ndarray  # int64 (n_free,)
    par_row: np.ndarray  # int64 (n_free,)
    par_col: np.ndarray  # int64 (n_free,)
    par_table_row: np.ndarray  # int64 (n_free,), row of the ParTable for each free parameter
    A0: np.ndarray
    S0: np.ndarray
    exo_row: np.ndarray
    exo_col: np.ndarray
    vech_row: np.ndarray
    vech_col: np.ndarray
    lower: np.ndarray  # (n_free,) bounds of each free parameter
    upper: np.ndarray
    start: np.ndarray  # (n_free,) user starting values (NaN when none)
    acyclic: bool = True
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    # -- sizes ----------------------------------------------------------------------------
    @property
    def p(self) -> int:
        return len(self.observed)

    @property
    def m(self) -> int:
        return len(self.observed) + len(self.latent)

    @property
    def n_free(self) -> int:
        return int(self.par_kind.shape[0])

    @property
    def kstar(self) -> int:
        return self.p * (self.p + 1) // 2

    @property
    def variables(self) -> list[str]:
        return self.observed + self.latent

    # -- matrices ---------------------------------------------------------------------------
    def base_matrices(self, sample_cov: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(A0, S0) with fixed.x cells filled from ``sample_cov`` (observed order)."""
        A0 = self.A0.copy()
        S0 = self.S0.copy()
        if self.exo_row.size:
            if sample_cov is None:
                raise ModelError(
                    "the model has fixed.x covariates "
                    f"({', '.join(self.table.exogenous)}): their sample (co)variances are needed"
                )
            sc = np.asarray(sample_cov, dtype=np.float64)
            S0[self.exo_row, self.exo_col] = sc[self.exo_row, self.exo_col]
            S0[self.exo_col, self.exo_row] = sc[self.exo_row, self.exo_col]
        return A0, S0

    def fill(
        self, theta: np.ndarray, A0: np.ndarray | None = None, S0: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(A, S) for free parameters ``theta``."""
        A = (self.A0 if A0 is None else A0).copy()
        S = (self.S0 if S0 is None else S0).copy()
        th = np.asarray(theta, dtype=np.float64)
        a = self.par_kind == 0
        A[self.par_row[a], self.par_col[a]] = th[a]
        s = ~a
        S[self.par_row[s], self.par_col[s]] = th[s]
        S[self.par_col[s], self.par_row[s]] = th[s]
        return A, S

    def _b(self, A: np.ndarray) -> np.ndarray:
        m = A.shape[0]
        try:
            return np.linalg.inv(np.eye(m) - A)
        except np.linalg.LinAlgError:
            raise ModelError("I - A is singular: the regression paths are not recursive/identified") from None

    def implied_all(self, theta: np.ndarray, A0=None, S0=None) -> np.ndarray:
        """Implied covariance of all variables (observed then latent)."""
        A, S = self.fill(theta, A0, S0)
        B = self._b(A)
        return B @ S @ B.T

    def entries(self, A0: np.ndarray | None = None, S0: np.ndarray | None = None) -> dict:
        """This model in the entry layout of the RAM kernel (:mod:`polgen.kernels.ram`): one entry
        per parameter-table row, free row ``t`` carrying parameter ``free - 1``, fixed rows their
        value from ``A0`` / ``S0`` (fixed.x cells filled by :meth:`base_matrices`)."""
        A0 = self.A0 if A0 is None else A0
        S0 = self.S0 if S0 is None else S0
        key = ("entries", A0.tobytes(), S0.tobytes())
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        kind, r, c = self.row_cells()
        par = np.array([row.free - 1 for row in self.table.rows], dtype=np.int64)
        val = np.where(kind == 0, A0[r, c], S0[r, c]).astype(np.float64)
        val[par >= 0] = 0.0
        c64 = np.ascontiguousarray
        out = {
            "ent_kind": c64(kind, np.int64),
            "ent_r": c64(r, np.int64),
            "ent_c": c64(c, np.int64),
            "ent_par": par,
            "ent_val": val,
            "nv": self.m,
            "p": self.p,
            "ma": c64(self.vech_row, np.int64),
            "mb": c64(self.vech_col, np.int64),
            "par_ptr": np.arange(self.n_free + 1, dtype=np.int64),
            "par_ent": c64(self.par_table_row, np.int64),
        }
        self._cache = {k: v for k, v in self._cache.items() if not (isinstance(k, tuple) and k[0] == "entries")}
        self._cache[key] = out
        return out

    def implied(self, theta: np.ndarray, A0=None, S0=None) -> np.ndarray:
        """Model-implied covariance of the observed variables (p x p, observed order)."""
        return self.implied_jacobian(theta, A0, S0)[0]

    def implied_jacobian(self, theta: np.ndarray, A0=None, S0=None) -> tuple[np.ndarray, np.ndarray]:
        """(Sigma, J) with J = d vech(Sigma) / d theta of shape (kstar, n_free), by the one RAM
        kernel the per-SNP fits use (:func:`polgen.kernels.ram.implied_jacobian_into`)."""
        from polgen.kernels.ram import implied_jacobian_into

        e = self.entries(A0, S0)
        sigma = np.empty((self.p, self.p))
        jac = np.empty((e["ma"].shape[0], self.n_free))
        ok = implied_jacobian_into(
            np.ascontiguousarray(theta, np.float64),
            e["ent_kind"],
            e["ent_r"],
            e["ent_c"],
            e["ent_par"],
            e["ent_val"],
            e["nv"],
            e["p"],
            e["ma"],
            e["mb"],
            e["par_ptr"],
            e["par_ent"],
            sigma,
            jac,
        )
        if not ok:
            raise ModelError("I - A is singular: the regression paths are not recursive/identified")
        return sigma, jac

    def values(self, theta: np.ndarray, A0=None, S0=None) -> np.ndarray:
        """Value of every parameter-table row (free from ``theta``, fixed from ``ustart``/data)."""
        A, S = self.fill(theta, A0, S0)
        return self._row_values(A, S)

    def _row_values(self, A: np.ndarray, S: np.ndarray) -> np.ndarray:
        kind, r, c = self.row_cells()
        out = np.where(kind == 0, A[r, c], S[r, c])
        return out

    def row_cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(kind, row, col) of every parameter-table row: kind 0 = A (``=~``: (indicator, factor),
        ``~``: (outcome, predictor)), 1 = S (``~~``: (lhs, rhs) as written)."""
        idx = self._cache.get("row_cells")
        if idx is None:
            idx = self._row_cells_uncached()
            self._cache["row_cells"] = idx
        return idx

    def _row_cells_uncached(self):
        pos = {v: k for k, v in enumerate(self.variables)}
        kind, rr, cc = [], [], []
        for row in self.table.rows:
            if row.op == "=~":
                kind.append(0), rr.append(pos[row.rhs]), cc.append(pos[row.lhs])
            elif row.op == "~":
                kind.append(0), rr.append(pos[row.lhs]), cc.append(pos[row.rhs])
            else:
                kind.append(1), rr.append(pos[row.lhs]), cc.append(pos[row.rhs])
        return np.asarray(kind), np.asarray(rr), np.asarray(cc)

    def sample_vech(self, S: np.ndarray) -> np.ndarray:
        return np.asarray(S, dtype=np.float64)[self.vech_row, self.vech_col]

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_cache"] = {}
        return d


def compile_model(
    model: str | ParTable,
    *,
    observed_order: list[str] | None = None,
    std_lv: bool = False,
    observed: list[str] | None = None,
    fixed_x: bool = True,
) -> CompiledModel:
    """Compile a model string or :class:`ParTable` to RAM matrices.

    ``observed_order``: the order of the observed variables in Sigma; default lavaan's order
    (``table.observed``).  ``observed``: the names the data provide (unknown model variables raise
    :class:`ModelError`).  ``std_lv`` / ``fixed_x`` are passed to :func:`parse_model` for a string
    (lavaan's ``sem()`` uses ``fixed_x=True`` for ML and ``False`` for DWLS).
    """
    table = (
        model if isinstance(model, ParTable) else parse_model(model, std_lv=std_lv, observed=observed, fixed_x=fixed_x)
    )
    obs = list(table.observed if observed_order is None else observed_order)
    if sorted(obs) != sorted(table.observed):
        raise ModelError(f"observed_order {obs} does not match the model's observed variables {table.observed}")
    lat = list(table.latent)
    variables = obs + lat
    pos = {v: k for k, v in enumerate(variables)}
    m = len(variables)
    A0 = np.zeros((m, m))
    S0 = np.zeros((m, m))
    n_free = table.n_free
    kind = np.zeros(n_free, dtype=np.int64)
    prow = np.zeros(n_free, dtype=np.int64)
    pcol = np.zeros(n_free, dtype=np.int64)
    ptr = np.zeros(n_free, dtype=np.int64)
    lower = np.full(n_free, -np.inf)
    upper = np.full(n_free, np.inf)
    start = np.full(n_free, np.nan)
    exo_r, exo_c = [], []
    seen_cells: dict[tuple[int, int, int], int] = {}
    for t, row in enumerate(table.rows):
        if row.op == "=~":
            k, r, c = 0, pos[row.rhs], pos[row.lhs]
        elif row.op == "~":
            k, r, c = 0, pos[row.lhs], pos[row.rhs]
            if r == c:
                raise ModelError(f"variable {row.lhs!r} regressed on itself")
        elif row.op == "~~":
            k, r, c = 1, pos[row.lhs], pos[row.rhs]
            if r < c:
                r, c = c, r
        else:  # pragma: no cover - the parser only produces these
            raise ModelError(f"unsupported operator {row.op!r}")
        key = (k, r, c)
        if key in seen_cells:
            raise ModelError(f"parameter {row.lhs} {row.op} {row.rhs} duplicates another row")
        seen_cells[key] = t
        if row.free > 0:
            f = row.free - 1
            kind[f], prow[f], pcol[f], ptr[f] = k, r, c, t
            lower[f], upper[f] = row.lower, row.upper
            if not math.isnan(row.ustart):
                start[f] = row.ustart
        elif row.exo:
            exo_r.append(r)
            exo_c.append(c)
        else:
            val = 0.0 if math.isnan(row.ustart) else row.ustart
            if k == 0:
                A0[r, c] = val
            else:
                S0[r, c] = val
                S0[c, r] = val
    # recursive (acyclic) check of A's structure
    struct = np.zeros((m, m), dtype=bool)
    for k, r, c in seen_cells:
        if k == 0:
            struct[r, c] = True
    acyclic = _is_acyclic(struct)
    vr, vc = vech_indices(len(obs))
    return CompiledModel(
        table=table,
        observed=obs,
        latent=lat,
        par_kind=kind,
        par_row=prow,
        par_col=pcol,
        par_table_row=ptr,
        A0=A0,
        S0=S0,
        exo_row=np.asarray(exo_r, dtype=np.int64),
        exo_col=np.asarray(exo_c, dtype=np.int64),
        vech_row=vr,
        vech_col=vc,
        lower=lower,
        upper=upper,
        start=start,
        acyclic=acyclic,
    )


def _is_acyclic(adj: np.ndarray) -> bool:
    m = adj.shape[0]
    indeg = adj.sum(axis=1).astype(int)  # edges j -> i stored at [i, j]
    done = np.zeros(m, dtype=bool)
    stack = [i for i in range(m) if indeg[i] == 0]
    count = 0
    while stack:
        j = stack.pop()
        done[j] = True
        count += 1
        for i in np.nonzero(adj[:, j])[0]:
            indeg[i] -= 1
            if indeg[i] == 0:
                stack.append(int(i))
    return count == m


# --------------------------------------------------------------------------------------------
# the layout of the per-SNP kernels (polgen.kernels.gwas)
# --------------------------------------------------------------------------------------------
def vech_index(r: int, c: int, n: int) -> int:
    """Position of (r, c) in vech of an n x n matrix (lower triangle stacked column-wise)."""
    if r < c:
        r, c = c, r
    return c * n - c * (c - 1) // 2 + (r - c)


@dataclass
class Numbering:
    """Parameter numbers of a table's rows for the per-SNP kernels.

    ``par[i]`` is the parameter number of row ``i`` (rows constrained equal share one; -1 fixed),
    ``value[i]`` its fixed value (``par == -1``) or user start value (NaN: none), ``lower`` /
    ``upper`` its bounds (intersected over a tied group); ``n`` parameters in all."""

    par: np.ndarray
    value: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n: int

    def copy(self) -> Numbering:
        return Numbering(self.par.copy(), self.value.copy(), self.lower.copy(), self.upper.copy(), self.n)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-parameter bounds (lower(), upper(), ``label > number``, ``label < number``)."""
        lo = np.full(self.n, -np.inf)
        hi = np.full(self.n, np.inf)
        for q, a, b in zip(self.par.tolist(), self.lower.tolist(), self.upper.tolist()):
            if q >= 0:
                lo[q] = max(lo[q], a)
                hi[q] = min(hi[q], b)
        return lo, hi


@dataclass
class KernelLayout:
    """A compiled model as the per-SNP kernels take it: one entry per parameter-table row.

    Variables are ordered observed first (the SNP at 0 when the model has one, then the traits in
    covstruc order), then latent.  Entry ``e`` puts parameter ``ent_par[e]`` (or the fixed value
    ``ent_val[e]`` when -1) in cell ``(ent_r[e], ent_c[e])`` of A (``ent_kind`` 0) or of the
    symmetric S (1); ``par_ptr`` / ``par_ent`` list the entries of each parameter (CSR).  Moment
    ``m`` is the observed cell ``(ma[m], mb[m])`` and ``vidx[m]`` its index in vech(S_full)."""

    nv: int
    p: int
    var_names: list[str]
    obs_map: np.ndarray  # observed index -> S_full index (0 = SNP, 1 + trait)
    ma: np.ndarray
    mb: np.ndarray
    vidx: np.ndarray
    ent_kind: np.ndarray
    ent_r: np.ndarray
    ent_c: np.ndarray
    ent_par: np.ndarray
    ent_val: np.ndarray
    par_ptr: np.ndarray
    par_ent: np.ndarray
    npar: int

    def arrays(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "nv",
                "p",
                "obs_map",
                "ma",
                "mb",
                "vidx",
                "ent_kind",
                "ent_r",
                "ent_c",
                "ent_par",
                "ent_val",
                "par_ptr",
                "par_ent",
            )
        }

    @property
    def nmom(self) -> int:
        return len(self.ma)


def kernel_layout(
    table: ParTable, numbering: Numbering, traits: list[str], snp_name: str = "SNP", observed: list[str] | None = None
) -> KernelLayout:
    """Compile ``table`` (:func:`compile_model`: variable order, cells, structural checks) with
    the parameter numbers of ``numbering`` into the per-SNP kernels' layout.  ``observed``: the
    model's observed variables other than the SNP (default: all of them); each must be a trait."""
    tset = set(traits)
    if observed is None:
        observed = [v for v in table.observed if v != snp_name]
    unknown = [v for v in observed if v not in tset]
    if unknown:
        raise ModelError(
            f"model variables {unknown} are neither traits of the covstruc "
            f"({traits}) nor latent variables nor {snp_name}"
        )
    has_snp = snp_name in table.observed
    obs = ([snp_name] if has_snp else []) + [t for t in traits if t in set(observed)]
    cm = compile_model(table, observed_order=list(obs))
    kind, er, ec = cm.row_cells()
    K1 = len(traits) + 1
    obs_map = np.array([0 if v == snp_name else 1 + traits.index(v) for v in obs], np.int64)
    ma = np.ascontiguousarray(cm.vech_row, np.int64)
    mb = np.ascontiguousarray(cm.vech_col, np.int64)
    vidx = [vech_index(int(obs_map[a]), int(obs_map[b]), K1) for a, b in zip(ma, mb)]
    npar = int(numbering.n)
    epar = np.ascontiguousarray(numbering.par, np.int64)
    evals = np.where(epar >= 0, 0.0, numbering.value).astype(np.float64)
    order = np.argsort(epar, kind="stable")
    par_ent = np.array([e for e in order if epar[e] >= 0], np.int64)
    counts = np.bincount(epar[epar >= 0], minlength=npar) if npar else np.zeros(0, np.int64)
    par_ptr = np.zeros(npar + 1, np.int64)
    par_ptr[1:] = np.cumsum(counts)
    return KernelLayout(
        nv=cm.m,
        p=cm.p,
        var_names=cm.variables,
        obs_map=obs_map,
        ma=ma,
        mb=mb,
        vidx=np.array(vidx, np.int64),
        ent_kind=np.asarray(kind, np.int64),
        ent_r=np.asarray(er, np.int64),
        ent_c=np.asarray(ec, np.int64),
        ent_par=epar,
        ent_val=evals,
        par_ptr=par_ptr,
        par_ent=par_ent,
        npar=npar,
    )
