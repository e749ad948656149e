"""read_fusion against R GenomicSEM read_fusion (../shared fixture fusion_read.json and stored R
outputs on three FUSION files with missing HSQ / TWAS.Z, absent genes and permutation p-values)."""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import gsem_fixture, r_reference
from hostile import SETTINGS, Cases
from polgen.errors import InputError, SchemaError
from polgen.gsem import read_fusion


@pytest.fixture(scope="module")
def r_fu():
    d = r_reference("gls_tools")
    inputs = json.loads((d / "inputs.json").read_text())["fusion"]
    out = json.loads((d / "r_out.json").read_text())["read_fusion"]
    return d, inputs, out


def _compare(got: pl.DataFrame, ref: dict, traits):
    assert got.columns == ["Gene", "Panel", "HSQ", *[c for t in traits for c in (f"beta.{t}", f"se.{t}")]]
    key = list(zip(ref["Gene"], ref["Panel"], strict=True))
    order = sorted(range(len(key)), key=lambda i: key[i])
    assert list(zip(got["Gene"], got["Panel"], strict=True)) == [key[i] for i in order]
    for c in got.columns[2:]:
        np.testing.assert_allclose(got[c].to_numpy(), np.asarray(ref[c], dtype=float)[order], rtol=1e-6)


def test_shared_fixture():
    d = json.loads(gsem_fixture("newer", "fusion_read.json").read_text())
    files = [gsem_fixture("newer", f) for f in d["files"]]
    got = read_fusion(files, d["trait_names"], d["binary"], d["n"])
    assert got["Gene"].to_list() == d["gene"]
    assert got["Panel"].to_list() == d["panel"]
    np.testing.assert_allclose(got["HSQ"].to_numpy(), d["hsq"], rtol=1e-12)
    for j, t in enumerate(d["trait_names"]):
        np.testing.assert_allclose(got[f"beta.{t}"].to_numpy(), np.array(d["beta"])[:, j], rtol=1e-6)
        np.testing.assert_allclose(got[f"se.{t}"].to_numpy(), np.array(d["se"])[:, j], rtol=1e-6)


@pytest.mark.parametrize("case", ["default", "perm"])
def test_matches_r(r_fu, case, caplog):
    d, inp, out = r_fu
    files = [d / f for f in inp["files"]]
    got = read_fusion(files, inp["trait_names"], inp["binary"], inp["N"], perm=case == "perm")
    _compare(got, out[case], inp["trait_names"])
    assert "without HSQ, TWAS.Z or ID" in caplog.text  # the dropped models are named in the log


def test_one_continuous_file_matches_r(r_fu):
    d, inp, out = r_fu
    got = read_fusion(d / inp["files"][1], ["B"], binary=[False], N=[inp["N"][1]])
    ref = out["one_continuous"]
    assert got["Gene"].to_list() == ref["Gene"]  # one file: its own row order
    np.testing.assert_allclose(got["beta.B"].to_numpy(), ref["beta.B"], rtol=1e-6)
    np.testing.assert_allclose(got["se.B"].to_numpy(), ref["se.B"], rtol=1e-6)


def test_output_feeds_user_gwas_twas_columns(r_fu):
    from polgen.gsem.gwas_plan import resolve_columns

    d, inp, _ = r_fu
    got = read_fusion([d / f for f in inp["files"]], inp["trait_names"], inp["binary"], inp["N"])
    beta, se, ids, var = resolve_columns(dict(got.schema), inp["trait_names"], twas=True)
    assert ids == ["Gene", "Panel", "HSQ"] and var == "HSQ"
    assert beta == [f"beta.{t}" for t in inp["trait_names"]]


def test_bad_input_is_typed(r_fu, tmp_path):
    d, inp, _ = r_fu
    f1 = d / inp["files"][0]
    with pytest.raises(InputError, match="without HSQ") as e:
        read_fusion([f1], ["A"], N=[1000], missing_hsq="error")
    assert e.value.path == str(f1) and e.value.row is not None
    with pytest.raises(InputError, match="N has 1 values for 2"):
        read_fusion([f1, f1], ["A", "B"], N=[1000])
    with pytest.raises(InputError, match="N .* is required"):
        read_fusion([f1], ["A"])
    with pytest.raises(InputError, match="2 trait names for 1"):
        read_fusion([f1], ["A", "B"], N=[10])
    with pytest.raises(InputError, match="not found"):
        read_fusion([tmp_path / "nope.dat"], N=[10])
    bad = tmp_path / "nohsq.dat"
    bad.write_text("PANEL FILE ID TWAS.Z\nx a/b/c.wgt G1 1.0\n")
    with pytest.raises(SchemaError, match="HSQ") as e2:
        read_fusion([bad], N=[10])
    assert e2.value.path == str(bad)
    neg = tmp_path / "neg.dat"
    neg.write_text("PANEL FILE ID TWAS.Z HSQ\nx a/b/c.wgt G1 1.0 -0.1\n")
    with pytest.raises(InputError, match="HSQ must be positive"):
        read_fusion([neg], N=[10])
    txt = tmp_path / "txt.dat"
    txt.write_text("PANEL FILE ID TWAS.Z HSQ\nx a/b/c.wgt G1 abc 0.1\n")
    with pytest.raises(InputError, match="'abc' is not a number") as e3:
        read_fusion([txt], N=[10])
    assert e3.value.row == 2 and e3.value.column == "TWAS.Z"
    shutil.copy(f1, tmp_path / "t.dat")
    with pytest.raises(SchemaError, match="PERM"):
        bad2 = tmp_path / "noperm.dat"
        bad2.write_text("PANEL FILE ID TWAS.Z HSQ\nx a/b/c.wgt G1 1.0 0.1\n")
        read_fusion([bad2], N=[10], perm=True)


def test_cli_read_fusion(r_fu, tmp_path):
    from polgen import cli

    d, inp, out = r_fu
    o = tmp_path / "twas.parquet"
    files = [str(d / f) for f in inp["files"]]
    argv = ["gsem", "read-fusion", *files, "--trait-names", *inp["trait_names"], "--binary", "T", "F", "T"]
    argv += ["--N", *map(str, inp["N"]), "--perm", "--out", str(o)]
    assert cli.main(argv) == 0
    _compare(pl.read_parquet(o), out["perm"], inp["trait_names"])


def test_output_runs_through_user_gwas_twas(r_fu):
    from polgen.gsem import user_gwas

    d, inp, _ = r_fu
    twas = read_fusion([d / f for f in inp["files"]], inp["trait_names"], inp["binary"], inp["N"])
    S = np.array([[0.3, 0.1, 0.12], [0.1, 0.25, 0.09], [0.12, 0.09, 0.35]])
    cs = {"S": S, "V": np.eye(6) * 1e-4, "I": np.eye(3), "trait_names": inp["trait_names"]}
    out = user_gwas(twas, cs, "F1 =~ A + B + C\nF1 ~ Gene", TWAS=True)
    assert isinstance(out, pl.DataFrame)
    rows = out.filter((pl.col("lhs") == "F1") & (pl.col("op") == "~") & (pl.col("rhs") == "Gene"))
    assert sorted(zip(rows["Gene"], rows["Panel"], strict=True)) == sorted(
        zip(twas["Gene"], twas["Panel"], strict=True)
    )
    assert rows["converged"].all() and rows["est"].is_finite().all()


# -- hostile FUSION files ----------------------------------------------------------------------
CASES = Cases()
_count_cases = CASES.fixture()
_HEADER = ["PANEL", "FILE", "ID", "TWAS.Z", "HSQ", "PERM.PV", "PERM.N"]
_JUNK = ["abc", "", "NA", ".", "NaN", "inf", "-inf", "-1", "0", "1e400", '"q"', "1,5"]


def _base_rows():
    return [
        ["P", f"/w/panel/G{i}.wgt.RDat", f"G{i}", f"{(i - 3) * 0.7:.3f}", f"{0.05 + 0.03 * i:.3f}", "0.2", "1000"]
        for i in range(8)
    ]


@SETTINGS
@given(
    edits=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 6), st.sampled_from(_JUNK)), max_size=4),
    drop_col=st.one_of(st.none(), st.integers(0, 6)),
    sep=st.sampled_from(["\t", " ", "  "]),
    crlf=st.booleans(),
    truncate=st.one_of(st.none(), st.integers(0, 8)),
    binary=st.booleans(),
    perm=st.booleans(),
)
def test_hostile_fusion_files(edits, drop_col, sep, crlf, truncate, binary, perm):
    rows = _base_rows()
    for r, c, v in edits:
        rows[r][c] = v
    header = list(_HEADER)
    if drop_col is not None:
        header.pop(drop_col)
        rows = [row[:drop_col] + row[drop_col + 1 :] for row in rows]
    if truncate is not None:
        rows = rows[:truncate]
    text = "\n".join(sep.join(x) for x in [header, *rows]) + "\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "t.dat"
        f.write_text(text)
        res, err = CASES.attempt(read_fusion, [f], ["T"], binary=[binary], N=[5000], perm=perm)
    if err is not None:
        return
    assert res.columns == ["Gene", "Panel", "HSQ", "beta.T", "se.T"]
    assert res.height > 0
    for c in ("HSQ", "beta.T", "se.T"):
        v = res[c].to_numpy()
        assert np.isfinite(v).all(), c
    assert (res["HSQ"].to_numpy() > 0).all() and (res["se.T"].to_numpy() > 0).all()
