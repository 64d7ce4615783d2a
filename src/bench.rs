//! `panther-triage bench`: the enrichment engine against the Python reference, on the same generated
//! files, in the same run. Each side runs as a child process so that its peak RSS is its own
//! (`wait4`'s `ru_maxrss`), and the two TSV outputs are compared byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use clap::Args;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The project's shared folder (holds tools/gen_intel.py and tools/peer_enrich.py).
    #[arg(long, env = "PANTHER_TRIAGE_SHARED", default_value = "../shared")]
    pub shared: PathBuf,
    /// Table sizes to measure, in indicators.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub sizes: Vec<u64>,
    /// Alerts in the alerts file (enough that the lookup phase is not dominated by start-up costs).
    #[arg(long, default_value_t = 10000)]
    pub alerts: u64,
    /// Events per alert.
    #[arg(long, default_value_t = 20)]
    pub events: u64,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Where generated files are kept between runs (generating 1M rows takes Python half a minute).
    #[arg(long, default_value = "target/bench-data")]
    pub work_dir: PathBuf,
    /// Measure with subdomain matching on (both sides).
    #[arg(long)]
    pub subdomains: bool,
    /// Runs of each side, alternating; the best figures of each side are reported (this machine's
    /// neighbours make single runs noisy).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
}

/// The clock the generator's expirations are relative to (its default).
const GEN_NOW: &str = "2026-01-01T00:00:00Z";

/// Figures one side printed, plus its peak RSS.
#[derive(Debug, Default)]
struct Side {
    rows: f64,
    load_s: f64,
    lookups: f64,
    match_s: f64,
    peak_rss: u64,
}

impl Side {
    /// The best of two runs: each figure at its best, the peak RSS at its lowest.
    fn best(self, other: Side) -> Side {
        Side {
            rows: self.rows,
            load_s: self.load_s.min(other.load_s),
            lookups: self.lookups,
            match_s: self.match_s.min(other.match_s),
            peak_rss: self.peak_rss.min(other.peak_rss),
        }
    }

    fn rows_per_s(&self) -> f64 {
        self.rows / self.load_s.max(1e-9)
    }
    fn lookups_per_s(&self) -> f64 {
        self.lookups / self.match_s.max(1e-9)
    }
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let tools = a.shared.join("tools");
    let gen = tools.join("gen_intel.py");
    let peer = tools.join("peer_enrich.py");
    for f in [&gen, &peer] {
        if !f.exists() {
            bail!(
                "{} not found: pass --shared DIR (the folder holding tools/), or set PANTHER_TRIAGE_SHARED",
                f.display()
            );
        }
    }
    std::fs::create_dir_all(&a.work_dir).with_context(|| format!("cannot create {}", a.work_dir.display()))?;
    let me = std::env::current_exe().context("cannot find this binary to run it")?;
    println!(
        "enrichment benchmark: {} alerts x {} events, seed {}, now {GEN_NOW}, subdomains {}, best of {} runs each",
        a.alerts, a.events, a.seed, a.subdomains, a.runs
    );
    println!(
        "{:>9} {:>9} | {:>12} {:>12} {:>6} | {:>12} {:>12} {:>6} | {:>9} {:>9} {:>6} | output",
        "rows",
        "file MB",
        "load rows/s",
        "peer rows/s",
        "x",
        "lookups/s",
        "peer lk/s",
        "x",
        "RSS MB",
        "peer MB",
        "/file",
    );
    for &n in &a.sizes {
        let table = a.work_dir.join(format!("indicators-{n}-s{}.jsonl", a.seed));
        let alerts = a.work_dir.join(format!("alerts-{}x{}-t{n}-s{}.jsonl", a.alerts, a.events, a.seed));
        if !table.exists() {
            python(&gen, &["indicators", &n.to_string(), path_str(&table)?, "--seed", &a.seed.to_string()])?;
        }
        if !alerts.exists() {
            let args = [
                "alerts",
                &a.alerts.to_string(),
                &a.events.to_string(),
                path_str(&alerts)?,
                "--seed",
                &a.seed.to_string(),
                "--table-size",
                &n.to_string(),
            ];
            python(&gen, &args)?;
        }
        let file_bytes = std::fs::metadata(&table)?.len();
        let peer_out = a.work_dir.join(format!("peer-{n}.tsv"));
        let ours_out = a.work_dir.join(format!("ours-{n}.tsv"));
        let mut peer_args =
            vec![path_str(&peer)?, path_str(&table)?, path_str(&alerts)?, "--out", path_str(&peer_out)?];
        let mut our_args = vec![
            "enrich",
            "--table",
            path_str(&table)?,
            "--alerts",
            path_str(&alerts)?,
            "--now",
            GEN_NOW,
            "--out",
            path_str(&ours_out)?,
            "--stats-json",
        ];
        if a.subdomains {
            peer_args.push("--subdomains");
            our_args.push("--subdomains");
        }
        let mut peer_side: Option<Side> = None;
        let mut ours: Option<Side> = None;
        for _ in 0..a.runs {
            let p = measure(Path::new("python3"), &peer_args, "lookups_per_s")?;
            peer_side = Some(match peer_side {
                Some(best) => best.best(p),
                None => p,
            });
            let o = measure(&me, &our_args, "load_s")?;
            ours = Some(match ours {
                Some(best) => best.best(o),
                None => o,
            });
        }
        let (Some(peer_side), Some(ours)) = (peer_side, ours) else { bail!("--runs must be at least 1") };
        let same = std::fs::read(&peer_out)? == std::fs::read(&ours_out)?;
        let mb = |b: u64| b as f64 / 1e6;
        println!(
            "{:>9} {:>9.1} | {:>12.0} {:>12.0} {:>6.1} | {:>12.0} {:>12.0} {:>6.1} | {:>9.1} {:>9.1} {:>6.2} | {}",
            n,
            mb(file_bytes),
            ours.rows_per_s(),
            peer_side.rows_per_s(),
            ours.rows_per_s() / peer_side.rows_per_s(),
            ours.lookups_per_s(),
            peer_side.lookups_per_s(),
            ours.lookups_per_s() / peer_side.lookups_per_s(),
            mb(ours.peak_rss),
            mb(peer_side.peak_rss),
            ours.peak_rss as f64 / file_bytes as f64,
            if same { "identical" } else { "DIFFERENT" }
        );
        if !same {
            bail!("outputs differ: compare {} and {}", peer_out.display(), ours_out.display());
        }
    }
    println!("targets: load >= 30x, lookups >= 50x the reference; peak RSS <= 1.5x the table file at 1M rows");
    Ok(())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| format!("path {} is not UTF-8", p.display()))
}

fn python(script: &Path, args: &[&str]) -> anyhow::Result<()> {
    eprintln!("generating: {} {}", script.display(), args.join(" "));
    let st = Command::new("python3").arg(script).args(args).status().context("cannot run python3")?;
    if !st.success() {
        bail!("{} {} failed: {st}", script.display(), args.join(" "));
    }
    Ok(())
}

/// Runs a child, waits for it with `wait4` for its peak RSS, and reads the JSON figures line it
/// prints on stderr (the last line containing `marker`).
fn measure(program: &Path, args: &[&str], marker: &str) -> anyhow::Result<Side> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read as _;
        e.read_to_string(&mut err)?;
    }
    let (status, peak_rss) = wait_with_rusage(&mut child)?;
    if !status {
        bail!("{} {} failed:\n{err}", program.display(), args.join(" "));
    }
    let line = err
        .lines()
        .rev()
        .find(|l| l.contains(marker))
        .with_context(|| format!("no figures from {}:\n{err}", program.display()))?;
    let v: serde_json::Value = serde_json::from_str(line).with_context(|| format!("figures line {line:?}"))?;
    let f = |k: &str| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(0.0);
    Ok(Side { rows: f("rows"), load_s: f("load_s"), lookups: f("lookups"), match_s: f("match_s"), peak_rss })
}

#[cfg(target_os = "linux")]
fn wait_with_rusage(child: &mut std::process::Child) -> anyhow::Result<(bool, u64)> {
    let pid = libc::pid_t::try_from(child.id()).context("child pid out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data that wait4 fills in; an all-zero value is a valid initial state.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own unreaped child, and both pointers are to live locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    // ru_maxrss is in KiB on Linux.
    Ok((ok, u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024))
}

#[cfg(not(target_os = "linux"))]
fn wait_with_rusage(child: &mut std::process::Child) -> anyhow::Result<(bool, u64)> {
    Ok((child.wait()?.success(), 0))
}

/// This process's peak resident set (VmHWM), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
