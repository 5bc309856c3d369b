import pytest
from helpers.orthanc import ORTHANC, start_orthanc


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    if not ORTHANC.exists():
        pytest.skip(
            "Orthanc is not installed (Debian package orthanc; .ci/run installs it as root)"
        )
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()
