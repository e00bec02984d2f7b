"""Budget, alerting and audit settings: where alerts go, their thresholds, the SLO, retention."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from app.config_errors import Problem
from infra.config.base import Model, StackContext, refuse

BILLING_ACCOUNT_RE = re.compile(r"^[0-9A-F]{6}-[0-9A-F]{6}-[0-9A-F]{6}$")
# Billing account ids as Google's documentation prints them (Cloud Billing API and gcloud
# references): never a real account.
DOCUMENTED_BILLING_ACCOUNTS = frozenset({"012345-567890-ABCDEF", "0X0X0X-0X0X0X-0X0X0X"})
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
PUBSUB_TOPIC_RE = re.compile(
    r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/topics/[A-Za-z][\w.~+%-]{2,254}$"
)


def is_placeholder_billing_account(value: str) -> bool:
    """All zeros, one repeated character, three equal groups, X's or a documented example."""
    groups = value.upper().split("-")
    return (
        value.upper() in DOCUMENTED_BILLING_ACCOUNTS
        or "X" in value.upper()
        or len(set(value.replace("-", ""))) == 1
        or (len(groups) == 3 and len(set(groups)) == 1)
    )


# A budget's amount is a google.type.Money: its whole units are an int64.
MAX_BUDGET_UNITS = 2**63


class Budget(Model):
    monthly_usd: float
    alert_thresholds: tuple[float, ...] = (0.5, 0.9, 1.0)
    # The Cloud Billing account the budget watches; without one no budget is declared.
    billing_account: str | None = None

    @field_validator("monthly_usd")
    @classmethod
    def _fits_money(cls, value: float) -> float:
        if value >= MAX_BUDGET_UNITS:
            raise refuse(
                "more than a budget's amount carries (int64 whole units)",
                value,
                f"< {MAX_BUDGET_UNITS} (2^63)",
            )
        return value

    @field_validator("billing_account")
    @classmethod
    def _billing_account(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if is_placeholder_billing_account(value):
            raise refuse(
                "a placeholder, not a billing account",
                value,
                "your Cloud Billing account id, or no billingAccount (then no budget is declared)",
            )
        if not BILLING_ACCOUNT_RE.match(value):
            raise refuse("not a Cloud Billing account id", value, "XXXXXX-XXXXXX-XXXXXX (hex)")
        return value

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        if self.monthly_usd <= 0:
            yield Problem("monthlyUsd", "budget must be positive", self.monthly_usd, "> 0")
        for i, threshold in enumerate(self.alert_thresholds):
            if not 0 < threshold <= 2:
                yield Problem(
                    f"alertThresholds[{i}]",
                    "a budget threshold is a fraction of the budget",
                    threshold,
                    "> 0 and <= 2 (e.g. 0.5 for 50%)",
                )
        if list(self.alert_thresholds) != sorted(set(self.alert_thresholds)):
            yield Problem(
                "alertThresholds",
                "thresholds must be increasing and distinct",
                list(self.alert_thresholds),
                "e.g. [0.5, 0.9, 1.0]",
            )


class NotificationChannel(Model):
    """Where alerts go: an email address, an HTTPS webhook or a Pub/Sub topic."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")
    type: Literal["email", "webhook_tokenauth", "pubsub"]
    address: str

    @field_validator("address")
    @classmethod
    def _address(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("type")
        if kind == "email" and not EMAIL_RE.match(value):
            raise ValueError("not an email address")
        if kind == "webhook_tokenauth" and not value.startswith("https://"):
            raise ValueError("webhooks must be https:// URLs")
        if kind == "pubsub" and not PUBSUB_TOPIC_RE.match(value):
            raise ValueError("must be projects/<project>/topics/<topic>")
        return value


class AlertThresholds(Model):
    latency_p95_ms: float = Field(default=100, gt=0)
    error_rate: float = Field(default=0.001, gt=0, lt=1)
    triton_queue_ms: float = Field(default=20, gt=0)
    gpu_duty_cycle_min: float = Field(default=60, ge=0, le=100)
    gpu_duty_cycle_max: float = Field(default=95, ge=0, le=100)
    spot_preemptions_per_hour: int = Field(default=5, ge=1)
    redis_memory_utilization: float = Field(default=0.85, gt=0, lt=1)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        if self.gpu_duty_cycle_min >= self.gpu_duty_cycle_max:
            yield Problem(
                "gpuDutyCycleMin",
                f"not below gpuDutyCycleMax ({self.gpu_duty_cycle_max:g})",
                self.gpu_duty_cycle_min,
                "gpuDutyCycleMin < gpuDutyCycleMax",
            )


class ObservabilitySettings(Model):
    notification_channels: tuple[NotificationChannel, ...] = ()
    alerts: AlertThresholds = AlertThresholds()
    slo_goal: float = Field(default=0.9995, gt=0.9, lt=1)
    slo_window_days: int = Field(default=30, ge=1, le=30)
    audit_log_retention_days: int = Field(default=400, ge=1, le=3650)

    def rules(self, context: Mapping[str, Any]) -> Iterator[Problem]:
        yield from super().rules(context)
        names = [c.name for c in self.notification_channels]
        for i, name in enumerate(names):
            if names.count(name) > 1:
                yield Problem(
                    f"notificationChannels[{i}].name",
                    "channel names must be unique",
                    name,
                    "unique names",
                )
        if StackContext.of(context).prod and not self.notification_channels:
            yield Problem(
                "notificationChannels",
                "prod alerts need somewhere to go",
                [],
                "at least one channel",
            )
