"""Deterministic synthetic demo data for every polgen method.

Three generators write realistic input files into a directory and return a small dataclass with
the paths and the true parameters they were simulated from:

* :func:`make_gsem_demo` — GWAS summary statistics of 3 traits over 22 chromosomes simulated
  from the LD Score regression model with a known genetic covariance (one common factor) and
  sample overlap, LDSC-format LD scores, an HapMap3-style SNP list and a sumstats reference file.
* :func:`make_lfmm_demo` — a PLINK .bed/.bim/.fam with admixed population structure, an
  environmental variable correlated with ancestry and loci whose allele frequency follows it.
* :func:`make_stlr_demo` — an ``.h5ad`` with spatial coordinates, cell types in spatial domains,
  TF / ligand / receptor / target genes whose expression follows a known linear model of TFs and
  received ligands; a CellChat-format ligand-receptor table and a GRN.

Same ``seed``, same files, byte for byte.  :func:`polgen.demo.run_demo` runs the methods on them.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from polgen.errors import InputError
from polgen.io.sink import write_table_atomic

log = logging.getLogger("polgen")

__all__ = [
    "GsemDemo",
    "LfmmDemo",
    "StlrDemo",
    "make_gsem_demo",
    "make_lfmm_demo",
    "make_stlr_demo",
    "received_ligands_dense",
]

# hg19 chromosome lengths in Mb (rounded): SNPs are spread over the 22 autosomes in proportion
_CHR_MB = np.array(
    [249, 243, 198, 191, 181, 171, 159, 146, 141, 136, 135, 134, 115, 107, 103, 90, 81, 78, 59, 63, 48, 51],
    dtype=np.float64,
)
# strand-unambiguous allele pairs
_ALLELE_PAIRS = np.array(
    [("A", "C"), ("A", "G"), ("C", "A"), ("C", "T"), ("G", "A"), ("G", "T"), ("T", "C"), ("T", "G")]
)


# -- small file helpers ---------------------------------------------------------------------------


def _atomic_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_text_table(df: pl.DataFrame, path: Path, separator: str = "\t") -> Path:
    """A delimited text table, gzip-compressed when ``path`` ends in .gz (deterministic bytes)."""
    buf = io.BytesIO()
    df.write_csv(buf, separator=separator, null_value="NA")
    raw = buf.getvalue()
    if path.suffix == ".gz":
        raw = gzip.compress(raw, compresslevel=4, mtime=0)
    return _atomic_bytes(path, raw)


def prepare_out_dir(out: str | os.PathLike) -> Path:
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError("demo output path exists and is not a directory", path=p)
    p.mkdir(parents=True, exist_ok=True)
    return p


# =================================================================================================
# Genomic SEM
# =================================================================================================


@dataclass
class GsemDemo:
    """Files and truth of the Genomic SEM demo.

    ``S_true`` is the genetic covariance matrix (heritabilities on the diagonal) on the scale LD
    Score regression estimates from these files without a prevalence conversion; ``I_true`` the
    LDSC intercepts (diagonal: 1 + confounding; off-diagonal: ``N_s r_p / sqrt(N_i N_k)`` from
    sample overlap); ``loadings`` the standardised one-factor loadings (``rg_ik = l_i l_k``).
    """

    out: Path
    trait_names: list[str]
    sumstats: list[Path]
    ld: Path
    wld: Path
    hm3: Path
    reference: Path
    N: np.ndarray
    h2: np.ndarray
    loadings: np.ndarray
    rg: np.ndarray
    S_true: np.ndarray
    I_true: np.ndarray
    M: float
    n_snps: int
    se_logit: list[bool]
    OLS: list[bool]
    linprob: list[bool]
    sample_prev: list[float | None] = field(default_factory=lambda: [None, None, None])
    population_prev: list[float | None] = field(default_factory=lambda: [None, None, None])

    @property
    def model(self) -> str:
        """The true model in lavaan syntax (one common factor)."""
        return "F1 =~ " + " + ".join(self.trait_names)


def make_gsem_demo(
    out: str | os.PathLike, n_snps: int | None = None, small: bool = False, *, seed: int = 20240601
) -> GsemDemo:
    """Summary statistics for 3 traits simulated from the LDSC model with known genetic covariance.

    Per SNP ``j`` with LD score ``l_j`` the z-scores of the three traits (for the reference A1
    allele) are drawn jointly as ``z_j ~ N(0, I + l_j / M * sqrt(N N') * Sigma_g)`` where ``I`` holds
    the intercepts (sample overlap between traits A and B, and B and C) and
    ``Sigma_g = D R D`` with ``D = diag(sqrt(h2))`` and ``R = l l'`` off the diagonal.  Files use
    three different layouts (tab/.gz with BETA; whitespace with lower-case aliases and 30% of SNPs
    reported on the other strand orientation; comma/.gz with OR and ``StdErrLogOR``), each drop 2%
    of SNPs, and trait A marks 1% of SNPs with INFO < 0.9 (filtered by munge).
    """
    if n_snps is None:
        n_snps = 20_000 if small else 200_000
    n_snps = int(n_snps)
    if n_snps < 22 * 10:
        raise InputError(f"n_snps must be at least 220 (10 per chromosome), got {n_snps}")
    root = prepare_out_dir(out)
    d = root / "gsem"
    rng = np.random.default_rng(seed)

    traits = ["TraitA", "TraitB", "TraitC"]
    N = np.array([50_000.0, 40_000.0, 60_000.0])
    h2 = np.array([0.30, 0.20, 0.25])
    lam = np.array([0.6, 0.5, 0.4])
    R = np.outer(lam, lam)
    np.fill_diagonal(R, 1.0)
    D = np.diag(np.sqrt(h2))
    S = D @ R @ D
    # intercepts: confounding on B; overlap A-B (20k shared, r_p 0.3) and B-C (10k shared, r_p 0.2)
    I = np.eye(3)
    I[1, 1] = 1.02
    I[0, 1] = I[1, 0] = 20_000 * 0.3 / np.sqrt(N[0] * N[1])
    I[1, 2] = I[2, 1] = 10_000 * 0.2 / np.sqrt(N[1] * N[2])
    M_total = 1_000_000.0

    # --- SNPs -----------------------------------------------------------------------------------
    counts = np.floor(_CHR_MB / _CHR_MB.sum() * n_snps).astype(np.int64)
    counts[: n_snps - counts.sum()] += 1
    chrom = np.repeat(np.arange(1, 23), counts)
    bp = np.empty(n_snps, dtype=np.int64)
    start = 0
    for c, k in enumerate(counts):
        span = int(_CHR_MB[c] * 1e6)
        pos = np.sort(rng.choice(span - 20_000, size=k, replace=False)) + 10_000
        bp[start : start + k] = pos
        start += k
    snp = np.array([f"rs{100_000 + 7 * j}" for j in range(n_snps)])
    pairs = _ALLELE_PAIRS[rng.integers(0, len(_ALLELE_PAIRS), n_snps)]
    a1, a2 = pairs[:, 0], pairs[:, 1]
    maf = rng.uniform(0.01, 0.5, n_snps)
    rare = rng.random(n_snps) < 0.02
    maf[rare] = rng.uniform(0.002, 0.009, rare.sum())  # dropped by a MAF >= 0.01 filter
    a1_is_minor = rng.random(n_snps) < 0.5
    f_a1 = np.where(a1_is_minor, maf, 1.0 - maf)  # A1 frequency in the reference
    ell = rng.gamma(2.5, 35.0, n_snps) + 5.0  # LD scores (mean ~ 92, min 5)
    M_chr = np.round(M_total * counts / counts.sum())

    # --- z-scores from the LDSC model -----------------------------------------------------------
    B = np.sqrt(np.outer(N, N)) * S / M_total
    cov = I[None, :, :] + ell[:, None, None] * B[None, :, :]
    L = np.linalg.cholesky(cov)
    z = np.einsum("jab,jb->ja", L, rng.standard_normal((n_snps, 3)))

    # --- LD scores, M files, SNP list, reference ---------------------------------------------------
    ld = d / "ld"
    ld.mkdir(parents=True, exist_ok=True)
    start = 0
    for c in range(22):
        k = counts[c]
        sl = slice(start, start + k)
        start += k
        df = pl.DataFrame({"CHR": chrom[sl], "SNP": snp[sl], "BP": bp[sl], "L2": np.round(ell[sl], 3)})
        _write_text_table(df, ld / f"{c + 1}.l2.ldscore.gz")
        _atomic_bytes(ld / f"{c + 1}.l2.M_5_50", f"{int(M_chr[c])}\n".encode())
        _atomic_bytes(ld / f"{c + 1}.l2.M", f"{int(M_chr[c] * 1.4)}\n".encode())
    hm3 = _write_text_table(pl.DataFrame({"SNP": snp, "A1": a1, "A2": a2}), d / "w_hm3.snplist")
    reference = _write_text_table(
        pl.DataFrame({"SNP": snp, "CHR": chrom, "BP": bp, "MAF": np.round(maf, 5), "A1": a1, "A2": a2}),
        d / "reference.1000G.txt",
    )

    # --- per-trait files --------------------------------------------------------------------------
    from scipy.special import ndtr

    paths = []
    ss = d / "sumstats"
    ss.mkdir(parents=True, exist_ok=True)
    for t in range(3):
        keep = rng.random(n_snps) >= 0.02
        zt = z[:, t].copy()
        e_a1, e_a2 = a1.copy(), a2.copy()
        freq = np.clip(f_a1 + rng.normal(0.0, 0.003, n_snps), 0.001, 0.999)
        if t == 1:  # 30% of SNPs reported for the other allele
            flip = rng.random(n_snps) < 0.3
            e_a1[flip], e_a2[flip] = a2[flip], a1[flip]
            zt[flip] = -zt[flip]
            freq[flip] = 1.0 - freq[flip]
        info = rng.uniform(0.92, 1.0, n_snps)
        if t == 0:
            low = rng.random(n_snps) < 0.01
            info[low] = rng.uniform(0.3, 0.85, low.sum())
        p = 2.0 * ndtr(-np.abs(zt))
        if t < 2:  # continuous trait, standardised phenotype
            se = 1.0 / np.sqrt(2.0 * freq * (1.0 - freq) * N[t])
        else:  # case/control, half cases: var(y) = 1/4 on the logit scale
            se = 1.0 / np.sqrt(2.0 * freq * (1.0 - freq) * N[t] * 0.25)
        beta = zt * se
        k = keep
        if t == 0:
            df = pl.DataFrame(
                {
                    "SNP": snp[k],
                    "CHR": chrom[k],
                    "BP": bp[k],
                    "A1": e_a1[k],
                    "A2": e_a2[k],
                    "FRQ": np.round(freq[k], 5),
                    "INFO": np.round(info[k], 4),
                    "BETA": beta[k],
                    "SE": se[k],
                    "P": p[k],
                    "N": np.full(k.sum(), int(N[t])),
                }
            )
            path = _write_text_table(df, ss / "TraitA.txt.gz")
        elif t == 1:
            df = pl.DataFrame(
                {
                    "rsid": snp[k],
                    "chrom": chrom[k],
                    "pos": bp[k],
                    "effect_allele": e_a1[k],
                    "other_allele": e_a2[k],
                    "eaf": np.round(freq[k], 5),
                    "info": np.round(info[k], 4),
                    "beta": beta[k],
                    "standard_error": se[k],
                    "p_value": p[k],
                    "n": np.full(k.sum(), int(N[t])),
                }
            )
            path = _write_text_table(df, ss / "TraitB.tsv", separator=" ")
        else:
            df = pl.DataFrame(
                {
                    "MarkerName": snp[k],
                    "Chromosome": chrom[k],
                    "Position": bp[k],
                    "Allele1": e_a1[k],
                    "Allele2": e_a2[k],
                    "Freq1": np.round(freq[k], 5),
                    "INFO": np.round(info[k], 4),
                    "OR": np.exp(beta[k]),
                    "StdErrLogOR": se[k],
                    "P": p[k],
                    "TotalSampleSize": np.full(k.sum(), int(N[t])),
                }
            )
            path = _write_text_table(df, ss / "TraitC.csv.gz", separator=",")
        paths.append(path)

    truth = {
        "traits": traits,
        "N": N.tolist(),
        "h2": h2.tolist(),
        "loadings": lam.tolist(),
        "rg": R.tolist(),
        "S": S.tolist(),
        "I": I.tolist(),
        "M": M_total,
        "n_snps": n_snps,
        "seed": seed,
    }
    _atomic_bytes(d / "truth.json", (json.dumps(truth, indent=1) + "\n").encode())
    return GsemDemo(
        out=d,
        trait_names=traits,
        sumstats=paths,
        ld=ld,
        wld=ld,
        hm3=hm3,
        reference=reference,
        N=N,
        h2=h2,
        loadings=lam,
        rg=R,
        S_true=S,
        I_true=I,
        M=M_total,
        n_snps=n_snps,
        se_logit=[False, False, True],
        OLS=[True, True, False],
        linprob=[False, False, False],
    )


# =================================================================================================
# LFMM
# =================================================================================================


@dataclass
class LfmmDemo:
    """Files and truth of the LFMM demo: ``causal`` are .bim row indices of loci driven by ``env``."""

    out: Path
    bed: Path
    env: Path
    causal_file: Path
    n: int
    p: int
    K: int
    causal: np.ndarray
    effects: np.ndarray
    Q: np.ndarray
    env_values: np.ndarray
    missing_rate: float


def make_lfmm_demo(
    out: str | os.PathLike,
    n: int | None = None,
    p: int | None = None,
    K: int = 3,
    small: bool = False,
    *,
    seed: int = 20240602,
    causal_fraction: float = 0.01,
    missing_rate: float = 0.001,
) -> LfmmDemo:
    """Genotypes with K ancestral populations, an environment gradient and environment-driven loci.

    Ancestral allele frequencies follow the Balding-Nichols model (F_ST 0.1 around a U(0.05, 0.5)
    ancestral frequency); individuals are admixed along a one-dimensional cline (Dirichlet
    proportions centred on their position); ``env`` is the cline position plus noise (correlation
    with ancestry ~0.8).  For the causal loci the individual allele frequency is shifted on the logit
    scale by ``effect * env``.  Genotypes ~ Binomial(2, f), then ``missing_rate`` of calls set
    missing.  Values count A1 alleles.
    """
    if n is None:
        n = 200 if small else 1000
    if p is None:
        p = 2_000 if small else 20_000
    n, p, K = int(n), int(p), int(K)
    if n < 4 or p < 22 or K < 1:
        raise InputError(f"need n >= 4, p >= 22, K >= 1 (got n={n}, p={p}, K={K})")
    root = prepare_out_dir(out)
    d = root / "lfmm"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    # ancestry along a cline: population k centred at k/(K-1)
    pos = np.sort(rng.uniform(0.0, 1.0, n))
    centres = np.linspace(0.0, 1.0, K) if K > 1 else np.array([0.5])
    w = np.exp(-((pos[:, None] - centres[None, :]) ** 2) / (2 * 0.15**2)) + 0.05
    Q = np.vstack([rng.dirichlet(5.0 * wi / wi.sum()) for wi in w])
    env = pos + rng.normal(0.0, 0.15, n)
    env = (env - env.mean()) / env.std()

    F = 0.1
    anc = rng.uniform(0.05, 0.5, p)
    a = anc * (1 - F) / F
    b = (1 - anc) * (1 - F) / F
    P = np.clip(rng.beta(a[None, :].repeat(K, 0), b[None, :].repeat(K, 0)), 0.01, 0.99)  # K x p
    n_causal = max(1, int(round(causal_fraction * p)))
    causal = np.sort(rng.choice(p, size=n_causal, replace=False)).astype(np.int64)
    effects = rng.choice([-1.0, 1.0], n_causal) * rng.uniform(0.6, 1.2, n_causal)

    G = np.empty((n, p), dtype=np.int8)
    eff_full = np.zeros(p)
    eff_full[causal] = effects
    for s in range(0, p, 4096):
        e = min(s + 4096, p)
        f = Q @ P[:, s:e]
        shift = env[:, None] * eff_full[None, s:e]
        logit = np.log(f / (1 - f)) + shift
        f = 1.0 / (1.0 + np.exp(-logit))
        G[:, s:e] = rng.binomial(2, f).astype(np.int8)
    miss = rng.random((n, p)) < missing_rate
    G[miss] = -127

    chrom = np.repeat(np.arange(1, 23), np.diff(np.linspace(0, p, 23).astype(int)))
    bp = np.empty(p, dtype=np.int64)
    for c in range(1, 23):
        idx = np.flatnonzero(chrom == c)
        bp[idx] = 10_000 + 5_000 * np.arange(len(idx))
    pairs = _ALLELE_PAIRS[rng.integers(0, len(_ALLELE_PAIRS), p)]
    sid = [f"snp{j + 1}" for j in range(p)]
    iid = [f"ind{i + 1}" for i in range(n)]
    fid = [f"pop{int(np.argmax(Q[i])) + 1}" for i in range(n)]
    bed = d / "genotypes.bed"
    import bed_reader

    props = {
        "fid": fid,
        "iid": iid,
        "sid": sid,
        "chromosome": [str(c) for c in chrom],
        "bp_position": bp.tolist(),
        "allele_1": pairs[:, 0].tolist(),
        "allele_2": pairs[:, 1].tolist(),
    }
    tmp = d / ".genotypes.tmp.bed"
    bed_reader.to_bed(tmp, G, properties=props, count_A1=True)
    for ext in (".bim", ".fam", ".bed"):  # .bed last: its presence means the trio is complete
        os.replace(tmp.with_suffix(ext), bed.with_suffix(ext))

    env_path = _write_text_table(pl.DataFrame({"FID": fid, "IID": iid, "env": np.round(env, 6)}), d / "env.tsv")
    causal_file = _write_text_table(
        pl.DataFrame({"index": causal, "SNP": [sid[j] for j in causal], "effect": effects}), d / "causal.tsv"
    )
    return LfmmDemo(
        out=d,
        bed=bed,
        env=env_path,
        causal_file=causal_file,
        n=n,
        p=p,
        K=K,
        causal=causal,
        effects=effects,
        Q=Q,
        env_values=np.round(env, 6),
        missing_rate=missing_rate,
    )


# =================================================================================================
# SpaceTravLR
# =================================================================================================

_TFS = ["Pax5", "Ebf1", "Tcf7", "Lef1", "Spi1", "Cebpb", "Irf8", "Runx1"]
# (ligand, receptor(s), pathway, signaling)
_LR = [
    ("Cxcl12", "Cxcr4", "CXCL", "Secreted Signaling"),
    ("Ccl19", "Ccr7", "CCL", "Secreted Signaling"),
    ("Tgfb1", "Tgfbr1_Tgfbr2", "TGFb", "Secreted Signaling"),
    ("Il7", "Il7r_Il2rg", "IL7", "Secreted Signaling"),
    ("Cd40lg", "Cd40", "CD40", "Cell-Cell Contact"),
    ("Icam1", "Itgal_Itgb2", "ICAM", "Cell-Cell Contact"),
]
_TARGETS = [
    "Cd19",
    "Ms4a1",
    "Cd79a",
    "Cd3e",
    "Cd4",
    "Cd8a",
    "Lyz2",
    "Cd68",
    "Itgax",
    "Col1a1",
    "Pdgfra",
    "Ccnd1",
    "Myc",
    "Bcl6",
    "Prdm1",
    "Foxp3",
]
_CELL_TYPES = ["Bcell", "Tcell", "Macrophage", "Stromal"]


@dataclass
class StlrDemo:
    """Files and truth of the SpaceTravLR demo.

    Model: for target ``t`` in cell ``i`` of cluster ``c``,
    ``y_ti = b0_t + sum_f beta_{t,f,c} x_{f,i} + noise``, where the features ``f`` are TFs (their
    expression) and ligand-receptor pairs ``"ligand$receptor"`` (received ligand ``wL_l(i)`` times
    the receptor's expression; a complex receptor ``A_B`` counts as ``min(A, B)``).  Received
    ligands: ``wL_l(i) = (1/N) sum_j exp(-|x_i - x_j|^2 / (2 r_l^2)) L_l(j)`` with ``r = radius``
    for secreted and ``r = contact_distance`` for contact signalling.  ``betas`` holds every
    (target, feature, cluster, beta) of the truth.
    """

    out: Path
    h5ad: Path
    lr: Path
    grn_links: Path
    base_grn: Path
    betas_file: Path
    n_cells: int
    tfs: list[str]
    ligands: list[str]
    receptors: list[str]
    targets: list[str]
    cell_types: list[str]
    radius: float
    contact_distance: float
    layer: str
    cluster_key: str
    betas: pl.DataFrame


def received_ligands_dense(coords: np.ndarray, L: np.ndarray, radii: np.ndarray, block: int = 1024) -> np.ndarray:
    """Exact ``(1/N) sum_j exp(-d_ij^2 / (2 r_l^2)) L[j, l]`` in row blocks (demo-sized data)."""
    n = coords.shape[0]
    out = np.zeros((n, L.shape[1]))
    for s in range(0, n, block):
        e = min(s + block, n)
        d2 = ((coords[s:e, None, :] - coords[None, :, :]) ** 2).sum(-1)
        for r in np.unique(radii):
            cols = np.flatnonzero(radii == r)
            out[s:e, cols] = np.exp(-d2 / (2.0 * r * r)) @ L[:, cols]
    return out / n


def make_stlr_demo(
    out: str | os.PathLike,
    n_cells: int | None = None,
    small: bool = False,
    *,
    seed: int = 20240603,
    radius: float = 200.0,
    contact_distance: float = 30.0,
) -> StlrDemo:
    """A spatial tissue with 4 cell types in domains and targets driven by TFs and received ligands."""
    import anndata
    import pandas as pd
    import scipy.sparse as sp

    if n_cells is None:
        n_cells = 600 if small else 3000
    n = int(n_cells)
    if n < 50:
        raise InputError(f"n_cells must be at least 50, got {n}")
    root = prepare_out_dir(out)
    d = root / "stlr"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    # --- tissue: constant density (~15 um between neighbours), domains from 8 seeds mapped to 4
    # cell types, 8% mixing -------------------------------------------------------------------------
    side = 15.0 * np.sqrt(n)
    coords = rng.uniform(0.0, side, (n, 2))
    centres = rng.uniform(0.1 * side, 0.9 * side, (8, 2))
    dom = np.argmin(((coords[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    ct = np.array([0, 1, 2, 3, 0, 1, 3, 1])[dom]
    mix = rng.random(n) < 0.08
    ct[mix] = rng.integers(0, 4, mix.sum())
    C = len(_CELL_TYPES)

    receptor_genes = sorted({g for _, r, _, _ in _LR for g in r.split("_")})
    ligands = [lig for lig, _, _, _ in _LR]
    noise_genes = [f"Gm{1000 + k}" for k in range(12)]
    genes = _TFS + ligands + receptor_genes + _TARGETS + noise_genes
    gidx = {g: i for i, g in enumerate(genes)}

    def cluster_levels(m: int, hi: float, lo: float) -> np.ndarray:
        """(C, m) mean levels: each gene high in one or two cell types."""
        lev = np.full((C, m), lo)
        for j in range(m):
            lev[rng.choice(C, size=rng.integers(1, 3), replace=False), j] = hi
        return lev

    def draw(levels: np.ndarray) -> np.ndarray:
        mu = levels[ct]
        return rng.gamma(4.0, mu / 4.0)  # mean mu, CV 0.5, non-negative

    tf = draw(cluster_levels(len(_TFS), 3.0, 0.5))
    lig = draw(cluster_levels(len(ligands), 4.0, 0.2))
    rec = draw(cluster_levels(len(receptor_genes), 2.5, 0.4))
    noise = draw(np.full((C, len(noise_genes)), 1.0))

    radii = np.array([radius if s == "Secreted Signaling" else contact_distance for *_, s in _LR])
    wL = received_ligands_dense(coords, lig, radii)
    rec_of = {g: rec[:, k] for k, g in enumerate(receptor_genes)}
    lr_names = [f"{l}${r}" for l, r, _, _ in _LR]
    lr_feat = np.column_stack(
        [wL[:, k] * np.minimum.reduce([rec_of[g] for g in r.split("_")]) for k, (_, r, _, _) in enumerate(_LR)]
    )
    # put LR features on the TF scale so both matter
    lr_scale = 1.0 / np.maximum(lr_feat.mean(axis=0), 1e-12)

    rows = []
    Y = np.empty((n, len(_TARGETS)))
    cl_mult = rng.uniform(0.5, 1.5, (len(_TARGETS), 3 + 2, C))
    links = []
    for t, target in enumerate(_TARGETS):
        regs = rng.choice(len(_TFS), size=3, replace=False)
        lrs = rng.choice(len(_LR), size=2, replace=False)
        b0 = 1.0
        y = np.full(n, b0)
        feats = [(_TFS[k], tf[:, k], 1.0) for k in regs] + [(lr_names[k], lr_feat[:, k], lr_scale[k]) for k in lrs]
        for f_i, (fname, x, scale) in enumerate(feats):
            base = rng.choice([-1.0, 1.0], p=[0.25, 0.75]) * rng.uniform(0.3, 1.0) * scale
            beta_c = base * cl_mult[t, f_i]
            y = y + beta_c[ct] * x
            for c in range(C):
                rows.append((target, fname, _CELL_TYPES[c], c, float(beta_c[c])))
        for k in regs:
            links.append((_TFS[k], target, 1))
        y += rng.normal(0.0, 0.1, n)
        Y[:, t] = y
    shift = np.maximum(0.0, -Y.min(axis=0) + 0.05)  # keep expression non-negative
    Y += shift[None, :]
    for t, target in enumerate(_TARGETS):
        for c in range(C):
            rows.append((target, "intercept", _CELL_TYPES[c], c, float(1.0 + shift[t])))
    # decoy GRN edges (no effect)
    for target in _TARGETS:
        for k in rng.choice(len(_TFS), size=2, replace=False):
            if (_TFS[k], target, 1) not in links:
                links.append((_TFS[k], target, 0))

    expr = np.zeros((n, len(genes)))
    expr[:, [gidx[g] for g in _TFS]] = tf
    expr[:, [gidx[g] for g in ligands]] = lig
    expr[:, [gidx[g] for g in receptor_genes]] = rec
    expr[:, [gidx[g] for g in _TARGETS]] = Y
    expr[:, [gidx[g] for g in noise_genes]] = noise
    counts = rng.poisson(expr).astype(np.float32)

    obs = pd.DataFrame(index=pd.Index([f"cell{i:05d}" for i in range(n)], dtype=str))
    obs["cell_type"] = pd.Categorical(np.array(_CELL_TYPES)[ct], categories=_CELL_TYPES)
    obs["cell_type_int"] = ct.astype(np.int64)
    obs["domain"] = dom.astype(np.int64)
    var = pd.DataFrame(index=pd.Index(genes, dtype=str))
    kind = (
        ["TF"] * len(_TFS)
        + ["ligand"] * len(ligands)
        + ["receptor"] * len(receptor_genes)
        + ["target"] * len(_TARGETS)
        + ["other"] * len(noise_genes)
    )
    var["kind"] = pd.Categorical(kind)
    ad = anndata.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)
    ad.obsm["spatial"] = coords
    ad.layers["imputed_count"] = expr.astype(np.float64)
    ad.uns["polgen_demo"] = {"seed": seed, "radius": radius, "contact_distance": contact_distance}
    h5ad = d / "tissue.h5ad"
    tmp = d / ".tissue.tmp.h5ad"
    ad.write_h5ad(tmp)
    os.replace(tmp, h5ad)

    lr = _write_text_table(
        pl.DataFrame(
            {
                "ligand": [r[0] for r in _LR],
                "receptor": [r[1] for r in _LR],
                "pathway": [r[2] for r in _LR],
                "signaling": [r[3] for r in _LR],
            }
        ),
        d / "lr_pairs.csv",
        separator=",",
    )
    links_df = pl.DataFrame(
        {"source": [l[0] for l in links], "target": [l[1] for l in links], "true_edge": [bool(l[2]) for l in links]}
    ).sort("target", "source")
    grn_links = d / "grn_links.parquet"
    write_table_atomic(grn_links, links_df)
    # CellOracle-style base GRN: one peak per target, TF columns 0/1
    base = {
        "peak_id": [f"chr1_{1_000_000 + 5_000 * i}_{1_000_500 + 5_000 * i}" for i in range(len(_TARGETS))],
        "gene_short_name": list(_TARGETS),
    }
    for tf_name in _TFS:
        srcs = set(links_df.filter(pl.col("source") == tf_name)["target"].to_list())
        base[tf_name] = [1 if tg in srcs else 0 for tg in _TARGETS]
    base_grn = d / "base_grn.parquet"
    write_table_atomic(base_grn, pl.DataFrame(base))
    betas = pl.DataFrame(
        rows,
        schema={
            "target": pl.String,
            "feature": pl.String,
            "cell_type": pl.String,
            "cluster": pl.Int64,
            "beta": pl.Float64,
        },
        orient="row",
    )
    betas_file = d / "true_betas.parquet"
    write_table_atomic(betas_file, betas)
    return StlrDemo(
        out=d,
        h5ad=h5ad,
        lr=lr,
        grn_links=grn_links,
        base_grn=base_grn,
        betas_file=betas_file,
        n_cells=n,
        tfs=list(_TFS),
        ligands=ligands,
        receptors=receptor_genes,
        targets=list(_TARGETS),
        cell_types=list(_CELL_TYPES),
        radius=radius,
        contact_distance=contact_distance,
        layer="imputed_count",
        cluster_key="cell_type",
        betas=betas,
    )


# =================================================================================================
# run_demo: generate everything, then run each method end to end where it exists
# =================================================================================================
