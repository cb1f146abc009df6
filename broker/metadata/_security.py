"""ACLs, SCRAM credentials and delegation tokens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar
from uuid import UUID

from immutables import Map

from broker.metadata._maps import EMPTY_MAP, MapChanges, Reject, sorted_items
from broker.metadata._records import (
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
    acls: Map[UUID, AccessControlEntryRecord]
    """Each ACL as the record that created it (the record is an immutable value)."""

    EMPTY: ClassVar[AclsImage]

    def write(self) -> Iterator[MetadataRecord]:
        for _, acl in sorted_items(self.acls):
            yield acl


AclsImage.EMPTY = AclsImage(EMPTY_MAP)


class AclsDelta:
    __slots__ = ("acls", "image")

    def __init__(self, image: AclsImage) -> None:
        self.image = image
        self.acls: MapChanges[UUID, AccessControlEntryRecord] = MapChanges(image.acls)

    @classmethod
    def creating(cls, image: AclsImage) -> AclsDelta:
        delta = cls(AclsImage.EMPTY)
        delta.acls = MapChanges.creating(image.acls)
        return delta

    def replay_acl(self, record: AccessControlEntryRecord) -> None:
        self.acls.set(record.id, record)

    def replay_remove_acl(self, record: RemoveAccessControlEntryRecord) -> None:
        if record.id not in self.acls:
            raise Reject(f"ACL {record.id} does not exist")
        self.acls.delete(record.id)

    def finish_snapshot(self) -> None:
        self.acls.finish_snapshot()

    def apply(self) -> AclsImage:
        acls = self.acls.apply()
        return self.image if acls is self.image.acls else AclsImage(acls)


@dataclass(frozen=True, slots=True)
class ScramImage:
    credentials: Map[tuple[str, ScramMechanism], UserScramCredentialRecord]
    """By (user, mechanism)."""

    EMPTY: ClassVar[ScramImage]

    def write(self) -> Iterator[MetadataRecord]:
        for _, credential in sorted_items(self.credentials):
            yield credential


ScramImage.EMPTY = ScramImage(EMPTY_MAP)


class ScramDelta:
    __slots__ = ("credentials", "image")

    def __init__(self, image: ScramImage) -> None:
        self.image = image
        self.credentials: MapChanges[tuple[str, ScramMechanism], UserScramCredentialRecord] = (
            MapChanges(image.credentials)
        )

    @classmethod
    def creating(cls, image: ScramImage) -> ScramDelta:
        delta = cls(ScramImage.EMPTY)
        delta.credentials = MapChanges.creating(image.credentials)
        return delta

    def replay_credential(self, record: UserScramCredentialRecord) -> None:
        self.credentials.set((record.name, record.mechanism), record)

    def replay_remove_credential(self, record: RemoveUserScramCredentialRecord) -> None:
        # Kafka treats removing an absent credential as a no-op.
        self.credentials.delete((record.name, record.mechanism))

    def finish_snapshot(self) -> None:
        self.credentials.finish_snapshot()

    def apply(self) -> ScramImage:
        credentials = self.credentials.apply()
        return self.image if credentials is self.image.credentials else ScramImage(credentials)


@dataclass(frozen=True, slots=True)
class DelegationTokensImage:
    tokens: Map[str, DelegationTokenRecord]
    """By token id."""

    EMPTY: ClassVar[DelegationTokensImage]

    def write(self) -> Iterator[MetadataRecord]:
        for _, token in sorted_items(self.tokens):
            yield token


DelegationTokensImage.EMPTY = DelegationTokensImage(EMPTY_MAP)


class DelegationTokensDelta:
    __slots__ = ("image", "tokens")

    def __init__(self, image: DelegationTokensImage) -> None:
        self.image = image
        self.tokens: MapChanges[str, DelegationTokenRecord] = MapChanges(image.tokens)

    @classmethod
    def creating(cls, image: DelegationTokensImage) -> DelegationTokensDelta:
        delta = cls(DelegationTokensImage.EMPTY)
        delta.tokens = MapChanges.creating(image.tokens)
        return delta

    def replay_token(self, record: DelegationTokenRecord) -> None:
        self.tokens.set(record.token_id, record)

    def replay_remove_token(self, record: RemoveDelegationTokenRecord) -> None:
        # Kafka treats removing an absent token as a no-op.
        self.tokens.delete(record.token_id)

    def finish_snapshot(self) -> None:
        self.tokens.finish_snapshot()

    def apply(self) -> DelegationTokensImage:
        tokens = self.tokens.apply()
        return self.image if tokens is self.image.tokens else DelegationTokensImage(tokens)
