"""The OpenAPI 3 description of the HTTP API, generated from the FD-REST vocabulary so it can
never disagree with what /send validates (schemathesis fuzzes against it)."""

from __future__ import annotations

from typing import Any

from edge.fdrest import DEFAULT_MACHINE, FAULTS, FEATURES, MAX_MACHINE_LEN
from edge.store.reading_queries import METRICS


def _q(name: str, schema: dict[str, Any], required: bool = False, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def ok_json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": "OK", "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _label_paths(common: dict[str, Any]) -> dict[str, Any]:
    """/api/labels (edge/store/labels.py): writes need the `label` permission."""
    text = {"note": {"type": "string", "maxLength": 1000}, "by": {"type": "string", "minLength": 1, "maxLength": 100}}
    when = {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number", "minimum": 0}]}
    on_alarm = {"type": "object", "required": ["alarm", "verdict"], "additionalProperties": False,
                "properties": {"alarm": {"type": "integer", "minimum": 1},
                               "verdict": {"type": "string", "enum": ["confirmed", "false_alarm", "maintenance_done"]},
                               "intensity": {"type": "number", "minimum": 0, "maximum": 100}, **text}}
    on_range = {"type": "object", "required": ["machine", "start", "end", "fault"], "additionalProperties": False,
                "properties": {"machine": {"type": "string", "minLength": 1, "maxLength": MAX_MACHINE_LEN},
                               "start": when, "end": when,
                               "fault": {"type": "string", "enum": [*FAULTS, "healthy"]},
                               "intensity": {"type": "number", "minimum": 0, "maximum": 100}, **text}}
    label_id = {"name": "label_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    return {
        "/api/labels": {
            "get": {
                "summary": "Labels, newest first; start/end keep those whose span overlaps them",
                "parameters": [_q("machine", {"type": "string"}), _q("start", {"type": "string"}),
                               _q("end", {"type": "string"}), _q("alarm", {"type": "integer", "minimum": 1}),
                               _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000})],
                "responses": {"200": ok_json({"type": "object"}), **common},
            },
            "post": {
                "summary": "Label an alarm (a verdict) or a machine's time range (a fault and intensity, or healthy)",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"oneOf": [on_alarm, on_range]}}}},
                "responses": {"201": ok_json({"type": "object"}), **common, "404": _error("no such alarm"),
                              "409": _error("the alarm has a label already"), "413": _error("too large"),
                              "415": _error("not JSON"), "503": _error("storage unavailable")},
            },
        },
        "/api/labels/{label_id}": {
            "delete": {
                "summary": "Remove a label",
                "parameters": [label_id],
                "responses": {"200": ok_json({"type": "object"}), **common, "404": _error("no such label"),
                              "503": _error("storage unavailable")},
            }
        },
    }


def _model_paths(common: dict[str, Any]) -> dict[str, Any]:
    """/api/models*: the admin token only; 403 `models_http_off` when no admin token is configured."""
    admin = {**common, "403": _error("not an admin token, or model management over HTTP is off (no admin token)")}
    refused = _error("the model was refused; `reason` names what was wrong (the store is unchanged)")
    version = {"name": "version", "in": "path", "required": True,
               "schema": {"type": "string", "pattern": "^[0-9a-f]{1,64}$"}}
    return {
        "/api/models": {
            "get": {
                "summary": "The model store: every version, the active, previous and shadow ones, the one scoring",
                "responses": {"200": ok_json({"type": "object"}), **admin},
            },
            "post": {
                "summary": "Add a model: the body is a tar.gz of a converted model directory (checked, not activated)",
                "requestBody": {"required": True, "content": {
                    "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"200": ok_json({"type": "object"}), "201": ok_json({"type": "object"}), **admin,
                              "413": _error("archive too large"), "422": refused},
            },
        },
        "/api/models/{version}/activate": {
            "post": {
                "summary": "Check a version (load, parity samples re-run here) and switch it in between two "
                           "writer groups",
                "parameters": [version],
                "responses": {"200": ok_json({"type": "object"}), **admin, "404": _error("no such version"),
                              "422": refused},
            }
        },
        "/api/models/{version}/shadow": {
            "post": {
                "summary": "Check a version as an activation does and let it score every new reading beside the "
                           "active model (off the ingest path, into fdedge_shadow)",
                "parameters": [version],
                "responses": {"200": ok_json({"type": "object"}), **admin, "404": _error("no such version"),
                              "422": refused},
            },
            "delete": {
                "summary": "Stop the shadow if it is this version (its rows stay until retention removes them)",
                "parameters": [version],
                "responses": {"200": ok_json({"type": "object"}), **admin, "404": _error("not the shadow")},
            },
        },
        "/api/models/shadow/off": {
            "post": {
                "summary": "Stop whatever shadow scores",
                "responses": {"200": ok_json({"type": "object"}), **admin},
            }
        },
        "/api/models/{version}/compare": {
            "get": {
                "summary": "The shadow's faults against the answering model's over the readings both scored: per "
                           "fault mean and max absolute difference, alarm agreement, the readings they disagree "
                           "on most",
                "parameters": [version, *(
                    {"name": n, "in": "query", "required": False, "schema": schema, "description": d}
                    for n, schema, d in (
                        ("start", {"type": "string"}, "readings at or after (ISO 8601 or epoch seconds)"),
                        ("end", {"type": "string"}, "readings before (ISO 8601 or epoch seconds)"),
                        ("machine", {"type": "string"}, "one machine's readings"),
                        ("top", {"type": "integer", "minimum": 0, "maximum": 100, "default": 10},
                         "how many of the largest disagreements"),
                        ("limit", {"type": "integer", "minimum": 1, "maximum": 200000, "default": 200000},
                         "the newest readings compared at most")))],
                "responses": {"200": ok_json({"type": "object"}), **admin, "400": _error("a bad parameter"),
                              "404": _error("no such version")},
            }
        },
        "/api/models/rollback": {
            "post": {
                "summary": "Make the previous version active and scoring again",
                "responses": {"200": ok_json({"type": "object"}), **admin, "422": refused},
            }
        },
    }


def build(version: str) -> dict[str, Any]:
    reading = {
        "type": "object",
        "required": list(FEATURES),
        "properties": {
            "Time": {
                "type": "string",
                "description": "YYYY-MM-DD HH:MM:SS (UTC) or ISO 8601 with offset; default: receive time",
            },
            "machine": {"type": "string", "minLength": 1, "maxLength": MAX_MACHINE_LEN, "default": DEFAULT_MACHINE},
            **{name: {"type": "number"} for name in FEATURES},
        },
    }
    faults = {"type": "object", "required": list(FAULTS), "properties": {f: {"type": "number"} for f in FAULTS}}
    machine = _q("machine", {"type": "string"}, description="only this machine")
    report = [
        _q("start", {"type": "string", "format": "date"}, True, "first day, YYYY-MM-DD"),
        _q("end", {"type": "string", "format": "date"}, True, "last day, inclusive"),
        _q("threshold", {"type": "number"}, description="only rows whose largest (or chosen) fault reaches this"),
        _q("fault", {"type": "string", "enum": list(FAULTS)}),
        machine,
        _q("tz", {"type": "string"}, description="IANA zone the days are read in (default UTC), e.g. America/New_York"),
        _q("offset", {"type": "string", "enum": ["0", "1"]},
           description="1: times as ISO 8601 with their offset in tz (default: FD-REST's YYYY-MM-DD HH:MM:SS UTC)"),
    ]
    common = {"400": _error("bad input"), "401": _error("token required")}
    alarm_log_filters = [
        _q("start", {"type": "string"},
           description="raised at or after (ISO 8601 or epoch seconds; UTC without an offset)"),
        _q("end", {"type": "string"}, description="raised before"),
        _q("acked", {"type": "string", "enum": ["true", "false"]}, description="only acknowledged, or only not"),
    ]
    alarm_id = {"name": "alarm_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "FD-Edge",
            "version": version,
            "description": "Machine fault detection appliance; FD-REST compatible.",
        },
        "paths": {
            "/send": {
                "post": {
                    "summary": "Score and store one reading (FD-REST) or a batch",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/Reading"},
                                        {
                                            "type": "array",
                                            "items": {"$ref": "#/components/schemas/Reading"},
                                            "minItems": 1,
                                        },
                                    ]
                                }
                            },
                            "application/x-ndjson": {"schema": {"type": "string"}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": {**ok_json({"type": "array", "items": {"$ref": "#/components/schemas/Faults"}}),
                                "headers": {"X-FDEdge-Quality": {
                                    "description": "the data-quality verdict of the batch's worst reading: "
                                                   "`ok`, `unknown`, or `suspect|invalid; score=S; "
                                                   "reasons=feature:kind,...`",
                                    "schema": {"type": "string"}}}},
                        **common,
                        "413": _error("too large"),
                        "415": _error("content type"),
                        "422": _error("invalid reading"),
                        "503": _error("storage unavailable"),
                    },
                }
            },
            "/history": {
                "get": {
                    "summary": "One column's latest values, oldest first (FD-REST)",
                    "parameters": [
                        _q("metric", {"type": "string", "enum": list(METRICS)}, True),
                        _q("limit", {"type": "integer", "minimum": 1, "maximum": 100000}),
                        machine,
                    ],
                    "responses": {
                        "200": ok_json(
                            {
                                "type": "object",
                                "properties": {
                                    "timestamps": {"type": "array", "items": {"type": "string"}},
                                    "values": {"type": "array", "items": {"type": "number", "nullable": True}},
                                },
                            }
                        ),
                        **common,
                    },
                }
            },
            "/generate_csv": {
                "get": {
                    "summary": "CSV export of a date range (FD-REST), streamed",
                    "parameters": [*report, _q("labelled", {"type": "string", "enum": ["0", "1"]},
                                               description="1: the labelled readings in data.csv's format, the "
                                                           "labels' targets as fault columns (docs/API.md)")],
                    "responses": {
                        "200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
                        **common,
                        "404": _error("nothing matches"),
                    },
                }
            },
            "/api/count": {
                "get": {
                    "summary": "Rows an export would hold",
                    "parameters": report,
                    "responses": {
                        "200": ok_json({"type": "object", "properties": {"count": {"type": "integer"}}}),
                        **common,
                    },
                }
            },
            "/api/latest": {
                "get": {
                    "summary": "Newest readings first",
                    "parameters": [_q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}), machine],
                    "responses": {"200": ok_json({"type": "object"}), **common},
                }
            },
            "/api/machines": {
                "get": {"summary": "Machines with stored readings: count, first and last time, newest row id; "
                                   "last_seen (arrival, the appliance's clock), silent_s, stale; drift (null: unknown)",
                        "responses": {"200": ok_json({"type": "object"}), **common}}
            },
            "/api/model/changes": {
                "get": {"summary": "When the scoring model changed: each switch with the first reading the new "
                                   "model scored, oldest first (with start: the one in effect then first)",
                        "parameters": [_q("start", {"type": "string"}), _q("end", {"type": "string"}), machine],
                        "responses": {"200": ok_json({"type": "object"}), **common}}
            },
            "/api/explain": {
                "get": {"summary": "The features behind a stored reading's largest fault (occlusion against the "
                                   "training baseline, in σ); `healthy` when every fault is below the warning level",
                        "parameters": [_q("id", {"type": "integer", "minimum": 1}),
                                       _q("machine", {"type": "string", "maxLength": 64}),
                                       _q("fault", {"type": "string", "enum": list(FAULTS)})],
                        "responses": {"200": ok_json({"type": "object"}), **common,
                                      "404": _error("no such reading, or the machine has none"),
                                      "409": _error("the reading lacks features (an FD-REST row)")}}
            },
            "/api/fleet": {
                "get": {"summary": "Every machine of /api/machines with its newest reading (`latest`) and its active "
                                   "alarms (`alarms`: count, unacked, worst severity, faults): the fleet overview; "
                                   "with spark=N each machine's largest fault in N buckets over the spark_s seconds "
                                   "before its newest reading (`spark`)",
                        "parameters": [
                            _q("spark", {"type": "integer", "minimum": 2, "maximum": 240}),
                            _q("spark_s", {"type": "integer", "minimum": 60, "maximum": 604800}),
                        ],
                        "responses": {"200": ok_json({"type": "object"}), **common}}
            },
            "/api/storage": {
                "get": {"summary": "Database size, bytes written per reading and per day, estimated card life, "
                                   "integrity check, rollups",
                        "responses": {"200": ok_json({"type": "object"}), **common}}
            },
            "/api/uplink": {
                "get": {"summary": "The uplink to a central broker: state, cursor, lag in readings and seconds, "
                                   "published and skipped counts (`enabled: false` without --uplink-url)",
                        "responses": {"200": ok_json({"type": "object"}), **common}}
            },
            "/api/series": {
                "get": {
                    "summary": "Downsampled time series for charts: mean (faults: max), min and max per bucket, "
                               "from raw rows or the minute/hour rollups (`resolution`)",
                    "parameters": [
                        _q("start", {"type": "string"}),
                        _q("end", {"type": "string"}),
                        _q("metrics", {"type": "string"}),
                        _q("points", {"type": "integer", "minimum": 10, "maximum": 5000}),
                        machine,
                    ],
                    "responses": {"200": ok_json({"type": "object"}), **common},
                }
            },
            "/api/alarms": {
                "get": {
                    "summary": "Alarms, newest first (docs/ALARMS.md)",
                    "parameters": [
                        _q("state", {"type": "string", "enum": ["active", "cleared", "all"]}),
                        machine,
                        _q("fault", {"type": "string", "enum": list(FAULTS)}),
                        _q("kind", {"type": "string", "enum": ["fault", "stale", "quality"]},
                           description="fault episodes, or machines that fell silent"),
                        _q("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                        _q(
                            "before",
                            {"type": "integer", "minimum": 1},
                            description="page back: alarms with a smaller id",
                        ),
                        *alarm_log_filters,
                    ],
                    "responses": {"200": ok_json({"type": "object"}), **common},
                }
            },
            "/api/alarms.csv": {
                "get": {
                    "summary": "The alarm log as CSV with the filters of /api/alarms (newest first, ISO UTC times)",
                    "parameters": [
                        _q("state", {"type": "string", "enum": ["active", "cleared", "all"]}),
                        machine,
                        _q("fault", {"type": "string", "enum": list(FAULTS)}),
                        _q("kind", {"type": "string", "enum": ["fault", "stale"]}),
                        _q("limit", {"type": "integer", "minimum": 1, "maximum": 100000}),
                        *alarm_log_filters,
                    ],
                    "responses": {"200": {"description": "CSV",
                                          "content": {"text/csv": {"schema": {"type": "string"}}}}, **common},
                }
            },
            "/api/alarms/{alarm_id}": {
                "get": {
                    "summary": "One alarm",
                    "parameters": [alarm_id],
                    "responses": {"200": ok_json({"type": "object"}), **common, "404": _error("no such alarm")},
                }
            },
            "/api/alarms/{alarm_id}/ack": {
                "post": {
                    "summary": "Acknowledge an alarm (needs the ingest token)",
                    "parameters": [alarm_id],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["by"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "by": {"type": "string", "minLength": 1, "maxLength": 100},
                                        "note": {"type": "string", "maxLength": 2000},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": ok_json({"type": "object"}),
                        **common,
                        "404": _error("no such alarm"),
                        "409": _error("already acknowledged by someone else"),
                        "413": _error("too large"),
                        "503": _error("storage unavailable"),
                    },
                }
            },
            "/api/model": {
                "get": {
                    "summary": "Model manifest, catalogue and thresholds",
                    "responses": {"200": ok_json({"type": "object"})},
                }
            },
            **_label_paths(common),
            **_model_paths(common),
            "/events": {
                "get": {
                    "summary": "Server-Sent Events of every stored reading",
                    "parameters": [
                        machine,
                        _q("last_event_id", {"type": "integer"}),
                        _q(
                            "shape",
                            {"type": "string", "enum": ["objects", "arrays"], "default": "objects"},
                            description="reading events as reading objects, or as x/y arrays named by the hello event",
                        ),
                    ],
                    "responses": {"200": {"description": "text/event-stream"}, **common},
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": ok_json({"type": "object"})}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness; with --mqtt-url also the broker's state (never a reason to be unready)",
                    "responses": {"200": ok_json({"type": "object"}), "503": {"description": "not ready"}},
                }
            },
            "/metrics": {
                "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}, **common}}
            },
        },
        "components": {
            "schemas": {
                "Reading": reading,
                "Faults": faults,
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
