"""The SLA management service's own settings (section ``sla`` of ``Settings``)."""

from __future__ import annotations

from dataclasses import dataclass

from services.tmf.settings import check_minimum, env_float, env_int, setting


@dataclass(frozen=True)
class SlaSettings:
    """How often ended evaluation periods are closed, and how far in the future a measurement
    may be stamped (clocks of probes drift)."""

    close_interval_seconds: float = setting(60.0, "SQM_SLA_CLOSE_INTERVAL_SECONDS")
    measurement_future_skew_seconds: int = setting(300, "SQM_MEASUREMENT_FUTURE_SKEW_SECONDS")

    @classmethod
    def from_env(cls) -> SlaSettings:
        return cls(
            close_interval_seconds=env_float("SQM_SLA_CLOSE_INTERVAL_SECONDS", cls.close_interval_seconds, 0.05),
            measurement_future_skew_seconds=env_int("SQM_MEASUREMENT_FUTURE_SKEW_SECONDS",
                                                    cls.measurement_future_skew_seconds, 0),
        )

    def check(self) -> None:
        check_minimum("SQM_SLA_CLOSE_INTERVAL_SECONDS", self.close_interval_seconds, 0.05)
        check_minimum("SQM_MEASUREMENT_FUTURE_SKEW_SECONDS", self.measurement_future_skew_seconds, 0)
