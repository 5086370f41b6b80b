"""A kernel client for running lessons with nbclient (``badsad grade``, ``badsad site``, the notebook tests)
whose waits for a kernel's messages poll in slices of ``POLL_SLICE`` seconds.

Why: nbclient waits for a cell's reply with one ``socket.poll(timeout)`` of the whole per-cell timeout. Now
and then that wait misses the socket's wake-up (seen in 2 of 4 clean-clone CI runs on one day and once in a
reproduction, each time in lesson 03 on the digits fallback): the kernel had replied and was idle, a second
client got answers from it at once, and the wait sat until its timeout (600 s), when pyzmq's final check found
the reply and the run went on. A new poll looks at the socket's state before it waits, so polling in short
slices turns such a stall into at most one slice; a cell's timeout still counts from the cell's start.

    NotebookClient(nb, kernel_manager_class=SlicedKernelManager, ...)
"""
from __future__ import annotations

import math
import time
from queue import Empty

from jupyter_client import AsyncKernelManager
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from traitlets import DottedObjectName, Type

POLL_SLICE = 1.0  # seconds: the longest a missed wake-up can hold a wait


class SlicedChannel(AsyncZMQSocketChannel):
    """An async ZMQ channel whose ``get_msg(timeout)`` polls at most ``POLL_SLICE`` s at a time until
    ``timeout`` s have passed (None: no limit); raises ``queue.Empty`` at the timeout, as the channel does."""

    async def get_msg(self, timeout: float | None = None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = POLL_SLICE if deadline is None else min(POLL_SLICE, max(0.0, deadline - time.monotonic()))
            # whole milliseconds, rounded up: a poll of 0 ms before the deadline would spin (the socket's
            # poll, like the channel's own get_msg, takes whole ms)
            if await self.socket.poll(math.ceil(left * 1000 - 1e-9)):
                return await self._recv()
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty


class SlicedKernelClient(AsyncKernelClient):
    """nbclient's kernel client with ``SlicedChannel`` for the replies (shell) and the outputs (iopub)."""

    shell_channel_class = Type(SlicedChannel)
    iopub_channel_class = Type(SlicedChannel)


class SlicedKernelManager(AsyncKernelManager):
    """nbclient's kernel manager, handing out ``SlicedKernelClient``s."""

    client_class = DottedObjectName("badsad_lib.kernel_client.SlicedKernelClient")
    client_factory = Type(SlicedKernelClient, klass=AsyncKernelClient)
