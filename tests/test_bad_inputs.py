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
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tiny_config import tiny_run
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
        overrides = tiny_run(self.shapes, self.store, self.out, "eval.tasks=[]", f"tracking.experiment={self.experiment}", *extra)
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
            shutil.copy(CORPUS / corpus_file, self.root / name.replace("__", "."))
        return [f"data.root={self.root}", "data.generate=false", f"data.tokenizer={self.shapes / 'tokenizer'}"]

    def blocked(self, name: str) -> Path:
        """A path that cannot become a directory: its parent is a regular file."""
        (self.tmp / "a_file").write_text("")
        return self.tmp / "a_file" / name

    def killed_run(self, checkpoint: str) -> str:
        """An MLflow run left KILLED (as by a pre-emption) whose last checkpoint is the corpus file."""
        from workbench import tracking
        from workbench.config import load_config

        overrides = tiny_run(self.shapes, self.store, self.tmp / "checkpoints", "eval.tasks=[]", f"tracking.experiment={self.experiment}")
        tracker = tracking.start_run(load_config("base", overrides))
        tracker.finish("KILLED")
        self.checkpoint = self.tmp / "checkpoints" / tracker.run_id / "last.pt"
        self.checkpoint.parent.mkdir(parents=True)
        shutil.copy(CORPUS / checkpoint, self.checkpoint)
        return tracker.run_id

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
    Case("malformed-yaml", lambda e: ["run", "-e", str(CORPUS / "malformed.yaml")],
         _text(f"{CORPUS / 'malformed.yaml'} line 5: expected ',' or '}}', but got '<scalar>'"),
         uses=("malformed.yaml",)),
    Case("yaml-not-a-mapping", lambda e: ["run", "-e", str(CORPUS / "not_a_mapping.yaml")],
         _text(f"{CORPUS / 'not_a_mapping.yaml'}: expected a mapping of config sections, got list"), uses=("not_a_mapping.yaml",)),
    Case("unknown-key-yaml", lambda e: ["run", "-e", str(CORPUS / "unknown_key.yaml")],
         _text("unknown config key 'objectives.scl.image_mask_rato' — did you mean 'objectives.scl.image_mask_ratio'?"),
         uses=("unknown_key.yaml",)),
    Case("unknown-key-set", lambda e: e.run("train.stpes=5"), _text("unknown config key 'train.stpes' — did you mean 'train.steps'?")),
    Case("wrong-type-yaml", lambda e: ["run", "-e", str(CORPUS / "wrong_type.yaml")],
         _text("train.steps: 'many' is not an int"), uses=("wrong_type.yaml",)),
    Case("wrong-type-set", lambda e: e.run("train.batch_size=2.5"), _text("train.batch_size: 2.5 is not an int")),
    Case("ratio-negative", lambda e: e.run("objectives.scl.image_mask_ratio=-0.1"),
         _text("objectives.scl.image_mask_ratio: -0.1 is out of range — allowed: in [0.0, 1.0)")),
    Case("ratio-one", lambda e: e.run("objectives.scl.image_mask_ratio=1.0"),
         _text("objectives.scl.image_mask_ratio: 1.0 is out of range — allowed: in [0.0, 1.0)")),
    Case("ratio-not-a-number", lambda e: e.run("objectives.scl.image_mask_ratio=abc"),
         _text("objectives.scl.image_mask_ratio: 'abc' is not a float")),
    Case("focal-gamma-negative", lambda e: e.run("objectives.itc.focal_gamma=-0.5"),
         _text("objectives.itc.focal_gamma: -0.5 is out of range — allowed: >= 0.0")),
    Case("unknown-pooling", lambda e: e.run("model.vision.pooling=global"),
         _text("model.vision.pooling: 'global' is not one of frame_cls, global_cls, mean — did you mean 'global_cls'?")),
    Case("unknown-mask-mode", lambda e: e.run("objectives.softmask.mode=hardd"),
         _text("objectives.softmask.mode: 'hardd' is not one of soft, hard, random, off — did you mean 'hard'?")),
    Case("lr-nan", lambda e: e.run("train.lr=nan"), _text("train.lr: nan is not a finite number")),
    Case("set-without-value", lambda e: ["run", "--set", "train.steps"], _text("--set 'train.steps': expected KEY=VALUE")),
    Case("unknown-experiment", lambda e: ["run", "-e", "bsae"], _text("unknown experiment 'bsae'")),
    Case("unknown-eval-task", lambda e: e.run("eval.tasks=[retreival]"),
         _text("eval.tasks: 'retreival' is not one of retrieval, video_retrieval, vqa, nlvr, ve — did you mean 'retrieval'?")),
    Case("heads-do-not-divide-width", lambda e: e.run("model.vision.heads=5"),
         _text("model.vision.heads: 5 must divide model.vision.width=32")),
    # -------------------------------------------------------------------- data
    Case("empty-data-set", lambda e: e.run(data=e.data("empty.json")),
         lambda e: f"no usable entries in {e.root / 'pretrain.json'}", uses=("empty.json",)),
    Case("missing-image", lambda e: e.run(data=e.data("missing_image.json")),
         lambda e: f"{e.root / 'pretrain.json'}[1].image: file not found: {e.root / 'images' / 'not_there.png'}",
         uses=("missing_image.json",)),
    Case("truncated-json", lambda e: e.run(data=e.data("truncated.json")),
         lambda e: f"{e.root / 'pretrain.json'}: invalid JSON at line 1 column", uses=("truncated.json",)),
    Case("json-not-a-list", lambda e: e.run(data=e.data("not_a_list.json")),
         lambda e: f"{e.root / 'pretrain.json'}: expected a JSON list of entries, got dict", uses=("not_a_list.json",)),
    Case("caption-wrong-type", lambda e: e.run(data=e.data("caption_wrong_type.json")),
         lambda e: f"{e.root / 'pretrain.json'}[0].caption: expected a string or a non-empty list of strings, got int 5",
         uses=("caption_wrong_type.json",)),
    Case("path-traversal", lambda e: e.run(data=e.data("path_traversal.json")),
         lambda e: f"{e.root / 'pretrain.json'}[0].image: path '../../../etc/passwd' climbs out of the image root",
         uses=("path_traversal.json",)),
    Case("absolute-path", lambda e: e.run(data=e.data("absolute_path.json")),
         lambda e: f"{e.root / 'pretrain.json'}[0].image: absolute path '/etc/hostname' refused — set data.allow_absolute_paths=true",
         uses=("absolute_path.json",)),
    Case("corrupt-png", lambda e: e.run(data=e.data("corrupt_image.json")),
         lambda e: f"unreadable image {e.root / 'images' / 'corrupt.png'}", uses=("corrupt_image.json", "corrupt.png"),
         runs=("FAILED",)),  # found when the first batch loads: the run ends FAILED, never RUNNING
    Case("corrupt-png-data-check", lambda e: e.check("eval.tasks=[]", data=e.data("corrupt_image.json")),
         lambda e: f"pretrain.json: unreadable image {e.root / 'images' / 'corrupt.png'}",
         uses=("corrupt_image.json", "corrupt.png"), where="output"),
    Case("video-fewer-frames", lambda e: e.run("data.video_pretrain_files=[video_pretrain.json]", "data.num_frames=4",
                                                data=e.data(video_pretrain__json="short_video.json")),
         lambda e: f"{e.root / 'video_pretrain.json'}[0].video: {e.root / 'videos' / 'short.npy'} has 2 frames, "
                   "fewer than data.num_frames=4", uses=("short_video.json", "short_video.npy")),
    Case("missing-eval-file", lambda e: e.run("eval.tasks=[retrieval]", data=e.data()),
         lambda e: f"data file not found: {e.root / 'retrieval_test.json'}"),  # before training, not after it
    Case("vqa-answer-not-in-list", lambda e: e.check("eval.tasks=[vqa]", data=e.data(
             vqa_train__json="vqa_unknown_answer.json", vqa_answers__json="vqa_answers.json")),
         lambda e: f"{e.root / 'vqa_train.json'}[0].answer: ['mauve', 'lilac'] — none is in vqa_answers.json (3 answers)",
         uses=("vqa_unknown_answer.json", "vqa_answers.json"), where="output"),
    # --------------------------------------------------- stores, paths, run ids
    Case("tracking-uri-unreachable", lambda e: e.run(f"tracking.uri=http://127.0.0.1:{e.closed_port}"),
         lambda e: f"tracking.uri: cannot reach the MLflow server 'http://127.0.0.1:{e.closed_port}' (Connection refused)"),
    Case("tracking-uri-scheme-typo", lambda e: e.run(f"tracking.uri=sqllite:///{e.tmp / 'mlflow.db'}"),
         _text("has no MLflow store scheme 'sqllite'")),
    Case("out-dir-unwritable", lambda e: e.run(f"train.out_dir={e.blocked('out')}"),
         lambda e: f"train.out_dir: cannot create {e.blocked('out')}: {e.tmp / 'a_file'} is a file, not a directory"),
    Case("data-shapes-out-unwritable", lambda e: ["data", "shapes", "--size", "tiny", "--out", str(e.blocked("shapes"))],
         lambda e: f"--out: cannot create {e.blocked('shapes')}: {e.tmp / 'a_file'} is a file, not a directory"),
    Case("optuna-storage-typo", lambda e: ["sweep", "scl", "--slots", "1", "--no-progress",
                                           "--storage", "postgres://127.0.0.1:1/optuna",
                                           "--tracking-uri", e.store, "--set", f"train.out_dir={e.out}"],
         _text("--storage 'postgres://127.0.0.1:1/optuna': cannot open the Optuna storage")),
    Case("malformed-sweep-yaml", lambda e: ["sweep", str(CORPUS / "malformed_sweep.yaml"), "--slots", "1", "--no-progress",
                                            "--tracking-uri", e.store, "--set", f"train.out_dir={e.out}"],
         _text(f"{CORPUS / 'malformed_sweep.yaml'} line 5: expected ',' or '}}', but got ':'"), uses=("malformed_sweep.yaml",)),
    Case("resume-truncated-checkpoint", lambda e: ["run", "--resume", e.killed_run("truncated_checkpoint.pt"), "--tracking-uri", e.store],
         lambda e: f"cannot load checkpoint {e.checkpoint}: PytorchStreamReader failed reading zip archive",
         uses=("truncated_checkpoint.pt",), runs=("FAILED",)),  # reopened, then marked FAILED: never left RUNNING
    Case("resume-unknown-run", lambda e: ["run", "--resume", "0123abcd", "--tracking-uri", e.store],
         lambda e: f"--resume: no MLflow run '0123abcd' in {e.store}"),
    Case("from-unknown-run", lambda e: ["run", "--from", "0123abcd", "--tracking-uri", e.store],
         lambda e: f"--from: no MLflow run '0123abcd' in {e.store}"),
    Case("eval-unknown-run", lambda e: ["eval", "0123abcd", "--tracking-uri", e.store],
         lambda e: f"no MLflow run '0123abcd' in {e.store}"),
    Case("report-unknown-sweep",
         lambda e: ["report", "ablations", "nosuch", "--tracking-uri", e.store, "--out", str(e.tmp / "reports")],
         _text("SWEEP 'nosuch': no sweep of that name and no parent run of that id")),
    Case("report-unknown-format",
         lambda e: ["report", "ablations", "--format", "docx", "--tracking-uri", e.store, "--out", str(e.tmp / "reports")],
         _text("--format: 'docx' is not one of md, csv, latex, html")),
]

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


def test_the_whole_corpus_was_tried_and_every_error_was_clean(shapes_tiny, store, closed_port, tmp_path, monkeypatch, capsys):
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
