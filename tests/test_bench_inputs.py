"""Bench inputs from declared shapes: batch replacement, --input-shape, dtypes, seeding."""

import numpy as np
import pytest

from edgekd.bench.inputs import InputPlan, InputSpec, parse_input_shapes, parse_shape
from edgekd.errors import InputError

IMAGE = InputSpec("x", ("batch", 3, 8, 8), np.dtype(np.float32))
IDS = InputSpec("ids", (None, 16), np.dtype(np.int64))
QUANTIZED = InputSpec("q", ("n", 4), np.dtype(np.uint8))


def test_batch_dim_is_replaced_and_dtypes_follow_the_model():
    arrays = InputPlan().make((IMAGE, IDS, QUANTIZED), batch=5, model="m.onnx")
    assert {n: (a.shape, a.dtype.name) for n, a in arrays.items()} == {
        "x": ((5, 3, 8, 8), "float32"),
        "ids": ((5, 16), "int64"),
        "q": ((5, 4), "uint8"),
    }
    assert set(np.unique(arrays["ids"])) <= {0, 1}  # wide integers are usually indices: keep them valid


def test_random_data_is_seeded_per_input_name():
    first, again = InputPlan(seed=3).make((IMAGE,), 2, "a.onnx"), InputPlan(seed=3).make((IMAGE,), 2, "b.onnx")
    assert np.array_equal(first["x"], again["x"])
    assert not np.array_equal(first["x"], InputPlan(seed=4).make((IMAGE,), 2, "a.onnx")["x"])


def test_static_inputs_beside_a_dynamic_batch_keep_their_shape():
    scale = InputSpec("scale", (1,), np.dtype(np.float32))
    assert InputPlan().shapes_for((IMAGE, scale), 8, "m.onnx") == {"x": (8, 3, 8, 8), "scale": (1,)}


def test_module_inputs_come_from_input_shapes_or_the_first_model():
    from_shapes = InputPlan({"x": (1, 3, 32, 32)}).specs_for_module(())
    assert from_shapes == (InputSpec("x", (None, 3, 32, 32), np.dtype("float32")),)
    assert InputPlan().specs_for_module((IMAGE,)) == (IMAGE,)
    with pytest.raises(InputError, match="nn.Module declares no inputs"):
        InputPlan().specs_for_module(())


@pytest.mark.parametrize("text", ["", "1x0x3", "1xax3", "-1x3"])
def test_malformed_shapes(text):
    with pytest.raises(InputError, match="is not of the form 1x3x224x224"):
        parse_shape(text)


def test_input_shape_option_parsing():
    assert parse_input_shapes(["x=1x3x224x224", "ids=1X128"]) == {"x": (1, 3, 224, 224), "ids": (1, 128)}
    with pytest.raises(InputError, match="--input-shape '1x3' is not of the form name="):
        parse_input_shapes(["1x3"])


def test_input_shapes_and_npz_are_exclusive(tmp_path):
    npz = tmp_path / "inputs.npz"
    np.savez(npz, x=np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(InputError, match="both given"):
        InputPlan({"x": (1, 3, 8, 8)}, npz)


def test_npz_file_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.npz' does not exist"):
        InputPlan(npz=tmp_path / "missing.npz")
    broken = tmp_path / "broken.npz"
    broken.write_text("not a zip")
    with pytest.raises(InputError, match="broken.npz' is not a readable .npz"):
        InputPlan(npz=broken)
    other = tmp_path / "other.npz"
    np.savez(other, y=np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(InputError, match="other.npz has no array for input\\(s\\) 'x' of m.onnx; its arrays: y"):
        InputPlan(npz=other).make((IMAGE,), 1, "m.onnx")
    ints = tmp_path / "ints.npz"
    np.savez(ints, x=np.zeros((2, 3, 8, 8), np.complex64))
    with pytest.raises(InputError, match="dtype complex64; the model input wants float32"):
        InputPlan(npz=ints).make((IMAGE,), 1, "m.onnx")
