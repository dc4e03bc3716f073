"""The network tools of a simulated Spark: ``ssh``, ``scp``, ``ip``, ``ibdev2netdev`` and ``nc``.

They give the real ``launch-cluster.sh`` and ``autodiscover.sh`` what they look for on a DGX Spark:

- Every node has the Spark's interfaces: ``lo``, the four ConnectX-7 ports (``enp1s0f0np0``,
  ``enp1s0f1np1``, ``enP2p1s0f0np0``, ``enP2p1s0f1np1``), the 10 GbE ``enP7s7`` and the Wi-Fi ``wlP9s9``.
- ``SPARKSIM_CX7_LINKS`` (node setting, ``0`` to ``4``; default 2 on a multi-node cluster, 0 on a single
  node) is how many CX7 links are up, in the order a cable brings them up: port 1 through both PCIe paths
  (``enp1s0f1np1``, ``enP2p1s0f1np1``), then port 0. The cluster IP (``/24``) sits on ``enp1s0f1np1`` when
  1 to 3 links are up; with 0 links (no cable) it sits on ``enP7s7``; with 4 (a mesh) ``enP7s7`` carries it
  and the two ``enp`` ports get ``192.168.100.N/24`` and ``192.168.101.N/24``.
- ``ssh``/``scp`` reach a node by any of its addresses (or its name, as if it were in /etc/hosts) through
  that node's loopback sshd with the cluster's client key and pinned host keys, so the remote session
  gets that node's login environment and nothing of the caller's. An address with no node behind it
  fails as real ssh does (``No route to host``, exit 255).

Each program is a function ``<name>_main(node, argv)`` called by :mod:`sparksim._entry`.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from sparksim.common import Node, eprint

REAL_SSH = "/usr/bin/ssh"
REAL_SCP = "/usr/bin/scp"

# ibdev2netdev order: (RDMA device, net device)
CX7 = (
    ("rocep1s0f0", "enp1s0f0np0"),
    ("rocep1s0f1", "enp1s0f1np1"),
    ("roceP2p1s0f0", "enP2p1s0f0np0"),
    ("roceP2p1s0f1", "enP2p1s0f1np1"),
)
# The order in which links come up: one cable in port 1 shows on both PCIe paths.
LINK_UP_ORDER = ("enp1s0f1np1", "enP2p1s0f1np1", "enp1s0f0np0", "enP2p1s0f0np0")
IF_ORDER = ("lo", "enp1s0f0np0", "enp1s0f1np1", "enP2p1s0f0np0", "enP2p1s0f1np1", "enP7s7", "wlP9s9")
MESH_SUBNETS = {"enp1s0f0np0": "192.168.100", "enp1s0f1np1": "192.168.101"}


# ---------------------------------------------------------------------------------------------
# the network model
# ---------------------------------------------------------------------------------------------
def cx7_links(node: Node) -> int:
    value = node.setting("SPARKSIM_CX7_LINKS")
    if value is not None:
        try:
            return max(0, min(4, int(value)))
        except ValueError:
            pass
    return 2 if len(node.cluster.get("nodes", [])) > 1 else 0


def _node_index(node: Node) -> int:
    for i, entry in enumerate(node.cluster.get("nodes", [])):
        if entry.get("name") == node.name:
            return i
    return 0


def interfaces(node: Node) -> list[dict]:
    """The node's interfaces: name, index, carrier, mac, addresses [(ip, prefix)]."""
    links = cx7_links(node)
    up = set(LINK_UP_ORDER[:links])
    ip = node.ip
    last = ip.rsplit(".", 1)[-1]
    idx = _node_index(node) + 1
    out = []
    for i, name in enumerate(IF_ORDER, start=1):
        iface = {"index": i, "name": name, "addrs": [], "mtu": 1500}
        if name == "lo":
            iface.update(carrier=True, mac="00:00:00:00:00:00", addrs=[("127.0.0.1", 8)], mtu=65536)
        else:
            iface["mac"] = f"4c:bb:47:{idx:02x}:{i:02x}:{(idx * 7 + i) % 256:02x}"
            iface["carrier"] = name in up or name == "enP7s7"
        out.append(iface)
    by_name = {iface["name"]: iface for iface in out}
    if links >= 4:
        by_name["enP7s7"]["addrs"].append((ip, 24))
        for name, subnet in MESH_SUBNETS.items():
            by_name[name]["addrs"].append((f"{subnet}.{last}", 24))
    elif links >= 1:
        by_name["enp1s0f1np1"]["addrs"].append((ip, 24))
    else:
        by_name["enP7s7"]["addrs"].append((ip, 24))
    return out


def resolve(node: Node, host: str) -> Node | None:
    """The node reached at ``host`` from ``node`` (an address, a node name or loopback), or None."""
    if host in ("127.0.0.1", "localhost", "::1", node.name):
        return node
    for entry in node.cluster.get("nodes", []):
        peer = node if entry.get("name") == node.name else Node(entry["dir"])
        if host == entry.get("name"):
            return peer
        if host == entry.get("ip"):
            return peer
        if cx7_links(peer) >= 4:
            for iface in interfaces(peer):
                if any(addr == host for addr, _ in iface["addrs"]):
                    return peer
    return None


def _is_ipv4(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return host.count(".") == 3


def _sshd_port(target: Node) -> int | None:
    entry = target.node_entry()
    return int(entry["port"]) if entry and entry.get("port") else None


def _port_open(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# ssh
# ---------------------------------------------------------------------------------------------
SSH_FLAGS = set("46AaCfGgKkMNnqsTtVvXxYy")
SSH_VALUE = set("BbcDEeFIiJLlmOoPpQRSWw")
SSH_PASS_FLAGS = set("nNqtTvx")
SSH_USAGE = (
    "usage: ssh [-46AaCfGgKkMNnqsTtVvXxYy] [-B bind_interface] [-b bind_address]\n"
    "           [-c cipher_spec] [-D [bind_address:]port] [-E log_file]\n"
    "           [-e escape_char] [-F configfile] [-I pkcs11] [-i identity_file]\n"
    "           [-J destination] [-L address] [-l login_name] [-m mac_spec]\n"
    "           [-O ctl_cmd] [-o option] [-P tag] [-p port] [-R address]\n"
    "           [-S ctl_path] [-W host:port] [-w local_tun[:remote_tun]]\n"
    "           destination [command [argument ...]]"
)


def _parse_getopt(argv: list[str], flags: set[str], value: set[str], prog: str, usage: str, reparse: bool):
    """OpenSSH-style option parsing. Returns (options [(letter, value)], operands); raises SystemExit."""
    opts: list[tuple[str, str | None]] = []
    operands: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            operands.extend(argv[i + 1 :])
            break
        if not arg.startswith("-") or arg == "-":
            operands.append(arg)
            i += 1
            if not reparse:
                operands.extend(argv[i:])
                break
            # ssh reads options after the destination too, until the first word of the command.
            if len(operands) == 1 and i < len(argv) and argv[i].startswith("-"):
                continue
            operands.extend(argv[i:])
            break
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter in flags:
                opts.append((letter, None))
                j += 1
                continue
            if letter in value:
                rest = arg[j + 1 :]
                if rest:
                    opts.append((letter, rest))
                elif i + 1 < len(argv):
                    i += 1
                    opts.append((letter, argv[i]))
                else:
                    eprint(f"{prog}: option requires an argument -- {letter}")
                    eprint(usage)
                    raise SystemExit(255)
                break
            eprint(f"{prog}: unknown option -- {letter}")
            eprint(usage)
            raise SystemExit(255)
        i += 1
    return opts, operands


def _option_value(opts, letter: str, key: str) -> str | None:
    """The value of ``-<letter> v`` or ``-o Key=v`` / ``-o "Key v"``; as with ssh, the first one given wins."""
    found = None
    for opt, val in opts:
        if opt == letter:
            found = found if found is not None else val
        elif opt == "o" and val:
            name, _, rest = val.replace("=", " ", 1).partition(" ")
            if name.lower() == key.lower() and found is None:
                found = rest.strip()
    return found


def _base_args(node: Node) -> list[str]:
    ssh_dir = os.path.join(node.root, "ssh")
    return [
        "-F",
        "/dev/null",
        "-i",
        os.path.join(ssh_dir, "client_ed25519"),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        f"UserKnownHostsFile={os.path.join(ssh_dir, 'known_hosts')}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "SendEnv=LANG LC_*",
    ]


def _no_route(host: str, port: str) -> int:
    eprint(f"ssh: connect to host {host} port {port}: No route to host")
    return 255


def _split_destination(dest: str) -> tuple[str | None, str, str | None]:
    port = None
    if dest.startswith("ssh://"):
        dest = dest[len("ssh://") :]
        if ":" in dest.rpartition("@")[2]:
            dest, _, port = dest.rpartition(":")
    user, at, host = dest.rpartition("@")
    return (user if at else None), host, port


def _reach(node: Node, host: str, port: str, prog: str = "ssh") -> tuple[Node | None, int | None]:
    """(target node, sshd port) or print real ssh's error and return (None, exit code)."""
    target = resolve(node, host)
    if target is None:
        if _is_ipv4(host):
            return None, _no_route(host, port)
        eprint(f"ssh: Could not resolve hostname {host.lower()}: Name or service not known")
        return None, 255
    sshd_port = _sshd_port(target)
    if port != "22" or sshd_port is None or not _port_open(sshd_port):
        eprint(f"ssh: connect to host {host} port {port}: Connection refused")
        return None, 255
    return target, sshd_port


def ssh_main(node: Node, argv: list[str]) -> int:
    try:
        opts, operands = _parse_getopt(argv, SSH_FLAGS, SSH_VALUE, "ssh", SSH_USAGE, reparse=True)
    except SystemExit as exc:
        return int(exc.code)
    if any(opt == "V" for opt, _ in opts):
        eprint("OpenSSH_9.6p1 Ubuntu-3ubuntu13.5, OpenSSL 3.0.13 30 Jan 2024")
        return 0
    if not operands:
        eprint(SSH_USAGE)
        return 255
    user, host, url_port = _split_destination(operands[0])
    user = user or _option_value(opts, "l", "User") or node.cluster.get("user") or os.environ.get("USER", "")
    port = url_port or _option_value(opts, "p", "Port") or "22"
    target, sshd_port = _reach(node, host, port)
    if target is None:
        return sshd_port or 255
    command = " ".join(operands[1:])
    args = [REAL_SSH, *_base_args(node), "-p", str(sshd_port)]
    args += [f"-{opt}" for opt, _ in opts if opt in SSH_PASS_FLAGS]
    args.append(f"{user}@127.0.0.1")
    if command:
        # sshd starts the session in the account's home; a Spark's home is the node directory.
        args += ["--", f"cd; {command}"]
    sys.stdout.flush()
    os.execv(REAL_SSH, args)
    return 255  # not reached


# ---------------------------------------------------------------------------------------------
# scp
# ---------------------------------------------------------------------------------------------
SCP_FLAGS = set("12346ABCOpqRrsTv3")
SCP_VALUE = set("cDFiJloPSX")
SCP_PASS_FLAGS = set("pqrv")
SCP_USAGE = (
    "usage: scp [-346ABCOpqRrsTv] [-c cipher] [-D sftp_server_path] [-F ssh_config]\n"
    "           [-i identity_file] [-J destination] [-l limit] [-o ssh_option]\n"
    "           [-P port] [-S program] [-X sftp_option] source ... target"
)


def _remote_operand(arg: str) -> tuple[str | None, str, str] | None:
    """(user, host, path) of ``[user@]host:path`` (a colon before any slash), else None."""
    if arg.startswith("scp://"):
        rest = arg[len("scp://") :]
        hostpart, _, path = rest.partition("/")
        user, at, host = hostpart.rpartition("@")
        return (user if at else None), host.partition(":")[0], path or "."
    colon = arg.find(":")
    if colon <= 0:
        return None
    slash = arg.find("/")
    if slash != -1 and slash < colon:
        return None
    user, at, host = arg[:colon].rpartition("@")
    return (user if at else None), host, arg[colon + 1 :]


def scp_main(node: Node, argv: list[str]) -> int:
    try:
        opts, operands = _parse_getopt(argv, SCP_FLAGS, SCP_VALUE, "scp", SCP_USAGE, reparse=False)
    except SystemExit as exc:
        return int(exc.code)
    if len(operands) < 2:
        eprint(SCP_USAGE)
        return 1
    port = _option_value(opts, "P", "Port") or "22"
    target = None
    sshd_port = None
    rewritten = []
    for arg in operands:
        remote = _remote_operand(arg)
        if remote is None:
            rewritten.append(arg)
            continue
        user, host, path = remote
        peer, code = _reach(node, host, port, "scp")
        if peer is None:
            eprint("scp: Connection closed")
            return code or 255
        if target is not None and peer.dir != target.dir:
            eprint("scp: copies between two remote Sparks are not simulated (use two steps)")
            return 1
        target, sshd_port = peer, code
        # Remote relative and ~ paths are in the account's home: on a Spark, the node directory.
        if path in ("", "~"):
            path = peer.dir
        elif path.startswith("~/"):
            path = os.path.join(peer.dir, path[2:])
        elif not path.startswith("/"):
            path = os.path.join(peer.dir, path)
        user = user or node.cluster.get("user") or os.environ.get("USER", "")
        rewritten.append(f"{user}@127.0.0.1:{path}")
    args = [REAL_SCP, *_base_args(node)]
    if target is not None:
        args += ["-P", str(sshd_port)]
    args += [f"-{opt}" for opt, _ in opts if opt in SCP_PASS_FLAGS]
    args += ["--", *rewritten]
    sys.stdout.flush()
    os.execv(REAL_SCP, args)
    return 1  # not reached


# ---------------------------------------------------------------------------------------------
# ip
# ---------------------------------------------------------------------------------------------
def _flags(iface: dict) -> str:
    if iface["name"] == "lo":
        return "<LOOPBACK,UP,LOWER_UP>"
    if iface["carrier"]:
        return "<BROADCAST,MULTICAST,UP,LOWER_UP>"
    return "<NO-CARRIER,BROADCAST,MULTICAST,UP>"


def _state(iface: dict) -> str:
    if iface["name"] == "lo":
        return "UNKNOWN"
    return "UP" if iface["carrier"] else "DOWN"


def _link_line(iface: dict, mode: bool) -> str:
    qdisc = "noqueue" if iface["name"] == "lo" else "mq"
    return (
        f"{iface['index']}: {iface['name']}: {_flags(iface)} mtu {iface['mtu']} qdisc {qdisc} state "
        f"{_state(iface)} {'mode DEFAULT ' if mode else ''}group default qlen 1000"
    )


def _ether_line(iface: dict) -> str:
    if iface["name"] == "lo":
        return "link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00"
    return f"link/ether {iface['mac']} brd ff:ff:ff:ff:ff:ff"


def _inet_lines(iface: dict, family: str | None) -> list[tuple[str, str]]:
    """(address part, lifetime part) per address of the family."""
    out = []
    name = iface["name"]
    if family in (None, "inet"):
        for addr, prefix in iface["addrs"]:
            if name == "lo":
                out.append((f"inet {addr}/{prefix} scope host lo", "valid_lft forever preferred_lft forever"))
            else:
                brd = addr.rsplit(".", 1)[0] + ".255"
                out.append(
                    (
                        f"inet {addr}/{prefix} brd {brd} scope global noprefixroute {name}",
                        "valid_lft forever preferred_lft forever",
                    )
                )
    if family in (None, "inet6"):
        if name == "lo":
            out.append(("inet6 ::1/128 scope host noprefixroute ", "valid_lft forever preferred_lft forever"))
        elif iface["carrier"]:
            out.append((f"inet6 {_link_local(iface['mac'])}/64 scope link ", "valid_lft forever preferred_lft forever"))
    return out


def _link_local(mac: str) -> str:
    parts = [int(x, 16) for x in mac.split(":")]
    parts[0] ^= 0x02
    words = [parts[0] << 8 | parts[1], parts[2] << 8 | 0xFF, 0xFE << 8 | parts[3], parts[4] << 8 | parts[5]]
    return "fe80::" + ":".join(f"{w:x}" for w in words)


def _ip_usage_error(obj: str) -> int:
    eprint(f'Object "{obj}" is unknown, try "ip help".')
    return 255


def ip_main(node: Node, argv: list[str]) -> int:
    oneline = brief = False
    family = None
    args = list(argv)
    while args and args[0].startswith("-") and len(args[0]) > 1:
        opt = args.pop(0).lstrip("-")
        if opt in ("o", "oneline"):
            oneline = True
        elif opt in ("br", "brief"):
            brief = True
        elif opt in ("4",):
            family = "inet"
        elif opt in ("6",):
            family = "inet6"
        elif opt in ("f", "family"):
            if not args:
                eprint('Command line is not complete. Try option "help"')
                return 255
            family = {"inet": "inet", "inet6": "inet6", "4": "inet", "6": "inet6"}.get(args.pop(0), "inet")
        elif opt in ("c", "color", "s", "stats", "d", "details", "n", "netns") or opt.startswith("color="):
            continue
        else:
            eprint(f'Option "-{opt}" is unknown, try "ip -help".')
            return 255
    if not args:
        eprint("Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }")
        return 255
    obj, rest = args[0], args[1:]
    ifaces = interfaces(node)
    if "address".startswith(obj) and obj:
        return _ip_addr(ifaces, rest, family, oneline, brief)
    if "link".startswith(obj) and obj:
        return _ip_link(ifaces, rest, oneline, brief)
    if "route".startswith(obj) and obj:
        return _ip_route(node, ifaces, rest)
    return _ip_usage_error(obj)


def _select(ifaces: list[dict], rest: list[str]) -> list[dict] | None:
    if rest and rest[0] in ("show", "list", "ls", "lst", "sh"):
        rest = rest[1:]
    wanted = None
    up_only = False
    i = 0
    while i < len(rest):
        word = rest[i]
        if word == "dev" and i + 1 < len(rest):
            wanted = rest[i + 1]
            i += 2
            continue
        if word == "up":
            up_only = True
        elif word in ("scope", "to", "label", "type", "master"):
            i += 2
            continue
        else:
            wanted = word
        i += 1
    if wanted is not None:
        found = [f for f in ifaces if f["name"] == wanted]
        if not found:
            eprint(f'Device "{wanted}" does not exist.')
            return None
        ifaces = found
    if up_only:
        ifaces = [f for f in ifaces if f["carrier"]]
    return ifaces


def _ip_addr(ifaces, rest, family, oneline, brief) -> int:
    if rest and rest[0] not in ("show", "list", "ls", "lst", "sh") and rest[0] != "dev" and rest[0] in ("add", "del"):
        eprint("RTNETLINK answers: Operation not permitted")
        return 2
    selected = _select(ifaces, rest)
    if selected is None:
        return 1
    lines = []
    for iface in selected:
        inets = _inet_lines(iface, family)
        if brief:
            addrs = " ".join(part.split()[1] for part, _ in inets)
            lines.append(f"{iface['name']:<16} {_state(iface):<14} {addrs} ".rstrip() + " ")
            continue
        if oneline:
            for part, life in inets:
                lines.append(f"{iface['index']}: {iface['name']}    {part}\\       {life}")
            continue
        if family is not None and not inets:
            continue
        lines.append(_link_line(iface, mode=False))
        lines.append("    " + _ether_line(iface))
        for part, life in inets:
            lines.append("    " + part.rstrip())
            lines.append("       " + life)
    if lines:
        print("\n".join(lines))
    return 0


def _ip_link(ifaces, rest, oneline, brief) -> int:
    if rest and rest[0] == "set":
        eprint("RTNETLINK answers: Operation not permitted")
        return 2
    selected = _select(ifaces, rest)
    if selected is None:
        return 1
    for iface in selected:
        if brief:
            print(f"{iface['name']:<16} {_state(iface):<14} {iface['mac']} {_flags(iface)} ")
        elif oneline:
            print(f"{_link_line(iface, mode=True)}\\    {_ether_line(iface)}")
        else:
            print(_link_line(iface, mode=True))
            print("    " + _ether_line(iface))
    return 0


def _ip_route(node: Node, ifaces, rest) -> int:
    connected = []
    for iface in ifaces:
        if iface["name"] == "lo" or not iface["carrier"]:
            continue
        for addr, prefix in iface["addrs"]:
            connected.append((addr.rsplit(".", 1)[0], prefix, iface["name"], addr))
    if rest and rest[0] == "get":
        if len(rest) < 2:
            eprint('Command line is not complete. Try option "help"')
            return 255
        dest = rest[1]
        if not _is_ipv4(dest):
            eprint(f'Error: any valid prefix is expected rather than "{dest}".')
            return 1
        uid = os.getuid()
        if dest.startswith("127."):
            print(f"local {dest} dev lo src 127.0.0.1 uid {uid} \n    cache <local> ")
            return 0
        for _net, _prefix, _name, addr in connected:
            if dest == addr:
                print(f"local {dest} dev lo src {addr} uid {uid} \n    cache <local> ")
                return 0
        for net, _prefix, name, addr in connected:
            if dest.rsplit(".", 1)[0] == net:
                print(f"{dest} dev {name} src {addr} uid {uid} \n    cache ")
                return 0
        eprint("RTNETLINK answers: Network is unreachable")
        return 2
    if not rest or rest[0] in ("show", "list", "ls"):
        for net, prefix, name, addr in connected:
            print(f"{net}.0/{prefix} dev {name} proto kernel scope link src {addr} metric 100 ")
        return 0
    eprint("RTNETLINK answers: Operation not permitted")
    return 2


# ---------------------------------------------------------------------------------------------
# ibdev2netdev
# ---------------------------------------------------------------------------------------------
def ibdev2netdev_main(node: Node, argv: list[str]) -> int:
    links = cx7_links(node)
    up = set(LINK_UP_ORDER[:links])
    for ibdev, netdev in CX7:
        print(f"{ibdev} port 1 ==> {netdev} ({'Up' if netdev in up else 'Down'})")
    return 0


# ---------------------------------------------------------------------------------------------
# nc (netcat-openbsd, -z only)
# ---------------------------------------------------------------------------------------------
NC_USAGE = (
    "usage: nc [-46CDdFhklNnrStUuvZz] [-I length] [-i interval] [-M ttl]\n"
    "\t  [-m minttl] [-O length] [-P proxy_username] [-p source_port]\n"
    "\t  [-q seconds] [-s sourceaddr] [-T keyword] [-V rtable] [-W recvlimit]\n"
    "\t  [-w timeout] [-X proxy_protocol] [-x proxy_address[:port]]\n"
    "\t  [destination] [port]"
)


def nc_main(node: Node, argv: list[str]) -> int:
    flags = set("46CDdFhklNnrStUuvZz")
    value = set("IiMmOPpqsTVWwXx")
    opts: list[tuple[str, str | None]] = []
    operands: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-") and len(arg) > 1 and not operands:
            j = 1
            while j < len(arg):
                letter = arg[j]
                if letter in flags:
                    opts.append((letter, None))
                    j += 1
                elif letter in value:
                    rest = arg[j + 1 :]
                    if not rest:
                        i += 1
                        if i >= len(argv):
                            eprint(f"nc: option requires an argument -- {letter}")
                            eprint(NC_USAGE)
                            return 1
                        rest = argv[i]
                    opts.append((letter, rest))
                    break
                else:
                    eprint(f"nc: invalid option -- '{letter}'")
                    eprint(NC_USAGE)
                    return 1
        else:
            operands.append(arg)
        i += 1
    letters = {k for k, _ in opts}
    verbose = "v" in letters
    if "z" not in letters:
        eprint("sparksim: nc is simulated for port probes only (nc -z host port)")
        return 1
    if len(operands) < 2:
        eprint(NC_USAGE)
        return 1
    wait = None
    for key, val in opts:
        if key == "w":
            try:
                wait = float(int(val))  # netcat-openbsd takes whole seconds
            except ValueError:
                eprint(f"nc: timeout {val}: invalid")
                return 1
    host, port_spec = operands[0], operands[1:]
    ports: list[int] = []
    for spec in port_spec:
        lo, _, hi = spec.partition("-")
        try:
            ports.extend(range(int(lo), int(hi or lo) + 1))
        except ValueError:
            eprint(f"nc: port number invalid: {spec}")
            return 1
    target = resolve(node, host)
    if target is None:
        if not _is_ipv4(host):
            eprint(f'nc: getaddrinfo for host "{host}" port {ports[0]}: Name or service not known')
            return 1
        # Nobody answers ARP for the address: the probe waits, then gives up.
        time.sleep(min(wait, 3.0) if wait is not None else 3.0)
        if verbose:
            for port in ports:
                if wait is not None and wait < 3.0:
                    eprint(f"nc: connect to {host} port {port} (tcp) timed out: Operation now in progress")
                else:
                    eprint(f"nc: connect to {host} port {port} (tcp) failed: No route to host")
        return 1
    ok = False
    for port in ports:
        real = _sshd_port(target) if port == 22 else port
        if real is not None and _port_open(real, timeout=wait or 1.0):
            ok = True
            if verbose:
                service = {22: " [tcp/ssh]"}.get(port, " [tcp/*]")
                eprint(f"Connection to {host} {port} port{service} succeeded!")
        elif verbose:
            eprint(f"nc: connect to {host} port {port} (tcp) failed: Connection refused")
    return 0 if ok else 1
