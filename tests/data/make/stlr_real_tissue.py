"""Make tests/data/stlr/visium_mouse_brain_counts.h5ad: real Visium counts for the stlr tests.

Source: squidpy 1.8.2's source distribution on PyPI (``pip download squidpy==1.8.2 --no-deps
--no-binary :all:``), file ``squidpy-1.8.2/tests/_data/test_data.h5ad`` (BSD-3-Clause, Theis Lab /
scverse): 49 in-tissue spots x 1,999 highly variable genes of 10x Genomics' public Visium data set
``V1_Adult_Mouse_Brain`` (``uns["spatial"]``), stored log-normalised (``log1p(normalize_total)``).

Raw counts are recovered exactly: normalize_total scales each spot by one factor, so in every spot
``expm1(X)`` is (integer count) x (spot factor); dividing by the spot's smallest non-zero value
gives integers (relative distance from an integer < 1e-5, float32 storage) - the counts, under the
assumption that each spot's smallest count among these genes is 1 (every spot has hundreds of
genes at 1 in 10x data).  The script checks the integrality and writes counts as int32 CSR with
``obsm["spatial"]`` (full-resolution pixel coordinates) and nothing else (no clusters: the tests
cluster with :func:`polgen.stlr.prepare`).

    python tests/data/make/stlr_real_tissue.py /path/to/squidpy-1.8.2.tar.gz
"""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

OUT = Path(__file__).resolve().parents[1] / "stlr" / "visium_mouse_brain_counts.h5ad"
MEMBER = "squidpy-1.8.2/tests/_data/test_data.h5ad"


def counts_from_lognorm(X: np.ndarray) -> np.ndarray:
    E = np.expm1(X.astype(np.float64))
    out = np.zeros(E.shape, dtype=np.int32)
    for i in range(E.shape[0]):
        row = E[i]
        nz = row > 0
        q = row[nz] / row[nz].min()
        err = (np.abs(q - np.round(q)) / q).max()  # float32 storage: relative error ~1e-6
        if err > 1e-5:
            raise SystemExit(f"spot {i}: expm1(X) / min is not integral (max relative error {err:.2e})")
        out[i, nz] = np.round(q).astype(np.int32)
    return out


def main(sdist: str) -> None:
    with tarfile.open(sdist) as tf:
        raw = tf.extractfile(MEMBER).read()  # type: ignore[union-attr]
    print(f"{MEMBER}: {len(raw)} B, sha256 {hashlib.sha256(raw).hexdigest()}")
    src = ad.read_h5ad(io.BytesIO(raw))
    X = src.X.toarray() if sp.issparse(src.X) else np.asarray(src.X)
    C = counts_from_lognorm(X)
    out = ad.AnnData(
        X=sp.csr_matrix(C),
        obs={"in_tissue": src.obs["in_tissue"].to_numpy()},
        var={"gene_ids": src.var["gene_ids"].to_numpy()},
    )
    out.obs_names = list(src.obs_names)
    out.var_names = list(src.var_names)
    out.obsm["spatial"] = np.asarray(src.obsm["spatial"], dtype=np.float64)
    out.uns["source"] = "squidpy 1.8.2 sdist tests/_data/test_data.h5ad (10x Visium V1_Adult_Mouse_Brain)"
    OUT.parent.mkdir(parents=True, exist_ok=True)
    out.write_h5ad(OUT, compression="gzip")
    print(f"wrote {OUT}: {out.n_obs} spots x {out.n_vars} genes, {int(C.sum())} counts, {OUT.stat().st_size} B")


if __name__ == "__main__":
    main(sys.argv[1])
