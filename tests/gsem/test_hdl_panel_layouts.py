"""HDL panel folders in the layouts HDL documents, read by polgen.io.hdl_panel.

``tests/data/gsem/hdl_build_ld_ref/`` is a real panel: made by HDL's own ``build_ld_ref`` pipeline
(split, plink LD, eigen step; tests/data/make/gsem_hdl_build_ld_ref.sh) from HDL's 1000 Genomes demo
genotypes, chromosomes 21 and 22 only, so its ``nsnps.list`` is *named* ("21", "22") and its files
are ``hdl_demo_chr21.1_.banded.rda`` / ``hdl_demo_chr21.1_.bim`` (space separated).  The genotypes it
was built from (``geno.bed``) are stored too: the pieces polgen reads are checked against numpy's
eigen-decomposition of the genotype correlation matrix (each piece is narrower than the pipeline's
50-SNP band, so its banded LD matrix is the full one).  The UK Biobank imputed panel's names
(``UKB_snp_counter_imputed.RData`` with ``nsnps.list.imputed``, an unnamed list;
``UKB_snp_list_imputed.vector_form.RData`` with ``snps.list.imputed.vector``; a
``snp.dictionary.imputed.rda`` beside them) are rebuilt from the same pieces with ``rdata.write_rda``.
The UK Biobank array layout is read in tests/gsem/test_hdl.py (``r/hdl/panel_r``, written by R)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from polgen.errors import SchemaError
from polgen.gsem import hdl, simulate_hdl_sumstats
from polgen.io.hdl_panel import convert_hdl_panel, open_hdl_panel

rdata = pytest.importorskip("rdata")

D = Path(__file__).resolve().parents[1] / "data/gsem/hdl_build_ld_ref"
PANEL = D / "ld_ref"


def _bed_dosages(prefix: Path) -> tuple[np.ndarray, list[str]]:
    """PLINK .bed (SNP-major) decoded with numpy: counts of the .bim's A1 allele, people x SNPs."""
    n = sum(1 for _ in open(prefix.with_suffix(".fam")))
    snps = pl.read_csv(prefix.with_suffix(".bim"), separator="\t", has_header=False)[:, 1].to_list()
    raw = np.fromfile(prefix.with_suffix(".bed"), dtype=np.uint8)
    assert raw[:3].tolist() == [0x6C, 0x1B, 0x01]
    per = (n + 3) // 4
    codes = np.unpackbits(raw[3:].reshape(len(snps), per)[:, :, None], axis=2, bitorder="little")
    codes = codes.reshape(len(snps), per * 4, 2)[:, :n]
    val = codes[..., 0] + 2 * codes[..., 1]  # 0: hom A1, 1: missing, 2: het, 3: hom A2
    assert not (val == 1).any()
    return np.select([val == 0, val == 2], [2.0, 1.0], 0.0).T, snps


def test_build_ld_ref_panel_is_read_as_hdl_reads_it():
    panel = open_hdl_panel(PANEL)
    assert panel.fmt == "r"
    assert panel.pieces == [(21, 1), (21, 2), (22, 1), (22, 2)]  # by name, not position 1, 2
    np.testing.assert_array_equal(panel.counts, [45, 45, 45, 45])
    G, snps = _bed_dosages(D / "geno")
    assert panel.snp_list.tolist() == snps
    col = {s: i for i, s in enumerate(snps)}
    for pc in panel:
        bim = pl.read_csv(PANEL / f"hdl_demo_chr{pc.chrom}.{pc.piece}_.bim", separator=" ", has_header=False)
        assert pc.snps.tolist() == bim[:, 1].to_list() and pc.a2.tolist() == bim[:, 5].to_list()
        R = np.corrcoef(G[:, [col[s] for s in pc.snps]].T)
        w, U = np.linalg.eigh(R)
        k = pc.lam.shape[0]
        assert k == round(pc.snps.shape[0] / 2)  # the pipeline keeps half the eigenpairs
        # plink writes r to 6 digits
        np.testing.assert_allclose(pc.lam, w[::-1][:k], atol=2e-6)
        np.testing.assert_allclose(np.abs(np.sum(U[:, ::-1][:, :k] * pc.V, axis=0)), 1.0, atol=1e-8)
        np.testing.assert_allclose(pc.ldsc, (R**2).sum(axis=0), atol=5e-6)


def _sumstats(panel, tmp_path: Path) -> list[Path]:
    S = np.array([[0.4, 0.15], [0.15, 0.3]])
    frames = simulate_hdl_sumstats(panel, S, [20_000, 15_000], trait_names=["A", "B"], seed=4)
    out = []
    for name, fr in frames.items():
        out.append(tmp_path / f"{name}.tsv")
        fr.write_csv(out[-1], separator="\t")
    return out


def test_hdl_on_the_build_ld_ref_panel_equals_its_polgen_copy(tmp_path):
    files = _sumstats(PANEL, tmp_path)
    r = hdl(files, trait_names=["A", "B"], ld_path=PANEL, n_ref=504)
    nat = hdl(files, trait_names=["A", "B"], ld_path=convert_hdl_panel(PANEL, tmp_path / "conv"), n_ref=504)
    for x, y in ((r.S, nat.S), (r.V, nat.V), (r.I, nat.I)):
        np.testing.assert_array_equal(x, y)
    assert r.m == 180 and np.all(np.isfinite(r.V)) and r.S[0, 0] > 0


def _ukb_imputed_copy(dst: Path) -> Path:
    """The same pieces under the UK Biobank imputed panel's counter/list names (chromosomes 21, 22
    become 1, 2 of an unnamed ``nsnps.list.imputed``); the piece file names are assumed (``ukb_imputed_``
    prefix): HDL and polgen only need ``chr{c}.{p}`` followed by ``_`` or ``.``."""
    dst.mkdir()
    for c_old, c_new in ((21, 1), (22, 2)):
        for p in (1, 2):
            new = f"ukb_imputed_chr{c_new}.{p}_n336000"
            shutil.copy(PANEL / f"hdl_demo_chr{c_old}.{p}_.banded.rda", dst / f"{new}_500banded_99eigen.rda")
            shutil.copy(PANEL / f"hdl_demo_chr{c_old}.{p}_.bim", dst / f"{new}.bim")
    counts = rdata.read_rda(PANEL / "hdl_demo_snp_counter_array.RData")["nsnps.list"]
    snps = rdata.read_rda(PANEL / "hdl_demo_snp_list_array.RData")["snps.name.list"]
    rdata.write_rda(dst / "UKB_snp_counter_imputed.RData", {"nsnps.list.imputed": [counts["21"], counts["22"]]})
    rdata.write_rda(dst / "UKB_snp_list_imputed.vector_form.RData", {"snps.list.imputed.vector": np.asarray(snps)})
    rdata.write_rda(dst / "snp.dictionary.imputed.rda", {"snp.dictionary": np.asarray(snps)})  # ignored
    return dst


def test_ukb_imputed_names_and_an_unnamed_counter_list(tmp_path):
    ukb = open_hdl_panel(_ukb_imputed_copy(tmp_path / "ukb"))
    assert ukb.pieces == [(1, 1), (1, 2), (2, 1), (2, 2)]
    files = _sumstats(PANEL, tmp_path)
    a = hdl(files, ld_path=ukb, n_ref=504, method="jackknife")
    b = hdl(files, ld_path=PANEL, n_ref=504, method="jackknife")
    for x, y in ((a.S, b.S), (a.V, b.V), (a.I, b.I)):
        np.testing.assert_array_equal(x, y)


def test_counter_and_list_saved_as_rda(tmp_path):
    """HDL finds them by ``*_snp_counter*`` / ``*_snp_list*`` whatever the extension."""
    dst = tmp_path / "p"
    shutil.copytree(PANEL, dst)
    (dst / "hdl_demo_snp_counter_array.RData").rename(dst / "hdl_demo_snp_counter_array.rda")
    (dst / "hdl_demo_snp_list_array.RData").rename(dst / "hdl_demo_snp_list_array.rda")
    assert open_hdl_panel(dst).pieces == open_hdl_panel(PANEL).pieces


def test_a_named_chromosome_that_is_not_a_number_is_a_schema_error(tmp_path):
    dst = tmp_path / "p"
    shutil.copytree(PANEL, dst)
    named = {"21": np.array([45, 45]), "X": np.array([45])}
    rdata.write_rda(dst / "hdl_demo_snp_counter_array.RData", {"nsnps.list": named})
    with pytest.raises(SchemaError, match="'X'"):
        open_hdl_panel(dst)


def test_a_bare_counter_vector_is_one_piece_per_chromosome(tmp_path):
    """``nsnps.list`` saved as a plain vector: HDL's ``nsnps.list[[chr]]`` reads element ``chr`` as
    chromosome ``chr``'s only piece."""
    dst = tmp_path / "p"
    dst.mkdir()
    for new, (c, p) in enumerate([(21, 1), (21, 2), (22, 1), (22, 2)], start=1):
        for ext in (".banded.rda", ".bim"):
            shutil.copy(PANEL / f"hdl_demo_chr{c}.{p}_{ext}", dst / f"hdl_demo_chr{new}.1_{ext}")
    shutil.copy(PANEL / "hdl_demo_snp_list_array.RData", dst)
    rdata.write_rda(dst / "hdl_demo_snp_counter_array.RData", {"nsnps.list": np.array([45, 45, 45, 45])})
    panel = open_hdl_panel(dst)
    assert panel.pieces == [(1, 1), (2, 1), (3, 1), (4, 1)]
    ref = open_hdl_panel(PANEL)
    for a, b in zip(panel, ref):
        np.testing.assert_array_equal(a.V, b.V)
        assert a.snps.tolist() == b.snps.tolist()
