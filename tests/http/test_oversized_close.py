"""A client that sends `Connection: close` with a body over --max-body-bytes reads the 413, not a
connection reset: the rest of its body is read and dropped (within a bound) before the close."""

from __future__ import annotations

import http.client

import pytest

REPORT_SECTION = "hostile"
LIMIT = 1024 * 1024


def _post_oversized(port: int, announced: bool) -> tuple[int, bytes] | str:
    """As http.client (and so requests) does it: the whole body first, then read the answer."""
    body = b"[" + b"0" * (12 * LIMIT)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    headers = {"Content-Type": "application/json", "Connection": "close"}
    try:
        if announced:
            conn.request("POST", "/send", body=body, headers=headers)
        else:
            parts = (body[i:i + 65536] for i in range(0, len(body), 65536))
            conn.request("POST", "/send", body=parts, headers=headers, encode_chunked=True)
        response = conn.getresponse()
        return response.status, response.read()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "chunked"])
def test_an_oversized_body_on_a_closing_connection_gets_its_413(server_factory, linear_model, announced, report):
    server = server_factory(linear_model[0], args=["--max-body-bytes", str(LIMIT)]).start()
    answer = _post_oversized(server.port, announced)
    assert not isinstance(answer, str), answer
    assert answer[0] == 413 and b'"payload_too_large"' in answer[1], answer
    report.put("hostile", "oversized_close", "a body of 12x --max-body-bytes (12 MiB) with `Connection: close` (announced or "
                                             "chunked): the client reads its 413, no reset")
