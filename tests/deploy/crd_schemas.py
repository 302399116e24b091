"""Structural schemas of the custom resources the chart renders, which the core Kubernetes schemas
do not cover: the fields and constraints of their published definitions (Gateway API HTTPRoute
v1, Prometheus operator ServiceMonitor v1, TM Forum ODA Component v1) that the chart uses.
Unknown fields are refused where the chart writes the whole object, to catch typos."""

from __future__ import annotations

from typing import Any

_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
_HOSTNAME = {"type": "string", "maxLength": 253,
             "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"}
_DURATION = {"type": "string",
             "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_METADATA = {"type": "object", "required": ["name"], "properties": {"name": _NAME}}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind},
                       "metadata": _METADATA, "spec": spec},
    }


HTTP_ROUTE = _resource("gateway.networking.k8s.io/v1", "HTTPRoute", {
    "type": "object",
    "additionalProperties": False,
    "required": ["parentRefs", "rules"],
    "properties": {
        "parentRefs": {"type": "array", "minItems": 1, "maxItems": 32, "items": {
            "type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"group": {"type": "string"}, "kind": {"type": "string"}, "name": _NAME,
                           "namespace": {"type": "string", "maxLength": 63}, "sectionName": {"type": "string"},
                           "port": _PORT}}},
        "hostnames": {"type": "array", "maxItems": 16, "items": _HOSTNAME},
        "rules": {"type": "array", "minItems": 1, "maxItems": 16, "items": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "matches": {"type": "array", "maxItems": 64, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"path": {"type": "object", "additionalProperties": False, "properties": {
                        "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                        "value": {"type": "string", "pattern": "^/", "maxLength": 1024}}}}}},
                "backendRefs": {"type": "array", "minItems": 1, "maxItems": 16, "items": {
                    "type": "object", "required": ["name", "port"], "additionalProperties": False,
                    "properties": {"name": _NAME, "port": _PORT, "weight": {"type": "integer", "minimum": 0}}}},
            }}},
    },
})

SERVICE_MONITOR = _resource("monitoring.coreos.com/v1", "ServiceMonitor", {
    "type": "object",
    "additionalProperties": False,
    "required": ["selector", "endpoints"],
    "properties": {
        "selector": {"type": "object", "additionalProperties": False, "properties": {
            "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
            "matchExpressions": {"type": "array", "items": {
                "type": "object", "required": ["key", "operator"],
                "properties": {"key": {"type": "string"},
                               "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                               "values": {"type": "array", "items": {"type": "string"}}}}}}},
        "endpoints": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False,
            "properties": {"port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                           "interval": _DURATION, "scrapeTimeout": _DURATION}}},
    },
})

_ODA_API = {
    "type": "object",
    "required": ["name", "apiType", "implementation", "path", "port"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "id": {"type": "string", "pattern": "^TMF[0-9]{3}$"},
        "specification": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^https?://"}},
        "apiType": {"enum": ["openapi", "prometheus"]},
        "implementation": _NAME,
        "path": {"type": "string", "pattern": "^/"},
        "developerUI": {"type": "string"},
        "port": _PORT,
        "required": {"type": "boolean"},
    },
}

_ODA_EVENT = {
    "type": "object",
    "required": ["name", "apiType", "implementation", "port"],
    "additionalProperties": False,
    "properties": {"name": {"type": "string", "minLength": 1}, "apiType": {"const": "openapi"},
                   "implementation": _NAME, "hub": {"type": "string", "pattern": "^/"},
                   "callback": {"type": "string", "pattern": "^/"}, "port": _PORT},
}

ODA_COMPONENT = _resource("oda.tmforum.org/v1", "Component", {
    "type": "object",
    "additionalProperties": False,
    "required": ["componentMetadata", "coreFunction"],
    "properties": {
        "componentMetadata": {"type": "object", "additionalProperties": False, "required": ["name", "version"],
                              "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                                             "functionalBlock": {"type": "string"}, "status": {"type": "string"},
                                             "version": {"type": "string"}, "description": {"type": "string"},
                                             "publicationDate": {"type": "string"},
                                             "maintainers": {"type": "array", "items": {"type": "object"}},
                                             "owners": {"type": "array", "items": {"type": "object"}}}},
        "coreFunction": {"type": "object", "additionalProperties": False, "required": ["exposedAPIs"], "properties": {
            "exposedAPIs": {"type": "array", "minItems": 1, "items": _ODA_API},
            "dependentAPIs": {"type": "array"}}},
        "eventNotification": {"type": "object", "additionalProperties": False, "properties": {
            "publishedEvents": {"type": "array", "items": _ODA_EVENT},
            "subscribedEvents": {"type": "array", "items": _ODA_EVENT}}},
        "managementFunction": {"type": "object", "additionalProperties": False, "properties": {
            "exposedAPIs": {"type": "array", "items": _ODA_API}}},
        "securityFunction": {"type": "object", "properties": {"canvasSystemRole": {"type": "string", "minLength": 1}}},
    },
})

CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "HTTPRoute": HTTP_ROUTE,
    "ServiceMonitor": SERVICE_MONITOR,
    "Component": ODA_COMPONENT,
}
