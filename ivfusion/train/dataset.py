"""Training batches: aligned random crops of registered pairs, and each sample's masks.

Every random choice of a sample is a function of (seed, step, index) alone, so a batch is the
same whatever the number of DataLoader workers or processes, and a resumed run sees exactly
the batches it would have seen. The conventions, which tests rebuild by hand:
    crop, flip, rot90 : np.random.default_rng([seed, step, index])  (region side first if zoom > 1)
    masks             : np.random.default_rng([seed, step, index, 1]), complementary then random
    exposure          : np.random.default_rng([seed, step, index, 2])  (augment.photometric)
    night quota       : np.random.default_rng([seed, epoch, domain, 3]), one permutation per
                        domain and epoch of that domain's stream; the batch's order from
                        np.random.default_rng([seed, step, 2, 3])
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import find_pairs, load_pair
from ..interventions import MaskConfig, get_intervention
from . import augment
from .augment import AugmentConfig
from .config import ConfigError


class PairDataset(torch.utils.data.Dataset):
    """The pairs of the given folders, held in memory as float32 luminance [visible Y, IR].

    Indexed by a key (step, index): returns a dict of float32 tensors
        image (2, crop, crop): one random crop at the SAME offset in both modalities (the
            authors' code crops them independently, which misaligns the pair), a random
            horizontal flip and a random rot90;
        comp (2, crop, crop): the complementary keep masks (M_vi, M_ir);
        rand (1, crop, crop): the random-masking keep mask, shared by both modalities.
    Pairs with a side shorter than the crop are left out (`skipped` names them), and so are
    the pairs whose file stem is in `holdout` (`held_out` names them). `night[i]` says whether
    pair i is a night scene (its visible luminance mean below augment.night_below); `augment`
    also sets the crops' zoom, flat-crop rejection and exposure changes (off by default).
    """

    def __init__(self, folders: list[str], crop: int, seed: int = 0, masks: MaskConfig = MaskConfig(),
                 holdout: list[str] = (), augment: AugmentConfig = AugmentConfig()):
        self.crop, self.seed, self.masks, self.augment = crop, seed, masks, augment
        self.items, self.skipped, self.held_out, self.night = [], [], [], []
        for folder in folders:
            for stem, ir_path, vi_path in find_pairs(folder):
                if stem in holdout:
                    self.held_out.append(f"{Path(folder).name}/{stem}")
                    continue
                y, ir = load_pair(ir_path, vi_path)
                name = f"{Path(folder).name}/{stem}"
                if min(y.shape) < crop:
                    self.skipped.append(name)
                    continue
                self.items.append((np.stack([y, ir]), name))
                self.night.append(bool(y.mean() < augment.night_below))
        if not self.items:
            raise ConfigError(f"no pair of {', '.join(map(str, folders))} is at least {crop}x{crop} "
                             f"({len(self.skipped)} smaller ones left out); lower --crop")

    def __len__(self) -> int:
        return len(self.items)

    def crop_at(self, step: int, index: int) -> np.ndarray:
        """The (2, crop, crop) [visible Y, IR] crop of pair `index` at training step `step`."""
        rng = np.random.default_rng([self.seed, step, index])
        img = self.items[index][0]
        _, h, w = img.shape
        aug = self.augment
        for _ in range(augment.FLAT_TRIES):
            side = augment.region_side(rng, self.crop, h, w, aug.zoom) if aug.zoom > 1 else self.crop
            y = int(rng.integers(0, h - side + 1))
            x = int(rng.integers(0, w - side + 1))
            out = augment.resize_to(img[:, y : y + side, x : x + side], self.crop)
            if not augment.is_flat(out, aug.flat_below):
                break
        if rng.random() < 0.5:
            out = out[:, :, ::-1]
        out = np.rot90(out, k=int(rng.integers(0, 4)), axes=(1, 2))
        return np.ascontiguousarray(out)

    def masks_at(self, step: int, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(M_vi complementary, M_ir complementary, M random), each (crop, crop) float32."""
        rng = np.random.default_rng([self.seed, step, index, 1])
        c = self.crop
        m_vi, m_ir = get_intervention("complementary").sample(c, c, rng, self.masks)
        m_r, _ = get_intervention("random").sample(c, c, rng, self.masks)
        return m_vi, m_ir, m_r

    def image_at(self, step: int, index: int) -> np.ndarray:
        """crop_at with the exposure changes of `augment` (photometric, darken), if any."""
        img = self.crop_at(step, index)
        if self.augment.photometric > 0 or self.augment.darken > 0:
            rng = np.random.default_rng([self.seed, step, index, 2])
            img = augment.photometric(img, self.night[index], self.augment, rng)
        return img

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        step, index = key
        m_vi, m_ir, m_r = self.masks_at(step, index)
        return {"image": torch.from_numpy(self.image_at(step, index)),
                "comp": torch.from_numpy(np.stack([m_vi, m_ir])),
                "rand": torch.from_numpy(m_r[None])}


class StepBatchSampler(torch.utils.data.Sampler):
    """Yields, for each step from `start` to `steps`, this process's share of the step's batch
    as keys (step, index). Each epoch is a permutation of the pairs drawn from (seed, epoch);
    the last incomplete batch of an epoch is dropped."""

    def __init__(self, n: int, batch_size: int, rank: int, world: int, seed: int, start: int, steps: int):
        self.n, self.batch, self.rank, self.world = n, batch_size, rank, world
        self.seed, self.start, self.steps = seed, start, steps
        self.per_epoch = n // batch_size
        if self.per_epoch == 0:
            raise ConfigError(f"{n} pairs cannot fill one batch of {batch_size}; lower --batch-size or add data")
        self.per_rank = batch_size // world

    def __len__(self) -> int:
        return max(0, self.steps - self.start)

    def __iter__(self):
        perm, perm_epoch = None, -1
        for step in range(self.start, self.steps):
            epoch, offset = divmod(step, self.per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = np.random.default_rng([self.seed, epoch]).permutation(self.n), epoch
            batch = perm[offset * self.batch : (offset + 1) * self.batch]
            mine = batch[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
            yield [(step, int(i)) for i in mine]


class QuotaBatchSampler(StepBatchSampler):
    """StepBatchSampler with a per-batch domain quota: round(share * batch) samples of every
    batch come from the night pairs, the rest from the others. Each domain is its own stream:
    its k-th draw is element k mod n of the permutation for epoch k // n, drawn from
    (seed, epoch, domain), so the batch of a step is a function of (seed, step) alone and every
    pair of a domain is seen equally often."""

    def __init__(self, night: list[bool], batch_size: int, rank: int, world: int, seed: int, start: int,
                 steps: int, share: float):
        super().__init__(len(night), batch_size, rank, world, seed, start, steps)
        self.pools = [np.flatnonzero(~np.asarray(night, bool)), np.flatnonzero(np.asarray(night, bool))]
        self.quota = [batch_size - round(share * batch_size), round(share * batch_size)]
        for domain, (pool, k) in enumerate(zip(self.pools, self.quota)):
            if k and not len(pool):
                kind = "night" if domain else "daylight"
                raise ConfigError(f"--augment.night-share {share}: the training data holds no {kind} pair "
                                  f"(night: visible mean below --augment.night-below)")

    def batch_at(self, step: int) -> list[int]:
        """The pair indices of the whole batch of `step`, both quotas shuffled together (so that
        each process of a distributed run gets its share of night crops)."""
        out = []
        for domain, (pool, k) in enumerate(zip(self.pools, self.quota)):
            n = len(pool)
            for draw in range(step * k, (step + 1) * k):
                epoch, offset = divmod(draw, n)
                perm = np.random.default_rng([self.seed, epoch, domain, 3]).permutation(n)
                out.append(int(pool[perm[offset]]))
        return [out[i] for i in np.random.default_rng([self.seed, step, 2, 3]).permutation(len(out))]

    def __iter__(self):
        for step in range(self.start, self.steps):
            batch = self.batch_at(step)
            mine = batch[self.rank * self.per_rank : (self.rank + 1) * self.per_rank]
            yield [(step, i) for i in mine]
