"""sweeper's one error tree.

Every error the user can see derives from :class:`SweeperError`; foreign exceptions (httpx,
SQLAlchemy, pydantic, tomllib) are translated at the boundary of the layer that met them, with
``raise ... from exc``, and shown to the user once, by the CLI.

    SweeperError
    ├── ConfigError            bad input: exit 2, nothing spent or written
    │   └── ConfigChanged      a resumed sweep's config differs from the stored one
    ├── ApiError               the provider (or the local service) said no, or said nothing
    │   ├── ApiUnavailable     transport error, 429 or 5xx that outlived the retries
    │   ├── ApiRejected        a 4xx answer (never retried)
    │   │   ├── ApiAuthError   401 / 403
    │   │   └── ApiNotFound    404
    │   └── ApiProtocolError   an answer that is not the documented shape
    ├── StoreError             the database failed
    │   └── SchemaOutdated     the database is behind the code: run `sweep db upgrade`
    └── EvaluatorError         a user evaluator raised (fails that trial, not the sweep)

Messages never contain secrets: nothing here formats a request's headers or body.
"""

from __future__ import annotations

from collections.abc import Sequence


class SweeperError(Exception):
    """Base of every error sweeper reports to the user."""

    exit_code = 1


class ConfigError(SweeperError):
    """Invalid input, found before anything was spent: exit code 2.

    ``problems`` holds one ``field.path: message`` line per problem; ``source`` names the file.
    """

    exit_code = 2

    def __init__(self, problems: str | Sequence[str], source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return f"{where}{self.problems[0]}"
        body = "\n".join(f"  {p}" for p in self.problems)
        return f"{where}{len(self.problems)} problems\n{body}"


class ConfigChanged(ConfigError):
    """The stored sweep was started with another search space or other fixed job fields."""


class ApiError(SweeperError):
    """The fine-tuning API failed or refused a request."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        self.status_code = status_code
        super().__init__(message)


class ApiUnavailable(ApiError):
    """Transport error, 429 or 5xx that did not clear within the retry budget."""


class ApiRejected(ApiError):
    """A 4xx answer. ``problems`` has one ``field: message`` line per validation problem."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        problems: Sequence[str] = (),
        code: str | None = None,
    ) -> None:
        self.problems = list(problems)
        self.code = code
        if self.problems:
            message = message + "\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(message, status_code=status_code)


class ApiAuthError(ApiRejected):
    """401 or 403: the key is missing, wrong or not allowed."""


class ApiNotFound(ApiRejected):
    """404: no such job, file or checkpoint."""


class ApiProtocolError(ApiError):
    """The answer was not the documented shape (not JSON, missing fields, wrong types)."""


class StoreError(SweeperError):
    """The database failed (connection, lock timeout, integrity)."""


class SchemaOutdated(StoreError):
    """The database schema is behind this version of sweeper."""


class EvaluatorError(SweeperError):
    """A user evaluator raised; the trial fails with this message, the sweep goes on."""
