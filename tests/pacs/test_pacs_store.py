"""``bsi-d2 store`` against a real Orthanc: phantom scans, the real JPEG 2000 NEMA file and the
--dicom-out objects stored, found again by C-FIND, retrieved through the REST API and compared
element by element; refusals explained; STOW-RS through Orthanc's DICOMweb plugin. A pynetdicom
storage SCP in the test plays a peer that warns, refuses and drops the association."""

from __future__ import annotations

import io
import shutil
import threading

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, generate_uid

from bsi_d2.cli import main as cli
from bsi_d2.inference.replay import phantom_recording, save_recording
from bsi_d2.pacs.store import (
    PeerError,
    StoreResult,
    echo,
    find_dicom_files,
    relative_name,
    store_files,
    stow_rs,
)
from bsi_d2.phantom import write_phantoms
from bsi_d2.taxonomy import load_taxonomy

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")
orthanc_mark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """A phantom scan (seed 0) and predict's --dicom-out objects for it, plus a junk file."""
    root = tmp_path_factory.mktemp("store")
    assert cli(["phantom", "--scans", "1", "--out", str(root / "ph"), "--workers", "1"]) == 0
    save_recording(root / "rec.jsonl", phantom_recording(root / "ph", load_taxonomy()))
    out = root / "out"
    argv = ["predict", str(root / "ph" / "dicom"), "--replay", str(root / "rec.jsonl")]
    assert cli([*argv, "--out", str(out), "--dicom-out", "--keep-identity", "--no-progress"]) == 0
    (out / "scans" / "not_dicom.dcm").write_bytes(b"not a DICOM file")
    return root


@pytest.fixture(scope="module")
def scans_dir(tmp_path_factory, nema_path):
    """Two phantom scans (seed 7: studies of their own) and the NEMA JPEG 2000 file."""
    root = tmp_path_factory.mktemp("scans")
    write_phantoms(root, 2, seed=7, workers=1)
    (root / "nema").mkdir()
    shutil.copy(nema_path, root / "nema" / "nema.dcm")
    (root / "nema" / "README.txt").write_text("not DICOM\n")
    return root


def c_find(orthanc, level: str, **keys: str) -> list[pydicom.Dataset]:
    """The identifiers Orthanc answers to a Study Root C-FIND at ``level``."""
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as model

    ae = AE(ae_title="BSI_D2")
    ae.add_requested_context(model)
    assoc = ae.associate(orthanc.host, orthanc.dicom_port, ae_title=orthanc.aet)
    assert assoc.is_established
    query = pydicom.Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    try:
        return [identifier for status, identifier in assoc.send_c_find(query, model)
                if status and status.Status in (0xFF00, 0xFF01)]  # fmt: skip
    finally:
        assoc.release()


def retrieve(orthanc, sop_instance_uid: str) -> pydicom.Dataset:
    """The instance as Orthanc stored it, through its REST API."""
    (orthanc_id,) = [item["ID"] for item in orthanc.rest("/tools/lookup", sop_instance_uid)]
    return pydicom.dcmread(io.BytesIO(orthanc.rest(f"/instances/{orthanc_id}/file")))


def cut_short(source, target):
    """A copy of ``source`` that ends after its file meta header, as an interrupted copy would."""
    target.write_bytes(source.read_bytes()[:200])


def test_finding_files_keeps_part10_only(scans_dir):
    files = find_dicom_files([scans_dir])
    names = [relative_name(path, [scans_dir]) for path in files]
    assert names == ["dicom/phantom_0000.dcm", "dicom/phantom_0001.dcm", "nema/nema.dcm"]
    single = scans_dir / "nema" / "nema.dcm"
    assert find_dicom_files([single, scans_dir / "nema"]) == [single]  # once, though given twice
    assert relative_name(single, [single]) == "nema.dcm"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_dicom_files([scans_dir / "missing"])


@orthanc_mark
def test_phantoms_and_the_jpeg2000_file_round_trip(orthanc, scans_dir):
    files = find_dicom_files([scans_dir])
    results = store_files(files, orthanc.host, orthanc.dicom_port, orthanc.aet)
    assert [r.path for r in results] == files
    assert all(r.ok and r.status == 0 and r.message == "" for r in results), results
    for path, result in zip(files, results, strict=True):
        sent = pydicom.dcmread(path)
        assert result.sop_instance_uid == sent.SOPInstanceUID
        (study,) = c_find(orthanc, "STUDY", StudyInstanceUID=sent.StudyInstanceUID,
                          NumberOfStudyRelatedInstances="")  # fmt: skip
        assert int(study.NumberOfStudyRelatedInstances) == 1
        (image,) = c_find(orthanc, "IMAGE", StudyInstanceUID=sent.StudyInstanceUID,
                          SeriesInstanceUID=sent.SeriesInstanceUID, SOPInstanceUID="",
                          SOPClassUID="")  # fmt: skip
        assert (image.SOPInstanceUID, image.SOPClassUID) == (sent.SOPInstanceUID, sent.SOPClassUID)
        back = retrieve(orthanc, sent.SOPInstanceUID)
        assert back.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert back == sent  # every element
        assert back.PixelData == sent.PixelData
    nema = pydicom.dcmread(files[-1], stop_before_pixels=True)
    assert nema.file_meta.TransferSyntaxUID == JPEG2000Lossless  # sent as it was, not decoded


@orthanc_mark
def test_the_command_stores_the_results_and_they_file_into_the_scans_study(orthanc, results_dir):
    out = results_dir / "out"
    files = find_dicom_files([out])
    names = sorted(path.name for path in files)
    assert names == ["sc.dcm", "seg_anterior.dcm", "seg_posterior.dcm", "sr.dcm"]  # no junk
    scans = results_dir / "ph" / "dicom"
    peer = ["--host", orthanc.host, "--port", str(orthanc.dicom_port), "--aet", orthanc.aet]
    assert cli(["store", str(out), *peer]) == 0
    assert cli(["store", str(scans), *peer]) == 0
    source = pydicom.dcmread(next(scans.glob("*.dcm")))

    found = c_find(orthanc, "IMAGE", StudyInstanceUID=source.StudyInstanceUID,
                   SeriesInstanceUID="", SOPInstanceUID="", SOPClassUID="")  # fmt: skip
    sent = {str(pydicom.dcmread(path).SOPInstanceUID): path for path in files}
    assert set(sent) | {source.SOPInstanceUID} == {str(ds.SOPInstanceUID) for ds in found}
    (study,) = c_find(orthanc, "STUDY", StudyInstanceUID=source.StudyInstanceUID,
                      NumberOfStudyRelatedInstances="")  # fmt: skip
    assert int(study.NumberOfStudyRelatedInstances) == len(sent) + 1  # one study, not five

    for uid, path in sent.items():
        assert retrieve(orthanc, uid) == pydicom.dcmread(path)  # every element, pixels included
    seg = pydicom.dcmread(sent[next(u for u, p in sent.items() if p.name == "seg_anterior.dcm")])
    ref = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID  # the stored scan itself


@orthanc_mark
def test_a_sop_class_orthanc_does_not_store_is_recorded_and_the_rest_go_on(
    orthanc, scans_dir, tmp_path
):
    odd = pydicom.dcmread(scans_dir / "dicom" / "phantom_0000.dcm")
    odd.SOPClassUID = odd.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.10.511.9.1"
    odd.SOPInstanceUID = odd.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    odd.save_as(tmp_path / "odd.dcm", enforce_file_format=True)
    shutil.copy(scans_dir / "nema" / "nema.dcm", tmp_path / "nema.dcm")
    cut_short(scans_dir / "dicom" / "phantom_0001.dcm", tmp_path / "broken.dcm")
    files = find_dicom_files([tmp_path])
    broken, nema, unknown = store_files(files, orthanc.host, orthanc.dicom_port, orthanc.aet)
    assert not broken.ok and broken.message.startswith("cannot be read as DICOM")
    assert str(tmp_path) not in broken.message
    assert nema.ok
    assert not unknown.ok and "accepted no presentation context" in unknown.message
    assert not orthanc.rest("/tools/lookup", str(odd.SOPInstanceUID))
    peer = ["--host", orthanc.host, "--port", str(orthanc.dicom_port), "--aet", orthanc.aet]
    assert cli(["store", str(tmp_path), *peer]) == 1  # some not stored
    assert cli(["store", str(tmp_path / "broken.dcm"), *peer]) == 2  # none stored


@orthanc_mark
def test_a_wrong_called_ae_title_is_refused_with_the_reason(orthanc):
    with pytest.raises(PeerError, match="Called AE title not recognised") as caught:
        echo(orthanc.host, orthanc.dicom_port, "NOT_ORTHANC")
    assert "rejected the association" in str(caught.value)
    assert "'NOT_ORTHANC'" in str(caught.value)


@orthanc_mark
def test_the_command_exits_2_naming_the_peer_that_refused(orthanc, scans_dir, caplog):
    argv = ["store", str(scans_dir / "nema"), "--host", orthanc.host, "--port",
            str(orthanc.dicom_port), "--aet", "NOT_ORTHANC"]  # fmt: skip
    assert cli(argv) == 2
    assert f"NOT_ORTHANC@{orthanc.host}:{orthanc.dicom_port}" in caplog.text
    assert "Called AE title not recognised" in caplog.text


def test_a_closed_port_says_the_connection_was_refused(scans_dir):
    from helpers.orthanc import free_port

    port = free_port()
    with pytest.raises(PeerError, match="the connection was refused"):
        echo("127.0.0.1", port, "ORTHANC", timeout=3)
    with pytest.raises(PeerError, match=f"cannot reach ORTHANC@127.0.0.1:{port}"):
        store_files(find_dicom_files([scans_dir]), "127.0.0.1", port, "ORTHANC", timeout=3)


def test_a_peer_that_never_answers_is_named_with_the_timeout():
    import socket

    with socket.socket() as silent:  # accepts the connection, never reads the request
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        with pytest.raises(PeerError, match="did not answer the association request within 1 s"):
            echo("127.0.0.1", port, "ORTHANC", timeout=1)


def test_the_command_exits_2_without_dicom_files(tmp_path):
    (tmp_path / "notes.dcm").write_text("not DICOM")
    peer = ["--host", "127.0.0.1", "--port", "1", "--aet", "ORTHANC"]
    assert cli(["store", str(tmp_path), *peer]) == 2
    assert cli(["store", str(tmp_path / "missing"), *peer]) == 2
    assert cli(["store", str(tmp_path), "--host", "127.0.0.1", "--aet", "ORTHANC"]) == 2  # no port
    assert cli(["store", str(tmp_path), "--stow", "http://127.0.0.1:1", "--user", "me"]) == 2


@orthanc_mark
def test_stow_rs_round_trip_through_orthancs_dicomweb(orthanc, results_dir, scans_dir, tmp_path,
                                                      monkeypatch):  # fmt: skip
    if orthanc.dicomweb is None:
        pytest.skip("Orthanc's DICOMweb plugin is not installed (Debian package orthanc-dicomweb)")
    sr = next(path for path in find_dicom_files([results_dir / "out"]) if path.name == "sr.dcm")
    monkeypatch.setenv("BSI_D2_TEST_PASSWORD", orthanc.password)
    argv = ["store", str(sr), "--stow", orthanc.dicomweb, "--user", orthanc.user,
            "--password-env", "BSI_D2_TEST_PASSWORD"]  # fmt: skip
    assert cli(argv) == 0
    assert retrieve(orthanc, str(pydicom.dcmread(sr).SOPInstanceUID)) == pydicom.dcmread(sr)

    j2k = tmp_path / "nema.dcm"
    nema = pydicom.dcmread(scans_dir / "nema" / "nema.dcm")
    nema.SOPInstanceUID = nema.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    nema.save_as(j2k, enforce_file_format=True)
    cut_short(scans_dir / "dicom" / "phantom_0001.dcm", tmp_path / "broken.dcm")
    files = find_dicom_files([tmp_path])
    broken, stored = stow_rs(files, orthanc.dicomweb, orthanc.user, orthanc.password)
    assert not broken.ok and broken.message.startswith("cannot be read as DICOM")
    assert stored.ok and stored.sop_instance_uid == nema.SOPInstanceUID, stored
    back = retrieve(orthanc, str(nema.SOPInstanceUID))
    assert back == nema and back.file_meta.TransferSyntaxUID == JPEG2000Lossless

    with pytest.raises(PeerError, match="HTTP 401.*authentication failed"):
        stow_rs([j2k], orthanc.dicomweb, orthanc.user, "wrong password")
    with pytest.raises(PeerError, match="HTTP 404"):
        stow_rs([j2k], orthanc.dicomweb + "/nowhere", orthanc.user, orthanc.password)


def test_stow_rs_to_a_closed_port_says_it_cannot_reach_it(scans_dir):
    from helpers.orthanc import free_port

    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(PeerError, match="cannot reach .*refused"):
        stow_rs(find_dicom_files([scans_dir / "nema"]), url, timeout=3)


# --- a pynetdicom storage SCP as a peer that warns, refuses and drops the association --------


@pytest.fixture
def storage_scp():
    """A storage SCP on a free loopback port: ``plan`` maps a SOP instance UID to the status
    its first C-STORE gets, or to "abort" (the association dropped instead of an answer)."""
    from helpers.orthanc import free_port
    from pynetdicom import AE, AllStoragePresentationContexts, evt
    from pynetdicom.sop_class import Verification

    plan: dict[str, int | str] = {}
    received: list[str] = []
    associations: list[int] = []
    lock = threading.Lock()

    def on_store(event):
        uid = str(event.request.AffectedSOPInstanceUID)
        with lock:
            action = plan.pop(uid, 0x0000)
        if action == "abort":
            event.assoc.abort()
            return 0xC000
        received.append(uid)
        return action

    ae = AE(ae_title="STORESCP")
    ae.supported_contexts = AllStoragePresentationContexts
    ae.add_supported_context(Verification)
    port = free_port()
    handlers = [(evt.EVT_C_STORE, on_store),
                (evt.EVT_ESTABLISHED, lambda event: associations.append(1))]  # fmt: skip
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    yield type("SCP", (), {"port": port, "plan": plan, "received": received,
                           "associations": associations})  # fmt: skip
    server.shutdown()


def test_warnings_count_as_stored_and_a_refused_file_does_not_stop_the_rest(
    storage_scp, scans_dir, tmp_path
):
    files = find_dicom_files([scans_dir])  # phantom 0, phantom 1, NEMA
    uids = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files]
    storage_scp.plan.update({uids[0]: 0xB000, uids[1]: 0xA700})
    results = store_files(files, "127.0.0.1", storage_scp.port, "STORESCP", timeout=5)
    assert [(r.status, r.ok) for r in results] == [(0xB000, True), (0xA700, False), (None, False)]
    assert results[0].message.startswith("warning: status 0xB000")
    assert "Out of Resources" in results[1].message
    assert results[2].message == (  # this SCP takes uncompressed transfer syntaxes only
        f"STORESCP@127.0.0.1:{storage_scp.port} accepted no presentation context for Secondary "
        "Capture Image Storage in JPEG 2000 Image Compression (Lossless Only)"
    )
    assert isinstance(results[2], StoreResult) and results[2].sop_instance_uid == uids[2]
    assert storage_scp.received == uids[:2]  # both answered, one of them refused
    assert len(storage_scp.associations) == 1  # the C-ECHO and every file: one association


def test_a_dropped_association_is_made_again_and_the_file_sent_once_more(storage_scp, scans_dir):
    files = find_dicom_files([scans_dir])
    uids = [str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files]
    storage_scp.plan[uids[1]] = "abort"
    results = store_files(files[:2], "127.0.0.1", storage_scp.port, "STORESCP", timeout=5)
    assert all(r.ok and r.status == 0 for r in results), results
    assert storage_scp.received == uids[:2]
    assert len(storage_scp.associations) == 2
