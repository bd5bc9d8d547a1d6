"""A GPU-exporter gRPC client for tests that keeps each run's secret, as the runner's GpuSession does.

`OwnerStub(channel)` behaves like `pb_grpc.GpuExporterStub`: StartSampling remembers the
`run_secret` it returns, and the run's later requests (Heartbeat, StopSampling, GetRun, WatchRun,
a repeated StartSampling, ListRuns) carry it unless the test set one itself. Tests of the secret
itself use a bare `pb_grpc.GpuExporterStub` or a second OwnerStub (another client).
"""

from __future__ import annotations

from typing import Any

import grpc

from smoltrace_proto import pb, pb_grpc


class OwnerStub:
    def __init__(self, channel: grpc.Channel) -> None:
        self.bare = pb_grpc.GpuExporterStub(channel)
        self.secrets: dict[str, str] = {}

    def _with_secret(self, request: Any) -> Any:
        if not request.run_secret and request.run_id in self.secrets:
            filled = type(request)()
            filled.CopyFrom(request)
            filled.run_secret = self.secrets[request.run_id]
            return filled
        return request

    def StartSampling(self, request: pb.StartSamplingRequest, *args: Any, **kwargs: Any) -> pb.StartSamplingResponse:  # noqa: N802
        reply = self.bare.StartSampling(self._with_secret(request), *args, **kwargs)
        if reply.run_secret:
            self.secrets[request.run_id] = reply.run_secret
        return reply

    def Heartbeat(self, request: pb.HeartbeatRequest, *args: Any, **kwargs: Any) -> pb.HeartbeatResponse:  # noqa: N802
        return self.bare.Heartbeat(self._with_secret(request), *args, **kwargs)

    def StopSampling(self, request: pb.StopSamplingRequest, *args: Any, **kwargs: Any) -> pb.RunSummary:  # noqa: N802
        return self.bare.StopSampling(self._with_secret(request), *args, **kwargs)

    def GetRun(self, request: pb.GetRunRequest, *args: Any, **kwargs: Any) -> pb.RunState:  # noqa: N802
        return self.bare.GetRun(self._with_secret(request), *args, **kwargs)

    def WatchRun(self, request: pb.WatchRunRequest, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        return self.bare.WatchRun(self._with_secret(request), *args, **kwargs)

    def ListRuns(self, request: pb.ListRunsRequest, *args: Any, **kwargs: Any) -> pb.ListRunsResponse:  # noqa: N802
        if not request.run_secrets:
            request = pb.ListRunsRequest(run_secrets=list(self.secrets.values()))
        return self.bare.ListRuns(request, *args, **kwargs)
