"""Tar shards (webdataset layout): `workbench data shard`, `data check`, disjoint ranks, exact resume."""

import io
import json
import tarfile

import pytest
from mlflow.tracking import MlflowClient
from tiny_config import tiny_run
from typer.testing import CliRunner

from workbench import recorded_run, train
from workbench.cli import app
from workbench.config import load_config
from workbench.data.shards import ShardOrder, expand_braces, index_shards, shard_paths
from workbench.errors import ConfigError


@pytest.fixture(scope="module")
def shards(shapes_tiny, tmp_path_factory):
    """ShapesWorld tiny's 64 pre-training pairs in 8 shards of 8, written by the CLI."""
    out = tmp_path_factory.mktemp("shards")
    result = CliRunner().invoke(app, ["data", "shard", str(shapes_tiny), str(out), "--per-shard", "8"])
    assert result.exit_code == 0, result.output
    pattern = f"{out}/{{000000..000007}}.tar"
    assert pattern in result.output
    return pattern


def test_brace_notation_expands_ranges_and_lists():
    assert expand_braces("/d/{000..002}.tar") == ["/d/000.tar", "/d/001.tar", "/d/002.tar"]
    assert expand_braces("{a,b}/{8..10}.tar") == ["a/8.tar", "a/9.tar", "a/10.tar", "b/8.tar", "b/9.tar", "b/10.tar"]
    with pytest.raises(ConfigError, match="runs backwards"):
        expand_braces("{5..2}.tar")


def test_shards_hold_every_pair_with_its_caption(shapes_tiny, shards):
    cfg = load_config("base", [f"data.root={shapes_tiny}", f"data.pretrain_shards={shards}"])
    index = index_shards(shard_paths(cfg.data))
    assert len(index) == 64 and list(index.counts) == [8] * 8 and not index.problems
    entries = json.loads((shapes_tiny / "pretrain.json").read_text())
    first = entries[0]["caption"]
    assert index.captions(0) == (first if isinstance(first, list) else [first])
    assert index.image_file(5).read() == (shapes_tiny / entries[5]["image"]).read_bytes()


def test_ranks_read_disjoint_shards_and_each_epoch_covers_every_sample_once(shapes_tiny, shards):
    cfg = load_config("base", [f"data.root={shapes_tiny}", f"data.pretrain_shards={shards}"])
    index = index_shards(shard_paths(cfg.data))
    lanes = [ShardOrder(index, seed=3, lane=r, lanes=2) for r in range(2)]
    for epoch in range(3):
        read = [{index.shard_of(i) for i in lane.epoch(epoch)} for lane in lanes]
        assert read[0].isdisjoint(read[1]) and len(read[0]) == len(read[1]) == 4
        assert sorted([*lanes[0].epoch(epoch), *lanes[1].epoch(epoch)]) == list(range(64))
    one = ShardOrder(index, seed=3)
    assert [one[p] for p in range(64, 128)] == list(one.epoch(1))  # position -> sample, epochs back to back
    assert list(one.epoch(0)) != list(one.epoch(1))  # reshuffled every epoch
    with pytest.raises(ConfigError, match="8 shards for 9 ranks"):
        ShardOrder(index, seed=0, lane=0, lanes=9)


def test_data_check_finds_unreadable_images_and_missing_captions(shapes_tiny, shards, tmp_path):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for name, data in (
            ("a.png", b"not a png"),
            ("a.txt", b"a broken image."),
            ("b.png", b"x"),
            ("c.json", b'{"caption": ""}'),
            ("c.png", (shapes_tiny / "images" / "000000.png").read_bytes()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    base = ["--set", f"data.root={shapes_tiny}", "--set", "data.shapes_size=tiny", "--set", "eval.tasks=[]"]
    good = CliRunner().invoke(app, ["data", "check", *base, "--set", f"data.pretrain_shards={shards}"])
    assert good.exit_code == 0 and "64" in good.output, good.output
    result = CliRunner().invoke(app, ["data", "check", *base, "--set", f"data.pretrain_shards={bad}"])
    assert result.exit_code == 2
    assert "unreadable image" in result.output and "bad.tar:a.png" in result.output
    assert "bad.tar:b: no caption (.txt/.json); left out" in result.output.replace("\n", "")
    assert "bad.tar:c.json: no caption" in result.output.replace("\n", "")


def test_a_run_from_shards_killed_and_resumed_ends_like_an_uninterrupted_one(shapes_tiny, shards, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = (
        f"data.pretrain_shards={shards}",
        "eval.tasks=[]",
        "train.checkpoint_every=5",
        "augment.image=true",
        "augment.flip=true",
        "augment.text=true",
        "tracking.system_metrics=false",
    )

    def cfg():
        return load_config("base", tiny_run(shapes_tiny, store, tmp_path / "out", *extra, steps=20))

    straight = train.run(cfg(), progress=False)
    killed = train.run(cfg(), progress=False, stop_after=10)
    assert killed.status == "RUNNING" and killed.steps == 10
    resumed = train.run(recorded_run.load_run_config(killed.run_id, store), resume_run_id=killed.run_id, progress=False)
    assert resumed.status == "FINISHED" and resumed.final_loss == straight.final_loss

    client = MlflowClient(store)

    def losses(run_id):
        return [
            (m.step, m.value)
            for m in sorted(client.get_metric_history(run_id, "train/loss/total"), key=lambda m: m.step)
        ]

    assert losses(resumed.run_id) == losses(straight.run_id) and len(losses(straight.run_id)) == 10
    json_run = train.run(
        load_config("base", tiny_run(shapes_tiny, store, tmp_path / "out", *extra[1:], steps=20)), progress=False
    )
    assert losses(json_run.run_id) != losses(straight.run_id)  # the shards' order is their own, not pretrain.json's


def test_bad_shard_options_are_one_clean_line_and_exit_2(shapes_tiny, tmp_path):
    runner = CliRunner()
    zero = runner.invoke(app, ["data", "shard", str(shapes_tiny), str(tmp_path / "out"), "--per-shard", "0"])
    assert zero.exit_code == 2 and "--per-shard: 0 is not allowed" in zero.output and "Traceback" not in zero.output
    assert not (tmp_path / "out").exists()
    base = ["--set", f"data.root={shapes_tiny}", "--set", "data.shapes_size=tiny", "--set", "eval.tasks=[]"]
    missing = runner.invoke(app, ["data", "check", *base, "--set", f"data.pretrain_shards={tmp_path}/{{0..3}}.tar"])
    assert missing.exit_code == 2 and "data.pretrain_shards: 4 of 4 shards not found" in missing.output
    backwards = runner.invoke(
        app,
        ["run", *base, "--set", "data.pretrain_shards={5..2}.tar", "--set", f"tracking.uri=sqlite:///{tmp_path}/m.db"],
    )
    assert backwards.exit_code == 2 and "data.pretrain_shards: range {5..2} runs backwards" in backwards.output
    assert "Traceback" not in missing.output + backwards.output


def test_shard_batches_are_a_function_of_the_step_not_of_the_worker_count(shapes_tiny, shards):
    import torch

    from workbench.data.stream import PretrainStream
    from workbench.data.tokenizer import load_tokenizer

    def stream(workers):
        cfg = load_config(
            "base",
            [
                f"data.root={shapes_tiny}",
                f"data.pretrain_shards={shards}",
                "train.batch_size=8",
                "augment.image=true",
                f"data.num_workers={workers}",
            ],
        )
        return PretrainStream(cfg, load_tokenizer(cfg.data), seed=1)

    def take(batches, n):
        return [next(batches) for _ in range(n)]

    straight = take(stream(0).batches(0), 10)  # 10 steps of 8 = 80 > 64 samples: into epoch 1
    resumed = take(stream(0).batches(7), 3)
    workers = take(stream(2).batches(7), 3)
    for a, b, c in zip(straight[7:], resumed, workers, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["image"], c["image"])
        assert torch.equal(a["text_ids"], b["text_ids"]) and torch.equal(a["caption_id"], c["caption_id"])
    assert sorted(torch.cat([b["image_id"] for b in straight[:8]]).tolist()) == list(range(64))  # epoch 0: each once


def test_two_ranks_stream_from_disjoint_shards(shapes_tiny, shards):
    from workbench.data.stream import PretrainStream
    from workbench.data.tokenizer import load_tokenizer

    cfg = load_config("base", [f"data.root={shapes_tiny}", f"data.pretrain_shards={shards}", "train.batch_size=8"])
    tokenizer = load_tokenizer(cfg.data)
    ranks = [PretrainStream(cfg, tokenizer, seed=0, rank=r, world_size=2) for r in range(2)]
    index = ranks[0].datasets["image"].index
    read = []
    for stream in ranks:  # 8 steps x 4 pairs per rank = one epoch of each rank's 32 samples
        ids = [i for step in range(8) for _, i, _ in stream.step_keys(step)]
        assert sorted(ids) == sorted(set(ids)) and len(ids) == 32
        read.append({index.shard_of(i) for i in ids})
    assert read[0].isdisjoint(read[1]) and len(read[0] | read[1]) == 8
