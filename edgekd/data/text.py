"""Text datasets: JSONL or CSV rows → tokenized tensors in a `TextBundle`.

    data:
      dataset: text
      root: data/reviews.jsonl          # or a folder with train.jsonl|csv (and test.jsonl|csv)
      options: {task: classify, input: review, label: sentiment, max_length: 128,
                tokenizer: {kind: wordpiece, vocab_size: 2000}}

The options name the fields: `input`, then `label` (task `classify`) or `target`
(task `generate`), plus `extras` carried along untokenized (a rationale, for a
later step-by-step method). A generate task is laid out for a decoder-only model
(`layout: causal`: prompt, `separator` (default a space) and target in one
sequence) or an encoder-decoder (`layout: seq2seq`); without a `target`, a causal
model learns every token of the input (plain language modelling).

Tensors, with the same (x, y) pairs the image bundle gives, right-padded to the
longest sequence (at most `max_length` tokens):

- classify: x = token ids (N, L); y = class index (N,);
- causal:   x = prompt + target + end token (N, L); y (N, L) holds at position t the token
            the model should predict there (x[t+1]) where that is part of the target, else -100;
- seq2seq:  x = source + end token (N, Ls); y = target + end token (N, Lt), -100 on padding.

`TextBundle.inputs(x, y)` turns a batch into a model's keyword arguments:
`input_ids`, `attention_mask` (1 on real tokens) and, for seq2seq, `decoder_input_ids`
(the target shifted right behind the decoder start token). Positions marked -100 are
never scored. Splits and `limit` work as for images (seeded, stratified by label).
"""

from __future__ import annotations

import csv
import json
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch.utils.data import TensorDataset

from edgekd.data.bundle import DataBundle, split_indices
from edgekd.data.checks import check_classes, check_rows, check_token_rows
from edgekd.data.registry import datasets
from edgekd.data.tokenizer import TextTokenizer, TokenizerTraining, load_tokenizer, train_tokenizer
from edgekd.errors import InputError
from edgekd.files import json_object
from edgekd.facts import IGNORE_INDEX, DataFacts
from edgekd.registry import unknown_name

SUFFIXES = (".jsonl", ".csv")


class TextOptions(BaseModel):
    """`data.options` of the text dataset.

    `input`, `label`, `target`, `extras`: field names. `vocabulary_text`: text a trained tokenizer learns
    beside the training rows (the step-by-step method's task prefixes, which no row holds). `labels`: the class set, in index order
    (default: the training rows' labels, sorted). `tokenizer`: a tokenizer.json path or tokenizer
    folder, or training settings. `pad_token` / `eos_token`: name them when the tokenizer does not.
    `max_length`: tokens per sequence; longer rows are cut (`truncation`) or refused. `test`: a test
    file beside the training file `data.root`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["classify", "generate"] = "classify"
    layout: Literal["causal", "seq2seq"] = "causal"
    input: str = "text"
    label: str = "label"
    target: str | None = None
    separator: str = " "
    extras: tuple[str, ...] = ()
    vocabulary_text: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None
    tokenizer: str | TokenizerTraining = TokenizerTraining()
    pad_token: str | None = None
    eos_token: str | None = None
    max_length: int = Field(128, ge=2)
    truncation: bool = True
    test: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> TextOptions:
        if self.task == "generate" and self.layout == "seq2seq" and self.target is None:
            raise ValueError("layout seq2seq needs a target field (target: <field name>)")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("labels: each label once")
        return self

    @property
    def facts_task(self) -> str:
        if self.task == "classify":
            return "classify"
        return "causal-lm" if self.layout == "causal" else "seq2seq"

    @property
    def answer_field(self) -> str | None:
        """The field the model predicts: the label, or the generation target."""
        return self.label if self.task == "classify" else self.target

    @property
    def fields(self) -> list[str]:
        """Every field a row must have."""
        return [self.input, *([self.answer_field] if self.answer_field else []), *self.extras]

    @property
    def text_fields(self) -> list[str]:
        """The fields holding text to tokenize (a class label is not text)."""
        return [name for name in self.fields if not (self.task == "classify" and name == self.label)]


def text_options(options: dict[str, Any] | TextOptions) -> TextOptions:
    """Validate `data.options` for text; every problem named with its field."""
    if isinstance(options, TextOptions):
        return options
    try:
        return TextOptions(**options)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = ".".join(str(p) for p in error["loc"])
            if error["type"] == "extra_forbidden":
                problems.append(f"data.options: {unknown_name('text data option', str(error['loc'][0]), TextOptions.model_fields)}")
            else:
                problems.append(f"data.options.{path}: {error['msg']}." if path else f"data.options: {error['msg']}.")
        raise InputError("text dataset options are not valid: " + " ".join(problems)) from None


@dataclass
class TextSplit:
    """Rows of one source, and where each came from (for error messages)."""

    rows: list[dict[str, Any]]
    source: str
    lines: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.lines:
            self.lines = list(range(1, len(self.rows) + 1))

    def where(self, index: int) -> str:
        return f"{self.source} line {self.lines[index]}"

    def subset(self, indices: np.ndarray) -> TextSplit:
        return TextSplit([self.rows[i] for i in indices], self.source, [self.lines[i] for i in indices])


@dataclass
class TextData:
    """What a text source returns: training rows, test rows if it has its own, and the options.
    A user factory (`"pkg.module:factory"`) may return one; plain lists of dicts become splits."""

    train: TextSplit | list[dict[str, Any]]
    test: TextSplit | list[dict[str, Any]] | None = None
    options: TextOptions | dict[str, Any] = field(default_factory=TextOptions)

    def __post_init__(self) -> None:
        if isinstance(self.train, list):
            self.train = TextSplit(self.train, "training rows")
        if isinstance(self.test, list):
            self.test = TextSplit(self.test, "test rows")
        self.options = text_options(self.options)


def read_rows(path: str | Path) -> TextSplit:
    """Rows of a JSONL file (one object a line) or a CSV file with a header."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"text file {str(path)!r} does not exist")
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"text file {str(path)!r}: read .jsonl or .csv files, not {path.suffix or 'files without a suffix'}")
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            if path.suffix.lower() == ".csv":
                reader = csv.DictReader(handle)
                for row in reader:
                    rows.append(dict(row))
                    lines.append(reader.line_num)
            else:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        rows.append(json_object(line, f"{str(path)!r} line {number}"))
                        lines.append(number)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"text file {str(path)!r} cannot be read: {exc}") from None
    if not rows:
        raise InputError(f"text file {str(path)!r} is empty: it holds no rows")
    return TextSplit(rows, str(path), lines)


def _files(root: str | None, test: str | None) -> tuple[Path, Path | None]:
    if not root:
        raise InputError("data.root: the text dataset needs a .jsonl or .csv file, or a folder holding train.jsonl or train.csv")
    base = Path(root)
    if base.is_dir():
        def find(stem: str) -> Path | None:
            return next((base / f"{stem}{suffix}" for suffix in SUFFIXES if (base / f"{stem}{suffix}").is_file()), None)

        train = find("train")
        if train is None:
            raise InputError(f"data.root: folder {root!r} holds no train.jsonl or train.csv")
        return train, Path(test) if test else find("test")
    return base, Path(test) if test else None


@datasets.register
def text(root: str | None = None, **options: Any) -> TextData:
    """JSONL or CSV text: `root` is the training file (or a folder with train.* and test.*), options name the fields."""
    settings = text_options(options)
    train, test = _files(root, settings.test)
    return TextData(read_rows(train), read_rows(test) if test else None, settings)


@dataclass
class TextBundle(DataBundle):
    """Tokenized text splits (layouts in the module docstring) with the tokenizer that made them."""

    task: str = "classify"
    tokenizer: TextTokenizer | None = None
    max_length: int = 0
    labels: list[str] = field(default_factory=list)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    truncated: dict[str, int] = field(default_factory=dict)
    # Set by `packed`: each seq2seq row's x holds the source (this many tokens) and then the decoder inputs.
    source_length: int | None = None
    options: TextOptions | None = None  # what encoded the rows (`with_training_targets` encodes more the same way)

    @property
    def _tokenizer(self) -> TextTokenizer:
        assert self.tokenizer is not None, "a TextBundle is made with its tokenizer"
        return self.tokenizer

    @property
    def facts(self) -> DataFacts:
        tokenizer = self._tokenizer
        return DataFacts(
            inputs="tokens",
            task=self.task,  # type: ignore[arg-type]
            num_classes=self.num_classes if self.task == "classify" else None,
            vocab_size=tokenizer.vocab_size,
            max_length=self.max_length,
            pad_id=tokenizer.pad_id,
            eos_id=tokenizer.eos_id,
            decoder_start_id=tokenizer.pad_id if self.task == "seq2seq" else None,
        )

    def _digest_parts(self) -> Iterator[bytes | memoryview]:
        """The token tensors, and what they do not hold: the rows' text (extras such as rationales
        included) and the tokenizer that turns generated ids back into text."""
        yield from super()._digest_parts()
        yield json.dumps(self.rows, sort_keys=True, ensure_ascii=False, default=str).encode()
        yield self._tokenizer.backend.to_str().encode()

    def inputs(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """A batch as a model's keyword arguments (see the module docstring)."""
        inputs = self.model_inputs(x)
        if self.task == "seq2seq":
            pad = self._tokenizer.pad_id
            inputs["decoder_input_ids"] = shift_right(y, start=pad, pad=pad)
        return inputs

    def model_inputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Token ids as the keyword arguments a classifier or decoder takes (no targets needed); for a
        `packed` seq2seq bundle, an encoder-decoder's (source, its mask, decoder inputs)."""
        if self.source_length is not None:
            source, decoder = x[:, : self.source_length], x[:, self.source_length :]
            return {"input_ids": source, "attention_mask": (source != self._tokenizer.pad_id).long(), "decoder_input_ids": decoder}
        return {"input_ids": x, "attention_mask": (x != self._tokenizer.pad_id).long()}

    def packed(self) -> TextBundle:
        """A seq2seq bundle whose x carries the decoder inputs behind the source (x ‖ shift_right(y)), so
        that one tensor per batch is a whole model input — what the runner's stages read through
        `model_inputs` — while y keeps the per-token targets."""
        if self.task != "seq2seq" or self.source_length is not None:
            return self
        pack = self.pack
        return dataclasses.replace(
            self, train=pack(self.train), val=pack(self.val), test=pack(self.test), source_length=self.train.tensors[0].shape[1]
        )  # fmt: skip

    def pack(self, split: TensorDataset) -> TensorDataset:
        """One seq2seq split's (source, targets) as (source ‖ decoder inputs, targets) (see `packed`)."""
        pad = self._tokenizer.pad_id
        x, y = split.tensors
        return TensorDataset(torch.cat([x, shift_right(y, start=pad, pad=pad)], dim=1), y)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Text of token ids; -100 and padding left out."""
        values = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self._tokenizer.decode(i for i in values if i >= 0)

    def summary(self) -> dict[str, object]:
        tokenizer = self._tokenizer
        summary: dict[str, object] = {
            "name": self.name,
            "task": self.task,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "sizes": {s: len(getattr(self, s)) for s in ("train", "val", "test")},
            "vocab_size": tokenizer.vocab_size,
            "max_length": self.max_length,
            "tokenizer": tokenizer.source,
            "truncated": dict(self.truncated),
        }
        if self.task == "classify":
            summary["labels"] = list(self.labels)
        return summary


def causal_prompts(x: torch.Tensor, y: torch.Tensor, eos_id: int | None) -> tuple[list[list[int]], list[list[int]]]:
    """Causal rows (module docstring) split into the prompts a model continues (the tokens before the
    first target token) and their reference answers (the target tokens, without the end token).
    Rows without a target are left out.

    >>> causal_prompts(torch.tensor([[5, 6, 7, 8, 2, 0]]), torch.tensor([[-100, 7, 8, 2, -100, -100]]), 2)
    ([[5, 6]], [[7, 8]])
    """
    prompts, references = [], []
    for ids, targets in zip(x.tolist(), y.tolist()):
        scored = [t for t, value in enumerate(targets) if value != IGNORE_INDEX]
        if not scored:
            continue
        answer = [targets[t] for t in scored]
        prompts.append(ids[: scored[0] + 1])
        references.append(answer[:-1] if answer[-1] == eos_id else answer)
    return prompts, references


def shift_right(targets: torch.Tensor, *, start: int, pad: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing: the start token, then the targets but the last (-100 → pad).

    >>> shift_right(torch.tensor([[5, 6, 2, -100]]), start=0, pad=0)
    tensor([[0, 5, 6, 2]])
    """
    shifted = torch.full_like(targets, pad)
    shifted[:, 0] = start
    shifted[:, 1:] = targets[:, :-1]
    return shifted.masked_fill(shifted == IGNORE_INDEX, pad)


def make_text_bundle(
    data: TextData,
    *,
    name: str,
    seed: int,
    val_split: float,
    test_split: float,
    limit: int | None = None,
    workdir: str | Path | None = None,
) -> TextBundle:
    """Check, split, tokenize (training the tokenizer on the training split if asked) and pad."""
    options = text_options(data.options)
    assert isinstance(data.train, TextSplit)
    train = data.train
    test = data.test if isinstance(data.test, TextSplit) else None
    for split in (train, test):
        if split is not None:
            check_rows(split.source, split.rows, options.fields, options.text_fields, split.where)
    if limit is not None and limit < len(train.rows):
        keep, _ = split_indices(len(train.rows), 1 - limit / len(train.rows), seed)
        train = train.subset(keep)
    labels = _label_set(options, train, test)
    strata = _label_indices(options, labels, train) if labels else None
    splits = _splits(train, test, strata, seed=seed, val_split=val_split, test_split=test_split)
    if labels:
        source = f"text data {train.source!r}"
        check_classes(source, *(_label_indices(options, labels, splits[s]) for s in ("train", "test")), len(labels), labels)
    tokenizer = _tokenizer(options, splits["train"], workdir)
    encoded, truncated = _encode(options, tokenizer, labels, splits)
    return TextBundle(
        name,
        encoded["train"],
        encoded["val"],
        encoded["test"],
        num_classes=len(labels) if labels else tokenizer.vocab_size,
        task=options.facts_task,
        tokenizer=tokenizer,
        max_length=options.max_length,
        labels=labels,
        rows={split: [{k: row[k] for k in options.fields} for row in part.rows] for split, part in splits.items()},
        truncated=truncated,
        options=options,
    )


def with_training_targets(bundle: TextBundle, answers: list[str]) -> TextBundle:
    """`bundle` whose training rows have the generation targets `answers` (one per row, in order), encoded
    as `make_text_bundle` encodes targets (same tokenizer, end token, separator, truncation); validation
    and test keep theirs. A `packed` bundle stays packed, its sources untouched."""
    options = bundle.options
    assert options is not None and options.target is not None and len(answers) == len(bundle.rows["train"])
    rows = [{**row, options.target: answer} for row, answer in zip(bundle.rows["train"], answers)]
    part = _encode_split(options, bundle._tokenizer, [], TextSplit(rows, "the teacher's answers to the training prompts"))
    pad = bundle._tokenizer.pad_id
    if options.layout == "seq2seq":
        sources = bundle.train.tensors[0][:, : bundle.source_length] if bundle.source_length else bundle.train.tensors[0]
        y = _padded(part.targets, max(len(t) for t in part.targets), IGNORE_INDEX)  # type: ignore[arg-type]
        x = torch.cat([sources, shift_right(y, start=pad, pad=pad)], dim=1) if bundle.source_length else sources
    else:
        width = max(len(ids) for ids in part.inputs)
        x = _padded(part.inputs, width, pad)
        y = _padded([t[1:] for t in part.targets], width, IGNORE_INDEX)  # type: ignore[index]
    return dataclasses.replace(
        bundle, train=TensorDataset(x, y), rows={**bundle.rows, "train": rows}, truncated={**bundle.truncated, "train": part.truncated}
    )  # fmt: skip


def _splits(
    train: TextSplit, test: TextSplit | None, strata: np.ndarray | None, *, seed: int, val_split: float, test_split: float
) -> dict[str, TextSplit]:
    """As for images: a test split held out when the source has none, then a validation split,
    both seeded and stratified by label (`strata`) for classification."""
    if test is None:
        keep, held = split_indices(len(train.rows), test_split, seed, strata)
        train, test = train.subset(keep), train.subset(held)
        strata = strata[keep] if strata is not None else None
    keep, held = split_indices(len(train.rows), val_split, seed + 1, strata)
    return {"train": train.subset(keep), "val": train.subset(held), "test": test}


def _label_set(options: TextOptions, train: TextSplit, test: TextSplit | None) -> list[str]:
    """The classes: given, or every label of the training rows (sorted); each row's label must be one."""
    if options.task != "classify":
        return []
    labels = list(options.labels) if options.labels is not None else sorted({str(row[options.label]) for row in train.rows})
    known = set(labels)
    for split in (train, test):
        for index, row in enumerate(split.rows if split else []):
            value = str(row[options.label])
            if value not in known:
                origin = "data.options.labels" if options.labels is not None else "the training rows' labels"
                raise InputError(f"{split.where(index)}: {unknown_name('label', value, labels)} (The label set: {origin}.)")  # type: ignore[union-attr]
    if len(labels) < 2:
        raise InputError(f"{train.source}: classification needs at least 2 labels, found {labels}")
    return labels


def _label_indices(options: TextOptions, labels: list[str], split: TextSplit) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return np.asarray([index[str(row[options.label])] for row in split.rows], dtype=np.int64)


def _tokenizer(options: TextOptions, train: TextSplit, workdir: str | Path | None) -> TextTokenizer:
    setting = options.tokenizer
    if isinstance(setting, str):
        return load_tokenizer(setting, pad_token=options.pad_token, eos_token=options.eos_token)
    corpus = [str(row[name]) for row in train.rows for name in options.text_fields] + list(options.vocabulary_text)
    tokenizer = train_tokenizer(corpus, setting)
    folder = setting.save_to or (Path(workdir) / "tokenizer" if workdir is not None else None)
    if folder is not None:
        tokenizer.save(folder)
        tokenizer.source = f"{tokenizer.source}, saved in {folder}"
    return tokenizer


@dataclass
class _Encoded:
    """One split's sequences before padding, and how many rows were truncated."""

    inputs: list[list[int]]
    targets: list[list[int]] | list[int]
    truncated: int


def _too_long(where: str, what: str, length: int, limit: int) -> InputError:
    return InputError(
        f"{where}: {what} is {length} tokens, longer than max_length ({limit}) and data.options.truncation is off; "
        "raise max_length or turn truncation on"
    )


def _fit(ids: list[int], limit: int, *, where: str, what: str, truncation: bool) -> tuple[list[int], bool]:
    """`ids` cut to their first `limit` tokens, or an error when truncation is off."""
    if len(ids) <= limit:
        return ids, False
    if not truncation:
        raise _too_long(where, what, len(ids), limit)
    return ids[:limit], True


def _encode_split(options: TextOptions, tokenizer: TextTokenizer, labels: list[str], split: TextSplit) -> _Encoded:
    texts = [str(row[options.input]) for row in split.rows]
    sources = tokenizer.encode(texts, special_tokens=False)
    check_token_rows(sources, split.where, f"field {options.input!r}")
    if options.task == "classify":
        what = f"field {options.input!r}"
        fitted = [
            _fit(ids, options.max_length, where=split.where(i), what=what, truncation=options.truncation)
            for i, ids in enumerate(tokenizer.encode(texts, special_tokens=True))
        ]
        classes = _label_indices(options, labels, split).tolist()
        return _Encoded([ids for ids, _ in fitted], classes, sum(cut for _, cut in fitted))
    if tokenizer.eos_id is None:
        raise InputError(f"the tokenizer ({tokenizer.source}) has no end token; name one with data.options.eos_token")
    end = [tokenizer.eos_id]
    if options.target is None:  # plain language modelling: every token after the first is a target
        answers: list[list[int]] = [[] for _ in texts]
    else:
        # A causal model reads the answer right after the prompt: the separator is the text between them.
        joint = options.separator if options.layout == "causal" else ""
        targets = [joint + str(row[options.target]) for row in split.rows]
        answers = [ids + end for ids in tokenizer.encode(targets, special_tokens=False)]
    layout = _seq2seq_row if options.layout == "seq2seq" else _causal_row
    rows = [layout(options, source, answer, end, split.where(i)) for i, (source, answer) in enumerate(zip(sources, answers))]
    return _Encoded([ids for ids, _, _ in rows], [t for _, t, _ in rows], sum(cut for _, _, cut in rows))


def _seq2seq_row(options: TextOptions, source: list[int], answer: list[int], end: list[int], where: str) -> tuple[list[int], list[int], bool]:
    """(source + end, target + end), each cut to max_length."""
    limit, truncation = options.max_length, options.truncation
    source, cut_source = _fit(source + end, limit, where=where, what=f"field {options.input!r}", truncation=truncation)
    answer, cut_answer = _fit(answer, limit, where=where, what=f"field {options.target!r}", truncation=truncation)
    return source, answer, cut_source or cut_answer


def _causal_row(options: TextOptions, source: list[int], answer: list[int], end: list[int], where: str) -> tuple[list[int], list[int], bool]:
    """(prompt + target, per-token targets: -100 on the prompt). Without a target field the whole
    input (+ end) is both. Too long: the prompt gives way from its start, since its end leads into the answer."""
    limit = options.max_length
    if options.target is None:
        sequence, cut = _fit(source + end, limit, where=where, what=f"field {options.input!r}", truncation=options.truncation)
        return sequence, [IGNORE_INDEX, *sequence[1:]], cut
    if len(source) + len(answer) > limit and not options.truncation:
        raise _too_long(where, f"fields {options.input!r} + {options.target!r}", len(source) + len(answer), limit)
    answer, cut = _fit(answer, limit, where=where, what=f"field {options.target!r}", truncation=True)
    room = limit - len(answer)
    prompt = source[len(source) - room :] if len(source) > room else source
    return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, cut or len(prompt) < len(source)


def encode_rows(
    options: TextOptions, tokenizer: TextTokenizer, splits: dict[str, TextSplit]
) -> tuple[dict[str, TensorDataset], dict[str, int]]:
    """Generation rows (`options.input` → `options.target`) tokenized and padded to one width, as
    `make_text_bundle` lays them out, with a tokenizer made before (another task built on the same data)."""
    if options.task != "generate":
        raise ValueError("encode_rows lays out generation rows")
    return _encode(options, tokenizer, [], splits)


def check_nonempty_field(root: str | None, test: str | None, field: str, what: str) -> None:
    """Every row of the text files `root` (and `test`) names has `field` as non-empty text; an
    InputError naming the file, the line and the field otherwise. For fields a method needs filled
    (a rationale), checked before anything is written."""
    train_file, test_file = _files(root, test)
    for path in (train_file, test_file):
        if path is None or not path.is_file():
            continue  # the loader names a missing file
        split = read_rows(path)
        for index, row in enumerate(split.rows):
            value = row.get(field)
            if value is None or (isinstance(value, str) and not value.strip()):
                state = "has no field" if field not in row else "has an empty field"
                raise InputError(f"{split.where(index)} {state} {field!r} ({what}); every row needs one")


def _encode(
    options: TextOptions, tokenizer: TextTokenizer, labels: list[str], splits: dict[str, TextSplit]
) -> tuple[dict[str, TensorDataset], dict[str, int]]:
    """Each split as padded tensors (one width for all splits), and how many of its rows were truncated."""
    encoded = {name: _encode_split(options, tokenizer, labels, split) for name, split in splits.items()}
    width = max(len(ids) for part in encoded.values() for ids in part.inputs)
    target_width = max((len(t) for p in encoded.values() for t in p.targets if isinstance(t, list)), default=0)
    tensors: dict[str, TensorDataset] = {}
    for name, part in encoded.items():
        x = _padded(part.inputs, width, tokenizer.pad_id)
        if options.task == "classify":
            y = torch.tensor(part.targets, dtype=torch.long)
        elif options.layout == "seq2seq":
            y = _padded(part.targets, target_width, IGNORE_INDEX)  # type: ignore[arg-type]
        else:  # position t predicts token t+1: the per-token targets shift one place left
            y = _padded([t[1:] for t in part.targets], width, IGNORE_INDEX)  # type: ignore[index]
        tensors[name] = TensorDataset(x, y)
    return tensors, {name: part.truncated for name, part in encoded.items()}


def _padded(sequences: list[list[int]], width: int, value: int) -> torch.Tensor:
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for row, ids in enumerate(sequences):
        out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out
