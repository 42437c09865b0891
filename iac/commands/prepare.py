"""``prepare``: parse options -> :class:`PrepareConfig` -> ``prepare_dataset`` -> MLflow.

Options that may be unset accept an empty string (what ``mlflow run`` passes for
an unset ``string`` parameter); every value is validated here with a message
naming the option.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import click

from iac.commands.common import build_config, log_dataset_input
from iac.config import DATASETS, PHANTOM_VARIANTS, PrepareConfig

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def _opt_float(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"expected a number, got {value!r}") from None


def _opt_int(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"expected an integer, got {value!r}") from None


def _number(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"expected a number, got {value!r}") from None


def _bool(ctx: click.Context, param: click.Parameter, value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise click.BadParameter(f"expected true or false, got {value!r}")


def _opt_path(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    return None if value is None or value.strip() == "" else Path(value)


def _modalities(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None or value.strip() == "":
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


@click.command(name="prepare")
@click.option("--dataset", type=click.Choice(DATASETS), default="phantom", show_default=True, help="Dataset layout (phantom is generated).")
@click.option("--source", default="", callback=_opt_path, help="Raw dataset folder as distributed (not needed for phantom).")
@click.option("--out", default=str(PrepareConfig.out), show_default=True, help="Prepared dataset folder (written atomically).")
@click.option("--spacing", default="", callback=_opt_float, help="Target in-plane spacing in mm (empty: median of the cases).")
@click.option("--slice-size", default="", callback=_opt_int, help="Square slice side in pixels (empty: derived from the data).")
@click.option("--size-multiple", default=str(PrepareConfig.size_multiple), callback=_opt_int, show_default=True, help="Derived slice sizes are rounded up to a multiple of this.")
@click.option("--split-seed", default=str(PrepareConfig.split_seed), callback=_opt_int, show_default=True, help="Seed of the patient-level split.")
@click.option("--val-fraction", default=str(PrepareConfig.val_fraction), callback=_number, show_default=True, help="Share of patients in val.")
@click.option("--test-fraction", default=str(PrepareConfig.test_fraction), callback=_number, show_default=True, help="Share of patients in test.")
@click.option("--split-file", default="", callback=_opt_path, help='JSON {"train": [...], "val": [...], "test": [...]} fixing the split.')
@click.option("--modalities", default="", callback=_modalities, help="Comma-separated channel subset by name (empty: all).")
@click.option("--amos-modality", type=click.Choice(["ct", "mri", "all"]), default=PrepareConfig.amos_modality, show_default=True, help="AMOS22 cases to use.")
@click.option("--kits-version", type=click.Choice(["auto", "19", "23"]), default=PrepareConfig.kits_version, show_default=True, help="KiTS release (auto: detected from the folder).")
@click.option("--workers", default=str(PrepareConfig.workers), callback=_opt_int, show_default=True, help="Parallel worker processes.")
@click.option("--skip-bad", is_flag=False, flag_value="true", default="false", callback=_bool, help="Skip invalid cases and list them in bad_cases.json.")
@click.option("--overwrite", is_flag=False, flag_value="true", default="false", callback=_bool, help="Replace an `out` prepared from other inputs or parameters.")
@click.option("--phantom-patients", default=str(PrepareConfig.phantom_patients), callback=_opt_int, show_default=True, help="Phantom cohort size.")
@click.option("--phantom-seed", default=str(PrepareConfig.phantom_seed), callback=_opt_int, show_default=True, help="Phantom generator seed.")
@click.option("--phantom-size", default=str(PrepareConfig.phantom_size), callback=_opt_int, show_default=True, help="Phantom in-plane matrix (pixels).")
@click.option("--phantom-variant", type=click.Choice(PHANTOM_VARIANTS), default=PrepareConfig.phantom_variant, show_default=True, help="Phantom generator: classic, or the harder ACDC-like testbed.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def prepare(progress: bool, **opts) -> None:
    """Prepare a dataset (or the embedded phantom) into a slice store and log it to MLflow."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if opts["dataset"] != "phantom" and opts["source"] is None:
        raise click.BadParameter(f"dataset {opts['dataset']!r} needs the raw dataset folder", param_hint="--source")
    if opts["source"] is not None and not opts["source"].is_dir():
        raise click.BadParameter(f"{opts['source']} is not an existing folder", param_hint="--source")
    if opts["split_file"] is not None and not opts["split_file"].is_file():
        raise click.BadParameter(f"{opts['split_file']} does not exist", param_hint="--split-file")
    if not opts["out"].strip():
        raise click.BadParameter("expected a folder", param_hint="--out")
    cfg = build_config(
        PrepareConfig,
        dataset=opts["dataset"],
        source=opts["source"],
        out=Path(opts["out"]),
        spacing=opts["spacing"],
        slice_size=opts["slice_size"],
        size_multiple=opts["size_multiple"],
        split_seed=opts["split_seed"],
        val_fraction=opts["val_fraction"],
        test_fraction=opts["test_fraction"],
        split_file=opts["split_file"],
        modalities=opts["modalities"],
        amos_modality=opts["amos_modality"],
        kits_version=opts["kits_version"],
        workers=opts["workers"],
        skip_bad=opts["skip_bad"],
        overwrite=opts["overwrite"],
        phantom_patients=opts["phantom_patients"],
        phantom_seed=opts["phantom_seed"],
        phantom_size=opts["phantom_size"],
        phantom_variant=opts["phantom_variant"],
    )
    run_prepare(cfg, progress=progress)


def run_prepare(cfg: PrepareConfig, progress: bool = True):
    """Run ``prepare_dataset`` inside the active MLflow run (or a new one) and log the dataset.

    Under ``mlflow run`` the launcher's run (``MLFLOW_RUN_ID``) is used; a run
    already active in this process is reused; otherwise a new run is started.

    Raises:
        click.ClickException: for bad settings or bad data (exit code 1), with the message.
    """
    import mlflow

    from iac.commands.store import open_store
    from iac.data.layouts.base import DataError
    from iac.data.prepare import prepare_dataset
    from iac.tracking import MlflowTracker

    open_store()

    class _Tracker(MlflowTracker):
        """Skips params the run already has (``mlflow run`` logs the entry point's own, as given)."""

        def log_params(self, params):
            have = self._client.get_run(self._run_id).data.params
            super().log_params({k: v for k, v in params.items() if k not in have})

    active = mlflow.active_run()
    with nullcontext(active) if active else mlflow.start_run(log_system_metrics=True):
        tracker = _Tracker()
        tracker.set_tags({"step": "prepare", "dataset": cfg.dataset})
        try:
            result = prepare_dataset(cfg, tracker, progress=progress)
        except (DataError, ValueError) as err:
            tracker.set_tags({"error": str(err).splitlines()[0][:250]})
            raise click.ClickException(str(err)) from err
        root = result.root.resolve()
        log_dataset_input(root, result.manifest["name"], result.fingerprint, context="prepare")
        tracker.log_params({"prepared_path": str(root), "data_fingerprint": result.fingerprint})
        verb = "Reused existing" if result.reused else "Prepared"
        click.echo(
            f"{verb} {result.manifest['name']} at {root} (fingerprint {result.fingerprint[:12]}): "
            + ", ".join(f"{k}={v}" for k, v in result.counts.items())
        )
        if result.bad_cases:
            click.echo(f"Skipped {len(result.bad_cases)} bad case(s), listed in {root / 'bad_cases.json'}", err=True)
    return result


__all__ = ["prepare", "run_prepare"]
