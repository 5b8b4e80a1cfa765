"""The HTML report of an MFAS search (run_dir/report.html + figures/*.png), drawn from the search summary.

Why: the summary JSON holds hundreds of evaluations; whether the search worked only shows next to each other —
the validation score of every sampled architecture step by step (MFAS against random search), how well the
surrogate predicted those scores before they were measured, what the best architecture looks like, and what it
costs in MAdds. The drawing and html helpers are those of `dynmm.report.html`, so both reports look alike.

Every key the report reads is validated before anything is written: a malformed summary raises `DataError`
naming the key (e.g. `searches[1].evaluations[3].score`) and leaves a previous report untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.patches import FancyBboxPatch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from dynmm.io import atomic_write, read_json
from dynmm.report.html import (
    _CSS,
    _Count,
    _data_error,
    _esc,
    _figure,
    _Invalid,
    _madds,
    _NonNegative,
    _Number,
    _save,
    _section,
    _table,
    _Text,
)

_STYLE = {"mfas": ("C0", "o"), "random": ("C1", "x")}
_DASHES = ("-", "--", ":", "-.")
_TIMING = ("cached_s_per_architecture", "live_s_per_architecture", "speedup", "cache_build_s")
_MEANS = tuple(f"{k}_{q}_mean" for q in ("best_search_score", "final_test") for k in ("mfas", "random"))
_PER_SEED = tuple(f"{k}_{q}" for q in ("best_search_score", "final_valid", "final_test") for k in ("mfas", "random"))


def _v(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


# ---------------------------------------------------------------- validation of the summary (mfas.json)


class _Read(BaseModel):
    """A part of the summary: the keys the report reads are checked, any others ignored (the summary carries
    much more than the report reads), unlike `dynmm.report.html`'s models, which refuse unknown keys."""

    model_config = ConfigDict(extra="ignore")


class _Eval(_Read):
    step: _Count
    score: _Number
    predicted: _Number | None  # None before the surrogate has been trained (first step, random search)
    madds: _NonNegative


class _Search(_Read):
    kind: Literal["mfas", "random"]  # the keys of _STYLE
    seed: _Count
    evals: list[_Eval] = Field(alias="evaluations")


class _Space(_Read):
    layers: dict[_Text, list[_Text]]  # per modality, its candidate layer names
    activations: list[_Text]


class _SeedRow(_Read):
    """comparison.per_seed[i]: the columns _PER_SEED, each None or absent where that search kind did not run."""

    seed: _Count
    mfas_best_search_score: _Number | None = None
    random_best_search_score: _Number | None = None
    mfas_final_valid: _Number | None = None
    random_final_valid: _Number | None = None
    mfas_final_test: _Number | None = None
    random_final_test: _Number | None = None


class _Comparison(_Read):
    per_seed: list[_SeedRow]
    mfas_best_search_score_mean: _Number | None
    random_best_search_score_mean: _Number | None
    mfas_final_test_mean: _Number | None
    random_final_test_mean: _Number | None
    mfas_at_least_random: Annotated[bool, Strict()] | None = None  # absent without a random search


class _SurrogateRow(_Read):
    step: _Count
    position: _Count
    spearman_mean: _Number | None
    mae_mean: _Number | None


class _Timing(_Read):
    cached_s_per_architecture: _Number | None
    live_s_per_architecture: _Number | None
    speedup: _Number | None
    cache_build_s: _Number | None


class _Best(_Read):
    name: _Text
    architecture: list[list[_Count]] = Field(min_length=1)  # [tap per modality..., activation] per fusion layer
    valid: dict[str, Any]  # metric -> score; only the summary's metric is read (and checked)
    test: dict[str, Any]
    madds: _NonNegative
    seed: _Count


_SCORE: TypeAdapter[float] = TypeAdapter(_Number)


class _Summary(_Read):
    name: _Text = "MFAS"
    metric: _Text
    modalities: list[_Text] = Field(min_length=1)
    space: _Space
    searches: list[_Search]
    comparison: _Comparison
    surrogate: list[_SurrogateRow]
    timing: _Timing
    best: _Best

    @field_validator("searches")
    @classmethod
    def _some_evaluation(cls, searches: list[_Search]) -> list[_Search]:
        if not any(s.evals for s in searches):
            got = [s.model_dump(by_alias=True) for s in searches]
            raise _Invalid("a list holding at least one evaluation", got)
        return searches

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """What no field can check alone: a layer list per modality, the best architecture's taps within the
        candidate layers and activations, and the best's scores at the summary's metric."""
        for m in self.modalities:
            if m not in self.space.layers:
                raise _Invalid(None, self.space.layers, f".space.layers.{m}")
        sizes = [len(self.space.layers[m]) for m in self.modalities] + [len(self.space.activations)]
        for i, layer in enumerate(self.best.architecture):
            if len(layer) != len(sizes) or any(v >= n for v, n in zip(layer, sizes, strict=True)):
                raise _Invalid(f"[tap per modality..., activation] within {sizes}", layer, f".best.architecture[{i}]")
        for split, scores in (("valid", self.best.valid), ("test", self.best.test)):
            where = f".best.{split}.{self.metric}"
            if self.metric not in scores:
                raise _Invalid(None, scores, where)
            try:  # scores is the model's own copy, so the caller's summary keeps its value
                scores[self.metric] = _SCORE.validate_python(scores[self.metric])
            except ValidationError:
                raise _Invalid("a finite number", scores[self.metric], where) from None
        return self


@dataclass
class _Data:
    """What the report reads from a summary, validated."""

    title: str
    metric: str
    modalities: list[str]
    layers: list[list[str]]  # per modality, its candidate layer names
    activations: list[str]
    searches: list[_Search]
    means: dict[str, float | None]  # comparison.*_mean
    at_least: bool | None  # comparison.mfas_at_least_random; absent without a random search
    per_seed: list[list[object]]  # seed, then _PER_SEED formatted ("–" where a search kind is absent)
    surrogate: list[tuple[int, int, float | None, float | None]]  # step, position, mean Spearman, mean MAE
    timing: dict[str, float | None]
    name: str  # the best final architecture's
    arch: list[list[int]]
    valid: float
    test: float
    madds: float
    seed: int


def _validate(summary: Any) -> _Data:
    """Everything the report reads, checked and typed; raises DataError naming the first bad key."""
    try:
        s = _Summary.model_validate(summary)
    except ValidationError as error:
        raise _data_error(error, root="summary") from error
    comparison, best = s.comparison, s.best
    return _Data(
        title=s.name,
        metric=s.metric,
        modalities=s.modalities,
        layers=[s.space.layers[m] for m in s.modalities],
        activations=s.space.activations,
        searches=s.searches,
        means={k: getattr(comparison, k) for k in _MEANS},
        at_least=comparison.mfas_at_least_random,
        per_seed=[[row.seed, *(_v(getattr(row, k)) for k in _PER_SEED)] for row in comparison.per_seed],
        surrogate=[(row.step, row.position, row.spearman_mean, row.mae_mean) for row in s.surrogate],
        timing={k: getattr(s.timing, k) for k in _TIMING},
        name=best.name,
        arch=best.architecture,
        valid=best.valid[s.metric],
        test=best.test[s.metric],
        madds=best.madds,
        seed=best.seed,
    )


# ---------------------------------------------------------------- figures and html


def _label(s: _Search) -> str:
    return f"{s.kind} seed {s.seed}"


def _draw_scores(searches: list[_Search], metric: str, path: Path) -> None:
    fig = _figure(8.0, 4.5)
    ax = fig.add_subplot()
    seeds = sorted({s.seed for s in searches})
    for s in searches:
        colour, marker = _STYLE[s.kind]
        ys = [e.score for e in s.evals]
        ax.scatter(range(len(ys)), ys, color=colour, marker=marker, s=14, alpha=0.5, label=_label(s))
        dashes = _DASHES[seeds.index(s.seed) % len(_DASHES)]
        ax.plot(np.maximum.accumulate(ys), color=colour, linestyle=dashes, label=f"{_label(s)} running best")
    first = next((s.evals for s in searches if s.kind == "mfas"), [])
    for i in range(1, len(first)):
        if first[i].step != first[i - 1].step:
            ax.axvline(i - 0.5, color="grey", linestyle=":", linewidth=0.8)
    ax.set(xlabel="evaluation (in order; dotted: MFAS step boundaries)", ylabel=f"validation {metric}")
    ax.set_title(f"validation {metric} of every sampled architecture")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def _draw_surrogate(searches: list[_Search], metric: str, path: Path) -> None:
    fig = _figure(5.5, 5.0)
    ax = fig.add_subplot()
    points = [(e.predicted, e.score, e.step) for s in searches for e in s.evals if e.predicted is not None]
    steps = sorted({step for _, _, step in points})
    for step in steps:
        xs, ys = zip(*((x, y) for x, y, t in points if t == step), strict=True)
        colour = colormaps["viridis"](steps.index(step) / max(len(steps) - 1, 1))
        ax.scatter(xs, ys, color=colour, s=18, zorder=3, label=f"step {step}")
    if points:
        lo, hi = min(min(p[:2]) for p in points), max(max(p[:2]) for p in points)
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="measured = predicted")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no surrogate predictions\n(single-step search)", ha="center", transform=ax.transAxes)
    ax.set(xlabel=f"surrogate prediction of {metric}", ylabel=f"measured validation {metric}")
    ax.grid(True, alpha=0.3)
    _save(fig, path)


def _box(ax: Axes, x: float, y: float, width: float, text: str, face: Any, edge: str = "black") -> None:
    patch = FancyBboxPatch((x, y), width, 0.42, boxstyle="round,pad=0.02", facecolor=face, edgecolor=edge, zorder=3)
    ax.add_patch(patch)
    ax.text(x + width / 2, y + 0.21, text, ha="center", va="center", fontsize=8, zorder=4)


def _draw_architecture(d: _Data, path: Path) -> None:
    """Candidate layers per modality (bottom = first) below; fusion layers h_1..h_L and the head above, each
    fed by one wire per modality that runs up the gap right of its column, so no wire crosses a box."""
    arch, layers, count = d.arch, d.layers, len(d.modalities)
    depth, bw, dy, fw, fpitch = len(arch), 1.7, 0.62, 1.3, 1.7
    gap = 0.35 + 0.12 * depth
    bus0 = (max(map(len, layers)) - 1) * dy + 0.67
    fy = bus0 + count * depth * 0.14 + 0.25
    width = max(count * (bw + gap), (depth + 1) * fpitch)
    fig = _figure(1.0 + 0.9 * width, 1.2 + 0.9 * (fy + 1.2))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set(xlim=(-0.2, width), ylim=(-0.7, fy + 0.6))
    ax.set_title(f"best architecture (seed {d.seed}): valid {d.valid:.4g}, test {d.test:.4g}", fontsize=9)
    for m, name in enumerate(d.modalities):
        x, colour, chosen = m * (bw + gap), f"C{m}", {layer[m] for layer in arch}
        ax.text(x + bw / 2, -0.4, name, ha="center", fontsize=9, fontweight="bold", color=colour)
        for k, layer_name in enumerate(layers[m]):
            face, edge = (to_rgba(colour, 0.3), colour) if k in chosen else ("white", "grey")
            _box(ax, x, k * dy, bw, layer_name, face, edge)
    arrow = {"arrowstyle": "-|>", "color": "black", "linewidth": 1.2}
    for i, layer in enumerate(arch):
        fx = i * fpitch
        _box(ax, fx, fy, fw, f"h{i + 1}: {d.activations[layer[-1]]}", "#eeeeee")
        ax.annotate("", xy=(fx + fpitch, fy + 0.21), xytext=(fx + fw, fy + 0.21), arrowprops=arrow)
        for m in range(count):
            right, y = m * (bw + gap) + bw, layer[m] * dy + 0.21
            lane, bus = right + gap * (i + 1) / (depth + 1), bus0 + (i * count + m) * 0.14
            tx = fx + fw * (m + 1) / (count + 1)
            ax.plot([right, lane, lane, tx], [y, y, bus, bus], color=f"C{m}", linewidth=1.2, zorder=2)
            ax.annotate("", xy=(tx, fy), xytext=(tx, bus), arrowprops=arrow | {"color": f"C{m}"})
    _box(ax, depth * fpitch, fy, fw, "head", "#dddddd")
    _save(fig, path)


def _draw_pareto(d: _Data, path: Path) -> None:
    fig = _figure(7.0, 4.5)
    ax = fig.add_subplot()
    for kind, (colour, marker) in _STYLE.items():
        points = [(e.madds, e.score) for s in d.searches if s.kind == kind for e in s.evals]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, color=colour, marker=marker, s=14, alpha=0.5, label=kind)
    frontier: list[tuple[float, float]] = []
    for x, y in sorted((e.madds, e.score) for s in d.searches for e in s.evals):
        if not frontier or y > frontier[-1][1]:
            frontier.append((x, y))
    ax.step(*zip(*frontier, strict=True), where="post", color="black", linewidth=1, label="frontier (search scores)")
    ax.scatter([d.madds], [d.valid], marker="*", s=160, color="crimson", zorder=4, label="best, final valid")
    if min(x for x, _ in frontier) > 0:
        ax.set_xscale("log")
    ax.set(xlabel="MAdds per sample", ylabel=f"validation {d.metric}", title=f"{d.metric} vs compute")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def write_mfas_report(run_dir: Path, summary: dict[str, Any]) -> Path:
    """Write `run_dir/report.html` and figures/{scores,surrogate,architecture,pareto}.png; return the html path.

    The summary is validated first, so a malformed one (DataError naming the key) leaves any previous report as
    it was."""
    d = _validate(summary)
    metric, figures = d.metric, Path(run_dir) / "figures"
    _draw_scores(d.searches, metric, figures / "scores.png")
    _draw_surrogate(d.searches, metric, figures / "surrogate.png")
    _draw_architecture(d, figures / "architecture.png")
    _draw_pareto(d, figures / "pareto.png")

    means, timing = [_v(d.means[k]) for k in _MEANS], [_v(d.timing[k]) for k in _TIMING]
    summary_rows = [
        ("metric", metric),
        ("best architecture", d.name),
        ("best: seed · fusion layers", f"{d.seed} · {len(d.arch)}"),
        (f"best: valid · test {metric}", f"{d.valid:.4g} · {d.test:.4g}"),
        ("best: MAdds per sample", _madds(d.madds)),
        ("mean best search score: MFAS · random", f"{means[0]} · {means[1]}"),
        (f"mean final test {metric}: MFAS · random", f"{means[2]} · {means[3]}"),
        ("MFAS best search score ≥ random", {True: "yes", False: "no", None: "– (no random search)"}[d.at_least]),
        ("evaluated per search", ", ".join(f"{_label(s)}: {len(s.evals)}" for s in d.searches)),
        ("seconds per architecture: cached · live", f"{timing[0]} · {timing[1]}"),
        ("feature cache: speedup · build seconds", f"{timing[2]} · {timing[3]}"),
    ]
    per_step = [
        (s.seed, step, len(scores), float(np.mean(scores)), max(scores))
        for s in d.searches
        if s.kind == "mfas"
        for step in sorted({e.step for e in s.evals})
        for scores in [[e.score for e in s.evals if e.step == step]]
    ]
    layer_rows = [
        [f"h{i + 1}", *(names[t] for names, t in zip(d.layers, layer, strict=False)), d.activations[layer[-1]]]
        for i, layer in enumerate(d.arch)
    ]
    surrogate_rows = ((step, position, _v(rho), _v(mae)) for step, position, rho, mae in d.surrogate)
    sections = [
        _section("Summary", _table(["", "value"], summary_rows)),
        _section(
            f"Validation {metric} of the sampled architectures: MFAS vs random search",
            _table(["MFAS seed", "step", "evaluated", f"mean {metric}", f"best {metric}"], per_step),
            "scores.png",
        ),
        _section(
            "Surrogate: predicted vs measured",
            _table(["step", "position", "mean Spearman", "mean MAE"], surrogate_rows),
            "surrogate.png",
        ),
        _section(
            f"Best architecture: {d.name}",
            _table(["layer", *d.modalities, "activation"], layer_rows),
            "architecture.png",
        ),
        _section(f"{metric} vs MAdds", "", "pareto.png"),
        _section(
            "MFAS vs random search per seed", _table(["seed", *(k.replace("_", " ") for k in _PER_SEED)], d.per_seed)
        ),
    ]
    title = f"MFAS search: {d.title}"
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n{''.join(sections)}</body>\n</html>\n"
    )
    return atomic_write(Path(run_dir) / "report.html", lambda tmp: tmp.write_bytes(page.encode("utf-8")))


def rebuild_mfas_report(run_dir: Path) -> Path:
    """Redraw run_dir/report.html from the search's saved summary (run_dir/mfas.json)."""
    summary = read_json(Path(run_dir) / "mfas.json", "the MFAS search summary; run the search again to rewrite it")
    return write_mfas_report(Path(run_dir), summary)
