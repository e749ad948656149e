"""genetic_offset / genetic_gap equal R LEA's genetic.offset / genetic.gap on LEA's offset_example
(tests/data/lfmm/r/offset, made by tests/data/make/lfmm_offset.R), streamed from a .bed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from bed_reader import to_bed

import polgen.lfmm as L
from polgen.errors import InputError, SchemaError

R = Path(__file__).resolve().parents[1] / "data" / "lfmm" / "r" / "offset"
NAMES = ["bio1", "bio2", "bio3", "bio4"]


def _csv(name: str) -> np.ndarray:
    return np.loadtxt(R / name, delimiter=",", ndmin=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    Y = _csv("geno.csv.gz")
    bed = tmp_path_factory.mktemp("offset") / "offset_example.bed"
    iids = [f"ind{i + 1}" for i in range(Y.shape[0])]
    to_bed(bed, Y, properties={"iid": iids}, count_A1=True)
    return dict(
        Y=Y,
        bed=bed,
        iids=iids,
        X=_csv("env.csv"),
        Xp=_csv("env_pred.csv"),
        Xn=_csv("env_new.csv"),
        cand=_csv("candidate_loci.txt").astype(int),
    )


def _frame(m: np.ndarray, iids: list[str] | None = None, order: list[int] | None = None) -> pl.DataFrame:
    df = pl.DataFrame({v: m[:, j] for j, v in enumerate(NAMES)})
    if iids is not None:
        df = df.with_columns(pl.Series("IID", iids)).select(["IID", *NAMES])
    if order is not None:
        df = df[order]
    return df


def _check(res: L.GeneticOffsetResult, case: str) -> float:
    ref = _csv(f"{case}_offset.csv")
    ev = _csv(f"{case}_eigenvalues.csv")
    vec = _csv(f"{case}_vectors.csv")
    worst = 0.0
    for col, j in (("OFFSET", 0), ("DISTANCE", 1)):
        got = res.frame[col].to_numpy()
        worst = max(worst, float(np.max(np.abs(got / ref[:, j] - 1))))
    worst = max(worst, float(np.max(np.abs(res.eigenvalues / ev - 1))))
    # eigenvectors up to sign, compared where the eigenvalues are well separated
    for c in range(vec.shape[1]):
        s = np.sign(vec[:, c] @ res.eigenvectors[:, c])
        np.testing.assert_allclose(s * res.eigenvectors[:, c], vec[:, c], atol=1e-7)
    assert worst < 1e-8, f"{case}: max relative error {worst:.2e}"
    return worst


@pytest.mark.parametrize(
    "case, kw",
    [
        ("k2", dict(K=2)),
        ("k2_scale", dict(K=2, scale=True)),
        ("k235", dict(K=[2, 3, 5])),
        ("k23_scale", dict(K=(2, 3), scale=True)),
    ],
)
def test_genetic_offset_equals_R_LEA(data, case, kw):
    res = L.genetic_offset(data["bed"], data["X"], data["Xp"], **kw)
    _check(res, case)
    assert res.K == tuple(np.atleast_1d(kw["K"]).tolist())
    assert res.n_loci == 510 and res.frame.height == 200


def test_new_env_and_candidate_loci_equal_R(data):
    res = L.genetic_offset(data["bed"], data["X"], data["Xp"], new_env=data["Xn"], K=3, candidate_loci=data["cand"] - 1)
    assert res.n_loci == data["cand"].size
    _check(res, "k3_new_cand")
    mask = np.zeros(510, dtype=bool)
    mask[data["cand"] - 1] = True
    via_mask = L.genetic_offset(data["bed"], data["X"], data["Xp"], new_env=data["Xn"], K=3, candidate_loci=mask)
    np.testing.assert_array_equal(via_mask.frame["OFFSET"].to_numpy(), res.frame["OFFSET"].to_numpy())


def test_genetic_gap_equals_R_and_frames_align_by_iid(data):
    iids = data["iids"]
    rev = list(range(199, -1, -1))
    # env keyed by IID (shuffled rows: aligned to the .fam), pred_env / new_env keyed and reordered
    env = _frame(data["X"], iids, order=rev)
    pred = _frame(data["Xp"], iids)
    new = _frame(data["Xn"], iids, order=rev).select(["IID", *NAMES[::-1]])  # columns by name
    res = L.genetic_gap(data["bed"], env, pred, new_env=new, K=2, scale=True)
    _check(res, "gap_k2_new_scale")
    assert res.frame["IID"].to_list() == iids
    eig = res.eigen_frame()
    assert eig.columns == ["COMPONENT", "EIGENVALUE", *[f"VECTOR_{v}" for v in NAMES]]
    # without new_env a keyed pred_env picks the individuals by IID (rows follow pred_env)
    sub = L.genetic_offset(data["bed"], env, pred[rev[:50]], K=2)
    full = L.genetic_offset(data["bed"], data["X"], data["Xp"], K=2)
    np.testing.assert_allclose(sub.frame["OFFSET"].to_numpy(), full.frame["OFFSET"].to_numpy()[rev[:50]], rtol=1e-12)
    assert sub.frame["IID"].to_list() == [iids[i] for i in rev[:50]]
    assert full.frame["IID"].to_list() == iids  # .fam ids when the rows are the individuals


def test_streaming_is_independent_of_blocks_and_threads(data):
    a = L.genetic_offset(data["bed"], data["X"], data["Xp"], K=[2, 3], batch_snps=7, threads=3)
    b = L.genetic_offset(data["bed"], data["X"], data["Xp"], K=[2, 3], threads=1)
    np.testing.assert_allclose(a.frame["OFFSET"].to_numpy(), b.frame["OFFSET"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(a.frame["DISTANCE"].to_numpy(), b.frame["DISTANCE"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(a.eigenvalues, b.eigenvalues, rtol=1e-10)


def test_write_offset_parquet(data, tmp_path):
    import json

    import pyarrow.parquet as pq

    res = L.genetic_offset(data["bed"], data["X"], data["Xp"], K=2)
    L.write_offset(res, tmp_path / "o.parquet")
    back = pl.read_parquet(tmp_path / "o.parquet")
    assert back.equals(res.frame)
    meta = json.loads(pq.read_schema(tmp_path / "o.parquet").metadata[b"polgen.lfmm.offset"])
    np.testing.assert_allclose(meta["eigenvalues"], res.eigenvalues)


def test_bad_input_names_table_and_column(data):
    bed, X, Xp = data["bed"], data["X"], data["Xp"]
    Xna = X.copy()
    Xna[5, 2] = np.nan
    with pytest.raises(InputError, match="env") as e:
        L.genetic_offset(bed, Xna, Xp, K=2)
    assert e.value.column == "X3" and e.value.row == 5
    pna = _frame(Xp)
    pna[3, "bio2"] = None
    with pytest.raises(InputError, match="pred_env") as e:
        L.genetic_offset(bed, _frame(X), pna, K=2)
    assert e.value.column == "bio2" and e.value.row == 3
    with pytest.raises(SchemaError, match="pred_env lacks") as e:
        L.genetic_offset(bed, _frame(X), _frame(Xp).rename({"bio4": "tmax"}), K=2)
    assert e.value.column == "bio4"
    with pytest.raises(SchemaError, match="new_env has variable"):
        L.genetic_offset(bed, _frame(X), _frame(Xp), new_env=_frame(Xp).with_columns(x=pl.lit(1.0)), K=2)
    with pytest.raises(InputError, match="must have 4 columns"):
        L.genetic_offset(bed, X, Xp[:, :3], K=2)
    with pytest.raises(InputError, match="K must satisfy"):
        L.genetic_offset(bed, X, Xp, K=[2, 200])
    with pytest.raises(InputError, match="candidate_loci out of range"):
        L.genetic_offset(bed, X, Xp, K=2, candidate_loci=[0, 510])
    with pytest.raises(InputError, match="candidate_loci out of range"):
        L.genetic_offset(bed, X, Xp, K=2, candidate_loci=[-1, 3])
    with pytest.raises(InputError, match="duplicated"):
        L.genetic_offset(bed, X, Xp, K=2, candidate_loci=[3, 3])
    with pytest.raises(InputError, match="rows"):
        L.genetic_offset(bed, X, Xp, new_env=data["Xn"][:10], K=2)
    with pytest.raises(InputError, match="no row in"):
        L.genetic_offset(bed, _frame(X, data["iids"]), _frame(Xp, [f"x{i}" for i in range(200)]), K=2)


def test_cli_offset_and_gap(data, tmp_path):
    from polgen.cli import main

    X, Xp = data["X"], data["Xp"]
    _frame(X, data["iids"]).write_csv(tmp_path / "env.tsv", separator="\t")
    np.savetxt(tmp_path / "pred.env", Xp, fmt="%.17g")  # headerless, .fam order (LEA's .env)
    _frame(Xp, data["iids"]).write_csv(tmp_path / "pred.tsv", separator="\t")
    (tmp_path / "cand.txt").write_text("\n".join(str(c) for c in data["cand"]))
    out = tmp_path / "o.parquet"
    argv = ["lfmm", "offset", "--bed", str(data["bed"]), "--env", str(tmp_path / "env.tsv")]
    assert main([*argv, "--pred-env", str(tmp_path / "pred.tsv"), "-K", "2", "3", "5", "--out", str(out)]) == 0
    ref = _csv("k235_offset.csv")
    got = pl.read_parquet(out)
    assert got["IID"].to_list() == data["iids"]
    np.testing.assert_allclose(got["OFFSET"].to_numpy(), ref[:, 0], rtol=1e-8)
    # an existing output is refused without --overwrite
    assert main([*argv, "--pred-env", str(tmp_path / "pred.tsv"), "-K", "2", "--out", str(out)]) != 0
    np.savetxt(tmp_path / "env.env", X, fmt="%.17g")
    eig = tmp_path / "eig.parquet"
    code = main(
        [
            "lfmm",
            "gap",
            "--bed",
            str(data["bed"]),
            "--env",
            str(tmp_path / "env.env"),
            "--pred-env",
            str(tmp_path / "pred.env"),
            "-K",
            "2",
            "--scale",
            "--out",
            str(out),
            "--overwrite",
            "--eigen-out",
            str(eig),
        ]
    )
    assert code == 0
    np.testing.assert_allclose(pl.read_parquet(out)["OFFSET"].to_numpy(), _csv("k2_scale_offset.csv")[:, 0], rtol=1e-8)
    np.testing.assert_allclose(
        pl.read_parquet(eig)["EIGENVALUE"].to_numpy(), _csv("k2_scale_eigenvalues.csv"), rtol=1e-8
    )
    # 1-based candidate file with a 0 is refused, naming the file
    (tmp_path / "bad.txt").write_text("0\n5\n")
    assert (
        main(
            [
                *argv,
                "--pred-env",
                str(tmp_path / "pred.tsv"),
                "-K",
                "2",
                "--out",
                str(tmp_path / "x.parquet"),
                "--candidate-loci",
                str(tmp_path / "bad.txt"),
            ]
        )
        != 0
    )


def test_namespace_offset(data):
    env = _frame(data["X"], data["iids"])
    via = env.lfmm.genetic_offset(data["bed"], _frame(data["Xp"], data["iids"]), K=2)
    np.testing.assert_allclose(via.frame["OFFSET"].to_numpy(), _csv("k2_offset.csv")[:, 0], rtol=1e-8)
