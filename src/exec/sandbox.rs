//! Sandboxes. `Namespace` (Linux): the action runs in fresh user, mount, PID, UTS, IPC and
//! (unless it is a fixed-output action) network namespaces, as an unprivileged mapped user, on a
//! new root holding only read-only system directories (`/usr`, `/bin`, `/lib*`, a minimal
//! `/etc`), its input root at `/workspace`, a private `/tmp` and an empty `HOME`. `Directory`:
//! a fresh directory with the input root, no isolation beyond that. `None`: in the workspace.
//!
//! The namespace set-up runs in a helper process (`cairn __sandbox ...`, this same binary):
//! a fresh single-threaded process may allocate and fork freely, which a `pre_exec` hook in the
//! multi-threaded scheduler may not. This file holds the crate's only `unsafe` code.

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Uid, chdir, fork, getgid, getuid, pivot_root, sethostname};

/// The first argument that turns the binary into the sandbox helper.
pub(crate) const HELPER_ARG: &str = "__sandbox";

/// The user and group an action runs as inside the namespace sandbox.
const INNER_ID: u32 = 1000;
/// Where the input root appears inside the namespace sandbox.
pub(crate) const SANDBOX_ROOT: &str = "/workspace";
const SANDBOX_HOME: &str = "/home/cairn";
/// Exit code of the helper when the sandbox could not be set up.
const SETUP_FAILED: u8 = 125;

const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];
/// Host `/etc` entries the tools need (dynamic loader, alternatives, name service, TLS roots).
const ETC_ENTRIES: &[&str] = &[
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "nsswitch.conf",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "gai.conf",
    "protocols",
    "services",
    "mime.types",
];
/// Only fixed-output actions (which have the network) see the host's resolver settings.
const ETC_NETWORK_ENTRIES: &[&str] = &["resolv.conf", "host.conf"];
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

pub(crate) use crate::workspace::SandboxMode;

/// What the helper needs to build one namespace sandbox.
pub(crate) struct NamespaceSpec<'a> {
    /// An empty directory to mount the new root on.
    pub new_root: &'a Path,
    /// The staged input root, mounted read-write at `/workspace`.
    pub input_root: &'a Path,
    /// The working directory, relative to the input root.
    pub cwd: &'a str,
    pub network: bool,
    /// Extra host directories to mount read-only at the same path (tool directories).
    pub read_only: &'a [PathBuf],
    /// Directories of the input root (relative) holding only inputs: mounted read-only, so an
    /// action cannot change what it reads (Python's `__pycache__` in a dependency tree is
    /// then skipped, as Python does for any read-only directory).
    pub read_only_inputs: &'a [String],
    /// Host directories (the store's shared trees) mounted read-only at these directories of
    /// the input root.
    pub mounts: &'a [(PathBuf, String)],
    /// The size of the in-memory `/tmp`, `HOME` and `/dev/shm`, in bytes.
    pub tmp_size: u64,
}

/// A `Command` that runs `argv` inside a namespace sandbox through the helper `exe`.
pub(crate) fn namespace_command(exe: &Path, spec: &NamespaceSpec, argv: &[&str]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg(HELPER_ARG)
        .arg("--new-root")
        .arg(spec.new_root)
        .arg("--input-root")
        .arg(spec.input_root)
        .arg("--cwd")
        .arg(spec.cwd);
    if spec.network {
        cmd.arg("--network");
    }
    for dir in spec.read_only {
        cmd.arg("--read-only").arg(dir);
    }
    for dir in spec.read_only_inputs {
        cmd.arg("--read-only-input").arg(dir);
    }
    for (host, rel) in spec.mounts {
        cmd.arg("--mount-input").arg(host).arg(rel);
    }
    cmd.arg("--tmp-size").arg(spec.tmp_size.to_string());
    cmd.arg("--").args(argv);
    cmd
}

/// Whether namespace sandboxes work here: builds one in `scratch` and runs `true` in it.
/// Returns the helper's complaint when they do not.
pub(crate) fn probe(exe: &Path, scratch: &Path) -> Result<(), String> {
    let new_root = scratch.join("newroot");
    let input = scratch.join("root");
    for dir in [&new_root, &input] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    }
    let spec = NamespaceSpec {
        new_root: &new_root,
        input_root: &input,
        cwd: "",
        network: false,
        read_only: &[],
        read_only_inputs: &[],
        mounts: &[],
        tmp_size: 1 << 20,
    };
    let out = namespace_command(exe, &spec, &["/bin/sh", "-c", "exit 0"])
        .env_clear()
        .output()
        .map_err(|e| format!("cannot start the sandbox helper: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(if text.is_empty() {
            format!("the sandbox helper exited with {}", out.status)
        } else {
            text
        })
    }
}

struct HelperArgs {
    new_root: PathBuf,
    input_root: PathBuf,
    cwd: String,
    network: bool,
    read_only: Vec<PathBuf>,
    read_only_inputs: Vec<String>,
    mounts: Vec<(PathBuf, String)>,
    tmp_size: Option<u64>,
    argv: Vec<OsString>,
}

fn parse_helper_args(args: Vec<OsString>) -> Result<HelperArgs, String> {
    let mut it = args.into_iter();
    let mut h = HelperArgs {
        new_root: PathBuf::new(),
        input_root: PathBuf::new(),
        cwd: String::new(),
        network: false,
        read_only: Vec::new(),
        read_only_inputs: Vec::new(),
        mounts: Vec::new(),
        tmp_size: None,
        argv: Vec::new(),
    };
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg:?} needs a value"));
        match arg.to_str() {
            Some("--new-root") => h.new_root = value()?.into(),
            Some("--input-root") => h.input_root = value()?.into(),
            Some("--cwd") => h.cwd = value()?.to_string_lossy().into_owned(),
            Some("--network") => h.network = true,
            Some("--read-only") => h.read_only.push(value()?.into()),
            Some("--read-only-input") => h
                .read_only_inputs
                .push(value()?.to_string_lossy().into_owned()),
            Some("--mount-input") => {
                let host = PathBuf::from(value()?);
                let rel = value()?.to_string_lossy().into_owned();
                h.mounts.push((host, rel));
            }
            Some("--tmp-size") => {
                let text = value()?;
                h.tmp_size = Some(
                    text.to_str()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| format!("--tmp-size takes bytes, not {text:?}"))?,
                );
            }
            Some("--") => {
                h.argv = it.collect();
                break;
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    if h.argv.is_empty() || h.new_root.as_os_str().is_empty() {
        return Err("usage: cairn __sandbox --new-root DIR --input-root DIR --cwd REL [--network] [--read-only DIR]... -- ARGV...".into());
    }
    Ok(h)
}

/// The helper's `main`: `args` are the arguments after `__sandbox`. Exits with the command's
/// exit code (128 + signal if it was killed), or 125 if the sandbox could not be set up.
#[allow(clippy::print_stderr)] // The helper's only channel is the action's stderr.
pub(crate) fn helper_main(args: Vec<OsString>) -> ExitCode {
    let args = match parse_helper_args(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("cairn sandbox: {e}");
            return ExitCode::from(SETUP_FAILED);
        }
    };
    match enter_namespaces(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cairn sandbox: {e}");
            ExitCode::from(SETUP_FAILED)
        }
    }
}

fn enter_namespaces(args: &HelperArgs) -> Result<u8, String> {
    let (uid, gid) = (getuid(), getgid());
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if !args.network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    unshare(flags).map_err(|e| format!("unshare (user namespaces unavailable?): {e}"))?;
    map_ids(uid, gid)?;
    // SAFETY: the helper is single-threaded (it is a fresh process that started no threads),
    // so the child may do anything after fork.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code as u8),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as u8),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(format!("waitpid: {e}")),
            }
        },
        ForkResult::Child => {
            // PID 1 of the new PID namespace: when it exits, every process it left is killed.
            let err = setup_and_exec(args);
            #[allow(clippy::print_stderr)]
            {
                eprintln!("cairn sandbox: {err}");
            }
            std::process::exit(i32::from(SETUP_FAILED));
        }
    }
}

fn map_ids(uid: Uid, gid: Gid) -> Result<(), String> {
    let write = |path: &str, text: String| {
        fs::write(path, text).map_err(|e| format!("writing {path}: {e}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{INNER_ID} {uid} 1"))?;
    write("/proc/self/gid_map", format!("{INNER_ID} {gid} 1"))
}

/// Builds the new root and execs the command; returns only on failure.
fn setup_and_exec(args: &HelperArgs) -> String {
    match build_root(args) {
        Ok(()) => {}
        Err(e) => return e,
    }
    let cwd = Path::new(SANDBOX_ROOT).join(&args.cwd);
    if let Err(e) = chdir(&cwd) {
        return format!("chdir {}: {e}", cwd.display());
    }
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    let err = Command::new(&args.argv[0])
        .args(&args.argv[1..])
        .env("HOME", SANDBOX_HOME)
        .env("TMPDIR", "/tmp")
        .exec();
    format!("cannot run {:?}: {err}", args.argv[0])
}

fn build_root(args: &HelperArgs) -> Result<(), String> {
    let none: Option<&str> = None;
    let root = &args.new_root;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(|e| format!("making mounts private: {e}"))?;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|e| format!("mounting the new root: {e}"))?;
    let inside = |p: &str| root.join(p.trim_start_matches('/'));

    for dir in SYSTEM_DIRS {
        let host = Path::new(dir);
        let Ok(meta) = fs::symlink_metadata(host) else {
            continue;
        };
        if meta.is_symlink() {
            let target = fs::read_link(host).map_err(|e| format!("readlink {dir}: {e}"))?;
            std::os::unix::fs::symlink(target, inside(dir))
                .map_err(|e| format!("symlink {dir}: {e}"))?;
        } else if meta.is_dir() {
            bind(host, &inside(dir), true)?;
        }
    }
    // Host package directories no target declares: hidden from normal actions, so an
    // undeclared `import yaml` fails here as it would on a machine without Debian's package. A
    // fixed-output install (its result checked against a digest) may use them.
    // Global node package directories are hidden too, but for the tools installed there
    // (npm's own package under `/usr/lib/node_modules`), which are mounted back.
    let mut hidden = Vec::new();
    if !args.network {
        for dir in host_package_dirs(&[]) {
            let at = inside(&dir.to_string_lossy());
            if at.is_dir() {
                hide(&at)?;
                hidden.push(dir);
            }
        }
        for dir in NODE_PACKAGE_DIRS.iter().map(Path::new) {
            let at = inside(&dir.to_string_lossy());
            if !at.is_dir() {
                continue;
            }
            tmpfs(&at, "size=64k,mode=0755")?;
            let mut shown: Vec<&PathBuf> = Vec::new();
            for tool in args
                .read_only
                .iter()
                .filter(|t| t.starts_with(dir) && t.is_dir())
            {
                if shown.iter().any(|s| tool.starts_with(s)) {
                    continue;
                }
                let to = inside(&tool.to_string_lossy());
                mkdir(&to)?;
                bind(tool, &to, true)?;
                shown.push(tool);
            }
            remount_read_only(&at)?;
            hidden.push(dir.to_path_buf());
        }
    }

    let etc = inside("/etc");
    mkdir(&etc)?;
    write_file(
        &etc.join("passwd"),
        &format!(
            "root:x:0:0:root:/:/bin/sh\ncairn:x:{INNER_ID}:{INNER_ID}:cairn:{SANDBOX_HOME}:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n"
        ),
    )?;
    write_file(
        &etc.join("group"),
        &format!("root:x:0:\ncairn:x:{INNER_ID}:\nnogroup:x:65534:\n"),
    )?;
    write_file(&etc.join("hostname"), "cairn\n")?;
    write_file(
        &etc.join("hosts"),
        "127.0.0.1 localhost cairn\n::1 localhost\n",
    )?;
    let network_entries: &[&str] = if args.network {
        ETC_NETWORK_ENTRIES
    } else {
        &[]
    };
    for name in ETC_ENTRIES.iter().chain(network_entries) {
        let host = Path::new("/etc").join(name);
        if host.exists() {
            // Optional: a missing or unmountable entry only matters to tools that need it.
            let _ = bind(&host, &etc.join(name), true);
        }
    }

    // `/tmp`, `HOME` and `/dev/shm` are bounded: they are memory, and a runaway action must
    // not take the machine's.
    let size = args
        .tmp_size
        .map_or(String::new(), |n| format!(",size={n}"));
    let dev = inside("/dev");
    mkdir(&dev)?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if host.exists() {
            let _ = bind(&host, &dev.join(name), false);
        }
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name))
            .map_err(|e| format!("symlink /dev/{name}: {e}"))?;
    }
    tmpfs(&dev.join("shm"), &format!("mode=1777{size}"))?;

    let proc_dir = inside("/proc");
    mkdir(&proc_dir)?;
    mount(
        Some("proc"),
        &proc_dir,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        none,
    )
    .map_err(|e| format!("mounting /proc: {e}"))?;

    tmpfs(&inside("/tmp"), &format!("mode=1777{size}"))?;
    tmpfs(&inside(SANDBOX_HOME), &format!("mode=0755{size}"))?;
    bind(&args.input_root, &inside(SANDBOX_ROOT), false)?;
    // No `..` or absolute part: a directory of the input root stays inside it.
    let in_root = |rel: &str| -> Result<PathBuf, String> {
        if Path::new(rel)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!("bad input directory {rel:?}"));
        }
        Ok(inside(SANDBOX_ROOT).join(rel))
    };
    for (host, rel) in &args.mounts {
        bind(host, &in_root(rel)?, true)?;
    }
    for rel in &args.read_only_inputs {
        let dir = in_root(rel)?;
        if dir.is_dir() {
            bind(&dir, &dir, true)?;
        }
    }
    for dir in &args.read_only {
        if SYSTEM_DIRS.iter().any(|s| dir.starts_with(s)) || !dir.is_dir() {
            continue;
        }
        bind(dir, &inside(&dir.to_string_lossy()), true)?;
    }
    // A tool installation's own package directories (pyenv's `lib/python3.X/site-packages`):
    // hidden like the host's.
    if !args.network {
        let own: Vec<&PathBuf> = args
            .read_only
            .iter()
            .filter(|d| !SYSTEM_DIRS.iter().any(|s| d.starts_with(s)))
            .collect();
        for dir in host_package_dirs(&own) {
            let at = inside(&dir.to_string_lossy());
            if !hidden.contains(&dir) && at.is_dir() {
                hide(&at)?;
                hidden.push(dir);
            }
        }
    }
    // Everything outside /tmp, $HOME and /workspace is read-only.
    mount(
        none,
        root,
        none,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV,
        none,
    )
    .map_err(|e| format!("making the new root read-only: {e}"))?;

    chdir(root).map_err(|e| format!("chdir to the new root: {e}"))?;
    pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    sethostname("cairn").map_err(|e| format!("sethostname: {e}"))?;
    if !args.network {
        loopback_up()?;
    }
    Ok(())
}

fn mkdir(path: &Path) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("mkdir {}: {e}", path.display()))
}

fn write_file(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// Where `npm install -g` puts packages (Debian's npm: `/usr/local`; NodeSource's: `/usr`).
const NODE_PACKAGE_DIRS: &[&str] = &["/usr/lib/node_modules", "/usr/local/lib/node_modules"];

/// An empty read-only directory over `at`.
fn hide(at: &Path) -> Result<(), String> {
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
        Some("size=4k,mode=0555"),
    )
    .map_err(|e| format!("hiding {}: {e}", at.display()))
}

fn remount_read_only(at: &Path) -> Result<(), String> {
    let none: Option<&str> = None;
    mount(
        none,
        at,
        none,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        none,
    )
    .map_err(|e| format!("making {} read-only: {e}", at.display()))
}

/// The host's package directories of interpreters: Debian's `dist-packages` and what `pip`
/// installed system-wide under `/usr/local`; with `prefixes` (tool installations outside
/// `/usr`), their `lib/python3.*/site-packages` instead.
fn host_package_dirs(prefixes: &[&PathBuf]) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let parents: Vec<PathBuf> = if prefixes.is_empty() {
        dirs.push(PathBuf::from("/usr/lib/python3/dist-packages"));
        vec!["/usr/local/lib".into(), "/usr/lib".into()]
    } else {
        prefixes.iter().map(|p| p.join("lib")).collect()
    };
    for parent in &parents {
        let Ok(entries) = fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("python3") {
                for sub in ["dist-packages", "site-packages"] {
                    let dir = entry.path().join(sub);
                    if parent == "/usr/local/lib" || sub == "site-packages" {
                        dirs.push(dir);
                    }
                }
            }
        }
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

fn tmpfs(path: &Path, options: &str) -> Result<(), String> {
    mkdir(path)?;
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options),
    )
    .map_err(|e| format!("mounting tmpfs on {}: {e}", path.display()))
}

/// Bind-mounts `src` on `dst` (created as a file or directory to match), read-only if asked.
/// A read-only remount must keep the flags the kernel locked on the source mount (nosuid,
/// nodev, ...), or it fails with EPERM inside a user namespace.
fn bind(src: &Path, dst: &Path, read_only: bool) -> Result<(), String> {
    let none: Option<&str> = None;
    if src.is_dir() {
        mkdir(dst)?;
    } else {
        if let Some(parent) = dst.parent() {
            mkdir(parent)?;
        }
        fs::File::create(dst).map_err(|e| format!("creating {}: {e}", dst.display()))?;
    }
    mount(
        Some(src),
        dst,
        none,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        none,
    )
    .map_err(|e| format!("binding {} on {}: {e}", src.display(), dst.display()))?;
    if read_only {
        let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Ok(st) = statvfs(src) {
            let f = st.flags();
            for (fs_flag, ms_flag) in [
                (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
                (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
                (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
                (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if f.contains(fs_flag) {
                    flags |= ms_flag;
                }
            }
        }
        mount(none, dst, none, flags, none)
            .map_err(|e| format!("making {} read-only: {e}", dst.display()))?;
    }
    Ok(())
}

/// Brings up `lo` in the fresh network namespace, so tests can use 127.0.0.1 among themselves.
fn loopback_up() -> Result<(), String> {
    use nix::libc;
    // SAFETY: plain socket/ioctl calls on a zeroed, correctly sized `ifreq` whose name is
    // NUL-terminated; the descriptor is closed on every path.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(format!("socket: {}", std::io::Error::last_os_error()));
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        let mut result = Ok(());
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            result = Err(format!(
                "reading lo flags: {}",
                std::io::Error::last_os_error()
            ));
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &req) < 0 {
                result = Err(format!(
                    "bringing lo up: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        libc::close(fd);
        result
    }
}
