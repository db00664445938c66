"""The read-only Modbus TCP server (docs/MODBUS.md): pymodbus's own server on the event loop, one
unit id per machine slot, values read from `Latest` at each request (no SQL).

Imported only with --modbus-port: pymodbus costs memory nobody else needs.

Read-only in two places: a gate on every request PDU (pymodbus's `trace_pdu` hook) answers
ILLEGAL FUNCTION to every function but 3 and 4 (writes, coils, diagnostics such as "force listen
only", file records) and GATEWAY TARGET FAILED TO RESPOND to a unit id that is no slot; and each
unit's register action refuses any write that got past it.
"""

from __future__ import annotations

import socket
import time
from functools import partial

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge.errors import StartupError
from edge.plant.latest import Latest, Seen
from edge.settings import MODBUS_UNITS

REGISTERS = 12  # per unit: 8 faults, state, alarm count, seconds since (2)
READS = (3, 4)  # read holding registers (a mirror, for masters that read only those), read input registers
U32_MAX = 0xFFFFFFFF


def registers(seen: Seen, state: int, now: float) -> list[int]:
    """One unit's 12 registers as 16-bit words (signed values in two's complement)."""
    n = seen.newest
    faults = [0] * 8 if n is None else [max(-32768, min(32767, round(v * 10))) & 0xFFFF for v in n.faults]
    since = seen.seconds_since(now)
    seconds = U32_MAX if since is None else min(int(since), U32_MAX)
    return [*faults, state, min(len(seen.alarms), 0xFFFF), seconds >> 16, seconds & 0xFFFF]


class _Refused(ModbusPDU):
    """Stands in for a request the gate refuses: its datastore step is the exception answer."""

    def __init__(self, request: ModbusPDU, code: ExcCodes) -> None:
        super().__init__(dev_id=request.dev_id, transaction_id=request.transaction_id)
        self.function_code = request.function_code
        self.code = code

    async def datastore_update(self, context: object, device_id: int) -> ModbusPDU:
        return ExceptionResponse(self.function_code, self.code)


class ModbusServer:
    """Unit u (1-based) is `machines[u - 1]` when a list is given, else the u-th machine first seen."""

    def __init__(self, latest: Latest, host: str, port: int, machines: tuple[str, ...] | None) -> None:
        self.latest, self.host, self.port, self.machines = latest, host, port, machines
        self.units = len(machines) if machines else min(latest.capacity, MODBUS_UNITS)
        self._server: ModbusTcpServer | None = None

    def machine(self, unit: int) -> str | None:
        if not 1 <= unit <= self.units:
            return None
        return self.machines[unit - 1] if self.machines else self.latest.nth(unit - 1)

    def read(self, unit: int, now: float | None = None) -> list[int] | None:
        """The unit's registers, or None for a slot without a machine."""
        name = self.machine(unit)
        if name is None:
            return None
        now = time.time() if now is None else now
        seen = self.latest.seen(name)
        return registers(seen, self.latest.state(seen, now), now)

    def check_port(self) -> None:
        """Before start-up goes on: a port in use is one clear line, not a log line later."""
        try:
            socket.create_server((self.host, self.port), reuse_port=False).close()
        except OSError as exc:
            raise StartupError(f"Modbus port {self.port} on {self.host}: cannot listen: {exc.strerror or exc} "
                               "(--modbus-port / FDEDGE_MODBUS_PORT)") from None

    async def start(self) -> None:
        devices = [SimDevice(unit, simdata=SimData(0, count=REGISTERS, values=0, datatype=DataType.REGISTERS),
                             action=partial(self._action, unit))
                   for unit in range(1, self.units + 1)]
        server = ModbusTcpServer(devices, address=(self.host, self.port), trace_pdu=self._gate)
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            self.check_port()  # names the reason
            raise StartupError(f"Modbus port {self.port} on {self.host}: cannot listen") from None
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()
            self._server = None

    def _gate(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            return pdu
        if pdu.function_code not in READS:
            return _Refused(pdu, ExcCodes.ILLEGAL_FUNCTION)
        if self.machine(pdu.dev_id) is None:
            return _Refused(pdu, ExcCodes.GATEWAY_NO_RESPONSE)
        return pdu

    async def _action(self, unit: int, function_code: int, start_address: int, address: int, count: int,
                      current: list[int], values: list[int] | list[bool] | None) -> ExcCodes | None:
        """pymodbus calls this before it answers from `current`, the unit's registers: fill them in."""
        if values is not None or function_code not in READS:
            return ExcCodes.ILLEGAL_FUNCTION
        regs = self.read(unit)
        if regs is None:
            return ExcCodes.GATEWAY_NO_RESPONSE
        current[:REGISTERS] = regs
        return None
