"""``diffuscope serve``: the lesson as a local web page (forward process, reverse process live, the exercise)."""

from __future__ import annotations

import argparse
import errno
import os
import re
import socket
import threading
from pathlib import Path

from diffuscope.cli import args as types

SECRET_ENV = "DIFFUSCOPE_TOKEN"
SECRET_CHARS = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")  # URL-safe (it goes in ?token=), too long to guess
SHUTDOWN_GRACE_S = 2  # after SIGTERM/Ctrl-C: open streams get this long to end before they are cut


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="the lesson as a local web page: drag, click, watch the image form, compare",
                       description="Serve a single-page app on this machine: the forward process, the reverse process "
                                   "live (server-sent events, cancel), the exercise at 10/25/50/100 steps with its "
                                   "answer, and what gets decided when. Needs the web extra: "
                                   "pip install 'diffuscope[web]'.")
    p.add_argument("--model", action="append", metavar="NAME_OR_PATH",
                   help="a built-in model name (mnist), checkpoint or run folder; repeat for several (default mnist)")
    p.add_argument("--port", type=types.port, default=7860)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--token", metavar="SECRET", default=None,
                   help="a secret every request must carry (open http://HOST:PORT/?token=SECRET once: a cookie keeps "
                        "it); required to bind anything but loopback. Prefer the environment variable "
                        f"{SECRET_ENV} (a flag shows in the process list). Plain HTTP sends it in clear: "
                        "docs/web.md")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another Host name the page may be reached by (the DNS-rebinding guard allows only "
                        "localhost, 127.0.0.1, ::1 and --host otherwise)")
    p.add_argument("--out", default="runs/serve", metavar="DIR",
                   help="where every job's files go (one folder per job; default runs/serve)")
    p.add_argument("--queue-size", type=types.positive_int, default=4,
                   help="jobs that may wait for the worker; more get HTTP 429 (default 4)")
    p.add_argument("--real", metavar="DATA",
                   help="real images for models without a data set of their own (a diffusers pipeline): the forward "
                        "process and inversion use them (a folder of PNG/JPEG images or a built-in data set; default "
                        "emoji for colour models, mnist for grey ones)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    types.add_dtype(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from diffuscope.checks.errors import UsageError

    try:
        import uvicorn

        from diffuscope.web.app import create_app
    except ImportError as e:
        raise UsageError(f"diffuscope serve needs the web extra ({e.name} is missing): "
                         "pip install 'diffuscope[web]'") from None
    from diffuscope.io.device import pick_device
    from diffuscope.web.lesson import load_entry

    # everything that can be refused is refused before a model is loaded or a port is served
    _check_out(args.out)
    _check_real(args.real)
    sock = _bind(args.host, args.port)
    secret = _secret(args.token, args.host)
    device = pick_device(args.device)
    entries = [load_entry(ref, device, dtype=args.dtype, real=args.real) for ref in (args.model or ["mnist"])]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise UsageError(f"two models share a name ({', '.join(names)}): give each once")
    if args.real is not None and not any(e.user_data for e in entries):
        print(f"diffuscope: warning: --real is unused: every model has real images of its own ({', '.join(names)})",
              file=sys.stderr)
    extra = tuple(args.allow_host) + (() if args.host in ("0.0.0.0", "::") else (args.host,))
    app = create_app(entries, args.out, queue_size=args.queue_size, allowed_hosts=extra, secret=secret)
    if args.host in ("0.0.0.0", "::"):
        print(f"diffuscope: warning: --host {args.host} serves the page to every machine that can reach this one "
              "(with the secret); add --allow-host NAME for the name they use", file=sys.stderr)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    how = "  open it once with ?token=<your secret>" if secret else ""
    print(f"diffuscope serve: http://{shown}:{args.port}/  (models: {', '.join(names)}; files in {args.out}){how}",
          flush=True)
    worker = app.state.server.worker

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:  # SIGTERM / Ctrl-C: stop the running job now, not after it
            threading.Thread(target=worker.cancel_all, daemon=True).start()  # no lock taken in a signal handler
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    Server(config).run(sockets=[sock])
    return 0


def _check_out(out: str) -> None:
    from diffuscope.checks.errors import UsageError, quote

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {quote(out)} is a file: give a folder for the jobs' files (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {quote(out)}: cannot create the folder ({e.strerror})") from None


def _check_real(real: str | None) -> None:
    from diffuscope.checks.errors import UsageError, quote
    from diffuscope.data import BUILTIN_DATASETS

    if real is not None and real.strip().lower() not in BUILTIN_DATASETS and not Path(real).exists():
        raise UsageError(f"--real {quote(real)} does not exist: give a folder of PNG/JPEG images or a built-in data "
                         f"set ({', '.join(BUILTIN_DATASETS)})")


def _loopback(host: str) -> bool:
    """Whether every address ``host`` names is this machine's loopback (unresolvable: False)."""
    import ipaddress

    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def _secret(flag: str | None, host: str) -> str | None:
    """The user's secret (--token, else DIFFUSCOPE_TOKEN), checked; refused absent when binding beyond loopback."""
    from diffuscope.checks.errors import UsageError, quote

    secret = flag if flag is not None else os.environ.get(SECRET_ENV) or None
    if secret is not None and not SECRET_CHARS.match(secret):
        raise UsageError(f"the secret (--token or {SECRET_ENV}) must be 16..256 characters from A-Z a-z 0-9 . _ ~ -, "
                         f"got {len(secret)} characters; e.g. python -c 'import secrets; "
                         "print(secrets.token_urlsafe(24))'")
    if secret is None and not _loopback(host):
        raise UsageError(f"--host {quote(host)} serves beyond this machine: give a secret with {SECRET_ENV}=... "
                         "(or --token SECRET) so that only who knows it can use the page; without one, keep the "
                         "default 127.0.0.1")
    return secret


def _bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (uvicorn listens on it): a bad host or a taken port is one line, exit 2."""
    from diffuscope.checks.errors import UsageError, quote

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        reason = e.strerror if isinstance(e, socket.gaierror) else "not a valid host name"
        raise UsageError(f"--host {quote(host)} cannot be resolved ({reason}): give an address of this machine, "
                         "e.g. 127.0.0.1 (default) or 0.0.0.0") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        sock.close()
        why = {errno.EADDRINUSE: "the port is in use (another server?): give another --port",
               errno.EACCES: "permission denied (ports below 1024 need privileges): give another --port",
               errno.EADDRNOTAVAIL: "that address is not one of this machine's: give another --host"}
        raise UsageError(f"cannot serve on {host}:{port}: {why.get(e.errno, e.strerror)}") from None
    sock.set_inheritable(True)
    return sock
