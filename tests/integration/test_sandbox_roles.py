"""Each role's seccomp allow-list, seen inside the real running process:
gdb attaches (as root, with CAP_SYS_PTRACE, so PR_SET_DUMPABLE=0 does not
stop it), makes the process itself call a forbidden syscall and an allowed
one, and reads errno. The filter is the process's own, so what gdb's call
gets is what a compromised process would get."""
import os
import shutil
import subprocess

from lp import Fixture, Pki, Server

EPERM = 1
# x86_64 numbers, called through syscall(2) so no prototype is needed.


def gdb_calls(pid, exprs):
    """The values of exprs, each evaluated by a call inside pid."""
    args = ["gdb", "-nx", "-batch", "-p", str(pid)]
    for e in exprs:
        args += ["-ex", "print (long)(%s)" % e,
                 "-ex", "print *(int *)__errno_location()"]
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    vals = [int(line.split("=", 1)[1]) for line in p.stdout.splitlines()
            if line.startswith("$")]
    assert len(vals) == 2 * len(exprs), p.stdout + p.stderr
    return [(vals[2 * i], vals[2 * i + 1]) for i in range(len(exprs))]


def confined(pid):
    with open("/proc/%d/status" % pid) as f:
        st = f.read()
    assert "\nSeccomp:\t2\n" in st, st
    assert "\nNoNewPrivs:\t1\n" in st, st


def refuses(pid, forbidden):
    """forbidden fails with EPERM; getpid() still answers pid."""
    confined(pid)
    (rv, err), (me, _) = gdb_calls(pid, [forbidden, "(int)getpid()"])
    assert (rv, err) == (-1, EPERM), (forbidden, rv, err)
    assert me == pid, me


def have_gdb():
    if shutil.which("gdb") is None:
        subprocess.run(["apt-get", "install", "-y", "-q", "gdb"],
                       capture_output=True)
    return shutil.which("gdb") is not None


def test_authority_roles():
    assert have_gdb()
    with Fixture() as fx:
        pki = fx.add(Pki("sandbox"))
        srv = fx.add(Server(pki, "authority", workers=1))
        key = srv.create_key()
        srv.start()
        kids = srv.children_by_comm()
        # Worker: no INET socket.
        refuses(kids["licproxy-worker"][0], "(int)socket(2, 1, 0)")
        # Issuer: no network at all, not even a Unix datagram connect.
        issuer = kids["licproxy-issuer"][0]
        refuses(issuer, "(int)socket(10, 1, 0)")
        refuses(issuer, "(long)syscall(42, 0, 0, 0)")  # connect
        # Master: no ptrace, no mount.
        refuses(srv.proc.pid, "(long)syscall(101, 16, 1, 0, 0)")  # ptrace
        refuses(srv.proc.pid, "(long)syscall(165, 0, 0, 0, 0, 0)")  # mount
        # Still serving after the probes.
        assert srv.license(key).status == 200
        assert srv.stop() == 0


def test_uplink_role():
    assert have_gdb()
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
        # No exec, no io_uring; an INET socket is its job.
        refuses(uplink, "(int)execve(\"/bin/true\", 0, 0)")
        refuses(uplink, "(long)syscall(425, 1, 0)")
        (fd, _), = gdb_calls(uplink, ["(int)socket(2, 1, 0)"])
        assert fd >= 0, fd
        assert proxy.license(key).status == 200
        assert proxy.stop() == 0
        assert auth.stop() == 0
