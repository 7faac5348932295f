"""The heap trimmer: one trim, soon, after a burst of large messages; none for small ones."""

from __future__ import annotations

import asyncio

from edgecloud.allocator import HeapTrimmer


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
