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


# ---------------------------------------------------------------- fdedge train --csv

CSV_TINY = ["--epochs", "2", "--width", "32", "--no-bench"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's own labelled readings in FD-REST's data.csv format, columns shuffled."""
    import csv

    from simulator.dataset import write_csv

    directory = tmp_path_factory.mktemp("labelled")
    path = write_csv(directory / "ordered.csv", rows=1500, seed=7)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    order = [0, *reversed(range(1, len(rows[0])))]  # column order must not matter
    with open(directory / "labelled.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([[row[i] for i in order] for row in rows])
    return directory / "labelled.csv"


@pytest.fixture(scope="module")
def from_csv(tmp_path_factory: pytest.TempPathFactory, labelled: Path) -> Path:
    pytest.importorskip("tensorflow")
    from convert.train import main

    catalogue = tmp_path_factory.mktemp("cat") / "mine.json"
    catalogue.write_text(json.dumps([{"category": f"Pump fault {i}", "observed": "seen", "root_causes": "why"}
                                     for i in range(8)]))
    directory = tmp_path_factory.mktemp("from-csv")
    assert main(["--model-dir", str(directory), "--csv", str(labelled), "--catalogue", str(catalogue),
                 *CSV_TINY]) == 0
    return directory


@pytest.mark.build
def test_training_on_labelled_csv_converts_with_parity(from_csv: Path, labelled: Path) -> None:
    import hashlib

    record = json.loads((from_csv / "training.json").read_text())
    assert record["data"]["source"] == "csv" and record["data"]["rows"] == 1500
    assert record["data"]["sha256"] == hashlib.sha256(labelled.read_bytes()).hexdigest()
    assert record["split"] == {"train": 1125, "validation": 150, "test": 225}
    assert len(record["test"]) == 8 and "rows" not in record["settings"]
    manifest = json.loads((from_csv / "manifest.json").read_text())
    assert manifest["parity"]["relative_error"] <= manifest["parity"]["tolerance"]
    assert manifest["catalogue"][4]["category"] == "Pump fault 4"  # --catalogue went with the model
    card = (from_csv / "MODEL_CARD.md").read_text()
    assert "`labelled.csv` (1500 labelled readings" in card and "| fault4 | Pump fault 4 |" in card
    assert card.index("## Training") < card.index("## Conversion")


@pytest.mark.build
def test_csv_training_uses_the_csv_not_the_simulator(from_csv: Path, monkeypatch: pytest.MonkeyPatch,
                                                     labelled: Path, tmp_path: Path) -> None:
    import sys

    from convert.train import main

    monkeypatch.setitem(sys.modules, "simulator.dataset", None)
    assert main(["--model-dir", str(tmp_path), "--csv", str(labelled), *CSV_TINY, "--no-convert"]) == 0
    again = json.loads((tmp_path / "training.json").read_text())
    assert again["test"] == json.loads((from_csv / "training.json").read_text())["test"]  # seeded


@pytest.mark.build
@pytest.mark.parametrize("content, message", [
    ("Time,Rotation Speed\n2024-01-01 00:00:00,1\n", "lacks feature columns"),
    (None, "has no fault0..fault7 columns: training needs labelled readings"),
    ("few", "has 10 readings; at least 40 are needed"),
])
def test_unusable_csv_is_one_line(tmp_path: Path, labelled: Path, capsys: pytest.CaptureFixture[str],
                                  content: str | None, message: str) -> None:
    from convert.train import main

    lines = labelled.read_text().splitlines()
    if content is None:  # the features without the labels
        header = lines[0].split(",")
        keep = [i for i, h in enumerate(header) if not h.startswith("fault")]
        content = "\n".join(",".join(line.split(",")[i] for i in keep) for line in lines[:60]) + "\n"
    elif content == "few":
        content = "\n".join(lines[:11]) + "\n"
    (tmp_path / "bad.csv").write_text(content)
    assert main(["--model-dir", str(tmp_path / "m"), "--csv", str(tmp_path / "bad.csv"), *CSV_TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fdedge train: error: ") and message in err[0], err


def test_csv_and_rows_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    from convert.train import main

    with pytest.raises(SystemExit):
        main(["--csv", "x.csv", "--rows", "500"])
    assert "not allowed with argument" in capsys.readouterr().err
