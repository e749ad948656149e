"""Constraints of the model language, in the two forms the fitters take.

* :func:`build_reparam` (the SEM fit, :func:`polgen.gsem.sem.fit_sem`): every linear equality
  (shared labels, ``a == b``, ``a + b == 1``) and bound as a reparameterisation
  ``theta = offset + M z`` with bounds on ``z``; non-linear equalities and inequalities between
  parameters as callables for the augmented Lagrangian.
* :func:`number_parameters` (the per-SNP kernels of :mod:`polgen.kernels.gwas`): the subset the
  batched kernels fit by sharing parameter *numbers* - rows tied by a shared label or
  ``a == b`` share one number, ``a == number`` fixes the group, bounds of a group are intersected.
  Other constraint forms are rejected with :class:`ModelError` naming the line
  (:func:`kernel_constraints` says whether a table fits this subset; user_gwas fits general
  constraints on the measurement model with the SEM fitter, and on per-SNP parameters
  splits them off with :func:`split_kernel_constraints` into the linear rows and non-linear
  constraints of :func:`snp_linear_constraints`).
* :func:`sign_flips` / :func:`canonical_signs_rows`: latent variables whose sign the model leaves
  free (fixed variance, free loadings), reported with their first free loading positive as lavaan's
  starting values put them, by the SEM fit and per SNP.

All read the one parameter table of :func:`polgen.gsem.syntax.parse_model`.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field, replace

import numpy as np

from polgen.errors import ModelError
from polgen.gsem.ram import CompiledModel, Numbering
from polgen.gsem.syntax import ParTable

__all__ = [
    "Reparam",
    "build_reparam",
    "canonical_signs_rows",
    "kernel_constraints",
    "label_env",
    "number_parameters",
    "snp_linear_constraints",
    "split_kernel_constraints",
    "sign_flips",
]


# --------------------------------------------------------------------------------------------
# constraints as a linear reparameterisation
# --------------------------------------------------------------------------------------------
@dataclass
class Reparam:
    """theta = offset + M @ z, with bounds on z and the number of independent equalities."""

    M: np.ndarray
    offset: np.ndarray
    z_lower: np.ndarray
    z_upper: np.ndarray
    n_eq: int
    nonlinear: list = field(default_factory=list)  # callables theta -> residual (== 0 at solution)
    inequal: list = field(default_factory=list)  # callables theta -> g (g >= 0 at solution)

    @property
    def augmented(self) -> bool:
        return bool(self.nonlinear or self.inequal)

    @property
    def n_z(self) -> int:
        return self.M.shape[1]

    def theta(self, z: np.ndarray) -> np.ndarray:
        return self.offset + self.M @ z

    def z_of(self, theta: np.ndarray) -> np.ndarray:
        z, *_ = np.linalg.lstsq(self.M, np.asarray(theta) - self.offset, rcond=None)
        return z


def label_env(table: ParTable, n_free: int):
    """Function theta -> {label: value, defined: value} (first row carrying each label)."""
    first: dict[str, tuple[int, float]] = {}
    for r in table.rows:
        if r.label and r.label not in first:
            first[r.label] = (r.free - 1, r.ustart)

    def env(theta):
        out = {}
        for lab, (f, val) in first.items():
            out[lab] = theta[f] if f >= 0 else (0.0 if math.isnan(val) else float(val))
        for d in table.defined:
            out[d.name] = d.expr.evaluate(out)
        return out

    return env


def build_reparam(cm: CompiledModel) -> Reparam:
    """Linear equality constraints (shared labels, linear ``==``) and bounds as :class:`Reparam`."""
    table = cm.table
    n = cm.n_free
    # 1. shared labels -> groups
    group_of = np.arange(n)
    eq_rows: list[np.ndarray] = []
    for idx in table.equal_groups:
        frees = [table.rows[i].free - 1 for i in idx if table.rows[i].free > 0]
        for f in frees[1:]:
            group_of[f] = frees[0]
            a = np.zeros(n)
            a[frees[0]], a[f] = 1.0, -1.0
            eq_rows.append(a)
    uniq = sorted(set(group_of.tolist()))
    M1 = np.zeros((n, len(uniq)))
    for f in range(n):
        M1[f, uniq.index(group_of[f])] = 1.0
    # 2. explicit constraints
    env = label_env(table, n)
    A_rows, b_vals = [], []
    nonlinear: list = []
    inequal: list = []
    for c in table.constraints:
        if c.op != "==":
            sign = 1.0 if c.op == ">" else -1.0
            inequal.append(lambda th, c=c, sign=sign: sign * c.residual(env(th)))
            continue
        g, r0, linear = _linearise(lambda th, c=c: c.residual(env(th)), n)
        if not linear:
            nonlinear.append(lambda th, c=c: c.residual(env(th)))
            continue
        if np.all(g == 0):
            if abs(r0) > 1e-10:
                raise ModelError(f"constraint '{c.lhs.text} == {c.rhs.text}' cannot hold (fixed values)")
            continue
        A_rows.append(g)
        b_vals.append(-r0)
    offset = np.zeros(n)
    M = M1
    if A_rows:
        A = np.array(A_rows) @ M1
        b = np.array(b_vals)
        u_p, *_ = np.linalg.lstsq(A, b, rcond=None)
        if np.max(np.abs(A @ u_p - b), initial=0.0) > 1e-9 * (1 + np.abs(b).max()):
            raise ModelError("the equality constraints contradict each other")
        _, sv, vt = np.linalg.svd(A)
        rank = int(np.sum(sv > 1e-10 * max(1.0, sv.max())))
        N = vt[rank:].T
        M = M1 @ N
        offset = M1 @ u_p
        eq_rows.extend(list(np.array(A_rows)))
    n_eq = int(np.linalg.matrix_rank(np.array(eq_rows))) if eq_rows else 0
    # 3. bounds on z
    nz = M.shape[1]
    zl = np.full(nz, -np.inf)
    zu = np.full(nz, np.inf)
    for f in range(n):
        lo, hi = cm.lower[f], cm.upper[f]
        if not (np.isfinite(lo) or np.isfinite(hi)):
            continue
        nzs = np.nonzero(np.abs(M[f]) > 1e-12)[0]
        if nzs.size != 1:
            # the parameter mixes several z: keep its bounds as inequality constraints
            if np.isfinite(lo):
                inequal.append(lambda th, f=f, lo=lo: th[f] - lo)
            if np.isfinite(hi):
                inequal.append(lambda th, f=f, hi=hi: hi - th[f])
            continue
        g = nzs[0]
        coef, off = M[f, g], offset[f]
        lo_z, hi_z = (lo - off) / coef, (hi - off) / coef
        if coef < 0:
            lo_z, hi_z = hi_z, lo_z
        zl[g] = max(zl[g], lo_z)
        zu[g] = min(zu[g], hi_z)
        if zl[g] > zu[g]:
            raise ModelError("lower bound above upper bound for a parameter")
    return Reparam(M=M, offset=offset, z_lower=zl, z_upper=zu, n_eq=n_eq, nonlinear=nonlinear, inequal=inequal)


def _linearise(fun, n: int):
    """Gradient (complex step), value at 0, and whether ``fun`` is affine in theta."""

    def grad_at(x):
        g = np.zeros(n)
        h = 1e-30
        for k in range(n):
            xc = x.astype(complex)
            xc[k] += 1j * h
            g[k] = complex(fun(xc)).imag / h
        return g

    x0 = np.zeros(n)
    try:
        r0 = float(np.real(fun(x0.astype(complex))))
        g0 = grad_at(x0)
        rng = np.random.default_rng(12345)
        x1 = rng.uniform(0.3, 1.7, n)
        g1 = grad_at(x1)
        r1 = float(np.real(fun(x1.astype(complex))))
    except (ZeroDivisionError, ValueError, OverflowError):
        return np.zeros(n), 0.0, False
    linear = np.allclose(g0, g1, rtol=1e-9, atol=1e-12) and abs(r1 - (r0 + g0 @ x1)) <= 1e-9 * (1 + abs(r1))
    return g0, r0, linear


def _label_groups(pt: ParTable) -> dict[str, str]:
    """label -> representative label: labels tied by ``a == b`` constraints are one group."""
    parent = {r.label: r.label for r in pt.rows if r.label}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for c in pt.constraints:
        if c.op == "==" and _single_name(c.lhs) in parent and _single_name(c.rhs) in parent:
            a, b = find(_single_name(c.lhs)), find(_single_name(c.rhs))
            if a != b:
                parent[b] = a
    return {lab: find(lab) for lab in parent}


def _single_name(e) -> str | None:
    return e.tree.id if isinstance(e.tree, ast.Name) else None


def _const_value(e) -> float | None:
    if e.names:
        return None
    try:
        v = e.evaluate({})
    except (ModelError, ZeroDivisionError, ValueError, OverflowError):
        return None
    v = complex(v).real if isinstance(v, complex) else float(v)
    return v if math.isfinite(v) else None


def kernel_constraints(pt: ParTable) -> bool:
    """Whether the per-SNP kernels' numbering expresses every constraint of ``pt`` (see
    :func:`number_parameters`)."""
    try:
        _check_constraints(pt)
    except ModelError:
        return False
    return True


def _kernel_form(c, labels: set[str]) -> bool:
    """Whether constraint ``c`` is one the numbering expresses: ``label == label``,
    ``label == number`` (either side)."""
    if c.op != "==":
        return False
    a, b = _single_name(c.lhs), _single_name(c.rhs)
    if a is not None and a in labels and (b in labels or (b is None and _const_value(c.rhs) is not None)):
        return True
    return b is not None and b in labels and a is None and _const_value(c.lhs) is not None


def split_kernel_constraints(pt: ParTable) -> tuple[ParTable, list]:
    """``pt`` with only the constraints :func:`number_parameters` expresses, and the others
    (general forms: ``a == 2*b``, ``a > b``, ``a == b^2``, constraints on ``:=`` parameters), each
    name checked to be a parameter label or a ``:=`` parameter."""
    labels = {r.label for r in pt.rows if r.label}
    defined = {d.name for d in pt.defined}
    kept: list = []
    general: list = []
    for c in pt.constraints:
        for nm in c.lhs.names + c.rhs.names:
            if nm not in labels and nm not in defined:
                raise ModelError(
                    f"constraint '{c.lhs.text} {c.op} {c.rhs.text}' uses {nm!r}, which labels no "
                    "parameter of the model (user_gwas constraints must name parameter labels)",
                    row=c.line,
                )
        (kept if _kernel_form(c, labels) else general).append(c)
    if not general:
        return pt, []
    return replace(pt, constraints=kept), general


def snp_linear_constraints(
    pt: ParTable, num: Numbering, general: list
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, list]:
    """General constraints on parameters estimated per SNP as linear rows over the kernels'
    parameter numbers ``num``: ``(A_eq, b_eq, A_in, b_in, n_eq, nonlinear)`` with
    ``A_eq theta == b_eq``, ``A_in theta >= b_in`` (``a > b`` and ``a < b`` alike), ``n_eq`` the
    independent equalities (each non-linear equality counted as one) and ``nonlinear`` the
    constraints that are not linear in the parameters (``a == b^2``, ``a > b*c``), linearised per
    SNP by the caller.  ``:=`` parameters inside a constraint are expanded."""
    n = num.n
    first: dict[str, tuple[int, float]] = {}
    for r, q, v in zip(pt.rows, num.par.tolist(), num.value.tolist()):
        if r.label and r.label not in first:
            first[r.label] = (q, float(v))

    def env(th):
        out = {}
        for lab, (q, val) in first.items():
            out[lab] = th[q] if q >= 0 else val
        for d in pt.defined:
            out[d.name] = d.expr.evaluate(out)
        return out

    a_eq, b_eq, a_in, b_in = [], [], [], []
    nonlinear: list = []
    for c in general:
        txt = f"{c.lhs.text} {c.op} {c.rhs.text}"
        g, r0, linear = _linearise(lambda th, c=c: c.residual(env(th)), n)
        if not linear:
            nonlinear.append(c)
            continue
        if np.all(g == 0):
            ok = abs(r0) <= 1e-10 if c.op == "==" else (r0 >= 0 if c.op == ">" else r0 <= 0)
            if not ok:
                raise ModelError(f"constraint '{txt}' cannot hold (it involves only fixed values)", row=c.line)
            continue
        if c.op == "==":
            a_eq.append(g)
            b_eq.append(-r0)
        else:
            sign = 1.0 if c.op == ">" else -1.0
            a_in.append(sign * g)
            b_in.append(-sign * r0)
    A_eq = np.array(a_eq, np.float64).reshape(-1, n)
    A_in = np.array(a_in, np.float64).reshape(-1, n)
    n_eq = int(np.linalg.matrix_rank(A_eq)) if len(a_eq) else 0
    if len(a_eq):
        beq = np.array(b_eq)
        u, *_ = np.linalg.lstsq(A_eq, beq, rcond=None)
        if np.max(np.abs(A_eq @ u - beq)) > 1e-9 * (1.0 + np.abs(beq).max()):
            raise ModelError("the equality constraints on parameters estimated per SNP contradict each other")
    n_eq += sum(1 for c in nonlinear if c.op == "==")
    return A_eq, np.array(b_eq, np.float64), A_in, np.array(b_in, np.float64), n_eq, nonlinear


def _check_constraints(pt: ParTable) -> None:
    """user_gwas fits equality constraints by reparametrisation (one shared parameter) and simple
    bounds by an active set; other constraint forms are rejected with a clear error."""
    labels = {r.label for r in pt.rows if r.label}
    defined = {d.name for d in pt.defined}
    for c in pt.constraints:
        txt = f"{c.lhs.text} {c.op} {c.rhs.text}"
        for nm in c.lhs.names + c.rhs.names:
            if nm in defined:
                raise ModelError(
                    f"constraint '{txt}' uses the ':=' parameter {nm!r}: such constraints are not "
                    "supported on parameters estimated per SNP; on the measurement model they are "
                    "fitted with fix_measurement=True",
                    row=c.line,
                )
            if nm not in labels:
                raise ModelError(
                    f"constraint '{txt}' uses {nm!r}, which labels no parameter of the "
                    "model (user_gwas constraints must name parameter labels)",
                    row=c.line,
                )
        if c.op == "==":
            a, b = _single_name(c.lhs), _single_name(c.rhs)
            if a is not None and (b is not None or _const_value(c.rhs) is not None):
                continue
            if b is not None and _const_value(c.lhs) is not None:
                continue
        raise ModelError(
            f"constraint '{txt}' is not supported on parameters estimated per SNP: there user_gwas "
            "takes 'label == label', 'label == number' and bounds 'label > number' / 'label < number'; "
            "general constraints (a == 2*b, a > b, a == b^2, := terms) are fitted on the measurement "
            "model with fix_measurement=True",
            row=c.line,
        )


def number_parameters(pt: ParTable) -> Numbering:
    """Give each free row a parameter number; rows constrained equal (a shared label, or labels
    tied by ``a == b``) share one, a group with a fixed member (or ``a == number``) is fixed.
    Bounds of a group are intersected.  Fixed rows get -1.  The table is not changed."""
    _check_constraints(pt)
    group = _label_groups(pt)
    fixed_at: dict[str, float] = {}

    def fix(g: str, v: float) -> None:
        old = fixed_at.setdefault(g, v)
        if abs(old - v) > 1e-12 * (1.0 + abs(v)):
            raise ModelError(
                f"the constraints on label {g!r} (and the labels tied to it) ask for two values, {old!r} and {v!r}"
            )

    for r in pt.rows:
        if r.label and not r.free > 0:
            fix(group[r.label], float(r.ustart))
    for c in pt.constraints:
        if c.op != "==":
            continue
        a, b = _single_name(c.lhs), _single_name(c.rhs)
        # label == number: _check_constraints accepted it, so the number side has a value
        if a is not None and b is None:
            va = _const_value(c.rhs)
            if va is not None:
                fix(group[a], va)
        elif b is not None and a is None:
            vb = _const_value(c.lhs)
            if vb is not None:
                fix(group[b], vb)
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for r in pt.rows:
        if r.label:
            g = group[r.label]
            lo[g] = max(lo.get(g, -math.inf), r.lower)
            hi[g] = min(hi.get(g, math.inf), r.upper)
    nrow = len(pt.rows)
    par = np.full(nrow, -1, np.int64)
    value = np.array([float(r.ustart) for r in pt.rows], np.float64)
    lower = np.array([float(r.lower) for r in pt.rows], np.float64)
    upper = np.array([float(r.upper) for r in pt.rows], np.float64)
    nums: dict[str, int] = {}
    n = 0
    for i, r in enumerate(pt.rows):
        rg = group.get(r.label) if r.label else None  # the row's label group, None: unlabelled
        free = r.free > 0
        if rg is not None and rg in fixed_at:
            free, value[i] = False, fixed_at[rg]
        if not free:
            continue
        if rg is not None:
            lower[i], upper[i] = lo[rg], hi[rg]
            if lower[i] > upper[i]:
                raise ModelError(f"the bounds of parameter label {r.label!r} exclude every value")
            if rg not in nums:
                nums[rg] = n
                n += 1
            par[i] = nums[rg]
        else:
            par[i] = n
            n += 1
    return Numbering(par, value, lower, upper, n)


# --------------------------------------------------------------------------------------------
# factor signs
# --------------------------------------------------------------------------------------------
def sign_flips(table: ParTable, par: np.ndarray) -> list[tuple[str, np.ndarray, int]]:
    """Latent variables whose sign can be flipped without changing the implied covariance.

    ``par[i]`` is the parameter index of table row ``i`` (-1 fixed).  Flipping latent ``L``
    negates every parameter of a row that touches it (its loadings, regressions into or out of
    it, its covariances; not its variance).  It is possible when every fixed such row is 0 and
    every parameter involved sits only on such rows (a label tying it to another row blocks it).
    Returns ``(latent, parameters to negate, parameter of its first free loading)``; whether the
    flipped point also satisfies bounds and constraints is checked where it is applied.
    """
    par = np.asarray(par)
    rows_of: dict[int, list[int]] = {}
    for i, q in enumerate(par.tolist()):
        if q >= 0:
            rows_of.setdefault(q, []).append(i)
    out = []
    for lv in table.latent:
        touch = []
        for i, r in enumerate(table.rows):
            if r.op == "~~" and r.lhs == r.rhs:
                continue
            if (r.op == "=~" and r.lhs == lv) or (r.op in ("~", "~~") and lv in (r.lhs, r.rhs)):
                touch.append(i)
        tset = set(touch)
        negate: list[int] = []
        first = -1
        ok = True
        for i in touch:
            r, q = table.rows[i], int(par[i])
            if q < 0:
                if r.ustart != 0.0:
                    ok = False
                    break
                continue
            if not set(rows_of[q]) <= tset:
                ok = False
                break
            if q not in negate:
                negate.append(q)
            if first < 0 and r.op == "=~":
                first = q
        if ok and first >= 0:
            out.append((lv, np.array(negate, np.int64), first))
    return out


def canonical_signs_rows(
    flips: list[tuple[str, np.ndarray, int]], est: np.ndarray, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    """Flip latent variables per row of ``est`` (n x npar, one fit per row) so that each flippable
    latent's first free loading is positive, where lavaan's positive starting values take it.
    A row whose flipped parameters would leave their bounds is left as it is.  In place; returns
    the mask (n x len(flips)) of flipped rows."""
    n = est.shape[0]
    done = np.zeros((n, len(flips)), bool)
    for j, (_, negate, first) in enumerate(flips):
        rows = np.flatnonzero(est[:, first] < 0)  # usually none: touch only those rows
        if rows.size == 0:
            continue
        flipped = -est[np.ix_(rows, negate)]
        inside = np.all((flipped >= lower[negate]) & (flipped <= upper[negate]), axis=1)
        rows, flipped = rows[inside], flipped[inside]
        if rows.size:
            est[np.ix_(rows, negate)] = flipped
            done[rows, j] = True
    return done
