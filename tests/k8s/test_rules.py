"""The alert rules pass `promtool check rules`, and `promtool test rules` runs
tests/k8s/rules_test.yaml: each alert fires on a bad canary's (or a broken part's)
figures and stays quiet on a good one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s.conftest import Doc, find

HERE = Path(__file__).resolve().parent


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is missing: `scripts/test-deps.sh` installs it (apt-get install prometheus)"
        )
    return found


def write_rules(rendered: dict[str, list[Doc]], tmp: Path) -> Path:
    rule = find(rendered["cpu"], "PrometheusRule", "loraport")
    path = tmp / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_promtool_checks_the_rules(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    rules = write_rules(rendered, tmp_path)
    done = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_on_bad_figures_and_not_on_good(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    rules = write_rules(rendered, tmp_path)
    cases = yaml.safe_load((HERE / "rules_test.yaml").read_text())
    tested = {t["alertname"] for case in cases["tests"] for t in case["alert_rule_test"]}
    alerts = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]}
    assert tested == alerts  # every alert has a case
    shutil.copy(HERE / "rules_test.yaml", tmp_path / "rules_test.yaml")
    done = subprocess.run([promtool(), "test", "rules", "rules_test.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
