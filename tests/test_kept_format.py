"""Issue #24: the kept-model format (:mod:`harness.kept`) without training.

- Every built-in encoding's model goes through MLflow's PyTorch flavour (``pt2``) and back:
  ``mlflow.pytorch.load_model`` of the saved folder gives the model's outputs at the training
  size for any batch size, and :func:`harness.kept.read` gives back its exact weights. Before
  ``autocast_off`` switched autocast off only where it was on, ``none``, ``learned`` and ``cpe``
  (no tables: an empty autocast region) failed to load (``SpecViolationError: Node.meta
  wrap_with_autocast is missing val field``).
- A model the flavour cannot save is kept in the previous format (``model/weights.pt`` and
  ``model/model.json``), tagged with the reason, and read back by ``Tracker.load_model``.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from harness.config import ViTConfig
from harness.encodings import ENCODINGS
from harness.models.vit import build_model

CFG = ViTConfig(image_size=16, in_chans=3, num_classes=4, dim=32, depth=2, heads=4, patch_kernel=4, patch_stride=4)


def meta_of(name: str) -> dict:
    return {"model": dataclasses.asdict(CFG), "encoding": {"name": name, "options": {}, "label": name},
            "train_resolution": 16}


@pytest.mark.parametrize("name", sorted(ENCODINGS.names(entry_points=False)))
def test_every_encodings_model_goes_through_the_pytorch_flavour_and_back(name, tmp_path):
    import mlflow.pytorch
    from mlflow.models import Model

    from harness import kept

    torch.manual_seed(0)
    model = build_model(CFG, name, {}).eval()
    with torch.no_grad():  # weights off their initial values (zero-initialised ones too)
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept.save(tmp_path / "model", model.state_dict(), meta_of(name), torch.randn(2, 3, 16, 16), Model())
    # the fixed tables' per-grid memo, filled during export, is not news on a study's stderr
    assert not [str(w.message) for w in caught if "assigned during export" in str(w.message)]
    loaded = mlflow.pytorch.load_model(str(tmp_path / "model"))
    x = torch.randn(3, 3, 16, 16)  # another batch size than the example's
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)
    state, meta, weights = kept.read(tmp_path / "model")
    assert meta == meta_of(name) and weights == "model/data/model.pt2"
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert list(model.state_dict().keys()) == list(kept.rebuild(meta, state).state_dict().keys())


def test_a_model_the_flavour_cannot_save_is_kept_as_weights_and_read_back(tmp_path, monkeypatch, capsys):
    from harness import kept
    from harness.schema import EVALUATE, T_KEPT_AS
    from harness.tracking import Tracker

    def untraceable(*args, **kwargs):
        raise RuntimeError("Could not guard on data-dependent expression u0 > 3")

    monkeypatch.setattr(kept, "save", untraceable)
    t = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "kept")
    run_id = t.child_run(t.parent_run("kept", EVALUATE), "none_r16_s0", study="kept", stage=EVALUATE, params={},
                         tags={})
    model = build_model(CFG, "none", {})
    assert t.log_model(run_id, model.state_dict(), meta_of("none"), torch.zeros(2, 3, 16, 16)) == f"runs:/{run_id}/model"
    assert t.kept_model(run_id) is None  # no READY logged model
    tag = t.client.get_run(run_id).data.tags[T_KEPT_AS]
    assert tag.startswith("model/weights.pt: the PyTorch flavour could not save it (RuntimeError: Could not guard")
    assert "model kept as model/weights.pt" in capsys.readouterr().err
    state, meta, weights = t.load_model(run_id, tmp_path / "dl")
    assert weights == "model/weights.pt" and meta == meta_of("none")
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
