"""polgen.plot manhattan / qq: inputs, typed errors, and the drawn points against a direct
computation (thinning keeps every point above the threshold and exactly one per occupied pixel)."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import polars as pl
import pytest

from conftest import gsem_fixture

pytest.importorskip("matplotlib")

from polgen.errors import InputError, SchemaError  # noqa: E402
from polgen.plot import gwas_source, manhattan, qq  # noqa: E402
from polgen.plot.gwas import MANHATTAN_CANVAS, QQ_CANVAS  # noqa: E402
from polgen.plot.source import chrom_order  # noqa: E402

THR = 5e-8
KEEP_Y = -math.log10(THR)


def _gwas(n: int = 20000, seed: int = 0, chroms=("1", "2", "3", "X"), hits: int = 25) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    chrom = rng.choice(np.array(chroms), n)
    bp = rng.integers(1, 5_000_000, n)
    p = rng.uniform(size=n)
    idx = rng.choice(n, hits, replace=False)
    p[idx] = 10.0 ** -rng.uniform(8, 20, hits)
    return pl.DataFrame({"CHR": chrom, "BP": bp, "SNP": [f"rs{i}" for i in range(n)], "P": p})


def _offsets(ax) -> np.ndarray:
    parts = [c.get_offsets() for c in ax.collections if (c.get_gid() or "").startswith(("manhattan-", "highlight"))]
    return np.concatenate([np.asarray(p) for p in parts if len(p)]) if parts else np.empty((0, 2))


def _pixels(x, y, xlim, ylim, wh):
    w, h = wh
    px = np.clip(np.floor((x - xlim[0]) / (xlim[1] - xlim[0]) * w), 0, w - 1).astype(np.int64)
    py = np.clip(np.floor((y - ylim[0]) / (ylim[1] - ylim[0]) * h), 0, h - 1).astype(np.int64)
    return px, py


def test_manhattan_draws_exactly_the_visible_points():
    df = _gwas()
    r = manhattan(df, threshold=THR, suggestive=None)
    ax = r.figure.axes[0]
    drawn = _offsets(ax)
    pts = r.points
    # the artists hold the returned points, nothing else
    assert drawn.shape[0] == pts.height
    assert np.allclose(np.sort(drawn[:, 0]), np.sort(pts["x"].to_numpy()))
    # every drawn point is a data point; x - bp is one shift per chromosome (monotone offsets)
    y_all = -np.log10(df["P"].to_numpy())
    shift = pts.with_columns((pl.col("x") - pl.col("bp")).alias("s")).group_by("code").agg(pl.col("s").unique())
    assert all(len(s) == 1 for s in shift["s"].to_list())
    shift_by_code = {c: s[0] for c, s in shift.iter_rows()}
    labels = r.info["chromosomes"]
    assert labels == ["1", "2", "3", "X"]
    code = {lab: i for i, lab in enumerate(labels)}
    starts = [shift_by_code[i] + df.filter(pl.col("CHR") == lab)["BP"].min() for i, lab in enumerate(labels)]
    assert np.all(np.diff(starts) > 0)
    x_all = df["BP"].to_numpy() + np.array([shift_by_code[code[c]] for c in df["CHR"].to_list()])
    # above the threshold: all of them, exactly
    tail = y_all >= KEEP_Y
    got_tail = pts.filter(pl.col("kept") == "tail")
    assert got_tail.height == tail.sum() == 25
    assert set(got_tail["snp"].to_list()) == set(df.filter(pl.Series(tail))["SNP"].to_list())
    # below: one point per occupied pixel (per chromosome), the pixel's largest -log10 p
    xlim, ylim = ax.get_xlim(), ax.get_ylim()
    c_all = np.array([code[c] for c in df["CHR"].to_list()])
    px, py = _pixels(x_all[~tail], y_all[~tail], xlim, ylim, MANHATTAN_CANVAS.axes_px)
    want = (
        pl.DataFrame({"code": c_all[~tail], "px": px, "py": py, "y": y_all[~tail]})
        .group_by("code", "px", "py")
        .agg(pl.col("y").max())
    )
    bulk = pts.filter(pl.col("kept") == "pixel")
    bx, by = _pixels(bulk["x"].to_numpy(), bulk["y"].to_numpy(), xlim, ylim, MANHATTAN_CANVAS.axes_px)
    got = pl.DataFrame({"code": bulk["code"], "px": bx, "py": by, "y_got": bulk["y"]})
    assert got.select("code", "px", "py").is_unique().all()
    joined = want.join(got, on=["code", "px", "py"], how="full", coalesce=True)
    assert joined.height == want.height == got.height
    assert np.allclose(joined["y"].to_numpy(), joined["y_got"].to_numpy(), rtol=0, atol=1e-12)
    assert bulk.height < 0.7 * (~tail).sum()  # it did thin
    # the pixel grid is the rendered one: matplotlib's own transform puts the points in those pixels
    disp = ax.transData.transform(np.column_stack([bulk["x"].to_numpy(), bulk["y"].to_numpy()]))
    x0, y0 = ax.get_window_extent().x0, ax.get_window_extent().y0
    assert np.mean(np.floor(disp[:, 0] - x0 + 1e-9) == bx) > 0.999
    assert np.mean(np.floor(disp[:, 1] - y0 + 1e-9) == by) > 0.999


def test_manhattan_threshold_line_ticks_and_highlight(tmp_path):
    df = _gwas(5000, seed=3)
    r = manhattan(df, tmp_path / "m.png", highlight=["rs1", "rs2"], annotate=2)
    ax = r.figure.axes[0]
    thr = [ln for ln in ax.lines if ln.get_gid() == "threshold"]
    assert len(thr) == 1 and thr[0].get_ydata()[0] == pytest.approx(KEEP_Y)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "X"]
    cols = [t.get_color() for t in ax.get_xticklabels()]
    assert cols[0] == cols[2] != cols[1] == cols[3]  # alternating chromosome colours
    hl = [c for c in ax.collections if c.get_gid() == "highlight"][0]
    assert len(hl.get_offsets()) == 2
    assert len([t for t in ax.texts if (t.get_gid() or "").startswith("label-")]) == 2
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert r.path == tmp_path / "m.png"


def test_lazy_eager_parquet_and_text_inputs_agree(tmp_path):
    df = _gwas(3000, seed=5)
    df.write_parquet(tmp_path / "g.parquet")
    df.write_csv(tmp_path / "g.tsv", separator="\t")
    runs = [
        manhattan(x).points.sort("x", "y") for x in (df, df.lazy(), tmp_path / "g.parquet", str(tmp_path / "g.tsv"))
    ]
    for other in runs[1:]:
        assert other.select("code", "bp", "y").equals(runs[0].select("code", "bp", "y"))


@pytest.mark.parametrize(
    "layout,cols",
    [
        ("plink2", {"#CHROM": "CHR", "POS": "BP", "ID": "SNP", "P": "P"}),
        ("regenie", {"CHROM": "CHR", "GENPOS": "BP", "ID": "SNP", "LOG10P": "LOG10P"}),
        ("gwas-ssf", {"chromosome": "CHR", "base_pair_location": "BP", "variant_id": "SNP", "p_value": "P"}),
    ],
)
def test_common_layouts_are_detected(tmp_path, layout, cols):
    df = _gwas(2000, seed=7).with_columns((-pl.col("P").log10()).alias("LOG10P"))
    out = df.select([pl.col(v).alias(k) for k, v in cols.items()])
    sep = " " if layout == "regenie" else "\t"
    f = tmp_path / f"x.{layout}"
    out.write_csv(f, separator=sep)
    src = gwas_source(f)
    assert src.columns["chrom"] == list(cols)[0] and src.columns["pos"] == list(cols)[1]
    r = manhattan(f)
    assert r.info["n_total"] == 2000
    ref = manhattan(df.select("CHR", "BP", "SNP", "P"))
    assert np.allclose(np.sort(r.points["y"].to_numpy()), np.sort(ref.points["y"].to_numpy()), rtol=1e-9)


def test_gsem_long_output_one_parameter_per_series():
    base = _gwas(1000, seed=2)
    long = pl.concat(
        [
            base.with_columns(
                lhs=pl.lit(f), op=pl.lit("~"), rhs=pl.lit("SNP"), p=pl.col("P") ** k, log10p=-(pl.col("P") ** k).log10()
            )
            for f, k in (("F1", 1.0), ("F2", 2.0))
        ]
    ).drop("P")
    with pytest.raises(InputError, match="lhs= or param="):
        manhattan(long)
    a = manhattan(long, lhs="F2")
    assert a.info["label"] == "F2 ~ SNP" and a.info["series"] == ["F1 ~ SNP", "F2 ~ SNP"]
    assert a.points["y"].max() == pytest.approx(-2 * np.log10(base["P"].min()))


def test_lfmm_prefers_the_calibrated_p():
    base = _gwas(1000, seed=4)
    lf = base.with_columns(P_CALIBRATED=(pl.col("P") * 0.5), T=pl.lit(1.0), MONOMORPHIC=pl.lit(False)).with_columns(
        LOG10P=-pl.col("P_CALIBRATED").log10()
    )
    assert gwas_source(lf).columns["p"] == "P_CALIBRATED"
    assert gwas_source(lf, calibrated=False).columns["p"] == "P"
    nulls = lf.with_columns(P_CALIBRATED=pl.lit(None, pl.Float64))  # calibrate=None
    assert gwas_source(nulls).columns["p"] == "P"


def test_bad_inputs_raise_typed_errors(tmp_path):
    df = _gwas(200)
    with pytest.raises(SchemaError, match="no P column"):
        manhattan(df.drop("P"))
    with pytest.raises(SchemaError, match="no column 'PP'"):
        manhattan(df, p_col="PP")
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        manhattan(df.with_columns(pl.when(pl.col("SNP") == "rs3").then(1.5).otherwise(pl.col("P")).alias("P")))
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        qq(df.with_columns(pl.when(pl.col("SNP") == "rs3").then(-0.1).otherwise(pl.col("P")).alias("P")))
    bad = df.with_columns(
        pl.when(pl.col("SNP") == "rs1").then(pl.lit("chrUn_gl000220")).otherwise(pl.col("CHR")).alias("CHR")
    )
    with pytest.raises(InputError, match="unknown chromosome"):
        manhattan(bad)
    assert manhattan(bad, unknown_chrom="last").info["chromosomes"][-1] == "chrUn_gl000220"
    assert "chrUn_gl000220" not in manhattan(bad, unknown_chrom="drop").info["chromosomes"]
    with pytest.raises(InputError, match="threshold"):
        manhattan(df, threshold=2.0)
    with pytest.raises(InputError, match="no such file"):
        manhattan(tmp_path / "missing.parquet")
    # missing P values are not drawn, and counted
    r = manhattan(df.with_columns(pl.when(pl.col("SNP") == "rs5").then(None).otherwise(pl.col("P")).alias("P")))
    assert r.info["n_missing"] == 1


def test_chromosome_names_order():
    codes, labels, dropped = chrom_order(["chr10", "chrX", "2", "MT", "chrY", "1", "XY"])
    assert labels == ["1", "2", "10", "X", "Y", "XY", "MT"] and not dropped
    assert codes["chr10"] == 2 and codes["chrX"] == 3 and codes["MT"] == 6


def test_qq_points_lambda_and_band_against_numpy():
    from scipy import stats

    df = _gwas(20001, seed=11)
    r = qq(df)
    p = df["P"].to_numpy()
    n = p.size
    lam = np.median(stats.chi2.isf(p, 1)) / stats.chi2.ppf(0.5, 1)
    assert r.info["lambda_gc"] == pytest.approx(lam, rel=1e-9)
    even = qq(df.head(20000))
    lam_even = np.median(stats.chi2.isf(p[:20000], 1)) / stats.chi2.ppf(0.5, 1)
    assert even.info["lambda_gc"] == pytest.approx(lam_even, rel=1e-9)
    # drawn points are exact (expected, observed) pairs of the sorted data
    obs = np.sort(-np.log10(p))[::-1]
    exp = -np.log10((np.arange(1, n + 1) - 0.5) / n)
    ranks = r.points["rank"].to_numpy()
    assert np.allclose(r.points["expected"].to_numpy(), exp[ranks - 1], rtol=0, atol=1e-12)
    assert np.allclose(r.points["observed"].to_numpy(), obs[ranks - 1], rtol=0, atol=1e-12)
    ax = r.figure.axes[0]
    pts = [c for c in ax.collections if c.get_gid() == "qq-points"][0].get_offsets()
    assert len(pts) == r.points.height
    # every point above the threshold is drawn, and one point per occupied pixel below it
    assert (r.points["observed"] >= KEEP_Y).sum() == (obs >= KEEP_Y).sum()
    below = obs < KEEP_Y
    px, py = _pixels(exp[below], obs[below], ax.get_xlim(), ax.get_ylim(), QQ_CANVAS.axes_px)
    occupied = set(zip(px.tolist(), py.tolist()))
    b = r.points.filter(pl.col("kept") == "pixel")
    gx, gy = _pixels(
        b["expected"].to_numpy(), b["observed"].to_numpy(), ax.get_xlim(), ax.get_ylim(), QQ_CANVAS.axes_px
    )
    assert len(set(zip(gx.tolist(), gy.tolist()))) == b.height == len(occupied)
    assert set(zip(gx.tolist(), gy.tolist())) == occupied
    # the band: Beta(i, n - i + 1) quantiles
    band = [c for c in ax.collections if c.get_gid() == "band"]
    assert band
    from polgen.plot.thin import qq_band

    bd = qq_band(n)
    i = np.round((n * 10 ** (-bd["expected"].to_numpy())) + 0.5).astype(int)
    assert np.allclose(bd["upper"].to_numpy(), -np.log10(stats.beta.ppf(0.025, i, n - i + 1)), rtol=1e-9)
    assert np.allclose(bd["lower"].to_numpy(), -np.log10(stats.beta.ppf(0.975, i, n - i + 1)), rtol=1e-9)
    assert "1." in [t for t in ax.texts if t.get_gid() == "lambda"][0].get_text()


def test_qq_on_the_gsem_gwas_fixture(tmp_path):
    """Real-format data: the R GenomicSEM per-SNP fixture (no positions: a QQ plot only)."""
    fx = json.loads(gsem_fixture("gwas_per_snp.json").read_text())
    ug = pl.DataFrame(fx["user_gwas"]).select("SNP", "lhs", "op", "rhs", "est", "se", "z", "p")
    from scipy import stats

    r = qq(ug, tmp_path / "qq.svg")
    p = ug["p"].to_numpy()
    assert r.info["label"] == "F1 ~ SNP"
    assert r.info["lambda_gc"] == pytest.approx(np.median(stats.chi2.isf(p, 1)) / stats.chi2.ppf(0.5, 1), rel=1e-9)
    import xml.etree.ElementTree as ET

    ET.parse(tmp_path / "qq.svg")  # a valid SVG document
    with pytest.raises(SchemaError, match="no chromosome column"):
        manhattan(ug)


def test_p_zero_uses_the_log10_column():
    df = _gwas(500, seed=1).with_columns(LOG10P=-pl.col("P").log10())
    df = df.with_columns(
        pl.when(pl.col("SNP") == "rs7").then(0.0).otherwise(pl.col("P")).alias("P"),
        pl.when(pl.col("SNP") == "rs7").then(400.0).otherwise(pl.col("LOG10P")).alias("LOG10P"),
    )
    src = gwas_source(df, log10p_col="LOG10P", p_col="P")
    assert src.lf.filter(pl.col("_snp") == "rs7").collect()["_y"][0] == 400.0


@pytest.mark.slow
def test_thinning_one_million_snps_is_fast_and_bounded(tmp_path):
    rng = np.random.default_rng(0)
    n = 1_000_000
    chrom = np.sort(rng.integers(1, 23, n))
    p = rng.uniform(size=n)
    p[rng.choice(n, 300, replace=False)] = 1e-12
    pl.DataFrame({"CHR": chrom.astype(str), "BP": rng.integers(1, 250_000_000, n), "P": p}).write_parquet(
        tmp_path / "big.parquet"
    )
    t0 = time.perf_counter()
    r = manhattan(tmp_path / "big.parquet", tmp_path / "big.png")
    t_m = time.perf_counter() - t0
    t0 = time.perf_counter()
    q = qq(tmp_path / "big.parquet", tmp_path / "bigqq.png")
    t_q = time.perf_counter() - t0
    w, h = MANHATTAN_CANVAS.axes_px
    assert r.info["n_total"] == n and r.info["n_tail"] == 300
    assert r.info["n_drawn"] <= 300 + w * h // 4 and r.info["n_drawn"] < 100_000
    assert q.info["n_drawn"] < 5_000
    assert t_m < 30 and t_q < 30, (t_m, t_q)  # ~3 s and ~1.5 s on the 2-core CI machine


def test_thinned_pictures_look_like_the_full_ones(tmp_path):
    """Image comparison (matplotlib's testing utilities): the thinned picture differs from the
    one drawing every SNP only by sub-pixel marker positions on the bulk's edge, while a picture
    of other data is far off."""
    from matplotlib.testing.compare import compare_images

    df = _gwas(60000, seed=2)
    thin = manhattan(df, tmp_path / "thin.png")
    full = manhattan(df, tmp_path / "full.png", thin=False)
    assert thin.info["n_drawn"] < 0.5 * full.info["n_drawn"] == 30000
    assert compare_images(str(tmp_path / "full.png"), str(tmp_path / "thin.png"), tol=4) is None
    qq(df, tmp_path / "qthin.png")
    qq(df, tmp_path / "qfull.png", thin=False)
    assert compare_images(str(tmp_path / "qfull.png"), str(tmp_path / "qthin.png"), tol=4) is None
    manhattan(df.with_columns(pl.col("P") ** 1.2), tmp_path / "other.png")
    other = compare_images(str(tmp_path / "full.png"), str(tmp_path / "other.png"), tol=4, in_decorator=True)
    assert other is not None and other["rms"] > 8


def test_one_chromosome_is_drawn_by_position_in_mb():
    df = _gwas(2000, seed=9, chroms=("chr7",))
    r = manhattan(df, thin=False)
    assert np.array_equal(r.points.sort("bp")["x"].to_numpy(), np.sort(df["BP"].to_numpy()).astype(float))
    ax = r.figure.axes[0]
    assert ax.get_xlabel() == "Chromosome 7 position (Mb)"
    assert ax.get_xlim()[0] < df["BP"].min() and ax.get_xlim()[1] > df["BP"].max()
