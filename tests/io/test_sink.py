"""The batch sink: atomic parts, manifest, resume, verification, and a real SIGKILL mid-run."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from polgen.engine import run_to_sink
from polgen.errors import InputError, OutputExistsError, ResumeError
from polgen.io import sink as sink_mod
from polgen.io.sink import MANIFEST, SUCCESS, BatchSink, read_metadata, write_table_atomic
from run_helpers import kill_after_parts, manifest_records, part_bytes

CALLS: list[int] = []


def make_batch(b: int) -> pl.DataFrame:
    CALLS.append(b)
    rng = np.random.default_rng(1000 + b)
    n = 50 + b
    return pl.DataFrame(
        {"batch": np.full(n, b, dtype=np.int64), "x": rng.standard_normal(n), "snp": [f"rs{b}_{i}" for i in range(n)]}
    )


def _parts(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.glob("part-*.parquet"))}


def _no_temps(path: Path) -> bool:
    return not [f for f in path.iterdir() if ".tmp" in f.name]


# -- atomic single-file writes ----------------------------------------------------------------
def test_write_table_atomic_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.parquet"
    write_table_atomic(target, pa.table({"a": [1, 2]}))
    before = target.read_bytes()

    def exploding_write(table, where, **kw):
        with open(where, "wb") as fh:
            fh.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(sink_mod.pq, "write_table", exploding_write)
    with pytest.raises(OSError, match="disk full"):
        write_table_atomic(target, pa.table({"a": [3]}))
    assert target.read_bytes() == before  # the old file is untouched
    assert sorted(f.name for f in tmp_path.iterdir()) == ["out.parquet"]  # no temp file left


def test_write_table_atomic_metadata_and_bad_table(tmp_path):
    rows, size = write_table_atomic(tmp_path / "m.parquet", pl.DataFrame({"a": [1.0, 2.0, 3.0]}), {"polgen.query": "x"})
    assert rows == 3 and size == (tmp_path / "m.parquet").stat().st_size
    assert read_metadata(tmp_path / "m.parquet")["polgen.query"] == "x"
    with pytest.raises(InputError, match="pyarrow or polars table"):
        write_table_atomic(tmp_path / "bad.parquet", [1, 2, 3])
    assert not (tmp_path / "bad.parquet").exists()


# -- manifest ---------------------------------------------------------------------------------
def test_manifest_records_and_params_in_parts(tmp_path):
    params = {"method": "unit", "alpha": 0.25, "chroms": (1, 2), "path": tmp_path / "x"}
    sink = run_to_sink(make_batch, list(range(4)), tmp_path / "o", params, metadata={"n_snps": 206})
    lines = (tmp_path / "o" / MANIFEST).read_text().splitlines()
    header = json.loads(lines[0])
    assert header["params"] == {"method": "unit", "alpha": 0.25, "chroms": [1, 2], "path": str(tmp_path / "x")}
    recs = [json.loads(x) for x in lines[1:]]
    assert [r["batch"] for r in recs] == [0, 1, 2, 3]
    for r in recs:
        f = tmp_path / "o" / r["file"]
        assert r["bytes"] == f.stat().st_size
        assert r["rows"] == pq.ParquetFile(f).metadata.num_rows == 50 + r["batch"]
        md = read_metadata(f)
        assert json.loads(md["polgen.params"]) == header["params"]
        assert md["polgen.batch"] == str(r["batch"])
    assert sink.metadata == {"n_snps": 206} == read_metadata(tmp_path / "o")
    assert json.loads((tmp_path / "o" / SUCCESS).read_text())["rows"] == sum(50 + b for b in range(4))
    df = sink.scan().collect()
    assert df["batch"].to_list() == sum(([b] * (50 + b) for b in range(4)), [])


def test_torn_last_manifest_line_is_dropped(tmp_path):
    out = tmp_path / "o"
    run_to_sink(make_batch, list(range(3)), out, {"p": 1}, finalize=False)
    m = out / MANIFEST
    m.write_bytes(m.read_bytes() + b'{"batch": 3, "bytes": 12')  # killed while appending
    CALLS.clear()
    sink = run_to_sink(make_batch, list(range(5)), out, {"p": 1}, resume=True)
    assert CALLS == [3, 4]
    lines = m.read_text().splitlines()
    assert all(json.loads(x) for x in lines)  # every line parses again
    assert [json.loads(x)["batch"] for x in lines[1:]] == [0, 1, 2, 3, 4]
    assert len(sink.files) == 5


def test_complete_last_line_without_newline_is_kept(tmp_path):
    out = tmp_path / "o"
    run_to_sink(make_batch, list(range(3)), out, {"p": 1}, finalize=False)
    m = out / MANIFEST
    m.write_bytes(m.read_bytes().rstrip(b"\n"))
    CALLS.clear()
    run_to_sink(make_batch, list(range(4)), out, {"p": 1}, resume=True)
    assert CALLS == [3]
    assert [json.loads(x)["batch"] for x in m.read_text().splitlines()[1:]] == [0, 1, 2, 3]


def test_corrupt_middle_line_refuses_resume(tmp_path):
    out = tmp_path / "o"
    run_to_sink(make_batch, list(range(3)), out, {"p": 1})
    m = out / MANIFEST
    lines = m.read_text().splitlines()
    lines[1] = lines[1][:10]
    m.write_text("\n".join(lines) + "\n")
    with pytest.raises(ResumeError, match="manifest line 2 is corrupt"):
        BatchSink(out, {"p": 1}, resume=True)
    m.write_text("not json\n")
    with pytest.raises(ResumeError, match="corrupt"):
        BatchSink(out, {"p": 1}, resume=True)


# -- resume / overwrite -----------------------------------------------------------------------
def test_resume_skips_completed_batches(tmp_path):
    out = tmp_path / "o"
    run_to_sink(make_batch, list(range(3)), out, {"p": 1}, finalize=False)
    CALLS.clear()
    sink = run_to_sink(make_batch, list(range(6)), out, {"p": 1}, resume=True)
    assert CALLS == [3, 4, 5]
    CALLS.clear()
    run_to_sink(make_batch, list(range(6)), out, {"p": 1}, resume=True)
    assert CALLS == []
    ref = run_to_sink(make_batch, list(range(6)), tmp_path / "ref", {"p": 1})
    assert _parts(out) == _parts(tmp_path / "ref")
    assert sink.scan().collect().equals(ref.scan().collect())


def test_resume_with_other_params_is_refused(tmp_path):
    out = tmp_path / "o"
    run_to_sink(make_batch, list(range(2)), out, {"p": 1, "q": "a"})
    with pytest.raises(ResumeError, match=r"parameters differ.*\(p\)"):
        run_to_sink(make_batch, list(range(2)), out, {"p": 2, "q": "a"}, resume=True)


def test_existing_output_needs_resume_or_overwrite(tmp_path):
    out = tmp_path / "o"
    run_to_sink(make_batch, list(range(3)), out, {"p": 1})
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError):
        run_to_sink(make_batch, list(range(2)), out, {"p": 1})
    sink = run_to_sink(make_batch, list(range(2)), out, {"p": 9}, overwrite=True)
    assert sorted(f.name for f in out.glob("part-*")) == ["part-000000.parquet", "part-000001.parquet"]
    assert json.loads((out / MANIFEST).read_text().splitlines()[0])["params"] == {"p": 9}
    assert (out / "notes.txt").read_text() == "keep me"  # overwrite removes only polgen's files
    assert len(sink.files) == 2
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "part-000000.parquet").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="no polgen manifest"):
        BatchSink(stray, {})
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputExistsError, match="not a directory"):
        BatchSink(f, {})


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "append"])
def test_damaged_part_is_detected_and_recomputed(tmp_path, damage):
    ref = run_to_sink(make_batch, list(range(4)), tmp_path / "ref", {"p": 1})
    out = tmp_path / "o"
    run_to_sink(make_batch, list(range(4)), out, {"p": 1})
    part = out / "part-000002.parquet"
    data = bytearray(part.read_bytes())
    if damage == "flip":  # same size, different content: only the checksum sees it
        data[len(data) // 2] ^= 0xFF
        part.write_bytes(bytes(data))
    elif damage == "truncate":
        part.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "delete":
        part.unlink()
    else:
        part.write_bytes(bytes(data) + b"junk")
    CALLS.clear()
    run_to_sink(make_batch, list(range(4)), out, {"p": 1}, resume=True)
    assert CALLS == [2]
    assert _parts(out) == _parts(tmp_path / "ref")
    assert len(ref.files) == 4


def test_row_count_mismatch_is_detected(tmp_path):
    out = tmp_path / "o"
    run_to_sink(make_batch, list(range(2)), out, {"p": 1})
    m = out / MANIFEST
    lines = m.read_text().splitlines()
    rec = json.loads(lines[2])
    rec["rows"] += 1
    lines[2] = json.dumps(rec)
    m.write_text("\n".join(lines) + "\n")
    CALLS.clear()
    run_to_sink(make_batch, list(range(2)), out, {"p": 1}, resume=True)
    assert CALLS == [1]


def test_stray_temp_and_unrecorded_parts_are_cleaned(tmp_path):
    out = tmp_path / "o"
    run_to_sink(make_batch, list(range(2)), out, {"p": 1}, finalize=False)
    (out / ".part-000002.parquet.tmp-123-abc").write_bytes(b"partial")
    write_table_atomic(out / "part-000007.parquet", make_batch(7))  # written, never recorded
    sink = run_to_sink(make_batch, list(range(3)), out, {"p": 1}, resume=True)
    assert sorted(f.name for f in out.iterdir()) == sorted(
        [MANIFEST, SUCCESS, "part-000000.parquet", "part-000001.parquet", "part-000002.parquet"]
    )
    assert _no_temps(out)
    assert len(sink.files) == 3


def test_finalize_refuses_missing_batches(tmp_path):
    sink = BatchSink(tmp_path / "o", {"p": 1})
    sink.write(0, make_batch(0))
    sink.write(2, make_batch(2))
    with pytest.raises(ResumeError, match="1 batches missing"):
        sink.finalize(n_batches=3)
    sink.finalize(n_batches=1)
    assert [f.name for f in sink.files] == ["part-000000.parquet"]
    assert not (tmp_path / "o" / "part-000002.parquet").exists()
    empty = BatchSink(tmp_path / "e", {})
    with pytest.raises(InputError, match="no completed batches"):
        empty.scan()


def test_unusual_params_are_stable(tmp_path):
    p = {"f": make_batch, "s": {3, 1, 2}, "nan": float("nan"), "arr": np.arange(3), "i": np.int64(4)}
    run_to_sink(make_batch, [0], tmp_path / "o", p)
    run_to_sink(make_batch, [0], tmp_path / "o", dict(p), resume=True)  # same text, no ResumeError
    header = json.loads((tmp_path / "o" / MANIFEST).read_text().splitlines()[0])["params"]
    assert header == {"f": "test_sink.make_batch", "s": [1, 2, 3], "nan": "NaN", "arr": [0, 1, 2], "i": 4}


# -- the real thing: SIGKILL mid-run, then resume ---------------------------------------------
JOB = textwrap.dedent(
    """
    import sys, time
    import numpy as np, polars as pl
    from polgen.engine import run_to_sink

    def batch(b):
        time.sleep(0.04)
        rng = np.random.default_rng(b)
        n = 200 + 7 * b
        return pl.DataFrame({"b": np.full(n, b), "x": rng.standard_normal(n), "y": rng.integers(0, 9, n)})

    if __name__ == "__main__":
        out, resume = sys.argv[1], sys.argv[2] == "1"
        run_to_sink(batch, list(range(40)), out, {"job": "kill-test", "n": 40}, resume=resume,
                    metadata={"done": True})
        print("finished")
    """
)


def test_sigkill_then_resume_is_byte_identical(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    # the uninterrupted reference run, in this process (same code, same bytes)
    spec = importlib.util.spec_from_file_location("kill_job", script)
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    ref = tmp_path / "ref"
    run_to_sink(job.batch, list(range(40)), ref, {"job": "kill-test", "n": 40}, metadata={"done": True})

    out = tmp_path / "killed"
    rng = np.random.default_rng(7)
    kills = 0
    for round_ in range(2):
        target = 6 + 14 * round_ + int(rng.integers(0, 5))
        kills += kill_after_parts(
            [sys.executable, str(script), str(out), "1" if round_ else "0"],
            out,
            target,
            delay=float(rng.uniform(0, 0.04)),
        )  # land inside a batch
        assert not (out / SUCCESS).exists()
    assert kills == 2
    done_before = manifest_records(out)
    assert 0 < done_before < 40
    final = subprocess.run(
        [sys.executable, str(script), str(out), "1"],
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
        env=dict(os.environ, POLGEN_PROGRESS="0"),
    )
    assert "finished" in final.stdout
    assert (out / SUCCESS).exists()
    assert part_bytes(out) == part_bytes(ref)
    assert _parts(out) == _parts(ref)
    assert len(_parts(ref)) == 40
    assert _no_temps(out)
    a = pl.read_parquet(sorted(out.glob("part-*.parquet")))
    assert a.equals(pl.read_parquet(sorted(ref.glob("part-*.parquet"))))
    assert a["b"].unique().sort().to_list() == list(range(40))
    assert read_metadata(out) == {"done": True}


def test_kill_after_parts_reports_a_finished_job(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(JOB)
    out = tmp_path / "o"
    assert kill_after_parts([sys.executable, str(script), str(out), "0"], out, 10_000) is False
    assert manifest_records(out) == 40 and (out / SUCCESS).exists()
    with pytest.raises(TimeoutError):
        kill_after_parts([sys.executable, "-c", "import time; time.sleep(30)"], tmp_path / "x", 1, timeout=0.5)


# -- hostile manifests (hypothesis) -------------------------------------------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(0, 10_000), junk=st.binary(max_size=40), where=st.sampled_from(["end", "cut", "middle"]))
def test_damaged_manifest_resumes_or_refuses(tmp_path_factory, cut, junk, where):
    """Whatever happens to the manifest, resuming either refuses with ResumeError or finishes
    with exactly the parts of an uninterrupted run; nothing else escapes."""
    base = tmp_path_factory.mktemp("fuzz")
    ref = base / "ref"
    run_to_sink(make_batch, list(range(4)), ref, {"p": 1})
    out = base / "o"
    run_to_sink(make_batch, list(range(4)), out, {"p": 1})
    m = out / MANIFEST
    raw = m.read_bytes()
    if where == "end":
        raw = raw + junk
    elif where == "cut":
        raw = raw[: cut % (len(raw) + 1)]
    else:
        k = cut % (len(raw) + 1)
        raw = raw[:k] + junk + raw[k:]
    m.write_bytes(raw)
    try:
        sink = run_to_sink(make_batch, list(range(4)), out, {"p": 1}, resume=True)
    except ResumeError:
        return
    assert _parts(out) == _parts(ref)
    assert len(sink.files) == 4


def test_record_pointing_at_another_batch_file_is_rejected(tmp_path):
    out = tmp_path / "o"
    run_to_sink(make_batch, list(range(3)), out, {"p": 1})
    m = out / MANIFEST
    lines = m.read_text().splitlines()
    rec = json.loads(lines[3])  # batch 2
    rec["batch"] = 25
    lines[3] = json.dumps(rec)
    m.write_text("\n".join(lines) + "\n")
    CALLS.clear()
    sink = run_to_sink(make_batch, list(range(3)), out, {"p": 1}, resume=True)
    assert CALLS == [2]
    assert [f.name for f in sink.files] == [f"part-{i:06d}.parquet" for i in range(3)]
    assert all(f.exists() for f in sink.files)


def test_write_table_atomic_bad_targets(tmp_path):
    with pytest.raises(InputError, match="output directory does not exist"):
        write_table_atomic(tmp_path / "nope" / "x.parquet", pa.table({"a": [1]}))
    (tmp_path / "d.parquet").mkdir()
    with pytest.raises(OutputExistsError, match="is a directory"):
        write_table_atomic(tmp_path / "d.parquet", pa.table({"a": [1]}))
