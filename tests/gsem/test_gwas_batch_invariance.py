"""Issue 18: each GWAS configuration gives the same rows whatever the batch size and executor
(the per-SNP fits are independent; the RAM fit runs batches of >= 128 SNPs on threads, the
multi-start on the subset of SNPs that needs it, commonfactor its starts per chunk)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from polars.testing import assert_frame_equal

from polgen.gsem.gwas import commonfactor_gwas, user_gwas
from tests.gsem.test_gsem_gwas_stream import MODEL, _inputs


@pytest.mark.parametrize(
    "kind",
    ["fix_measurement=False", "ML", "commonfactor"],
)
def test_same_rows_for_any_batch_size_and_executor(tmp_path, kind):
    path, cov = _inputs(tmp_path, n=400)

    def run(batch_size, executor=None):
        if kind == "commonfactor":
            return commonfactor_gwas(str(path), str(cov), batch_size=batch_size, executor=executor, progress=False)
        kw = {"fix_measurement": False} if kind == "fix_measurement=False" else {"estimation": "ML"}
        return user_gwas(str(path), str(cov), MODEL, batch_size=batch_size, executor=executor, progress=False, **kw)

    ref = run(400)  # one batch: the RAM fit on threads over chunks
    assert ref.height >= 400 and ref["converged"].mean() > 0.7  # (the Heywood covstruc: ridges)
    assert_frame_equal(run(37), ref)  # batches under the threads' threshold: serial kernels
    with ThreadPoolExecutor(max_workers=2) as ex:
        assert_frame_equal(run(150, ex), ref)
