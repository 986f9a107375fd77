"""Test helper: a stand-in for `cli.progress_bar` whose callback presses Ctrl-C at a given point."""


def ctrl_c_bar(iteration: int, stage: int = 1, seen: list | None = None):
    """progress_bar replacement: its callback raises KeyboardInterrupt at (stage, iteration),
    recording the iterations it saw in `seen` when given."""
    def make(desc=""):
        def callback(p):
            if seen is not None:
                seen.append(p.iteration)
            if p.stage == stage and p.iteration == iteration:
                raise KeyboardInterrupt
        return callback

    return make
