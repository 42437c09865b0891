"""The only module that talks to MLflow's model registry.

Two families of registered models:

- ``iac-unet-<dataset>-<backbone>``: trained U-Nets, an MLflow pyfunc model
  from code (``iac/serving_model.py``) with safetensors weights and a JSON
  config; version tags ``skip``, ``seed``, ``val_dice``, ``data_fingerprint``,
  ``pretrained`` and, for ``skip=iac``, ``genotype``.
- ``iac-cell-<dataset>-<backbone>``: discretised genotypes; each version is a
  small pyfunc model from code (``iac/cell_serving_model.py``) holding
  ``genotype.json`` and the cell diagram (loading gives the genotype,
  ``predict`` its JSON); its tags carry ``method``, ``search_seconds``,
  ``epochs_run``, ``seed``, ``data_fingerprint``, ``pretrained``,
  ``genotype_json`` (when it fits a tag) and later ``val_dice``.

Model references: ``models:/<name>/<version>``, ``models:/<name>@<alias>``
and ``models:/<model_id>`` (MLflow 3's logged-model id; it resolves to the
newest registered version made from that model).

Champion lookup: alias ``champion`` goes to the best ``val_dice`` among the
versions that share the ``data_fingerprint`` of the version just scored, and
alias ``champion-<first 8 characters of the fingerprint>`` to the best of each
fingerprint, so the champion of every prepared dataset stays reachable.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from iac.faults import fault_point

UNET_PREFIX = "iac-unet"
CELL_PREFIX = "iac-cell"
CHAMPION = "champion"
_PROJECT_ROOT = Path(__file__).resolve().parents[1]
# MLflow 3 logged-model ids (``m-`` and 32 hex digits), the form ``models:/<model_id>`` names.
_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")
# Logged-model tag where MLflow lists the registered versions made from it.
_MODEL_VERSIONS_TAG = "mlflow.modelVersions"
# Longest genotype JSON kept in the ``genotype_json`` version tag: the value limit of
# MLflow's file store and of older tracking servers (the SQL store takes more). A longer
# genotype is stored whole in the cell model's ``genotype.json`` only.
GENOTYPE_TAG_LIMIT = 5000


def unet_model_name(dataset: str, backbone: str) -> str:
    """Registered-model name of trained U-Nets (``backbone`` includes a non-default preset)."""
    return f"{UNET_PREFIX}-{dataset}-{backbone}"


def cell_model_name(dataset: str, backbone: str) -> str:
    """Registered-model name of searched cells."""
    return f"{CELL_PREFIX}-{dataset}-{backbone}"


def _client():
    import mlflow

    return mlflow.MlflowClient()


@dataclass(frozen=True)
class ModelRef:
    """A resolved registry reference."""

    name: str
    version: str
    tags: dict[str, str]
    source: str
    run_id: str | None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def model_id(self) -> str | None:
        """The logged model's id (MLflow 3 records it as the version's ``models:/<model_id>`` source)."""
        return self.source[len("models:/") :] if is_model_id_uri(self.source or "") else None


def parse_models_uri(uri: str) -> tuple[str, str | None, str | None]:
    """Split ``models:/name/N``, ``models:/name@alias`` or ``models:/<model_id>`` into (name, version, alias).

    A model id (MLflow 3's ``m-...``, the ``model_id`` of a logged model) comes
    back as ``(model_id, None, None)``; :func:`is_model_id_uri` tells it apart.
    """
    if not uri.startswith("models:/"):
        raise ValueError(
            f"not a registry URI: {uri!r} (expected models:/name/N, models:/name@alias or models:/<model_id>)"
        )
    rest = uri[len("models:/") :].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, None, alias
    if "/" in rest:
        name, version = rest.rsplit("/", 1)
        return name, version, None
    if _MODEL_ID.fullmatch(rest):
        return rest, None, None
    raise ValueError(
        f"registry URI {uri!r} names no version, alias or model id "
        f"(use models:/{rest}/1, models:/{rest}@champion or models:/m-<id>)"
    )


def is_model_id_uri(uri: str) -> bool:
    """True for ``models:/<model_id>`` (a logged model named by its id)."""
    rest = uri[len("models:/") :].strip("/") if uri.startswith("models:/") else ""
    return bool(_MODEL_ID.fullmatch(rest))


def resolve(uri: str) -> ModelRef:
    """Resolve a ``models:/`` URI to its model version, with a clear error when missing.

    ``models:/<model_id>`` resolves to the newest registered version of that
    logged model.
    """
    from mlflow.exceptions import MlflowException

    if is_model_id_uri(uri):
        return _resolve_model_id(uri)
    name, version, alias = parse_models_uri(uri)
    client = _client()
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException as e:
        try:
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        except MlflowException:
            versions = []
        hint = f"known versions: {versions}" if versions else f"no registered model named {name!r}"
        raise ValueError(f"cannot resolve {uri!r}: {hint}") from e
    return ModelRef(name=mv.name, version=str(mv.version), tags=dict(mv.tags), source=mv.source, run_id=mv.run_id)


def _resolve_model_id(uri: str) -> ModelRef:
    """The newest registered version of the logged model ``models:/<model_id>``."""
    from mlflow.exceptions import MlflowException

    model_id = uri[len("models:/") :].strip("/")
    client = _client()
    try:
        logged = client.get_logged_model(model_id)
    except MlflowException as e:
        raise ValueError(f"cannot resolve {uri!r}: no logged model with id {model_id!r}") from e
    registered = json.loads(logged.tags.get(_MODEL_VERSIONS_TAG, "[]") or "[]")
    if not registered:
        raise ValueError(
            f"cannot resolve {uri!r}: logged model {model_id!r} (run {logged.source_run_id}) is not registered"
        )
    last = registered[-1]
    return resolve(f"models:/{last['name']}/{last['version']}")


def set_version_tags(name: str, version: str, tags: dict[str, Any]) -> None:
    """Set model-version tags (values stringified)."""
    client = _client()
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k, str(v))


# --------------------------------------------------------------------- U-Nets


def register_unet(
    run_id: str,
    state_dict: dict,
    config: dict[str, Any],
    name: str,
    tags: dict[str, Any],
) -> ModelRef:
    """Log a trained U-Net as a pyfunc model in ``run_id`` and register it.

    Args:
        run_id: the training run that owns the model.
        state_dict: network weights (moved to CPU before saving).
        config: JSON config understood by :func:`iac.serving.build_network`.
        name: registered-model name (see :func:`unet_model_name`).
        tags: model-version tags.

    Returns:
        The new model version.
    """
    import mlflow
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.safetensors"
        cfg_path = Path(tmp) / "model_config.json"
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(weights))
        cfg_path.write_text(json.dumps(config, indent=2, sort_keys=True))
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            info = _log_unet(weights, cfg_path, name)
        else:
            with mlflow.start_run(run_id=run_id):
                info = _log_unet(weights, cfg_path, name)
    version = str(info.registered_model_version)
    fault_point("register")  # the version exists, its tags do not yet (a kill here leaves an untagged version)
    set_version_tags(name, version, tags)
    return resolve(f"models:/{name}/{version}")


def _log_unet(weights: Path, cfg_path: Path, name: str):
    import mlflow

    from iac.serving import signature_and_example

    config = json.loads(cfg_path.read_text())
    signature, example = signature_and_example(config)
    return mlflow.pyfunc.log_model(
        pip_requirements=pip_requirements(),
        name="model",
        python_model=str(_PROJECT_ROOT / "iac" / "serving_model.py"),
        artifacts={"weights": str(weights), "config": str(cfg_path)},
        code_paths=[str(_PROJECT_ROOT / "iac")],
        registered_model_name=name,
        signature=signature,
        input_example=example,
        model_config={"device": "auto"},
    )


def pip_requirements() -> list[str]:
    """The project's dependencies pinned to the versions installed now (at training time).

    Read from the project's ``pyproject.toml`` (or the installed package's
    metadata), optional extras left out. A local version label is dropped
    (``torch==2.13.0``, not ``2.13.0+cpu``), so a GPU host installs its own
    build of the same release. Given explicitly, so MLflow does not infer them
    by importing the model in a subprocess (seconds per registration).
    """
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    pinned = []
    for text in _declared_requirements():
        req = Requirement(text)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            pinned.append(text)
            continue
        pinned.append(f"{req.name}=={installed.split('+', 1)[0]}")
    return pinned or ["torch", "mlflow", "monai", "SimpleITK", "numpy", "safetensors"]


def _declared_requirements() -> list[str]:
    """``[project].dependencies`` of the project's pyproject.toml, else the installed package's."""
    from importlib.metadata import PackageNotFoundError, requires

    pyproject = _PROJECT_ROOT / "pyproject.toml"
    try:
        import tomllib  # Python >= 3.11; on 3.10 the installed package's metadata is read instead
    except ImportError:
        tomllib = None
    if tomllib is not None and pyproject.is_file():
        return list(tomllib.loads(pyproject.read_text()).get("project", {}).get("dependencies", []))
    try:
        return list(requires("iac-lth") or [])
    except PackageNotFoundError:
        return []


def download_model_files(uri: str, dst: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Download a registered U-Net's weights file; returns (weights path, config)."""
    import mlflow

    dst = Path(dst) if dst else Path(tempfile.mkdtemp(prefix="iac-model-"))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    weights = next(local.rglob("model.safetensors"), None)
    cfg = next(local.rglob("model_config.json"), None)
    if weights is None or cfg is None:
        raise ValueError(f"{uri!r} is not an IAC U-Net (no model.safetensors / model_config.json inside)")
    return weights, json.loads(cfg.read_text())


def load_unet(uri: str, device: str = "cpu"):
    """Load a registered (or ``runs:/``) U-Net as a torch module without unpickling.

    Returns:
        (network on ``device`` in eval mode, its config dict, the version's tags)
    """
    from iac.serving import load_network

    tmp = tempfile.mkdtemp(prefix="iac-model-")
    try:
        weights, config = download_model_files(uri, tmp)
        net = load_network(weights, config, device=device)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    tags = resolve(uri).tags if uri.startswith("models:/") else {}
    return net, config, tags


# ------------------------------------------------------------ nnU-Net networks

# Files of a registered nnU-Net network (``iac-unet-<dataset>-nnunet``).
NNUNET_WEIGHTS = "model.safetensors"
NNUNET_CONFIG = "nnunet_model.json"


def register_nnunet(run_id: str, state_dict: dict, config: dict[str, Any], name: str, tags: dict[str, Any]) -> ModelRef:
    """Register a trained nnU-Net network as safetensors weights plus a JSON of its plans and architecture.

    The files go into an MLflow logged model (type ``nnunet``) of ``run_id``;
    no pickle is written. :func:`load_nnunet_files` reads them back.

    Args:
        run_id: the training run that owns the model.
        state_dict: network weights.
        config: the JSON description (:func:`iac.nnunet.steps.export_trained`).
        name: registered-model name (``iac-unet-<dataset>-nnunet``).
        tags: model-version tags.
    """
    import mlflow
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(Path(tmp) / NNUNET_WEIGHTS))
        (Path(tmp) / NNUNET_CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True))
        experiment_id = _client().get_run(run_id).info.experiment_id
        logged = mlflow.initialize_logged_model(name="model", source_run_id=run_id, model_type="nnunet",
                                                experiment_id=experiment_id)
        _client().log_model_artifacts(logged.model_id, tmp)
        mlflow.finalize_logged_model(logged.model_id, "READY")
    mv = mlflow.register_model(f"models:/{logged.model_id}", name)
    fault_point("register")
    set_version_tags(name, str(mv.version), tags)
    return resolve(f"models:/{name}/{mv.version}")


def load_nnunet_files(uri: str) -> tuple[dict, dict[str, Any], dict[str, str]]:
    """The weights (safetensors), JSON description and version tags of a registered nnU-Net network."""
    import mlflow
    from safetensors.torch import load_file

    ref = resolve(uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref.uri, dst_path=tmp))
        weights, cfg = next(local.rglob(NNUNET_WEIGHTS), None), next(local.rglob(NNUNET_CONFIG), None)
        if weights is None or cfg is None:
            raise ValueError(f"{uri!r} is not an nnU-Net network of this project (no {NNUNET_WEIGHTS} / {NNUNET_CONFIG})")
        return load_file(str(weights)), json.loads(cfg.read_text()), ref.tags


# ------------------------------------------------------------------ genotypes


def register_genotype(
    run_id: str, genotype_json: str, name: str, tags: dict[str, Any], diagram: str | Path | None = None
) -> ModelRef:
    """Log a genotype as a small pyfunc model in ``run_id`` and register it as a new version of ``name``.

    The model (``iac/cell_serving_model.py``) holds ``genotype.json`` and, when
    given, the cell diagram; loading it gives the genotype, ``predict`` its
    JSON. The JSON is also the version tag ``genotype_json`` when it fits
    :data:`GENOTYPE_TAG_LIMIT`; a longer genotype lives whole in the model only
    (tag ``genotype_chars`` gives its length either way).

    Args:
        run_id: the search run.
        genotype_json: the genotype's canonical JSON text.
        name: registered-model name (see :func:`cell_model_name`).
        tags: other version tags (``method``, ``search_seconds``, ...).
        diagram: a PNG of the cell (:func:`iac.nas.diagram.cell_figure`), stored with the model.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from iac.cell_serving import DIAGRAM_ARTIFACT, GENOTYPE_ARTIFACT

    client = _client()
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description="IAC cells (genotypes) searched on this dataset and backbone")
    with tempfile.TemporaryDirectory() as tmp:
        geno_path = Path(tmp) / "genotype.json"
        geno_path.write_text(genotype_json)
        artifacts = {GENOTYPE_ARTIFACT: str(geno_path)}
        if diagram is not None:
            artifacts[DIAGRAM_ARTIFACT] = str(diagram)
        kwargs = dict(
            name="cell",
            python_model=str(_PROJECT_ROOT / "iac" / "cell_serving_model.py"),
            artifacts=artifacts,
            code_paths=[str(_PROJECT_ROOT / "iac")],
            pip_requirements=pip_requirements(),
            registered_model_name=name,
        )
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            info = mlflow.pyfunc.log_model(**kwargs)
        else:
            with mlflow.start_run(run_id=run_id):
                info = mlflow.pyfunc.log_model(**kwargs)
    version = str(info.registered_model_version)
    all_tags = {k: str(v) for k, v in tags.items()}
    all_tags["genotype_chars"] = str(len(genotype_json))
    if len(genotype_json) <= GENOTYPE_TAG_LIMIT:
        all_tags["genotype_json"] = genotype_json
    set_version_tags(name, version, all_tags)
    fault_point("register")  # the version exists, the run has not recorded it yet
    return resolve(f"models:/{name}/{version}")


def _model_genotype_json(uri: str) -> str:
    """The ``genotype.json`` stored in a registered cell model."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        found = next(local.rglob("genotype.json"), None)
        if found is None:
            raise ValueError(f"{uri!r} holds no genotype.json: is it a registered cell ({CELL_PREFIX}-...)?")
        return found.read_text()


def load_genotype_json(ref: str) -> tuple[str, dict[str, str]]:
    """Genotype JSON text from ``models:/...``, ``runs:/...`` or a file path (no code executed).

    ``models:/`` takes ``name/N``, ``name@alias`` and ``<model_id>``; the JSON
    comes from the version's ``genotype_json`` tag or, for a genotype too long
    for a tag, from the model's ``genotype.json``.

    Returns:
        (JSON text, the model version's tags or ``{}``)
    """
    import mlflow

    if ref.startswith("models:/"):
        mv = resolve(ref)
        if "genotype_json" in mv.tags:
            return mv.tags["genotype_json"], mv.tags
        if "genotype_chars" not in mv.tags:
            raise ValueError(f"{ref!r} carries no genotype: is it a registered cell ({CELL_PREFIX}-...)?")
        return _model_genotype_json(mv.uri), mv.tags
    if ref.startswith("runs:/"):
        run_id, _, path = ref[len("runs:/") :].partition("/")
        path = path.strip("/") or "genotype"
        if not path.endswith(".json"):
            path += "/genotype.json"
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path)
        return Path(local).read_text(), {}
    path = Path(ref)
    if not path.is_file():
        raise ValueError(f"genotype {ref!r}: no such file (give a models:/ URI, runs:/ URI or a genotype.json path)")
    return path.read_text(), {}


def load_cell(ref: str):
    """The :class:`iac.nas.genotype.Genotype` of a registered cell (or ``runs:/`` / file), validated."""
    from iac.nas.genotype import Genotype

    return Genotype.from_json(load_genotype_json(ref)[0])


# ------------------------------------------------------------------ champions


def _float_tag(tags: dict[str, str], key: str) -> float | None:
    try:
        v = float(tags[key])
    except (KeyError, ValueError):
        return None
    return None if math.isnan(v) else v


def update_champion(name: str, fingerprint: str, max_rounds: int = 20) -> ModelRef | None:
    """Point ``champion`` (and ``champion-<fp8>``) at the best ``val_dice`` of one fingerprint.

    Ties go to the older version (the first to reach that score). Safe when
    several processes score versions at once: it re-reads the registry after
    every alias move and moves again until a read finds the aliases on the best
    version, so the last writer always leaves them right (a move computed from
    a stale read is corrected by its own check). Idempotent: with the aliases
    already right it writes nothing.
    """
    client = _client()
    aliases = (CHAMPION, f"{CHAMPION}-{fingerprint[:8]}")
    for _ in range(max_rounds):
        best = best_version(name, fingerprint=fingerprint)
        if best is None:
            return None
        wrong = [a for a in aliases if _alias_version(name, a) != best.version]
        if not wrong:
            return best
        for alias in wrong:
            client.set_registered_model_alias(name, alias, best.version)
    raise RuntimeError(f"{name}: the champion alias kept moving for {max_rounds} rounds (concurrent updates?)")


def _alias_version(name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def record_validation(cell_uri: str, val_dice: float, model_uri: str, fingerprint: str | None = None) -> ModelRef | None:
    """Write a cell's validation Dice back to its version and move the champion, as one idempotent update.

    Tags ``val_dice`` and ``val_dice_model`` are written only when they change;
    then :func:`update_champion` settles the aliases of the cell's
    ``data_fingerprint`` (``fingerprint`` when the version has none). Two
    evaluations recording at once leave the champion on the better cell.

    Returns:
        The champion after the update (None when no version of that fingerprint has a val_dice).
    """
    cell = resolve(cell_uri)
    tags = {"val_dice": f"{val_dice:.6f}", "val_dice_model": model_uri}
    changed = {k: v for k, v in tags.items() if cell.tags.get(k) != v}
    if changed:
        set_version_tags(cell.name, cell.version, changed)
    fp = cell.tags.get("data_fingerprint") or fingerprint
    return update_champion(cell.name, fp) if fp else None


def versions(name: str) -> list[ModelRef]:
    """All versions of a registered model, oldest first (empty when it does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        found = _client().search_model_versions(f"name='{name}'")
    except MlflowException:
        return []
    refs = [ModelRef(v.name, str(v.version), dict(v.tags), v.source, v.run_id) for v in found]
    return sorted(refs, key=lambda r: int(r.version))


def best_version(name: str, fingerprint: str | None = None, method: str | None = None) -> ModelRef | None:
    """Best version by ``val_dice`` tag, optionally within one fingerprint / search method."""
    candidates = [
        v
        for v in versions(name)
        if _float_tag(v.tags, "val_dice") is not None
        and (fingerprint is None or v.tags.get("data_fingerprint") == fingerprint)
        and (method is None or v.tags.get("method") == method)
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda v: (_float_tag(v.tags, "val_dice"), -int(v.version)))


def registered_models(prefixes: Iterable[str] = (UNET_PREFIX, CELL_PREFIX)) -> list[str]:
    """Names of registered models whose name starts with one of ``prefixes``."""
    names = [m.name for m in _client().search_registered_models()]
    return sorted(n for n in names if any(n.startswith(p) for p in prefixes))
