"""The service problem management's own settings (section ``problem`` of ``Settings``)."""

from __future__ import annotations

from dataclasses import dataclass

from services.tmf.settings import check_minimum, check_url, env_float, env_int, env_url, setting


@dataclass(frozen=True)
class ProblemSettings:
    """Where problem management takes alarms and SLA violations from, and how it correlates them."""

    alarm_hub_url: str = setting("", "SQM_ALARM_HUB_URL")
    sla_hub_url: str = setting("", "SQM_SLA_HUB_URL")
    # A problem cleared less than this long ago is reopened rather than raised anew.
    damping_seconds: int = setting(300, "SQM_PROBLEM_DAMPING_SECONDS")
    impact_cache_seconds: float = setting(30.0, "SQM_IMPACT_CACHE_SECONDS")

    @classmethod
    def from_env(cls) -> ProblemSettings:
        return cls(
            alarm_hub_url=env_url("SQM_ALARM_HUB_URL"),
            sla_hub_url=env_url("SQM_SLA_HUB_URL"),
            damping_seconds=env_int("SQM_PROBLEM_DAMPING_SECONDS", cls.damping_seconds, 0),
            impact_cache_seconds=env_float("SQM_IMPACT_CACHE_SECONDS", cls.impact_cache_seconds, 0.0),
        )

    def check(self) -> None:
        check_url("SQM_ALARM_HUB_URL", self.alarm_hub_url)
        check_url("SQM_SLA_HUB_URL", self.sla_hub_url)
        check_minimum("SQM_PROBLEM_DAMPING_SECONDS", self.damping_seconds, 0)
        check_minimum("SQM_IMPACT_CACHE_SECONDS", self.impact_cache_seconds, 0.0)
