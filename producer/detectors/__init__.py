"""Usage anomalies: the detectors, their findings, reactions and webhook (issue 19)."""

from producer.detectors.findings import Finding, read_findings
from producer.detectors.settings import Detector, DetectorSettings, Reaction, WatchSettings
from producer.detectors.watch import PlannedRevocation, Watch, plan_reactions
from producer.detectors.webhook import WebhookNotifier

__all__ = [
    "Detector",
    "DetectorSettings",
    "Finding",
    "PlannedRevocation",
    "Reaction",
    "Watch",
    "WatchSettings",
    "WebhookNotifier",
    "plan_reactions",
    "read_findings",
]
