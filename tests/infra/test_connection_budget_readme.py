"""The README's Postgres connection budget ("Deploying") is the template's: the number it
states follows from the parameters' defaults, the in-flight map and the HTTP API's burst,
so a changed default cannot leave the README promising another number."""

from __future__ import annotations

import re
from typing import Any

from devkit.template import REPO_ROOT


def connections_per_poller(in_flight: int) -> int:
    """A poller environment's connections: one per worker thread and the invoking thread's
    (esl_sync.sync.poll_batch runs a batch on threads only when its share is above 1)."""
    return in_flight + 1 if in_flight > 1 else 1


def budget(template: dict[str, Any]) -> int:
    parameters = template["Parameters"]
    pollers = int(parameters["PollerMaximumConcurrency"]["Default"])
    senders = int(parameters["SenderMaximumConcurrency"]["Default"])
    in_flight = int(template["Mappings"]["CloverShare"][str(pollers)]["InstanceInFlight"])
    api = template["Resources"]["WebhookApi"]["Properties"]
    burst = int(api["DefaultRouteSettings"]["ThrottlingBurstLimit"])
    dispatcher = onboarding = migrator = cli = 1
    return (
        pollers * connections_per_poller(in_flight)
        + senders
        + burst
        + dispatcher
        + onboarding
        + migrator
        + cli
    )


def test_the_readme_states_the_budget_at_the_template_defaults(template: dict[str, Any]) -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    stated = re.findall(r"is \*\*(\d+) connections\*\*", readme)
    assert stated == [str(budget(template))], stated
    parameters = template["Parameters"]
    pollers = parameters["PollerMaximumConcurrency"]["Default"]
    in_flight = template["Mappings"]["CloverShare"][str(pollers)]["InstanceInFlight"]
    senders = parameters["SenderMaximumConcurrency"]["Default"]
    burst = template["Resources"]["WebhookApi"]["Properties"]["DefaultRouteSettings"]
    defaults = (
        f"(P = {pollers}, F = {in_flight}, S = {senders}, B = {burst['ThrottlingBurstLimit']})"
    )
    assert defaults in " ".join(readme.split()), defaults


def test_the_bursty_functions_have_their_idle_sessions_ended(template: dict[str, Any]) -> None:
    """The webhook, onboarding and dispatcher ask the server to end their idle sessions;
    the poller and sender keep theirs (their next batch uses them)."""
    resources = template["Resources"]
    idle = {
        name: resources[name]["Properties"]["Environment"]["Variables"].get(
            "DATABASE_IDLE_SESSION_TIMEOUT_SECONDS"
        )
        for name in (
            "WebhookFunction",
            "OnboardingFunction",
            "DispatcherFunction",
            "PollerFunction",
            "HipoinkSenderFunction",
        )
    }
    assert idle == {
        "WebhookFunction": "60",
        "OnboardingFunction": "60",
        "DispatcherFunction": "60",
        "PollerFunction": None,
        "HipoinkSenderFunction": None,
    }


def test_the_readme_states_the_webhooks_share_while_postgres_is_silent(
    template: dict[str, Any],
) -> None:
    """While Postgres is silent each webhook lasts until its statements' deadline (its
    timeout less ``POSTGRES_RESERVE_MS``), and the HTTP API admits B + R × that many at
    once: the README's numbers follow from the template and the handler's constant."""
    readme = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    source = (REPO_ROOT / "functions" / "webhook" / "app.py").read_text(encoding="utf-8")
    found = re.search(r"^POSTGRES_RESERVE_MS = ([\d_]+)$", source, re.MULTILINE)
    assert found is not None
    resources = template["Resources"]
    timeout_ms = int(resources["WebhookFunction"]["Properties"]["Timeout"]) * 1000
    held = (timeout_ms - int(found.group(1))) // 1000
    api = resources["WebhookApi"]["Properties"]["DefaultRouteSettings"]
    burst, rate = int(api["ThrottlingBurstLimit"]), int(api["ThrottlingRateLimit"])
    webhooks = burst + held * rate
    assert f"holds a webhook {held} s at most" in readme
    assert f"B + {held} × R = {webhooks} webhook environments" in readme
    assert f"budget is {budget(template) - burst + webhooks} connections" in readme
