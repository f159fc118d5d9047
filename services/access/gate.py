"""The check every RPC passes before its handler runs: who is calling, may it, and the
audit entry for what it changed."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from services.access import policy
from services.access.domain import (
    AuditEntry,
    Caller,
    Role,
    call_wrote,
    current_caller,
    start_call,
)
from services.access.keys import MAX_NAME_LENGTH, KeyCache, KeyStore
from services.core.errors import PermissionDenied, Unauthenticated

AUTHORIZATION_HEADER = "authorization"
BEARER = "bearer "
# What the audit log names as the key of a call admitted by a service's client certificate
# (real key ids are hex, so it cannot collide); the key name is the certificate's identity.
CERTIFICATE_KEY_ID = "mtls"

log = logging.getLogger("switchboard.access")


def bearer_token(metadata: Mapping[str, str]) -> str:
    value = metadata.get(AUTHORIZATION_HEADER, "")
    if not value:
        raise Unauthenticated(
            "this call needs an API key: send 'authorization: Bearer <key>'",
            reason="MISSING_API_KEY",
        )
    if not value.lower().startswith(BEARER):
        raise Unauthenticated("the authorization header must read 'Bearer <key>'")
    return value[len(BEARER) :].strip()


class AccessControl:
    """Authenticates the caller's key, checks its role against the method (before the
    handler looks anything up, so a refusal never reveals whether a record exists) and
    audits writes and refusals."""

    def __init__(
        self,
        keys: KeyStore,
        *,
        refresh_seconds: float = 1.0,
        service_identities: frozenset[str] = frozenset(),
    ) -> None:
        self.keys = keys
        self.cache = KeyCache(keys, refresh_seconds)
        self.service_identities = service_identities

    @classmethod
    def of(
        cls,
        engine: Engine,
        *,
        refresh_seconds: float = 1.0,
        service_identities: frozenset[str] = frozenset(),
    ) -> AccessControl:
        return cls(
            KeyStore(engine),
            refresh_seconds=refresh_seconds,
            service_identities=service_identities,
        )

    def admit(
        self,
        method: str,
        metadata: Mapping[str, str],
        peer: Callable[[], str],
        request_id: str,
        identities: Callable[[], Sequence[str]],
    ) -> Callable[[str], None]:
        """Let the call in or raise; the returned function ends it with its status code."""
        if policy.is_public(method):
            return _nothing
        caller = self._caller(metadata, identities)
        if not policy.may_call(caller.role, method):
            self._audit(caller, method, "PERMISSION_DENIED", request_id, peer)
            raise PermissionDenied(
                f"a {caller.role.value} key may not call {method.rsplit('/', 1)[-1]}",
                reason="ROLE_NOT_ALLOWED",
            )
        return self._enter(caller, method, request_id, peer)

    def admit_from_memory(
        self, method: str, metadata: Mapping[str, str], request_id: str
    ) -> Callable[[str], None] | None:
        """``admit`` for a caller whose key is in the fresh copy, calling a method its role
        may call and that is not audited: decided without the store. None when deciding
        needs more (the store, an audit, a certificate): ``admit`` must decide then. An
        event loop, which must not wait on the store, calls this first."""
        if policy.is_public(method):
            return _nothing
        if policy.is_write(method) or AUTHORIZATION_HEADER not in metadata:
            return None
        try:
            caller = self.cache.remembered(bearer_token(metadata))
        except Unauthenticated:
            return None
        if caller is None or not policy.may_call(caller.role, method):
            return None
        return self._enter(caller, method, request_id, lambda: "")

    def _enter(
        self, caller: Caller, method: str, request_id: str, peer: Callable[[], str]
    ) -> Callable[[str], None]:
        """Bind the admitted caller to the call; what ends it (and audits a write)."""
        token = current_caller.set(caller)
        start_call()

        def finish(code: str) -> None:
            current_caller.reset(token)
            if policy.is_write(method) and (method not in policy.SOMETIMES_WRITES or call_wrote()):
                self._audit(caller, method, code, request_id, peer)

        return finish

    def _caller(
        self, metadata: Mapping[str, str], identities: Callable[[], Sequence[str]]
    ) -> Caller:
        """The key decides when one is sent, even over a service's own certificate, so a
        process can always act with less; without a key, a service certificate is admin."""
        if AUTHORIZATION_HEADER not in metadata and self.service_identities:
            for identity in identities():
                if identity in self.service_identities:
                    # A key's name is at most MAX_NAME_LENGTH; so is what the audit keeps.
                    name = identity[:MAX_NAME_LENGTH]
                    return Caller(key_id=CERTIFICATE_KEY_ID, name=name, role=Role.ADMIN)
        return self.cache.caller(bearer_token(metadata))

    def _audit(
        self, caller: Caller, method: str, code: str, request_id: str, peer: Callable[[], str]
    ) -> None:
        entry = AuditEntry(
            time=self.keys.clock(),
            key_id=caller.key_id,
            key_name=caller.name,
            role=caller.role.value,
            method=method,
            code=code,
            request_id=request_id[:64],
            peer=peer()[:200],
        )
        try:
            self.keys.record(entry)
        except SQLAlchemyError:
            # The call itself has been answered; losing its audit line must not fail it.
            log.error("audit entry not written", extra=entry.__dict__, exc_info=True)


def _nothing(_code: str) -> None:
    return None
