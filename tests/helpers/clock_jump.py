"""Imported with --import clock_jump: moves this process's wall clock (time.time) by
LITEQUEUE_TEST_CLOCK_OFFSET_S seconds in the supervisor only. Timeouts must not notice,
because the supervisor times tasks on its monotonic clock."""

import os
import time

_OFFSET_S = float(os.environ.get("LITEQUEUE_TEST_CLOCK_OFFSET_S", "0"))
_SUPERVISOR_PID = os.getpid()
_real_time = time.time


def _shifted_time() -> float:
    if os.getpid() == _SUPERVISOR_PID:
        return _real_time() + _OFFSET_S
    return _real_time()


time.time = _shifted_time
