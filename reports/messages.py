"""The message of a failed result: one line a reader can act on, then the full text.

A test's exception becomes the result's `reason`. An assertion of the suites already reads well; an
error raised by hypothesis does not: its text is the test's signature with every argument's repr
("Hypothesis test_batch(runner=..., data=...) produces unreliable results ..."). `explain` turns each
kind of hypothesis error into a sentence that says what happened and what to do, followed by the
underlying failure. `headline` and `rest` split a reason for the report writers, which show the
first line and fold the rest into a details element.
"""
from __future__ import annotations

REASON_LIMIT = 4000  # characters of a reason kept in report.json
HEADLINE_LIMIT = 300  # characters of its first line shown before the fold

NOT_REPRODUCIBLE = "not reproducible: failed once, passed when hypothesis ran the same example again"
NOT_REPRODUCIBLE_WHY = ("Two runs of one example gave different verdicts, so a framework call is not deterministic "
                        "(or an earlier example left state behind). The batch check compares two calls on one "
                        "input bit for bit; run it for this claim to see which variant differs.")


def one_line(text: str) -> str:
    """The lines of a message joined into one ("; " between them), blank lines dropped."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or exc.__class__.__name__


def _first_failure(group: BaseException) -> BaseException | None:
    """The first exception inside an exception group (hypothesis' FlakyFailure holds the failures it saw)."""
    inner = getattr(group, "exceptions", None) or ()
    for exc in inner:
        nested = _first_failure(exc) if getattr(exc, "exceptions", None) else exc
        if nested is not None:
            return nested
    return None


def explain(exc: BaseException) -> str | None:
    """The reason for a hypothesis error: a first line to act on, then the full text; None for any other
    exception (its own message is the reason)."""
    try:
        from hypothesis import errors
    except ImportError:  # pragma: no cover - hypothesis is a dependency of the suites
        return None
    if isinstance(exc, errors.FlakyFailure):
        first = _first_failure(exc)
        if first is None:
            return f"{NOT_REPRODUCIBLE}\n\n{NOT_REPRODUCIBLE_WHY}"
        failure = _message(first)
        return (f"{failure.splitlines()[0].strip()} ({NOT_REPRODUCIBLE})\n\n{NOT_REPRODUCIBLE_WHY}\n\n"
                f"The first failure, in full:\n{failure}")
    sentences = (  # checked in order: the first class that matches says it
        (errors.Flaky,  # FlakyStrategyDefinition, FlakyReplay
         "hypothesis could not replay an example: the data drawn for it changed between two runs of the same "
         "example, so a strategy depends on state outside it (a harness bug: report it with this test id)"),
        (errors.Unsatisfiable,
         "hypothesis found too few valid examples: the claim's strategies reject almost every draw; widen the "
         "claim's sizes in its catalog entry, or run more examples"),
        (errors.FailedHealthCheck,
         "hypothesis' health check failed: drawing this test's examples was too slow or filtered out too many; on "
         "a loaded machine run fewer workers (-n), otherwise widen the claim's strategies"),
        (errors.DeadlineExceeded,
         "one example ran longer than hypothesis' deadline: the suites' profiles set no deadline, so a profile of "
         "your own does; give it deadline=None"),
    )
    for kind, sentence in sentences:
        if isinstance(exc, kind):
            return f"{sentence}\n\n{_message(exc)}"
    if isinstance(exc, errors.HypothesisException):
        return (f"hypothesis stopped the test ({exc.__class__.__name__}): {one_line(_message(exc))[:HEADLINE_LIMIT]}"
                f"\n\n{_message(exc)}")
    return None


def failure_reason(exc: BaseException, exconly: str) -> str:
    """The `reason` of a result whose test raised `exc` (`exconly`: pytest's "Type: message" line)."""
    explained = explain(exc)
    if explained is not None:
        return cut(explained)
    if isinstance(exc, AssertionError) and str(exc).strip():  # the suites' own verdict: its message says it all
        return cut(str(exc))
    return cut(exconly)


def cut(text: str, limit: int = REASON_LIMIT) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + " ... (cut)"


def headline(reason: str) -> str:
    """The first line of a reason, at most HEADLINE_LIMIT characters (the rest goes behind a fold)."""
    first = reason.strip().split("\n", 1)[0] if reason else ""
    return first if len(first) <= HEADLINE_LIMIT else first[:HEADLINE_LIMIT - 3] + "..."


def rest(reason: str) -> str:
    """What `headline` does not show: the full text when anything was left out, else empty."""
    text = (reason or "").strip()
    return text if text != headline(text) else ""
