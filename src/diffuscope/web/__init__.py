"""``diffuscope serve``: the lesson as a local web page over the same library functions the CLI calls.

Modules: lesson (the calls into the library: forward, generate, sweep, phases), jobs (the worker thread and its
bounded queue), app (``create_app``: the FastAPI app), state (the ``ServerState`` every route reaches through a
dependency), guard (the Host/Origin/secret/token checks and security headers), routes/ (one APIRouter per section
of the page, server-sent events in routes/jobs), static/ (the page: HTML, JS, CSS shipped in the package; no CDN,
works offline). FastAPI and uvicorn are the ``web`` extra.
"""
