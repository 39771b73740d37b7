"""Open311 GeoReport v2 (JSON) over the same cases: services = categories, requests = posts.

Errors follow the GeoReport shape: ``[{"code": 400, "description": "..."}]``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import JSONResponse

from services.common.events import CaseStatus, Channel, Location
from services.intake.handlers import Forbidden, IntakeService, Invalid, NewPost, NotFound

open311_router = APIRouter(prefix="/open311/v2", tags=["open311"])
PHONE = re.compile(r"^1[3-9]\d{9}$")
MAX_RESULTS = 1000


def _service(request: Request) -> IntakeService:
    return request.app.state.runtime.service


def _service_entry(category: Any) -> dict[str, Any]:
    return {"service_code": category.id, "service_name": category.name, "description": category.description,
            "metadata": False, "type": "realtime", "keywords": "", "group": "问政"}


@open311_router.get("/services.json")
async def services(request: Request) -> list[dict[str, Any]]:
    return [_service_entry(c) for c in _service(request).reference.taxonomy.categories]


@open311_router.get("/services/{service_code}.json", responses={404: {}})
async def service_definition(request: Request,
                             service_code: Annotated[str, Path(max_length=64)]) -> dict[str, Any]:
    if _service(request).reference.category(service_code) is None:
        raise NotFound(f"no service {service_code}", "service_code")
    return {"service_code": service_code, "attributes": []}


def _clean(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    value = value.replace("\x00", "").strip()
    return value[:limit] or None


@open311_router.post("/requests.json", status_code=201, responses={400: {}, 403: {}, 429: {}})
async def create_request(
    request: Request,
    api_key: Annotated[str, Form(max_length=200)],
    service_code: Annotated[str, Form(max_length=64)],
    description: Annotated[str, Form(min_length=1, max_length=5000)],
    lat: Annotated[float | None, Form(ge=-90, le=90)] = None,
    long: Annotated[float | None, Form(ge=-180, le=180)] = None,
    address_string: Annotated[str | None, Form(max_length=200)] = None,
    phone: Annotated[str | None, Form(max_length=32)] = None,
    first_name: Annotated[str | None, Form(max_length=25)] = None,
    last_name: Annotated[str | None, Form(max_length=25)] = None,
    media_url: Annotated[str | None, Form(max_length=2000)] = None,
) -> JSONResponse:
    service = _service(request)
    runtime = request.app.state.runtime
    if not (runtime.credentials.open311_key_ok(api_key)
            or await runtime.accounts.machine_token_ok(api_key, "open311")):
        raise Forbidden("invalid api_key", "api_key")
    category = service.reference.category(service_code)
    if category is None:
        raise Invalid(f"unknown service_code {service_code!r}", "service_code")
    text = _clean(description, 5000)
    if not text:
        raise Invalid("description must not be blank", "description")
    if phone is not None and not PHONE.match(phone.strip()):
        raise Invalid("phone must be a mainland mobile number", "phone")
    name = " ".join(p for p in (_clean(first_name, 25), _clean(last_name, 25)) if p) or None
    attachments = (media_url.strip(),) if media_url and re.match(r"^https?://\S+$", media_url.strip()) else ()
    location = None
    if lat is not None or long is not None or address_string:
        location = Location(lat=lat, lng=long, address=_clean(address_string, 200))
    post = NewPost(channel=Channel.OPEN311, title=text[:30], body=text, contact_phone=phone.strip() if phone else None,
                   name=name, location=location, attachments=attachments, requested_category=category.id)
    accepted = await service.submit(post, client_ip=request.client.host if request.client else None,
                                    idempotency_key=None)
    return JSONResponse([{"service_request_id": accepted.body["tracking_number"],
                          "service_notice": "已受理，将在 3-5 个工作日内答复", "account_id": None}], status_code=201)


def _request_view(doc: dict[str, Any]) -> dict[str, Any]:
    status = CaseStatus(doc["status"])
    location = doc.get("location") or {}
    replies = doc.get("replies") or []
    timeline = doc.get("timeline") or []
    notes = replies[-1]["text"] if replies else (timeline[-1].get("note") if timeline else None)
    return {
        "service_request_id": doc["tracking_number"],
        "status": "closed" if status is CaseStatus.CLOSED else "open",
        "status_notes": notes,
        "service_name": doc.get("category_name"),
        "service_code": doc.get("category") or doc.get("requested_category"),
        "description": doc.get("body") if doc.get("publishable") else None,  # redacted, once publishable
        "agency_responsible": doc.get("department_name"),
        "service_notice": None,
        "requested_datetime": _iso(doc.get("created_at")),
        "updated_datetime": _iso(doc.get("updated_at")),
        "expected_datetime": _iso(doc.get("deadline")),
        "address": location.get("address"),
        "lat": location.get("lat"),
        "long": location.get("lng"),
        "media_url": (doc.get("attachments") or [None])[0] if doc.get("publishable") else None,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


@open311_router.get("/requests.json")
async def list_requests(
    request: Request,
    service_request_id: Annotated[str | None, Query(max_length=2000)] = None,
    service_code: Annotated[str | None, Query(max_length=64)] = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    status: Annotated[str | None, Query(pattern="^(open|closed)$")] = None,
) -> list[dict[str, Any]]:
    service = _service(request)
    query: dict[str, Any] = {}
    if service_request_id:
        query["tracking_number"] = {"$in": [s.strip().upper() for s in service_request_id.split(",") if s.strip()]}
    if service_code:
        query["$or"] = [{"category": service_code}, {"requested_category": service_code}]
    created: dict[str, Any] = {}
    for op, name, value in (("$gte", "start_date", start_date), ("$lte", "end_date", end_date)):
        if value is not None:
            if value.tzinfo is None:
                raise Invalid("dates need a time zone (ISO 8601, e.g. 2026-11-01T00:00:00Z)", name)
            created[op] = value
    if created:
        query["created_at"] = created
    if status == "closed":
        query["status"] = CaseStatus.CLOSED.value
    elif status == "open":
        query["status"] = {"$ne": CaseStatus.CLOSED.value}
    docs, _ = await service.store.list_cases(query, skip=0, limit=MAX_RESULTS)
    return [_request_view(d) for d in docs]


@open311_router.get("/requests/{service_request_id}.json", responses={404: {}})
async def get_request(request: Request,
                      service_request_id: Annotated[str, Path(max_length=64)]) -> list[dict[str, Any]]:
    doc = await _service(request).store.get_by_tracking(service_request_id.strip().upper())
    if doc is None:
        raise NotFound(f"no request {service_request_id}", "service_request_id")
    return [_request_view(doc)]
