"""Plugins that break the hook contract fail their trial with a message naming the encoding
and the hook, checked once per grid (issue 14).

The broken encodings are built directly (not registered) so that this process's registry, which
other tests walk, never holds them; the study-level test runs `harness run` in a subprocess."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import harness.models.vit as vit
from harness.conformance import TINY
from harness.encodings import PositionalEncoding
from harness.models.vit import EncodingContractError, ViT
from harness.train import TrialFailed

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"


def _broken(hook: str, fn) -> PositionalEncoding:
    """An (unregistered) encoding named ``broken_<hook>`` whose ``hook`` is ``fn``."""
    cls = type(f"Broken_{hook}", (PositionalEncoding,), {"name": f"broken_{hook}", hook: fn,
                                                          "__doc__": "A broken test encoding."})
    return cls(TINY.dims)


BROKEN = {
    # the tokens hook: (B, N, D) in and out
    "tokens_channels": ("tokens", lambda self, x, g, s: x[..., :-1], r"tokens returned shape \(2, 16, 31\), "
                                                                      r"expected \(2, 16, 32\)"),
    "tokens_drops_tokens": ("tokens", lambda self, x, g, s: x[:, :-2], r"tokens returned shape \(2, 14, 32\)"),
    "tokens_nan": ("tokens", lambda self, x, g, s: x * float("nan"), "tokens returned non-finite values"),
    "tokens_dtype": ("tokens", lambda self, x, g, s: x.double(), "tokens returned torch.float64 on cpu for "
                                                                 "torch.float32"),
    "tokens_not_a_tensor": ("tokens", lambda self, x, g, s: [x], "tokens returned list, not a tensor"),
    # qk: a pair of (B, h, T, d)
    "qk_single": ("qk", lambda self, q, k, g, s, layer: q, "qk in layer 0 returned Tensor, not the pair"),
    "qk_shape": ("qk", lambda self, q, k, g, s, layer: (q[..., 1:, :], k),
                 r"qk in layer 0 returned shape \(2, 4, 16, 8\), expected \(2, 4, 17, 8\)"),
    "qk_inf_in_layer_1": ("qk", lambda self, q, k, g, s, layer: (q / (1 - layer), k),
                          "qk in layer 1 returned non-finite values"),
    # attn_bias: None or (h, T, T)
    "bias_shape": ("attn_bias", lambda self, g, s, layer: torch.zeros(4, g.num_patches, g.num_patches),
                   r"attn_bias in layer 0 returned shape \(4, 16, 16\), expected \(4, 17, 17\)"),
    "bias_nan": ("attn_bias", lambda self, g, s, layer: torch.full((4, 17, 17), float("nan")),
                 "attn_bias in layer 0 returned nan or \\+inf"),
    "bias_int": ("attn_bias", lambda self, g, s, layer: torch.zeros(4, 17, 17, dtype=torch.long),
                 "attn_bias in layer 0 returned torch.int64"),
    # after_block: (B, T, D), the cls token first
    "after_block_drops_cls": ("after_block", lambda self, x, g, s, layer: x[:, 1:],
                              r"after_block in layer 0 returned shape \(2, 16, 32\), expected \(2, 17, 32\)"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_a_broken_hook_fails_the_trial_naming_encoding_and_hook(case):
    hook, fn, expected = BROKEN[case]
    torch.manual_seed(0)
    model = ViT(TINY, _broken(hook, fn))
    with pytest.raises(EncodingContractError, match=f"^encoding 'broken_{hook}' breaks the hook contract: {expected}") \
            as info:
        model(torch.randn(2, 3, 16, 16))
    assert isinstance(info.value, TrialFailed)  # a trial failure, not a crash of the harness
    assert "on a 4x4 patch grid" in info.value.reason


def test_a_mask_of_minus_inf_is_allowed():
    def mask(self, g, s, layer):
        bias = torch.zeros(1, g.num_tokens, g.num_tokens)
        bias[:, 1:, 1:].masked_fill_(torch.eye(g.num_patches).logical_not(), float("-inf"))  # self and cls only
        return bias

    out = ViT(TINY, _broken("attn_bias", mask))(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, TINY.num_classes) and torch.isfinite(out).all()


def test_checked_once_per_grid_then_free(monkeypatch):
    """The check runs on the first forward at a grid (and mode, policy, autocast), then never again
    for it: no cost per training step."""
    calls = []
    real = vit._check_like
    monkeypatch.setattr(vit, "_check_like", lambda *a, **k: (calls.append(a[1]), real(*a, **k))[1])
    torch.manual_seed(0)
    model = ViT(TINY, _broken("tokens", lambda self, x, g, s: x + 1))  # a valid hook
    x16, x24 = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 24, 24)
    model(x16)
    first = len(calls)
    assert first == 1 + 3 * TINY.depth  # tokens; q, k and after_block per layer
    for _ in range(3):
        model(x16)
    assert len(calls) == first  # cached: the same grid is not checked again
    model(x24)
    assert len(calls) == 2 * first  # a new grid is
    model.eval()
    model(x24)
    assert len(calls) == 3 * first  # eval mode (another code path in some encodings) is too
    # inside torch.compile's tracing the check is skipped (it would be traced into the graph)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    model(torch.randn(2, 3, 32, 32))
    assert len(calls) == 3 * first


def test_a_broken_hook_off_the_training_grid_is_caught_there():
    """A hook that breaks only on a new grid fails at that grid (evaluation), not before."""
    def tokens(self, x, g, s):
        return x if g.is_train_grid else x[:, : g.num_patches // 2]

    model = ViT(TINY, _broken("tokens", tokens))
    model(torch.randn(2, 3, 16, 16))
    with pytest.raises(EncodingContractError,
                       match=r"tokens returned shape \(2, 18, 32\), expected \(2, 36, 32\).*\(on a 6x6 patch grid\)"):
        model(torch.randn(2, 3, 24, 24))


PLUGIN = '''
"""A plugin whose tokens hook drops the last patch token."""
from harness.encodings import PositionalEncoding, register_encoding


@register_encoding("drops_tokens")
class DropsTokens(PositionalEncoding):
    """Test plugin: drops a token."""

    def tokens(self, x, grid, state):
        return x[:, :-1]
'''


@pytest.mark.slow
def test_a_broken_plugin_fails_its_cells_and_the_study_goes_on(tmp_path):
    import optuna

    from harness.tracking import Tracker

    plugin = tmp_path / "drops_tokens.py"
    plugin.write_text(textwrap.dedent(PLUGIN))
    out = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "harness", "run", str(SMOKE), "--no-report", "--set", f"output={out}",
                        "--set", "encodings=[none, drops_tokens]", "--set", f"plugins=[{plugin}]",
                        "--set", "seeds=[0]", "--set", "max_retries=0", "--set", "dataset.num_train=128",
                        "--set", "train.batch_size=32"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    tracker = Tracker(f"sqlite:///{out / 'smoke' / 'mlflow.db'}", "smoke")
    runs = {x.data.params["encoding"]: x for x in tracker.runs("smoke", "evaluate")}
    assert set(runs) == {"none", "drops_tokens"}
    assert runs["none"].info.status == "FINISHED"
    bad = runs["drops_tokens"]
    assert bad.info.status == "FAILED"
    reason = bad.data.tags["harness.fail_reason"]
    assert reason.startswith("encoding 'drops_tokens' breaks the hook contract: "
                             "tokens returned shape (32, 15, "), reason
    study = optuna.load_study(study_name="smoke/evaluate", storage=f"sqlite:///{out / 'smoke' / 'optuna.db'}")
    states = {t.user_attrs["encoding"]: t for t in study.trials if "encoding" in t.user_attrs}
    assert states["none"].state == optuna.trial.TrialState.COMPLETE
    assert states["drops_tokens"].state == optuna.trial.TrialState.FAIL
    assert states["drops_tokens"].user_attrs["harness.fail_reason"] == reason
    # every run closed: nothing RUNNING
    assert not tracker.runs("smoke", status="RUNNING")
    assert r.returncode == 3 and "drops_tokens r16 seed 0: 1 try," in r.stderr  # a failed cell: exit 3, named


@pytest.mark.slow
def test_harness_train_of_a_broken_plugin_exits_3_with_one_line(tmp_path):
    """`harness train` runs one training: when it fails (here the encoding breaks the hook
    contract) the run is closed FAILED and the command says why in one line, exit 3, no traceback."""
    from harness.tracking import Tracker

    plugin = tmp_path / "drops_tokens.py"
    plugin.write_text(textwrap.dedent(PLUGIN))
    out = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "harness", "train", "--spec", str(SMOKE), "--encoding", "drops_tokens",
                        "--set", f"output={out}", "--set", f"plugins=[{plugin}]", "--set", "dataset.num_train=128",
                        "--set", "train.batch_size=32", "--set", "train.epochs=1"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    lines = [line for line in r.stderr.splitlines() if "training failed" in line]
    assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1 and "breaks the hook contract" in lines[0] and lines[0].startswith("drops_tokens r16 seed 0")
    tracker = Tracker(f"sqlite:///{out / 'smoke' / 'mlflow.db'}", "smoke")
    (run,) = tracker.runs("smoke", "train")
    assert run.info.status == "FAILED" and not tracker.runs("smoke", status="RUNNING")
