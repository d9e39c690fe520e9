"""--recipe NAME: each names a row of the published-vs-port table and sets only the flags
that define it; a typed flag wins, even one typed at its default value."""
import dataclasses
import json
import os

import pytest

from legacy_eager import train
from legacy_eager.config import Config, parse_args, recipe_record

# What each recipe means, written out from the published recipes, not from RECIPES:
# the notebook's weight-decay loop is a no-op; Page's dawn.py has Cutout 8x8 and no dropout.
EXPECTED = {
    "notebook": {"wd_loop": "seed", "cutout": 0, "dropout": 0.05},
    "default": {"wd_loop": "intended", "cutout": 0, "dropout": 0.05},
    "dawnbench": {"wd_loop": "intended", "cutout": 8, "dropout": 0.0},
    # airbench94.py's hyp: 9.9 epochs, batch 1024, lr 11.5 and wd 0.0153 per 1024, momentum 0.85
    "airbench94": {"network": "airbench94", "epochs": 9.9, "batch_size": 1024, "lr": 11.5,
                   "momentum": 0.85, "weight_decay": 0.0153},
}


def _differences(config, reference=Config()):
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(Config)
            if getattr(config, f.name) != getattr(reference, f.name)}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_recipe_sets_exactly_its_flags(name):
    config = parse_args(["--recipe", name])
    assert config.recipe == name
    want = {k: v for k, v in EXPECTED[name].items() if getattr(Config(), k) != v}
    assert _differences(config) == dict(want, recipe=name)


@pytest.mark.parametrize("flag, value, field, expected", [
    ("--dropout", "0.05", "dropout", 0.05),    # typed at its default, still wins
    ("--cutout", "0", "cutout", 0),            # typed at its default, still wins
    ("--cutout", "4", "cutout", 4),
    ("--wd-loop", "seed", "wd_loop", "seed"),
])
def test_a_typed_flag_wins_over_the_recipe(flag, value, field, expected):
    for argv in (["--recipe", "dawnbench", flag, value], [flag, value, "--recipe", "dawnbench"]):
        config = parse_args(argv)
        assert getattr(config, field) == expected, argv
        others = {k: v for k, v in EXPECTED["dawnbench"].items() if k != field}
        assert {k: getattr(config, k) for k in others} == others, argv


def test_the_record_names_the_flags_set_and_those_overridden():
    record = recipe_record(parse_args(["--recipe", "dawnbench", "--cutout", "4"]))
    assert record == {"name": "dawnbench", "set": {"wd_loop": "intended", "dropout": 0.0},
                      "overridden": {"cutout": 4}}
    assert recipe_record(parse_args([])) is None


def test_an_unknown_recipe_is_one_line_listing_the_names(capsys):
    assert train.main(["--recipe", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--recipe" in err and "nope" in err
    assert all(name in err for name in EXPECTED)


@pytest.mark.parametrize("extra", [["--recipe", "default"], ["--width", "64"]])
def test_resume_refuses_recipe_and_flags_typed_at_their_defaults(capsys, extra):
    assert train.main(["--resume", "somewhere", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and extra[0] in err


def test_help_lists_every_recipe_and_what_it_sets(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    out = capsys.readouterr().out
    assert "--recipe" in out
    assert "dawnbench  --wd-loop intended --cutout 8 --dropout 0" in out
    assert "notebook   --wd-loop seed --cutout 0 --dropout 0.05" in out


@pytest.mark.slow
def test_config_json_records_the_recipe_and_the_flags_it_set(tree, tmp_path):
    out = str(tmp_path / "run")
    assert train.main(["--data", tree, "--out", out, "--recipe", "dawnbench", "--cutout", "2",
                       "--width", "4", "--batch-size", "16", "--epochs", "1"]) == 0
    info = json.load(open(os.path.join(out, "config.json")))
    assert info["config"]["recipe"] == "dawnbench"
    assert (info["config"]["cutout"], info["config"]["dropout"]) == (2, 0.0)
    assert info["recipe"] == {"name": "dawnbench", "set": {"wd_loop": "intended", "dropout": 0.0},
                              "overridden": {"cutout": 2}}


def test_repro_compares_runs_by_their_effective_flags_not_the_recipe_name(tmp_path):
    from export import sweep

    folder = tmp_path / "run-0"
    folder.mkdir()
    config = dict(parse_args(["--cutout", "8", "--dropout", "0", "--out", str(folder)]).to_dict())
    (folder / "config.json").write_text(json.dumps(
        {"config": config, "data": {"path": None, "normalization": {"mean": [0, 0, 0]},
                                    "classes": []}}))
    assert sweep.changed_flags(str(folder), 0, parse_args(["--recipe", "dawnbench"])) == []
    assert sweep.changed_flags(str(folder), 0, parse_args(["--recipe", "default"])) == [
        "--cutout 8, not 0", "--dropout 0.0, not 0.05"]
