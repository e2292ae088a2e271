"""Tokenizers for text data, from the `tokenizers` library (`pip install 'edgekd[text]'`).

A tokenizer is either given — a `tokenizer.json` file, or a local Hugging Face
tokenizer folder holding one — or trained on the training split: byte-level BPE
(any text, code included, never an unknown token) or WordPiece (BERT-style, with
optional lowercasing). A trained tokenizer is saved as a folder that both edgekd
and `transformers.AutoTokenizer` load.

Two tokens matter to edgekd: the padding token (attention skips it; a tokenizer
without one pads with its end token, as GPT-2 does) and the end token, which
closes every generated answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgekd.errors import InputError

SPECIAL_TOKENS = ("<pad>", "<unk>", "<eos>")  # ids 0, 1, 2 of every tokenizer edgekd trains
PAD_NAMES = ("<pad>", "[PAD]", "<|pad|>")
EOS_NAMES = ("<eos>", "</s>", "<|endoftext|>", "[EOS]", "[SEP]")


class TokenizerTraining(BaseModel):
    """Train a tokenizer on the training split: `kind` bpe (byte-level) or wordpiece."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["bpe", "wordpiece"] = "bpe"
    vocab_size: int = Field(1024, ge=len(SPECIAL_TOKENS) + 1)
    min_frequency: int = Field(2, ge=1)
    lowercase: bool = False
    save_to: str | None = None


def require_tokenizers() -> ModuleType:
    try:
        import tokenizers
    except ImportError:
        raise InputError(
            "text data needs the tokenizers library, which is not installed: pip install 'edgekd[text]'"
        ) from None
    return tokenizers


@dataclass
class TextTokenizer:
    """A `tokenizers.Tokenizer` with the ids edgekd needs, and where it came from."""

    backend: Any  # tokenizers.Tokenizer
    pad_id: int
    eos_id: int | None
    source: str

    @property
    def vocab_size(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: list[str], *, special_tokens: bool) -> list[list[int]]:
        """Token ids of each text; `special_tokens` adds what the tokenizer's template adds (e.g. [CLS] … [SEP])."""
        return [encoding.ids for encoding in self.backend.encode_batch(texts, add_special_tokens=special_tokens)]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids, special tokens (padding, end) left out."""
        return str(self.backend.decode(list(ids), skip_special_tokens=True))

    def save(self, folder: str | Path) -> Path:
        """Write tokenizer.json and tokenizer_config.json (naming the special tokens) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / "tokenizer.json"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": self.backend.id_to_token(self.pad_id)}
        if self.eos_id is not None:
            config["eos_token"] = self.backend.id_to_token(self.eos_id)
        if self.backend.token_to_id("<unk>") is not None:
            config["unk_token"] = "<unk>"
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
        return folder


def train_tokenizer(texts: Iterable[str], settings: TokenizerTraining) -> TextTokenizer:
    """A BPE or WordPiece tokenizer trained on `texts`: the same texts and settings give the same tokenizer."""
    lib = require_tokenizers()
    texts = list(texts)
    if settings.kind == "bpe":
        trainers, pre_tokenizers = lib.trainers, lib.pre_tokenizers
        backend = lib.Tokenizer(lib.models.BPE(unk_token="<unk>"))
        if settings.lowercase:
            backend.normalizer = lib.normalizers.Lowercase()
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = lib.decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=settings.vocab_size, min_frequency=settings.min_frequency, special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        backend.train_from_iterator(texts, trainer)
    else:
        backend = _train_wordpiece(lib, texts, settings)
    source = f"{settings.kind} trained on the training split ({backend.get_vocab_size()} tokens)"
    return TextTokenizer(backend, pad_id=0, eos_id=2, source=source)


def _wordpiece(lib: ModuleType, vocab: dict[str, int] | None, lowercase: bool) -> Any:
    backend = lib.Tokenizer(lib.models.WordPiece(vocab, unk_token="<unk>") if vocab else lib.models.WordPiece(unk_token="<unk>"))
    backend.normalizer = lib.normalizers.BertNormalizer(lowercase=lowercase)
    backend.pre_tokenizer = lib.pre_tokenizers.BertPreTokenizer()
    backend.decoder = lib.decoders.WordPiece()
    return backend


def _train_wordpiece(lib: ModuleType, texts: list[str], settings: TokenizerTraining) -> Any:
    """WordPiece, trained deterministically. The trainer numbers the word-inner pieces ("##e") in
    hash-map order, and ties between merges follow those numbers, so the same text gives another
    vocabulary on every run (huggingface/tokenizers#1794). Naming every "##c" up front fixes their
    numbers; they are then made ordinary vocabulary entries of a fresh WordPiece model."""
    backend = _wordpiece(lib, None, settings.lowercase)
    normalize, split = backend.normalizer.normalize_str, backend.pre_tokenizer.pre_tokenize_str
    alphabet = sorted({char for text in texts for word, _ in split(normalize(text)) for char in word})
    trainer = lib.trainers.WordPieceTrainer(
        vocab_size=settings.vocab_size, min_frequency=settings.min_frequency, show_progress=False,
        special_tokens=[*SPECIAL_TOKENS, *(f"##{char}" for char in alphabet)], initial_alphabet=alphabet,
    )
    backend.train_from_iterator(texts, trainer)
    trained = _wordpiece(lib, backend.get_vocab(), settings.lowercase)
    trained.add_special_tokens(list(SPECIAL_TOKENS))
    return trained


def load_tokenizer(path: str | Path, *, pad_token: str | None = None, eos_token: str | None = None) -> TextTokenizer:
    """A tokenizer from a tokenizer.json file or a folder holding one (with tokenizer_config.json or
    special_tokens_map.json naming its special tokens, as Hugging Face saves them)."""
    lib = require_tokenizers()
    path = Path(path)
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        state = "has no tokenizer.json (save a fast tokenizer with save_pretrained)" if path.is_dir() else "does not exist"
        raise InputError(f"data.options.tokenizer: {str(path)!r} {state}")
    try:
        backend = lib.Tokenizer.from_file(str(file))
    except Exception as exc:  # the Rust side raises plain Exceptions
        raise InputError(f"data.options.tokenizer: {str(file)!r} is not a tokenizers file: {exc}") from None
    for given, what in ((pad_token, "pad_token"), (eos_token, "eos_token")):
        if given is not None and backend.token_to_id(given) is None:
            raise InputError(f"data.options.{what}: {given!r} is not a token of {str(path)!r}")
    named = _named_special_tokens(file.parent)
    padding = backend.padding["pad_token"] if backend.padding else None
    backend.no_padding()  # edgekd pads batches itself
    backend.no_truncation()
    eos = _first_known(backend, [eos_token, named.get("eos_token"), *EOS_NAMES])
    pad = _first_known(backend, [pad_token, named.get("pad_token"), padding, *PAD_NAMES])
    if pad is None:
        pad = eos  # GPT-2 style: pad with the end token
    if pad is None:
        raise InputError(
            f"data.options.tokenizer: {str(path)!r} has no padding or end token; name one with data.options.pad_token"
        )
    return TextTokenizer(backend, pad_id=pad, eos_id=eos, source=str(path))


def _named_special_tokens(folder: Path) -> dict[str, str]:
    """pad_token / eos_token as Hugging Face's tokenizer_config.json or special_tokens_map.json name them."""
    found: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        file = folder / name
        if not file.is_file():
            continue
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"data.options.tokenizer: {str(file)!r} is not valid JSON: {exc}") from None
        for key in ("pad_token", "eos_token"):
            value = data.get(key)
            value = value.get("content") if isinstance(value, dict) else value  # AddedToken serialised as a dict
            if isinstance(value, str):
                found[key] = value
    return found


def _first_known(backend: Any, names: list[str | None]) -> int | None:
    for name in names:
        if name is not None and backend.token_to_id(name) is not None:
            return int(backend.token_to_id(name))
    return None
