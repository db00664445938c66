"""The model zoo: the Keras models and scalers practitioners bring, each converted with parity
or refused in one line naming the layer, op or step (issue 16).

Every model is tiny (35 -> 8, a few Dense(8) layers) and built at test time; one pair of
FD-REST-like scalers is shared by the whole module, so the zoo costs TensorFlow's start-up
plus well under a second per model. FDEDGE_ZOO_SHOW=1 prints each refusal's line (pytest -s
shows the parity figures).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.fdrest import FEATURES

pytestmark = pytest.mark.build

N_IN, N_OUT = 35, 8
ACTIVATIONS = ("relu", "sigmoid", "softmax", "softplus", "softsign", "tanh", "selu", "elu", "exponential",
               "leaky_relu", "relu6", "silu", "gelu", "celu", "hard_sigmoid", "hard_silu", "linear",
               "log_softmax", "mish", "log_sigmoid", "sparse_plus", "squareplus", "tanh_shrink", "hard_tanh",
               "soft_shrink", "hard_shrink", "sparsemax")

# The user's own code, as they would keep it next to their training script.
MY_LAYERS = textwrap.dedent('''
    import keras
    import tensorflow as tf


    def swish2(x):
        return x * keras.ops.sigmoid(2.0 * x)


    def doubled(x):
        return 2.0 * x


    def lgamma_activation(x):
        return tf.math.lgamma(keras.ops.abs(x) + 1.0)


    class Scaled(keras.layers.Layer):
        """A custom layer with a weight of its own."""

        def build(self, input_shape):
            self.factor = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="factor")

        def call(self, x):
            return x * self.factor + 0.5


    class TwoLayer(keras.Model):
        """A subclassed model."""

        def __init__(self, units=8, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.hidden = keras.layers.Dense(16, activation="relu")
            self.head = keras.layers.Dense(units)

        def call(self, x):
            return self.head(self.hidden(x))

        def get_config(self):
            return {**super().get_config(), "units": self.units}


    class NoConfig(keras.Model):
        """A subclassed model as most are written: no get_config, an exact-GELU hidden layer."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(16, activation="gelu")
            self.head = keras.layers.Dense(8)

        def call(self, x):
            return self.head(self.hidden(x))
''')


def convert(*args: str | Path) -> int:
    from convert.cli import main

    return main([str(a) for a in args])


def manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())


def one_error_line(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    rc = convert(*args)
    out = capsys.readouterr()
    assert rc == 2, out.out + out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fdedge convert: error: "), out.err
    assert "Traceback" not in out.err
    if os.environ.get("FDEDGE_ZOO_SHOW"):
        sys.__stdout__.write(lines[0] + "\n")
    return lines[0]


@pytest.fixture(scope="module")
def keras() -> Any:
    from convert.keras_model import import_tensorflow

    pytest.importorskip("tensorflow")
    return import_tensorflow()[1]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, keras: Any) -> Path:
    """FD-REST-like scalers (StandardScaler with names, MinMaxScaler) and the user's code file."""
    import joblib
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    directory = tmp_path_factory.mktemp("zoo")
    rng = np.random.default_rng(0)
    features = StandardScaler().fit(rng.normal(50.0, 10.0, size=(200, N_IN)) * rng.uniform(0.1, 100, N_IN))
    features.feature_names_in_ = np.array(FEATURES, dtype=object)
    joblib.dump(features, directory / "feature_scaler.pkl")
    joblib.dump(MinMaxScaler().fit(rng.uniform(-5, 100, size=(200, N_OUT))), directory / "target_scaler.pkl")
    (directory / "my_layers.py").write_text(MY_LAYERS)
    return directory


@pytest.fixture(scope="module")
def my_layers(zoo: Path) -> dict[str, Any]:
    from convert import custom_objects

    return custom_objects.load(zoo / "my_layers.py")


def save(keras: Any, zoo: Path, name: str, model: Any, suffix: str = ".keras") -> Path:
    path = zoo / f"{name}{suffix}"
    if suffix == "/":
        path = zoo / name
        model.export(str(path), verbose=False)
    else:
        model.save(path)
    return path


def convert_ok(zoo: Path, model_path: Path, *extra: str | Path, name: str | None = None) -> dict[str, Any]:
    out = zoo / f"out-{name or model_path.stem}"
    assert convert("--keras", model_path, "--feature-scaler", zoo / "feature_scaler.pkl",
                   "--target-scaler", zoo / "target_scaler.pkl", "--out", out, "--optimize", "none", *extra) == 0
    m = manifest(out)
    assert m["parity"]["relative_error"] <= 1e-4, m["parity"]
    print(f"zoo parity {out.name}: {m['parity']['relative_error']:.2g} of the output range")
    return m


def sequential(keras: Any, *layers: Any, seed: int = 0) -> Any:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((N_IN,)), *layers, keras.layers.Dense(N_OUT)])


# ---------------------------------------------------------------- activations TensorFlow builds from odd ops

@pytest.mark.parametrize("activation, op", [("gelu", "Erfc"), ("celu", "Expm1")])
def test_activation_with_unconverted_tf_op_is_rewritten(keras: Any, zoo: Path, activation: str, op: str) -> None:
    model = sequential(keras, keras.layers.Dense(8, activation=activation, name=f"hidden_{activation}"))
    m = convert_ok(zoo, save(keras, zoo, activation, model))
    assert any(op in note and f"hidden_{activation}" in note for note in m["notes"]), m["notes"]


def test_every_builtin_activation_converts_with_parity(keras: Any, zoo: Path) -> None:
    """One branch per activation, side by side, so none sees another's (possibly constant) output."""
    keras.utils.set_random_seed(0)
    x = keras.Input((N_IN,))
    branches = [keras.layers.Dense(4, activation=a, name=f"act_{a}")(x) for a in ACTIVATIONS]
    model = keras.Model(x, keras.layers.Dense(N_OUT)(keras.layers.Concatenate()(branches)))
    m = convert_ok(zoo, save(keras, zoo, "activations", model))
    assert m["parity"]["output_range"] > 0 and m["parity"]["max_abs_error"] > 0  # really computed


def test_unconvertible_op_refused_naming_op_and_layer(keras: Any, zoo: Path, my_layers: dict[str, Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = sequential(keras, keras.layers.Dense(8, activation=my_layers["lgamma_activation"], name="odd"))
    path = save(keras, zoo, "lgamma", model)
    message = one_error_line(capsys, "--keras", path, "--feature-scaler", zoo / "feature_scaler.pkl",
                             "--target-scaler", zoo / "target_scaler.pkl", "--out", zoo / "out-lgamma",
                             "--custom-objects", zoo / "my_layers.py")
    assert "TensorFlow op Lgamma" in message and "'odd'" in message and "Unsupported ops" in message
    assert not (zoo / "out-lgamma" / "model.onnx").exists()


def test_rewrite_unit_erfc_expm1_log1p() -> None:
    """The rewritten graph computes what TensorFlow's ops compute, in onnxruntime."""
    import onnx
    from onnx import TensorProto, helper
    from scipy import special

    from convert.onnx_export import session
    from convert.onnx_rewrite import rewrite_unsupported

    nodes = [helper.make_node(op, ["x"], [op.lower()], name=f"model/layer/{op}") for op in ("Erfc", "Expm1", "Log1p")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
                              [helper.make_tensor_value_info(o.output[0], TensorProto.FLOAT, [None, 3])
                               for o in nodes])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    notes = rewrite_unsupported(proto, 17, ["layer"], [])
    assert len(notes) == 3 and all("layer" in n for n in notes)
    onnx.checker.check_model(proto)
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(4, 3)
    erfc, expm1, log1p = session(proto.SerializeToString()).run(None, {"x": x})
    assert np.allclose(erfc, special.erfc(x), atol=1e-6) and np.allclose(expm1, np.expm1(x), atol=1e-6)
    assert np.allclose(log1p[x > -1], np.log1p(x[x > -1]), atol=1e-6)


# ---------------------------------------------------------------- layers whose constants tf2onnx lifts out

def test_adapted_normalization_layer(keras: Any, zoo: Path) -> None:
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(np.random.default_rng(1).normal(3.0, 2.0, size=(256, N_IN)).astype(np.float32))
    m = convert_ok(zoo, save(keras, zoo, "norm_adapted", sequential(keras, norm, keras.layers.Dense(8, "relu"))))
    assert any("folded back" in note for note in m["notes"])


def test_fixed_normalization_layer(keras: Any, zoo: Path) -> None:
    norm = keras.layers.Normalization(mean=np.linspace(-1, 1, N_IN), variance=np.linspace(0.5, 4, N_IN))
    convert_ok(zoo, save(keras, zoo, "norm_fixed", sequential(keras, norm, keras.layers.Dense(8, "relu"))))


def test_common_layer_set_functional(keras: Any, zoo: Path) -> None:
    """Dense, BatchNormalization, LayerNormalization, Dropout, Add, Concatenate, Normalization."""
    layers = keras.layers
    keras.utils.set_random_seed(0)
    x = keras.Input((N_IN,))
    norm = layers.Normalization(mean=np.zeros(N_IN), variance=np.full(N_IN, 2.0))(x)
    a = layers.Dropout(0.1)(layers.BatchNormalization()(layers.Dense(8, activation="relu")(norm)))
    b = layers.LayerNormalization()(layers.Dense(8, activation="tanh")(norm))
    merged = layers.Concatenate()([layers.Add()([a, b]), b])
    model = keras.Model(x, layers.Dense(N_OUT)(merged))
    # BatchNormalization with moving statistics away from 0 / 1, so folding it is really tested
    bn = next(layer for layer in model.layers if isinstance(layer, layers.BatchNormalization))
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma * 1.5, beta + 0.3, mean + 0.7, var * 3.0])
    convert_ok(zoo, save(keras, zoo, "functional", model))


# ---------------------------------------------------------------- the user's own code

def test_custom_activation_needs_custom_objects(keras: Any, zoo: Path, my_layers: dict[str, Any],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    model = sequential(keras, keras.layers.Dense(8, activation=my_layers["swish2"]))
    path = save(keras, zoo, "custom_activation", model)
    message = one_error_line(capsys, "--keras", path, "--feature-scaler", zoo / "feature_scaler.pkl",
                             "--target-scaler", zoo / "target_scaler.pkl", "--out", zoo / "out-refused")
    assert "Could not locate function 'swish2'" in message and "--custom-objects" in message
    assert "register_keras_serializable" in message  # Keras's own message, whole
    convert_ok(zoo, path, "--custom-objects", zoo / "my_layers.py")


def test_lambda_layer_with_named_function(keras: Any, zoo: Path, my_layers: dict[str, Any],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    model = sequential(keras, keras.layers.Lambda(my_layers["doubled"]), keras.layers.Dense(8, "relu"))
    path = save(keras, zoo, "lambda_named", model)
    message = one_error_line(capsys, "--keras", path, "--feature-scaler", zoo / "feature_scaler.pkl",
                             "--target-scaler", zoo / "target_scaler.pkl", "--out", zoo / "out-refused")
    assert "Could not locate function 'doubled'" in message
    convert_ok(zoo, path, "--custom-objects", zoo / "my_layers.py")


def test_lambda_layer_with_python_lambda_is_refused(keras: Any, zoo: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    model = sequential(keras, keras.layers.Lambda(lambda t: t * 2.0))
    path = save(keras, zoo, "lambda_bytecode", model)
    message = one_error_line(capsys, "--keras", path, "--feature-scaler", zoo / "feature_scaler.pkl",
                             "--target-scaler", zoo / "target_scaler.pkl", "--out", zoo / "out-refused",
                             "--custom-objects", zoo / "my_layers.py")
    assert "Lambda layer holds a Python lambda" in message and "--custom-objects" in message


def test_custom_layer_with_weights(keras: Any, zoo: Path, my_layers: dict[str, Any]) -> None:
    model = sequential(keras, keras.layers.Dense(8), my_layers["Scaled"]())
    convert_ok(zoo, save(keras, zoo, "custom_layer", model), "--custom-objects", zoo / "my_layers.py")


@pytest.mark.parametrize("cls", ["TwoLayer", "NoConfig"])
def test_subclassed_model(keras: Any, zoo: Path, my_layers: dict[str, Any], cls: str,
                          capsys: pytest.CaptureFixture[str]) -> None:
    keras.utils.set_random_seed(0)
    model = my_layers[cls]()
    model(np.zeros((1, N_IN), dtype=np.float32))
    path = save(keras, zoo, f"subclassed_{cls}", model)
    message = one_error_line(capsys, "--keras", path, "--feature-scaler", zoo / "feature_scaler.pkl",
                             "--target-scaler", zoo / "target_scaler.pkl", "--out", zoo / "out-refused")
    assert f"Could not locate class '{cls}'" in message and "--custom-objects" in message
    m = convert_ok(zoo, path, "--custom-objects", zoo / "my_layers.py")
    if cls == "NoConfig":
        assert any("Erfc" in note and "layer(s) dense" in note for note in m["notes"]), m["notes"]


def test_layer_of_maps_traced_scopes_to_layer_names() -> None:
    from convert.onnx_rewrite import layer_of

    names = ["dense", "dense_1", "norm", "block_2"]
    assert layer_of("sequential_1/dense_1/Gelu/Erfc", names) == "dense"  # Keras traces `dense` as dense_1
    assert layer_of("sequential_1/dense_1_1/Gelu/Erfc", names) == "dense_1"
    assert layer_of("model/block_2/Expm1", names) == "block_2"
    assert layer_of("model/other/Expm1", names) is None


def test_custom_objects_file_that_fails(zoo: Path, plain_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = zoo / "bad_layers.py"
    bad.write_text("import keras\n\n\ndef f(x):\n    return x\n\n\nraise RuntimeError('half-written file')\n")
    message = one_error_line(capsys, "--keras", plain_model, "--out", zoo / "out-refused",
                             "--custom-objects", bad)
    assert f"--custom-objects {bad} failed at line 8 (RuntimeError: half-written file)" in message


# ---------------------------------------------------------------- other file formats and precisions

@pytest.mark.parametrize("suffix, note", [(".h5", "legacy HDF5"), ("/", "SavedModel")])
def test_other_model_formats(keras: Any, zoo: Path, suffix: str, note: str) -> None:
    model = sequential(keras, keras.layers.Dense(8, activation="relu"), keras.layers.BatchNormalization())
    m = convert_ok(zoo, save(keras, zoo, "format" + suffix.strip("./"), model, suffix))
    assert any(note in n for n in m["notes"]), m["notes"]


def test_saved_model_change_is_stale(keras: Any, zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = zoo / "format"  # exported by test_other_model_formats, or export it now
    if not path.is_dir():
        save(keras, zoo, "format", sequential(keras, keras.layers.Dense(8)), "/")
    args = ["--keras", path, "--feature-scaler", zoo / "feature_scaler.pkl", "--target-scaler",
            zoo / "target_scaler.pkl", "--out", zoo / "out-stale", "--optimize", "none", "--if-stale"]
    assert convert(*args) == 0 and convert(*args) == 0
    assert "up to date" in capsys.readouterr().out
    (path / "assets" / "extra.txt").write_text("changed")
    assert convert(*args) == 0
    assert "changed: dnn_model.keras" in capsys.readouterr().out


def test_directory_that_is_no_saved_model(zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (zoo / "empty_dir").mkdir(exist_ok=True)
    assert "not a TensorFlow SavedModel" in one_error_line(capsys, "--keras", zoo / "empty_dir")
    (zoo / "damaged").mkdir(exist_ok=True)
    (zoo / "damaged" / "saved_model.pb").write_bytes(b"not a protobuf")
    message = one_error_line(capsys, "--keras", zoo / "damaged", "--feature-scaler", "none", "--target-scaler", "none",
                             "--out", zoo / "out-refused")
    assert "cannot be loaded as a SavedModel" in message


def test_mixed_float16_converted_in_float32(keras: Any, zoo: Path) -> None:
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = sequential(keras, keras.layers.Dense(16, activation="relu"), keras.layers.Dense(8, activation="gelu"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    m = convert_ok(zoo, save(keras, zoo, "mixed", model))
    assert any("mixed_float16: converted and checked in float32" in n for n in m["notes"]), m["notes"]


def test_float16_parity_failure_names_the_cause(keras: Any, zoo: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A 16-bit model that cannot be rebuilt in float32 fails parity with a message saying why."""
    from convert import keras_model

    if not (zoo / "mixed.keras").is_file():
        pytest.skip("needs test_mixed_float16_converted_in_float32's model")
    monkeypatch.setattr(keras_model, "_float32_clone", lambda *a: None)
    message = one_error_line(capsys, "--keras", zoo / "mixed.keras", "--feature-scaler", zoo / "feature_scaler.pkl",
                             "--target-scaler", zoo / "target_scaler.pkl", "--out", zoo / "out-f16",
                             "--optimize", "none")
    assert "parity failed" in message and "16-bit floats" in message and "--tolerance" in message


# ---------------------------------------------------------------- composite scalers

def _pickle(zoo: Path, name: str, estimator: Any) -> Path:
    import joblib

    joblib.dump(estimator, zoo / name)
    return zoo / name


@pytest.fixture(scope="module")
def plain_model(keras: Any, zoo: Path) -> Path:
    return save(keras, zoo, "plain", sequential(keras, keras.layers.Dense(8, activation="relu")))


@pytest.fixture(scope="module")
def raw_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    return rng.normal(50.0, 10.0, size=(200, N_IN)) * rng.uniform(0.1, 100, N_IN), rng.uniform(-5, 100, (200, N_OUT))


def test_pipeline_of_affine_scalers(zoo: Path, plain_model: Path, raw_data: tuple[np.ndarray, np.ndarray]) -> None:
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler

    x, y = raw_data
    features = Pipeline([("robust", RobustScaler()), ("nothing", "passthrough"), ("std", StandardScaler()),
                         ("same", FunctionTransformer())]).fit(x)
    features.steps[0][1].feature_names_in_ = np.array(FEATURES, dtype=object)
    targets = make_pipeline(MinMaxScaler(feature_range=(-1, 1)), MaxAbsScaler()).fit(y)
    m = convert_ok(zoo, plain_model, "--feature-scaler", _pickle(zoo, "pipe_f.pkl", features),
                   "--target-scaler", _pickle(zoo, "pipe_t.pkl", targets), name="pipeline")
    assert m["scalers_kind"] == {"features": "Pipeline(RobustScaler, StandardScaler, identity)",
                                 "targets": "Pipeline(MinMaxScaler, MaxAbsScaler)"}
    assert m["parity"]["scaling_relative_error"] <= 1e-9


def test_identity_function_transformer(zoo: Path, plain_model: Path, raw_data: tuple[np.ndarray, np.ndarray]) -> None:
    from sklearn.preprocessing import FunctionTransformer

    m = convert_ok(zoo, plain_model, "--feature-scaler", "none",
                   "--target-scaler", _pickle(zoo, "ft.pkl", FunctionTransformer().fit(raw_data[1])), name="ft")
    assert m["scalers_kind"]["targets"] == "identity"


@pytest.mark.parametrize("make, expected", [
    (lambda: _pipeline_with("quantile"), "Pipeline step 'quantile' holds a QuantileTransformer, which is not"),
    (lambda: _pipeline_with("power"), "Pipeline step 'power' holds a PowerTransformer, which is not an"),
    (lambda: _pipeline_with("log"), "Pipeline step 'log' holds a FunctionTransformer(func=log1p)"),
], ids=["quantile", "power", "function"])
def test_non_affine_steps_refused_by_name(zoo: Path, plain_model: Path, raw_data: tuple[np.ndarray, np.ndarray],
                                          capsys: pytest.CaptureFixture[str], make: Callable[[], Any],
                                          expected: str) -> None:
    features = make().fit(raw_data[0])
    message = one_error_line(capsys, "--keras", plain_model, "--feature-scaler", _pickle(zoo, "bad.pkl", features),
                             "--target-scaler", "none", "--out", zoo / "out-refused")
    assert "feature scaler's " + expected in message


def _pipeline_with(kind: str) -> Any:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, PowerTransformer, QuantileTransformer, StandardScaler

    step = {"quantile": QuantileTransformer(n_quantiles=20), "power": PowerTransformer(),
            "log": FunctionTransformer(np.log1p)}[kind]
    return Pipeline([("std", StandardScaler()), (kind, step)])


def test_pipeline_composition_is_exact(raw_data: tuple[np.ndarray, np.ndarray]) -> None:
    """numpy's composed multiply-add equals the Pipeline's transform and inverse_transform."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    from convert.scalers import to_affine

    x = raw_data[0]
    pipe = make_pipeline(StandardScaler(), MinMaxScaler((-2, 5)), RobustScaler()).fit(x)
    affine = to_affine(pipe, role="feature scaler")
    z = pipe.transform(x)
    assert np.allclose(affine.forward(x), z, rtol=1e-12, atol=1e-12)
    assert np.allclose(affine.inverse(z), pipe.inverse_transform(z), rtol=1e-12, atol=1e-9)
