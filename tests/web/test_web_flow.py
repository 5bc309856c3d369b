"""``bsi-d2 serve`` end to end with the ASGI test client: upload, preview, run, result and
downloads, on a phantom DICOM and the replay predictor; the other upload kinds; identity; the
queue; the accounts file and the command line."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import threading
import time
import zipfile

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web stack is optional: pip install bsi_d2[web]")
pytest.importorskip("argon2", reason="the web stack is optional: pip install bsi_d2[web]")

from web_helpers import job_id_of, login, upload, wait_done  # noqa: E402

from bsi_d2 import cli  # noqa: E402
from bsi_d2.inference.batch import BatchOptions, run_batch  # noqa: E402
from bsi_d2.inference.replay import ReplayPredictor  # noqa: E402
from bsi_d2.io.readers import read_scan_file  # noqa: E402
from bsi_d2.preprocess.pipeline import preprocess_scan  # noqa: E402
from bsi_d2.report.html import AID_LINE  # noqa: E402
from bsi_d2.structures.instances import Instances  # noqa: E402
from bsi_d2.taxonomy import load_taxonomy  # noqa: E402
from bsi_d2.web.adjust import Adjustments, adjust_views  # noqa: E402
from bsi_d2.web.jobs import HAS_DICOM_OUT  # noqa: E402
from bsi_d2.web.users import UserStore, add_user, read_users  # noqa: E402


def _png(response) -> np.ndarray:
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)


def _preview(client, job, **options) -> np.ndarray:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return _png(client.get(f"/jobs/{job}/preview.png?{query}"))


def test_upload_preview_run_result_and_downloads(alice, phantom, tmp_path):
    client, csrf = alice
    job = job_id_of(upload(client, csrf, ("whole body.dcm", phantom["dicom"].read_bytes())))
    page = client.get(f"/jobs/{job}").text
    assert 'id="adjust"' in page and "anterior, posterior" in page

    display = preprocess_scan(read_scan_file(phantom["dicom"])[0]).display
    plain = _preview(client, job)
    assert plain.shape == (950, 512) and np.array_equal(plain, display)  # the model's image
    assert _preview(client, job, window=64).mean() > 3 * plain.mean()
    swapped = _preview(client, job, swap_views=1)
    assert not np.array_equal(swapped, plain)
    mirrored = _preview(client, job, mirror_anterior=1)
    assert np.array_equal(mirrored[:, 256:], plain[:, 256:])
    assert not np.array_equal(mirrored[:, :256], plain[:, :256])
    assert not _preview(client, job, cut_below_knee=1)[640:].any()

    response = client.post(f"/jobs/{job}/run", data={"csrf_token": csrf, "window": "96"})
    assert response.status_code == 303
    status = wait_done(client, job)
    assert status["status"] == "done" and status["result_status"] == "ok"
    assert status["upload_to_result_seconds"] > 0

    # the same scan through run_batch directly (what bsi-d2 predict runs) gives the same record
    taxonomy = load_taxonomy()
    replay = ReplayPredictor.from_file(phantom["recording"], taxonomy)
    options = BatchOptions(
        progress=False, model={"config": None, "weights": None, "engine": "replay"}
    )
    run_batch([phantom["dicom"]], tmp_path / "direct", replay, taxonomy, options)
    (direct,) = [json.loads(p.read_text()) for p in (tmp_path / "direct").glob("scans/*/bsi.json")]
    record = client.get(f"/jobs/{job}/files/bsi.json").json()
    assert record["bsi"] == direct["bsi"] and record["regions"] == direct["regions"]
    assert record["source"] == direct["source"]  # content digests, no file name

    page = client.get(f"/jobs/{job}").text
    assert f"{record['bsi']:.2f} % of skeletal mass" in page
    assert AID_LINE in page and "Quality control" in page and "passed" in page
    assert "spine" in page and "Total (BSI)" in page and "whole body" not in page
    view = _png(client.get(f"/jobs/{job}/view.png?window=96"))
    bare = _png(client.get(f"/jobs/{job}/view.png?regions=0&lesions=0&window=96"))
    assert view.shape == (950, 512, 3) and not np.array_equal(view, bare)
    assert client.get(f"/jobs/{job}/files/report.html").headers["content-security-policy"]
    assert client.get(f"/jobs/{job}/files/predictions.json").json()["instances"]
    archive = zipfile.ZipFile(io.BytesIO(client.get(f"/jobs/{job}/labelme.zip").content))
    key = record["key"]
    assert sorted(archive.namelist()) == sorted([f"{key}.json", f"{key}.png", f"{key}.meta.json"])
    assert json.loads(archive.read(f"{key}.json"))["imagePath"] == f"{key}.png"


def test_swap_and_mirror_reach_the_model_as_previewed(make_client, phantom):
    seen = []

    def model(images):
        seen.extend(images)
        return [Instances.empty(*image.shape) for image in images]

    client = make_client(predictor=model)
    csrf = login(client, "alice")
    job = job_id_of(upload(client, csrf, ("scan.dcm", phantom["dicom"].read_bytes())))
    choice = {"swap_views": "1", "mirror_posterior": "1"}
    preview = _preview(client, job, **choice)
    client.post(f"/jobs/{job}/run", data={"csrf_token": csrf, **choice})
    assert wait_done(client, job)["status"] == "done"
    assert len(seen) == 1 and np.array_equal(seen[0], preview)


def test_other_upload_kinds(alice, phantom):
    client, csrf = alice
    merged = job_id_of(
        upload(
            client,
            csrf,
            ("x.png", phantom["png"].read_bytes()),
            ("x.counts.png", phantom["counts"].read_bytes()),
        )
    )
    scan = client.get(f"/api/jobs/{merged}").json()
    assert scan["status"] == "uploaded"
    assert client.app.state.web.work.load(merged).scan["counts_source"] == "counts"
    labelme = job_id_of(
        upload(
            client,
            csrf,
            ("a.json", phantom["labelme"].read_bytes()),
            ("a.png", phantom["png"].read_bytes()),
        )
    )
    assert _preview(client, labelme).shape == (950, 512)
    alone = upload(client, csrf, ("a.json", phantom["labelme"].read_bytes()))
    assert alone.status_code == 422  # its image was not uploaded with it
    two = upload(
        client,
        csrf,
        ("a.dcm", phantom["dicom"].read_bytes()),
        ("b.png", phantom["png"].read_bytes()),
    )
    assert two.status_code == 422 and "2 scans" in two.text
    assert upload(client, csrf, ("notes.txt", b"hello")).status_code == 415
    many = [(f"{i}.dcm", phantom["dicom"].read_bytes()) for i in range(3)]
    assert upload(client, csrf, *many).status_code == 400


@pytest.mark.parametrize("keep", [False, True])
def test_identity_is_shown_only_with_keep_identity(make_client, phantom, keep):
    client = make_client(keep_identity=keep)
    csrf = login(client, "alice")
    job = job_id_of(upload(client, csrf, ("Haddad^Greta 2024.dcm", phantom["dicom"].read_bytes())))
    pages = client.get(f"/jobs/{job}").text + client.get("/history").text
    stored = (
        client.app.state.web.work.job_dir(client.app.state.web.work.load(job)) / "job.json"
    ).read_text()
    for text in (pages, stored):
        assert ("Haddad" in text) is keep
        assert ("PH64241779" in text) is keep  # the DICOM's PatientID


def test_names_shown_with_keep_identity_are_escaped(make_client, phantom):
    client = make_client(keep_identity=True)
    csrf = login(client, "alice")
    name = '<img src=x onerror="alert(1)">.dcm'
    job = job_id_of(upload(client, csrf, (name, phantom["dicom"].read_bytes())))
    for page in (client.get(f"/jobs/{job}").text, client.get("/history").text):
        assert "<img src=x" not in page and "&lt;img src=x" in page


def test_delete_removes_the_files(alice, phantom):
    client, csrf = alice
    job = job_id_of(upload(client, csrf, ("scan.dcm", phantom["dicom"].read_bytes())))
    client.post(f"/jobs/{job}/run", data={"csrf_token": csrf})
    wait_done(client, job)
    work = client.app.state.web.work
    folder = work.job_dir(work.load(job))
    assert (folder / "out").is_dir() and job in client.get("/history").text
    assert client.post(f"/jobs/{job}/delete", data={"csrf_token": csrf}).status_code == 303
    assert not folder.exists() and job not in client.get("/history").text
    assert client.get(f"/jobs/{job}").status_code == 404


def test_two_jobs_never_run_the_model_at_once(make_client, phantom):
    replay = ReplayPredictor.from_file(phantom["recording"], load_taxonomy())
    running, most = [0], [0]
    lock = threading.Lock()

    def slow(images):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return replay(images)

    client = make_client(predictor=slow, workers=2)
    csrf = login(client, "alice")
    jobs = [
        job_id_of(upload(client, csrf, ("s.dcm", phantom["dicom"].read_bytes()))) for _ in range(2)
    ]
    for job in jobs:
        client.post(f"/jobs/{job}/run", data={"csrf_token": csrf})
    assert [wait_done(client, job)["result_status"] for job in jobs] == ["ok", "ok"]
    assert most[0] == 1


def test_jobs_a_stopped_server_left_are_marked_interrupted(make_settings):
    from fastapi.testclient import TestClient

    from bsi_d2.web.app import create_app
    from bsi_d2.web.workarea import WorkArea

    settings = make_settings()
    work = WorkArea(settings.work_dir)
    job = work.update(work.new_job("alice"), status="running")
    with TestClient(create_app(settings), follow_redirects=False):
        assert work.load(job.id).status == "interrupted"


@pytest.mark.skipif(not HAS_DICOM_OUT, reason="this version writes no DICOM SR/SEG")
def test_dicom_out_offers_the_sr_and_seg_files(alice, phantom):
    pytest.importorskip("highdicom", reason="DICOM out needs bsi_d2[dicom]")
    client, csrf = alice
    job = job_id_of(upload(client, csrf, ("scan.dcm", phantom["dicom"].read_bytes())))
    assert 'name="dicom_out"' in client.get(f"/jobs/{job}").text
    client.post(f"/jobs/{job}/run", data={"csrf_token": csrf, "dicom_out": "1"})
    assert wait_done(client, job)["status"] == "done"
    page = client.get(f"/jobs/{job}").text
    names = re.findall(r'/files/(dicom/[^"]+)"', page)
    assert {"dicom/sr.dcm", "dicom/seg_anterior.dcm", "dicom/seg_posterior.dcm"} <= set(names)
    for name in names:
        assert client.get(f"/jobs/{job}/files/{name}").content[128:132] == b"DICM"


# -- adjustments, accounts and the command line ------------------------------------------------


def test_adjust_views_swaps_and_mirrors(phantom):
    scan = read_scan_file(phantom["dicom"])[0]
    swapped = adjust_views(scan, Adjustments(swap_views=True, mirror_anterior=True))
    assert np.array_equal(swapped.views["anterior"], scan.views["posterior"][:, ::-1])
    assert np.array_equal(swapped.views["posterior"], scan.views["anterior"])
    original = read_scan_file(phantom["dicom"])[0]
    assert np.array_equal(scan.views["anterior"], original.views["anterior"])  # untouched
    merged = read_scan_file(phantom["png"])[0]
    both = adjust_views(merged, Adjustments(swap_views=True, mirror_posterior=True))
    assert np.array_equal(both.merged[:, :256], merged.merged[:, 256:])
    assert np.array_equal(both.merged[:, 256:], merged.merged[:, :256][:, ::-1])
    assert Adjustments.from_values({"window": "999", "swap_views": "on"}) == Adjustments(
        swap_views=True, window=255
    )


def test_accounts_file_holds_hashes_only(tmp_path):
    path = tmp_path / "users.toml"
    assert add_user(path, "carol", "carol-password", admin=True) is True
    assert add_user(path, "carol", "carol-password-2") is False  # updated
    text = path.read_text()
    assert "carol-password" not in text and "$argon2id$" in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert read_users(path)["carol"]["admin"] is False
    store = UserStore(path)
    assert store.authenticate("carol", "carol-password-2").name == "carol"
    assert store.authenticate("carol", "carol-password") is None
    for name, password in (("../x", "long-enough-pw"), ("ok", "short")):
        with pytest.raises(ValueError):
            add_user(path, name, password)


def test_serve_add_user_and_refusal_without_accounts(tmp_path, monkeypatch, phantom):
    import getpass

    answers = iter(["dana-password", "dana-password", "one-password", "another-one"])
    monkeypatch.setattr(getpass, "getpass", lambda prompt="": next(answers))
    users = tmp_path / "users.toml"
    assert cli.main(["serve", "--add-user", "dana", "--users", str(users)]) == 0
    assert read_users(users)["dana"]["admin"] is False
    assert cli.main(["serve", "--add-user", "erin", "--users", str(users)]) == 2  # differ
    assert "erin" not in read_users(users)
    empty = tmp_path / "none.toml"
    argv = ["serve", "--replay", str(phantom["recording"]), "--users", str(empty)]
    assert cli.main(argv) == 2  # no account: nothing is served


def test_a_missing_web_stack_gives_one_clear_message(tmp_path, monkeypatch, caplog, users_file):
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    assert cli.main(["serve", "--users", str(users_file), "--work", str(tmp_path)]) == 2
    assert "pip install bsi_d2[web]" in caplog.text


def test_serve_builds_its_settings_like_predict(tmp_path, phantom):
    from bsi_d2.commands import serve

    _, parser = cli.command_parser("serve")
    args = parser.parse_args(
        [
            "--replay",
            str(phantom["recording"]),
            "--work",
            str(tmp_path),
            "--max-file-mb",
            "8",
            "--keep-identity",
        ]
    )
    settings = serve.build_settings(args)
    assert isinstance(settings.run.predictor, ReplayPredictor)
    assert settings.limits.max_file_bytes == 8 << 20 and settings.run.options.keep_identity
    assert settings.run.options.model["engine"] == "replay"
    assert settings.users_file == tmp_path / "users.toml"
