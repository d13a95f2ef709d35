"""krabby-keys: create CURVE key pairs and manage the HAL's client allow-list.

    krabby-keys generate NAME --dir DIR         write DIR/NAME.key (public) and DIR/NAME.key_secret (0600)
    krabby-keys allow PUBLICKEYFILE --dir DIR   add a client's public key to the server's allow-list DIR
    krabby-keys show [PATH ...]                 print the public keys in key files / folders (never a secret)

To revoke a client, delete its file from the allow-list folder (new handshakes see the change at once;
restart the server to drop a connection that is already authenticated). Also ``python -m krabby.hal.deploy.keys_cli``.
"""

from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path

from .keys import (
    PUBLIC_SUFFIX,
    SECRET_SUFFIX,
    SecurityError,
    add_to_allow_list,
    generate_keypair,
    load_public_key,
)


def _show_file(p: Path) -> str:
    key = load_public_key(p).decode()
    note = ""
    if p.name.endswith(SECRET_SUFFIX):
        mode = stat.S_IMODE(p.stat().st_mode)
        note = "  (secret key file" + ("" if not mode & 0o077 else f", UNSAFE mode {mode:04o}: chmod 600") + ")"
    return f"{p}  {key}{note}"


def _cmd_generate(args: argparse.Namespace) -> int:
    public, secret = generate_keypair(args.dir, args.name)
    print(f"wrote {public} (public: copy it to the peer)")
    print(f"wrote {secret} (secret, mode 0600: never copy it)")
    print(f"public key {load_public_key(public).decode()}")
    return 0


def _cmd_allow(args: argparse.Namespace) -> int:
    dst = add_to_allow_list(args.public_key_file, args.dir)
    print(f"allowed {load_public_key(dst).decode()} as {dst}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    paths = [Path(p).expanduser() for p in (args.paths or ["."])]
    for p in paths:
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.name.endswith((PUBLIC_SUFFIX, SECRET_SUFFIX)) and f.is_file())
            if not files:
                print(f"{p}: no key files")
            for f in files:
                print(_show_file(f))
        elif p.is_file():
            print(_show_file(p))
        else:
            raise SecurityError(f"{p}: no such file or folder")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="krabby-keys", description="CURVE keys for the Krabby HAL's tcp endpoints.")
    sub = ap.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="create NAME.key and NAME.key_secret (refuses to overwrite)")
    g.add_argument("name", help="key name, e.g. robot or policy-laptop")
    g.add_argument("--dir", required=True, help="folder for the two files (created with mode 0700 if missing)")
    g.set_defaults(func=_cmd_generate)
    a = sub.add_parser("allow", help="add a client's public key file to the server's allow-list folder")
    a.add_argument("public_key_file", help="the client's NAME.key (never the .key_secret)")
    a.add_argument("--dir", required=True, help="the allow-list folder (HalServer's allow_dir)")
    a.set_defaults(func=_cmd_allow)
    s = sub.add_parser("show", help="print public keys of key files or of every key file in folders")
    s.add_argument("paths", nargs="*", help="files or folders (default: the current folder)")
    s.set_defaults(func=_cmd_show)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SecurityError as e:
        print(f"krabby-keys: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"krabby-keys: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
