"""``diffuscope serve``: the lesson as a local web page over the same library functions the CLI calls.

Modules: lesson (the calls into the library: forward, generate, sweep, phases), jobs (the worker thread and its
bounded queue), app (the FastAPI app: routes, the Host/Origin/token guard, server-sent events), static/ (the page:
HTML, JS, CSS shipped in the package; no CDN, works offline). FastAPI and uvicorn are the ``web`` extra.
"""
