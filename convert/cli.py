"""`fdedge convert`: Keras model + scikit-learn scalers -> model.onnx + scalers.npz + manifest.json.

Imports only the standard library at module level: `--if-stale` has to answer on a
runtime-only install (no TensorFlow), and `make demo` calls it on every start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from convert import manifest
from convert.errors import ConvertError

DEFAULT_MODEL_DIR = Path("models/default")
NONE = "none"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fdedge convert",
        description="Convert FD-REST-style artifacts (dnn_model.keras, feature_scaler.pkl, target_scaler.pkl) "
                    "into what the appliance serves (model.onnx, scalers.npz, manifest.json), "
                    "and verify the result against Keras.",
    )
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                   help="directory holding the sources and receiving the outputs (default: %(default)s)")
    p.add_argument("--keras", type=Path,
                   help="Keras model: a .keras archive, a legacy .h5 file or a TensorFlow SavedModel directory "
                        "(default: MODEL_DIR/dnn_model.keras)")
    p.add_argument("--feature-scaler", help="feature scaler pickle, or 'none' (default: MODEL_DIR/feature_scaler.pkl)")
    p.add_argument("--target-scaler", help="target scaler pickle, or 'none' (default: MODEL_DIR/target_scaler.pkl)")
    p.add_argument("--out", type=Path, help="output directory (default: MODEL_DIR)")
    p.add_argument("--catalogue", type=Path, metavar="JSON",
                   help="the model's fault catalogue: 8 entries (fault0 first) with category, observed and "
                        "root_causes (default: MODEL_DIR/catalogue.json if present, else FD-REST's)")
    p.add_argument("--custom-objects", type=Path, metavar="PY",
                   help="Python file defining the model's custom activations, layers or model classes; "
                        "THIS RUNS THE FILE'S CODE, so give only files you trust (never loaded by default)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--sample", type=Path, metavar="CSV",
                      help="readings to check parity on (FD-REST data.csv layout); default: 1024 readings "
                           "drawn from the feature scaler's statistics")
    data.add_argument("--reference", type=Path, metavar="CSV",
                      help="readings with expected fault0..fault7 (reference_predictions.csv layout): "
                           "checked against Keras and against the expected values")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest allowed |Keras - ONNX| as a fraction of the output range (default: %(default)g)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default: %(default)s)")
    p.add_argument("--optimize", choices=("auto", "basic", "none"), default="auto",
                   help="offline onnxruntime graph optimisation: auto keeps it only if measurably faster "
                        "(default: %(default)s)")
    p.add_argument("--if-stale", action="store_true",
                   help="do nothing if manifest.json records the current sources' sha256 and the outputs exist")
    p.add_argument("--name", help="model name in the manifest (default: the output directory's name)")
    p.add_argument("--stats-only", action="store_true",
                   help="only (re)compute training_stats in the existing manifest.json, from "
                        "MODEL_DIR/training_stats.json (written by fdedge train), else --sample, "
                        "else the feature scaler; the model is untouched")
    p.add_argument("--bench", action="store_true",
                   help="benchmark afterwards and write MODEL_CARD.md's benchmark section")
    return p


def _scaler_path(value: str | None, default: Path) -> Path | None:
    if value is None:
        return default
    return None if value.lower() == NONE else Path(value)


def sources(args: argparse.Namespace) -> manifest.Sources:
    d = args.model_dir
    catalogue = args.catalogue or (d / "catalogue.json" if (d / "catalogue.json").is_file() else None)
    return manifest.Sources(
        keras=args.keras or d / "dnn_model.keras",
        feature_scaler=_scaler_path(args.feature_scaler, d / "feature_scaler.pkl"),
        target_scaler=_scaler_path(args.target_scaler, d / "target_scaler.pkl"),
        catalogue=catalogue,
        custom_objects=args.custom_objects,
    )


def bench(out_dir: Path, src: manifest.Sources, name: str, log: Any = print) -> None:
    """Benchmark the converted model against its Keras source and update the model card."""
    from convert import benchmark, custom_objects, keras_model, model_card

    objects = custom_objects.load(src.custom_objects) if src.custom_objects else None
    figures = benchmark.run(out_dir, keras_model.load(src.keras, objects))
    model_card.update(out_dir, "benchmark", benchmark.markdown(figures), name)
    log(f"benchmark: onnxruntime {figures.onnx_batch1_us:.1f} µs/reading at batch 1, "
        f"{figures.onnx_batch256_us:.2f} at batch 256; Keras predict {figures.keras_predict_batch1_us:,.0f} µs")


def add_stats(out_dir: Path, src: manifest.Sources, sample: Path | None) -> dict[str, Any]:
    from convert import scalers, training_stats
    from edge import fdrest

    current = manifest.read(out_dir) or {}
    features = tuple(current.get("features") or fdrest.FEATURES)
    loaded = scalers.load(src.feature_scaler, label="feature scaler")
    affine = loaded.affine if loaded else scalers.identity(len(features))
    keras_hash = manifest.sha256(src.keras) if src.keras.exists() else current.get("sources", {}).get("dnn_model.keras")
    stats = training_stats.choose(src.keras.parent, keras_hash, sample, affine, features)
    training_stats.add_to_manifest(out_dir, stats)
    return stats


def convert(args: argparse.Namespace) -> int:
    src = sources(args)
    out_dir: Path = args.out or args.model_dir
    name = args.name or out_dir.resolve().name
    if args.tolerance <= 0:
        raise ConvertError(f"--tolerance must be positive, got {args.tolerance}")
    reason = manifest.staleness(out_dir, src, args.opset)
    if args.stats_only:
        stats = add_stats(out_dir, src, args.sample)
        print(f"{out_dir / manifest.MANIFEST}: training_stats from {stats['source']} ({stats['n']} readings)")
    elif args.if_stale and reason is None:
        current = manifest.read(out_dir) or {}
        print(f"{out_dir}: up to date ({current.get('name')} {current.get('version')})")
    else:
        from convert import model_card, pipeline

        print(f"{out_dir}: converting ({reason or 'requested'})")
        document = pipeline.run(pipeline.Job(
            sources=src, out_dir=out_dir, name=name, opset=args.opset, tolerance=args.tolerance,
            sample=args.sample, reference=args.reference, optimize=args.optimize,
        ))
        model_card.update(out_dir, "conversion", model_card.conversion_section(document), name)
        parity, opt = document["parity"], document["graph_optimization"]
        print(f"wrote {out_dir / manifest.ONNX} ({(out_dir / manifest.ONNX).stat().st_size:,} bytes, "
              f"version {document['version']}), {manifest.SCALERS}, {manifest.MANIFEST}")
        print(f"parity on {parity['samples']} {parity['source']} readings: "
              f"max abs error {parity['max_abs_error']:.3g}, "
              f"{parity['relative_error']:.2g} of the output range (tolerance {parity['tolerance']:g})")
        print(f"graph optimisation ({opt['level']}): {'kept' if opt['kept'] else 'not kept'}, {opt['reason']}")
    if args.bench:
        bench(out_dir, src, name)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return convert(args)
    except ConvertError as exc:
        print(f"fdedge convert: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
