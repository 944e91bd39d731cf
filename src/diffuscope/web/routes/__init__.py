"""The app's routes, one APIRouter per section of the page; each reaches the shared state through the ``Server``
dependency (diffuscope.web.state). ``ROUTERS`` is what ``create_app`` includes, in this order."""

from diffuscope.web.routes import exercise, files, forward, generate, jobs, page, phases

ROUTERS = (page.router, forward.router, generate.router, jobs.router, exercise.router, phases.router, files.router)
