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

    from exchanges.broker import Broker

from leveret import __version__

PLUGIN_MODULES = ("leveret.playground.cli", "leveret.management.ctl")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {port}")
    return port


def _http_port(text: str) -> int | None:
    if text.lower() in ("off", "none", "no"):
        return None
    return _port(text)


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
        default=os.environ.get("LEVERET_DATA_DIR") or None,
        help=(
            "keep durable exchanges, queues, bindings and persistent messages in DIR "
            "(created if missing) across restarts and crashes; default $LEVERET_DATA_DIR. "
            "Without it everything lives in memory, as a test broker should."
        ),
    )
    serve.add_argument(
        "--definitions", metavar="JSON",
        help="load a RabbitMQ definitions export (exchanges, queues, bindings) at boot",
    )
    serve.add_argument(
        "--http-port",
        type=_http_port,
        default=-1,
        metavar="PORT",
        help=(
            "management HTTP API and /metrics (RabbitMQ's paths); 0 for any free port, 'off' for none "
            "(default: the AMQP port + 10000, so 15672; off with --port 0)"
        ),
    )
    serve.add_argument("--http-host", metavar="HOST", help="address for HTTP (default: --host)")
    serve.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="warning",
        help="log events at this level and above, one line each (default: %(default)s)",
    )
    serve.add_argument(
        "--log-format", choices=("logfmt", "json"), default="logfmt", help="log line format (default: %(default)s)"
    )
    serve.set_defaults(func=_serve)

    export = subparsers.add_parser(
        "export-definitions",
        help="write the durable topology kept in a data directory as RabbitMQ definitions JSON",
        description=(
            "Read DIR's durable exchanges, queues and bindings (the broker may be running) and "
            "write them in RabbitMQ's definitions format. For a running broker's full topology "
            "see also `leveret ctl export`."
        ),
    )
    export.add_argument("--data-dir", metavar="DIR", required=True, help="the broker's --data-dir")
    export.add_argument("file", metavar="FILE", nargs="?", default="-", help="where to write (default: stdout)")
    export.set_defaults(func=_export_definitions)

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

    from leveret.management import logs

    logging.basicConfig(level=logging.WARNING, format="leveret: %(levelname)s %(name)s: %(message)s")
    logs.configure(args.log_level, args.log_format)
    if args.data_dir:
        try:
            os.makedirs(args.data_dir, exist_ok=True)
        except OSError as error:
            print(f"leveret: cannot create data directory {args.data_dir}: {_reason(error)}", file=sys.stderr)
            return 1
    broker = _open_broker(args)
    if broker is None:
        return 1
    _tune_garbage_collector()
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(_run_server(args.host, args.port, _default_http_port(args), args.http_host,
                                          broker=broker))
    except KeyboardInterrupt:  # platforms without loop signal handlers
        return 0
    finally:
        if broker.store is not None:
            broker.store.close()


def _open_broker(args: argparse.Namespace) -> Broker | None:
    """The broker `serve` runs: its --data-dir store recovered (before listening,
    as RabbitMQ recovers before it accepts connections) and --definitions loaded.
    None once it has said why it cannot."""
    import json
    import logging

    from exchanges.broker import Broker
    from exchanges.definitions import load_definitions
    from queues.store import Store, StoreLocked

    broker = Broker()
    if args.data_dir:
        try:
            store = Store.open(args.data_dir)
        except StoreLocked as error:
            print(f"leveret: {error}", file=sys.stderr)
            return None
        except OSError as error:
            print(f"leveret: cannot use data directory {args.data_dir}: {_reason(error)}", file=sys.stderr)
            return None
        broker.attach_store(store)
        logging.getLogger("leveret.store").info("recovered %s from %s", store.report, args.data_dir)
    if args.definitions:
        try:
            with open(args.definitions, encoding="utf-8") as file:
                data = json.load(file)
        except (OSError, ValueError) as error:
            reason = _reason(error) if isinstance(error, OSError) else str(error)
            print(f"leveret: cannot read definitions {args.definitions}: {reason}", file=sys.stderr)
            if broker.store is not None:
                broker.store.close()
            return None
        for vhost in broker.vhosts.values():
            for warning in load_definitions(vhost, data, now_ms=broker.now_ms()).warnings:
                print(f"leveret: definitions: {warning}", file=sys.stderr)
    return broker


def _export_definitions(args: argparse.Namespace) -> int:
    import json

    from exchanges.broker import Broker
    from exchanges.definitions import export_definitions, load_definitions
    from queues.store import Store

    if not os.path.isdir(args.data_dir):
        print(f"leveret: no data directory {args.data_dir}", file=sys.stderr)
        return 1
    broker = Broker()  # in memory: the definitions go through the same checks as at boot
    vhost = broker.vhosts["/"]
    load_definitions(vhost, Store.read_definitions(args.data_dir), now_ms=broker.now_ms())
    text = json.dumps(export_definitions(vhost), indent=2) + "\n"
    if args.file == "-":
        sys.stdout.write(text)
    else:
        with open(args.file, "w", encoding="utf-8") as file:
            file.write(text)
    return 0


def _tune_garbage_collector() -> None:
    """A broker holds millions of small objects (queued messages); CPython's
    default thresholds then spend a quarter of publish time in collections
    (py-spy on the publish_16b scenario). Collect the young generation less
    often, and keep what start-up made out of every collection."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _default_http_port(args: argparse.Namespace) -> int | None:
    """RabbitMQ pairs 5672 with 15672; a server on a free port (tests) has no HTTP unless asked."""
    if args.http_port != -1:
        return args.http_port  # type: ignore[no-any-return]
    if args.port == 0 or args.port + 10000 > 65535:
        return None
    return args.port + 10000  # type: ignore[no-any-return]


async def _run_server(
    host: str, port: int, http_port: int | None = None, http_host: str | None = None, *, broker: Broker | None = None
) -> int:
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
        return await _listen_until(stop, host, port, http_port, http_host, broker=broker)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _listen_until(
    stop: asyncio.Event, host: str, port: int, http_port: int | None = None, http_host: str | None = None,
    *, broker: Broker | None = None,
) -> int:
    from amqp_wire.server import Server
    from leveret.management import ManagementServer

    server = Server(broker)
    try:
        bound_host, bound_port = await server.start(host, port)
    except OSError as error:
        print(f"leveret: cannot listen on {_address(host, port)}: {_reason(error)}", file=sys.stderr)
        return 1
    # Without HTTP the management sampler still runs: it logs dead-letter storms.
    management = ManagementServer(server)
    http_host = http_host or host
    try:
        http_bound = await management.start(http_host, http_port or 0, listen=http_port is not None)
    except OSError as error:
        print(f"leveret: cannot listen on {_address(http_host, http_port or 0)} (http): {_reason(error)}",
              file=sys.stderr)
        await server.stop()
        return 1
    print(
        f"leveret {__version__} listening on amqp://{_address(bound_host, bound_port)} "
        "(vhost /, guest/guest from loopback)",
        flush=True,
    )
    if http_port is not None:
        print(f"leveret management API on http://{_address(*http_bound)}/api, metrics on /metrics", flush=True)
    try:
        await stop.wait()
    finally:
        await management.stop()
        await server.stop()
    return 0

if __name__ == "__main__":
    sys.exit(main())
