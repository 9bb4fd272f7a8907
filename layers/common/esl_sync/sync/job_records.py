"""Whether a label job's records and codes are ones the poll writes (a job edited by hand
and redriven may hold anything): the sender refuses the others by name
(:mod:`esl_sync.sync.deliver`)."""

from __future__ import annotations

from esl_sync.storable import PC_MAX_LENGTH, product_code


def record_problem(record: dict[str, object]) -> str | None:
    """Why an upsert of a job is not a Hipoink record the poll could have written (a job
    edited by hand and redriven): None if it is one (text values, a usable ``pc``)."""
    problem = code_problem(record.get("pc"))
    if problem is not None:
        return problem
    if not all(isinstance(value, str) for value in record.values()):
        return "a value that is not text"
    return None


def code_problem(pc: object) -> str | None:
    """Why ``pc`` is not a product code the poll writes (:func:`esl_sync.storable.product_code`
    left it as it is and found nothing wrong): None if it is one. The ledger cannot hold
    another (Postgres refuses a NUL, and fails the job's every retry), nor Hipoink show it."""
    if not isinstance(pc, str) or not 1 <= len(pc) <= PC_MAX_LENGTH:
        return f"no product code (pc) of 1 to {PC_MAX_LENGTH} characters"
    code, problem = product_code(pc)
    if problem is not None:
        return f"a product code (pc) that {problem}"
    if code != pc:
        return "a product code (pc) with spaces or line breaks at an end"
    return None
