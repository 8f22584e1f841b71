"""`fd2talk-app`: a web page for generation (Gradio 6) over the same `FD2TalkPipeline` as
`fd2talk-generate`, the model loaded once.

A job: a portrait (upload) and speech (upload or microphone), the options users of
talking-head apps expect (seed, steps, sampler, pose mode, pose and expression scales, paste
back), and out come the video (played in the page, downloadable), the preview image and the
motion coefficients (.npz). Progress comes from the pipeline's stage callback; jobs are
queued (`--concurrency` at once, `--queue-size` waiting); a job's failure shows the CLI's one
line (`UserError`), an unexpected one a short line while the server log keeps the traceback.

Every upload and output lives under one work folder (`--workdir`, default a private one in
the temporary folder): job folders and Gradio's cache there are deleted once older than
`--max-age-hours` (at start, before each job and every 10 minutes; running jobs are kept).
Uploads over `--max-upload-mb` are refused by the server, speech longer than `--max-seconds`
by the job. Gradio's analytics are off, the page uses the system's fonts and has no "share"
buttons (they upload to huggingface.co): the app fetches nothing from the network, and
neither does the browser showing it.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from fd2talk.core.errors import UserError
from fd2talk.model.app.jobs import (
    POSE_MODES,
    JobFolders,
    JobInputs,
    clean_every,
    progress_callback,
    run_job,
)
from fd2talk.model.generation.options import PoseMode
from fd2talk.model.solvers import Solver

LOOPBACK = ("127.0.0.1", "localhost", "::1")
SOLVERS = tuple(s.value for s in Solver)
CLEAN_EVERY = 600  # s between sweeps of old job folders and of Gradio's cache


@dataclass
class AppConfig:
    """What `fd2talk-app` serves and how (its options)."""

    model: list[str]
    host: str = "127.0.0.1"
    port: int = 7860
    expose: bool = False  # a host other than the loopback needs this
    workdir: str | None = None  # uploads and outputs (default: a temporary folder)
    max_age_hours: float = 24.0  # job folders and cached files older than this are deleted
    max_upload_mb: float = 50.0
    max_seconds: float = 120.0  # longer speech is refused
    concurrency: int = 1  # jobs at once (each uses all the cores / the GPU)
    queue_size: int = 16  # jobs waiting; more are turned away with a message
    device: str = "auto"
    dtype: str = "fp32"
    face_model: str | None = None
    wav2vec2: str | None = None
    auth: tuple[str, str] | None = None  # (user, password) asked by the page
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.host not in LOOPBACK and not self.expose:
            raise UserError(
                f"--host {self.host} makes the app reachable from other machines; "
                "add --expose to mean it (read docs/generation.md's warning first)"
            )
        for name, value in (
            ("--max-age-hours", self.max_age_hours),
            ("--max-upload-mb", self.max_upload_mb),
            ("--max-seconds", self.max_seconds),
        ):
            if value <= 0:
                raise UserError(f"{name} must be > 0, got {value}")
        if self.concurrency < 1 or self.queue_size < 1:
            raise UserError("--concurrency and --queue-size must be at least 1")
        if not 0 < self.port < 65536:
            raise UserError(f"--port must be 1-65535, got {self.port}")


def build(pipe, config: AppConfig, folders: JobFolders):
    """The page (a `gr.Blocks`), queued as configured."""
    import gradio as gr

    steps_default = int(pipe.frame_model.diffusion.config.sample_steps)

    def generate(
        image,
        audio,
        seed,
        steps,
        solver,
        pose,
        pose_video,
        pose_scale,
        expression_scale,
        paste_back,
        crop,
        progress=gr.Progress(),
    ):
        job = JobInputs(
            image=image,
            audio=audio,
            seed=int(seed or 0),
            steps=steps,
            solver=solver,
            pose=pose,
            pose_video=_path(pose_video),
            pose_scale=pose_scale,
            expression_scale=expression_scale,
            paste_back=paste_back,
            crop=crop,
        )
        try:
            out = run_job(pipe, folders, job, config.max_seconds, progress_callback(progress))
        except UserError as e:
            message = str(e)
            for path in (job.image, job.audio, job.pose_video):
                if path:
                    message = message.replace(str(path), Path(path).name)
            raise gr.Error(message, title="Cannot generate", print_exception=False) from None
        except Exception as e:  # noqa: BLE001 - the page gets one line, the log the traceback
            traceback.print_exc()
            first = (str(e).splitlines() or [""])[0][:200]
            raise gr.Error(
                f"internal error ({type(e).__name__}: {first}); the server's log has the details",
                print_exception=False,
            ) from None
        return str(out.video), str(out.preview), str(out.coeffs), out.message

    with gr.Blocks(
        title="fd2talk",
        analytics_enabled=False,
        delete_cache=(CLEAN_EVERY, int(config.max_age_hours * 3600)),
    ) as page:
        gr.Markdown(
            "# fd2talk\nA portrait and speech in, a talking-head video out "
            "(FD2Talk: motion from the speech, then every frame from the portrait). "
            f"Speech up to {config.max_seconds:.0f} s; uploads up to "
            f"{config.max_upload_mb:g} MB."
        )
        with gr.Row():
            with gr.Column():
                # buttons: never "share" (it uploads to huggingface.co from the browser)
                image = gr.Image(
                    label="Portrait",
                    type="filepath",
                    image_mode=None,
                    sources=["upload", "clipboard"],
                    buttons=["fullscreen"],
                    elem_id="portrait",
                )
                audio = gr.Audio(
                    label="Speech",
                    type="filepath",
                    sources=["upload", "microphone"],
                    buttons=["download"],
                    elem_id="speech",
                )
                crop = gr.Checkbox(
                    value=True,
                    label="Find and frame the face (untick for a "
                    "face crop framed as the training crops were)",
                    elem_id="crop",
                )
                with gr.Accordion("Options", open=False):
                    seed = gr.Number(
                        value=0, precision=0, label="Seed (same seed, same video)", elem_id="seed"
                    )
                    steps = gr.Slider(
                        1, 100, value=steps_default, step=1, label="Sampler steps", elem_id="steps"
                    )
                    solver = gr.Radio(
                        list(SOLVERS),
                        value=Solver.ddim.value,
                        label="Sampler (ddim: the paper's; dpm++: good at 10-20 steps)",
                        elem_id="solver",
                    )
                    pose = gr.Radio(
                        list(POSE_MODES),
                        value=PoseMode.generated.value,
                        label="Head pose",
                        elem_id="pose",
                    )
                    pose_video = gr.File(
                        label="Pose from this video (or a motion .npz)",
                        file_types=["video", ".npz"],
                        elem_id="pose-video",
                    )
                    pose_scale = gr.Slider(
                        0, 2, value=1, step=0.05, label="Pose scale", elem_id="pose-scale"
                    )
                    expression_scale = gr.Slider(
                        0,
                        2,
                        value=1,
                        step=0.05,
                        label="Expression scale",
                        elem_id="expression-scale",
                    )
                    paste_back = gr.Checkbox(
                        value=False,
                        label="Paste the face back into the "
                        "whole portrait (best with a still pose)",
                        elem_id="paste-back",
                    )
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                video = gr.Video(label="Video", buttons=["download"], elem_id="video")
                preview = gr.Image(
                    label="Preview: reference | frames over time, mouth opening against the speech",
                    type="filepath",
                    buttons=["download", "fullscreen"],
                    elem_id="preview",
                )
                coeffs = gr.File(label="Motion coefficients (.npz)", elem_id="coeffs")
                summary = gr.Markdown(elem_id="summary")
        button.click(
            generate,
            [
                image,
                audio,
                seed,
                steps,
                solver,
                pose,
                pose_video,
                pose_scale,
                expression_scale,
                paste_back,
                crop,
            ],
            [video, preview, coeffs, summary],
            concurrency_limit=config.concurrency,
        )
    page.queue(max_size=config.queue_size, default_concurrency_limit=config.concurrency)
    return page


def _path(value) -> str | None:
    if value is None:
        return None
    return str(getattr(value, "name", value))


def serve(config: AppConfig, block: bool = True):
    """Load the model once, build the page and serve it (returns the page when not `block`)."""
    config.check()
    root = Path(config.workdir) if config.workdir else default_workdir()
    root.mkdir(parents=True, exist_ok=True)
    # Gradio keeps uploads and its copies of outputs in GRADIO_TEMP_DIR, read at import
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from fd2talk.model.generation.pipeline import FD2TalkPipeline

    pipe = FD2TalkPipeline.from_pretrained(
        *config.model,
        device=config.device,
        dtype=config.dtype,
        face_model=config.face_model,
        wav2vec2=config.wav2vec2,
    )
    folders = JobFolders(root / "jobs", config.max_age_hours * 3600, cache=root / "gradio")
    folders.clean()
    threading.Thread(target=clean_every, args=(folders, CLEAN_EVERY), daemon=True).start()
    page = build(pipe, config, folders)
    if config.host not in LOOPBACK:
        print(
            f"warning: serving on {config.host}:{config.port}: anyone who reaches this port "
            "can run jobs on this machine" + ("" if config.auth else " (no --auth given)"),
            file=sys.stderr,
        )
    import gradio as gr

    # the system's fonts: the default theme would have the browser fetch Google's
    theme = gr.themes.Default(
        font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    try:
        # allowed_paths: the job folders only, never Gradio's upload folder (an uploaded
        # HTML file served inline from there would run in the page's origin)
        page.launch(
            theme=theme,
            server_name=config.host,
            server_port=config.port,
            share=False,
            max_file_size=int(config.max_upload_mb * 1024 * 1024),
            show_error=True,
            allowed_paths=[str(folders.root)],
            auth=config.auth,
            ssr_mode=False,
            prevent_thread_lock=not block,
            quiet=False,
            footer_links=[],
            run_history=False,
        )
    except OSError as e:
        raise UserError(
            f"cannot serve on {config.host}:{config.port} ({e}); is another "
            "program using that port? Pick another with --port"
        ) from None
    return page


def default_workdir() -> Path:
    """$TMPDIR/fd2talk-app-UID, private to this user (uploads are people's faces and voices):
    refused when another user owns it."""
    import tempfile

    root = Path(tempfile.gettempdir()) / f"fd2talk-app-{os.getuid()}"
    root.mkdir(mode=0o700, exist_ok=True)
    st = root.lstat()
    if root.is_symlink() or st.st_uid != os.getuid():
        raise UserError(f"{root} is not a folder of yours; give --workdir")
    os.chmod(root, 0o700)
    return root
