from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartSamplingRequest(_message.Message):
    __slots__ = ("run_id", "interval_ms", "gpu_uuids", "otlp_endpoint", "resource_attributes", "carbon_intensity_g_per_kwh", "pue", "lease_seconds", "power_cost_per_kwh", "otlp_headers", "run_secret")
    class ResourceAttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class OtlpHeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    GPU_UUIDS_FIELD_NUMBER: _ClassVar[int]
    OTLP_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    CARBON_INTENSITY_G_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    PUE_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    POWER_COST_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    OTLP_HEADERS_FIELD_NUMBER: _ClassVar[int]
    RUN_SECRET_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    interval_ms: int
    gpu_uuids: _containers.RepeatedScalarFieldContainer[str]
    otlp_endpoint: str
    resource_attributes: _containers.ScalarMap[str, str]
    carbon_intensity_g_per_kwh: float
    pue: float
    lease_seconds: int
    power_cost_per_kwh: float
    otlp_headers: _containers.ScalarMap[str, str]
    run_secret: str
    def __init__(self, run_id: _Optional[str] = ..., interval_ms: _Optional[int] = ..., gpu_uuids: _Optional[_Iterable[str]] = ..., otlp_endpoint: _Optional[str] = ..., resource_attributes: _Optional[_Mapping[str, str]] = ..., carbon_intensity_g_per_kwh: _Optional[float] = ..., pue: _Optional[float] = ..., lease_seconds: _Optional[int] = ..., power_cost_per_kwh: _Optional[float] = ..., otlp_headers: _Optional[_Mapping[str, str]] = ..., run_secret: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("index", "uuid", "name", "memory_total_bytes", "unsupported_fields", "failed", "error", "is_mig", "parent_uuid", "mig_index")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNSUPPORTED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    IS_MIG_FIELD_NUMBER: _ClassVar[int]
    PARENT_UUID_FIELD_NUMBER: _ClassVar[int]
    MIG_INDEX_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    unsupported_fields: _containers.RepeatedScalarFieldContainer[str]
    failed: bool
    error: str
    is_mig: bool
    parent_uuid: str
    mig_index: int
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., name: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., unsupported_fields: _Optional[_Iterable[str]] = ..., failed: _Optional[bool] = ..., error: _Optional[str] = ..., is_mig: _Optional[bool] = ..., parent_uuid: _Optional[str] = ..., mig_index: _Optional[int] = ...) -> None: ...

class StartSamplingResponse(_message.Message):
    __slots__ = ("gpu_available", "devices", "energy_method", "lease_expires_unix_ms", "message", "already_running", "interval_ms", "carbon_intensity_g_per_kwh", "pue", "power_cost_per_kwh", "simulated", "run_secret")
    GPU_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    ENERGY_METHOD_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ALREADY_RUNNING_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    CARBON_INTENSITY_G_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    PUE_FIELD_NUMBER: _ClassVar[int]
    POWER_COST_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    RUN_SECRET_FIELD_NUMBER: _ClassVar[int]
    gpu_available: bool
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    energy_method: str
    lease_expires_unix_ms: int
    message: str
    already_running: bool
    interval_ms: int
    carbon_intensity_g_per_kwh: float
    pue: float
    power_cost_per_kwh: float
    simulated: bool
    run_secret: str
    def __init__(self, gpu_available: _Optional[bool] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., energy_method: _Optional[str] = ..., lease_expires_unix_ms: _Optional[int] = ..., message: _Optional[str] = ..., already_running: _Optional[bool] = ..., interval_ms: _Optional[int] = ..., carbon_intensity_g_per_kwh: _Optional[float] = ..., pue: _Optional[float] = ..., power_cost_per_kwh: _Optional[float] = ..., simulated: _Optional[bool] = ..., run_secret: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("run_id", "run_secret")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_SECRET_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    run_secret: str
    def __init__(self, run_id: _Optional[str] = ..., run_secret: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("lease_expires_unix_ms",)
    LEASE_EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    lease_expires_unix_ms: int
    def __init__(self, lease_expires_unix_ms: _Optional[int] = ...) -> None: ...

class StopSamplingRequest(_message.Message):
    __slots__ = ("run_id", "run_secret")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_SECRET_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    run_secret: str
    def __init__(self, run_id: _Optional[str] = ..., run_secret: _Optional[str] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("avg", "min", "max", "count")
    AVG_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    avg: float
    min: float
    max: float
    count: int
    def __init__(self, avg: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class DeviceSummary(_message.Message):
    __slots__ = ("index", "uuid", "name", "memory_total_bytes", "energy_joules", "co2_grams", "power_cost_usd", "duration_seconds", "sample_count", "utilization_percent", "memory_used_bytes", "temperature_celsius", "power_watts", "energy_method", "counter_reset", "failed", "error", "exclusive_seconds", "shared_seconds", "split_method", "is_mig", "parent_uuid")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    ENERGY_JOULES_FIELD_NUMBER: _ClassVar[int]
    CO2_GRAMS_FIELD_NUMBER: _ClassVar[int]
    POWER_COST_USD_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_METHOD_FIELD_NUMBER: _ClassVar[int]
    COUNTER_RESET_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXCLUSIVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SHARED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_METHOD_FIELD_NUMBER: _ClassVar[int]
    IS_MIG_FIELD_NUMBER: _ClassVar[int]
    PARENT_UUID_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    name: str
    memory_total_bytes: int
    energy_joules: float
    co2_grams: float
    power_cost_usd: float
    duration_seconds: float
    sample_count: int
    utilization_percent: Stats
    memory_used_bytes: Stats
    temperature_celsius: Stats
    power_watts: Stats
    energy_method: str
    counter_reset: bool
    failed: bool
    error: str
    exclusive_seconds: float
    shared_seconds: float
    split_method: str
    is_mig: bool
    parent_uuid: str
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., name: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., energy_joules: _Optional[float] = ..., co2_grams: _Optional[float] = ..., power_cost_usd: _Optional[float] = ..., duration_seconds: _Optional[float] = ..., sample_count: _Optional[int] = ..., utilization_percent: _Optional[_Union[Stats, _Mapping]] = ..., memory_used_bytes: _Optional[_Union[Stats, _Mapping]] = ..., temperature_celsius: _Optional[_Union[Stats, _Mapping]] = ..., power_watts: _Optional[_Union[Stats, _Mapping]] = ..., energy_method: _Optional[str] = ..., counter_reset: _Optional[bool] = ..., failed: _Optional[bool] = ..., error: _Optional[str] = ..., exclusive_seconds: _Optional[float] = ..., shared_seconds: _Optional[float] = ..., split_method: _Optional[str] = ..., is_mig: _Optional[bool] = ..., parent_uuid: _Optional[str] = ...) -> None: ...

class RunSummary(_message.Message):
    __slots__ = ("run_id", "gpu_available", "start_unix_ms", "end_unix_ms", "duration_seconds", "sample_count", "energy_joules", "co2_grams", "power_cost_usd", "utilization_percent", "memory_used_bytes", "temperature_celsius", "power_watts", "energy_method", "carbon_intensity_g_per_kwh", "pue", "power_cost_per_kwh", "devices", "stop_reason", "simulated", "message", "otlp_dropped_samples", "otlp_exported_samples")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    GPU_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    END_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    ENERGY_JOULES_FIELD_NUMBER: _ClassVar[int]
    CO2_GRAMS_FIELD_NUMBER: _ClassVar[int]
    POWER_COST_USD_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_METHOD_FIELD_NUMBER: _ClassVar[int]
    CARBON_INTENSITY_G_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    PUE_FIELD_NUMBER: _ClassVar[int]
    POWER_COST_PER_KWH_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    SIMULATED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OTLP_DROPPED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    OTLP_EXPORTED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    gpu_available: bool
    start_unix_ms: int
    end_unix_ms: int
    duration_seconds: float
    sample_count: int
    energy_joules: float
    co2_grams: float
    power_cost_usd: float
    utilization_percent: Stats
    memory_used_bytes: Stats
    temperature_celsius: Stats
    power_watts: Stats
    energy_method: str
    carbon_intensity_g_per_kwh: float
    pue: float
    power_cost_per_kwh: float
    devices: _containers.RepeatedCompositeFieldContainer[DeviceSummary]
    stop_reason: str
    simulated: bool
    message: str
    otlp_dropped_samples: int
    otlp_exported_samples: int
    def __init__(self, run_id: _Optional[str] = ..., gpu_available: _Optional[bool] = ..., start_unix_ms: _Optional[int] = ..., end_unix_ms: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., sample_count: _Optional[int] = ..., energy_joules: _Optional[float] = ..., co2_grams: _Optional[float] = ..., power_cost_usd: _Optional[float] = ..., utilization_percent: _Optional[_Union[Stats, _Mapping]] = ..., memory_used_bytes: _Optional[_Union[Stats, _Mapping]] = ..., temperature_celsius: _Optional[_Union[Stats, _Mapping]] = ..., power_watts: _Optional[_Union[Stats, _Mapping]] = ..., energy_method: _Optional[str] = ..., carbon_intensity_g_per_kwh: _Optional[float] = ..., pue: _Optional[float] = ..., power_cost_per_kwh: _Optional[float] = ..., devices: _Optional[_Iterable[_Union[DeviceSummary, _Mapping]]] = ..., stop_reason: _Optional[str] = ..., simulated: _Optional[bool] = ..., message: _Optional[str] = ..., otlp_dropped_samples: _Optional[int] = ..., otlp_exported_samples: _Optional[int] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id", "run_secret")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_SECRET_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    run_secret: str
    def __init__(self, run_id: _Optional[str] = ..., run_secret: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("run_secrets",)
    RUN_SECRETS_FIELD_NUMBER: _ClassVar[int]
    run_secrets: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_secrets: _Optional[_Iterable[str]] = ...) -> None: ...

class RunState(_message.Message):
    __slots__ = ("run_id", "phase", "start_unix_ms", "lease_expires_unix_ms", "interval_ms", "sample_count", "devices", "resource_attributes", "otlp_endpoint", "summary", "energy_joules")
    class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PHASE_UNSPECIFIED: _ClassVar[RunState.Phase]
        ACTIVE: _ClassVar[RunState.Phase]
        STOPPED: _ClassVar[RunState.Phase]
    PHASE_UNSPECIFIED: RunState.Phase
    ACTIVE: RunState.Phase
    STOPPED: RunState.Phase
    class ResourceAttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    START_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    OTLP_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ENERGY_JOULES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    phase: RunState.Phase
    start_unix_ms: int
    lease_expires_unix_ms: int
    interval_ms: int
    sample_count: int
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    resource_attributes: _containers.ScalarMap[str, str]
    otlp_endpoint: str
    summary: RunSummary
    energy_joules: float
    def __init__(self, run_id: _Optional[str] = ..., phase: _Optional[_Union[RunState.Phase, str]] = ..., start_unix_ms: _Optional[int] = ..., lease_expires_unix_ms: _Optional[int] = ..., interval_ms: _Optional[int] = ..., sample_count: _Optional[int] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., resource_attributes: _Optional[_Mapping[str, str]] = ..., otlp_endpoint: _Optional[str] = ..., summary: _Optional[_Union[RunSummary, _Mapping]] = ..., energy_joules: _Optional[float] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunState]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunState, _Mapping]]] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("run_id", "run_secret")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_SECRET_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    run_secret: str
    def __init__(self, run_id: _Optional[str] = ..., run_secret: _Optional[str] = ...) -> None: ...

class DeviceReading(_message.Message):
    __slots__ = ("index", "uuid", "utilization_percent", "memory_used_bytes", "temperature_celsius", "power_watts", "energy_joules", "failed")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_CELSIUS_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    ENERGY_JOULES_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    utilization_percent: float
    memory_used_bytes: int
    temperature_celsius: float
    power_watts: float
    energy_joules: float
    failed: bool
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., utilization_percent: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., temperature_celsius: _Optional[float] = ..., power_watts: _Optional[float] = ..., energy_joules: _Optional[float] = ..., failed: _Optional[bool] = ...) -> None: ...

class Sample(_message.Message):
    __slots__ = ("run_id", "timestamp_unix_nano", "devices")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    timestamp_unix_nano: int
    devices: _containers.RepeatedCompositeFieldContainer[DeviceReading]
    def __init__(self, run_id: _Optional[str] = ..., timestamp_unix_nano: _Optional[int] = ..., devices: _Optional[_Iterable[_Union[DeviceReading, _Mapping]]] = ...) -> None: ...
