"""Training batches grouped by length, so little of a batch's compute is spent on padding.

Each epoch shuffles the questions with the run's generator, cuts the order into windows of
``window_batches`` batches, sorts each window by length and cuts it into batches, then shuffles the
batches. Every question is seen once per epoch, batches stay random across the epoch, and the order is
a pure function of the generator's state, so resume replays it exactly. ``window_batches=1`` is a plain
shuffle.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthBucketSampler(Sampler[list[int]]):
    def __init__(self, lengths: Sequence[int], batch_size: int, window_batches: int, generator: torch.Generator):
        if batch_size <= 0 or window_batches <= 0:
            raise ValueError(f"batch_size ({batch_size}) and window_batches ({window_batches}) must be > 0")
        self.lengths, self.batch_size, self.window = list(lengths), batch_size, batch_size * window_batches
        self.generator = generator

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        batches = []
        for start in range(0, len(order), self.window):
            window = sorted(order[start:start + self.window], key=lambda i: self.lengths[i])
            batches += [window[i:i + self.batch_size] for i in range(0, len(window), self.batch_size)]
        for k in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[k]
