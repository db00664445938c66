"""`fdedge train` end to end on a tiny network: sources in FD-REST's format, seeded,
converted with passing parity, and benchmarked into the model card."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from edge.fdrest import FEATURES

TINY = ["--rows", "3000", "--epochs", "2", "--width", "32", "--no-bench"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    pytest.importorskip("tensorflow")
    pytest.importorskip("simulator.dataset")
    from convert.train import main

    directory = tmp_path_factory.mktemp("tiny")
    started = time.perf_counter()
    assert main(["--model-dir", str(directory), *TINY]) == 0
    return directory, time.perf_counter() - started


@pytest.mark.build
def test_tiny_training_converts_with_parity(tiny: tuple[Path, float]) -> None:
    directory, seconds = tiny
    assert seconds < 30, f"tiny training + conversion took {seconds:.1f} s"
    for name in ("dnn_model.keras", "feature_scaler.pkl", "target_scaler.pkl", "model.onnx", "scalers.npz",
                 "manifest.json", "MODEL_CARD.md", "training.json"):
        assert (directory / name).is_file(), name
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["parity"]["relative_error"] <= manifest["parity"]["tolerance"]
    assert manifest["scalers_kind"] == {"features": "StandardScaler", "targets": "MinMaxScaler"}
    card = (directory / "MODEL_CARD.md").read_text()
    assert card.index("## Training") < card.index("## Conversion")
    assert all(f"| fault{i} |" in card for i in range(8))


@pytest.mark.build
def test_sources_are_saved_as_fdrest_saves_them(tiny: tuple[Path, float]) -> None:
    import joblib
    import keras
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    directory, _ = tiny
    features = joblib.load(directory / "feature_scaler.pkl")
    targets = joblib.load(directory / "target_scaler.pkl")
    assert type(features) is StandardScaler and list(features.feature_names_in_) == list(FEATURES)
    assert type(targets) is MinMaxScaler and list(targets.feature_names_in_) == [f"adv{i}" for i in range(8)]
    model = keras.models.load_model(directory / "dnn_model.keras", compile=False)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Dense") == 6 and kinds.count("LeakyReLU") == 5
    assert kinds.count("BatchNormalization") == 4 and kinds.count("Dropout") == 4
    assert tuple(model.input_shape) == (None, 35) and tuple(model.output_shape) == (None, 8)


@pytest.mark.build
def test_training_is_seeded(tiny: tuple[Path, float], tmp_path: Path) -> None:
    from convert.train import main

    directory, _ = tiny
    assert main(["--model-dir", str(tmp_path), *TINY, "--no-convert"]) == 0
    first = json.loads((directory / "training.json").read_text())
    again = json.loads((tmp_path / "training.json").read_text())
    assert first["test"] == again["test"] and first["best_val_loss"] == again["best_val_loss"]


@pytest.mark.build
def test_benchmark_writes_model_card(tiny: tuple[Path, float], tmp_path: Path) -> None:
    import shutil

    from convert import benchmark, keras_model, model_card

    directory, _ = tiny
    work = Path(shutil.copytree(directory, tmp_path / "m"))
    figures = benchmark.run(work, keras_model.load(work / "dnn_model.keras"), quick=True)
    assert 0 < figures.onnx_batch256_us < figures.onnx_batch1_us
    assert figures.keras_predict_batch1_us and figures.keras_predict_batch1_us > figures.onnx_batch1_us
    assert figures.onnx_bytes == (work / "model.onnx").stat().st_size
    model_card.update(work, "benchmark", benchmark.markdown(figures), "m")
    card = (work / "MODEL_CARD.md").read_text()
    assert card.index("## Training") < card.index("## Conversion") < card.index("## Benchmark")
    model_card.update(work, "benchmark", benchmark.markdown(figures), "m")
    assert (work / "MODEL_CARD.md").read_text() == card  # replaced in place, not appended


@pytest.mark.build
def test_missing_simulator_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from convert.train import main

    monkeypatch.setitem(sys.modules, "simulator.dataset", None)  # import raises ImportError
    assert main(["--model-dir", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fdedge train: error: simulator.dataset.generate is not available") and "Traceback" not in err


def test_scores_match_definition() -> None:
    from convert.train import scores

    y = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]])
    s = scores(y, y + np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]]))
    assert s[0]["mae"] == pytest.approx(2 / 3) and s[0]["r2"] == pytest.approx(1 - 2 / 8)
    assert s[1] == {"mae": 0.0, "r2": 1.0}
