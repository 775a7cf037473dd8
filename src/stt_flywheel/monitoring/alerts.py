"""Alerts from the monitor: a Slack-compatible message to a webhook (Slack's incoming webhooks,
Google Chat and most chat bridges take a JSON body with `text`).

A webhook that fails is reported in the decision (and its log line), never raised: an alert that
did not go out must not undo the rollback that caused it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from stt_flywheel.monitoring.decision import MonitorDecision

__all__ = ["send_webhook", "webhook_message"]

ICON = {"WARNING": ":warning:", "ERROR": ":rotating_light:", "CRITICAL": ":rotating_light:"}


def webhook_message(decision: MonitorDecision) -> dict[str, Any]:
    head = (
        f"{ICON.get(decision.severity, ':information_source:')} *stt-flywheel monitor* — {decision.summary}"
    )
    details = "\n".join(f"• {r}" for r in decision.reasons[:6])
    traffic = ", ".join(f"v{v}: {p} %" for v, p in sorted(decision.traffic_after.items()))
    context = f"severity {decision.severity} · traffic now {traffic or 'none'} · report {decision.report}"
    return {
        "text": f"{head}\n{details}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": head}},
            {"type": "section", "text": {"type": "mrkdwn", "text": details or "(no details)"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def send_webhook(url: str, decision: MonitorDecision, timeout_s: float = 10.0) -> dict[str, Any]:
    """POST the message; returns what happened (the URL's path is left out: it is the secret)."""
    target = urlsplit(url).netloc
    try:
        response = httpx.post(url, json=webhook_message(decision), timeout=timeout_s)
    except httpx.HTTPError as exc:
        return {"sent": False, "host": target, "error": f"{type(exc).__name__}: {exc}"}
    if response.is_success:
        return {"sent": True, "host": target, "status": response.status_code}
    return {"sent": False, "host": target, "status": response.status_code, "error": response.text[:200]}
