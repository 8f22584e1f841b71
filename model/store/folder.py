"""A trained model as one folder: what users share and what generation, evaluation and the app
load (Hugging Face's folder conventions, no hub access).

    MODEL/
      model_index.json            written last: the parts, their classes, the backends
      motion/config.json          stage 1: Exp + Pose Transformers (EMA), `kind: motion`
      motion/model.safetensors    "exp.*", "pose.*"
      frames/config.json          stage 2: frame UNet (EMA), `kind: frames`
      frames/model.safetensors
      autoencoder/autoencoder.json, model.safetensors   the reference autoencoder (with its
                                  measured latent `scaling_factor`), `RefAutoencoder.load`-able
      lip_expert/config.json, model.safetensors         the lip expert and its face model

A part's config.json holds everything needed to rebuild and feed it: the network config,
the diffusion config, the normalisation statistics, the dataset description (coefficient
backend and dims, audio-feature backend and dims), the audio stage's settings (logmel, or the
wav2vec2 model and layer), the training step, settings and git revision.

Every training run writes RUN/model when it finishes (`Run.finish`); `export` makes a
folder from any checkpoints, run directories or folders (`fd2talk-train export`), e.g. one
folder with stage 1 and stage 2 together. `load_parts` reads any of those and refuses parts
that do not fit together (`check_compatible`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from fd2talk.core.atomic import follow_umask, json_default, json_text
from fd2talk.core.errors import UserError
from fd2talk.core.revision import tensor_fingerprint
from fd2talk.model.store.checkpoint import CHECKPOINT, load_checkpoint

MODEL_DIR = "model"  # RUN/model: the folder a finished run writes
INDEX = "model_index.json"
FORMAT = "fd2talk-model"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
AE_CONFIG = "autoencoder.json"  # the autoencoder part keeps `RefAutoencoder.save`'s layout
CLASSES = {
    "motion": "MotionModel",
    "frames": "FrameModel",
    "autoencoder": "RefAutoencoder",
    "lip_expert": "LipExpert",
}


@dataclass
class ModelPart:
    """One part of a model: its config record and its (EMA) weights, from where it was read."""

    name: str  # "motion", "frames", "autoencoder", "lip_expert"
    config: dict
    weights: dict[str, torch.Tensor]
    source: str

    def sub(self, prefix: str) -> dict[str, torch.Tensor]:
        """The weights under `prefix.` with the prefix removed (one network's state dict)."""
        return {
            k[len(prefix) + 1 :]: v for k, v in self.weights.items() if k.startswith(prefix + ".")
        }


def fingerprint(part: ModelPart) -> str:
    """sha256 hex over a part's network config and every weight: equal exactly when two parts
    compute the same thing (the training step, settings and revision do not count)."""
    skip = ("step", "git_revision", "train_config")
    return tensor_fingerprint({k: v for k, v in part.config.items() if k not in skip}, part.weights)


def _prefixed(state_dicts: dict[str, dict]) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, sd in state_dicts.items() for k, v in sd.items()}


def _record(state: dict, kind: str) -> dict:
    """A part's config record from a checkpoint: JSON values only (as config.json holds it)."""
    record = {
        "kind": kind,
        "step": int(state["step"]),
        "git_revision": state["git_revision"],
        "train_config": state["config"],
        **{k: v for k, v in state["extras"].items() if k != "face_model"},
    }
    return json.loads(json.dumps(record, default=json_default))


def _ae_part(ae, source: str) -> ModelPart:
    return ModelPart(
        "autoencoder",
        ae.record(),
        {k: v.detach().cpu() for k, v in ae.state_dict().items()},
        source,
    )


def autoencoder_part(path: str | Path) -> ModelPart:
    """The autoencoder folder `fd2talk-train autoencoder` wrote (RUN/autoencoder) as a part."""
    from fd2talk.model.nets.autoencoder import RefAutoencoder

    return _ae_part(RefAutoencoder.load(path), str(path))


def parts_from_checkpoint(
    state: dict, source: str, with_autoencoder: bool = True
) -> list[ModelPart]:
    """The model parts of one checkpoint (`checkpoint.checkpoint_state`'s schema); a frames
    checkpoint brings the autoencoder it was trained with unless `with_autoencoder` is off."""
    kind, extras = state["kind"], state["extras"]
    if kind == "motion":
        return [ModelPart("motion", _record(state, "motion"), _prefixed(state["ema"]), source)]
    if kind == "lipsync":
        face = extras["face_model"]
        tensors = {k: v for k, v in face.items() if isinstance(v, torch.Tensor)}
        record = _record(state, "lip_expert")
        record["face_model"] = json.loads(
            json.dumps({k: v for k, v in face.items() if k not in tensors}, default=json_default)
        )
        return [
            ModelPart(
                "lip_expert",
                record,
                _prefixed({"expert": state["models"]["expert"], "face": tensors}),
                source,
            )
        ]
    if kind == "autoencoder":
        from fd2talk.model.nets.autoencoder import AutoencoderConfig, RefAutoencoder

        ae = RefAutoencoder.build(AutoencoderConfig.from_dict(extras["autoencoder_config"]))
        ae.load_state_dict(state["models"]["autoencoder"])
        ae.scaling_factor = extras["scaling_factor"]
        return [_ae_part(ae, source)]
    if kind == "frames":
        frames = ModelPart("frames", _record(state, "frames"), state["ema"]["unet"], source)
        ae_path = extras["autoencoder_path"]
        if not with_autoencoder:
            return [frames]
        if not (Path(ae_path) / AE_CONFIG).is_file():
            raise UserError(
                f"{source} was trained with the autoencoder {ae_path}, which is gone: "
                "put it back, or pass the autoencoder folder (autoencoder=...)"
            )
        return [frames, autoencoder_part(ae_path)]
    raise UserError(f"{source}: a {kind!r} checkpoint holds no model part")


def read_folder(root: Path) -> list[ModelPart]:
    """The parts of a model folder (`model_index.json` and one subfolder per part)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = json.loads((root / INDEX).read_text())
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise UserError(
            f"{root / INDEX} is not an {FORMAT} v{VERSION} index: export the model "
            "again with this version (`fd2talk-train export`)"
        )
    parts = []
    for name in index["parts"]:
        folder = root / name
        config = folder / (AE_CONFIG if name == "autoencoder" else CONFIG)
        if not config.is_file() or not (folder / WEIGHTS).is_file():
            raise UserError(
                f"{root} names the part {name!r} but {folder} lacks {config.name} or "
                f"{WEIGHTS}: copy the whole model folder"
            )
        try:
            weights = load_file(folder / WEIGHTS)
        except SafetensorError as e:
            raise UserError(f"{folder / WEIGHTS} is damaged ({e}): copy it again") from None
        part = ModelPart(name, json.loads(config.read_text()), weights, str(folder))
        if name == "autoencoder":
            _check_autoencoder(part)
        parts.append(part)
    return parts


def _check_autoencoder(part: ModelPart) -> None:
    """The fingerprint an autoencoder folder states must be its weights' own (frames models
    are matched to autoencoders by it)."""
    from fd2talk.model.nets.autoencoder import AutoencoderConfig, RefAutoencoder

    ae = RefAutoencoder.build(AutoencoderConfig.from_dict(part.config["config"]))
    ae.load_state_dict(part.weights)
    if ae.fingerprint() != part.config.get("fingerprint"):
        raise UserError(
            f"{part.source}: its weights are not the autoencoder its "
            f"{AE_CONFIG} describes (a damaged or mixed folder): copy it again"
        )


def read_parts(path: str | Path, with_autoencoder: bool = True) -> list[ModelPart]:
    """Parts from a model folder, a run directory (its model folder, else, while a resumed
    run has not finished, its checkpoint) or a checkpoint.pt."""
    p = Path(path).expanduser()
    if p.is_file():
        return parts_from_checkpoint(load_checkpoint(p), str(p), with_autoencoder)
    for root in (p, p / MODEL_DIR):
        if (root / INDEX).is_file():
            return read_folder(root)
    if (p / CHECKPOINT).is_file():
        return parts_from_checkpoint(
            load_checkpoint(p / CHECKPOINT), str(p / CHECKPOINT), with_autoencoder
        )
    what = "not found" if not p.exists() else "holds no model"
    raise UserError(
        f"{p} {what}: expected a model folder (with {INDEX}), a run directory "
        f"of `fd2talk-train` (with {MODEL_DIR}/ or {CHECKPOINT}) or a {CHECKPOINT}"
    )


def _backend(config: dict) -> str:
    d = config["dataset"]
    return f"{d['coeffs']} coefficients ({d['exp_dim']}-d expression)"


def check_compatible(parts: dict[str, ModelPart]) -> None:
    """Refuse parts that were not trained to work together; the message names both."""
    motion, frames, ae = parts.get("motion"), parts.get("frames"), parts.get("autoencoder")
    if motion and frames:
        a, b = motion.config["dataset"], frames.config["dataset"]
        if (a["coeffs"], a["exp_dim"]) != (b["coeffs"], b["exp_dim"]):
            raise UserError(
                f"the stage-1 model {motion.source} makes {_backend(motion.config)} "
                f"but the stage-2 model {frames.source} was trained on "
                f"{_backend(frames.config)}: train both on shards of one "
                "coefficient backend"
            )
    if frames and ae and ae.config.get("fingerprint") != frames.config["autoencoder"]:
        raise UserError(
            f"the stage-2 model {frames.source} was trained with autoencoder "
            f"{frames.config['autoencoder'][:12]} but {ae.source} is autoencoder "
            f"{str(ae.config.get('fingerprint'))[:12]}: use the autoencoder it was "
            "trained with"
        )


def _merge(groups) -> dict[str, ModelPart]:
    """Parts by name from groups of parts; a model given twice is a UserError. Autoencoders may
    repeat (a frames run brings the one it was trained with): the first is kept and
    `check_compatible` decides whether it fits."""
    parts: dict[str, ModelPart] = {}
    for group in groups:
        for part in group:
            if part.name in parts and part.name != "autoencoder":
                raise UserError(
                    f"both {parts[part.name].source} and {part.source} hold a "
                    f"{part.name} model: give one of them"
                )
            parts.setdefault(part.name, part)
    check_compatible(parts)
    return parts


def load_parts(sources: list[str | Path]) -> dict[str, ModelPart]:
    """Every part of every source (folder, run directory or checkpoint), by name."""
    return _merge(read_parts(source) for source in sources)


def require(parts: dict[str, ModelPart], name: str, sources) -> ModelPart:
    if name not in parts:
        have = ", ".join(sorted(parts)) or "nothing"
        raise UserError(f"{', '.join(map(str, sources))} holds no {name} model (it has: {have})")
    return parts[name]


def write_folder(parts: dict[str, ModelPart], out: Path) -> Path:
    """Write `parts` as a model folder at `out` (built beside it, then renamed into place)."""
    from safetensors.torch import save_file

    out = Path(out).resolve()
    if out.exists() and not (out / INDEX).is_file() and any(out.iterdir()):
        raise UserError(
            f"{out} exists and is not a model folder: choose a new --out (an "
            "existing model folder is replaced, nothing else is)"
        )
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for name, part in parts.items():
        folder = tmp / name
        folder.mkdir(parents=True)
        save_file(
            {k: v.detach().cpu().clone() for k, v in part.weights.items()},  # unaliased
            str(folder / WEIGHTS),
        )
        follow_umask(folder / WEIGHTS)  # safetensors writes 0600 whatever the umask
        # plain writes: the whole folder is renamed into place at once
        (folder / (AE_CONFIG if name == "autoencoder" else CONFIG)).write_text(
            json_text(part.config, indent=2)
        )
    described = next((p.config for p in parts.values() if "dataset" in p.config), {})
    (tmp / INDEX).write_text(
        json_text(
            {
                "_class_name": "FD2TalkModel",
                "format": FORMAT,
                "version": VERSION,
                "parts": {name: ["fd2talk", CLASSES[name]] for name in parts},
                "dataset": described.get("dataset"),
                "audio_config": described.get("audio_config"),
            },
            indent=2,
        )
    )
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return out


def export(sources: list, out: str | Path) -> Path:
    """One model folder at `out` from checkpoint states (dicts) and/or paths."""
    return write_folder(
        _merge(
            parts_from_checkpoint(s, f"the {s['kind']} run {s['config']['out']}")
            if isinstance(s, dict)
            else read_parts(s)
            for s in sources
        ),
        Path(out),
    )
