"""Views using the authkit session engine and the shared Salesforce client."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from authkit.contrib.django import salesforce_client


@require_GET
def home(request: HttpRequest) -> JsonResponse:
    request.session["visits"] = request.session.get("visits", 0) + 1
    return JsonResponse({"user": request.session.get("user"), "visits": request.session["visits"]})


@require_POST
def login(request: HttpRequest) -> JsonResponse:
    # A real project calls django.contrib.auth.login(), which does the same to
    # the session: a new key (no session fixation), then the user id.
    username = request.POST["username"]
    request.session.cycle_key()
    request.session["user"] = username
    return JsonResponse({"user": username})


@require_POST
def logout(request: HttpRequest) -> JsonResponse:
    request.session.flush()  # deletes the stored session; the middleware deletes the cookie
    return JsonResponse({"user": None})


@require_GET
def accounts(request: HttpRequest) -> JsonResponse:
    if "user" not in request.session:
        return JsonResponse({"error": "log in first"}, status=401)
    # One client per process, shared by every request thread; its token is
    # shared by every process through the authkit storage.
    records = salesforce_client().query_all("SELECT Id, Name FROM Account ORDER BY Name")
    return JsonResponse({"accounts": [r["Name"] for r in records]})
