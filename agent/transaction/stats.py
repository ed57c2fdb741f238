"""Counters of the transaction layer, shared by its parts and shown by ``agent status``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GatewayStats:
    requests: int = 0
    local_answers: int = 0
    reversals_sent: int = 0
    bad_frames: int = 0
