"""A sample Ray job: CPU tasks that need more than one machine, reporting where they ran.

Run it on the head, in Ray's environment (the demo does this for you):
    sudo -u ray RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=/etc/ray/auth_token \
        /opt/ray/venv/bin/python spread_job.py
"""

import collections
import socket
import time

import ray


@ray.remote(num_cpus=1)
def work(i: int) -> str:
    time.sleep(2)
    return socket.gethostname()


def main() -> None:
    ray.init(address="auto", logging_level="ERROR")
    cpus = int(ray.cluster_resources().get("CPU", 0))
    tasks = 2 * cpus
    print(f"{len(ray.nodes())} nodes, {cpus} CPUs: running {tasks} one-CPU tasks of 2 s")
    started = time.monotonic()
    hosts = collections.Counter(ray.get([work.remote(i) for i in range(tasks)]))
    print(f"done in {time.monotonic() - started:.1f}s; tasks per machine:")
    for host, count in sorted(hosts.items()):
        print(f"  {host:24} {count}")


if __name__ == "__main__":
    main()
