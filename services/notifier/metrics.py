"""The notifier's Prometheus series (names per DESIGN.md §6; labels are bounded)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import ConsumerHealth

ALERTS = Counter("wenzheng_notifier_alerts_total", "Alerts published (each alert id once)", ["kind"])
OPEN_CASES = Gauge("wenzheng_notifier_open_cases", "Open cases held by this worker's partitions")
OVERDUE_OPEN_CASES = Gauge("wenzheng_notifier_overdue_open_cases",
                           "Open cases past their deadline without a reply", ["department"])
NOTIFICATIONS = Counter("wenzheng_notifier_notifications_total", "Citizen notification delivery outcomes",
                        ["channel", "outcome"])
DELIVERY_SECONDS = Histogram("wenzheng_notifier_delivery_seconds", "Time of one delivery attempt", ["channel"],
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DEAD_LETTERS = Counter("wenzheng_notifier_dead_letters_total", "Messages sent to the dead-letter topic", ["reason"])
SCAN_SECONDS = Histogram("wenzheng_notifier_scan_seconds", "Time of one ladder scan",
                         buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
PENDING_CONTACT = Counter("wenzheng_notifier_pending_contact_total",
                          "Notifications that waited for the citizen's contact", ["outcome"])
CONTACTS_ERASED = Counter("wenzheng_notifier_contacts_erased_total",
                          "Contacts dropped on intake's erasure (a tombstone on the contacts topic)")
HEALTH = ConsumerHealth("notifier")
