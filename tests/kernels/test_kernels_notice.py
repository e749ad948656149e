"""The first-call notice: an INFO line when a polgen kernel compiles for longer than the delay
(numba fires no compile event for a kernel loaded from the cache)."""

from __future__ import annotations

import logging
import time

import numba

from polgen.kernels import _notice


def _fresh_kernel():
    def polgen_fake_kernel(x):
        s = 0.0
        for i in range(x.shape[0]):
            s += x[i] * x[i]
        return s

    polgen_fake_kernel.__module__ = "polgen.kernels._fake"  # the notice acts on polgen kernels only
    return numba.njit(polgen_fake_kernel)


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
