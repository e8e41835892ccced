"""best_artworks: paintings sorted by artist (the Kaggle set, or any such folder) as a TFDS dataset."""

from collections.abc import Iterator
import contextlib
import dataclasses
import functools
import re

from absl import logging
from etils import epath
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle

from artist_tfds import features as features_lib
from artist_tfds import leftovers
from artist_tfds.best_artworks import catalog as catalog_lib
from artist_tfds.best_artworks import images
from artist_tfds.best_artworks import layout
from artist_tfds.best_artworks import metadata
from artist_tfds.best_artworks import plan as plan_lib
from artist_tfds.best_artworks import report
from artist_tfds.best_artworks import shards
from artist_tfds.best_artworks import splits
from artist_tfds.best_artworks import workers

# Stored size (see README.md): the shorter side at 320 px, so a 300 px model
# input, stretched or centre-cropped, is never upsampled; the longer side
# capped at 640 px for panoramas. ~0.1-0.14 MP per painting, not ~1 MP.
STORED_SHORT_SIDE = 320
STORED_LONG_SIDE = 640
# Most published results use the 11 Kaggle artists with at least 200
# paintings. Taken as "the 11 with the most" (the same 11 on Kaggle: the 11th
# has 239, the 12th 194), the config also builds from any other collection.
SUBSET_ARTISTS = 11
KAGGLE_URL = "https://www.kaggle.com/datasets/ikarus777/best-artworks-of-all-time"
# Serialized examples of a split the writer holds in memory before spilling
# them to temporary files next to the dataset (TFDS's default: 1 GB, i.e. the
# whole split of a collection of up to ~25-50k stored paintings of 20-40 KB).
# Spilled or not, the stored order is the same: TFDS sorts by the key's hash
# either way, and which split a painting goes to is decided before (splits.py).
SHUFFLE_MEMORY = 64 << 20
_FOLD_NAME = re.compile(r"(?P<base>.+)_fold(?P<fold>[1-9][0-9]*)")  # No "all_fold03" twin.
_FOLD_CONFIGS: dict[str, "BestArtworksConfig"] = {}


@dataclasses.dataclass(eq=False)
class BestArtworksConfig(tfds.core.BuilderConfig):
    """Which artists become classes, the size images are stored at, and the split fold."""

    top_artists: int | None = None  # None: every artist.
    short_side: int | None = STORED_SHORT_SIDE  # None: keep the source resolution.
    long_side: int | None = STORED_LONG_SIDE
    split_fold: int = 0  # See splits.py: 1..9 rotate which paintings are tested.

    @property
    def stored_size(self) -> images.StoredSize:
        return images.StoredSize(self.short_side, self.long_side)


def _artist_features() -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {field: tfds.features.Text() for field in metadata.FIELDS})


@contextlib.contextmanager
def _shuffle_memory(limit: int):
    """TFDS's writer keeps at most `limit` bytes of a split in memory (it has no option)."""
    default = tfds_shuffle.MAX_MEM_BUFFER_SIZE
    tfds_shuffle.MAX_MEM_BUFFER_SIZE = min(limit, default)
    try:
        yield
    finally:
        tfds_shuffle.MAX_MEM_BUFFER_SIZE = default


def _spill_path(work_dir: str, index: int) -> epath.Path:
    return epath.Path(work_dir) / f"{index:06d}.jpg"


class Builder(tfds.core.GeneratorBasedBuilder):
    """DatasetBuilder for paintings sorted by artist, from a manual_dir."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: configs all, top_11, all_source_size.",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download "Best Artworks of All Time" from {KAGGLE_URL}
(a Kaggle account is needed), unzip it, and pass the unzipped folder:

  tfds build artist_tfds/best_artworks --manual_dir=/path/to/unzipped

That folder should hold images/images/<Artist_Name>/…, resized/resized/… and
artists.csv. Any other collection works too:
{layout.EXPECTED_LAYOUTS}
Unreadable, non-image, tiny and duplicate files are skipped and listed in
build_report.json next to the built dataset.
"""
    BUILDER_CONFIGS = [
        BestArtworksConfig(
            name="all",
            description="Every artist found (50 in the Kaggle set); shorter side stored at "
                        f"{STORED_SHORT_SIDE} px, longer side at most {STORED_LONG_SIDE} px.",
        ),
        BestArtworksConfig(
            name=f"top_{SUBSET_ARTISTS}",
            description=f"The {SUBSET_ARTISTS} artists with the most paintings (in the Kaggle "
                        "set, those with at least 200); stored like `all`.",
            top_artists=SUBSET_ARTISTS,
        ),
        BestArtworksConfig(
            name="all_source_size",
            description="Every artist, stored at source resolution (re-encoded JPEG), "
                        "for training at sizes above 300 px.",
            short_side=None,
            long_side=None,
        ),
    ]
    DEFAULT_BUILDER_CONFIG_NAME = "all"

    @classmethod
    def get_builder_config(cls, name: str, version=None) -> BestArtworksConfig | None:
        """Also `<config>_fold<k>`: that config with split fold k (1..9), for cross-validation.

        Not listed in BUILDER_CONFIGS, so a `tfds build` without `--config`
        does not build all ten folds of every config; built by name like any.
        """
        if config := super().get_builder_config(name, version):
            return config
        match = _FOLD_NAME.fullmatch(name)
        base = match and super().get_builder_config(match["base"], version)
        if not base or not 1 <= int(match["fold"]) < splits.FOLDS:
            return None
        if name not in _FOLD_CONFIGS:  # One object per name, as TFDS compares them by identity.
            fold = int(match["fold"])
            _FOLD_CONFIGS[name] = dataclasses.replace(
                base, name=name, split_fold=fold,
                description=f"{base.description} Split fold {fold}: hash fractions rotated by "
                            f"{fold}/{splits.FOLDS}, so its test split is disjoint from other "
                            "folds'.")
        return _FOLD_CONFIGS[name]

    def _info(self) -> tfds.core.DatasetInfo:
        # The artists are known only once manual_dir is scanned, so `label`
        # starts without names (this overrides the shared schema's entry) and
        # `_split_generators` sets them, the TFDS idiom of ImageFolder. TFDS
        # saves them in label.labels.txt and restores them on load.
        features = features_lib.painting_features(
            (), label=tfds.features.ClassLabel(), artist=_artist_features())
        return self.dataset_info_from_configs(
            features=features,
            supervised_keys=("image", "label"),
            homepage=KAGGLE_URL,
        )

    def _download_and_prepare(self, dl_manager, download_config):
        # Beam only when asked for: the default build uses a process pool.
        self._use_beam = (download_config.beam_runner is not None
                          or download_config.beam_options is not None)
        if self._use_beam:
            from artist_tfds.best_artworks import beam_steps  # pylint: disable=g-import-not-at-top
            download_config = beam_steps.pin_runner(download_config)
        leftovers.warn(self.data_dir)  # Folders of killed builds: named, not deleted.
        with (leftovers.work_dir(prefix="best_artworks_") as work_dir,
              _shuffle_memory(SHUFFLE_MEMORY)):
            self._work_dir = work_dir
            super()._download_and_prepare(dl_manager, shards.with_min_shards(download_config))

    def _post_download_and_prepare_hook(self) -> None:
        path = epath.Path(self.data_dir) / report.FILE_NAME
        for line in report.read(path)["summary"]:
            logging.info("%s", line)
        logging.info("Build report: %s", path)

    def _catalog(self, scan: layout.Scan, inspections: list[images.Inspection]
                 ) -> catalog_lib.Catalog:
        rows, problems = [], []
        if scan.artists_csv:
            rows, problems = metadata.read_artists_csv(scan.artists_csv)
        catalog = catalog_lib.build(scan, inspections, rows,
                                    top_artists=self.builder_config.top_artists,
                                    notes=tuple(problems))
        if not catalog.candidates:
            raise catalog_lib.no_valid_images_error(scan.root, catalog.skipped)
        self.info.features["label"].names = list(catalog.class_names)
        return catalog

    def _report_info(self, manual_dir: epath.Path) -> dict:
        config = self.builder_config
        return {
            "dataset": self.name,
            "config": config.name,
            "version": str(self.version),
            "manual_dir": str(manual_dir),
            "stored_size": dataclasses.asdict(config.stored_size),
            "top_artists": config.top_artists,
            "split_fractions": dict(zip(splits.SPLITS, splits.FRACTIONS)),
            "split_fold": config.split_fold,
        }

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        scan = layout.scan(dl_manager.manual_dir)
        info = self._report_info(dl_manager.manual_dir)
        report_path = str(epath.Path(self.data_dir) / report.FILE_NAME)
        if getattr(self, "_use_beam", False):
            return self._beam_split_generators(scan, info, report_path)
        # One pass per file on every core: inspect, decode, resize, encode to
        # a spill file. Duplicates and left-out artists are decoded too (rare)
        # but never stored; what is stored is what the Beam build stores.
        spill = {f.key: str(_spill_path(self._work_dir, i)) for i, f in enumerate(scan.files)}
        results = workers.run([
            images.SpillJob(f.key, f.path, spill[f.key], self.builder_config.stored_size)
            for f in scan.files
        ])
        catalog = self._catalog(scan, [inspection for inspection, _ in results])
        candidates = {c.key for c in catalog.candidates}
        outcomes = [outcome for _, outcome in results if outcome.key in candidates]
        plan = plan_lib.make_plan(catalog, outcomes, info=info,
                                  fold=self.builder_config.split_fold)
        report.write(plan.report, report_path)
        return {
            split: self._generate_examples(catalog.candidates, plan.split_of, split, spill)
            for split in splits.SPLITS
        }

    def _beam_split_generators(self, scan: layout.Scan, info: dict, report_path: str):
        from artist_tfds.best_artworks import beam_steps  # pylint: disable=g-import-not-at-top
        # Only the cheap look (hash, header) runs here, to know the class
        # names before the pipeline starts; Beam workers do the decoding.
        inspections = workers.run(
            [functools.partial(images.inspect_file, f.path) for f in scan.files])
        catalog = self._catalog(scan, inspections)
        shared = beam_steps.SharedBuild(
            catalog, stored=self.builder_config.stored_size, info=info, report_path=report_path,
            fold=self.builder_config.split_fold)
        return {split: shared.split(split) for split in splits.SPLITS}

    def _generate_examples(
        self,
        candidates: tuple[catalog_lib.Candidate, ...],
        split_of: dict[str, str],
        split: str,
        spill: dict[str, str],
    ) -> Iterator[tuple[str, dict]]:
        for candidate in candidates:
            if split_of.get(candidate.key) == split:
                jpeg = epath.Path(spill[candidate.key]).read_bytes()
                yield candidate.key, candidate.example(jpeg)
