"""The bad-input corpus (`tests/bad_inputs/`) through the real CLI: every case is one clean line.

Each case feeds one bad input to `workbench` (CliRunner on `workbench.cli.app`,
in a fresh working directory) and must end with exit code 2 (bad input) or 1
(runtime), exactly one line on stderr that names the field or path, no
traceback, and nothing half-written: no temp files, no checkpoint, no MLflow
run left RUNNING (a run is only created where the case says so, and then ends
FAILED). Validation fails before any training; only the corrupt image is found
while loading the first batch. `test_the_whole_corpus_was_tried_and_every_error_was_clean`
counts the corpus and prints "N bad inputs tried, N clean".
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from tiny_config import tiny_run
from typer.testing import CliRunner

from workbench.cli import app

CORPUS = Path(__file__).parent / "bad_inputs"
GOOD_PRETRAIN = [{"image": "images/ok.png", "caption": ["a red square on the left."]}]
GOOD_VQA = [{"question_id": 1, "image": "images/ok.png", "question": "what colour is the square?", "answer": ["red"]}]


@dataclass
class Env:
    """Where one case runs: its own directory, the shared store and ShapesWorld `tiny`."""

    tmp: Path
    shapes: Path
    store: str
    closed_port: int
    experiment: str
    checkpoint: Path | None = None  # the damaged checkpoint a case placed

    @property
    def root(self) -> Path:
        return self.tmp / "data"

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def sets(self, *extra: str) -> list[str]:
        """--set options of a tiny CPU run (no eval) in this case's own MLflow experiment, plus `extra`."""
        overrides = tiny_run(
            self.shapes, self.store, self.out, "eval.tasks=[]", f"tracking.experiment={self.experiment}", *extra
        )
        return [arg for override in overrides for arg in ("--set", override)]

    def data(self, pretrain: str | None = None, **files: str) -> list[str]:
        """A small real-data root: images/ok.png (a ShapesWorld image), images/corrupt.png and
        videos/short.npy from the corpus, pretrain.json (good, or the corpus file `pretrain`),
        and `files` (name in the root -> corpus file). Returns the overrides that select it."""
        (self.root / "images").mkdir(parents=True)
        (self.root / "videos").mkdir()
        shutil.copy(self.shapes / "images" / "000000.png", self.root / "images" / "ok.png")
        shutil.copy(CORPUS / "corrupt.png", self.root / "images" / "corrupt.png")
        shutil.copy(CORPUS / "short_video.npy", self.root / "videos" / "short.npy")
        if pretrain:
            shutil.copy(CORPUS / pretrain, self.root / "pretrain.json")
        else:
            (self.root / "pretrain.json").write_text(json.dumps(GOOD_PRETRAIN))
        (self.root / "vqa_test.json").write_text(json.dumps(GOOD_VQA))
        for name, corpus_file in files.items():
            path = self.root / name.replace("__", ".").replace("_SLASH_", "/")
            shutil.copy(CORPUS / corpus_file, path)
        return [f"data.root={self.root}", "data.generate=false", f"data.tokenizer={self.shapes / 'tokenizer'}"]

    def linked(self, pretrain: str) -> list[str]:
        """`data(pretrain)` plus images/link.png: a symbolic link to an image outside the data root."""
        overrides = self.data(pretrain)
        (self.root / "images" / "link.png").symlink_to(self.shapes / "images" / "000001.png")
        return overrides

    def garbage_store(self) -> str:
        """An MLflow store URI whose database file is the corpus' garbage.db."""
        shutil.copy(CORPUS / "garbage.db", self.tmp / "store.db")
        return f"sqlite:///{self.tmp / 'store.db'}"

    def finished_run(self) -> str:
        """A FINISHED 2-step tiny run in this case's experiment (its checkpoint under tmp/checkpoints)."""
        from workbench import train
        from workbench.config import load_config

        overrides = tiny_run(
            self.shapes,
            self.store,
            self.tmp / "checkpoints",
            "eval.tasks=[]",
            f"tracking.experiment={self.experiment}",
            steps=2,
        )
        return train.run(load_config("base", overrides), progress=False).run_id

    def deleted_run(self) -> str:
        """A run in MLflow's trash (deleted, not purged)."""
        run_id = self.killed_run("truncated_checkpoint.pt")
        MlflowClient(self.store).delete_run(run_id)
        return run_id

    def sweep(self, spec: str, *extra: str) -> list[str]:
        return [
            "sweep",
            spec,
            "--slots",
            "1",
            "--no-progress",
            "--tracking-uri",
            self.store,
            "--set",
            f"train.out_dir={self.out}",
            *extra,
        ]

    def blocked(self, name: str) -> Path:
        """A path that cannot become a directory: its parent is a regular file."""
        (self.tmp / "a_file").write_text("")
        return self.tmp / "a_file" / name

    def killed_run(self, checkpoint: str) -> str:
        """An MLflow run left KILLED (as by a pre-emption) whose last checkpoint is the corpus file."""
        from workbench import tracking
        from workbench.config import load_config

        overrides = tiny_run(
            self.shapes, self.store, self.tmp / "checkpoints", "eval.tasks=[]", f"tracking.experiment={self.experiment}"
        )
        tracker = tracking.start_run(load_config("base", overrides))
        tracker.finish("KILLED")
        self.checkpoint = self.tmp / "checkpoints" / tracker.run_id / "last.pt"
        self.checkpoint.parent.mkdir(parents=True)
        shutil.copy(CORPUS / checkpoint, self.checkpoint)
        return tracker.run_id

    def owned_run(self) -> str:
        """A KILLED run whose owner tag names a live process on this host (pytest's parent), beating now."""
        import time

        from workbench.run_lease import OWNER_TAG

        run_id = self.killed_run("truncated_checkpoint.pt")
        owner = {"host": socket.gethostname(), "pid": os.getppid(), "since": time.time(), "heartbeat": time.time()}
        MlflowClient(self.store).set_tag(run_id, OWNER_TAG, json.dumps(owner))
        return run_id

    def run_on_other_data(self) -> str:
        """A KILLED run recorded as trained on a data set other than the one its data.root holds now."""
        run_id = self.killed_run("truncated_checkpoint.pt")
        MlflowClient(self.store).set_tag(run_id, "workbench.data_hash", "0" * 64)
        return run_id

    def shapes_with(self, name: str) -> Path:
        """A copy of ShapesWorld tiny with a file of the user's (`name`) in it."""
        root = self.tmp / "shapes"
        shutil.copytree(self.shapes, root, ignore=shutil.ignore_patterns("warmstart"))
        (root / name).write_text("the user's")
        return root

    def with_fifo(self, overrides: list[str]) -> list[str]:
        os.mkfifo(self.root / "images" / "pipe.png")  # opening it would wait for a writer forever
        return overrides

    def run(self, *extra: str, data: list[str] = ()) -> list[str]:
        return ["run", *self.sets(*data, *extra)]

    def check(self, *extra: str, data: list[str]) -> list[str]:
        return ["data", "check", *[arg for override in (*data, *extra) for arg in ("--set", override)]]


@dataclass(frozen=True)
class Case:
    id: str
    args: Callable[[Env], list[str]]  # the command line
    names: Callable[[Env], str]  # what the error line must contain: the field or path (and value)
    code: int = 2
    uses: tuple[str, ...] = ()  # corpus files the case reads
    where: str = "stderr"  # "output": the named problem is listed on stdout (data check's table + list)
    runs: tuple[str, ...] = ()  # MLflow run statuses the case may leave in its experiment


def _text(value: str) -> Callable[[Env], str]:
    return lambda env: value


CASES = [
    # ------------------------------------------------------------------ config
    Case(
        "malformed-yaml",
        lambda e: ["run", "-e", str(CORPUS / "malformed.yaml")],
        _text(f"{CORPUS / 'malformed.yaml'} line 5: expected ',' or '}}', but got '<scalar>'"),
        uses=("malformed.yaml",),
    ),
    Case(
        "yaml-not-a-mapping",
        lambda e: ["run", "-e", str(CORPUS / "not_a_mapping.yaml")],
        _text(f"{CORPUS / 'not_a_mapping.yaml'}: expected a mapping of config sections, got list"),
        uses=("not_a_mapping.yaml",),
    ),
    Case(
        "unknown-key-yaml",
        lambda e: ["run", "-e", str(CORPUS / "unknown_key.yaml")],
        _text("unknown config key 'objectives.scl.image_mask_rato' — did you mean 'objectives.scl.image_mask_ratio'?"),
        uses=("unknown_key.yaml",),
    ),
    Case(
        "unknown-key-set",
        lambda e: e.run("train.stpes=5"),
        _text("unknown config key 'train.stpes' — did you mean 'train.steps'?"),
    ),
    Case(
        "wrong-type-yaml",
        lambda e: ["run", "-e", str(CORPUS / "wrong_type.yaml")],
        _text("train.steps: 'many' is not an int"),
        uses=("wrong_type.yaml",),
    ),
    Case("wrong-type-set", lambda e: e.run("train.batch_size=2.5"), _text("train.batch_size: 2.5 is not an int")),
    Case(
        "ratio-negative",
        lambda e: e.run("objectives.scl.image_mask_ratio=-0.1"),
        _text("objectives.scl.image_mask_ratio: -0.1 is out of range — allowed: in [0.0, 1.0)"),
    ),
    Case(
        "ratio-one",
        lambda e: e.run("objectives.scl.image_mask_ratio=1.0"),
        _text("objectives.scl.image_mask_ratio: 1.0 is out of range — allowed: in [0.0, 1.0)"),
    ),
    Case(
        "ratio-not-a-number",
        lambda e: e.run("objectives.scl.image_mask_ratio=abc"),
        _text("objectives.scl.image_mask_ratio: 'abc' is not a float"),
    ),
    Case(
        "focal-gamma-negative",
        lambda e: e.run("objectives.itc.focal_gamma=-0.5"),
        _text("objectives.itc.focal_gamma: -0.5 is out of range — allowed: >= 0.0"),
    ),
    Case(
        "unknown-pooling",
        lambda e: e.run("model.vision.pooling=global"),
        _text("model.vision.pooling: 'global' is not one of frame_cls, global_cls, mean — did you mean 'global_cls'?"),
    ),
    Case(
        "unknown-mask-mode",
        lambda e: e.run("objectives.softmask.mode=hardd"),
        _text("objectives.softmask.mode: 'hardd' is not one of soft, hard, random, off — did you mean 'hard'?"),
    ),
    Case("lr-nan", lambda e: e.run("train.lr=nan"), _text("train.lr: nan is not a finite number")),
    Case(
        "set-without-value", lambda e: ["run", "--set", "train.steps"], _text("--set 'train.steps': expected KEY=VALUE")
    ),
    Case("unknown-experiment", lambda e: ["run", "-e", "bsae"], _text("unknown experiment 'bsae'")),
    Case(
        "unknown-eval-task",
        lambda e: e.run("eval.tasks=[retreival]"),
        _text(
            "eval.tasks: 'retreival' is not one of retrieval, video_retrieval, vqa, nlvr, ve — did you mean "
            "'retrieval'?"
        ),
    ),
    Case(
        "heads-do-not-divide-width",
        lambda e: e.run("model.vision.heads=5"),
        _text("model.vision.heads: 5 must divide model.vision.width=32"),
    ),
    # -------------------------------------------------------------------- data
    Case(
        "empty-data-set",
        lambda e: e.run(data=e.data("empty.json")),
        lambda e: f"no usable entries in {e.root / 'pretrain.json'}",
        uses=("empty.json",),
    ),
    Case(
        "missing-image",
        lambda e: e.run(data=e.data("missing_image.json")),
        lambda e: f"{e.root / 'pretrain.json'}[1].image: file not found: {e.root / 'images' / 'not_there.png'}",
        uses=("missing_image.json",),
    ),
    Case(
        "truncated-json",
        lambda e: e.run(data=e.data("truncated.json")),
        lambda e: f"{e.root / 'pretrain.json'}: invalid JSON at line 1 column",
        uses=("truncated.json",),
    ),
    Case(
        "json-not-a-list",
        lambda e: e.run(data=e.data("not_a_list.json")),
        lambda e: f"{e.root / 'pretrain.json'}: expected a JSON list of entries, got dict",
        uses=("not_a_list.json",),
    ),
    Case(
        "caption-wrong-type",
        lambda e: e.run(data=e.data("caption_wrong_type.json")),
        lambda e: f"{e.root / 'pretrain.json'}[0].caption: expected a string or a non-empty list of strings, got int 5",
        uses=("caption_wrong_type.json",),
    ),
    Case(
        "path-traversal",
        lambda e: e.run(data=e.data("path_traversal.json")),
        lambda e: f"{e.root / 'pretrain.json'}[0].image: path '../../../etc/passwd' climbs out of the image root",
        uses=("path_traversal.json",),
    ),
    Case(
        "absolute-path",
        lambda e: e.run(data=e.data("absolute_path.json")),
        lambda e: (
            f"{e.root / 'pretrain.json'}[0].image: absolute path '/etc/hostname' refused — set "
            "data.allow_absolute_paths=true"
        ),
        uses=("absolute_path.json",),
    ),
    Case(
        "corrupt-png",
        lambda e: e.run(data=e.data("corrupt_image.json")),
        lambda e: f"unreadable image {e.root / 'images' / 'corrupt.png'}",
        uses=("corrupt_image.json", "corrupt.png"),
        runs=("FAILED",),
    ),  # found when the first batch loads: the run ends FAILED, never RUNNING
    Case(
        "corrupt-png-data-check",
        lambda e: e.check("eval.tasks=[]", data=e.data("corrupt_image.json")),
        lambda e: f"pretrain.json: unreadable image {e.root / 'images' / 'corrupt.png'}",
        uses=("corrupt_image.json", "corrupt.png"),
        where="output",
    ),
    Case(
        "video-fewer-frames",
        lambda e: e.run(
            "data.video_pretrain_files=[video_pretrain.json]",
            "data.num_frames=4",
            data=e.data(video_pretrain__json="short_video.json"),
        ),
        lambda e: (
            f"{e.root / 'video_pretrain.json'}[0].video: {e.root / 'videos' / 'short.npy'} has 2 frames, "
            "fewer than data.num_frames=4"
        ),
        uses=("short_video.json", "short_video.npy"),
    ),
    Case(
        "missing-eval-file",
        lambda e: e.run("eval.tasks=[retrieval]", data=e.data()),
        lambda e: f"data file not found: {e.root / 'retrieval_test.json'}",
    ),  # before training, not after it
    Case(
        "vqa-answer-not-in-list",
        lambda e: e.check(
            "eval.tasks=[vqa]",
            data=e.data(vqa_train__json="vqa_unknown_answer.json", vqa_answers__json="vqa_answers.json"),
        ),
        lambda e: (
            f"{e.root / 'vqa_train.json'}[0].answer: ['mauve', 'lilac'] — none is in vqa_answers.json (3 answers)"
        ),
        uses=("vqa_unknown_answer.json", "vqa_answers.json"),
        where="output",
    ),
    # --------------------------------------------------- stores, paths, run ids
    Case(
        "tracking-uri-unreachable",
        lambda e: e.run(f"tracking.uri=http://127.0.0.1:{e.closed_port}"),
        lambda e: (
            f"tracking.uri: cannot reach the MLflow server 'http://127.0.0.1:{e.closed_port}' (Connection refused)"
        ),
    ),
    Case(
        "tracking-uri-scheme-typo",
        lambda e: e.run(f"tracking.uri=sqllite:///{e.tmp / 'mlflow.db'}"),
        _text("has no MLflow store scheme 'sqllite'"),
    ),
    Case(
        "out-dir-unwritable",
        lambda e: e.run(f"train.out_dir={e.blocked('out')}"),
        lambda e: f"train.out_dir: cannot create {e.blocked('out')}: {e.tmp / 'a_file'} is a file, not a directory",
    ),
    Case(
        "data-shapes-out-unwritable",
        lambda e: ["data", "shapes", "--size", "tiny", "--out", str(e.blocked("shapes"))],
        lambda e: f"--out: cannot create {e.blocked('shapes')}: {e.tmp / 'a_file'} is a file, not a directory",
    ),
    Case(
        "optuna-storage-typo",
        lambda e: [
            "sweep",
            "scl",
            "--slots",
            "1",
            "--no-progress",
            "--storage",
            "postgres://127.0.0.1:1/optuna",
            "--tracking-uri",
            e.store,
            "--set",
            f"train.out_dir={e.out}",
        ],
        _text("--storage 'postgres://127.0.0.1:1/optuna': cannot open the Optuna storage"),
    ),
    Case(
        "malformed-sweep-yaml",
        lambda e: [
            "sweep",
            str(CORPUS / "malformed_sweep.yaml"),
            "--slots",
            "1",
            "--no-progress",
            "--tracking-uri",
            e.store,
            "--set",
            f"train.out_dir={e.out}",
        ],
        _text(f"{CORPUS / 'malformed_sweep.yaml'} line 5: expected ',' or '}}', but got ':'"),
        uses=("malformed_sweep.yaml",),
    ),
    Case(
        "resume-truncated-checkpoint",
        lambda e: ["run", "--resume", e.killed_run("truncated_checkpoint.pt"), "--tracking-uri", e.store],
        lambda e: f"cannot load checkpoint {e.checkpoint}: PytorchStreamReader failed reading zip archive",
        uses=("truncated_checkpoint.pt",),
        runs=("KILLED",),
    ),  # refused before the run is touched: it stays KILLED
    Case(
        "resume-unknown-run",
        lambda e: ["run", "--resume", "0123abcd", "--tracking-uri", e.store],
        lambda e: f"--resume: no MLflow run '0123abcd' in {e.store}",
    ),
    Case(
        "from-unknown-run",
        lambda e: ["run", "--from", "0123abcd", "--tracking-uri", e.store],
        lambda e: f"--from: no MLflow run '0123abcd' in {e.store}",
    ),
    Case(
        "eval-unknown-run",
        lambda e: ["eval", "0123abcd", "--tracking-uri", e.store],
        lambda e: f"no MLflow run '0123abcd' in {e.store}",
    ),
    Case(
        "report-unknown-sweep",
        lambda e: ["report", "ablations", "nosuch", "--tracking-uri", e.store, "--out", str(e.tmp / "reports")],
        _text("SWEEP 'nosuch': no sweep of that name and no parent run of that id"),
    ),
    Case(
        "report-unknown-format",
        lambda e: [
            "report",
            "ablations",
            "--format",
            "docx",
            "--tracking-uri",
            e.store,
            "--out",
            str(e.tmp / "reports"),
        ],
        _text("--format: 'docx' is not one of md, csv, latex, html"),
    ),
    # ------------------------------------------------ config: YAML and values
    Case(
        "yaml-alias-bomb",
        lambda e: ["run", "-e", str(CORPUS / "alias_bomb.yaml")],
        _text(f"{CORPUS / 'alias_bomb.yaml'} line 2: anchor '&a' refused"),
        uses=("alias_bomb.yaml",),
    ),
    Case(
        "yaml-alias-bomb-config-show",
        lambda e: ["config", "show", "-e", str(CORPUS / "alias_bomb.yaml")],
        _text("anchor '&a' refused: config files may not use YAML anchors or aliases"),
        uses=("alias_bomb.yaml",),
    ),
    Case(
        "yaml-duplicate-key",
        lambda e: ["run", "-e", str(CORPUS / "duplicate_key.yaml")],
        _text(f"{CORPUS / 'duplicate_key.yaml'} line 5: duplicate key 'train' (first on line 1)"),
        uses=("duplicate_key.yaml",),
    ),
    Case(
        "yaml-deep-nesting",
        lambda e: ["run", "-e", str(CORPUS / "deep_nesting.yaml")],
        _text("nested deeper than 64 levels"),
        uses=("deep_nesting.yaml",),
    ),
    Case(
        "yaml-not-utf8",
        lambda e: ["run", "-e", str(CORPUS / "not_utf8.yaml")],
        _text(f"{CORPUS / 'not_utf8.yaml'}: not UTF-8 text"),
        uses=("not_utf8.yaml",),
    ),
    Case(
        "yaml-section-not-mapping",
        lambda e: ["run", "-e", str(CORPUS / "section_not_mapping.yaml")],
        _text("train: expected a mapping, got 5"),
        uses=("section_not_mapping.yaml",),
    ),
    Case("set-alias", lambda e: e.run("train.steps=&a 5"), _text("--set train.steps: anchor '&a' refused")),
    Case("out-dir-empty", lambda e: e.run("train.out_dir="), _text("train.out_dir: is empty")),
    Case("data-root-empty", lambda e: e.run("data.root="), _text("data.root: is empty")),
    Case("experiment-name-empty", lambda e: e.run("tracking.experiment="), _text("tracking.experiment: is empty")),
    Case(
        "mlm-mask-prob-zero",
        lambda e: e.run("objectives.mlm.mask_prob=0"),
        _text("objectives.mlm.mask_prob: 0.0 with objectives.mlm.enabled=true masks no token"),
    ),
    Case(
        "pretrain-file-absolute",
        lambda e: e.run("data.pretrain_files=[/etc/passwd]"),
        _text("data.pretrain_files[0]: absolute path '/etc/passwd' refused"),
    ),
    Case(
        "pretrain-file-climbs",
        lambda e: e.run("data.pretrain_files=[../../pretrain.json]"),
        _text("data.pretrain_files[0]: path '../../pretrain.json' climbs out of data.root"),
    ),
    Case(
        "pretrain-file-empty-name",
        lambda e: e.run("data.pretrain_files=['']"),
        _text("data.pretrain_files[0]: is empty"),
    ),
    Case(
        "seed-negative",
        lambda e: e.run("train.seed=-1"),
        _text("train.seed: -1 is out of range — allowed: in [0, 4294967295]"),
    ),
    Case("seed-too-big", lambda e: e.run("train.seed=4294967296"), _text("train.seed: 4294967296 is out of range")),
    Case("shapes-seed-negative", lambda e: e.run("data.shapes_seed=-5"), _text("data.shapes_seed: -5 is out of range")),
    Case(
        "batch-size-huge",
        lambda e: e.run("train.batch_size=100000000"),
        _text("train.batch_size: 100000000 is out of range — allowed: in [1, 1048576]"),
    ),
    Case(
        "width-huge",
        lambda e: e.run("model.vision.width=1000000"),
        _text("model.vision.width: 1000000 is out of range"),
    ),
    Case("depth-huge", lambda e: e.run("model.text.depth=100000"), _text("model.text.depth: 100000 is out of range")),
    Case(
        "model-too-big-for-memory",
        lambda e: e.run(
            *[f"model.{part}.width=16384" for part in ("vision", "text", "fusion")],
            *[f"model.{part}.heads=4" for part in ("vision", "text", "fusion")],
            "model.vision.depth=256",
            "model.text.depth=256",
            "model.fusion.layers=256",
        ),
        _text("model.*.width/depth: the model needs about"),
    ),
    Case(
        "batch-too-big-for-memory",
        lambda e: e.run("train.batch_size=1000000"),
        _text("train.batch_size: 1000000 needs at least"),
    ),
    Case("steps-negative", lambda e: e.run("train.steps=-1"), _text("train.steps: -1 is out of range")),
    Case("steps-bool", lambda e: e.run("train.steps=true"), _text("train.steps: True is not an int")),
    Case("lr-inf", lambda e: e.run("train.lr=inf"), _text("train.lr: inf is not a finite number")),
    Case("lr-negative", lambda e: e.run("train.lr=-1"), _text("train.lr: -1.0 is out of range — allowed: >= 0.0")),
    Case(
        "eval-tasks-not-a-list",
        lambda e: e.run("eval.tasks={a: 1}"),
        _text("eval.tasks: {'a': 1} is not a list of str"),
    ),
    Case("device-unknown", lambda e: e.run("train.device=tpu"), _text("train.device: 'tpu' is not a device")),
    Case(
        "precision-unknown",
        lambda e: e.run("train.precision=fp8"),
        _text("train.precision: 'fp8' is not one of auto, fp32, bf16, fp16"),
    ),
    Case("set-a-section", lambda e: ["run", "--set", "model=5"], _text("model: is a section")),
    Case("set-empty-key", lambda e: ["run", "--set", "=5"], _text("--set '=5': expected KEY=VALUE")),
    Case(
        "temperature-zero",
        lambda e: e.run("objectives.itc.temperature=0"),
        _text("objectives.itc.temperature: 0.0 is out of range — allowed: in [0.001, 0.5]"),
    ),
    Case(
        "softmask-layer-out-of-range",
        lambda e: e.run("objectives.softmask.layer=5"),
        _text("objectives.softmask.layer: 5 is out of range — allowed: -1..0 (model.fusion.layers=1)"),
    ),
    Case(
        "patch-does-not-divide-image",
        lambda e: e.run("model.vision.patch_size=7"),
        _text("model.vision.patch_size: 7 must divide data.image_size=64"),
    ),
    Case(
        "frames-exceed-max",
        lambda e: e.run("data.num_frames=9"),
        _text("data.num_frames: 9 exceeds model.vision.max_frames=8"),
    ),
    Case(
        "schedule-typo",
        lambda e: e.run("train.schedule=cosin"),
        _text("train.schedule: 'cosin' is not one of cosine, linear, constant — did you mean 'cosine'?"),
    ),
    Case("compile-not-bool", lambda e: e.run("train.compile=maybe"), _text("train.compile: 'maybe' is not a bool")),
    Case("unknown-section", lambda e: e.run("optim.lr=1"), _text("unknown config key 'optim.lr'")),
    Case(
        "experiment-file-missing",
        lambda e: ["run", "-e", str(e.tmp / "nope.yaml")],
        lambda e: f"experiment file not found: {e.tmp / 'nope.yaml'}",
    ),
    Case("nproc-zero", lambda e: ["run", "--nproc", "0"], _text("--nproc: 0 is not a process count — allowed: >= 1")),
    Case("nproc-negative", lambda e: ["run", "--nproc", "-3"], _text("--nproc: -3 is not a process count")),
    Case(
        "nproc-huge",
        lambda e: ["run", "--nproc", "100000"],
        _text("--nproc: 100000 processes is far more than this machine's"),
    ),
    Case(
        "resume-with-experiment",
        lambda e: ["run", "--resume", "0123abcd", "-e", "base"],
        _text("--resume uses the run's recorded config; drop --experiment base"),
    ),
    Case(
        "resume-and-from",
        lambda e: ["run", "--resume", "0123abcd", "--from", "0123abcd"],
        _text("--resume and --from exclude each other"),
    ),
    # ------------------------------------------------------ data: entries
    Case(
        "caption-lone-surrogate",
        lambda e: e.run(data=e.data("lone_surrogate.json")),
        lambda e: f"{e.root / 'pretrain.json'}[0].caption: invalid Unicode: a lone surrogate '\\ud800' at character 6",
        uses=("lone_surrogate.json",),
    ),
    Case(
        "caption-lone-surrogate-data-check",
        lambda e: e.check("eval.tasks=[]", data=e.data("lone_surrogate.json")),
        _text("invalid Unicode: a lone surrogate"),
        uses=("lone_surrogate.json",),
        where="output",
    ),
    Case(
        "json-deeply-nested",
        lambda e: e.run(data=e.data("deep_nesting.json")),
        lambda e: f"{e.root / 'pretrain.json'}: JSON nested too deeply",
        uses=("deep_nesting.json",),
    ),
    Case(
        "caption-empty",
        lambda e: e.run(data=e.data("empty_caption.json")),
        lambda e: f"{e.root / 'pretrain.json'}[0].caption: empty text",
        uses=("empty_caption.json",),
    ),
    Case(
        "caption-blank-in-list",
        lambda e: e.run(data=e.data("blank_caption_in_list.json")),
        lambda e: f"{e.root / 'pretrain.json'}[0].caption[1]: empty text",
        uses=("blank_caption_in_list.json",),
    ),
    Case(
        "caption-empty-list",
        lambda e: e.run(data=e.data("caption_empty_list.json")),
        lambda e: (
            f"{e.root / 'pretrain.json'}[0].caption: expected a string or a non-empty list of strings, got list []"
        ),
        uses=("caption_empty_list.json",),
    ),
    Case(
        "entries-not-objects",
        lambda e: e.run(data=e.data("entries_not_objects.json")),
        lambda e: f"{e.root / 'pretrain.json'}[0]: expected an object with fields, got int",
        uses=("entries_not_objects.json",),
    ),
    Case(
        "caption-missing",
        lambda e: e.run(data=e.data("missing_caption.json")),
        lambda e: f"{e.root / 'pretrain.json'}[0]: missing field 'caption'",
        uses=("missing_caption.json",),
    ),
    Case(
        "image-wrong-type",
        lambda e: e.run(data=e.data("image_wrong_type.json")),
        lambda e: f"{e.root / 'pretrain.json'}[0].image: expected a string, got int 7",
        uses=("image_wrong_type.json",),
    ),
    Case(
        "image-empty-path",
        lambda e: e.run(data=e.data("empty_image_path.json")),
        lambda e: f"{e.root / 'pretrain.json'}[0].image: empty path",
        uses=("empty_image_path.json",),
    ),
    Case(
        "symlink-out-of-root",
        lambda e: e.run(data=e.linked("symlink_escape.json")),
        lambda e: (
            f"{e.root / 'pretrain.json'}[0].image: 'images/link.png' is a symbolic link to "
            f"{e.shapes / 'images' / '000001.png'}, outside the image root"
        ),
        uses=("symlink_escape.json",),
    ),
    Case(
        "symlink-out-of-root-data-check",
        lambda e: e.check("eval.tasks=[]", data=e.linked("symlink_escape.json")),
        _text("'images/link.png' is a symbolic link to"),
        uses=("symlink_escape.json",),
        where="output",
    ),
    Case(
        "json-bom",
        lambda e: e.run(data=e.data("bom.json")),
        lambda e: f"{e.root / 'pretrain.json'}: invalid JSON at line 1 column 1: Unexpected UTF-8 BOM",
        uses=("bom.json",),
    ),
    Case(
        "json-not-utf8",
        lambda e: e.run(data=e.data("not_utf8.json")),
        lambda e: f"{e.root / 'pretrain.json'}: not UTF-8 text",
        uses=("not_utf8.json",),
    ),
    Case(
        "json-a-string",
        lambda e: e.run(data=e.data("string.json")),
        lambda e: f"{e.root / 'pretrain.json'}: expected a JSON list of entries, got str",
        uses=("string.json",),
    ),
    Case(
        "caption-nan",
        lambda e: e.run(data=e.data("caption_nan.json")),
        lambda e: (
            f"{e.root / 'pretrain.json'}[0].caption: expected a string or a non-empty list of strings, got float NaN"
        ),
        uses=("caption_nan.json",),
    ),
    Case(
        "image-is-text-data-check",
        lambda e: e.check("eval.tasks=[]", data=e.data("text_named_png.json", images_SLASH_text__png="text_named.png")),
        lambda e: f"unreadable image {e.root / 'images' / 'text.png'}",
        uses=("text_named_png.json", "text_named.png"),
        where="output",
    ),
    Case(
        "image-is-text-worker",
        lambda e: e.run(
            "data.num_workers=1", data=e.data("text_named_png.json", images_SLASH_text__png="text_named.png")
        ),
        lambda e: f"unreadable image {e.root / 'images' / 'text.png'}",
        uses=("text_named_png.json", "text_named.png"),
        runs=("FAILED",),
    ),  # found in a DataLoader worker: its one line, not its traceback
    Case(
        "video-truncated-data-check",
        lambda e: e.check(
            "eval.tasks=[]",
            "data.video_pretrain_files=[video_pretrain.json]",
            data=e.data(video_pretrain__json="truncated_video.json", videos_SLASH_truncated__mp4="truncated_video.mp4"),
        ),
        lambda e: f"unreadable video {e.root / 'videos' / 'truncated.mp4'}",
        uses=("truncated_video.json", "truncated_video.mp4"),
        where="output",
    ),
    Case(
        "video-is-text-data-check",
        lambda e: e.check(
            "eval.tasks=[]",
            "data.video_pretrain_files=[video_pretrain.json]",
            data=e.data(video_pretrain__json="text_named_video.json", videos_SLASH_text__mp4="text_named.mp4"),
        ),
        lambda e: f"unreadable video {e.root / 'videos' / 'text.mp4'}",
        uses=("text_named_video.json", "text_named.mp4"),
        where="output",
    ),
    Case(
        "video-float-array-data-check",
        lambda e: e.check(
            "eval.tasks=[]",
            "data.video_pretrain_files=[video_pretrain.json]",
            data=e.data(video_pretrain__json="float_video.json", videos_SLASH_float__npy="float_video.npy"),
        ),
        lambda e: f"unreadable video {e.root / 'videos' / 'float.npy'}: expected uint8 [T, H, W, 3], got float32",
        uses=("float_video.json", "float_video.npy"),
        where="output",
    ),
    Case(
        "vqa-answers-not-strings",
        lambda e: e.run(
            "eval.tasks=[vqa]",
            data=e.data(vqa_train__json="vqa_unknown_answer.json", vqa_answers__json="vqa_answers_not_strings.json"),
        ),
        lambda e: f"{e.root / 'vqa_answers.json'}[0]: expected a string answer, got int 1",
        uses=("vqa_answers_not_strings.json",),
    ),
    Case(
        "vqa-question-empty",
        lambda e: e.run("eval.tasks=[vqa]", data=e.data(vqa_test__json="vqa_empty_question.json")),
        lambda e: f"{e.root / 'vqa_test.json'}[0].question: empty text",
        uses=("vqa_empty_question.json",),
    ),
    Case(
        "nlvr-bad-label",
        lambda e: e.run("eval.tasks=[nlvr]", data=e.data(nlvr_test__json="nlvr_bad_label.json")),
        lambda e: f"{e.root / 'nlvr_test.json'}[0].label: 'maybe' is not one of True, False",
        uses=("nlvr_bad_label.json",),
    ),
    Case(
        "nlvr-three-images",
        lambda e: e.run("eval.tasks=[nlvr]", data=e.data(nlvr_test__json="nlvr_three_images.json")),
        lambda e: f"{e.root / 'nlvr_test.json'}[0].images: expected a list of 2 strings, got list",
        uses=("nlvr_three_images.json",),
    ),
    Case(
        "ve-bad-label",
        lambda e: e.run("eval.tasks=[ve]", data=e.data(ve_test__json="ve_bad_label.json")),
        lambda e: f"{e.root / 've_test.json'}[0].label: 'entails' is not one of entailment, neutral, contradiction",
        uses=("ve_bad_label.json",),
    ),
    Case(
        "data-root-missing",
        lambda e: e.run("data.root=/nonexistent/data", "data.generate=false"),
        _text("data.root: /nonexistent/data does not exist"),
    ),
    Case(
        "tokenizer-missing",
        lambda e: e.run("data.tokenizer=/nonexistent/tok"),
        _text("tokenizer not found: looked in /nonexistent/tok"),
    ),
    # ------------------------------------------------ stores, runs, resume
    Case(
        "store-in-proc",
        lambda e: e.run("tracking.uri=sqlite:////proc/x.db"),
        _text("tracking.uri: cannot use the SQLite store '/proc/x.db': cannot create a database in /proc"),
    ),
    Case(
        "store-garbage-run",
        lambda e: e.run(f"tracking.uri={e.garbage_store()}"),
        lambda e: (
            f"tracking.uri: cannot use the SQLite store '{e.tmp / 'store.db'}': the file is not an SQLite database"
        ),
        uses=("garbage.db",),
    ),
    Case(
        "store-garbage-report",
        lambda e: ["report", "ablations", "--tracking-uri", e.garbage_store(), "--out", str(e.tmp / "reports")],
        _text("the file is not an SQLite database"),
        uses=("garbage.db",),
    ),
    Case(
        "store-garbage-eval",
        lambda e: ["eval", "0123abcd", "--tracking-uri", e.garbage_store()],
        _text("the file is not an SQLite database"),
        uses=("garbage.db",),
    ),
    Case(
        "store-garbage-sweep",
        lambda e: e.sweep("scl", "--tracking-uri", e.garbage_store()),
        _text("the file is not an SQLite database"),
        uses=("garbage.db",),
    ),
    Case(
        "store-under-a-file-run",
        lambda e: e.run(f"tracking.uri=sqlite:///{e.blocked('x.db')}"),
        lambda e: (
            f"tracking.uri: cannot use the SQLite store '{e.blocked('x.db')}': {e.tmp / 'a_file'} is a file, not "
            "a directory"
        ),
    ),
    Case(
        "store-under-a-file-report",
        lambda e: ["report", "ablations", "--tracking-uri", f"sqlite:///{e.blocked('x.db')}"],
        _text("is a file, not a directory"),
    ),
    Case(
        "store-is-a-directory",
        lambda e: e.run(f"tracking.uri=sqlite:///{e.tmp}"),
        lambda e: f"tracking.uri: cannot use the SQLite store '{e.tmp}': it is a directory",
    ),
    Case(
        "store-scheme-ftp",
        lambda e: e.run("tracking.uri=ftp://example.org/x"),
        _text("has no MLflow store scheme 'ftp'"),
    ),
    Case(
        "store-unreachable-report",
        lambda e: ["report", "ablations", "--tracking-uri", f"http://127.0.0.1:{e.closed_port}"],
        lambda e: f"cannot reach the MLflow server 'http://127.0.0.1:{e.closed_port}'",
    ),
    Case(
        "store-unreachable-eval",
        lambda e: ["eval", "0123abcd", "--tracking-uri", f"http://127.0.0.1:{e.closed_port}"],
        lambda e: f"cannot reach the MLflow server 'http://127.0.0.1:{e.closed_port}'",
    ),
    Case(
        "resume-finished-run",
        lambda e: ["run", "--resume", e.finished_run(), "--tracking-uri", e.store],
        _text("is FINISHED and stays as it is"),
        runs=("FINISHED",),
    ),
    Case(
        "resume-finished-run-longer",
        lambda e: ["run", "--resume", e.finished_run(), "--tracking-uri", e.store, "--set", "train.steps=10"],
        _text("is FINISHED and stays as it is"),
        runs=("FINISHED",),
    ),
    Case(
        "resume-other-model",
        lambda e: [
            "run",
            "--resume",
            e.killed_run("truncated_checkpoint.pt"),
            "--tracking-uri",
            e.store,
            "--set",
            "model.vision.width=64",
        ],
        _text("--resume: model.vision.width=64 differs from run"),
        uses=("truncated_checkpoint.pt",),
        runs=("KILLED",),
    ),
    Case(
        "resume-deleted-run",
        lambda e: ["run", "--resume", e.deleted_run(), "--tracking-uri", e.store],
        _text("is deleted; restore it first"),
        uses=("truncated_checkpoint.pt",),
    ),
    Case(
        "from-deleted-run",
        lambda e: ["run", "--from", e.deleted_run(), "--tracking-uri", e.store],
        _text("is deleted; restore it first"),
        uses=("truncated_checkpoint.pt",),
    ),
    Case(
        "eval-deleted-run",
        lambda e: ["eval", e.deleted_run(), "--tracking-uri", e.store],
        _text("is deleted; restore it first"),
        uses=("truncated_checkpoint.pt",),
    ),
    Case(
        "eval-unknown-task",
        lambda e: ["eval", e.finished_run(), "--task", "retreival", "--tracking-uri", e.store],
        _text("eval.tasks: 'retreival' is not one of"),
        runs=("FINISHED",),
    ),
    Case(
        "eval-set-model-key",
        lambda e: ["eval", e.finished_run(), "--set", "model.fusion.layers=3", "--tracking-uri", e.store],
        _text("model.fusion.layers=3: `workbench eval` may change only eval.*"),
        runs=("FINISHED",),
    ),
    Case(
        "eval-set-unknown-key",
        lambda e: ["eval", e.finished_run(), "--set", "eval.rerank_kk=3", "--tracking-uri", e.store],
        _text("eval.rerank_kk"),
        runs=("FINISHED",),
    ),
    Case(
        "eval-truncated-checkpoint",
        lambda e: ["eval", e.killed_run("truncated_checkpoint.pt"), "--tracking-uri", e.store],
        lambda e: f"cannot load checkpoint {e.checkpoint}",
        uses=("truncated_checkpoint.pt",),
        runs=("KILLED",),
    ),
    Case(
        "resume-run-id-path",
        lambda e: ["run", "--resume", "../../etc", "--tracking-uri", e.store],
        _text("--resume: no MLflow run '../../etc'"),
    ),
    # ------------------------------------------------------------- sweeps
    Case(
        "sweep-alias",
        lambda e: e.sweep(str(CORPUS / "sweep_alias.yaml")),
        _text(f"{CORPUS / 'sweep_alias.yaml'} line 2: anchor '&common' refused"),
        uses=("sweep_alias.yaml",),
    ),
    Case(
        "sweep-duplicate-variant",
        lambda e: e.sweep(str(CORPUS / "sweep_duplicate_variant.yaml")),
        _text(f"{CORPUS / 'sweep_duplicate_variant.yaml'} line 5: duplicate key 'baseline' (first on line 3)"),
        uses=("sweep_duplicate_variant.yaml",),
    ),
    Case(
        "sweep-negative-seeds",
        lambda e: e.sweep(str(CORPUS / "sweep_negative_seeds.yaml")),
        _text("seeds: -1 is out of range — allowed: integers in [0, 4294967295] (train.seed)"),
        uses=("sweep_negative_seeds.yaml",),
    ),
    Case(
        "sweep-huge-grid",
        lambda e: e.sweep(str(CORPUS / "sweep_huge_grid.yaml")),
        _text(
            "10000 trials (100 variants x 100 seeds), 3,000,000 training steps, 96,000,000 samples; "
            "a sweep of more than 200 trials starts only with --yes"
        ),
        uses=("sweep_huge_grid.yaml",),
    ),
    Case(
        "sweep-study-name-climbs",
        lambda e: e.sweep("scl", "--study-name", "../../evil"),
        _text("--study-name: '../../evil' is not a study name"),
    ),
    Case(
        "sweep-study-name-slash",
        lambda e: e.sweep("scl", "--study-name", "a/b"),
        _text("--study-name: 'a/b' is not a study name"),
    ),
    Case("sweep-unknown", lambda e: e.sweep("nosuch"), _text("unknown sweep 'nosuch'")),
    Case(
        "sweep-slots-zero",
        lambda e: ["sweep", "scl", "--slots", "0", "--tracking-uri", e.store],
        _text("--slots 0: must be >= 1"),
    ),
    Case(
        "sweep-per-gpu-zero",
        lambda e: ["sweep", "scl", "--per-gpu", "0", "--tracking-uri", e.store],
        _text("--per-gpu 0: must be >= 1"),
    ),
    Case(
        "sweep-gpus-garbage",
        lambda e: ["sweep", "scl", "--gpus", "abc", "--tracking-uri", e.store],
        _text("--gpus 'abc': expected comma-separated GPU indices"),
    ),
    Case(
        "sweep-heartbeat-zero",
        lambda e: e.sweep("scl", "--heartbeat", "0", "--storage", f"sqlite:///{e.tmp / 'optuna.db'}"),
        _text("--heartbeat 0: must be >= 1 second"),
    ),
    Case(
        "sweep-resume-missing-study",
        lambda e: e.sweep("scl", "--resume", "--study-name", "nostudy"),
        _text("no study 'nostudy' in"),
    ),
    Case(
        "sweep-journal-under-a-file",
        lambda e: e.sweep("scl", "--storage", str(e.blocked("journal.log"))),
        lambda e: f"--storage '{e.blocked('journal.log')}': cannot use the journal file",
    ),
    # ------------------------------------------------- reports, data, bench, ui
    Case(
        "report-attention-unknown-run",
        lambda e: ["report", "attention", "0123abcd", "--tracking-uri", e.store, "--out", str(e.tmp / "r")],
        _text("RUN_ID '0123abcd': no such run in"),
    ),
    Case(
        "report-attention-n-zero",
        lambda e: ["report", "attention", "0123abcd", "--n", "0", "--tracking-uri", e.store],
        _text("--n: 0 is out of range — allowed: >= 1"),
    ),
    Case(
        "data-shapes-size-unknown",
        lambda e: ["data", "shapes", "--size", "huge", "--out", str(e.tmp / "s")],
        _text("size: 'huge' is not one of tiny, default"),
    ),
    Case(
        "data-shapes-seed-negative",
        lambda e: ["data", "shapes", "--seed", "-1", "--size", "tiny", "--out", str(e.tmp / "s")],
        _text("seed: -1 is not an integer >= 0"),
    ),
    Case("bench-steps-zero", lambda e: ["bench", "--steps", "0", "--quick"], _text("bench --steps: 0 must be >= 1")),
    Case(
        "bench-config-unknown",
        lambda e: ["bench", "--config", "nope"],
        _text("bench --config: 'nope' is not one of base, paper"),
    ),
    Case(
        "ui-port-out-of-range",
        lambda e: ["ui", "--port", "70000", "--tracking-uri", e.store],
        _text("--port: 70000 is out of range"),
    ),
    Case(
        "config-show-duplicate-key",
        lambda e: ["config", "show", "-e", str(CORPUS / "duplicate_key.yaml")],
        _text("duplicate key 'train'"),
        uses=("duplicate_key.yaml",),
    ),
    # ------------------------------------------- issue 29 round 2: SLURM options, prune, eval checkpoints
    Case(
        "slurm-mem-newline",
        lambda e: [*_slurm_sweep(e), "--mem", "1G\ntouch pwned"],
        _text("--mem '1G\\ntouch pwned': not a valid memory size"),
    ),
    Case(
        "slurm-time-newline",
        lambda e: ["run", "--launcher", "slurm", "--time", "4:00:00\ntouch pwned", *e.sets()],
        _text("--time '4:00:00\\ntouch pwned': not a valid time limit"),
    ),
    Case(
        "slurm-sbatch-arg-wrap",
        lambda e: [*_slurm_sweep(e), "--sbatch-arg=--wrap=touch pwned"],
        _text("--sbatch-arg '--wrap=touch pwned': --wrap is not allowed"),
    ),
    Case(
        "prune-older-than-nan",
        lambda e: [
            "runs",
            "prune",
            "--older-than",
            "nan",
            "-e",
            e.experiment,
            "--out-dir",
            str(e.tmp / "checkpoints"),
            "--tracking-uri",
            _store_with_a_fresh_run(e),
        ],
        _text("--older-than nan: must be a finite number of days >= 0"),
        runs=("FINISHED",),
    ),
    Case(
        "eval-pruned-run",
        lambda e: ["eval", _pruned_run(e), "--tracking-uri", e.store],
        _text("its checkpoint was pruned on"),
        runs=("FINISHED",),
    ),
    Case(
        "eval-set-truncated-checkpoint",
        lambda e: [
            "eval",
            e.killed_run("truncated_checkpoint.pt"),
            "--set",
            "eval.batch_size=8",
            "--tracking-uri",
            e.store,
        ],
        lambda e: f"cannot load checkpoint {e.checkpoint}",
        uses=("truncated_checkpoint.pt",),
        runs=("KILLED",),
    ),  # no junk eval run
    Case(
        "eval-missing-checkpoint",
        lambda e: ["eval", _run_without_checkpoint(e), "--set", "eval.batch_size=8", "--tracking-uri", e.store],
        _text("no checkpoint in train.out_dir nor as its MLflow artifact checkpoints/last.pt"),
        uses=("truncated_checkpoint.pt",),
        runs=("KILLED",),
    ),
    # ------------------------- issue 29 class 7/9 (issue 27 item 1): refused before the first trial
    Case(
        "sweep-broken-variant",
        lambda e: e.sweep(str(CORPUS / "sweep_broken_variant.yaml")),
        _text("variant 'softmask-no-itm': objectives.softmask.enabled=true needs ITM"),
        uses=("sweep_broken_variant.yaml",),
    ),
    Case(
        "sweep-objective-typo",
        lambda e: e.sweep(str(CORPUS / "sweep_metric_typo.yaml")),
        _text("objective: 'train/loss/totl' is no metric workbench logs — did you mean 'train/loss/total'?"),
        uses=("sweep_metric_typo.yaml",),
    ),
    Case(
        "sweep-million-grid",
        lambda e: e.sweep(str(CORPUS / "sweep_million_grid.yaml")),
        _text("axes make 1,000,000 variants (10 x 10 x 10 x 10 x 10 x 10), more than the 10,000 trials"),
        uses=("sweep_million_grid.yaml",),
    ),
    Case(
        "sweep-missing-init",
        lambda e: e.sweep(str(CORPUS / "sweep_missing_init.yaml")),
        _text("variant 'own-vit': model.vision.init: 'no_such_dir/vit_warmstart.pt' is not a file"),
        uses=("sweep_missing_init.yaml",),
    ),
    Case(
        "run-softmask-without-itm",
        lambda e: e.run("objectives.softmask.enabled=true", "objectives.itm.enabled=false"),
        _text("objectives.softmask.enabled=true needs ITM"),
    ),
    Case(
        "demo-out-is-a-file",
        lambda e: ["demo", "--out", str(e.blocked("report").parent)],
        lambda e: f"--out: cannot create {e.tmp / 'a_file'}: {e.tmp / 'a_file'} is a file, not a directory",
    ),
    Case(
        "sweep-same-variant-names",
        lambda e: e.sweep(str(CORPUS / "sweep_same_names.yaml")),
        _text("variant 'lr=0.001': 2 variants have this name"),
        uses=("sweep_same_names.yaml",),
    ),
    # ------------------------------------------- issue 29: owners, data, paths (classes 2, 3, 11)
    Case(
        "resume-run-owned-by-a-live-process",
        lambda e: ["run", "--resume", e.owned_run(), "--tracking-uri", e.store],
        lambda e: f"is in use: {socket.gethostname()} pid {os.getppid()} since",
        uses=("truncated_checkpoint.pt",),
        runs=("KILLED",),
    ),
    Case(
        "resume-on-data-with-another-fingerprint",
        lambda e: ["run", "--resume", e.run_on_other_data(), "--tracking-uri", e.store],
        _text("holds other data than run"),
        uses=("truncated_checkpoint.pt",),
        runs=("KILLED",),
    ),
    Case(
        "shapes-regenerate-over-a-user-file",
        lambda e: ["data", "shapes", "--out", str(e.shapes_with("notes.txt")), "--seed", "1", "--size", "tiny"],
        _text("would delete what workbench did not make there: notes.txt"),
    ),
    Case(
        "fifo-image-data-check",
        lambda e: e.check("eval.tasks=[]", data=e.with_fifo(e.data("fifo_image.json"))),
        lambda e: f"{e.root / 'images' / 'pipe.png'} is not a regular file",
        uses=("fifo_image.json",),
        where="output",
    ),
    Case(
        "path-unset-variable",
        lambda e: e.run("data.root=$WB_SURELY_NOT_SET/data"),
        _text(
            "data.root: '$WB_SURELY_NOT_SET/data' names the environment variable $WB_SURELY_NOT_SET, which is not set"
        ),
    ),
    Case(
        "init-file-truncated",
        lambda e: e.run(f"model.vision.init={CORPUS / 'truncated_checkpoint.pt'}"),
        _text(f"model.vision.init: cannot read '{CORPUS / 'truncated_checkpoint.pt'}'"),
        uses=("truncated_checkpoint.pt",),
    ),
    Case(
        "launcher-typo-run",
        lambda e: ["run", "--launcher", "slrum", *e.sets()],
        _text("--launcher: 'slrum' is not one of local, slurm — did you mean 'slurm'?"),
    ),
    Case(
        "launcher-unknown-sweep",
        lambda e: ["sweep", "scl", "--launcher", "k8s", "--tracking-uri", e.store],
        _text("--launcher: 'k8s' is not one of local, slurm"),
    ),
]


def _slurm_sweep(e: Env) -> list[str]:
    return [
        "sweep",
        "scl",
        "--launcher",
        "slurm",
        "--no-progress",
        "--tracking-uri",
        e.store,
        "--set",
        f"train.out_dir={e.out}",
    ]


def _store_with_a_fresh_run(e: Env) -> str:
    e.finished_run()  # seconds old: `--older-than nan` used to prune its checkpoint
    return e.store


def _pruned_run(e: Env) -> str:
    """A FINISHED run whose checkpoint `workbench runs prune` removed."""
    from workbench.prune import plan_prune, prune

    run_id = e.finished_run()
    plan = plan_prune(e.store, older_than_days=0, out_dir=str(e.tmp / "checkpoints"), experiments=[e.experiment])
    assert prune(plan, e.store) == 1
    return run_id


def _run_without_checkpoint(e: Env) -> str:
    """A KILLED run that never wrote a checkpoint (killed before its first one)."""
    run_id = e.killed_run("truncated_checkpoint.pt")
    e.checkpoint.unlink()
    return run_id


RESULTS: dict[str, str] = {}  # case id -> "" (clean) or why not, filled by the tests below


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One MLflow store for the module (creating its schema takes seconds); each case has its own experiment."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(uri).search_experiments()
    return uri


@pytest.fixture(scope="module")
def closed_port():
    """A local port bound to a socket that does not listen: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def try_case(case: Case, env: Env) -> str:
    """Run one case; "" when its error was clean, else what was wrong."""
    result = CliRunner().invoke(app, case.args(env))
    output, stderr = result.stdout + result.stderr, result.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    problems = []
    if result.exit_code != case.code:
        problems.append(f"exit code {result.exit_code}, expected {case.code}")
    if "Traceback" in output or not isinstance(result.exception, (SystemExit, type(None))):
        problems.append(f"a traceback ({type(result.exception).__name__}: {result.exception})")
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines on stderr, expected 1")
    elif case.where == "stderr" and not lines[0].startswith("error: "):
        problems.append("the stderr line does not start with 'error: '")
    named = case.names(env)
    if named not in (lines[0] if case.where == "stderr" and lines else output):
        problems.append(f"the error does not name {named!r}")
    leftovers = [p for p in env.tmp.rglob("*") if ".tmp" in p.name or p.name == "mlflow.db"]
    leftovers += [p for p in env.out.rglob("*") if p.is_file()] if env.out.exists() else []
    if leftovers:
        problems.append(f"left behind: {sorted(map(str, leftovers))}")
    client = MlflowClient(env.store)
    experiment = client.get_experiment_by_name(env.experiment)
    statuses = [r.info.status for r in client.search_runs([experiment.experiment_id])] if experiment else []
    if tuple(statuses) != case.runs:
        problems.append(f"MLflow runs {statuses}, expected {list(case.runs)}")
    return "; ".join(problems) + (f"\n--- output:\n{output[-1500:]}" if problems else "")


def _env(tmp_path: Path, shapes: Path, store: str, port: int, case: Case) -> Env:
    env = Env(tmp_path / case.id, shapes, store, port, experiment=f"bad-{case.id}")
    env.tmp.mkdir(parents=True)
    return env


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gives_one_clean_line(case, shapes_tiny, store, closed_port, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written relative to the working directory would show up here
    RESULTS[case.id] = try_case(case, _env(tmp_path, shapes_tiny, store, closed_port, case))
    assert not RESULTS[case.id]


def test_debug_shows_the_traceback(shapes_tiny, store, closed_port, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = _env(tmp_path, shapes_tiny, store, closed_port, CASES[0])
    result = CliRunner().invoke(app, ["--debug", *env.run("objectives.itc.focal_gamma=-0.5")])
    assert result.exit_code == 1 and type(result.exception).__name__ == "ConfigError"
    assert str(result.exception) == "objectives.itc.focal_gamma: -0.5 is out of range — allowed: >= 0.0"


def test_the_whole_corpus_was_tried_and_every_error_was_clean(
    shapes_tiny, store, closed_port, tmp_path, monkeypatch, capsys
):
    """Every corpus file is used by a case; every case ran (here, if it was deselected above) and was clean."""
    corpus = sorted(p.name for p in CORPUS.iterdir())
    used = {name for case in CASES for name in case.uses}
    assert sorted(used) == corpus, f"corpus files without a case: {sorted(set(corpus) - used)}"
    assert len({case.id for case in CASES}) == len(CASES)
    monkeypatch.chdir(tmp_path)
    for case in CASES:
        if case.id not in RESULTS:
            RESULTS[case.id] = try_case(case, _env(tmp_path, shapes_tiny, store, closed_port, case))
    clean = [case.id for case in CASES if RESULTS[case.id] == ""]
    with capsys.disabled():
        print(f"\nbad-input corpus: {len(CASES)} bad inputs tried ({len(corpus)} corpus files), {len(clean)} clean")
    assert len(clean) == len(CASES), {case_id: why for case_id, why in RESULTS.items() if why}
