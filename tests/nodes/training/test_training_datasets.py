"""LoadImageDataset and DemoSceneDataset: the two caption layouts, every bad file named at once
before training, contained paths, and the demo generator's scenes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from nodeflow import events as ev
from nodeflow.builder import WorkflowBuilder
from nodeflow.executor import Executor
from nodes.training.folder import DatasetProblems, read_image_folder
from nodes.training.trainer import batch_indices


def picture(path: Path, color: str = "red", size: tuple[int, int] = (20, 12)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_txt_captions_are_read_and_pictures_centre_cropped_to_size(tmp_path: Path) -> None:
    picture(tmp_path / "a.png", "red", (20, 12))
    (tmp_path / "a.txt").write_text("a red thing\n")
    picture(tmp_path / "sub" / "b.jpg", "blue", (10, 30))
    (tmp_path / "sub" / "b.txt").write_text("a blue thing")
    data = read_image_folder(tmp_path, 8)
    assert data.captions == ("a red thing", "a blue thing")
    pixels, captions = data.examples([1, 0])
    assert pixels.shape == (2, 3, 8, 8) and captions == ["a blue thing", "a red thing"]
    assert pixels[0, 2].min() > 0.9 and pixels[0, 0].max() < -0.9  # blue, in -1..1


def test_metadata_jsonl_is_the_caption_source_when_present(tmp_path: Path) -> None:
    picture(tmp_path / "one.png")
    picture(tmp_path / "two.png", "green")
    picture(tmp_path / "unlisted.png")  # not in metadata.jsonl: not training data
    lines = [{"file_name": "one.png", "text": "first"}, {"file_name": "two.png", "text": "second"}]
    (tmp_path / "metadata.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    assert read_image_folder(tmp_path, 8).captions == ("first", "second")


def test_every_broken_picture_and_missing_caption_is_named_at_once(tmp_path: Path) -> None:
    picture(tmp_path / "good.png")
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "broken.txt").write_text("a caption for a broken file")
    picture(tmp_path / "uncaptioned.png")
    picture(tmp_path / "empty.png")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DatasetProblems) as raised:
        read_image_folder(tmp_path, 8)
    problems = raised.value.problems
    assert len(problems) == 3
    text = str(raised.value)
    assert "broken.png: not a readable image" in text
    assert "uncaptioned.png: no caption (uncaptioned.txt is missing)" in text
    assert "empty.png: no caption (empty.txt is empty)" in text


def test_metadata_problems_are_named_by_file_and_line(tmp_path: Path) -> None:
    picture(tmp_path / "ok.png")
    lines = [
        json.dumps({"file_name": "ok.png", "text": "fine"}),
        json.dumps({"file_name": "gone.png", "text": "no such file"}),
        json.dumps({"file_name": "ok.png"}),
        "{not json",
        json.dumps({"file_name": "../outside.png", "text": "escapes"}),
    ]
    (tmp_path / "metadata.jsonl").write_text("\n".join(lines))
    with pytest.raises(DatasetProblems) as raised:
        read_image_folder(tmp_path, 8)
    text = str(raised.value)
    assert "gone.png: no such picture" in text
    assert "ok.png: no caption (metadata.jsonl line 3 has no text)" in text
    assert "metadata.jsonl line 4: not JSON" in text
    assert "../outside.png: outside the dataset folder" in text


def test_a_bad_dataset_fails_before_training_starts_naming_the_files(
    make_executor: Callable[..., Executor], tmp_path: Path
) -> None:
    folder = tmp_path / "input" / "set"
    picture(folder / "fine.png")
    (folder / "fine.txt").write_text("fine")
    (folder / "bad.png").write_bytes(b"\x89PNG broken")
    (folder / "bad.txt").write_text("bad")
    picture(folder / "bare.png")
    executor = make_executor()
    seen: list[ev.Event] = []
    executor.subscribe(seen.append)
    b = WorkflowBuilder()
    model = b.add("LoadCheckpoint", id="model", path="tiny")
    data = b.add("LoadImageDataset", id="data", path="set", size=16)
    b.add("TrainLoRA", id="train", unet=model.unet, text_encoder=model.text_encoder,
          vae=model.vae, dataset=data.dataset, steps=2)  # fmt: skip
    result = executor.run(b.build(), targets=["train"])
    assert not result.ok and result.error.node == "data"
    assert "bad.png" in result.error.message and "bare.png" in result.error.message
    assert not any(isinstance(e, ev.NodeStarted) and e.node == "train" for e in seen)


@pytest.mark.parametrize("path", ["../elsewhere", "/etc"])
def test_a_dataset_path_outside_the_input_directory_is_refused(
    make_executor: Callable[..., Executor], path: str
) -> None:
    b = WorkflowBuilder()
    b.add("LoadImageDataset", id="data", path=path, size=16)
    result = make_executor().run(b.build(), targets=["data"])
    assert not result.ok
    assert "outside" in result.error.message or "inside the input directory" in result.error.message


def test_demo_scene_dataset_holds_the_generators_scenes_in_the_style(
    make_executor: Callable[..., Executor],
) -> None:
    import random

    import numpy as np

    from nodes.demo.dataset import caption, render, sample_scene

    b = WorkflowBuilder()
    b.add("DemoSceneDataset", id="data", style="outlined", size=5, seed=3)
    data = make_executor().run(b.build(), targets=["data"]).values["data"]["dataset"]
    rng = random.Random(3)
    scenes = [sample_scene(rng, split="train", style="outlined") for _ in range(5)]
    assert data.captions == tuple(caption(s) for s in scenes)
    assert len(data) == 5 and data.size == 64
    assert np.array_equal(np.asarray(data.pictures[4]), np.asarray(render(scenes[4])))


def test_batches_visit_every_example_once_per_epoch_and_depend_only_on_seed_and_step() -> None:
    first_epoch = [i for step in range(5) for i in batch_indices(10, 2, 7, step)]
    assert sorted(first_epoch) == list(range(10))
    assert batch_indices(10, 4, 7, 2) == batch_indices(10, 4, 7, 2)
    straddling = batch_indices(10, 4, 7, 2)  # examples 8, 9 of epoch 0 and 0, 1 of epoch 1
    assert straddling[:2] == first_epoch[8:10]
    assert batch_indices(10, 4, 8, 0) != batch_indices(10, 4, 7, 0)
