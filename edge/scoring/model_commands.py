"""`fdedge model add|list|activate|shadow|rollback|remove`: the model store from the command line.

It writes the store directly; a running appliance notices the new record within a second and
swaps the model in (edge/scoring/model_store.watch), so the same commands serve a stopped one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from edge.errors import ModelRejected, StartupError
from edge.scoring.model_store import ModelStore


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fdedge model", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("FDEDGE_DATA_DIR", "data")),
                   help="the appliance's data directory (the store is DATA_DIR/models; env FDEDGE_DATA_DIR)")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("add", help="check and keep a converted model (a directory or a tar.gz)").add_argument(
        "source", type=Path)
    sub.add_parser("list", help="the kept versions, the active one marked").add_argument(
        "--json", action="store_true", help="print JSON")
    sub.add_parser("activate", help="check a version loads and make it active").add_argument("version")
    shadow = sub.add_parser("shadow", help="check a version and let it score beside the active one (or --off)")
    shadow.add_argument("version", nargs="?")
    shadow.add_argument("--off", action="store_true", help="stop the shadow")
    sub.add_parser("rollback", help="make the previous version active again")
    sub.add_parser("remove", help="delete a version that is not active").add_argument("version")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        store = ModelStore(args.data_dir / "models")
        if args.command == "add":
            print(store.add(args.source))
        elif args.command == "list":
            models = store.list()
            if args.json:
                print(json.dumps({"models": models, **store.state()}, indent=1))
            for m in [] if args.json else models:
                mark = "*" if m["active"] else ("-" if m["previous"] else ("s" if m["shadow"] else " "))
                print(f"{mark} {m['version']}  {m['name']:<20} {m['created'] or ''}")
        elif args.command == "activate":
            store.activate(args.version)
            print(f"active: {args.version}")
        elif args.command == "shadow":
            if args.off == bool(args.version):
                print("fdedge model shadow: give a VERSION or --off", file=sys.stderr)
                return 2
            if args.off:
                was = store.shadow_off()
                print(f"shadow off (was {was})" if was else "shadow off (there was none)")
            else:
                store.shadow(args.version)
                print(f"shadow: {args.version}")
        elif args.command == "rollback":
            print(f"active: {store.rollback()}")
        elif args.command == "remove":
            store.remove(args.version)
            print(f"removed: {args.version}")
    except (ModelRejected, StartupError) as exc:
        print(f"fdedge model: {exc}", file=sys.stderr)
        return 1
    return 0
