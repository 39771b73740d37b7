"""Intake's Prometheus metrics (module-level: one set per process, shared by every app instance)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from services.common.metrics import ConsumerHealth, metric_name

POSTS = Counter(metric_name("intake", "posts"), "Posts accepted, by channel", ["channel"])
COMMANDS = Counter(metric_name("intake", "commands"), "Case commands by outcome", ["command", "outcome"])
OUTBOX_BACKLOG = Gauge(metric_name("intake", "outbox_backlog", "events"), "Accepted events not yet published")
OUTBOX_OLDEST_AGE = Gauge(metric_name("intake", "outbox_oldest_age", "seconds"),
                          "Age of the oldest unpublished event the relay has seen")
PUBLISHED = Counter(metric_name("intake", "outbox_published"), "Events the relay published", ["topic"])
RELAY_ERRORS = Counter(metric_name("intake", "relay_errors"), "Relay failures (producer recreated)")
SHED = Counter(metric_name("intake", "shed_posts"), "Posts refused with 503 because intake was overloaded, by the "
               "bound passed", ["reason"])
LOOP_LAG = Gauge(metric_name("intake", "event_loop_lag", "seconds"),
                 "How late the event loop ran a timer over the last second (requests wait that long to start)")
DECISIONS = Counter(metric_name("intake", "routing_decisions"), "Routing decisions by outcome", ["outcome"])
CONSUMER = ConsumerHealth("intake")
CONTACTS_ERASED = Counter(metric_name("intake", "contacts_erased"),
                          "Citizens' contacts erased after the retention period (PIPL)")
WECHAT_MESSAGES = Counter(metric_name("intake", "wechat_messages"),
                          "WeChat official-account messages by outcome", ["outcome"])
ATTACHMENTS = Counter(metric_name("intake", "attachments"), "Photos accepted, by type", ["type"])
