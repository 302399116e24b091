"""Runtime configuration, read once from the environment (``SQM_*`` variables).

The settings every process shares (database, limits, logging, public URL, event delivery, the
callback guard) live here; each API's own settings are a section in its package
(``services/sla/settings.py``, ``services/problem/settings.py``, ``services/inventory/settings.py``),
and ``Settings`` composes them: ``settings.sla.close_interval_seconds``.
"""

from __future__ import annotations

import os
from dataclasses import Field, dataclass, field, fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Collection

    from services.inventory.settings import InventorySettings
    from services.problem.settings import ProblemSettings
    from services.sla.settings import SlaSettings


class SettingsError(ValueError):
    """A configuration value cannot be used; the message names the variable."""


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """The whole number in variable ``name`` (``default`` when unset or empty)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, minimum: float = 0.0) -> float:
    """The number in variable ``name`` (``default`` when unset or empty)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {raw}")
    return value


def env_bool(name: str, default: bool) -> bool:
    """The boolean in variable ``name`` (``default`` when unset or empty)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def env_url(name: str) -> str:
    """The base URL in variable ``name`` without its trailing slash ("" when unset)."""
    return os.environ.get(name, "").strip().rstrip("/")


def env_urls(name: str) -> tuple[str, ...]:
    """The comma-separated http(s) base URLs in variable ``name``."""
    raw = os.environ.get(name) or ""
    urls = tuple(part.strip().rstrip("/") for part in raw.split(",") if part.strip())
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"{name} must be a comma-separated list of http(s) URLs, got {url!r}")
    return urls


def check_url(name: str, url: str) -> None:
    """Refuse a URL that is set but not http(s), naming its variable."""
    if url and not url.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must be an http(s) URL, got {url!r}")


def check_minimum(name: str, value: float, minimum: float) -> None:
    """Refuse a number below ``minimum`` (a value given in code rather than read), naming its variable."""
    if not value >= minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")


def setting(default: Any, variable: str) -> Any:
    """A section's field, read from ``variable``."""
    return field(default=default, metadata={"variable": variable})


def variable_of(item: Field[Any]) -> str:
    """The environment variable of a settings field: named in the field of a section, else
    ``SQM_<FIELD NAME IN UPPER CASE>``."""
    return str(item.metadata.get("variable") or f"SQM_{item.name.upper()}")


@dataclass(frozen=True)
class DeliverySettings:
    """How the hub dispatcher delivers events to subscribers (``SQM_DELIVERY_*``)."""

    max_attempts: int = setting(12, "SQM_DELIVERY_MAX_ATTEMPTS")
    max_age_seconds: int = setting(86_400, "SQM_DELIVERY_MAX_AGE_SECONDS")
    backoff_seconds: float = setting(1.0, "SQM_DELIVERY_BACKOFF_SECONDS")
    backoff_max_seconds: float = setting(600.0, "SQM_DELIVERY_BACKOFF_MAX_SECONDS")
    timeout_seconds: float = setting(10.0, "SQM_DELIVERY_TIMEOUT_SECONDS")
    lease_seconds: float = setting(60.0, "SQM_DELIVERY_LEASE_SECONDS")
    concurrency: int = setting(64, "SQM_DELIVERY_CONCURRENCY")
    per_subscription: int = setting(8, "SQM_DELIVERY_PER_SUBSCRIPTION")
    poll_seconds: float = setting(0.5, "SQM_DELIVERY_POLL_SECONDS")

    # The smallest value each field accepts.
    MINIMUMS: ClassVar[dict[str, float]] = {
        "max_attempts": 1, "max_age_seconds": 1, "backoff_seconds": 0.001, "backoff_max_seconds": 0.001,
        "timeout_seconds": 0.1, "lease_seconds": 0.5, "concurrency": 1, "per_subscription": 1, "poll_seconds": 0.01}

    @classmethod
    def from_env(cls) -> DeliverySettings:
        low = cls.MINIMUMS
        return cls(
            max_attempts=env_int("SQM_DELIVERY_MAX_ATTEMPTS", cls.max_attempts, 1),
            max_age_seconds=env_int("SQM_DELIVERY_MAX_AGE_SECONDS", cls.max_age_seconds, 1),
            backoff_seconds=env_float("SQM_DELIVERY_BACKOFF_SECONDS", cls.backoff_seconds, low["backoff_seconds"]),
            backoff_max_seconds=env_float("SQM_DELIVERY_BACKOFF_MAX_SECONDS", cls.backoff_max_seconds,
                                          low["backoff_max_seconds"]),
            timeout_seconds=env_float("SQM_DELIVERY_TIMEOUT_SECONDS", cls.timeout_seconds, low["timeout_seconds"]),
            lease_seconds=env_float("SQM_DELIVERY_LEASE_SECONDS", cls.lease_seconds, low["lease_seconds"]),
            concurrency=env_int("SQM_DELIVERY_CONCURRENCY", cls.concurrency, 1),
            per_subscription=env_int("SQM_DELIVERY_PER_SUBSCRIPTION", cls.per_subscription, 1),
            poll_seconds=env_float("SQM_DELIVERY_POLL_SECONDS", cls.poll_seconds, low["poll_seconds"]),
        )

    def check(self) -> None:
        for item in fields(self):
            check_minimum(variable_of(item), getattr(self, item.name), self.MINIMUMS[item.name])


def _inventory() -> InventorySettings:
    # The API packages build on this module, so their sections are imported when first used.
    from services.inventory.settings import InventorySettings
    return InventorySettings()


def _sla() -> SlaSettings:
    from services.sla.settings import SlaSettings
    return SlaSettings()


def _problem() -> ProblemSettings:
    from services.problem.settings import ProblemSettings
    return ProblemSettings()


# The sections, by the name an API declaration lists them under (``ApiDeclaration.settings``).
SECTIONS = ("delivery", "inventory", "sla", "problem")


@dataclass(frozen=True)
class Settings:
    """Everything a service process can be configured with.

    A plain field maps to the environment variable ``SQM_<FIELD NAME IN UPPER CASE>``; the
    sections name their variables themselves.
    """

    mongodb_uri: str = ""
    database: str = "sqm"
    # Acknowledge writes before they reach the disk: faster, but a crash or power cut can lose
    # changes that were already answered 2xx, and their events.
    unsafe_skip_fsync: bool = False
    public_url: str = "http://127.0.0.1:8080"
    page_default_limit: int = 100
    page_max_limit: int = 1000
    max_body_bytes: int = 1_048_576
    max_json_depth: int = 32
    query_timeout_ms: int = 5000
    regex_max_length: int = 128
    # A regex the database cannot run safely is matched here over the documents the other
    # conditions select; past this many, the list is refused as too expensive.
    regex_scan_limit: int = 100_000
    graph_max_nodes: int = 50_000
    log_level: str = "INFO"
    # The party every service acts for when it calls another one, and the operator's own
    # records (problems it raises) name.
    operator_party_id: str = "operator"
    # The address guard of hub callbacks.
    allow_private_callbacks: bool = False
    # Base URLs of the suite's own services beyond the configured ones (split deployments): hub
    # callbacks under them are the suite's own and are called even when private callbacks are not.
    internal_urls: tuple[str, ...] = ()
    # Sections.
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    inventory: InventorySettings = field(default_factory=_inventory)
    sla: SlaSettings = field(default_factory=_sla)
    problem: ProblemSettings = field(default_factory=_problem)

    @classmethod
    def from_env(cls, sections: Collection[str] | None = None, **overrides: Any) -> Settings:
        """The settings in the environment, checked. ``sections`` names the sections to read
        (all for None): a process reads and checks only those of the APIs it serves, and the
        others keep their defaults. ``overrides`` are named like their variables, without
        ``SQM_`` and in lower case (``delivery_poll_seconds=0.05``), see ``with_values``."""
        from services.inventory.settings import InventorySettings
        from services.problem.settings import ProblemSettings
        from services.sla.settings import SlaSettings

        wanted = set(SECTIONS if sections is None else sections)
        unknown = wanted - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown settings sections {sorted(unknown)}; the sections are {SECTIONS}")
        base = cls(
            mongodb_uri=os.environ.get("SQM_MONGODB_URI", ""),
            database=os.environ.get("SQM_DATABASE", "sqm"),
            unsafe_skip_fsync=env_bool("SQM_UNSAFE_SKIP_FSYNC", False),
            public_url=os.environ.get("SQM_PUBLIC_URL", cls.public_url).rstrip("/"),
            page_default_limit=env_int("SQM_PAGE_DEFAULT_LIMIT", cls.page_default_limit, 1),
            page_max_limit=env_int("SQM_PAGE_MAX_LIMIT", cls.page_max_limit, 1),
            max_body_bytes=env_int("SQM_MAX_BODY_BYTES", cls.max_body_bytes, 1024),
            max_json_depth=env_int("SQM_MAX_JSON_DEPTH", cls.max_json_depth, 4),
            query_timeout_ms=env_int("SQM_QUERY_TIMEOUT_MS", cls.query_timeout_ms, 100),
            regex_max_length=env_int("SQM_REGEX_MAX_LENGTH", cls.regex_max_length, 1),
            regex_scan_limit=env_int("SQM_REGEX_SCAN_LIMIT", cls.regex_scan_limit, 1),
            graph_max_nodes=env_int("SQM_GRAPH_MAX_NODES", cls.graph_max_nodes, 10),
            log_level=os.environ.get("SQM_LOG_LEVEL", "INFO").upper(),
            operator_party_id=os.environ.get("SQM_OPERATOR_PARTY_ID", cls.operator_party_id),
            allow_private_callbacks=env_bool("SQM_ALLOW_PRIVATE_CALLBACKS", False),
            internal_urls=env_urls("SQM_INTERNAL_URLS"),
            delivery=DeliverySettings.from_env() if "delivery" in wanted else DeliverySettings(),
            inventory=InventorySettings.from_env() if "inventory" in wanted else InventorySettings(),
            sla=SlaSettings.from_env() if "sla" in wanted else SlaSettings(),
            problem=ProblemSettings.from_env() if "problem" in wanted else ProblemSettings(),
        )
        settings = base.with_values(**overrides)
        settings.check(wanted)
        return settings

    def with_values(self, **values: Any) -> Settings:
        """A copy with ``values`` named like their variables, without ``SQM_`` and in lower case:
        ``delivery_poll_seconds=0.05`` sets ``delivery.poll_seconds``, ``inventory_url=...``
        sets ``inventory.url``. A section may also be given whole (``sla=SlaSettings(...)``)."""
        plain = {item.name for item in fields(self) if item.name not in SECTIONS}
        top: dict[str, Any] = {}
        in_sections: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name in plain or name in SECTIONS:
                top[name] = value
                continue
            place = _place_of_variable().get(f"SQM_{name.upper()}")
            if place is None:
                raise TypeError(f"no setting is named {name!r} (SQM_{name.upper()})")
            in_sections.setdefault(place[0], {})[place[1]] = value
        changed = replace(self, **top)
        sections = {name: replace(getattr(changed, name), **names) for name, names in in_sections.items()}
        return replace(changed, **sections)

    def check(self, sections: Collection[str] = SECTIONS) -> None:
        """Refuse values that cannot work together, in these settings and the named sections."""
        if self.page_default_limit > self.page_max_limit:
            raise SettingsError(
                "SQM_PAGE_DEFAULT_LIMIT must not exceed SQM_PAGE_MAX_LIMIT "
                f"({self.page_default_limit} > {self.page_max_limit})"
            )
        if not self.public_url.startswith(("http://", "https://")):
            raise SettingsError(f"SQM_PUBLIC_URL must be an http(s) URL, got {self.public_url!r}")
        if self.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise SettingsError(f"SQM_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}")
        for name in sections:
            getattr(self, name).check()

    @staticmethod
    def documented() -> list[tuple[str, Any]]:
        """Every variable of these settings and their sections, with its default."""
        defaults = Settings()
        listed: list[tuple[str, Any]] = []
        for item in fields(Settings):
            value = getattr(defaults, item.name)
            if is_dataclass(value):
                listed += [(variable_of(inner), inner.default) for inner in fields(value)]
            else:
                listed.append((variable_of(item), item.default))
        return listed


def _place_of_variable() -> dict[str, tuple[str, str]]:
    """(section, field) of each variable a section reads."""
    defaults = Settings()
    return {variable_of(inner): (name, inner.name) for name in SECTIONS for inner in fields(getattr(defaults, name))}
