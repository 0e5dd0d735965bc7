#!/usr/bin/env python3
"""A CRI v1 client for the tests and the benchmark: Kubernetes' runtime API
(PyPI's container-runtime-interface-api: the CRI's protobuf stubs, gRPC)
against containerd's CRI plugin, the way the kubelet calls it.

usage: cri.py SOCKET COMMAND ARGS...   (prints JSON)
  version
  runp NAME HANDLER                     RunPodSandbox (host network) -> {"id"}
  create POD NAME IMAGE HANDLER ARGS..  CreateContainer -> {"id"}
  start ID | stop ID | rm ID | stopp POD | rmp POD
  exec ID ARGS...                       ExecSync -> {"code", "stdout", "stderr"}
  status ID | stats ID | pstatus POD
  update ID MEMORY_BYTES                UpdateContainerResources
  bench N HANDLER IMAGE ARGS...         N x (RunPodSandbox+CreateContainer+StartContainer), ms each
"""
import json
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../target/pylib"))

import grpc  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402
from cri_api.v1 import api_pb2 as api  # noqa: E402
from cri_api.v1.api_pb2_grpc import RuntimeServiceStub  # noqa: E402


def stub(sock):
    return RuntimeServiceStub(grpc.insecure_channel("unix://" + sock))


def pod_config(name):
    return api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="default", uid=str(uuid.uuid4()), attempt=0),
        log_directory="",
        linux=api.LinuxPodSandboxConfig(
            security_context=api.LinuxSandboxSecurityContext(
                namespace_options=api.NamespaceOption(network=api.NODE, pid=api.CONTAINER)
            )
        ),
    )


def run_pod(s, name, handler):
    r = s.RunPodSandbox(api.RunPodSandboxRequest(config=pod_config(name), runtime_handler=handler))
    return r.pod_sandbox_id


def create(s, pod, pod_name, name, image, args):
    cfg = api.ContainerConfig(
        metadata=api.ContainerMetadata(name=name, attempt=0),
        image=api.ImageSpec(image=image),
        command=args[:1],
        args=args[1:],
        envs=[api.KeyValue(key="PATH", value="/system/bin:/bin")],
        # What the kubelet asks by default: the pod's network and IPC, a
        # pid namespace of the container's own.
        linux=api.LinuxContainerConfig(
            security_context=api.LinuxContainerSecurityContext(
                namespace_options=api.NamespaceOption(network=api.NODE, pid=api.CONTAINER, ipc=api.POD)
            )
        ),
    )
    r = s.CreateContainer(api.CreateContainerRequest(
        pod_sandbox_id=pod, config=cfg, sandbox_config=pod_config(pod_name)))
    return r.container_id


def out(v):
    print(json.dumps(v))


def main():
    sock, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    s = stub(sock)
    try:
        if cmd == "version":
            out(MessageToDict(s.Version(api.VersionRequest())))
        elif cmd == "runp":
            out({"id": run_pod(s, args[0], args[1])})
        elif cmd == "create":
            pod = args[0]
            status = s.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=pod))
            out({"id": create(s, pod, status.status.metadata.name, args[1], args[2], args[4:])})
        elif cmd == "start":
            s.StartContainer(api.StartContainerRequest(container_id=args[0]))
            out({})
        elif cmd == "stop":
            s.StopContainer(api.StopContainerRequest(container_id=args[0], timeout=5))
            out({})
        elif cmd == "rm":
            s.RemoveContainer(api.RemoveContainerRequest(container_id=args[0]))
            out({})
        elif cmd == "stopp":
            s.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=args[0]))
            out({})
        elif cmd == "rmp":
            s.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=args[0]))
            out({})
        elif cmd == "exec":
            r = s.ExecSync(api.ExecSyncRequest(container_id=args[0], cmd=args[1:], timeout=30))
            out({"code": r.exit_code, "stdout": r.stdout.decode(errors="replace"),
                 "stderr": r.stderr.decode(errors="replace")})
        elif cmd == "status":
            r = s.ContainerStatus(api.ContainerStatusRequest(container_id=args[0], verbose=True))
            out(MessageToDict(r))
        elif cmd == "pstatus":
            r = s.PodSandboxStatus(api.PodSandboxStatusRequest(pod_sandbox_id=args[0], verbose=True))
            out(MessageToDict(r))
        elif cmd == "stats":
            r = s.ContainerStats(api.ContainerStatsRequest(container_id=args[0]))
            out(MessageToDict(r))
        elif cmd == "update":
            s.UpdateContainerResources(api.UpdateContainerResourcesRequest(
                container_id=args[0], linux=api.LinuxContainerResources(memory_limit_in_bytes=int(args[1]))))
            out({})
        elif cmd == "bench":
            n, handler, image, cargs = int(args[0]), args[1], args[2], args[3:]
            times = []
            for i in range(n):
                name = "bench-%s-%d" % (handler, i)
                t0 = time.monotonic()
                pod = run_pod(s, name, handler)
                cid = create(s, pod, name, "c", image, cargs)
                s.StartContainer(api.StartContainerRequest(container_id=cid))
                times.append((time.monotonic() - t0) * 1000)
                s.StopContainer(api.StopContainerRequest(container_id=cid, timeout=2))
                s.RemoveContainer(api.RemoveContainerRequest(container_id=cid))
                s.StopPodSandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod))
                s.RemovePodSandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod))
            out({"ms": times})
        else:
            sys.exit("cri.py: unknown command " + cmd)
    except grpc.RpcError as e:
        print(json.dumps({"error": "%s: %s" % (e.code().name, e.details())}))
        sys.exit(1)


if __name__ == "__main__":
    main()
