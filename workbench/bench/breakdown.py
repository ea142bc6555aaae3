"""Where a training step's time goes: per fusion pass, per objective, encoders, optimizer.

One step runs under ``torch.profiler`` with labels around every objective term,
every fusion pass, every encoder call and the optimizer (installed on the bench's
own model only, and removed afterwards). Each op's self time is charged to its
innermost label; a backward op is charged to the label of the forward op that
created its autograd node (the profiler's sequence numbers link the two), so a
pass's row holds its forward *and* backward time. Shares sum to 100 % of the
profiled step (profiler overhead included, so small ops weigh a little more).

A pass read by several objectives (e.g. ``clean``: ITM's positives and SoftMask's
Grad-CAM) is split evenly among its readers in the per-objective view; the clean
encoders, the optimizer and untracked framework time stay apart. SCL is one
objective: MVSC and MLSC read each other's masked pass as target.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

PREFIX = "wb:"
EVALUATE = "autograd::engine::evaluate_function: "
# fusion calls an objective makes itself (not a named pass), by objective
AD_HOC_PASS = {"itm": "itm_negatives", "softmask": "softmask_masked"}
ENCODERS, OPTIMIZER, OTHER, BACKWARD = "encoders", "optimizer", "other", "backward"


@dataclass
class Breakdown:
    step_s: float  # the profiled step, wall clock (profiler on)
    components: dict[str, float]  # "pass/clean", "objective/itc", "encoders", ... -> share of the step
    readers: dict[str, list[str]] = field(default_factory=dict)  # pass -> objectives that read it

    @property
    def passes(self) -> dict[str, float]:
        return {k.removeprefix("pass/"): v for k, v in self.components.items() if k.startswith("pass/")}

    @property
    def objectives(self) -> dict[str, float]:
        """Each objective's own compute + an even split of the passes it reads."""
        shares = {k.removeprefix("objective/"): v for k, v in self.components.items() if k.startswith("objective/")}
        for name, share in self.passes.items():
            readers = self.readers.get(name, [])
            for reader in readers:
                shares[reader] = shares.get(reader, 0.0) + share / len(readers)
        return shares


class Labels:
    """Record-function labels on a Pretrainer's objectives, passes, encoders and fusion calls."""

    def __init__(self, pretrainer: Any) -> None:
        self.objectives = pretrainer.objectives
        self.model = pretrainer.model
        self.readers: dict[str, set[str]] = defaultdict(set)
        self._terms: list[str] = []
        self._open: list[Any] = []
        self._hooks: list[Any] = []
        self._saved_recipes: dict | None = None

    def __enter__(self) -> Labels:
        for name in self.objectives.built:
            term = getattr(self.objectives, name)
            self._hooks.append(term.register_forward_pre_hook(partial(self._enter_term, name)))
            self._hooks.append(term.register_forward_hook(partial(self._exit_term, name)))
        self._saved_recipes = self.objectives.recipes
        self.objectives.recipes = {
            name: self._labelled(f"pass/{name}", recipe) for name, recipe in self._saved_recipes.items()
        }
        self.objectives.context = self._tracking_reads(self.objectives.context)
        for method, label in (("encode_image", "encode"), ("encode_text", "encode"), ("fuse", "fuse")):
            setattr(self.model, method, self._labelled(label, getattr(self.model, method)))
        return self

    def __exit__(self, *exc: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self.objectives.recipes = self._saved_recipes
        for obj, names in ((self.objectives, ["context"]), (self.model, ["encode_image", "encode_text", "fuse"])):
            for name in names:
                obj.__dict__.pop(name, None)  # the instance attributes we set; the methods show again

    @staticmethod
    def _labelled(label: str, fn: Callable) -> Callable:
        def run(*args: Any, **kwargs: Any) -> Any:
            with record_function(PREFIX + label):
                return fn(*args, **kwargs)

        return run

    def _enter_term(self, name: str, module: Any, args: Any) -> None:
        self._terms.append(name)
        scope = record_function(f"{PREFIX}objective/{name}")
        scope.__enter__()
        self._open.append(scope)

    def _exit_term(self, name: str, module: Any, args: Any, output: Any) -> None:
        self._open.pop().__exit__(None, None, None)
        self._terms.pop()

    def _tracking_reads(self, make_context: Callable) -> Callable:
        def context(*args: Any, **kwargs: Any) -> Any:
            ctx = make_context(*args, **kwargs)
            request = ctx.pass_

            def pass_(name: str) -> Any:
                if self._terms:
                    self.readers[name].add(self._terms[-1])
                return request(name)

            ctx.pass_ = pass_
            return ctx

        return context


def ad_hoc_pass(term: str) -> str:
    """The name a fusion call made by objective `term` itself goes by."""
    return AD_HOC_PASS.get(term, f"{term}_fuse")


def _labels_of(event: Any) -> list[str]:
    """Our labels enclosing `event` (itself included), innermost first."""
    out = []
    node = event
    while node is not None:
        if node.name.startswith(PREFIX):
            out.append(node.name[len(PREFIX) :])
        node = node.cpu_parent
    return out


def category(labels: list[str]) -> str:
    """Where time under these labels (innermost first) is charged."""
    terms = [label.removeprefix("objective/") for label in labels if label.startswith("objective/")]
    for label in labels:
        if label.startswith("pass/"):
            return label
    if "fuse" in labels and terms:
        return "pass/" + ad_hoc_pass(terms[0])
    if "encode" in labels:
        return ENCODERS
    if terms:
        return f"objective/{terms[0]}"
    for label in (OPTIMIZER, BACKWARD):
        if label in labels:
            return label
    return OTHER


def _evaluated_node(event: Any) -> Any:
    """The autograd-engine node evaluation an op runs under, if any."""
    node = event
    while node is not None:
        if node.name.startswith(EVALUATE):
            return node
        node = node.cpu_parent
    return None


def attribute(events: list[Any], device_time: bool = False) -> dict[str, float]:
    """Seconds per category; backward ops follow the forward op of their autograd node."""
    categories = [category(_labels_of(e)) for e in events]
    forward_of: dict[int, str] = {}
    for event, cat in zip(events, categories, strict=True):
        if cat != BACKWARD and event.sequence_nr >= 0:
            forward_of.setdefault(event.sequence_nr, cat)
    seconds: dict[str, float] = defaultdict(float)
    for event, cat in zip(events, categories, strict=True):
        if cat == BACKWARD:
            node = _evaluated_node(event)
            cat = forward_of.get(node.sequence_nr, OTHER) if node is not None else OTHER
        took = event.self_device_time_total if device_time else event.self_cpu_time_total
        seconds[cat] += took / 1e6
    return dict(seconds)


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Hide the profiler's native start/stop chatter (kineto writes it to fd 2, not to Python)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_step(step: Any, batch: dict[str, torch.Tensor]) -> Breakdown:
    """Profile one labelled training step (`bench.setup.TrainStep`) and split its time."""
    cuda = step.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with _quiet_native_stderr(), Labels(step.pretrainer) as labels, profile(activities=activities) as prof:
        with record_function(PREFIX + "step"):
            out = step.forward(batch)
            with record_function(PREFIX + BACKWARD):
                step.backward(out)
            with record_function(PREFIX + OPTIMIZER):
                step.update()
            if cuda:
                torch.cuda.synchronize(step.device)
    events = list(prof.events())
    roots = [e for e in events if e.name == PREFIX + "step"]
    step_s = roots[0].cpu_time_total / 1e6 if roots else float("nan")
    seconds = attribute(events, device_time=cuda)
    total = sum(seconds.values()) or 1.0
    components = {k: v / total for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}
    readers = {k: sorted(v) for k, v in labels.readers.items()}
    for term in step.pretrainer.objectives.built:  # an objective's own fusion call: read by it alone
        if f"pass/{ad_hoc_pass(term)}" in components:
            readers[ad_hoc_pass(term)] = [term]
    return Breakdown(step_s, components, readers)
