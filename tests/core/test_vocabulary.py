"""One vocabulary: step enums used by every reader of events, every code documented.

- Every SessionStep and JournalStep is listed in docs/architecture.md, and every step the
  bench page's progress bar knows is a SessionStep (and every SessionStep is placed).
- Every machine-readable code the product can produce is in a table row of docs/codes.md
  (certificate verification reasons may instead be in docs/certificate.md's table), and
  every code documented there is still produced somewhere. Codes are found in the source
  (so a new one cannot slip in undocumented): an error class's `code = "..."`, any
  `code="..."` keyword (refusals, decisions), a variable named `code` or `*_CODE`, and the
  first argument of CertificateError / ControlError / ControlApiError.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import wipeagent
from wipeagent import errors
from wipeagent.control.bench import NO_PROGRESS, STEP_PROGRESS
from wipeagent.metrics import KNOWN_STEPS
from wipeagent.steps import JournalStep, SessionStep

PRODUCT = Path(wipeagent.__file__).parent
DOCS = PRODUCT.parent / "docs"
REASON_FAMILIES = {"CertificateError", "ControlError", "ControlApiError"}


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def codes_in(source: str, filename: str = "<src>") -> dict[str, str]:
    """code -> where it was found, for the code-producing forms of one module."""
    found: dict[str, str] = {}
    for node in ast.walk(ast.parse(source, filename=filename)):
        values: list[str | None] = []
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name) and (
                        target.id == "code" or target.id.endswith("_CODE")):
                    values.append(_literal(node.value))
        elif isinstance(node, ast.Call):
            values += [_literal(k.value) for k in node.keywords if k.arg == "code"]
            func = node.func
            name = func.id if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) else "")
            if name in REASON_FAMILIES and node.args:
                values.append(_literal(node.args[0]))
        for value in values:
            if value is not None:
                found.setdefault(value, f"{filename}:{getattr(node, 'lineno', 0)}")
    return found


def product_codes() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(PRODUCT.rglob("*.py")):
        rel = str(path.relative_to(PRODUCT.parent))
        for code, where in codes_in(path.read_text(encoding="utf-8"), rel).items():
            found.setdefault(code, where)
    return found


def _table_codes(doc: str) -> set[str]:
    """The backticked codes in the first cell of each table row of docs/`doc`."""
    found: set[str] = set()
    for line in (DOCS / doc).read_text(encoding="utf-8").splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            found |= set(re.findall(r"`([a-z0-9_.]+)`", cells[1]))
    return found


def documented_codes() -> set[str]:
    return _table_codes("codes.md")


def certificate_reasons_documented() -> set[str]:
    return _table_codes("certificate.md")


def test_the_scanner_sees_each_form() -> None:
    source = (
        "class E(Base):\n    code = 'a_code'\n"
        "r = Refusal(code='b_code', message='m', hint='h')\n"
        "X_CODE = 'c_code'\n"
        "raise CertificateError('d_code', 'message')\n"
        "raise errors.ControlError('e_code', 'message')\n"
        "not_erased('why', code='f_code')\n"
        "other = 'not_a_code'\n"
    )
    assert set(codes_in(source)) == {"a_code", "b_code", "c_code", "d_code", "e_code",
                                     "f_code"}


def test_every_error_class_is_in_errors_py_with_its_own_code() -> None:
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.WipeAgentError)]
    assert len(classes) > 10
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes)), "two error classes share a code"
    for path in sorted(PRODUCT.rglob("*.py")):
        if path.name == "errors.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")
                         for b in node.bases}
                assert not bases & {c.__name__ for c in classes}, (
                    f"{path.relative_to(PRODUCT.parent)}: error class {node.name} "
                    "belongs in wipeagent/errors.py")


def test_every_code_is_documented() -> None:
    produced = product_codes()
    documented = documented_codes() | certificate_reasons_documented()
    missing = {code: where for code, where in produced.items() if code not in documented}
    assert missing == {}, "add these codes to docs/codes.md"


def test_every_documented_code_is_produced() -> None:
    produced = set(product_codes())
    stale = documented_codes() - produced
    assert stale == set(), "docs/codes.md lists codes the product no longer produces"


def test_a_reason_family_keeps_its_reason_as_its_code() -> None:
    exc = errors.CertificateError("bad_signature", "the signature does not verify")
    assert exc.code == exc.reason == "bad_signature"
    assert errors.ControlError("no_such_slot", "x", status=404).code == "no_such_slot"
    assert errors.DeviceGone("gone").code == "device_gone"
    assert errors.DeviceError("x", code="device_gone").code == "device_gone"


def _architecture_names() -> set[str]:
    return set(re.findall(r"`([a-z_]+)`", (DOCS / "architecture.md").read_text("utf-8")))


def test_architecture_lists_every_step() -> None:
    names = _architecture_names()
    assert {s.value for s in JournalStep} - names == set()
    assert {s.value for s in SessionStep} - names == set()


def test_readers_of_events_know_every_session_step() -> None:
    assert set(STEP_PROGRESS) | NO_PROGRESS == set(SessionStep)
    assert not set(STEP_PROGRESS) & NO_PROGRESS
    assert set(SessionStep) == KNOWN_STEPS


# Codes a technician never meets in words: a client's malformed request (the message says
# what was wrong, for the developer), the agent's own start-up refusals (printed by
# `wipeagent run`, never on the bench page), and the certificate verifier's reasons
# (docs/certificate.md).
NOT_FOR_THE_TECHNICIAN = {"bad_request", "no_metrics", "config_error", "startup_refused",
                          "state_dir_busy", "control_error", "control_api"}


def test_every_code_a_technician_can_meet_has_words() -> None:
    """A code the page or the CLI shows (a refusal of an action, the reason a session
    ended) is said in words from the catalogue, never shown as the code itself."""
    from wipeagent.control.bench import FAILED, FIXABLE
    from wipeagent.i18n.messages import ERRORS, NEEDS, REASONS, STEPS

    refusals = set()
    for path in sorted((PRODUCT / "control").rglob("*.py")):
        rel = str(path.relative_to(PRODUCT.parent))
        refusals |= set(codes_in(path.read_text(encoding="utf-8"), rel))
    refusals = {c for c in refusals if c not in NOT_FOR_THE_TECHNICIAN}
    assert refusals - set(ERRORS) - set(REASONS) - set(NEEDS) == set()
    # Every error a session can end with (`DeviceSession._fail` puts its code among the
    # outcome's reasons), and every reason a tile sorts as failed or fixable.
    ending = {c.code for c in vars(errors).values()
              if isinstance(c, type) and issubclass(c, errors.WipeAgentError)}
    ending -= NOT_FOR_THE_TECHNICIAN
    assert ending - set(REASONS) == set()
    assert (set(FAILED) | set(FIXABLE)) - set(REASONS) == set()
    assert set(FIXABLE.values()) - set(NEEDS) == set()
    assert {s.value for s in SessionStep} - set(STEPS) == set()
