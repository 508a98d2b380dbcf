"""LeRobot's async-inference policy server (`lerobot.async_inference.policy_server`, unchanged)
on a port the OS picks: prints `listening on HOST:PORT` once it serves, then serves until killed.

lerobot's own `serve()` binds the port its config names and never says which it got; this is
that function with port 0 (`python async_policy_server.py [HOST]`).
"""

import os
import sys
from concurrent import futures

import grpc
from lerobot.async_inference.configs import PolicyServerConfig
from lerobot.async_inference.policy_server import PolicyServer
from lerobot.transport import services_pb2_grpc

host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
services_pb2_grpc.add_AsyncInferenceServicer_to_server(PolicyServer(PolicyServerConfig(host=host)), server)
port = server.add_insecure_port(f"{host}:0")
server.start()
print(f"listening on {host}:{port}", flush=True)
# the rest of what it prints goes where its errors go: the reader of that line may be gone
os.dup2(2, 1)
server.wait_for_termination()
