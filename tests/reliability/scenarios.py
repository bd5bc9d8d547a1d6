"""Every fault and bad input tried (issue #7): what is injected, what must happen, and the tests
that check it. `tests.reliability.run` runs these tests and writes docs/RELIABILITY.md from them."""

from __future__ import annotations

from dataclasses import dataclass

I = "tests/integration/"  # noqa: E741 - short prefixes keep the table readable
U = "tests/unit/"


@dataclass(frozen=True)
class Scenario:
    area: str
    scenario: str
    injection: str
    expected: str
    tests: tuple[str, ...]


SCENARIOS: list[Scenario] = [
    # -- model server -------------------------------------------------------------------------------
    Scenario(
        "model server",
        "429 with Retry-After, 429 without",
        "FakeOpenAIServer `error(429, retry_after=0.2|None)`, also on the Ollama fake",
        "retried (Retry-After honoured), task passes, attempts/retries counted, no hidden client retries",
        (I + "test_runner_faults.py::test_rate_limit_then_success", I + "test_runner_faults.py::test_ollama_rate_limit_then_success"),
    ),
    Scenario(
        "model server",
        "500 once / persistently",
        "`error(500)` once; `error(500, times=100)` on one task of two",
        "retried; persistent: row error_type=server_error, attempts=retries+1, the other task passes, run completes",
        (
            I + "test_runner_faults.py::test_server_error_then_success",
            I + "test_runner_faults.py::test_persistent_server_error_is_recorded_and_the_run_completes",
        ),
    ),
    Scenario(
        "model server",
        "connection refused at start",
        "--api-base to a closed loopback port (litellm, ollama, inference)",
        "exit 3, one clear line, no run folder, no traceback",
        (I + "test_runner_faults.py::test_unreachable_server_at_start_exits_3_before_any_task",),
    ),
    Scenario(
        "model server",
        "reply that never ends",
        "`Turn(hang=True)`: headers and half a body, then nothing",
        "error_type=timeout at --task-timeout (retries do not extend it), run completes",
        (
            I + "test_runner_faults.py::test_a_hanging_reply_times_out",
            I + "test_runner_faults.py::test_a_hanging_reply_stops_at_the_task_timeout_even_with_retries",
            I + "test_runner_faults.py::test_task_timeout_between_steps_stops_the_agent_cleanly",
        ),
    ),
    Scenario(
        "model server",
        "malformed JSON",
        "`Turn(malformed_json=True)` once / always",
        "retried once then passes; always: error_type=server_error, run completes",
        (I + "test_runner_faults.py::test_malformed_json_reply", I + "test_runner_faults.py::test_malformed_json_once_then_success"),
    ),
    Scenario(
        "model server",
        "malformed tool call",
        "`Turn(malformed_tool_call=True)` (arguments not JSON)",
        "error_type=max_steps when it persists; recovers when a good call follows",
        (
            I + "test_runner_faults.py::test_malformed_tool_call_arguments",
            I + "test_runner_faults.py::test_a_malformed_tool_call_then_a_good_one_recovers",
        ),
    ),
    Scenario(
        "model server",
        "1 % 500/429 under load",
        "seeded RNG over 2,000 executions at 32 workers (load scenario below)",
        "2,000 rows, unique uids, retries in rows = errors injected",
        ("load:runner",),
    ),
    # -- exporter -------------------------------------------------------------------------------------
    Scenario(
        "GPU exporter",
        "killed mid-run",
        "SIGKILL of the sidecar between tasks",
        "run completes; metadata.gpu_metrics.summary null + warning 'StopSampling failed'; metrics received before the kill kept",
        (I + "test_telemetry_faults.py::test_exporter_killed_mid_run",),
    ),
    Scenario(
        "GPU exporter",
        "restarted mid-run",
        "SIGKILL, then a new exporter on the same port before the next task",
        "run completes; warning NOT_FOUND (the new process does not know the run); new runs served",
        (I + "test_reliability_faults.py::test_exporter_restarted_mid_run",),
    ),
    Scenario(
        "GPU exporter",
        "slow to answer",
        "in-process gRPC server whose StartSampling waits 30 s (runner RPC timeout 5 s)",
        "run completes after ~5 s; warning DEADLINE_EXCEEDED; no StopSampling for a run that never started",
        (I + "test_reliability_faults.py::test_exporter_slow_to_answer",),
    ),
    Scenario(
        "GPU exporter",
        "SIGTERM during a run",
        "SIGTERM of the sidecar between tasks",
        "exporter exits 0; run completes with warning UNAVAILABLE",
        (
            I + "test_reliability_faults.py::test_exporter_sigterm_mid_run",
            I + "test_exporter_cli.py::test_cli_serves_a_run_then_shuts_down_cleanly_on_sigterm",
        ),
    ),
    Scenario(
        "GPU exporter",
        "unreachable",
        "--gpu-exporter to a closed port (flag and env)",
        "warning, run completes",
        (
            I + "test_runner_gpu_metrics.py::test_unreachable_exporter_is_a_warning_and_the_run_completes",
            I + "test_runner_gpu_metrics.py::test_unreachable_exporter_from_the_environment",
        ),
    ),
    Scenario(
        "GPU exporter",
        "lease expiry after the runner dies",
        "the runner's GpuSession (lease 3 s; the CLI uses 60 s) in a child, SIGKILLed",
        "exporter stops the run itself, stop_reason=lease_expired, within lease + 1.5 s; summary kept",
        (
            I + "test_reliability_faults.py::test_lease_expires_after_the_runner_dies",
            I + "test_exporter_runs.py::test_lease_expiry_stops_the_run",
        ),
    ),
    Scenario(
        "GPU exporter",
        "OTLP collector unreachable / down",
        "refused and black-hole endpoints; outage then recovery",
        "API not slowed; samples kept until it recovers; drops counted",
        (
            I + "test_exporter_otlp.py::test_unreachable_endpoint_does_not_slow_the_api",
            I + "test_exporter_otlp.py::test_collector_outage_keeps_samples_until_it_recovers",
            I + "test_exporter_otlp.py::test_queue_overflow_is_counted_on_metrics",
        ),
    ),
    # -- collector --------------------------------------------------------------------------------------
    Scenario(
        "collector",
        "receiver down mid-run, then back",
        "embedded receiver stopped during task 2, restarted on the same port for task 3",
        "run completes; rows_without_trace lists task 2; traces of 1 and 3 kept",
        (I + "test_telemetry_faults.py::test_collector_receiver_down_mid_run_then_back",),
    ),
    Scenario(
        "collector",
        "garbage on the OTLP port",
        "non-protobuf bytes",
        "INVALID_ARGUMENT, keeps serving",
        (U + "test_collector_receiver.py::test_garbage_is_invalid_argument_and_the_receiver_keeps_serving",),
    ),
    Scenario(
        "collector",
        "fuzzed OTLP payloads",
        "hypothesis: random bytes; valid but odd trace/metric protos (odd id lengths, 2^64 times, NaN/inf, nested arrays, odd run ids)",
        "OK or INVALID_ARGUMENT, documents still build, receiver still serves",
        (
            I + "test_reliability_fuzz.py::test_random_bytes_to_the_collector",
            I + "test_reliability_fuzz.py::test_odd_but_valid_trace_requests",
            I + "test_reliability_fuzz.py::test_odd_but_valid_metric_requests",
            I + "test_reliability_fuzz.py::test_the_collector_still_serves_after_the_fuzzing",
        ),
    ),
    # -- Hub ----------------------------------------------------------------------------------------------
    Scenario(
        "Hub",
        "first commit refused",
        "FakeHub `fail_next_commit(403)`",
        "exit 4, local files whole, `publish RUN_DIR` later, twice, no duplicate rows",
        (I + "test_hub_publish.py::test_failed_publish_keeps_local_files_and_publish_later_is_idempotent",),
    ),
    Scenario(
        "Hub",
        "failing mid-publish",
        "results and metrics commits succeed, traces commit answered 403 (not retryable)",
        "exit 4, files whole, no publish.json, metadata has no `published`; `publish` twice then completes, no duplicate rows, one leaderboard row",
        (I + "test_reliability_faults.py::test_hub_fails_mid_publish_then_publish_succeeds",),
    ),
    Scenario(
        "Hub",
        "429/503 on commit and create_repo",
        "FakeHub `inject_failure`",
        "retried with backoff, publish succeeds",
        (I + "test_hub_publish.py::test_hub_errors_are_retried", U + "test_hub_publish.py::test_retry_honours_retry_after_then_succeeds"),
    ),
    # -- runner process ---------------------------------------------------------------------------------
    Scenario(
        "runner",
        "SIGKILL after k checkpoint lines, then --resume",
        "k in {1, 2, 5, 7, 10} of 16 tasks, 1-2 workers (seeded); --enable-otel at k=2 and k=7",
        "every task exactly once in results, checkpoint and total_tests; only unfinished tasks re-run; with OTel the killed segment's traces are missing and metadata.telemetry says which rows",
        (
            I + "test_reliability_faults.py::test_sigkill_at_a_point_then_resume",
            I + "test_runner_resume.py::test_resume_after_kill",
            I + "test_runner_resume.py::test_torn_checkpoint_line_is_ignored",
        ),
    ),
    Scenario(
        "runner",
        "Ctrl-C",
        "SIGINT mid-run",
        "exit 130, finished work saved, --resume completes",
        (I + "test_runner_resume.py::test_ctrl_c_keeps_finished_work_and_resume_completes",),
    ),
    # -- fail fast, end clean, honest exits (issue 12) ------------------------------------------------
    Scenario(
        "fail fast",
        "wrong API key (401/403)",
        "FakeOpenAIServer answering 401 (403) to every call, litellm and inference providers",
        "exit 3 before the run folder exists and before any task, one line naming OPENAI_API_KEY / HF_TOKEN; 401 not retried",
        (
            I + "test_failfast_preflight.py::test_a_401_server_exits_3_before_any_task_naming_the_variable",
            I + "test_failfast_preflight.py::test_a_403_server_exits_3",
            I + "test_failfast_preflight.py::test_inference_endpoint_refusing_the_token_exits_3",
        ),
    ),
    Scenario(
        "fail fast",
        "unreachable API / unknown model / unknown provider",
        "--api-base to a closed port; OPENAI_BASE_URL to a closed port with --model gpt-4o; a 404 server; --model bogusprovider/x",
        "dead port and no network: exit 3 after the run's retries; 404: exit 3 'does not know the model'; unknown provider: exit 2 with litellm's provider list in one line; no run folder",
        (
            I + "test_failfast_preflight.py::test_a_dead_port_exits_3_after_the_retries",
            I + "test_failfast_preflight.py::test_no_network_for_a_hosted_model_exits_3",
            I + "test_failfast_preflight.py::test_an_unknown_model_exits_3",
            I + "test_failfast_preflight.py::test_an_unknown_provider_exits_2_with_litellms_list_in_one_line",
            I + "test_failfast_preflight.py::test_a_missing_key_exits_3_naming_it",
            I + "test_runner_faults.py::test_unreachable_server_at_start_exits_3_before_any_task",
        ),
    ),
    Scenario(
        "fail fast",
        "HF_HUB_OFFLINE=1 with --provider inference; transient preflight errors; --skip-preflight",
        "runner_env (offline); a 503 then a reply to the 1-token probe; --skip-preflight",
        "offline: exit 3 in preflight; 503 retried under the run's policy, run goes on; --skip-preflight sends no probe",
        (
            I + "test_failfast_preflight.py::test_inference_with_hf_hub_offline_fails_in_preflight",
            I + "test_failfast_preflight.py::test_transient_preflight_errors_are_retried",
            I + "test_failfast_preflight.py::test_skip_preflight_sends_no_probe",
        ),
    ),
    Scenario(
        "fail fast",
        "credentials refused mid-run",
        "a server that answers the probe, then 401 to every agent call (12 tasks)",
        "dispatch stops after the first 3 auth errors; exit 3; status failed with stop_reason; files and report written; nothing published",
        (I + "test_failfast_preflight.py::test_a_burst_of_auth_errors_mid_run_stops_dispatch_exit_3_and_never_publishes",),
    ),
    Scenario(
        "fail fast",
        "litellm banners",
        "every agent call answered 400, not --quiet, real process",
        "no 'Give Feedback / Get Help' or 'Provider List' on stdout/stderr",
        (I + "test_failfast_preflight.py::test_litellm_banners_never_reach_the_console",),
    ),
    Scenario(
        "runner",
        "SIGTERM / SIGHUP mid-run, then --resume",
        "signal to the CLI process (2 workers, --enable-otel, embedded simulated GPU exporter) after 2 checkpoint lines",
        "exit 143 / 129, 'no new tasks' then the resume command; in-flight tasks finish; results, traces (one per row), GPU summary, report written; status interrupted; --resume completes every task once",
        (I + "test_failfast_signals.py::test_a_signal_mid_run_writes_everything_then_resume_completes",),
    ),
    Scenario(
        "runner",
        "second signal during shutdown; signal during start-up",
        "SIGINT, 1 s later SIGINT again, while a task that would take 40 steps runs (--shutdown-grace 120); SIGTERM while the preflight request hangs",
        "second signal: stops within seconds, exit 130, the finished tasks written, the cut task not kept; start-up: exit 143, no run folder",
        (
            I + "test_failfast_signals.py::test_a_second_signal_cuts_the_grace_short_and_still_writes_what_is_done",
            I + "test_failfast_signals.py::test_sigterm_before_the_run_folder_exists_exits_143_leaving_nothing",
        ),
    ),
    Scenario(
        "runner",
        "--resume with other flags; a planted run folder",
        "--resume with --model/--limit/--agent-type/--shard; with a new --api-base after the old server is gone; a metadata.json planted with api_base/otlp_forward/exporter to a connection recorder, imports '*', tools at '/', extra_headers, a token file, public; invalid stored values",
        "identity flags: exit 2 naming them, nothing touched; how-it-runs flags taken and recorded per segment; planted: exit 2 naming what to give again, 0 connections to the planted host, 0 requests; resumed with the command line's settings only; invalid stored config exit 2",
        (I + "test_failfast_resume.py",),
    ),
    Scenario(
        "Hub",
        "publish with the Hub unreachable / 401 / 403 / 404 / 409 / 5xx",
        "HF_ENDPOINT at a closed port (subprocess); FakeHub `inject_failure` on whoami/create_repo/commit",
        "one line each, no traceback, exit 4 (2 for a refused token), the run folder byte-identical",
        (
            I + "test_failfast_publish_merge.py::test_publish_with_the_hub_refusing_connections_is_one_line_exit_4",
            I + "test_failfast_publish_merge.py::test_publish_hub_errors_are_one_line",
        ),
    ),
    Scenario(
        "bad input",
        "unwritable --output-dir; a filter selecting no task; merge with a missing or unfinished shard",
        "--output-dir a file / a read-only folder; --difficulty hard on easy tasks; merge without shard 1 of 3, with an interrupted shard",
        "exit 2 at once, no folder; 'no task matches --difficulty hard'; merge writes nothing (exit 2) unless --allow-partial (status partial in metadata and leaderboard row, report notice)",
        (
            I + "test_failfast_preflight.py::test_output_dir_not_writable_exits_2_at_once",
            I + "test_failfast_preflight.py::test_no_task_matching_the_filter_exits_2",
            I + "test_failfast_publish_merge.py::test_merge_with_a_shard_that_did_not_complete_writes_nothing_unless_allowed",
            I + "test_failfast_publish_merge.py::test_merge_cli_with_a_missing_shard_exits_2_and_writes_nothing",
        ),
    ),
    Scenario(
        "runner",
        "console summary vs report",
        "one passing, one looping past --max-steps 3, one wrong answer; simulated GPU exporter",
        "'failed: 2 (max_steps 1, wrong_answer 1)', GPU energy and CO2 as in metadata, steps <= --max-steps",
        (I + "test_failfast_summary.py",),
    ),
    # -- bad input ---------------------------------------------------------------------------------------
    Scenario(
        "bad input",
        "malformed task files",
        "wrong types, missing fields, duplicate ids, >100k-char prompt, bad JSON lines, invalid UTF-8, empty set",
        "exit 2 before any task, every bad row listed with its field",
        (
            I + "test_runner_inputs.py::test_bad_dataset_lists_every_bad_row_and_runs_nothing",
            I + "test_runner_inputs.py::test_unreadable_datasets",
            U + "test_runner_tasks.py::test_each_bad_field_is_reported_with_row_and_field",
            U + "test_runner_tasks.py::test_duplicate_ids_point_at_the_first_occurrence",
            U + "test_runner_tasks.py::test_invalid_utf8_is_one_clear_error",
            U + "test_runner_tasks.py::test_prompt_limit_is_100k_characters",
        ),
    ),
    Scenario(
        "bad input",
        "100 MB prompt, binary junk, deep nesting",
        "generated at test time in tmp",
        "exit 2, one clear error, bounded time and memory, nothing run",
        (I + "test_reliability_inputs.py::test_huge_and_hostile_task_files",),
    ),
    Scenario(
        "bad input",
        "bad flags",
        "unknown provider, 0 workers, bad KEY=VALUE, unknown tool, missing --model, bad HOST:PORT, missing --working-directory, bad --shard/--run-id",
        "exit 2, one line, no run folder",
        (
            I + "test_runner_inputs.py::test_bad_flags_exit_2_with_one_line",
            U + "test_runner_config.py::test_bad_flags_are_config_errors",
            I + "test_reliability_inputs.py::test_more_bad_flags",
        ),
    ),
    Scenario(
        "bad input",
        "hostile --prompt-yml",
        "!!python/object tags, unknown keys, wrong types, '*' imports",
        "exit 2, one line, no object constructed",
        (I + "test_runner_inputs.py::test_bad_prompt_yml",),
    ),
    Scenario(
        "bad input",
        "path traversal through the file tools",
        "../, absolute paths, symlinks out; via a scripted model call",
        "refused with 'outside the working directory'; nothing outside read",
        (
            U + "test_runner_tools.py::test_resolve_inside_refuses_escapes",
            U + "test_runner_tools.py::test_resolve_inside_refuses_symlinks_out",
            U + "test_runner_tools.py::test_file_tools_refuse_traversal_and_absolute_paths",
            I + "test_runner_outputs.py::test_optional_file_tools_stay_in_the_working_directory",
        ),
    ),
    Scenario(
        "bad input",
        "fuzzed gRPC requests to the exporter",
        "hypothesis: random StartSampling fields (NaN/inf, 2^32 values, odd text); random bytes as the body of every RPC via a generic channel call",
        "INVALID_ARGUMENT/NOT_FOUND/ALREADY_EXISTS (or grpcio's INTERNAL 'Exception deserializing request!'), accepted runs summarise; still serving",
        (
            I + "test_reliability_fuzz.py::test_fuzzed_start_sampling_fields",
            I + "test_reliability_fuzz.py::test_random_bytes_as_request_body",
            I + "test_reliability_fuzz.py::test_the_exporter_still_serves_after_the_fuzzing",
            I + "test_exporter_grpc.py::test_bad_start_is_invalid_argument",
            I + "test_exporter_grpc.py::test_oversized_request_is_rejected_and_service_survives",
            I + "test_exporter_grpc.py::test_garbage_bytes_on_the_grpc_port_do_not_take_it_down",
        ),
    ),
    # -- security ------------------------------------------------------------------------------------------
    Scenario(
        "security",
        "loopback by default",
        "defaults of both CLIs and of a run's embedded collector + local exporter; bound sockets read with psutil",
        "every listening socket is 127.0.0.1 (or ::ffff:127.0.0.1)",
        (
            I + "test_reliability_security.py::test_exporter_and_collector_defaults_are_loopback",
            I + "test_reliability_security.py::test_exporter_cli_with_default_addresses_binds_loopback_only",
            I + "test_reliability_security.py::test_collector_cli_with_default_addresses_binds_loopback_only",
            I + "test_reliability_security.py::test_a_runs_embedded_collector_and_local_exporter_bind_loopback",
        ),
    ),
    Scenario(
        "security",
        "auth token and TLS",
        "no/wrong token; TLS with and without client trust; half a TLS config",
        "UNAUTHENTICATED; plaintext fails against TLS; config errors exit 2",
        (
            I + "test_exporter_security.py::test_calls_without_the_token_are_unauthenticated",
            I + "test_exporter_security.py::test_calls_with_the_token_work",
            I + "test_exporter_security.py::test_tls_secure_channel_works_and_plaintext_fails",
            I + "test_exporter_security.py::test_tls_with_auth",
            I + "test_exporter_security.py::test_half_a_tls_configuration_is_a_config_error",
        ),
    ),
    Scenario(
        "security",
        "secrets never leave the process",
        "canaries as HF token file, api_key model arg, OPENAI_API_KEY (in the prompt too); --debug subprocess run",
        "absent from every file (report.html included), stdout/stderr, --debug logs and raw OTLP payloads",
        (
            I + "test_telemetry_secrets.py::test_canaries_never_leave_the_process",
            I + "test_reliability_faults.py::test_credentials_absent_from_debug_logs_and_report",
            I + "test_runner_outputs.py::test_no_secret_in_any_output",
        ),
    ),
    Scenario(
        "security",
        "CodeAgent code escapes",
        "scripted model code: open('/etc/passwd'), open(secret outside), os.system, subprocess, __import__('os'), pathlib, builtins.open, globals()['__builtins__']",
        "InterpreterError inside the agent, shown to the model; task failed (max_steps); no file read, no process spawned",
        (
            I + "test_reliability_security.py::test_code_agent_code_cannot_read_files_import_or_spawn",
            I + "test_reliability_security.py::test_code_agent_errors_name_the_refusal",
        ),
    ),
    # -- load -------------------------------------------------------------------------------------------------
    Scenario(
        "load",
        "exporter: 16 concurrent runs, 8 GPUs, 50 ms",
        "real exporter process, churning runs, heartbeats, WatchRun",
        "no RSS/thread growth; summaries consistent",
        ("load:exporter",),
    ),
    # -- security: trust boundaries (issue 13) ------------------------------------------------------------
    Scenario(
        "security",
        "file tools without a root of their own",
        "--enable-tools read_file with no --working-directory, cwd = the output folder holding a planted .env; a root containing the output folder, home or ~/.ssh, ~/.aws, ~/.config, ~/.cache/huggingface, the token file",
        "exit 2, one line, no model request, no run folder",
        (
            I + "test_security_runner.py::test_file_tools_without_a_root_exit_2_and_read_nothing",
            I + "test_security_runner.py::test_file_tools_with_the_output_folder_inside_the_root_exit_2",
            U + "test_tool_root.py",
        ),
    ),
    Scenario(
        "security",
        "secrets under names the redactor did not know",
        "canaries in --model-args extra_headers={Authorization}, vertex_credentials={private_key}, --api-base http://user:pass@..., and DB_PASSWORD=... in a .env the model reads with read_file; --enable-otel --debug",
        "absent from results.json, checkpoint.jsonl, traces.json, metadata.json (config, command), report.html, stdout and the --debug log",
        (
            I + "test_security_runner.py::test_canaries_in_headers_credentials_url_userinfo_and_a_read_file_reach_no_artefact",
            U + "test_redact.py",
        ),
    ),
    Scenario(
        "security",
        "collector: other runs, no token, the JSON API",
        "OTLP for another run.id; calls without / with a wrong bearer token; GET /runs and DELETE without the token",
        "foreign data dropped and counted; UNAUTHENTICATED; {} and 401; beyond loopback only with --collector-advertise (exit 2)",
        (
            I + "test_security_collector.py::test_data_for_another_run_is_dropped_and_counted",
            I + "test_security_collector.py::test_a_collector_with_a_token_refuses_calls_without_it",
            I + "test_security_collector.py::test_an_advertised_collector_takes_only_the_runs_token",
            I + "test_security_collector.py::test_the_json_api_lists_and_deletes_only_with_the_token",
            I + "test_security_collector.py::test_a_token_file_protects_the_otlp_port_too",
            I + "test_security_collector.py::test_a_collector_beyond_loopback_needs_an_advertised_address",
        ),
    ),
    Scenario(
        "security",
        "collector flood",
        "96 MB of spans into smoltrace-collector --max-memory-mb 4 --max-spill-mb 16; RSS of the process (psutil) and the spill folder measured",
        "spill disk <= 16 MB, RSS grows < 64 MiB, the excess dropped and counted, the run still reads back (streamed)",
        (I + "test_security_collector.py::test_a_flood_stays_within_the_spill_bound_and_reads_back_streaming",),
    ),
    Scenario(
        "security",
        "file modes, report CSP, containers",
        "a run under umask 077; the report's CSP against its inline script; compose ollama service, runner collector spill, runner image modes",
        "files 0600, run folder 0700; script-src is the script's sha256 (no 'unsafe-inline'); ollama hardened, spill on /cache, nothing world-writable",
        (
            I + "test_security_runner.py::test_output_files_respect_the_umask",
            U + "test_report_csp.py",
            I + "test_security_deploy.py",
        ),
    ),
]
