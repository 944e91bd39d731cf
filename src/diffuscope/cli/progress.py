"""tqdm as one subscriber of the library's Progress events (events.py): the progress bar lives at the CLI edge."""

from __future__ import annotations

from diffuscope.core.events import Progress


class TqdmObserver:
    """A tqdm bar over one task's events: total from the first event, position from ``done``, stage as postfix."""

    def __init__(self, desc: str, unit: str = "it", disable: bool = False):
        self.desc, self.unit, self.disable = desc, unit, disable
        self.bar = None

    def __call__(self, event: Progress) -> None:
        if self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=event.total, unit=self.unit, desc=self.desc, disable=self.disable,
                            dynamic_ncols=True)
        self.bar.n = event.done
        if event.message:
            self.bar.set_postfix_str(event.message, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
