"""botocore clients through esl_sync.store.aws: botocore's answer to "does this service exist",
without listing every service it knows (a third of a poller's cold start), and clients
built safely from several threads at once (the poller's workers)."""

from __future__ import annotations

import threading

import pytest
from botocore.exceptions import UnknownServiceError
from botocore.loaders import Loader

from esl_sync.store import aws


@pytest.fixture(autouse=True)
def fresh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(aws, "_session", None)


def _loader() -> aws._QuickLoader:
    loader = aws.session().get_component("data_loader")
    assert isinstance(loader, aws._QuickLoader)
    return loader


def test_clients_are_built_without_listing_every_service() -> None:
    for service in ("dynamodb", "kms", "sqs", "secretsmanager", "cloudformation"):
        aws.client(service)
    names = _loader().list_available_services("service-2")
    assert isinstance(names, aws._ServiceNames)
    assert names._all is None  # asked one service at a time, never listed


def test_the_answer_is_botocores_own() -> None:
    aws.client("sqs")
    quick = _loader().list_available_services("service-2")
    full = Loader().list_available_services("service-2")
    assert len(full) > 300
    for name in (*full[::25], "dynamodb", "kms"):
        assert name in quick
    for name in ("dynamo", "no-such-service", "", "../botocore"):
        assert name not in quick
    assert list(quick) == full  # listed, as botocore's error message lists them


def test_an_unknown_service_is_refused_by_name_as_botocore_would() -> None:
    with pytest.raises(UnknownServiceError, match="dynamodb"):  # the list of known ones
        aws.client("dynamo")


def test_clients_built_from_eight_threads_at_once_all_work() -> None:
    built: list[object] = []
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def build(service: str) -> None:
        start.wait()
        try:
            built.append(aws.client(service))
        except BaseException as error:
            failures.append(error)

    threads = [
        threading.Thread(target=build, args=(s,)) for s in ("kms", "dynamodb", "sqs", "sts") * 2
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(built) == 8
