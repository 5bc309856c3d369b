"""Every case of the bad-input corpus (``corpus.py``) beside two good phantom scans, through the
command that reads it: a clear sentence naming the bad file, the good files still done, exit 0,
Python peak memory under the bound, and no patient identity in any output without
``--keep-identity``. ``convert`` exits 0 with bad files reported; ``--strict`` makes them exit 1.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import corpus
import pytest
import torch

from bsi_d2 import cli
from bsi_d2.commands.predict import batch_exit_code
from bsi_d2.inference.batch import BatchOptions, run_batch
from bsi_d2.postprocess.qc import QCThresholds

OPTS = ["MODEL.ENGINE", "torchvision", "TEST.DETECTIONS_PER_IMAGE", "5",
        "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "256"]  # fmt: skip
# a random model finds no skeleton (nor its area); the rest still checks
QC = QCThresholds(required_regions=(), min_skeleton_fraction=0.0, max_skeleton_fraction=1.0)

# cases that reveal a defect: visible, and the suite stays green until it is fixed
DEFECTS: dict[str, str] = {}  # none open; the four the corpus found first are fixed


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> corpus.Sources:
    return corpus.make_sources(tmp_path_factory.mktemp("phantoms"))


@pytest.fixture(scope="module")
def predictor(configs_dir):
    from bsi_d2.config import setup_cfg
    from bsi_d2.engine.predictor import build_predictor

    torch.manual_seed(0)
    cfg = setup_cfg(str(configs_dir / "mask_rcnn_R_18_FPN_cpu_bsi.yaml"), OPTS)
    return build_predictor(cfg, device="cpu")


def _predict(predictor, folder: Path, out: Path, keep_identity: bool) -> int:
    options = BatchOptions(
        batch_size=4, score_thresh=0.5, progress=False, qc=QC, keep_identity=keep_identity
    )
    result = run_batch([folder], out, predictor, predictor.taxonomy, options)
    return batch_exit_code(result, strict=False)


@pytest.fixture(scope="module")
def good_only(sources, predictor, tmp_path_factory) -> Path:
    """Pseudonymous predict outputs of the two good scans alone, which each case's pseudonymous
    run resumes from (the good scans were checked done beside the case in the named run)."""
    root = tmp_path_factory.mktemp("good_only")
    folder = root / "in"
    folder.mkdir()
    for stem in corpus.GOOD_STEMS:
        shutil.copy(sources.dicom(stem), folder / f"{stem}.dcm")
    assert _predict(predictor, folder, root / "out", keep_identity=False) == 0
    return root / "out"


def _runner(predictor, good_only: Path) -> corpus.Runner:
    cli_run = corpus.cli_runner([])

    def run(command: str, folder: Path, out: Path, keep_identity: bool) -> int:
        if command != "predict":
            return cli_run(command, folder, out, keep_identity)
        if not keep_identity:
            shutil.copytree(good_only, out)
        return _predict(predictor, folder, out, keep_identity)

    return run


def _param(case: corpus.Case):
    defect = DEFECTS.get(case.name)
    marks = [pytest.mark.xfail(strict=True, reason=defect)] if defect else []
    return pytest.param(case, id=case.name, marks=marks)


def test_the_corpus_covers_every_kind() -> None:
    kinds = [case.kind for case in corpus.CASES]
    assert len(kinds) >= 60 and len({case.name for case in corpus.CASES}) == len(kinds)
    assert all(kinds.count(kind) >= 10 for kind in ("labelme", "image", "dicom", "path"))


@pytest.mark.parametrize("case", [_param(case) for case in corpus.CASES])
def test_bad_input_is_reported_clearly_and_the_good_files_are_done(
    case: corpus.Case, sources, predictor, good_only, tmp_path: Path
) -> None:
    runner = _runner(predictor, good_only)
    # (a)-(d) with file names in clear, so the records of the bad file can be found
    _, named = corpus.run_case(case, sources, tmp_path / "named", runner, keep_identity=True)
    for run, verdict in named:
        assert verdict.outcome == "clear", f"{run.command}: {verdict.outcome}: {verdict.detail}"
        assert run.peak_bytes < corpus.MEMORY_BOUND_BYTES
    # (e) the default run names nothing of the patient, in its files or its log
    _, pseudo = corpus.run_case(case, sources, tmp_path / "pseudo", runner, keep_identity=False)
    identities = (*sources.identities, *case.identities)
    for run, _ in pseudo:
        assert run.code == 0, f"{run.command}: {run.raised or run.text[-500:]}"
        leaks = corpus.leaked_identities(identities, run)
        assert not leaks, f"{run.command} wrote {leaks}"


def test_convert_strict_makes_a_bad_file_a_non_zero_exit(sources, tmp_path: Path) -> None:
    case = next(c for c in corpus.CASES if c.name == "labelme_invalid_json")
    corpus.input_folder(case, sources, tmp_path / "in")
    argv = ["convert", str(tmp_path / "in"), "--workers", "1"]
    assert cli.main([*argv, "--out", str(tmp_path / "lax")]) == 0
    assert cli.main([*argv, "--out", str(tmp_path / "strict"), "--strict"]) == 1
