"""The MLflow entry points and the ``iac`` command agree with the click commands.

Every check here is static or stops at option parsing/validation: no data is
prepared, nothing is trained, no MLflow run is started.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from iac.cli import main as iac_main

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "MLproject").read_text())
ENTRY_POINTS = SPEC["entry_points"]
# Pipeline steps that must be MLflow entry points (DESIGN.md, section 2).
PIPELINE_STEPS = ("prepare", "retrain", "evaluate", "search_full", "search_lth", "stats", "main")
# Commands of the ``iac`` group (pipeline steps plus utilities).
IAC_COMMANDS = (*PIPELINE_STEPS, "analyze", "registry")


def _click_command(name: str) -> click.Command:
    ctx = click.Context(iac_main, info_name="iac")
    cmd = iac_main.get_command(ctx, name)
    assert cmd is not None, f"`iac {name}` does not exist"
    return cmd


def _options(cmd: click.Command) -> dict[str, click.Option]:
    """Every option string of ``cmd`` (``--x`` and ``--no-x``) -> its option."""
    out: dict[str, click.Option] = {}
    for p in cmd.params:
        if isinstance(p, click.Option):
            for opt in (*p.opts, *p.secondary_opts):
                out[opt] = p
    return out


def _passed(command: str) -> list[tuple[str, str | None]]:
    """``(--option, {parameter} or None)`` pairs of an MLproject command template."""
    tokens = shlex.split(command)
    pairs = []
    for i, tok in enumerate(tokens):
        if tok.startswith("--"):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
            m = re.fullmatch(r"\{(\w+)\}", nxt)
            pairs.append((tok, m.group(1) if m else None))
    return pairs


def _default_argv(name: str) -> list[str]:
    """The argument list ``mlflow run -e <name>`` with no -P gives the script."""
    from mlflow.projects._project_spec import load_project

    command = load_project(str(ROOT)).get_entry_point(name).compute_command({}, None)
    tokens = shlex.split(command)
    script = next(i for i, t in enumerate(tokens) if t.endswith(".py"))
    return tokens[script + 1 :]


def test_pipeline_steps_are_entry_points():
    missing = [s for s in PIPELINE_STEPS if s not in ENTRY_POINTS]
    assert not missing, f"MLproject lacks entry points {missing}"


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_script_runs_the_iac_command(name):
    """``entrypoints/<name>.py`` calls the very command ``iac <name>`` runs."""
    script = re.search(r"python\s+(entrypoints/\w+\.py)", ENTRY_POINTS[name]["command"])
    assert script, f"{name}: the command must run an entrypoints/ script"
    spec = importlib.util.spec_from_file_location(f"_entrypoint_{name}", ROOT / script.group(1))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the scripts only import; main() runs under __main__
    commands = [v for v in vars(module).values() if isinstance(v, click.Command)]
    assert _click_command(name) in commands, f"{script.group(1)} does not import the `iac {name}` command"


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_options_mirror_click(name):
    ep = ENTRY_POINTS[name]
    cmd = _click_command(name)
    options = _options(cmd)
    passed = _passed(ep["command"])
    params = ep.get("parameters") or {}
    for opt, pname in passed:
        assert opt in options, f"{name}: MLproject passes {opt}, which `iac {name}` does not accept"
        assert not options[opt].is_flag, f"{name}: {opt} is an on/off flag and cannot take a {{parameter}}"
        assert pname is not None, f"{name}: {opt} must be followed by a {{parameter}}"
        assert pname in params, f"{name}: {{{pname}}} is not a declared parameter"
        assert opt == "--" + pname.replace("_", "-"), f"{name}: parameter {pname} should be passed as --{pname.replace('_', '-')}"
    given = {options[opt].name for opt, _ in passed}
    required = {p.name for p in cmd.params if isinstance(p, click.Option) and p.required}
    assert required <= given, f"{name}: required options {sorted(required - given)} are not passed"
    assert set(params) == {p for _, p in passed}, f"{name}: every parameter is passed exactly as its option"


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_parameters_are_strings_with_defaults(name):
    """MLflow checks `path`/`uri` values itself; the commands validate strings instead."""
    for pname, p in (ENTRY_POINTS[name].get("parameters") or {}).items():
        assert p.get("type") == "string", f"{name}.{pname}: declare it as type: string"
        assert "default" in p, f"{name}.{pname}: needs a default (every entry point runs with no -P)"
        assert isinstance(p["default"], str), f"{name}.{pname}: quote the default so YAML keeps it a string"


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_entry_point_defaults_parse(name):
    """The defaults, quoted as MLflow quotes them, pass click's types and callbacks."""
    cmd = _click_command(name)
    argv = _default_argv(name)
    ctx = cmd.make_context(name, argv)  # raises click.UsageError on a bad default
    assert not ctx.args, f"{name}: unexpected extra arguments {ctx.args}"


def test_entry_point_defaults_equal_click_defaults():
    """With no -P, an entry point behaves like the bare ``iac`` command."""
    for name, ep in ENTRY_POINTS.items():
        cmd = _click_command(name)
        from_mlflow = cmd.make_context(name, _default_argv(name)).params
        bare_argv = []
        for p in cmd.params:
            if isinstance(p, click.Option) and p.required:
                bare_argv += [p.opts[0], ENTRY_POINTS[name]["parameters"][p.name]["default"]]
        bare = cmd.make_context(name, bare_argv).params
        differ = {k: (from_mlflow[k], bare[k]) for k in bare if from_mlflow[k] != bare[k]}
        assert not differ, f"{name}: MLproject defaults differ from the click defaults: {differ}"


def test_fixed_parameter_names_and_data_default():
    fixed = {
        "prepare": {"dataset", "source", "out"},
        "retrain": {"data", "backbone", "skip", "genotype", "epochs", "pretrained"},
        "search_full": {"data", "backbone", "epochs", "pretrained", "resume"},
        "search_lth": {"data", "backbone", "epochs", "pretrained", "resume"},
        "evaluate": {"model", "data", "split"},
    }
    for name, names in fixed.items():
        params = ENTRY_POINTS[name]["parameters"]
        assert names <= set(params), f"{name} lacks {sorted(names - set(params))}"
        if "data" in params:
            assert params["data"]["default"] == "data/prepared/phantom"
    assert ENTRY_POINTS["prepare"]["parameters"]["out"]["default"] == "data/prepared/phantom"


def test_main_defaults_are_the_quick_phantom_study():
    params = ENTRY_POINTS["main"]["parameters"]
    assert params["dataset"]["default"] == "phantom"
    assert params["budget"]["default"] == "quick"
    assert params["source"]["default"] == ""


def test_iac_help_lists_every_command():
    res = CliRunner().invoke(iac_main, ["--help"])
    assert res.exit_code == 0, res.output
    listed = set(re.findall(r"^\s{2}(\S+)", res.output.split("Commands:", 1)[1], re.M))
    assert set(IAC_COMMANDS) <= listed, f"`iac --help` misses {sorted(set(IAC_COMMANDS) - listed)}"


@pytest.mark.parametrize("name", IAC_COMMANDS)
def test_each_command_has_help(name):
    res = CliRunner().invoke(iac_main, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output


@pytest.mark.parametrize(
    "argv, words",
    [
        (["retrain", "--data", "/nonexistent"], ["--data", "manifest.json"]),
        (["retrain", "--data", "/nonexistent", "--backbone", "vgg"], ["--backbone", "unet"]),
        (["retrain", "--data", "/nonexistent", "--epochs", "many"], ["--epochs"]),
        (["evaluate", "--model", "iac-unet-phantom-unet", "--data", "/nonexistent"], ["--model", "models:/"]),
        (["evaluate", "--model", "models:/m/1", "--data", "/nonexistent"], ["--data", "manifest.json"]),
        (["search_full", "--data", "/nonexistent"], ["--data", "manifest.json"]),
        (["search_lth", "--data", "/nonexistent", "--ops", "conv_9x9"], ["--ops", "sep_conv_3x3"]),
        (["search_lth", "--data", "/nonexistent", "--smoothing", "1.5"], ["--smoothing"]),
        (["stats", "--alpha", "2"], ["--alpha"]),
        (["main", "--budget", "fast"], ["--budget", "smoke", "quick", "study", "paper"]),
        (["main", "--dataset", "acdc"], ["--source"]),
        (["main", "--seeds", "one"], ["--seeds"]),
    ],
)
def test_bad_values_give_usage_errors(argv, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, and surely not into the project
    res = CliRunner().invoke(iac_main, argv)
    assert res.exit_code == 2, f"{argv}: exit {res.exit_code}\n{res.output}"
    assert "Usage:" in res.output or "Error:" in res.output
    for w in words:
        assert w in res.output, f"{argv}: the message should name {w!r}:\n{res.output}"
    assert not any(tmp_path.iterdir()), f"{argv} wrote {list(tmp_path.iterdir())}"


def test_readme_documents_every_entry_point_parameter():
    readme = (ROOT / "README.md").read_text()
    for name, ep in ENTRY_POINTS.items():
        m = re.search(rf"^### `{name}`\n(.*?)(?=^##)", readme, re.M | re.S)
        assert m, f"README.md has no section ### `{name}`"
        section = m.group(1)
        # search_lth documents only what it adds to search_full.
        if name == "search_lth":
            section += re.search(r"^### `search_full`\n(.*?)(?=^##)", readme, re.M | re.S).group(1)
        missing = [p for p in (ep.get("parameters") or {}) if f"| `{p}` |" not in section]
        assert not missing, f"README.md's {name} section does not document {missing}"
        assert f"mlflow run . -e {name} --env-manager local" in section, f"README.md lacks an example for {name}"
