"""`fd2talk-app`: the web page, driven in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, which install.sh installs) through Selenium, on the demo's model; and the
app's own logic (refusals, job folders, progress) without a browser."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

from fd2talk.core.errors import UserError
from fd2talk.model.app.jobs import JobFolders, JobInputs, progress_callback, run_job
from fd2talk.model.app.web import AppConfig


def run_app(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from fd2talk.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_app_help_and_refusals(tmp_path):
    r = run_app("--help")
    assert r.returncode == 0 and "--expose" in r.stdout and "--max-upload-mb" in r.stdout
    r = run_app()
    assert r.returncode == 2 and "give the model with --model" in r.stderr
    assert "Traceback" not in r.stderr
    # exposing the app is an explicit flag
    r = run_app("--model", str(tmp_path), "--host", "0.0.0.0")
    assert r.returncode == 2 and "add --expose" in r.stderr and "Traceback" not in r.stderr
    r = run_app("--model", str(tmp_path), "--auth", "nocolon")
    assert r.returncode == 2 and "USER:PASSWORD" in r.stderr
    with pytest.raises(UserError, match="--max-seconds"):
        AppConfig(model=["m"], max_seconds=0).check()
    AppConfig(model=["m"], host="0.0.0.0", expose=True).check()


def test_job_folders_are_deleted_once_old(tmp_path):
    folders = JobFolders(tmp_path / "jobs", max_age=3600)
    old, new = folders.new(), folders.new()
    folders.done(old)
    (old / "fd2talk.mp4").write_bytes(b"x")
    (new / "fd2talk.mp4").write_bytes(b"x")
    past = time.time() - 7200
    for p in (old, old / "fd2talk.mp4"):
        os.utime(p, (past, past))
    (tmp_path / "jobs" / "keep.txt").write_text("not a job folder")
    assert folders.clean() == 1
    assert not old.exists() and new.exists() and (tmp_path / "jobs" / "keep.txt").exists()
    assert folders.clean(now=time.time() + 7200) == 0 and new.exists()  # its job still runs
    folders.done(new)
    assert folders.clean(now=time.time() + 7200) == 1 and not new.exists()
    failed = folders.new()
    folders.done(failed, keep=False)  # a failed job leaves nothing
    assert not failed.exists()


def test_jobs_refuse_missing_inputs_and_long_speech_before_any_work(tmp_path):
    import wave

    folders = JobFolders(tmp_path / "jobs", max_age=3600)
    speech = tmp_path / "long.wav"
    with wave.open(str(speech), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(np.zeros(16000 * 3, np.int16).tobytes())
    cases = [
        (JobInputs(image=None, audio=str(speech)), "upload a portrait"),
        (JobInputs(image="p.png", audio=None), "upload or record some speech"),
        (JobInputs(image="p.png", audio=str(speech), pose="from a video"), "needs a video"),
        (JobInputs(image="p.png", audio=str(speech)), "this app takes up to 2 s"),
    ]
    for job, message in cases:
        with pytest.raises(UserError, match=message):
            run_job(None, folders, job, max_seconds=2.0)  # no model is touched
    assert not list((tmp_path / "jobs").iterdir())


def test_progress_reaches_the_page_per_stage():
    calls = []
    tell = progress_callback(lambda value, desc=None, unit="steps": calls.append((value, desc)))
    for stage, done, total in (
        ("reference", 0, 1),
        ("motion", 0, 1),
        ("motion", 1, 1),
        ("frames", 25, 50),
        ("frames", 50, 50),
        ("encode", 0, 1),
    ):
        tell(stage, done, total)
    assert calls[3] == ((25, 50), "stage 2: frames") and calls[1][1] == "stage 1: motion"
    assert calls[-1] == (None, "writing the video")


# ---- in a real browser ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser(tmp_path: Path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail(
            "the browser test needs Debian's chromium and chromium-driver "
            "(install.sh installs them: apt-get install chromium chromium-driver)"
        )
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not download anything
    opts = Options()
    opts.binary_location = chromium
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1300",
        "--autoplay-policy=no-user-gesture-required",
        # a microphone that plays a beep, allowed without asking
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


def wait_for(check, timeout: float, what: str, every: float = 0.5):
    end = time.time() + timeout
    while time.time() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def toast(driver) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(
        e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='toast-body']")
    )


@pytest.fixture
def served_app(demo_model, face_model, tmp_path):
    """`fd2talk-app` on the demo's model on a free port; (url, workdir)."""
    port, work = free_port(), tmp_path / "appwork"
    log = open(tmp_path / "app.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from fd2talk.cli.app import main; main()",
            "--model",
            str(demo_model),
            "--port",
            str(port),
            "--workdir",
            str(work),
            "--face-model",
            str(face_model),
            "--max-upload-mb",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"fd2talk-app exited: {(tmp_path / 'app.log').read_text()[-3000:]}")
        try:
            return urllib.request.urlopen(url, timeout=5).status == 200
        except OSError:
            return False

    try:
        wait_for(up, 240, "the app to serve its page", every=1)
        yield url, work
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_the_page_makes_a_video_that_plays_and_shows_errors(
    served_app, demo_work, tmp_path, monkeypatch
):
    from selenium.webdriver.common.by import By

    url, work = served_app
    src = demo_work / "demo_src"
    portrait, speech = tmp_path / "portrait.png", tmp_path / "speech.wav"
    # the demo's held-out astronaut (demo004) speaking held-out words (demo009), as install.sh
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src / "demo004.mp4"),
            "-frames:v",
            "1",
            str(portrait),
        ],
        check=True,
        timeout=60,
    )
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src / "demo009.mp4"),
            "-vn",
            "-ac",
            "1",
            "-ar",
            "16000",
            str(speech),
        ],
        check=True,
        timeout=60,
    )
    seconds = float(
        subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "format=duration",
                "-of",
                "csv=p=0",
                str(speech),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    shown = f"0:{round(seconds):02d}"  # the length the page's player shows
    d = browser(tmp_path, monkeypatch)
    try:
        d.get(url)
        wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#generate"), 60, "the page")
        d.find_element(By.CSS_SELECTOR, "#portrait input[type=file]").send_keys(str(portrait))
        d.find_element(By.CSS_SELECTOR, "#speech input[type=file]").send_keys(str(speech))
        wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#portrait img"), 30, "the upload")
        wait_for(
            lambda: shown in d.find_element(By.CSS_SELECTOR, "#speech").text,
            30,
            "the speech upload",
        )
        start = time.time()
        d.find_element(By.CSS_SELECTOR, "#generate").click()
        seen = set()

        def video_src():
            seen.add(d.find_element(By.CSS_SELECTOR, "body").text)
            v = d.find_elements(By.CSS_SELECTOR, "#video video")
            return v and v[0].get_attribute("src")

        src_url = wait_for(video_src, 600, "the generated video", every=0.3)
        upload_to_video = time.time() - start
        assert src_url.endswith(".mp4"), src_url
        assert any("stage 2: frames" in t for t in seen), "no progress was shown"
        state = wait_for(
            lambda: d.execute_script(
                "const v = document.querySelector('#video video');"
                "return v.readyState >= 1 ? [v.duration, v.videoWidth, v.error] : null"
            ),
            30,
            "the video's metadata",
        )
        duration, width, error = state
        assert error is None and width > 0
        assert abs(duration - seconds) <= 0.05, (duration, seconds)
        d.execute_script(
            "const v = document.querySelector('#video video');v.muted = true; v.play();"
        )
        assert wait_for(
            lambda: d.execute_script(
                "const v = document.querySelector('#video video');"
                "return !v.error && v.currentTime > 0.5"
            ),
            30,
            "the video to play",
        )
        # what the page offers for download is an H.264 mp4 with the speech, and the motion
        video = tmp_path / "downloaded.mp4"
        video.write_bytes(urllib.request.urlopen(src_url, timeout=30).read())
        probe = json.loads(
            subprocess.run(
                ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(video)],
                capture_output=True,
                check=True,
                timeout=60,
            ).stdout
        )
        codecs = sorted(s["codec_name"] for s in probe["streams"])
        assert codecs == ["aac", "h264"], codecs
        npz_url = d.find_element(By.CSS_SELECTOR, "#coeffs a").get_attribute("href")
        assert ".npz" in npz_url
        (tmp_path / "motion.npz").write_bytes(urllib.request.urlopen(npz_url, timeout=30).read())
        motion = np.load(tmp_path / "motion.npz")
        assert len(motion["exp"]) == len(motion["pose"]) == round(seconds * 25)
        assert d.execute_script(
            "const i = document.querySelector('#preview img');"
            "return i && i.complete && i.naturalWidth > 0"
        )
        assert "s of compute per s of video" in d.find_element(By.CSS_SELECTOR, "#summary").text
        # no "share" button anywhere (Gradio's uploads the file to huggingface.co)
        labels = [
            b.get_attribute("aria-label") or b.get_attribute("title") or ""
            for b in d.find_elements(By.CSS_SELECTOR, "button")
        ]
        assert not [x for x in labels if "share" in x.lower()], labels
        d.execute_script("window.scrollTo(0, 0)")
        shot = tmp_path / "app.png"
        d.save_screenshot(str(shot))
        if os.environ.get("FD2TALK_APP_SCREENSHOT"):  # README's picture (bench/results/app.png)
            from PIL import Image

            im = Image.open(shot).convert("RGB")
            im.resize((960, round(im.height * 960 / im.width)), Image.LANCZOS).quantize(256).save(
                os.environ["FD2TALK_APP_SCREENSHOT"], optimize=True
            )
        print(f"upload to video: {upload_to_video:.1f} s for {seconds:.2f} s of speech")

        # an image without a face: the CLI's one line, no trace, nothing left behind
        flat = tmp_path / "no_face.png"
        ramp = np.tile(np.linspace(0, 255, 320).astype(np.uint8)[None, :, None], (240, 1, 3))
        from PIL import Image

        Image.fromarray(ramp).save(flat)
        d.get(url)
        wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#generate"), 60, "the page")
        d.find_element(By.CSS_SELECTOR, "#portrait input[type=file]").send_keys(str(flat))
        d.find_element(By.CSS_SELECTOR, "#speech input[type=file]").send_keys(str(speech))
        wait_for(
            lambda: shown in d.find_element(By.CSS_SELECTOR, "#speech").text,
            30,
            "the speech upload",
        )
        d.find_element(By.CSS_SELECTOR, "#generate").click()
        message = wait_for(lambda: toast(d), 120, "the error message")
        assert "no face found in the portrait" in message and "Traceback" not in message
        assert len(list((work / "jobs").iterdir())) == 1  # the failed job left nothing

        # an upload over --max-upload-mb (1 MB here) is refused with a message
        big = tmp_path / "big.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (1000, 1000, 3), np.uint8)).save(
            big
        )
        d.get(url)
        wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#generate"), 60, "the page")
        d.find_element(By.CSS_SELECTOR, "#portrait input[type=file]").send_keys(str(big))
        message = wait_for(lambda: toast(d), 60, "the size message")
        assert "exceed the maximum allowed size of 1.0" in message and "big.png" in message

        # speech recorded with the microphone (Chromium's fake one) makes a video too
        d.get(url)
        wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#generate"), 60, "the page")
        d.find_element(By.CSS_SELECTOR, "#portrait input[type=file]").send_keys(str(portrait))
        d.find_element(By.CSS_SELECTOR, "#speech button[aria-label='Record audio']").click()
        wait_for(
            lambda: d.find_elements(By.CSS_SELECTOR, "#speech button.record-button"),
            30,
            "the record button",
        )[0].click()
        time.sleep(2.5)
        d.find_element(By.CSS_SELECTOR, "#speech button.stop-button").click()
        # the recording is uploaded and shown in the player (its speed button: "1x")
        wait_for(
            lambda: "1x" in d.find_element(By.CSS_SELECTOR, "#speech").text, 30, "the recording"
        )
        d.find_element(By.CSS_SELECTOR, "#generate").click()
        wait_for(
            lambda: (d.find_elements(By.CSS_SELECTOR, "#video video") or [None])[0],
            300,
            "the video from the recording",
        )
        recorded = wait_for(
            lambda: d.execute_script(
                "const v = document.querySelector('#video video');"
                "return v && v.readyState >= 1 ? v.duration : null"
            ),
            30,
            "its metadata",
        )
        assert 1.5 < recorded < 4.0, recorded
        assert len(list((work / "jobs").iterdir())) == 2
    finally:
        d.quit()
