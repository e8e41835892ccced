"""Enough shards for tf.data to interleave, however small the stored images are.

TFDS sizes shards by bytes (64 MiB to 1 GiB each), which at ~20 KB an image
would put the whole Kaggle set in 2-3 shards. Its split builders and Beam
writer all ask `ShardConfig.get_number_shards`, so raising that number here
works for both (TFDS has no public option for a minimum).
"""

import dataclasses

import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import shard_utils

# tf.data's interleave reads this many files at once by default in TFDS.
MIN_SHARDS = 16
# Fewer examples than this per shard is all overhead and no parallelism.
MIN_EXAMPLES_PER_SHARD = 64


@dataclasses.dataclass(frozen=True)
class MinShardsConfig(shard_utils.ShardConfig):
    """TFDS's size-based count, raised to MIN_SHARDS when the split is big enough."""

    min_shards: int = MIN_SHARDS
    min_examples_per_shard: int = MIN_EXAMPLES_PER_SHARD

    def get_number_shards(
        self, total_size: int, num_examples: int, uses_precise_sharding: bool = True
    ) -> int:
        by_size = super().get_number_shards(total_size, num_examples, uses_precise_sharding)
        if self.num_shards:  # The user asked for an exact count (--num_shards).
            return by_size
        by_count = min(self.min_shards, num_examples // self.min_examples_per_shard)
        return max(by_size, by_count)


@dataclasses.dataclass(eq=False)
class _MinShardsDownloadConfig(tfds.download.DownloadConfig):
    def get_shard_config(self) -> shard_utils.ShardConfig:
        base = super().get_shard_config()
        return MinShardsConfig(
            num_shards=base.num_shards,
            min_shard_size=base.min_shard_size,
            max_shard_size=base.max_shard_size,
        )


def with_min_shards(config: tfds.download.DownloadConfig) -> tfds.download.DownloadConfig:
    """A copy of `config` whose shard count has MinShardsConfig's floor."""
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return _MinShardsDownloadConfig(**fields)
