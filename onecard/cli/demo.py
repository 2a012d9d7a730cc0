"""``onecard demo``: the broker, HQ and a simulated fleet with members tapping."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from onecard.cli.options import BoundedFloat


@click.command("demo",
              short_help="Broker, HQ and simulated gates with members tapping.")
@click.option("--headless", is_flag=True, help="No live screen; for scripts and CI.")
@click.option("--duration", type=BoundedFloat(0, 7 * 86400, low_open=True), default=None,
              help="Seconds of tapping before the drain (default: until Ctrl-C; 30 headless).")
@click.option("--report", type=click.Path(path_type=Path), default=None,
              help="Write a JSON report here at the end.")
@click.option("--gates", type=click.IntRange(1, 64), default=3, show_default=True,
              help="Simulated gates.")
@click.option("--tap-rate", type=BoundedFloat(0, 1000, low_open=True), default=4.0,
              show_default=True,
              help="Taps per second per gate.")
@click.option("--outage", type=BoundedFloat(0, 7 * 86400), default=None,
              help="Seconds one gate spends without its broker connection (default: a third of the run).")
def command(headless: bool, duration: float | None, report: Path | None, gates: int,
            tap_rate: float, outage: float | None) -> None:
    """Run the broker, HQ and a simulated fleet of gates with members tapping.

    One gate loses its broker connection for a while and catches up. At the end the
    taps stop, every backlog drains, and the figures are checked.
    """
    from onecard.demo import DemoConfig, figures_add_up, run_demo

    if headless and duration is None:
        duration = 30.0
    config = DemoConfig(gates=gates, duration=duration, tap_rate=tap_rate, outage=outage,
                        headless=headless)
    result = run_demo(config)
    if report:
        report.write_text(json.dumps(result, indent=2, sort_keys=True))
        click.echo(f"report written to {report}", err=True)
    if not figures_add_up(result):
        click.echo("demo figures do not add up: see the report", err=True)
        sys.exit(1)
