"""Each role's seccomp allow-list, seen inside the real running process:
tests/tools/sysinject attaches with ptrace (as root, with CAP_SYS_PTRACE,
so PR_SET_DUMPABLE=0 does not stop it), makes the process's own thread
execute a forbidden syscall and an allowed one, and reads the result. The
filter is the process's own, so what the injected call gets is what a
compromised process would get."""
import os
import signal

from lp import Fixture, Pki, Server, sysinject

EPERM = 1
ENOSYS = 38
# x86_64 syscall numbers
GETPID, SOCKET, CONNECT, CLONE, EXECVE = 39, 41, 42, 56, 59
PTRACE, MOUNT, IO_URING_SETUP, CLONE3 = 101, 165, 425, 435
CLOSE = 3
SIGCHLD = 17    # clone(SIGCHLD, 0, ...): what fork() is


def confined(pid):
    with open("/proc/%d/status" % pid) as f:
        st = f.read()
    assert "\nSeccomp:\t2\n" in st, st
    assert "\nNoNewPrivs:\t1\n" in st, st


def refuses(pid, nr, *args, errno=EPERM):
    """pid's own syscall nr(args) fails with errno (EPERM); getpid() still
    answers pid."""
    confined(pid)
    rv, err = sysinject(pid, nr, *args)
    if nr == CLONE and rv > 0:
        os.kill(rv, signal.SIGKILL)     # the filter let a fork through
    assert (rv, err) == (-1, errno), (pid, nr, args, rv, err)
    assert sysinject(pid, GETPID) == (pid, 0)


def test_authority_roles():
    with Fixture() as fx:
        pki = fx.add(Pki("sandbox"))
        srv = fx.add(Server(pki, "authority", workers=1))
        key = srv.create_key()
        srv.start()
        kids = srv.children_by_comm()
        # Worker: no INET socket, no fork (clone without CLONE_THREAD),
        # no clone3.
        worker = kids["licproxy-worker"][0]
        refuses(worker, SOCKET, 2, 1, 0)
        refuses(worker, CLONE, SIGCHLD, 0, 0, 0, 0)
        refuses(worker, CLONE3, 0, 0)
        # Issuer: no network at all, not even a Unix datagram connect.
        issuer = kids["licproxy-issuer"][0]
        refuses(issuer, SOCKET, 10, 1, 0)
        refuses(issuer, CONNECT, 0, 0, 0)
        # Master: no ptrace (PTRACE_ATTACH to pid 1), no mount.
        refuses(srv.proc.pid, PTRACE, 16, 1, 0, 0)
        refuses(srv.proc.pid, MOUNT, 0, 0, 0, 0, 0)
        # Still serving after the probes, by the same (only) worker.
        assert srv.license(key).status == 200
        assert srv.children_by_comm()["licproxy-worker"] == [worker]
        assert srv.stop() == 0


def test_uplink_role():
    with Fixture() as fx:
        pki = fx.add(Pki("sandbox"))
        auth = fx.add(Server(pki, "authority", workers=1))
        key = auth.create_key()
        proxy_key = auth.create_key(name="proxy", role="proxy")
        auth.start()
        proxy = fx.add(Server(pki, "proxy", workers=1, extra={"license": {
            "server_url": [auth.url], "ca_file": pki.ca,
            "trusted_keys": [pki.pub]}},
            env={"LICPROXY_LICENSE_KEY": proxy_key}))
        proxy.start()
        uplink = proxy.children_by_comm()["licproxy-uplink"][0]
        # No exec, no io_uring, no fork (threads only: clone with
        # CLONE_THREAD; clone3, whose flags a filter cannot see, ENOSYS);
        # an INET socket is its job.
        refuses(uplink, EXECVE, "s:/bin/true", 0, 0)
        refuses(uplink, IO_URING_SETUP, 1, 0)
        refuses(uplink, CLONE, SIGCHLD, 0, 0, 0, 0)
        refuses(uplink, CLONE3, 0, 0, errno=ENOSYS)
        fd, err = sysinject(uplink, SOCKET, 2, 1, 0)
        assert fd >= 0 and err == 0, (fd, err)
        assert sysinject(uplink, CLOSE, fd) == (0, 0)
        assert proxy.license(key).status == 200
        assert proxy.stop() == 0
        assert auth.stop() == 0
