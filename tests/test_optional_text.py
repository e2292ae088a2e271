"""transformers and tokenizers are optional (`edgekd[text]`): without them the image path works
and text features say which extra to install."""

import subprocess
import sys
import textwrap


def test_the_image_path_works_without_the_text_extra():
    script = textwrap.dedent(
        """
        import sys
        sys.modules["transformers"] = None  # as if neither were installed
        sys.modules["tokenizers"] = None
        import torch
        from edgekd.data import load_data
        from edgekd.errors import InputError
        from edgekd.models import build_model
        from edgekd.prune import ChannelPruner, PruneConfig

        data = load_data("digits", seed=0, limit=200)
        model = build_model("vit_s(dim=16, depth=1, heads=2)", data.facts)
        pruner = ChannelPruner(model, data.test.tensors[0][:1], PruneConfig(target_params=0.5))
        pruner.prune_to(pruner.measure("params") * 0.7)
        assert model(data.test.tensors[0][:2]).shape == (2, 10)
        for attempt in (
            lambda: build_model("hf-config:gpt2", data.facts),
            lambda: load_data("text", seed=0, root="missing.jsonl", options={}),
        ):
            try:
                attempt()
            except InputError as exc:
                assert "edgekd[text]" in str(exc) or "does not exist" in str(exc), exc
            else:
                raise AssertionError("expected an InputError")
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")
