"""The retraining loop end to end on a tiny network: readings in, operators label ranges,
the labelled export, `fdedge train --csv` on it, `fdedge model add` and `activate`, and
the running appliance swaps the new model in and scores with it."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import timedelta

import pytest

from edge.fdrest import FAULTS, format_time
from tests.reliability_helpers import wait_for

ROWS = 240


@pytest.mark.build
@pytest.mark.slow
def test_labels_retrain_convert_add_activate(make_client, settings, tmp_path, capsys):
    pytest.importorskip("tensorflow")
    from convert.train import main as train
    from edge.scoring.model_commands import main as model_cli
    from simulator.dataset import DEFAULT_START, write_csv

    client = make_client()
    source = write_csv(tmp_path / "sensor.csv", rows=ROWS, seed=3)
    r = client.post("/send", content=source.read_bytes(), headers={"Content-Type": "text/csv"})
    assert r.status_code == 200 and len(r.json()) == ROWS

    def at(i: int) -> str:
        return format_time(DEFAULT_START + timedelta(minutes=i)).replace(" ", "T") + "Z"

    half = ROWS // 2
    for body in ({"machine": "default", "start": at(0), "end": at(half - 1), "fault": "healthy"},
                 {"machine": "default", "start": at(half), "end": at(ROWS - 1), "fault": "fault2", "intensity": 70}):
        assert client.post("/api/labels", json={**body, "by": "shift A"}).status_code == 201

    exported = client.get("/generate_csv", params={"labelled": "1"})
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == ROWS
    assert [float(r["fault2"]) for r in rows] == [0.0] * half + [70.0] * (ROWS - half)
    assert all(float(r[f]) == 0.0 for r in rows for f in FAULTS if f != "fault2")
    labelled = tmp_path / "labelled.csv"
    labelled.write_text(exported.text)

    model_dir = tmp_path / "retrained"
    assert train(["--model-dir", str(model_dir), "--csv", str(labelled),
                  "--epochs", "2", "--width", "32", "--no-bench"]) == 0
    record = json.loads((model_dir / "training.json").read_text())
    assert record["data"]["source"] == "csv" and record["data"]["rows"] == ROWS
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["parity"]["relative_error"] <= manifest["parity"]["tolerance"]
    capsys.readouterr()

    data_dir = ["--data-dir", str(settings.data_dir)]
    assert model_cli([*data_dir, "add", str(model_dir)]) == 0
    version = capsys.readouterr().out.strip().splitlines()[-1]
    assert model_cli([*data_dir, "activate", version]) == 0
    assert wait_for(lambda: client.get("/api/model").json()["store_version"] == version, timeout=15), \
        "the running appliance did not swap the retrained model in"
    again = client.post("/send", content=source.read_bytes()[:4000].rsplit(b"\n", 1)[0] + b"\n",
                        headers={"Content-Type": "text/csv"})
    assert again.status_code == 200
    with sqlite3.connect(settings.db_path) as conn:
        newest = conn.execute("SELECT model_version FROM sensor_data ORDER BY id DESC LIMIT 1").fetchone()[0]
    assert newest == version  # scored by the retrained model
