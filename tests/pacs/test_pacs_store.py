"""``bsi-d2 store`` against a real Orthanc: the --dicom-out objects stored, found again by C-FIND
and the REST API, retrieved and compared; refusals explained."""

from __future__ import annotations

import io

import pydicom
import pytest

from bsi_d2.cli import main as cli
from bsi_d2.inference.replay import phantom_recording, save_recording
from bsi_d2.pacs.store import PeerError, echo, find_dicom_files, store_files
from bsi_d2.taxonomy import load_taxonomy

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")
pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    assert cli(["phantom", "--scans", "1", "--out", str(root / "ph"), "--workers", "1"]) == 0
    save_recording(root / "rec.jsonl", phantom_recording(root / "ph", load_taxonomy()))
    out = root / "out"
    argv = ["predict", str(root / "ph" / "dicom"), "--replay", str(root / "rec.jsonl")]
    assert cli([*argv, "--out", str(out), "--dicom-out", "--keep-identity", "--no-progress"]) == 0
    (out / "scans" / "not_dicom.dcm").write_bytes(b"not a DICOM file")
    return root


def test_store_find_retrieve_and_compare(orthanc, results_dir):
    out = results_dir / "out"
    files = find_dicom_files([out])
    names = sorted(name.rsplit("/", 1)[-1] for _, name in files)
    assert names == ["sc.dcm", "seg_anterior.dcm", "seg_posterior.dcm", "sr.dcm"]  # not the junk
    argv = ["store", str(out), "--host", orthanc.host, "--port", str(orthanc.dicom_port),
            "--aet", orthanc.aet]  # fmt: skip
    assert cli(argv) == 0
    source = pydicom.dcmread(next((results_dir / "ph" / "dicom").glob("*.dcm")))
    assert cli(["store", str(results_dir / "ph" / "dicom"), "--host", orthanc.host, "--port",
                str(orthanc.dicom_port), "--aet", orthanc.aet]) == 0  # fmt: skip

    # C-FIND at image level: the scan and our four objects in the scan's study
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    ae = AE(ae_title="BSI_D2")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate(orthanc.host, orthanc.dicom_port, ae_title=orthanc.aet)
    assert assoc.is_established
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = source.StudyInstanceUID
    query.SeriesInstanceUID = ""
    query.SOPInstanceUID = ""
    query.SOPClassUID = ""
    found = [ds for status, ds in
             assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
             if status and status.Status in (0xFF00, 0xFF01) and ds is not None]  # fmt: skip
    assoc.release()
    sent = {str(pydicom.dcmread(path).SOPInstanceUID): path for path, _ in files}
    assert set(sent) | {source.SOPInstanceUID} == {str(ds.SOPInstanceUID) for ds in found}

    # retrieve each through the REST API and compare with what was sent
    for uid, path in sent.items():
        (orthanc_id,) = [item["ID"] for item in orthanc.rest("/tools/lookup", uid)]
        back = pydicom.dcmread(io.BytesIO(orthanc.rest(f"/instances/{orthanc_id}/file")))
        mine = pydicom.dcmread(path)
        assert back == mine  # every element, pixel data included
    seg = pydicom.dcmread(sent[next(u for u, p in sent.items() if p.name == "seg_anterior.dcm")])
    ref = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID  # the stored scan itself
    study = orthanc.rest("/studies")
    assert len(study) == 1  # the objects filed into the scan's study


def test_a_wrong_called_ae_title_is_refused_with_the_reason(orthanc):
    with pytest.raises(PeerError, match="(?i)called AE title not recognised"):
        echo(orthanc.host, orthanc.dicom_port, "NOT_ORTHANC")


def test_a_closed_port_says_the_connection_was_refused():
    from helpers.orthanc import free_port

    with pytest.raises(PeerError, match="connection refused"):
        store_files([], "127.0.0.1", free_port(), "ORTHANC", timeout=3)


def test_the_command_exits_2_with_no_files(tmp_path, orthanc):
    assert cli(["store", str(tmp_path), "--host", orthanc.host, "--port",
                str(orthanc.dicom_port), "--aet", orthanc.aet]) == 2  # fmt: skip


def test_stow_rs_stores_into_orthancs_dicomweb(orthanc, results_dir, monkeypatch):
    if orthanc.dicomweb is None:
        pytest.skip("Orthanc's DICOMweb plugin is not installed (Debian package orthanc-dicomweb)")
    sr = next(
        path for path, name in find_dicom_files([results_dir / "out"]) if name.endswith("sr.dcm")
    )
    monkeypatch.setenv("BSI_D2_TEST_PASSWORD", orthanc.password)
    argv = ["store", str(sr), "--stow", orthanc.dicomweb, "--user", orthanc.user,
            "--password-env", "BSI_D2_TEST_PASSWORD"]  # fmt: skip
    assert cli(argv) == 0
    uid = str(pydicom.dcmread(sr).SOPInstanceUID)
    assert orthanc.rest("/tools/lookup", uid)
    with pytest.raises(PeerError, match="HTTP 401"):
        from bsi_d2.pacs.store import stow_rs

        stow_rs([(sr, "sr.dcm")], orthanc.dicomweb, orthanc.user, "wrong password")
