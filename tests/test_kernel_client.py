"""The sliced kernel client: a wait for a kernel's message polls a second at a time, so a missed wake-up
costs one slice, and a wait still ends with queue.Empty at its timeout."""
import asyncio
import time
from queue import Empty
from types import SimpleNamespace

import pytest

pytest.importorskip("jupyter_client")

from badsad_lib import kernel_client  # noqa: E402
from badsad_lib.kernel_client import SlicedChannel, SlicedKernelClient, SlicedKernelManager  # noqa: E402


class _Socket:
    """A socket whose first ``missed`` polls wait out their timeout although a message is there (the stall)."""

    def __init__(self, missed: int):
        self.missed, self.polls = missed, []

    async def poll(self, timeout_ms):
        self.polls.append(timeout_ms)
        if len(self.polls) <= self.missed:
            await asyncio.sleep(timeout_ms / 1000)
            return 0
        return 1


def _channel(socket) -> SlicedChannel:
    channel = SlicedChannel.__new__(SlicedChannel)  # no ZMQ socket or session: poll and recv are stand-ins
    channel.socket = socket

    async def recv(**kwargs):
        return {"msg_type": "execute_reply"}
    channel._recv = recv
    return channel


def test_a_missed_wake_up_costs_one_slice_not_the_whole_timeout(monkeypatch):
    monkeypatch.setattr(kernel_client, "POLL_SLICE", 0.05)
    socket = _Socket(missed=1)
    start = time.monotonic()
    msg = asyncio.run(_channel(socket).get_msg(timeout=600))
    assert msg == {"msg_type": "execute_reply"}
    assert time.monotonic() - start < 5
    assert socket.polls == [50, 50]  # polls of one slice each, not one poll of 600 000 ms


def test_the_wait_still_ends_at_its_timeout(monkeypatch):
    monkeypatch.setattr(kernel_client, "POLL_SLICE", 0.05)
    socket = _Socket(missed=10 ** 6)
    start = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(_channel(socket).get_msg(timeout=0.3))
    took = time.monotonic() - start
    assert 0.29 <= took < 2
    # slices of at most 50 ms, never a 0 ms poll before the deadline (a spin: 61 polls seen in one CI run),
    # and together no longer than the timeout plus each poll's rounding up to a whole ms
    assert 2 <= len(socket.polls) <= 8, socket.polls
    assert all(1 <= ms <= 50 for ms in socket.polls), socket.polls
    assert sum(socket.polls) <= 300 + len(socket.polls), socket.polls


def test_the_last_slice_rounds_up_to_a_whole_millisecond(monkeypatch):
    """On a clock that moves only while the socket waits, a 300.5 ms wait ends in a 1 ms poll, not a spin of
    0 ms polls (the channel's socket takes whole milliseconds)."""
    monkeypatch.setattr(kernel_client, "POLL_SLICE", 0.05)
    now = [0.0]

    class _ClockSocket:
        def __init__(self):
            self.polls = []

        async def poll(self, timeout_ms):
            self.polls.append(timeout_ms)
            assert len(self.polls) < 100, "the wait spins"
            now[0] += timeout_ms / 1000
            return 0

    monkeypatch.setattr(kernel_client, "time", SimpleNamespace(monotonic=lambda: now[0]))
    socket = _ClockSocket()
    with pytest.raises(Empty):
        asyncio.run(_channel(socket).get_msg(timeout=0.3005))
    assert socket.polls == [50] * 6 + [1]


def test_no_timeout_keeps_polling_and_zero_polls_once(monkeypatch):
    monkeypatch.setattr(kernel_client, "POLL_SLICE", 0.01)
    socket = _Socket(missed=20)
    assert asyncio.run(_channel(socket).get_msg(timeout=None))["msg_type"] == "execute_reply"
    assert len(socket.polls) == 21
    socket = _Socket(missed=1)
    with pytest.raises(Empty):
        asyncio.run(_channel(socket).get_msg(timeout=0))
    assert socket.polls == [0]


def test_the_manager_hands_out_clients_with_sliced_channels():
    client = SlicedKernelManager().client()
    assert isinstance(client, SlicedKernelClient)
    assert client.shell_channel_class is SlicedChannel and client.iopub_channel_class is SlicedChannel
