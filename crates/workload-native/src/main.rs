//! `workload-native WORKLOAD [ARGS...]`: runs one of the study's workloads natively, built from
//! the same source as the Wasm guests (`guests/workloads`).
//!
//! It speaks a line protocol on stdout that every baseline (process, container, microVM serial
//! console) can be read with:
//! - `limes-ready` as soon as `main` is entered: the host's clock at this line ends the cold
//!   start;
//! - `limes-exec-ns N`: the workload's own duration, measured inside (a VM's clock may differ
//!   from the host's, but its intervals do not);
//! - `limes-rss-kib N`: its own peak RSS;
//! - `limes-result TEXT` or `limes-error TEXT`.
//!
//! Run as PID 1 (the `/init` of a microVM's initramfs), it takes its arguments from the kernel
//! command line after `--` and powers the machine off when done.
//!
//! Built for Hermit (`cargo xtask unikernel`) it is the unikernel: arguments come from the
//! command line after `--` too, and returning from `main` ends the VM. Hermit has no disk
//! here, only its in-memory file system, so in `mode=io` the image workload first writes its
//! input there (before the timed run, as a microVM's initramfs carries it).
//!
//! `workload-native @wait` is for snapshots: it prints `limes-waiting`, and a VMM snapshots the
//! VM there; restored, the VM reads its request (`WORKLOAD ARGS`) as one line from the console,
//! then goes on as above.

use std::io::Write;
use std::time::Instant;

fn main() {
    let mut out = std::io::stdout().lock();
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("@wait") {
        argv = wait_for_request(&mut out);
    }
    let _ = writeln!(out, "limes-ready");
    let _ = out.flush();
    let (name, args) = match argv.split_first() {
        Some((name, rest)) => (name.clone(), rest.join(" ")),
        None => (String::new(), String::new()),
    };
    #[cfg(target_os = "hermit")]
    if name == "image-processing" && args.contains("mode=io") {
        if let Err(e) = workloads::run(&name, &args.replace("mode=io", "mode=prepare")) {
            let _ = writeln!(out, "limes-error preparing the input: {e}");
            std::process::exit(1);
        }
    }
    let started = Instant::now();
    let outcome = workloads::run(&name, &args);
    let _ = writeln!(out, "limes-exec-ns {}", started.elapsed().as_nanos());
    if let Some(kib) = peak_rss_kib() {
        let _ = writeln!(out, "limes-rss-kib {kib}");
    }
    let code = match outcome {
        Ok(result) => {
            let _ = writeln!(out, "limes-result {result}");
            0
        }
        Err(e) => {
            let _ = writeln!(out, "limes-error {e}");
            1
        }
    };
    let _ = out.flush();
    drop(out);
    #[cfg(target_os = "linux")]
    if std::process::id() == 1 {
        power_off();
    }
    std::process::exit(code);
}

/// Says `limes-waiting` and reads one request line from the console (echo off on Linux, so the
/// request does not come back as output).
fn wait_for_request(out: &mut impl Write) -> Vec<String> {
    #[cfg(target_os = "linux")]
    // SAFETY: termios is plain data that tcgetattr fills in; fd 0 is the console.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) == 0 {
            t.c_lflag &= !libc::ECHO;
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
    }
    let _ = writeln!(out, "limes-waiting");
    let _ = out.flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    line.split_whitespace().map(str::to_owned).collect()
}

/// This process's peak RSS (VmHWM). The parent cannot get it from `wait4`: Linux carries the
/// RSS high-water mark of the forked parent across `exec` into that figure.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(target_os = "linux")]
/// As the init of a microVM: flush the console and power off, which ends QEMU with status 0.
fn power_off() {
    // SAFETY: plain syscalls without pointers; as PID 1 there is nothing else to shut down.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
}
