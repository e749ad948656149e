"""Synthetic HDL LD reference panels and summary statistics drawn under the HDL model.

The real HDL panels (UK Biobank, hundreds of MB to GB of eigen-decompositions) are not bundled.
:func:`make_hdl_panel` builds a small panel in polgen's layout (:mod:`polgen.io.hdl_panel`) from a
genotype matrix or from a simulated LD structure (auto-regressive correlation ``decay^|i - j|``
inside each piece), and :func:`simulate_hdl_sumstats` draws munged-format statistics whose genetic
covariance is a given matrix, so that ``hdl(simulate_hdl_sumstats(panel, S, N), ld_path=panel)``
recovers ``S``.  Both feed the tests and the demo.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import polars as pl

from polgen.errors import InputError
from polgen.io.hdl_panel import HDLPanel, HDLPiece, open_hdl_panel, write_hdl_panel

log = logging.getLogger("polgen")

__all__ = ["make_hdl_panel", "simulate_hdl_sumstats"]

_BASES = np.array(["A", "C", "G", "T"])
_PARTNER = {"A": "G", "G": "A", "C": "T", "T": "C"}


def _eigen(R: np.ndarray, eigen_cut: float) -> tuple[np.ndarray, np.ndarray]:
    w, U = np.linalg.eigh(R)
    order = np.argsort(w)[::-1]
    w, U = w[order], U[:, order]
    w = np.clip(w, 0.0, None)
    frac = np.cumsum(w) / w.sum()
    k = int(np.searchsorted(frac, eigen_cut - 1e-12) + 1)
    return np.ascontiguousarray(w[:k]), np.ascontiguousarray(U[:, :k])


def make_hdl_panel(
    out: str | os.PathLike,
    *,
    genotypes: np.ndarray | None = None,
    chromosomes: Sequence[int] | np.ndarray | None = None,
    n_chromosomes: int = 22,
    pieces_per_chromosome: int = 2,
    snps_per_piece: int = 50,
    decay: float = 0.6,
    eigen_cut: float = 0.99,
    seed: int | None = None,
    overwrite: bool = False,
) -> HDLPanel:
    """Build a synthetic HDL LD reference panel (polgen layout) and open it.

    Parameters
    ----------
    out
        Folder to write.
    genotypes
        Optional ``individuals x SNPs`` dosage matrix; its column correlations are the LD.  SNPs are
        cut into contiguous pieces of about ``snps_per_piece`` per chromosome.
    chromosomes
        Chromosome of every genotype column (default: all on chromosome 1).
    n_chromosomes, pieces_per_chromosome, snps_per_piece
        Shape of a simulated panel (when ``genotypes`` is None).
    decay
        Simulated LD: correlation ``decay^|i - j|`` between SNPs ``i, j`` of a piece.
    eigen_cut
        Keep the leading eigenpairs explaining this fraction of the LD matrix's trace (HDL: 0.99).
    seed
        Seed for SNP alleles.
    overwrite
        Replace an existing folder.

    Returns
    -------
    HDLPanel
        The opened panel; each piece's ``LDsc`` is the row sum of squared correlations in the piece.
    """
    if not 0.0 < eigen_cut <= 1.0:
        raise InputError(f"eigen_cut must lie in (0, 1], got {eigen_cut}")
    rng = np.random.default_rng(seed)
    blocks: list[tuple[int, int, np.ndarray]] = []  # chrom, piece, correlation matrix
    if genotypes is not None:
        G = np.asarray(genotypes, dtype=np.float64)
        if G.ndim != 2 or G.shape[0] < 3:
            raise InputError(f"genotypes must be an individuals x SNPs matrix, got shape {G.shape}")
        sd = G.std(axis=0)
        bad = np.flatnonzero(~(sd > 0))
        if bad.size:
            raise InputError(f"genotype column {int(bad[0])} is monomorphic (no LD can be computed)", row=int(bad[0]))
        X = (G - G.mean(axis=0)) / sd
        chrom = np.ones(G.shape[1], dtype=np.int64) if chromosomes is None else np.asarray(chromosomes, dtype=np.int64)
        if chrom.shape != (G.shape[1],):
            raise InputError(f"chromosomes has {chrom.size} entries for {G.shape[1]} genotype columns")
        for c in np.unique(chrom):
            cols = np.flatnonzero(chrom == c)
            n_pc = max(1, int(round(cols.size / max(snps_per_piece, 1))))
            for p, part in enumerate(np.array_split(cols, n_pc), start=1):
                Xp = X[:, part]
                blocks.append((int(c), p, Xp.T @ Xp / Xp.shape[0]))
    else:
        if not (-1.0 < decay < 1.0):
            raise InputError(f"decay must lie in (-1, 1), got {decay}")
        if min(n_chromosomes, pieces_per_chromosome, snps_per_piece) < 1:
            raise InputError("n_chromosomes, pieces_per_chromosome and snps_per_piece must be at least 1")
        idx = np.arange(snps_per_piece)
        R = decay ** np.abs(idx[:, None] - idx[None, :])
        for c in range(1, n_chromosomes + 1):
            for p in range(1, pieces_per_chromosome + 1):
                blocks.append((c, p, R))
    pieces, a1s, pos = [], [], []
    start = 1
    for c, p, R in blocks:
        m = R.shape[0]
        lam, V = _eigen(R, eigen_cut)
        a = rng.integers(0, 4, size=m)
        b = (a + rng.integers(1, 4, size=m)) % 4
        snps = np.array([f"rs{start + i}" for i in range(m)])
        pieces.append(HDLPiece(c, p, snps, _BASES[b], np.ascontiguousarray((R * R).sum(axis=1)), lam, V))
        a1s.append(_BASES[a])
        pos.append(np.arange(start, start + m, dtype=np.int64) * 1000)
        start += m
    write_hdl_panel(out, pieces, positions=pos, a1=a1s, overwrite=overwrite)
    return open_hdl_panel(out)


def simulate_hdl_sumstats(
    panel: str | os.PathLike | HDLPanel,
    S: np.ndarray,
    N: Sequence[float] | float,
    *,
    trait_names: Sequence[str] | None = None,
    seed: int | None = None,
) -> dict[str, pl.DataFrame]:
    """Munged-format statistics (``SNP A1 A2 N Z``) drawn under the HDL model on ``panel``'s LD.

    Per piece, true effects ``beta ~ MVN(0, S / M)`` (``M`` the panel's SNP count) and
    ``bhat = R beta + e`` with ``e ~ N(0, R / N)`` for independent samples, ``R = V diag(lam) V'``
    the panel's (truncated) LD; ``Z = sqrt(N) bhat``.

    Parameters
    ----------
    panel
        The panel (folder or opened).
    S
        ``k x k`` genetic covariance (positive semi-definite).
    N
        Sample size, one or one per trait.
    trait_names
        Keys of the result (default ``V1..Vk``).
    seed
        Random seed.

    Returns
    -------
    dict of str to polars.DataFrame
        One munged frame per trait, SNPs in panel order.
    """
    pan = open_hdl_panel(panel)
    S = np.atleast_2d(np.asarray(S, dtype=np.float64))
    k = S.shape[0]
    if S.shape != (k, k) or not np.allclose(S, S.T):
        raise InputError(f"S must be a symmetric k x k matrix, got shape {S.shape}")
    w, U = np.linalg.eigh(S)
    if w.min() < -1e-12 * max(1.0, abs(w).max()):
        raise InputError("S is not positive semi-definite")
    L = U * np.sqrt(np.clip(w, 0, None))
    Ns = np.broadcast_to(np.asarray(N, dtype=np.float64), (k,)).copy()
    if not np.all(Ns > 0):
        raise InputError(f"N must be positive, got {N!r}")
    names = list(trait_names) if trait_names is not None else [f"V{i + 1}" for i in range(k)]
    if len(names) != k:
        raise InputError(f"{len(names)} trait names for {k} traits")
    rng = np.random.default_rng(seed)
    M = pan.m_ref
    parts: list[list[pl.DataFrame]] = [[] for _ in range(k)]
    for pc in pan:
        m, q = pc.V.shape
        beta = rng.standard_normal((m, k)) @ L.T / np.sqrt(M)
        rb = pc.V @ (pc.lam[:, None] * (pc.V.T @ beta))
        e = pc.V @ (np.sqrt(pc.lam)[:, None] * rng.standard_normal((q, k))) / np.sqrt(Ns)
        z = (rb + e) * np.sqrt(Ns)
        a1 = np.array([_PARTNER.get(a, "N") for a in pc.a2])
        for t in range(k):
            parts[t].append(pl.DataFrame({"SNP": pc.snps, "A1": a1, "A2": pc.a2, "N": np.full(m, Ns[t]), "Z": z[:, t]}))
    return {names[t]: pl.concat(parts[t]) for t in range(k)}
