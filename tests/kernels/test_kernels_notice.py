"""The first-call notice: an INFO line when a polgen kernel compiles for longer than the delay
(numba fires no compile event for a kernel loaded from the cache)."""

from __future__ import annotations

import logging
import time

from polgen.kernels import _notice
from run_helpers import fresh_polgen_kernel

_fresh_kernel = fresh_polgen_kernel


def test_notice_logged_once_when_compiling(caplog, monkeypatch):
    import numpy as np

    monkeypatch.setitem(_notice._state, "delay", 0.0)
    monkeypatch.setitem(_notice._state, "said", False)
    _notice.install(0.0)
    starts, ends = [], []
    remove = _notice.add_listener(starts.append, lambda name, dt: ends.append((name, dt)))
    try:
        with caplog.at_level(logging.INFO, logger="polgen.kernels"):
            _fresh_kernel()(np.ones(3))
            time.sleep(0.2)
            _fresh_kernel()(np.ones(3))
            time.sleep(0.2)
    finally:
        remove()
    said = [r for r in caplog.records if r.getMessage() == _notice.MESSAGE]
    assert len(said) == 1
    assert len(starts) == 2 and all(s.startswith("polgen.kernels._fake.") for s in starts)
    assert [n for n, _ in ends] == starts and all(dt > 0 for _, dt in ends)
