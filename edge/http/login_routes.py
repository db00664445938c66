"""POST /login and /logout: a token exchanged for an HttpOnly, SameSite=Strict cookie.

Why: the pages' token form used to write the cookie from JavaScript, so any script on the page
could read the secret. The server sets it instead, HttpOnly (no script reads it) and
SameSite=Strict (no other site's request carries it), after checking the token is one of ours.
A browser's request from another site (its Origin) is refused: that site must not be able to swap
a visitor's token for its own. A request without an Origin is no browser's, and gains nothing
from a cookie it already has the token for."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edge.errors import BadRequest, Forbidden, Unauthorized
from edge.http.auth import COOKIE
from edge.http.json_bodies import json_body, require_json

MAX_TOKEN = 512
COOKIE_DAYS = 30


def _set(response: Response, request: Request, value: str, max_age: int) -> None:
    response.set_cookie(COOKIE, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def _foreign(request: Request) -> bool:
    return "origin" in request.headers and not request.app.auth.same_site(request.scope)


async def login(request: Request) -> Response:
    auth = request.app.auth
    if _foreign(request):
        raise Forbidden("log in from this appliance's own pages (the request's Origin is another site's)",
                        reason="origin")
    require_json(request, "a login")
    body: Any = await json_body(request)
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise BadRequest('give the token as {"token": "..."}', field="token")
    if len(token) > MAX_TOKEN:
        raise BadRequest(f"a token is at most {MAX_TOKEN} characters", field="token")
    role = auth.who(token, request.scope)
    if role is None:
        raise Unauthorized("the token was not accepted: it is none of this appliance's tokens")
    named = request.scope.get("fdedge_token")
    response = JSONResponse({"role": role, "name": getattr(named, "name", None)})
    _set(response, request, token, COOKIE_DAYS * 86400)
    return response


async def logout(request: Request) -> Response:
    if _foreign(request):
        raise Forbidden("log out from this appliance's own pages", reason="origin")
    response = JSONResponse({"logged_out": True})
    _set(response, request, "", 0)
    return response
