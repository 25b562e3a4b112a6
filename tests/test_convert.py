"""Official-checkpoint converter: round trips, prefixes, config inference, clear errors, the CLI verb."""

from pathlib import Path

import pytest
import torch

from recursionlab.models.convert import (
    ConversionError,
    export_official,
    infer_config,
    load_converted,
    load_official,
    load_official_state,
    official_config_of,
    strip_official_prefixes,
)
from recursionlab.models.hrm import HRM, HRMConfig
from recursionlab.models.trm import TRM, TRMConfig
from recursionlab.train.cli import main as cli_main

FIXTURES = Path(__file__).with_name("fixtures")


@pytest.fixture(scope="module")
def official():
    return {k: torch.load(FIXTURES / f"{k}_official_small.pt", weights_only=True) for k in ("hrm", "trm_mlp")}


def _same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("prefix", ["", "_orig_mod.model.", "module._orig_mod.model.", "ema.model."])
def test_official_library_official_is_identity(official, prefix):
    for fx in official.values():
        state = {prefix + k: v for k, v in fx["state_dict"].items()}
        converted = load_official_state(state, config=fx["config"])
        back = export_official(converted.model, prefix="", forward_dtype=converted.official_config["forward_dtype"])
        _same(back, fx["state_dict"])


def test_library_official_library_is_identity(tmp_path):
    torch.manual_seed(0)
    models = [
        HRM(HRMConfig(vocab_size=7, seq_len=9, num_puzzle_ids=5, hidden=16, n_heads=2, H_layers=1, L_layers=2,
                      halt_max_steps=3, pos_encoding="learned")),
        TRM(TRMConfig(vocab_size=7, seq_len=9, num_puzzle_ids=5, hidden=16, n_heads=4, L_layers=1, H_cycles=2,
                      L_cycles=3, mixer="mlp", pos_encoding="none", puzzle_emb_len=2, halt_max_steps=3)),
    ]
    for model in models:
        kind = "trm" if isinstance(model, TRM) else "hrm"
        with torch.no_grad():
            model.puzzle_emb.normal_()
        official = export_official(model)  # _orig_mod.model. prefix, as the official pretrain.py saves
        assert all(k.startswith("_orig_mod.model.inner.") for k in official)
        path = tmp_path / f"{kind}.pt"
        torch.save(official, path)
        converted = load_official(path, kind, official_config_of(model.config, kind))
        assert converted.model.config == model.config
        mine = {k: v for k, v in model.state_dict().items() if k != "_extra_state"}
        _same({k: v for k, v in converted.model.state_dict().items() if k != "_extra_state"}, mine)
        # and through the CLI verb: official file -> library file -> official file
        lib, back = tmp_path / f"{kind}_lib.pt", tmp_path / f"{kind}_back.pt"
        sets = [f"--set={k}={v}" for k, v in official_config_of(model.config, kind).items()]
        assert cli_main(["convert", str(path), "--to", str(lib), *sets]) == 0
        assert load_converted(lib).model.config == model.config
        assert cli_main(["convert", str(lib), "--to", str(back), "--export-official"]) == 0
        _same(torch.load(back, weights_only=True), official)


def test_config_inferred_from_shapes_and_missing_fields_named(official):
    hrm = official["hrm"]
    cfg, _ = infer_config(strip_official_prefixes(hrm["state_dict"]), "hrm", hrm["config"])
    assert (cfg.hidden, cfg.vocab_size, cfg.H_layers, cfg.L_layers, cfg.num_puzzle_ids) == (16, 11, 2, 2, 3)
    with pytest.raises(ConversionError, match="num_heads.*\n.*H_cycles.*\n.*L_cycles.*\n.*halt_max_steps"):
        infer_config(strip_official_prefixes(hrm["state_dict"]), "hrm", {"seq_len": 16, "pos_encodings": "rope"})
    # TRM-MLP: the token mixer fixes S = seq_len + P, so either one is enough
    mlp = official["trm_mlp"]
    schedule = {k: mlp["config"][k] for k in ("H_cycles", "L_cycles", "halt_max_steps", "pos_encodings")}
    cfg, _ = infer_config(mlp["state_dict"], "trm", {**schedule, "puzzle_emb_len": 4})
    assert (cfg.seq_len, cfg.puzzle_emb_len, cfg.mixer) == (16, 4, "mlp")
    with pytest.raises(ConversionError, match="seq_len=15 contradicts the weights"):
        infer_config(mlp["state_dict"], "trm", {**schedule, "puzzle_emb_len": 4, "seq_len": 15})
    with pytest.raises(ConversionError, match="looks like an official TRM"):
        infer_config(mlp["state_dict"], "hrm", schedule)


def test_foreign_truncated_and_incomplete_files_are_refused(official, tmp_path):
    fx = official["hrm"]
    good = tmp_path / "good.pt"
    torch.save({"_orig_mod.model." + k: v for k, v in fx["state_dict"].items()}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ConversionError, match="truncated"):
        load_official(truncated, config=fx["config"])
    foreign = tmp_path / "foreign.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, foreign)
    with pytest.raises(ConversionError, match="no official HRM/TRM state dict"):
        load_official(foreign)
    partial = dict(fx["state_dict"])
    partial.pop("inner.H_level.layers.1.mlp.down_proj.weight")
    with pytest.raises(ConversionError, match="missing.*H_level.layers.1.mlp.down_proj"):
        load_official_state(partial, config=fx["config"])
    with pytest.raises(ConversionError, match="no such file"):
        load_official(tmp_path / "absent.pt")
    assert cli_main(["convert", str(foreign), "--to", str(tmp_path / "x.pt")]) == 2
