"""`fdedge demo`: the appliance on the bundled model with a virtual machine degrading in front
of it, so the dashboard has something to show within seconds."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from edge.settings import BUNDLED_MODEL


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.1)
    return False


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fdedge demo", description=__doc__)
    parser.add_argument("--port", type=int, default=int(os.environ.get("FDEDGE_PORT", 5000)))
    parser.add_argument("--data-dir", type=Path, default=Path("data/demo"))
    parser.add_argument("--model-dir", type=Path, default=BUNDLED_MODEL)
    parser.add_argument("--scenario", default="developing", help="healthy, developing, multi or random")
    parser.add_argument("--rate", type=float, default=2.0, help="readings per second")
    parser.add_argument("--minutes", type=float, default=5.0, help="minutes until the developing fault peaks")
    args = parser.parse_args(argv)
    # SIGTERM (systemd, docker stop, timeout) must stop the children too, as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)

    url = f"http://127.0.0.1:{args.port}"
    # Own sessions: a terminal's Ctrl-C reaches only this process, which stops the children once.
    server = subprocess.Popen([sys.executable, "-m", "edge", "serve", "--host", "127.0.0.1", "--port", str(args.port),
                               "--data-dir", str(args.data_dir), "--model-dir", str(args.model_dir)],
                              start_new_session=True)
    sensor = None
    try:
        if not _wait_ready(url, server):
            print(f"fdedge demo: the server did not become ready on {url} (is the port taken?)", file=sys.stderr)
            return 2
        sensor = subprocess.Popen([sys.executable, "-m", "edge", "simulate", "--url", url, "--scenario", args.scenario,
                                   "--rate", str(args.rate), "--minutes", str(args.minutes), "--machine", "demo-pump",
                                   "--buffer", str(args.data_dir / "sensor-buffer.db")], start_new_session=True)
        print(f"\n  FD-Edge demo is running.\n  Dashboard: {url}/\n  Report:    {url}/report\n"
              f"  Table:     {url}/dashboard\n  A virtual pump sends {args.rate:g} readings/s ({args.scenario}). "
              "Ctrl-C stops.\n", flush=True)
        while server.poll() is None and sensor.poll() is None:
            time.sleep(0.5)
        return server.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (sensor, server):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (sensor, server):
            if proc is not None:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
