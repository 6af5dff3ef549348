"""A pod that waits for an image its node will never have is refused, others are waited for."""

from __future__ import annotations

import pytest
from kubernetes import client

from failure_stories.core.errors import ProviderError
from failure_stories.providers.kube import refuse_unstartable


def _pod(reason: str | None, *, init: bool = False) -> client.V1Pod:
    state = client.V1ContainerState(
        waiting=client.V1ContainerStateWaiting(reason=reason) if reason else None,
        running=None if reason else client.V1ContainerStateRunning(),
    )
    status = client.V1ContainerStatus(
        name="main",
        image="localhost/kfs/otelcol:v0.165.0",
        image_id="",
        ready=False,
        restart_count=0,
        state=state,
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="shipper-x", namespace="kfs-pk"),
        spec=client.V1PodSpec(containers=[], node_name="worker2"),
        status=client.V1PodStatus(
            init_container_statuses=[status] if init else None,
            container_statuses=None if init else [status],
        ),
    )


@pytest.mark.parametrize("reason", ["ErrImageNeverPull", "InvalidImageName"])
@pytest.mark.parametrize("init", [False, True])
def test_an_image_the_node_will_never_have_is_refused(reason: str, init: bool) -> None:
    with pytest.raises(ProviderError) as refused:
        refuse_unstartable(_pod(reason, init=init))
    assert str(refused.value).startswith(
        f"pod kfs-pk/shipper-x cannot start on node worker2: {reason} for image "
        "localhost/kfs/otelcol:v0.165.0: import it into every node's container runtime"
    )


@pytest.mark.parametrize(
    "reason", [None, "ContainerCreating", "ErrImagePull", "ImagePullBackOff", "CrashLoopBackOff"]
)
def test_a_pod_that_may_still_start_is_left_to_the_wait(reason: str | None) -> None:
    refuse_unstartable(_pod(reason))


def test_a_pod_not_yet_scheduled_has_no_status_to_judge() -> None:
    refuse_unstartable(client.V1Pod(metadata=client.V1ObjectMeta(name="p", namespace="n")))
