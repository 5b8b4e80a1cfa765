"""The input of `write_report`, as pydantic models, and validation errors worded as one-line `DataError`s.

Why: a report is drawn from one plain dict that several adapters build; validating all of it before anything
is written means a malformed section raises `DataError` naming the key at fault (e.g.
`pareto.experts[2].madds`) and leaves any previous report untouched. Unknown keys are errors too, so a
misspelled section is not silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, Strict, ValidationError, model_validator

from dynmm.errors import DataError

Point = tuple[str, float, float]  # (name, madds, metric)


class _Invalid(ValueError):
    """A check pydantic has no constraint for (lengths that must agree, array shapes), in `_data_error`'s words.

    `where` extends pydantic's loc, which stops at the model that ran the check, so the message can still name
    the entry at fault, e.g. `routing.per_class['pos']`. `expected` None says that entry is missing (a key another
    field asks for, e.g. one per modality).
    """

    def __init__(self, expected: str | None, got: Any, where: str = "") -> None:
        super().__init__(expected)
        self.expected, self.got, self.where = expected, got, where


def _scalar(value: Any) -> str | int | float:
    """A summary value: any string or number (bool and NaN included, as written), so one plain check."""
    if not isinstance(value, str | int | float):
        raise _Invalid("a string or number", value)
    return value


def _class_label(value: Any) -> str:
    """Class labels may be integers (not bools); the report shows them as text."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _Invalid("a class label (string or integer)", value)
    return str(value)


def _panel(value: Any) -> np.ndarray:
    """An example panel: a finite (H, W) or (H, W, 3) array of numbers (any array-like)."""
    image = np.asarray(value)
    shaped = image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    if not shaped or image.dtype.kind not in "iuf" or not np.isfinite(image).all():
        raise _Invalid("a finite (H, W) or (H, W, 3) array", image.shape)
    return image


# Strict: a string is not a number, a bool or a float is not a count; floats accept ints and come out as float.
_Text = Annotated[str, Strict()]
_Count = Annotated[int, Strict(), Field(ge=0)]
_Flag = Annotated[bool, Strict()]
_Number = Annotated[float, Strict(), Field(allow_inf_nan=False)]
_NonNegative = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]


class _Model(BaseModel):
    """Unknown keys are refused, so a misspelled key is an error rather than silently ignored."""

    model_config = ConfigDict(extra="forbid")


class _Oracle(_Model):
    """A point of the oracle frontier: unnamed (one per upgraded sample)."""

    madds: _NonNegative
    metric: _Number

    @property
    def point(self) -> Point:
        return ("", self.madds, self.metric)


class _Measured(_Oracle):
    """A trained model's point: its spread over seeds (drawn as error bars) and whether its routing collapsed
    onto one path (drawn hollow), when the caller knows them."""

    metric_std: _NonNegative | None = None
    madds_std: _NonNegative | None = None
    collapsed: _Flag = False


class _Named(_Measured):
    """An expert or a static-fusion baseline."""

    name: _Text

    @property
    def point(self) -> Point:
        return (self.name, self.madds, self.metric)


class _Labelled(_Measured):
    """A trained dynamic model; `oracle_gain_share`: the share of the oracle's gain over the cheapest path that
    this model's routing realizes (modality-level DynMM), shown in the table."""

    label: _Text
    oracle_gain_share: _Number | None = None
    oracle_gain_share_std: _NonNegative | None = None

    @property
    def point(self) -> Point:
        return (self.label, self.madds, self.metric)


class _Beta(_Oracle):
    """A point of one model's β sweep, shown as "β=…"."""

    beta: _Number

    @property
    def point(self) -> Point:
        return (f"β={self.beta:.3g}", self.madds, self.metric)


class _Pareto(_Model):
    """`test_rows`: how many test samples every point was measured on, stated in the title and table."""

    experts: list[_Named] = []
    baselines: list[_Named] = []
    dynmm: list[_Labelled] = []
    beta_curve: list[_Beta] = []
    oracle: list[_Oracle] = []
    budget: _NonNegative | None = None
    test_rows: Annotated[int, Strict(), Field(ge=1)] | None = None


class _Routing(_Model):
    """`group`: what the per_class bars are (a class, a fusion cell), named on the axis and table."""

    experts: list[_Text] = Field(min_length=1)
    counts: list[_Count]
    per_class: dict[Annotated[str, PlainValidator(_class_label)], list[_Count]] = {}
    unit: _Text = ""
    group: _Text = "group"

    @model_validator(mode="after")
    def _one_count_per_expert(self) -> Self:
        """Counts are bars per expert: every list must match routing.experts, which no field constraint can say."""
        lists = [(".counts", self.counts), *((f".per_class[{c!r}]", v) for c, v in self.per_class.items())]
        for where, counts in lists:
            if len(counts) != len(self.experts):
                raise _Invalid(f"one count per routing.experts entry ({len(self.experts)})", counts, where)
        return self


class _Histogram(_Model):
    """How many samples fell in each bin (e.g. depth stages a scene ran), and optionally, per panel of
    `stacked`, the same bins split by a sample group (e.g. a data flag: flagged / not flagged) drawn stacked."""

    title: _Text
    xlabel: _Text
    unit: _Text = ""  # what is counted; default the report's unit
    bins: list[_Text] = Field(min_length=1)
    counts: list[_Count]
    stacked: dict[_Text, dict[_Text, list[_Count]]] = {}

    @model_validator(mode="after")
    def _one_count_per_bin(self) -> Self:
        """Every count list is drawn against the bins, so it needs one count per bin."""
        lists = [(".counts", self.counts)]
        lists += [(f".stacked[{p!r}][{s!r}]", v) for p, series in self.stacked.items() for s, v in series.items()]
        for where, counts in lists:
            if len(counts) != len(self.bins):
                raise _Invalid(f"one count per bin ({len(self.bins)})", counts, where)
        return self


class _Bar(_Model):
    """One model's MAdds in the component, and its metric (annotated on the bar)."""

    name: _Text
    group: _Text  # e.g. "static fusion", "λ sweep", "this run": one colour each
    madds: _NonNegative
    metric: _Number
    collapsed: _Flag = False


class _Component(_Model):
    """MAdds that one skippable part of the model (e.g. the depth encoder) costs per sample, model by model:
    what skipping it saves. `subject`'s saving relative to `reference` (both bar names) is stated in the title;
    `full` (the whole component) is drawn as a line."""

    name: _Text
    bars: list[_Bar] = Field(min_length=1)
    full: _NonNegative | None = None
    subject: _Text | None = None
    reference: _Text | None = None
    reference_kind: _Text = "reference"  # how the reference was chosen, e.g. "best static fusion"

    @model_validator(mode="after")
    def _names_a_bar(self) -> Self:
        """subject and reference point at bars by name, so they must be among them."""
        names = [b.name for b in self.bars]
        for where, value in ((".subject", self.subject), (".reference", self.reference)):
            if value is not None and value not in names:
                raise _Invalid(f"one of the bar names {names}", value, where)
        return self


class _Speed(_Model):
    label: _Text
    batch_size: Annotated[int, Strict(), Field(ge=1)]
    predicted_speedup: _NonNegative
    realized_speedup: _NonNegative


class _Robustness(_Model):
    title: _Text = ""  # default "Robustness {i}", set by _Report
    xlabel: _Text = "corruption level"
    levels: list[_Number]
    curves: dict[_Text, list[_Number]]

    @model_validator(mode="after")
    def _one_value_per_level(self) -> Self:
        """Each curve is drawn against the levels, so it needs one value per level."""
        for name, ys in self.curves.items():
            if len(ys) != len(self.levels):
                raise _Invalid(f"one value per level ({len(self.levels)})", ys, f".curves[{name!r}]")
        return self


class _ExampleRow(_Model):
    """Integer 2-D panels are drawn as class maps (one colour per class), float ones as heat maps, 3-channel ones
    as images."""

    label: _Text = ""  # default "example {i}", set by _Report
    panels: dict[_Text, Annotated[np.ndarray, PlainValidator(_panel)]]


class _Examples(_Model):
    """`class_names[i]` names class i of the class-map panels; given, a legend of their colours is drawn."""

    title: _Text = "Examples"
    rows: list[_ExampleRow]
    class_names: list[_Text] = []


class _Report(_Model):
    title: _Text = "Dynamic multimodal fusion report"
    metric: _Text = "metric"
    method: _Text = "DynMM"
    unit: _Text = "sample"
    summary: dict[_Text, Annotated[str | int | float, PlainValidator(_scalar)]] = {}
    component: _Component | None = None
    pareto: _Pareto | None = None
    routing: _Routing | None = None
    histograms: list[_Histogram] = []
    speed: list[_Speed] = []
    robustness: list[_Robustness] = []
    examples: _Examples | None = None

    @model_validator(mode="after")
    def _name_untitled_by_position(self) -> Self:
        """Untitled robustness figures and example rows are numbered, and only the list knows the number."""
        for i, rob in enumerate(self.robustness):
            if "title" not in rob.model_fields_set:
                rob.title = f"Robustness {i}"
        for i, row in enumerate(self.examples.rows if self.examples else []):
            if "label" not in row.model_fields_set:
                row.label = f"example {i}"
        return self


_EXPECTED = {
    "model_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "float_type": "a finite number",
    "finite_number": "a finite number",
    "greater_than_equal": ">= {ge:g}",
    "too_short": "a non-empty list",
}
"""pydantic error type -> what was expected, worded as the messages users (and tests) already know."""


def _data_error(error: ValidationError, root: str = "data") -> DataError:
    """pydantic's first error as one DataError line, `report data: <path> must be <expected>, got <value>`.

    loc ('a', 0, 'b') is named `a[0].b`, the document itself `root`. A dict key that is no identifier is quoted
    (`summary['test acc']`); pydantic's '[key]' marks a bad key itself.
    """
    e = error.errors()[0]
    path = ""
    for part in e["loc"]:
        if part == "[key]":
            path += " (key)"
        elif isinstance(part, str) and part.isidentifier():
            path += f".{part}"
        else:
            path += f"[{part!r}]"
    cause = e.get("ctx", {}).get("error")
    if isinstance(cause, _Invalid):
        path, expected, got = path + cause.where, cause.expected, cause.got
    else:
        template = _EXPECTED.get(e["type"])
        expected = template.format(**e.get("ctx", {})) if template else e["msg"].removeprefix("Input should be ")
        got = e["input"]
    path = path.removeprefix(".") or root
    if e["type"] == "missing" or expected is None:
        return DataError(f"report data: {path} is missing")
    if e["type"] == "extra_forbidden":
        return DataError(f"report data: {path} is not a known key (misspelled?), got {got!r:.80}")
    return DataError(f"report data: {path} must be {expected}, got {got!r:.80}")


def validate_report(data: dict[str, Any]) -> _Report:
    """`data` as a `_Report`, or the first thing wrong with it as a one-line DataError."""
    try:
        return _Report.model_validate(data)
    except ValidationError as error:
        raise _data_error(error) from error
