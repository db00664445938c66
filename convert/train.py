"""`fdedge train`: a seeded FD-REST-family regressor on simulated readings or the user's own.

The simulated data set is the default (it made the bundled model); `--csv labelled.csv`
trains on readings in FD-REST's data.csv format instead, with the same held-out split,
scores and conversion. Writes the three sources exactly as FD-REST saves them
(dnn_model.keras and two joblib pickles), so everything downstream (`fdedge convert`,
FD-REST itself) treats a trained model and FD-REST's original alike; then converts,
benchmarks and writes MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from convert.errors import BuildExtraMissing, ConvertError

R2_TARGET = 0.9
# FD-REST fitted its target scaler on columns named adv0..adv7; the same names keep the
# pickles interchangeable with FD-REST's own tooling.
TARGET_NAMES = tuple(f"adv{i}" for i in range(8))


DEFAULT_ROWS = 60000


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    rows: int = DEFAULT_ROWS
    epochs: int = 200
    seed: int = 0
    batch_size: int = 256
    width: int = 512
    patience: int = 12
    learning_rate: float = 1e-3
    test_fraction: float = 0.15
    val_fraction: float = 0.1
    csv: Path | None = None  # labelled readings instead of the simulator
    catalogue: Path | None = None  # the model's own catalogue, copied to MODEL_DIR/catalogue.json


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fdedge train",
                                description="Train an FD-REST-family DNN on simulated readings (or your own "
                                            "labelled readings with --csv), then convert it.")
    p.add_argument("--model-dir", type=Path, default=Path("models/default"),
                   help="output directory (default: %(default)s)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--rows", type=int, help=f"simulated readings (default: {DEFAULT_ROWS})")
    data.add_argument("--csv", type=Path, metavar="LABELLED_CSV",
                      help="train on these labelled readings instead of simulated ones: FD-REST's data.csv "
                           "format (Time, the 35 features, fault0..fault7; columns by name, any order)")
    p.add_argument("--catalogue", type=Path, metavar="JSON",
                   help="the model's fault catalogue (see fdedge convert --catalogue); copied to "
                        "MODEL_DIR/catalogue.json so every later conversion uses it")
    p.add_argument("--epochs", type=int, default=200,
                   help="maximum epochs; early stopping usually ends sooner (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the data, the split and the weights (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256, help="(default: %(default)s)")
    p.add_argument("--width", type=int, default=512,
                   help="first layer width, halved per layer; 512 is FD-REST's (default: %(default)s)")
    p.add_argument("--patience", type=int, default=12, help="early-stopping patience in epochs (default: %(default)s)")
    p.add_argument("--no-convert", action="store_true", help="only write the sources and the training section")
    p.add_argument("--no-bench", action="store_true", help="convert but skip the benchmark")
    return p


def split(n: int, settings: Settings) -> tuple[Any, Any, Any]:
    """Seeded train / validation / test index sets."""
    import numpy as np

    order = np.random.default_rng(settings.seed).permutation(n)
    n_test = max(int(n * settings.test_fraction), 1)
    n_val = max(int(n * settings.val_fraction), 1)
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def fit_scalers(x: Any, y: Any) -> tuple[Any, Any]:
    """StandardScaler on features, MinMaxScaler on targets, with FD-REST's feature_names_in_.

    Fitting on a DataFrame is how FD-REST got its names; without pandas they are set
    directly, which is what `fit` would store.
    """
    import numpy as np
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    from edge.fdrest import FEATURES

    features = StandardScaler().fit(x)
    features.feature_names_in_ = np.array(FEATURES, dtype=object)
    targets = MinMaxScaler().fit(y)
    targets.feature_names_in_ = np.array(TARGET_NAMES, dtype=object)
    return features, targets


def scores(y_true: Any, y_pred: Any) -> list[dict[str, float]]:
    """Per-fault MAE and R² in fault units (what the dashboard shows)."""
    import numpy as np

    out = []
    for j in range(y_true.shape[1]):
        err = y_pred[:, j] - y_true[:, j]
        total = float(np.sum((y_true[:, j] - y_true[:, j].mean()) ** 2))
        out.append({"mae": float(np.mean(np.abs(err))),
                    "r2": 1.0 - float(np.sum(err ** 2)) / total if total > 0 else float("nan")})
    return out


def say(message: str) -> None:
    """Progress goes out at once: training runs for minutes, often with stdout in a log file."""
    print(message, flush=True)


def train(settings: Settings, log: Callable[[str], None] = say) -> dict[str, Any]:
    """Train, save the sources, and return the training record."""
    import numpy as np

    try:
        import joblib
        importlib.import_module("sklearn")  # present, or the build extra is missing: say so now
    except ImportError as exc:
        raise BuildExtraMissing(exc.name or "scikit-learn") from None
    from convert import network, training_data
    from convert.keras_model import import_tensorflow, quiet_stderr

    started = time.perf_counter()
    dataset = (training_data.from_csv(settings.csv) if settings.csv is not None
               else training_data.simulated(settings.rows, settings.seed))
    x, y = dataset.x, dataset.y
    train_idx, val_idx, test_idx = split(len(x), settings)
    feature_scaler, target_scaler = fit_scalers(x[train_idx], y[train_idx])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # arrays, not named frames: order is FD-REST's
        xs, ys = feature_scaler.transform(x).astype(np.float32), target_scaler.transform(y).astype(np.float32)

    tf, keras = import_tensorflow()
    keras.utils.set_random_seed(settings.seed)
    tf.config.experimental.enable_op_determinism()
    model = network.build(35, 8, settings.width)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="mse")
    started_fit = time.perf_counter()

    def progress(epoch: int, logs: dict[str, float] | None) -> None:
        if (epoch + 1) % 10 == 0:
            logs = logs or {}
            log(f"  epoch {epoch + 1}: loss {logs.get('loss', float('nan')):.3g}, "
                f"val_loss {logs.get('val_loss', float('nan')):.3g}, {time.perf_counter() - started_fit:.0f} s")

    callbacks = [
        keras.callbacks.LambdaCallback(on_epoch_end=progress),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=settings.patience, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=max(settings.patience // 3, 1),
                                          min_lr=1e-5),
    ]
    log(f"training on {len(train_idx)} readings ({len(val_idx)} validation, {len(test_idx)} held out), "
        f"widths {network.widths(settings.width)}, up to {settings.epochs} epochs")
    with quiet_stderr():  # tf.data's C++ log lines about graph attributes, nothing actionable
        history = model.fit(xs[train_idx], ys[train_idx], validation_data=(xs[val_idx], ys[val_idx]),
                            epochs=settings.epochs, batch_size=settings.batch_size, shuffle=True,
                            callbacks=callbacks, verbose=0)
    val_loss = history.history["val_loss"]
    best_epoch = int(np.argmin(val_loss)) + 1
    trained = time.perf_counter() - started

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        raw = np.asarray(model(xs[test_idx], training=False), dtype=np.float64)
        predicted = target_scaler.inverse_transform(raw)
    per_fault = scores(y[test_idx], predicted)

    d = settings.model_dir
    d.mkdir(parents=True, exist_ok=True)
    model.save(d / "dnn_model.keras")
    joblib.dump(feature_scaler, d / "feature_scaler.pkl")
    joblib.dump(target_scaler, d / "target_scaler.pkl")
    from convert import manifest, training_stats

    training_stats.save(d, training_stats.compute(x[train_idx], "training data", settings.seed),
                        manifest.sha256(d / "dnn_model.keras"))
    record = {
        "settings": {k: (str(v) if isinstance(v, Path) else v)
                     for k, v in asdict(settings).items()
                     if k not in ("model_dir", "csv", "catalogue") and not (k == "rows" and settings.csv)},
        "data": {"description": dataset.description, **dataset.provenance},
        "widths": network.widths(settings.width),
        "parameters": int(model.count_params()),
        "split": {"train": len(train_idx), "validation": len(val_idx), "test": len(test_idx)},
        "epochs_run": len(val_loss), "best_epoch": best_epoch, "best_val_loss": float(min(val_loss)),
        "seconds": round(trained, 1),
        "test": per_fault,
        "r2_target": R2_TARGET,
        "tools": {"tensorflow": tf.__version__, "keras": keras.__version__,
                  "scikit-learn": sys.modules["sklearn"].__version__, "numpy": np.__version__},
    }
    (d / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def training_section(record: dict[str, Any], catalogue: tuple[dict[str, str], ...] | None = None) -> str:
    from edge.fdrest import CATALOGUE

    s = record["settings"]
    names = catalogue or CATALOGUE
    rows = [
        f"| fault{i} | {names[i]['category']} | {m['mae']:.3f} | {m['r2']:.4f} | "
        f"{'yes' if m['r2'] >= record['r2_target'] else '**no**'} |"
        for i, m in enumerate(record["test"])
    ]
    missed = [f"fault{i}" for i, m in enumerate(record["test"]) if not m["r2"] >= record["r2_target"]]
    return "\n".join([
        "## Training",
        "",
        f"Data: {record['data']['description']}, split at random (seed {s['seed']}) into "
        f"{record['split']['train']} training, {record['split']['validation']} validation (early stopping) and "
        f"{record['split']['test']} held-out readings.",
        "",
        f"Network: FD-REST's family, Dense {'-'.join(map(str, record['widths']))} with LeakyReLU(0.01), "
        "BatchNormalization + Dropout(0.05) after the first four, linear Dense(8); "
        f"{record['parameters']:,} parameters. "
        f"Adam (lr {s['learning_rate']:g}, halved on plateau; FD-REST used RMSprop), MSE on MinMax-scaled targets, "
        f"batch {s['batch_size']}, best epoch {record['best_epoch']} of {record['epochs_run']} run "
        f"(max {s['epochs']}, patience {s['patience']}), {record['seconds']:.0f} s.",
        "",
        "Scalers as FD-REST saved them: `StandardScaler` on the features with `feature_names_in_` = FD-REST's 35 names "
        "(set explicitly; fitting on a DataFrame would need pandas), `MinMaxScaler` on the targets with "
        "`feature_names_in_` = adv0..adv7 (FD-REST's names, so the pickles stay interchangeable).",
        "",
        "Held-out scores in fault units (FD-REST's path: scikit-learn scaling + Keras), "
        f"target R² >= {record['r2_target']}:",
        "",
        "| fault | category | MAE | R² | meets target |",
        "| --- | --- | ---: | ---: | --- |",
        *rows,
        "",
        ("All faults meet the R² target." if not missed else f"Below the R² target: {', '.join(missed)}."),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in record["tools"].items()) + ".",
    ]) + "\n"


def _copy_catalogue(source: Path, model_dir: Path) -> None:
    target = model_dir / "catalogue.json"
    if source.resolve() != target.resolve():
        target.write_bytes(source.read_bytes())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = Settings(model_dir=args.model_dir, rows=DEFAULT_ROWS if args.rows is None else args.rows,
                        epochs=args.epochs, seed=args.seed, batch_size=args.batch_size, width=args.width,
                        patience=args.patience, csv=args.csv, catalogue=args.catalogue)
    try:
        if settings.rows < 100 or settings.epochs < 1 or settings.width < 4 or settings.batch_size < 1:
            raise ConvertError("need --rows >= 100, --epochs >= 1, --width >= 4 and --batch-size >= 1")
        from convert import catalogue, model_card

        entries = catalogue.load(settings.catalogue) if settings.catalogue else None  # refused before training
        record = train(settings)
        if settings.catalogue is not None:
            _copy_catalogue(settings.catalogue, settings.model_dir)
        name = settings.model_dir.resolve().name
        model_card.update(settings.model_dir, "training", training_section(record, entries), name)
        worst = min(record["test"], key=lambda m: m["r2"])
        r2 = ", ".join(f"{m['r2']:.3f}" for m in record["test"])
        print(f"held-out R² per fault: {r2} "
              f"(worst {worst['r2']:.3f}, MAE {worst['mae']:.2f}); sources in {settings.model_dir}")
        if args.no_convert:
            return 0
        from convert import cli

        rc = cli.main(["--model-dir", str(settings.model_dir)] + ([] if args.no_bench else ["--bench"]))
        return rc
    except ConvertError as exc:
        print(f"fdedge train: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
