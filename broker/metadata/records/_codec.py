"""Compact binary encoding of record batches (the file log's frame format).

A frame is::

    length   u32   bytes after this field
    crc      u32   CRC32C of every byte after this field
    format   u8    FORMAT_VERSION
    base     i64   base offset
    epoch    i32
    time     i64   append time, ms since the epoch
    count    u32   number of records
    payload        msgpack array of records, each ``[api_key, version, *fields]``

Fields are positional in declaration order (nested models too), UUIDs are msgpack
extension type 1, enums are their ints.

Decoding validates every record with its pydantic model, so a frame from elsewhere that
passes the CRC but holds nonsense still fails loudly. ``trusted=True`` is for frames this
library wrote and reads back from its own CRC-checked files (the file log, snapshots):
their records were validated when they were built, so they are rebuilt field by field
without a second validation, about 2.5 times faster (3 against 7-8 µs per record of a
sim controller's log). A trusted record's type is looked up by its api key's value and
its version must be the current one for the fast path; any other shape is validated.
Records from anywhere else (appends through the API, an etcd log another process
writes) keep the validating path. A trusted batch goes further for replay: its hot
record types are decoded as RecordViews (a third to a fifth of a record's cost), and
its records are built only if someone reads them (``views=False`` builds them now).
"""

from __future__ import annotations

import enum
import struct
import threading
import types
import typing
from collections import namedtuple
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, NoReturn
from uuid import UUID

import crc32c
import msgpack
from pydantic import BaseModel, ValidationError

from broker.errors import CorruptRecordError
from broker.metadata.records._automq import (
    AssignedS3ObjectIdRecord,
    RangeRecord,
    RemoveRangeRecord,
    RemoveS3ObjectRecord,
    RemoveS3StreamObjectRecord,
    RemoveS3StreamRecord,
    S3StreamObjectRecord,
    S3StreamRecord,
)
from broker.metadata.records._base import MetadataRecord
from broker.metadata.records._batch import RECORD_TYPES, RecordBatch, RecordView
from broker.metadata.records._kafka import PartitionChangeRecord, PartitionRecord

__all__ = [
    "FORMAT_VERSION",
    "FRAME_HEADER_SIZE",
    "MAX_FRAME_SIZE",
    "FrameHeader",
    "decode_batch",
    "decode_record",
    "encode_batch",
    "encode_frame",
    "encode_record",
    "iter_batches",
    "read_frame_header",
    "record_encoder",
]

FORMAT_VERSION = 1
"""Version of the frame layout, stored in every frame."""
MAX_FRAME_SIZE = 64 * 1024 * 1024
"""Largest frame a reader accepts: a larger length is corruption, not a batch."""
_LENGTH = struct.Struct(">I")
_HEADER = struct.Struct(">IIBqiqI")
_BODY_HEADER = struct.Struct(">BqiqI")
_CRC = struct.Struct(">I")
FRAME_HEADER_SIZE = _HEADER.size
"""Bytes of a frame before its payload."""
_CRC_START = 8  # the CRC covers everything after length and crc
_UUID_EXT = 1


_UUID_CACHE_SIZE = 1 << 16
_uuid_exts: dict[UUID, msgpack.ExtType] = {}
"""Encoded forms of recently written UUIDs (the same few ids recur in every record)."""


def _default(value: object) -> object:
    if isinstance(value, UUID):
        ext = _uuid_exts.get(value)
        if ext is None:
            if len(_uuid_exts) >= _UUID_CACHE_SIZE:
                _uuid_exts.clear()
            ext = _uuid_exts[value] = msgpack.ExtType(_UUID_EXT, value.bytes)
        return ext
    if isinstance(value, BaseModel):
        return list(value.__dict__.values())
    raise TypeError(f"cannot encode {type(value).__name__}")


_uuids: dict[bytes, UUID] = {}
"""Recently decoded UUIDs. A log names the same few topic ids and directories over and
over; building a UUID costs more than the rest of a record's msgpack, and sharing one
object per id also keeps the image smaller. Cleared when full (a bound, not an LRU)."""


def _ext_hook(code: int, data: bytes) -> object:
    if code == _UUID_EXT and len(data) == 16:
        found = _uuids.get(data)
        if found is None:
            if len(_uuids) >= _UUID_CACHE_SIZE:
                _uuids.clear()
            found = _uuids[data] = UUID(bytes=data)
        return found
    raise ValueError(f"unknown msgpack extension type {code} ({len(data)} bytes)")


_packer_options: dict[str, Any] = {"default": _default, "use_bin_type": True}


def _record_wire(record: MetadataRecord) -> list[object]:
    return [record.api_key, record.version, *record.__dict__.values()]


class _Packers(threading.local):
    """One packer per thread: ``packb`` builds a new one per call, which costs more than
    packing a small record, and a packer is not safe to share between threads."""

    def __init__(self) -> None:
        self.packer = msgpack.Packer(**_packer_options)


_packers = _Packers()


def encode_record(record: MetadataRecord) -> bytes:
    """One record on its own (snapshots encode record by record)."""
    return _packers.packer.pack(_record_wire(record))  # type: ignore[no-any-return]


_record_encoders: dict[type[MetadataRecord], Callable[..., bytes]] = {}


def record_encoder(cls: type[MetadataRecord]) -> Callable[..., bytes]:
    """A function of ``cls``'s fields, by keyword (left out: the field's default), that
    returns the bytes ``encode_record(cls(**fields))`` would, without building or
    validating the record. Nested models are given as tuples of their fields in order.

    For writing what was validated already: a snapshot of an image encodes a record per
    partition and stream, and building the pydantic record costs more than packing it.
    A property test checks that the snapshot encoder's bytes decode to ``write()``'s
    records (tests/metadata)."""
    found = _record_encoders.get(cls)
    if found is not None:
        return found
    namespace: dict[str, Any] = {"packers": _packers, "api_key": cls.api_key}
    namespace["version"] = cls.version
    parameters, values = [], []
    for index, (name, field) in enumerate(cls.model_fields.items()):
        if field.default_factory is not None:
            raise TypeError(f"{cls.__name__}.{name}: a default factory has no constant form")
        if field.is_required():
            parameters.append(name)
        else:
            namespace[f"d{index}"] = field.default
            parameters.append(f"{name}=d{index}")
        values.append(name)
    keywords = f"*, {', '.join(parameters)}" if parameters else ""
    source = (
        f"def encode({keywords}):\n"
        f"    return packers.packer.pack([api_key, version, {', '.join(values)}])\n"
    )
    exec(compile(source, f"<encoder of {cls.__name__}>", "exec"), namespace)
    encode: Callable[..., bytes] = namespace["encode"]
    _record_encoders[cls] = encode
    return encode


def encode_batch(batch: RecordBatch) -> bytes:
    """One frame holding ``batch`` (see the module docstring for the layout)."""
    payload: bytes = _packers.packer.pack([_record_wire(r) for r in batch.records])
    return _frame(batch.base_offset, batch.epoch, batch.append_time_ms, len(batch.records), payload)


def encode_frame(
    base_offset: int, epoch: int, append_time_ms: int, count: int, records: bytes
) -> bytes:
    """One frame of ``count`` records already encoded one by one (:func:`encode_record`,
    concatenated): the same bytes :func:`encode_batch` writes for those records."""
    header: bytes = _packers.packer.pack_array_header(count)
    return _frame(base_offset, epoch, append_time_ms, count, header + records)


def _frame(base_offset: int, epoch: int, append_time_ms: int, count: int, payload: bytes) -> bytes:
    body = _BODY_HEADER.pack(FORMAT_VERSION, base_offset, epoch, append_time_ms, count) + payload
    return _LENGTH.pack(len(body) + _CRC.size) + _CRC.pack(crc32c.crc32c(body)) + body


# Nested models are positional on the wire; this maps each model's fields back to names.
_NestedPlan = tuple[tuple[str, "type[BaseModel] | None", bool], ...]
_plans: dict[type[BaseModel], _NestedPlan] = {}


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(model class, is a tuple of them) for annotations like ``tuple[M, ...]``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model, many = _nested_model(arg)
            if model is not None:
                return model, many
        return None, False
    if origin is tuple:
        args = typing.get_args(annotation)
        if args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
            return args[0], True
        return None, False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def _plan(cls: type[BaseModel]) -> _NestedPlan:
    plan = _plans.get(cls)
    if plan is None:
        plan = tuple((name, *_nested_model(f.annotation)) for name, f in cls.model_fields.items())
        _plans[cls] = plan
    return plan


def _named(cls: type[BaseModel], values: Sequence[Any]) -> dict[str, Any]:
    plan = _plan(cls)
    if len(values) > len(plan):
        raise ValueError(f"{cls.__name__} has {len(plan)} fields, got {len(values)} values")
    named: dict[str, Any] = {}
    for (name, nested, many), value in zip(plan, values, strict=False):
        if nested is not None and value is not None:
            value = [_named(nested, item) for item in value] if many else _named(nested, value)
        named[name] = value
    return named


def _record_class(wire: object) -> type[MetadataRecord]:
    """The record type of ``[api_key, version, *fields]``, its header checked."""
    if not isinstance(wire, tuple) or len(wire) < 2:
        raise ValueError("a record is an array [api_key, version, *fields]")
    api_key, version = wire[0], wire[1]
    cls = RECORD_TYPES.get(api_key) if isinstance(api_key, int) else None
    if cls is None:
        raise ValueError(f"unknown record api_key {api_key!r}")
    if not isinstance(version, int) or not 0 <= version <= cls.version:
        raise ValueError(f"{cls.__name__} version {version!r} is not supported (max {cls.version})")
    return cls


def _record_from_wire(wire: object) -> MetadataRecord:
    cls = _record_class(wire)
    return cls.model_validate(_named(cls, wire[2:]))  # type: ignore[index]


# Trusted decode ------------------------------------------------------------------------
# A trusted record is built as pydantic's own model_construct builds one (the field
# values as __dict__, every field marked as set, no extra and no private values), by a
# function generated per type: one dict display with constant keys and the conversions
# inline costs a third of dict(zip(...)), the bulk of the work. The function checks the
# wire array's shape first (its length, and the version for a record) and hands anything
# else (an older, shorter version with defaults to fill in) to validation. Record
# builders are found by api key in one dict lookup, cached as the first record of each
# type goes through the checked path. A property test checks the result against the
# validating path for every record type (tests/metadata).

_Builder = Callable[[tuple[Any, ...]], Any]
_builders: dict[tuple[type[BaseModel], int], _Builder] = {}
_record_builders: dict[int, _Builder] = {}
"""The builder of each record type seen so far, by api key (filled by the first record
of the type: :func:`_trusted_record_from_wire`)."""


_INSTANCE_SETTERS = {
    f"set_{name}": BaseModel.__dict__[f"__{attribute}__"].__set__
    for name, attribute in (
        ("dict", "dict"),
        ("fields_set", "pydantic_fields_set"),
        ("extra", "pydantic_extra"),
        ("private", "pydantic_private"),
    )
}
"""The setters of a model instance's ``__dict__`` and pydantic's three slots: what
``object.__setattr__`` finds and calls, found once (finding them was 0.34 µs of the
1.81 µs a record took to build)."""


def _enum_class(annotation: Any) -> type[enum.Enum] | None:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [_enum_class(arg) for arg in typing.get_args(annotation)]
        return next((e for e in found if e is not None), None)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation
    return None


def _validator(cls: type[BaseModel], skip: int) -> _Builder:
    if skip:
        return _record_from_wire  # a record's header is checked too

    def validate(wire: tuple[Any, ...]) -> Any:
        return cls.model_validate(_named(cls, wire))

    return validate


def _field_values(cls: type[BaseModel], skip: int, namespace: dict[str, Any]) -> list[str]:
    """The expression of each of ``cls``'s fields in a generated builder: its value in
    the wire array ``w`` (from index ``skip``), converted as the field needs (nested
    models by their own builders, enums by member); what the conversions use goes in
    ``namespace``."""
    values = []
    for index, field in enumerate(cls.model_fields.values()):
        value = f"w[{index + skip}]"
        nested, many = _nested_model(field.annotation)
        enum_class = _enum_class(field.annotation)
        if nested is not None:
            namespace[f"c{index}"] = _builder(nested, 0)
            built = f"tuple(map(c{index}, {value}))" if many else f"c{index}({value})"
            value = f"(None if {value} is None else {built})"
        elif enum_class is not None:
            # A dict of the members first: calling an enum class runs Python code.
            namespace[f"c{index}"] = enum_class
            namespace[f"m{index}"] = {member.value: member for member in enum_class}
            value = (
                f"(None if {value} is None else m{index}[{value}]"
                f" if {value} in m{index} else c{index}({value}))"
            )
        values.append(value)
    return values


def _shape_check(cls: type[BaseModel], skip: int) -> str:
    """The condition under which a wire array is not the current version's: validated."""
    shape = f"len(w) != {len(cls.model_fields) + skip}"
    if skip:
        shape += f" or w[1] != {getattr(cls, 'version', 0)}"
    return shape


def _generated(cls: type[BaseModel], what: str, body: str, namespace: dict[str, Any]) -> _Builder:
    exec(compile(body, f"<trusted {what} of {cls.__name__}>", "exec"), namespace)
    build: _Builder = namespace["build"]
    return build


def _builder(cls: type[BaseModel], skip: int) -> _Builder:
    """A function that builds ``cls`` from a wire array whose fields start at ``skip``
    (a record's: 2, after its api key and version). It validates a model pydantic runs
    hooks on, and any array of another shape than the current version's."""
    key = (cls, skip)
    found = _builders.get(key)
    if found is not None:
        return found
    build = validate = _validator(cls, skip)
    if cls.__pydantic_post_init__ is None and not cls.__private_attributes__:
        namespace: dict[str, Any] = {
            "new": object.__new__,
            **_INSTANCE_SETTERS,
            "cls": cls,
            "names": frozenset(cls.model_fields),
            "validate": validate,
        }
        values = _field_values(cls, skip, namespace)
        items = [f"{name!r}: {value}" for name, value in zip(cls.model_fields, values, strict=True)]
        source = (
            "def build(w):\n"
            f"    if {_shape_check(cls, skip)}:\n"
            "        return validate(w)\n"
            "    record = new(cls)\n"
            f"    set_dict(record, {{{', '.join(items)}}})\n"
            "    set_fields_set(record, set(names))\n"
            "    set_extra(record, None)\n"
            "    set_private(record, None)\n"
            "    return record\n"
        )
        build = _generated(cls, "decode", source, namespace)
    _builders[key] = build
    return build


def _trusted_record_from_wire(wire: object) -> MetadataRecord:
    """The checked way in: the header is checked, and the type's builder cached."""
    cls = _record_class(wire)
    build = _record_builders[cls.api_key] = _builder(cls, 2)
    record: MetadataRecord = build(wire)  # type: ignore[arg-type]
    return record


# Record views (see RecordView): for the record types that make up most of a
# controller's log and whose replay rules only read fields. A view is the wire array
# with its enums converted, as a tuple of the view class: a third to a fifth of building
# the record. A rule that kept the record itself (S3ObjectRecord is image content) or
# read it another way must not be listed (PartitionChangeRecord's merge unpacks a view
# as the tuple it is, and a record's __dict__, which is faster than a pydantic record's
# attributes: those go through pydantic's __getattr__ hook); a property test replays
# views and records and compares the images.
_VIEWED: tuple[type[MetadataRecord], ...] = (
    RangeRecord,
    S3StreamRecord,
    PartitionChangeRecord,
    PartitionRecord,
    RemoveS3StreamRecord,
    S3StreamObjectRecord,
    AssignedS3ObjectIdRecord,
    RemoveS3ObjectRecord,
    RemoveRangeRecord,
    RemoveS3StreamObjectRecord,
)


def _view_builder(cls: type[MetadataRecord]) -> _Builder:
    """A function that builds ``cls``'s view from a record's wire array (checked as the
    record builder checks it: another shape is validated into a record)."""
    fields = list(cls.model_fields)
    if any(_nested_model(cls.model_fields[name].annotation)[0] for name in fields):
        raise TypeError(f"{cls.__name__} has nested models: it has no view")
    # A named tuple's field getters are C code: twice as fast as property(itemgetter).
    layout = namedtuple("layout", ["key", "version", *fields])  # type: ignore[misc]
    view_class = type(
        cls.__name__,
        (RecordView,),
        {
            "__slots__": (),
            "__module__": __name__,
            "__qualname__": f"RecordView[{cls.__name__}]",
            "record_class": cls,
            "record": _builder(cls, 2),
            **{name: layout.__dict__[name] for name in fields},
        },
    )
    namespace: dict[str, Any] = {
        "new": tuple.__new__,
        "view": view_class,
        "validate": _record_from_wire,
    }
    values = _field_values(cls, 2, namespace)
    plain = values == [f"w[{index + 2}]" for index in range(len(fields))]
    # nothing to convert: the wire array itself, as a view
    converted = "w" if plain else f"(w[0], w[1], {', '.join(values)})"
    source = (
        "def build(w):\n"
        f"    if {_shape_check(cls, 2)}:\n"
        "        return validate(w)\n"
        f"    return new(view, {converted})\n"
    )
    return _generated(cls, "view", source, namespace)


_replay_builders: dict[int, _Builder] = {cls.api_key: _view_builder(cls) for cls in _VIEWED}
"""What a trusted batch's replayable holds, by api key: views of the types above, and
the record builders of the others as the first record of each type is seen."""


def _trusted_replayable(wire: object) -> MetadataRecord:
    """The checked way in (a record): a type without a view gets its record builder."""
    record = _trusted_record_from_wire(wire)
    _replay_builders.setdefault(record.api_key, _record_builders[record.api_key])
    return record


def _trusted_records(
    wire: tuple[Any, ...], builders: dict[int, _Builder], checked: _Builder
) -> tuple[MetadataRecord, ...]:
    """The records of a trusted payload, each by its type's builder in ``builders``
    (found by api key: records, or RecordViews typed as the records they replay as).

    Anything but an array goes the ``checked`` path; an empty array or an unhashable api
    key fails the lookup with IndexError or TypeError, and the checked path then names
    what is wrong with it.
    """
    get = builders.get
    try:
        return tuple([get(w[0], checked)(w) if w.__class__ is tuple else checked(w) for w in wire])
    except (TypeError, IndexError):
        return tuple(map(checked, wire))


def _unpack(data: bytes | memoryview) -> Any:
    # Arrays as tuples: record fields hold tuples, so the trusted path keeps them as is.
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, use_list=False)


def decode_record(data: bytes, *, trusted: bool = False) -> MetadataRecord:
    """Inverse of :func:`encode_record`; raises CorruptRecordError.

    ``trusted``: the bytes come from this library's own CRC-checked storage, so the
    record is rebuilt without validation (see the module docstring).
    """
    try:
        from_wire = _trusted_record_from_wire if trusted else _record_from_wire
        return from_wire(_unpack(data))
    except (ValueError, TypeError, ValidationError, msgpack.UnpackException) as exc:
        raise CorruptRecordError(_describe(exc)) from exc


def _describe(exc: Exception) -> str:
    if isinstance(exc, msgpack.UnpackException | msgpack.ExtraData):
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return f"payload is not valid msgpack ({detail})"
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        return f"{exc.title}.{loc}: {first['msg']}"
    return str(exc) or type(exc).__name__


class FrameHeader(NamedTuple):
    """What a frame's header says, its CRC checked (:func:`read_frame_header`)."""

    base_offset: int
    epoch: int
    append_time_ms: int
    record_count: int
    """Records in the frame (as the header says: the payload is not decoded)."""
    end: int
    """Position after the frame."""

    @property
    def next_offset(self) -> int:
        """Offset after the frame's last record."""
        return self.base_offset + self.record_count


def _corrupt(
    reason: str,
    position: int,
    source: str | None,
    *,
    offset: int | None = None,
    truncated: bool = False,
) -> NoReturn:
    raise CorruptRecordError(
        reason, position=position, offset=offset, source=source, truncated=truncated
    )


def _frame_fields(
    data: bytes | bytearray | memoryview, position: int, max_frame_size: int
) -> tuple[int, int, int, int, int] | None:
    """``(base offset, epoch, append time, record count, end)`` of the frame at
    ``position`` if it passes every check of :func:`read_frame_header`, else None (which
    then names what is wrong). One unpack and one test: a third of a frame's reading."""
    try:
        length, crc, fmt, base_offset, epoch, append_time, count = _HEADER.unpack_from(
            data, position
        )
    except struct.error:  # fewer bytes left than a header
        return None
    end = position + _LENGTH.size + length
    if (
        _HEADER.size - _LENGTH.size <= length <= max_frame_size
        and end <= len(data)
        and fmt == FORMAT_VERSION
        and count >= 1
        and crc32c.crc32c(memoryview(data)[position + _CRC_START : end]) == crc
    ):
        return base_offset, epoch, append_time, count, end
    return None


def read_frame_header(
    data: bytes | bytearray | memoryview,
    position: int = 0,
    *,
    source: str | None = None,
    max_frame_size: int = MAX_FRAME_SIZE,
) -> FrameHeader:
    """The header of the frame at ``position``, with its length, CRC and format checked
    but its records not decoded: what finding the frames of a log needs (a CRC32C runs
    at memory speed, decoding at a few microseconds per record).

    Raises CorruptRecordError as :func:`decode_batch` does, but only for what the header
    and the CRC show: a CRC-valid payload that does not decode fails when it is decoded.
    """
    fields = _frame_fields(data, position, max_frame_size)
    if fields is None:
        _bad_frame(data, position, source, max_frame_size)
    return FrameHeader(*fields)


def _bad_frame(
    data: bytes | bytearray | memoryview, position: int, source: str | None, max_frame_size: int
) -> NoReturn:
    """Raise the CorruptRecordError that says why the frame at ``position`` is bad."""
    end_of_data = len(data)
    if end_of_data - position < _LENGTH.size:
        _corrupt(
            f"{end_of_data - position} bytes left, a frame header needs {_HEADER.size}",
            position,
            source,
            truncated=True,
        )
    (length,) = _LENGTH.unpack_from(data, position)
    if length < _HEADER.size - _LENGTH.size or length > max_frame_size:
        _corrupt(f"frame length {length} out of range", position, source)
    end = position + _LENGTH.size + length
    if end > end_of_data:
        _corrupt(
            f"frame of {length} bytes ends {end - end_of_data} bytes past the data",
            position,
            source,
            truncated=True,
        )
    _, crc, fmt, base_offset, _, _, _ = _HEADER.unpack_from(data, position)
    actual = crc32c.crc32c(memoryview(data)[position + _CRC_START : end])
    if actual != crc:
        _corrupt(f"CRC32C mismatch: stored {crc:#010x}, computed {actual:#010x}", position, source)
    if fmt != FORMAT_VERSION:
        _corrupt(
            f"frame format {fmt} is not supported (expected {FORMAT_VERSION})",
            position,
            source,
            offset=base_offset,
        )
    # what is left of _frame_fields' checks: the record count
    _corrupt("a frame holds at least one record", position, source, offset=base_offset)


def decode_batch(
    data: bytes | bytearray | memoryview,
    position: int = 0,
    *,
    source: str | None = None,
    max_frame_size: int = MAX_FRAME_SIZE,
    trusted: bool = False,
    views: bool = True,
) -> tuple[RecordBatch, int]:
    """Decode the frame at ``position``; returns the batch and the position after it.

    Raises CorruptRecordError with ``truncated=True`` when the buffer ends inside the
    frame (a torn write), and ``truncated=False`` for anything else. ``trusted``: the
    frame was written by this library to storage of its own (see the module docstring).
    ``views``: a trusted batch replays RecordViews and builds its records when they are
    read (for a reader that replays it); False builds them now (one that keeps them).
    """
    fields = _frame_fields(data, position, max_frame_size)
    if fields is None:
        _bad_frame(data, position, source, max_frame_size)
    base_offset, epoch, append_time, count, end = fields
    try:
        wire = _unpack(memoryview(data)[position + _HEADER.size : end])
        if not isinstance(wire, tuple):
            raise ValueError("payload is not an array of records")
        if len(wire) != count:
            raise ValueError(f"header says {count} records, payload holds {len(wire)}")
        size = end - position
        if trusted and views:
            replayable = _trusted_records(wire, _replay_builders, _trusted_replayable)
            batch = RecordBatch._decoded(base_offset, epoch, append_time, replayable, size)
        else:
            records = (
                _trusted_records(wire, _record_builders, _trusted_record_from_wire)
                if trusted
                else tuple(map(_record_from_wire, wire))
            )
            batch = RecordBatch(base_offset, epoch, append_time, records, encoded_size=size)
    except (ValueError, TypeError, ValidationError, msgpack.UnpackException) as exc:
        raise CorruptRecordError(
            _describe(exc), position=position, offset=base_offset, source=source
        ) from exc
    return batch, end


def iter_batches(
    data: bytes | bytearray | memoryview,
    *,
    source: str | None = None,
    trusted: bool = False,
    views: bool = True,
) -> Iterator[tuple[int, RecordBatch]]:
    """Every frame in ``data`` as ``(position, batch)``; stops with an error on garbage.
    ``trusted`` and ``views`` as for :func:`decode_batch`."""
    position = 0
    while position < len(data):
        batch, end = decode_batch(data, position, source=source, trusted=trusted, views=views)
        yield position, batch
        position = end
