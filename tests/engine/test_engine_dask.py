"""The same sink job on the default executor and on a 2-process Dask LocalCluster: same bytes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from polgen.engine import plan_batches, run_tasks, run_to_sink
from polgen.errors import EngineError, SchemaError

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.dask


def dask_batch(spec: tuple[int, int]) -> pa.Table:
    start, stop = spec
    rng = np.random.default_rng([17, start])
    idx = np.arange(start, stop)
    return pa.table(
        {
            "i": idx,
            "beta": rng.standard_normal(stop - start),
            "p": rng.uniform(size=stop - start),
            "snp": [f"rs{k}" for k in idx],
        }
    )


def dask_fail(i: int) -> int:
    if i == 1:
        raise ZeroDivisionError("worker side")
    if i == 2:
        raise SchemaError("bad column", column="SE")
    return i


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0", silence_logs=40
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def test_sink_job_identical_on_dask(tmp_path, client):
    specs = plan_batches(3000, row_bytes=32, budget_bytes=32 * 400)
    params = {"job": "dask-identity", "n": 3000}
    local = run_to_sink(dask_batch, specs, tmp_path / "local", params)
    remote = run_to_sink(dask_batch, specs, tmp_path / "dask", params, executor=client.get_executor())
    assert len(local.files) == len(remote.files) == len(specs) == 8
    for a, b in zip(local.files, remote.files):
        assert a.name == b.name
        assert a.read_bytes() == b.read_bytes()
    assert remote.scan().collect()["i"].to_list() == list(range(3000))
    # the parts were written by the worker processes, not by this one
    pids = client.run(lambda: __import__("os").getpid())
    assert len(set(pids.values())) == 2


def test_dask_order_failures_and_resume(tmp_path, client):
    ex = client.get_executor()
    assert list(run_tasks(dask_fail, [0, 3, 4, 5, 6], executor=ex, max_in_flight=2)) == [0, 3, 4, 5, 6]
    with pytest.raises(EngineError, match="batch 1 failed: ZeroDivisionError"):
        list(run_tasks(dask_fail, range(4), executor=ex))
    with pytest.raises(SchemaError, match="bad column"):
        list(run_tasks(dask_fail, [0, 2], executor=ex))
    specs = plan_batches(900, 8, 8 * 300)
    params = {"job": "dask-resume"}
    first = run_to_sink(dask_batch, specs[:2], tmp_path / "o", params, executor=ex, finalize=False)
    assert len(first.files) == 2
    # resuming on Dask an output started elsewhere: the same job re-submitted must really run
    done = run_to_sink(dask_batch, specs, tmp_path / "o", params, executor=ex, resume=True)
    ref = run_to_sink(dask_batch, specs, tmp_path / "ref", params)
    assert [f.read_bytes() for f in done.files] == [f.read_bytes() for f in ref.files]


def test_scheduler_address_string(client, monkeypatch):
    address = client.scheduler.address
    out = list(run_tasks(dask_fail, [0, 3, 4], executor=address))
    assert out == [0, 3, 4]
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    assert list(run_tasks(dask_fail, [5, 6], executor="dask")) == [5, 6]
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(EngineError, match="cannot connect"):
            list(run_tasks(dask_fail, [0], executor="tcp://127.0.0.1:1"))
