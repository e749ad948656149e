"""R LEA's text inputs (.lfmm, .geno genotypes; .env covariates) are read as LEA writes them and give
the numbers of the same data in a .bed (and R LEA's genetic.offset on offset_example)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bed_reader import to_bed

import polgen.lfmm as L
from polgen.errors import InputError
from polgen.lfmm.genotypes import read_lea_genotypes

R = Path(__file__).resolve().parents[1] / "data" / "lfmm" / "r" / "offset"


@pytest.fixture(scope="module")
def lea(tmp_path_factory):
    d = tmp_path_factory.mktemp("lea")
    Y = np.loadtxt(R / "geno.csv.gz", delimiter=",")[:, :200]
    X = np.loadtxt(R / "env.csv", delimiter=",")
    Y[3, 5] = np.nan
    Yi = np.where(np.isnan(Y), 9, Y).astype(int)
    np.savetxt(d / "g.lfmm", Yi, fmt="%d", delimiter=" ")
    (d / "g.geno").write_text("\n".join("".join(str(v) for v in col) for col in Yi.T) + "\n")
    np.savetxt(d / "e.env", X, fmt="%.17g")
    to_bed(d / "g.bed", np.ascontiguousarray(Y), count_A1=True)
    return dict(d=d, Y=Y, X=X)


def test_read_lfmm_and_geno(lea):
    d = lea["d"]
    for f in ("g.lfmm", "g.geno"):
        Y = read_lea_genotypes(d / f)
        np.testing.assert_array_equal(np.isnan(Y), np.isnan(lea["Y"]))
        np.testing.assert_array_equal(np.nan_to_num(Y), np.nan_to_num(lea["Y"]))


def test_fit_test_and_offset_from_lea_files_equal_bed(lea):
    d = lea["d"]
    ref = L.test(L.fit(lea["X"], str(d / "g.bed"), 2), str(d / "g.bed")).collect()
    for f in ("g.lfmm", "g.geno"):
        m = L.fit(str(d / "e.env"), str(d / f), 2)
        got = L.test(m, str(d / f)).collect()
        np.testing.assert_allclose(got["T_X1"].to_numpy(), ref["T_X1"].to_numpy(), rtol=1e-9)
    g1 = L.glm_test(m, str(d / "g.geno"), family="poisson", calibrate=None).collect()
    g2 = L.glm_test(m, lea["Y"], family="poisson", calibrate=None).collect()
    np.testing.assert_array_equal(g1["Z_X1"].to_numpy(), g2["Z_X1"].to_numpy())
    off = L.genetic_offset(str(d / "g.lfmm"), str(d / "e.env"), lea["X"] + 0.1, K=2)
    via_bed = L.genetic_offset(str(d / "g.bed"), lea["X"], lea["X"] + 0.1, K=2)
    np.testing.assert_allclose(off.frame["OFFSET"].to_numpy(), via_bed.frame["OFFSET"].to_numpy(), rtol=1e-9)


def test_bad_lea_files(tmp_path):
    (tmp_path / "a.geno").write_text("0129\n01\n")
    with pytest.raises(InputError, match="one digit per sample") as e:
        read_lea_genotypes(tmp_path / "a.geno")
    assert e.value.row == 2
    (tmp_path / "b.lfmm").write_text("0 1 2\n0 3 1\n")
    with pytest.raises(InputError, match="allowed") as e:
        read_lea_genotypes(tmp_path / "b.lfmm")
    assert e.value.row == 2
    (tmp_path / "c.env").write_text("0.1 0.2\n0.3 NA\n")
    with pytest.raises(InputError, match="not a number") as e:
        L.fit(str(tmp_path / "c.env"), np.zeros((2, 3)), 1)
    assert e.value.row == 2 and e.value.column == "X2"
    with pytest.raises(InputError, match="not found"):
        read_lea_genotypes(tmp_path / "none.lfmm")
