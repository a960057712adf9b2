//! Micro benchmarks (criterion) of the pieces a build repeats per file or per action:
//! `cargo bench --bench micro`. Results and the macro benchmark are in BENCHMARKS.md.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cairn::bench::ActionFixture;
use cairn_store::{Digest, FileInfo, MerkleTree, Store};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// `count` files of `size` bytes, with an mtime old enough for the file-state cache to trust.
fn files(dir: &std::path::Path, count: usize, size: usize) -> Vec<PathBuf> {
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    (0..count)
        .map(|i| {
            let path = dir.join(format!("f{i:05}.txt"));
            let body: Vec<u8> = (0..size).map(|j| ((i * 31 + j * 7) % 251) as u8).collect();
            std::fs::write(&path, body).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(old)
                .unwrap();
            path
        })
        .collect()
}

fn hashing(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let small = files(dir.path(), 1000, 2048);
    let mut group = c.benchmark_group("blake3 file hashing");
    group.throughput(Throughput::Elements(small.len() as u64));
    group.bench_function("1000 files of 2 KiB (files/s)", |b| {
        b.iter(|| {
            for f in &small {
                black_box(Digest::of_file(f).unwrap());
            }
        })
    });
    let big = dir.path().join("big.bin");
    let size = 64 << 20;
    std::fs::write(&big, vec![7u8; size]).unwrap();
    group.throughput(Throughput::Bytes(size as u64));
    group.bench_function("one 64 MiB file (bytes/s)", |b| {
        b.iter(|| black_box(Digest::of_file(&big).unwrap()))
    });
    group.finish();
}

fn action_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("action key");
    for (srcs, deps) in [(1, 1), (20, 3), (200, 3)] {
        let fixture = ActionFixture::new(srcs, deps);
        group.bench_function(format!("{srcs} sources + {deps} dependency outputs"), |b| {
            b.iter(|| black_box(fixture.key()))
        });
    }
    group.finish();
}

fn input_tree(c: &mut Criterion) {
    let mut group = c.benchmark_group("input tree");
    for n in [20, 1000] {
        let files: BTreeMap<String, FileInfo> = (0..n)
            .map(|i| {
                let path = format!("pkg{}/src/dir{}/file{i}.js", i % 7, i % 13);
                let info = FileInfo {
                    digest: Digest::of_bytes(path.as_bytes()),
                    executable: false,
                };
                (path, info)
            })
            .collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("{n} files"), |b| {
            b.iter(|| black_box(MerkleTree::build(&files).root))
        });
    }
    group.finish();
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut group = c.benchmark_group("store");
    let mut n = 0u64;
    group.bench_function("put a new 2 KiB blob", |b| {
        b.iter_batched(
            || {
                n += 1;
                let mut body = vec![0u8; 2048];
                body[..8].copy_from_slice(&n.to_le_bytes());
                body
            },
            |body| black_box(store.cas().put_bytes(&body).unwrap()),
            BatchSize::SmallInput,
        )
    });
    let digest = store.cas().put_bytes(&[42u8; 2048]).unwrap();
    group.bench_function("get a 2 KiB blob (verified)", |b| {
        b.iter(|| black_box(store.cas().get_bytes(&digest).unwrap()))
    });
    group.finish();
}

fn file_states(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let paths = files(&ws, 1000, 2048);
    let db = cairn_store::Store::open(&dir.path().join("store")).unwrap();
    let states = db.load_file_states(&ws).unwrap();
    for p in &paths {
        states.file_info(p).unwrap();
    }
    db.save_file_states(&states).unwrap();
    let mut group = c.benchmark_group("file-state cache");
    group.throughput(Throughput::Elements(paths.len() as u64));
    group.bench_function("1000 unchanged files (stat + lookup)", |b| {
        b.iter(|| {
            for p in &paths {
                black_box(states.file_info(p).unwrap());
            }
        })
    });
    group.bench_function("load the states of 1000 files", |b| {
        b.iter(|| black_box(db.load_file_states(&ws).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, hashing, action_key, input_tree, store, file_states);
criterion_main!(benches);
