"""BedStream and the bed decode kernel against bed-reader (an independent Rust decoder)."""

from __future__ import annotations

import pickle

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

bed_reader = pytest.importorskip("bed_reader")

from polgen.errors import BedFormatError, InputError  # noqa: E402
from polgen.io.bed import BedStream, BimIndex, count_lines, read_bim, thin_positions  # noqa: E402
from polgen.kernels.bed_decode import SCALE_CENTER, decode_block  # noqa: E402


def _genotypes(n: int, p: int, seed: int, miss: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    freq = rng.uniform(0.05, 0.95, p)
    g = rng.binomial(2, freq, size=(n, p)).astype(np.float64)
    g[rng.random((n, p)) < miss] = np.nan
    if p >= 3:
        g[:, 0] = 2.0  # monomorphic A1/A1
        g[:, 1] = np.nan  # every call missing
        g[: max(1, n // 2), 2] = 0.0  # monomorphic with missing calls
        g[max(1, n // 2) :, 2] = np.nan
    return g


def _write(tmp_path, g: np.ndarray, name: str = "g") -> str:
    path = str(tmp_path / f"{name}.bed")
    n, p = g.shape
    props = {
        "chromosome": ["1"] * (p // 2) + ["2"] * (p - p // 2),
        "bp_position": list(range(100, 100 + 10 * p, 10)),
        "sid": [f"rs{j}" for j in range(p)],
        "allele_1": ["A"] * p,
        "allele_2": ["G"] * p,
        "iid": [f"i{i}" for i in range(n)],
        "fid": [f"f{i}" for i in range(n)],
    }
    bed_reader.to_bed(path, g, properties=props)
    return path


def _reference(path: str, count_a1: bool = True) -> np.ndarray:
    with bed_reader.open_bed(path, count_A1=count_a1) as bed:
        return bed.read(dtype="float64")


def _numpy_scaled(ref: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        cnt = np.sum(~np.isnan(ref), axis=0)
        mean = np.where(cnt > 0, np.nansum(ref, axis=0) / np.maximum(cnt, 1), np.nan)
        x = np.where(np.isnan(ref), 0.0, ref - mean)
        x[:, cnt == 0] = 0.0
        if scale == "eigenstrat":
            p = mean / 2
            sd = np.sqrt(2 * p * (1 - p))
            ok = sd > 0
            x[:, ok] = x[:, ok] / sd[ok]
            x[:, ~ok] = 0.0
    return x, mean / 2


@pytest.mark.parametrize("n", [1, 3, 5, 7, 10, 101])
def test_raw_bit_exact_against_bed_reader(tmp_path, n):
    g = _genotypes(n, 23, seed=n)
    path = _write(tmp_path, g)
    ref = _reference(path)
    np.testing.assert_array_equal(ref, g)  # to_bed/open_bed round trip sanity
    bs = BedStream(path, scale="raw")
    blk = bs.read()
    assert blk.data.flags.f_contiguous and blk.data.dtype == np.float64
    np.testing.assert_array_equal(blk.data, ref)  # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(blk.n_miss, np.isnan(ref).sum(axis=0))
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning, match="empty slice"):
        want_freq = np.nanmean(ref, axis=0) / 2  # column 1 has no calls -> NaN
    np.testing.assert_array_equal(blk.freq, want_freq)


@pytest.mark.parametrize("n", [1, 3, 5, 7, 10, 101])
@pytest.mark.parametrize("scale", ["center", "eigenstrat"])
def test_centred_and_eigenstrat_match_numpy(tmp_path, n, scale):
    g = _genotypes(n, 19, seed=100 + n)
    path = _write(tmp_path, g)
    ref = _reference(path)
    want, freq = _numpy_scaled(ref, scale)
    blk = BedStream(path, scale=scale).read()
    if scale == "center":
        np.testing.assert_array_equal(blk.data, want)  # same operations in the same order: exact
    else:  # the kernel may divide by sd as a reciprocal multiply (fastmath arcp): 1 ulp
        np.testing.assert_allclose(blk.data, want, rtol=4e-16, atol=4e-16)
    np.testing.assert_array_equal(blk.freq, freq)
    assert not np.isnan(blk.data).any()
    mono = blk.monomorphic
    assert mono[0] and mono[1] and mono[2]
    assert np.all(blk.data[:, mono] == 0.0)
    assert np.isnan(blk.freq[1]) and blk.freq[0] == 1.0 and blk.freq[2] == 0.0


@pytest.mark.parametrize("scale", ["raw", "center", "eigenstrat"])
def test_float32_is_the_float64_result_rounded(tmp_path, scale):
    g = _genotypes(37, 29, seed=7)
    path = _write(tmp_path, g)
    x64 = BedStream(path, scale=scale).read().data
    x32 = BedStream(path, scale=scale, dtype=np.float32).read().data
    assert x32.dtype == np.float32 and x32.flags.f_contiguous
    np.testing.assert_array_equal(x32, x64.astype(np.float32))


def test_count_a2_matches_bed_reader(tmp_path):
    g = _genotypes(10, 15, seed=3)
    path = _write(tmp_path, g)
    ref = _reference(path, count_a1=False)
    blk = BedStream(path, scale="raw", count_a1=False).read()
    np.testing.assert_array_equal(blk.data, ref)
    np.testing.assert_array_equal(BedStream(path, count_a1=False).read().data, _numpy_scaled(ref, "center")[0])


def test_blocks_cover_every_snp_once_and_reuse_buffer(tmp_path):
    g = _genotypes(21, 50, seed=11)
    path = _write(tmp_path, g)
    full = BedStream(path).read().data
    bs = BedStream(path, block_snps=7)
    assert bs.n_blocks == 8
    seen, pieces, buffers = [], [], set()
    for blk in bs.blocks():
        assert blk.data.flags.f_contiguous and blk.data.shape == (21, blk.stop - blk.start)
        seen.extend(range(blk.start, blk.stop))
        pieces.append(blk.data.copy())
        buffers.add(blk.data.__array_interface__["data"][0])
    assert seen == list(range(50))
    assert len(buffers) == 1  # one reused buffer
    np.testing.assert_array_equal(np.hstack(pieces), full)
    # a sub-range, and the ranges listed up front
    sub = list(bs.blocks(10, 30))
    assert [(b.start, b.stop) for b in sub] == bs.block_ranges(10, 30) == [(10, 17), (17, 24), (24, 30)]


def test_snp_subset_and_thinning(tmp_path):
    g = _genotypes(13, 40, seed=5)
    path = _write(tmp_path, g)
    ref = _reference(path)
    snps = np.array([0, 3, 4, 5, 9, 20, 21, 39])
    bs = BedStream(path, snps=snps, scale="raw", block_snps=3)
    np.testing.assert_array_equal(bs.read().data, ref[:, snps])
    assert bs.bim["SNP"].to_list() == [f"rs{j}" for j in snps]
    np.testing.assert_array_equal(bs.snp_index, snps)
    got = np.hstack([b.data.copy() for b in bs.blocks()])
    np.testing.assert_array_equal(got, ref[:, snps])

    th = BedStream(path, thin=0.25, scale="raw")
    np.testing.assert_array_equal(th.snp_index, np.arange(0, 40, 4))
    np.testing.assert_array_equal(th.read().data, ref[:, ::4])
    both = BedStream(path, snps=snps, thin=0.5, scale="raw")
    np.testing.assert_array_equal(both.snp_index, snps[::2])
    # thinning is deterministic and keeps the requested fraction
    for n, f in [(1000, 0.3), (7, 0.5), (10, 1.0), (3, 0.01)]:
        pos = thin_positions(n, f)
        assert len(pos) == int(np.ceil(n * f - 1e-9)) and np.all(np.diff(pos) > 0) and pos[-1] < n
        np.testing.assert_array_equal(pos, thin_positions(n, f))


def test_read_into_caller_buffer_and_pickle(tmp_path):
    g = _genotypes(9, 12, seed=2)
    path = _write(tmp_path, g)
    bs = BedStream(path, scale="eigenstrat", dtype=np.float32)
    out = np.empty((9, 5), dtype=np.float32, order="F")
    blk = bs.read(3, 8, out=out)
    assert blk.data is out
    clone = pickle.loads(pickle.dumps(bs))
    np.testing.assert_array_equal(clone.read(3, 8).data, out)
    with pytest.raises(InputError):
        bs.read(3, 8, out=np.empty((9, 5), dtype=np.float32))  # C order
    with pytest.raises(InputError):
        bs.read(5, 13)


def test_decode_block_kernel_direct_and_parallel_path(tmp_path):
    g = _genotypes(33, 64, seed=9)
    path = _write(tmp_path, g)
    raw = np.fromfile(path, dtype=np.uint8)[3:].reshape(64, -1)
    want, freq = _numpy_scaled(_reference(path), "center")
    for parallel in (False, True):
        out = np.empty((33, 64), order="F")
        f = np.empty(64)
        m = np.empty(64, dtype=np.int64)
        decode_block(raw, 33, SCALE_CENTER, out, f, m, parallel=parallel)
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(f, freq)
    with pytest.raises(ValueError):
        decode_block(raw, 33, SCALE_CENTER, np.empty((33, 64)), f, m)  # C-ordered out


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40), p=st.integers(1, 12), seed=st.integers(0, 2**31 - 1), miss=st.sampled_from([0.0, 0.2, 0.9])
)
def test_property_raw_matches_bed_reader(tmp_path_factory, n, p, seed, miss):
    tmp = tmp_path_factory.mktemp("prop")
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 3, size=(n, p)).astype(np.float64)
    g[rng.random((n, p)) < miss] = np.nan
    path = str(tmp / "p.bed")
    bed_reader.to_bed(path, g)
    ref = _reference(path)
    np.testing.assert_array_equal(BedStream(path, scale="raw", block_snps=5).read().data, ref)
    np.testing.assert_array_equal(BedStream(path, block_snps=5).read().data, _numpy_scaled(ref, "center")[0])


# -- bad input ---------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path):
    return _write(tmp_path, _genotypes(10, 8, seed=1))


def test_wrong_magic(good):
    raw = bytearray(open(good, "rb").read())
    raw[0] = 0x00
    open(good, "wb").write(bytes(raw))
    with pytest.raises(BedFormatError, match="not a PLINK .bed") as e:
        BedStream(good)
    assert e.value.path.endswith("g.bed")


def test_individual_major_rejected(good):
    raw = bytearray(open(good, "rb").read())
    raw[2] = 0x00
    open(good, "wb").write(bytes(raw))
    with pytest.raises(BedFormatError, match="individual-major"):
        BedStream(good)


def test_truncated(good):
    raw = open(good, "rb").read()
    open(good, "wb").write(raw[:-1])
    with pytest.raises(BedFormatError, match="truncated"):
        BedStream(good)


def test_bim_fam_count_mismatch(good):
    bim = good[:-4] + ".bim"
    with open(bim, "a") as fh:
        fh.write("1\trsX\t0\t999\tA\tG\n")
    with pytest.raises(BedFormatError, match="9 SNPs"):
        BedStream(good)
    fam = good[:-4] + ".fam"
    lines = open(fam).read().splitlines()
    open(fam, "w").write("\n".join(lines[:-1]) + "\n")
    with pytest.raises(BedFormatError):
        BedStream(good)


def test_missing_bim_and_bad_lines(good):
    import os

    bim = good[:-4] + ".bim"
    text = open(bim).read()
    os.remove(bim)
    with pytest.raises(BedFormatError, match=".bim file not found"):
        BedStream(good)
    lines = text.splitlines()
    lines[3] = "1 rs3 0 100 A"  # 5 fields
    open(bim, "w").write("\n".join(lines) + "\n")
    bs = BedStream(good)  # the count still matches; the full parse happens on first use of .bim
    with pytest.raises(BedFormatError, match="line 4 has 5") as e:
        _ = bs.bim
    assert e.value.row == 4
    lines_bad_first = list(lines)
    lines_bad_first[0] = "1 rs0 0 100"
    open(bim, "w").write("\n".join(lines_bad_first) + "\n")
    with pytest.raises(BedFormatError, match="line 1 has 4"):
        BedStream(good)  # the first line is checked at open
    lines[3] = "1 rs3 0 notanumber A G"
    open(bim, "w").write("\n".join(lines) + "\n")
    with pytest.raises(BedFormatError) as e:
        read_bim(bim)
    assert e.value.column == "BP" and e.value.row == 4


def test_space_separated_bim_and_prefix_path(good):
    bim = good[:-4] + ".bim"
    lines = [" ".join(line.split("\t")) + "  " for line in open(bim).read().splitlines()]
    open(bim, "w").write("\n".join(lines) + "\n\n")
    bs = BedStream(good[:-4])  # prefix without extension
    assert bs.n_snps == 8 and bs.bim["BP"].dtype.is_integer()
    assert bs.fam["IID"].to_list() == [f"i{i}" for i in range(10)]


def test_bad_arguments(good):
    with pytest.raises(InputError):
        BedStream(good, scale="standardise")
    with pytest.raises(InputError):
        BedStream(good, snps=[3, 1])
    with pytest.raises(InputError):
        BedStream(good, snps=[0, 8])
    with pytest.raises(InputError):
        BedStream(good, thin=0.0)
    with pytest.raises(InputError):
        BedStream(good, dtype=np.int8)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1 << 20])
def test_count_lines_blank_lines_crlf_and_chunk_edges(tmp_path, chunk):
    f = tmp_path / "x.txt"
    cases = {
        b"": 0,
        b"a": 1,
        b"a\n": 1,
        b"\n\na b\n\n  \n c\n": 2,
        b"a\r\nb\r\n\r\n": 2,
        b"a\nb": 2,
        b"  \t\n": 0,
        b"line one\nline two\n\n\nthree": 3,
    }
    for raw, want in cases.items():
        f.write_bytes(raw)
        assert count_lines(f, chunk_bytes=chunk) == want, raw


def test_bim_is_lazy_and_sliced(tmp_path):
    g = _genotypes(6, 30, seed=4)
    path = _write(tmp_path, g)
    bs = BedStream(path, snps=np.arange(5, 25), block_snps=8)
    assert bs._bim is None  # nothing parsed at open
    assert bs.bim_slice(2, 5)["SNP"].to_list() == ["rs7", "rs8", "rs9"]
    assert bs.bim.height == 20


@pytest.mark.skipif(__import__("shutil").which("plink2") is None, reason="plink2 not installed")
def test_against_plink2_export(tmp_path):
    """A .bed written by plink2 (--dummy, 5% missing) decodes to what plink2 --export A prints."""
    import subprocess

    prefix = str(tmp_path / "dummy")
    for args in (["--dummy", "29", "53", "0.05", "--seed", "7", "--make-bed"], ["--bfile", prefix, "--export", "A"]):
        subprocess.run(["plink2", *args, "--out", prefix, "--threads", "1"], check=True, capture_output=True)
    raw = pl.read_csv(prefix + ".raw", separator="\t", null_values="NA")
    cols = raw.columns[6:]
    X = raw.select(cols).to_numpy().astype(np.float64)
    bs = BedStream(prefix + ".bed", scale="raw")
    counted = np.array([c.rsplit("_", 1)[1] for c in cols])
    want = np.where(counted == np.array(bs.bim["A1"].to_list()), X, 2.0 - X)
    got = bs.read().data
    assert np.isnan(got).any()
    np.testing.assert_array_equal(got, want)
    assert bs.fam["IID"].to_list() == raw["IID"].cast(pl.String).to_list()


def test_concurrent_streams_in_threads(tmp_path):
    """Streams decoding at once in a thread pool (as the engine's 'threads' executor does)."""
    from concurrent.futures import ThreadPoolExecutor

    g = _genotypes(400, 700, seed=21, miss=0.02)  # blocks big enough for the parallel path
    path = _write(tmp_path, g)
    want = BedStream(path).read().data

    def work(k):
        bs = BedStream(path, block_snps=350)
        return np.hstack([b.data.copy() for b in bs.blocks()])

    with ThreadPoolExecutor(4) as pool:
        for got in pool.map(work, range(8)):
            np.testing.assert_array_equal(got, want)


# -- the .bim index: row slices parsed on their own equal the whole-file parse --------------------
def _bim_text(rows: int, layout: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    lines = []
    for j in range(rows):
        f = [str(1 + j // 50), f"rs{j}", "0" if j % 3 else "0.25", str(100 + 7 * j), "ACGT"[j % 4], "TGCA"[j % 4]]
        if layout == "tab":
            lines.append("\t".join(f))
        elif layout == "space":
            lines.append(" ".join(f))
        elif layout == "messy":  # runs of spaces/tabs, leading and trailing blanks, blank lines, CRLF
            sep = [" ", "\t", "  ", " \t "][int(rng.integers(0, 4))]
            lines.append((" " if j % 5 == 0 else "") + sep.join(f) + (" \t" if j % 7 == 0 else ""))
            if j % 11 == 0:
                lines.append("   " if j % 2 else "")
        elif layout == "trailing":  # tab layout, a few fields padded by spaces
            lines.append("\t".join(f) + (" " if j % 13 == 0 else ""))
        elif layout == "rare_blank":  # tab layout with one empty and one whitespace-only line
            lines.append("\t".join(f))
            if j in (40, 120):
                lines.append("" if j == 40 else " \t ")
    end = "\r\n" if layout == "messy" and seed % 2 else "\n"
    return (end.join(lines) + (end if seed % 3 else "")).encode()


@pytest.mark.parametrize("layout", ["tab", "space", "messy", "trailing", "rare_blank"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bim_index_slices_equal_the_whole_parse(tmp_path, layout, seed):
    path = tmp_path / "x.bim"
    path.write_bytes(_bim_text(157, layout, seed))
    whole = read_bim(path)
    assert whole.height == 157 == count_lines(path)
    rng = np.random.default_rng(seed)
    for stride, chunk in ((3, 7), (4096, 1 << 20), (50, 101)):
        index = BimIndex.build(path, stride=stride, chunk_bytes=chunk)
        assert index.n_rows == 157
        assert index.plain == (layout in ("tab", "space", "trailing"))
        assert index.read(path, 0, 157).equals(whole)
        for lo, hi in [(0, 1), (156, 157), (3, 3), *(sorted(rng.integers(0, 158, 2)) for _ in range(8))]:
            assert index.read(path, int(lo), int(hi)).equals(whole.slice(int(lo), int(hi) - int(lo))), (lo, hi)
    with pytest.raises(InputError):
        index.read(path, 5, 158)


def test_bim_slices_of_a_selection_and_errors_name_the_row(tmp_path):
    g = _genotypes(5, 40, seed=8)
    path = _write(tmp_path, g)
    snps = np.array([0, 3, 4, 17, 30, 39])
    bs = BedStream(path, snps=snps)
    full = read_bim(path[:-4] + ".bim")
    assert bs.bim_slice(0, 6).equals(full[snps.tolist()])
    assert bs.bim_slice(2, 5).equals(full[[4, 17, 30]])
    assert bs.bim_slice(3, 3).height == 0 and bs._bim is None
    bim = path[:-4] + ".bim"
    lines = open(bim).read().splitlines()
    lines[30] = "1 rs30 0 notanumber A G"
    open(bim, "w").write("\n".join(lines) + "\n")
    bs = BedStream(path, snps=snps)
    assert bs.bim_slice(0, 4).height == 4  # rows before the bad one parse
    with pytest.raises(BedFormatError, match="not a number") as e:
        bs.bim_slice(0, 6)
    assert e.value.row == 31 and e.value.column == "BP"
    lines[30] = "1 rs30 0 310 A"
    open(bim, "w").write("\n".join(lines) + "\n")
    with pytest.raises(BedFormatError, match="line 31 has 5") as e:
        BedStream(path).bim_slice(20, 40)
    assert e.value.row == 31


def test_blocks_on_threads_share_one_stream(tmp_path):
    """One stream, several threads each iterating its own range (as LFMM's passes do)."""
    from concurrent.futures import ThreadPoolExecutor

    g = _genotypes(50, 300, seed=12, miss=0.05)
    path = _write(tmp_path, g)
    bs = BedStream(path)
    want = bs.read().data
    ranges = [(0, 70), (70, 151), (151, 230), (230, 300)]

    def work(r):
        a, b = r
        return np.hstack([blk.data.copy() for blk in bs.blocks(a, b, block_snps=9, parallel=False)])

    for _ in range(3):
        with ThreadPoolExecutor(4) as pool:
            got = np.hstack(list(pool.map(work, ranges)))
        np.testing.assert_array_equal(got, want)
    with pytest.raises(InputError):
        next(bs.blocks(block_snps=0))


# -- sample subsets ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["raw", "center", "eigenstrat"])
@pytest.mark.parametrize("count_a1", [True, False])
@pytest.mark.parametrize("subset", ["even", "three"])
def test_sample_subset_equals_bed_reader_subset(tmp_path, scale, count_a1, subset):
    g = _genotypes(23, 31, seed=17, miss=0.15)
    g[[1, 4, 9], 5] = np.nan  # a SNP whose calls in subset "three" are all missing...
    g[:, 6] = np.where(np.arange(23) % 2 == 0, 2.0, 1.0)  # ...one monomorphic in subset "even"
    path = _write(tmp_path, g)
    samples = np.arange(0, 23, 2) if subset == "even" else np.array([1, 4, 9])
    with bed_reader.open_bed(path, count_A1=count_a1) as b:
        ref = b.read(index=np.s_[samples, :], dtype="float64")
    bs = BedStream(path, samples=samples, scale=scale, count_a1=count_a1, block_snps=4)
    assert bs.n_samples == len(samples) and bs.n_samples_total == 23
    assert bs.sample_ids == [f"i{i}" for i in samples] and bs.fam.height == len(samples)
    got = np.hstack([blk.data.copy() for blk in bs.blocks()])
    freq = np.concatenate([blk.freq.copy() for blk in bs.blocks()])
    nmiss = np.concatenate([blk.n_miss.copy() for blk in bs.blocks()])
    np.testing.assert_array_equal(nmiss, np.isnan(ref).sum(axis=0))
    calls = (~np.isnan(ref)).sum(axis=0)
    want_freq = np.where(calls > 0, np.nansum(ref, axis=0) / np.maximum(calls, 1) / 2, np.nan)
    np.testing.assert_allclose(freq, want_freq, rtol=1e-15, equal_nan=True)
    if scale == "raw":
        np.testing.assert_array_equal(got, ref)
    else:
        np.testing.assert_allclose(got, _numpy_scaled(ref, scale)[0], rtol=1e-12, atol=1e-15)
        assert np.isfinite(got).all()
    if scale == "center":  # the same numbers as a file holding only those samples
        sub = tmp_path / "sub"
        sub.mkdir()
        sub_path = _write(sub, g[samples] if count_a1 else 2.0 - g[samples])
        np.testing.assert_array_equal(got, BedStream(sub_path).read().data)
    again = pickle.loads(pickle.dumps(bs))
    np.testing.assert_array_equal(again.read(3, 9).data, got[:, 3:9])


def test_bad_sample_subsets(good):
    for bad in ([3, 1], [0, 10], [-1, 2], [[0, 1]], [0.5, 1.5], [2, 2]):
        with pytest.raises(InputError):
            BedStream(good, samples=bad)
    assert BedStream(good, samples=[]).read().data.shape == (0, 8)
