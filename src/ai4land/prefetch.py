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

    Exceptions of the producer are raised in the consumer; ``close`` stops the thread
    when the consumer leaves early.
    """

    def __init__(self, items: Iterable, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(items,), daemon=True,
                                        name="ai4land-prefetch")
        self._thread.start()

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fill(self, items: Iterable) -> None:
        try:
            for item in items:
                if not self._put((item, None)):
                    return
            self._put((_END, None))
        except BaseException as exc:  # handed to the consumer
            self._put((_END, exc))

    def __iter__(self) -> Iterator:
        while True:
            item, error = self._queue.get()
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
