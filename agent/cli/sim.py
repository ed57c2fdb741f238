"""agent sim host|tms|module: the simulators (the extra ``sim``)."""

from __future__ import annotations

import argparse

from agent.cli.common import (
    UsageError,
    listen_endpoint,
    state_dir,
    wire_profile,
)


def _listen_address(url: str) -> tuple[str, int]:
    host, sep, port = url.removeprefix("socket://").rpartition(":")
    if not url.startswith("socket://") or not sep or not port.isdigit():
        raise UsageError(f"--url {url!r}: only socket://HOST:PORT can be listened on")
    return host, int(port)


def cmd_sim_module(args: argparse.Namespace) -> int:
    from agent.sim import module_console
    from agent.wire.mac import require_software_des

    require_software_des()
    listen = _listen_address(args.url) if args.url else None
    state = args.state or state_dir() / "module-sim.json"
    settings = [f"{name} {getattr(args, name)}" for name in ("noise", "drop", "delay", "busy")]
    if args.tamper:
        settings.append("tamper on")
    try:
        return module_console.run(
            state_path=state,
            listen=listen,
            link=args.link,
            settings=settings,
            clock_offset=args.clock_offset,
            seed=args.seed,
        )
    except ValueError as exc:  # a bad flag value or an unreadable state file
        raise UsageError(str(exc)) from None


def cmd_sim_host(args: argparse.Namespace) -> int:
    from agent.sim import host_server
    from agent.wire.mac import require_software_des

    require_software_des()
    listen = listen_endpoint(args.listen)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    schemes: dict[str, list[str]] = {}
    if args.schemes is not None:
        schemes["accepted_schemes"] = [s.strip() for s in args.schemes.split(",") if s.strip()]
    try:
        return host_server.main(
            args.registry,
            listen,
            args.admin_port,
            tls,
            key_layout=args.key_layout,
            batch=args.batch,
            check_batch=args.check_batch,
            check_tusn=args.check_tusn,
            profile=wire_profile(args),
            **schemes,
        )
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


def cmd_sim_tms(args: argparse.Namespace) -> int:
    from agent.sim import tms

    try:
        return tms.main(args.data, listen_endpoint(args.listen))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
