"""The local test pool: Docker containers that behave like on-prem machines.

Each machine runs systemd as PID 1 and sshd, has its own address on a network the pool
creates, and is reached over real SSH with a key generated per pool. Nothing about Ray is
baked in: installing Ray is the roles' job, fed from a wheelhouse the host downloads.
"""
