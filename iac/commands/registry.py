"""``iac registry``: look up registered cells and U-Nets.

Works against whatever ``MLFLOW_TRACKING_URI`` / ``--tracking-uri`` names: the
local SQLite store or a tracking server.
"""

from __future__ import annotations

import json

import click

from iac.commands.common import check_store, one_of


def _use_store(tracking_uri: str | None) -> None:
    import mlflow

    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
    check_store()


@click.group("registry")
def registry() -> None:
    """Registered cells (iac-cell-*) and U-Nets (iac-unet-*)."""


@registry.command("list")
@click.option("--tracking-uri", default=None, help="Tracking/registry URI (default: MLFLOW_TRACKING_URI or ./mlflow.db).")
@click.option("--kind", type=click.Choice(["all", "cell", "unet"]), default="all", show_default=True)
def list_cmd(tracking_uri: str | None, kind: str) -> None:
    """Show every registered version with its key tags."""
    from iac import registry as reg

    _use_store(tracking_uri)
    prefixes = {"all": (reg.UNET_PREFIX, reg.CELL_PREFIX), "cell": (reg.CELL_PREFIX,), "unet": (reg.UNET_PREFIX,)}[kind]
    rows = []
    for name in reg.registered_models(prefixes):
        aliases = _aliases(name)
        for v in reg.versions(name):
            t = v.tags
            rows.append(
                [
                    name,
                    v.version,
                    ",".join(a for a, ver in aliases.items() if ver == v.version),
                    t.get("method", t.get("skip", "")),
                    _fmt(t.get("val_dice")),
                    _fmt(t.get("search_seconds"), "{:.0f}s"),
                    t.get("epochs_run", ""),
                    t.get("seed", ""),
                    t.get("data_fingerprint", "")[:8],
                ]
            )
    if not rows:
        click.echo("no registered cells or U-Nets in this store")
        return
    header = ["model", "ver", "aliases", "method/skip", "val_dice", "search", "epochs", "seed", "data"]
    click.echo(_table(header, rows))


@registry.command("best")
@click.option("--dataset", required=True, help="Prepared dataset name (e.g. phantom, acdc).")
@click.option("--backbone", required=True, help="Backbone as in registry names (e.g. unet, unet-wide).")
@click.option("--method", default=None, help="Only cells searched with this method (lth, full, random).")
@click.option("--fingerprint", default=None, help="Only cells searched on this prepared dataset (data_fingerprint).")
@click.option("--tracking-uri", default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def best_cmd(dataset: str, backbone: str, method: str | None, fingerprint: str | None, tracking_uri: str | None, as_json: bool) -> None:
    """Print the best cell by validation Dice: genotype, URI, version, search time."""
    from iac import registry as reg

    _use_store(tracking_uri)
    if method:
        one_of("method", method, ("lth", "full", "random"))
    name = reg.cell_model_name(dataset, backbone)
    best = reg.best_version(name, fingerprint=fingerprint, method=method)
    if best is None:
        known = reg.registered_models((reg.CELL_PREFIX,))
        raise click.ClickException(
            f"no scored cell in {name!r}"
            + (f" with method={method}" if method else "")
            + " (cells get val_dice once a U-Net retrained with them is evaluated on the val split); "
            + f"registered cells: {', '.join(known) or 'none'}"
        )
    out = {
        "uri": best.uri,
        "name": best.name,
        "version": best.version,
        "method": best.tags.get("method"),
        "val_dice": float(best.tags["val_dice"]),
        "search_seconds": float(best.tags.get("search_seconds", "nan")),
        "epochs_run": best.tags.get("epochs_run"),
        "data_fingerprint": best.tags.get("data_fingerprint"),
        "genotype": json.loads(best.tags["genotype_json"]) if "genotype_json" in best.tags else None,
    }
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    from iac.nas.genotype import Genotype

    geno = Genotype.from_json(best.tags["genotype_json"]) if "genotype_json" in best.tags else None
    click.echo(f"{best.uri}  (version {best.version}, method {out['method']})")
    click.echo(f"  val Dice       {out['val_dice']:.4f}")
    click.echo(f"  search time    {out['search_seconds']:.1f} s over {out['epochs_run']} epochs")
    click.echo(f"  genotype       {geno}")


def _aliases(name: str) -> dict[str, str]:
    import mlflow

    try:
        return {a: str(v) for a, v in mlflow.MlflowClient().get_registered_model(name).aliases.items()}
    except Exception:  # noqa: BLE001 - aliases are decoration in a listing
        return {}


def _fmt(v: str | None, spec: str = "{:.4f}") -> str:
    try:
        return spec.format(float(v))
    except (TypeError, ValueError):
        return ""


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])
