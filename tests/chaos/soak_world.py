"""The soak's local world: control plane with audit logging, simulator, operator.

Like ``run.local_world`` (CRD and shipped RBAC applied as users apply them, the operator
as its ServiceAccount), plus what the soak counts with: the kube-apiserver's audit log
(``bench/audit.py``: writes by user, so the soak's own writes are told apart), two API
keys (the operator's default, and one given to part of the fleet by ``credentialsRef``),
and a way to pause the operator (SIGSTOP) so deletions can happen while it cannot watch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as k8s

from bench import audit
from blooio_operator.devenv.controlplane import ControlPlane
from tests.helpers import wait_for
from tests.integration.conftest import OperatorProcess, Simulator
from tests.integration.webhooks import Webhooks

OPERATOR_USER = "system:serviceaccount:blooio-system:blooio-operator"
OTHER_KEY = "bl_test_soak_other_key_abcdefghij"
CREDENTIALS_SECRET = "soak-api-key"  # in every soak namespace, holding OTHER_KEY


@dataclass
class SoakWorld:
    api: k8s.ApiClient
    cp: ControlPlane
    sim: Simulator
    operator: OperatorProcess
    audit: audit.AuditLog
    namespaces: list[str]
    default_key: str

    def hooks(self, ns: str) -> Webhooks:
        return Webhooks(self.api, ns)

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def operator_pid(self) -> int | None:
        proc = self.operator.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def pause_operator(self) -> None:
        """SIGSTOP: the operator keeps its memory but sees nothing until resumed."""
        pid = self.operator_pid
        if pid is not None:
            os.kill(pid, signal.SIGSTOP)

    def resume_operator(self) -> None:
        pid = self.operator_pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)


def add_credentials(core: k8s.CoreV1Api, ns: str) -> None:
    """The second key as a Secret a credentialsRef may name (labelled: its owner consents)."""
    body = k8s.V1Secret(
        metadata=k8s.V1ObjectMeta(
            name=CREDENTIALS_SECRET, labels={"blooio.com/credentials": "true"}
        ),
        string_data={"api-key": OTHER_KEY},
    )
    core.create_namespaced_secret(ns, body)


@contextlib.contextmanager
def soak_world(
    work: Path,
    *,
    namespaces: Sequence[str],
    env: Mapping[str, str],
    binary: Path | None = None,
) -> Iterator[SoakWorld]:
    """Start everything (a fresh etcd in ``work``); stop everything afterwards, even when
    interrupted: the operator is resumed first if it was paused."""
    from kubernetes import config as k8s_config

    from tests.integration.conftest import (
        API_KEY,
        CRD_DIR,
        MANIFESTS,
        kubeconfig_for_token,
        load_yaml_docs,
        token_for,
    )

    for leftover in ("controlplane", "simulator"):
        shutil.rmtree(work / leftover, ignore_errors=True)
    for leftover_file in ("operator.log", "audit.log"):
        (work / leftover_file).unlink(missing_ok=True)
    policy = work / "audit-policy.yaml"
    policy.write_text(audit.policy_yaml([OPERATOR_USER]))
    audit_path = work / "audit.log"
    cp = ControlPlane(
        work / "controlplane",
        binary=binary,
        extra_apiserver_args=audit.apiserver_args(policy, audit_path),
    ).start()
    sim: Simulator | None = None
    operator: OperatorProcess | None = None
    world: SoakWorld | None = None
    try:
        api = k8s_config.new_client_from_config(config_file=str(cp.kubeconfig))
        kubectl = ["kubectl", "--kubeconfig", str(cp.kubeconfig)]
        crd = CRD_DIR / "blooio.com_blooiowebhooks.yaml"
        subprocess.run([*kubectl, "apply", "-f", str(crd)], check=True, timeout=60)
        custom = k8s.CustomObjectsApi(api)
        wait_for(
            lambda: (
                custom.list_cluster_custom_object("blooio.com", "v1alpha1", "blooiowebhooks")
                is not None
            ),
            timeout=60,
            message="blooiowebhooks served",
        )
        core, rbac = k8s.CoreV1Api(api), k8s.RbacAuthorizationV1Api(api)
        for ns in ("blooio-system", *namespaces):
            core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=ns)))
        for ns in namespaces:
            add_credentials(core, ns)
        for doc in load_yaml_docs(MANIFESTS / "rbac.yaml"):
            if doc["kind"] == "ClusterRole":
                rbac.create_cluster_role(doc)
            elif doc["kind"] == "ClusterRoleBinding":
                rbac.create_cluster_role_binding(doc)
        token = token_for(api, "blooio-system", "blooio-operator")
        kubeconfig = kubeconfig_for_token(cp, token, work / "operator-kubeconfig")
        sim = Simulator(work / "simulator", [API_KEY, OTHER_KEY], ["--log-level", "WARNING"])
        operator_env = {**env, "BLOOIO_API_URL": sim.url, "BLOOIO_API_KEY": API_KEY}
        args = [arg for ns in namespaces for arg in ("--namespace", ns)]
        operator = OperatorProcess(kubeconfig, work / "operator.log", operator_env, args)
        operator.start()
        world = SoakWorld(
            api, cp, sim, operator, audit.AuditLog(audit_path), list(namespaces), API_KEY
        )
        yield world
    finally:
        if world is not None:
            with contextlib.suppress(Exception):
                world.resume_operator()  # a stopped process would not see its SIGTERM
        if operator is not None:
            operator.stop()
        if sim is not None:
            sim.stop()
        cp.stop()
