"""`fdedge token add|list|revoke`: named tokens in the appliance's SQLite file, whether the
appliance is running or not (a running one sees the change within a second)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge.store.database import connect, transaction
from edge.store.tokens import ROLES, add, list_tokens, revoke


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fdedge token", description="Named tokens for sensors and people.")
    p.add_argument("--data-dir", default=os.environ.get("FDEDGE_DATA_DIR", "data"),
                   help="directory holding the database, as fdedge serve's [FDEDGE_DATA_DIR] (default: data)")
    p.add_argument("--db", default=os.environ.get("FDEDGE_DB") or None,
                   help="the SQLite file (default: DATA_DIR/sensor_data.db) [FDEDGE_DB]")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="create a token and print its secret (once)")
    a.add_argument("--name", required=True, help='who or what holds it: "shift A", "press-3 sensor"')
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument("--machines", help="sensor tokens: comma-separated machine names it may send for")
    sub.add_parser("list", help="every token, without secrets")
    r = sub.add_parser("revoke", help="revoke a token by name or id")
    r.add_argument("token", metavar="NAME|ID")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    path = Path(args.db) if args.db else Path(args.data_dir) / "sensor_data.db"
    if args.command != "add" and not path.exists():
        print(f"fdedge token: no database at {path} (--data-dir or --db)", file=sys.stderr)
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path, busy_ms=5000)
    try:
        with transaction(conn):
            if args.command == "add":
                machines = [m.strip() for m in args.machines.split(",") if m.strip()] if args.machines else None
                secret = add(conn, args.name, args.role, machines)
                print(secret)
                print(f"token {args.name!r} ({args.role}) added; the secret above is shown only now",
                      file=sys.stderr)
            elif args.command == "list":
                rows = list_tokens(conn)
                print(f"{'id':>4}  {'name':<24} {'role':<9} {'machines':<20} {'created':<19}  "
                      f"{'last used':<19}  revoked")
                for t in rows:
                    print(f"{t['id']:>4}  {t['name'][:24]:<24} {t['role']:<9} {(t['machines'] or '*')[:20]:<20} "
                          f"{t['created']:<19}  {t['last_used'] or '-':<19}  {t['revoked'] or '-'}")
            else:
                print(f"token {revoke(conn, args.token)!r} revoked")
    except ValueError as exc:
        print(f"fdedge token: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    return 0
