"""One worker thread owns torch; a bounded queue of jobs feeds it; each job keeps its events for any subscriber.

    worker = Worker(queue_size=4)
    job = worker.submit("generate", lambda job: ...)            # QueueFull when queue_size jobs already wait
    events, finished = job.events_since(0, timeout=1.0)         # what a server-sent event stream sends
    worker.cancel(job.id)                                       # stops the job at its next step

A job function gets its Job (``job.id``, ``job.emit(event: dict)``, ``job.token``, a CancelToken) and returns its
final event (a dict); Cancelled,
UsageError and any other exception end the job with a "cancelled" or "error" event, never the worker.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable

from diffuscope.checks.errors import UsageError
from diffuscope.core.events import Cancelled, CancelToken

log = logging.getLogger("diffuscope.web")
KEEP_JOBS = 200  # finished jobs remembered (their events); older ones are forgotten, their files stay on disk
JobFn = Callable[["Job"], dict]


class JobCancelled(Cancelled):
    """A cancel that ends the job with its own final event (``event``: merged into the "cancelled" event), e.g. an
    exercise's "cancelled after N of M cells"."""

    def __init__(self, event: dict):
        super().__init__(event.get("message", "cancelled"))
        self.event = event


class QueueFull(Exception):
    """The job queue holds queue_size jobs already: try again later (HTTP 429)."""


class Job:
    def __init__(self, kind: str, fn: JobFn):
        self.id = uuid.uuid4().hex
        self.kind, self.fn = kind, fn
        self.token = CancelToken()
        self.state = "queued"  # queued | running | done | cancelled | error
        self.events: list[dict] = []
        self.subscribers = 0
        self._cond = threading.Condition()

    @property
    def finished(self) -> bool:
        return self.state in ("done", "cancelled", "error")

    def emit(self, event: dict) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def finish(self, state: str, event: dict) -> None:
        with self._cond:
            self.state = state
            self.events.append(event)
            self._cond.notify_all()

    def events_since(self, start: int, timeout: float) -> tuple[list[dict], bool]:
        """Events from index ``start`` on (waiting up to ``timeout`` s for one), and whether the job is finished."""
        with self._cond:
            if len(self.events) <= start and not self.finished:
                self._cond.wait(timeout)
            return self.events[start:], self.finished


class Worker:
    """The one thread that runs jobs (torch is used from it only) and the bounded queue in front of it."""

    def __init__(self, queue_size: int = 4, *, start: bool = True):
        if queue_size < 1:
            raise UsageError(f"queue size must be at least 1, got {queue_size}")
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="diffuscope-worker", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        self._thread.start()

    def submit(self, kind: str, fn: JobFn) -> Job:
        job = Job(kind, fn)
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(f"the job queue is full ({self.queue.maxsize} waiting): try again shortly") from None
        with self._lock:
            self.jobs[job.id] = job
            while len(self.jobs) > KEEP_JOBS:
                oldest = next(iter(self.jobs))
                if not self.jobs[oldest].finished:
                    break
                del self.jobs[oldest]
        return job

    def position(self, job: Job) -> int | None:
        """A queued job's place in the queue (1 = next to run), None once it runs or ends."""
        if job.state != "queued":
            return None
        with self.queue.mutex:
            waiting = [j for j in self.queue.queue if j is not None]
        return next((i + 1 for i, j in enumerate(waiting) if j is job), None)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job (it never starts) or a running one (it stops at its next step)."""
        job = self.get(job_id)
        if job is not None:
            job.token.cancel()
        return job

    def cancel_all(self) -> None:
        """Cancel every queued and running job (it only sets their tokens: each stops at its next step)."""
        with self._lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.token.cancel()

    def close(self, timeout: float = 5.0) -> None:
        """Cancel everything and stop the thread."""
        self.cancel_all()
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self.queue.put(None, timeout=timeout)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            if job.token.cancelled:
                job.finish("cancelled", {"type": "cancelled", "state": "cancelled",
                                         "message": "cancelled before it started"})
                continue
            job.state = "running"
            try:
                final = job.fn(job)
                job.finish("done", final)
            except Cancelled as e:
                job.finish("cancelled", {"type": "cancelled", "state": "cancelled", "message": "cancelled",
                                         **getattr(e, "event", {})})
            except UsageError as e:
                job.finish("error", {"type": "error", "message": str(e)})
            except Exception as e:  # the worker must survive anything a job does; the log keeps the traceback
                log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
                job.finish("error", {"type": "error", "message": f"{type(e).__name__}: {e}".splitlines()[0]})
