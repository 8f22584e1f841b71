"""Recipes: the runs each recipe trains, in order, and what each trains from (a run is trained
again only when one of those changed)."""

from pathlib import Path

from fd2talk.model.corpus.recipe import CORPUS, IMAGE_SIZE
from fd2talk.model.demo.recipe import DEMO
from fd2talk.model.training.recipe import inputs


def test_runs_train_in_order_from_the_runs_before_them(tmp_path):
    for recipe in (DEMO, CORPUS):
        runs = recipe.runs(str(tmp_path / "shards"), tmp_path / "runs", seed=3)
        names = [name for name, _ in runs]
        assert names == ["lipsync"] + ["motion"] * (1 + recipe.folds) + ["autoencoder", "frames"]
        out = {Path(cfg.out).name: cfg for _, cfg in runs}
        r = tmp_path / "runs"
        assert inputs(out["lipsync"]) == set() and inputs(out["autoencoder"]) == set()
        assert inputs(out["motion"]) == {r / "lipsync"}
        folds = {r / f"motion_fold{k}" for k in range(recipe.folds)}
        assert inputs(out["frames"]) == {r / "autoencoder", r / "motion"} | folds
        assert {cfg.seed for _, cfg in runs} == {3}
        assert [cfg.fold for name, cfg in runs if name == "motion"][1:] == [
            f"{k}/{recipe.folds}" for k in range(recipe.folds)
        ]


def test_the_corpus_recipe_draws_128_px_frames_from_references_at_the_unet_input():
    frames, ae = CORPUS.frames, CORPUS.autoencoder
    assert frames["image_size"] == ae["image_size"] == IMAGE_SIZE == 128
    assert frames["ref_input"] and frames["relative_pose"] and frames["ref_frame"] == "random"
