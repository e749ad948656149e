"""Shared machinery of the hostile-input tests: a per-module case counter and ``attempt``."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import HealthCheck, settings

from polgen.errors import PolgenError

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Cases(dict):
    """Counts of hostile cases tried in one test module: n, typed_error, result."""

    def __init__(self) -> None:
        super().__init__(n=0)

    def attempt(self, fn, *args, **kwargs):
        """(result, None), or (None, PolgenError); any other exception fails the test."""
        self["n"] += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = fn(*args, **kwargs)
        except PolgenError as exc:
            assert str(exc), "a typed error must carry a message"
            self["typed_error"] = self.get("typed_error", 0) + 1
            return None, exc
        self["result"] = self.get("result", 0) + 1
        return res, None

    def fixture(self):
        """A module-scoped autouse fixture that reports (and caches) the counts at module end."""
        cases = self

        @pytest.fixture(scope="module", autouse=True)
        def _count_cases(request):
            yield
            name = request.module.__name__.rsplit(".", 1)[-1]
            cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
            if cache is not None:
                cache.set(f"polgen/hostile/{name}", dict(cases))
            tr = request.config.pluginmanager.get_plugin("terminalreporter")
            cm = request.config.pluginmanager.get_plugin("capturemanager")
            if tr is not None and cm is not None:
                with cm.global_and_fixture_disabled():
                    tr.write_line(
                        f"{name}: {cases['n']} hostile cases tried ({cases.get('typed_error', 0)} "
                        f"typed errors, {cases.get('result', 0)} checked results)"
                    )

        return _count_cases
