"""The build under Apache Beam: workers decode, one step plans, each split selects its examples.

Same functions as the default build (images.process, plan.make_plan), so the
same manual_dir gives the same examples in the same splits.
"""

from collections.abc import Iterator
import dataclasses

from absl import logging
import apache_beam as beam
from apache_beam.options import pipeline_options
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.direct import direct_runner
from apache_beam.runners.portability import portable_runner
from apache_beam.runners.portability.fn_api_runner import fn_runner
import tensorflow_datasets as tfds

from artist_tfds.best_artworks import catalog as catalog_lib
from artist_tfds.best_artworks import images
from artist_tfds.best_artworks import plan as plan_lib
from artist_tfds.best_artworks import report

# Beam's local runners, by any spelling `--runner` accepts. Since Beam 2.68
# DirectRunner (also the default) first tries Prism, a Go binary it downloads
# from GitHub on first use, so these names get the Python runner instead; the
# FnApiRunner named as such gets it too, so that its workers see the options.
_LOCAL_RUNNER_NAMES = frozenset(
    {"direct", "directrunner", "switchingdirectrunner", "fnapi", "fnapirunner"})


def _asks_for_local_runner(runner) -> bool:
    if runner is None:
        return True
    if isinstance(runner, str):
        return runner.rsplit(".", 1)[-1].lower() in _LOCAL_RUNNER_NAMES
    return isinstance(runner, direct_runner.SwitchingDirectRunner)


def python_runner(options: pipeline_options.PipelineOptions) -> fn_runner.FnApiRunner:
    """The FnApiRunner exactly as DirectRunner builds it once Prism is skipped.

    It honours direct_running_mode and direct_num_workers, and its workers get
    the pipeline options (pickler, experiments) through the provision info.
    """
    encoded = portable_runner.JobServiceHandle.encode_pipeline_options(options.get_all_options())
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def pin_runner(config: tfds.download.DownloadConfig) -> tfds.download.DownloadConfig:
    """`config` with the direct runner (or no runner) replaced by `python_runner`.

    A build on one machine then never depends on a download. Any other runner
    named (Dataflow, Spark, Flink, Portable, Prism itself) is left as it is.
    """
    options = config.beam_options or pipeline_options.PipelineOptions([])
    runner = config.beam_runner
    if runner is None:
        runner = options.view_as(pipeline_options.StandardOptions).runner
    if not _asks_for_local_runner(runner):
        return config
    if runner is not None and not isinstance(runner, str):
        runner = type(runner).__name__
    logging.info("Beam runner: FnApiRunner, Python, never Prism (asked for: %s)",
                 runner or "no runner, DirectRunner by default")
    return dataclasses.replace(config, beam_runner=python_runner(options), beam_options=options)


def _normalise(candidate: catalog_lib.Candidate, stored: images.StoredSize):
    outcome, jpeg = images.process(candidate.key, candidate.path, stored)
    return candidate, outcome, jpeg


def _outcome(record) -> images.Outcome:
    return record[1]


def _plan(outcomes, catalog: catalog_lib.Catalog, info: dict, fold: int) -> plan_lib.Plan:
    return plan_lib.make_plan(catalog, outcomes, info=info, fold=fold)


def _write_report(plan: plan_lib.Plan, path: str) -> None:
    report.write(plan.report, path)


def _select(record, split: str, plan: plan_lib.Plan) -> Iterator[tuple[str, dict]]:
    candidate, outcome, jpeg = record
    if not outcome.skip and plan.split_of.get(candidate.key) == split:
        yield candidate.key, candidate.example(jpeg)


class SharedBuild:
    """Decodes every candidate once per pipeline and hands each split its share.

    TFDS applies one PTransform per split; the first to expand builds the
    shared decode + plan steps, the others reuse their PCollections.
    """

    def __init__(self, catalog: catalog_lib.Catalog, *, stored: images.StoredSize,
                 info: dict, report_path: str, fold: int = 0):
        self._catalog = catalog
        self._stored = stored
        self._fold = fold
        self._info = info
        self._report_path = report_path
        self._built = {}

    def outputs(self, pipeline: beam.Pipeline):
        """(decoded records, plan singleton), built on the first call per pipeline."""
        if id(pipeline) not in self._built:
            records = (
                pipeline
                | "ListCandidates" >> beam.Create(self._catalog.candidates)
                # Create emits from one worker; reshuffle spreads the decoding.
                | "Spread" >> beam.Reshuffle()
                | "Normalise" >> beam.Map(_normalise, stored=self._stored)
            )
            plan = (
                records
                | "Outcomes" >> beam.Map(_outcome)
                | "AllOutcomes" >> beam.combiners.ToList()
                | "Plan" >> beam.Map(_plan, catalog=self._catalog, info=self._info,
                                    fold=self._fold)
            )
            _ = plan | "WriteReport" >> beam.Map(_write_report, path=self._report_path)
            self._built[id(pipeline)] = (records, plan)
        return self._built[id(pipeline)]

    def split(self, name: str) -> beam.PTransform:
        return _SelectSplit(self, name)


class _SelectSplit(beam.PTransform):
    def __init__(self, shared: SharedBuild, split: str):
        super().__init__()
        self._shared = shared
        self._split = split

    def expand(self, pbegin):
        records, plan = self._shared.outputs(pbegin.pipeline)
        return records | "Select" >> beam.FlatMap(
            _select, split=self._split, plan=beam.pvalue.AsSingleton(plan))
