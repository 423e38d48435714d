"""The predict job's allocator settings (a fresh process each: they are process-wide)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CYCLES = r"""
import json, resource, sys, threading
import numpy as np
if sys.argv[1] == "shared":
    from ai4land.predict.heap import share_one_heap
    assert share_one_heap() and share_one_heap()  # applied once, idempotent
faults = []

def passes():  # like a model stream: ~100 MB allocated, touched and freed per pass
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        arrays = [np.ones(5 << 20, dtype="float32") for _ in range(5)]
        del arrays
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)

for _ in range(2):  # a second thread takes over the freed memory too
    thread = threading.Thread(target=passes)
    thread.start()
    thread.join()
print(json.dumps(faults))
"""


def _faults(mode: str) -> list[int]:
    done = subprocess.run([sys.executable, "-c", CYCLES, mode], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_one_shared_heap_reuses_freed_memory_without_page_faults():
    faults = _faults("shared")
    assert faults[0] > 0  # the first pass maps its memory
    assert max(faults[1:]) <= faults[0] // 20, faults  # later passes, any thread: reused
