"""Task functions for examples/desktop_app.py: a slow "render" job that streams its progress."""

import time


def render(name, steps=10, step_s=0.3):
    """Pretend to render ``name`` in ``steps`` steps, yielding one progress line per step."""
    for step in range(1, steps + 1):
        time.sleep(step_s)
        yield f"{name}: step {step}/{steps}\n"
    return {"name": name, "steps": steps}
