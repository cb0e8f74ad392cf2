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

    from leveret.broker.broker import Broker, BrokerSettings

from leveret.version import __version__

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
        help=(
            "load a RabbitMQ definitions export at boot: users (with their password hashes), "
            "vhosts, permissions, exchanges, queues, bindings; its users replace guest"
        ),
    )
    tls = serve.add_argument_group("TLS (amqps)")
    tls.add_argument("--tls-port", type=_port, metavar="PORT", help="also listen for AMQP over TLS (5671 is usual)")
    tls.add_argument("--cert", metavar="PEM", help="the server's certificate (chain)")
    tls.add_argument("--key", metavar="PEM", help="the server certificate's private key")
    tls.add_argument("--cacert", metavar="PEM", help="verify client certificates signed by this CA when presented")
    tls.add_argument("--fail-if-no-peer-cert", action="store_true",
                     help="with --cacert: refuse clients without a certificate")
    limits = serve.add_argument_group("limits")
    limits.add_argument("--max-connections", type=int, metavar="N",
                        help="refuse connection.open past N open connections (530, as RabbitMQ's connection_max)")
    limits.add_argument("--memory-high-watermark", metavar="W", default="0.4",
                        help=("block publishers while the process uses more memory than W: a fraction of "
                              "memory (0.4, the default) or an amount (2GiB, 512MB, 800000000)"))
    limits.add_argument("--disk-free-limit", metavar="BYTES", default="50MB",
                        help=("block publishers while the data directory's disk has less free space "
                              "(RabbitMQ's disk_free_limit; default 50MB; 2GiB, 800000000)"))
    limits.add_argument("--consumer-timeout", type=int, metavar="MS", default=1_800_000,
                        help="close a channel (406) whose delivery stays unacked longer (default: 30 min; 0: never)")
    limits.add_argument("--max-message-size", type=int, metavar="BYTES",
                        help="largest message body accepted (default: 128 MiB)")
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
    tls = _tls(args)
    if tls is False:
        if broker.store is not None:
            broker.store.close()
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
                                          broker=broker, tls=tls or None))
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

    from leveret.broker.broker import Broker
    from leveret.broker.definitions import load_definitions
    from leveret.store import Store, StoreLocked

    data = None
    if args.definitions:
        try:
            with open(args.definitions, encoding="utf-8") as file:
                data = json.load(file)
        except (OSError, ValueError) as error:
            reason = _reason(error) if isinstance(error, OSError) else str(error)
            print(f"leveret: cannot read definitions {args.definitions}: {reason}", file=sys.stderr)
            return None
    try:
        broker = Broker(settings=_settings(args))
    except ValueError as error:
        print(f"leveret: {error}", file=sys.stderr)
        return None
    if isinstance(data, dict) and not _definitions_apply_fully(data, args.definitions, _settings(args)):
        return None
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
    if isinstance(data, dict):
        # Users, vhosts and permissions on top of what the data directory held, then topology.
        access = broker.access.load_definitions(data)
        for name in access.vhosts:
            broker.add_vhost(name)
        broker.admin.load_parameters(data)
        for warning in access.warnings:
            print(f"leveret: definitions: {warning}", file=sys.stderr)
        for vhost in broker.vhosts.values():
            for warning in load_definitions(vhost, data, now_ms=broker.now_ms()).warnings:
                print(f"leveret: definitions: {warning}", file=sys.stderr)
        try:
            broker.admin.saved()
        except OSError as error:
            print(f"leveret: cannot save to data directory {args.data_dir}: {_reason(error)}", file=sys.stderr)
            return None
    return broker


def _definitions_apply_fully(data: dict[str, Any], path: str, settings: BrokerSettings) -> bool:
    """Whether every object in the file can be applied, tried on a scratch broker
    first (nothing reaches the store or a client). If not, says what and why:
    a broker started with half a file would look right and route wrong."""
    from leveret.broker.broker import Broker
    from leveret.broker.definitions import load_definitions, outside_vhosts

    scratch = Broker(settings=settings)
    access = scratch.access.load_definitions(data)
    for name in access.vhosts:
        scratch.add_vhost(name)
    problems = outside_vhosts(data, set(scratch.vhosts))
    if not problems:
        problems = list(access.warnings)
        for vhost in scratch.vhosts.values():
            problems += load_definitions(vhost, data, now_ms=scratch.now_ms()).warnings
    if not problems:
        return True
    print(f"leveret: definitions {path} cannot be applied in full, not starting:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return False


def _settings(args: argparse.Namespace) -> BrokerSettings:
    """BrokerSettings from serve's limit options (ValueError says what is wrong)."""
    from leveret.broker.broker import BrokerSettings
    from leveret.broker.limits import Watermark

    settings = BrokerSettings()
    watermark = getattr(args, "memory_high_watermark", None)
    if watermark is not None:
        try:
            Watermark.parse(watermark)
        except ValueError as error:
            raise ValueError(f"--memory-high-watermark: {error}") from None
        settings.memory_high_watermark = watermark
    disk = getattr(args, "disk_free_limit", None)
    if disk is not None:
        try:
            parsed = Watermark.parse(disk)
        except ValueError as error:
            raise ValueError(f"--disk-free-limit: {error}") from None
        if parsed.absolute is None:
            raise ValueError("--disk-free-limit: an amount of bytes, not a fraction")
        settings.disk_free_limit = parsed.absolute
    timeout = getattr(args, "consumer_timeout", settings.consumer_timeout)
    settings.consumer_timeout = timeout if timeout and timeout > 0 else None
    settings.connection_max = getattr(args, "max_connections", None)
    size = getattr(args, "max_message_size", None)
    if size is not None:
        settings.max_message_size = size
    return settings


def _tls(args: argparse.Namespace) -> Any:
    """(port, SSLContext) for --tls-port, None without it, False once it said why it cannot."""
    if getattr(args, "tls_port", None) is None:
        if getattr(args, "cert", None) or getattr(args, "key", None):
            print("leveret: --cert and --key go with --tls-port", file=sys.stderr)
            return False
        return None
    import ssl

    from leveret.server.shell import tls_context

    if not args.cert or not args.key:
        print("leveret: --tls-port needs --cert and --key", file=sys.stderr)
        return False
    try:
        context = tls_context(args.cert, args.key, args.cacert, fail_if_no_peer_cert=args.fail_if_no_peer_cert)
    except (OSError, ssl.SSLError, ValueError) as error:
        print(f"leveret: cannot set up TLS: {error}", file=sys.stderr)
        return False
    return args.tls_port, context


def _export_definitions(args: argparse.Namespace) -> int:
    import json

    from leveret.broker.broker import Broker
    from leveret.broker.definitions import export_definitions, load_definitions
    from leveret.store import Store

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
    host: str, port: int, http_port: int | None = None, http_host: str | None = None, *, broker: Broker | None = None,
    tls: Any = None,
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
        return await _listen_until(stop, host, port, http_port, http_host, broker=broker, tls=tls)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _listen_until(
    stop: asyncio.Event, host: str, port: int, http_port: int | None = None, http_host: str | None = None,
    *, broker: Broker | None = None, tls: Any = None,
) -> int:
    import asyncio

    from leveret.server.shell import Server

    server = Server(broker)
    try:
        bound_host, bound_port = await server.start(host, port)
    except OSError as error:
        print(f"leveret: cannot listen on {_address(host, port)}: {_reason(error)}", file=sys.stderr)
        return 1
    tls_bound = None
    if tls is not None:
        try:
            tls_bound = await server.listen_tls(host, tls[0], tls[1])
        except OSError as error:
            print(f"leveret: cannot listen on {_address(host, tls[0])} (tls): {_reason(error)}", file=sys.stderr)
            await server.stop()
            return 1
    # AMQP clients are served while aiohttp loads: importing it in a thread
    # leaves the loop free to answer handshakes. Without HTTP the management
    # sampler still runs: it logs dead-letter storms.
    service = await asyncio.to_thread(importlib.import_module, "leveret.management.service")
    management = service.ManagementServer(server)
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
    if tls_bound is not None:
        print(f"leveret listening on amqps://{_address(*tls_bound)} (TLS)", flush=True)
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
