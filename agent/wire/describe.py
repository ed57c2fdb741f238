"""Readable and JSON descriptions of decoded frames, always masked."""

from __future__ import annotations

import json
from typing import Any

from agent.wire import codes
from agent.wire import field59 as f59
from agent.wire.errors import DecodeError
from agent.wire.frame import PROCESSING_REQUIREMENTS, Frame, Header, Tpdu
from agent.wire.mask import mask_field, mask_subusage, mask_usage
from agent.wire.message import FieldValue, Message
from agent.wire.profile import CUP, Profile
from agent.wire.spec import MTI_NAMES

TERMINAL_STATUS = {0: "normal", 1: "test"}
# 22.1, how the card was read, and 22.2, whether the terminal takes a PIN (CUP).
PAN_ENTRY = {
    "01": "manual",
    "02": "magnetic stripe",
    "03": "barcode / QR code",
    "05": "IC chip",
    "07": "contactless IC chip",
    "91": "contactless magnetic stripe",
}
PIN_ENTRY = {"0": "PIN capability unknown", "1": "PIN can be entered", "2": "no PIN pad"}
PIN_FORMATS = {"1": "ISO 9564 format 0 (with PAN)", "2": "ISO 9564 format 3 / no PAN"}
ALGORITHMS = {"0": "single DES", "6": "double-length 3DES"}


def _note(number: int, value: FieldValue, shown: str) -> str:
    """What a technician wants to know beyond the shown value, for the fields that need it."""
    if number == 64 and isinstance(value, bytes) and value.isascii() and value.decode().isalnum():
        return f"ASCII {value.decode()}"
    if not isinstance(value, str) or shown != value:
        return ""
    if number == 22 and len(value) == 3:
        return (
            f"{PAN_ENTRY.get(value[:2], 'entry mode ' + value[:2])}, "
            f"{PIN_ENTRY.get(value[2], 'PIN ' + value[2])}"
        )
    if number == 53 and len(value) >= 3:
        return (
            f"53.1 PIN {PIN_FORMATS.get(value[0], value[0])}, "
            f"53.2 {ALGORITHMS.get(value[1], 'algorithm ' + value[1])}, "
            f"53.3 tracks {'encrypted under the TDK' if value[2] == '1' else 'in the clear'}"
        )
    if number == 39 and codes.is_code(value):
        rc = codes.lookup(value)
        return f"{rc.zh} / {rc.en} [{rc.category}]"
    if number == 60 and len(value) >= 8:
        parts = [f"60.1 message type {value[:2]}", f"60.2 batch {value[2:8]}"]
        if len(value) >= 11:
            parts.append(f"60.3 network code {value[8:11]}")
        if len(value) > 11:
            parts.append(f"rest {value[11:]}")
        return ", ".join(parts)
    return ""


def _describe_sub_usages(usage: f59.Usage) -> dict[str, Any]:
    """The sub-usages of an A2 or A5, masked, or the problem that keeps them from parsing."""
    names = f59.SUB_USAGE_NAMES[usage.tag]
    try:
        items = f59.parse_subusages(usage.value, usage.tag)
    except DecodeError as exc:
        return {"problem": f"at byte {exc.offset} of {usage.tag}: {exc.reason}"}
    subs = []
    for item in items:
        sub: dict[str, Any] = {
            "tag": item.tag,
            "name": names.get(item.tag, "unknown sub-usage"),
            "value": mask_subusage(usage.tag, item.tag, item.value),
        }
        if usage.tag == f59.TUSN_USAGE and item.tag == "01" and item.value in f59.DEVICE_TYPES:
            sub["note"] = f59.DEVICE_TYPES[item.value]
        subs.append(sub)
    result: dict[str, Any] = {"sub_usages": subs}
    problem = f59.a2_problem(usage.value) if usage.tag == f59.TUSN_USAGE else None
    if problem is not None:
        result["problem"] = problem
    return result


def describe_field59(value: FieldValue) -> dict[str, Any]:
    """Field 59's usages in order (tag, name, length, masked value and, for A2 and A5, their
    sub-usages), or a note saying where it stops being a run of usages."""
    try:
        usages = f59.Field59.parse(f59.field_bytes(value)).usages
    except DecodeError as exc:
        return {"note": f"not a run of usages: at byte {exc.offset}: {exc.reason}"}
    described = []
    for usage in usages:
        entry: dict[str, Any] = {
            "tag": usage.tag,
            "name": usage.name,
            "length": len(usage.value),
            "value": mask_usage(usage.tag, usage.value),
        }
        if usage.tag in f59.SUB_USAGE_NAMES:
            entry.update(_describe_sub_usages(usage))
        described.append(entry)
    return {"usages": described}


def describe_message(message: Message, profile: Profile = CUP) -> dict[str, Any]:
    fields = []
    for number, value in message.fields.items():
        shown = mask_field(number, value)
        f = profile.fields[number]
        entry = {"number": number, "name": f.name, "format": f.kind, "value": shown}
        note = _note(number, value, shown)
        if note:
            entry["note"] = note
        if number == f59.FIELD:
            entry.update(describe_field59(value))
        fields.append(entry)
    return {"mti": message.mti, "mti_name": MTI_NAMES.get(message.mti, "unknown"), "fields": fields}


def describe_tpdu(tpdu: Tpdu) -> dict[str, Any]:
    return {
        "hex": tpdu.to_bytes().hex().upper(),
        "destination_nii": f"{tpdu.destination:04X}",
        "source_nii": f"{tpdu.source:04X}",
    }


def describe_header(header: Header) -> dict[str, Any]:
    return {
        "hex": header.to_bytes().hex().upper(),
        "category": f"{header.category:02X}",
        "software_version": f"{header.software_version:02X}",
        "terminal_status": header.terminal_status,
        "terminal_status_text": TERMINAL_STATUS.get(header.terminal_status, "unknown"),
        "processing_requirement": header.processing_requirement,
        "processing_requirement_text": header.processing_requirement_text,
        "processing_requirement_action": PROCESSING_REQUIREMENTS.get(
            header.processing_requirement, ("", "none: not a requirement DESIGN.md defines")
        )[1],
        "sub_version": header.sub_version.hex().upper(),
    }


def describe_frame(frame: Frame, profile: Profile = CUP) -> dict[str, Any]:
    """The JSON form printed by ``agent decode --json``."""
    result: dict[str, Any] = {"layout": frame.layout.value}
    if frame.tpdu is not None:
        result["tpdu"] = describe_tpdu(frame.tpdu)
    if frame.header is not None:
        result["header"] = describe_header(frame.header)
    result.update(describe_message(frame.message, profile))
    return result


def render_frame(frame: Frame, profile: Profile = CUP) -> str:
    """The human form printed by ``agent decode``."""
    d = describe_frame(frame, profile)
    lines = [f"layout   {d['layout']}"]
    if "tpdu" in d:
        t = d["tpdu"]
        lines.append(
            f"TPDU     {t['hex']}  destination NII {t['destination_nii']}, "
            f"source NII {t['source_nii']}"
        )
    if "header" in d:
        h = d["header"]
        lines.append(
            f"header   {h['hex']}  category {h['category']}, software {h['software_version']}, "
            f"status {h['terminal_status']} ({h['terminal_status_text']}), processing requirement "
            f"{h['processing_requirement']} ({h['processing_requirement_text']}; agent: "
            f"{h['processing_requirement_action']}), "
            f"sub-version {h['sub_version']}"
        )
    lines.append(f"MTI      {d['mti']}  {d['mti_name']}")
    name_width = max((len(f["name"]) for f in d["fields"]), default=0)
    format_width = max((len(f["format"]) for f in d["fields"]), default=0)
    for f in d["fields"]:
        line = (
            f"  {f['number']:>2}  {f['name']:<{name_width}}  {f['format']:<{format_width}}  "
            f"{f['value']}"
        )
        if "note" in f:
            line += f"  ({f['note']})"
        lines.append(line)
        lines.extend(_render_usages(f.get("usages", [])))
    return "\n".join(lines)


def _render_usages(usages: list[dict[str, Any]]) -> list[str]:
    """Field 59's usages under its line, one per line, sub-usages indented below their usage."""
    lines = []
    name_width = max((len(u["name"]) for u in usages), default=0)
    for u in usages:
        head = f"      {u['tag']}  {u['name']:<{name_width}}  {u['length']:>3} bytes"
        subs = u.get("sub_usages")
        # A2 and A5 are shown by their sub-usages; the others by their (masked) value.
        lines.append(head if subs is not None else f"{head}  {u['value']}")
        sub_width = max((len(s["name"]) for s in subs or []), default=0)
        for s in subs or []:
            # quoted when blank or space-padded (an application version): the padding is data
            shown = json.dumps(s["value"]) if s["value"].strip() != s["value"] else s["value"]
            line = f"          {s['tag']}  {s['name']:<{sub_width}}  {shown}"
            if "note" in s:
                line += f"  ({s['note']})"
            lines.append(line)
        if "problem" in u:
            lines.append(f"          problem: {u['problem']}")
    return lines
