"""Hostile PLINK filesets through BedStream and the LFMM entry points.

A small valid .bed/.bim/.fam (written by bed-reader, n not a multiple of 4, missing calls) is
damaged by hypothesis: wrong magic bytes, truncated or padded .bed, .bim/.fam with too few / too
many / malformed lines, wrong delimiters, non-numeric positions, duplicated SNP ids, blank lines,
bad selections (index out of range, unsorted, thin outside (0, 1]), bad block sizes; LFMM also gets
covariates with NaN / inf / constant columns / unknown IIDs.  Each call raises a
:class:`polgen.errors.PolgenError` or returns genotypes equal to bed-reader's decode of the same
bytes — never another exception type or a silently wrong number.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile import SETTINGS, Cases

bed_reader = pytest.importorskip("bed_reader")

CASES = Cases()
_count_cases = CASES.fixture()
attempt = CASES.attempt


N, P = 13, 11


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("bed")
    rng = np.random.default_rng(3)
    G = rng.integers(0, 3, (N, P)).astype(np.float32)
    G[rng.random((N, P)) < 0.1] = np.nan
    G[:, 4] = 1.0  # monomorphic heterozygote column
    bed_reader.to_bed(
        d / "g.bed",
        G,
        properties={
            "sid": [f"rs{j}" for j in range(P)],
            "iid": [f"i{k}" for k in range(N)],
            "bp_position": np.arange(P) * 10 + 1,
        },
    )
    return d


def copy_set(base: Path, dest: Path) -> Path:
    for ext in ("bed", "bim", "fam"):
        shutil.copy(base / f"g.{ext}", dest / f"g.{ext}")
    return dest / "g.bed"


def reference(bed: Path) -> np.ndarray:
    with bed_reader.open_bed(bed) as b:
        return b.read(dtype="float64")


@st.composite
def damages(draw):
    kind = draw(
        st.sampled_from(
            [
                "magic",
                "truncate",
                "pad",
                "empty_bed",
                "bim_drop",
                "bim_add",
                "fam_drop",
                "fam_add",
                "bim_fields",
                "bim_bp_text",
                "bim_commas",
                "bim_dup_ids",
                "bim_blank_lines",
                "fam_fields",
                "empty_bim",
                "empty_fam",
                "bim_crlf",
                "none",
            ]
        )
    )
    arg = draw(st.integers(0, 10_000))
    return kind, arg


def apply_damage(bed: Path, kind: str, arg: int) -> bool:
    """Damage the fileset; True when the .bed bytes and counts still describe valid genotypes."""
    bim, fam = bed.with_suffix(".bim"), bed.with_suffix(".fam")
    raw = bed.read_bytes()
    bim_lines = bim.read_text().splitlines()
    fam_lines = fam.read_text().splitlines()
    if kind == "magic":
        bad = (
            bytes([(raw[0] + 1 + arg % 254) % 256]) + raw[1:3]
            if arg % 3 == 0
            else raw[:1] + bytes([(raw[1] + 1 + arg % 254) % 256]) + raw[2:3]
            if arg % 3 == 1
            else raw[:2] + b"\x00"
        )
        bed.write_bytes(bad + raw[3:])
        return False
    if kind == "truncate":
        bed.write_bytes(raw[: arg % len(raw)])
        return False
    if kind == "pad":
        bed.write_bytes(raw + b"\x00" * (1 + arg % 7))
        return False
    if kind == "empty_bed":
        bed.write_bytes(b"")
        return False
    if kind == "bim_drop":
        bim.write_text("\n".join(bim_lines[: -(1 + arg % 3)]) + "\n")
        return False
    if kind == "bim_add":
        bim.write_text("\n".join(bim_lines + [bim_lines[-1]] * (1 + arg % 3)) + "\n")
        return False
    if kind == "fam_drop":
        fam.write_text("\n".join(fam_lines[: -(1 + arg % 3)]) + "\n")
        return False
    if kind == "fam_add":
        k = 1 + arg % 5
        fam.write_text("\n".join(fam_lines + [f"x{j} x{j} 0 0 0 -9" for j in range(k)]) + "\n")
        # a format limitation: samples are packed 4 per byte, so extra .fam lines that fit in the
        # last byte's padding cannot be told from real samples by any reader (plink included)
        return (N + k + 3) // 4 == (N + 3) // 4 and "undetectable"
    if kind == "fam_drop" and (N - 1 - arg % 3 + 3) // 4 == (N + 3) // 4:
        fam.write_text("\n".join(fam_lines[: -(1 + arg % 3)]) + "\n")
        return "undetectable"
    if kind == "bim_fields":
        k = arg % len(bim_lines)
        bim_lines[k] = " ".join(bim_lines[k].split()[:4])
        bim.write_text("\n".join(bim_lines) + "\n")
        return False
    if kind == "bim_bp_text":
        k = arg % len(bim_lines)
        f = bim_lines[k].split()
        f[3] = ["abc", "1e", "NA", "1.5x"][arg % 4]
        bim_lines[k] = "\t".join(f)
        bim.write_text("\n".join(bim_lines) + "\n")
        return False
    if kind == "bim_commas":
        bim.write_text("\n".join(",".join(line.split()) for line in bim_lines) + "\n")
        return False
    if kind == "fam_fields":
        k = arg % len(fam_lines)
        fam_lines[k] = " ".join(fam_lines[k].split()[:3])
        fam.write_text("\n".join(fam_lines) + "\n")
        return False
    if kind == "empty_bim":
        bim.write_text("")
        return False
    if kind == "empty_fam":
        fam.write_text("")
        return False
    if kind == "bim_dup_ids":  # duplicated SNP ids: still valid genotypes
        f = [line.split() for line in bim_lines]
        for row in f:
            row[1] = "rsDUP"
        bim.write_text("\n".join("\t".join(r) for r in f) + "\n")
        return True
    if kind == "bim_blank_lines":
        bim.write_text("\n\n".join(bim_lines) + "\n\n")
        return True
    if kind == "bim_crlf":
        bim.write_bytes(("\r\n".join(bim_lines) + "\r\n").encode())
        return True
    return True


@given(damages(), st.sampled_from(["center", "eigenstrat", "raw"]), st.integers(1, 5))
@SETTINGS
def test_bedstream_hostile_files(base, case, scale, block):
    from polgen.io.bed import BedStream

    kind, arg = case
    with tempfile.TemporaryDirectory() as d:
        bed = copy_set(base, Path(d))
        valid = apply_damage(bed, kind, arg)
        ref = reference(base / "g.bed")

        def run():
            s = BedStream(bed, scale=scale, block_snps=block)
            cols = [blk.data.copy() for blk in s.blocks()]
            assert s.bim.height == s.n_snps  # the .bim is parsed on first use: errors may surface here
            return s, np.concatenate(cols, axis=1) if cols else np.empty((s.n_samples, 0))

        res, err = attempt(run)
        if valid == "undetectable":
            return
        if not valid:
            assert err is not None, f"damage {kind!r} was not detected"
            return
        assert err is None, f"valid fileset rejected after {kind!r}: {err}"
        s, got = res
        assert got.shape == (N, P)
        if scale == "raw":
            np.testing.assert_array_equal(got, ref)
        else:
            mean = np.nanmean(ref, axis=0)
            exp = np.where(np.isnan(ref), 0.0, ref - mean)
            if scale == "eigenstrat":
                p = mean / 2
                sd = np.sqrt(2 * p * (1 - p))
                exp = np.divide(exp, sd, out=np.zeros_like(exp), where=(p > 0) & (p < 1))
            np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-12)
            assert np.isfinite(got).all()


@given(
    st.one_of(
        st.fixed_dictionaries({"snps": st.lists(st.integers(-3, P + 3), max_size=6)}),
        st.fixed_dictionaries({"thin": st.sampled_from([0.0, -0.5, 1.5, float("nan"), float("inf"), 1e-9, 0.5, 1.0])}),
        st.fixed_dictionaries({"block_snps": st.sampled_from([0, -1, 1, 10**9])}),
        st.fixed_dictionaries({"scale": st.sampled_from(["Center", "", "std", None])}),
        st.fixed_dictionaries({"dtype": st.sampled_from([np.int32, np.float16, "float32", object])}),
        st.fixed_dictionaries({"read": st.tuples(st.integers(-3, P + 3), st.integers(-3, P + 3))}),
    )
)
@SETTINGS
def test_bedstream_hostile_arguments(base, kw):
    from polgen.io.bed import BedStream

    ref = reference(base / "g.bed")
    kw = dict(kw)
    rng = kw.pop("read", None)

    def run():
        s = BedStream(base / "g.bed", **{"scale": "raw", **kw})
        if rng is not None:
            return s, s.read(*rng)
        blocks = [b.data.copy() for b in s.blocks()]
        return s, np.concatenate(blocks, axis=1) if blocks else np.empty((N, 0))

    res, err = attempt(run)
    if err is not None:
        return
    s, got = res
    if rng is not None:
        a, b = rng
        assert 0 <= a <= b <= P, f"read{rng} accepted"
        np.testing.assert_array_equal(got.data, ref[:, a:b])
        return
    np.testing.assert_array_equal(got, ref[:, s.snp_index])
    if "snps" in kw:
        assert list(s.snp_index) == kw["snps"]


# -- LFMM on hostile covariates / genotypes -----------------------------------------------------
@pytest.fixture(scope="module")
def lfmm_bed(tmp_path_factory):
    from polgen.demo import make_lfmm_demo

    d = make_lfmm_demo(tmp_path_factory.mktemp("lfmm"), n=60, p=300, K=2)
    env = pl.read_csv(d.env, separator="\t").select("IID", "env")
    return d, env


@given(
    st.sampled_from(
        [
            "nan",
            "inf",
            "constant",
            "unknown_iid",
            "dup_iid",
            "missing_row",
            "text",
            "empty",
            "huge",
            "no_iid",
            "K0",
            "Kbig",
        ]
    )
)
@settings(max_examples=24, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_lfmm_fit_hostile_covariates(lfmm_bed, kind):
    import polgen.lfmm as lfmm

    d, env = lfmm_bed
    K = d.K
    e = env
    if kind == "nan":
        e = env.with_columns(
            pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise(pl.col("env")).alias("env")
        )
    elif kind == "inf":
        e = env.with_columns(
            pl.when(pl.int_range(pl.len()) == 3).then(float("inf")).otherwise(pl.col("env")).alias("env")
        )
    elif kind == "constant":
        e = env.with_columns(pl.lit(1.0).alias("env"))
    elif kind == "unknown_iid":
        e = env.with_columns(
            pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("nobody")).otherwise(pl.col("IID")).alias("IID")
        )
    elif kind == "dup_iid":
        e = pl.concat([env, env.head(1)])
    elif kind == "missing_row":
        e = env.tail(env.height - 1)
    elif kind == "text":
        e = env.with_columns(pl.col("env").cast(pl.String))
    elif kind == "empty":
        e = env.head(0)
    elif kind == "huge":
        e = env.with_columns(pl.col("env") * 1e200)
    elif kind == "no_iid":
        e = env.drop("IID")
    elif kind == "K0":
        K = 0
    elif kind == "Kbig":
        K = 10_000
    res, err = attempt(lfmm.fit, e, str(d.bed), K=K, progress=False)
    if err is None:
        # the only acceptable successes: inputs that are equivalent to valid ones
        assert kind in ("no_iid", "huge", "text"), f"{kind!r} accepted by lfmm.fit"
        U = np.asarray(res.U) if hasattr(res, "U") else None
        if U is not None:
            assert np.isfinite(U).all()


@given(damages())
@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_lfmm_test_hostile_genotypes(lfmm_bed, base, case):
    """A fitted model tested on a damaged copy of its own fileset."""
    import polgen.lfmm as lfmm

    d, env = lfmm_bed
    kind, arg = case
    model = _model(d, env)
    with tempfile.TemporaryDirectory() as tmp:
        for ext in ("bed", "bim", "fam"):
            shutil.copy(d.bed.with_suffix(f".{ext}"), Path(tmp) / f"g.{ext}")
        bed = Path(tmp) / "g.bed"
        valid = apply_damage(bed, kind, arg)
        out = Path(tmp) / "out"
        res, err = attempt(lambda: lfmm.test(model, str(bed), out=out, progress=False).collect())
        if valid == "undetectable":
            return
        if not valid:
            assert err is not None, f"damage {kind!r} was not detected by lfmm.test"
        if err is not None:
            if out.exists():
                assert not any(out.glob("part-*.parquet")) or (out / "_polgen_manifest.jsonl").exists()
                assert not [p for p in out.rglob("*") if ".tmp" in p.name]
            return
        # a damage that leaves valid genotypes (duplicated ids, blank lines, CRLF) changes no number
        ref = _MODEL["ref"]
        assert res.height == ref.height == d.p
        num = [c for c, t in ref.schema.items() if t.is_float()]
        np.testing.assert_allclose(res.select(num).to_numpy(), ref.select(num).to_numpy(), rtol=1e-12, atol=0)


_MODEL = {}


def _model(d, env):
    import polgen.lfmm as lfmm

    if "m" not in _MODEL:
        _MODEL["m"] = lfmm.fit(env, str(d.bed), K=d.K, progress=False)
        _MODEL["ref"] = lfmm.test(_MODEL["m"], str(d.bed), progress=False).collect()
    return _MODEL["m"]
