"""``diffuscope serve``: the lesson as a local web page (forward process, reverse process live, the exercise)."""

from __future__ import annotations

import argparse

from diffuscope.cli import args as types


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

    device = pick_device(args.device)
    entries = [load_entry(ref, device, dtype=args.dtype, real=args.real) for ref in (args.model or ["mnist"])]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise UsageError(f"two models share a name ({', '.join(names)}): give each once")
    extra = tuple(args.allow_host) + (() if args.host in ("0.0.0.0", "::") else (args.host,))
    app = create_app(entries, args.out, queue_size=args.queue_size, allowed_hosts=extra)
    if args.host in ("0.0.0.0", "::"):
        print(f"diffuscope: warning: --host {args.host} serves the page to every machine that can reach this one; "
              "add --allow-host NAME for the name they use", file=sys.stderr)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"diffuscope serve: http://{shown}:{args.port}/  (models: {', '.join(names)}; files in {args.out})",
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
