"""The portal's metrics (wenzheng_portal_*, module-level: one set per process): page latency by route
template, sign-ins, back-end calls."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from services.common.metrics import metric_name

PAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.5, 5.0)

PAGES = Histogram(metric_name("portal", "page_duration", "seconds"),
                  "Server time per page, by route template and method", ["route", "method", "status"],
                  buckets=PAGE_BUCKETS)
SIGN_INS = Counter(metric_name("portal", "sign_ins"), "Staff sign-in attempts by outcome", ["outcome"])
BACKEND_ERRORS = Counter(metric_name("portal", "backend_errors"),
                         "Calls to intake or stats that failed, by back end and status class", ["backend", "status"])
CSRF_REFUSED = Counter(metric_name("portal", "csrf_refused"), "Form posts refused for a bad CSRF token")
