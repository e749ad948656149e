"""RAM-form SEM in numba: the implied covariance and its analytic Jacobian, as every Genomic SEM
kernel evaluates them (the objective and the fit: :mod:`polgen.kernels.ram_fit`).

The model arrives compiled (see :mod:`polgen.gsem.gwas_plan` / ``CompiledModel.arrays()``) as a
flat *entry layout*: entry ``e`` puts parameter ``ent_par[e]`` (or, when ``-1``, the fixed value
``ent_val[e]``) into cell ``(ent_r[e], ent_c[e])`` of ``A`` (``ent_kind[e] == 0``, paths) or of the
symmetric ``S`` (``1``, (co)variances) over ``nv`` variables, the first ``p`` observed;
``par_ptr`` / ``par_ent`` list the entries of each parameter (CSR) and ``ma`` / ``mb`` the
variable pair of each vech moment.  ``Sigma = B S B'`` with ``B = (I - A)^-1``, observed block.

:func:`implied_jacobian_into` is the one implied-covariance kernel for callers outside the GWAS
batch kernels (:func:`implied_jacobian` is its Python wrapper).
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

from polgen.kernels._jit import jit
from polgen.kernels.linalg import _inv_gj

__all__ = ["RamLayout", "ram_layout", "implied_jacobian_into", "implied_jacobian"]

#: A compiled RAM model as the batch kernels take it: ``nv`` variables, the first ``p`` observed;
#: ``obs_map`` (observed variable -> S_full row), ``ma``/``mb`` (vech moments), ``vidx`` /
#: ``vidx_meat`` (V_full rows of the moments for the weights / the sandwich meat); the entry
#: layout ``ent_kind, ent_r, ent_c, ent_par, ent_val`` and per parameter ``par_ptr``/``par_ent``.
RamLayout = namedtuple(
    "RamLayout",
    [
        "nv",
        "p",
        "obs_map",
        "ma",
        "mb",
        "vidx",
        "vidx_meat",
        "ent_kind",
        "ent_r",
        "ent_c",
        "ent_par",
        "ent_val",
        "par_ptr",
        "par_ent",
    ],
)


def _getter(model):
    """Field access ``get(name[, default])`` for a compiled model given as a mapping
    (``CompiledModel.arrays()``) or as an object with those attributes."""
    if hasattr(model, "__getitem__"):

        def get(k, *default):
            try:
                return model[k]
            except KeyError:
                if default:
                    return default[0]
                raise

        return get
    return lambda k, *default: getattr(model, k, *default)


def ram_layout(model):
    """:class:`RamLayout` of a compiled model (mapping or object), arrays passed through as given
    (the compiler emits C-contiguous int64 / float64); ``vidx_meat`` defaults to ``vidx``."""
    get = _getter(model)
    vidx = get("vidx")
    vm = get("vidx_meat", None)
    return RamLayout(
        int(get("nv")),
        int(get("p")),
        get("obs_map"),
        get("ma"),
        get("mb"),
        vidx,
        vidx if vm is None else vm,
        get("ent_kind"),
        get("ent_r"),
        get("ent_c"),
        get("ent_par"),
        get("ent_val"),
        get("par_ptr"),
        get("par_ent"),
    )


# ----------------------------------------------------------------------------------------------
# model evaluation
# ----------------------------------------------------------------------------------------------
@jit
def _implied(theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C):
    """Fill A, S from theta; B = (I-A)^-1; C[:, :p] = B S B'[:, :p].  False if I-A singular."""
    for i in range(nv):
        for j in range(nv):
            A[i, j] = 0.0
            S[i, j] = 0.0
    for e in range(ent_kind.shape[0]):
        q = ent_par[e]
        val = ent_val[e] if q < 0 else theta[q]
        r = ent_r[e]
        c = ent_c[e]
        if ent_kind[e] == 0:
            A[r, c] = val
        else:
            S[r, c] = val
            S[c, r] = val
    for i in range(nv):
        for j in range(nv):
            IA[i, j] = -A[i, j]
        IA[i, i] += 1.0
    if not _inv_gj(IA, nv, B):
        return False
    # T = S B'[:, :p]  (nv x p)
    for i in range(nv):
        for b in range(p):
            s = 0.0
            for j in range(nv):
                s += S[i, j] * B[b, j]
            T[i, b] = s
    for a in range(nv):
        for b in range(p):
            s = 0.0
            for j in range(nv):
                s += B[a, j] * T[j, b]
            C[a, b] = s
    return True


@jit
def _jacobian(fidx, nf, par_ptr, par_ent, ent_kind, ent_r, ent_c, ma, mb, B, C, J):
    """J[m, f] = d sigma_m / d theta_fidx[f] (analytic, RAM form)."""
    nmom = ma.shape[0]
    for f in range(nf):
        q = fidx[f]
        for m in range(nmom):
            J[m, f] = 0.0
        for t in range(par_ptr[q], par_ptr[q + 1]):
            e = par_ent[t]
            i = ent_r[e]
            jj = ent_c[e]
            if ent_kind[e] == 0:
                for m in range(nmom):
                    a = ma[m]
                    b = mb[m]
                    J[m, f] += B[a, i] * C[jj, b] + C[jj, a] * B[b, i]
            else:
                if i == jj:
                    for m in range(nmom):
                        J[m, f] += B[ma[m], i] * B[mb[m], i]
                else:
                    for m in range(nmom):
                        a = ma[m]
                        b = mb[m]
                        J[m, f] += B[a, i] * B[b, jj] + B[a, jj] * B[b, i]


# ----------------------------------------------------------------------------------------------
# public: Sigma and d vech(Sigma) / d theta at one theta
# ----------------------------------------------------------------------------------------------
@jit
def implied_jacobian_into(theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, ma, mb, par_ptr, par_ent, sigma, jac):
    """Implied covariance ``sigma`` (p x p) and Jacobian ``jac`` (nmom x npar, row ``m`` the moment
    ``(ma[m], mb[m])``, column ``q`` the parameter ``q``) of the RAM model at ``theta`` (npar).

    ``sigma`` is exactly symmetric (the lower triangle ``C[a, b]``, ``a >= b``, mirrored), as the
    GWAS kernels read their moments.  Returns False (outputs unspecified) when ``I - A`` is
    singular.  Allocates its work arrays.
    """
    npar = par_ptr.shape[0] - 1
    nmom = ma.shape[0]
    A = np.empty((nv, nv))
    S = np.empty((nv, nv))
    IA = np.empty((nv, nv))
    B = np.empty((nv, nv))
    T = np.empty((nv, p))
    C = np.empty((nv, p))
    if not _implied(theta, ent_kind, ent_r, ent_c, ent_par, ent_val, nv, p, A, S, IA, B, T, C):
        return False
    for a in range(p):
        for b in range(a + 1):
            sigma[a, b] = C[a, b]
            sigma[b, a] = C[a, b]
    fidx = np.arange(npar)
    J = np.empty((nmom, max(npar, 1)))
    _jacobian(fidx, npar, par_ptr, par_ent, ent_kind, ent_r, ent_c, ma, mb, B, C, J)
    for m in range(nmom):
        for q in range(npar):
            jac[m, q] = J[m, q]
    return True


def implied_jacobian(model, theta):
    """``(Sigma, jac)`` of :func:`implied_jacobian_into` for a compiled model (mapping or object with
    ``nv, p, ma, mb, ent_kind, ent_r, ent_c, ent_par, ent_val, par_ptr, par_ent``); NaN-filled
    when ``I - A`` is singular."""
    get = _getter(model)
    i64 = np.int64
    arr = {
        k: np.ascontiguousarray(get(k), i64)
        for k in ("ent_kind", "ent_r", "ent_c", "ent_par", "ma", "mb", "par_ptr", "par_ent")
    }
    p = int(get("p"))
    npar = arr["par_ptr"].shape[0] - 1
    sigma = np.empty((p, p))
    jac = np.empty((arr["ma"].shape[0], npar))
    ok = implied_jacobian_into(
        np.ascontiguousarray(theta, np.float64),
        arr["ent_kind"],
        arr["ent_r"],
        arr["ent_c"],
        arr["ent_par"],
        np.ascontiguousarray(get("ent_val"), np.float64),
        int(get("nv")),
        p,
        arr["ma"],
        arr["mb"],
        arr["par_ptr"],
        arr["par_ent"],
        sigma,
        jac,
    )
    if not ok:
        sigma[:] = np.nan
        jac[:] = np.nan
    return sigma, jac
