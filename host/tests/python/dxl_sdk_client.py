"""ROBOTIS's official dynamixel-sdk as a client of `reachy sim servos`.

argv: port path, and optionally a JSON object of goal positions by ID (servos 1 to 4; default
{"1": 3072, "2": 1000, "3": 2048, "4": 3000}: a physics robot's joints need goals inside their
range and clear of the body). Prints one JSON object with what every call returned.
"""
import json
import sys

from dynamixel_sdk import (COMM_SUCCESS, GroupSyncRead, GroupSyncWrite, PacketHandler,
                           PortHandler)

GOALS = {1: 3072, 2: 1000, 3: 2048, 4: 3000}
if len(sys.argv) > 2:
    GOALS = {int(k): v for k, v in json.loads(sys.argv[2]).items()}

port = PortHandler(sys.argv[1])
assert port.openPort(), "openPort failed"
assert port.setBaudRate(1000000), "setBaudRate failed"
ph = PacketHandler(2.0)
out = {}

data, res = ph.broadcastPing(port)
out["broadcast_ping"] = {"result": res, "ids": sorted(data.keys()),
                         "models": sorted({v[0] for v in data.values()})}

model, res, err = ph.ping(port, 3)
out["ping"] = {"result": res, "error": err, "model": model}

fw, res, err = ph.read1ByteTxRx(port, 2, 6)
out["read_fw"] = {"result": res, "error": err, "value": fw}

res, err = ph.write1ByteTxRx(port, 1, 64, 1)  # torque on
out["write_torque"] = {"result": res, "error": err}
res, err = ph.write4ByteTxRx(port, 1, 116, GOALS[1])  # default +90 deg
out["write_goal"] = {"result": res, "error": err}
res, err = ph.write1ByteTxRx(port, 1, 11, 1)  # EEPROM while torque on: access error
out["write_eeprom_locked"] = {"result": res, "error": err}

# let the simulated servo move, then read back
import time
time.sleep(0.6)
pos, res, err = ph.read4ByteTxRx(port, 1, 132)
out["read_pos"] = {"result": res, "error": err, "value": pos}

sw = GroupSyncWrite(port, ph, 64, 1)
for i in (2, 3, 4):
    sw.addParam(i, [1])
out["sync_write_torque"] = sw.txPacket()
sw = GroupSyncWrite(port, ph, 116, 4)
goals = {i: GOALS[i] for i in (2, 3, 4)}
for i, g in goals.items():
    sw.addParam(i, list(g.to_bytes(4, "little")))
out["sync_write_goal"] = sw.txPacket()
time.sleep(0.8)

sr = GroupSyncRead(port, ph, 132, 4)
for i in (2, 3, 4):
    sr.addParam(i)
res = sr.txRxPacket()
vals = {}
for i in (2, 3, 4):
    if sr.isAvailable(i, 132, 4):
        vals[str(i)] = sr.getData(i, 132, 4)
out["sync_read"] = {"result": res, "values": vals}

goal, res, err = ph.read4ByteTxRx(port, 3, 116)
out["read_goal_3"] = {"result": res, "error": err, "value": goal}
port.closePort()
print(json.dumps(out))
