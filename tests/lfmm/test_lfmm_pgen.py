"""PLINK 2 .pgen input (optional pgenlib): fit / test / glm_test on a .pgen equal the same data as a
.bed (the .pgen made by plink2 --make-pgen, and written by pgenlib's own writer); a missing pgenlib
is a MissingExtraError naming the extra."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import polgen.lfmm as L
from polgen.errors import InputError, MissingExtraError

sys.path.insert(0, str(Path(__file__).parent))
from test_lfmm import simulate, write_bed  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """n=120, p=700, d=2, 1% missing, a monomorphic SNP; as a .bed and as a pgenlib-written .pgen."""
    tmp = tmp_path_factory.mktemp("lfmm_pgen")
    Y, X, _ = simulate(120, 700, K=2, fst=0.2, n_causal=10, missing=0.01, d=2, seed=5)
    Y[:, 3] = 1.0
    bed = write_bed(tmp / "g.bed", Y)
    ids = [f"s{i}" for i in range(Y.shape[0])]
    env = pl.DataFrame({"IID": ids, "temp": X[:, 0], "rain": X[:, 1]})
    return dict(Y=Y, X=X, bed=bed, env=env, ids=ids, tmp=tmp)


def _write_pgen(prefix: Path, Y: np.ndarray, ids: list[str]) -> Path:
    """A .pgen/.pvar/.psam of dosages Y (ALT counts; NaN missing) written with pgenlib."""
    pgenlib = pytest.importorskip("pgenlib")
    n, p = Y.shape
    g = np.where(np.isnan(Y), -9, Y).astype(np.int8).T.copy()
    w = pgenlib.PgenWriter(str(prefix.with_suffix(".pgen")).encode(), n, p, False)
    for j in range(p):
        w.append_biallelic(np.ascontiguousarray(g[j]))
    w.close()
    with open(prefix.with_suffix(".pvar"), "w") as fh:
        fh.write("##fileformat=PVARv1.0\n#CHROM\tPOS\tID\tREF\tALT\n")
        fh.writelines(f"1\t{j + 1}\trs{j}\tG\tA\n" for j in range(p))
    with open(prefix.with_suffix(".psam"), "w") as fh:
        fh.write("#IID\tSEX\n")
        fh.writelines(f"{i}\tNA\n" for i in ids)
    return prefix.with_suffix(".pgen")


def _same(a: pl.DataFrame, b: pl.DataFrame, rtol: float = 1e-10) -> None:
    assert a.columns == b.columns and a.height == b.height
    for c in a.columns:
        if a.schema[c] == pl.Float64:
            np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=rtol, atol=1e-12, err_msg=c)
        else:
            assert a[c].to_list() == b[c].to_list(), c


def test_pgen_fit_and_test_equal_the_bed(data, tmp_path):
    pgen = _write_pgen(data["tmp"] / "w", data["Y"], data["ids"])
    env, bed = data["env"], data["bed"]
    m_bed = L.fit(env, bed, 2, est_rate=0.5)
    m_pgen = L.fit(env, pgen, 2, est_rate=0.5)
    assert m_pgen.params["n_est_snps"] == m_bed.params["n_est_snps"] == 350
    np.testing.assert_allclose(m_pgen.singular_values, m_bed.singular_values, rtol=1e-12)
    np.testing.assert_allclose(np.abs(m_pgen.U), np.abs(m_bed.U), rtol=1e-9, atol=1e-12)
    want = L.test(m_bed, bed, env, full=True).collect()
    got = L.test(m_bed, pgen, env, full=True, task_snps=200, batch_snps=50).collect()
    # the .pvar's own ids/alleles (the .bim made by bed_reader says rs<j>, A1 = A as the .pvar's ALT)
    _same(got, want)
    assert got["MONOMORPHIC"].sum() == 1
    disk = L.test(m_pgen, str(pgen)[:-5], env, out=tmp_path / "run").collect()  # a prefix works too
    _same(disk, L.test(m_pgen, bed, env).collect())
    # SNP subsets and the GLM test read the .pgen's raw counts
    g_bed = L.glm_test(m_bed, bed, env, family="binomial", snps=[0, 5, 650], calibrate=None).collect()
    g_pgen = L.glm_test(m_bed, pgen, env, family="binomial", snps=[0, 5, 650], calibrate=None).collect()
    _same(g_pgen, g_bed, rtol=1e-9)


@pytest.mark.skipif(shutil.which("plink2") is None, reason="plink2 not installed")
def test_pgen_made_by_plink2_equals_the_bed(data):
    pytest.importorskip("pgenlib")
    out = data["tmp"] / "p2"
    subprocess.run(
        ["plink2", "--bfile", str(data["bed"])[:-4], "--make-pgen", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    model = L.fit(data["env"], data["bed"], 2)
    want = L.test(model, data["bed"], data["env"]).collect()
    got = L.test(model, out.with_suffix(".pgen"), data["env"]).collect()
    _same(got, want)  # plink2 reads A1 as ALT: the same allele counted, the same ids and positions
    # the CLI takes the .pgen for --bed
    from polgen.cli import main

    envf = data["tmp"] / "env.tsv"
    data["env"].write_csv(envf, separator="\t")
    run = data["tmp"] / "cli"
    args = ["lfmm", "--bed", str(out.with_suffix(".pgen")), "--covariates", str(envf), "-K", "2"]
    assert main([*args, "--out", str(run), "--no-progress"]) == 0
    cli = pl.read_parquet(sorted(run.glob("part-*.parquet")))
    _same(cli, L.test(L.load_model(run / "lfmm_model.npz"), data["bed"], data["env"]).collect())


def test_bad_pgen_inputs(data, tmp_path):
    pytest.importorskip("pgenlib")
    pgen = _write_pgen(tmp_path / "b", data["Y"][:, :20], data["ids"])
    model = L.fit(data["env"], data["bed"], 2)
    pvar = pgen.with_suffix(".pvar")
    lines = pvar.read_text().splitlines()
    pvar.write_text("\n".join(lines[:-1]) + "\n")  # one variant fewer than the .pgen
    with pytest.raises(InputError, match="variants"):
        L.test(model, pgen, data["env"]).collect()
    lines[5] = lines[5].replace("\tA", "\tA,T")
    pvar.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="multi-allelic") as err:
        L.test(model, pgen, data["env"]).collect()
    assert err.value.row == 4
    pgen.with_suffix(".psam").write_text("#IID\n" + "\n".join(data["ids"][:-1]) + "\n")
    with pytest.raises(InputError, match="samples"):
        L.fit(data["env"], pgen, 2)
    with pytest.raises(InputError, match="not found"):
        L.fit(data["env"], tmp_path / "nothing.pgen", 2)


def test_missing_pgenlib_is_a_missing_extra_error(data, tmp_path, monkeypatch):
    (tmp_path / "x.pgen").write_bytes(b"\x6c\x1b\x10")
    monkeypatch.setitem(sys.modules, "pgenlib", None)  # import pgenlib -> ImportError
    with pytest.raises(MissingExtraError, match=r"polgen\[pgen\]") as err:
        L.fit(data["env"], tmp_path / "x.pgen", 2)
    assert err.value.context.get("extra") == "pgen"
