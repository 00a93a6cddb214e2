"""A port for the coordinator of a multi-process JAX system started by a test on localhost."""

import random
import socket

EPHEMERAL_RANGE = "/proc/sys/net/ipv4/ip_local_port_range"


def free_port() -> int:
  """A TCP port free on 127.0.0.1 now, below the kernel's ephemeral range where possible.

  `bind(("127.0.0.1", 0))` hands out a port from the ephemeral range, the range every outgoing
  connection takes its own port from; in the seconds between this call and the coordinator's
  bind, any connection (a peer retrying to reach the coordinator, gloo, a download) may take
  it, and then the coordinator cannot start and its peers wait out JAX's 300 s initialization
  timeout. No connection takes a port below that range unless asked to.
  """
  try:
    with open(EPHEMERAL_RANGE) as f:
      low = int(f.read().split()[0])
  except (OSError, ValueError, IndexError):
    low = 32768  # Linux's default
  rng = random.Random()
  for _ in range(100):
    port = rng.randrange(20000, low) if low > 21000 else 0
    with socket.socket() as s:
      try:
        s.bind(("127.0.0.1", port))
      except OSError:
        continue
      return s.getsockname()[1]
  raise RuntimeError("no free TCP port on 127.0.0.1 after 100 tries")
