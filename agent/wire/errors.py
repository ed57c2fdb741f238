"""Errors of the wire layer. Their text never contains field values, only positions and names."""

from __future__ import annotations


def _field_label(field: int | str | None) -> str:
    if field is None:
        return ""
    if isinstance(field, int):
        from agent.wire.spec import CUP_FIELDS

        name = next((f.name for f in CUP_FIELDS if f.number == field), None)
        return f"field {field} ({name})" if name else f"field {field}"
    return field


class WireError(ValueError):
    """Base of every error the wire layer raises."""


class EncodeError(WireError):
    """A message could not be encoded; names the field and what is wrong with it."""

    def __init__(self, reason: str, field: int | str | None = None) -> None:
        self.reason = reason
        self.field = field
        label = _field_label(field)
        super().__init__(f"{label}: {reason}" if label else reason)


class DecodeError(WireError):
    """Bytes could not be decoded; names the byte offset, the field and what is wrong."""

    def __init__(self, reason: str, *, offset: int, field: int | str | None = None) -> None:
        self.reason = reason
        self.offset = offset
        self.field = field
        label = _field_label(field)
        where = f"at byte {offset}, {label}" if label else f"at byte {offset}"
        super().__init__(f"{where}: {reason}")

    def shifted(self, base: int) -> DecodeError:
        """The same error with its offset counted from ``base`` bytes earlier."""
        return DecodeError(self.reason, offset=self.offset + base, field=self.field)
