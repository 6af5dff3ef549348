"""An operator in a pod reaches its own cluster through a kubeconfig written from
its ServiceAccount, so GameDays run there exactly as the existing provider runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from failure_stories.core.errors import KubeconfigError
from failure_stories.gameday import resource
from failure_stories.providers.existing import ExistingProvider
from failure_stories.providers.kubeconfig import IN_CLUSTER_CONTEXT, KubeConfig, write_in_cluster


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("first-token")
    (sa / "ca.crt").write_text("not read until a connection is made")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    return sa


def test_the_pods_account_becomes_a_kubeconfig_context(account: Path, tmp_path: Path) -> None:
    path = write_in_cluster(tmp_path / "state" / "in-cluster.kubeconfig", account)
    conf = KubeConfig(path)
    assert conf.resolve() == IN_CLUSTER_CONTEXT
    api = conf.api_client().configuration
    assert api.host == "https://10.96.0.1:443"
    assert api.ssl_ca_cert == str(account / "ca.crt")
    assert api.api_key["BearerToken"] == "Bearer first-token"


def test_outside_a_pod_it_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(KubeconfigError, match=r"not inside a pod.*KUBECONFIG"):
        write_in_cluster(tmp_path / "k", tmp_path / "no-account")


def test_an_in_cluster_operator_runs_gamedays_as_the_existing_provider(
    account: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KFS_GAMEDAY_PROVIDER", "in-cluster")
    monkeypatch.setattr("failure_stories.providers.kubeconfig.SERVICE_ACCOUNT", account)
    name, kubeconfig, context = resource.cluster_of_operator(tmp_path)
    assert (name, context) == ("existing", IN_CLUSTER_CONTEXT)
    assert kubeconfig == str(tmp_path / "in-cluster.kubeconfig")
    provider = resource.provider_for(name, kubeconfig, context)
    assert isinstance(provider, ExistingProvider)
    # Installing the operator with --gamedays is the consent: no --allow-context.
    provider.check_allowed()
