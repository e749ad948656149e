"""polgen warmup in two processes: the steps are split by cost, steps sharing kernels (or state)
stay in one process, and every step is reported once, whichever process ran it."""

from __future__ import annotations

from polgen.warmup import COST, DEFAULT_COST, FAMILY, NEEDS, _partition, warmup

NAMES = [
    "gsem.ldsc",
    "gsem.commonfactor",
    "gsem.user_gwas",
    "gsem.user_gwas (ML)",
    "gsem.user_gwas (fix_measurement=False)",
    "gsem.commonfactor_gwas",
    "gsem.hdl",
    "gsem.sim_ldsc",
    "lfmm.fit",
    "lfmm.test",
    "stlr.fit",
    "stlr.perturb",
]


def _cost(names):
    return sum(COST.get(n, DEFAULT_COST) for n in names)


def test_partition_keeps_families_and_needs_together_and_balances():
    groups = _partition(NAMES, 2)
    assert len(groups) == 2
    assert sorted(n for g in groups for n in g) == sorted(NAMES)
    where = {n: i for i, g in enumerate(groups) for n in g}
    for n in NAMES:
        if n in NEEDS:
            assert where[n] == where[NEEDS[n]], n
        for m in NAMES:
            if FAMILY.get(n) is not None and FAMILY.get(n) == FAMILY.get(m):
                assert where[n] == where[m], (n, m)
    for g in groups:  # each group keeps the given order
        assert g == [n for n in NAMES if n in g]
    # greedy by cost: the heavier group is not more than the largest unit heavier than the lighter
    a, b = sorted(_cost(g) for g in groups)
    units = [["gsem.user_gwas (fix_measurement=False)", "gsem.commonfactor_gwas"], ["gsem.hdl"]]
    assert b - a <= max(_cost(u) for u in units)
    assert _partition(NAMES, 1) == [NAMES]


def test_two_workers_report_every_step_once():
    heard = []
    steps = ["gsem.commonfactor", "gsem.usermodel"]
    timings = warmup(("gsem",), progress=False, only=steps, workers=2, on_step=lambda n, dt: heard.append(n))
    assert sorted(heard) == sorted(steps)
    assert set(timings) == {*steps, "total"} and all(timings[s] >= 0.0 for s in steps)
