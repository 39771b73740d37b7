"""The router's Prometheus metrics (module-level: one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from services.common.metrics import ConsumerHealth, metric_name

DECISIONS = Counter(metric_name("router", "decisions"), "Routing decisions", ["category", "outcome"])
CONFIDENCE = Histogram(metric_name("router", "confidence"), "Confidence of the chosen category",
                       buckets=(0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0))
CLASSIFY_SECONDS = Histogram(metric_name("router", "classification", "seconds"),
                             "Time to classify and route one case",
                             buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25))
BATCH_SECONDS = Histogram(metric_name("router", "batch", "seconds"),
                          "Time to handle one batch of events, publishing included",
                          buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0))
BATCH_EVENTS = Histogram(metric_name("router", "batch", "events"), "Events per batch",
                         buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500))
EVENTS = Counter(metric_name("router", "events"), "Case events read", ["type", "outcome"])
DEAD_LETTERS = Counter(metric_name("router", "dead_letters"), "Messages sent to the dead-letter topic")
CORRECTIONS = Counter(metric_name("router", "corrections"), "Labelled corrections stored for retraining", ["kind"])
HEALTH = ConsumerHealth("router")

SHADOW_COMPARED = Counter(metric_name("router", "shadow_compared"),
                          "Posts classified by both the current and the shadow model, by both categories",
                          ["current_category", "shadow_category"])
SHADOW_AGREEMENT = Gauge(metric_name("router", "shadow_agreement", "ratio"),
                         "Share of posts on which the shadow model chose the current model's category, "
                         "since this worker loaded the shadow")
MODEL_SWAPS = Counter(metric_name("router", "model_swaps"), "Models loaded from the registry", ["role", "outcome"])
TABLE_RESTORE_SECONDS = Gauge(metric_name("router", "table_restore", "seconds"),
                              "Time from the last partition assignment to the table restored from its changelog",
                              ["table"])
TABLE_ROWS = Gauge(metric_name("router", "table_rows"), "Rows this worker held in the table after the last restore",
                   ["table"])
