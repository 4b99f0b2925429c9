"""``harness bench``: the FLOP model, the JSON it writes, timm's twin model, bad inputs.

No timed assertions: speed lives in the benchmark, not in the tests. The timings here are
shortened (``MIN_TIME_S`` and the matmul sizes patched) so the file runs in seconds.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from harness import bench
from harness.cli import main
from harness.models.vit import build_model


@pytest.fixture
def quick(monkeypatch):
    """Short timings: a timing lasts 10 ms (still MIN_STEPS steps), small matmuls; the runs use
    one thread (on a busy 2-core machine two threads wait on each other), restored after."""
    monkeypatch.setattr(bench.timing, "MIN_TIME_S", {"cpu": 0.01, "cuda": 0.01})
    monkeypatch.setattr(bench.timing, "MATMUL_SIZES", {"cpu": (128,), "cuda": (256,)})
    monkeypatch.setattr(bench.timing, "WARMUP_STEPS", {"cpu": 1, "cuda": 1})
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_timm(monkeypatch):
    """timm hidden, as on an install without the ``bench`` extra."""
    for name in [m for m in sys.modules if m == "timm" or m.startswith("timm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` raises ImportError


# ------------------------------------------------------------------------------ FLOP model
def test_analytic_flops_match_flop_counter_for_none_on_tiny():
    cfg = bench.model_config("tiny")
    model = build_model(cfg, "none")
    x = torch.randn(8, cfg.in_chans, cfg.image_size, cfg.image_size)
    analytic = bench.analytic_flops(cfg, cfg.image_size, batch=8)

    # the forward pass: the same matmuls, counted exactly (the CPU flash-attention kernel included)
    with torch.no_grad():
        fwd, per_op = bench.count_flops(lambda: model(x))
    assert fwd == analytic["forward"], per_op

    # a training step (forward + backward): within a few percent of 3 x forward
    train, per_op = bench.count_flops(lambda: torch.nn.functional.cross_entropy(
        model(x), torch.zeros(8, dtype=torch.long)).backward())
    assert abs(train / analytic["train_step"] - 1) < 0.03, (train, analytic, per_op)
    assert any("attention" in op for op in per_op), "attention FLOPs were not counted"

    # the parts add up, and the count scales with the batch and the token count
    parts = {k: v for k, v in analytic.items() if k not in ("forward", "train_step")}
    assert sum(parts.values()) == analytic["forward"] and analytic["train_step"] == 3 * analytic["forward"]
    assert bench.analytic_flops(cfg, cfg.image_size, batch=16)["forward"] == 2 * analytic["forward"]
    assert bench.analytic_flops(cfg, 2 * cfg.image_size)["attn_scores"] > 4 * analytic["attn_scores"] / 8


# ------------------------------------------------------------------------------ a run
def test_bench_writes_json_with_every_number_without_timm(tmp_path, capsys, quick, no_timm):
    out = tmp_path / "sub" / "bench.json"
    rc = main(["bench", "--preset", "tiny", "--device", "cpu", "--encodings", "learned", "rope_axial",
               "--repeats", "1", "--batch-size", "8", "--threads", "1", "--json", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(out.read_text())

    for key in ("date", "preset", "model", "batch_size", "repeats", "threads", "device", "device_info", "torch",
                "timm", "matmul_peak", "memory_method", "encodings", "timm_vit", "flop_model", "resolutions",
                "train_resolution", "notes"):
        assert key in res, key
    assert res["preset"] == "tiny" and res["batch_size"] == 8 and res["device"] == "cpu"
    assert res["resolutions"] == [16, 32] and res["train_resolution"] == 16
    assert res["threads"] == 1 and res["device_info"]["name"] and res["torch"] == torch.__version__
    assert res["matmul_peak"]["flops_per_s"] > 0

    # none is added as the reference, first
    assert list(res["encodings"]) == ["none", "learned", "rope_axial"]
    for name, d in res["encodings"].items():
        t = d["train"]
        assert d["params"] > 0
        for k in ("images_per_s", "step_s", "counted_flops", "flops_per_s", "mfu"):
            assert t[k] > 0, (name, k)
        assert t["peak_mem_bytes"] >= 0 and t["steps_per_timing"] >= bench.timing.MIN_STEPS
        assert len(t["timings_s"]) == 1
        for r in ("16", "32"):
            assert d["eval"][r]["images_per_s"] > 0 and d["eval"][r]["peak_mem_bytes"] >= 0
        assert d["ratios"]["train_step_time"] > 0 and d["ratios"]["counted_flops"] > 0
        if name != "none":
            assert d["target"] == bench.TARGETS[name] and d["verdict"] in ("PASS", "FAIL")

    ratios = res["encodings"]["none"]["ratios"]
    assert ratios["train_step_time"] == 1 and ratios["train_images_per_s"] == 1 and ratios["counted_flops"] == 1
    assert ratios["eval_time"] == {"16": 1, "32": 1}
    assert res["encodings"]["none"]["verdict"] is None

    # timm hidden: a clear note, no timm rows, and the rest of the run intact
    assert res["timm"] is None and "timm is not installed" in res["timm_vit"]["skipped"]
    assert "timm is not installed" in captured.out
    assert 0.97 < res["flop_model"]["counted_over_analytic"] < 1.03

    # the table is printed last, with PASS/FAIL per encoding against its target
    lines = captured.out.rstrip().splitlines()
    assert lines[-1].startswith("timm ViT:")
    row = next(line for line in lines if line.startswith("rope_axial ") and "<= 1.10" in line)
    assert ("PASS" in row) != ("FAIL" in row)


def test_bench_compares_with_timm(quick):
    pytest.importorskip("timm")
    res = bench.run_bench("tiny", device="cpu", encodings=["learned"], resolutions=[16], batch_size=4,
                          repeats=1, threads=1, progress=lambda msg: None)
    t = res["timm_vit"]
    assert t["train"]["images_per_s"] > 0 and t["train"]["counted_flops"] > 0
    assert t["learned_over_timm_images_per_s"] == pytest.approx(
        res["encodings"]["learned"]["train"]["images_per_s"] / t["train"]["images_per_s"])
    assert t["verdict"] in ("PASS", "FAIL") and t["target_applies"] is False  # tiny, not small
    # the same matmuls as ours: the counted FLOPs agree (timm adds no matmul of its own)
    assert t["train"]["counted_flops"] == res["encodings"]["learned"]["train"]["counted_flops"]
    assert "timm ViT" in bench.format_report(res).splitlines()[-2]


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_timm_vit_has_our_parameters_plus_the_cls_position_row(preset):
    pytest.importorskip("timm")
    cfg = bench.model_config(preset)
    ours = sum(p.numel() for p in build_model(cfg, "learned").parameters())
    theirs = bench.build_timm_vit(cfg)
    assert sum(p.numel() for p in theirs.parameters()) == ours + cfg.dim
    assert tuple(theirs.pos_embed.shape) == (1, cfg.grid_size(cfg.image_size) ** 2 + 1, cfg.dim)
    x = torch.randn(2, cfg.in_chans, cfg.image_size, cfg.image_size)
    assert theirs(x).shape == (2, cfg.num_classes)


# ------------------------------------------------------------------------------ a study's own recipe (--spec)
#: a small study: the tiny model at 16 px, batch 32 (not the bench's 64), two regimes, both
#: temperatures, a non-square size, and an encoding entry with a label and options of its own
CELL_SPEC = """\
name: bench_cell
dataset: {name: rendered, task: relational8, num_train: 64, num_val: 16, num_test: 24}
model: tiny
train: {epochs: 1, batch_size: 32, lr: 0.002, device: cpu}
encodings: [none, rope_axial, {name: cpe, label: cpe2, options: {blocks: [-1, 0]}}]
train_resolutions: [16]
test_resolutions: [16, 24, 16x24]
policies: [extrapolate, interpolate]
temperatures: [none, log]
regimes: [zoom, canvas]
seeds: [0]
"""


@pytest.fixture
def cell_spec(tmp_path):
    path = tmp_path / "cell.yaml"
    path.write_text(CELL_SPEC)
    return path


def test_a_spec_gives_the_model_batch_and_encoding_entries(cell_spec):
    req = bench.request.check_request(None, device="cpu", encodings=["cpe2", "learned"], resolutions=None,
                                      batch_size=None, repeats=1, threads=[2, 1, 2], json_path=None, spec=cell_spec)
    assert req.preset == "tiny" and req.batch_size == 32 and req.cfg.image_size == 16
    assert req.cfg.num_classes == 8 and req.cfg.dim == bench.model_config("tiny").dim  # relational8, tiny
    assert req.threads == (2, 1)
    # a label of the spec is its entry with its options; another registered name, the encoding as it is
    assert req.encodings == ["none", "cpe2", "learned"]
    assert req.builds == {"none": ("none", {}), "cpe2": ("cpe", {"blocks": [-1, 0]}), "learned": ("learned", {})}
    # every entry of the spec by default; --batch-size still wins over the spec's
    req = bench.request.check_request("tiny", device="cpu", encodings=None, resolutions=None, batch_size=8,
                                      repeats=1, threads=0, json_path=None, spec=cell_spec)
    assert req.encodings == ["none", "rope_axial", "cpe2"] and req.batch_size == 8
    # --set changes the spec as for `harness run`: its batch, its evaluation batch, an entry's options
    req = bench.request.check_request(None, device="cpu", encodings=None, resolutions=None, batch_size=None,
                                      repeats=1, threads=0, json_path=None, spec=cell_spec,
                                      overrides=["train.batch_size=16", "train.eval_batch_size=8",
                                                 "encodings.cpe2.options.blocks=[0]"])
    assert req.batch_size == 16 and req.spec.train.eval_batch_size == 8
    assert req.builds["cpe2"] == ("cpe", {"blocks": [0]})


def test_a_labels_target_is_its_encodings():
    fig = {"train": {"step_s": 1.0, "images_per_s": 1.0, "peak_mem_bytes": 1, "counted_flops": 1,
                     "flops_per_s": 1.0}, "eval": {}}
    figures = {"none": dict(fig), "cpe2": {**fig, "name": "cpe", "train": {**fig["train"], "step_s": 2.0}}}
    bench.results.add_ratios(figures, "none")
    assert figures["cpe2"]["target"] == bench.TARGETS["cpe"] and figures["cpe2"]["verdict"] == "FAIL"  # 2.0 > 1.15


def test_bench_with_a_spec_measures_its_recipe_and_one_cells_evaluation(cell_spec, quick, no_timm, monkeypatch):
    import harness.training.evaluation as evaluation_module  # evaluate_variants's home: where it looks up evaluate
    from harness.data import build_dataset
    from harness.spec import load_spec
    from harness.train import evaluate_variants
    from harness.trial import variants_of

    res = bench.run_bench(spec=cell_spec, device="cpu", encodings=["rope_axial"], repeats=1, threads=[1, 2],
                          progress=lambda msg: None)

    # the study's model, batch and training resolution; the preset named is the one that is its model
    assert res["spec"] == str(cell_spec) and res["preset"] == "tiny"
    assert res["batch_size"] == 32 and res["train_resolution"] == 16 and res["model"]["num_classes"] == 8
    assert list(res["encodings"]) == ["none", "rope_axial"]

    # a matmul peak per thread count; the first count's is the headline one
    assert res["thread_counts"] == [1, 2] and res["threads"] == 1
    peaks = res["matmul_peaks"]
    assert set(peaks) == {"1", "2"} and res["matmul_peak"] == peaks["1"]
    assert all(p["flops_per_s"] == max(p["start_flops_per_s"], p["end_flops_per_s"]) > 0 for p in peaks.values())

    c = res["cell_eval"]
    assert c["sizes"] == {"zoom": ["16", "24", "16x24"], "canvas": ["16", "24", "16x24"]}
    assert c["test_images"] == 24 and c["single_sizes"] == ["16", "24"]  # training size, largest by pixels
    # by hand: regimes x policies (only for an encoding with a choice of policy) x temperatures,
    # each at the 3 sizes of its regime, each over the 24 test images
    hand = {"none": 2 * 1 * 2, "rope_axial": 2 * 2 * 2}
    spec = load_spec(cell_spec)
    data = build_dataset("rendered", task="relational8", num_train=64, num_val=16, num_test=24)
    cfg = spec.model_config(16, 3, 8)
    for name, d in res["encodings"].items():
        assert set(d["by_threads"]) == {"1", "2"}
        assert d["by_threads"]["1"]["train"] == d["train"] and d["by_threads"]["1"]["sweep"] == d["sweep"]
        sweep = d["sweep"]
        assert len(sweep["variants"]) == hand[name]
        # ... less the variants at the training size, which all compute the model as trained on the
        # same images (a canvas of the training size is the training image): one evaluation for them
        assert sweep["evaluations"] == hand[name] * 2 + 1 and sweep["images"] == (hand[name] * 2 + 1) * 24
        # ... as many as the study's own sweep evaluates, under the same variants (counted)
        model = build_model(cfg, name)
        variants = variants_of(spec, type(model.pe))
        calls = []
        real = evaluation_module.evaluate
        with monkeypatch.context() as m:
            m.setattr(evaluation_module, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
            got = evaluate_variants(model, data, spec.train, train_resolution=16,
                                    sizes={r: spec.sizes(r) for r in spec.regimes}, variants=variants)
        assert sweep["variants"] == [v.label for v in variants] and len(got) == hand[name] * 3
        assert len(calls) == sweep["evaluations"]

        for t in ("1", "2"):
            at, peak = d["by_threads"][t], peaks[t]["flops_per_s"]
            tr = at["train"]
            assert tr["counted_flops"] == d["train"]["counted_flops"] > 0
            assert tr["flops_per_s"] == pytest.approx(tr["counted_flops"] / tr["step_s"])
            assert tr["mfu"] == pytest.approx(tr["flops_per_s"] / peak)
            assert tr["images_per_s"] == pytest.approx(32 / tr["step_s"]) and len(tr["timings_s"]) == 1
            assert set(at["eval"]) == {"16", "32"}
            for one in at["eval_one_variant"].values():
                assert one["variant"] == sweep["variants"][0] and one["images"] == 24
                assert one["images_per_s"] == pytest.approx(24 / one["step_s"])
                assert one["mfu"] == pytest.approx(one["counted_flops"] / one["step_s"] / peak)
            sw = at["sweep"]
            assert sw["seconds"] == sw["step_s"] and sw["images_per_s"] == pytest.approx(sw["images"] / sw["seconds"])
            assert len(sw["timings_s"]) == 1  # sweep_repeats
            # the sweep holds that one evaluation (the first variant at the training size) and more
            assert sw["seconds"] >= at["eval_one_variant"]["16"]["step_s"]
        # a bigger image costs more FLOPs
        one = d["eval_one_variant"]
        assert one["24"]["counted_flops"] > one["16"]["counted_flops"] > 0

    text = bench.format_report(res)
    assert "matmul peak, 2 threads" in text and "by thread count" in text
    rows = [line.split() for line in text.splitlines() if line.startswith("rope_axial ")]
    assert ["rope_axial", "2", "8"] in [r[:3] for r in rows]  # the cell table: 2 threads, 8 variants


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, message", [
    (["--preset", "tinny"], "unknown model preset 'tinny'; did you mean 'tiny'?"),
    (["--preset", "tiny", "--encodings", "none", "rope_axal"], "unknown encoding 'rope_axal'"),
    (["--preset", "tiny", "--resolutions", "16", "30"],
     "cannot tile 30 pixels; expected kernel + n*stride, e.g. 28 or 32"),
    (["--preset", "tiny", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["--preset", "tiny", "--repeats", "0"], "--repeats must be an integer >= 1"),
    (["--preset", "tiny", "--device", "tpu"], "--device must be auto, cpu or cuda"),
])
def test_bad_input_exits_2_with_one_message(args, message, capsys, tmp_path):
    out = tmp_path / "never.json"
    assert main(["bench", *args, "--json", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ") and message in captured.err
    assert not out.exists()


def test_cuda_without_cuda_exits_2(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert main(["bench", "--preset", "tiny", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err


@pytest.mark.parametrize("args, message", [
    (["--spec", "{missing}"], "spec file not found"),
    (["--spec", "{spec}", "--preset", "small"], "trains another model (dim 32, depth 2"),
    (["--spec", "{spec}", "--encodings", "cpe3"], "unknown encoding 'cpe3'"),
    (["--spec", "{spec}", "--sweep-repeats", "0"], "--sweep-repeats must be an integer >= 1"),
    (["--preset", "tiny", "--threads", "0", "2"], "0 (torch's current count) cannot be combined"),
    (["--preset", "tiny", "--threads", "-1"], "--threads must be integers >= 0"),
    (["--preset", "tiny", "--set", "train.lr=1"], "--set train.lr=...: overrides change a study spec"),
    (["--spec", "{spec}", "--set", "train.eval_batch_size=0"],
     "--set train.eval_batch_size=...: key 'train.eval_batch_size': expected an integer >= 1"),
])
def test_bad_spec_or_threads_exit_2_with_one_message(args, message, capsys, tmp_path, cell_spec):
    out = tmp_path / "never.json"
    args = [a.format(missing=tmp_path / "missing.yaml", spec=cell_spec) for a in args]
    assert main(["bench", *args, "--json", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: ") and message in captured.err
    assert not out.exists()


def test_json_path_that_is_a_folder_exits_2(capsys, tmp_path):
    assert main(["bench", "--preset", "tiny", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
