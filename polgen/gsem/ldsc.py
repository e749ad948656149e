"""Multivariable LD Score regression exactly as R GenomicSEM's ``ldsc()`` computes it.

For every trait the munged statistics (SNP, N, Z, A1) are merged with the regression weights
(``wLD``) and the LD scores (``CHR BP L2``), ordered by chromosome and position, and SNPs with
``Z^2 > chisq_max`` (default ``max(0.001 * max(N), 80)`` per trait) are removed.  Then for each pair
``(j, k)`` with ``k >= j``, in R's order:

* heritability (``j == k``): ``tot.agg = M (mean(chi2) - 1) / mean(L2 N)`` clipped to [0, 1],
  weights ``sqrt(het.w / max(wLD, 1))`` with ``het.w = 1 / (2 (1 + tot.agg N / M max(L2, 1))^2)``,
  normalised to sum 1; regression of ``chi2 * w`` on ``(L2 * w, w)``;
* genetic covariance (``j != k``): the two traits merged on SNP in trait j's order, Z of trait j
  flipped where the A1 alleles differ, the two traits' weights *added then normalised*
  (R: ``(initial.w + initial.w2) / sum(...)``; the regressors use the same weights through R's
  partial matching of ``merged$weights``), regression of ``Z1 Z2 * w`` on ``(L2 * w, w)``;
* block jackknife over ``n_blocks`` contiguous blocks with R's boundaries
  ``floor(seq(1, n, length.out = nb + 1))`` (numba kernels in :mod:`polgen.kernels.ldsc`);
* ``S[j, k] = slope / Nbar * M``, ``I[j, k] = intercept``, pseudo-values of the slope kept for V.

``V = cov(pseudo) * M^2 / (Nbar_a Nbar_b nb)``; liability conversion of S and V when sample and
population prevalences are given; ``stand=True`` adds ``S_Stand`` / ``V_Stand``.  The result is a
:class:`polgen.gsem.covstruc.CovStruc`; per-regression diagnostics (SEs, intercept SEs, mean chi^2,
lambda GC, SNP counts) are in ``result.extra["ldsc"]``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import polars as pl
from scipy.special import chdtri, ndtri

from polgen.engine.method_log import log_path, method_log
from polgen.errors import InputError, SchemaError
from polgen.gsem.covstruc import CovStruc
from polgen.io.ldscores import read_ldscores, read_m
from polgen.io.sumstats import read_sumstats
from polgen.kernels.ldsc import r_merge_order, regress

log = logging.getLogger("polgen")


def _norm_pdf(x):
    return np.exp(-0.5 * np.square(x)) / np.sqrt(2.0 * np.pi)


_QCHISQ_HALF = float(chdtri(1, 0.5))  # qchisq(0.5, df = 1)
Munged = Any  # dict {trait: frame|path} | sequence of frames/paths | one frame/path


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------
def _normalise_munged(munged: Munged, trait_names: Sequence[str] | None) -> tuple[list, list[str], list[str]]:
    if (
        isinstance(munged, tuple)
        and len(munged) == 2
        and isinstance(munged[0], Mapping)
        and isinstance(munged[1], pl.DataFrame)
    ):
        munged = munged[0]  # munge()'s (frames, dropped-row summary), passed whole
    if isinstance(munged, (list, tuple)) and munged and all(isinstance(m, Mapping) for m in munged):
        # sim_ldsc()'s list of replicates (each a mapping trait -> frame)
        if len(munged) > 1:
            raise InputError(
                f"got {len(munged)} replicates of simulated statistics (sim_ldsc with r > 1): "
                "pass one at a time, e.g. ldsc(sims[0], ...)"
            )
        munged = munged[0]
    if isinstance(munged, Mapping):
        items = list(munged.values())
        keys = [str(k) for k in munged.keys()]
    elif isinstance(munged, (str, os.PathLike, pl.DataFrame, pl.LazyFrame)):
        items, keys = [munged], None
    else:
        items, keys = list(munged), None
    labels = [
        str(x) if isinstance(x, (str, os.PathLike)) else (keys[i] if keys else f"trait {i + 1}")
        for i, x in enumerate(items)
    ]
    if trait_names is not None:
        names = [str(t) for t in trait_names]
        if len(names) != len(items):
            what = ", ".join(type(x).__name__ for x in items[:4]) + (", ..." if len(items) > 4 else "")
            raise InputError(f"{len(names)} trait names for {len(items)} munged inputs (got {what})")
    elif keys is not None:
        names = keys
    else:
        names = [f"V{i + 1}" for i in range(len(items))]
    return items, names, labels


def _load_trait(obj, label: str) -> pl.DataFrame:
    try:
        df = read_sumstats(obj, required=("SNP", "N", "Z", "A1"))
    except InputError as exc:
        if exc.path is None:
            exc.path = label
            exc.args = (exc._render(),)
        raise
    cols = ["SNP", "N", "Z", "A1"] + (["A2"] if "A2" in df.columns else [])
    df = df.select(cols)
    # R: na.omit(read_delim(...)) over all columns of the munged file (NaN counts as NA)
    df = df.drop_nulls().filter(pl.col("Z").is_not_nan() & pl.col("N").is_not_nan())
    if df.height == 0:
        raise InputError("no usable SNPs (all rows have missing values)", path=label)
    return df.select("SNP", "N", "Z", "A1")


def _all_distinct(idx: np.ndarray, n: int) -> bool:
    """True when the row indices ``idx`` (all < n) contain no repeats."""
    return bool(np.bincount(idx, minlength=n).max(initial=0) <= 1)


def _r_merge(left: pl.DataFrame, right: pl.DataFrame, on: str = "SNP") -> pl.DataFrame:
    """Inner ``merge(left, right, by = on, sort = FALSE)`` with R's row order, duplicates included
    (R codes each key by its first position among the matched left rows, Shell-sorts both code
    vectors with their row numbers and pairs the equal-code runs)."""
    lk = left[on]
    comm = lk.is_in(right[on].unique().implode())
    matched = pl.DataFrame({"k": lk.filter(comm)}).with_row_index("pos")
    first = matched.group_by("k").agg(pl.col("pos").min() + 1)
    code = lambda keys: (
        pl.DataFrame({"k": keys})
        .join(first, on="k", how="left", maintain_order="left")["pos"]  # noqa: E731
        .fill_null(0)
        .to_numpy()
    )
    li, ri = r_merge_order(code(lk), code(right[on]))
    rest = right.drop(on)
    clash = [c for c in rest.columns if c in left.columns]
    if clash:
        raise InputError(f"internal: merge columns {clash} clash")
    return pl.concat([left[li], rest[ri]], how="horizontal")


def _score_column(df: pl.DataFrame, path) -> str:
    if "L2" in df.columns:
        return "L2"
    rest = [c for c in df.columns if c not in ("CHR", "SNP", "BP", "CM", "MAF")]
    if len(rest) == 1:
        return rest[0]
    raise SchemaError(f"LD score files have no L2 column (columns {df.columns})", path=path, column="L2")


def _chromosomes(select, chr: int) -> list[int]:
    if chr < 1:
        raise InputError(f"chr (the number of chromosomes to read) must be at least 1, got {chr}")
    if select is None or select is False:
        return list(range(1, chr + 1))
    if isinstance(select, str):
        s = select.upper()
        if s == "ODD":
            return list(range(1, chr + 1, 2))
        if s == "EVEN":
            return list(range(2, chr + 1, 2))
        raise InputError(f"select must be None/False, 'ODD', 'EVEN' or chromosome numbers, got {select!r}")
    try:
        chroms = [int(c) for c in select]
    except (TypeError, ValueError) as exc:
        raise InputError(f"select must be None/False, 'ODD', 'EVEN' or chromosome numbers, got {select!r}") from exc
    if not chroms or min(chroms) < 1:
        raise InputError(f"select must name chromosomes 1, 2, ..., got {select!r}")
    return chroms


def _per_trait(values, n: int, name: str) -> list[float]:
    if values is None:
        return [math.nan] * n
    if np.isscalar(values):
        values = [values] * n
    try:
        vals = [math.nan if v is None else float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers (or None/NaN for continuous traits), got {values!r}") from None
    if len(vals) != n:
        raise InputError(f"{name} has {len(vals)} values for {n} traits")
    bad = [v for v in vals if not math.isnan(v) and not 0.0 < v < 1.0]
    if bad:
        raise InputError(f"{name}: a prevalence must lie in (0, 1) (None/NaN for continuous traits), got {bad[0]!r}")
    return vals


# ---------------------------------------------------------------------------------------------
# pieces shared with tests
# ---------------------------------------------------------------------------------------------
def liability_factor(sample_prev: float, population_prev: float) -> float:
    """R's conversion factor K^2 (1-K)^2 / (P (1-P) dnorm(qnorm(1-K))^2); 1 when either is NaN."""
    if math.isnan(sample_prev) or math.isnan(population_prev):
        return 1.0
    K, P = population_prev, sample_prev
    if not (0 < K < 1 and 0 < P < 1):
        raise InputError(f"prevalences must lie in (0, 1): sample {P}, population {K}")
    return K * K * (1 - K) ** 2 / (P * (1 - P) * _norm_pdf(ndtri(1.0 - K)) ** 2)


def _vech(a: np.ndarray) -> np.ndarray:
    k = a.shape[0]
    return np.concatenate([a[j:, j] for j in range(k)])


def liability_scale(S: np.ndarray, V: np.ndarray, factors: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Scale S by sqrt(f_i f_j) and V by the outer product of vech of that ratio (as R does)."""
    r = np.sqrt(np.outer(factors, factors))
    sc = _vech(r)
    return S * r, V * np.outer(sc, sc)


def standardise(S: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """S_Stand = S / sqrt(d_i d_j), V_Stand = V * outer(vech(1/sqrt(d_i d_j)))."""
    d = np.diag(S)
    r = np.outer(1 / np.sqrt(d), 1 / np.sqrt(d))
    sc = _vech(r)
    return S * r, V * np.outer(sc, sc)


def _weights(chi: np.ndarray, l2: np.ndarray, wld: np.ndarray, N: np.ndarray, M: float) -> np.ndarray:
    """R's sqrt(het.w * oc.w) (before normalisation)."""
    tot_agg = M * (chi.mean() - 1) / np.mean(l2 * N)
    tot_agg = min(max(tot_agg, 0.0), 1.0)
    ld = np.maximum(l2, 1.0)
    c = tot_agg * N / M
    het = 1.0 / (2.0 * (1.0 + c * ld) ** 2)
    oc = 1.0 / np.maximum(wld, 1.0)
    return np.sqrt(het * oc)


# ---------------------------------------------------------------------------------------------
# main entry
# ---------------------------------------------------------------------------------------------
def ldsc(
    munged: Munged,
    ld: str | os.PathLike,
    wld: str | os.PathLike | None = None,
    trait_names: Sequence[str] | None = None,
    sample_prev=None,
    population_prev=None,
    n_blocks: int = 200,
    chisq_max: float | None = None,
    stand: bool = False,
    select=None,
    chr: int = 22,
    m_suffix: str = "M_5_50",
    log: bool | str | os.PathLike | None = None,
) -> CovStruc:
    """Multivariable LDSC (R GenomicSEM ``ldsc``); see the module docstring for the algorithm.

    munged: the dict ``munge`` returns, or paths / frames of munged statistics (SNP N Z A1 A2).
    ld: directory (or prefix) of ``{chr}.l2.ldscore.gz`` and ``{chr}.l2.M_5_50`` files.
    wld: separate regression-weight LD scores (R's ``sep_weights=TRUE``); ``None`` uses ``ld``
    (R's default: its ``wld`` argument is ignored unless ``sep_weights=TRUE``).
    sample_prev / population_prev: per-trait prevalences (None/NaN for continuous traits).
    chisq_max: drop SNPs with Z^2 above this; default per trait ``max(0.001 max(N), 80)``.
    select: None, ``"ODD"``, ``"EVEN"`` or a list of chromosomes; chr: number of chromosomes.
    log: R's ``ldsc.log``: a path prefix ``P`` writes ``P_ldsc.log``, ``True`` writes
    ``<trait names joined by _>_ldsc.log`` in the working directory, ``None``/``False`` none.  The
    log holds the parameters, every step's message (SNPs merged and removed per trait, M, the
    heritabilities, intercepts and genetic correlations) and the timings.
    """
    items, names, labels = _normalise_munged(munged, trait_names)
    params = {
        "traits": labels,
        "trait_names": names,
        "ld": os.fspath(ld),
        "wld": None if wld is None else os.fspath(wld),
        "sample_prev": sample_prev,
        "population_prev": population_prev,
        "n_blocks": n_blocks,
        "chisq_max": chisq_max,
        "stand": stand,
        "select": select,
        "chr": chr,
        "m_suffix": m_suffix,
    }
    with method_log(log_path(log, "ldsc", names), "ldsc", params):
        return _ldsc(
            items,
            names,
            labels,
            ld,
            wld,
            sample_prev,
            population_prev,
            n_blocks,
            chisq_max,
            stand,
            select,
            chr,
            m_suffix,
        )


def _ldsc(
    items: list,
    names: list[str],
    labels: list[str],
    ld: str | os.PathLike,
    wld: str | os.PathLike | None,
    sample_prev: Any,
    population_prev: Any,
    n_blocks: int,
    chisq_max: float | None,
    stand: bool,
    select: Any,
    chr: int,
    m_suffix: str,
) -> CovStruc:
    n_traits = len(items)
    if n_traits == 0:
        raise InputError("ldsc needs at least one munged trait")
    if n_traits == 1:
        log.warning("ldsc: GenomicSEM's ldsc expects 2 or more traits")
    n_blocks = int(n_blocks)
    if n_traits > 18:
        n_blocks = (n_traits + 1) * (n_traits + 2) // 2 + 1
        log.info("ldsc: %d traits, using %d jackknife blocks", n_traits, n_blocks)
        if n_blocks > 1000:
            log.warning("ldsc: more than 1000 jackknife blocks may bias the standard errors")
    if n_blocks < 2:
        raise InputError(f"n_blocks must be at least 2, got {n_blocks}")
    if chisq_max is not None and not (isinstance(chisq_max, (int, float)) and (math.isnan(chisq_max) or chisq_max > 0)):
        raise InputError(f"chisq_max must be a positive number (None/NaN: the default), got {chisq_max!r}")
    samp = _per_trait(sample_prev, n_traits, "sample_prev")
    pop = _per_trait(population_prev, n_traits, "population_prev")
    chroms = _chromosomes(select, int(chr))

    # ---- LD scores, weights, M
    x = read_ldscores(ld, chroms)
    x = x.drop([c for c in ("CM", "MAF") if c in x.columns])
    score = _score_column(x, ld)
    if wld is not None:
        w = read_ldscores(wld, chroms)
        w = w.drop([c for c in ("CM", "MAF") if c in w.columns])
    else:
        w = x
    w = w.select(pl.col("SNP"), pl.col(w.columns[-1]).cast(pl.Float64).alias("wLD"))
    x = x.select(pl.col("SNP"), pl.col("CHR"), pl.col("BP"), pl.col(score).cast(pl.Float64).alias("L2"))
    x = x.with_row_index("__idx")
    unique_ld = x["SNP"].n_unique() == x.height and (wld is None or w["SNP"].n_unique() == w.height)
    # with unique ids R's merge(y1, w) then merge(., x) keeps y1's order: join w into x once
    if wld is not None:
        xw = x.join(w, on="SNP", how="inner", maintain_order="left")
    else:
        xw = x.with_columns(w["wLD"])
    M = read_m(ld, chroms, m_suffix)
    if not M > 0:
        raise InputError(f"total M from the .l2.{m_suffix} files is {M}", path=ld)
    log.info("ldsc: %d LD-score SNPs on %d chromosomes, M = %g", x.height, len(chroms), M)

    # ---- per-trait merge and chi^2 filter
    all_y: list[pl.DataFrame] = []
    for obj, label, name in zip(items, labels, names):
        y1 = _load_trait(obj, label)
        n_in = y1.height
        merged = y1.join(xw, on="SNP", how="inner", maintain_order="left") if unique_ld else None
        if merged is None or not _all_distinct(merged["__idx"].to_numpy(), x.height):
            # duplicated ids: R's row order (its merge groups and Shell-sorts duplicates)
            merged = _r_merge(_r_merge(y1, w), x)
        merged = (
            merged.with_columns(pl.col("CHR").cast(pl.Int64, strict=False).alias("__chr"))
            .sort(["__chr", "BP"], maintain_order=True, nulls_last=True)
            .drop("__chr")
        )
        log.info("ldsc %s: out of %d SNPs, %d remain after merging with LD-score files", name, n_in, merged.height)
        cmax = (
            chisq_max
            if chisq_max is not None and not (isinstance(chisq_max, float) and math.isnan(chisq_max))
            else max(0.001 * float(cast("float | None", merged["N"].max()) or 0.0), 80.0)
        )
        keep = (pl.col("Z") ** 2) <= cmax
        removed = merged.height - merged.filter(keep).height
        merged = merged.filter(keep)
        log.info("ldsc %s: removing %d SNPs with Chi^2 > %g; %d remain", name, removed, cmax, merged.height)
        if merged.height < n_blocks:
            raise InputError(
                f"only {merged.height} SNPs remain after merging with the LD scores (fewer than n_blocks={n_blocks})",
                path=label,
            )
        all_y.append(merged)

    # ---- regressions
    cols: list[dict[str, Any]] = [{c: y[c].to_numpy() for c in ("Z", "N", "L2", "wLD", "A1", "__idx")} for y in all_y]
    for c in cols:
        for key in ("Z", "N", "L2", "wLD"):
            c[key] = np.ascontiguousarray(c[key], dtype=np.float64)
        c["distinct"] = _all_distinct(c["__idx"], x.height)
    nV = n_traits * (n_traits + 1) // 2
    cov = np.full((n_traits, n_traits), np.nan)
    I = np.full((n_traits, n_traits), np.nan)
    V_hold = np.empty((n_blocks, nV))
    N_vec = np.empty(nV)
    diag_rows: list[dict] = []
    s = 0
    for j in range(n_traits):
        y1 = all_y[j]
        c1 = cols[j]
        for k in range(j, n_traits):
            if j == k:
                chi = c1["Z"] ** 2
                l2, wl, N = c1["L2"], c1["wLD"], c1["N"]
                iw = _weights(chi, l2, wl, N, M)
                weights = iw / iw.sum()
                Nbar = float(N.mean())
                yv = chi
                n_snps = chi.shape[0]
            else:
                c2 = cols[k]
                idx2 = c2["__idx"]
                pos = np.full(x.height, -1, dtype=np.int64)
                pos[idx2] = np.arange(idx2.shape[0])
                if unique_ld and c1["distinct"] and c2["distinct"]:
                    # merge on SNP in trait j's order through the LD-score row index
                    p2 = pos[c1["__idx"]]
                    sel1 = np.flatnonzero(p2 >= 0)
                    sel2 = p2[sel1]
                    z1, a1x, l2, wl, N1 = (c1[c][sel1] for c in ("Z", "A1", "L2", "wLD", "N"))
                    z2, a1y, N2 = (c2[c][sel2] for c in ("Z", "A1", "N"))
                else:  # duplicated SNP ids: every pairing, in R's merge order
                    y2 = all_y[k].select(
                        "SNP", pl.col("N").alias("N_y"), pl.col("Z").alias("Z_y"), pl.col("A1").alias("A1_y")
                    )
                    m2 = _r_merge(y1, y2).drop_nulls()
                    z1, a1x, l2, wl, N1, z2, a1y, N2 = (
                        m2[c].to_numpy() for c in ("Z", "A1", "L2", "wLD", "N", "Z_y", "A1_y", "N_y")
                    )
                    z1, l2, wl, N1, z2, N2 = (np.asarray(a, dtype=np.float64) for a in (z1, l2, wl, N1, z2, N2))
                n_snps = z1.shape[0]
                if n_snps < n_blocks:
                    raise InputError(
                        f"only {n_snps} SNPs shared by {names[j]} and {names[k]} (fewer than n_blocks={n_blocks})"
                    )
                z1 = np.where(a1y == a1x, z1, -z1)
                iw1 = _weights(z1**2, l2, wl, N1, M)
                iw2 = _weights(z2**2, l2, wl, N2, M)
                tot = iw1 + iw2
                weights = tot / tot.sum()
                Nbar = math.sqrt(N1.mean() * N2.mean())
                yv = z1 * z2
            reg, _delete, pseudo = regress(l2, weights, yv, n_blocks)
            jk_cov = np.cov(pseudo, rowvar=False) / n_blocks
            intercept = float(reg[1])
            est = float(reg[0] / Nbar * M)
            se = float(math.sqrt(jk_cov[0, 0] / Nbar**2) * M)
            V_hold[:, s] = pseudo[:, 0]
            N_vec[s] = Nbar
            cov[j, k] = cov[k, j] = est
            I[j, k] = I[k, j] = intercept
            row = {
                "trait1": names[j],
                "trait2": names[k],
                "n_snps": int(n_snps),
                "estimate": est,
                "se": se,
                "intercept": intercept,
                "intercept_se": float(math.sqrt(jk_cov[1, 1])),
            }
            if j == k:
                mean_chi = float(chi.mean())
                row.update(
                    mean_chi2=mean_chi,
                    lambda_gc=float(np.median(chi) / _QCHISQ_HALF),
                    ratio=(intercept - 1) / (mean_chi - 1) if mean_chi != 1 else math.nan,
                )
                log.info(
                    "ldsc %s: mean Chi^2 %.4f, intercept %.4f (%.4f), observed-scale h2 %.4f (%.4f)",
                    names[j],
                    mean_chi,
                    intercept,
                    row["intercept_se"],
                    est,
                    se,
                )
            else:
                row.update(mean_zz=float(yv.mean()))
                log.info(
                    "ldsc %s/%s: %d SNPs, cross-trait intercept %.4f (%.4f), g_cov %.4f (%.4f)",
                    names[j],
                    names[k],
                    n_snps,
                    intercept,
                    row["intercept_se"],
                    est,
                    se,
                )
            diag_rows.append(row)
            s += 1

    # ---- V, liability scale, standardisation
    v_out = np.cov(V_hold, rowvar=False).reshape(nV, nV)
    scale = N_vec * (math.sqrt(n_blocks) / M)
    v_out = v_out / np.outer(scale, scale)
    factors = [liability_factor(samp[i], pop[i]) for i in range(n_traits)]
    S, V = liability_scale(cov, v_out, factors)
    if any(f != 1.0 for f in factors):
        log.info("ldsc: liability-scale conversion factors %s", factors)
    S_Stand = V_Stand = None
    if np.all(np.diag(S) > 0):
        if stand:
            S_Stand, V_Stand = standardise(S, V)
    else:
        log.warning(
            "ldsc: the genetic covariance matrix has a non-positive heritability; "
            "genetic correlations (S_Stand) cannot be computed"
        )
    out = CovStruc(S=S, V=V, I=I, trait_names=names, N=N_vec, m=M, S_Stand=S_Stand, V_Stand=V_Stand)
    out.extra["ldsc"] = diag_rows
    out.extra["liability_factors"] = factors
    return out


def ldsc_table(result: CovStruc) -> pl.DataFrame:
    """The per-regression diagnostics of an :func:`ldsc` result as a frame."""
    return pl.DataFrame(result.extra.get("ldsc", []))


__all__ = ["ldsc", "ldsc_table", "liability_factor", "liability_scale", "standardise"]
