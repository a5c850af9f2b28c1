"""No stage of the pipeline imports another stage.

The stages are the modules of ``src/payhub/pipeline`` that do a step of the work (:data:`STAGES`): ingest,
calculate, schedule, disburse, settle, and the operator decisions on rewards and payouts. Each decides, and calls
the stores (:mod:`payhub.store`) for its SQL. A stage may import the pipeline's shared decision helpers (every other
module of the package: rules, history, presend, rail_results, operator, storable, waiting, identity) and anything
outside the package, never another stage: what two stages share belongs in a helper or a store. A new module of
``src/payhub/pipeline`` is a helper unless listed here as a stage, and a helper may import no stage either.
"""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[2] / "src" / "payhub" / "pipeline"
STAGES = frozenset({"ingest", "calculate", "schedule", "disburse", "settle", "reward_actions", "payout_actions"})


def pipeline_imports(source: str) -> set[str]:
    """The modules of ``payhub.pipeline`` that ``source`` imports (by any form of import statement)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y, inside payhub.pipeline
                base = "payhub.pipeline" + (f".{base}" if base else "")
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[:2] == ["payhub", "pipeline"] and len(parts) > 2:
                found.add(parts[2])
    return found


def crossings() -> dict[str, set[str]]:
    """Each pipeline module that imports a stage other than itself, with the stages it imports."""
    bad = {}
    for path in sorted(PIPELINE.glob("*.py")):
        module = path.stem
        stages = (pipeline_imports(path.read_text(encoding="utf-8")) & STAGES) - {module}
        if stages:
            bad[module] = stages
    return bad


def test_the_stages_are_modules_of_the_pipeline() -> None:
    assert {path.stem for path in PIPELINE.glob("*.py")} >= STAGES


def test_no_stage_or_helper_imports_a_stage() -> None:
    assert crossings() == {}


def test_the_rule_sees_every_form_of_import() -> None:
    source = ("from payhub.pipeline.disburse import fail\nfrom payhub.pipeline import settle, rules\n"
              "import payhub.pipeline.ingest\nfrom . import calculate\nfrom .schedule import route\n")
    assert pipeline_imports(source) & STAGES == {"disburse", "settle", "ingest", "calculate", "schedule"}
