"""A corpus of bad inputs, generated in code, and the file inspection that judges each outcome.

Each :class:`Case` writes one bad input (or one good scan at an odd path) into an input folder
that already holds two good phantom inputs. The judging reads only what the commands write
(``errors.jsonl``, ``scans/*/bsi.json``, ``preprocess_report.json``, ``conversion_report.json``)
and what they print or log, so ``benchmarks/bad_input_corpus.py`` can run the same corpus
against an older checkout. Only NumPy, Pillow, pydicom and ``bsi_d2.phantom`` are imported.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

MiB = 1 << 20
MEMORY_BOUND_BYTES = 300 * MiB
GOOD_STEMS = ("phantom_0000", "phantom_0001")
SPARE_STEM = "phantom_0002"  # the payload of the odd-path cases: a good scan in an odd place

# expected handling: "error" a clear record naming the file; "done" read as a scan of its own;
# "either" one of the two; "quiet" nothing at all is also fine (nothing there to read)
OUTCOMES = ("clear", "traceback", "silent", "aborted", "memory")


@dataclass(frozen=True)
class Sources:
    """Phantom files the cases copy: ``dicom``/``labelme`` folders of ``write_phantoms``."""

    root: Path
    identities: tuple[str, ...]  # PatientName, PatientID, BirthDate of every phantom

    def dicom(self, stem: str) -> Path:
        return self.root / "dicom" / f"{stem}.dcm"

    def labelme(self, stem: str, suffix: str = ".json") -> Path:
        return self.root / "labelme" / f"{stem}{suffix}"

    def labelme_dict(self, stem: str = GOOD_STEMS[0]) -> dict:
        return json.loads(self.labelme(stem).read_text())


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # labelme | image | dicom | path
    build: Callable[[Path, Sources], str]  # writes the input, returns its path relative to folder
    expect: str = "error"
    identities: tuple[str, ...] = ()  # identity strings the case adds (patient-like folders)
    qc_only: bool = (
        False  # a readable image only quality control can reject: preprocess may keep it
    )

    @property
    def commands(self) -> tuple[str, ...]:
        return ("convert",) if self.kind == "labelme" else ("preprocess", "predict")


def make_sources(root: Path) -> Sources:
    """Three phantoms (two good inputs and a spare) and the identity strings in their DICOM."""
    import pydicom

    from bsi_d2.phantom import write_phantoms

    write_phantoms(root, 3, seed=0, workers=1)
    identities: list[str] = []
    for stem in (*GOOD_STEMS, SPARE_STEM):
        ds = pydicom.dcmread(root / "dicom" / f"{stem}.dcm", stop_before_pixels=True)
        name = str(ds.PatientName)
        identities += [name, name.replace("^", " "), str(ds.PatientID), str(ds.PatientBirthDate)]
    return Sources(root, tuple(identities))


def input_folder(case: Case, sources: Sources, folder: Path) -> str:
    """Fill ``folder`` with the two good inputs of the case's kind and the case; returns the
    case's relative path."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem in GOOD_STEMS:
        if case.kind == "labelme":
            for suffix in (".json", ".png", ".counts.png"):
                shutil.copy(sources.labelme(stem, suffix), folder / f"{stem}{suffix}")
        else:
            shutil.copy(sources.dicom(stem), folder / f"{stem}.dcm")
    return case.build(folder, sources)


# -- Labelme ---------------------------------------------------------------------------------------
def _labelme(text: str | bytes | Callable[[dict], object], with_image: bool = True):
    """A builder writing ``bad.json`` (text, bytes, or an edit of a good phantom file's dict)."""

    def build(folder: Path, sources: Sources) -> str:
        path = folder / "bad.json"
        if callable(text):
            data = sources.labelme_dict()
            data["imagePath"] = "bad.png"
            data = text(data) or data
            path.write_text(json.dumps(data, allow_nan=True))
        elif isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        if with_image:
            shutil.copy(sources.labelme(SPARE_STEM, ".png"), folder / "bad.png")
        return path.name

    return build


def _shape(data: dict, **fields: object) -> None:
    data["shapes"] = [dict(data["shapes"][0], **fields)]


def _duplicate_shapes(folder: Path, sources: Sources) -> str:
    data = sources.labelme_dict()
    data["imagePath"] = "bad.png"
    text = json.dumps(data)
    first = json.dumps(data["shapes"][:1])
    text = text[:-1] + ', "shapes": ' + json.dumps([]) + "}"
    text = text.replace('"shapes": ', '"shapes": ' + first + ', "shapes": ', 0)
    (folder / "bad.json").write_text(text)
    shutil.copy(sources.labelme(SPARE_STEM, ".png"), folder / "bad.png")
    return "bad.json"


def _set(key: str, value: object) -> Callable[[dict], None]:
    return lambda data: data.__setitem__(key, value)


def _garbage_image_data(data: dict) -> None:
    data["imagePath"] = "nowhere.png"
    data["imageData"] = "!!!this is not base64 at all%%%"


def _text_image_data(data: dict) -> None:
    data["imagePath"] = "nowhere.png"
    data["imageData"] = base64.b64encode(b"hello, not an image").decode()


LABELME_CASES = [
    Case("labelme_invalid_json", "labelme", _labelme('{"shapes": [ {"label": ')),
    Case("labelme_empty_file", "labelme", _labelme("")),
    Case("labelme_null", "labelme", _labelme("null")),
    Case("labelme_top_level_list", "labelme", _labelme("[1, 2, 3]")),
    Case("labelme_binary_garbage", "labelme", _labelme(bytes(range(256)) * 8)),
    Case("labelme_deeply_nested", "labelme", _labelme("[" * 100_000 + "]" * 100_000)),
    Case("labelme_duplicate_shapes_key", "labelme", _duplicate_shapes),
    Case("labelme_missing_image", "labelme", _labelme(_set("imagePath", "gone.png"), False)),
    Case("labelme_wrong_image_height", "labelme", _labelme(_set("imageHeight", 900))),
    Case("labelme_image_width_string", "labelme", _labelme(_set("imageWidth", "512px"))),
    Case("labelme_unknown_label", "labelme", _labelme(lambda d: _shape(d, label="tumour_xyz"))),
    Case("labelme_label_null", "labelme", _labelme(lambda d: _shape(d, label=None))),
    Case(
        "labelme_degenerate_polygon",
        "labelme",
        _labelme(lambda d: _shape(d, points=[[10.0, 10.0], [10.0, 10.0], [10.0, 10.0]])),
    ),
    Case(
        "labelme_rectangle_3_points",
        "labelme",
        _labelme(lambda d: _shape(d, shape_type="rectangle", points=[[1, 1], [5, 5], [9, 1]])),
    ),
    Case(
        "labelme_circle_1_point",
        "labelme",
        _labelme(lambda d: _shape(d, shape_type="circle", points=[[100, 100]])),
    ),
    Case(
        "labelme_points_far_outside",
        "labelme",
        _labelme(lambda d: _shape(d, points=[[9000, 9000], [9100, 9000], [9100, 9100]])),
    ),
    Case(
        "labelme_huge_coordinates",
        "labelme",
        _labelme(lambda d: _shape(d, points=[[1e300, 1e300], [-1e300, 5], [5, -1e300]])),
    ),
    Case(
        "labelme_nan_coordinates",
        "labelme",
        _labelme(lambda d: _shape(d, points=[[float("nan"), 1], [5, float("inf")], [9, 9]])),
    ),
    Case("labelme_imagedata_garbage", "labelme", _labelme(_garbage_image_data, False)),
    Case("labelme_imagedata_not_image", "labelme", _labelme(_text_image_data, False)),
    Case("labelme_shapes_dict", "labelme", _labelme(_set("shapes", {"label": "spine"}))),
    Case(
        "labelme_points_string",
        "labelme",
        _labelme(lambda d: _shape(d, points="1,2 3,4 5,6")),
    ),
    Case("labelme_shape_is_number", "labelme", _labelme(_set("shapes", [5, None, "x"]))),
    Case(
        "labelme_nested_garbage_points", "labelme", _labelme(lambda d: _shape(d, points=[[[[]]]]))
    ),
]


# -- images ----------------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(rows: int, cols: int) -> bytes:
    """A PNG declaring rows x cols with a little pixel data: a bomb's header, a few bytes."""
    header = struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0)
    idat = zlib.compress(bytes((cols + 1) * 4))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)


def _tiff_header_only(rows: int, cols: int) -> bytes:
    tags = [(256, cols), (257, rows), (258, 16), (259, 1), (262, 1), (273, 8), (277, 1)]
    tags += [(278, rows), (279, rows * cols * 2)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", t, 4, 1, v) for t, v in tags)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


def _bytes_file(name: str, make: Callable[[Sources], bytes]):
    def build(folder: Path, sources: Sources) -> str:
        (folder / name).write_bytes(make(sources))
        return name

    return build


def _array_file(name: str, make: Callable[[], np.ndarray | list[Image.Image]]):
    def build(folder: Path, sources: Sources) -> str:
        made = make()
        if isinstance(made, list):
            made[0].save(folder / name, save_all=True, append_images=made[1:])
        else:
            Image.fromarray(made).save(folder / name)
        return name

    return build


def _spare_png(sources: Sources) -> bytes:
    return sources.labelme(SPARE_STEM, ".counts.png").read_bytes()


def _float_nan() -> np.ndarray:
    image = np.full((950, 512), 20.0, np.float32)
    image[100:200, 100:200] = np.nan
    return image


def _negative_int32() -> np.ndarray:
    image = np.full((950, 512), 40, np.int32)
    image[:, :256] = -5000
    return image


def _pages() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 200, (950, 512), dtype=np.uint16)) for _ in range(3)]


def _gif_frames() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (950, 512), dtype=np.uint8)) for _ in range(3)]


IMAGE_CASES = [
    Case("image_empty_png", "image", _bytes_file("empty.png", lambda s: b"")),
    Case("image_truncated_png", "image", _bytes_file("cut.png", lambda s: _spare_png(s)[:4000])),
    Case(
        "image_png_bomb_header",
        "image",
        _bytes_file("bomb.png", lambda s: _png_header_only(60000, 1400)),
    ),  # fmt: skip
    Case(
        "image_tiff_bomb_header",
        "image",
        _bytes_file("bomb.tif", lambda s: _tiff_header_only(40000, 40000)),
    ),  # fmt: skip
    Case("image_1x1", "image", _array_file("dot.png", lambda: np.full((1, 1), 7, np.uint16))),
    Case(
        "image_blank_950x512",
        "image",
        _array_file("blank.png", lambda: np.zeros((950, 512), np.uint8)),
        qc_only=True,
    ),  # fmt: skip
    Case(
        "image_saturated_16bit",
        "image",
        _array_file("sat.png", lambda: np.full((950, 512), 65535, np.uint16)),
        qc_only=True,
    ),  # fmt: skip
    Case("image_float_tiff_nan", "image", _array_file("nan.tif", _float_nan)),
    Case("image_negative_int32_tiff", "image", _array_file("neg.tif", _negative_int32)),
    Case(
        "image_rgb_colour",
        "image",
        _array_file(
            "colour.png",
            lambda: np.random.default_rng(2).integers(0, 255, (950, 512, 3), dtype=np.uint8),
        ),
    ),
    Case("image_multipage_tiff", "image", _array_file("pages.tif", _pages)),
    Case("image_animated_gif", "image", _array_file("anim.gif", _gif_frames)),
    Case("image_text_named_png", "image", _bytes_file("notes.png", lambda s: b"hello\n" * 100)),
    Case(
        "image_dicom_named_png",
        "image",
        _bytes_file("scan.png", lambda s: s.dicom(SPARE_STEM).read_bytes()),
        "either",
    ),  # fmt: skip
    Case("image_png_named_tif", "image", _bytes_file("scan.tif", _spare_png), "either"),
    Case(
        "image_truncated_tiff",
        "image",
        _bytes_file("cut.tif", lambda s: _tiff_header_only(950, 512) + bytes(1000)),
    ),  # fmt: skip
]


# -- DICOM -----------------------------------------------------------------------------------------
def _dicom(name: str, edit: Callable, expect: str = "error") -> Case:
    def build(folder: Path, sources: Sources) -> str:
        import pydicom

        ds = pydicom.dcmread(sources.dicom(SPARE_STEM))
        result = edit(ds, folder / name)
        if result is None:
            ds.save_as(folder / name)
        return name

    return Case(f"dicom_{name.removesuffix('.dcm')}", "dicom", build, expect)


def _set_attrs(**attrs: object) -> Callable:
    def edit(ds, path: Path) -> None:
        for key, value in attrs.items():
            setattr(ds, key, value)

    return edit


def _ct(ds, path: Path) -> None:
    ds.Modality = "CT"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"


def _spot(ds, path: Path) -> None:
    ds.Rows = ds.Columns = 256
    ds.PixelData = np.full((2, 256, 256), 30, np.uint16).tobytes()


def _no_pixels(ds, path: Path) -> None:
    del ds.PixelData


def _bits_stored(ds, path: Path) -> None:
    frames = ds.pixel_array.astype(np.uint16)
    frames[:, 500, 128] = 4000  # beyond 8 stored bits
    ds.PixelData = frames.tobytes()
    ds.BitsStored, ds.HighBit = 8, 7


def _signed_negative(ds, path: Path) -> None:
    frames = ds.pixel_array.astype(np.int16)
    frames[:, 10:20, 10:20] = -300
    ds.PixelData = frames.tobytes()
    ds.PixelRepresentation = 1


def _float_nan_pixels(ds, path: Path) -> None:
    frames = ds.pixel_array.astype(np.float32)
    frames[:, 400:420, 100:120] = np.nan
    del ds.PixelData
    ds.FloatPixelData = frames.tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    for keyword in ("PixelRepresentation",):
        if keyword in ds:
            delattr(ds, keyword)


def _truncated(ds, path: Path) -> bool:
    data = io.BytesIO()
    ds.save_as(data)
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    return True


def _no_preamble(ds, path: Path) -> bool:
    data = io.BytesIO()
    ds.save_as(data)
    path.write_bytes(data.getvalue()[132:])  # no preamble, no "DICM", meta group kept
    return True


def _deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush(zlib.Z_FULL_FLUSH)


def _deflated_bomb(ds, path: Path) -> bool:
    """Deflated Explicit VR LE declaring 32768 x 32768 and inflating to 2 GiB; ~2 MB on disk."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    pixel_bytes = 2 << 30
    del ds.PixelData
    ds.Rows = ds.Columns = 32768
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    meta = DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    element = struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", pixel_bytes)
    stream = _deflate(body.getvalue() + element)
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    block = packer.compress(bytes(16 * MiB)) + packer.flush(zlib.Z_FULL_FLUSH)
    stream += block * (pixel_bytes // (16 * MiB))
    stream += zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()
    path.write_bytes(bytes(128) + b"DICM" + meta.getvalue() + stream)
    return True


def _rle_huge(ds, path: Path) -> None:
    from pydicom.encaps import encapsulate

    rows, cols = 12288, 4096
    segment = b"\x81\x00" * (rows * cols // 128)
    frame = struct.pack("<16I", 2, 64, 64 + len(segment), *([0] * 13)) + segment * 2
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = encapsulate([frame] * 2)
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.5"


def _byte_copy_of_good(ds, path: Path) -> bool:
    shutil.copy(Path(ds.filename).with_name(f"{GOOD_STEMS[0]}.dcm"), path)
    return True


def _same_uids_other_pixels(ds, path: Path) -> None:
    import pydicom

    good = pydicom.dcmread(Path(ds.filename).with_name(f"{GOOD_STEMS[0]}.dcm"))
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        setattr(ds, keyword, getattr(good, keyword))
    ds.file_meta.MediaStorageSOPInstanceUID = good.SOPInstanceUID


def _frames_declared_more(ds, path: Path) -> None:
    ds.NumberOfFrames = 4


def _rgb(ds, path: Path) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = np.zeros((2, ds.Rows, ds.Columns, 3), np.uint8).tobytes()


def _one_frame(ds, path: Path) -> None:
    ds.PixelData = ds.pixel_array[:1].astype(np.uint16).tobytes()
    ds.NumberOfFrames = 1


def _dicom_raw(name: str, make: Callable[[Sources], bytes]) -> Case:
    return Case(f"dicom_{name.removesuffix('.dcm')}", "dicom", _bytes_file(name, make))


DICOM_CASES = [
    _dicom_raw("empty.dcm", lambda s: b""),
    _dicom_raw("garbage.dcm", lambda s: np.random.default_rng(3).bytes(5000)),
    _dicom_raw("text.dcm", lambda s: b"this is a text file, not DICOM\n" * 20),
    _dicom_raw("dicm_then_garbage.dcm", lambda s: bytes(128) + b"DICM" + b"\x02\x00junk" * 50),
    _dicom("truncated.dcm", _truncated),
    _dicom("no_preamble.dcm", _no_preamble, "either"),
    _dicom("ct_modality.dcm", _ct),
    _dicom("mr_modality.dcm", _set_attrs(Modality="MR")),
    _dicom("spot_view_256.dcm", _spot),
    _dicom("no_pixel_data.dcm", _no_pixels),
    _dicom("bits_stored_8_values_4000.dcm", _bits_stored),
    _dicom("negative_rescale_slope.dcm", _set_attrs(RescaleSlope=-1.0, RescaleIntercept=0.0)),
    _dicom("signed_negative_counts.dcm", _signed_negative),
    _dicom("float_pixels_nan.dcm", _float_nan_pixels),
    _dicom("deflated_bomb.dcm", _deflated_bomb),
    _dicom("rle_huge_frames.dcm", _rle_huge),
    _dicom("rows_zero.dcm", _set_attrs(Rows=0)),
    _dicom("frames_declared_4_of_2.dcm", _frames_declared_more),
    _dicom("frames_declared_100000.dcm", _set_attrs(NumberOfFrames=100000)),
    _dicom("rgb_screen_capture.dcm", _rgb),
    _dicom("one_frame_only.dcm", _one_frame, "either"),
    _dicom("zz_byte_copy_of_good.dcm", _byte_copy_of_good, "quiet"),
    _dicom("same_uids_other_pixels.dcm", _same_uids_other_pixels, "either"),
]


# -- odd paths -------------------------------------------------------------------------------------
def _spare_at(relative: str | bytes, content: Callable[[Sources], bytes] | None = None):
    """The spare good scan (or ``content``) written at an odd relative path."""

    def build(folder: Path, sources: Sources) -> str:
        data = content(sources) if content else sources.dicom(SPARE_STEM).read_bytes()
        if isinstance(relative, bytes):
            target = os.path.join(os.fsencode(folder), relative)
            with open(target, "wb") as handle:
                handle.write(data)
            return os.fsdecode(relative)
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return relative

    return build


def _directory_named_dcm(folder: Path, sources: Sources) -> str:
    (folder / "x.dcm").mkdir()
    (folder / "x.dcm" / "README").write_text("a folder, not a file\n")
    return "x.dcm"


def _symlink_loop(folder: Path, sources: Sources) -> str:
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "a.dcm").symlink_to(folder / "b.dcm")
    (folder / "b.dcm").symlink_to(folder / "a.dcm")
    return "a.dcm"


def _dangling(folder: Path, sources: Sources) -> str:
    (folder / "dangling.dcm").symlink_to(folder / "gone" / "nothing.dcm")
    return "dangling.dcm"


def _garbage(sources: Sources) -> bytes:
    return b"not dicom " * 100


PATIENT_FOLDER = "PID123456"
PATIENT_NAME_FOLDER = "DOE^JOHN"
PATH_CASES = [
    Case(
        "path_patient_id_folder",
        "path",
        _spare_at(f"{PATIENT_FOLDER}/IM0001.dcm"),
        "done",
        (PATIENT_FOLDER,),
    ),  # fmt: skip
    Case(
        "path_patient_name_folder",
        "path",
        _spare_at(f"{PATIENT_NAME_FOLDER}/IM0001.dcm"),
        "done",
        (PATIENT_NAME_FOLDER,),
    ),  # fmt: skip
    Case(
        "path_patient_folder_bad_file",
        "path",
        _spare_at("PID654321/broken.dcm", _garbage),
        "error",
        ("PID654321",),
    ),  # fmt: skip
    Case("path_spaces_unicode", "path", _spare_at("scan ñame Ø 患者 1.dcm"), "done"),
    Case("path_non_utf8_name", "path", _spare_at(b"scan_\xff\xfe.dcm"), "done"),
    Case("path_newline_in_name", "path", _spare_at("scan\nline.dcm"), "done"),
    Case("path_long_name", "path", _spare_at("s" * 240 + ".dcm"), "done"),
    Case("path_hidden_file", "path", _spare_at(".hidden.dcm"), "quiet"),  # skipped by convention
    Case(
        "path_identity_in_name",
        "path",
        _spare_at("Haddad^Greta_PH64241779.dcm"),
        "done",
        ("Haddad^Greta_PH64241779",),
    ),  # fmt: skip
    Case("path_directory_named_dcm", "path", _directory_named_dcm, "quiet"),
    Case("path_symlink_loop", "path", _symlink_loop, "quiet"),
    Case("path_dangling_symlink", "path", _dangling, "quiet"),
    Case("path_deep_folders", "path", _spare_at("/".join(["d"] * 40) + "/deep.dcm"), "done"),
]

CASES: list[Case] = [*LABELME_CASES, *IMAGE_CASES, *DICOM_CASES, *PATH_CASES]


# -- capturing a run -------------------------------------------------------------------------------
@dataclass
class Run:
    """One command's run over one case's folder: its exit and everything it printed or logged."""

    command: str
    out: Path
    code: int | None = None  # None: it raised
    raised: str = ""
    text: str = ""  # stdout + stderr + log records
    peak_bytes: int = 0


@contextlib.contextmanager
def captured(run: Run) -> Iterator[None]:
    """Capture stdout, stderr, every log record and the Python peak memory into ``run``."""
    import tracemalloc

    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    tracemalloc.start()
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield
    except SystemExit as err:  # argparse on an option this checkout lacks
        run.code, run.raised = None, f"SystemExit({err.code})"
    except BaseException as err:  # noqa: BLE001 - the corpus records any crash as an outcome
        import traceback

        run.code, run.raised = None, f"{type(err).__name__}: {err}"
        buffer.write(traceback.format_exc())
    finally:
        run.peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        root.removeHandler(handler)
        root.setLevel(level)
        run.text = buffer.getvalue()


# -- judging ---------------------------------------------------------------------------------------
_BARE = re.compile(r"\b[A-Z]\w*(Error|Exception|Warning)\b:?\s*(.*)$", re.S)


def unclear_reason(reason: str) -> str | None:
    """Why ``reason`` is not a clear sentence (None when it is): a traceback, an internal
    'unexpected' message, or an exception class name with little or nothing after it."""
    if not reason or not reason.strip():
        return "empty reason"
    if "Traceback" in reason or 'File "' in reason:
        return "traceback"
    if "unexpected" in reason.lower():
        return "'unexpected'"
    match = _BARE.search(reason)
    if match and len(re.findall(r"[A-Za-z]{2,}", match.group(2))) < 3:
        return f"bare exception {match.group(0)[:60]!r}"
    return None


@dataclass
class Records:
    """What one run says about the files of its folder: records of rejected or failed inputs
    and the sources of the scans done, each as text naming the file."""

    errors: list[tuple[str, str]] = field(default_factory=list)  # (path text, reason)
    done: list[str] = field(default_factory=list)  # source text of each scan done


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_records(run: Run) -> Records:
    records = Records()
    out = run.out
    if run.command == "convert":
        report = _read_json(out / "conversion_report.json") or {}
        for key in ("errors", "skipped_files", "skipped_shapes", "repairs", "unknown_labels"):
            items = report.get(key) or []
            if isinstance(items, dict):
                items = [{"file": k, "reason": f"unknown label {k}: {v}"} for k, v in items.items()]
            for item in items:
                text = json.dumps(item, ensure_ascii=False)
                reason = item.get("reason") or item.get("message") or item.get("error") or text
                records.errors.append((text, str(reason)))
        coco = _read_json(out / "annotations" / "instances_all.json") or {}
        records.done = [str(image.get("file_name")) for image in coco.get("images", [])]
    elif run.command == "preprocess":
        report = _read_json(out / "preprocess_report.json") or {}
        for item in report.get("skipped", []):
            records.errors.append((json.dumps(item, ensure_ascii=False), str(item.get("reason"))))
        for scan in report.get("scans", []):
            source = json.dumps(scan.get("sources"), ensure_ascii=False)
            records.done.append(source)
            if scan.get("warnings"):
                records.errors.append((source, "; ".join(map(str, scan["warnings"]))))
    else:
        errors = out / "errors.jsonl"
        for line in errors.read_text(encoding="utf-8").splitlines() if errors.exists() else []:
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                text = json.dumps(item, ensure_ascii=False)
                records.errors.append((text, str(item.get("reason"))))
        for path in sorted((out / "scans").glob("*/bsi.json")):
            record = _read_json(path) or {}
            source = json.dumps(record.get("source"), ensure_ascii=False)
            qc = record.get("qc") or {}
            if record.get("status") == "qc_failed":
                records.errors.append((source, "; ".join(map(str, qc.get("failed") or []))))
            elif record.get("status") not in ("failed", None):
                records.done.append(source)
                if qc.get("warnings"):
                    records.errors.append((source, "; ".join(map(str, qc["warnings"]))))
    return records


def _names(relative: str) -> list[str]:
    """Texts that name the case's file in a record written with --keep-identity."""
    name = Path(relative).name
    return [relative, name, json.dumps(name)[1:-1]]


@dataclass
class Verdict:
    outcome: str  # one of OUTCOMES
    detail: str


def judge(case: Case, relative: str, run: Run, good_done_expected: int = 2) -> Verdict:
    """The outcome of a run with --keep-identity (file names in clear)."""
    if run.peak_bytes > MEMORY_BOUND_BYTES:
        return Verdict("memory", f"Python peak {run.peak_bytes / MiB:.0f} MB")
    if run.code is None:
        return Verdict("aborted", f"raised {run.raised}")
    records = read_records(run)
    names = _names(relative)
    good = sum(any(stem in s for s in records.done) for stem in GOOD_STEMS)
    if good < good_done_expected:
        return Verdict("aborted", f"{good} of 2 good files done (exit {run.code})")
    if run.code != 0:
        return Verdict("aborted", f"exit {run.code} though the good files were done")
    expect = "either" if case.qc_only and run.command == "preprocess" else case.expect
    mine = [reason for text, reason in records.errors if any(n and n in text for n in names)]
    done = any(any(n and n in s for n in names) for s in records.done)
    if mine:
        unclear = [u for u in map(unclear_reason, mine) if u]
        if unclear:
            return Verdict("traceback", f"{unclear[0]}: {mine[0][:160]!r}")
        if done and expect == "error" and case.kind != "labelme":  # shapes: reported, rest kept
            return Verdict("silent", f"recorded but also taken as a scan: {mine[0][:120]!r}")
        return Verdict("clear", mine[0][:160])
    if done:
        if expect in ("done", "either"):
            return Verdict("clear", "read as a scan of its own")
        return Verdict("silent", "no record; taken as a good scan / converted")
    if expect == "quiet":
        return Verdict("clear", "nothing to read, nothing recorded")
    extra = len(records.done) - good
    if extra > 0 and case.kind == "labelme":
        return Verdict("silent", "no record naming it, yet an extra image was converted")
    if "Traceback" in run.text:
        return Verdict("traceback", "no record naming it; a traceback in the log")
    return Verdict("silent", "no record naming the file and not done")


def leaked_identities(identities: tuple[str, ...], run: Run) -> list[str]:
    """Identity strings found in any output file or in the captured text of ``run``."""
    texts = [run.text]
    for path in run.out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".csv", ".html", ".txt", ".log"):
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
    blob = "\n".join(texts)
    return sorted({i for i in identities if i and i in blob})


# -- running a case --------------------------------------------------------------------------------
Runner = Callable[[str, Path, Path, bool], int]  # (command, input folder, out, keep_identity)

SEVERITY = {"clear": 0, "silent": 1, "traceback": 2, "memory": 3, "aborted": 4}


def run_case(
    case: Case, sources: Sources, work: Path, runner: Runner, keep_identity: bool = True
) -> tuple[str, list[tuple[Run, Verdict]]]:
    """Build the case's folder under ``work`` and run each of its commands; never raises."""
    folder = work / "in"
    relative = input_folder(case, sources, folder)
    results = []
    for command in case.commands:
        run = Run(command, work / f"out_{command}_{'id' if keep_identity else 'pseudo'}")
        with captured(run):
            run.code = runner(command, folder, run.out, keep_identity)
        results.append((run, judge(case, relative, run)))
    return relative, results


def cli_runner(predict_argv: list[str]) -> Runner:
    """Runs the commands through ``bsi_d2.cli.main`` as a user would (any checkout)."""

    def run(command: str, folder: Path, out: Path, keep_identity: bool) -> int:
        from bsi_d2 import cli

        identity = ["--keep-identity"] if keep_identity else []
        if command == "convert":
            argv = ["convert", str(folder), "--out", str(out), "--workers", "1"]
        elif command == "preprocess":
            argv = ["preprocess", str(folder), "--out", str(out), "--no-progress", *identity]
        else:
            argv = ["predict", str(folder), "--out", str(out), *identity, *predict_argv]
        return cli.main(argv)

    return run
