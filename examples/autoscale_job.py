"""A sample Ray job that needs more machines than are running: 8 one-CPU tasks of 20 s at once.

On the demo's head (2 CPUs) six of them wait: that pending demand is what the onprem.ray agent
reads to start spare workers; as they join, the waiting tasks run there. Run it on the head
(the demo does this for you):
    onprem-ray submit cluster.yml examples/autoscale_job.py
"""

import collections
import socket
import time

import ray

TASKS = 8
SECONDS = 20


@ray.remote(num_cpus=1)
def work(i: int) -> str:
    time.sleep(SECONDS)
    return socket.gethostname()


def alive_nodes() -> int:
    return sum(1 for node in ray.nodes() if node["Alive"])


def main() -> None:
    ray.init(address="auto", logging_level="ERROR")
    print(f"{alive_nodes()} node(s), {int(ray.cluster_resources().get('CPU', 0))} CPUs: "
          f"submitting {TASKS} one-CPU tasks of {SECONDS} s", flush=True)
    started = time.monotonic()
    pending = [work.remote(i) for i in range(TASKS)]
    hosts: collections.Counter[str] = collections.Counter()
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=5)
        hosts.update(ray.get(done))
        print(f"  {time.monotonic() - started:5.0f} s: {alive_nodes()} node(s) ALIVE, "
              f"{TASKS - len(pending)}/{TASKS} tasks done", flush=True)
    print(f"done in {time.monotonic() - started:.0f} s; tasks per machine:")
    for host, count in sorted(hosts.items()):
        print(f"  {host:24} {count}")


if __name__ == "__main__":
    main()
