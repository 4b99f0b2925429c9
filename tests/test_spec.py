"""Study specs: includes, presets, overrides, and one clear error (exit status 2, nothing
written) for every bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.spec import SpecError, load_spec
from tests.helpers import cli, harness, one_line_error

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
name: t
dataset: {name: rendered, task: relational, num_train: 64, num_val: 32, num_test: 32}
model: tiny
train: {epochs: 1, batch_size: 16, device: cpu}
encodings: [none, {name: rope_axial, options: {base: 50.0}}]
train_resolutions: [16]
test_resolutions: [8, 16, 24]
seeds: [0, 1]
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_spec_with_preset_include_and_overrides(tmp_path):
    write(tmp_path, "train: {epochs: 3, lr: 0.01}\nseeds: [5]\n", "base.yaml")
    p = write(tmp_path, "include: [base.yaml]\n" + GOOD.replace("train: {epochs: 1, batch_size: 16, device: cpu}",
                                                             "train: {batch_size: 16, device: cpu}"))
    spec = load_spec(p, ["model.depth=3", "train.lr=0.005"])
    assert spec.model.depth == 3 and spec.model.dim == 32  # preset tiny, then override
    assert spec.train.epochs == 3 and spec.train.lr == 0.005  # include, then override
    assert spec.resolved["model"]["depth"] == 3 and spec.resolved["train"] == {"epochs": 3, "lr": 0.005,
                                                                               "batch_size": 16, "device": "cpu"}
    assert spec.seeds == (0, 1)  # the including file wins over the include
    assert [e.label for e in spec.encodings] == ["none", "rope_axial"]
    assert spec.encodings[1].options == {"base": 50.0}
    assert len(spec.cells()) == 4
    assert spec.model_config(16, 3, 4).dims.train_rows == 4
    assert spec.workers == 1  # the default; `harness run --workers` overrides the spec's
    two = load_spec(p, ["model.depth=3", "train.lr=0.005", "workers=2"])
    assert two.workers == 2 and two.digest() == spec.digest()  # operational: the same study


def test_evaluation_keys_do_not_count_in_the_pinned_digest_training_keys_do(tmp_path):
    """Issue #13: a study can be evaluated at new test sizes and variants (`harness evaluate`)
    without becoming another study; any key that changes what is trained still does."""
    p = write(tmp_path, GOOD)
    spec = load_spec(p)
    same = ["test_resolutions=[8, 16, 24, 32]", "regimes=[zoom, canvas]",
            "policies=[interpolate]", "temperatures=[none, log]", "baseline=rope_axial"]
    for override in same:
        other = load_spec(p, [override])
        assert other.digest() == spec.digest() and other.differs_in(spec.resolved) == [], override
        assert other.digest(legacy=True) != spec.digest(legacy=True), override  # the old hash counted it
    for override, key in (("train.lr=0.005", "train"), ("model.depth=3", "model"), ("seeds=[0, 2]", "seeds"),
                          ("dataset.num_train=96", "dataset"), ("encodings=[none]", "encodings")):
        other = load_spec(p, [override])
        assert other.digest() != spec.digest() and key in other.differs_in(spec.resolved), override


def test_a_declared_analysis_is_typed_and_outside_the_pinned_digest(tmp_path):
    """Issue #21: the primary analysis is an analysis key: declaring or changing it never forces
    a finished study to train again (neither hash moves: the legacy one predates the key)."""
    p = write(tmp_path, GOOD)
    spec = load_spec(p)
    assert spec.analysis is None and spec.resolved["analysis"] is None
    declared = load_spec(p, ["analysis={primary: [rope_axial vs none], endpoint: {sides: [above]}}"])
    a = declared.analysis
    assert a.comparisons() == [("rope_axial", "none")] and a.endpoint.sides == ("above",) and a.alpha == 0.05
    assert declared.resolved["analysis"]["primary"] == ("rope_axial vs none",)
    assert declared.digest() == spec.digest() and declared.digest(legacy=True) == spec.digest(legacy=True)
    assert declared.differs_in(spec.resolved) == []
    # a field of the section can be set on its own, like train.* and model.*
    alpha = load_spec(p, ["analysis={primary: [rope_axial vs none]}", "analysis.alpha=0.01"])
    assert alpha.analysis.alpha == 0.01 and alpha.analysis.endpoint.sides == ("above", "below")


def test_encodings_narrowed_on_the_command_line_drop_the_comparisons_they_leave_out(tmp_path):
    """A spec file that declares 'A vs B' run with ``--set encodings=[...]`` leaving out B (a quick
    try of a few encodings): the comparison cannot be answered, so it is dropped and said; the
    rest of the declared question stands. Declared with the encodings it names, it is an error."""
    from harness.design import design_warnings

    text = GOOD.replace("[none, {name: rope_axial, options: {base: 50.0}}]", "[none, rope_axial, alibi2d]")
    p = write(tmp_path, text + "analysis: {primary: [rope_axial vs alibi2d, rope_axial vs none]}\n")
    assert load_spec(p).analysis.comparisons() == [("rope_axial", "alibi2d"), ("rope_axial", "none")]
    narrowed = load_spec(p, ["encodings=[none, rope_axial]"])
    assert narrowed.analysis.comparisons() == [("rope_axial", "none")]
    assert narrowed.resolved["analysis"]["primary"] == ("rope_axial vs none",)
    (warning,) = [w for w in design_warnings(narrowed) if "analysis" in w]
    assert "analysis.primary[0] 'rope_axial vs alibi2d': alibi2d not in the study's encodings" in warning
    assert "--set encodings=" in warning and "dropped" in warning and "exploratory" not in warning
    # nothing left: no declared question, and the warning says every test is exploratory
    alone = load_spec(p, ["encodings=[none]"])
    assert alone.analysis is None and alone.resolved["analysis"] is None
    assert sum("exploratory" in w for w in design_warnings(alone)) == 2
    # a comparison given on the command line with encodings that lack it: refused, as in a file
    with pytest.raises(SpecError, match=r"--set analysis.primary=\.\.\.: key 'analysis.primary\[0\]': 'alibi2d'"):
        load_spec(p, ["encodings=[none, rope_axial]", "analysis.primary=[rope_axial vs alibi2d]"])
    # and a comparison in the file of an encoding the file lacks: refused
    bad = write(tmp_path, text + "analysis: {primary: [rope_axial vs learned]}\n", "bad.yaml")
    with pytest.raises(SpecError, match="'learned' is not an encoding of the study"):
        load_spec(bad)


def test_a_study_pinned_with_the_old_digest_is_pinned_again_not_refused(tmp_path):
    import optuna

    from harness.schema import U_SPEC_DIGEST
    from harness.storage import open_storage, open_studies, study_names

    spec = load_spec(write(tmp_path, GOOD), [f"output={tmp_path / 'runs'}"])
    storage = open_storage(spec.storage_url())
    (study,) = open_studies(spec, storage).values()
    study.set_user_attr(U_SPEC_DIGEST, spec.digest(legacy=True))  # as a study created before issue #13
    open_studies(spec, storage, create=False)
    name = study_names(spec)["evaluate"]
    assert optuna.load_study(study_name=name, storage=storage).user_attrs[U_SPEC_DIGEST] == spec.digest()
    changed = load_spec(write(tmp_path, GOOD), [f"output={tmp_path / 'runs'}", "train.lr=0.005"])
    with pytest.raises(SpecError, match="different spec"):
        open_studies(changed, storage, create=False)


CASES = {
    "malformed yaml": (GOOD + "seeds: [0, 1\n", [], "malformed YAML"),
    "unknown key": (GOOD + "seed: [3]\n", [], "unknown key 'seed'; did you mean 'seeds'"),
    # a field the loader fills in itself is not a key of the file (it was accepted and dropped)
    "internal field": (GOOD + "analysis_dropped: [a vs b]\n", [], "unknown key 'analysis_dropped'"),
    "unknown nested key": (GOOD.replace("epochs: 1", "epoch: 1"), [], "train.epoch"),
    "wrong type": (GOOD.replace("epochs: 1", "epochs: one"), [], "train.epochs"),
    "zero size": (GOOD.replace("num_train: 64", "num_train: 0"), [], "dataset.num_train"),
    "negative resolution": (GOOD.replace("test_resolutions: [8, 16, 24]", "test_resolutions: [8, -16]"), [],
                            "test_resolutions[1]"),
    "resolution the stem cannot tile": (GOOD.replace("[8, 16, 24]", "[8, 18]"), [], "cannot tile 18 pixels"),
    "train resolution too small": (GOOD.replace("train_resolutions: [16]", "train_resolutions: [2]"), [],
                                   "train_resolutions[0]"),
    "unknown encoding": (GOOD.replace("[none,", "[nnone,"), [], "unknown encoding 'nnone'"),
    "bad encoding option": (GOOD.replace("base: 50.0", "base: -2.0"), [], "'base' must be > 1"),
    "unknown dataset": (GOOD.replace("name: rendered", "name: cifar11"), [], "unknown dataset 'cifar11'"),
    "missing dataset root": (GOOD.replace("{name: rendered, task: relational, num_train: 64, num_val: 32, num_test: 32}",
                                          "{name: cifar10, root: /no/such/folder}"), [], "does not exist"),
    # each dataset owns its options: the rendered task's sizes mean nothing to CIFAR
    "option of another dataset": (GOOD.replace("name: rendered, task: relational", "name: cifar10, root: /tmp"), [],
                                  "unknown key 'dataset.num_train'"),
    "dataset option set that does not exist": (GOOD, ["dataset.num_trian=3"], "did you mean 'num_train'"),
    "missing include": ("include: [nope.yaml]\n" + GOOD, [], "nope.yaml not found"),
    "set key that does not exist": (GOOD, ["model.depht=3"], "did you mean 'depth'"),
    "seeds given twice": (GOOD.replace("seeds: [0, 1]", "seeds: [0, 1, 0]"), [], "0 is given twice"),
    "empty encodings": (GOOD.replace("encodings: [none, {name: rope_axial, options: {base: 50.0}}]",
                                     "encodings: []"), [], "expected a non-empty list"),
    "unknown preset": (GOOD.replace("model: tiny", "model: tinny"), [], "did you mean 'tiny'"),
    "no workers": (GOOD + "workers: 0\n", [], "key 'workers': expected an integer >= 1, got 0"),
    # the declared analysis (issue #21): every error names its key
    "analysis of an unknown encoding": (GOOD + "analysis: {primary: [rope_axal vs none]}\n", [],
                                        "key 'analysis.primary[0]': 'rope_axal' is not an encoding of the study; "
                                        "did you mean 'rope_axial'?"),
    "analysis comparison not A vs B": (GOOD + "analysis: {primary: [rope_axial]}\n", [],
                                       "key 'analysis.primary[0]': expected 'A vs B' (two encoding labels)"),
    "analysis with no comparison": (GOOD + "analysis: {alpha: 0.05}\n", [],
                                    "key 'analysis.primary': expected at least one comparison 'A vs B'"),
    "analysis of an unknown side": (GOOD + "analysis: {primary: [rope_axial vs none], endpoint: {sides: [left]}}\n",
                                    [], "key 'analysis.endpoint.sides': expected a list of one of 'above', 'below'"),
    "analysis of a regime the study lacks": (GOOD + "analysis: {primary: [rope_axial vs none], "
                                             "endpoint: {regimes: [canvas]}}\n", [],
                                             "key 'analysis.endpoint.regimes[0]': 'canvas' is not a regime"),
    "analysis alpha out of range": (GOOD + "analysis: {primary: [rope_axial vs none]}\n", ["analysis.alpha=1.5"],
                                    "key 'analysis.alpha': expected a finite number < 1, got 1.5"),
    "analysis comparison twice": (GOOD + "analysis: {primary: [rope_axial vs none, none vs rope_axial]}\n", [],
                                  "key 'analysis.primary[1]': none and rope_axial are compared already"),
    "analysis unknown field": (GOOD + "analysis: {primary: [rope_axial vs none], famliy: x}\n", [],
                               "unknown key 'analysis.famliy'"),
    "analysis side with no test size": (GOOD.replace("[8, 16, 24]", "[16, 24]")
                                        + "analysis: {primary: [rope_axial vs none]}\n", [],
                                        "key 'analysis.endpoint.sides[1]': no test size of the study lies below"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_spec_is_one_clear_error(case, tmp_path):
    text, overrides, expected = CASES[case]
    p = write(tmp_path, text)
    with pytest.raises(SpecError) as err:
        load_spec(p, overrides)
    msg = str(err.value)
    assert expected in msg, msg
    assert "spec.yaml" in msg or "--set" in msg or "nope" in msg


def test_a_missing_spec_or_a_folder_is_named_for_what_it_is(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.yaml: spec file not found$"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match=r": is a folder, expected a spec file"):
        load_spec(tmp_path)


def test_include_of_itself(tmp_path):
    write(tmp_path, "include: [b.yaml]\n" + GOOD, "a.yaml")
    write(tmp_path, "include: [a.yaml]\n", "b.yaml")
    with pytest.raises(SpecError, match="includes itself"):
        load_spec(tmp_path / "a.yaml")


@pytest.mark.parametrize("case", ["unknown key", "seeds given twice", "malformed yaml", "set key that does not exist",
                                  "analysis of an unknown encoding"])
def test_cli_exits_2_and_writes_nothing(case, tmp_path, capsys, monkeypatch):
    """In this process (the command's code without its start-up); one case as a real process,
    `python -m harness`, for the exit status the shell sees."""
    text, overrides, expected = CASES[case]
    p = write(tmp_path, text)
    sets = [a for o in overrides for a in ("--set", o)]
    args = ["run", str(p), "--set", f"output={tmp_path / 'runs'}", *sets]
    r = harness(tmp_path, *args) if case == "malformed yaml" else cli(tmp_path, capsys, monkeypatch, *args)
    one_line_error(r, expected)
    assert not (tmp_path / "runs").exists()
