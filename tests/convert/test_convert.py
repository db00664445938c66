"""`fdedge convert`: FD-REST's real artifacts reproduced by the runtime path, clear errors
for every bad input, `--if-stale` without TensorFlow, and exact scaler export."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.fdrest import FAULTS, FEATURES

REPO = Path(__file__).resolve().parents[2]
FDREST = Path(os.environ.get("FDREST_DIR", "/work/shared/fdrest"))
needs_fdrest = pytest.mark.skipif(
    not (FDREST / "dnn_model.keras").is_file(),
    reason=f"FD-REST's artifacts are not available in {FDREST} (set FDREST_DIR)",
)
HEAVY = ("tensorflow", "keras", "tf2onnx", "onnx", "sklearn", "joblib")


def convert(*args: str | Path) -> int:
    from convert.cli import main

    return main([str(a) for a in args])


def runtime_predict(model_dir: Path, rows: list[dict[str, float]]) -> np.ndarray:
    """The appliance's path, from the contract alone: onnxruntime + numpy on the converted files."""
    import onnxruntime as ort

    manifest = json.loads((model_dir / "manifest.json").read_text())
    x = np.array([[row[name] for name in manifest["features"]] for row in rows], dtype=np.float64)
    with np.load(model_dir / manifest["scalers"]) as npz:
        xs, xo, ys, yo = (npz[k] for k in ("x_scale", "x_offset", "y_scale", "y_offset"))
    sess = ort.InferenceSession(str(model_dir / manifest["onnx"]), providers=["CPUExecutionProvider"])
    raw = sess.run([manifest["output_name"]], {manifest["input_name"]: (x * xs + xo).astype(np.float32)})[0]
    return raw.astype(np.float64) * ys + yo


def read_rows(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as fh:
        return [{k: float(v) for k, v in row.items() if k != "Time"} for row in csv.DictReader(fh)]


# ---------------------------------------------------------------- FD-REST's own artifacts

@pytest.fixture(scope="module")
def fdrest_converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    out = tmp_path_factory.mktemp("fdrest")
    rc = convert("--keras", FDREST / "dnn_model.keras", "--feature-scaler", FDREST / "feature_scaler.pkl",
                 "--target-scaler", FDREST / "target_scaler.pkl", "--out", out, "--name", "fdrest")
    assert rc == 0
    return out


@pytest.mark.build
@needs_fdrest
def test_fdrest_reference_predictions_reproduced_by_runtime_path(fdrest_converted: Path) -> None:
    rows = read_rows(FDREST / "reference_predictions.csv")
    expected = np.array([[row[f] for f in FAULTS] for row in rows])
    got = runtime_predict(fdrest_converted, rows)
    manifest = json.loads((fdrest_converted / "manifest.json").read_text())
    assert len(rows) == 208
    error = np.abs(got - expected).max(axis=1)
    relative = error / np.ptp(expected)
    assert relative.max() <= manifest["parity"]["tolerance"], f"worst row {int(relative.argmax())}: {relative.max():.3g}"
    # the appliance re-runs the manifest's parity samples before it keeps or activates the model
    from edge.scoring import model_store
    replayed = model_store.replay(model_store.check(fdrest_converted))
    assert replayed["samples"] == 16 and replayed["max_abs_error"] <= manifest["parity"]["tolerance"] * np.ptp(expected)


@pytest.mark.build
@needs_fdrest
def test_fdrest_manifest_follows_contract(fdrest_converted: Path) -> None:
    import onnxruntime as ort

    from edge.fdrest import CATALOGUE

    m = json.loads((fdrest_converted / "manifest.json").read_text())
    assert m["format"] == 1 and m["name"] == "fdrest" and m["opset"] == 17
    assert m["features"] == list(FEATURES)  # FD-REST's scaler happens to use the canonical order
    assert m["faults"] == list(FAULTS) and m["catalogue"] == [dict(c) for c in CATALOGUE]
    assert m["scalers_kind"] == {"features": "StandardScaler", "targets": "MinMaxScaler"}
    assert m["parity"]["source"] == "scaler-statistics" and m["parity"]["relative_error"] <= 1e-4
    assert set(m["tools"]) == {"tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "scikit-learn", "numpy"}
    assert any("1.7.1" in note for note in m["notes"])  # the sklearn version skew is recorded
    import hashlib

    onnx_bytes = (fdrest_converted / "model.onnx").read_bytes()
    assert m["version"] == hashlib.sha256(onnx_bytes).hexdigest()[:12]
    assert m["sources"]["dnn_model.keras"] == hashlib.sha256((FDREST / "dnn_model.keras").read_bytes()).hexdigest()
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape[1], out.name, out.shape[1]) == ("features", 35, m["output_name"], 8)
    assert isinstance(inp.shape[0], str)  # dynamic batch axis
    with np.load(fdrest_converted / "scalers.npz") as npz:
        assert {k: npz[k].shape for k in npz.files} == {"x_scale": (35,), "x_offset": (35,), "y_scale": (8,), "y_offset": (8,)}
        assert all(npz[k].dtype == np.float64 for k in npz.files)


@pytest.mark.build
@needs_fdrest
def test_fdrest_through_edge_model_loader(fdrest_converted: Path) -> None:
    """The real runtime loader accepts the converted files and reproduces FD-REST's data.csv predictions."""
    model_module = pytest.importorskip("edge.scoring.model")
    model = model_module.load(fdrest_converted)
    rows = read_rows(FDREST / "reference_predictions.csv")[:8]
    x = np.array([[row[name] for name in FEATURES] for row in rows])
    expected = np.array([[row[f] for f in FAULTS] for row in rows])
    assert np.abs(model.predict(x) - expected).max() < 1e-2


@pytest.mark.build
@needs_fdrest
def test_reference_option_checks_expected_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(FDREST / "dnn_model.keras", tmp_path / "dnn_model.keras")
    for name in ("feature_scaler.pkl", "target_scaler.pkl"):
        shutil.copy(FDREST / name, tmp_path / name)
    assert convert("--model-dir", tmp_path, "--reference", FDREST / "reference_predictions.csv", "--optimize", "none") == 0
    parity = json.loads((tmp_path / "manifest.json").read_text())["parity"]
    assert parity["source"] == "reference" and parity["samples"] == 208
    assert parity["reference_relative_error"] <= 1e-4
    out = capsys.readouterr()
    assert out.out.count("note:") == 2 and "InconsistentVersionWarning" not in out.out + out.err


# ---------------------------------------------------------------- synthetic sources

def write_sources(directory: Path, *, n_in: int = 35, names: list[str] | None = list(FEATURES),
                  seed: int = 0) -> Path:
    """A small Keras model and FD-REST-like scalers in FD-REST's file layout."""
    import joblib
    import keras
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((n_in,)), keras.layers.Dense(16), keras.layers.LeakyReLU(0.01),
                              keras.layers.BatchNormalization(), keras.layers.Dense(8)])
    model.save(directory / "dnn_model.keras")
    features = StandardScaler().fit(rng.normal(50.0, 10.0, size=(200, n_in)) * rng.uniform(0.1, 100, n_in))
    if names is not None:
        features.feature_names_in_ = np.array(names[:n_in], dtype=object)
    joblib.dump(features, directory / "feature_scaler.pkl")
    joblib.dump(MinMaxScaler().fit(rng.uniform(-5, 100, size=(200, 8))), directory / "target_scaler.pkl")
    return directory


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow")
    directory = write_sources(tmp_path_factory.mktemp("synthetic"))
    assert convert("--model-dir", directory, "--optimize", "none") == 0
    return directory


def copy_sources(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("dnn_model.keras", "feature_scaler.pkl", "target_scaler.pkl"):
        shutil.copy(src / name, dst / name)
    return dst


def run_failing(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    rc = convert(*args)
    out = capsys.readouterr()
    assert rc == 2, out.out + out.err
    assert "Traceback" not in out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith("fdedge convert: error: ")
    return lines[0]


@pytest.mark.build
def test_synthetic_conversion_passes_parity(synthetic: Path) -> None:
    m = json.loads((synthetic / "manifest.json").read_text())
    assert m["parity"]["samples"] == 1024 and m["parity"]["relative_error"] <= 1e-4
    assert m["graph_optimization"]["kept"] is False and "--optimize none" in m["graph_optimization"]["reason"]
    assert "## Conversion" in (synthetic / "MODEL_CARD.md").read_text()
    assert not list(synthetic.glob(".convert-*")), "scratch directory left behind"


@pytest.mark.build
def test_same_sources_convert_to_the_same_bytes(synthetic: Path, tmp_path: Path) -> None:
    """`version` identifies the model, so re-converting unchanged sources must not change it."""
    builds = []
    for i in range(2):
        d = copy_sources(synthetic, tmp_path / str(i))
        assert convert("--model-dir", d, "--name", "same", "--optimize", "none") == 0
        builds.append((d / "model.onnx").read_bytes())
    assert builds[0] == builds[1]


@pytest.mark.build
def test_missing_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "Keras model not found" in run_failing(capsys, "--model-dir", tmp_path)


@pytest.mark.build
def test_missing_scaler_file(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_sources(synthetic, tmp_path)
    (d / "feature_scaler.pkl").unlink()
    assert "feature scaler not found" in run_failing(capsys, "--model-dir", d)


@pytest.mark.build
def test_truncated_keras_file(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_sources(synthetic, tmp_path)
    data = (d / "dnn_model.keras").read_bytes()
    (d / "dnn_model.keras").write_bytes(data[: len(data) // 2])
    assert "not a Keras 3 .keras archive" in run_failing(capsys, "--model-dir", d)


@pytest.mark.build
def test_zip_that_is_not_a_keras_model(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import zipfile

    d = copy_sources(synthetic, tmp_path)
    with zipfile.ZipFile(d / "dnn_model.keras", "w") as zf:
        zf.writestr("config.json", "{not json")
    assert "cannot be loaded by Keras" in run_failing(capsys, "--model-dir", d)


@pytest.mark.build
def test_quantile_transformer_rejected(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import joblib
    from sklearn.preprocessing import QuantileTransformer

    d = copy_sources(synthetic, tmp_path)
    joblib.dump(QuantileTransformer(n_quantiles=10).fit(np.random.default_rng(0).normal(size=(50, 35))),
                d / "feature_scaler.pkl")
    message = run_failing(capsys, "--model-dir", d)
    assert "QuantileTransformer, which is not an affine scaler" in message and "StandardScaler" in message


@pytest.mark.build
def test_corrupt_pickle(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_sources(synthetic, tmp_path)
    (d / "target_scaler.pkl").write_bytes(b"\x80\x04not a pickle at all")
    assert "target scaler" in (msg := run_failing(capsys, "--model-dir", d)) and "cannot be read" in msg


@pytest.mark.build
def test_34_feature_scaler(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import joblib
    from sklearn.preprocessing import StandardScaler

    d = copy_sources(synthetic, tmp_path)
    small = StandardScaler().fit(np.random.default_rng(0).normal(size=(20, 34)))
    small.feature_names_in_ = np.array(FEATURES[:34], dtype=object)
    joblib.dump(small, d / "feature_scaler.pkl")
    message = run_failing(capsys, "--model-dir", d)
    assert "feature scaler has 34 features" in message and "expects 35" in message


@pytest.mark.build
def test_target_scaler_dimension_mismatch(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import joblib
    from sklearn.preprocessing import MinMaxScaler

    d = copy_sources(synthetic, tmp_path)
    joblib.dump(MinMaxScaler().fit(np.random.default_rng(0).normal(size=(20, 7))), d / "target_scaler.pkl")
    assert "target scaler has 7 outputs" in run_failing(capsys, "--model-dir", d)


@pytest.mark.build
def test_scaler_without_feature_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_sources(tmp_path, names=None)
    assert "no feature_names_in_" in run_failing(capsys, "--model-dir", d)


@pytest.mark.build
def test_scaler_with_foreign_feature_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = list(FEATURES)
    names[1] = "Temp"
    message = run_failing(capsys, "--model-dir", write_sources(tmp_path, names=names))
    assert "not FD-REST's" in message and "'Temperature'" in message and "'Temp'" in message


@pytest.mark.build
def test_parity_failure_is_reported_and_keeps_old_outputs(synthetic: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_sources(synthetic, tmp_path)
    message = run_failing(capsys, "--model-dir", d, "--tolerance", "1e-300", "--optimize", "none")
    assert "parity failed" in message and "tolerance 1e-300" in message
    assert not (d / "manifest.json").exists() and not (d / "model.onnx").exists()
    assert not list(d.glob(".convert-*"))


@pytest.mark.build
def test_parity_catches_a_wrong_export(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A converter bug that perturbs one weight by 1 % is caught at the default tolerance."""
    from onnx import numpy_helper

    from convert import onnx_export

    tidy = onnx_export._tidy

    def perturbing_tidy(proto: object) -> None:
        tidy(proto)
        weight = max(proto.graph.initializer, key=lambda t: numpy_helper.to_array(t).size)
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.01, weight.name))

    monkeypatch.setattr(onnx_export, "_tidy", perturbing_tidy)
    d = copy_sources(synthetic, tmp_path)
    for name in ("model.onnx", "scalers.npz", "manifest.json"):
        shutil.copy(synthetic / name, d / name)
    before = (d / "manifest.json").read_bytes()
    message = run_failing(capsys, "--model-dir", d, "--optimize", "none")
    assert "parity failed" in message and "tolerance 0.0001" in message
    assert (d / "manifest.json").read_bytes() == before, "a failed build must leave the previous model serving"


@pytest.mark.build
def test_sample_csv_missing_columns(synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_sources(synthetic, tmp_path / "m")
    (tmp_path / "s.csv").write_text("Time,Rotation Speed\n2024-01-01 00:00:00,1\n")
    assert "lacks feature columns" in run_failing(capsys, "--model-dir", d, "--sample", tmp_path / "s.csv")


@pytest.mark.build
def test_sample_csv_drives_parity(synthetic: Path, tmp_path: Path) -> None:
    d = copy_sources(synthetic, tmp_path / "m")
    order = list(reversed(FEATURES))  # column order in the file must not matter
    rng = np.random.default_rng(1)
    with open(tmp_path / "s.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Time", *order])
        for _ in range(5):
            w.writerow(["2024-01-01 00:00:00", *rng.normal(50, 10, size=35).round(3)])
    assert convert("--model-dir", d, "--sample", tmp_path / "s.csv", "--optimize", "none") == 0
    parity = json.loads((d / "manifest.json").read_text())["parity"]
    assert (parity["source"], parity["samples"]) == ("sample-data", 5)


@pytest.mark.build
def test_identity_scalers(synthetic: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert convert("--keras", synthetic / "dnn_model.keras", "--feature-scaler", "none", "--target-scaler", "none",
                   "--out", out, "--optimize", "none") == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["scalers_kind"] == {"features": "identity", "targets": "identity"}
    assert m["features"] == list(FEATURES) and m["sources"]["feature_scaler.pkl"] is None
    with np.load(out / "scalers.npz") as npz:
        assert (npz["x_scale"] == 1).all() and (npz["y_offset"] == 0).all()


@pytest.mark.build
def test_build_extra_missing(synthetic: Path, tmp_path: Path) -> None:
    """Without tensorflow the command says how to install it, in one line."""
    d = copy_sources(synthetic, tmp_path)
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'tensorflow', 'keras'}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from convert.cli import main\n"
        f"sys.exit(main(['--model-dir', {str(d)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert "install the build extra: pip install -e '.[build]'" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- --if-stale

IF_STALE_SCRIPT = (
    "import sys\n"
    "from convert.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    f"loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
    "print('LOADED', loaded)\n"
    "sys.exit(rc)\n"
)


@pytest.mark.build
def test_if_stale_skips_without_importing_tensorflow(synthetic: Path) -> None:
    before = (synthetic / "manifest.json").read_bytes()
    proc = subprocess.run([sys.executable, "-c", IF_STALE_SCRIPT, "--model-dir", str(synthetic), "--if-stale"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "up to date" in proc.stdout
    assert "LOADED []" in proc.stdout
    assert (synthetic / "manifest.json").read_bytes() == before


@pytest.mark.build
def test_if_stale_accepts_converted_files_without_sources(synthetic: Path, tmp_path: Path) -> None:
    """A runtime-only install may ship model.onnx + scalers.npz + manifest.json alone."""
    for name in ("model.onnx", "scalers.npz", "manifest.json"):
        shutil.copy(synthetic / name, tmp_path / name)
    proc = subprocess.run([sys.executable, "-c", IF_STALE_SCRIPT, "--model-dir", str(tmp_path), "--if-stale"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0 and "up to date" in proc.stdout and "LOADED []" in proc.stdout, proc.stderr
    (tmp_path / "model.onnx").write_bytes(b"tampered")
    proc = subprocess.run([sys.executable, "-c", IF_STALE_SCRIPT, "--model-dir", str(tmp_path), "--if-stale"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 2 and "Keras model not found" in proc.stderr


@pytest.mark.build
def test_if_stale_rebuilds_when_a_source_changes(synthetic: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = copy_sources(synthetic, tmp_path)
    for name in ("model.onnx", "scalers.npz", "manifest.json"):
        shutil.copy(synthetic / name, d / name)
    assert convert("--model-dir", d, "--if-stale") == 0
    assert "up to date" in capsys.readouterr().out
    with open(d / "target_scaler.pkl", "ab") as fh:
        fh.write(b"\n")  # same scaler for pickle, different bytes
    assert convert("--model-dir", d, "--if-stale", "--optimize", "none") == 0
    assert "changed: target_scaler.pkl" in capsys.readouterr().out
    (d / "scalers.npz").unlink()
    assert convert("--model-dir", d, "--if-stale", "--optimize", "none") == 0
    assert "scalers.npz is missing" in capsys.readouterr().out


# ---------------------------------------------------------------- scaler export


def _scalers() -> list[object]:
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    return [StandardScaler(), StandardScaler(with_mean=False), StandardScaler(with_std=False),
            MinMaxScaler(), MinMaxScaler(feature_range=(-3, 7)), RobustScaler(),
            RobustScaler(with_centering=False), RobustScaler(quantile_range=(10, 90)), MaxAbsScaler()]


@pytest.mark.build
@pytest.mark.parametrize("index", range(9))
def test_scaler_export_is_exact(index: int) -> None:
    """numpy's affine form equals scikit-learn's transform and inverse_transform to rounding."""
    pytest.importorskip("sklearn")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    from convert.scalers import to_affine

    finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
    shapes = st.tuples(st.integers(2, 25), st.integers(1, 6))

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=shapes.flatmap(lambda s: arrays(np.float64, s, elements=finite)), probe=finite)
    def check(data: np.ndarray, probe: float) -> None:
        import copy

        scaler = copy.deepcopy(_scalers()[index]).fit(data)
        affine = to_affine(scaler, role="feature scaler")
        x = np.vstack([data, np.full((1, data.shape[1]), probe)])
        eps = np.finfo(np.float64).eps
        tiny = 4 * np.finfo(np.float64).smallest_subnormal  # an ulp of a subnormal has no relative bound
        want = scaler.transform(x)
        # bound: a few ulps of the terms summed, which is all a multiply-add can promise
        bound = 4 * eps * (np.abs(x * affine.scale) + np.abs(affine.offset) + np.abs(want)) + tiny
        assert (np.abs(affine.forward(x) - want) <= bound).all()
        back = scaler.inverse_transform(want)
        bound = 4 * eps * (np.abs(want * affine.inv_scale) + np.abs(affine.inv_offset) + np.abs(back)) + tiny
        assert (np.abs(affine.inverse(want) - back) <= bound).all()

    check()


@pytest.mark.build
def test_unsupported_and_non_affine_scalers_rejected() -> None:
    pytest.importorskip("sklearn")
    from sklearn.preprocessing import MinMaxScaler, Normalizer, PowerTransformer

    from convert.errors import ScalerError
    from convert.scalers import to_affine

    data = np.random.default_rng(0).normal(size=(20, 3))
    for estimator in (PowerTransformer().fit(data), Normalizer().fit(data), object()):
        with pytest.raises(ScalerError, match="not an affine scaler"):
            to_affine(estimator, role="feature scaler")
    with pytest.raises(ScalerError, match="clip=True"):
        to_affine(MinMaxScaler(clip=True).fit(data), role="feature scaler")
    to_affine(MinMaxScaler(clip=True).fit(data), role="target scaler")  # inverse never clips
    with pytest.raises(ScalerError, match="unfitted"):
        to_affine(MinMaxScaler(), role="target scaler")
