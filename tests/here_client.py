"""An executor with a Dask client's scatter, submit and gather that computes at once, in this
process (the interface ``reduction.reduce_blocks`` documents); the real cluster is in
test_distributed.py."""


class HereClient:
    """scatter, submit and gather that compute at once; futures are the values. Records how
    the summand was scattered and whether tasks were submitted as pure."""

    def __init__(self):
        self.scattered = []
        self.pure = []

    def scatter(self, value, broadcast=False, hash=True):
        self.scattered.append((broadcast, hash))
        return value

    def submit(self, function, *args, pure=True):
        self.pure.append(pure)
        return function(*args)

    def gather(self, future):
        return future
