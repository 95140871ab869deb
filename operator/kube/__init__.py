"""Every Kubernetes API call the operator makes itself (Secrets, status, Events)."""

from blooio_operator.kube.client import (
    KubeClient,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    OwnerRef,
)

__all__ = ["KubeClient", "KubeConflict", "KubeError", "KubeForbidden", "KubeNotFound", "OwnerRef"]
