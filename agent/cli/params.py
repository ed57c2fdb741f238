"""agent params: what the session downloads brought."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    load_config,
)
from agent.cli.render import print_json


def cmd_params(args: argparse.Namespace) -> int:
    """What the session downloads brought, read from the state directory (no service needed)."""
    from agent import paths
    from agent.session.store import ParameterStore

    store = ParameterStore(paths.parameters_path(load_config(args)))
    try:
        data = store.read()
    except (OSError, ValueError) as exc:
        print(f"agent params: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print_json(data)
        return EXIT_OK
    if not data:
        print(f"no parameters downloaded yet ({store.path})")
        return EXIT_OK
    from agent.fleet.shown import shown

    print(f"downloaded parameters ({store.path}):")
    for line in _params_lines(data):
        print(shown(line, LINE))  # a host's text: what a terminal would obey is escaped
    return EXIT_OK


LINE = 2000  # characters of a line shown (a table that could not be decoded, in hex)


def _params_lines(data: dict[str, Any]) -> list[str]:
    from datetime import datetime

    from agent.session.store import expiry

    lines = []
    for section, content in data.items():
        when = datetime.fromtimestamp(content.get("at", 0)).isoformat(" ", "seconds")
        lines.append(f"{section} (downloaded {when}):")
        if section == "terminal":
            lines += [f"  {name}: {value}" for name, value in content.get("values", {}).items()]
            if content.get("unparsed"):
                # a store written before the reason was kept says nothing more
                reason = content.get("reason") or "unknown tag"
                lines.append(f"  not decoded ({reason}): {content['unparsed']}")
        elif section in ("ca_keys", "sm2_ca_keys"):
            for key in content.get("keys", []):
                date = expiry(key.get("expiry"))
                until = f"{date[:4]}-{date[4:6]}-{date[6:]}" if date else "?"
                lines.append(f"  {key['rid']}/{key['index']} expires {until}")
        elif section == "ic_parameters":
            lines += [f"  AID {aid['aid']}: {len(aid['tags'])} tags" for aid in content["aids"]]
        elif section == "contactless":
            lines.append(f"  tags {', '.join(content.get('tags', {}))}")
        elif section == "status_upload":
            lines.append(f"  {len(content.get('sent', '')) // 2} bytes sent")
    return lines
