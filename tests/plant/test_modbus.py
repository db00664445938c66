"""The Modbus TCP server (docs/MODBUS.md), read by pymodbus's own client from a real `fdedge serve`:
one unit id per machine slot, input registers 0-7 = faults x 10 (int16), 8 = state, 9 = active
alarms, 10-11 = seconds since the last reading (uint32, high word first); read-only."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.constants import ExcCodes

from edge.fdrest import FAULTS, TIME_FORMAT
from tests.harness import free_port, reading

INT16, UINT32 = ModbusTcpClient.DATATYPE.INT16, ModbusTcpClient.DATATYPE.UINT32
NORMAL, WARNING, ALARM, STALE = 0, 1, 2, 3


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime(TIME_FORMAT)


def registers(port: int, unit: int, address: int = 0, count: int = 12) -> list[int]:
    with ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0) as client:
        answer = client.read_input_registers(address, count=count, device_id=unit)
    assert not answer.isError(), answer
    return answer.registers


def exception_code(port: int, call: str, *args, **kwargs) -> int:
    with ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0) as client:
        answer = getattr(client, call)(*args, **kwargs)
    assert answer.isError(), f"{call} was answered: {answer}"
    return answer.exception_code


def faults(regs: list[int]) -> list[int]:
    return [ModbusTcpClient.convert_from_registers([r], INT16) for r in regs[:8]]


def seconds_since(regs: list[int]) -> int:
    return ModbusTcpClient.convert_from_registers(regs[10:12], UINT32)


def tenths(answer: dict[str, float]) -> list[int]:
    return [max(-32768, min(32767, round(answer[f] * 10))) for f in FAULTS]


def serve(server_factory, model_dir, *args: str):
    port = free_port()
    server = server_factory(model_dir, args=["--modbus-port", str(port), *args]).start()
    return server, port


def test_listed_machines_are_the_units_in_their_order(server_factory, linear_model):
    server, port = serve(server_factory, linear_model[0], "--modbus-machines", "press, lathe,ghost")
    lathe = server.send(reading(1, machine="lathe", Time=ago(5)))  # lathe first: the list decides, not arrival
    press = server.send(reading(2, machine="press", Time=ago(5)))
    server.send(reading(3, machine="drill", Time=ago(5)))  # stored, but not listed: no unit

    unit1, unit2 = registers(port, 1), registers(port, 2)
    assert faults(unit1) == tenths(press) and faults(unit2) == tenths(lathe)
    assert unit1[9] == 0 and 5 <= seconds_since(unit1) < 120
    ghost = registers(port, 3)  # listed, never heard from: zeros, stale, "forever"
    assert faults(ghost) == [0] * 8 and ghost[8] == STALE and ghost[9] == 0
    assert seconds_since(ghost) == 0xFFFFFFFF
    assert exception_code(port, "read_input_registers", 0, count=12, device_id=4) == ExcCodes.GATEWAY_NO_RESPONSE
    assert exception_code(port, "read_input_registers", 10, count=3, device_id=1) == ExcCodes.ILLEGAL_ADDRESS
    # holding registers (function 3) mirror the input registers, for masters that only read those
    with ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0) as client:
        assert faults(client.read_holding_registers(0, count=12, device_id=1).registers) == tenths(press)


def test_every_write_is_refused_and_changes_nothing(server_factory, linear_model):
    server, port = serve(server_factory, linear_model[0])
    server.send(reading(1, machine="press", Time=ago(5)))
    before = registers(port, 1, 0, 10)
    for call, args in (("write_register", (0, 123)), ("write_registers", (0, [1, 2, 3])),
                       ("write_coil", (0, True)), ("write_coils", (0, [True, False]))):
        assert exception_code(port, call, *args, device_id=1) == ExcCodes.ILLEGAL_FUNCTION, call
    assert exception_code(port, "read_coils", 0, count=8, device_id=1) == ExcCodes.ILLEGAL_FUNCTION
    assert exception_code(port, "diag_force_listen_only", device_id=1,
                          no_response_expected=False) == ExcCodes.ILLEGAL_FUNCTION
    assert exception_code(port, "diag_clear_counters", device_id=1) == ExcCodes.ILLEGAL_FUNCTION
    assert registers(port, 1, 0, 10) == before  # and it still answers: listen-only was refused too
    assert server.running


def test_first_seen_order_survives_a_restart_and_grows(server_factory, linear_model):
    server, port = serve(server_factory, linear_model[0])
    answers = {name: server.send(reading(i, machine=name, Time=ago(60 - i)))
               for i, name in enumerate(("mill", "belt", "fan"))}
    assert [faults(registers(port, u)) for u in (1, 2, 3)] == [tenths(answers[n]) for n in ("mill", "belt", "fan")]
    assert exception_code(port, "read_input_registers", 0, count=12, device_id=4) == ExcCodes.GATEWAY_NO_RESPONSE
    server.stop()
    server.start()  # the latest values come back from the database
    assert [faults(registers(port, u)) for u in (1, 2, 3)] == [tenths(answers[n]) for n in ("mill", "belt", "fan")]
    newer = server.send(reading(9, machine="belt", Time=ago(1)))
    older = server.send(reading(8, machine="belt", Time=ago(3600)))  # late: not the latest
    assert older != newer and faults(registers(port, 2)) == tenths(newer)
    pump = server.send(reading(10, machine="pump", Time=ago(1)))
    assert faults(registers(port, 4)) == tenths(pump)


def test_negative_and_huge_faults_are_signed_and_clamped(server_factory, linear_model):
    server, port = serve(server_factory, linear_model[0])
    answer = server.send(reading(0, machine="m", Time=ago(1)))
    values = faults(registers(port, 1))
    assert values == tenths(answer)
    seed = next(s for s in range(200) if min(server.send(reading(s, machine="m", Time=ago(0))).values()) < 0)
    answer = server.send(reading(seed, machine="m", Time=ago(0)))
    assert min(faults(registers(port, 1))) < 0 and faults(registers(port, 1)) == tenths(answer)
    huge = server.send({**reading(0, machine="m", Time=ago(0)),
                        **{k: v * 1e6 for k, v in reading(0).items()}})
    assert any(abs(v) > 3276.7 for v in huge.values())
    regs = faults(registers(port, 1))
    assert regs == tenths(huge) and {32767, -32768} & set(regs)


def test_state_and_alarm_count_follow_the_thresholds_and_the_alarms(server_factory, linear_model):
    # thresholds placed between the faults of two known readings: one calm, one far above both
    probe, probe_port = serve(server_factory, linear_model[0])
    peaks = {s: max(probe.send(reading(s, machine="probe", Time=ago(0))).values()) for s in range(40)}
    probe.stop()
    calm, loud = min(peaks, key=peaks.get), max(peaks, key=peaks.get)
    warning = peaks[calm] + (peaks[loud] - peaks[calm]) * 0.4
    alarm = peaks[calm] + (peaks[loud] - peaks[calm]) * 0.6
    port = free_port()
    server = server_factory(linear_model[0], data_dir=probe.data_dir.parent / "thresholds",
                            args=["--modbus-port", str(port), "--warning-threshold", f"{warning:.4f}",
                                  "--alarm-threshold", f"{alarm:.4f}", "--modbus-machines", "calm,loud"]).start()
    server.send(reading(calm, machine="calm", Time=ago(3)))
    first = server.send(reading(loud, machine="loud", Time=ago(3)))
    assert registers(port, 1)[8:10] == [NORMAL, 0]
    assert registers(port, 2)[8:10] == [ALARM, 0]  # above the alarm threshold, no alarm raised yet
    for k in (2, 1):  # the default rule: 3 readings in a row
        server.send(reading(loud, machine="loud", Time=ago(k)))
    raised = sum(1 for v in first.values() if v >= warning)
    active = server.get("/api/alarms", state="active")
    assert raised >= 1 and registers(port, 2)[8:10] == [ALARM, raised], active
    assert registers(port, 1)[8:10] == [NORMAL, 0]


def test_seconds_since_ticks_and_stale_after(server_factory, linear_model):
    server, port = serve(server_factory, linear_model[0], "--stale-after", "50")
    server.send(reading(1, machine="old", Time=ago(100)))
    server.send(reading(2, machine="new", Time=ago(0)))
    first = seconds_since(registers(port, 1))
    assert 100 <= first < 200
    assert registers(port, 1)[8] == STALE and registers(port, 2)[8] != STALE
    time.sleep(1.2)
    assert seconds_since(registers(port, 1)) >= first + 1


def test_the_modbus_port_in_use_stops_start_up_with_one_clear_line(server_factory, linear_model):
    import socket
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, output = server_factory(linear_model[0], args=["--modbus-port", str(port)]).refused_start()
    assert code == 2 and f"Modbus port {port}" in output and "Traceback" not in output, output


@pytest.mark.parametrize("args, named", [
    (["--modbus-port", "70000"], "modbus-port"),
    (["--modbus-machines", ""], None),  # empty = unset: allowed
    (["--modbus-port", "5021", "--modbus-machines", "a,a"], "modbus-machines"),
    (["--stale-after", "-1"], "stale-after"),
])
def test_bad_modbus_settings_name_the_setting(capsys, args, named):
    from edge.settings import Settings
    if named is None:
        assert Settings.from_args(args, environ={}).modbus_machines is None
        return
    with pytest.raises(SystemExit):
        Settings.from_args(args, environ={})
    assert named in capsys.readouterr().err


def test_without_the_port_pymodbus_is_never_imported(server_factory, linear_model):
    import subprocess
    import sys
    code = ("import sys; from edge.settings import Settings; from edge.appliance import Appliance; "
            f"Appliance.build(Settings(data_dir=__import__('pathlib').Path({str(server_factory(linear_model[0]).data_dir)!r}),"
            f" model_dir=__import__('pathlib').Path({str(linear_model[0])!r}))); "
            "print('pymodbus' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr
