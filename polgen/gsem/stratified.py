"""Stratified multivariable LD Score regression exactly as R GenomicSEM's ``s_ldsc()`` computes it.

Inputs are baseline-LD style files (see :mod:`polgen.io.annot`): annotated LD scores and their
``.l2.M_5_50`` counts for the baseline prefix (the one ending in ``baseline``, else the first) and
any extra annotation prefixes, regression weights, ``.annot`` files and PLINK ``.frq`` files.

* Overlap: per chromosome, ``A'A`` of the annotation values over SNPs with 0.05 < MAF < 0.95,
  summed; ``overlap[i, j] = (A'A)[i, j] / m[j]`` with ``m`` the per-annotation M counts.  With
  ``exclude_cont`` the non-binary annotations are dropped everywhere (LD scores, M, overlap).
* Per trait: munged statistics merged with the weights and the LD scores, ordered by chromosome and
  position, SNPs with ``Z^2 > max(0.001 max(N), 80)`` removed.
* Per pair ``(j, k)``, ``k >= j`` in R's order: regression weights as in :func:`polgen.gsem.ldsc`
  with the LD score ``x.tot`` = the row sum of all annotation LD scores and ``M.tot = sum(m)``;
  heritabilities regress ``chi^2`` on ``[L * N / N.bar, 1]``, covariances ``Z1 Z2`` on ``[L, 1]``
  (traits merged in trait j's order, alleles aligned, the two traits' weights summed); a block
  jackknife over ``n_blocks`` contiguous blocks (:mod:`polgen.kernels.sldsc`).
  ``tau = coef / N.bar * m`` per annotation (``S_Tau``), ``S = overlap @ tau``.
* V: the pseudo-values of every pair and annotation, ``cov(pseudo) / n_blocks``; per annotation
  ``V[f][u, p] = (O C_up O')[f, f]`` and ``V_Tau[f][u, p] = C_up[f, f]``; liability conversion
  of S, V (and S_Tau, V_Tau) when both prevalences of a trait are given.

The result is a :class:`StratifiedCovStruc` (``S``, ``V``, ``S_Tau``, ``V_Tau`` per annotation,
``I``, ``N``, ``m``, ``prop``, ``select`` as R's list) that :func:`polgen.gsem.enrich` consumes and
that saves to / loads from JSON or ``.npz``.

Differences from R, deliberate: which annotations are binary (``exclude_cont`` and ``select``) is
decided over every chromosome (R looks at the first, resp. last, ``.annot`` file only); files are
paired by chromosome number (R by sorted file name); a missing ``.M`` file, M counts that do not
match the LD-score columns and ``.annot`` files that lack LD-score SNPs are errors.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from polgen.errors import InputError, SchemaError
from polgen.gsem.covstruc import CovStruc
from polgen.gsem.ldsc import Munged, _load_trait, _normalise_munged, _per_trait, _weights, liability_factor
from polgen.io.annot import (
    annotation_overlap,
    find_annot_set,
    frq_files,
    ldscore_columns,
    read_ldscore_file,
    read_m_counts,
    read_weight_ldscores,
)
from polgen.io.sink import write_bytes_atomic
from polgen.kernels.ldsc import block_bounds
from polgen.kernels.sldsc import block_crossprod, jackknife

log = logging.getLogger("polgen")

__all__ = ["StratifiedCovStruc", "s_ldsc"]


@dataclass
class StratifiedCovStruc:
    """R GenomicSEM's ``s_ldsc`` result: per-annotation genetic covariance structures.

    ``S[f]`` / ``V[f]``: the genetic covariance matrix of annotation ``f`` (overlap-adjusted, as
    R's ``S``) and its sampling covariance; ``S_Tau`` / ``V_Tau``: the per-annotation coefficients
    (``tau * m``) and theirs; ``annotations[0]`` is the baseline (all SNPs).  ``I``: intercepts,
    ``N``: N.bar per pair (R's order), ``m``: M per annotation, ``prop``: ``m / m[0]``,
    ``select_names`` / ``select``: R's ``Select`` (1 = binary, non-flanking; 2 = continuous or
    flanking) for every annotation but the baseline."""

    S: list[np.ndarray]
    V: list[np.ndarray]
    S_Tau: list[np.ndarray]
    V_Tau: list[np.ndarray]
    I: np.ndarray
    N: np.ndarray
    m: np.ndarray
    annotations: list[str]
    trait_names: list[str]
    prop: np.ndarray
    select_names: list[str]
    select: np.ndarray
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        na = len(self.annotations)
        k = len(self.trait_names)
        kstar = k * (k + 1) // 2
        for name, mats, dim in (
            ("S", self.S, k),
            ("V", self.V, kstar),
            ("S_Tau", self.S_Tau, k),
            ("V_Tau", self.V_Tau, kstar),
        ):
            if len(mats) != na:
                raise SchemaError(
                    f"stratified covstruc has {len(mats)} {name} matrices for {na} annotations", column=name
                )
            for i, a in enumerate(mats):
                arr = np.asarray(a, dtype=np.float64)
                if arr.shape != (dim, dim):
                    raise SchemaError(f"{name}[{i}] is {arr.shape}, expected {(dim, dim)}", column=name)
                mats[i] = arr
        self.I = np.asarray(self.I, dtype=np.float64).reshape(k, k)
        self.N = np.asarray(self.N, dtype=np.float64).reshape(-1)
        self.m = np.asarray(self.m, dtype=np.float64).reshape(-1)
        self.prop = np.asarray(self.prop, dtype=np.float64).reshape(-1)
        self.select = np.asarray(self.select, dtype=np.int64).reshape(-1)
        if self.m.shape[0] != na or self.prop.shape[0] != na:
            raise SchemaError(f"m / prop must have one value per annotation ({na})", column="m")
        if self.select.shape[0] != na - 1 or len(self.select_names) != na - 1:
            raise SchemaError(f"select must flag every annotation but the baseline ({na - 1})", column="select")

    @property
    def k(self) -> int:
        return len(self.trait_names)

    def covstruc(self, annotation: int | str = 0, tau: bool = False) -> CovStruc:
        """One annotation's ``S``/``V`` (or ``S_Tau``/``V_Tau``) as a :class:`CovStruc`."""
        f = self.annotations.index(annotation) if isinstance(annotation, str) else int(annotation)
        S, V = (self.S_Tau[f], self.V_Tau[f]) if tau else (self.S[f], self.V[f])
        return CovStruc(S=S, V=V, I=self.I, trait_names=list(self.trait_names), N=self.N, m=float(self.m[f]))

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "polgen.gsem.s_ldsc",
            "annotations": list(self.annotations),
            "trait_names": list(self.trait_names),
            "S": [a.tolist() for a in self.S],
            "V": [a.tolist() for a in self.V],
            "S_Tau": [a.tolist() for a in self.S_Tau],
            "V_Tau": [a.tolist() for a in self.V_Tau],
            "I": self.I.tolist(),
            "N": self.N.tolist(),
            "m": self.m.tolist(),
            "prop": self.prop.tolist(),
            "select_names": list(self.select_names),
            "select": self.select.tolist(),
        }

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> StratifiedCovStruc:
        missing = [k for k in ("S", "V", "S_Tau", "V_Tau", "annotations", "trait_names", "m") if k not in obj]
        if missing:
            raise SchemaError(f"stratified covstruc lacks {missing}", column=missing[0])
        m = np.asarray(obj["m"], dtype=np.float64).reshape(-1)
        names = [str(a) for a in obj["annotations"]]
        return cls(
            S=[np.asarray(a) for a in obj["S"]],
            V=[np.asarray(a) for a in obj["V"]],
            S_Tau=[np.asarray(a) for a in obj["S_Tau"]],
            V_Tau=[np.asarray(a) for a in obj["V_Tau"]],
            I=np.asarray(obj.get("I", np.eye(len(obj["trait_names"])))),
            N=np.asarray(obj.get("N", [])),
            m=m,
            annotations=names,
            trait_names=[str(t) for t in obj["trait_names"]],
            prop=np.asarray(obj.get("prop", m / m[0])),
            select_names=[str(s) for s in obj.get("select_names", names[1:])],
            select=np.asarray(obj.get("select", [1] * (len(names) - 1))),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write as JSON (``.json``) or numpy ``.npz`` (anything else); atomic."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            data = json.dumps(self.to_dict()).encode()
        else:
            d = self.to_dict()
            meta = {k: d[k] for k in ("kind", "annotations", "trait_names", "select_names")}
            arrays: dict[str, Any] = {
                k: np.asarray(d[k], dtype=np.float64) for k in ("S", "V", "S_Tau", "V_Tau", "I", "N", "m", "prop")
            }
            arrays["select"] = np.asarray(d["select"], dtype=np.int64)
            arrays["meta"] = np.array(json.dumps(meta))
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            data = buf.getvalue()
        write_bytes_atomic(path, data)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> StratifiedCovStruc:
        """Read a file written by :meth:`save` (JSON or ``.npz``)."""
        path = Path(path)
        if not path.is_file():
            raise InputError("stratified covstruc file not found", path=path)
        try:
            if path.suffix.lower() == ".json":
                obj = json.loads(path.read_text())
            else:
                with np.load(path, allow_pickle=False) as z:
                    obj = json.loads(str(z["meta"]))
                    obj.update({k: z[k] for k in z.files if k != "meta"})
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"cannot read stratified covstruc: {exc}", path=path) from exc
        if obj.get("kind") != "polgen.gsem.s_ldsc":
            raise SchemaError("file does not hold a polgen s_ldsc result", path=path)
        try:
            return cls.from_dict(obj)
        except InputError as exc:
            exc.path = str(path)
            exc.args = (exc._render(),)
            raise


# ---------------------------------------------------------------------------------------------
# reading the reference
# ---------------------------------------------------------------------------------------------
def _split_ld(ld: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[str, list[str]]:
    """R's choice of the baseline prefix: the one ending in ``baseline``, else the first."""
    lds = [os.fspath(ld)] if isinstance(ld, (str, os.PathLike)) else [os.fspath(x) for x in ld]
    if not lds:
        raise InputError("ld needs at least one annotated LD-score prefix")
    base = [x for x in lds if re.search(r"baseline$", x)]
    if len(base) == 1:
        return base[0], [x for x in lds if x != base[0]]
    return lds[0], lds[1:]


def _ld_names(path: Path, extra_name: str | None) -> list[str]:
    cols = ldscore_columns(path)
    if extra_name is not None and len(cols) == 1:
        return [extra_name]
    return cols


@dataclass
class _Reference:
    X: np.ndarray  # LD scores (rows x every annotation read), C-contiguous
    cols: np.ndarray  # the columns of X kept (continuous ones dropped with exclude_cont)
    snps: pl.DataFrame  # SNP, CHR, BP, __idx
    ld_names: list[str]
    annot_names: list[str]
    m: np.ndarray
    overlap: np.ndarray
    binary: np.ndarray


def _read_reference(
    ld: Any, frq: str | os.PathLike, m_suffix: str, exclude_cont: bool, keep: pl.DataFrame
) -> _Reference:
    base, extras = _split_ld(ld)
    bset = find_annot_set(base, m_suffix)
    chroms = bset.chromosomes
    esets = [find_annot_set(e, m_suffix, chromosomes=chroms) for e in extras]
    for e in esets:
        lacking = [c for c in chroms if c not in e.ldscore]
        if lacking:
            raise InputError(f"extra annotation set has no LD scores for chromosome {lacking[0]}", path=e.prefix)
    frqs = frq_files(frq)
    lacking = [c for c in chroms if c not in frqs]
    if lacking:
        raise InputError(
            f"frequency file for chromosome {lacking[0]} not found (the LD scores need one per chromosome)",
            path=f"{os.fspath(frq)}{lacking[0]}.frq",
        )
    log.info(
        "s_ldsc: reading LD scores of %d chromosomes from %s (+%d annotation sets)", len(chroms), base, len(extras)
    )
    # -- annotation names, their LD-score columns and M counts
    ld_names: list[str] = []
    cols_per_set: list[list[str]] = []
    m = None
    for i, s in enumerate([bset, *esets]):
        first = s.ldscore[chroms[0]]
        cols = ldscore_columns(first)
        if not cols:
            raise SchemaError("LD score file has no annotation columns", path=first)
        cols_per_set.append(cols)
        ld_names += _ld_names(first, extras[i - 1] if i else None)
        ms = np.zeros(len(cols))
        for c in chroms:
            if ldscore_columns(s.ldscore[c]) != cols:
                raise SchemaError(f"LD score columns differ from those of {first.name}", path=s.ldscore[c])
            ms += read_m_counts(s.m[c], len(cols))
        m = ms if m is None else np.concatenate([m, ms])
    assert m is not None
    if len(ld_names) < 2:
        raise InputError(
            "the LD scores hold a single annotation; s_ldsc needs the baseline plus annotations", path=base
        )
    # -- per chromosome: the LD scores of the SNPs some trait (and the weights) have, and the overlap
    # of the annotations over SNPs with 0.05 < MAF < 0.95
    aa = None
    binary = None
    annot_names: list[str] = []
    # at most one row per SNP some trait has (more only with duplicated LD-score ids: then it grows)
    X = np.empty((max(keep.height, 1), len(ld_names)))
    o = 0
    per_chr_ids: list[pl.DataFrame] = []
    for c in chroms:
        df = read_ldscore_file(bset.ldscore[c], cols_per_set[0], keep)
        for j, e in enumerate(esets):
            cols = cols_per_set[j + 1]
            ex = read_ldscore_file(e.ldscore[c], cols, keep).drop("CHR", "BP")
            ex = ex.rename({cols[0]: extras[j]} if len(cols) == 1 else {})
            if ex["SNP"].equals(df["SNP"]):
                df = pl.concat([df, ex.drop("SNP")], how="horizontal")
            else:
                df = df.join(ex, on="SNP", how="inner", maintain_order="left")
        names, prod, bin_c = annotation_overlap(
            [bset.annot[c], *[e.annot[c] for e in esets]],
            frqs[c],
            ld_snps=df.select("SNP"),
            ld_file=bset.ldscore[c],
            extra_names=extras,
        )
        n = df.height
        if o + n > X.shape[0]:
            grown = np.empty((max(2 * X.shape[0], o + n), X.shape[1]))
            grown[:o] = X[:o]
            X = grown
        X[o : o + n] = df.select(ld_names).to_numpy()
        o += n
        per_chr_ids.append(df.select("SNP", "CHR", "BP"))
        del df
        if aa is None:
            aa, binary, annot_names = prod, bin_c, names
        else:
            if names != annot_names:
                raise SchemaError(
                    f"annotation columns {names} differ from chromosome {chroms[0]}'s", path=bset.annot[c]
                )
            aa = aa + prod
            binary = binary & bin_c
    assert aa is not None and binary is not None
    if len(annot_names) != len(ld_names):
        raise SchemaError(
            f"{len(annot_names)} annotation columns in the .annot files but {len(ld_names)} LD-score columns",
            path=bset.annot[chroms[0]],
        )
    for a, l in zip(annot_names, ld_names):
        if l not in (a, f"{a}L2"):
            raise SchemaError(
                f"annotation column {a!r} does not match LD-score column {l!r} (expected {a}L2)",
                path=bset.annot[chroms[0]],
                column=a,
            )
    kept = binary if exclude_cont else np.ones(len(ld_names), dtype=bool)
    if exclude_cont and not kept.all():
        log.info("s_ldsc: excluding continuous annotations %s", [a for a, b in zip(annot_names, kept) if not b])
    if kept.sum() < 2:
        raise InputError("fewer than two annotations remain (s_ldsc needs the baseline plus annotations)", path=base)
    ki = np.flatnonzero(kept)
    m = m[ki]
    aa = aa[np.ix_(ki, ki)]
    overlap = aa / m[None, :]
    X = X[:o]  # a view: no copy
    snps = pl.concat(per_chr_ids).with_row_index("__idx")
    return _Reference(
        X=X,
        cols=ki.astype(np.int64),
        snps=snps,
        ld_names=[ld_names[i] for i in ki],
        annot_names=[annot_names[i] for i in ki],
        m=m,
        overlap=overlap,
        binary=binary[ki],
    )


# ---------------------------------------------------------------------------------------------
# regressions
# ---------------------------------------------------------------------------------------------
def _merge_trait(y: pl.DataFrame, snps: pl.DataFrame, name: str, label: str, n_blocks: int):
    n_in = y.height
    merged = (
        y.join(snps, on="SNP", how="inner", maintain_order="left")
        .with_columns(pl.col("CHR").cast(pl.Int64, strict=False).alias("__chr"))
        .sort(["__chr", "BP"], maintain_order=True, nulls_last=True)
        .drop("__chr")
    )
    log.info("s_ldsc %s: out of %d SNPs, %d remain after merging with LD-score files", name, n_in, merged.height)
    nmax = merged["N"].max()
    cmax = max(0.001 * float(nmax), 80.0) if isinstance(nmax, (int, float)) else 80.0
    keep = merged.filter((pl.col("Z") ** 2) <= cmax)
    log.info(
        "s_ldsc %s: removing %d SNPs with Chi^2 > %g; %d remain", name, merged.height - keep.height, cmax, keep.height
    )
    if keep.height < n_blocks:
        raise InputError(
            f"only {keep.height} SNPs remain after merging with the LD scores (fewer than n_blocks={n_blocks})",
            path=label,
        )
    return {
        "idx": keep["__idx"].to_numpy().astype(np.int64),
        "Z": keep["Z"].cast(pl.Float64).to_numpy(),
        "N": keep["N"].cast(pl.Float64).to_numpy(),
        "wLD": keep["wLD"].to_numpy(),
        # alleles compared between traits as 64-bit hashes (no per-SNP Python strings)
        "A1": keep["A1"].hash(seed=0).to_numpy(),
    }


def _pair(
    ref: _Reference, xtot: np.ndarray, t1: dict, t2: dict | None, n_blocks: int, M_tot: float, names: tuple[str, str]
):
    """One regression: (reg, delete, N.bar, n SNPs, mean chi2 or Z1Z2, per-SNP response)."""
    if t2 is None:
        idx, N = t1["idx"], t1["N"]
        chi = t1["Z"] ** 2
        l_tot = xtot[idx]
        iw = _weights(chi, l_tot, t1["wLD"], N, M_tot)
        weights = iw / iw.sum()
        Nbar = float(N.mean())
        scale = N / Nbar
        y = chi
    else:
        pos = np.full(ref.X.shape[0], -1, dtype=np.int64)
        pos[t2["idx"]] = np.arange(t2["idx"].shape[0])
        p2 = pos[t1["idx"]]
        sel1 = np.flatnonzero(p2 >= 0)
        sel2 = p2[sel1]
        idx = t1["idx"][sel1]
        z1, a1x, wl, N1 = (t1[c][sel1] for c in ("Z", "A1", "wLD", "N"))
        z2, a1y, N2 = (t2[c][sel2] for c in ("Z", "A1", "N"))
        if idx.shape[0] < n_blocks:
            raise InputError(
                f"only {idx.shape[0]} SNPs shared by {names[0]} and {names[1]} (fewer than n_blocks={n_blocks})"
            )
        z1 = np.where(a1y == a1x, z1, -z1)
        l_tot = xtot[idx]
        iw1 = _weights(z1**2, l_tot, wl, N1, M_tot)
        iw2 = _weights(z2**2, l_tot, wl, N2, M_tot)
        tot = iw1 + iw2
        weights = tot / tot.sum()
        Nbar = math.sqrt(N1.mean() * N2.mean())
        scale = np.ones(idx.shape[0])
        y = z1 * z2
    starts, ends = block_bounds(idx.shape[0], n_blocks)
    xtx, xty = block_crossprod(ref.X, ref.cols, idx, scale, weights, y, starts, ends)
    try:
        reg, delete, _ = jackknife(xtx, xty)
    except np.linalg.LinAlgError as exc:
        raise InputError(
            "the stratified LD-score regression is singular (an annotation's LD scores are constant or "
            f"collinear with others over the merged SNPs): {exc}"
        ) from exc
    return reg, delete, Nbar, int(idx.shape[0]), y


def s_ldsc(
    munged: Munged,
    sample_prev: Any = None,
    population_prev: Any = None,
    ld: str | os.PathLike | Sequence[str | os.PathLike] = "",
    wld: str | os.PathLike = "",
    frq: str | os.PathLike = "",
    trait_names: Sequence[str] | None = None,
    n_blocks: int = 200,
    exclude_cont: bool = True,
    m_suffix: str = "M_5_50",
) -> StratifiedCovStruc:
    """Stratified multivariable LDSC (R GenomicSEM ``s_ldsc``); the algorithm is in the module docstring.

    Parameters
    ----------
    munged
        The dict ``munge`` returns, or paths / frames of munged statistics (SNP N Z A1 A2).
    sample_prev, population_prev
        Per-trait prevalences for liability conversion (None/NaN for continuous traits).
    ld
        Prefix (or directory) of the annotated LD scores, or several prefixes: the one ending in
        ``baseline`` (else the first) is the baseline set with ``.annot`` files; the others add
        annotations (R's ``ld = c(...)``).
    wld
        Prefix of the regression-weight LD scores.
    frq
        Prefix of the PLINK ``{chr}.frq`` files (SNP, MAF).
    trait_names
        Names of the traits (default ``V1, V2, ...`` or the dict's keys).
    n_blocks
        Jackknife blocks (more than 18 traits: ``(k+1)(k+2)/2 + 1`` as R).
    exclude_cont
        Drop continuous (non 0/1) annotations, as R's default.
    m_suffix
        ``"M_5_50"`` (R) or ``"M"`` for the ``.l2.M`` counts.

    Returns
    -------
    StratifiedCovStruc

    Raises
    ------
    InputError
        A missing file (LD scores, ``.M``, ``.annot``, ``.frq``, weights, munged statistics), M
        counts that do not match the LD-score columns, ``.annot`` files lacking LD-score SNPs, too
        few SNPs for ``n_blocks``, or a singular regression; each names the file (and column).
    SchemaError
        Annotation columns that do not match the LD-score columns, or missing columns.
    """
    items, names, labels = _normalise_munged(munged, trait_names)
    k = len(items)
    if k == 0:
        raise InputError("s_ldsc needs at least one munged trait")
    for arg, val in (("ld", ld), ("wld", wld), ("frq", frq)):
        if not val:
            raise InputError(f"s_ldsc needs {arg} (a file prefix or directory)")
    n_blocks = int(n_blocks)
    if k > 18:
        n_blocks = (k + 1) * (k + 2) // 2 + 1
        log.info("s_ldsc: %d traits, using %d jackknife blocks", k, n_blocks)
        if n_blocks > 1000:
            log.warning("s_ldsc: more than 1000 jackknife blocks may bias the standard errors")
    if n_blocks < 2:
        raise InputError(f"n_blocks must be at least 2, got {n_blocks}")
    samp = _per_trait(sample_prev, k, "sample_prev")
    pop = _per_trait(population_prev, k, "population_prev")

    traits = [_load_trait(obj, label) for obj, label in zip(items, labels)]
    w = read_weight_ldscores(wld)
    wanted = pl.concat([t.select("SNP") for t in traits]).unique().join(w.select("SNP"), on="SNP", how="semi")
    ref = _read_reference(ld, frq, m_suffix, exclude_cont, wanted)
    na = len(ref.ld_names)
    M_tot = float(ref.m.sum())
    log.info("s_ldsc: LD scores of %d SNPs and %d annotations (M = %g)", ref.X.shape[0], na, M_tot)
    xtot = np.empty(ref.X.shape[0])
    for s0 in range(0, ref.X.shape[0], 65536):  # row sums of the kept columns, without a copy of X
        xtot[s0 : s0 + 65536] = ref.X[s0 : s0 + 65536][:, ref.cols].sum(axis=1)
    # the weights joined to the LD-score SNPs once (R merges each trait with both: the same rows)
    snps_w = ref.snps.join(w, on="SNP", how="inner", maintain_order="left")
    del w, wanted
    tr = [_merge_trait(t, snps_w, n, lab, n_blocks) for t, n, lab in zip(traits, names, labels)]
    del traits, snps_w

    nV = k * (k + 1) // 2
    S_list = np.full((na, k, k), np.nan)
    T_list = np.full((na, k, k), np.nan)
    I = np.full((k, k), np.nan)
    N_vec = np.empty(nV)
    pseudo = np.empty((n_blocks, nV, na))
    diag_rows: list[dict] = []
    s = 0
    for j in range(k):
        for kk in range(j, k):
            reg, delete, Nbar, n_snps, y = _pair(
                ref, xtot, tr[j], None if j == kk else tr[kk], n_blocks, M_tot, (names[j], names[kk])
            )
            cats = reg[:na] / Nbar * ref.m
            tot = ref.overlap @ cats
            pseudo[:, s, :] = n_blocks * cats[None, :] - (n_blocks - 1) * delete[:, :na] / Nbar * ref.m[None, :]
            ptau = n_blocks * reg[None, :] - (n_blocks - 1) * delete
            jk = np.cov(ptau, rowvar=False) / n_blocks
            cat_cov = jk[:na, :na] / Nbar**2 * np.outer(ref.m, ref.m)
            N_vec[s] = Nbar
            I[j, kk] = I[kk, j] = reg[na]
            S_list[:, j, kk] = S_list[:, kk, j] = tot
            T_list[:, j, kk] = T_list[:, kk, j] = cats
            row = {
                "trait1": names[j],
                "trait2": names[kk],
                "n_snps": n_snps,
                "total": float(cats.sum()),
                "total_se": float(math.sqrt(max(cat_cov.sum(), 0.0))),
                "intercept": float(reg[na]),
                "intercept_se": float(math.sqrt(jk[na, na])),
                "mean_y": float(y.mean()),
            }
            diag_rows.append(row)
            log.info(
                "s_ldsc %s/%s: %d SNPs, intercept %.4f (%.4f), total %.4f (%.4f)",
                names[j],
                names[kk],
                n_snps,
                row["intercept"],
                row["intercept_se"],
                row["total"],
                row["total_se"],
            )
            s += 1

    # ---- V per annotation: cov over blocks of the (overlap-projected) pseudo-values
    proj = np.einsum("bva,fa->bvf", pseudo, ref.overlap)
    pc = pseudo - pseudo.mean(axis=0)
    qc = proj - proj.mean(axis=0)
    denom = (n_blocks - 1) * n_blocks
    v_out = np.einsum("buf,bpf->fup", qc, qc) / denom
    v_tau = np.einsum("buf,bpf->fup", pc, pc) / denom
    factors = np.array([liability_factor(samp[i], pop[i]) for i in range(k)])
    r = np.sqrt(np.outer(factors, factors))
    rows, cols = np.tril_indices(k)
    order = np.lexsort((rows, cols))  # vech: column by column
    sc = r[rows[order], cols[order]]
    scv = np.outer(sc, sc)
    S = [S_list[f] * r for f in range(na)]
    S_Tau = [T_list[f] * r for f in range(na)]
    V = [v_out[f] * scv for f in range(na)]
    V_Tau = [v_tau[f] * scv for f in range(na)]
    if np.any(factors != 1.0):
        log.info("s_ldsc: liability-scale conversion factors %s", factors.tolist())
    flanking = np.array([bool(re.search("flanking", a)) for a in ref.annot_names])
    select = np.where(ref.binary & ~flanking, 1, 2)[1:]
    out = StratifiedCovStruc(
        S=S,
        V=V,
        S_Tau=S_Tau,
        V_Tau=V_Tau,
        I=I,
        N=N_vec,
        m=ref.m,
        annotations=list(ref.ld_names),
        trait_names=names,
        prop=ref.m / ref.m[0],
        select_names=list(ref.annot_names[1:]),
        select=select,
    )
    out.extra["s_ldsc"] = diag_rows
    out.extra["liability_factors"] = factors.tolist()
    return out
