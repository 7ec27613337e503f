"""agilenn-agent: run the device half of AgileNN against an inference server.

    agilenn-agent --dataset fashion-mnist --limit 1000 --json       # replay a test split, report accuracy
    agilenn-agent --images photos/                                   # classify files
    agilenn-agent --port /dev/ttyACM0 --baud 921600                  # serve an MCU (docs/serial-protocol.md)

stdout: one JSON line per input, then (with --json) one summary line. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from agilenn.codec import header_size
from agilenn.codec.coders import CODER_NAMES
from agilenn.models import DEFAULT_REPOSITORY, BundleError, ModelRepository, load_bundle

from .agent import DEFAULT_DEADLINE_MS, DEFAULT_SERVER, Agent
from .client import ClientSecurity
from .mcu import PRESETS, parse_mcu
from .summary import Summary

log = logging.getLogger("agilenn.agent")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="agilenn-agent", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    m = p.add_argument_group("model")
    m.add_argument("--bundle", type=Path, help="a bundle directory (default: the model from --model-dir)")
    m.add_argument("--model-dir", type=Path, default=None,
                   help=f"model repository to pick --model from (default: the shipped {DEFAULT_REPOSITORY})")
    m.add_argument("--model", default="", help="model name (default: the repository's default model)")
    m.add_argument("--model-version", default="", help="model version (default: the highest)")
    m.add_argument("--numerics", choices=["auto", "int8", "float"], default="auto",
                   help="device part: the bundle's integer (int8) part, bit-exact with the C library, or the float "
                        "device.onnx (default auto: int8 when the bundle has it)")

    s = p.add_argument_group("server")
    s.add_argument("--server", default=DEFAULT_SERVER,
                   help="HOST:PORT of agilenn-server (default %(default)s); several replicas: IP:PORT,IP:PORT,... "
                        "or dns:///NAME:PORT, balanced round_robin with health checking")
    s.add_argument("--local-only", action="store_true", help="no server: answer from the local predictor alone")
    s.add_argument("--deadline-ms", type=float, default=DEFAULT_DEADLINE_MS,
                   help="wait at most this long for the remote logits, then answer locally (default %(default)s)")
    s.add_argument("--server-timings", action="store_true",
                   help="ask the server for its queue/decode/compute times in every reply (about 15 B more per "
                        "reply; off by default to keep replies lean, docs/protocol.md)")
    s.add_argument("--connect-wait-s", type=float, default=5.0,
                   help="before the first input, wait this long for the server (default %(default)s); "
                        "inputs arriving while it is unreachable are answered locally")
    s.add_argument("--max-payload-bytes", type=int, default=None,
                   help="byte budget per payload: drop trailing (least important) remote channels to fit")
    s.add_argument("--coder", choices=CODER_NAMES, help="entropy coder (default: the manifest's)")
    s.add_argument("--payload-version", type=int, choices=(1, 2), default=2,
                   help="feature payload header (docs/protocol.md): 2, 3 bytes (default); 1, the 13-byte "
                        "header, for a server older than 2026-11-27 that reads only that")
    s.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    s.add_argument("--tls-ca", help="PEM roots to trust for the server certificate (implies --tls)")
    s.add_argument("--tls-cert", help="PEM client certificate, for servers started with --tls-client-ca")
    s.add_argument("--tls-key", help="PEM private key of --tls-cert")
    s.add_argument("--tls-server-name", help="name to check the server certificate against (default: the host)")
    s.add_argument("--auth-token-file", help="send 'authorization: Bearer <token>' with the token in this file "
                                             "(the server's --auth-token-file)")

    i = p.add_argument_group("input (one of)")
    src = i.add_mutually_exclusive_group(required=True)
    src.add_argument("--port", help="serial device (or pyserial URL) an MCU sends frames on")
    src.add_argument("--images", nargs="+", help="image files or folders (png/jpg/npy)")
    src.add_argument("--dataset", help="replay a dataset split: fashion-mnist, cifar10, ..., or imagefolder:PATH")
    i.add_argument("--baud", type=int, default=115200, help="serial baud rate (default %(default)s)")
    i.add_argument("--split", default="test", help="dataset split (default %(default)s)")
    i.add_argument("--data-dir", help="dataset folder (default: the dataset's standard place)")
    i.add_argument("--limit", type=int, help="stop after this many inputs")

    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true", help="end with a JSON summary line (else a text summary on stderr)")
    o.add_argument("--quiet", action="store_true", help="no per-input lines")
    o.add_argument("--logits", action="store_true", help="include merged logits in per-input lines")
    o.add_argument("--mcu", help=f"add the device part's estimated time on this MCU, e.g. {', '.join(PRESETS[:3])}")
    o.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def resolve_bundle(args):
    if args.bundle:
        return load_bundle(args.bundle)
    repo = ModelRepository([args.model_dir] if args.model_dir else None)
    return repo.resolve(args.model, args.model_version)


def _security(args) -> ClientSecurity:
    token = None
    if args.auth_token_file:
        token = Path(args.auth_token_file).read_text(encoding="utf-8").strip()
    return ClientSecurity(tls=args.tls or bool(args.tls_ca), ca_file=args.tls_ca, cert_file=args.tls_cert,
                          key_file=args.tls_key, server_name=args.tls_server_name, token=token)


def _emit(line: dict) -> None:
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def run(args) -> int:
    bundle = resolve_bundle(args)
    mcu = parse_mcu(args.mcu) if args.mcu else None
    agent = Agent(bundle, None if args.local_only else args.server, deadline_ms=args.deadline_ms,
                  max_payload_bytes=args.max_payload_bytes, mcu=mcu, coder=args.coder, security=_security(args),
                  numerics=args.numerics, server_timings=args.server_timings,
                  payload_version=args.payload_version)
    summary = Summary(model=f"{bundle.name}:{bundle.version}", server=None if args.local_only else args.server,
                      mcu=mcu.spec if mcu else None, max_payload_bytes=args.max_payload_bytes,
                      deadline_ms=args.deadline_ms)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if not args.local_only and not agent.wait_connected(args.connect_wait_s):
            log.warning("server %s not reachable yet (%s): answering locally until it is",
                        args.server, agent.client.state_detail)
        if args.port:
            _serve_serial(args, agent, summary, stop)
        else:
            _replay(args, agent, summary, stop)
    except KeyboardInterrupt:
        pass
    finally:
        agent.close()
    if args.json:
        _emit(summary.as_dict())
    else:
        print(summary.text(), file=sys.stderr)
    return 0


def _replay(args, agent: Agent, summary: Summary, stop: threading.Event) -> None:
    from .sources import dataset_samples, image_samples

    if args.dataset:
        samples = dataset_samples(args.dataset, args.split, args.limit, args.data_dir,
                                  input_shape_chw=agent.bundle.input_shape)
    else:
        c, h, w = agent.bundle.input_shape
        samples = image_samples(args.images, (h, w, c), agent.bundle.classes)
    for n, sample in enumerate(samples):
        if stop.is_set() or (args.limit is not None and n >= args.limit):
            break
        if sample.image is None:
            summary.add_error()
            if not args.quiet:
                _emit({"id": sample.id, "error": sample.error})
            continue
        result = agent.infer(sample.image)
        summary.add(result, sample.label)
        if not args.quiet:
            line = {"id": sample.id, **result.to_dict(logits=args.logits)}
            if sample.label is not None:
                line["label"] = sample.label
                line["correct"] = result.prediction == sample.label
            _emit(line)


def _serve_serial(args, agent: Agent, summary: Summary, stop: threading.Event) -> None:
    import serial

    from .serial_bridge import SerialBridge
    from .serial_link import SerialLink, open_serial

    def on_result(seq, result):
        summary.add(result)
        if not args.quiet:
            _emit({"id": f"seq/{seq}", **result.to_dict(logits=args.logits)})

    bridge = SerialBridge(None, agent, on_result)
    first = True
    # A USB serial device disappears when the board resets or is unplugged: reopen it, don't exit.
    while not stop.is_set():
        try:
            bridge.link = SerialLink(open_serial(args.port, args.baud))
        except (serial.SerialException, OSError) as exc:
            if first:
                raise FileNotFoundError(f"cannot open serial port {args.port}: {exc}") from None
            stop.wait(1.0)
            continue
        first = False
        log.info("serving %s at %d baud", args.port, args.baud)
        try:
            bridge.serve(stop, args.limit)
            return
        except (serial.SerialException, OSError) as exc:
            log.warning("serial port %s failed (%s); reopening", args.port, exc)
        finally:
            bridge.link.close()


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be >= 0")
    if args.max_payload_bytes is not None and args.max_payload_bytes < header_size(0):
        parser.error(f"--max-payload-bytes must be at least {header_size(0)} (the payload header)")
    if args.mcu:
        try:
            parse_mcu(args.mcu)
        except ValueError as exc:
            parser.error(f"--mcu: {exc}")
    try:
        return run(args)
    except (BundleError, LookupError, FileNotFoundError, ValueError) as exc:
        print(f"agilenn-agent: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
