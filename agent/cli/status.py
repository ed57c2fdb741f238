"""agent status: what the running agent is doing; exits like ``systemctl status``."""

from __future__ import annotations

import argparse
import sys

from agent.cli import render
from agent.cli.common import (
    EXIT_FAILED,
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    ask_agent,
    control_path,
    load_config,
)
from agent.cli.render import print_json


def cmd_status(args: argparse.Namespace) -> int:
    broken = None  # why the configuration file cannot be read, when it cannot
    try:
        try:
            config = load_config(args)
        except UsageError as exc:
            # A file broken since the agent started (a reload refused it) does not hide the
            # agent, which goes on with the file it read: it is asked where a file without
            # control.socket puts it.
            from agent.config import Config

            config, broken = Config(), str(exc)
        answer = ask_agent(config, {"cmd": "status"})
        if answer is None and broken is not None:
            raise UsageError(broken)
    except UsageError as exc:
        if not args.json:
            raise
        # --json always prints an object: a script learns why there is no status, and a
        # person reads it on stderr as without --json ("running": null: it cannot be told)
        print(f"agent status: {exc}", file=sys.stderr)
        print_json({"running": None, "state": "unknown", "registered": False,
                    "error": str(exc)})  # fmt: skip
        return EXIT_USAGE
    if answer is None:
        where = control_path(config)
        if args.json:
            print_json({"running": False, "state": "not-running", "registered": False,
                         "tid": config.terminal.tid, "control_socket": str(where)})  # fmt: skip
        else:
            print(f"agent status: no agent running (control socket {where})", file=sys.stderr)
        return EXIT_NOT_RUNNING
    answer.pop("ok", None)
    code = EXIT_OK if answer.get("registered") else EXIT_FAILED  # as `systemctl status`
    if broken is not None:
        print(f"agent status: {broken}; the running agent goes on with the file it read",
              file=sys.stderr)  # fmt: skip
    if args.json:
        print_json({"running": True, **answer, "config_error": broken})
        return code
    print("\n".join(text_of(answer, render.language(args.lang))))
    return code


def text_of(answer: dict, lang: str) -> list[str]:
    """The running agent's status, its words from the message catalogue in ``lang``; the
    facts (addresses, codes, KCVs) as they are."""
    import datetime

    from agent import messages
    from agent.display import columns

    def said(key: str, **values: object) -> str:
        return messages.message(key, **values)(lang)  # type: ignore[arg-type]

    def moment(at: float) -> str:
        return f"{datetime.datetime.fromtimestamp(at):%Y-%m-%d %H:%M:%S}"

    host, signed = answer["host"], answer["signed_in"]
    stuck = answer.get("reversals_stuck", 0)
    state = answer["state"]
    rows = [
        ("status:state", said(f"state:{state}") if f"state:{state}" in messages.CATALOGUE
         else state),
        ("status:terminal", f"TID {answer['tid'] or '-'}, MID {answer['mid'] or '-'}"),
        ("status:host", f"{host['endpoint'] or '-'} ("
         + said("status:connected" if host["connected"] else "status:not-connected")
         + (f", {host['last_error']}" if host["last_error"] else "") + ")"),
        ("status:signed-in", said("status:signed", at=moment(signed["at"]),
                                  scheme=signed["scheme"], kcvs=", ".join(
                                      f"{k} {v}" for k, v in signed["kcvs"].items()))
         if signed else said("status:never")),
        ("status:reversals", said(
            "status:reversals-queued", queued=answer["reversals_queued"],
            stuck=said("status:reversals-stuck", stuck=stuck) if stuck else "",
            recheck=answer.get("reversals_to_recheck", 0))),
    ]  # fmt: skip
    cause = answer.get("cause") or ""
    if cause:
        try:
            meaning, action = messages.explain(cause)
            rows.append(("status:cause", f"{cause}: {meaning(lang)}"))
            rows.append(("", f"-> {action(lang)}"))
        except messages.CatalogueError:  # a cause of a newer agent: the code says it
            rows.append(("status:cause", cause))
    for key, finding in (
        ("journal_damaged", "storage.journal-damaged"),
        ("state_damaged", "storage.state-damaged"),  # an older agent's answer has none
    ):
        set_aside = answer.get(key) or []
        if set_aside:
            rows.append(("status:journal", said(finding, names=", ".join(set_aside))))
            rows.append(("", f"-> {messages.explain(finding)[1](lang)}"))
    if answer.get("incident"):
        rows.append(("status:incident", said("status:incident-open", source=answer["incident"])))
    refusal = answer["last_refusal"]
    if refusal:
        rows.append(("status:last-97", said("status:last-97-at", code=refusal["code"],
                                            at=moment(refusal["at"]))))  # fmt: skip
    refused = answer.get("refused_requests") or {}
    if refused.get("by_finding"):
        counts = ", ".join(f"{n} {finding}" for finding, n in refused["by_finding"].items())
        rows.append(("status:refused", said("status:refused-counts", counts=counts)))
        told = (refused.get("last") or {}).get("message") or {}
        if told:
            rows.append(("", told[lang]))
    if answer["message"]:
        rows.append(("status:message", answer["message"][lang]))
    labels = {key: said(key) if key else "" for key, _ in rows}
    width = max(10, *(columns(label) for label in labels.values()))  # "signed in" + room
    return [f"{labels[key]}{' ' * (width - columns(labels[key]))}  {value}" for key, value in rows]
