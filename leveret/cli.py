"""The `leveret` command.

`leveret serve` lives here. Other subcommands (`play`, `test`, `explain`) plug
in without editing this file: if `leveret.playground.cli` exists, its
`add_subcommands(subparsers)` adds parsers, each with
`set_defaults(func=handler)` where `handler(args: argparse.Namespace) -> int`
returns the exit status. Imports stay lazy so `leveret serve` starts fast:
this module loads the plugins only when the command is not `serve`, and
never imports lark, rich or aio_pika itself.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

from leveret import __version__

PLUGIN_MODULES = ("leveret.playground.cli",)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def build_parser(*, plugins: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leveret", description="A RabbitMQ-compatible AMQP 0-9-1 broker in Python."
    )
    parser.add_argument("--version", action="version", version=f"leveret {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = subparsers.add_parser(
        "serve",
        help="run the broker",
        description=(
            "Run the broker: one virtual host '/', user guest/guest (from loopback only, "
            "as in RabbitMQ). Stops on Ctrl-C or SIGTERM, closing client connections "
            "with 320 CONNECTION_FORCED."
        ),
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument(
        "--port", type=_port, default=5672, help="TCP port, 0 for any free one (default: %(default)s)"
    )
    serve.add_argument(
        "--data-dir",
        metavar="DIR",
        help=(
            "directory for durable state; created if missing. Persistence is not "
            "implemented yet: everything lives in memory and is lost on exit."
        ),
    )
    serve.set_defaults(func=_serve)

    if plugins:
        _add_plugin_subcommands(subparsers)
    return parser


def _add_plugin_subcommands(subparsers: Any) -> None:
    for name in PLUGIN_MODULES:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue  # not written yet: its commands are simply absent
        importlib.import_module(name).add_subcommands(subparsers)


def _command(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(plugins=_command(args_list) != "serve")
    args = parser.parse_args(args_list)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    return int(func(args))


# ------------------------------------------------------------------ serve
def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _reason(error: OSError) -> str:
    # asyncio re-raises bind errors with a long message; the errno says it best.
    if error.errno is not None and error.errno > 0:
        return os.strerror(error.errno).lower()
    return (error.strerror or str(error)).lower()


def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    logging.basicConfig(level=logging.WARNING, format="leveret: %(levelname)s %(name)s: %(message)s")
    if args.data_dir:
        try:
            os.makedirs(args.data_dir, exist_ok=True)
        except OSError as error:
            print(f"leveret: cannot create data directory {args.data_dir}: {_reason(error)}", file=sys.stderr)
            return 1
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_run_server(args.host, args.port))
    except KeyboardInterrupt:  # platforms without loop signal handlers
        return 0


async def _run_server(host: str, port: int) -> int:
    import asyncio
    import signal

    # Handlers first: whoever sees the "listening" line may signal at once.
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
        except (NotImplementedError, RuntimeError):
            pass
    try:
        return await _listen_until(stop, host, port)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _listen_until(stop: asyncio.Event, host: str, port: int) -> int:
    from amqp_wire.server import Server

    server = Server()
    try:
        bound_host, bound_port = await server.start(host, port)
    except OSError as error:
        print(f"leveret: cannot listen on {_address(host, port)}: {_reason(error)}", file=sys.stderr)
        return 1
    print(
        f"leveret {__version__} listening on amqp://{_address(bound_host, bound_port)} "
        "(vhost /, guest/guest from loopback)",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0

if __name__ == "__main__":
    sys.exit(main())
