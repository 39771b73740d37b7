"""Open311 GeoReport v2 over the same cases: services = categories, requests = posts.

Every method answers JSON or XML by its suffix (``.json`` / ``.xml``), errors too (GeoReport's shape:
``[{"code": 400, "description": "..."}]`` or ``<errors><error>…</error></errors>``). Beyond the core spec:
the discovery document, ``tokens/{token}``, ``jurisdiction_id``, comma-separated ``service_request_id``,
``status`` and ``service_code``, ``api_key`` in the body or the query, e-mail contact, and the extensions
real deployments use: ``page``/``page_size`` and ``extensions=true`` (``extended_attributes`` and the
update history as ``notes``).

The ``service_code`` a client posted is the one it gets back (a client filtering by it finds its own
request); the category the router chose is shown separately (``extended_attributes.routed_service_code``).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl
from xml.etree import ElementTree as ET

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from services.common.events import CaseStatus, Channel, Location
from services.common.redaction import redact_text
from services.intake.handlers import Forbidden, IntakeService, NewPost, NotFound, ServiceError

open311_router = APIRouter(prefix="/open311", tags=["open311"])
MAX_RESULTS = 1000
DEFAULT_WINDOW = timedelta(days=90)
SPECIFICATION = "http://wiki.open311.org/GeoReport_v2"
XML_MEDIA = "text/xml; charset=utf-8"
MOBILE = re.compile(r"^1[3-9]\d{9}$")
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
Format = Literal["json", "xml"]
FormatPath = Annotated[Format, Path(description="json or xml")]


class BadRequest(ServiceError):
    status, code = 400, "bad_request"


# --------------------------------------------------------------------------------------------------
# Answers in both formats
# --------------------------------------------------------------------------------------------------

# the XML element of a list and of each item, per kind of answer
_XML_SHAPES = {"services": ("services", "service"), "requests": ("service_requests", "request"),
               "errors": ("errors", "error")}
_XML_ITEM_NAMES = {"attributes": "attribute", "values": "value", "notes": "note", "endpoints": "endpoint",
                   "formats": "format"}


def _xml_value(parent: ET.Element, name: str, value: Any) -> None:
    element = ET.SubElement(parent, name)
    if isinstance(value, dict):
        for key, inner in value.items():
            _xml_value(element, key, inner)
    elif isinstance(value, list):
        for inner in value:
            _xml_value(element, _XML_ITEM_NAMES.get(name, "item"), inner)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = str(value)


def to_xml(kind: str, payload: Any) -> bytes:
    """GeoReport's XML: a list as ``<services><service>…``, an object under its own root element."""
    if kind in _XML_SHAPES:
        root_name, item_name = _XML_SHAPES[kind]
        root = ET.Element(root_name)
        for item in payload:
            _xml_value(root, item_name, item)
            root[-1].tag = item_name
    else:
        root = ET.Element(kind)
        for key, value in payload.items():
            _xml_value(root, key, value)
    return b'<?xml version="1.0" encoding="utf-8"?>' + ET.tostring(root, encoding="utf-8", xml_declaration=False)


def answer(fmt: str, kind: str, payload: Any, status_code: int = 200) -> Response:
    if fmt == "xml":
        return Response(to_xml(kind, payload), status_code=status_code, media_type=XML_MEDIA)
    return JSONResponse(payload, status_code=status_code)


def open311_error(path: str, status_code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """GeoReport's error list, in the format the URL (its ``path``) asked for."""
    fmt = "xml" if path.endswith(".xml") else "json"
    response = answer(fmt, "errors", [{"code": status_code, "description": message}], status_code)
    response.headers.update(headers or {})
    return response


def _documented(kind: str, created: bool = False) -> dict[int | str, dict[str, Any]]:
    ok = 201 if created else 200
    error = {"content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}},
                         "text/xml": {"schema": {"type": "string"}}}}
    body_schema: dict[str, Any] = {"type": "array", "items": {"type": "object"}} if kind in _XML_SHAPES or created \
        else {"type": "object"}
    return {ok: {"description": "the answer", "content": {"application/json": {"schema": body_schema},
                                                          "text/xml": {"schema": {"type": "string"}}}},
            400: {"description": "bad request", **error}, 403: {"description": "bad api_key", **error},
            404: {"description": "not found", **error}, 413: {"description": "body too large", **error},
            422: {"description": "invalid parameter", **error}, 429: {"description": "too many requests", **error}}


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def _service(request: Request) -> IntakeService:
    return request.app.state.runtime.service


def _check_jurisdiction(request: Request, jurisdiction_id: str | None) -> None:
    served = _service(request).settings.open311_jurisdiction_id
    if jurisdiction_id and jurisdiction_id.strip() != served:
        raise NotFound(f"jurisdiction_id {jurisdiction_id!r} is not served here (this is {served!r})",
                       "jurisdiction_id")


def split_list(value: str | None) -> list[str]:
    """``a,b , c`` → ``["a", "b", "c"]`` (GeoReport's comma-separated multiple values)."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def normalise_phone(raw: str) -> str | None:
    """A mainland mobile number however it was written (``+86 136-0000-0003``, ``(0086)13600000003``,
    full-width digits), or None when it is not one."""
    text = unicodedata.normalize("NFKC", raw)
    digits = re.sub(r"[\s\-.()/]", "", text)
    for prefix in ("+86", "0086", "86"):
        if digits.startswith(prefix) and len(digits) - len(prefix) == 11:
            digits = digits[len(prefix):]
            break
    return digits if MOBILE.match(digits) else None


def _form_charset(content_type: str) -> str:
    match = re.search(r"charset=([\w\-]+)", content_type, re.IGNORECASE)
    charset = (match.group(1) if match else "utf-8").lower()
    return {"gb2312": "gb18030", "gbk": "gb18030"}.get(charset, charset)


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body decoded as UTF-8 (or the charset the client named), percent-encoded or raw,
    with the query string's values as defaults (``api_key`` may come either way)."""
    values = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        values.update({k: v for k, v in form.items() if isinstance(v, str)})
        return values
    raw = await request.body()
    try:
        text = raw.decode(_form_charset(content_type))
    except (LookupError, UnicodeDecodeError) as exc:
        raise BadRequest("the form body is not valid UTF-8 (or the charset it names)", "body") from exc
    for key, value in parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict"):
        values[key] = value
    return values


def _text(values: dict[str, str], name: str, limit: int) -> str | None:
    value = values.get(name)
    if value is None:
        return None
    value = value.replace("\x00", "").strip()
    if len(value) > limit:
        raise BadRequest(f"{name} is longer than {limit} characters", name)
    return value or None


def _number(values: dict[str, str], name: str, low: float, high: float) -> float | None:
    value = _text(values, name, 32)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise BadRequest(f"{name} must be a number", name) from None
    if not low <= number <= high:
        raise BadRequest(f"{name} must be between {low} and {high}", name)
    return number


# --------------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------------


def _service_entry(category: Any) -> dict[str, Any]:
    return {"service_code": category.id, "service_name": category.name, "description": category.description,
            "metadata": False, "type": "realtime", "keywords": "", "group": "问政"}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _notes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The update history, oldest first: each public step and each reply."""
    notes = [{"datetime": _iso(t.get("at")), "summary": redact_text(t.get("note")), "type": t.get("type"),
              "description": None} for t in doc.get("timeline") or []]
    notes += [{"datetime": _iso(r.get("at")), "summary": "承办单位答复", "type": "replied",
               "description": redact_text(r.get("text"))} for r in doc.get("replies") or []]
    return sorted(notes, key=lambda note: note["datetime"] or "")


def request_view(doc: dict[str, Any], reference: Any, *, extensions: bool = False) -> dict[str, Any]:
    status = CaseStatus(doc["status"])
    location = doc.get("location") or {}
    replies = doc.get("replies") or []
    timeline = doc.get("timeline") or []
    notes = replies[-1]["text"] if replies else (timeline[-1].get("note") if timeline else None)
    code = doc.get("requested_category") or doc.get("category")
    category = reference.category(code)
    view = {
        "service_request_id": doc["tracking_number"],
        "status": "closed" if status is CaseStatus.CLOSED else "open",
        "status_notes": redact_text(notes),
        "service_name": category.name if category else doc.get("category_name"),
        "service_code": code,
        "description": redact_text(doc.get("body")),  # publishable text only, whatever the store holds
        "agency_responsible": reference.unit_name(doc.get("department_id")),
        "service_notice": None,
        "requested_datetime": _iso(doc.get("created_at")),
        "updated_datetime": _iso(doc.get("updated_at")),
        "expected_datetime": _iso(doc.get("deadline")),
        "address": redact_text(location.get("address")),
        "address_id": None,
        "zipcode": None,
        "lat": location.get("lat"),
        "long": location.get("lng"),
        "media_url": (doc.get("attachments") or [None])[0],
    }
    if extensions:
        view["extended_attributes"] = {
            "tracking_number": doc["tracking_number"], "case_status": status.value,
            "routed_service_code": doc.get("category"),
            "routed_service_name": reference.category_name(doc.get("category")),
            "agency_id": doc.get("department_id"), "handling_round": doc.get("handling_round", 1),
            "county": location.get("county"), "township": location.get("township"),
        }
        view["notes"] = _notes(doc)
    return view


# --------------------------------------------------------------------------------------------------
# Routes
# --------------------------------------------------------------------------------------------------

Jurisdiction = Annotated[str | None, Query(max_length=100)]


@open311_router.get("/discovery.{fmt}", responses=_documented("discovery"))
@open311_router.get("/v2/discovery.{fmt}", responses=_documented("discovery"), include_in_schema=False)
async def discovery(request: Request, fmt: FormatPath) -> Response:
    settings = _service(request).settings
    base = str(request.base_url).rstrip("/") + "/open311/v2"
    return answer(fmt, "discovery", {
        "changeset": settings.open311_changeset, "contact": settings.open311_contact,
        "key_service": settings.open311_key_service,
        "endpoints": [{"specification": SPECIFICATION, "url": base, "changeset": settings.open311_changeset,
                       "type": "production", "formats": ["application/json", "text/xml"]}],
    })


@open311_router.get("/v2/services.{fmt}", responses=_documented("services"))
async def services(request: Request, fmt: FormatPath, jurisdiction_id: Jurisdiction = None) -> Response:
    _check_jurisdiction(request, jurisdiction_id)
    return answer(fmt, "services", [_service_entry(c) for c in _service(request).reference.taxonomy.categories])


@open311_router.get("/v2/services/{service_code}.{fmt}", responses=_documented("service_definition"))
async def service_definition(request: Request, fmt: FormatPath,
                             service_code: Annotated[str, Path(max_length=64)],
                             jurisdiction_id: Jurisdiction = None) -> Response:
    _check_jurisdiction(request, jurisdiction_id)
    if _service(request).reference.category(service_code) is None:
        raise NotFound(f"no service {service_code}", "service_code")
    return answer(fmt, "service_definition", {"service_code": service_code, "attributes": []})


_FORM_FIELDS = {name: {"type": "string"} for name in (
    "api_key", "jurisdiction_id", "service_code", "description", "lat", "long", "address_string", "address_id",
    "email", "device_id", "account_id", "first_name", "last_name", "phone", "media_url")}
_POST_BODY = {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["service_code"], "properties": _FORM_FIELDS}}}}}


@open311_router.post("/v2/requests.{fmt}", status_code=201, responses=_documented("requests", created=True),
                     openapi_extra=_POST_BODY)
async def create_request(request: Request, fmt: FormatPath) -> Response:
    service = _service(request)
    values = await read_form(request)
    _check_jurisdiction(request, values.get("jurisdiction_id"))
    api_key = _text(values, "api_key", 200)
    if not api_key:
        raise Forbidden("api_key is required (in the body or the query string)", "api_key")
    runtime = request.app.state.runtime
    if not (runtime.credentials.open311_key_ok(api_key) or await runtime.accounts.machine_token_ok(api_key, "open311")):
        raise Forbidden("invalid api_key", "api_key")
    code = _text(values, "service_code", 64)
    if not code:
        raise BadRequest("service_code is required", "service_code")
    category = service.reference.category(code)
    if category is None:
        raise BadRequest(f"unknown service_code {code!r}", "service_code")
    lat, lng = _number(values, "lat", -90, 90), _number(values, "long", -180, 180)
    address = _text(values, "address_string", 200) or _text(values, "address_id", 200)
    if (lat is None) != (lng is None):
        raise BadRequest("lat and long go together", "lat" if lat is None else "long")
    if lat is None and not address:
        raise BadRequest("a location is required: lat and long, or address_string, or address_id", "lat")
    phone = None
    if raw_phone := _text(values, "phone", 32):
        phone = normalise_phone(raw_phone)
        if phone is None:
            raise BadRequest("phone must be a mainland mobile number (e.g. +86 136-0000-0003)", "phone")
    email = _text(values, "email", 254)
    if email is not None and not EMAIL.match(email):
        raise BadRequest("email is not an e-mail address", "email")
    text = _text(values, "description", 4000) or f"{category.name}（{address or '定位'}）"
    name = " ".join(p for p in (_text(values, "last_name", 25), _text(values, "first_name", 25)) if p) or None
    media = _text(values, "media_url", 2000)
    attachments = (media,) if media and re.match(r"^https?://\S+$", media) else ()
    location = Location(lat=lat, lng=lng, address=address)
    post = NewPost(channel=Channel.OPEN311, title=text[:30], body=text, contact_phone=phone, contact_email=email,
                   name=name, location=location, attachments=attachments, requested_category=category.id)
    accepted = await service.submit(post, client_ip=request.client.host if request.client else None,
                                    idempotency_key=None)
    doc = await service.store.get_by_tracking(accepted.body["tracking_number"])
    return answer(fmt, "requests", [{
        "service_request_id": accepted.body["tracking_number"], "token": doc["_id"] if doc else None,
        "service_notice": "已受理，将在 3-5 个工作日内答复", "account_id": None}], status_code=201)


@open311_router.get("/v2/tokens/{token}.{fmt}", responses=_documented("requests"))
async def token_status(request: Request, fmt: FormatPath,
                       token: Annotated[str, Path(max_length=64, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")],
                       jurisdiction_id: Jurisdiction = None) -> Response:
    _check_jurisdiction(request, jurisdiction_id)
    doc = await _service(request).store.get(token)
    if doc is None:
        raise NotFound(f"no request for token {token}", "token")
    return answer(fmt, "requests", [{"service_request_id": doc["tracking_number"], "token": token}])


W3C_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?$")


def _parse_date(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    text = value.strip()
    match = W3C_DATETIME.match(text)
    if match and match.group(2) is None:
        raise BadRequest("dates need a time zone (ISO 8601, e.g. 2026-11-01T00:00:00Z)", name)
    try:
        if not match:
            raise ValueError(text)
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be a W3C date-time, e.g. 2026-11-01T00:00:00Z", name) from None


def requests_query(*, ids: Sequence[str], codes: Sequence[str], statuses: Sequence[str], start: datetime | None,
                   end: datetime | None, now: datetime) -> dict[str, Any]:
    """The MongoDB filter for GET requests: ids override everything else; otherwise the codes the clients
    asked for (their own code, or the routed one when they gave none), the statuses, and the dates
    (the last 90 days when none are given)."""
    hidden = {"publishable": {"$ne": False}}  # a case waiting for moderation is not public yet
    if ids:
        return {"tracking_number": {"$in": [i.upper() for i in ids]}, **hidden}
    query: dict[str, Any] = dict(hidden)
    if codes:
        query["$or"] = [{"requested_category": {"$in": list(codes)}},
                        {"requested_category": None, "category": {"$in": list(codes)}}]
    if set(statuses) == {"closed"}:
        query["status"] = CaseStatus.CLOSED.value
    elif set(statuses) == {"open"}:
        query["status"] = {"$ne": CaseStatus.CLOSED.value}
    if start is None and end is None:
        start = now - DEFAULT_WINDOW
    created: dict[str, Any] = {}
    if start is not None:
        created["$gte"] = start
    if end is not None:
        created["$lte"] = end
    query["created_at"] = created
    return query


@open311_router.get("/v2/requests.{fmt}", responses=_documented("requests"))
async def list_requests(
    request: Request,
    fmt: FormatPath,
    service_request_id: Annotated[str | None, Query(max_length=2000)] = None,
    service_code: Annotated[str | None, Query(max_length=1000)] = None,
    start_date: Annotated[str | None, Query(max_length=40, json_schema_extra={"format": "date-time"})] = None,
    end_date: Annotated[str | None, Query(max_length=40, json_schema_extra={"format": "date-time"})] = None,
    status: Annotated[str | None, Query(max_length=20, pattern=r"^\s*(open|closed)\s*(,\s*(open|closed)\s*)*$")] = None,
    jurisdiction_id: Jurisdiction = None,
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=MAX_RESULTS)] = MAX_RESULTS,
    extensions: bool = False,
) -> Response:
    _check_jurisdiction(request, jurisdiction_id)
    service = _service(request)
    query = requests_query(ids=split_list(service_request_id), codes=split_list(service_code),
                           statuses=split_list(status), start=_parse_date(start_date, "start_date"),
                           end=_parse_date(end_date, "end_date"), now=service.clock.now())
    docs, _ = await service.store.list_cases(query, skip=(page - 1) * page_size, limit=page_size)
    return answer(fmt, "requests", [request_view(d, service.reference, extensions=extensions) for d in docs])


@open311_router.get("/v2/requests/{service_request_id}.{fmt}", responses=_documented("requests"))
async def get_request(request: Request, fmt: FormatPath,
                      service_request_id: Annotated[str, Path(max_length=64)],
                      jurisdiction_id: Jurisdiction = None, extensions: bool = False) -> Response:
    _check_jurisdiction(request, jurisdiction_id)
    service = _service(request)
    doc = await service.store.get_by_tracking(service_request_id.strip().upper())
    if doc is None or doc.get("publishable") is False:
        raise NotFound(f"no request {service_request_id}", "service_request_id")
    return answer(fmt, "requests", [request_view(doc, service.reference, extensions=extensions)])
