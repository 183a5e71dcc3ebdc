"""An observer module whose receiver always raises, imported with --import raising_receiver."""

from litequeue import signals


def explode(task, **kwargs):
    raise RuntimeError(f"receiver failure for task {task.id}")


signals.on_success.connect(explode)
