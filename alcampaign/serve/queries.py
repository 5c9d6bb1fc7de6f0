"""Checked versions of maggma's pagination, projection and sort operators.

maggma's operators take ``_limit=0`` as "no limit" (the whole collection, structures
and features included), pass any ``_fields`` string to the database (a ``$`` in a
name is a 500) and drop unknown sort fields silently. These keep maggma's parameters
and answer every bad value with a 400 that names it:

* every page holds 1 to ``max_limit`` documents (``0`` is not "all");
* ``_fields`` names are dotted paths of plain names under a field of the document;
* ``_sort_fields`` names are among the sortable fields (``-`` for descending).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence

from fastapi import HTTPException, Query
from maggma.api.query_operator import QueryOperator
from pydantic import BaseModel

FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def check_fields(text: str, allowed: Sequence[str]) -> list[str]:
    """The field names of a ``_fields`` value, each checked (400 otherwise)."""
    names = [f.strip() for f in text.split(",")]
    for name in names:
        if not FIELD_PATH.match(name) or name.split(".", 1)[0] not in allowed:
            raise HTTPException(
                400,
                f"_fields: {name!r} is not a field; give comma-separated names among "
                f"{', '.join(allowed)} (a dotted path below one of them is allowed)",
            )
    return names


def check_sort(text: str | None, allowed: Sequence[str], max_num: int = 2) -> list[tuple]:
    """``[(field, 1 or -1)]`` of a ``_sort_fields`` value, each checked (400 otherwise)."""
    if not text:
        return []
    out = []
    names = text.split(",")
    if len(names) > max_num:
        raise HTTPException(400, f"_sort_fields: sort by at most {max_num} field(s)")
    for name in names:
        field, direction = (name[1:], -1) if name.startswith("-") else (name, 1)
        if field not in allowed:
            raise HTTPException(
                400,
                f"_sort_fields: cannot sort by {field!r}; choose among {', '.join(allowed)} "
                "(prefix '-' for descending)",
            )
        out.append((field, direction))
    return out


def check_page(
    page: int | None, per_page: int, skip: int, limit: int, max_limit: int
) -> tuple[int, int]:
    """``(skip, limit)`` of maggma's two pagination styles, each checked."""
    if page is not None:
        if page < 1:
            raise HTTPException(400, f"_page={page}: pages count from 1")
        if not 1 <= per_page <= max_limit:
            raise HTTPException(
                400, f"_per_page={per_page}: give 1 to {max_limit} (the max limit per request)"
            )
        return (page - 1) * per_page, per_page
    if skip < 0 or limit < 0:
        raise HTTPException(400, "negative _skip or _limit: give 0 or more")
    if not 1 <= limit <= max_limit:
        raise HTTPException(
            400, f"_limit={limit}: give 1 to {max_limit} (the max limit per request; 0 is not all)"
        )
    return skip, limit


def pagination_params(default_limit: int, max_limit: int):
    """The FastAPI signature of the pagination parameters (as maggma's)."""

    def query(
        _page: int | None = Query(None, description="Page number, from 1 (before _skip/_limit)."),
        _per_page: int = Query(default_limit, description=f"Documents per page, 1 to {max_limit}."),
        _skip: int = Query(0, description="Documents to skip."),
        _limit: int = Query(default_limit, description=f"Documents to return, 1 to {max_limit}."),
    ) -> tuple[int, int]:
        return check_page(_page, _per_page, _skip, _limit, max_limit)

    return query


class CheckedPagination(QueryOperator):
    """maggma's ``_page``/``_per_page``/``_skip``/``_limit``, each page 1 to
    ``max_limit`` documents."""

    def __init__(self, default_limit: int = 100, max_limit: int = 1000) -> None:
        self.max_limit = max_limit
        params = pagination_params(default_limit, max_limit)

        def query(**kwargs) -> dict:
            skip, limit = params(**kwargs)
            return {"skip": skip, "limit": limit}

        query.__signature__ = inspect.signature(params).replace(return_annotation=dict)
        self.query = query  # type: ignore[method-assign]

    def query(self) -> dict:  # replaced per instance
        """Pagination parameters."""
        return {}

    def meta(self) -> dict:
        """The page cap."""
        return {"max_limit": self.max_limit}


class CheckedFields(QueryOperator):
    """maggma's ``_fields``/``_all_fields`` with every name checked."""

    def __init__(self, model: type[BaseModel], default_fields: list[str]) -> None:
        self.default_fields = list(default_fields)
        allowed = list(model.model_fields)

        def query(
            _fields: str | None = Query(
                None, description=f"Comma-separated fields among {', '.join(allowed)}."
            ),
            _all_fields: bool = Query(False, description="Include all fields."),
        ) -> dict:
            if _all_fields:
                return {"properties": allowed}
            if _fields is None:
                return {"properties": self.default_fields}
            return {"properties": check_fields(_fields, allowed)}

        self.query = query  # type: ignore[method-assign]

    def query(self) -> dict:  # replaced per instance
        """Projection parameters."""
        return {}

    def meta(self) -> dict:
        """The fields served when none are asked for."""
        return {"default_fields": self.default_fields}


class CheckedSort(QueryOperator):
    """maggma's ``_sort_fields`` with every name checked."""

    def __init__(self, fields: Sequence[str], max_num: int = 2) -> None:
        def query(
            _sort_fields: str | None = Query(
                None,
                description=f"Comma-separated, among {', '.join(fields)}; '-' for descending.",
            ),
        ) -> dict:
            return {"sort": dict(check_sort(_sort_fields, fields, max_num))}

        self.query = query  # type: ignore[method-assign]

    def query(self) -> dict:  # replaced per instance
        """Sort parameters."""
        return {}
