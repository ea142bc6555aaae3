"""The pre-training batch stream: a pure function of (seed, step), so resuming is exact.

Step s of a stream with batch size B takes samples s*B .. s*B+B-1 of an endless
sequence made of per-epoch permutations (permutation e seeded by (seed, kind, e));
so the indices of any step are computed directly, without loading the steps
before it. Each sample's augmentation is seeded by (seed, step, position), so the
batches do not depend on `data.num_workers`. With video files configured, image
batches come on even steps and video batches on odd steps (each kind walks its own
sequence at half the pace).

Under DDP (`world_size` ranks) `train.batch_size` is the global batch: rank r
loads positions r*B/W .. (r+1)*B/W - 1 of each step's global batch, so the
samples, their seeds and their augmentations are those of a one-process run.
With `data.pretrain_shards` each rank walks its own shards instead (`shards.ShardOrder`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset

from workbench.data.datasets import CaptionDataset, Collate
from workbench.data.readers import read_entries
from workbench.distributed import local_batch_size

_KIND_CODE = {"image": 0, "video": 1}


def sample_seed(seed: int, step: int, position: int) -> int:
    return int(np.random.SeedSequence([seed, step, position]).generate_state(1)[0])


class _ByKind(Dataset):
    """Routes a key (kind, index, sample_seed) to the image or the video dataset."""

    def __init__(self, datasets: dict[str, CaptionDataset]):
        self.datasets = datasets

    def __len__(self) -> int:
        return sum(len(d) for d in self.datasets.values())

    def __getitem__(self, key: tuple[str, int, int]):
        kind, index, seed = key
        return self.datasets[kind][(index, seed)]


class _StepKeys:
    """Endless batch sampler: the sample keys of step start, start+1, ..."""

    def __init__(self, stream: PretrainStream, start_step: int):
        self.stream, self.start_step = stream, start_step

    def __iter__(self) -> Iterator[list[tuple[str, int, int]]]:
        step = self.start_step
        while True:
            yield self.stream.step_keys(step)
            step += 1


class PretrainStream:
    """Training batches forever: `for batch in stream.batches(start_step): ...`."""

    def __init__(self, cfg, tokenizer, seed: int, *, pin_memory: bool = False, rank: int = 0, world_size: int = 1):
        data = cfg.data
        self.seed, self.batch_size = seed, cfg.train.batch_size
        self.local_batch_size = local_batch_size(cfg.train.batch_size, world_size)
        self.positions = range(rank * self.local_batch_size, (rank + 1) * self.local_batch_size)
        self.num_workers, self.pin_memory = data.num_workers, pin_memory
        self.collate = Collate(tokenizer, data.max_text_len)
        mask = tokenizer.mask_token
        self.shard_order = None  # with data.pretrain_shards: this rank's own shards (see shards.py)
        if data.pretrain_shards:
            from workbench.data.shards import ShardCaptionDataset, ShardOrder, index_shards, shard_paths

            index = index_shards(shard_paths(data))  # once: tar headers, no payload
            self.datasets: dict[str, CaptionDataset] = {"image": ShardCaptionDataset(cfg, index, mask)}
            self.shard_order = ShardOrder(index, seed, lane=rank, lanes=world_size)
        else:
            self.datasets = {
                "image": CaptionDataset(cfg, read_entries(data, data.pretrain_files, "pretrain"), "image", mask)
            }
        if data.video_pretrain_files:
            videos = read_entries(data, data.video_pretrain_files, "video", min_frames=data.num_frames)
            self.datasets["video"] = CaptionDataset(cfg, videos, "video", mask)
        self._permutations: dict[tuple[str, int], np.ndarray] = {}

    @property
    def skipped(self) -> int:
        """Bad entries dropped while reading (data.on_bad_sample=skip)."""
        return sum(d.skipped for d in self.datasets.values())

    def kind_of(self, step: int) -> tuple[str, int]:
        """(kind, that kind's own step counter) of global step `step`."""
        if "video" in self.datasets:
            return ("video" if step % 2 else "image"), step // 2
        return "image", step

    def _permutation(self, kind: str, epoch: int) -> np.ndarray:
        key = (kind, epoch)
        if key not in self._permutations:
            if len(self._permutations) > 4:
                self._permutations.clear()
            rng = np.random.default_rng([self.seed, _KIND_CODE[kind], epoch])
            self._permutations[key] = rng.permutation(len(self.datasets[kind]))
        return self._permutations[key]

    def step_keys(self, step: int) -> list[tuple[str, int, int]]:
        """The (kind, entry index, sample seed) of this rank's samples of `step` (all of them in one process)."""
        kind, kind_step = self.kind_of(step)
        size = len(self.datasets[kind])
        keys = []
        for local, position in enumerate(self.positions):
            if kind == "image" and self.shard_order is not None:
                index = self.shard_order[kind_step * self.local_batch_size + local]
            else:
                epoch, offset = divmod(kind_step * self.batch_size + position, size)
                index = int(self._permutation(kind, epoch)[offset])
            keys.append((kind, index, sample_seed(self.seed, step, position)))
        return keys

    def batches(self, start_step: int = 0) -> Iterator[dict]:
        """Batches of steps start_step, start_step+1, ... (endless)."""
        if self.num_workers:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenising happens in workers
        loader = DataLoader(
            _ByKind(self.datasets),
            batch_sampler=_StepKeys(self, start_step),
            collate_fn=self.collate,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )
        return iter(loader)
