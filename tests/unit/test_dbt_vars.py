"""The dbt marts take the dead-letter reasons from one place tied to ``Reason``: the project's
``vars`` (no services). Dagster passes them from Python; the copy in dbt_project.yml, which a dbt
run by hand uses, must not drift from it, and no model or schema file may spell a reason itself."""

from __future__ import annotations

import json
import re

import yaml

from tickforge.defs.dbt.assets import DBT_PROJECT_DIR, dbt_vars, vars_args
from tickforge.platform.contracts import UNREADABLE_DEAD_LETTER
from tickforge.platform.reasons import Reason


def _project_vars() -> dict[str, object]:
    return yaml.safe_load((DBT_PROJECT_DIR / "dbt_project.yml").read_text())["vars"]


def test_the_project_vars_are_reasons_values_in_order():
    project = _project_vars()
    assert project["dead_letter_reasons"] == [r.value for r in Reason]
    assert project["unreadable_dead_letter"] == UNREADABLE_DEAD_LETTER


def test_dagster_passes_the_same_vars_from_python():
    assert dbt_vars() == _project_vars()
    flag, value = vars_args()
    assert flag == "--vars" and yaml.safe_load(value) == json.loads(value) == dbt_vars()


def test_the_accepted_values_test_reads_the_vars():
    sources = yaml.safe_load((DBT_PROJECT_DIR / "models" / "marts" / "sources.yml").read_text())
    (table,) = [t for s in sources["sources"] for t in s["tables"] if t["name"] == "fact_dead_letters_1m"]
    (reason,) = [c for c in table["columns"] if c["name"] == "reason"]
    (test,) = [t["accepted_values"] for t in reason["data_tests"] if "accepted_values" in t]
    assert test["arguments"]["values"] == "{{ var('dead_letter_reasons') + [var('unreadable_dead_letter')] }}"


def _strings(node: object, key: str = "") -> list[str]:
    """The strings of a parsed YAML file, descriptions (prose) left out."""
    if isinstance(node, dict):
        return [s for k, v in node.items() if k != "description" for s in [str(k), *_strings(v, str(k))]]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item, key)]
    return [node] if isinstance(node, str) else []


def test_no_model_macro_or_test_spells_a_reason():
    """A reason as a quoted literal (``'late'``) outside the vars would survive a rename in
    ``Reason``; models name one through the ``dead_letter_reason`` macro, which checks it, and
    tests take the list from the vars."""
    # A var's name or a macro's argument is no reason spelled out (one var is named as its value).
    named = re.compile(r"\b(dead_letter_reason|var)\(\s*'\w+'\s*\)")
    reasons = [*(r.value for r in Reason), UNREADABLE_DEAD_LETTER]
    quoted = re.compile("['\"](" + "|".join(re.escape(r) for r in reasons) + ")['\"]")
    sql = [*(DBT_PROJECT_DIR / "models").rglob("*.sql"), *(DBT_PROJECT_DIR / "macros").rglob("*.sql")]
    spelled = [
        f"{path.relative_to(DBT_PROJECT_DIR)}:{n}: {line.strip()}"
        for path in sql
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if quoted.search(named.sub("", line))
    ]
    spelled += [
        f"{path.relative_to(DBT_PROJECT_DIR)}: {text}"
        for path in (DBT_PROJECT_DIR / "models").rglob("*.yml")
        for text in _strings(yaml.safe_load(path.read_text()))
        if quoted.search(named.sub("", text)) or text in reasons
    ]
    assert sql and not spelled, spelled
