#!/usr/bin/env python3
"""Reads back what cairn wrote to a REAPI server, with an independent client: grpcio and the
REAPI protos that BuildGrid ships (run it with BuildGrid's venv python). Nothing here shares
code with cairn, so a message cairn encodes wrongly fails here as it would fail for Bazel.

For each ACTION digest (`sha256:<hex>/<size>`, cairn's `remote_action_digest`) it checks:
  * the Action and its Command are in the CAS and hash to their digests; the Command's
    `output_paths` are sorted and match the older `output_files`/`output_directories`, and
    both the Action and the Command carry a platform;
  * the input root: every Directory hashes to its digest, its entries are sorted by name,
    and every file it names is in the CAS (FindMissingBlobs);
  * GetActionResult answers, with no `stdout_raw`/`stderr_raw`; every output file (and every
    file of every output directory's Tree) is in the CAS, hashes to its digest and equals the
    file cairn put in the workspace (WORKSPACE/<working_directory>/<path>). Output entries
    not asked for must be cairn's own (`.cairn-digests`, `.cairn-signature/<key>`), whose
    blobs must be there too.

Usage: reapi_readback.py --server grpc://127.0.0.1:50052 [--instance NAME] --workspace DIR ACTION...
Prints one line per action and exits 1 at the first violation, naming it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

import grpc
from buildgrid._protos.build.bazel.remote.execution.v2 import (
    remote_execution_pb2 as re,
    remote_execution_pb2_grpc as re_grpc,
)


class Violation(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Violation(what)


class Reader:
    def __init__(self, server: str, instance: str) -> None:
        address = server.removeprefix("grpc://")
        self.channel = grpc.insecure_channel(address)
        self.instance = instance
        self.cas = re_grpc.ContentAddressableStorageStub(self.channel)
        self.ac = re_grpc.ActionCacheStub(self.channel)
        caps = re_grpc.CapabilitiesStub(self.channel).GetCapabilities(
            re.GetCapabilitiesRequest(instance_name=instance)
        )
        functions = caps.cache_capabilities.digest_functions
        check(re.DigestFunction.SHA256 in functions, "the server offers no SHA-256")
        self.function = re.DigestFunction.SHA256

    def blob(self, digest: re.Digest, what: str) -> bytes:
        response = self.cas.BatchReadBlobs(
            re.BatchReadBlobsRequest(
                instance_name=self.instance, digests=[digest], digest_function=self.function
            )
        )
        check(len(response.responses) == 1, "%s: no answer for %s" % (what, show(digest)))
        got = response.responses[0]
        check(got.status.code == 0, "%s: blob %s is not in the CAS" % (what, show(digest)))
        data = got.data
        check(
            hashlib.sha256(data).hexdigest() == digest.hash and len(data) == digest.size_bytes,
            "%s: blob %s does not hash to its digest" % (what, show(digest)),
        )
        return data

    def missing(self, digests: list[re.Digest]) -> list[re.Digest]:
        out = []
        for i in range(0, len(digests), 1000):
            out += self.cas.FindMissingBlobs(
                re.FindMissingBlobsRequest(
                    instance_name=self.instance,
                    blob_digests=digests[i : i + 1000],
                    digest_function=self.function,
                )
            ).missing_blob_digests
        return list(out)


def show(d: re.Digest) -> str:
    return "%s/%d" % (d.hash, d.size_bytes)


def parse_digest(text: str) -> re.Digest:
    check(text.startswith("sha256:"), "not a SHA-256 action digest: %s" % text)
    h, size = text.removeprefix("sha256:").split("/")
    return re.Digest(hash=h, size_bytes=int(size))


def walk_input_root(r: Reader, digest: re.Digest) -> int:
    """Checks the input root; returns how many files it holds."""
    files, stack, seen = [], [("", digest)], set()
    while stack:
        path, d = stack.pop()
        if d.hash in seen:
            continue
        seen.add(d.hash)
        directory = re.Directory.FromString(r.blob(d, "input directory /%s" % path))
        for kind, entries in (
            ("files", directory.files),
            ("directories", directory.directories),
            ("symlinks", directory.symlinks),
        ):
            names = [e.name for e in entries]
            check(names == sorted(names), "input directory /%s: %s not sorted" % (path, kind))
        for f in directory.files:
            files.append(f.digest)
        for sub in directory.directories:
            stack.append((path + sub.name + "/", sub.digest))
    gone = r.missing(files)
    check(not gone, "the input root names %d blobs missing from the CAS" % len(gone))
    return len(files)


def compare(r: Reader, digest: re.Digest, local: str, what: str) -> None:
    data = r.blob(digest, what)
    check(os.path.isfile(local), "%s: cairn wrote no %s" % (what, local))
    with open(local, "rb") as f:
        check(f.read() == data, "%s: %s differs from the remote's bytes" % (what, local))


def check_action(r: Reader, text: str, workspace: str) -> str:
    digest = parse_digest(text)
    action = re.Action.FromString(r.blob(digest, "action %s" % text))
    check(action.HasField("platform"), "the Action has no platform")
    command = re.Command.FromString(r.blob(action.command_digest, "command"))
    check(command.HasField("platform"), "the Command has no platform")
    paths = list(command.output_paths)
    check(paths == sorted(paths), "output_paths not sorted: %s" % paths)
    older = sorted(list(command.output_files) + list(command.output_directories))
    check(older == sorted(paths), "output_paths %s but output_files/directories %s" % (paths, older))
    inputs = walk_input_root(r, action.input_root_digest)

    result = r.ac.GetActionResult(
        re.GetActionResultRequest(
            instance_name=r.instance, action_digest=digest, digest_function=r.function
        )
    )
    check(
        all(d.path in paths for d in result.output_directories),
        "an output directory was not asked for",
    )
    check(not result.stdout_raw and not result.stderr_raw, "the result inlines stdout/stderr")
    base = os.path.join(workspace, command.working_directory)
    metadata = 0
    for f in result.output_files:
        if f.path in paths:
            compare(r, f.digest, os.path.join(base, f.path), "output file %s" % f.path)
        else:
            # cairn's own entries (the local-digest manifest, signatures): never outputs.
            check(
                f.path == ".cairn-digests" or f.path.startswith(".cairn-signature/"),
                "output file %s was not asked for" % f.path,
            )
            r.blob(f.digest, f.path)
            metadata += 1
    trees = 0
    for d in result.output_directories:
        tree = re.Tree.FromString(r.blob(d.tree_digest, "tree of %s" % d.path))
        children = {
            hashlib.sha256(c.SerializeToString()).hexdigest(): c for c in tree.children
        }

        def files_of(directory: re.Directory, prefix: str) -> None:
            for f in directory.files:
                compare(r, f.digest, os.path.join(base, prefix, f.name), "file %s%s" % (prefix, f.name))
            for sub in directory.directories:
                check(sub.digest.hash in children, "tree of %s lacks %s" % (d.path, sub.name))
                files_of(children[sub.digest.hash], prefix + sub.name + "/")

        files_of(tree.root, d.path + "/")
        trees += 1
    for name in ("stdout_digest", "stderr_digest"):
        if result.HasField(name):
            r.blob(getattr(result, name), name)
    return "%s: %d inputs, %d output files, %d output directories, %d cairn entries, exit %d" % (
        text, inputs, len(result.output_files) - metadata, trees, metadata, result.exit_code,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--instance", default="")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("actions", nargs="+")
    args = parser.parse_args()
    try:
        r = Reader(args.server, args.instance)
        for text in args.actions:
            print(check_action(r, text, args.workspace))
    except Violation as v:
        print("INVALID: %s" % v, file=sys.stderr)
        return 1
    except grpc.RpcError as e:
        print("INVALID: %s: %s" % (e.code(), e.details()), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
