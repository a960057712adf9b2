//! cairn in CI (issue 16): cache archives between stores, through the real binary.

use crate::util::Workspace;

/// Every file under the mimic outputs, with its bytes.
fn outputs(ws: &Workspace) -> Vec<(String, Vec<u8>)> {
    let mut all = Vec::new();
    for entry in walkdir::WalkDir::new(ws.root()).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(ws.root())
            .unwrap()
            .display()
            .to_string();
        if entry.file_type().is_file() && rel.contains("/dist/") {
            all.push((rel, std::fs::read(entry.path()).unwrap()));
        }
    }
    all
}

fn blob_count(ws: &Workspace) -> u64 {
    let run = ws.cairn(&["--json", "store", "stats"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.json()["blobs"].as_u64().unwrap()
}

#[test]
fn an_exported_archive_gives_a_fresh_store_every_result() {
    let ci = Workspace::mimic();
    ci.json_run(&["test"], 0);
    let archive = ci.root().join("../ci-cache.tar.zst");
    let run = ci.cairn(&["cache", "export", archive.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("exported 13 action results"),
        "{}",
        run.stderr
    );
    let first = std::fs::read(&archive).unwrap();
    let again = ci.cairn(&["cache", "export", archive.to_str().unwrap()]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        first,
        "deterministic bytes"
    );

    // Another machine: a fresh checkout, an empty store, the archive.
    let fresh = Workspace::mimic();
    let run = fresh.cairn(&["cache", "import", archive.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("imported 13 action results"),
        "{}",
        run.stderr
    );
    let test = fresh.json_run(&["test"], 0);
    assert_eq!(test.count("executed"), 0, "{}", test.stderr);
    assert_eq!(test.count("cached"), 13, "{}", test.stderr);
    assert_eq!(outputs(&fresh), outputs(&ci));
    assert!(!outputs(&ci).is_empty());

    // An edited target is not in a new export until it is built: said, not silent.
    ci.edit(
        "apps/web/src/components/button.js",
        "button.textContent = label;",
        "button.textContent = label.trim();",
    );
    let partial = ci.cairn(&[
        "cache",
        "export",
        archive.to_str().unwrap(),
        "//apps/web/...",
    ]);
    assert_eq!(partial.code, 0, "{}", partial.stderr);
    assert!(
        partial.stderr.contains("have no result in the store")
            && partial.stderr.contains("//apps/web:build"),
        "{}",
        partial.stderr
    );
}

#[test]
fn a_malformed_archive_is_refused_whole_and_the_store_is_unchanged() {
    let ws = Workspace::mimic();
    ws.json_run(&["build"], 0);
    let blobs = blob_count(&ws);
    let bad = ws.root().join("../bad.tar.zst");
    // A valid start (the version entry, a real blob), then a link to /etc/passwd.
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    {
        let mut builder = tar::Builder::new(&mut encoder);
        let mut header = tar::Header::new_gnu();
        let version = b"cairn cache archive 1\n";
        header.set_size(version.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, "cairn-cache-archive", &version[..])
            .unwrap();
        let bytes = b"new bytes the store lacks";
        let name = format!("blobs/{}-{}", blake3::hash(bytes).to_hex(), bytes.len());
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, &name, &bytes[..]).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link, "blobs/escape", "/etc/passwd")
            .unwrap();
        builder.finish().unwrap();
    }
    std::fs::write(&bad, encoder.finish().unwrap()).unwrap();
    let run = ws.cairn(&["cache", "import", bad.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("entry `blobs/escape`: a symbolic link")
            && run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
    assert_eq!(blob_count(&ws), blobs, "not even the valid blob before it");
    let verify = ws.cairn(&["store", "verify"]);
    assert_eq!(verify.code, 0, "{}", verify.stderr);
    // Not an archive at all.
    std::fs::write(&bad, "hello").unwrap();
    let run = ws.cairn(&["cache", "import", bad.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("not a"), "{}", run.stderr);
}
