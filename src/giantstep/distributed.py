"""Dask helpers: connecting to a cluster, and one run spread over its workers.

Spreading one run: the two streamed sums of a run — the gradient ``Σ_blocks Gᵀ X`` of each step
and the Gram statistics ``Σ_blocks FᵀF, Fᵀy`` of the ridge and test sets — are cut into pieces
of ``blocks_per_task`` whole blocks. Each piece is computed on a worker from its row range
alone (the block-keyed randomness makes the rows those of the local run), and the partial sums
are added along a fixed binary tree over the pieces. The tree depends only on the number of
pieces, never on the number of workers or on which finished first, so the result is the same
on any cluster, and equals the local run up to the order of the float64 additions (about
1e-16 relative).

    with spread_over(client):
        result = giantstep.run(config)

Dask itself is imported only when a cluster is used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from giantstep.data import SampleStream
    from giantstep.model import TwoLayerNetwork
    from giantstep.readout import GramStatistics
    from giantstep.targets import Teacher

#: Blocks per task when a run is spread; fixed (not derived from the worker count) so that the
#: order of the additions, hence the result, is the same on any cluster.
BLOCKS_PER_TASK = 8


def connect(address: str, timeout: float = 10.0):
    """A ``distributed.Client`` for ``address``; ConfigError naming it if it is unreachable."""
    from giantstep.config import ConfigError

    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - dask is a dependency
        raise ConfigError("--scheduler: dask.distributed is not installed") from None
    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        raise ConfigError(
            f"--scheduler: cannot reach the Dask scheduler at {address} ({err})"
        ) from None


# -- the parts of a run a worker needs, in picklable form --------------------------------------


def _pack_network(network: TwoLayerNetwork) -> tuple:
    from giantstep.activations import get_activation

    name = network.activation.name
    try:
        get_activation(name)
    except ValueError:
        raise ValueError(
            f"cannot spread a run whose activation {name!r} is not named by a config string"
        ) from None
    return (network.first_layer, network.second_layer, network.output_scale, name)


def _unpack_network(packed: tuple) -> TwoLayerNetwork:
    from giantstep.activations import get_activation
    from giantstep.model import TwoLayerNetwork

    first, second, scale, name = packed
    return TwoLayerNetwork(first, second, scale, get_activation(name))


def _pack_teacher(teacher: Teacher) -> tuple:
    return (teacher.target.expression, teacher.directions, teacher.noise)


def _unpack_teacher(packed: tuple) -> Teacher:
    from giantstep.targets import Teacher, parse_target

    expression, directions, noise = packed
    return Teacher(parse_target(expression), directions, noise)


def _pieces(n_samples: int, block_size: int, blocks_per_task: int) -> list[tuple[int, int]]:
    """(start row, row count) of each piece: whole blocks, so the blocks are the local run's."""
    rows = block_size * blocks_per_task
    return [(s, min(rows, n_samples - s)) for s in range(0, n_samples, rows)]


@dataclass(frozen=True)
class _RowRange:
    """Rows ``start ..`` of a stream, looking like a stream that starts at 0."""

    stream: SampleStream
    start: int

    @property
    def dtype(self) -> np.dtype:
        return self.stream.dtype

    def blocks(self, n_samples: int, block_size: int) -> Iterator:
        return self.stream.blocks(n_samples, block_size, start=self.start)


def _gradient_piece(network, teacher, stream, start, count, block_size, residual) -> np.ndarray:
    """``−s Σ_{piece} Gᵀ X`` (N, d): the local gradient times ``count``."""
    from giantstep.train import gradient

    grad = gradient(
        _unpack_network(network),
        _unpack_teacher(teacher),
        _RowRange(stream, start),
        count,
        block_size,
        residual,
    )
    grad *= count
    return grad


def _gram_piece(network, teacher, stream, start, count, block_size) -> GramStatistics:
    from giantstep.readout import feature_statistics

    return feature_statistics(
        _unpack_network(network),
        _unpack_teacher(teacher),
        _RowRange(stream, start),
        count,
        block_size,
    )


def _add(a: Any, b: Any) -> Any:
    return a + b


def tree_sum(client, futures: list) -> Any:
    """Sum of the futures' values along a fixed binary tree (pairs in order), on the cluster."""
    level = list(futures)
    while len(level) > 1:
        nxt = [client.submit(_add, level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].result()


@dataclass
class Spread:
    """Where the streamed sums of the current run go: a client and the piece size."""

    client: Any
    blocks_per_task: int = BLOCKS_PER_TASK

    def _scatter(self, network: TwoLayerNetwork, teacher: Teacher) -> tuple:
        return self.client.scatter(
            [_pack_network(network), _pack_teacher(teacher)], broadcast=True, hash=False
        )

    def _sum_pieces(self, piece, network, teacher, stream, n_samples, block_size, progress, *args):
        """``piece`` on every run of whole blocks, summed along the fixed tree."""
        net, tea = self._scatter(network, teacher)
        futures = [
            self.client.submit(piece, net, tea, stream, start, count, block_size, *args, pure=False)
            for start, count in _pieces(n_samples, block_size, self.blocks_per_task)
        ]
        total = tree_sum(self.client, futures)
        if progress:
            progress(math.ceil(n_samples / block_size))
        return total

    def gradient(
        self,
        network: TwoLayerNetwork,
        teacher: Teacher,
        stream: SampleStream,
        n_samples: int,
        block_size: int,
        residual: str,
        progress: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        total = self._sum_pieces(
            _gradient_piece, network, teacher, stream, n_samples, block_size, progress, residual
        )
        return total / n_samples

    def feature_statistics(
        self,
        network: TwoLayerNetwork,
        teacher: Teacher,
        stream: SampleStream,
        n_samples: int,
        block_size: int,
        progress: Callable[[int], object] | None = None,
    ) -> GramStatistics:
        return self._sum_pieces(
            _gram_piece, network, teacher, stream, n_samples, block_size, progress
        )


_ACTIVE: ContextVar[Spread | None] = ContextVar("giantstep_spread", default=None)


def active_spread() -> Spread | None:
    """The Spread set by ``spread_over`` in this context, if any (None on the workers)."""
    return _ACTIVE.get()


@contextmanager
def spread_over(client, blocks_per_task: int = BLOCKS_PER_TASK) -> Iterator[Spread]:
    """Within this block, runs in this thread spread their sample blocks over ``client``."""
    if blocks_per_task < 1:
        raise ValueError("blocks_per_task must be at least 1")
    token = _ACTIVE.set(Spread(client, blocks_per_task))
    try:
        yield _ACTIVE.get()
    finally:
        _ACTIVE.reset(token)


def run_spread(config: Any, client, blocks_per_task: int = BLOCKS_PER_TASK, progress=False):
    """``giantstep.run(config)`` with its sample blocks computed on the cluster's workers."""
    from giantstep.experiment import run

    with spread_over(client, blocks_per_task):
        return run(config, progress=progress)
