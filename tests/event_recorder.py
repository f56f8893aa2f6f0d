"""A test recorder (``hw_bridge.interface.Recorder``) that keeps only the safety events and whether
it was closed; shared by the safety and demo-stop tests."""


class EventRecorder:
    """Keeps ``(kind, message)`` of every ``on_event`` and whether ``close`` was called."""

    def __init__(self):
        self.events, self.closed = [], False

    def on_event(self, now_s, kind, message):
        self.events.append((kind, message))

    def close(self):
        self.closed = True

    def __getattr__(self, name):              # on_tick, on_command, on_frame, on_drill, on_decision: ignored
        return lambda *args, **kwargs: None
