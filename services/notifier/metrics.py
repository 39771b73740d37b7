"""The notifier's Prometheus series (module-level, named with ``metric_name``; labels are bounded)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import ConsumerHealth, metric_name

SERVICE = "notifier"

ALERTS = Counter(metric_name(SERVICE, "alerts"), "Alerts published (each alert id once)", ["kind"])
OPEN_CASES = Gauge(metric_name(SERVICE, "open_cases"), "Open cases held by this worker's partitions")
OVERDUE_OPEN_CASES = Gauge(metric_name(SERVICE, "overdue_open_cases"),
                           "Open cases past their deadline without a reply", ["department"])
NOTIFICATIONS = Counter(metric_name(SERVICE, "notifications"), "Citizen notification delivery outcomes",
                        ["channel", "outcome"])
DELIVERY_SECONDS = Histogram(metric_name(SERVICE, "delivery", "seconds"), "Time of one delivery attempt", ["channel"],
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DEAD_LETTERS = Counter(metric_name(SERVICE, "dead_letters"), "Messages sent to the dead-letter topic", ["reason"])
SCAN_SECONDS = Histogram(metric_name(SERVICE, "scan", "seconds"), "Time of one ladder scan",
                         buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
PENDING_CONTACT = Counter(metric_name(SERVICE, "pending_contact"),
                          "Notifications that waited for the citizen's contact", ["outcome"])
CONTACTS_ERASED = Counter(metric_name(SERVICE, "contacts_erased"),
                          "Contacts dropped on intake's erasure (a tombstone on the contacts topic)")
CONTACTS_HELD = Gauge(metric_name(SERVICE, "contacts_held"),
                      "Citizens' contacts held in this worker's partition state (from the contacts topic)")
STATE_RESTORE_SECONDS = Gauge(metric_name(SERVICE, "state_restore", "seconds"),
                              "How long the last restore of partition state from the changelogs took")
STATE_RESTORED_RECORDS = Gauge(metric_name(SERVICE, "state_restored", "records"),
                               "Changelog records read by the last restore")
HEALTH = ConsumerHealth(SERVICE)
