"""OAuth2 for the suite: the services are resource servers that validate bearer JWTs
(:class:`TokenValidator`), and for the embedded default the suite is its own authorization
server (:class:`TokenIssuer`, client-credentials grant)."""

from .identity import CLIENT_ROLES, DEFAULT_SCOPES, REALM, ROLES, SCOPES, Caller, scope_for
from .issuer import TokenIssuer
from .settings import AuthSettings
from .validator import IssuerUnavailable, TokenValidator

__all__ = ["CLIENT_ROLES", "DEFAULT_SCOPES", "REALM", "ROLES", "SCOPES", "AuthSettings", "Caller",
           "IssuerUnavailable", "TokenIssuer", "TokenValidator", "scope_for"]
