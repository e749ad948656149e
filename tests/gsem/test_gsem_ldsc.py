"""ldsc(): against an independent dense numpy transcription of R GenomicSEM's algorithm, an explicit
leave-one-block-out loop, R's own block boundaries, the R fixtures' liability/standardisation
relations, and h2 / genetic-covariance recovery on data simulated from the LDSC model."""

from __future__ import annotations

import gzip
import json
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.stats import norm

from conftest import gsem_fixture, r_reference
from polgen.errors import InputError, SchemaError
from polgen.gsem.covstruc import CovStruc
from polgen.gsem.ldsc import ldsc, ldsc_table, liability_factor, liability_scale, standardise
from polgen.kernels.ldsc import block_bounds, regress


# ---------------------------------------------------------------------------------------------
# synthetic data from the LDSC model
# ---------------------------------------------------------------------------------------------
def write_ld(d: Path, snps, chrom, bp, l2, m_per_snp=10.0, col="L2"):
    d.mkdir(parents=True, exist_ok=True)
    for c in np.unique(chrom):
        m = chrom == c
        df = pl.DataFrame({"CHR": chrom[m], "SNP": snps[m], "BP": bp[m], "CM": 0.0, "MAF": 0.25, col: l2[m]})
        with gzip.open(d / f"{c}.l2.ldscore.gz", "wb") as fh:
            fh.write(df.write_csv(separator="\t", float_precision=None).encode())
        (d / f"{c}.l2.M_5_50").write_text(f"{m_per_snp * m.sum():.1f}\n")


def simulate(
    d: Path,
    n=20_000,
    chroms=2,
    h2=(0.3, 0.2, 0.4),
    rg=((1, 0.5, 0.3), (0.5, 1, 0.2), (0.3, 0.2, 1)),
    N=(50_000, 40_000, 60_000),
    icov=((1, 0.1, 0), (0.1, 1, 0), (0, 0, 1)),
    m_per_snp=10.0,
    seed=1,
):
    """z_j ~ N(0, I + l_j sqrt(N N') Sg / M): LDSC's model with independent SNPs."""
    rng = np.random.default_rng(seed)
    k = len(h2)
    Sg = np.asarray(rg) * np.sqrt(np.outer(h2, h2))
    snps = np.array([f"rs{i}" for i in range(n)])
    chrom = np.repeat(np.arange(1, chroms + 1), n // chroms)
    bp = np.tile(np.arange(1, n // chroms + 1) * 10, chroms)
    l2 = rng.gamma(2.0, 30.0, n) + 0.5
    M = m_per_snp * n
    write_ld(d / "ld", snps, chrom, bp, l2, m_per_snp)
    Nv = np.asarray(N, float)
    B = np.sqrt(np.outer(Nv, Nv)) * Sg / M
    z = rng.standard_normal((n, k)) @ np.linalg.cholesky(np.asarray(icov)).T + np.sqrt(l2)[:, None] * (
        rng.standard_normal((n, k)) @ np.linalg.cholesky(B).T
    )
    a1 = rng.choice(list("ACGT"), n)
    a2 = np.array([{"A": "G", "C": "T", "G": "A", "T": "C"}[x] for x in a1])
    pl.DataFrame({"SNP": snps, "A1": a1, "A2": a2}).write_csv(d / "hm3.snplist", separator="\t")
    files = []
    for t in range(k):
        flip = rng.random(n) < 0.3
        maf = rng.uniform(0.05, 0.5, n)
        se = 1 / np.sqrt(2 * maf * (1 - maf) * Nv[t])
        beta = np.where(flip, -1, 1) * z[:, t] * se
        df = pl.DataFrame(
            {
                "SNP": snps,
                "A1": np.where(flip, a2, a1),
                "A2": np.where(flip, a1, a2),
                "BETA": beta,
                "SE": se,
                "P": 2 * norm.sf(np.abs(z[:, t])),
                "N": Nv[t],
                "MAF": np.where(flip, 1 - maf, maf),
            }
        )
        f = d / f"T{t + 1}.tsv"
        df.write_csv(f, separator="\t", float_precision=None)
        files.append(f)
    return dict(files=files, hm3=d / "hm3.snplist", ld=d / "ld", Sg=Sg, I=np.asarray(icov), M=M)


# ---------------------------------------------------------------------------------------------
# independent reference: R's ldsc() written out densely with plain Python merges
# ---------------------------------------------------------------------------------------------
def r_ldsc_reference(traits, ld, M, nb, chisq_max=None, wld=None):
    """traits: list of dict(SNP, N, Z, A1 arrays); ld: dict SNP -> (CHR, BP, L2);
    wld: dict SNP -> wLD (default: L2)."""
    wmap = wld if wld is not None else {s: v[2] for s, v in ld.items()}
    all_y = []
    for t in traits:
        rows = [
            (t["SNP"][i], t["N"][i], t["Z"][i], t["A1"][i], wmap[t["SNP"][i]], *ld[t["SNP"][i]])
            for i in range(len(t["SNP"]))
            if t["SNP"][i] in ld and t["SNP"][i] in wmap
        ]
        rows.sort(key=lambda r: (r[5], r[6]))  # stable, as R's order()
        cmax = chisq_max if chisq_max is not None else max(0.001 * max(r[1] for r in rows), 80)
        all_y.append([r for r in rows if r[2] ** 2 <= cmax])

    def wts(chi, l2, wl, N):
        agg = min(max(M * (chi.mean() - 1) / np.mean(l2 * N), 0), 1)
        het = 1 / (2 * (1 + agg * N / M * np.maximum(l2, 1)) ** 2)
        return np.sqrt(het / np.maximum(wl, 1))

    def jack(l2, w, y):
        n = len(y)
        frm = np.floor(np.linspace(1, n, nb + 1)).astype(int)
        to = np.r_[frm[1:nb] - 1, n]
        X = np.c_[l2 * w, w]
        Y = y * w
        xtx_b = [X[frm[i] - 1 : to[i]].T @ X[frm[i] - 1 : to[i]] for i in range(nb)]
        xty_b = [X[frm[i] - 1 : to[i]].T @ Y[frm[i] - 1 : to[i]] for i in range(nb)]
        xtx, xty = sum(xtx_b), sum(xty_b)
        reg = np.linalg.solve(xtx, xty)
        dele = np.array([np.linalg.solve(xtx - xtx_b[i], xty - xty_b[i]) for i in range(nb)])
        return reg, nb * reg - (nb - 1) * dele

    k = len(traits)
    S = np.zeros((k, k))
    I = np.zeros((k, k))
    hold, Nvec = [], []
    for j in range(k):
        y1 = all_y[j]
        for kk in range(j, k):
            if j == kk:
                N = np.array([r[1] for r in y1])
                chi = np.array([r[2] for r in y1]) ** 2
                l2 = np.array([r[7] for r in y1])
                wl = np.array([r[4] for r in y1])
                w = wts(chi, l2, wl, N)
                w = w / w.sum()
                Nbar = N.mean()
                y = chi
            else:
                m2: dict = {}
                for r in all_y[kk]:
                    m2.setdefault(r[0], []).append(r)
                rows = [(r, b) for r in y1 for b in m2.get(r[0], [])]  # every pairing, as merge()
                z1 = np.array([a[2] if a[3] == b[3] else -a[2] for a, b in rows])
                z2 = np.array([b[2] for a, b in rows])
                N1 = np.array([a[1] for a, b in rows])
                N2 = np.array([b[1] for a, b in rows])
                l2 = np.array([a[7] for a, b in rows])
                wl = np.array([a[4] for a, b in rows])
                w = wts(z1**2, l2, wl, N1) + wts(z2**2, l2, wl, N2)
                w = w / w.sum()
                Nbar = np.sqrt(N1.mean() * N2.mean())
                y = z1 * z2
            reg, pseudo = jack(l2, w, y)
            S[j, kk] = S[kk, j] = reg[0] / Nbar * M
            I[j, kk] = I[kk, j] = reg[1]
            hold.append(pseudo[:, 0])
            Nvec.append(Nbar)
    hold = np.array(hold).T
    Nvec = np.array(Nvec)
    V = np.cov(hold, rowvar=False) / np.outer(Nvec * np.sqrt(nb) / M, Nvec * np.sqrt(nb) / M)
    return S, V, I, Nvec


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    """Three munged traits with partial SNP overlap, allele flips between traits, varying N, Z
    beyond the chi^2 cap, SNPs missing from the LD scores, and separate regression weights."""
    d = tmp_path_factory.mktemp("ldsc_messy")
    rng = np.random.default_rng(7)
    n = 3000
    snps = np.array([f"rs{i}" for i in range(n)])
    chrom = np.repeat([1, 2], n // 2)
    bp = rng.permutation(n) * 7 + 1  # files are not in position order
    l2 = rng.gamma(2.0, 20.0, n) + 0.3
    keep_ld = rng.random(n) > 0.03
    write_ld(d / "ld", snps[keep_ld], chrom[keep_ld], bp[keep_ld], l2[keep_ld], 7.0)
    wl = l2 * rng.uniform(0.5, 1.5, n)
    write_ld(d / "w", snps, chrom, bp, wl, 7.0, col="L2")
    traits = []
    for t in range(3):
        sel = rng.random(n) > 0.1
        z = rng.standard_normal(n) * np.sqrt(1 + 0.02 * l2 * (t + 1))
        z[rng.choice(n, 5, replace=False)] = 12.0  # chi^2 144 > 80
        a1 = np.where(rng.random(n) < 0.2, "G", "A") if t == 1 else np.full(n, "A")
        N = rng.uniform(20_000, 30_000, n).round() if t != 2 else np.full(n, 400_000.0)
        order = rng.permutation(np.flatnonzero(sel))
        df = pl.DataFrame(
            {
                "SNP": snps[order],
                "N": N[order],
                "Z": z[order],
                "A1": a1[order],
                "A2": np.where(a1[order] == "A", "G", "A"),
            }
        )
        path = d / f"t{t}.sumstats.gz"
        with gzip.open(path, "wb") as fh:
            fh.write(df.write_csv(separator="\t", float_precision=None).encode())
        traits.append(path)
    ldmap = {s: (c, b, x) for s, c, b, x, k in zip(snps, chrom, bp, l2, keep_ld) if k}
    return dict(d=d, files=traits, ldmap=ldmap, wmap=dict(zip(snps, wl)), M=7.0 * keep_ld.sum(), Mw=7.0 * n)


def _read_traits(files):
    out = []
    for f in files:
        df = pl.read_csv(f, separator="\t")
        out.append({c: df[c].to_list() for c in ("SNP", "N", "Z", "A1")})
    return out


@pytest.mark.parametrize("nb,chisq_max,sep", [(20, None, False), (37, 30.0, False), (25, None, True)])
def test_ldsc_matches_dense_reference(messy, nb, chisq_max, sep):
    res = ldsc(
        messy["files"],
        messy["d"] / "ld",
        wld=messy["d"] / "w" if sep else None,
        trait_names=["a", "b", "c"],
        n_blocks=nb,
        chisq_max=chisq_max,
        chr=2,
    )
    S, V, I, Nvec = r_ldsc_reference(
        _read_traits(messy["files"]), messy["ldmap"], messy["M"], nb, chisq_max, messy["wmap"] if sep else None
    )
    np.testing.assert_allclose(res.S, S, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(res.V, V, rtol=1e-8, atol=1e-16)
    np.testing.assert_allclose(res.I, I, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.N, Nvec, rtol=1e-12)
    assert res.m == messy["M"] and res.trait_names == ["a", "b", "c"]
    assert res.S_Stand is None
    tab = ldsc_table(res)
    assert tab.height == 6 and tab["se"].to_numpy() @ np.ones(6) > 0


def test_duplicated_snps_pair_up_as_r_merge_does(messy, tmp_path):
    df = pl.read_csv(messy["files"][1], separator="\t")
    dup = pl.concat([df, df.head(40).with_columns(pl.col("Z") * 0.5)])
    path = tmp_path / "dup.sumstats.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(dup.write_csv(separator="\t", float_precision=None).encode())
    files = [messy["files"][0], path, messy["files"][2]]
    res = ldsc(files, messy["d"] / "ld", n_blocks=20, chr=2)
    S, V, I, Nvec = r_ldsc_reference(_read_traits(files), messy["ldmap"], messy["M"], 20)
    np.testing.assert_allclose(res.S, S, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(res.V, V, rtol=1e-8, atol=1e-16)
    np.testing.assert_allclose(res.N, Nvec, rtol=1e-12)


def test_jackknife_kernel_matches_explicit_leave_one_block_out_loop():
    rng = np.random.default_rng(2)
    n, nb = 1013, 17
    l2 = rng.gamma(2, 10, n)
    w = rng.uniform(0.1, 1, n)
    y = 1 + 0.01 * l2 + rng.standard_normal(n)
    reg, delete, pseudo = regress(l2, w, y, nb)
    starts, ends = block_bounds(n, nb)
    X = np.c_[l2 * w, w]
    Y = y * w
    full = np.linalg.lstsq(X, Y, rcond=None)[0]
    np.testing.assert_allclose(reg, full, rtol=1e-10)
    for b in range(nb):
        keep = np.ones(n, bool)
        keep[starts[b] : ends[b]] = False
        np.testing.assert_allclose(delete[b], np.linalg.lstsq(X[keep], Y[keep], rcond=None)[0], rtol=1e-9)
    np.testing.assert_allclose(pseudo, nb * reg - (nb - 1) * delete, rtol=1e-12)
    # blocks tile 0..n exactly
    assert starts[0] == 0 and ends[-1] == n and np.all(starts[1:] == ends[:-1])


def test_block_bounds_match_r_seq():
    """R ldsc's blocks: floor(seq(from=1, to=n, length.out=nb+1)) (stored R output, misc/block_bounds.json)."""
    cases = json.loads(r_reference("misc", "block_bounds.json").read_text())["cases"]
    assert [(c["n"], c["n_blocks"]) for c in cases] == [(1000, 20), (7919, 200), (123457, 200), (999, 37), (4001, 200)]
    for c in cases:
        n, nb, frm = c["n"], c["n_blocks"], np.array(c["from"])
        starts, ends = block_bounds(n, nb)
        np.testing.assert_array_equal(starts + 1, frm[:nb])
        np.testing.assert_array_equal(ends, np.r_[frm[1:nb] - 1, n])


def test_liability_and_standardisation_reproduce_r_fixtures():
    synth = json.loads(gsem_fixture("newer", "ldsc_synth.json").read_text())
    liab = json.loads(gsem_fixture("newer", "ldsc_liability.json").read_text())
    stand = json.loads(gsem_fixture("newer", "ldsc_stand.json").read_text())
    f = [liability_factor(p, k) for p, k in zip(liab["sample_prev"], liab["population_prev"])]
    S, V = liability_scale(np.array(synth["s"]), np.array(synth["v"]), f)
    np.testing.assert_allclose(S, liab["s"], rtol=1e-10)
    np.testing.assert_allclose(V, liab["v"], rtol=1e-10)
    np.testing.assert_allclose(liab["i"], synth["i"], rtol=1e-10)  # intercepts are not rescaled
    Ss, Vs = standardise(np.array(stand["s"]), np.array(stand["v"]))
    np.testing.assert_allclose(Ss, stand["s_stand"], rtol=1e-10)
    np.testing.assert_allclose(Vs, stand["v_stand"], rtol=1e-10, atol=1e-14)
    assert liability_factor(float("nan"), 0.1) == 1.0


def test_ldsc_options_liability_stand_select(messy):
    base = ldsc(messy["files"], messy["d"] / "ld", n_blocks=20, chr=2)
    assert base.trait_names == ["V1", "V2", "V3"]
    lia = ldsc(
        messy["files"],
        messy["d"] / "ld",
        n_blocks=20,
        chr=2,
        sample_prev=[0.5, None, 0.3],
        population_prev=[0.1, None, 0.02],
        stand=True,
    )
    f = [liability_factor(0.5, 0.1), 1.0, liability_factor(0.3, 0.02)]
    S, V = liability_scale(base.S, base.V, f)
    np.testing.assert_allclose(lia.S, S, rtol=1e-12)
    np.testing.assert_allclose(lia.V, V, rtol=1e-12)
    if np.all(np.diag(lia.S) > 0):
        np.testing.assert_allclose(np.diag(lia.S_Stand), 1.0)
    odd = ldsc(messy["files"], messy["d"] / "ld", n_blocks=20, chr=2, select="ODD")
    one = ldsc(messy["files"], messy["d"] / "ld", n_blocks=20, chr=2, select=[1])
    np.testing.assert_allclose(odd.S, one.S, rtol=1e-12)
    assert odd.m == pytest.approx(7.0 * len([v for v in messy["ldmap"].values() if v[0] == 1]))
    with pytest.raises(InputError, match="select"):
        ldsc(messy["files"], messy["d"] / "ld", select="MIDDLE")


def test_ldsc_accepts_frames_dicts_and_round_trips(messy, tmp_path):
    frames = {f"t{i}": pl.read_csv(f, separator="\t").lazy() for i, f in enumerate(messy["files"])}
    a = ldsc(frames, messy["d"] / "ld", n_blocks=20, chr=2)
    b = ldsc(messy["files"], messy["d"] / "ld", n_blocks=20, chr=2, trait_names=list(frames))
    np.testing.assert_array_equal(a.S, b.S)
    np.testing.assert_array_equal(a.V, b.V)
    a.save(tmp_path / "cs.json")
    c = CovStruc.load(tmp_path / "cs.json")
    np.testing.assert_array_equal(c.V, a.V)


def test_ldsc_bad_inputs(messy, tmp_path):
    bad = tmp_path / "noz.tsv"
    bad.write_text("SNP\tN\tA1\tA2\nrs1\t100\tA\tG\n")
    with pytest.raises(SchemaError, match="Z") as ei:
        ldsc([messy["files"][0], bad], messy["d"] / "ld", chr=2)
    assert "noz.tsv" in str(ei.value)
    with pytest.raises(InputError, match="n_blocks"):
        ldsc(messy["files"], messy["d"] / "ld", chr=2, n_blocks=5000)
    with pytest.raises(InputError, match="chromosome 3"):
        ldsc(messy["files"], messy["d"] / "ld", chr=3)
    with pytest.raises(InputError, match="prevalence"):
        ldsc(
            messy["files"],
            messy["d"] / "ld",
            chr=2,
            n_blocks=20,
            sample_prev=[0.5, 0.5, 0.5],
            population_prev=[1.5, 0.1, 0.1],
        )
    # a sample prevalence out of range is refused even without a population prevalence
    with pytest.raises(InputError, match="sample_prev: a prevalence"):
        ldsc(messy["files"], messy["d"] / "ld", chr=2, n_blocks=20, sample_prev=[1.5, None, None])
    with pytest.raises(InputError, match="chr .* at least 1"):
        ldsc(messy["files"], messy["d"] / "ld", chr=0)
    with pytest.raises(InputError, match="select must name chromosomes"):
        ldsc(messy["files"], messy["d"] / "ld", chr=2, select=[0])
    with pytest.raises(InputError, match="chisq_max"):
        ldsc(messy["files"], messy["d"] / "ld", chr=2, chisq_max=-3.0)


def test_munge_then_ldsc_recovers_simulated_h2_and_genetic_covariance(tmp_path):
    from polgen.gsem.munge import munge

    sim = simulate(tmp_path, n=40_000)
    munged, drops = munge(sim["files"], sim["hm3"], trait_names=["A", "B", "C"])
    assert drops["n_dropped"].sum() == 0
    res = ldsc(munged, sim["ld"], chr=2, n_blocks=100, stand=True)
    se = np.zeros((3, 3))
    se[np.tril_indices(3)[1], np.tril_indices(3)[0]] = np.sqrt(np.diag(res.V))  # vech order
    se = se + se.T - np.diag(np.diag(se))
    err = np.abs(res.S - sim["Sg"]) / se
    assert np.all(err < 3.5), (res.S, sim["Sg"], se)
    tab = ldsc_table(res)
    idx = {"A": 0, "B": 1, "C": 2}
    for r in tab.iter_rows(named=True):
        truth = sim["I"][idx[r["trait1"]], idx[r["trait2"]]]
        assert abs(r["intercept"] - truth) < 3.5 * r["intercept_se"], r
    rg = sim["Sg"] / np.sqrt(np.outer(np.diag(sim["Sg"]), np.diag(sim["Sg"])))
    np.testing.assert_allclose(res.S_Stand, rg, atol=0.15)


_PORT = Path("/tmp/genomicsem-ref/bin/python")


@pytest.mark.skipif(not _PORT.exists(), reason="Rust GenomicSEM port not installed at /tmp/genomicsem-ref")
def test_heritabilities_match_the_rust_port(messy):
    """The port reproduces R's h2 regressions (its cross-trait weighting differs from R, so only
    the diagonal is compared): S, I diagonals and Nbar agree to rounding."""
    script = (
        "import json, sys, genomicsem as gs\n"
        "c = json.loads(sys.argv[1])\n"
        "r = gs.ldsc(traits=c['t'], sample_prev=[None]*3, population_prev=[None]*3, ld=c['ld'], wld=c['ld'],"
        " chr=2, n_blocks=20, parallel=False)\n"
        "print(json.dumps({'s': [list(map(float, x)) for x in r.s], 'i': [list(map(float, x)) for x in r.i_mat],"
        " 'n': list(map(float, r.n)), 'm': float(r.m_total)}))\n"
    )
    cfg = json.dumps({"t": [str(f) for f in messy["files"]], "ld": str(messy["d"] / "ld") + "/"})
    out = subprocess.run([str(_PORT), "-c", script, cfg], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    port = json.loads(out.stdout.strip().splitlines()[-1])
    res = ldsc(messy["files"], messy["d"] / "ld", n_blocks=20, chr=2)
    np.testing.assert_allclose(np.diag(res.S), np.diag(port["s"]), rtol=1e-10)
    np.testing.assert_allclose(np.diag(res.I), np.diag(port["i"]), rtol=1e-10)
    np.testing.assert_allclose(res.N, port["n"], rtol=1e-12)
    assert res.m == port["m"]


def test_r_merge_order_with_duplicated_keys_matches_r():
    """merge(l, r, by = "SNP", sort = FALSE)'s row order with duplicated keys (stored R output,
    misc/merge_order.json: keys drawn with numpy's default_rng(4), v / w the row numbers)."""
    from polgen.gsem.ldsc import _r_merge

    ref = json.loads(r_reference("misc", "merge_order.json").read_text())
    left = pl.DataFrame({"SNP": [f"k{i}" for i in ref["left_keys"]], "v": np.arange(len(ref["left_keys"]))})
    right = pl.DataFrame({"SNP": [f"k{i}" for i in ref["right_keys"]], "w": np.arange(len(ref["right_keys"]))})
    got = _r_merge(left, right)
    assert got["v"].to_list() == ref["v"] and got["w"].to_list() == ref["w"]
