"""ACLs, SCRAM credentials and delegation tokens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar
from uuid import UUID

from immutables import Map

from broker.metadata._maps import EMPTY_MAP, MapChanges, MapDelta, Reject, sorted_items
from broker.metadata.records import (
    AccessControlEntryRecord,
    DelegationTokenRecord,
    MetadataRecord,
    RemoveAccessControlEntryRecord,
    RemoveDelegationTokenRecord,
    RemoveUserScramCredentialRecord,
    ScramMechanism,
    UserScramCredentialRecord,
)

__all__ = [
    "AclsDelta",
    "AclsImage",
    "DelegationTokensDelta",
    "DelegationTokensImage",
    "ScramDelta",
    "ScramImage",
]


@dataclass(frozen=True, slots=True)
class AclsImage:
    """The ACLs, by id."""

    acls: Map[UUID, AccessControlEntryRecord]
    """Each ACL as the record that created it (the record is an immutable value)."""

    EMPTY: ClassVar[AclsImage]

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        for _, acl in sorted_items(self.acls):
            yield acl


AclsImage.EMPTY = AclsImage(EMPTY_MAP)


class AclsDelta(MapDelta[AclsImage, MapChanges[UUID, AccessControlEntryRecord]]):
    """Changes to the ACLs."""

    __slots__ = ()
    image_type = AclsImage
    field = "acls"

    def replay_acl(self, record: AccessControlEntryRecord) -> None:
        """Fold a ``AccessControlEntryRecord`` into this delta."""
        self.changes.set(record.id, record)

    def replay_remove_acl(self, record: RemoveAccessControlEntryRecord) -> None:
        """Fold a ``RemoveAccessControlEntryRecord`` into this delta."""
        if record.id not in self.changes:
            raise Reject(f"ACL {record.id} does not exist")
        self.changes.delete(record.id)


@dataclass(frozen=True, slots=True)
class ScramImage:
    """SCRAM credentials, by (user, mechanism)."""

    credentials: Map[tuple[str, ScramMechanism], UserScramCredentialRecord]
    """By (user, mechanism)."""

    EMPTY: ClassVar[ScramImage]

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        for _, credential in sorted_items(self.credentials):
            yield credential


ScramImage.EMPTY = ScramImage(EMPTY_MAP)


class ScramDelta(
    MapDelta[ScramImage, MapChanges[tuple[str, ScramMechanism], UserScramCredentialRecord]]
):
    """Changes to the SCRAM credentials."""

    __slots__ = ()
    image_type = ScramImage
    field = "credentials"

    def replay_credential(self, record: UserScramCredentialRecord) -> None:
        """Fold a ``UserScramCredentialRecord`` into this delta."""
        self.changes.set((record.name, record.mechanism), record)

    def replay_remove_credential(self, record: RemoveUserScramCredentialRecord) -> None:
        # Kafka treats removing an absent credential as a no-op.
        """Fold a ``RemoveUserScramCredentialRecord`` into this delta."""
        self.changes.delete((record.name, record.mechanism))


@dataclass(frozen=True, slots=True)
class DelegationTokensImage:
    """Delegation tokens, by token id."""

    tokens: Map[str, DelegationTokenRecord]
    """By token id."""

    EMPTY: ClassVar[DelegationTokensImage]

    def write(self) -> Iterator[MetadataRecord]:
        """The records that rebuild this, in a stable order (its part of a snapshot)."""
        for _, token in sorted_items(self.tokens):
            yield token


DelegationTokensImage.EMPTY = DelegationTokensImage(EMPTY_MAP)


class DelegationTokensDelta(
    MapDelta[DelegationTokensImage, MapChanges[str, DelegationTokenRecord]]
):
    """Changes to the delegation tokens."""

    __slots__ = ()
    image_type = DelegationTokensImage
    field = "tokens"

    def replay_token(self, record: DelegationTokenRecord) -> None:
        """Fold a ``DelegationTokenRecord`` into this delta."""
        self.changes.set(record.token_id, record)

    def replay_remove_token(self, record: RemoveDelegationTokenRecord) -> None:
        # Kafka treats removing an absent token as a no-op.
        """Fold a ``RemoveDelegationTokenRecord`` into this delta."""
        self.changes.delete(record.token_id)
