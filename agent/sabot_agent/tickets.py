"""Shuffle ids, Flight tickets/descriptors and the app_metadata that travels with each message.

Format: a DoGet ticket is ``"<shuffle_id_hash>:<partition_id>"`` — decimal signed
int64, a colon, decimal int32 >= 0, in ASCII — where ``shuffle_id_hash`` is FNV-1a-64 over the UTF-8
shuffle id rendered as a signed int64. The shuffle id names job, attempt and stage, so data of a failed
attempt can never be mixed with a retry's. Each batch a producer keeps is identified by its producer
index, attempt and sequence (``PutMetadata``), so a batch is never stored twice. Decoding is strict, exactly what ``encode`` writes:
``-?[0-9]+:[0-9]+`` without spaces, plus signs or leading zeros (other than "0" itself; no "-0").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FNV64_OFFSET_BASIS = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3
_UINT64_MASK = (1 << 64) - 1
_INT32_MAX = (1 << 31) - 1
MAX_PARTITION_ID = _INT32_MAX
_MAX_TICKET_BYTES = 64
_DECIMAL = re.compile(rb"0|-?[1-9][0-9]*")


class TicketError(ValueError):
    """A ticket, descriptor or app_metadata that does not follow the documented format."""


def fnv1a_64(text: str) -> int:
    """FNV-1a-64 of the UTF-8 bytes of ``text``, as a signed int64."""
    value = FNV64_OFFSET_BASIS
    for byte in text.encode("utf-8"):
        value ^= byte
        value = (value * FNV64_PRIME) & _UINT64_MASK
    return value - (1 << 64) if value >= (1 << 63) else value


def shuffle_id(job_name: str, attempt: int, stage: str) -> str:
    """The id of one shuffle of one job attempt, e.g. ``sales-by-region/attempt-0/aggregate``."""
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    return f"{job_name}/attempt-{attempt}/{stage}"


@dataclass(frozen=True)
class PartitionKey:
    """Which partition of which shuffle a ticket or descriptor names."""

    shuffle_hash: int
    partition_id: int

    @classmethod
    def for_shuffle(cls, shuffle_id_text: str, partition_id: int) -> "PartitionKey":
        return cls(fnv1a_64(shuffle_id_text), partition_id)

    def encode(self) -> bytes:
        return f"{self.shuffle_hash}:{self.partition_id}".encode("ascii")

    @classmethod
    def decode(cls, raw: bytes) -> "PartitionKey":
        """Parse ``b"<int64>:<int32>"``; anything else raises TicketError saying what is wrong."""
        if len(raw) > _MAX_TICKET_BYTES:
            raise TicketError(f"malformed ticket: {len(raw)} bytes, longer than {_MAX_TICKET_BYTES}")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise TicketError(f"malformed ticket {raw!r}: not ASCII; expected '<shuffle_id_hash>:<partition_id>'") from None
        hash_text, colon, partition_text = raw.partition(b":")
        if not colon:
            raise TicketError(f"malformed ticket {text!r}: expected '<shuffle_id_hash>:<partition_id>'")
        if not (_DECIMAL.fullmatch(hash_text) and _DECIMAL.fullmatch(partition_text)):
            raise TicketError(
                f"malformed ticket {text!r}: both parts must be decimal integers without spaces, '+' or leading zeros"
            )
        shuffle_hash, partition_id = int(hash_text), int(partition_text)
        if not -(1 << 63) <= shuffle_hash < (1 << 63):
            raise TicketError(f"malformed ticket {text!r}: shuffle_id_hash is outside int64")
        if not 0 <= partition_id <= _INT32_MAX:
            raise TicketError(f"malformed ticket {text!r}: partition_id must be in [0, {_INT32_MAX}]")
        return cls(shuffle_hash, partition_id)


@dataclass(frozen=True)
class PutMetadata:
    """Who produced a stored batch: the producer's index, its attempt and the batch's sequence number
    within its partition (the store keeps one batch per identity)."""

    shuffle_id: str
    producer: int
    attempt: int
    sequence: int
