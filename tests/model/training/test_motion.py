"""`fd2talk-train motion` on the demo shards: it learns (the mouth follows held-out speech),
resumes bit-for-bit, trains under torchrun with DDP, and refuses bad inputs clearly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import REPO, npy, rewrite_shards
from helpers.motion import jaw_vs_speech

from fd2talk.core.errors import UserError
from fd2talk.model.data import loader as data
from fd2talk.model.data.folds import fold_keys
from fd2talk.model.generation import motion
from fd2talk.model.training.motion import MotionTrainConfig, train_motion


def test_training_makes_the_mouth_follow_held_out_speech(motion_run, demo_work, tmp_path):
    trained = jaw_vs_speech(motion_run / "checkpoint.pt", demo_work)
    untrained_dir = tmp_path / "untrained"
    cfg = json.loads((motion_run / "config.json").read_text())["config"]
    train_motion(
        MotionTrainConfig(**{**cfg, "out": str(untrained_dir), "steps": 0}), progress=False
    )
    untrained = jaw_vs_speech(untrained_dir / "checkpoint.pt", demo_work)
    print(
        f"r(jawOpen, speech envelope) on the test clips: trained {np.round(trained, 3)}, "
        f"untrained {np.round(untrained, 3)}"
    )
    # bench/learning_spread.py over 3 training seeds: mean 0.566-0.577, min 0.451-0.494
    assert np.mean(trained) > 0.5 and min(trained) > 0.3, trained
    assert np.mean(trained) > np.mean(np.abs(untrained)) + 0.4
    rows = [json.loads(line) for line in (motion_run / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"]
    train = [r for r in rows if r["split"] == "train"]
    assert val[-1]["loss_exp"] < val[0]["loss_exp"] or val[-1]["loss_exp"] < 0.5
    assert np.mean([r["loss"] for r in train[-3:]]) < np.mean([r["loss"] for r in train[:3]])
    assert all("loss_sync" in r for r in train)


def _checkpoint_tensors(path):
    state = torch.load(path, weights_only=False)
    flat = {}
    for group in ("models", "ema"):
        for name, sd in state[group].items():
            flat.update({f"{group}.{name}.{k}": v for k, v in sd.items()})
    for name, opt in state["optimizers"].items():
        for pid, st in opt["state"].items():
            flat.update({f"opt.{name}.{pid}.{k}": v for k, v in st.items()})
    return state["step"], flat


@pytest.mark.parametrize("accumulate", [1, 2])
def test_resume_is_bit_for_bit(demo_work, lip_expert, tmp_path, accumulate):
    """Also with gradient accumulation: a resumed run reads the stream from step x accumulate."""
    base = dict(
        shards=str(demo_work / "shards"),
        batch_size=4,
        lambda_sync=0.1,
        lip_expert=str(lip_expert[0]),
        val_every=2,
        save_every=3,
        log_every=1,
        epoch_batches=4,
        device="cpu",
        accumulate=accumulate,
    )
    train_motion(MotionTrainConfig(out=str(tmp_path / "straight"), steps=6, **base), progress=False)
    train_motion(MotionTrainConfig(out=str(tmp_path / "halves"), steps=3, **base), progress=False)
    train_motion(
        MotionTrainConfig(out=str(tmp_path / "halves"), steps=6, **base),
        resume=True,
        progress=False,
    )
    step_a, a = _checkpoint_tensors(tmp_path / "straight" / "checkpoint.pt")
    step_b, b = _checkpoint_tensors(tmp_path / "halves" / "checkpoint.pt")
    assert step_a == step_b == 6 and a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    logs = [
        [
            json.loads(line)
            for line in (tmp_path / run / "metrics.jsonl").read_text().split("\n")
            if line
        ]
        for run in ("straight", "halves")
    ]
    assert [r for r in logs[0] if r["split"] == "train"] == [
        r for r in logs[1] if r["split"] == "train"
    ]
    halves_val = [r for r in logs[1] if r["split"] == "val"]  # + the end of the first half
    assert all(r in halves_val for r in logs[0] if r["split"] == "val")


def _one_step(shards: str, grads_of: tuple[int, ...]) -> torch.Tensor:
    """Adam's first moment of the Exp Transformer after one step, as train_motion makes it
    (seed 0, batch 4, lr 1e-4, clip 1.0), on the mean of the gradients that ranks `grads_of`
    of a 2-process run compute on their own batches and noise: 0.1 x the clipped gradient,
    all parameters flattened."""
    from fd2talk.model.data.normalize import Stats
    from fd2talk.model.diffusion import Diffusion
    from fd2talk.model.training.motion import build_models, losses, normalised
    from fd2talk.model.training.rng import noise_generator

    torch.manual_seed(0)
    info = data.dataset_info(shards, "train")
    nets = build_models("tiny", 3, info.exp_dim, info.audio_dim)
    stats = Stats.compute(data.iter_clips(shards, "train"))
    stream = data.StreamConfig(batch_size=4, epoch_batches=500)
    grads = []
    for rank in grads_of:
        batch = next(
            data.batches_from(
                data.split_shards(shards, "train"), stream, data.MOTION_FIELDS, 0, 0, rank, 2
            )
        )
        out = losses(nets, Diffusion(), normalised(batch, stats, "cpu"), noise_generator(0, rank))
        for m in nets.values():
            m.zero_grad()
        (out["exp"]["loss"] + out["pose"]["loss"]).backward()
        grads.append([p.grad.clone() for p in nets["exp"].parameters()])
    net = nets["exp"]
    for p, *gs in zip(net.parameters(), *grads, strict=True):
        p.grad = torch.stack(gs).mean(0)
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    opt.step()
    return _first_moment(opt.state_dict())


def _first_moment(opt_state: dict) -> torch.Tensor:
    return torch.cat(
        [opt_state["state"][i]["exp_avg"].flatten() for i in sorted(opt_state["state"])]
    )


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_nodes_average_gradients_and_rank_0_alone_writes(demo_work, tmp_path):
    """Two torchrun "nodes" of one CPU process each (--nnodes 2, c10d rendezvous on
    localhost, as on a cluster): rank 0 alone writes, the ranks read different samples, and the
    step they take is the one the mean of both ranks' gradients gives (DDP averaged them), not
    either rank's own."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = _free_port()
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--rdzv-backend",
                "c10d",
                "--rdzv-endpoint",
                f"127.0.0.1:{port}",
                "--rdzv-id",
                "fd2talk-test",
                "-m",
                "fd2talk.model.cli",
                "motion",
                "--shards",
                str(demo_work / "shards"),
                "--out",
                str(out),
                "--steps",
                "1",
                "--batch-size",
                "4",
                "--lambda-sync",
                "0",
                "--val-every",
                "1",
                "--log-every",
                "1",
                "--device",
                "cpu",
                "-q",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        errs = [node.communicate(timeout=300)[1] for node in nodes]
    finally:  # a node that failed must not leave the other waiting on the rendezvous
        for node in nodes:
            if node.poll() is None:
                node.kill()
                node.wait()
    for node, err in zip(nodes, errs, strict=True):
        assert node.returncode == 0, err[-3000:]
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["world"] == 2 and state["step"] == 1
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert len([r for r in rows if '"train"' in r]) == 1  # rank 0 alone writes
    assert (out / "model" / "model_index.json").is_file()
    shards = str(demo_work / "shards")
    stream = data.StreamConfig(batch_size=4, epoch_batches=500)
    first = [
        next(
            data.batches_from(
                data.split_shards(shards, "train"), stream, data.MOTION_FIELDS, 0, 0, rank, 2
            )
        )
        for rank in (0, 1)
    ]
    assert not torch.equal(first[0]["exp"], first[1]["exp"])  # the ranks' samples differ
    ddp = _first_moment(state["optimizers"]["exp"])
    both, rank0 = _one_step(shards, (0, 1)), _one_step(shards, (0,))
    err_both = float((ddp - both).norm() / both.norm())
    err_rank0 = float((ddp - rank0).norm() / both.norm())
    print(
        f"DDP's gradient (Adam's first moment) vs the mean of both ranks' gradients: relative "
        f"error {err_both:.2e}; vs rank 0's own: {err_rank0:.2f}"
    )
    assert err_both < 1e-4 and err_rank0 > 0.1


def _torchrun(demo_work, out, steps: int, *extra: str, procs: int = 2):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(procs),
            "--master_port",
            str(_free_port()),
            "-m",
            "fd2talk.model.cli",
            "motion",
            "--shards",
            str(demo_work / "shards"),
            "--out",
            str(out),
            "--steps",
            str(steps),
            "--batch-size",
            "4",
            "--lambda-sync",
            "0",
            "--val-every",
            "2",
            "--log-every",
            "1",
            "--device",
            "cpu",
            "-q",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )


def test_torchrun_resume_is_bit_for_bit_and_on_another_world_continues(demo_work, tmp_path):
    """Each rank's own noise generator and RNGs are saved and restored: two processes for
    2 + 2 steps with a resume between equal 4 straight steps. One process resumes a
    two-process run too: the step count goes on, the data stream from the same point, with
    fresh noise (not bit-for-bit), and it says so."""
    for run, steps in (("straight", [4]), ("halves", [2, 4])):
        for i, n in enumerate(steps):
            proc = _torchrun(demo_work, tmp_path / run, n, *(["--resume"] if i else []))
            assert proc.returncode == 0, proc.stderr[-3000:]
    step_a, a = _checkpoint_tensors(tmp_path / "straight" / "checkpoint.pt")
    step_b, b = _checkpoint_tensors(tmp_path / "halves" / "checkpoint.pt")
    assert step_a == step_b == 4 and set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ranks = [
        torch.load(tmp_path / r / "checkpoint.pt", weights_only=False)["ranks"]
        for r in ("straight", "halves")
    ]
    assert len(ranks[0]) == 2 and not torch.equal(
        ranks[0][0]["generator"], ranks[0][1]["generator"]
    )
    for x, y in zip(*ranks, strict=True):
        assert torch.equal(x["generator"], y["generator"])
    proc = _torchrun(demo_work, tmp_path / "straight", 6, "--resume", procs=1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "was trained by 2 processes, this run has 1" in proc.stderr
    state = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=False)
    assert state["step"] == 6 and state["world"] == 1 and len(state["ranks"]) == 1
    rows = [
        json.loads(r) for r in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    _, c = _checkpoint_tensors(tmp_path / "straight" / "checkpoint.pt")
    assert any(not torch.equal(a[k], c[k]) for k in a)  # it did train on


def test_bad_inputs_are_clear_errors(demo_work, tmp_path):
    shards = demo_work / "shards"
    base = dict(shards=str(shards), steps=2, batch_size=4, device="cpu", val_every=100)
    with pytest.raises(UserError, match="needs a pre-trained lip expert"):
        train_motion(MotionTrainConfig(out=str(tmp_path / "a"), **base), progress=False)
    with pytest.raises(UserError, match="split 'nope' has no clips"):
        train_motion(
            MotionTrainConfig(out=str(tmp_path / "b"), lambda_sync=0, val_split="nope", **base),
            progress=False,
        )
    # the shards re-made in place with another coefficient backend under a run: refused on
    # resume (another shard folder is a changed setting, refused before this)
    own = rewrite_shards(shards, tmp_path / "own", lambda sample: None)
    run = tmp_path / "c"
    train_motion(
        MotionTrainConfig(**{**base, "shards": str(own)}, out=str(run), lambda_sync=0),
        progress=False,
    )

    def fewer_dims(sample):
        meta = json.loads(sample["json"])
        meta["exp_dim"] = 40
        sample["json"] = json.dumps(meta).encode()
        exp = np.load(__import__("io").BytesIO(sample["exp.npy"]))
        sample["exp.npy"] = npy(np.ascontiguousarray(exp[:, :40]))

    rewrite_shards(shards, own, fewer_dims)
    with pytest.raises(UserError, match="exp dim 52 .* shards have 40"):
        train_motion(
            MotionTrainConfig(**{**base, "shards": str(own)}, out=str(run), lambda_sync=0),
            resume=True,
            progress=False,
        )
    with pytest.raises(UserError, match=r"other settings \(shards: "):
        train_motion(
            MotionTrainConfig(
                **{**base, "shards": str(tmp_path / "elsewhere")}, out=str(run), lambda_sync=0
            ),
            resume=True,
            progress=False,
        )
    model = motion.load_motion(run / "checkpoint.pt", "cpu")
    with pytest.raises(UserError, match=r"take.* \(F, 80\) logmel"):
        motion.sample(model, np.zeros((30, 768), np.float32), steps=2)


def test_cli_errors_are_one_line(demo_work, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from fd2talk.cli.train import main; main()",
            "motion",
            "--shards",
            str(demo_work / "shards"),
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: --lambda-sync > 0 needs a pre-trained lip expert" in proc.stderr


@pytest.mark.gpu
def test_cuda_training_with_bf16_autocast_and_sampling(demo_work, lip_expert, tmp_path):
    out = tmp_path / "cuda"
    train_motion(
        MotionTrainConfig(
            shards=str(demo_work / "shards"),
            out=str(out),
            steps=4,
            batch_size=8,
            lambda_sync=0.1,
            lip_expert=str(lip_expert[0]),
            val_every=2,
            device="cuda",
        ),
        progress=False,
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train")
    model = motion.load_motion(out / "checkpoint.pt", "cuda")
    clip = next(data.iter_clips(demo_work / "shards", "test"))
    result = motion.sample(model, clip["audio"], steps=5)
    assert result["exp"].shape == (len(clip["audio"]), 52) and np.isfinite(result["exp"]).all()


def test_single_dit_ablation_trains_exports_and_samples(demo_work, lip_expert, tmp_path):
    from fd2talk.model.store.folder import export

    base = dict(
        shards=str(demo_work / "shards"),
        batch_size=4,
        lambda_sync=0.1,
        lip_expert=str(lip_expert[0]),
        val_every=3,
        save_every=3,
        log_every=1,
        epoch_batches=4,
        device="cpu",
        single_dit=True,
        lr=1e-3,
    )
    out = tmp_path / "single"
    losses = train_motion(MotionTrainConfig(out=str(out), steps=6, **base), progress=False)
    assert set(losses) >= {"loss_joint"}  # one network, validated on [beta, p] jointly
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert {k.split(".")[0] for k in state["ema"]} == {"joint"}
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().split("\n") if x]
    assert all("loss_sync" in r for r in rows if r["split"] == "train")  # L_sync on beta
    folder = export([str(out)], tmp_path / "model")
    model = motion.load_motion(folder, "cpu")
    assert list(model.nets) == ["joint"]
    clip = next(data.iter_clips(demo_work / "shards", "test"))
    m = motion.sample(model, clip["audio"][:40], steps=4)
    assert m["exp"].shape == (40, clip["exp"].shape[1]) and m["pose"].shape == (40, 6)
    assert np.isfinite(m["exp"]).all() and m["exp"].std() > 0
    with pytest.raises(UserError, match=r"other settings \(single_dit: True -> False\)"):
        train_motion(
            MotionTrainConfig(out=str(out), steps=8, **{**base, "single_dit": False}),
            resume=True,
            progress=False,
        )


def test_a_fold_run_leaves_its_fold_out(demo_work, tmp_path):
    """`--fold K/N` trains on the other folds' clips only (statistics too) and records which
    it left out; a resume on shards whose fold holds other clips is refused."""
    shards = demo_work / "shards"
    base = dict(
        shards=str(shards),
        steps=2,
        batch_size=4,
        device="cpu",
        val_every=100,
        lambda_sync=0,
        fold="1/2",
    )
    out = tmp_path / "fold"
    train_motion(MotionTrainConfig(out=str(out), **base), progress=False)
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    held = fold_keys(shards, 1, 2)
    assert state["extras"]["fold"] == {"fold": "1/2", "held_out": held}
    from fd2talk.model.data.normalize import Stats

    kept = [c for c in data.iter_clips(shards, "train") if c["key"] not in held]
    want, full = (Stats.compute(c).state_dict() for c in (kept, data.iter_clips(shards, "train")))
    got = state["extras"]["stats"]
    assert got["frames"] == want["frames"] != full["frames"]
    for k, v in got["mean"].items():
        np.testing.assert_allclose(v, want["mean"][k], rtol=1e-5, atol=1e-6)
    own = rewrite_shards(shards, tmp_path / "own", lambda sample: None)
    run = tmp_path / "moved"
    train_motion(MotionTrainConfig(out=str(run), **{**base, "shards": str(own)}), progress=False)
    first = sorted(c["key"] for c in kept)[0]

    def last(sample):  # renamed to sort last: every fold's clips shift
        if sample["__key__"] == first:
            sample["__key__"] = "zz" + first

    rewrite_shards(shards, own, last)
    with pytest.raises(UserError, match="leaves out other clips"):
        train_motion(
            MotionTrainConfig(out=str(run), **{**base, "shards": str(own), "steps": 3}),
            resume=True,
            progress=False,
        )
