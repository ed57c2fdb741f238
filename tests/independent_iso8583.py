"""A second ISO 8583 decoder, written from DESIGN.md section 4 alone.

It shares nothing with agent.wire (no spec object, no profile, no pyiso8583) so that the wire
layer is not checked against itself. It is deliberately plain: a table and a loop.
"""

from __future__ import annotations

# field: (format, max length, length-prefix bytes: 0 fixed, 1 LL, 2 LLL)
PROFILE = {
    2: ("n", 19, 1), 3: ("n", 6, 0), 4: ("n", 12, 0), 11: ("n", 6, 0), 12: ("n", 6, 0),
    13: ("n", 4, 0), 14: ("n", 4, 0), 15: ("n", 4, 0), 22: ("n", 3, 0), 23: ("n", 3, 0),
    25: ("n", 2, 0), 26: ("n", 2, 0), 32: ("n", 11, 1), 35: ("z", 37, 1), 36: ("z", 104, 2),
    37: ("an", 12, 0), 38: ("an", 6, 0), 39: ("an", 2, 0), 41: ("ans", 8, 0),
    42: ("ans", 15, 0), 44: ("an", 25, 1), 48: ("n", 322, 2), 49: ("an", 3, 0),
    52: ("b", 8, 0), 53: ("n", 16, 0), 54: ("an", 20, 2), 55: ("b", 255, 2), 59: ("b", 999, 2),
    60: ("n", 32, 2), 61: ("n", 29, 2), 62: ("b", 512, 2), 63: ("ans", 163, 2), 64: ("b", 8, 0),
}  # fmt: skip
# Fixed odd-length n fields whose digits are left-justified (pad nibble last): real CUP terminals
# send the entry mode that way. The other fixed ones are right-justified, variable ones left.
LEFT_JUSTIFIED_FIXED = {22}


def _bcd_number(data: bytes) -> int:
    return int(data.hex())


def decode_host_frame(frame: bytes) -> dict:
    """Decode length + TPDU + header + message into plain Python values."""
    length = int.from_bytes(frame[:2], "big")
    assert length == len(frame) - 2, "length prefix"
    tpdu, header, body = frame[2:7], frame[7:13], frame[13:]
    assert tpdu[0] == 0x60, "TPDU id"
    result = {
        "tpdu": {"dest": tpdu[1:3].hex(), "src": tpdu[3:5].hex()},
        "header": {
            "category": header[0],
            "version": header[1],
            "status": header[2] >> 4,
            "processing": header[2] & 0x0F,
            "sub_version": header[3:6].hex(),
        },
    }
    result.update(decode_body(body))
    return result


def decode_body(body: bytes) -> dict:
    mti = body[:2].hex()
    bitmap = int.from_bytes(body[2:10], "big")
    present = [n for n in range(1, 65) if bitmap & (1 << (64 - n))]
    pos = 10
    fields: dict[int, object] = {}
    for n in present:
        fmt, max_len, prefix = PROFILE[n]
        if prefix:
            length = _bcd_number(body[pos : pos + prefix])
            pos += prefix
            assert length <= max_len, f"field {n} length"
        else:
            length = max_len
        if fmt in ("n", "z"):
            size = (length + 1) // 2
            digits = body[pos : pos + size].hex().upper()
            if length % 2:
                pad_last = prefix != 0 or n in LEFT_JUSTIFIED_FIXED
                digits = digits[:-1] if pad_last else digits[1:]
            value: object = digits
        elif fmt == "b":
            size = length
            value = body[pos : pos + size]
        else:
            size = length
            raw = body[pos : pos + size]
            value = raw.decode("gb18030" if n == 63 else "ascii")
        assert len(body[pos : pos + size]) == size, f"field {n} truncated"
        fields[n] = value
        pos += size
    assert pos == len(body), "trailing bytes"
    if str(fields.get(53, ""))[2:3] != "1":  # 53.3: tracks in the clear, D is the separator
        for n in (35, 36):
            if n in fields:
                fields[n] = str(fields[n]).replace("D", "=")
    return {"mti": mti, "fields": fields}
