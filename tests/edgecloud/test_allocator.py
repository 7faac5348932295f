"""The heap trimmer: one trim, soon, after a burst of large messages; none for small ones. The mmap
threshold: which blocks get a mapping of their own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from edgecloud.allocator import COMPUTE_THRESHOLD_BYTES, THRESHOLD_BYTES, HeapTrimmer

REPO = Path(__file__).resolve().parents[2]


async def test_large_messages_lead_to_one_trim_soon_after_and_small_ones_to_none():
    trimmer = HeapTrimmer(min_bytes=1000, delay_s=0.01)
    calls = []
    real = trimmer._trim
    assert real is not None  # glibc: the machines this runs on
    trimmer._trim = lambda pad: calls.append(pad) or real(pad)
    trimmer.after(999)
    await asyncio.sleep(0.05)
    assert calls == [] and trimmer.trims == 0
    for _ in range(5):  # a burst: one trim pending at a time
        trimmer.after(5000)
    for _ in range(100):
        if trimmer.trims:
            break
        await asyncio.sleep(0.01)
    assert calls == [0] and trimmer.trims == 1
    trimmer.after(5000)  # the next large message after that trim gets another
    for _ in range(100):
        if trimmer.trims == 2:
            break
        await asyncio.sleep(0.01)
    assert calls == [0, 0]


_PROBE = """
import ctypes, sys
from edgecloud.allocator import release_large_buffers

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
assert release_large_buffers(int(sys.argv[1]))
mapped = []
for size in (1 << 20, 64 << 20):  # a tensor-sized block, a block over every threshold
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    mapped.append(libc.mallinfo2().hblks - before)
    libc.free(block)
print(*mapped)
"""


@pytest.mark.parametrize("threshold, expected", [(THRESHOLD_BYTES, "1 1"), (COMPUTE_THRESHOLD_BYTES, "0 1")],
                         ids=["message-server", "compute"])
def test_the_threshold_decides_which_blocks_get_their_own_mapping(threshold, expected):
    """In a process of its own (the setting is process-wide): with a message server's 128 KiB a 1 MiB
    block is mapped on its own; with a torch process's 32 MiB it comes from the heap; a 64 MiB
    block is mapped either way, so it goes back to the OS as soon as it is freed."""
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(threshold)], capture_output=True, text=True,
                          timeout=60, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == expected.split()


async def test_a_trim_follows_the_last_model_call_once_the_process_is_idle():
    """Model calls keep pushing the trim off; one trim runs ``idle_s`` after the last of them; a
    later call after that trim arms the next one."""
    trimmer = HeapTrimmer(idle_s=0.3)
    calls = []
    real = trimmer._trim
    trimmer._trim = lambda pad: calls.append(pad) or real(pad)
    for _ in range(12):  # busy for ~0.6 s: twice the quiet period, no trim meanwhile
        trimmer.after_compute()
        await asyncio.sleep(0.05)
    assert calls == [] and trimmer.trims == 0
    for _ in range(100):
        if trimmer.trims:
            break
        await asyncio.sleep(0.01)
    assert calls == [0] and trimmer.trims == 1
    await asyncio.sleep(0.5)  # idle stays idle: no second trim without a model call
    assert trimmer.trims == 1
    trimmer.after_compute()
    for _ in range(100):
        if trimmer.trims == 2:
            break
        await asyncio.sleep(0.01)
    assert calls == [0, 0]


@pytest.mark.parametrize("arm", ["idle timer", "pending trim"])
def test_what_a_closed_loop_left_armed_does_not_block_the_next_loop(arm):
    """The process's trimmer outlives event loops (tests, restarts): an idle timer or a message's
    trim still due on a loop that closed must not keep a new loop's calls from arming their own."""
    trimmer = HeapTrimmer(min_bytes=1000, delay_s=0.05, idle_s=0.05)
    trimmer._trim = lambda pad: 0
    touch = trimmer.after_compute if arm == "idle timer" else (lambda: trimmer.after(5000))

    async def arm_and_leave():
        touch()

    async def arm_and_wait():
        touch()
        for _ in range(100):
            if trimmer.trims:
                return
            await asyncio.sleep(0.01)

    asyncio.run(arm_and_leave())  # the loop closes before the trim was due
    asyncio.run(arm_and_wait())
    assert trimmer.trims == 1
