"""Text data: JSONL and CSV rows → tokenized, split, padded tensors, for classification and for
generation (causal and seq2seq); trained and given tokenizers; clear errors for bad rows."""

import csv
import json
import random

import pytest
import torch

from edgekd.data import TextBundle, TextData, load_data
from edgekd.errors import InputError
from edgekd.models import build_model
from edgekd.outputs import flatten_tokens, logits_of, run_model

pytest.importorskip("tokenizers")

POSITIVE = "good great fine lovely superb".split()
NEGATIVE = "bad awful poor dull weak".split()
NOUNS = "movie film plot actor story ending".split()


def review_rows(count: int = 160, seed: int = 0) -> list[dict]:
    """Sentiment rows whose label is decided by their adjectives, with a rationale to carry along."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = "pos" if index % 2 else "neg"
        words = POSITIVE if label == "pos" else NEGATIVE
        text = " ".join(rng.choice(words) + " " + rng.choice(NOUNS) for _ in range(rng.randint(1, 4)))
        rows.append({"review": text, "sentiment": label, "why": f"it says {text.split()[0]}"})
    return rows


def sum_rows(count: int = 120, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"question": f"{a} plus {b} is", "answer": str(a + b)} for a, b in ((rng.randint(0, 30), rng.randint(0, 30)) for _ in range(count))]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


REVIEWS = {"input": "review", "label": "sentiment", "extras": ["why"], "tokenizer": {"kind": "wordpiece", "vocab_size": 120}}
SUMS = {"task": "generate", "input": "question", "target": "answer", "tokenizer": {"kind": "bpe", "vocab_size": 300}}


def test_classification_rows_become_token_ids_and_class_indices(tmp_path):
    data = load_data("text", seed=0, root=str(write_jsonl(tmp_path / "reviews.jsonl", review_rows())), options=REVIEWS, workdir=tmp_path / "run")
    assert isinstance(data, TextBundle) and data.labels == ["neg", "pos"] and data.num_classes == 2
    assert {s: len(getattr(data, s)) for s in ("train", "val", "test")} == {"train": 116, "val": 12, "test": 32}
    x, y = data.train.tensors
    assert x.dtype == torch.long and x.shape[1] == data.input_shape[0] <= 128 and set(y.tolist()) == {0, 1}
    assert (y == 1).sum() / len(y) == pytest.approx(0.5, abs=0.05)  # splits are stratified by label
    for ids, label, row in zip(x[:5], y[:5], data.rows["train"][:5]):
        assert data.decode(ids) == row["review"]
        assert data.labels[int(label)] == row["sentiment"] and row["why"].startswith("it says")
    inputs = data.inputs(x[:4], y[:4])
    assert torch.equal(inputs["attention_mask"], (x[:4] != data.facts.pad_id).long())
    assert data.facts.task == "classify" and data.facts.vocab_size == data.tokenizer.vocab_size
    summary = data.summary()
    assert summary["labels"] == ["neg", "pos"] and summary["task"] == "classify" and "wordpiece" in summary["tokenizer"]


def test_splits_and_limit_are_deterministic_and_a_saved_tokenizer_reloads(tmp_path):
    path = str(write_jsonl(tmp_path / "reviews.jsonl", review_rows()))
    first = load_data("text", seed=3, root=path, options=REVIEWS, workdir=tmp_path / "a", limit=100)
    again = load_data("text", seed=3, root=path, options=REVIEWS, workdir=tmp_path / "b", limit=100)
    other = load_data("text", seed=4, root=path, options=REVIEWS, workdir=tmp_path / "c", limit=100)
    assert sum(len(getattr(first, s)) for s in ("train", "val", "test")) == 100
    assert all(torch.equal(a, b) for a, b in zip(first.train.tensors, again.train.tensors))
    assert first.rows["test"] != other.rows["test"]
    saved = tmp_path / "a" / "tokenizer"
    assert (saved / "tokenizer.json").is_file()
    reloaded = load_data("text", seed=3, root=path, options={**REVIEWS, "tokenizer": str(saved)}, limit=100)
    assert torch.equal(reloaded.train.tensors[0], first.train.tensors[0])


def test_a_trained_tokenizer_folder_loads_in_transformers_too(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = str(write_jsonl(tmp_path / "reviews.jsonl", review_rows()))
    data = load_data("text", seed=0, root=path, options=REVIEWS, workdir=tmp_path / "run")
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "run" / "tokenizer")
    assert (auto.pad_token_id, auto.eos_token_id) == (data.facts.pad_id, data.facts.eos_id)
    row = data.rows["test"][0]["review"]
    assert auto(row)["input_ids"] == data.tokenizer.encode([row], special_tokens=True)[0]


def test_a_csv_file_and_a_given_label_set_work_like_jsonl(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = review_rows(40)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["review", "sentiment", "why"])
        writer.writeheader()
        writer.writerows(rows)
    data = load_data("text", seed=0, root=str(path), options={**REVIEWS, "labels": ["pos", "neg"]})
    assert data.labels == ["pos", "neg"] and data.num_classes == 2  # the given order, not sorted
    assert all(data.labels[int(y)] == row["sentiment"] for y, row in zip(data.train.tensors[1], data.rows["train"]))
    with pytest.raises(InputError, match=r"the label 'meh' of 3 has no row in the training split"):
        load_data("text", seed=0, root=str(path), options={**REVIEWS, "labels": ["pos", "neg", "meh"]})


def test_a_folder_with_train_and_test_files_keeps_its_test_split(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", review_rows(100))
    write_jsonl(tmp_path / "test.jsonl", review_rows(30, seed=9))
    data = load_data("text", seed=0, root=str(tmp_path), options=REVIEWS)
    assert len(data.test) == 30 and len(data.train) + len(data.val) == 100


def test_a_causal_generation_target_follows_its_prompt_and_only_it_is_scored(tmp_path):
    data = load_data("text", seed=0, root=str(write_jsonl(tmp_path / "sums.jsonl", sum_rows())), options=SUMS)
    assert data.facts.task == "causal-lm" and data.num_classes == data.tokenizer.vocab_size
    x, y = data.train.tensors
    assert x.shape == y.shape
    eos = data.facts.eos_id
    for ids, targets, row in zip(x[:10], y[:10], data.rows["train"][:10]):
        scored = (targets != -100).nonzero().flatten()
        # Position t predicts token t+1: the scored positions read the answer's tokens and then the end token.
        assert torch.equal(targets[scored], ids[scored + 1])
        assert ids[scored[-1] + 1] == eos and data.decode(targets[scored]).strip() == row["answer"]
        assert data.decode(ids[: scored[0] + 1]) == row["question"]
    assert set(data.inputs(x, y)) == {"input_ids", "attention_mask"}


def test_plain_language_modelling_scores_every_next_token(tmp_path):
    rows = [{"text": " ".join(random.Random(i).choices(NOUNS, k=6))} for i in range(40)]
    data = load_data("text", seed=0, root=str(write_jsonl(tmp_path / "lm.jsonl", rows)), options={"task": "generate", "tokenizer": {"vocab_size": 200}})
    x, y = data.train.tensors
    real = x != data.facts.pad_id
    # Every real token but the first is a target, read from the position before it.
    assert torch.equal(y[:, :-1][real[:, 1:]], x[:, 1:][real[:, 1:]])
    assert (y[:, :-1][~real[:, 1:]] == -100).all() and (y[:, -1] == -100).all()


def test_seq2seq_targets_stand_alone_and_feed_the_decoder_shifted_right(tmp_path):
    options = {**SUMS, "layout": "seq2seq"}
    data = load_data("text", seed=0, root=str(write_jsonl(tmp_path / "sums.jsonl", sum_rows())), options=options)
    facts = data.facts
    assert facts.task == "seq2seq" and facts.decoder_start_id == facts.pad_id
    x, y = data.train.tensors
    for source, target, row in zip(x[:5], y[:5], data.rows["train"][:5]):
        assert data.decode(source) == row["question"] and data.decode(target) == row["answer"]
        assert target[(target != -100).nonzero().max()] == facts.eos_id
    decoder = data.inputs(x[:3], y[:3])["decoder_input_ids"]
    assert (decoder[:, 0] == facts.decoder_start_id).all()
    assert torch.equal(decoder[:, 1:], y[:3, :-1].masked_fill(y[:3, :-1] == -100, facts.pad_id))


def test_a_local_hugging_face_tokenizer_folder_gives_its_pad_and_end_tokens(tmp_path):
    transformers = pytest.importorskip("transformers")
    trained = load_data("text", seed=0, root=str(write_jsonl(tmp_path / "sums.jsonl", sum_rows())), options=SUMS).tokenizer
    folder = tmp_path / "hf-tokenizer"
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=trained.backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    fast.save_pretrained(folder)
    data = load_data("text", seed=0, root=str(tmp_path / "sums.jsonl"), options={**SUMS, "tokenizer": str(folder)})
    assert (data.facts.pad_id, data.facts.eos_id) == (fast.pad_token_id, fast.eos_token_id)
    ids = data.train.tensors[0][0]
    assert data.decode(ids) == fast.decode(ids[ids != fast.pad_token_id].tolist(), skip_special_tokens=True)


def test_truncation_cuts_the_prompt_from_its_start_and_is_counted(tmp_path):
    rows = [{"question": "one two three four five six seven eight nine ten " * 3 + "so", "answer": "yes"} for _ in range(30)]
    options = {**SUMS, "max_length": 8, "tokenizer": {"vocab_size": 300, "min_frequency": 1}}
    data = load_data("text", seed=0, root=str(write_jsonl(tmp_path / "long.jsonl", rows)), options=options)
    assert data.input_shape == (8,) and sum(data.truncated.values()) == 30
    x, y = data.train.tensors
    scored = y[0] != -100
    assert data.decode(y[0][scored]).strip() == "yes"  # the answer survives; the prompt's end leads into it
    assert data.decode(x[0]).endswith("so yes")


def user_text_factory(root=None, count=60):
    """A user dataset referenced as 'tests.test_text_data:user_text_factory': rows built in Python."""
    return TextData(train=review_rows(count), options={"input": "review", "label": "sentiment", "tokenizer": {"kind": "wordpiece", "vocab_size": 80}})


def test_a_user_factory_may_return_text():
    data = load_data("tests.test_text_data:user_text_factory", seed=0, options={"count": 50})
    assert isinstance(data, TextBundle) and sum(len(getattr(data, s)) for s in ("train", "val", "test")) == 50


def test_a_small_encoder_learns_the_generated_sentiment_task(tmp_path):
    data = load_data("text", seed=0, root=str(write_jsonl(tmp_path / "reviews.jsonl", review_rows(300))), options=REVIEWS)
    torch.manual_seed(0)
    model = build_model("bert_s(dim=32, depth=1, heads=2)", data.facts)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(4):
        for x, y in data.loader("train", 32, shuffle=True):
            loss = torch.nn.functional.cross_entropy(*flatten_tokens(logits_of(run_model(model, data.inputs(x, y))), y))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    x, y = data.test.tensors
    with torch.no_grad():
        accuracy = (logits_of(run_model(model, data.inputs(x, y))).argmax(-1) == y).float().mean().item()
    assert accuracy >= 0.95


@pytest.mark.parametrize(
    "rows, options, message",
    [
        ([{"review": "good film"}], REVIEWS, r"reviews.jsonl line 1: unknown field 'sentiment'\. Known: review\."),
        ([{"reviews": "good", "sentiment": "pos"}], REVIEWS, r"unknown field 'review'\. Did you mean 'reviews'\? Known: reviews, sentiment\."),
        ([{"review": "good", "sentiment": "pos", "why": "x"}, {"review": "bad", "sentiment": "neutral", "why": "y"}],
         {**REVIEWS, "labels": ["pos", "neg"]}, r"reviews.jsonl line 2: unknown label 'neutral'\..* Known: neg, pos\. \(The label set: data.options.labels\.\)"),
        ([{"review": "good " * 40, "sentiment": label, "why": ""} for label in ("pos", "neg") * 10], {**REVIEWS, "max_length": 16, "truncation": False},
         r"reviews.jsonl line 1: field 'review' is \d+ tokens, longer than max_length \(16\) and data.options.truncation is off"),
        ([{"review": None, "sentiment": "pos", "why": ""}], REVIEWS, r"reviews.jsonl line 1: field 'review' is null"),
        ([{"review": ["good", "film"], "sentiment": "pos", "why": ""}], REVIEWS,
         r"reviews.jsonl line 1: field 'review' holds list \['good', 'film'\]; text fields hold text"),
        ([*review_rows(20), {"review": " ", "sentiment": "pos", "why": ""}], REVIEWS,
         r"reviews.jsonl line 21: field 'review' is empty once tokenized"),
    ],
)
def test_bad_rows_are_named_by_file_line_and_field(tmp_path, rows, options, message):
    path = write_jsonl(tmp_path / "reviews.jsonl", rows)
    with pytest.raises(InputError, match=message):
        load_data("text", seed=0, root=str(path), options=options)


def test_an_over_long_generation_example_is_refused_with_truncation_off(tmp_path):
    rows = [{"question": "one two three four five six", "answer": "seven eight nine"}] * 10
    options = {**SUMS, "max_length": 6, "truncation": False, "tokenizer": {"vocab_size": 300, "min_frequency": 1}}
    with pytest.raises(InputError, match=r"line 1: fields 'question' \+ 'answer' is \d+ tokens, longer than max_length \(6\)"):
        load_data("text", seed=0, root=str(write_jsonl(tmp_path / "sums.jsonl", rows)), options=options)


def test_a_test_label_unseen_in_training_is_named(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", review_rows(40))
    write_jsonl(tmp_path / "test.jsonl", [{"review": "fine film", "sentiment": "mixed", "why": ""}])
    with pytest.raises(InputError, match=r"test.jsonl line 1: unknown label 'mixed'\..* \(The label set: the training rows' labels\.\)"):
        load_data("text", seed=0, root=str(tmp_path), options=REVIEWS)


def test_a_class_missing_from_a_split_is_named_by_its_label(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", review_rows(40))
    write_jsonl(tmp_path / "test.jsonl", [row for row in review_rows(10) if row["sentiment"] == "pos"])
    with pytest.raises(InputError, match=r"the label 'neg' of 2 has no row in the test split"):
        load_data("text", seed=0, root=str(tmp_path), options=REVIEWS)


def test_the_digest_follows_what_training_reads_tokens_text_and_tokenizer(tmp_path):
    rows = review_rows(60)

    def digest(rows, **options) -> str:
        path = write_jsonl(tmp_path / "reviews.jsonl", rows)
        return load_data("text", seed=0, root=str(path), options={**REVIEWS, **options}).digest()

    same = digest(rows)
    assert digest(rows) == same  # a trained tokenizer is deterministic
    assert digest([{**rows[0], "review": "superb plot"}, *rows[1:]]) != same  # the tokens
    assert digest([{**rows[0], "why": "another rationale"}, *rows[1:]]) != same  # an extra, which no tensor holds
    assert digest(rows, tokenizer={"kind": "wordpiece", "vocab_size": 120, "lowercase": True}) != same


def test_empty_and_malformed_files_and_options_are_named(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="empty.jsonl' is empty: it holds no rows"):
        load_data("text", seed=0, root=str(tmp_path / "empty.jsonl"), options=REVIEWS)
    (tmp_path / "broken.jsonl").write_text('{"review": "good"}\n{"review": \n')
    with pytest.raises(InputError, match="broken.jsonl' line 2 is not valid JSON"):
        load_data("text", seed=0, root=str(tmp_path / "broken.jsonl"), options=REVIEWS)
    with pytest.raises(InputError, match="does not exist"):
        load_data("text", seed=0, root=str(tmp_path / "missing.jsonl"), options=REVIEWS)
    with pytest.raises(InputError, match=r"data.options: unknown text data option 'max_len'\. Did you mean 'max_length'"):
        load_data("text", seed=0, root=str(tmp_path / "empty.jsonl"), options={"max_len": 8})
    with pytest.raises(InputError, match="layout seq2seq needs a target field"):
        load_data("text", seed=0, root=str(tmp_path / "empty.jsonl"), options={"task": "generate", "layout": "seq2seq"})
    write_jsonl(tmp_path / "ok.jsonl", review_rows(20))
    with pytest.raises(InputError, match="data.options.tokenizer: .*nowhere.json' does not exist"):
        load_data("text", seed=0, root=str(tmp_path / "ok.jsonl"), options={**REVIEWS, "tokenizer": str(tmp_path / "nowhere.json")})
