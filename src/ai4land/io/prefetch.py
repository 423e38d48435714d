"""Run an iterator in a background thread, a few items ahead of its consumer.

Training loads batches this way; prediction runs the model on the next band of rows
while the previous one is harmonised and written. The work on both sides is in torch,
numpy and GDAL, which release the GIL, so the two sides overlap.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

_END = object()


class Prefetch:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead.

    ``depth`` counts the item being produced: with 1, the producer makes item k + 1
    while the consumer works on item k, then waits until the consumer takes it. So at
    most ``depth + 1`` items are alive at once (a predict job's bands are ~0.5 GB each
    at global width). Exceptions of the producer are raised in the consumer; ``close``
    stops the thread when the consumer leaves early.
    """

    def __init__(self, items: Iterable, depth: int, *, name: str = "ai4land-prefetch"):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._queue: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(items,), daemon=True,
                                        name=name)
        self._thread.start()

    def _wait_for_slot(self) -> bool:
        while not self._stop.is_set():
            if self._slots.acquire(timeout=0.1):
                return True
        return False

    def _fill(self, items: Iterable) -> None:
        iterator = None
        try:
            iterator = iter(items)
            while self._wait_for_slot():
                item = next(iterator, _END)
                self._queue.put((item, None))
                if item is _END:
                    return
        except BaseException as exc:  # handed to the consumer
            self._queue.put((_END, exc))
        finally:  # stopped early: a generator's own clean-up runs here, in its thread
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator:
        while True:
            item, error = self._queue.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            self._slots.release()  # the producer may start on the next item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
