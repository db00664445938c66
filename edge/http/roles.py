"""What each role may do: one table, read by edge.http.auth and printed in docs/API.md
(tests/http/test_roles.py checks that the two agree and walks every route with every role)."""

from __future__ import annotations

SHARED_SENSOR = "sensor (shared --token)"
SHARED_VIEWER = "viewer (shared --read-token)"
SHARED_ADMIN = "admin (shared --admin-token)"

# permission -> what it covers
PERMISSIONS = {
    "read": "every GET that returns data: /history, /generate_csv, /events, /api/*, /metrics",
    "ingest": "POST /send",
    "ack": "POST /api/alarms/{id}/ack",
    "label": "writes under /api/labels",
    "admin": "/api/models* and any other write",
}

# role -> the permissions it has. The shared --token keeps what it could do before roles.
ROLES: dict[str, frozenset[str]] = {
    "sensor": frozenset({"ingest"}),
    "viewer": frozenset({"read"}),
    "operator": frozenset({"read", "ack", "label"}),
    "admin": frozenset({"read", "ack", "label", "admin"}),
    SHARED_SENSOR: frozenset({"ingest", "read", "ack", "label"}),
    SHARED_VIEWER: frozenset({"read"}),
    SHARED_ADMIN: frozenset({"read", "ack", "label", "admin"}),
}

# Permissions a page's login cookie may exercise besides reads: SameSite=Strict keeps it off other
# sites' requests and edge.http.origins refuses a foreign Origin. Ingest and admin take the header.
COOKIE_WRITES = frozenset({"ack", "label"})

OPEN_PATHS = frozenset({"/", "/report", "/dashboard", "/machines", "/alarms", "/login", "/models", "/healthz",
                        "/readyz", "/openapi.json", "/api/model", "/favicon.ico"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_models(path: str) -> bool:
    """Model management (edge/http/model_routes.py): off unless an admin token is configured."""
    return path == "/api/models" or path.startswith("/api/models/")


def needed(method: str, path: str) -> str | None:
    """The permission a request needs, or None (open pages, static files, health, the model; reads
    only: every write needs a token once one is set). An unknown write needs admin, so a new
    PUT or DELETE route is guarded without anyone remembering to add it here."""
    if path in ("/login", "/logout"):
        return None  # the login page, and a POST's token in its body is the credential (login_routes)
    if is_models(path):
        return "admin"
    if method in SAFE_METHODS:
        return None if path in OPEN_PATHS or path.startswith("/static/") else "read"
    if path == "/send":
        return "ingest"
    if path.startswith("/api/alarms/") and path.endswith("/ack"):
        return "ack"
    if path == "/api/labels" or path.startswith("/api/labels/"):
        return "label"
    return "admin"


def table_markdown() -> str:
    """The table docs/API.md carries."""
    roles = list(ROLES)
    lines = ["| permission | covers | " + " | ".join(roles) + " |",
             "| --- | --- | " + " | ".join("---" for _ in roles) + " |"]
    for perm, covers in PERMISSIONS.items():
        cells = ["yes" if perm in ROLES[r] else "no" for r in roles]
        lines.append(f"| {perm} | {covers} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
