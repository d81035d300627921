"""The one error a command raises to stop: its message says what was wrong and what to do."""

from __future__ import annotations

from pydantic import ValidationError


class CommandError(Exception):
    """A command cannot go on. The command line prints the message in red and exits with ``exit_code``."""

    def __init__(self, message: object, exit_code: int = 1) -> None:
        """MESSAGE names the problem and the fix; EXIT_CODE is 2 for a usage mistake, 1 otherwise."""
        super().__init__(str(message))
        self.exit_code = exit_code


def kafka_unreachable(bootstrap: str, error: BaseException) -> CommandError:
    """The error of a command whose Kafka client could not connect to BOOTSTRAP (or authenticate), with what to check."""
    return CommandError(
        f"could not connect to Kafka at {bootstrap} ({type(error).__name__}: {error}); check HOPTRACE_KAFKA_BOOTSTRAP, that the broker "
        "runs (`hoptrace services status`), and for a secured broker HOPTRACE_KAFKA_SECURITY_PROTOCOL, HOPTRACE_KAFKA_SASL_* and "
        "HOPTRACE_KAFKA_SSL_CAFILE (the CA that signed the broker's certificate)"
    )


def redis_unreachable(url: str, error: BaseException) -> CommandError:
    """The error of a command that could not send to the Redis at URL (shown without its password), with what to check."""
    from hoptrace.clients.celery.urls import shown_url  # kombu is slow to import: only on the way out

    return CommandError(
        f"could not send to Redis at {shown_url(url)} ({error}); check HOPTRACE_REDIS_URL, that Redis runs (`hoptrace services "
        "status`), and for Redis over TLS a rediss:// URL with ssl_ca_certs=<the CA that signed its certificate>, plus ssl_certfile= and "
        "ssl_keyfile= when it wants a client certificate"
    )


def setting_problems(error: ValidationError) -> str:
    """What is wrong with the ``HOPTRACE_*`` settings ERROR is about, one ``NAME: problem`` per setting, ``; ``-separated."""
    problems = []
    for each in error.errors():
        message = str(each["msg"]).removeprefix("Value error, ")
        names = [f"HOPTRACE_{str(part).upper()}" for part in each["loc"]]
        problems.append(f"{'.'.join(names)}: {message}" if names else message)
    return "; ".join(problems)
