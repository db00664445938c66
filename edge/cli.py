"""`fdedge <command>`: one entry point that dispatches to each part's own `main(argv)`.

Commands import lazily so that `fdedge serve` never loads the build step's heavy
dependencies (tensorflow, scikit-learn), and `fdedge --help` stays instant.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("edge.serve", "run the appliance (HTTP API, storage, live events)"),
    "demo": ("edge.demo", "serve the bundled model and stream simulated readings into it"),
    "token": ("edge.token_cli", "named tokens for sensors and people: add, list, revoke"),
    "model": ("edge.scoring.model_commands", "the model store: add, list, activate, rollback, remove"),
    "convert": ("convert.cli", "Keras model + scalers -> ONNX + scalers.npz + manifest.json"),
    "train": ("convert.train", "train a model on simulated data, or your own labelled CSV with --csv (build extra)"),
    "simulate": ("simulator.sensor", "virtual sensor: stream readings to an appliance"),
    "dataset": ("simulator.dataset", "write a simulated training set in FD-REST's CSV format"),
}


def usage() -> str:
    lines = ["usage: fdedge <command> [options]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`fdedge <command> --help` lists a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fdedge: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    result = module.main(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
