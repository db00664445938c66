"""The model's own fault catalogue: validated by `fdedge convert --catalogue`, written to the
manifest, and exposed by the runtime's loader (FD-REST's when a manifest has none)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.fdrest import CATALOGUE, parse_catalogue


def own_catalogue() -> list[dict[str, str]]:
    return [{"category": f"Pump fault {i}", "observed": f"Symptom {i} is seen.", "root_causes": f"Cause {i}."}
            for i in range(8)]


# ---------------------------------------------------------------- validation (edge/fdrest.py)

def test_parse_fills_in_fault_names_and_accepts_fdrest_catalogue() -> None:
    parsed = parse_catalogue(own_catalogue())
    assert [e["fault"] for e in parsed] == [f"fault{i}" for i in range(8)]
    assert parse_catalogue([dict(c) for c in CATALOGUE]) == CATALOGUE


@pytest.mark.parametrize("change, message", [
    (lambda c: c[:7], "one entry per fault (8"),
    (lambda c: {"entries": c}, "must be a JSON list"),
    (lambda c: [*c[:3], "text", *c[4:]], "entry 3 (fault3) must be an object"),
    (lambda c: [{**c[0], "root_cause": "x"}, *c[1:]], "unknown keys ['root_cause']"),
    (lambda c: [{**c[0], "fault": "fault1"}, *c[1:]], "entry 0 (fault0) says fault 'fault1'"),
    (lambda c: [*c[:5], {**c[5], "observed": "  "}, *c[6:]], "entry 5 (fault5): 'observed' must be a non-empty"),
    (lambda c: [*c[:2], {**c[2], "category": 7}, *c[3:]], "'category' must be a non-empty string"),
    (lambda c: [{**c[0], "root_causes": "x" * 1001}, *c[1:]], "1001 characters, at most 1000"),
])
def test_parse_refuses_with_a_reason(change: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_catalogue(change(own_catalogue()))
    assert message in str(caught.value)


# ---------------------------------------------------------------- the runtime's loader

@pytest.fixture
def model_copy(linear_model: tuple[Path, Any], tmp_path: Path) -> Path:
    return Path(shutil.copytree(linear_model[0], tmp_path / "model"))


def rewrite_manifest(directory: Path, **changes: Any) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    for key, value in changes.items():
        if value is None:
            manifest.pop(key, None)
        else:
            manifest[key] = value
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_runtime_exposes_the_manifest_catalogue(model_copy: Path) -> None:
    from edge.scoring.model import load

    rewrite_manifest(model_copy, catalogue=own_catalogue())
    model = load(model_copy)
    assert [e["category"] for e in model.catalogue] == [f"Pump fault {i}" for i in range(8)]
    assert model.catalogue[3]["fault"] == "fault3"


def test_runtime_ignores_keys_it_does_not_know(model_copy: Path) -> None:
    from edge.scoring.model import load

    rewrite_manifest(model_copy, catalogue=[{**e, "severity": "high"} for e in own_catalogue()])
    assert load(model_copy).catalogue == parse_catalogue(own_catalogue())


def test_runtime_without_catalogue_uses_fdrest(model_copy: Path) -> None:
    from edge.scoring.model import load

    rewrite_manifest(model_copy, catalogue=None)
    assert load(model_copy).catalogue == CATALOGUE


def test_runtime_refuses_a_broken_catalogue(model_copy: Path) -> None:
    from edge.errors import StartupError
    from edge.scoring.model import load

    rewrite_manifest(model_copy, catalogue=own_catalogue()[:4])
    with pytest.raises(StartupError, match="catalogue must have one entry per fault"):
        load(model_copy)


def test_api_model_and_alarms_use_the_model_catalogue(model_copy: Path, make_client: Any) -> None:
    rewrite_manifest(model_copy, catalogue=own_catalogue())
    client = make_client(model_dir=model_copy)
    info = client.get("/api/model").json()
    assert [e["category"] for e in info["catalogue"]] == [f"Pump fault {i}" for i in range(8)]
    assert client.app.state.appliance.alarms.categories["fault2"] == "Pump fault 2"


def test_api_model_without_catalogue_answers_fdrest(model_copy: Path, make_client: Any) -> None:
    rewrite_manifest(model_copy, catalogue=None)
    info = make_client(model_dir=model_copy).get("/api/model").json()
    assert info["catalogue"] == [dict(c) for c in CATALOGUE]


# ---------------------------------------------------------------- fdedge convert --catalogue

@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-layer model with identity scalers, in FD-REST's file layout."""
    pytest.importorskip("tensorflow")
    import joblib
    from sklearn.preprocessing import FunctionTransformer

    from convert.keras_model import import_tensorflow
    from edge.fdrest import FEATURES

    _, keras = import_tensorflow()
    directory = tmp_path_factory.mktemp("catalogue-sources")
    keras.Sequential([keras.Input((35,)), keras.layers.Dense(8)]).save(directory / "dnn_model.keras")
    features = FunctionTransformer().fit(np.zeros((2, 35)))
    features.feature_names_in_ = np.array(FEATURES, dtype=object)
    joblib.dump(features, directory / "feature_scaler.pkl")
    joblib.dump(FunctionTransformer().fit(np.zeros((2, 8))), directory / "target_scaler.pkl")
    return directory


def convert(*args: str | Path) -> int:
    from convert.cli import main

    return main([str(a) for a in args])


@pytest.mark.build
def test_catalogue_flows_into_manifest_and_runtime(sources: Path, tmp_path: Path) -> None:
    from edge.scoring.model import load

    (tmp_path / "mine.json").write_text(json.dumps(own_catalogue()))
    out = tmp_path / "out"
    assert convert("--model-dir", sources, "--out", out, "--catalogue", tmp_path / "mine.json",
                   "--optimize", "none") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["catalogue"] == [dict(e) for e in parse_catalogue(own_catalogue())]
    assert manifest["sources"]["catalogue.json"] is not None
    assert load(out).catalogue[7]["category"] == "Pump fault 7"


@pytest.mark.build
def test_catalogue_in_model_dir_is_the_default_and_tracked(sources: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    d = Path(shutil.copytree(sources, tmp_path / "m"))
    (d / "catalogue.json").write_text(json.dumps({"catalogue": own_catalogue()}))  # a manifest's shape works too
    assert convert("--model-dir", d, "--if-stale", "--optimize", "none") == 0
    assert json.loads((d / "manifest.json").read_text())["catalogue"][0]["category"] == "Pump fault 0"
    assert convert("--model-dir", d, "--if-stale") == 0 and "up to date" in capsys.readouterr().out
    changed = own_catalogue()
    changed[0]["category"] = "Renamed"
    (d / "catalogue.json").write_text(json.dumps(changed))
    assert convert("--model-dir", d, "--if-stale", "--optimize", "none") == 0
    assert "changed: catalogue.json" in capsys.readouterr().out
    assert json.loads((d / "manifest.json").read_text())["catalogue"][0]["category"] == "Renamed"


@pytest.mark.build
@pytest.mark.parametrize("text, message", [
    ("{not json", "is not JSON"),
    (json.dumps(own_catalogue()[:7]), "one entry per fault"),
    (json.dumps([{**own_catalogue()[0], "cause": "x"}, *own_catalogue()[1:]]), "unknown keys ['cause']"),
])
def test_bad_catalogue_is_one_line_before_any_conversion(sources: Path, tmp_path: Path, text: str, message: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.json").write_text(text)
    rc = convert("--model-dir", sources, "--out", tmp_path / "out", "--catalogue", tmp_path / "bad.json")
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("fdedge convert: error: catalogue ")
    assert message in err[0] and not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.build
def test_missing_catalogue_file(sources: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert convert("--model-dir", sources, "--out", tmp_path, "--catalogue", tmp_path / "nope.json") == 2
    assert "catalogue not found" in capsys.readouterr().err
