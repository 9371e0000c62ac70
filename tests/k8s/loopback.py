"""The rendered cpu overlay as processes on this machine: each container's command, args
and environment exactly as the manifest gives them, with what a cluster would provide
mapped to loopback: each Service name and port to 127.0.0.1 and a free port (the port a
container listens on becomes that port, so a probe or URL naming the wrong port fails),
each volume mount to a directory of the pod's own, ConfigMap keys read from the rendered
ConfigMaps and Secret keys given by the test. Commands run from this environment's
`.venv/bin` (the image's PATH holds the same programs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.supervisor import free_port
from tests.k8s.conftest import ROOT, Doc, find, pod_spec

SUBSTITUTION = re.compile(r"\$\(([A-Z0-9_]+)\)")
PORT_ARG = re.compile(r"^(--[a-z-]*port)=(\d+)$")
#: Mounts the host already gives every process.
HOST_MOUNTS = {"/tmp", "/dev/shm"}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@dataclass
class Loopback:
    docs: list[Doc]
    work: Path
    secrets: dict[tuple[str, str], str]
    settings: dict[str, str] = field(default_factory=dict)
    """ConfigMap `loraport-settings` keys the test replaces (e.g. prometheus-url)."""
    ports: dict[tuple[str, int], int] = field(default_factory=dict)
    """(Service name, Service port) -> the loopback port."""

    def __post_init__(self) -> None:
        for svc in (d for d in self.docs if d["kind"] == "Service"):
            for port in svc["spec"]["ports"]:
                self.ports[(svc["metadata"]["name"], port["port"])] = free_port()

    def url(self, service: str, port: int) -> str:
        return f"http://127.0.0.1:{self.ports[(service, port)]}"

    def workload(self, kind: str, name: str) -> Doc:
        return find(self.docs, kind, name)

    def container_ports(self, doc: Doc, c: Doc) -> dict[int, int]:
        """containerPort -> loopback port, through the Service that targets it."""
        labels = doc["spec"]["template"]["metadata"]["labels"]
        out = {}
        for p in c.get("ports", []):
            for svc in (d for d in self.docs if d["kind"] == "Service"):
                if not selects(svc["spec"]["selector"], labels):
                    continue
                for sp in svc["spec"]["ports"]:
                    if sp["targetPort"] == p["name"]:
                        out[p["containerPort"]] = self.ports[(svc["metadata"]["name"], sp["port"])]
            out.setdefault(p["containerPort"], free_port())
        return out

    def mounts(self, doc: Doc, c: Doc) -> dict[str, Path]:
        """mountPath -> this pod's directory for the volume (shared by its containers)."""
        out = {}
        for m in c.get("volumeMounts", []):
            if m["mountPath"] in HOST_MOUNTS:
                continue
            path = self.work / doc["metadata"]["name"] / m["name"]
            path.mkdir(parents=True, exist_ok=True)
            out[m["mountPath"]] = path
        return out

    def _text(self, text: str, mounts: dict[str, Path]) -> str:
        for (service, port), local in self.ports.items():
            text = text.replace(f"http://{service}:{port}", f"http://127.0.0.1:{local}")
        for mount, path in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
            if text == mount or text.startswith(mount + "/"):
                return str(path) + text[len(mount) :]
            text = text.replace(f"={mount}/", f"={path}/").replace(f"={mount}", f"={path}")
        return text

    def env(self, doc: Doc, c: Doc) -> dict[str, str]:
        mounts = self.mounts(doc, c)
        out: dict[str, str] = {}
        for e in c.get("env", []):
            source = e.get("valueFrom", {})
            if "value" in e:
                value = e["value"]
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                cm = find(self.docs, "ConfigMap", ref["name"])
                value = cm["data"][ref["key"]]
                if ref["name"] == "loraport-settings":
                    value = self.settings.get(ref["key"], value)
            else:
                ref = source["secretKeyRef"]
                if (ref["name"], ref["key"]) not in self.secrets and ref.get("optional"):
                    continue
                value = self.secrets[(ref["name"], ref["key"])]
            out[e["name"]] = self._text(value, mounts)
        return out

    def argv(self, doc: Doc, c: Doc) -> list[str]:
        env = self.env(doc, c)
        mounts = self.mounts(doc, c)
        ports = self.container_ports(doc, c)
        words = [SUBSTITUTION.sub(lambda m: env[m[1]], w)
                 for w in [*c.get("command", []), *c.get("args", [])]]  # fmt: skip
        out = []
        for w in words:
            found = PORT_ARG.match(w)
            if found and int(found[2]) in ports:
                w = f"{found[1]}={ports[int(found[2])]}"
            elif w == "--host=0.0.0.0":
                w = "--host=127.0.0.1"
            out.append(self._text(w, mounts))
        head = out[0]
        if head == "python":
            out[0] = sys.executable
        else:
            out[0] = str(Path(sys.executable).with_name(head))
        return out

    def start(self, doc: Doc, c: Doc, log: Path) -> subprocess.Popen[bytes]:
        passed = ("PATH", "LANG", "LC_ALL", "TMPDIR")
        keep = {k: v for k, v in os.environ.items() if k in passed or k.startswith("VLLM_CPU")}
        env = {**keep, "PYTHONPATH": str(ROOT), **self.env(doc, c)}
        with log.open("ab") as out:
            return subprocess.Popen(self.argv(doc, c), env=env, stdout=out, cwd=self.root(doc),
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def root(self, doc: Doc) -> Path:
        """The pod's working directory: the image's read-only root, so it must stay empty
        (anything written there would fail on a cluster)."""
        path = self.work / doc["metadata"]["name"] / "root"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run_init(self, doc: Doc, log: Path) -> None:
        """Each init container to completion, in order, as the kubelet runs them."""
        spec = pod_spec(doc)
        assert spec is not None
        for c in spec.get("initContainers", []):
            proc = self.start(doc, c, log)
            assert proc.wait(timeout=120) == 0, log.read_text(errors="replace")[-3000:]

    def probe_urls(self, doc: Doc, c: Doc) -> dict[str, str]:
        """Each probe's URL on loopback: kind -> URL."""
        by_name = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        ports = self.container_ports(doc, c)
        out = {}
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in c:
                get: dict[str, Any] = c[kind]["httpGet"]
                port = get["port"] if isinstance(get["port"], int) else by_name[get["port"]]
                out[kind] = f"http://127.0.0.1:{ports[port]}{get['path']}"
        return out
