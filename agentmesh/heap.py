"""The garbage collector in a long-running mesh process.

A router holds torch, MiniLM and the intent bank: about 450k objects that live as long as the
process. Python's full collection, which it runs on its own every so often, walks all of them: a
pause of 250-350 ms on a 2-core machine for every task in flight (BENCHMARKS.md, "Garbage
collection"). Frozen after startup, they are out of every collection's walk, and what is walked
is what the process made since.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move every object alive now into the collector's permanent generation.

    For the processes the CLI runs (router, agent, ``up``), once they have started. Not done by
    ``Router`` or ``Agent`` themselves: the collector is the whole process's, and an application
    embedding them decides for itself (``agentmesh.freeze_startup_heap()`` after its own startup).
    No collection first: it would itself be such a pause; the startup's own garbage, a bounded
    amount, stays.
    """
    gc.freeze()
