import json

import numpy as np
import pytest

from conftest import gsem_fixture
from polgen.errors import InputError, SchemaError
from polgen.gsem.covstruc import CovStruc, as_covstruc


def _fixture():
    d = json.loads(gsem_fixture("gwas_per_snp.json").read_text())
    return d


def test_mapping_roundtrip_json_and_parquet(tmp_path):
    d = _fixture()
    cs = as_covstruc({"S": d["s"], "V": d["v"], "I": d["i_mat"], "trait_names": d["trait_names"]})
    assert cs.k == 3 and cs.trait_names == d["trait_names"]
    np.testing.assert_array_equal(cs.S, np.array(d["s"]))
    for name in ("cs.json", "cs.parquet"):
        back = CovStruc.load(cs.save(tmp_path / name))
        np.testing.assert_array_equal(back.S, cs.S)
        np.testing.assert_array_equal(back.V, cs.V)
        np.testing.assert_array_equal(back.I, cs.I)
        assert back.trait_names == cs.trait_names
        assert as_covstruc(tmp_path / name).trait_names == cs.trait_names


def test_r_style_names_are_accepted():
    d = _fixture()
    cs = as_covstruc({"S": d["s"], "V": d["v"], "I": d["i_mat"], "trait.names": ["A", "B", "C"], "m": [1173569]})
    assert cs.trait_names == ["A", "B", "C"] and cs.m == 1173569.0


def test_bad_covstruc_errors():
    with pytest.raises(SchemaError, match="lacks V"):
        as_covstruc({"S": np.eye(2)})
    with pytest.raises(InputError, match="expected 3x3"):
        as_covstruc({"S": np.eye(2), "V": np.eye(2)})
    with pytest.raises(InputError, match="NaN"):
        as_covstruc({"S": [[np.nan, 0], [0, 1]], "V": np.eye(3)})
    with pytest.raises(InputError, match="trait names"):
        as_covstruc({"S": np.eye(2), "V": np.eye(3), "trait_names": ["a"]})
    with pytest.raises(InputError, match="not found"):
        as_covstruc("/nonexistent/cs.json")


def test_errors_pickle_with_their_context():
    import pickle

    from polgen.errors import BedFormatError

    e = BedFormatError("bad magic", path="/x.bed", column="magic", row=3, expected="6c1b01")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is BedFormatError
    assert (back.path, back.column, back.row, back.context) == ("/x.bed", "magic", 3, {"expected": "6c1b01"})
    assert str(back) == str(e)
