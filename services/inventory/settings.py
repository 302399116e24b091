"""Where the other services find the service inventory (section ``inventory`` of ``Settings``):
SLA management checks the services an SLA covers in it, alarm and problem management what a
partner supplies and what an alarm impacts."""

from __future__ import annotations

from dataclasses import dataclass

from services.tmf.settings import check_url, env_url, setting


@dataclass(frozen=True)
class InventorySettings:
    """The inventory's base URL, as its clients call it ("" for none: nothing is checked against it)."""

    url: str = setting("", "SQM_INVENTORY_URL")

    @classmethod
    def from_env(cls) -> InventorySettings:
        return cls(url=env_url("SQM_INVENTORY_URL"))

    def check(self) -> None:
        check_url("SQM_INVENTORY_URL", self.url)
